//! The data-plane request path: request id → limits → route → splitter → slot → response headers,
//! metrics and access log.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::Limited;
use hyper::body::Incoming;
use metrics::SharedString;
use switchyard_routing::{Choice, RequestView, strip_route_prefix};

use crate::body::DeadlineBody;
use crate::error::ApiError;
use crate::slot::RequestContext;
use crate::state::{Gateway, SlotHandle};
use crate::telemetry::{self, RequestLabels};

/// Response header naming the slot that answered.
pub const X_SWITCHYARD_SLOT: HeaderName = HeaderName::from_static("x-switchyard-slot");
/// Request/response header carrying the request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How much of a refused (too large) body is read and dropped before answering 413.
const DISCARD_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// How long reading a refused body may take before answering 413 anyway.
const DISCARD_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Facts about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// A view of the request for the splitter.
struct View<'a> {
    req: &'a Request<Incoming>,
    peer: IpAddr,
}

impl RequestView for View<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.req.headers().get(name).and_then(|v| v.to_str().ok())
    }

    fn cookie(&self, name: &str) -> Option<Cow<'_, str>> {
        self.req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| Cow::Borrowed(v.trim_matches('"')))
    }

    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        let q = self.req.uri().query()?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    fn client_ip(&self) -> Option<IpAddr> {
        Some(self.peer)
    }
}

fn request_id(req: &Request<Incoming>) -> Arc<str> {
    match req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        Some(id)
            if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Arc::from(id)
        }
        _ => Arc::from(uuid::Uuid::new_v4().simple().to_string()),
    }
}

fn header_bytes(req: &Request<Incoming>) -> usize {
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri().path_and_query().map_or(0, |p| p.as_str().len())
}

/// Records metrics and the access log when a request ends, also when the client goes away and the
/// request future is dropped (status 499).
struct Finish {
    gw_log: bool,
    start: Instant,
    request_id: Arc<str>,
    method: http::Method,
    path: String,
    route: Option<Arc<str>>,
    slot: Option<SlotHandle>,
    labels: Option<RequestLabels>,
    status: u16,
    code: Option<&'static str>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed().as_secs_f64();
        if let Some(slot) = &self.slot {
            let inflight = slot.stats.add_inflight(-1);
            slot.stats.record(elapsed, self.status >= 500);
            if let Some(labels) = &self.labels {
                telemetry::set_inflight(&labels.slot, inflight);
                telemetry::record_request(labels, self.status, elapsed);
            }
        }
        if self.gw_log {
            tracing::info!(
                target: "access",
                request_id = %self.request_id,
                method = %self.method,
                path = %self.path,
                route = self.route.as_deref().unwrap_or("-"),
                slot = self.slot.as_ref().map_or("-", |s| &*s.name),
                status = self.status,
                error = self.code.unwrap_or(""),
                duration_ms = (elapsed * 1e6).round() / 1e3,
                "request"
            );
        }
    }
}

/// Serves one data-plane request. Never fails: every problem becomes a JSON error response.
pub async fn handle(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<Body> {
    let start = Instant::now();
    let request_id = request_id(&req);
    let snap = gw.snapshot();
    let mut fin = Finish {
        gw_log: snap.config.log.access_log,
        start,
        request_id: request_id.clone(),
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        route: None,
        slot: None,
        labels: None,
        status: 499,
        code: None,
    };

    let mut resp = match route_and_call(&snap, &conn, req, &request_id, start, &mut fin).await {
        Ok(resp) => resp,
        Err(e) => {
            fin.code = Some(e.code);
            e.into_response()
        }
    };
    if let Some(slot) = &fin.slot
        && let Ok(v) = HeaderValue::from_str(&slot.name)
    {
        resp.headers_mut().insert(X_SWITCHYARD_SLOT, v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    fin.status = resp.status().as_u16();
    drop(fin);
    resp
}

async fn route_and_call(
    snap: &crate::state::Snapshot,
    conn: &ConnInfo,
    req: Request<Incoming>,
    request_id: &Arc<str>,
    start: Instant,
    fin: &mut Finish,
) -> Result<Response<Body>, ApiError> {
    let server = &snap.config.server;
    if header_bytes(&req) > server.max_header_bytes {
        return Err(ApiError::new(
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers exceed {} bytes", server.max_header_bytes),
        ));
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(String::from)
        });
    let path = req.uri().path();
    let route = snap
        .table
        .find(host.as_deref(), path)
        .ok_or_else(|| ApiError::no_route(path))?
        .clone();
    fin.route = Some(route.name.clone());

    let view = View {
        req: &req,
        peer: conn.peer.ip(),
    };
    let weight = if route.canary.is_some() {
        route.weight
    } else {
        0.0
    };
    let slot_name = match route.splitter.choose(weight, &view) {
        Choice::Override { target, .. } => target.clone(),
        Choice::Canary { .. } => route.canary.clone().unwrap_or_else(|| route.stable.clone()),
        Choice::Stable { .. } => route.stable.clone(),
    };
    let slot = snap.slots.get(&slot_name).cloned().ok_or_else(|| {
        ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "slot_unavailable",
            format!("slot `{slot_name}` is not loaded"),
        )
    })?;
    let inflight = slot.stats.add_inflight(1);
    let labels = RequestLabels {
        route: SharedString::from(route.name.clone()),
        slot: SharedString::from(slot.name.clone()),
        version: SharedString::from(Arc::<str>::from(slot.spec.version.as_str())),
    };
    telemetry::set_inflight(&labels.slot, inflight);
    fin.labels = Some(labels);
    fin.slot = Some(slot.clone());

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
    let ctx_path = if route.spec.strip_prefix {
        strip_route_prefix(&route.spec.path, req.uri().path()).into_owned()
    } else {
        req.uri().path().to_string()
    };
    let ctx = RequestContext {
        request_id: request_id.clone(),
        route: route.name.clone(),
        peer: conn.peer,
        tls: conn.tls,
        host,
        path: ctx_path,
        max_body_bytes: limit,
    };
    let deadline = tokio::time::Instant::from_std(start)
        + std::time::Duration::from_millis(server.request_timeout_ms);
    let req = req.map(|b| Body::new(Limited::new(DeadlineBody::new(b, deadline), limit as usize)));
    slot.slot.call(req, &ctx).await
}
