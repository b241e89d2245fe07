//! Inference engines behind one interface: ONNX Runtime (through `ort` with `load-dynamic`) and
//! tract (pure Rust).
//!
//! * [`Runtime::init`] finds and loads the ONNX Runtime library once (config path, `ORT_DYLIB_PATH`,
//!   next to the executable, `.cache/onnxruntime-gpu/` for a GPU, `.cache/onnxruntime/`); when it
//!   is missing, `auto` falls back to tract.
//! * [`Model::load`] reads an ONNX file, applies declared [`Patch`]es to its graph (so both engines run
//!   the same graph), and builds a pool of ONNX Runtime sessions or a tract plan. With
//!   [`LoadOptions::adaptive_threads`], one more session runs on the process-wide thread pool and
//!   serves a request alone ([`Model::request`]) on every core.
//! * [`Model::run`] is blocking: call it off the async reactor. It takes and returns plain
//!   [`Tensor`]s, so callers know nothing of either engine.
//!
//! This crate knows nothing of faces or speech.

mod memory;
mod patch;
pub mod spare;

pub use memory::MemoryStats;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

pub use patch::{Patch, int8_products_saturate};
use tract_onnx::prelude::{
    Datum, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue,
    TValue, TypedSimplePlan, tvec,
};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ONNX Runtime library could not be used.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// The model could not be read, patched or prepared.
    #[error("model `{path}`: {message}")]
    Load {
        /// Model file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Inference failed.
    #[error("inference: {0}")]
    Run(String),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// ONNX Runtime.
    Ort,
    /// tract.
    Tract,
}

impl EngineKind {
    /// `ort` or `tract`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Ort => "ort",
            EngineKind::Tract => "tract",
        }
    }
}

/// The engine a slot asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// ONNX Runtime when its library loads, else tract.
    #[default]
    Auto,
    /// ONNX Runtime, or fail.
    Ort,
    /// tract.
    Tract,
}

impl std::str::FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "ort" | "onnxruntime" => Ok(Self::Ort),
            "tract" => Ok(Self::Tract),
            _ => Err(format!("engine `{s}` is not one of auto, ort, tract")),
        }
    }
}

/// Where ONNX Runtime runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// CPU execution provider.
    #[default]
    Cpu,
    /// CUDA execution provider on this device.
    Cuda(i32),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) if n >= 0 => Ok(Self::Cuda(n)),
                _ => Err(format!("device `{s}` is not `cpu` or `cuda:N`")),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// How cuDNN picks a convolution algorithm when a session's input shape changes.
///
/// On an H200 with ONNX Runtime 1.31 and cuDNN 9, every change of input shape cost about 1.3 s
/// with either search (which is why CenterFace runs at one fixed shape on a GPU), and the steady
/// speed at one shape was the same with both. No search at all ([`ConvSearch::Default`]) was 10×
/// slower at every shape: it is there for comparison, not for use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvSearch {
    /// cuDNN's own ranking, no timing runs. The default.
    #[default]
    Heuristic,
    /// Times every algorithm at an input shape (ONNX Runtime's own default).
    Exhaustive,
    /// cuDNN's default algorithm, no search at all: CenterFace took 220–350 ms a photo on an H200
    /// with it, against 25 ms with a search.
    Default,
}

impl std::str::FromStr for ConvSearch {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "heuristic" => Ok(Self::Heuristic),
            "exhaustive" => Ok(Self::Exhaustive),
            "default" => Ok(Self::Default),
            _ => Err(format!(
                "convolution search `{s}` is not heuristic, exhaustive or default"
            )),
        }
    }
}

/// Settings of the CUDA execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaOptions {
    /// cuDNN's convolution algorithm search.
    pub conv_search: ConvSearch,
    /// Most ONNX Runtime sessions of one model on the GPU, whatever [`LoadOptions::sessions`] asks:
    /// each one is a CUDA stream with its own memory arena and its own algorithm searches, and
    /// requests beyond them wait for one (the GPU runs one kernel stream at a time per session).
    pub max_sessions: usize,
}

impl Default for CudaOptions {
    fn default() -> Self {
        Self {
            conv_search: ConvSearch::Heuristic,
            max_sessions: 1,
        }
    }
}

/// The ONNX Runtime library, loaded once per process.
pub struct Runtime {
    env: ort::environment::Environment,
    /// The library file that was loaded.
    pub library: PathBuf,
}

static RUNTIME: OnceLock<std::result::Result<Arc<Runtime>, String>> = OnceLock::new();

/// The library file name the PyPI wheel ships.
pub const ORT_LIBRARY_NAME: &str = "libonnxruntime.so.1.31.1";

impl Runtime {
    /// Candidate library paths, in order: `explicit`, `ORT_DYLIB_PATH`, next to the executable, then
    /// `.cache/onnxruntime/` in the working directory, the executable's directory, or up to four of
    /// their parents (a checkout's `target/…/` binaries and tests find the workspace's copy). For a
    /// GPU `device`, `.cache/onnxruntime-gpu/` (`fetch_assets.py --cuda`) comes before
    /// `.cache/onnxruntime/` at each of those places: the CPU library has no CUDA provider.
    pub fn candidates(explicit: Option<&Path>, device: Device) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
            out.push(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
            out.push(PathBuf::from(p));
        }
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf));
        if let Some(dir) = &exe_dir {
            out.push(dir.join(ORT_LIBRARY_NAME));
        }
        for start in [std::env::current_dir().ok(), exe_dir]
            .into_iter()
            .flatten()
        {
            for dir in start.ancestors().take(5) {
                let cache = dir.join(".cache");
                let gpu = (device != Device::Cpu).then(|| cache.join("onnxruntime-gpu"));
                for lib_dir in gpu.into_iter().chain([cache.join("onnxruntime")]) {
                    let p = lib_dir.join(ORT_LIBRARY_NAME);
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    /// Loads ONNX Runtime from the first candidate ([`candidates`](Self::candidates)) that exists
    /// (once per process: later calls return the first result, whatever their arguments). An
    /// explicitly configured path that does not exist is an error.
    pub fn init(explicit: Option<&Path>, device: Device) -> Result<Arc<Runtime>> {
        RUNTIME
            .get_or_init(|| {
                if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty())
                    && !p.exists()
                {
                    return Err(format!("ort_library `{}` does not exist", p.display()));
                }
                let candidates = Self::candidates(explicit, device);
                let Some(path) = candidates.iter().find(|p| p.exists()) else {
                    return Err(format!(
                        "library not found (looked at {}); run `make setup`",
                        candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                    ));
                };
                let path = path.canonicalize().unwrap_or_else(|_| path.clone());
                let builder = ort::init_from(&path)
                    .map_err(|e| format!("cannot load `{}`: {e}", path.display()))?;
                // The shared pool (after the library is loaded): one thread per core, the caller of
                // a run being one of them; idle threads sleep instead of spinning so that they take
                // no CPU from other work.
                let pool = ort::environment::GlobalThreadPoolOptions::default()
                    .with_intra_threads(cores())
                    .and_then(|o| o.with_inter_threads(1))
                    .and_then(|o| o.with_spin_control(false))
                    .map_err(|e| format!("cannot configure the shared thread pool: {e}"))?;
                let env = builder
                    .with_name("switchyard")
                    .with_global_thread_pool(pool)
                    .build()
                    .map_err(|e| format!("cannot create the environment from `{}`: {e}", path.display()))?;
                tracing::info!(library = %path.display(), api = ort::MINOR_VERSION, "ONNX Runtime loaded");
                Ok(Arc::new(Runtime { env, library: path }))
            })
            .clone()
            .map_err(Error::Runtime)
    }

    /// The runtime if it was loaded successfully before.
    pub fn loaded() -> Option<Arc<Runtime>> {
        RUNTIME.get().and_then(|r| r.as_ref().ok().cloned())
    }
}

/// CPU cores this process may use (2 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// A dense tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements in row-major order.
    pub data: TensorData,
}

/// Element storage.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit integers.
    I64(Vec<i64>),
}

impl Tensor {
    /// A float tensor.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self {
            shape,
            data: TensorData::F32(data),
        }
    }

    /// An integer tensor.
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        Self {
            shape,
            data: TensorData::I64(data),
        }
    }

    /// The float elements, or an error for another type.
    pub fn as_f32(&self) -> Result<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Ok(v),
            TensorData::I64(_) => Err(Error::Run("expected a float tensor, got int64".into())),
        }
    }

    /// The integer elements, or an error for another type.
    pub fn as_i64(&self) -> Result<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Ok(v),
            TensorData::F32(_) => Err(Error::Run("expected an int64 tensor, got float".into())),
        }
    }

    fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Requested engine.
    pub engine: EngineChoice,
    /// ONNX Runtime device.
    pub device: Device,
    /// With `device = cuda:N` and no CUDA provider: use the CPU (true) or fail (false).
    pub device_fallback: bool,
    /// The CUDA execution provider's settings (with `device = cuda:N`).
    pub cuda: CudaOptions,
    /// Intra-op threads per session (0 = engine default).
    pub threads: usize,
    /// ONNX Runtime sessions in the pool: how many requests run at once on this model.
    pub sessions: usize,
    /// ONNX Runtime on the CPU with several sessions: also keep one session on the process-wide
    /// thread pool (one thread per core). A run made while the model serves no other request (see
    /// [`Model::request`]) takes it and uses every core; runs made while requests overlap take the
    /// pool's own sessions, `threads` each (0: the cores divided among the sessions), so that
    /// concurrent requests neither idle a core nor oversubscribe the machine.
    pub adaptive_threads: bool,

    /// Graph edits applied before either engine sees the model.
    pub patches: Vec<Patch>,
    /// Explicit ONNX Runtime library path.
    pub ort_library: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            engine: EngineChoice::Auto,
            device: Device::Cpu,
            device_fallback: false,
            cuda: CudaOptions::default(),
            threads: 0,
            sessions: 1,
            adaptive_threads: false,
            patches: Vec::new(),
            ort_library: None,
        }
    }
}

type TractPlan = TypedSimplePlan;

enum Backend {
    Ort {
        sessions: Vec<Mutex<ort::session::Session>>,
        /// The session on the shared thread pool, for a request alone (`adaptive_threads`).
        alone: Option<Mutex<ort::session::Session>>,
        /// Each session's arena allocator, for memory statistics.
        allocators: Mutex<Vec<ort::memory::Allocator>>,
    },
    Tract {
        proto: Box<tract_onnx::pb::ModelProto>,
        plans: Mutex<HashMap<Vec<Vec<usize>>, Arc<TractPlan>>>,
    },
}

/// A loaded model, runnable from many threads at once.
pub struct Model {
    backend: Backend,
    /// The engine running it.
    pub engine: EngineKind,
    /// The device it runs on.
    pub device: Device,
    /// The file it came from.
    pub path: PathBuf,
    /// Input names in graph order.
    pub inputs: Vec<String>,
    /// Input names, shapes and types in graph order, as the file declares them.
    pub input_info: Vec<InputInfo>,
    /// Output names in graph order.
    pub outputs: Vec<String>,
    /// Model metadata (`metadata_props`).
    pub metadata: HashMap<String, String>,
    /// How long loading took, in seconds.
    pub load_seconds: f64,
    /// Requests being served on the model (see [`Model::request`]).
    requests: std::sync::atomic::AtomicUsize,
    /// `LoadOptions::adaptive_threads` as asked.
    adaptive_threads: bool,
    /// Runs made on the all-cores session.
    alone_runs: std::sync::atomic::AtomicU64,
    /// Callers waiting for a session, every one busy (more requests than sessions, as with
    /// `cuda_sessions` on a GPU): woken when a run ends, so a caller takes the first session freed.
    freed: (Mutex<()>, std::sync::Condvar),
    /// Callers in [`Model::first_free`]'s wait: a run's end notifies only when there are some.
    waiters: std::sync::atomic::AtomicUsize,
}

/// Marks one request in progress on a [`Model`] while it lives; from [`Model::request`].
#[must_use = "the request counts only while the guard lives"]
pub struct RequestGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A model input as declared in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputInfo {
    /// Name.
    pub name: String,
    /// Dimensions; `None` for symbolic or unknown ones.
    pub shape: Vec<Option<usize>>,
    /// Element type is int64 (else float32 or other).
    pub is_i64: bool,
}

/// Most distinct input shapes a tract model keeps a plan for.
const TRACT_PLAN_CACHE: usize = 8;

/// What tract may run on this CPU, set once before tract first probes it (its kernel choice is
/// made then, for the life of the process). tract 0.23.9's AMX int8 matrix kernel (Sapphire Rapids
/// and later Xeons) brings the process down now and then: SIGSEGV in its `tileloadd`, in 7 of 24
/// runs of the ASR tests on a 2-vCPU Sapphire Rapids VM, 0 of 24 with the kernel out. It is taken
/// out of tract's kernel pool, as `TRACT_CPU_ISA=-amx-int8` does; the AVX-512 VNNI kernels it would
/// have replaced compute the same integers. A `TRACT_CPU_ISA` in the environment still wins over
/// this default, for a deployment that wants another set.
fn tract_defaults() {
    #[cfg(target_arch = "x86_64")]
    {
        static DEFAULTS: std::sync::Once = std::sync::Once::new();
        DEFAULTS.call_once(|| {
            use tract_onnx::tract_hir::tract_core::knobs;
            if let Err(e) = knobs::set_config_global("TRACT_CPU_ISA", "-amx-int8") {
                tracing::warn!(error = %e, "cannot take tract's AMX int8 kernel out");
            }
        });
    }
}

impl Model {
    /// Loads a model file.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model> {
        let started = Instant::now();
        tract_defaults();
        let load_err = |message: String| Error::Load {
            path: path.display().to_string(),
            message,
        };
        let mut proto = tract_onnx::onnx()
            .proto_model_for_path(path)
            .map_err(|e| load_err(format!("{e:#}")))?;
        for p in &opts.patches {
            p.apply(&mut proto);
        }
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| load_err("the file has no graph".into()))?;
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<String> = graph
            .input
            .iter()
            .map(|i| i.name.clone())
            .filter(|n| !initializers.contains(n.as_str()))
            .collect();
        let input_info: Vec<InputInfo> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .map(input_info_of)
            .collect();
        let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        let metadata = proto
            .metadata_props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();

        let engine = match opts.engine {
            EngineChoice::Tract => EngineKind::Tract,
            EngineChoice::Ort => {
                Runtime::init(opts.ort_library.as_deref(), opts.device)?;
                EngineKind::Ort
            }
            EngineChoice::Auto => match Runtime::init(opts.ort_library.as_deref(), opts.device) {
                Ok(_) => EngineKind::Ort,
                Err(e) => {
                    tracing::warn!(error = %e, model = %path.display(), "ONNX Runtime unavailable; using tract");
                    EngineKind::Tract
                }
            },
        };
        let (backend, device) = match engine {
            EngineKind::Ort => {
                let rt = Runtime::init(opts.ort_library.as_deref(), opts.device)?;
                // On a CPU whose uint8 × int8 products saturate, the int8 weights run as uint8
                // (Patch::ExactInt8): the model's own results, not a CPU-dependent approximation.
                let for_device = |device: Device| {
                    let exact = device == Device::Cpu
                        && int8_products_saturate()
                        && !opts.patches.contains(&Patch::ExactInt8);
                    let rewritten = if exact {
                        let mut p = proto.clone();
                        let n = p.graph.as_mut().map_or(0, patch::exact_int8);
                        (n > 0).then(|| {
                            tracing::info!(
                                model = %path.display(), nodes = n,
                                "this CPU has no VNNI: int8 weights run as uint8 in ONNX Runtime, whose int8 products would saturate"
                            );
                            prost::Message::encode_to_vec(&p)
                        })
                    } else {
                        None
                    };
                    rewritten.unwrap_or_else(|| prost::Message::encode_to_vec(&proto))
                };
                let bytes = for_device(opts.device);
                let cpu_bytes = || for_device(Device::Cpu);
                let mut device = opts.device;
                let adaptive = opts.adaptive_threads && opts.sessions > 1 && cores() > 1;
                let narrow = LoadOptions {
                    threads: match opts.threads {
                        0 if adaptive => (cores() / opts.sessions).max(1),
                        n => n,
                    },
                    ..opts.clone()
                };
                let count = match device {
                    Device::Cuda(_) => opts.sessions.min(opts.cuda.max_sessions),
                    Device::Cpu => opts.sessions,
                };
                let mut sessions = Vec::new();
                for _ in 0..count.max(1) {
                    let (session, used) =
                        ort_session(&rt, &bytes, &cpu_bytes, &narrow, device, false)
                            .map_err(load_err)?;
                    device = used;
                    sessions.push(Mutex::new(session));
                }
                let alone = match device {
                    Device::Cpu if adaptive => Some(Mutex::new(
                        ort_session(&rt, &bytes, &cpu_bytes, opts, device, true)
                            .map_err(load_err)?
                            .0,
                    )),
                    _ => None,
                };
                let cuda = match device {
                    Device::Cuda(id) => Some(id),
                    Device::Cpu => None,
                };
                let allocators = sessions
                    .iter()
                    .chain(&alone)
                    .filter_map(|s| s.lock().ok())
                    .filter_map(|s| memory::arena_allocator(&s, cuda))
                    .collect();
                (
                    Backend::Ort {
                        sessions,
                        alone,
                        allocators: Mutex::new(allocators),
                    },
                    device,
                )
            }
            EngineKind::Tract => {
                tracing::debug!(
                    isa = ?tract_onnx::tract_hir::tract_core::tract_linalg::isa::native(),
                    "tract's instruction sets"
                );
                if opts.device != Device::Cpu && !opts.device_fallback {
                    return Err(load_err(format!(
                        "tract runs on the CPU only, not {}",
                        opts.device
                    )));
                }
                (
                    Backend::Tract {
                        proto: Box::new(proto),
                        plans: Mutex::new(HashMap::new()),
                    },
                    Device::Cpu,
                )
            }
        };
        Ok(Model {
            backend,
            engine,
            device,
            path: path.to_path_buf(),
            inputs,
            input_info,
            outputs,
            metadata,
            load_seconds: started.elapsed().as_secs_f64(),
            requests: std::sync::atomic::AtomicUsize::new(0),
            adaptive_threads: opts.adaptive_threads,
            alone_runs: std::sync::atomic::AtomicU64::new(0),
            freed: Default::default(),
            waiters: Default::default(),
        })
    }

    /// Marks a request in progress on the model until the guard is dropped: the whole request
    /// (decoding, inference, encoding), so that with `adaptive_threads` a run knows whether other
    /// requests overlap it, even when they are not inferring at that moment.
    pub fn request(&self) -> RequestGuard<'_> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RequestGuard(&self.requests)
    }

    /// With [`LoadOptions::adaptive_threads`], whether the model serves one request at most now (see
    /// [`request`](Self::request)): that request may use every core, for its inference (the
    /// all-cores session) and outside the model too (e.g. to encode its result).
    pub fn alone(&self) -> bool {
        self.adaptive_threads && self.requests.load(std::sync::atomic::Ordering::Relaxed) <= 1
    }

    /// How many runs so far took the all-cores session of `adaptive_threads` (a request alone).
    pub fn alone_runs(&self) -> u64 {
        self.alone_runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many runs of one request may go at once on separate cores: with `adaptive_threads`, a
    /// request alone on an ONNX Runtime model may use each of its one-core sessions in parallel
    /// ([`run_lane`](Self::run_lane)), which for many small independent runs (tiles) beats one
    /// all-cores session running them one after another; on tract (one thread a run) one lane per
    /// core; otherwise 1.
    pub fn lanes(&self) -> usize {
        match &self.backend {
            Backend::Ort {
                sessions,
                alone: Some(_),
                ..
            } if self.alone() => sessions.len(),
            Backend::Tract { .. } if self.alone() => cores(),
            _ => 1,
        }
    }

    /// [`run`](Self::run) on lane `lane` of [`lanes`](Self::lanes): on ONNX Runtime the lane's own
    /// session, so that runs on different lanes go at once; on tract, whose runs share nothing but
    /// the plan, [`run`](Self::run).
    pub fn run_lane(&self, lane: usize, inputs: Vec<(&str, Tensor)>) -> Result<Vec<Tensor>> {
        match &self.backend {
            Backend::Ort { sessions, .. } if sessions.len() > 1 => {
                check_inputs(&inputs)?;
                let session = &sessions[lane % sessions.len()];
                let guard = session
                    .lock()
                    .map_err(|_| Error::Run("session lock poisoned".into()))?;
                let out = self.run_ort_on(guard, inputs);
                self.session_freed();
                out
            }
            _ => self.run(inputs),
        }
    }

    /// Runs the model on named inputs; returns the outputs in graph order. Blocking.
    pub fn run(&self, inputs: Vec<(&str, Tensor)>) -> Result<Vec<Tensor>> {
        check_inputs(&inputs)?;
        match &self.backend {
            Backend::Ort {
                sessions, alone, ..
            } => self.run_ort(sessions, alone.as_ref(), inputs),
            Backend::Tract { proto, plans } => self.run_tract(proto, plans, inputs),
        }
    }

    fn run_ort(
        &self,
        sessions: &[Mutex<ort::session::Session>],
        alone: Option<&Mutex<ort::session::Session>>,
        inputs: Vec<(&str, Tensor)>,
    ) -> Result<Vec<Tensor>> {
        // Alone: every core. Else a free session if there is one, else the first one freed.
        let solo = alone
            .filter(|_| self.alone())
            .and_then(|s| s.try_lock().ok());
        if solo.is_some() {
            self.alone_runs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let guard = match solo {
            Some(g) => g,
            None => self.first_free(sessions)?,
        };
        let out = self.run_ort_on(guard, inputs);
        self.session_freed();
        out
    }

    /// A free session, waiting for one when all are busy.
    fn first_free<'s>(
        &self,
        sessions: &'s [Mutex<ort::session::Session>],
    ) -> Result<std::sync::MutexGuard<'s, ort::session::Session>> {
        let poisoned = || Error::Run("session lock poisoned".into());
        let try_any = || {
            let mut broken = 0;
            for s in sessions {
                match s.try_lock() {
                    Ok(g) => return Ok(Some(g)),
                    Err(std::sync::TryLockError::WouldBlock) => {}
                    Err(std::sync::TryLockError::Poisoned(_)) => broken += 1,
                }
            }
            if broken == sessions.len() {
                Err(poisoned())
            } else {
                Ok(None)
            }
        };
        if let Some(g) = try_any()? {
            return Ok(g);
        }
        use std::sync::atomic::{Ordering::SeqCst, fence};
        // Counted before the sessions are tried again (with the fence in `session_freed`, a run
        // that ends after this either sees the count or is seen by the try).
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        self.waiters.fetch_add(1, SeqCst);
        let _counted = Waiting(&self.waiters);
        fence(SeqCst);
        let (lock, freed) = &self.freed;
        let mut waiting = lock.lock().map_err(|_| poisoned())?;
        loop {
            // Checked under the lock that a run's end takes to notify: no wake-up is lost.
            if let Some(g) = try_any()? {
                return Ok(g);
            }
            // The timeout is a backstop for a session freed without a notification.
            waiting = freed
                .wait_timeout(waiting, std::time::Duration::from_millis(20))
                .map_err(|_| poisoned())?
                .0;
        }
    }

    /// Wakes one caller waiting in [`first_free`](Self::first_free); after a run's session is
    /// unlocked.
    fn session_freed(&self) {
        use std::sync::atomic::{Ordering::SeqCst, fence};
        // Nothing to do on the common path, where no caller waits: no lock taken.
        fence(SeqCst);
        if self.waiters.load(SeqCst) == 0 {
            return;
        }
        if let Ok(_waiting) = self.freed.0.lock() {
            self.freed.1.notify_one();
        }
    }

    fn run_ort_on(
        &self,
        mut session: std::sync::MutexGuard<'_, ort::session::Session>,
        inputs: Vec<(&str, Tensor)>,
    ) -> Result<Vec<Tensor>> {
        let run_err = |e: ort::Error| Error::Run(e.to_string());
        // Views of the callers' buffers (no copy), so that each float buffer can go back to
        // [`spare::FLOATS`] for the next request's pre-processing once the run is over.
        let mut values: Vec<(
            std::borrow::Cow<'_, str>,
            ort::session::SessionInputValue<'_>,
        )> = Vec::with_capacity(inputs.len());
        for (name, t) in &inputs {
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            let value: ort::value::DynValueRef<'_> = match &t.data {
                TensorData::F32(v) => ort::value::TensorRef::from_array_view((shape, v.as_slice()))
                    .map_err(run_err)?
                    .into_dyn(),
                TensorData::I64(v) => ort::value::TensorRef::from_array_view((shape, v.as_slice()))
                    .map_err(run_err)?
                    .into_dyn(),
            };
            values.push((name.to_string().into(), value.into()));
        }
        let outputs = session.run(values).map_err(run_err)?;
        let mut out = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let v = &outputs[name.as_str()];
            if let Ok((shape, data)) = v.try_extract_tensor::<f32>() {
                // Into a spare when the caller gives its outputs back (see [`spare::recycle`]).
                let mut copy = spare::FLOATS.empty(data.len());
                copy.extend_from_slice(data);
                out.push(Tensor::f32(
                    shape.iter().map(|&d| d as usize).collect(),
                    copy,
                ));
            } else {
                let (shape, data) = v.try_extract_tensor::<i64>().map_err(run_err)?;
                out.push(Tensor::i64(
                    shape.iter().map(|&d| d as usize).collect(),
                    data.to_vec(),
                ));
            }
        }
        drop(outputs);
        spare::recycle(inputs.into_iter().map(|(_, t)| t));
        Ok(out)
    }

    fn run_tract(
        &self,
        proto: &tract_onnx::pb::ModelProto,
        plans: &Mutex<HashMap<Vec<Vec<usize>>, Arc<TractPlan>>>,
        inputs: Vec<(&str, Tensor)>,
    ) -> Result<Vec<Tensor>> {
        let run_err = |e: tract_onnx::prelude::TractError| Error::Run(format!("{e:#}"));
        // Inputs in graph order.
        let mut ordered = Vec::with_capacity(self.inputs.len());
        let mut by_name: HashMap<&str, Tensor> = inputs.into_iter().collect();
        for name in &self.inputs {
            let t = by_name
                .remove(name.as_str())
                .ok_or_else(|| Error::Run(format!("missing input `{name}`")))?;
            ordered.push(t);
        }
        let key: Vec<Vec<usize>> = ordered.iter().map(|t| t.shape.clone()).collect();
        let plan = {
            let mut cache = plans
                .lock()
                .map_err(|_| Error::Run("plan cache poisoned".into()))?;
            match cache.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let plan = self.tract_plan(proto, &ordered)?;
                    if cache.len() >= TRACT_PLAN_CACHE {
                        cache.clear();
                    }
                    cache.insert(key, plan.clone());
                    plan
                }
            }
        };
        let tvalues: tract_onnx::prelude::TVec<TValue> = ordered
            .iter()
            .map(|t| -> Result<TValue> {
                let tensor = match &t.data {
                    TensorData::F32(v) => tract_onnx::prelude::Tensor::from_shape(&t.shape, v),
                    TensorData::I64(v) => tract_onnx::prelude::Tensor::from_shape(&t.shape, v),
                }
                .map_err(run_err)?;
                Ok(tensor.into_tvalue())
            })
            .collect::<Result<_>>()?;
        spare::recycle(ordered);
        let outputs = plan.run(tvalues).map_err(run_err)?;
        outputs
            .into_iter()
            .map(|v| {
                let shape = v.shape().to_vec();
                let view = v.try_as_plain_ram().map_err(run_err)?;
                match v.datum_type() {
                    DatumType::F32 => Ok(Tensor::f32(
                        shape,
                        view.as_slice::<f32>().map_err(run_err)?.to_vec(),
                    )),
                    DatumType::I64 => Ok(Tensor::i64(
                        shape,
                        view.as_slice::<i64>().map_err(run_err)?.to_vec(),
                    )),
                    other => Err(Error::Run(format!("unsupported output type {other:?}"))),
                }
            })
            .collect()
    }

    fn tract_plan(
        &self,
        proto: &tract_onnx::pb::ModelProto,
        inputs: &[Tensor],
    ) -> Result<Arc<TractPlan>> {
        let err = |e: tract_onnx::prelude::TractError| Error::Load {
            path: self.path.display().to_string(),
            message: format!("{e:#}"),
        };
        let mut model = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .with_ignore_value_info(true)
            .model_for_proto_model(proto)
            .map_err(err)?;
        for (i, t) in inputs.iter().enumerate() {
            let dt = match t.data {
                TensorData::F32(_) => f32::datum_type(),
                TensorData::I64(_) => i64::datum_type(),
            };
            model
                .set_input_fact(i, InferenceFact::dt_shape(dt, tvec_of(&t.shape)))
                .map_err(err)?;
        }
        for o in 0..model.outputs.len() {
            model
                .set_output_fact(o, InferenceFact::default())
                .map_err(err)?;
        }
        model
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)
    }

    /// Memory the model's ONNX Runtime sessions hold on its device, from their arena allocators
    /// (`None` for tract, or when ONNX Runtime reports nothing).
    pub fn memory(&self) -> Option<MemoryStats> {
        match &self.backend {
            Backend::Ort { allocators, .. } => memory::allocators_memory(&allocators.lock().ok()?),
            Backend::Tract { .. } => None,
        }
    }

    /// Whether the model keeps a session for a request alone, one that uses every core
    /// ([`LoadOptions::adaptive_threads`] on the CPU with several sessions), beside its pool.
    pub fn has_alone_session(&self) -> bool {
        matches!(&self.backend, Backend::Ort { alone: Some(_), .. })
    }

    /// Number of requests that can run at once without waiting (ONNX Runtime sessions; tract: any).
    pub fn parallelism(&self) -> usize {
        match &self.backend {
            Backend::Ort { sessions, .. } => sessions.len(),
            Backend::Tract { .. } => usize::MAX,
        }
    }
}

fn input_info_of(i: &tract_onnx::pb::ValueInfoProto) -> InputInfo {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    use tract_onnx::pb::type_proto::Value as TypeValue;
    let mut shape = Vec::new();
    let mut is_i64 = false;
    if let Some(TypeValue::TensorType(t)) = i.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        is_i64 = t.elem_type == 7;
        if let Some(s) = &t.shape {
            shape = s
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(Value::DimValue(v)) if v > 0 => Some(v as usize),
                    _ => None,
                })
                .collect();
        }
    }
    InputInfo {
        name: i.name.clone(),
        shape,
        is_i64,
    }
}

fn tvec_of(shape: &[usize]) -> tract_onnx::prelude::TVec<usize> {
    let mut v = tvec![];
    v.extend_from_slice(shape);
    v
}

/// Every input holds as many elements as its shape says.
fn check_inputs(inputs: &[(&str, Tensor)]) -> Result<()> {
    for (name, t) in inputs {
        if t.len() != t.shape.iter().product::<usize>() {
            return Err(Error::Run(format!(
                "input `{name}`: {} elements for shape {:?}",
                t.len(),
                t.shape
            )));
        }
    }
    Ok(())
}

/// Builds a session of the model `bytes` on `device`, on its own thread pool or (`shared_pool`) on
/// the process-wide one; `cpu_bytes` gives the model for the CPU when the GPU is not available and
/// `device_fallback` allows the CPU.
fn ort_session(
    rt: &Runtime,
    bytes: &[u8],
    cpu_bytes: &dyn Fn() -> Vec<u8>,
    opts: &LoadOptions,
    device: Device,
    shared_pool: bool,
) -> std::result::Result<(ort::session::Session, Device), String> {
    let build = |device: Device,
                 bytes: &[u8]|
     -> std::result::Result<ort::session::Session, String> {
        let mut b = ort::session::Session::builder(&rt.env).map_err(|e| e.to_string())?;
        b = b
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
            .map_err(|e| e.to_string())?;
        if !shared_pool {
            b = b
                .with_independent_thread_pool()
                .map_err(|e| e.to_string())?;
            if opts.threads > 0 {
                b = b
                    .with_intra_threads(opts.threads)
                    .map_err(|e| e.to_string())?;
            }
        }
        if let Device::Cuda(id) = device {
            b = b
                .with_execution_providers([ort::ep::CUDA::default()
                    .with_device_id(id)
                    .with_conv_algorithm_search(match opts.cuda.conv_search {
                        ConvSearch::Heuristic => ort::ep::cuda::ConvAlgorithmSearch::Heuristic,
                        ConvSearch::Exhaustive => ort::ep::cuda::ConvAlgorithmSearch::Exhaustive,
                        ConvSearch::Default => ort::ep::cuda::ConvAlgorithmSearch::Default,
                    })
                    .build()
                    .error_on_failure()])
                .map_err(|e| format!("CUDA execution provider unavailable on cuda:{id}: {e}"))?;
        }
        b.commit_from_memory(bytes).map_err(|e| e.to_string())
    };
    match build(device, bytes) {
        Ok(s) => Ok((s, device)),
        Err(e) if device != Device::Cpu && opts.device_fallback => {
            tracing::warn!(error = %e, "falling back to the CPU (device_fallback = true)");
            build(Device::Cpu, &cpu_bytes()).map(|s| (s, Device::Cpu))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_waiting_for_a_session_takes_the_first_one_freed() {
        // Two sessions, both busy; the second is freed first. The waiting caller must run on it
        // while the first stays busy (it used to wait for the first session, whichever ended).
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/blazeface/face_detection_front_128x128.onnx");
        let opts = LoadOptions {
            engine: EngineChoice::Ort,
            sessions: 2,
            threads: 1,
            ..Default::default()
        };
        let model = Model::load(&path, &opts).expect("load");
        let Backend::Ort { sessions, .. } = &model.backend else {
            panic!("not ONNX Runtime");
        };
        assert_eq!(sessions.len(), 2);
        let first = sessions[0].lock().expect("first session");
        let second = sessions[1].lock().expect("second session");
        let (tx, rx) = std::sync::mpsc::channel();
        let got = std::thread::scope(|s| {
            s.spawn(|| {
                let input = Tensor::f32(vec![1, 128, 128, 3], vec![0.0; 128 * 128 * 3]);
                let _ = tx.send(model.run(vec![(model.inputs[0].as_str(), input)]).is_ok());
            });
            // Let the caller find both busy and wait.
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(second);
            let got = rx.recv_timeout(std::time::Duration::from_secs(10));
            // Freed whatever happened, so that the caller can end and the scope with it.
            drop(first);
            got
        });
        assert_eq!(
            got,
            Ok(true),
            "the caller did not run on the session freed first"
        );
    }
}
