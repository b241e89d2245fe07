//! The data-plane request path: request id → limits → route → splitter → slot → response headers,
//! metrics and access log.
//!
//! One `Arc<Snapshot>` is taken per request and everything else is borrowed from it, so a request
//! keeps the routes and slots it started with even if they are swapped meanwhile.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::Limited;
use switchyard_routing::{Choice, RequestView, strip_route_prefix};

use crate::autopilot::Admit;
use crate::body::DeadlineBody;
use crate::error::ApiError;
use crate::replay;
use crate::slot::RequestContext;
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
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| Cow::Borrowed(v.trim_matches('"')))
    }

    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        let q = self.uri.query()?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
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
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    #[cfg(feature = "otlp")]
    if let Some((span, header)) = crate::otlp::start(incoming, req.method(), req.uri().path()) {
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
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id.as_bytes().iter().all(u8::is_ascii_graphic) =>
        {
            id.clone()
        }
        _ => {
            let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
            let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
            HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-"))
        }
    }
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
    let mut resp = match route_and_call(snap, conn, req, &mut fin).await {
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
    if let Some(slot) = fin.slot {
        resp.headers_mut()
            .insert(X_SWITCHYARD_SLOT, slot.header.clone());
    }
    resp.headers_mut()
        .insert(X_REQUEST_ID, fin.request_id.clone());
    resp.headers_mut().insert(TRACEPARENT, trace);
    fin.status = resp.status().as_u16();
    resp
}

async fn route_and_call<'s>(
    snap: &'s Snapshot,
    conn: &Arc<ConnInfo>,
    req: Request<Body>,
    fin: &mut Finish<'s>,
) -> Result<Response<Body>, ApiError> {
    let server = &snap.config.server;
    if header_bytes(&req) > server.max_header_bytes {
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
    let weight = if route.canary.is_some() {
        route.weight
    } else {
        0.0
    };
    let (mut slot_name, by_weight_stable) = match route.splitter.choose(weight, &view) {
        Choice::Override { target, .. } => (target, false),
        Choice::Canary { .. } => (route.canary.as_ref().unwrap_or(&route.stable), false),
        Choice::Stable { .. } => (&route.stable, true),
    };
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
