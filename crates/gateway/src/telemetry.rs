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
//! | `switchyard_inference_seconds` | histogram | slot, stage | seconds |
//! | `switchyard_faces_detected_total` | counter | slot | faces |
//! | `switchyard_face_outputs_total` | counter | slot, output | images |

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use switchyard_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Histogram buckets for `_seconds` metrics: 1 ms to 60 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Routes panics through `tracing` (structured, in the current span if any) before the default hook.
/// A panic that [`switchyard_speech::audio::decode`] catches on a malformed upload is logged at
/// debug level only: it is answered 400 and is the client's problem, not a crash.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if switchyard_speech::audio::decoding_untrusted_input() {
            tracing::debug!(panic = %info, "an audio demuxer gave up on malformed input");
            return;
        }
        tracing::error!(panic = %info, "panic");
        default(info);
    }));
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides the configured level.
pub fn init_logging(cfg: &LogConfig, format_override: Option<LogFormat>) {
    // ONNX Runtime warns about harmless graph clean-ups at every model load, and symphonia's
    // demuxers log at info for every upload: keep them to errors and warnings unless the filter
    // names them itself.
    let mut level = cfg.level.clone();
    if !level.contains("ort") {
        level.push_str(",ort=error");
    }
    if !level.contains("symphonia") {
        level.push_str(",symphonia=warn");
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info,ort=error,symphonia=warn"));
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

/// Starts OTLP span export when `[log] otlp_endpoint` is set (feature `otlp`); without the feature
/// an endpoint is an error, so that nobody believes traces are exported when they are not.
pub fn init_tracing_export(cfg: &LogConfig) -> anyhow::Result<()> {
    #[cfg(feature = "otlp")]
    return crate::otlp::init(cfg);
    #[cfg(not(feature = "otlp"))]
    match &cfg.otlp_endpoint {
        Some(_) => anyhow::bail!(
            "log.otlp_endpoint is set but this binary was built without the `otlp` feature \
             (cargo build --release --features otlp)"
        ),
        None => Ok(()),
    }
}

/// Flushes and stops OTLP export (no-op without it).
pub fn stop_tracing_export() {
    #[cfg(feature = "otlp")]
    crate::otlp::shutdown();
}

/// Publishes the memory a slot's model holds (`switchyard_model_memory_bytes`).
pub fn set_model_memory(slot: &str, device: &str, m: switchyard_infer::MemoryStats) {
    for (state, v) in [
        ("in_use", m.in_use_bytes),
        ("reserved", m.reserved_bytes),
        ("peak", m.peak_bytes),
    ] {
        metrics::gauge!("switchyard_model_memory_bytes", "slot" => slot.to_string(),
            "device" => device.to_string(), "state" => state)
        .set(v as f64);
    }
}

/// Publishes the spare buffers kept for model inputs and outputs, pixels and resizers
/// (`switchyard_spare_buffer_bytes`).
pub fn set_spare_buffers() {
    for (pool, bytes) in [
        ("floats", switchyard_infer::spare::FLOATS.held_bytes()),
        ("pixels", switchyard_vision::imageio::spare_pixel_bytes()),
        ("resizers", switchyard_vision::spare_resizer_bytes()),
    ] {
        metrics::gauge!("switchyard_spare_buffer_bytes", "pool" => pool).set(bytes as f64);
    }
}

/// Installs the Prometheus recorder and describes every metric. Call once, inside the runtime.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("switchyard_asr_rtf".into()), RTF_BUCKETS)?
        .install_recorder()?;
    describe();
    // Draining histogram samples takes a while under load: keep it off the request threads.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })?;
    Ok(handle)
}

/// Real-time factor buckets: processing time over audio time.
const RTF_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0,
];

fn describe() {
    metrics::describe_counter!(
        "switchyard_rate_limited_total",
        Unit::Count,
        "Requests refused with 429 by a route's per-client rate limit"
    );
    metrics::describe_counter!(
        "switchyard_admission_rejected_total",
        Unit::Count,
        "Requests refused with 503 because a model slot's queue was full"
    );
    metrics::describe_counter!(
        "switchyard_fallbacks_total",
        Unit::Count,
        "Canary requests answered by stable instead, by route, from, to and reason (error, timeout, hedge)"
    );
    metrics::describe_gauge!(
        "switchyard_breaker_state",
        "Canary circuit breaker of a route: 0 closed, 1 open, 2 half-open"
    );
    metrics::describe_gauge!(
        "switchyard_shadow_face_f1",
        "Mean F1 (IoU >= 0.5) of the canary's face boxes against stable's on shadow copies, since the ramp step began"
    );
    metrics::describe_gauge!(
        "switchyard_shadow_wer",
        "Word error rate of the canary's text against stable's on shadow copies, since the ramp step began"
    );
    metrics::describe_gauge!(
        "switchyard_shadow_match_ratio",
        "Share of shadow copies where the canary's status and body equal stable's (upstream slots)"
    );
    metrics::describe_counter!(
        "switchyard_shadow_requests_total",
        Unit::Count,
        "Shadow copies by result: compared, skipped (concurrency cap), failed"
    );
    metrics::describe_gauge!(
        "switchyard_asr_audio_seconds_total",
        Unit::Seconds,
        "Seconds of audio recognised by an ASR slot (files and streams)"
    );
    metrics::describe_histogram!(
        "switchyard_asr_rtf",
        "Real-time factor of each ASR recognition: processing seconds per second of audio"
    );
    metrics::describe_gauge!(
        "switchyard_model_memory_bytes",
        Unit::Bytes,
        "Memory a model slot's ONNX Runtime arenas hold (state: in_use, reserved, peak), per device"
    );
    metrics::describe_gauge!(
        "switchyard_spare_buffer_bytes",
        Unit::Bytes,
        "Spare buffers kept for the next request: model tensors (pool: floats), pixels (pixels), resizers' intermediate images (resizers, a bound)"
    );
    metrics::describe_gauge!(
        "switchyard_asr_streams_active",
        Unit::Count,
        "Live recognition streams (WebSockets) open on an ASR slot"
    );
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
    metrics::describe_histogram!(
        "switchyard_inference_seconds",
        Unit::Seconds,
        "Time of each stage of a model slot's work (face: decode, infer, anonymise, encode; asr: decode, features, encoder, search, vad)"
    );
    metrics::describe_counter!(
        "switchyard_faces_detected_total",
        Unit::Count,
        "Faces found by a face slot"
    );
    metrics::describe_counter!(
        "switchyard_face_outputs_total",
        Unit::Count,
        "Images a face slot returned, by how it made them (kept: the input's data, nothing to anonymise; spliced: a JPEG keeping the input's data away from the faces; encoded: encoded in full)"
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

/// `switchyard_inference_seconds{slot,stage}`.
pub fn inference_histogram(slot: &str, stage: &'static str) -> metrics::Histogram {
    metrics::histogram!("switchyard_inference_seconds", "slot" => slot.to_string(), "stage" => stage)
}

/// `switchyard_faces_detected_total{slot}`.
pub fn faces_counter(slot: &str) -> metrics::Counter {
    metrics::counter!("switchyard_faces_detected_total", "slot" => slot.to_string())
}

/// `switchyard_face_outputs_total{slot,output}` for each of [`Output::MADE`], in its order.
///
/// [`Output::MADE`]: switchyard_vision::pipeline::Output::MADE
pub fn face_output_counters(slot: &str) -> [metrics::Counter; 3] {
    switchyard_vision::pipeline::Output::MADE.map(|output| {
        metrics::counter!("switchyard_face_outputs_total",
            "slot" => slot.to_string(), "output" => output.as_str())
    })
}

/// The ASR metrics of one slot.
pub struct AsrMetrics {
    /// `switchyard_asr_audio_seconds_total{slot}`: only ever increases, but exported as a gauge
    /// because the exporter's counters are integers and this one counts fractions of seconds.
    pub audio_seconds: metrics::Gauge,
    /// `switchyard_asr_rtf{slot}`.
    pub rtf: metrics::Histogram,
    /// `switchyard_asr_streams_active{slot}`.
    pub streams: metrics::Gauge,
    /// `switchyard_inference_seconds{slot,stage}` for decode, features, encoder, search, vad.
    pub stages: [metrics::Histogram; 5],
}

impl AsrMetrics {
    /// Registers the slot's series.
    pub fn new(slot: &str) -> Self {
        let s = slot.to_string();
        Self {
            audio_seconds: metrics::gauge!("switchyard_asr_audio_seconds_total", "slot" => s.clone()),
            rtf: metrics::histogram!("switchyard_asr_rtf", "slot" => s.clone()),
            streams: metrics::gauge!("switchyard_asr_streams_active", "slot" => s),
            stages: ["decode", "features", "encoder", "search", "vad"]
                .map(|stage| inference_histogram(slot, stage)),
        }
    }
}

/// `switchyard_inflight_requests{slot}`.
pub fn inflight_gauge(slot: &str) -> metrics::Gauge {
    metrics::gauge!("switchyard_inflight_requests", "slot" => slot.to_string())
}

/// Statuses whose request counters are kept as handles; others are looked up per request.
const COMMON_STATUSES: [u16; 16] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 413, 499, 500, 502, 504,
];

/// Metric handles for one (route, slot) pair, registered on first use: no label hashing on the
/// request path after that, and no empty series for pairs that never see traffic.
pub struct RouteSlotMetrics {
    route: SharedString,
    slot: SharedString,
    version: SharedString,
    duration: OnceLock<metrics::Histogram>,
    common: [OnceLock<metrics::Counter>; COMMON_STATUSES.len()],
}

impl RouteSlotMetrics {
    /// Prepares the labels; registers nothing yet.
    pub fn new(route: &str, slot: &str, version: &str) -> Self {
        Self {
            route: SharedString::from(route.to_string()),
            slot: SharedString::from(slot.to_string()),
            version: SharedString::from(version.to_string()),
            duration: OnceLock::new(),
            common: Default::default(),
        }
    }

    fn counter(&self, status: u16) -> metrics::Counter {
        metrics::counter!("switchyard_requests_total",
            "route" => self.route.clone(), "slot" => self.slot.clone(),
            "version" => self.version.clone(), "status" => SharedString::from(status.to_string()))
    }

    /// Records a finished request. `live_version` is the slot's version now when it may differ from
    /// the configured one (hot swap).
    pub fn record(&self, status: u16, seconds: f64, live_version: Option<&str>) {
        match (
            COMMON_STATUSES.iter().position(|s| *s == status),
            live_version,
        ) {
            (_, Some(v)) if *v != *self.version => metrics::counter!("switchyard_requests_total",
                "route" => self.route.clone(), "slot" => self.slot.clone(),
                "version" => v.to_string(), "status" => SharedString::from(status.to_string()))
            .increment(1),
            (Some(i), _) => self.common[i]
                .get_or_init(|| self.counter(status))
                .increment(1),
            (None, _) => self.counter(status).increment(1),
        }
        self.duration
            .get_or_init(|| {
                metrics::histogram!("switchyard_request_duration_seconds",
                    "route" => self.route.clone(), "slot" => self.slot.clone())
            })
            .record(seconds);
    }
}
