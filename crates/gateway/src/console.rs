//! The web console at `/ui/` on the data-plane listener: static pages embedded in the binary (built
//! from `web/` by Vite), a small JSON description of the public routes, and the admin API for the
//! operator pages under `/ui/api/admin/…` (same bearer token as the admin listener; refused when no
//! token is configured, since the data-plane listener is the public one).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Limited;
use serde_json::json;

use crate::dataplane::ConnInfo;
use crate::error::{ApiError, json_response};
use crate::state::Gateway;

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Largest request body the operator pages send to the admin API.
const ADMIN_BODY_LIMIT: usize = 1024 * 1024;

/// What the console needs besides the gateway.
pub struct Console {
    admin: Router,
}

impl Console {
    /// A console whose operator pages call `admin` (the admin listener's router).
    pub fn new(admin: Router) -> Self {
        Self { admin }
    }
}

/// What the requests of one data-plane worker thread share. Each worker has its own, so the
/// reference count a request takes on it is written by that thread alone (a count shared by every
/// worker moves its cache line between cores on every request).
pub struct Worker {
    /// The gateway.
    pub gw: Arc<Gateway>,
    /// The web console.
    pub console: Arc<Console>,
}

/// Serves `/ui` and below when the console is on; everything else goes to the data plane.
pub async fn handle(
    worker: Arc<Worker>,
    conn: Arc<ConnInfo>,
    req: Request<Body>,
) -> Response<Body> {
    let Worker { gw, console } = &*worker;
    let path = req.uri().path();
    let ours =
        (path == "/ui" || path.starts_with("/ui/")) && gw.snapshot_guard().config.server.console;
    if !ours {
        return crate::dataplane::handle(gw, conn, req).await;
    }
    let mut resp = serve(gw, console, req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; \
             connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

async fn serve(gw: &Gateway, console: &Console, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/ui/api/admin/") {
        return operator(gw, console, req, rest).await;
    }
    if path == "/ui/api/config" {
        return json_response(StatusCode::OK, &public_config(gw));
    }
    if path.starts_with("/ui/api/") {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such console endpoint",
        )
        .into_response();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the console's pages are read with GET",
        )
        .into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/ui" || path == "/ui/admin" {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        if let Ok(v) = HeaderValue::from_str(&format!("{path}/")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    let rel = path.trim_start_matches("/ui/");
    let rel = if rel.is_empty() || rel.ends_with('/') {
        format!("{rel}index.html")
    } else {
        rel.to_string()
    };
    let Some((_, mime, etag, bytes)) = ASSETS.iter().find(|(p, ..)| *p == rel) else {
        let message = if ASSETS.is_empty() {
            "the console was not built into this binary: run `make setup` (npm run build in web/) and rebuild"
        } else {
            "no such console page"
        };
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", message).into_response();
    };
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut r = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if req.method() == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(&bytes[..]))
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::ETAG, HeaderValue::from_static(etag));
    // Vite puts a content hash in every asset name; pages themselves are revalidated.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if rel.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    r
}

/// The public routes as the console shows them: what each serves and how to opt into its canary.
fn public_config(gw: &Gateway) -> serde_json::Value {
    let snap = gw.snapshot();
    let routes: Vec<_> = snap
        .routes
        .iter()
        .map(|r| {
            let kind = snap
                .slots
                .get(&r.stable)
                .map_or("unknown", |s| s.spec.kind.as_str());
            // The first cookie override that leads to the canary: the "try the new version" switch.
            let try_cookie = r.canary.as_ref().and_then(|canary| {
                r.spec
                    .matches
                    .iter()
                    .find(|m| m.cookie.is_some() && *m.slot == **canary)
                    .map(|m| {
                        json!({
                            "cookie": m.cookie,
                            "value": m.equals.clone().unwrap_or_else(|| "1".into()),
                        })
                    })
            });
            json!({
                "name": &*r.name,
                "path": r.spec.path,
                "kind": kind,
                "stable": &*r.stable,
                "canary": r.canary.as_deref(),
                "canary_weight": r.weight,
                "auth": r.spec.auth,
                "try": try_cookie,
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "routes": routes,
        "operator": operator_refusal(gw).is_none(),
    })
}

/// Why the operator pages may not use the admin API here, if they may not: no admin token, or an
/// admin listener that demands client certificates (the data plane must not be a way around them).
fn operator_refusal(gw: &Gateway) -> Option<&'static str> {
    if !gw.has_admin_token() {
        return Some("the operator console needs an admin token: set [admin] token_env (or token)");
    }
    let mtls = gw
        .snapshot()
        .config
        .admin
        .tls
        .as_ref()
        .is_some_and(|t| t.client_ca.is_some());
    mtls.then_some(
        "the admin API requires client certificates ([admin.tls] client_ca): use the admin listener",
    )
}

/// `/ui/api/admin/{rest}` → the admin API's `/admin/{rest}`.
async fn operator(
    gw: &Gateway,
    console: &Console,
    req: Request<Body>,
    rest: &str,
) -> Response<Body> {
    if let Some(why) = operator_refusal(gw) {
        return ApiError::new(StatusCode::FORBIDDEN, "operator_console_disabled", why)
            .into_response();
    }
    let target = match req.uri().query() {
        Some(q) => format!("/admin/{rest}?{q}"),
        None => format!("/admin/{rest}"),
    };
    let Ok(uri) = target.parse::<http::Uri>() else {
        return ApiError::new(StatusCode::BAD_REQUEST, "bad_path", "malformed path")
            .into_response();
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    let req = Request::from_parts(parts, Body::new(Limited::new(body, ADMIN_BODY_LIMIT)));
    use tower::ServiceExt;
    match console.admin.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}
