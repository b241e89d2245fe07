//! The admin listener: `/metrics`, `/healthz`, `/readyz` (open) and the JSON API under `/admin/`
//! (bearer token when configured).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http::{HeaderValue, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, json_response};
use crate::state::{ChangeError, Gateway, RouteRuntime};

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The gateway.
    pub gw: Arc<Gateway>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Re-reads the configuration file; returns a summary or every problem.
    pub reload: Arc<dyn Fn() -> Result<serde_json::Value, ReloadError> + Send + Sync>,
}

/// A failed reload.
#[derive(Debug)]
pub struct ReloadError {
    /// One line per problem.
    pub problems: Vec<String>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/slots", get(slots))
        .route("/slots/{slot}/load", post(load_slot))
        .route("/routes", get(routes))
        .route("/routes/{route}", get(route))
        .route("/routes/{route}/weight", put(set_weight))
        .route("/routes/{route}/promote", post(promote))
        .route("/routes/{route}/rollback", post(rollback))
        .route("/routes/{route}/switch", post(switch))
        .route("/routes/{route}/ramp/{command}", post(ramp))
        .route("/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/admin", api)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint")
        })
        .with_state(state)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let token = st.gw.admin_token();
    if let Some(want) = token.as_deref() {
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match got {
            None => {
                let mut resp = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a bearer token is required",
                )
                .into_response();
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return resp;
            }
            Some(got) if !constant_time_eq(got.as_bytes(), want.as_bytes()) => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the bearer token is not valid",
                )
                .into_response();
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

async fn metrics(State(st): State<AdminState>) -> Response {
    // In-flight counts, model memory and cache sizes are read when scraped, not on the request
    // path (a gauge update per request was a write to memory shared by every worker).
    let snap = st.gw.snapshot();
    for h in snap.slots.values() {
        h.inflight_gauge.set(h.stats.inflight() as f64);
        for (device, m) in h.slot.memory() {
            crate::telemetry::set_model_memory(&h.name, &device, m);
        }
    }
    for cache in snap.routes.iter().filter_map(|r| r.cache.as_ref()) {
        cache.publish_size();
    }
    crate::telemetry::set_spare_buffers();
    let mut resp = st.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

async fn readyz(State(st): State<AdminState>) -> Response {
    if st.gw.draining.load(Ordering::Relaxed) {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "draining" }),
        )
    } else {
        json_response(StatusCode::OK, &json!({ "status": "ready" }))
    }
}

async fn slots(State(st): State<AdminState>) -> Response {
    let snap = st.gw.snapshot();
    let mut list: Vec<_> = snap
        .slots
        .values()
        .map(|h| {
            let w = h.stats.snapshot();
            json!({
                "name": &*h.name,
                "kind": h.spec.kind.as_str(),
                "version": &*h.live_version(),
                "configured_version": h.spec.version,
                "inflight": h.stats.inflight(),
                "loaded_at": humantime::format_rfc3339_seconds(h.loaded_at).to_string(),
                "last_minute": {
                    "requests": w.requests,
                    "errors": w.errors,
                    "error_rate": w.error_rate(),
                    "p50_ms": w.p50_s * 1e3,
                    "p95_ms": w.p95_s * 1e3,
                    "requests_per_s": w.rate_per_s,
                },
                "details": h.slot.describe(),
            })
        })
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json_response(StatusCode::OK, &json!({ "slots": list }))
}

async fn load_slot(
    State(st): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let Json(params) = match body {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text())
                .into_response();
        }
    };
    let snap = st.gw.snapshot();
    let Some(handle) = snap.slots.get(name.as_str()) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_slot",
            format!("no slot named `{name}`"),
        )
        .into_response();
    };
    match handle.slot.load(params).await {
        Ok(details) => json_response(StatusCode::OK, &json!({ "slot": name, "details": details })),
        Err(e) => {
            tracing::warn!(slot = %name, error = %e.message, "admin: model load refused; the slot keeps serving");
            e.into_response()
        }
    }
}

async fn routes(State(st): State<AdminState>) -> Response {
    let snap = st.gw.snapshot();
    let list: Vec<_> = snap.routes.iter().map(|r| r.to_json()).collect();
    json_response(StatusCode::OK, &json!({ "routes": list }))
}

async fn route(State(st): State<AdminState>, Path(name): Path<String>) -> Response {
    match st.gw.snapshot().route(&name) {
        Some(r) => json_response(StatusCode::OK, &r.to_json()),
        None => change_error(ChangeError::UnknownRoute(name)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    canary_weight: f64,
}

fn changed(r: Result<Arc<RouteRuntime>, ChangeError>, what: &str) -> Response {
    match r {
        Ok(route) => {
            tracing::info!(route = %route.name, stable = %route.stable, canary = ?route.canary.as_deref(),
                canary_weight = route.weight, "admin: {what}");
            json_response(StatusCode::OK, &route.to_json())
        }
        Err(e) => change_error(e),
    }
}

async fn switch(State(st): State<AdminState>, Path(name): Path<String>) -> Response {
    changed(st.gw.switch(&name), "blue-green switch")
}

async fn ramp(
    State(st): State<AdminState>,
    Path((name, command)): Path<(String, String)>,
) -> Response {
    let Some(cmd) = crate::autopilot::RampCommand::parse(&command) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_command",
            format!("ramp command `{command}` is not start, pause, resume or abort"),
        )
        .into_response();
    };
    match crate::autopilot::command(&st.gw, &name, cmd) {
        Ok(_) => match st.gw.snapshot().route(&name) {
            Some(r) => json_response(StatusCode::OK, &r.to_json()),
            None => change_error(ChangeError::UnknownRoute(name)),
        },
        Err(e) => change_error(e),
    }
}

fn change_error(e: ChangeError) -> Response {
    let (status, code) = match &e {
        ChangeError::UnknownRoute(_) => (StatusCode::NOT_FOUND, "unknown_route"),
        ChangeError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        ChangeError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
    };
    ApiError::new(status, code, e.to_string()).into_response()
}

async fn set_weight(
    State(st): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<WeightBody>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => changed(
            st.gw.set_weight(&name, b.canary_weight),
            "canary weight set",
        ),
        Err(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("expected {{\"canary_weight\": N}}: {}", e.body_text()),
        )
        .into_response(),
    }
}

async fn promote(State(st): State<AdminState>, Path(name): Path<String>) -> Response {
    changed(st.gw.promote(&name), "canary promoted")
}

async fn rollback(State(st): State<AdminState>, Path(name): Path<String>) -> Response {
    changed(st.gw.rollback(&name), "canary rolled back")
}

async fn reload(State(st): State<AdminState>) -> Response {
    let reload = st.reload.clone();
    match tokio::task::spawn_blocking(move || reload()).await {
        Ok(Ok(summary)) => json_response(StatusCode::OK, &summary),
        Ok(Err(e)) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": {
                "code": "invalid_config",
                "message": "the configuration was not applied; the previous one keeps serving",
                "problems": e.problems,
            }}),
        ),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload_failed",
            e.to_string(),
        )
        .into_response(),
    }
}
