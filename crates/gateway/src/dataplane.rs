//! The data-plane request path: request id → limits → route → splitter → slot → response headers,
//! metrics and access log.
//!
//! One `Arc<Snapshot>` is taken per request and everything else is borrowed from it, so a request
//! keeps the routes and slots it started with even if they are swapped meanwhile.
//!
//! Two ways in: [`handle`] takes a [`Request`] (HTTP/2, bodies, model slots, everything), and
//! `RawLane` takes the most common request of a proxy as its head came off the wire (HTTP/1.1,
//! no body, a route that needs nothing but the splitter, a plain-HTTP upstream slot) and answers it
//! from the upstream's head without a header map on either side. Both send and answer the same
//! (`the_raw_lane_and_the_general_path_send_and_answer_the_same`, e2e); the lane spends about a
//! quarter less user-space CPU on a request (README, proxy benchmark).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Limited;
use switchyard_routing::{Choice, RequestView, strip_route_prefix};

use crate::autopilot::Admit;
use crate::body::DeadlineBody;
use crate::error::ApiError;
use crate::replay;
use crate::server::{
    Framing, Lane, LaneAnswer, RawRequest, bodyless, push_framing, push_status_line,
};
use crate::slot::upstream::RawForward;
use crate::slot::{RequestContext, push_field};
use crate::state::{Gateway, RouteRuntime, SlotHandle, Snapshot};

/// Response header naming the slot that answered.
pub const X_SWITCHYARD_SLOT: HeaderName = HeaderName::from_static("x-switchyard-slot");
/// Request/response header carrying the request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How much of a refused (too large) body is read and dropped before answering 413.
const DISCARD_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// How long reading a refused body may take before answering 413 anyway.
const DISCARD_MAX_TIME: Duration = Duration::from_secs(1);

/// Facts about the client connection, computed once per connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client IP as text (`X-Forwarded-For` element).
    pub peer_ip: HeaderValue,
    /// The `Forwarded` element for this client: `for=…;proto=…`.
    pub forwarded: String,
}

impl ConnInfo {
    /// Describes a new connection.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let ip = peer.ip();
        let proto = if tls { "https" } else { "http" };
        let node = if ip.is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        Self {
            peer,
            tls,
            peer_ip: HeaderValue::try_from(ip.to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            forwarded: format!("for={node};proto={proto}"),
        }
    }
}

/// A view of the request for the splitter.
struct View<'a> {
    headers: &'a http::HeaderMap,
    uri: &'a http::Uri,
    conn: &'a ConnInfo,
    claims: Option<&'a crate::auth::Claims>,
}

impl RequestView for View<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn cookie(&self, name: &str) -> Option<Cow<'_, str>> {
        let values = self
            .headers
            .get_all(header::COOKIE)
            .into_iter()
            .filter_map(|v| v.to_str().ok());
        cookie_in(values, name).map(Cow::Borrowed)
    }

    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        query_in(self.uri, name)
    }

    fn client_ip(&self) -> Option<IpAddr> {
        Some(self.conn.peer.ip())
    }

    fn client_ip_text(&self) -> Option<Cow<'_, str>> {
        self.conn.peer_ip.to_str().ok().map(Cow::Borrowed)
    }

    fn claim(&self, name: &str) -> Option<Cow<'_, str>> {
        crate::auth::claim_text(self.claims?, name)
    }
}

/// A cookie's value among `Cookie` field values (quotes removed).
fn cookie_in<'a>(values: impl Iterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    values
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// A query parameter of `uri`, percent-decoded.
fn query_in<'a>(uri: &'a http::Uri, name: &str) -> Option<Cow<'a, str>> {
    let q = uri.query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// A view of a raw request (the lane) for the splitter: what [`View`] reads from a map, read from
/// the head's fields (the first of a name, when it is text, as `HeaderValue::to_str` says).
struct RawView<'a> {
    req: &'a RawRequest,
    conn: &'a ConnInfo,
}

impl RequestView for RawView<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.req.text(name)
    }

    fn cookie(&self, name: &str) -> Option<Cow<'_, str>> {
        cookie_in(self.req.texts("cookie"), name).map(Cow::Borrowed)
    }

    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        query_in(self.req.uri(), name)
    }

    fn client_ip(&self) -> Option<IpAddr> {
        Some(self.conn.peer.ip())
    }

    fn client_ip_text(&self) -> Option<Cow<'_, str>> {
        self.conn.peer_ip.to_str().ok().map(Cow::Borrowed)
    }
}

/// W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace id, parent span id and flags of a valid W3C `traceparent`
/// (`00-<32 hex>-<16 hex>-<2 hex>`).
fn parse_traceparent(v: &str) -> Option<(&str, &str, &str)> {
    let mut parts = v.split('-');
    let (ver, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(ver, 2)
        && ver != "ff"
        && (ver != "00" || parts.next().is_none())
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then_some((trace, parent, flags))
}

/// The `traceparent` this gateway passes on and echoes: the client's trace (a new one if it sent
/// none or an invalid one) with this hop as the parent span.
fn traceparent(req: &Request<Body>) -> (HeaderValue, Option<RequestSpan>) {
    let incoming = req
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    trace_context(incoming, req.method(), req.uri().path())
}

/// [`traceparent`] for the client's `traceparent` value `incoming`.
#[cfg_attr(not(feature = "otlp"), allow(unused_variables))]
fn trace_context(
    incoming: Option<&str>,
    method: &http::Method,
    path: &str,
) -> (HeaderValue, Option<RequestSpan>) {
    let incoming = incoming.and_then(parse_traceparent);
    #[cfg(feature = "otlp")]
    if let Some((span, header)) = crate::otlp::start(incoming, method, path) {
        return (header, Some(span));
    }
    let ids = uuid::Uuid::new_v4().as_u128();
    let span = (ids as u64) | 1;
    // `00-{trace:032x}-{span:016x}-{flags}`, written straight into the header's bytes (this runs
    // on every request; `format!` and a copy into the header cost twice as much).
    let mut value = Vec::with_capacity(55);
    value.extend_from_slice(b"00-");
    match incoming {
        Some((trace, _, _)) => value.extend_from_slice(trace.as_bytes()),
        None => push_hex(&mut value, ids | (1 << 64), 32),
    }
    value.push(b'-');
    push_hex(&mut value, span as u128, 16);
    value.push(b'-');
    value.extend_from_slice(incoming.map_or("00", |(_, _, flags)| flags).as_bytes());
    (
        HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
            .unwrap_or(HeaderValue::from_static("-")),
        None,
    )
}

/// Appends the low `digits` hex digits of `v`, lower case.
fn push_hex(out: &mut Vec<u8>, v: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (4 * i)) & 0xf) as usize]);
    }
}

/// The exported span of a request (feature `otlp`; nothing without it).
#[cfg(feature = "otlp")]
type RequestSpan = crate::otlp::RequestSpan;
/// The exported span of a request (feature `otlp`; nothing without it).
#[cfg(not(feature = "otlp"))]
type RequestSpan = std::convert::Infallible;

/// The client's `X-Request-Id` when it is sane (1–128 visible ASCII characters), else a new UUID.
fn request_id(req: &Request<Body>) -> HeaderValue {
    match req.headers().get(&X_REQUEST_ID) {
        Some(id) if sane_request_id(id.as_bytes()) => id.clone(),
        _ => new_request_id(),
    }
}

/// Whether a client's `X-Request-Id` is kept: 1–128 visible ASCII characters.
fn sane_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 128 && id.iter().all(u8::is_ascii_graphic)
}

/// A new request id: a random UUID, 32 hex digits.
fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-"))
}

fn header_bytes(req: &Request<Body>) -> usize {
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri().path_and_query().map_or(0, |p| p.as_str().len())
}

/// The request as the access log needs it (only captured when access logs are on).
struct AccessInfo {
    method: http::Method,
    path: String,
}

/// Records metrics and the access log when a request ends, also when the client goes away and the
/// request future is dropped (status 499).
struct Finish<'s> {
    start: Instant,
    request_id: HeaderValue,
    trace: HeaderValue,
    access: Option<AccessInfo>,
    route: Option<&'s RouteRuntime>,
    slot: Option<&'s SlotHandle>,
    status: u16,
    code: Option<&'static str>,
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    span: Option<RequestSpan>,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        #[cfg(feature = "otlp")]
        if let Some(span) = self.span.take() {
            span.finish(
                self.route.map(|r| &*r.name),
                self.slot.map(|s| &*s.name),
                self.status,
                self.code,
                self.request_id.to_str().unwrap_or("-"),
            );
        }
        if let Some(slot) = self.slot {
            slot.stats.add_inflight(-1);
            slot.stats.record(now, elapsed, self.status >= 500);
            if let Some(m) = self.route.and_then(|r| r.metrics.get(&slot.name)) {
                m.record(self.status, elapsed, slot.slot.version().as_deref());
            }
        }
        if let Some(access) = &self.access {
            tracing::info!(
                target: "access",
                request_id = self.request_id.to_str().unwrap_or("-"),
                trace_id = self.trace.to_str().ok().and_then(|t| t.get(3..35)).unwrap_or("-"),
                method = %access.method,
                path = %access.path,
                route = self.route.map_or("-", |r| &*r.name),
                slot = self.slot.map_or("-", |s| &*s.name),
                status = self.status,
                error = self.code.unwrap_or(""),
                duration_ms = (elapsed * 1e6).round() / 1e3,
                "request"
            );
        }
    }
}

/// Serves one data-plane request. Never fails: every problem becomes a JSON error response.
pub async fn handle(gw: &Gateway, conn: Arc<ConnInfo>, req: Request<Body>) -> Response<Body> {
    let snap = gw.local_snapshot();
    serve(&snap, &conn, req).await
}

async fn serve(snap: &Snapshot, conn: &Arc<ConnInfo>, mut req: Request<Body>) -> Response<Body> {
    let start = Instant::now();
    let request_id = request_id(&req);
    let (trace, span) = traceparent(&req);
    // The client's head, before the gateway's own `traceparent` replaces the client's.
    let head_bytes = header_bytes(&req);
    req.headers_mut().insert(TRACEPARENT, trace.clone());
    let access = snap.config.log.access_log.then(|| AccessInfo {
        method: req.method().clone(),
        path: req.uri().path().to_string(),
    });
    let mut fin = Finish {
        start,
        request_id,
        trace: trace.clone(),
        access,
        route: None,
        slot: None,
        status: 499,
        code: None,
        span,
    };

    // An HTTP/1 request whose body we may refuse before reading it: the connection cannot be reused
    // after such a refusal, so say so instead of letting the client find a closed socket.
    let unread_body_closes =
        req.version() <= http::Version::HTTP_11 && !http_body::Body::is_end_stream(req.body());
    let mut resp = match route_and_call(snap, conn, req, head_bytes, &mut fin).await {
        Ok(resp) => resp,
        Err(e) => {
            fin.code = Some(e.code);
            let overloaded = e.code == "overloaded";
            let mut resp = e.into_response();
            if overloaded {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            if unread_body_closes {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    };
    answered(&mut resp, &mut fin, trace);
    resp
}

/// What every response gets: the slot that answered, the request id and the trace context; and
/// its status goes to the request's record.
fn answered(resp: &mut Response<Body>, fin: &mut Finish<'_>, trace: HeaderValue) {
    if let Some(slot) = fin.slot {
        resp.headers_mut()
            .insert(X_SWITCHYARD_SLOT, slot.header.clone());
    }
    resp.headers_mut()
        .insert(X_REQUEST_ID, fin.request_id.clone());
    resp.headers_mut().insert(TRACEPARENT, trace);
    fin.status = resp.status().as_u16();
}

/// The raw lane of the data plane (`server::fast`'s [`Lane`]): a simple HTTP/1.1 request (no
/// body) whose route needs nothing but the splitter and whose slot is a plain-HTTP upstream is
/// served from its head's bytes. No header map is built on either side: the upstream's request
/// head is written from the client's fields, and the client's response head from the upstream's.
/// What reaches the upstream and the client is what the general path ([`handle`]) sends, fields
/// aside from their order and the case of their names; the request's metrics, access log and
/// trace are the same.
///
/// Routes with authentication, a rate limit or a result cache, with `strip_prefix`, and requests
/// that the autopilot sends to a canary (fallback, breaker) or shadows take the general path; so do
/// heads over the header limit (for its 431), paths without a route (404) and the console's.
#[derive(Clone)]
pub(crate) struct RawLane(pub(crate) Arc<Gateway>);

impl Lane for RawLane {
    fn serve<'a>(
        &'a self,
        conn: &'a Arc<ConnInfo>,
        req: &'a RawRequest,
        out: &'a mut Vec<u8>,
    ) -> impl std::future::Future<Output = Option<LaneAnswer>> + Send + 'a {
        lane(&self.0, conn, req, out)
    }
}

async fn lane(
    gw: &Gateway,
    conn: &Arc<ConnInfo>,
    req: &RawRequest,
    out: &mut Vec<u8>,
) -> Option<LaneAnswer> {
    let start = Instant::now();
    let uri = req.uri();
    let path = uri.path();
    if path == "/ui" || path.starts_with("/ui/") {
        return None;
    }
    let snap = gw.local_snapshot();
    let snap: &Snapshot = &snap;
    if req.header_bytes() > snap.config.server.max_header_bytes {
        return None;
    }
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.text("host"));
    let route: &RouteRuntime = snap.table.find(host, path)?;
    if route.auth.is_some()
        || route.control.rate_limit.is_some()
        || route.cache.is_some()
        || route.spec.strip_prefix
    {
        return None;
    }
    let view = RawView { req, conn };
    let (slot_name, by_weight_stable) = choose(route, &view);
    let request_id = match req.text(X_REQUEST_ID.as_str()) {
        Some(id) if sane_request_id(id.as_bytes()) => HeaderValue::from_str(id).ok()?,
        _ => new_request_id(),
    };
    let control = &route.control;
    if control.active() {
        // To the canary: fallback and breaker; to stable, maybe shadowed: the general path's.
        if route.canary.as_ref() == Some(slot_name) {
            return None;
        }
        if by_weight_stable
            && route.canary.is_some()
            && control
                .shadow
                .as_ref()
                .is_some_and(|s| s.sampled(bucket_of(&request_id)))
        {
            return None;
        }
    }
    let slot = snap.slots.get(slot_name)?;
    let upstream = slot.slot.as_upstream().filter(|u| u.takes_raw())?;

    // The request is the lane's from here.
    let (trace, span) = trace_context(req.text(TRACEPARENT.as_str()), req.method(), path);
    let access = snap.config.log.access_log.then(|| AccessInfo {
        method: req.method().clone(),
        path: path.to_string(),
    });
    let mut fin = Finish {
        start,
        request_id,
        trace: trace.clone(),
        access,
        route: Some(route),
        slot: Some(slot),
        status: 499,
        code: None,
        span,
    };
    slot.stats.add_inflight(1);
    let fwd = RawForward {
        conn,
        host,
        request_id: fin.request_id.as_bytes(),
        traceparent: trace.as_bytes(),
    };
    // The response head: the status line once the final status is known, the upstream's fields
    // but those the gateway sets (and `Content-Length`, written from the framing below), then the
    // gateway's.
    let mut started = false;
    let mut dated = false;
    let mut each = |status: StatusCode, name: &[u8], value: &[u8]| {
        if status.is_informational() {
            return;
        }
        if !started {
            push_status_line(out, status);
            started = true;
        }
        let is = |n: &HeaderName| name.eq_ignore_ascii_case(n.as_str().as_bytes());
        if is(&X_SWITCHYARD_SLOT)
            || is(&X_REQUEST_ID)
            || is(&TRACEPARENT)
            || (is(&header::CONTENT_LENGTH) && status != StatusCode::NOT_MODIFIED)
        {
            return;
        }
        dated |= is(&header::DATE);
        push_field(out, name, value);
    };
    let sent = upstream.send_raw(req, &fwd, &mut each).await;
    let (status, body) = match sent {
        Ok(answer) => answer,
        Err(e) => {
            fin.code = Some(e.code);
            let mut resp = e.into_response();
            answered(&mut resp, &mut fin, trace);
            return Some(LaneAnswer::Whole(resp));
        }
    };
    if !started {
        push_status_line(out, status);
    }
    let framing = match http_body::Body::size_hint(&body).exact() {
        _ if bodyless(status) => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    };
    push_framing(out, framing);
    for (name, value) in [
        (&X_SWITCHYARD_SLOT, slot.header.as_bytes()),
        (&X_REQUEST_ID, fin.request_id.as_bytes()),
        (&TRACEPARENT, trace.as_bytes()),
    ] {
        push_field(out, name.as_str().as_bytes(), value);
    }
    if !dated {
        crate::server::push_date_field(out);
    }
    fin.status = status.as_u16();
    Some(LaneAnswer::Head { framing, body })
}

/// The slot the splitter picks for a request (overrides, then the sticky split), and whether it
/// is stable by the weight (not by an override): such a request may be shadowed.
fn choose<'r>(route: &'r RouteRuntime, view: &impl RequestView) -> (&'r Arc<str>, bool) {
    let weight = if route.canary.is_some() {
        route.weight
    } else {
        0.0
    };
    match route.splitter.choose(weight, view) {
        Choice::Override { target, .. } => (target, false),
        Choice::Canary { .. } => (route.canary.as_ref().unwrap_or(&route.stable), false),
        Choice::Stable { .. } => (&route.stable, true),
    }
}

async fn route_and_call<'s>(
    snap: &'s Snapshot,
    conn: &Arc<ConnInfo>,
    req: Request<Body>,
    head_bytes: usize,
    fin: &mut Finish<'s>,
) -> Result<Response<Body>, ApiError> {
    let server = &snap.config.server;
    if head_bytes > server.max_header_bytes {
        return Err(ApiError::new(
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers exceed {} bytes", server.max_header_bytes),
        ));
    }
    let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let path = req.uri().path();
    let route: &RouteRuntime = snap
        .table
        .find(host, path)
        .ok_or_else(|| ApiError::no_route(path))?;
    fin.route = Some(route);

    let claims = match &route.auth {
        None => None,
        Some(auth) => match auth.check(req.headers(), req.uri()) {
            Ok(claims) => claims,
            Err(denied) => {
                fin.code = Some(denied.error.code);
                metrics::counter!("switchyard_auth_denied_total",
                    "route" => route.name.to_string(), "code" => denied.error.code)
                .increment(1);
                let mut resp = denied.into_response();
                if req.version() <= http::Version::HTTP_11 && !req.body().is_end_stream() {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                return Ok(resp);
            }
        },
    };
    // Headers and URI, not the request: its body is not `Sync`, and the view is held across awaits.
    let view = View {
        headers: req.headers(),
        uri: req.uri(),
        conn,
        claims: claims.as_ref(),
    };
    if let Some((limiter, spec)) = &route.control.rate_limit {
        let key = match spec.key.as_str() {
            "ip" => None,
            _ => route.splitter.key_hash(&view),
        }
        .unwrap_or_else(|| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            conn.peer.ip().hash(&mut h);
            h.finish()
        });
        if let Err(wait_s) = limiter.check(key, route.control.now_f64()) {
            metrics::counter!("switchyard_rate_limited_total", "route" => route.name.to_string())
                .increment(1);
            let mut e = ApiError::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "more than {} requests/s (burst {}) from this client; retry in {:.1} s",
                    spec.requests_per_s, spec.burst, wait_s
                ),
            )
            .into_response();
            e.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait_s.ceil().max(1.0) as u64),
            );
            if req.version() <= http::Version::HTTP_11 && !req.body().is_end_stream() {
                // The body is not read: this connection cannot carry another request.
                e.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            fin.code = Some("rate_limited");
            return Ok(e);
        }
    }
    let (mut slot_name, by_weight_stable) = choose(route, &view);
    let control = &route.control;
    let active = control.active();
    let bucket = if active {
        bucket_of(&fin.request_id)
    } else {
        0
    };
    let mut to_canary = active && route.canary.as_ref() == Some(slot_name);
    let mut probe = false;
    if to_canary && let Some(b) = &control.breaker {
        match b.admit(bucket) {
            Admit::Canary => {}
            Admit::Probe => probe = true,
            Admit::Stable => {
                slot_name = &route.stable;
                to_canary = false;
            }
        }
    }
    let slot = snap.slots.get(slot_name).ok_or_else(|| {
        ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "slot_unavailable",
            format!("slot `{slot_name}` is not loaded"),
        )
    })?;
    // The `switchyard_inflight_requests` gauge is set from this count when scraped.
    slot.stats.add_inflight(1);
    fin.slot = Some(slot);

    let limit = route.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        crate::body::discard(req.into_body(), DISCARD_MAX_BYTES, DISCARD_MAX_TIME).await;
        let mut resp = ApiError::body_too_large(limit).into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        fin.code = Some("body_too_large");
        return Ok(resp);
    }
    let ctx = RequestContext {
        request_id: fin.request_id.clone(),
        route: route.name.clone(),
        conn: conn.clone(),
        host: host.map(String::from),
        path: if route.spec.strip_prefix {
            strip_route_prefix(&route.spec.path, path).into_owned()
        } else {
            path.to_string()
        },
        max_body_bytes: limit,
    };
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let req = req.map(|b| {
        if b.is_end_stream() {
            // No body (most GETs): no limit or deadline to enforce, no timer to arm.
            Body::empty()
        } else {
            let deadline = tokio::time::Instant::from_std(fin.start)
                + Duration::from_millis(server.request_timeout_ms);
            Body::new(Limited::new(DeadlineBody::new(b, deadline), limit as usize))
        }
    });
    let decision = Decision {
        active,
        upgrade,
        to_canary,
        probe,
        by_weight_stable,
        bucket,
    };
    let Some(cache) = route
        .cache
        .as_ref()
        .filter(|_| !upgrade && crate::cache::ResultCache::cacheable(req.method()))
    else {
        return dispatch(snap, route, slot, req, &ctx, fin, decision).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match replay::buffer(body, limit, limit).await? {
        replay::Buffered::Whole(bytes) => bytes,
        replay::Buffered::TooLarge(rest) => {
            let req = Request::from_parts(parts, rest);
            return dispatch(snap, route, slot, req, &ctx, fin, decision).await;
        }
    };
    let caller = route
        .auth
        .as_ref()
        .filter(|_| cache.per_caller())
        .map(|_| caller_identity(claims.as_ref(), &parts.headers));
    let key = cache.key(&parts, &bytes, slot, caller.as_deref());
    if let Some(hit) = cache.get(key) {
        return Ok(hit);
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let resp = dispatch(snap, route, slot, req, &ctx, fin, decision).await?;
    let answered_by_chosen = fin.slot.is_some_and(|s| std::ptr::eq(s, slot))
        && !resp.headers().contains_key(&replay::X_SWITCHYARD_FALLBACK);
    if answered_by_chosen {
        Ok(cache.store(key, resp).await)
    } else {
        Ok(resp)
    }
}

/// Who is calling an authenticated route, for a result cache kept per caller: the JWT's issuer and
/// subject (stable across token renewals), else the credential itself.
fn caller_identity(claims: Option<&crate::auth::Claims>, headers: &http::HeaderMap) -> Vec<u8> {
    match claims.and_then(|c| Some((c.get("iss"), c.get("sub")?))) {
        Some((iss, sub)) => {
            format!("jwt\0{}\0{sub}", iss.unwrap_or(&serde_json::Value::Null)).into_bytes()
        }
        None => headers
            .get(header::AUTHORIZATION)
            .map_or_else(Vec::new, |v| v.as_bytes().to_vec()),
    }
}

/// How the splitter and the autopilot decided for one request.
#[derive(Clone, Copy)]
struct Decision {
    /// The route's autopilot (fallback, breaker, shadow) is on.
    active: bool,
    /// A WebSocket or other upgrade: served directly, never replayed.
    upgrade: bool,
    /// The chosen slot is the canary.
    to_canary: bool,
    /// A half-open breaker let this request through as a probe.
    probe: bool,
    /// Stable was chosen by the weight (not by an override): the request may be shadowed.
    by_weight_stable: bool,
    /// The request's uniform sample number (shadow sampling).
    bucket: u64,
}

/// Calls the chosen slot: directly, or with canary fallback, or with a shadow copy to the canary.
async fn dispatch<'s>(
    snap: &'s Snapshot,
    route: &'s RouteRuntime,
    slot: &'s SlotHandle,
    req: Request<Body>,
    ctx: &RequestContext,
    fin: &mut Finish<'s>,
    d: Decision,
) -> Result<Response<Body>, ApiError> {
    let control = &route.control;
    let Decision {
        active,
        upgrade,
        to_canary,
        probe,
        by_weight_stable,
        bucket,
    } = d;
    if !active || upgrade {
        let started = Instant::now();
        let answer = slot.slot.call(req, ctx).await;
        if to_canary {
            replay::record_plain(control, &answer, started.elapsed().as_secs_f64(), probe);
        }
        return answer;
    }
    if to_canary {
        let stable = snap.slots.get(&route.stable).ok_or_else(|| {
            ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "slot_unavailable",
                format!("slot `{}` is not loaded", route.stable),
            )
        })?;
        let out = replay::canary_with_fallback(control, slot, stable, req, ctx, probe).await;
        let Some(reason) = out.fell_back else {
            return out.answer;
        };
        // Stable answered: it is the slot of record for this request.
        slot.stats.add_inflight(-1);
        stable.stats.add_inflight(1);
        fin.slot = Some(stable);
        let mut resp = match out.answer {
            Ok(r) => r,
            Err(e) => {
                fin.code = Some(e.code);
                e.into_response()
            }
        };
        replay::mark(&mut resp, reason);
        return Ok(resp);
    }
    if by_weight_stable
        && let (Some(canary_name), Some(shadow)) = (&route.canary, &control.shadow)
        && shadow.sampled(bucket)
        && let Some(canary) = snap.slots.get(canary_name)
    {
        return replay::stable_with_shadow(control, slot, canary, req, ctx).await;
    }
    slot.slot.call(req, ctx).await
}

/// A uniform number in 0..10000 from the request id (breaker probes, shadow sampling).
fn bucket_of(id: &HeaderValue) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(id.as_bytes());
    h.finish() % 10_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::raw_request;
    use crate::slot::h1::tests::scripted;

    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn gateway(upstream: std::net::SocketAddr, route_extra: &str) -> Gateway {
        let config = switchyard_config::load_str(&format!(
            r#"
            [[slot]]
            name = "up"
            kind = "upstream"
            url = "http://{upstream}"
            [[route]]
            name = "r"
            path = "/"
            stable = "up"
            {route_extra}
            "#
        ))
        .expect("config");
        Gateway::new(config, None).expect("gateway")
    }

    fn conn() -> Arc<ConnInfo> {
        Arc::new(ConnInfo::new("192.0.2.7:5000".parse().unwrap(), false))
    }

    /// Field `name` of a head (any case), in order.
    fn fields<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
        head.split("\r\n")
            .filter_map(|l| l.split_once(": "))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    #[tokio::test]
    async fn the_lane_sends_the_fields_the_general_path_sends_and_answers_with_the_upstreams() {
        let up = scripted(&[(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Request-Id: theirs\r\n\
             Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
             Content-Length: 2\r\n\r\nok",
            false,
        )])
        .await;
        let gw = gateway(up.addr, "");
        let req = raw_request(
            format!(
                "GET /a/b?c=1 HTTP/1.1\r\nHost: gw.example\r\nX-Forwarded-For: 203.0.113.1\r\n\
                 Forwarded: for=203.0.113.1\r\nConnection: x-secret\r\nX-Secret: s\r\n\
                 Keep-Alive: 5\r\nX-Forwarded-Host: spoofed\r\nX-Request-Id: rid-7\r\n\
                 traceparent: {TRACE}\r\nCookie: a=1\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("a simple request");
        let mut out = Vec::new();
        let answer = lane(&gw, &conn(), &req, &mut out).await;
        let Some(LaneAnswer::Head { framing, body }) = answer else {
            panic!("the lane did not take the request");
        };
        assert_eq!(framing, Framing::Length(2));
        let got = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&got[..], b"ok");

        // What the upstream got: the client's end-to-end fields, the forwarding chain extended.
        let heads = up.heads.lock().unwrap().clone();
        let sent = &heads[0];
        assert!(sent.starts_with("GET /a/b?c=1 HTTP/1.1\r\n"), "{sent}");
        assert_eq!(fields(sent, "host"), [up.addr.to_string()]);
        assert_eq!(fields(sent, "x-forwarded-for"), ["203.0.113.1, 192.0.2.7"]);
        assert_eq!(fields(sent, "x-forwarded-proto"), ["http"]);
        assert_eq!(
            fields(sent, "forwarded"),
            ["for=203.0.113.1, for=192.0.2.7;proto=http;host=\"gw.example\""]
        );
        assert_eq!(fields(sent, "x-forwarded-host"), ["gw.example"]);
        assert_eq!(fields(sent, "x-request-id"), ["rid-7"]);
        assert_eq!(fields(sent, "cookie"), ["a=1"]);
        let trace = fields(sent, "traceparent");
        assert_eq!(trace.len(), 1);
        assert!(trace[0].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_ne!(trace[0], TRACE, "this hop is the parent span");
        for hop in ["connection", "x-secret", "keep-alive"] {
            assert!(fields(sent, hop).is_empty(), "{hop} went upstream: {sent}");
        }

        // What the client gets: the upstream's end-to-end fields and the gateway's.
        let head = String::from_utf8(out).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(fields(&head, "content-type"), ["text/plain"]);
        assert_eq!(fields(&head, "content-length"), ["2"]);
        assert_eq!(fields(&head, "x-request-id"), ["rid-7"]);
        assert_eq!(fields(&head, "x-switchyard-slot"), ["up"]);
        assert_eq!(fields(&head, "traceparent"), trace);
        assert_eq!(fields(&head, "date").len(), 1);
        for hop in ["connection", "x-hop", "keep-alive"] {
            assert!(
                fields(&head, hop).is_empty(),
                "{hop} reached the client: {head}"
            );
        }
        // The head is ended by the server (`Connection` and the blank line).
        assert!(head.ends_with("\r\n") && !head.ends_with("\r\n\r\n"));

        // The request counts as the general path's do.
        let snap = gw.local_snapshot();
        let slot = snap.slots.get("up").unwrap();
        assert_eq!(slot.stats.snapshot().requests, 1);
    }

    #[tokio::test]
    async fn the_lane_leaves_what_needs_more_than_routing_to_the_general_path() {
        let up = scripted(&[]).await;
        let cases = [
            ("strip_prefix = true", "GET / HTTP/1.1\r\n\r\n"),
            (
                "[route.rate_limit]\nrequests_per_s = 1000\nburst = 1000",
                "GET / HTTP/1.1\r\n\r\n",
            ),
            ("", "GET /ui/ HTTP/1.1\r\n\r\n"),
        ];
        for (extra, head) in cases {
            let gw = gateway(up.addr, extra);
            let req = raw_request(head.as_bytes()).expect("a simple request");
            let mut out = Vec::new();
            assert!(
                lane(&gw, &conn(), &req, &mut out).await.is_none(),
                "taken: {extra} {head}"
            );
            assert!(out.is_empty());
        }
        assert!(up.heads.lock().unwrap().is_empty(), "nothing was sent");
        // A head over the header limit: the general path answers 431.
        let gw = gateway(up.addr, "");
        let big = format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(40 * 1024));
        let req = raw_request(big.as_bytes()).expect("a simple request");
        assert!(lane(&gw, &conn(), &req, &mut Vec::new()).await.is_none());
    }

    #[tokio::test]
    async fn both_paths_hold_the_client_head_to_the_same_header_limit() {
        // A head of exactly `max_header_bytes` (16 KiB by default), counted as both paths count
        // it, and one byte over: the lane takes the first and the general path serves it too; the
        // second is left to the general path, which answers 431.
        let up = scripted(&[
            ("HTTP/1.1 204 No Content\r\n\r\n", false),
            ("HTTP/1.1 204 No Content\r\n\r\n", false),
        ])
        .await;
        let gw = gateway(up.addr, "");
        let limit = gw.local_snapshot().config.server.max_header_bytes;
        // No `traceparent` from the client: the general path adds its own before routing, and
        // must not count it against the client.
        let head = |n: usize| {
            let fixed = "/".len() + ("x-pad".len() + 4);
            format!("GET / HTTP/1.1\r\nx-pad: {}\r\n\r\n", "a".repeat(n - fixed))
        };
        let at = raw_request(head(limit).as_bytes()).unwrap();
        assert_eq!(at.header_bytes(), limit);
        let over = raw_request(head(limit + 1).as_bytes()).unwrap();
        assert!(lane(&gw, &conn(), &over, &mut Vec::new()).await.is_none());
        let resp = handle(&gw, conn(), over.into_request().unwrap()).await;
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let at_copy = raw_request(head(limit).as_bytes()).unwrap();
        let mut out = Vec::new();
        let taken = lane(&gw, &conn(), &at, &mut out).await;
        assert!(
            matches!(taken, Some(LaneAnswer::Head { .. })),
            "the lane left a head at the limit"
        );
        let resp = handle(&gw, conn(), at_copy.into_request().unwrap()).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn an_upstream_that_fails_gets_the_general_paths_error_answer() {
        // Nothing listens: 502 with the gateway's fields, counted as an error.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let gw = gateway(addr, "");
        let req = raw_request(b"GET / HTTP/1.1\r\nx-request-id: r1\r\n\r\n").unwrap();
        let mut out = Vec::new();
        let Some(LaneAnswer::Whole(resp)) = lane(&gw, &conn(), &req, &mut out).await else {
            panic!("no error answer");
        };
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(resp.headers()[&X_SWITCHYARD_SLOT], "up");
        assert_eq!(resp.headers()[&X_REQUEST_ID], "r1");
        assert!(resp.headers().contains_key(&TRACEPARENT));
        let snap = gw.local_snapshot();
        let stats = snap.slots.get("up").unwrap().stats.snapshot();
        assert_eq!((stats.requests, stats.errors), (1, 1));
    }
}
