//! Silero VAD (PyPI `silero-vad`): speech probability per 32 ms window, and an online segmenter.
//!
//! Two layouts of the model are understood, by their input names: the standard one (`input`
//! `[1, 576]`, `state` `[2, 1, 128]`, `sr` scalar) and the If-free `silero_vad_16k_sequence.onnx`
//! (`input` `[1, 576]`, LSTM `h`/`c` `[1, 1, 128]`), which tract can run too. Each call sees 512 new
//! samples after the 64 previous ones (context).

use std::path::Path;
use std::sync::Arc;

use switchyard_infer::{LoadOptions, Model, Tensor};

/// Samples per VAD window at 16 kHz.
pub const WINDOW: usize = 512;
const CONTEXT: usize = 64;

/// Segmenter settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VadOptions {
    /// Probability above which a window is speech.
    pub threshold: f32,
    /// Silence that ends a segment, seconds.
    pub min_silence_s: f64,
    /// Shorter speech is ignored, seconds.
    pub min_speech_s: f64,
    /// Audio kept before and after speech, seconds.
    pub pad_s: f64,
    /// Longer speech is cut here, seconds.
    pub max_speech_s: f64,
}

impl Default for VadOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_silence_s: 0.5,
            min_speech_s: 0.25,
            pad_s: 0.25,
            max_speech_s: 30.0,
        }
    }
}

enum Layout {
    Standard,
    Lstm,
}

/// A loaded Silero VAD model.
pub struct VadModel {
    model: Model,
    layout: Layout,
}

impl std::fmt::Debug for VadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VadModel")
            .field("path", &self.model.path)
            .finish()
    }
}

impl VadModel {
    /// Memory held by the VAD's ONNX Runtime session (`None` on tract).
    pub fn memory(&self) -> Option<switchyard_infer::MemoryStats> {
        self.model.memory()
    }

    /// The device it runs on (always the CPU: see [`VadModel::load`]).
    pub fn device(&self) -> switchyard_infer::Device {
        self.model.device
    }

    /// Loads a Silero model file.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<VadModel, switchyard_infer::Error> {
        // One 32 ms window a call, a few kB of weights: on a GPU each call would cost more in
        // kernel launches and copies than its arithmetic costs a CPU core, so it runs on the CPU.
        let opts = LoadOptions {
            threads: 1,
            device: switchyard_infer::Device::Cpu,
            ..opts.clone()
        };
        let model = Model::load(path, &opts)?;
        let has = |n: &str| model.inputs.iter().any(|i| i == n);
        let layout = if has("state") {
            Layout::Standard
        } else if has("h") && has("c") {
            Layout::Lstm
        } else {
            return Err(switchyard_infer::Error::Load {
                path: path.display().to_string(),
                message: "not a Silero VAD model (inputs `state`, or `h` and `c`)".into(),
            });
        };
        let vad = VadModel { model, layout };
        // Warm-up, and a check that it runs.
        vad.state().prob(&vad, &[0.0; WINDOW])?;
        Ok(vad)
    }

    /// The engine it runs on.
    pub fn engine(&self) -> switchyard_infer::EngineKind {
        self.model.engine
    }

    fn state(&self) -> VadState {
        VadState {
            context: vec![0.0; CONTEXT],
            state: match self.layout {
                Layout::Standard => vec![vec![0.0; 2 * 128]],
                Layout::Lstm => vec![vec![0.0; 128], vec![0.0; 128]],
            },
        }
    }
}

struct VadState {
    context: Vec<f32>,
    state: Vec<Vec<f32>>,
}

impl VadState {
    fn prob(&mut self, vad: &VadModel, window: &[f32]) -> Result<f32, switchyard_infer::Error> {
        let mut input = Vec::with_capacity(CONTEXT + WINDOW);
        input.extend_from_slice(&self.context);
        input.extend_from_slice(window);
        self.context
            .copy_from_slice(&input[input.len() - CONTEXT..]);
        let x = Tensor::f32(vec![1, CONTEXT + WINDOW], input);
        let out = match vad.layout {
            Layout::Standard => vad.model.run(vec![
                ("input", x),
                ("state", Tensor::f32(vec![2, 1, 128], self.state[0].clone())),
                ("sr", Tensor::i64(vec![], vec![16_000])),
            ])?,
            Layout::Lstm => vad.model.run(vec![
                ("input", x),
                ("h", Tensor::f32(vec![1, 1, 128], self.state[0].clone())),
                ("c", Tensor::f32(vec![1, 1, 128], self.state[1].clone())),
            ])?,
        };
        let mut it = out.into_iter();
        let p = it
            .next()
            .and_then(|t| t.as_f32().ok().and_then(|v| v.first().copied()))
            .unwrap_or(0.0);
        for s in self.state.iter_mut() {
            if let Some(t) = it.next()
                && let Ok(v) = t.as_f32()
                && v.len() == s.len()
            {
                s.copy_from_slice(v);
            }
        }
        Ok(p)
    }
}

/// What the segmenter saw, in samples since the start of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum VadEvent {
    /// Speech starts at this sample (padding included).
    Start(usize),
    /// Speech ends at this sample (padding included).
    End(usize),
}

/// Online speech segmenter over a [`VadModel`].
pub struct Segmenter {
    vad: Arc<VadModel>,
    state: VadState,
    opts: VadOptions,
    pending: Vec<f32>,
    /// Samples consumed by windows so far.
    pos: usize,
    triggered: bool,
    /// Start of the current candidate/speech run, samples.
    speech_start: usize,
    /// First silent window while triggered.
    silence_start: Option<usize>,
    /// Speech windows seen in the current run.
    emitted_start: bool,
}

impl Segmenter {
    /// A new segmenter.
    pub fn new(vad: Arc<VadModel>, opts: VadOptions) -> Self {
        Self {
            state: vad.state(),
            vad,
            opts,
            pending: Vec::new(),
            pos: 0,
            triggered: false,
            speech_start: 0,
            silence_start: None,
            emitted_start: false,
        }
    }

    fn samples(&self, s: f64) -> usize {
        (s * 16_000.0) as usize
    }

    /// Adds 16 kHz samples; returns the events they complete.
    pub fn accept(&mut self, samples: &[f32]) -> Result<Vec<VadEvent>, switchyard_infer::Error> {
        self.pending.extend_from_slice(samples);
        let mut events = Vec::new();
        let mut at = 0;
        while self.pending.len() - at >= WINDOW {
            let p = self.state.prob(&self.vad, &self.pending[at..at + WINDOW])?;
            at += WINDOW;
            self.step(p, &mut events);
            self.pos += WINDOW;
        }
        self.pending.drain(..at);
        Ok(events)
    }

    /// Samples consumed by VAD windows so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The options.
    pub fn options(&self) -> &VadOptions {
        &self.opts
    }

    /// Ends the stream: closes an open segment at the end of the audio.
    pub fn finish(&mut self, total: usize) -> Vec<VadEvent> {
        let mut events = Vec::new();
        if self.triggered && self.emitted_start {
            events.push(VadEvent::End(total));
        }
        self.triggered = false;
        self.emitted_start = false;
        events
    }

    fn step(&mut self, p: f32, events: &mut Vec<VadEvent>) {
        let pad = self.samples(self.opts.pad_s);
        let neg = self.opts.threshold - 0.15;
        let window_start = self.pos;
        let window_end = self.pos + WINDOW;
        if !self.triggered {
            if p >= self.opts.threshold {
                self.triggered = true;
                self.emitted_start = false;
                self.speech_start = window_start;
                self.silence_start = None;
            } else {
                return;
            }
        }
        if p >= self.opts.threshold {
            self.silence_start = None;
        } else if p < neg && self.silence_start.is_none() {
            self.silence_start = Some(window_start);
        }
        if !self.emitted_start
            && window_end - self.speech_start >= self.samples(self.opts.min_speech_s)
        {
            self.emitted_start = true;
            events.push(VadEvent::Start(self.speech_start.saturating_sub(pad)));
        }
        let long = window_end - self.speech_start >= self.samples(self.opts.max_speech_s);
        if let Some(s) = self.silence_start
            && window_end - s >= self.samples(self.opts.min_silence_s)
        {
            if self.emitted_start {
                events.push(VadEvent::End((s + pad).min(window_end)));
            }
            self.triggered = false;
            self.silence_start = None;
        } else if long && self.emitted_start {
            // Cut an endless run; the next window starts a new one.
            events.push(VadEvent::End(window_end));
            self.triggered = false;
            self.silence_start = None;
        }
    }
}
