//! Slots: anything that turns a request into a response.
//!
//! A slot is built from a `[[slot]]` table by [`build`] and lives behind an `Arc` in the gateway's
//! current snapshot; a reload or hot swap replaces the `Arc`, and requests in flight keep the one they
//! started with. To add a kind: implement [`Slot`], add a `SlotKind` in the config crate, and a branch
//! in [`build`].

mod asr;
mod face;
mod fixed;
pub(crate) mod h1;
pub(crate) mod upstream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use http::header::{self, HeaderName};
use http::{Request, Response};
use switchyard_config::{Config, SlotKind, SlotSpec};

use crate::dataplane::ConnInfo;
use crate::error::ApiError;

pub use asr::AsrSlot;
pub(crate) use asr::{add_channels, decode_upload};
pub use face::FaceSlot;
pub use fixed::StaticSlot;
pub use upstream::UpstreamSlot;

/// What a slot knows about the request besides the request itself.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id (kept from `X-Request-Id` or generated).
    pub request_id: http::HeaderValue,
    /// The route that matched.
    pub route: Arc<str>,
    /// The client connection.
    pub conn: Arc<ConnInfo>,
    /// The host the client asked for (`Host` header or HTTP/2 `:authority`).
    pub host: Option<String>,
    /// The path the slot should see (the route prefix removed when `strip_prefix` is set).
    pub path: String,
    /// The body limit in force for this request.
    pub max_body_bytes: u64,
}

/// Waits `ms` milliseconds when a model slot is configured with `inject_latency_ms` (a testing knob
/// that makes a healthy model slow, to exercise fallback, breakers and ramps).
pub(crate) async fn injected_latency(ms: Option<u64>) {
    if let Some(ms) = ms.filter(|&ms| ms > 0) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// The last segment of a slot path (`/v1/face/blur/` → `blur`): the endpoint of a model slot.
pub(crate) fn endpoint(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// Headers that apply to one connection only (RFC 9110 §7.6.1), and `Upgrade`: never forwarded.
pub(crate) const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether a field name, in any case, is one of [`HOP_BY_HOP`].
pub(crate) fn is_hop_by_hop(name: impl AsRef<[u8]>) -> bool {
    let name = name.as_ref();
    HOP_BY_HOP
        .iter()
        .any(|n| n.as_str().as_bytes().eq_ignore_ascii_case(name))
}

/// The elements of a comma-separated field value as it came off the wire (`Connection`,
/// `Transfer-Encoding`, `Content-Length`…), trimmed; empty elements included.
pub(crate) fn raw_elements(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Whether a raw field value is text as `HeaderValue::to_str` takes it (visible ASCII and tabs).
pub(crate) fn is_text(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (32..127).contains(&b))
}

/// Appends the HTTP/1 field line `name: value\r\n`.
pub(crate) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether a comma-separated header (`Connection`, `Upgrade`…) lists `token`, in any case.
pub(crate) fn has_token(headers: &http::HeaderMap, name: http::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// A boxed future of a hot-load's result.
pub type LoadFuture<'a> =
    Pin<Box<dyn Future<Output = Result<serde_json::Value, ApiError>> + Send + 'a>>;

/// A boxed future of a slot's answer.
pub type SlotFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response<Body>, ApiError>> + Send + 'a>>;

/// A backend that serves requests.
pub trait Slot: Send + Sync + 'static {
    /// Serves one request. An `Err` becomes a JSON error response; both count towards the slot's
    /// metrics.
    fn call<'a>(&'a self, req: Request<Body>, ctx: &'a RequestContext) -> SlotFuture<'a>;

    /// Kind-specific facts for `GET /admin/slots` (URL, model path, …).
    fn describe(&self) -> serde_json::Value;

    /// The slot as an upstream slot, when it is one (the data plane's raw lane sends to those).
    fn as_upstream(&self) -> Option<&UpstreamSlot> {
        None
    }

    /// The version serving now, when it can change at run time (hot swap); `None` = the configured one.
    fn version(&self) -> Option<Arc<str>> {
        None
    }

    /// Memory the serving model holds per device (`cpu`, `cuda:N`), where ONNX Runtime reports it:
    /// the model's own device first, then any other (an ASR slot on a GPU keeps its decoder, joiner
    /// and VAD on the CPU).
    fn memory(&self) -> Vec<(String, switchyard_infer::MemoryStats)> {
        Vec::new()
    }

    /// Loads a new model version next to the serving one and swaps it in (`POST /admin/slots/{slot}/load`).
    fn load<'a>(&'a self, _params: serde_json::Value) -> LoadFuture<'a> {
        Box::pin(async {
            Err(ApiError::new(
                http::StatusCode::CONFLICT,
                "not_loadable",
                "this kind of slot has no model to load; change its configuration and reload",
            ))
        })
    }
}

/// Loads ONNX Runtime, once per process, for the devices the whole configuration names: the
/// first load decides the library for every model after it, so with a GPU anywhere (`[engine]
/// device` or a model slot's `device`, on a slot that may run ONNX Runtime) the GPU build is looked
/// for first, which runs the CPU slots too. Otherwise the first model's load does it. An error is
/// left to the loads, which report it (or fall back to tract).
pub(crate) fn init_runtime_for(config: &Config) {
    let gpu = config
        .slots
        .iter()
        .filter(|s| matches!(s.kind, SlotKind::Face | SlotKind::Asr))
        .filter(|s| s.engine.as_deref().unwrap_or(&config.engine.default) != "tract")
        .filter_map(|s| {
            s.device
                .as_deref()
                .unwrap_or(&config.engine.device)
                .parse::<switchyard_infer::Device>()
                .ok()
        })
        .find(|d| *d != switchyard_infer::Device::Cpu);
    if let Some(device) = gpu {
        let library = (!config.engine.ort_library.is_empty())
            .then(|| std::path::PathBuf::from(&config.engine.ort_library));
        let _ = switchyard_infer::Runtime::init(library.as_deref(), device);
    }
}

/// Builds a slot from its configuration. Model slots load their model here (blocking).
pub fn build(
    spec: &SlotSpec,
    config: &Config,
    base_dir: Option<&std::path::Path>,
) -> anyhow::Result<Arc<dyn Slot>> {
    // A model slot's own `device` overrides `[engine] device` for it (its loads and hot swaps).
    let with_device;
    let config = match &spec.device {
        Some(d) if *d != config.engine.device => {
            let mut c = config.clone();
            c.engine.device = d.clone();
            with_device = c;
            &with_device
        }
        _ => config,
    };
    Ok(match spec.kind {
        SlotKind::Upstream => Arc::new(UpstreamSlot::new(spec)?),
        SlotKind::Static => Arc::new(StaticSlot::new(spec)?),
        SlotKind::Face => Arc::new(FaceSlot::new(spec, &config.engine, base_dir)?),
        SlotKind::Asr => Arc::new(AsrSlot::new(spec, config, base_dir)?),
    })
}

/// Adds the `memory` and `memory_devices` entries to a model slot's description: the memory on
/// the model's own device (the first of [`Slot::memory`]), and on every device.
pub fn add_memory_json(
    description: &mut serde_json::Value,
    m: &[(String, switchyard_infer::MemoryStats)],
) {
    let on = |(device, m): &(String, switchyard_infer::MemoryStats)| {
        serde_json::json!({
            "device": device,
            "in_use_bytes": m.in_use_bytes,
            "reserved_bytes": m.reserved_bytes,
            "peak_bytes": m.peak_bytes,
        })
    };
    if let serde_json::Value::Object(entries) = description {
        entries.insert("memory".into(), m.first().map(on).into());
        entries.insert("memory_devices".into(), m.iter().map(on).collect());
    }
}
