//! The TOML schema: plain serde structs with defaults.
//!
//! Every struct here is deserialised from the user's file. Unknown keys are not rejected by serde but
//! collected (see [`crate::load_str`]) so that `switchyard check` can list all of them at once.

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// The data-plane listener.
    pub server: ServerConfig,
    /// The admin listener (metrics, health, JSON API).
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// Inference engines for model slots.
    pub engine: EngineConfig,
    /// Backends that turn a request into a response.
    #[serde(rename = "slot")]
    pub slots: Vec<SlotSpec>,
    /// Path/host routes, each with a stable and an optional canary slot.
    #[serde(rename = "route")]
    pub routes: Vec<RouteSpec>,
    /// Recognition history (SQLite); off when absent.
    pub history: Option<HistoryConfig>,
}

/// `[history]`: every ASR result is stored in SQLite, queryable per route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct HistoryConfig {
    /// Database file (created with its folder if missing).
    pub path: String,
    /// Rows kept; the oldest are deleted beyond it.
    pub max_rows: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            path: "data/history.db".into(),
            max_rows: 1_000_000,
        }
    }
}

/// `[server]`: the data-plane listener and its limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on, `ip:port`.
    pub listen: String,
    /// Largest request body accepted, in bytes (routes may lower or raise it). Over it: 413.
    pub max_body_bytes: u64,
    /// Largest total size of request headers, in bytes. Over it: 431.
    pub max_header_bytes: usize,
    /// Time allowed to receive a request's headers; a slower client is disconnected (slow loris).
    pub header_read_timeout_ms: u64,
    /// Time allowed to receive a whole request (headers and body). Over it: 408.
    pub request_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests may take to finish before the process exits.
    pub drain_timeout_ms: u64,
    /// Runtime worker threads; 0 = one per CPU core.
    pub workers: usize,
    /// Microseconds a data-plane worker keeps polling its sockets without blocking (yielding its
    /// core to other threads every few polls) after the last request it began, before it sleeps;
    /// 0 = sleep as soon as nothing is ready. At most 10,000. Unset: 20 when the workers are no
    /// more than the cores, else 0. Takes effect on restart.
    pub idle_poll_us: Option<u64>,
    /// TLS for the data plane; absent = plain HTTP/1.1 and h2c.
    pub tls: Option<TlsConfig>,
    /// Reload the configuration file by itself when it changes (a mounted Kubernetes ConfigMap).
    pub watch_config: bool,
    /// Serve the web console at `/ui/` (public pages; operator pages need the admin token).
    pub console: bool,
    /// Serve HTTP/1.1 requests without a body on the hand-written fast path (hyper serves the
    /// rest); `false` puts every connection on hyper. Takes effect on restart.
    pub http1_fast_path: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 32 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            drain_timeout_ms: 30_000,
            workers: 0,
            idle_poll_us: None,
            tls: None,
            watch_config: false,
            console: true,
            http1_fast_path: true,
        }
    }
}

/// `[server.tls]`: PEM certificate chain and private key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct TlsConfig {
    /// Path of the PEM certificate chain (leaf first).
    pub cert: String,
    /// Path of the PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// `[admin]`: the admin listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct AdminConfig {
    /// Address to listen on, `ip:port`.
    pub listen: String,
    /// Bearer token required for `/admin/*` (metrics and health stay open).
    pub token: Option<String>,
    /// Name of an environment variable holding the token (preferred over `token` in files).
    pub token_env: Option<String>,
    /// Serve the admin listener over TLS (optionally requiring client certificates).
    pub tls: Option<AdminTlsConfig>,
}

/// `[admin.tls]`: TLS for the admin listener; with `client_ca`, only clients presenting a
/// certificate signed by that CA get past the handshake (mutual TLS).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct AdminTlsConfig {
    /// Path of the PEM certificate chain (leaf first).
    pub cert: String,
    /// Path of the PEM private key.
    pub key: String,
    /// PEM file of CA certificates that sign admin clients' certificates.
    #[serde(default)]
    pub client_ca: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9901".into(),
            token: None,
            token_env: None,
            tls: None,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `switchyard=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
    /// One line per request (target `access`).
    pub access_log: bool,
    /// OTLP/HTTP collector (`http://host:4318`): one span per request is exported there. Needs a
    /// binary built with the `otlp` feature.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub otlp_service_name: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            access_log: true,
            otlp_endpoint: None,
            otlp_service_name: "switchyard".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[engine]`: how model slots run.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct EngineConfig {
    /// `auto` (ONNX Runtime when its library loads, else tract), `ort` or `tract`.
    pub default: String,
    /// Path of `libonnxruntime.so…`; empty = `ORT_DYLIB_PATH`, `.cache/onnxruntime/`, next to the binary.
    pub ort_library: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// With `cuda:N` and no CUDA provider: run on the CPU instead of failing.
    pub device_fallback: bool,
    /// On `cuda:N`: cuDNN's convolution algorithm search at each new input shape, `heuristic`,
    /// `exhaustive` or `default`.
    pub cuda_conv_search: String,
    /// On `cuda:N`: most ONNX Runtime sessions (CUDA streams, each with its own arena) per model.
    pub cuda_sessions: usize,
    /// Intra-op threads per model; 0 = engine default (one per core).
    pub threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default: "auto".into(),
            ort_library: String::new(),
            device: "cpu".into(),
            device_fallback: false,
            cuda_conv_search: "heuristic".into(),
            cuda_sessions: 1,
            threads: 0,
        }
    }
}

/// The kind of a slot.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    /// Forwards to an HTTP(S) service.
    Upstream,
    /// Answers every request with a fixed response (health pages, maintenance, demos).
    Static,
    /// Finds and anonymises faces in photos, in-process.
    Face,
    /// Speech recognition (streaming transducer), in-process.
    Asr,
}

impl SlotKind {
    /// The name used in config, metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotKind::Upstream => "upstream",
            SlotKind::Static => "static",
            SlotKind::Face => "face",
            SlotKind::Asr => "asr",
        }
    }
}

/// `[[slot]]`: one backend. Fields other than `name`, `kind` and `version` belong to one kind.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct SlotSpec {
    /// Unique name, used by routes and in metrics.
    pub name: String,
    /// What serves requests.
    pub kind: SlotKind,
    /// A version label carried into metrics and response headers.
    #[serde(default = "default_version")]
    pub version: String,

    // --- upstream ---
    /// `upstream`: base URL, `http://host:port[/base]` or `https://…`.
    pub url: Option<String>,
    /// `upstream`: time to wait for the response headers; over it: 504.
    pub timeout_ms: Option<u64>,
    /// `upstream`: time to establish a connection; over it: 502.
    pub connect_timeout_ms: Option<u64>,
    /// `upstream`: send the client's `Host` header instead of the upstream's authority.
    pub preserve_host: Option<bool>,
    /// `upstream`: idle pooled connections kept per host.
    pub pool_max_idle: Option<usize>,

    // --- static ---
    /// `static`: response status (default 200).
    pub status: Option<u16>,
    /// `static`: response body.
    pub body: Option<String>,
    /// `static`: response content type (default `text/plain; charset=utf-8`).
    pub content_type: Option<String>,

    // --- model slots (face) ---
    /// `face`: `blazeface-front`, `blazeface-back` or `centerface`.
    pub detector: Option<String>,
    /// `face`: ONNX model file.
    pub model: Option<String>,
    /// Model slots: engine override (`auto`, `ort`, `tract`).
    pub engine: Option<String>,
    /// Model slots: device override (`cpu`, `cuda:N`); default `[engine] device`.
    pub device: Option<String>,
    /// `face`: minimum detection score (default 0.5).
    pub score_threshold: Option<f32>,
    /// `face`: NMS overlap (default 0.3).
    pub nms_iou: Option<f32>,
    /// `face`, BlazeFace full range: run on overlapping tiles too (default true).
    pub tiling: Option<bool>,
    /// `face`, BlazeFace full range: smallest tile side in pixels (default 256).
    pub min_tile: Option<u32>,
    /// `face`, CenterFace: largest detector input side (default 1280).
    pub max_side: Option<u32>,
    /// `face`, CenterFace: run every photo at one square input shape, warmed at load (default: on a GPU).
    pub fixed_shape: Option<bool>,
    /// `face`, BlazeFace full range, tiled: tiles per model run, 1 to 256 (default: 32 on a GPU,
    /// 1 on the CPU).
    pub tile_batch: Option<usize>,
    /// `face`: largest decoded image in pixels (default 40,000,000); over it: 413.
    pub max_pixels: Option<u64>,
    /// Model slots: requests processed at once (default: CPU cores); the rest wait their turn.
    pub max_concurrency: Option<usize>,
    /// Model slots: ONNX Runtime sessions (default 1).
    pub sessions: Option<usize>,
    /// Model slots: requests that may wait for a turn (default 4 × `max_concurrency`); beyond: 503.
    pub queue_depth: Option<usize>,
    /// Model slots, for testing fallbacks and breakers: a fixed delay added before every request.
    pub inject_latency_ms: Option<u64>,

    // --- asr ---
    /// `asr`: model family; only `transducer` (sherpa-onnx streaming transducer layout).
    pub family: Option<String>,
    /// `asr`: folder with `encoder.onnx`, `decoder.onnx`, `joiner.onnx`, `tokens.txt`.
    pub model_dir: Option<String>,
    /// `asr`: Silero VAD model file; segments long audio and ends live utterances.
    pub vad: Option<String>,
    /// `asr`: longest audio accepted, seconds (default 600); longer: 413, or stream closed.
    pub max_audio_seconds: Option<f64>,
    /// `asr`: files of one `/batch` request recognised at once (default 2).
    pub batch_concurrency: Option<usize>,
    /// `asr`: a live stream that sends nothing for this long is closed (default 30,000).
    pub stream_idle_timeout_ms: Option<u64>,
    /// `asr` without VAD: trailing silence that ends an utterance, ms (default 1,200).
    pub endpoint_silence_ms: Option<u64>,
    /// `asr`: `greedy_search` (default) or `modified_beam_search` (sherpa-onnx's names).
    pub decoding_method: Option<String>,
    /// `asr` with `modified_beam_search`: hypotheses kept per frame, 1 to 64 (default 4).
    pub max_active_paths: Option<usize>,
    /// `asr`: `mix` (default: a file's channels are averaged) or `split` (each channel is
    /// recognised on its own, as for a call with one speaker per channel); a request's
    /// `?channels=` overrides it.
    pub channels: Option<String>,
}

fn default_version() -> String {
    "0".into()
}

impl SlotSpec {
    /// Names of the fields that are set but do not belong to this slot's kind.
    pub fn foreign_fields(&self) -> Vec<&'static str> {
        let upstream = [
            ("url", self.url.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            ("connect_timeout_ms", self.connect_timeout_ms.is_some()),
            ("preserve_host", self.preserve_host.is_some()),
            ("pool_max_idle", self.pool_max_idle.is_some()),
        ];
        let fixed = [
            ("status", self.status.is_some()),
            ("body", self.body.is_some()),
            ("content_type", self.content_type.is_some()),
        ];
        let face = [
            ("detector", self.detector.is_some()),
            ("model", self.model.is_some()),
            ("score_threshold", self.score_threshold.is_some()),
            ("nms_iou", self.nms_iou.is_some()),
            ("tiling", self.tiling.is_some()),
            ("min_tile", self.min_tile.is_some()),
            ("max_side", self.max_side.is_some()),
            ("fixed_shape", self.fixed_shape.is_some()),
            ("tile_batch", self.tile_batch.is_some()),
            ("max_pixels", self.max_pixels.is_some()),
        ];
        let model = [
            ("engine", self.engine.is_some()),
            ("device", self.device.is_some()),
            ("max_concurrency", self.max_concurrency.is_some()),
            ("sessions", self.sessions.is_some()),
            ("queue_depth", self.queue_depth.is_some()),
            ("inject_latency_ms", self.inject_latency_ms.is_some()),
        ];
        let asr = [
            ("family", self.family.is_some()),
            ("model_dir", self.model_dir.is_some()),
            ("vad", self.vad.is_some()),
            ("max_audio_seconds", self.max_audio_seconds.is_some()),
            ("batch_concurrency", self.batch_concurrency.is_some()),
            (
                "stream_idle_timeout_ms",
                self.stream_idle_timeout_ms.is_some(),
            ),
            ("endpoint_silence_ms", self.endpoint_silence_ms.is_some()),
            ("decoding_method", self.decoding_method.is_some()),
            ("max_active_paths", self.max_active_paths.is_some()),
            ("channels", self.channels.is_some()),
        ];
        let mut foreign = Vec::new();
        if self.kind != SlotKind::Upstream {
            foreign.extend_from_slice(&upstream);
        }
        if self.kind != SlotKind::Static {
            foreign.extend_from_slice(&fixed);
        }
        if self.kind != SlotKind::Face {
            foreign.extend_from_slice(&face);
        }
        if !matches!(self.kind, SlotKind::Face | SlotKind::Asr) {
            foreign.extend_from_slice(&model);
        }
        if self.kind != SlotKind::Asr {
            foreign.extend_from_slice(&asr);
        }
        foreign
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(n, _)| n)
            .collect()
    }
}

/// `[[route]]`: requests whose path starts with `path` (and whose host matches `host`, if set).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RouteSpec {
    /// Unique name; also seeds the sticky hash so routes split independently.
    pub name: String,
    /// Path prefix, matched on segment boundaries; the longest match wins.
    pub path: String,
    /// Optional exact host (port ignored, case-insensitive).
    #[serde(default)]
    pub host: Option<String>,
    /// Remove `path` from the request path before it reaches the slot.
    #[serde(default)]
    pub strip_prefix: bool,
    /// The slot that serves everyone not sent elsewhere (with `blue`/`green`: set from `active`).
    #[serde(default)]
    pub stable: String,
    /// The slot that receives `canary_weight` percent of sticky keys.
    #[serde(default)]
    pub canary: Option<String>,
    /// Percent of the 10,000 sticky buckets sent to the canary (0–100, fractions allowed).
    #[serde(default)]
    pub canary_weight: f64,
    /// Sticky keys in order, first one present wins: `header:NAME`, `cookie:NAME`, `query:NAME`, `ip`.
    #[serde(default = "default_sticky")]
    pub sticky: Vec<String>,
    /// Route-specific body limit (overrides `server.max_body_bytes`).
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Override rules, tried in order before the weight.
    #[serde(default, rename = "match")]
    pub matches: Vec<MatchSpec>,
    /// Blue-green: the two slots; `active` names the one serving everyone.
    #[serde(default)]
    pub blue: Option<String>,
    /// Blue-green: the other slot.
    #[serde(default)]
    pub green: Option<String>,
    /// Blue-green: `blue` or `green`.
    #[serde(default)]
    pub active: Option<String>,
    /// Per-request fallback from the canary to stable.
    #[serde(default)]
    pub fallback: Option<FallbackSpec>,
    /// Circuit breaker on the canary.
    #[serde(default)]
    pub breaker: Option<BreakerSpec>,
    /// Automatic ramp of the canary weight through gated steps.
    #[serde(default)]
    pub ramp: Option<RampSpec>,
    /// Shadow a sample of stable traffic to the canary and compare outputs.
    #[serde(default)]
    pub shadow: Option<ShadowSpec>,
    /// Per-client rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// Who may call this route: `none` (default), `bearer` (static tokens) or `jwt`.
    #[serde(default)]
    pub auth: AuthMode,
    /// `auth = "bearer"`: the accepted tokens.
    #[serde(default)]
    pub bearer: Option<BearerSpec>,
    /// `auth = "jwt"`: keys and claim checks.
    #[serde(default)]
    pub jwt: Option<JwtSpec>,
    /// Result cache: identical requests to the same slot version are answered from memory.
    #[serde(default)]
    pub cache: Option<CacheSpec>,
}

/// `auth`: how a route authenticates its callers.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone may call.
    #[default]
    None,
    /// `Authorization: Bearer <token>` with one of the configured tokens.
    Bearer,
    /// `Authorization: Bearer <JWT>` signed by a configured key, with `exp`/`iss`/`aud` checked.
    Jwt,
}

/// `[route.bearer]`: static API tokens (compared in constant time).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct BearerSpec {
    /// Tokens written in the file (prefer `tokens_env` or `tokens_file`).
    pub tokens: Vec<String>,
    /// Environment variable holding tokens, comma-separated.
    pub tokens_env: Option<String>,
    /// File with one token per line (blank lines and `#` comments ignored).
    pub tokens_file: Option<String>,
}

/// `[route.jwt]`: JSON Web Token verification.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct JwtSpec {
    /// HS256 shared secret (prefer `secret_env`).
    pub secret: Option<String>,
    /// Environment variable holding the HS256 secret.
    pub secret_env: Option<String>,
    /// PEM file with an RSA (RS256) or EC P-256 (ES256) public key or certificate.
    pub public_key: Option<String>,
    /// JWKS file (`{"keys": [...]}`); the token's `kid` picks the key.
    pub jwks: Option<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Accepted `aud` values (one must be in the token).
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    pub leeway_s: u64,
}

impl Default for JwtSpec {
    fn default() -> Self {
        Self {
            secret: None,
            secret_env: None,
            public_key: None,
            jwks: None,
            issuer: None,
            audience: Vec::new(),
            leeway_s: 30,
        }
    }
}

/// `[route.cache]`: a result cache bounded by bytes, keyed by a hash of method, path, query,
/// `options_headers`, body and the answering slot's name and version.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct CacheSpec {
    /// Memory for cached responses (bodies plus headers), bytes.
    pub max_bytes: u64,
    /// Largest single response cached, bytes.
    pub max_entry_bytes: u64,
    /// How long an entry lives, seconds.
    pub ttl_s: u64,
    /// Request headers that change the result and so are part of the key (the query string and
    /// body always are).
    pub options_headers: Vec<String>,
    /// On routes with `auth`: whether one caller's stored answer may serve another (`shared`) or
    /// each caller has their own entries (`caller`, the default).
    pub scope: CacheScope,
}

/// `[route.cache] scope`: who may be served an answer stored for someone else.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// The caller's identity (JWT `iss`+`sub`, else the token) is part of the key: a hit never
    /// tells a caller that somebody else already sent the same input.
    #[default]
    Caller,
    /// Everyone who sends the same request shares the entry.
    Shared,
}

impl Default for CacheSpec {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 16 * 1024 * 1024,
            ttl_s: 3600,
            options_headers: Vec::new(),
            scope: CacheScope::Caller,
        }
    }
}

/// `[route.rate_limit]`: a token bucket per client; over it: 429 with `Retry-After`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RateLimitSpec {
    /// Sustained requests per second per client.
    pub requests_per_s: f64,
    /// Requests a client may send at once after being idle.
    pub burst: u32,
    /// `sticky` (the route's sticky keys, the first present) or `ip`.
    pub key: String,
}

impl Default for RateLimitSpec {
    fn default() -> Self {
        Self {
            requests_per_s: 10.0,
            burst: 20,
            key: "sticky".into(),
        }
    }
}

/// `[route.fallback]`: a canary request that fails or is too slow is served by stable.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct FallbackSpec {
    /// The canary's answer must start within this time, else stable serves (0 = no timeout).
    pub timeout_ms: u64,
    /// Bodies up to this size are buffered so they can be replayed to stable; larger ones are not.
    pub replay_max_bytes: u64,
    /// Start stable too after this long and take whichever answers first (0 = off).
    pub hedge_after_ms: u64,
}

impl Default for FallbackSpec {
    fn default() -> Self {
        Self {
            timeout_ms: 1000,
            replay_max_bytes: 16 * 1024 * 1024,
            hedge_after_ms: 0,
        }
    }
}

/// `[route.breaker]`: stop sending traffic to an unhealthy canary.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct BreakerSpec {
    /// Sliding window the rates are computed over, seconds.
    pub window_s: u64,
    /// No decision with fewer canary requests in the window.
    pub min_requests: u64,
    /// Open when the canary's error rate (5xx, failures, timeouts) exceeds this (0–1).
    pub max_error_rate: f64,
    /// Open when the canary's p95 latency exceeds this, ms (0 = no latency rule).
    pub max_p95_ms: u64,
    /// Time open before probing (half-open), seconds.
    pub cooldown_s: u64,
    /// Percent of canary traffic let through while half-open.
    pub probe_percent: f64,
    /// Consecutive healthy probes that close the breaker.
    pub probe_successes: u64,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        Self {
            window_s: 10,
            min_requests: 20,
            max_error_rate: 0.05,
            max_p95_ms: 0,
            cooldown_s: 10,
            probe_percent: 10.0,
            probe_successes: 5,
        }
    }
}

/// `[route.ramp]`: move the canary weight through `steps`, checking gates at each.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RampSpec {
    /// Weights in percent, increasing; the canary is promoted after the last (100).
    pub steps: Vec<f64>,
    /// Time at each step, seconds.
    pub interval_s: u64,
    /// Start when the configuration loads (else `POST /admin/routes/{route}/ramp/start`).
    pub auto_start: bool,
    /// Canary requests needed at a step before it may advance.
    pub min_requests: u64,
    /// Gate: canary error rate at most this (0–1).
    pub max_error_rate: f64,
    /// Gate: canary p95 latency at most this, ms (0 = none).
    pub max_p95_ms: u64,
    /// Gate (face shadow): mean F1 of canary boxes against stable's at least this (0 = none).
    pub min_face_f1: f64,
    /// Gate (ASR shadow): WER of canary text against stable's at most this (0 = none).
    pub max_wer: f64,
    /// Gate (upstream shadow): share of identical answers at least this (0 = none).
    pub min_match_rate: f64,
    /// Shadow comparisons needed at a step before a quality gate counts.
    pub min_shadow_samples: u64,
}

impl Default for RampSpec {
    fn default() -> Self {
        Self {
            steps: vec![5.0, 20.0, 50.0, 100.0],
            interval_s: 300,
            auto_start: false,
            min_requests: 20,
            max_error_rate: 0.01,
            max_p95_ms: 0,
            min_face_f1: 0.0,
            max_wer: 0.0,
            min_match_rate: 0.0,
            min_shadow_samples: 10,
        }
    }
}

/// `[route.shadow]`: copies of stable traffic run on the canary, off the response path.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ShadowSpec {
    /// Percent of stable requests copied.
    pub percent: f64,
    /// Shadow requests running at once; beyond it a copy is skipped (never queued).
    pub max_concurrency: usize,
    /// Largest request body copied, bytes.
    pub max_body_bytes: u64,
}

impl Default for ShadowSpec {
    fn default() -> Self {
        Self {
            percent: 10.0,
            max_concurrency: 2,
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

fn default_sticky() -> Vec<String> {
    vec!["ip".into()]
}

/// `[[route.match]]`: send requests that carry a header, cookie or query parameter to a slot.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct MatchSpec {
    /// Header name (case-insensitive).
    pub header: Option<String>,
    /// Cookie name (case-sensitive).
    pub cookie: Option<String>,
    /// Query parameter name.
    pub query: Option<String>,
    /// Value that must match exactly; absent = the key only has to be present.
    pub equals: Option<String>,
    /// Slot that serves matching requests.
    pub slot: String,
}
