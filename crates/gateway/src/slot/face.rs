//! `kind = "face"`: face detection and anonymisation in-process.
//!
//! * `POST {route}/blur`: the image (body, or the `image` field of `multipart/form-data`) comes back
//!   anonymised in the same format (or `?format=`), with `X-Faces: N` and `X-Face-Boxes:
//!   x0,y0,x1,y1;…` (original pixels). Options: `style`
//!   (`blur|pixelate|mask`), `strength`, `margin`.
//! * `POST {route}/detect`: JSON boxes, scores and landmarks in original-image pixels.
//!
//! Work runs on the blocking pool, at most `max_concurrency` requests at once (the rest queue). Hot
//! swap ([`Slot::load`]) builds the new detector next to the serving one, checks that it finds the face
//! in a built-in probe image, then swaps an `Arc`: requests in flight finish on the model they started
//! with, and the old model is freed when the last of them ends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use switchyard_config::{EngineConfig, SlotSpec};
use switchyard_infer::{Device, EngineChoice, LoadOptions};
use switchyard_vision::imageio::{Format, Quality};
use switchyard_vision::pipeline::{self, BlurOptions, Output};
use switchyard_vision::{DetectorKind, DetectorParams, FaceDetector, Style};

use super::{LoadFuture, RequestContext, Slot, SlotFuture};
use crate::body::{UploadSpec, read_uploads};
use crate::error::{ApiError, json_response};
use crate::telemetry;

/// A real face the model must find before it may serve (see `assets/README.md`).
const PROBE_IMAGE: &[u8] = include_bytes!("../../assets/probe-face.jpg");

/// Default largest decoded image: 40 megapixels.
const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// The model a face slot serves with.
pub struct FaceModel {
    detector: FaceDetector,
    version: Arc<str>,
    model_path: String,
    loaded_at: SystemTime,
}

/// What is needed to (re)load a face model.
#[derive(Clone)]
struct LoadSpec {
    kind: DetectorKind,
    model: PathBuf,
    model_label: String,
    version: String,
    engine: EngineChoice,
    params: DetectorParams,
}

/// A face slot.
pub struct FaceSlot {
    name: Arc<str>,
    engine: EngineConfig,
    base_dir: Option<PathBuf>,
    sessions: usize,
    current: ArcSwap<FaceModel>,
    admission: Arc<crate::admission::Admission>,
    max_pixels: u64,
    inject_latency_ms: Option<u64>,
    loading: tokio::sync::Mutex<()>,
    stage: [metrics::Histogram; 4],
    faces: metrics::Counter,
    /// `switchyard_face_outputs_total`, one per [`Output::MADE`].
    outputs: [metrics::Counter; 3],
}

pub(super) fn engine_choice(s: &str) -> anyhow::Result<EngineChoice> {
    s.parse().map_err(|e: String| anyhow::anyhow!(e))
}

pub(super) fn load_options(
    engine: &EngineConfig,
    choice: EngineChoice,
    sessions: usize,
) -> anyhow::Result<LoadOptions> {
    Ok(LoadOptions {
        engine: choice,
        device: engine
            .device
            .parse::<Device>()
            .map_err(|e| anyhow::anyhow!(e))?,
        device_fallback: engine.device_fallback,
        cuda: switchyard_infer::CudaOptions {
            conv_search: engine
                .cuda_conv_search
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))?,
            max_sessions: engine.cuda_sessions.max(1),
        },
        threads: engine.threads,
        sessions,
        adaptive_threads: false,
        patches: Vec::new(),
        ort_library: (!engine.ort_library.is_empty()).then(|| PathBuf::from(&engine.ort_library)),
    })
}

/// Loads a detector and checks it on the probe image. Blocking.
fn load_model(
    engine: &EngineConfig,
    sessions: usize,
    spec: &LoadSpec,
) -> anyhow::Result<FaceModel> {
    let mut opts = load_options(engine, spec.engine, sessions)?;
    if engine.threads == 0 {
        // One session per concurrent request, the cores shared among them: requests overlap their
        // decoding and encoding with each other's inference instead of idling a core; and a photo
        // alone is inferred on every core (see the face benchmark in the README).
        opts.adaptive_threads = true;
    }
    let detector = FaceDetector::load(spec.kind, &spec.model, spec.params, opts)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    detector
        .warm_up()
        .map_err(|e| anyhow::anyhow!("the model failed its warm-up run: {e}"))?;
    let probe = pipeline::detect(&detector, PROBE_IMAGE, u64::MAX)
        .map_err(|e| anyhow::anyhow!("the model failed on the probe image: {e}"))?;
    if probe.faces.is_empty() {
        anyhow::bail!(
            "the model found no face in the probe image: is `{}` a {} model?",
            spec.model_label,
            spec.kind.as_str()
        );
    }
    Ok(FaceModel {
        detector,
        version: Arc::from(spec.version.as_str()),
        model_path: spec.model_label.clone(),
        loaded_at: SystemTime::now(),
    })
}

impl FaceSlot {
    /// Builds the slot and loads its model (blocking).
    pub fn new(
        spec: &SlotSpec,
        engine: &EngineConfig,
        base_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let kind_name = spec.detector.as_deref().unwrap_or("");
        let kind = DetectorKind::parse(kind_name)
            .ok_or_else(|| anyhow::anyhow!("unknown detector `{kind_name}`"))?;
        let model = spec
            .model
            .clone()
            .ok_or_else(|| anyhow::anyhow!("face slot without `model`"))?;
        let defaults = DetectorParams::default();
        let params = DetectorParams {
            score_threshold: spec.score_threshold.unwrap_or(defaults.score_threshold),
            nms_iou: spec.nms_iou.unwrap_or(defaults.nms_iou),
            tiling: spec.tiling.unwrap_or(defaults.tiling),
            min_tile: spec.min_tile.unwrap_or(defaults.min_tile),
            max_side: spec.max_side.unwrap_or(defaults.max_side),
            fixed_shape: spec.fixed_shape,
            tile_batch: spec.tile_batch,
        };
        let load = LoadSpec {
            kind,
            model: switchyard_config::resolve(base_dir, &model),
            model_label: model,
            version: spec.version.clone(),
            engine: engine_choice(spec.engine.as_deref().unwrap_or(&engine.default))?,
            params,
        };
        let admission = Arc::new(crate::admission::Admission::for_model_slot(spec));
        let sessions = spec
            .sessions
            .unwrap_or_else(|| admission.max_concurrency().min(switchyard_infer::cores()));
        let current = load_model(engine, sessions, &load)?;
        tracing::info!(slot = %spec.name, detector = kind.as_str(), model = %current.model_path,
            engine = current.detector.model.engine.as_str(), device = %current.detector.model.device,
            load_ms = (current.detector.model.load_seconds * 1e3).round(), "face model loaded");
        let name: Arc<str> = Arc::from(spec.name.as_str());
        Ok(Self {
            stage: ["decode", "infer", "anonymise", "encode"]
                .map(|s| telemetry::inference_histogram(&name, s)),
            faces: telemetry::faces_counter(&name),
            outputs: telemetry::face_output_counters(&name),
            name,
            engine: engine.clone(),
            base_dir: base_dir.map(Path::to_path_buf),
            sessions,
            current: ArcSwap::from_pointee(current),
            admission,
            max_pixels: spec.max_pixels.unwrap_or(DEFAULT_MAX_PIXELS),
            inject_latency_ms: spec.inject_latency_ms,
            loading: tokio::sync::Mutex::new(()),
        })
    }

    async fn serve(
        &self,
        req: Request<Body>,
        ctx: &RequestContext,
    ) -> Result<Response<Body>, ApiError> {
        let action = super::endpoint(&ctx.path);
        let detect_only = match (req.method(), action) {
            (&Method::POST, "blur") => false,
            (&Method::POST, "detect") => true,
            _ => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_endpoint",
                    "a face slot serves POST …/blur and POST …/detect",
                ));
            }
        };
        let opts = blur_options(req.uri().query())?;
        let bytes = read_image(req, ctx.max_body_bytes).await?;
        super::injected_latency(self.inject_latency_ms).await;

        let _permit = self.admission.enter().await?;
        let model = self.current.load_full();
        let max_pixels = self.max_pixels;
        let started = Instant::now();
        let job_model = model.clone();
        let result = tokio::task::spawn_blocking(move || {
            if detect_only {
                pipeline::detect(&job_model.detector, &bytes, max_pixels).map(|d| (None, d))
            } else {
                pipeline::blur(&job_model.detector, &bytes, max_pixels, &opts)
                    .map(|(out, f, d)| (Some((out, f)), d))
            }
        })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "inference_failed",
                e.to_string(),
            )
        })?
        .map_err(vision_error)?;
        let (output, det) = result;
        let t = det.timings;
        for (h, v) in self
            .stage
            .iter()
            .zip([t.decode, t.infer, t.anonymize, t.encode])
        {
            if v > 0.0 {
                h.record(v);
            }
        }
        self.faces.increment(det.faces.len() as u64);
        if let Some(i) = Output::MADE.iter().position(|&o| o == det.output) {
            self.outputs[i].increment(1);
        }
        let version =
            HeaderValue::from_str(&model.version).unwrap_or(HeaderValue::from_static("-"));

        let mut resp = match output {
            Some((bytes, format)) => {
                let mut r = Response::new(Body::from(bytes));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(format.mime()),
                );
                r
            }
            None => {
                let faces: Vec<_> = det
                    .faces
                    .iter()
                    .map(|f| json!({ "box": f.bbox, "score": f.score, "landmarks": f.landmarks }))
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({
                        "width": det.width,
                        "height": det.height,
                        "faces": faces,
                        "slot": &*self.name,
                        "model": model.model_path,
                        "version": &*model.version,
                        "timings_ms": {
                            "decode": t.decode * 1e3,
                            "infer": t.infer * 1e3,
                            "total": started.elapsed().as_secs_f64() * 1e3,
                        },
                    }),
                )
            }
        };
        resp.headers_mut()
            .insert("x-faces", HeaderValue::from(det.faces.len()));
        // The boxes (original-image pixels, `x0,y0,x1,y1;…`, at most 256) for clients that draw them
        // over the photo without a second request.
        let boxes = det
            .faces
            .iter()
            .take(256)
            .map(|f| {
                let b = f.bbox;
                format!("{:.0},{:.0},{:.0},{:.0}", b[0], b[1], b[2], b[3])
            })
            .collect::<Vec<_>>()
            .join(";");
        if let Ok(v) = HeaderValue::from_str(&boxes) {
            resp.headers_mut().insert("x-face-boxes", v);
        }
        // For shadow comparison (never sent to the client).
        resp.extensions_mut()
            .insert(crate::autopilot::ModelOutput::Faces(
                det.faces.iter().map(|f| f.bbox).collect(),
            ));
        resp.headers_mut().insert("x-switchyard-version", version);
        Ok(resp)
    }

    async fn swap(&self, body: serde_json::Value) -> Result<serde_json::Value, ApiError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct LoadBody {
            model: String,
            detector: Option<String>,
            version: Option<String>,
            engine: Option<String>,
        }
        let b: LoadBody = serde_json::from_value(body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("expected {{\"model\", \"detector\"?, \"version\"?, \"engine\"?}}: {e}"),
            )
        })?;
        let _one_at_a_time = self.loading.lock().await;
        let old = self.current.load_full();
        let kind = match b.detector.as_deref() {
            None => old.detector.kind,
            Some(d) => DetectorKind::parse(d).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!(
                        "detector `{d}` is not one of blazeface-front, blazeface-back, centerface"
                    ),
                )
            })?,
        };
        let engine = match b.engine.as_deref() {
            None => match old.detector.model.engine {
                switchyard_infer::EngineKind::Ort => EngineChoice::Ort,
                switchyard_infer::EngineKind::Tract => EngineChoice::Tract,
            },
            Some(e) => engine_choice(e)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string()))?,
        };
        let model = switchyard_config::resolve(self.base_dir.as_deref(), &b.model);
        if !model.is_file() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "model_load_failed",
                format!("model file `{}` does not exist", b.model),
            ));
        }
        let spec = LoadSpec {
            kind,
            model,
            model_label: b.model.clone(),
            version: b
                .version
                .clone()
                .unwrap_or_else(|| format!("{}+{}", old.version, b.model)),
            engine,
            params: old.detector.params,
        };
        let (engine_cfg, sessions) = (self.engine.clone(), self.sessions);
        let loaded = tokio::task::spawn_blocking(move || load_model(&engine_cfg, sessions, &spec))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "model_load_failed",
                    e.to_string(),
                )
            })?
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "model_load_failed",
                    format!("{e:#}"),
                )
            })?;
        telemetry::set_slot_info(&self.name, "face", &old.version, 0.0);
        telemetry::set_slot_info(&self.name, "face", &loaded.version, 1.0);
        tracing::info!(slot = %self.name, from = %old.version, to = %loaded.version, model = %loaded.model_path,
            detector = loaded.detector.kind.as_str(), "face model swapped");
        self.current.store(Arc::new(loaded));
        Ok(self.describe())
    }
}

fn blur_options(query: Option<&str>) -> Result<BlurOptions, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_option", m);
    /// A number in `lo..=hi`, or a 400 naming the option.
    fn ranged<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
        name: &str,
        v: &str,
        lo: T,
        hi: T,
    ) -> Result<T, ApiError> {
        v.parse()
            .ok()
            .filter(|x| *x >= lo && *x <= hi)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_option",
                    format!("{name} `{v}` is not a number from {lo} to {hi}"),
                )
            })
    }
    let mut o = BlurOptions::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "style" => {
                o.style = Style::parse(&v)
                    .ok_or_else(|| bad(format!("style `{v}` is not blur, pixelate or mask")))?
            }
            "strength" => o.strength = ranged("strength", &v, 0.1, 10.0)?,
            "margin" => o.margin = ranged("margin", &v, 0.0, 2.0)?,
            "quality" if v == "auto" => o.quality = Quality::Auto,
            "quality" => o.quality = Quality::Fixed(ranged("quality", &v, 1u8, 100)?),
            "format" => {
                o.format = Some(
                    Format::from_name(&v)
                        .ok_or_else(|| bad(format!("format `{v}` is not jpeg, png or webp")))?,
                )
            }
            _ => {}
        }
    }
    Ok(o)
}

/// The image bytes: the body itself, or the `image` field of a multipart form.
async fn read_image(req: Request<Body>, limit: u64) -> Result<Bytes, ApiError> {
    let spec = UploadSpec {
        field: "image",
        many: false,
        mime_ok: |m| m.starts_with("image/"),
        what: "an image (image/jpeg, image/png, image/webp)",
    };
    let mut uploads = read_uploads(req, limit, &spec).await?;
    Ok(uploads.swap_remove(0).bytes)
}

fn vision_error(e: switchyard_vision::Error) -> ApiError {
    use switchyard_vision::Error as E;
    match e {
        E::BadImage(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_image", m),
        E::Unsupported(m) => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_image", m)
        }
        E::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "image_too_large", m),
        E::Infer(e) => {
            tracing::error!(error = %e, "face inference failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "inference_failed",
                e.to_string(),
            )
        }
        E::Encode(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encode_failed", m),
    }
}

impl Slot for FaceSlot {
    fn call<'a>(&'a self, req: Request<Body>, ctx: &'a RequestContext) -> SlotFuture<'a> {
        Box::pin(self.serve(req, ctx))
    }

    fn describe(&self) -> serde_json::Value {
        let m = self.current.load();
        let mut description = json!({
            "detector": m.detector.kind.as_str(),
            "model": m.model_path,
            "version": &*m.version,
            "engine": m.detector.model.engine.as_str(),
            "device": m.detector.model.device.to_string(),
            "load_ms": (m.detector.model.load_seconds * 1e3).round(),
            "loaded_at": humantime::format_rfc3339_seconds(m.loaded_at).to_string(),
            "max_concurrency": self.admission.max_concurrency(),
            "sessions": match m.detector.model.engine {
                switchyard_infer::EngineKind::Ort => Some(m.detector.model.parallelism()),
                switchyard_infer::EngineKind::Tract => None,
            },
            "queue_depth": self.admission.queue_depth(),
            "waiting": self.admission.waiting(),
            "max_pixels": self.max_pixels,
            "score_threshold": m.detector.params.score_threshold,
            "tiling": m.detector.params.tiling,
            "fixed_shape": m.detector.kind == DetectorKind::CenterFace && m.detector.fixed_shape(),
            "tile_batch": (m.detector.kind == DetectorKind::BlazeFaceBack && m.detector.params.tiling)
                .then(|| m.detector.tile_batch()),
        });
        super::add_memory_json(&mut description, &self.memory());
        description
    }

    fn memory(&self) -> Vec<(String, switchyard_infer::MemoryStats)> {
        let m = self.current.load();
        let model = &m.detector.model;
        model
            .memory()
            .map(|s| (model.device.to_string(), s))
            .into_iter()
            .collect()
    }

    fn version(&self) -> Option<Arc<str>> {
        Some(self.current.load().version.clone())
    }

    fn load<'a>(&'a self, params: serde_json::Value) -> LoadFuture<'a> {
        Box::pin(self.swap(params))
    }
}
