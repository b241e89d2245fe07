//! Logs (tracing) and metrics (the `metrics` facade exported in Prometheus format).
//!
//! Metric names are part of the product's interface; dashboards rely on them:
//!
//! | name | type | labels | unit |
//! |---|---|---|---|
//! | `switchyard_requests_total` | counter | route, slot, version, status | requests |
//! | `switchyard_request_duration_seconds` | histogram | route, slot | seconds to response headers |
//! | `switchyard_inflight_requests` | gauge | slot | requests |
//! | `switchyard_slot_info` | gauge (1 = present) | slot, kind, version | – |
//! | `switchyard_route_canary_weight` | gauge | route | percent |
//! | `switchyard_config_reloads_total` | counter | result (`ok`/`error`) | reloads |

use std::time::Duration;

use metrics::{SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use switchyard_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Histogram buckets for `_seconds` metrics: 1 ms to 60 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the global tracing subscriber. `RUST_LOG` overrides the configured level.
pub fn init_logging(cfg: &LogConfig, format_override: Option<LogFormat>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    let result = match format_override.unwrap_or(cfg.format) {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// Installs the Prometheus recorder and describes every metric. Call once, inside the runtime.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .install_recorder()?;
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

fn describe() {
    metrics::describe_counter!(
        "switchyard_requests_total",
        Unit::Count,
        "Requests answered, by route, slot, slot version and HTTP status (499 = client went away)"
    );
    metrics::describe_histogram!(
        "switchyard_request_duration_seconds",
        Unit::Seconds,
        "Time from receiving a request to sending its response headers"
    );
    metrics::describe_gauge!(
        "switchyard_inflight_requests",
        Unit::Count,
        "Requests being served by a slot"
    );
    metrics::describe_gauge!(
        "switchyard_slot_info",
        "1 for every configured slot, with its kind and version"
    );
    metrics::describe_gauge!(
        "switchyard_route_canary_weight",
        Unit::Percent,
        "Share of sticky buckets sent to the route's canary"
    );
    metrics::describe_counter!(
        "switchyard_config_reloads_total",
        Unit::Count,
        "Configuration reloads, by result"
    );
}

/// Publishes `switchyard_slot_info`.
pub fn set_slot_info(slot: &str, kind: &'static str, version: &str, value: f64) {
    metrics::gauge!("switchyard_slot_info",
        "slot" => slot.to_string(), "kind" => kind, "version" => version.to_string())
    .set(value);
}

/// Publishes `switchyard_route_canary_weight`.
pub fn set_route_weight(route: &str, weight: f64) {
    metrics::gauge!("switchyard_route_canary_weight", "route" => route.to_string()).set(weight);
}

/// Counts a reload.
pub fn count_reload(ok: bool) {
    metrics::counter!("switchyard_config_reloads_total", "result" => if ok { "ok" } else { "error" })
        .increment(1);
}

/// Labels of one request's metrics, shared (no copies on the hot path).
pub struct RequestLabels {
    /// Route name.
    pub route: SharedString,
    /// Slot name.
    pub slot: SharedString,
    /// Slot version.
    pub version: SharedString,
}

/// Sets the in-flight gauge of a slot.
pub fn set_inflight(slot: &SharedString, value: i64) {
    metrics::gauge!("switchyard_inflight_requests", "slot" => slot.clone()).set(value as f64);
}

/// Records a finished request.
pub fn record_request(labels: &RequestLabels, status: u16, seconds: f64) {
    metrics::counter!("switchyard_requests_total",
        "route" => labels.route.clone(), "slot" => labels.slot.clone(),
        "version" => labels.version.clone(), "status" => status_label(status))
    .increment(1);
    metrics::histogram!("switchyard_request_duration_seconds",
        "route" => labels.route.clone(), "slot" => labels.slot.clone())
    .record(seconds);
}

fn status_label(status: u16) -> SharedString {
    const COMMON: [(u16, &str); 16] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (206, "206"),
        (301, "301"),
        (302, "302"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (413, "413"),
        (499, "499"),
        (500, "500"),
        (502, "502"),
        (504, "504"),
    ];
    match COMMON.iter().find(|(c, _)| *c == status) {
        Some((_, s)) => SharedString::const_str(s),
        None => SharedString::from(status.to_string()),
    }
}
