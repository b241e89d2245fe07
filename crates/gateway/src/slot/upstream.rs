//! `kind = "upstream"`: forwards requests to an HTTP(S) service.
//!
//! Bodies stream both ways (nothing is buffered whole); connections are pooled per slot; hop-by-hop
//! headers are removed and `X-Forwarded-*`/`Forwarded` set; WebSocket (HTTP/1.1 `Upgrade`) is passed
//! through. Upstream unreachable → 502, no response headers within `timeout_ms` → 504.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_config::SlotSpec;

use super::{RequestContext, Slot, SlotFuture, h1, is_hop_by_hop, is_text, push_field};
use crate::body::client_body_error;
use crate::dataplane::ConnInfo;
use crate::error::ApiError;
use crate::server::RawRequest;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A pooled client to one upstream base URL.
pub struct UpstreamSlot {
    url: String,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    timeout: Duration,
    preserve_host: bool,
    connect_timeout: Duration,
    pool_max_idle: usize,
    /// Plain-HTTP requests without a body (most of a proxy's traffic): this slot's own HTTP/1.1
    /// keep-alive connections, one pool per data-plane worker thread (`h1`).
    pool: Arc<h1::Pool>,
    /// HTTPS, requests with a body and protocol upgrades go through hyper-util's pooled client, one
    /// per thread: a request never crosses threads to reach its upstream connection.
    clients: thread_local::ThreadLocal<Client<HttpsConnector<HttpConnector>, Body>>,
}

impl UpstreamSlot {
    /// Builds the slot and its connection pool (no connection is opened yet).
    pub fn new(spec: &SlotSpec) -> anyhow::Result<Self> {
        let url = spec
            .url
            .clone()
            .ok_or_else(|| anyhow::anyhow!("upstream slot without url"))?;
        let uri: Uri = url.parse()?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("`{url}` has no host"))?;
        let base_path = uri.path().trim_end_matches('/').to_string();
        let pool_max_idle = spec.pool_max_idle.unwrap_or(256);

        Ok(Self {
            url,
            scheme,
            authority,
            base_path,
            timeout: Duration::from_millis(spec.timeout_ms.unwrap_or(30_000)),
            preserve_host: spec.preserve_host.unwrap_or(false),
            connect_timeout: Duration::from_millis(spec.connect_timeout_ms.unwrap_or(2_000)),
            pool_max_idle,
            pool: Arc::new(h1::Pool::new(pool_max_idle)),
            clients: thread_local::ThreadLocal::new(),
        })
    }

    async fn connect(&self) -> Result<h1::Conn, ApiError> {
        let unavailable = |e: String| {
            tracing::warn!(upstream = %self.url, error = %e, "upstream connect failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "upstream is unreachable",
            )
        };
        let host = self
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| unavailable("connect timed out".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(h1::Conn::new(stream))
    }

    /// Plain HTTP, no body, no upgrade: on this thread's own keep-alive connections (`h1`).
    async fn send_bodiless(&self, req: Request<Body>) -> Result<Response<Body>, ApiError> {
        let (head, _) = req.into_parts();
        let mut retry = Retry::new(&head.method);
        loop {
            let conn = self.pooled(retry.fresh_only).await?;
            let reused = conn.is_reused();
            match conn.send(&head, self.authority.as_str(), &self.pool).await {
                // `h1` leaves the hop-by-hop fields out of the head it returns.
                Ok((parts, body)) => return Ok(Response::from_parts(parts, Body::new(body))),
                Err(e) if retry.again(reused, &e) => {}
                Err(e) => return Err(self.request_failed(e)),
            }
        }
    }

    /// Whether [`UpstreamSlot::send_raw`] can take a request for this slot: plain HTTP and no base
    /// path to put in front of the client's.
    pub(crate) fn takes_raw(&self) -> bool {
        self.scheme == Scheme::HTTP && self.base_path.is_empty()
    }

    /// The raw lane's request (`dataplane`): a simple HTTP/1.1 request without a body, sent as its
    /// head came, with the same changes [`Slot::call`] makes (hop-by-hop fields out, forwarding
    /// fields, request id and trace context set, `Host`), on this thread's keep-alive connections
    /// and within the slot's timeout. `each` gets the response's status and its end-to-end fields.
    pub(crate) async fn send_raw(
        &self,
        req: &RawRequest,
        fwd: &RawForward<'_>,
        each: &mut FieldSink<'_>,
    ) -> Result<(StatusCode, h1::ResponseBody), ApiError> {
        let method = req.method();
        let exchange = async {
            let mut retry = Retry::new(method);
            loop {
                let conn = self.pooled(retry.fresh_only).await?;
                let reused = conn.is_reused();
                let write = |out: &mut Vec<u8>| self.write_raw_head(out, req, fwd);
                match conn.send_raw(method, write, &self.pool, &mut *each).await {
                    Ok(answer) => return Ok(answer),
                    Err(e) if retry.again(reused, &e) => {}
                    Err(e) => return Err(self.request_failed(e)),
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(self.timeout_error()),
        }
    }

    /// Writes the upstream request head of `req` for [`UpstreamSlot::send_raw`]: what
    /// `strip_hop_by_hop`, [`UpstreamSlot::set_forwarding_headers`] and `h1`'s head writer do to a
    /// request's map, done on its raw fields.
    fn write_raw_head(&self, out: &mut Vec<u8>, req: &RawRequest, fwd: &RawForward<'_>) {
        h1::push_request_line(out, req.method(), req.uri());
        // The fields `Connection` names are hop-by-hop too.
        let mut named: Vec<&[u8]> = Vec::new();
        for (name, value) in req.fields() {
            if name.eq_ignore_ascii_case(b"connection") && is_text(value) {
                named.extend(
                    super::raw_elements(value)
                        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"close")),
                );
            }
        }
        let hop =
            |name: &[u8]| is_hop_by_hop(name) || named.iter().any(|n| n.eq_ignore_ascii_case(name));
        let previous = |field: &HeaderName| {
            req.fields()
                .find(|(n, _)| n.eq_ignore_ascii_case(field.as_str().as_bytes()))
                .filter(|(n, _)| !hop(n))
                .and_then(|(_, v)| std::str::from_utf8(v).ok().filter(|_| is_text(v)))
        };
        let xff = forwarded_for(previous(&X_FORWARDED_FOR), fwd.conn);
        let forwarded = forwarded_value(previous(&FORWARDED), fwd.conn, fwd.host);
        for (name, value) in req.fields() {
            let replaced = [
                &header::HOST,
                &X_FORWARDED_FOR,
                &X_FORWARDED_PROTO,
                &FORWARDED,
                &X_REQUEST_ID,
                &crate::dataplane::TRACEPARENT,
            ]
            .iter()
            .any(|f| f.as_str().as_bytes().eq_ignore_ascii_case(name))
                || (fwd.host.is_some()
                    && name.eq_ignore_ascii_case(X_FORWARDED_HOST.as_str().as_bytes()));
            if replaced || hop(name) {
                continue;
            }
            push_field(out, name, value);
        }
        let host = match (fwd.host, self.preserve_host) {
            (Some(host), true) => host,
            _ => self.authority.as_str(),
        };
        push_field(out, b"host", host.as_bytes());
        push_field(out, b"x-forwarded-for", xff.as_bytes());
        push_field(out, b"x-forwarded-proto", proto(fwd.conn).as_bytes());
        push_field(out, b"forwarded", forwarded.as_bytes());
        if let Some(host) = fwd.host {
            push_field(out, b"x-forwarded-host", host.as_bytes());
        }
        push_field(out, b"x-request-id", fwd.request_id);
        push_field(out, b"traceparent", fwd.traceparent);
        // The lane's requests have no `Content-Length` (`server::fast` takes none).
        h1::push_no_body(out, req.method());
        out.extend_from_slice(b"\r\n");
    }

    fn client(&self) -> &Client<HttpsConnector<HttpConnector>, Body> {
        self.clients.get_or(|| {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(self.connect_timeout));
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(self.pool_max_idle)
                .build(connector)
        })
    }

    fn target_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, ApiError> {
        let mut pq = String::with_capacity(self.base_path.len() + path.len() + 16);
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if pq.is_empty() {
            pq.push('/');
        }
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let pq = PathAndQuery::try_from(pq).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "request path cannot be forwarded",
            )
        })?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "bad request target")
            })
    }

    async fn forward(
        &self,
        mut req: Request<Body>,
        ctx: &RequestContext,
    ) -> Result<Response<Body>, ApiError> {
        let upgrade = upgrade_protocol(&req);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));

        let uri = match req.uri().path_and_query() {
            // Common case: nothing to rewrite, reuse the client's path and query as they are.
            Some(pq) if self.base_path.is_empty() && pq.path() == ctx.path => Uri::builder()
                .scheme(self.scheme.clone())
                .authority(self.authority.clone())
                .path_and_query(pq.clone())
                .build()
                .map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "bad request target")
                })?,
            _ => self.target_uri(&ctx.path, req.uri().query())?,
        };
        let (mut parts, body) = req.into_parts();
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        if let Some(proto) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }
        self.set_forwarding_headers(&mut parts.headers, ctx);

        let out = Request::from_parts(parts, body);
        if upgrade.is_none()
            && self.scheme == Scheme::HTTP
            && http_body::Body::is_end_stream(out.body())
        {
            return match tokio::time::timeout(self.timeout, self.send_bodiless(out)).await {
                Ok(r) => r,
                Err(_) => Err(self.timeout_error()),
            };
        }
        let mut resp = match tokio::time::timeout(self.timeout, self.client().request(out)).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!(
                        "upstream did not answer within {} ms",
                        self.timeout.as_millis()
                    ),
                ));
            }
            Ok(Err(e)) => return Err(self.classify(&e, ctx)),
            Ok(Ok(resp)) => resp,
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_protocol",
                    "upstream switched protocols without being asked to",
                ));
            };
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
                        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                            tracing::debug!(error = %e, "upgraded connection ended with an error");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
                }
            });
            let (mut parts, _) = resp.into_parts();
            let proto = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(p) = proto {
                parts.headers.insert(header::UPGRADE, p);
            }
            return Ok(Response::from_parts(parts, Body::empty()));
        }

        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    /// This thread's most recent idle connection, or a new one (`fresh_only`: a new one).
    async fn pooled(&self, fresh_only: bool) -> Result<h1::Conn, ApiError> {
        match (fresh_only, self.pool.checkout()) {
            (false, Some(conn)) => Ok(conn),
            _ => self.connect().await,
        }
    }

    fn request_failed(&self, e: h1::SendError) -> ApiError {
        let e = e.into_io();
        tracing::warn!(upstream = %self.url, error = %e, "upstream request failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "upstream request failed",
        )
    }

    fn set_forwarding_headers(&self, h: &mut HeaderMap, ctx: &RequestContext) {
        let conn = &ctx.conn;
        let text = |h: &HeaderMap, name: &HeaderName| {
            h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        let xff = forwarded_for(text(h, &X_FORWARDED_FOR).as_deref(), conn);
        h.insert(X_FORWARDED_FOR, xff);
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto(conn)));
        let fwd = forwarded_value(text(h, &FORWARDED).as_deref(), conn, ctx.host.as_deref());
        if let Some(host) = &ctx.host {
            insert_str(h, X_FORWARDED_HOST, host);
        }
        if let Ok(v) = HeaderValue::try_from(fwd) {
            h.insert(FORWARDED, v);
        }
        h.insert(X_REQUEST_ID, ctx.request_id.clone());
        match (&ctx.host, self.preserve_host) {
            (Some(host), true) => insert_str(h, header::HOST, host),
            _ => {
                // The client library sets Host from the target URI.
                h.remove(header::HOST);
            }
        }
    }

    fn timeout_error(&self) -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!(
                "upstream did not answer within {} ms",
                self.timeout.as_millis()
            ),
        )
    }

    fn classify(&self, e: &hyper_util::client::legacy::Error, ctx: &RequestContext) -> ApiError {
        if let Some(client_err) = client_body_error(e, ctx.max_body_bytes) {
            return client_err;
        }
        let detail = error_chain(e);
        if e.is_connect() {
            tracing::warn!(upstream = %self.url, error = %detail, "upstream connect failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "upstream is unreachable",
            )
        } else {
            tracing::warn!(upstream = %self.url, error = %detail, "upstream request failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream request failed",
            )
        }
    }
}

impl Slot for UpstreamSlot {
    fn call<'a>(&'a self, req: Request<Body>, ctx: &'a RequestContext) -> SlotFuture<'a> {
        Box::pin(self.forward(req, ctx))
    }

    fn as_upstream(&self) -> Option<&UpstreamSlot> {
        Some(self)
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.url,
            "timeout_ms": self.timeout.as_millis() as u64,
            "preserve_host": self.preserve_host,
        })
    }
}

/// Takes a response's status and its end-to-end fields one by one ([`UpstreamSlot::send_raw`]).
pub(crate) type FieldSink<'a> = dyn FnMut(StatusCode, &[u8], &[u8]) + Send + 'a;

/// What the raw lane passes on about a request besides its own fields ([`UpstreamSlot::send_raw`]).
pub(crate) struct RawForward<'a> {
    /// The client connection.
    pub conn: &'a ConnInfo,
    /// The host the client asked for.
    pub host: Option<&'a str>,
    /// `X-Request-Id`.
    pub request_id: &'a [u8],
    /// `traceparent`.
    pub traceparent: &'a [u8],
}

/// When a request on a pooled connection is sent again. An idle connection the upstream closed
/// just as the request went out fails before any response byte; a request that may be repeated
/// (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) is then sent once more, on a new
/// connection.
struct Retry {
    idempotent: bool,
    /// The next attempt takes a new connection (the retry is used).
    fresh_only: bool,
}

impl Retry {
    fn new(method: &Method) -> Self {
        Self {
            idempotent: matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            ),
            fresh_only: false,
        }
    }

    /// Whether to try again after `e` on a connection that was `reused`.
    fn again(&mut self, reused: bool, e: &h1::SendError) -> bool {
        let again =
            matches!(e, h1::SendError::Closed(_)) && reused && self.idempotent && !self.fresh_only;
        self.fresh_only |= again;
        again
    }
}

/// `X-Forwarded-For`: the client's address after the chain the request came with (`prev`, its
/// first such field), or alone.
fn forwarded_for(prev: Option<&str>, conn: &ConnInfo) -> HeaderValue {
    match prev {
        Some(prev) if !prev.is_empty() => {
            HeaderValue::try_from(format!("{prev}, {}", conn.peer_ip.to_str().unwrap_or("")))
                .unwrap_or_else(|_| conn.peer_ip.clone())
        }
        _ => conn.peer_ip.clone(),
    }
}

/// `Forwarded` (RFC 7239): this hop's element (`for`, `proto`, `host`) after those the request
/// came with (`prev`, its first such field).
fn forwarded_value(prev: Option<&str>, conn: &ConnInfo, host: Option<&str>) -> String {
    let mut fwd = String::with_capacity(conn.forwarded.len() + 64);
    if let Some(prev) = prev.filter(|p| !p.is_empty()) {
        fwd.push_str(prev);
        fwd.push_str(", ");
    }
    fwd.push_str(&conn.forwarded);
    if let Some(host) = host {
        fwd.push_str(";host=\"");
        fwd.push_str(host);
        fwd.push('"');
    }
    fwd
}

/// `X-Forwarded-Proto`.
fn proto(conn: &ConnInfo) -> &'static str {
    if conn.tls { "https" } else { "http" }
}

fn insert_str(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// The protocol asked for by an HTTP/1.1 upgrade request (`Connection: upgrade` + `Upgrade: x`).
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    if super::has_token(req.headers(), header::CONNECTION, "upgrade") {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes hop-by-hop headers, including those named in `Connection`, and `Upgrade`.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names finds the hop-by-hop fields present: usually none, or an upstream's
    // `Connection: keep-alive`. Only those, and the fields `Connection` names, are removed (a
    // hashed removal each, instead of one per candidate name).
    let mut present: Vec<HeaderName> = h
        .keys()
        .filter(|k| is_hop_by_hop(k.as_str()))
        .cloned()
        .collect();
    if present.is_empty() {
        return;
    }
    for value in h.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            // `close` is an option, not a field; hop-by-hop names are already in `present` when
            // they are there at all.
            if token.is_empty() || token.eq_ignore_ascii_case("close") || is_hop_by_hop(token) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                present.push(name);
            }
        }
    }
    for name in &present {
        h.remove(name);
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::HOP_BY_HOP;

    #[test]
    fn hop_by_hop_headers_and_connection_tokens_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, close, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            assert!(h.is_empty(), "{name} was forwarded");
        }
    }

    #[tokio::test]
    async fn a_keep_alive_connection_closed_under_a_request_is_retried_once_on_a_new_one() {
        use std::sync::atomic::Ordering;
        // The second request arrives on the kept-alive connection, which the upstream then closes
        // without answering (its idle timeout firing as the request came in).
        let up = super::h1::tests::scripted(&[
            ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na", false),
            ("", true),
            ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb", false),
            ("", true),
        ])
        .await;
        let spec: SlotSpec = toml::from_str(&format!(
            "name='u'\nkind='upstream'\nurl='http://{}'",
            up.addr
        ))
        .unwrap();
        let slot = UpstreamSlot::new(&spec).unwrap();
        let req = |m: Method| {
            Request::builder()
                .method(m)
                .uri("/")
                .body(Body::empty())
                .unwrap()
        };
        let body = |r: Response<Body>| async move {
            http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes()
        };
        assert_eq!(
            body(slot.send_bodiless(req(Method::GET)).await.unwrap()).await,
            "a"
        );
        assert_eq!(
            body(slot.send_bodiless(req(Method::GET)).await.unwrap()).await,
            "b"
        );
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        // A request that may not be repeated is not: 502.
        let err = slot.send_bodiless(req(Method::POST)).await.unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        assert_eq!(up.heads.lock().unwrap().len(), 4, "the POST went out once");
    }

    #[test]
    fn target_uri_joins_base_path_and_keeps_query() {
        let spec: SlotSpec =
            toml::from_str("name='u'\nkind='upstream'\nurl='http://127.0.0.1:9/base/'").unwrap();
        let slot = UpstreamSlot::new(&spec).unwrap();
        assert_eq!(
            slot.target_uri("/x/y", Some("a=1")).unwrap(),
            "http://127.0.0.1:9/base/x/y?a=1"
        );
        let spec: SlotSpec = toml::from_str("name='u'\nkind='upstream'\nurl='http://h:1'").unwrap();
        let slot = UpstreamSlot::new(&spec).unwrap();
        assert_eq!(slot.target_uri("", None).unwrap(), "http://h:1/");
    }
}
