//! `kind = "asr"`: speech recognition in-process (streaming transducer, optional Silero VAD).
//!
//! Under the route's path:
//! * `POST …/transcribe`: audio as the body or the `audio` field of a multipart form → JSON text,
//!   segments, timings, real-time factor;
//! * `GET …/stream`: WebSocket; binary 16-bit LE PCM at `?sample_rate=` (default 16000), text
//!   `{"event":"end"}`; the server sends `partial` and `final` messages, then closes;
//! * `POST …/batch`: several files in one form → one result per file;
//! * `GET …/history`, `GET …/history.csv`: recognitions stored in `[history]` for this route.
//!
//! Recognition runs on the blocking pool, at most `max_concurrency` jobs at once; a live stream holds a
//! permit only while one of its chunks is being decoded. Hot swap loads the new model next to the
//! serving one, checks it on a built-in clip of real speech and swaps an `Arc`; streams and requests
//! in flight keep the model they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use axum::body::Body;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use switchyard_config::{Config, EngineConfig, SlotSpec};
use switchyard_infer::{EngineChoice, LoadOptions};
use switchyard_speech::audio::{self, AudioError, Channels};
use switchyard_speech::recognizer::SessionTimings;
use switchyard_speech::subtitles::Subtitles;
use switchyard_speech::{
    Decoding, Event, Recognizer, RecognizerOptions, Transcript, Transducer, VadModel,
};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::face::{engine_choice, load_options};
use super::{LoadFuture, RequestContext, Slot, SlotFuture};
use crate::body::{Upload, UploadSpec, read_uploads};
use crate::error::{ApiError, json_response};
use crate::history::{self, History, Query, Row};
use crate::telemetry::{self, AsrMetrics};

/// Real speech a new model must recognise something in before it may serve: "ten of clubs" from
/// Debian's pocketsphinx-testdata (see `assets/README.md`).
const PROBE_CLIP: &[u8] = include_bytes!("../../assets/probe-speech.wav");

const DEFAULT_MAX_AUDIO_S: f64 = 600.0;
const DEFAULT_BATCH_CONCURRENCY: usize = 2;
const DEFAULT_IDLE_MS: u64 = 30_000;
/// Largest WebSocket message accepted (a chunk of PCM).
const MAX_WS_MESSAGE: usize = 1 << 20;
/// Seconds of a live stream's audio read ahead while the decoder is busy.
const READ_AHEAD_S: f64 = 10.0;

/// WebSocket close codes of live streams.
pub mod close {
    /// Idle for longer than `stream_idle_timeout_ms`.
    pub const IDLE_TIMEOUT: u16 = 4408;
    /// More audio than `max_audio_seconds`.
    pub const TOO_LONG: u16 = 4413;
    /// A message that is not PCM or `{"event":"end"}`.
    pub const BAD_MESSAGE: u16 = 1003;
    /// Recognition failed on the server.
    pub const SERVER_ERROR: u16 = 1011;
}

/// The model an ASR slot serves with.
pub struct AsrModel {
    recognizer: Recognizer,
    version: Arc<str>,
    model_label: String,
    vad_label: Option<String>,
    language: String,
    loaded_at: SystemTime,
    load_seconds: f64,
}

/// What is needed to (re)load a model.
#[derive(Clone)]
struct LoadSpec {
    model_dir: PathBuf,
    model_label: String,
    vad: Option<(PathBuf, String)>,
    version: String,
    engine: EngineChoice,
    options: RecognizerOptions,
}

/// An ASR slot.
pub struct AsrSlot {
    name: Arc<str>,
    engine: EngineConfig,
    base_dir: Option<PathBuf>,
    sessions: usize,
    current: ArcSwap<AsrModel>,
    admission: Arc<crate::admission::Admission>,
    batch_concurrency: usize,
    max_audio_s: f64,
    channels: Channels,
    inject_latency_ms: Option<u64>,
    idle: Duration,
    history: Option<Arc<History>>,
    loading: tokio::sync::Mutex<()>,
    metrics: Arc<AsrMetrics>,
}

/// The language of a model, from its vocabulary: `zh-en` when it has CJK tokens, else `en`.
fn language_of(model: &Transducer) -> String {
    let cjk = model.text(&(0..model.info().vocab as i64).collect::<Vec<_>>());
    if cjk.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) {
        "zh-en".into()
    } else {
        "en".into()
    }
}

/// Loads a model (and VAD), checks it on the probe clip. Blocking.
fn load_model(engine: &EngineConfig, sessions: usize, spec: &LoadSpec) -> anyhow::Result<AsrModel> {
    let started = Instant::now();
    let mut opts: LoadOptions = load_options(engine, spec.engine, sessions)?;
    if engine.threads == 0 {
        // Streaming chunks are small: streams run in parallel on their own sessions, each on one
        // thread, rather than one stream spread over cores.
        opts.threads = 1;
    }
    let model =
        Arc::new(Transducer::load(&spec.model_dir, &opts).map_err(|e| anyhow::anyhow!("{e}"))?);
    let vad = match &spec.vad {
        Some((path, _)) => Some(Arc::new(
            VadModel::load(path, &opts).map_err(|e| anyhow::anyhow!("VAD: {e}"))?,
        )),
        None => None,
    };
    let recognizer = Recognizer {
        model: model.clone(),
        vad: None,
        options: spec.options.clone(),
    };
    let probe = audio::decode(PROBE_CLIP, Some("wav"), 60.0)
        .map_err(|e| anyhow::anyhow!("probe clip: {e}"))?;
    let t = recognizer
        .transcribe(&probe.samples)
        .map_err(|e| anyhow::anyhow!("the model failed on the probe clip: {e}"))?;
    if t.token_ids.is_empty() {
        anyhow::bail!(
            "the model recognised nothing in the probe clip of real speech: is `{}` a working transducer?",
            spec.model_label
        );
    }
    tracing::debug!(text = %t.text, "probe clip recognised");
    Ok(AsrModel {
        language: language_of(&model),
        recognizer: Recognizer { vad, ..recognizer },
        version: Arc::from(spec.version.as_str()),
        model_label: spec.model_label.clone(),
        vad_label: spec.vad.as_ref().map(|(_, l)| l.clone()),
        loaded_at: SystemTime::now(),
        load_seconds: started.elapsed().as_secs_f64(),
    })
}

fn audio_error(e: AudioError) -> ApiError {
    match e {
        AudioError::TooLong(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "audio_too_long",
            e.to_string(),
        ),
        AudioError::TooManyChannels(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "too_many_channels", e.to_string())
        }
        AudioError::Empty | AudioError::BadRate(_) | AudioError::Unsupported(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_audio", e.to_string())
        }
    }
}

fn internal(code: &'static str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, e.to_string())
}

fn audio_mime_ok(m: &str) -> bool {
    m.starts_with("audio/")
}

/// Decodes one upload: `audio/l16` (`rate=`, `channels=` parameters) or `.raw`/`.pcm` files are
/// 16-bit PCM, anything else goes to the container probe with the file extension as a hint. One
/// [`audio::Audio`] with [`Channels::Mix`], one per channel with [`Channels::Split`].
pub(crate) fn decode_upload(
    u: &Upload,
    max_s: f64,
    layout: Channels,
) -> Result<Vec<audio::Audio>, AudioError> {
    let ext = u
        .file_name
        .as_deref()
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    let param = |k: &str| {
        u.content_type
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(k))
            .and_then(|(_, v)| v.trim().parse::<u32>().ok())
    };
    if u.mime == "audio/l16" || matches!(ext.as_deref(), Some("raw" | "pcm")) {
        return audio::pcm16_channels(
            &u.bytes,
            param("rate").unwrap_or(16_000),
            param("channels").unwrap_or(1) as usize,
            max_s,
            layout,
        );
    }
    let hint = ext.or_else(|| {
        u.mime
            .strip_prefix("audio/")
            .map(|s| s.trim_start_matches("x-").to_string())
    });
    audio::decode_channels(u.bytes.clone(), hint.as_deref(), max_s, layout)
}

/// Adds `"channels": [{"channel", "text"}, …]` to a result when its channels were recognised
/// separately.
pub(crate) fn add_channels(v: &mut serde_json::Value, t: &Transcript) {
    if !t.channels.is_empty() {
        v["channels"] = t
            .channels
            .iter()
            .enumerate()
            .map(|(c, text)| json!({ "channel": c, "text": text }))
            .collect();
    }
}

/// The query parameter `name` as `parse` reads it: `None` when absent; 400 `bad_option` saying it
/// should be `expected` when it does not parse.
fn query_option<T>(
    req: &Request<Body>,
    name: &str,
    expected: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    let Some((_, v)) =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).find(|(k, _)| k == name)
    else {
        return Ok(None);
    };
    parse(&v).map(Some).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_option",
            format!("{name} `{v}` is not {expected}"),
        )
    })
}

/// The answer's format: JSON (`None`, the default), or `?format=srt|vtt` subtitles.
fn requested_subtitles(req: &Request<Body>) -> Result<Option<Subtitles>, ApiError> {
    let format = query_option(req, "format", "one of json, srt, vtt", |v| match v {
        "json" => Some(None),
        v => Subtitles::from_name(v).map(Some),
    })?;
    Ok(format.flatten())
}

/// The channel layout of a request: its `channels` query parameter, else the slot's.
fn requested_channels(req: &Request<Body>, default: Channels) -> Result<Channels, ApiError> {
    let layout = query_option(req, "channels", "one of mix, split", Channels::from_name)?;
    Ok(layout.unwrap_or(default))
}

impl AsrSlot {
    /// Builds the slot and loads its model (blocking).
    pub fn new(spec: &SlotSpec, config: &Config, base_dir: Option<&Path>) -> anyhow::Result<Self> {
        let engine = &config.engine;
        let model_dir = spec
            .model_dir
            .clone()
            .ok_or_else(|| anyhow::anyhow!("asr slot without `model_dir`"))?;
        let options = RecognizerOptions {
            endpoint_silence_s: spec.endpoint_silence_ms.unwrap_or(1200) as f64 / 1000.0,
            decoding: Decoding::from_name(
                spec.decoding_method.as_deref().unwrap_or("greedy_search"),
                spec.max_active_paths.unwrap_or(4),
            )
            .map_err(|e| anyhow::anyhow!(e))?,
            ..RecognizerOptions::default()
        };
        let load = LoadSpec {
            model_dir: switchyard_config::resolve(base_dir, &model_dir),
            model_label: model_dir,
            vad: spec
                .vad
                .as_ref()
                .map(|v| (switchyard_config::resolve(base_dir, v), v.clone())),
            version: spec.version.clone(),
            engine: engine_choice(spec.engine.as_deref().unwrap_or(&engine.default))?,
            options,
        };
        let admission = Arc::new(crate::admission::Admission::for_model_slot(spec));
        // One ONNX Runtime session per concurrent job, so jobs never wait for each other's session.
        let sessions = spec.sessions.unwrap_or(admission.max_concurrency());
        let current = load_model(engine, sessions, &load)?;
        let history = match &config.history {
            Some(h) => Some(history::shared(
                &switchyard_config::resolve(base_dir, &h.path),
                h.max_rows,
            )?),
            None => None,
        };
        let info = current.recognizer.model.info();
        tracing::info!(slot = %spec.name, model = %current.model_label, engine = current.recognizer.model.engine().as_str(),
            model_type = info.model_type.as_deref().unwrap_or("?"), chunk_ms = info.shift * 10,
            vad = current.vad_label.as_deref().unwrap_or("none"),
            load_ms = (current.load_seconds * 1e3).round(), "asr model loaded");
        let name: Arc<str> = Arc::from(spec.name.as_str());
        Ok(Self {
            metrics: Arc::new(AsrMetrics::new(&name)),
            name,
            engine: engine.clone(),
            base_dir: base_dir.map(Path::to_path_buf),
            sessions,
            current: ArcSwap::from_pointee(current),
            admission,
            batch_concurrency: spec.batch_concurrency.unwrap_or(DEFAULT_BATCH_CONCURRENCY),
            max_audio_s: spec.max_audio_seconds.unwrap_or(DEFAULT_MAX_AUDIO_S),
            channels: match spec.channels.as_deref() {
                None => Channels::Mix,
                Some(c) => Channels::from_name(c)
                    .ok_or_else(|| anyhow::anyhow!("channels `{c}` is not one of mix, split"))?,
            },
            inject_latency_ms: spec.inject_latency_ms,
            idle: Duration::from_millis(spec.stream_idle_timeout_ms.unwrap_or(DEFAULT_IDLE_MS)),
            history,
            loading: tokio::sync::Mutex::new(()),
        })
    }

    async fn serve(
        &self,
        req: Request<Body>,
        ctx: &RequestContext,
    ) -> Result<Response<Body>, ApiError> {
        let action = super::endpoint(&ctx.path).to_string();
        match (req.method(), action.as_str()) {
            (&Method::POST, "transcribe") => self.transcribe(req, ctx).await,
            (&Method::POST, "batch") => self.batch(req, ctx).await,
            (&Method::GET, "stream") => self.stream(req, ctx).await,
            (&Method::GET, "history") => self.history(req, ctx, false).await,
            (&Method::GET, "history.csv") => self.history(req, ctx, true).await,
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_endpoint",
                "an asr slot serves POST …/transcribe, POST …/batch, GET …/stream (WebSocket), GET …/history[.csv]",
            )),
        }
    }

    /// Decodes and recognises one upload on the blocking pool, under a permit.
    async fn recognize(
        &self,
        upload: Upload,
        layout: Channels,
    ) -> Result<(Arc<AsrModel>, Transcript, f64, f64), ApiError> {
        let _permit = self.admission.enter().await?;
        let model = self.current.load_full();
        let job = model.clone();
        let max_s = self.max_audio_s;
        let admission = self.admission.clone();
        let sessions = self.sessions;
        let started = Instant::now();
        let (transcript, decode_s) = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let tracks: Vec<Vec<f32>> = decode_upload(&upload, max_s, layout)
                .map_err(audio_error)?
                .into_iter()
                .map(|a| a.samples)
                .collect();
            let decode_s = t.elapsed().as_secs_f64();
            // Split channels are recognised at once on the sessions no other request needs now
            // (free admission slots, nobody waiting), else one after the other.
            let more = match tracks.len().min(sessions) {
                n if n > 1 => admission.try_enter_more(n - 1),
                _ => Vec::new(),
            };
            let transcript = job
                .recognizer
                .transcribe_channels_on(&tracks, 1 + more.len())
                .map_err(|e| internal("inference_failed", e))?;
            drop(more);
            Ok::<_, ApiError>((transcript, decode_s))
        })
        .await
        .map_err(|e| internal("inference_failed", e))??;
        let total = started.elapsed().as_secs_f64();
        self.observe(&transcript.timings, decode_s, transcript.duration_s, total);
        Ok((model, transcript, decode_s, total))
    }

    fn observe(&self, t: &SessionTimings, decode_s: f64, audio_s: f64, total_s: f64) {
        let m = &self.metrics;
        for (h, v) in m.stages.iter().zip([
            decode_s,
            t.decode.fbank,
            t.decode.encoder,
            t.decode.search,
            t.vad,
        ]) {
            if v > 0.0 {
                h.record(v);
            }
        }
        m.audio_seconds.increment(audio_s);
        if audio_s > 0.0 {
            m.rtf.record(total_s / audio_s);
        }
    }

    fn result_json(
        &self,
        model: &AsrModel,
        t: &Transcript,
        decode_s: f64,
        total_s: f64,
    ) -> serde_json::Value {
        let ms = |s: f64| (s * 1e4).round() / 10.0;
        let mut v = json!({
            "text": t.text,
            "segments": t.segments,
            "duration_s": t.duration_s,
            "slot": &*self.name,
            "model": model.model_label,
            "version": &*model.version,
            "language": model.language,
            "timings_ms": {
                "decode": ms(decode_s),
                "features": ms(t.timings.decode.fbank),
                "encoder": ms(t.timings.decode.encoder),
                "search": ms(t.timings.decode.search),
                "vad": ms(t.timings.vad),
                "total": ms(total_s),
            },
            "rtf": if t.duration_s > 0.0 { total_s / t.duration_s } else { 0.0 },
        });
        add_channels(&mut v, t);
        v
    }

    /// Stores a result (see [`remember`]).
    async fn remember(
        &self,
        ctx: &RequestContext,
        model: &AsrModel,
        file_name: &str,
        duration_s: f64,
        text: &str,
        latency_s: f64,
    ) {
        let result = Recognised {
            file_name,
            duration_s,
            text,
            latency_s,
        };
        remember(self.history.as_deref(), ctx, &self.name, model, result).await;
    }

    async fn transcribe(
        &self,
        req: Request<Body>,
        ctx: &RequestContext,
    ) -> Result<Response<Body>, ApiError> {
        let spec = UploadSpec {
            field: "audio",
            many: false,
            mime_ok: audio_mime_ok,
            what: "audio (audio/wav, audio/flac, audio/mpeg, audio/ogg, audio/webm, audio/l16)",
        };
        let layout = requested_channels(&req, self.channels)?;
        let subtitles = requested_subtitles(&req)?;
        let upload = read_uploads(req, ctx.max_body_bytes, &spec)
            .await?
            .swap_remove(0);
        super::injected_latency(self.inject_latency_ms).await;
        let file_name = upload.file_name.clone().unwrap_or_else(|| "body".into());
        let (model, t, decode_s, total) = self.recognize(upload, layout).await?;
        self.remember(ctx, &model, &file_name, t.duration_s, &t.text, total)
            .await;
        let mut resp = match subtitles {
            None => json_response(
                StatusCode::OK,
                &self.result_json(&model, &t, decode_s, total),
            ),
            Some(format) => {
                let mut r = Response::new(Body::from(format.render(&t.segments)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(format.mime()),
                );
                r
            }
        };
        // For shadow comparison (never sent to the client).
        resp.extensions_mut()
            .insert(crate::autopilot::ModelOutput::Text(t.text.clone()));
        if let Ok(v) = HeaderValue::from_str(&model.version) {
            resp.headers_mut().insert("x-switchyard-version", v);
        }
        Ok(resp)
    }

    async fn batch(
        &self,
        req: Request<Body>,
        ctx: &RequestContext,
    ) -> Result<Response<Body>, ApiError> {
        let spec = UploadSpec {
            field: "audio",
            many: true,
            mime_ok: audio_mime_ok,
            what: "a multipart form of audio files",
        };
        let layout = requested_channels(&req, self.channels)?;
        let uploads = read_uploads(req, ctx.max_body_bytes, &spec).await?;
        let gate = tokio::sync::Semaphore::new(self.batch_concurrency);
        let jobs = uploads.into_iter().enumerate().map(|(i, u)| {
            let gate = &gate;
            async move {
                let file = u.file_name.clone().unwrap_or_else(|| format!("file{i}"));
                let _turn = gate.acquire().await;
                match self.recognize(u, layout).await {
                    Ok((model, t, decode_s, total)) => {
                        self.remember(ctx, &model, &file, t.duration_s, &t.text, total).await;
                        let mut v = self.result_json(&model, &t, decode_s, total);
                        v["file"] = json!(file);
                        v
                    }
                    Err(e) => json!({ "file": file, "error": { "code": e.code, "message": e.message, "status": e.status.as_u16() } }),
                }
            }
        });
        let results = futures_util::future::join_all(jobs).await;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "results": results }),
        ))
    }

    async fn history(
        &self,
        req: Request<Body>,
        ctx: &RequestContext,
        csv: bool,
    ) -> Result<Response<Body>, ApiError> {
        let Some(h) = self.history.clone() else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "history_off",
                "recognition history is off: add a [history] table to the configuration",
            ));
        };
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_option", m);
        let mut q = Query {
            route: Some(ctx.route.to_string()),
            limit: if csv { 100_000 } else { 100 },
            ..Query::default()
        };
        for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
            match &*k {
                "slot" => q.slot = Some(v.into_owned()),
                "version" => q.version = Some(v.into_owned()),
                "q" => q.text = Some(v.into_owned()),
                "since" => {
                    q.since_ms = Some(history::parse_since(&v).ok_or_else(|| {
                        bad(format!(
                            "since `{v}` is not RFC 3339 time or seconds since the epoch"
                        ))
                    })?)
                }
                "limit" => {
                    q.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=100_000).contains(n))
                        .ok_or_else(|| {
                            bad(format!("limit `{v}` is not a number from 1 to 100000"))
                        })?
                }
                _ => {}
            }
        }
        let rows = tokio::task::spawn_blocking(move || h.query(&q))
            .await
            .map_err(|e| internal("history_failed", e))?
            .map_err(|e| internal("history_failed", format!("{e:#}")))?;
        if csv {
            let mut r = Response::new(Body::from(history::to_csv(&rows)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            r.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"history.csv\""),
            );
            return Ok(r);
        }
        Ok(json_response(StatusCode::OK, &json!({ "items": rows })))
    }

    /// Answers the WebSocket handshake and runs the stream on the upgraded connection.
    async fn stream(
        &self,
        mut req: Request<Body>,
        ctx: &RequestContext,
    ) -> Result<Response<Body>, ApiError> {
        let h = req.headers();
        if !(super::has_token(h, header::CONNECTION, "upgrade")
            && super::has_token(h, header::UPGRADE, "websocket"))
        {
            return Err(ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "websocket_required",
                "…/stream is a WebSocket endpoint (HTTP/1.1 Upgrade: websocket)",
            ));
        }
        if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_websocket",
                "Sec-WebSocket-Version must be 13",
            ));
        }
        let key = h.get(header::SEC_WEBSOCKET_KEY).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_websocket",
                "Sec-WebSocket-Key is missing",
            )
        })?;
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let rate = query_option(
            &req,
            "sample_rate",
            &format!("a number from {} to {}", audio::MIN_RATE, audio::MAX_RATE),
            |v| {
                v.parse()
                    .ok()
                    .filter(|r| (audio::MIN_RATE..=audio::MAX_RATE).contains(r))
            },
        )?
        .unwrap_or(16_000u32);
        let channels = query_option(
            &req,
            "channels",
            &format!("a channel count from 1 to {}", audio::MAX_SPLIT_CHANNELS),
            |v| {
                v.parse()
                    .ok()
                    .filter(|c| (1..=audio::MAX_SPLIT_CHANNELS).contains(c))
            },
        )?
        .unwrap_or(1usize);
        let split = query_option(&req, "split", "true or false", |v| match v {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        })?
        .unwrap_or(self.channels == Channels::Split);
        // Admitted like a request: refused with 503 when the slot's queue is full.
        drop(self.admission.enter().await?);
        let on_upgrade = hyper::upgrade::on(&mut req);
        let job = StreamJob {
            model: self.current.load_full(),
            admission: self.admission.clone(),
            metrics: self.metrics.clone(),
            history: self.history.clone(),
            slot: self.name.clone(),
            ctx: ctx.clone(),
            rate,
            channels,
            split: split && channels > 1,
            idle: self.idle,
            max_audio_s: self.max_audio_s,
        };
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let mut config = WebSocketConfig::default();
                    config.max_message_size = Some(MAX_WS_MESSAGE);
                    config.max_frame_size = Some(MAX_WS_MESSAGE);
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    job.run(ws).await;
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        });
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let hd = resp.headers_mut();
        hd.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        hd.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        hd.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).map_err(|e| internal("bad_websocket", e))?,
        );
        if let Ok(v) = HeaderValue::from_str(&job_version(&self.current.load())) {
            hd.insert("x-switchyard-version", v);
        }
        Ok(resp)
    }

    async fn swap(&self, body: serde_json::Value) -> Result<serde_json::Value, ApiError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct LoadBody {
            model_dir: String,
            version: Option<String>,
            vad: Option<String>,
            engine: Option<String>,
        }
        let b: LoadBody = serde_json::from_value(body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("expected {{\"model_dir\", \"version\"?, \"vad\"?, \"engine\"?}}: {e}"),
            )
        })?;
        let _one_at_a_time = self.loading.lock().await;
        let old = self.current.load_full();
        let engine = match b.engine.as_deref() {
            None => match old.recognizer.model.engine() {
                switchyard_infer::EngineKind::Ort => EngineChoice::Ort,
                switchyard_infer::EngineKind::Tract => EngineChoice::Tract,
            },
            Some(e) => engine_choice(e)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string()))?,
        };
        let failed =
            |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "model_load_failed", m);
        let model_dir = switchyard_config::resolve(self.base_dir.as_deref(), &b.model_dir);
        if !model_dir.is_dir() {
            return Err(failed(format!(
                "model folder `{}` does not exist",
                b.model_dir
            )));
        }
        let vad = match b.vad.as_ref().or(old.vad_label.as_ref()) {
            Some(v) => {
                let p = switchyard_config::resolve(self.base_dir.as_deref(), v);
                if !p.is_file() {
                    return Err(failed(format!("VAD model file `{v}` does not exist")));
                }
                Some((p, v.clone()))
            }
            None => None,
        };
        let spec = LoadSpec {
            model_dir,
            model_label: b.model_dir.clone(),
            vad,
            version: b
                .version
                .clone()
                .unwrap_or_else(|| format!("{}+{}", old.version, b.model_dir)),
            engine,
            options: old.recognizer.options.clone(),
        };
        let (engine_cfg, sessions) = (self.engine.clone(), self.sessions);
        let loaded = tokio::task::spawn_blocking(move || load_model(&engine_cfg, sessions, &spec))
            .await
            .map_err(|e| internal("model_load_failed", e))?
            .map_err(|e| failed(format!("{e:#}")))?;
        telemetry::set_slot_info(&self.name, "asr", &old.version, 0.0);
        telemetry::set_slot_info(&self.name, "asr", &loaded.version, 1.0);
        tracing::info!(slot = %self.name, from = %old.version, to = %loaded.version, model = %loaded.model_label, "asr model swapped");
        self.current.store(Arc::new(loaded));
        Ok(self.describe())
    }
}

/// One recognition to store.
struct Recognised<'a> {
    file_name: &'a str,
    duration_s: f64,
    text: &'a str,
    latency_s: f64,
}

/// Stores a recognition in the history (if on); waits (at most 2 s) until it is committed, so a
/// following read sees it.
async fn remember(
    history: Option<&History>,
    ctx: &RequestContext,
    slot: &str,
    model: &AsrModel,
    r: Recognised<'_>,
) {
    let Some(h) = history else { return };
    let done = h.record(Row {
        id: 0,
        time: String::new(),
        time_ms: history::now_ms(),
        route: ctx.route.to_string(),
        slot: slot.to_string(),
        version: model.version.to_string(),
        model: model.model_label.clone(),
        file_name: r.file_name.to_string(),
        duration_s: r.duration_s,
        language: model.language.clone(),
        text: r.text.to_string(),
        latency_ms: r.latency_s * 1e3,
        request_id: ctx.request_id.to_str().unwrap_or("").to_string(),
    });
    if tokio::time::timeout(Duration::from_secs(2), done)
        .await
        .is_err()
    {
        tracing::warn!(
            slot,
            "history write is slow; answering without waiting for it"
        );
    }
}

fn job_version(m: &AsrModel) -> String {
    m.version.to_string()
}

/// One live stream: its model is fixed when it starts.
struct StreamJob {
    model: Arc<AsrModel>,
    admission: Arc<crate::admission::Admission>,
    metrics: Arc<AsrMetrics>,
    history: Option<Arc<History>>,
    slot: Arc<str>,
    ctx: RequestContext,
    rate: u32,
    /// Interleaved channels in the client's PCM.
    channels: usize,
    /// Each channel recognised on its own (else they are averaged).
    split: bool,
    idle: Duration,
    max_audio_s: f64,
}

/// A decoder event and the channel it came from (0 unless the stream is split).
type ChannelEvent = (usize, Event);

/// An event as the client gets it; `channel` is named when the stream is split.
fn event_json(e: &Event, channel: Option<usize>) -> String {
    let mut v = match e {
        Event::Partial { text, until } => {
            json!({ "type": "partial", "text": text, "until": until })
        }
        Event::Final(s) => {
            json!({ "type": "final", "text": s.text, "start": s.start, "end": s.end })
        }
    };
    if let Some(c) = channel {
        v["channel"] = json!(c);
    }
    v.to_string()
}

/// A live stream's audio on its way to the decoders: interleaved 16-bit PCM kept aligned across
/// messages (a message may end inside a sample or a frame), then mixed or split and resampled as a
/// file's is ([`audio::Tracks`]).
struct LiveAudio {
    channels: usize,
    /// Bytes of an incomplete frame at the end of the last message.
    carry: Vec<u8>,
    tracks: audio::Tracks,
}

impl LiveAudio {
    fn new(rate: u32, channels: usize, split: bool) -> Self {
        let layout = if split {
            Channels::Split
        } else {
            Channels::Mix
        };
        Self {
            channels,
            carry: Vec::new(),
            tracks: audio::Tracks::new(layout, rate, 0),
        }
    }

    /// Adds a message's bytes; returns the whole frames it completed.
    fn push(&mut self, bytes: &[u8]) -> Result<usize, AudioError> {
        self.carry.extend_from_slice(bytes);
        let frame = 2 * self.channels;
        let whole = self.carry.len() / frame * frame;
        let pcm = audio::pcm16_to_f32(&self.carry[..whole]);
        self.carry.drain(..whole);
        self.tracks.push(&pcm, self.channels)?;
        Ok(whole / frame)
    }
}

impl StreamJob {
    async fn run<S>(self, mut ws: WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.metrics.streams.increment(1.0);
        let started = Instant::now();
        let (code, reason, finals) = self.pump(&mut ws).await;
        // Stored before the close frame, so a client that reads the history after the close sees it.
        if let Some((text, duration_s)) = finals {
            let result = Recognised {
                file_name: "stream",
                duration_s,
                text: &text,
                latency_s: started.elapsed().as_secs_f64(),
            };
            remember(
                self.history.as_deref(),
                &self.ctx,
                &self.slot,
                &self.model,
                result,
            )
            .await;
        }
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.clone().into(),
            }))
            .await;
        self.metrics.streams.decrement(1.0);
        tracing::info!(slot = %self.slot, request_id = ?self.ctx.request_id, close = code, reason = %reason,
            seconds = started.elapsed().as_secs_f64(), "asr stream closed");
    }

    /// Runs the stream; returns the close code, reason and (when it ended normally) the text.
    ///
    /// Decoding runs on a blocking thread while the next messages are read: audio that arrives
    /// meanwhile (up to [`READ_AHEAD_S`]; then the socket is left to push back) is decoded in one
    /// go when the decoder is free, so a stream never waits for a message round trip between
    /// chunks, and a backlog of small messages costs one handoff instead of one each.
    async fn pump<S>(&self, ws: &mut WebSocketStream<S>) -> (u16, String, Option<(String, f64)>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        type Done = (
            Vec<switchyard_speech::recognizer::Session>,
            Result<Vec<ChannelEvent>, switchyard_speech::AsrError>,
        );
        struct Job {
            handle: tokio::task::JoinHandle<Done>,
            started: Instant,
            audio_s: f64,
            end: bool,
        }
        let mut audio = LiveAudio::new(self.rate, self.channels, self.split);
        let decoders = if self.split { self.channels } else { 1 };
        let sessions: Result<Vec<_>, _> = (0..decoders)
            .map(|_| self.model.recognizer.session())
            .collect();
        let mut sessions = match sessions {
            Ok(s) => Some(s),
            Err(e) => return (close::SERVER_ERROR, e.to_string(), None),
        };
        let split = self.split;
        let mut finals: Vec<switchyard_speech::Segment> = Vec::new();
        let mut received = 0usize;
        let max_frames = (self.max_audio_s * self.rate as f64) as usize;
        let read_ahead = (READ_AHEAD_S * audio::MODEL_RATE as f64) as usize;
        // Whether the client has said `end`.
        let mut ended = false;
        let mut job: Option<Job> = None;
        // Results of the last decode, sent once the next decode has started.
        let mut unsent: Vec<ChannelEvent> = Vec::new();
        loop {
            if job.is_none() && (audio.tracks.ready() > 0 || ended) {
                let Some(permit) = self.admission.enter_unbounded().await else {
                    return (1001, "shutting down".into(), None);
                };
                let Some(mut decoders) = sessions.take() else {
                    return (close::SERVER_ERROR, "session lost".into(), None);
                };
                let audio_s = audio.tracks.ready() as f64 / audio::MODEL_RATE as f64;
                let tracks = audio.tracks.take();
                let end = ended;
                job = Some(Job {
                    audio_s,
                    started: Instant::now(),
                    end,
                    handle: tokio::task::spawn_blocking(move || {
                        // Held until decoding is over, even if the stream is dropped before.
                        let _permit = permit;
                        let mut events = Vec::new();
                        for (c, (s, samples)) in decoders.iter_mut().zip(&tracks).enumerate() {
                            let mut more = match s.accept(samples) {
                                Ok(ev) => ev,
                                Err(e) => return (decoders, Err(e)),
                            };
                            if end {
                                match s.finish() {
                                    Ok(last) => more.extend(last),
                                    Err(e) => return (decoders, Err(e)),
                                }
                            }
                            events.extend(more.into_iter().map(|e| (c, e)));
                        }
                        (decoders, Ok(events))
                    }),
                });
            }
            if !send_events(ws, &mut unsent, &mut finals, split).await {
                return (1000, "client went away".into(), None);
            }
            let msg = match job.as_mut() {
                // Decoding: read ahead unless the client is done or far enough ahead.
                Some(j) if !ended && audio.tracks.ready() < read_ahead => tokio::select! {
                    done = &mut j.handle => Err(done),
                    msg = ws.next() => Ok(msg),
                },
                Some(j) => Err((&mut j.handle).await),
                None => match tokio::time::timeout(self.idle, ws.next()).await {
                    Err(_) => return (close::IDLE_TIMEOUT, "idle timeout".into(), None),
                    Ok(msg) => Ok(msg),
                },
            };
            let done = match msg {
                Ok(msg) => {
                    let msg = match msg {
                        None => return (1000, "client went away".into(), None),
                        Some(Err(e)) => return (close::BAD_MESSAGE, format!("{e}"), None),
                        Some(Ok(m)) => m,
                    };
                    match msg {
                        Message::Binary(b) => {
                            received += match audio.push(&b) {
                                Ok(frames) => frames,
                                Err(e) => return (close::BAD_MESSAGE, e.to_string(), None),
                            };
                            if received > max_frames {
                                return (
                                    close::TOO_LONG,
                                    format!(
                                        "audio is longer than the {} s limit",
                                        self.max_audio_s
                                    ),
                                    None,
                                );
                            }
                        }
                        Message::Text(t) => {
                            #[derive(Deserialize)]
                            struct Control {
                                event: String,
                            }
                            match serde_json::from_str::<Control>(&t) {
                                Ok(c) if c.event == "end" => {
                                    audio.tracks.end();
                                    ended = true;
                                }
                                _ => {
                                    return (
                                        close::BAD_MESSAGE,
                                        "expected binary PCM or {\"event\":\"end\"}".into(),
                                        None,
                                    );
                                }
                            }
                        }
                        Message::Close(_) => return (1000, "client closed".into(), None),
                        _ => {}
                    }
                    continue;
                }
                Err(done) => done,
            };
            let Some(j) = job.take() else {
                return (close::SERVER_ERROR, "decoder lost".into(), None);
            };
            let (decoders, events) = match done {
                Ok(r) => r,
                Err(e) => return (close::SERVER_ERROR, e.to_string(), None),
            };
            self.metrics.audio_seconds.increment(j.audio_s);
            self.metrics.stages[2].record(j.started.elapsed().as_secs_f64());
            unsent = match events {
                Ok(e) => e,
                Err(e) => return (close::SERVER_ERROR, e.to_string(), None),
            };
            if j.end {
                if !send_events(ws, &mut unsent, &mut finals, split).await {
                    return (1000, "client went away".into(), None);
                }
                let duration = decoders.iter().map(|s| s.received_s()).fold(0.0, f64::max);
                let total: f64 = decoders
                    .iter()
                    .map(|s| {
                        let t = s.timings();
                        t.decode.fbank + t.decode.encoder + t.decode.search + t.vad
                    })
                    .sum();
                if duration > 0.0 {
                    self.metrics.rtf.record(total / duration);
                }
                // The channels' finals in time order, as a file split by channel is.
                finals.sort_by(|a, b| a.start.total_cmp(&b.start));
                return (
                    1000,
                    "end".into(),
                    Some((switchyard_speech::recognizer::join(&finals), duration)),
                );
            }
            sessions = Some(decoders);
        }
    }
}

/// Sends decoder events to a stream's client, keeping the finals; false when the client is gone.
async fn send_events<S>(
    ws: &mut WebSocketStream<S>,
    events: &mut Vec<ChannelEvent>,
    finals: &mut Vec<switchyard_speech::Segment>,
    split: bool,
) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for (c, e) in events.drain(..) {
        let channel = split.then_some(c);
        if ws
            .send(Message::Text(event_json(&e, channel).into()))
            .await
            .is_err()
        {
            return false;
        }
        if let Event::Final(seg) = e {
            finals.push(switchyard_speech::Segment { channel, ..seg });
        }
    }
    true
}

impl Slot for AsrSlot {
    fn call<'a>(&'a self, req: Request<Body>, ctx: &'a RequestContext) -> SlotFuture<'a> {
        Box::pin(self.serve(req, ctx))
    }

    fn describe(&self) -> serde_json::Value {
        let m = self.current.load();
        let info = m.recognizer.model.info();
        let mut description = json!({
            "family": "transducer",
            "model_dir": m.model_label,
            "model_type": info.model_type,
            "vad": m.vad_label,
            "version": &*m.version,
            "language": m.language,
            "engine": m.recognizer.model.engine().as_str(),
            // The encoder's; the decoder, joiner and VAD stay on the CPU (see `memory_devices`).
            "device": m.recognizer.model.device().to_string(),
            "chunk_ms": info.shift * 10,
            "decoding_method": m.recognizer.options.decoding.name(),
            "channels": self.channels.as_str(),
            "max_active_paths": match m.recognizer.options.decoding {
                Decoding::ModifiedBeam { max_active_paths } => Some(max_active_paths),
                Decoding::Greedy => None,
            },
            "load_ms": (m.load_seconds * 1e3).round(),
            "loaded_at": humantime::format_rfc3339_seconds(m.loaded_at).to_string(),
            "max_concurrency": self.admission.max_concurrency(),
            "queue_depth": self.admission.queue_depth(),
            "waiting": self.admission.waiting(),
            "batch_concurrency": self.batch_concurrency,
            "max_audio_seconds": self.max_audio_s,
            "history": self.history.as_ref().map(|h| h.path().display().to_string()),
        });
        super::add_memory_json(&mut description, &self.memory());
        description
    }

    fn memory(&self) -> Vec<(String, switchyard_infer::MemoryStats)> {
        let m = self.current.load();
        let r = &m.recognizer;
        let parts = r
            .model
            .memory_parts()
            .into_iter()
            .chain(r.vad.as_ref().map(|v| (v.device(), v.memory())));
        switchyard_speech::transducer::memory_by_device(parts)
            .into_iter()
            .map(|(d, s)| (d.to_string(), s))
            .collect()
    }

    fn version(&self) -> Option<Arc<str>> {
        Some(self.current.load().version.clone())
    }

    fn load<'a>(&'a self, params: serde_json::Value) -> LoadFuture<'a> {
        Box::pin(self.swap(params))
    }
}
