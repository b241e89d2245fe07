//! Streaming transducer (RNN-T) models in the sherpa-onnx layout: `encoder`, `decoder`, `joiner`
//! ONNX files and `tokens.txt`, decoded by greedy or modified beam search ([`Decoding`]).
//!
//! Nothing about one particular model is hard-coded: the window and shift come from the encoder's
//! metadata (`T`, `decode_chunk_len`), the cached states are every encoder input other than the
//! features (with their shapes and types from the graph; outputs `new_<name>` or, failing that, the
//! outputs after `encoder_out` in input order), the decoder context size from its `context_size`
//! metadata, the feature dimension from the encoder input, the frame rate of the encoder output from
//! a warm-up run.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use switchyard_infer::{LoadOptions, Model, Tensor, TensorData};

use crate::fbank::{FbankComputer, FbankOptions, OnlineFbank};

/// Errors loading or running a transducer.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    /// A file is missing or ambiguous, or the model does not have the expected layout.
    #[error("{0}")]
    Layout(String),
    /// The inference engine failed.
    #[error(transparent)]
    Infer(#[from] switchyard_infer::Error),
}

type Result<T> = std::result::Result<T, AsrError>;

/// The files of a model directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFiles {
    /// Encoder ONNX file.
    pub encoder: PathBuf,
    /// Decoder ONNX file.
    pub decoder: PathBuf,
    /// Joiner ONNX file.
    pub joiner: PathBuf,
    /// `tokens.txt`.
    pub tokens: PathBuf,
}

impl ModelFiles {
    /// Finds the files in `dir`: `ROLE.onnx`, else `ROLE.int8.onnx`, else the one file whose name
    /// starts with `ROLE` and ends in `.onnx` (sherpa-onnx release names such as
    /// `encoder-epoch-99-avg-1-chunk-16-left-128.int8.onnx`; with both an fp32 and an int8 file, the
    /// int8 one).
    pub fn find(dir: &Path) -> Result<ModelFiles> {
        let listing: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| AsrError::Layout(format!("model_dir {}: {e}", dir.display())))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let pick = |role: &str| -> Result<PathBuf> {
            for exact in [format!("{role}.onnx"), format!("{role}.int8.onnx")] {
                if listing.contains(&exact) {
                    return Ok(dir.join(exact));
                }
            }
            let mut found: Vec<&String> = listing
                .iter()
                .filter(|n| n.starts_with(role) && n.ends_with(".onnx"))
                .collect();
            if found.len() > 1 {
                found.retain(|n| n.ends_with(".int8.onnx"));
            }
            match found.as_slice() {
                [one] => Ok(dir.join(one)),
                [] => Err(AsrError::Layout(format!(
                    "model_dir {}: no {role}.onnx",
                    dir.display()
                ))),
                many => Err(AsrError::Layout(format!(
                    "model_dir {}: several {role} files ({}); name the one to use {role}.onnx",
                    dir.display(),
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        };
        let tokens = dir.join("tokens.txt");
        if !tokens.is_file() {
            return Err(AsrError::Layout(format!(
                "model_dir {}: no tokens.txt",
                dir.display()
            )));
        }
        Ok(ModelFiles {
            encoder: pick("encoder")?,
            decoder: pick("decoder")?,
            joiner: pick("joiner")?,
            tokens,
        })
    }
}

#[derive(Debug, Clone)]
struct StateSpec {
    name: String,
    shape: Vec<usize>,
    is_i64: bool,
    /// Index of the encoder output that carries the state's next value.
    output: usize,
}

/// What the model's metadata and graphs say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct TransducerInfo {
    /// `model_type` metadata of the encoder (e.g. `zipformer2`), if any.
    pub model_type: Option<String>,
    /// Feature frames per encoder call (`T`).
    pub window: usize,
    /// Feature frames the window advances per call (`decode_chunk_len`).
    pub shift: usize,
    /// Encoder output frames per call.
    pub out_frames: usize,
    /// Feature dimension (mel bins).
    pub feat_dim: usize,
    /// Decoder context size.
    pub context: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Number of cached state tensors.
    pub states: usize,
    /// Seconds of audio per encoder output frame.
    pub frame_seconds: f64,
}

/// A loaded transducer, shared by all its streams.
pub struct Transducer {
    encoder: Model,
    decoder: Model,
    joiner: Model,
    tokens: Vec<String>,
    blank: i64,
    unk: Option<i64>,
    x_name: String,
    enc_out_index: usize,
    states: Vec<StateSpec>,
    info: TransducerInfo,
    fbank: Arc<FbankComputer>,
    /// The directory it came from.
    pub files: ModelFiles,
}

impl std::fmt::Debug for Transducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transducer")
            .field("files", &self.files)
            .field("info", &self.info)
            .finish()
    }
}

fn meta_usize(model: &Model, key: &str) -> Option<usize> {
    model
        .metadata
        .get(key)
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
}

/// Reads `tokens.txt`: `<symbol> <id>` per line.
pub fn read_tokens(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AsrError::Layout(format!("{}: {e}", path.display())))?;
    let mut tokens: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (sym, id) = match line.rsplit_once(char::is_whitespace) {
            Some((s, i)) => (s.to_string(), i.trim().parse::<usize>().ok()),
            None => (line.to_string(), None),
        };
        let id = id.ok_or_else(|| {
            AsrError::Layout(format!(
                "{}:{}: expected `<symbol> <id>`",
                path.display(),
                n + 1
            ))
        })?;
        if id >= tokens.len() {
            tokens.resize(id + 1, String::new());
        }
        tokens[id] = sym;
    }
    if tokens.is_empty() {
        return Err(AsrError::Layout(format!("{}: no tokens", path.display())));
    }
    Ok(tokens)
}

impl Transducer {
    /// Loads the model in `dir` and runs it once on silence (warm-up, and the frame rate).
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Transducer> {
        let files = ModelFiles::find(dir)?;
        let encoder = Model::load(&files.encoder, opts)?;
        // Decoder and joiner calls are tiny (one per emitted token or frame, a few kB of
        // arithmetic): one thread each avoids spinning thread pools, and on a GPU they stay on the
        // CPU, where a call costs less than a kernel launch and two copies would. The encoder,
        // nearly all of the arithmetic, runs on the configured device.
        let small = LoadOptions {
            threads: 1,
            device: switchyard_infer::Device::Cpu,
            ..opts.clone()
        };
        let decoder = Model::load(&files.decoder, &small)?;
        let joiner = Model::load(&files.joiner, &small)?;
        let tokens = read_tokens(&files.tokens)?;
        let encoder_path = files.encoder.display().to_string();
        let layout = |m: String| AsrError::Layout(format!("{encoder_path}: {m}"));

        let x_index = encoder
            .input_info
            .iter()
            .position(|i| i.name == "x")
            .unwrap_or(0);
        let x = encoder.input_info[x_index].clone();
        let (window_from_shape, feat_dim) = match x.shape.as_slice() {
            [_, t, d] => (
                *t,
                d.ok_or_else(|| layout("feature dimension is not fixed".into()))?,
            ),
            other => return Err(layout(format!("input `x` has rank {}, not 3", other.len()))),
        };
        let window = meta_usize(&encoder, "T")
            .or(window_from_shape)
            .ok_or_else(|| layout("no `T` metadata and no fixed window".into()))?;
        let shift = meta_usize(&encoder, "decode_chunk_len")
            .ok_or_else(|| layout("no `decode_chunk_len` metadata".into()))?;
        if shift == 0 || shift > window {
            return Err(layout(format!("decode_chunk_len {shift} with T {window}")));
        }
        let enc_out_index = encoder
            .outputs
            .iter()
            .position(|o| o == "encoder_out")
            .unwrap_or(0);
        let mut states = Vec::new();
        let mut next_positional = 0;
        for (i, inp) in encoder.input_info.iter().enumerate() {
            if i == x_index {
                continue;
            }
            let output = match encoder
                .outputs
                .iter()
                .position(|o| *o == format!("new_{}", inp.name))
            {
                Some(o) => o,
                None => {
                    // Positional: the outputs after encoder_out, in input order.
                    let candidates: Vec<usize> = (0..encoder.outputs.len())
                        .filter(|&o| o != enc_out_index)
                        .collect();
                    let o = *candidates.get(next_positional).ok_or_else(|| {
                        layout(format!("no output carries the state `{}`", inp.name))
                    })?;
                    next_positional += 1;
                    o
                }
            };
            // Symbolic dimensions are the batch: one stream.
            let shape = inp.shape.iter().map(|d| d.unwrap_or(1)).collect();
            states.push(StateSpec {
                name: inp.name.clone(),
                shape,
                is_i64: inp.is_i64,
                output,
            });
        }
        let context = meta_usize(&decoder, "context_size").unwrap_or(2);
        let vocab = meta_usize(&decoder, "vocab_size").unwrap_or(tokens.len());
        let blank = tokens
            .iter()
            .position(|t| t == "<blk>" || t == "<blank>")
            .unwrap_or(0) as i64;
        let unk = tokens.iter().position(|t| t == "<unk>").map(|i| i as i64);
        let fbank = Arc::new(FbankComputer::new(FbankOptions {
            num_bins: feat_dim,
            ..FbankOptions::default()
        }));
        let mut t = Transducer {
            encoder,
            decoder,
            joiner,
            tokens,
            blank,
            unk,
            x_name: x.name.clone(),
            enc_out_index,
            states,
            info: TransducerInfo {
                model_type: None,
                window,
                shift,
                out_frames: 0,
                feat_dim,
                context,
                vocab,
                states: 0,
                frame_seconds: 0.0,
            },
            fbank,
            files,
        };
        t.info.model_type = t.encoder.metadata.get("model_type").cloned();
        t.info.states = t.states.len();
        // Warm-up on silence; it also tells the output frame rate.
        let zeros = vec![(1e-10f32).ln(); window * feat_dim];
        let states = t.initial_states();
        let (enc, _) = t.run_encoder(zeros, states)?;
        let out_dim = enc.shape.last().copied().unwrap_or(0);
        if out_dim == 0 || enc.shape.len() != 3 {
            return Err(layout(format!("encoder_out has shape {:?}", enc.shape)));
        }
        t.info.out_frames = enc.shape[1];
        if t.info.out_frames == 0 {
            return Err(layout("the encoder returns no frames".into()));
        }
        t.info.frame_seconds = shift as f64 * 0.01 / t.info.out_frames as f64;
        let dec = t.run_decoder(&vec![blank; context])?;
        let logits = t.run_joiner(&enc.as_f32()?[..out_dim], 1, &dec)?;
        if logits.len() != t.tokens.len() {
            return Err(AsrError::Layout(format!(
                "the joiner gives {} logits but tokens.txt has {} tokens",
                logits.len(),
                t.tokens.len()
            )));
        }
        Ok(t)
    }

    /// What the model is.
    pub fn info(&self) -> &TransducerInfo {
        &self.info
    }

    /// The engine the encoder runs on.
    pub fn engine(&self) -> switchyard_infer::EngineKind {
        self.encoder.engine
    }

    /// The device the encoder runs on.
    pub fn device(&self) -> switchyard_infer::Device {
        self.encoder.device
    }

    /// Memory held by the three networks' ONNX Runtime sessions, each with its device (`None` on
    /// tract): see [`memory_by_device`].
    pub fn memory_parts(
        &self,
    ) -> [(
        switchyard_infer::Device,
        Option<switchyard_infer::MemoryStats>,
    ); 3] {
        [&self.encoder, &self.decoder, &self.joiner].map(|m| (m.device, m.memory()))
    }

    /// The shared fbank computer.
    pub fn fbank(&self) -> &Arc<FbankComputer> {
        &self.fbank
    }

    /// The text of token ids (`▁` starts a word).
    pub fn text(&self, ids: &[i64]) -> String {
        let mut s = String::new();
        for &id in ids {
            if let Some(t) = self.tokens.get(id as usize) {
                s.push_str(t);
            }
        }
        s.replace('\u{2581}', " ").trim().to_string()
    }

    fn initial_states(&self) -> Vec<Tensor> {
        self.states
            .iter()
            .map(|s| {
                let n = s.shape.iter().product();
                if s.is_i64 {
                    Tensor::i64(s.shape.clone(), vec![0; n])
                } else {
                    Tensor::f32(s.shape.clone(), vec![0.0; n])
                }
            })
            .collect()
    }

    /// Runs the encoder on one window of features; returns `encoder_out` and the next states.
    fn run_encoder(&self, x: Vec<f32>, states: Vec<Tensor>) -> Result<(Tensor, Vec<Tensor>)> {
        let mut inputs: Vec<(&str, Tensor)> = Vec::with_capacity(states.len() + 1);
        inputs.push((
            self.x_name.as_str(),
            Tensor::f32(vec![1, self.info.window, self.info.feat_dim], x),
        ));
        for (spec, t) in self.states.iter().zip(states) {
            inputs.push((spec.name.as_str(), t));
        }
        let mut outputs: Vec<Option<Tensor>> =
            self.encoder.run(inputs)?.into_iter().map(Some).collect();
        let take = |outputs: &mut Vec<Option<Tensor>>, i: usize| {
            outputs
                .get_mut(i)
                .and_then(Option::take)
                .ok_or_else(|| AsrError::Layout(format!("encoder output {i} missing")))
        };
        let enc = take(&mut outputs, self.enc_out_index)?;
        let mut next = Vec::with_capacity(self.states.len());
        for s in &self.states {
            next.push(take(&mut outputs, s.output)?);
        }
        Ok((enc, next))
    }

    fn run_decoder(&self, context: &[i64]) -> Result<Vec<f32>> {
        self.run_decoder_batch(context, 1)
    }

    /// Decoder outputs for `n` contexts (row-major, `n × context`), `n × decoder_dim`.
    fn run_decoder_batch(&self, contexts: &[i64], n: usize) -> Result<Vec<f32>> {
        let y = Tensor::i64(vec![n, contexts.len() / n.max(1)], contexts.to_vec());
        let out = self.decoder.run(vec![("y", y)])?;
        let t = out
            .into_iter()
            .next()
            .ok_or_else(|| AsrError::Layout("decoder has no output".into()))?;
        match t.data {
            TensorData::F32(v) => Ok(v),
            TensorData::I64(_) => Err(AsrError::Layout("decoder output is not f32".into())),
        }
    }

    /// Joiner logits for `n` encoder frames (row-major) against one decoder output.
    fn run_joiner(&self, enc: &[f32], n: usize, dec: &[f32]) -> Result<Vec<f32>> {
        let mut decs = Vec::with_capacity(n * dec.len());
        for _ in 0..n {
            decs.extend_from_slice(dec);
        }
        self.run_joiner_rows(enc.to_vec(), decs, n)
    }

    /// Joiner logits for `n` rows of encoder frames and decoder outputs (both row-major).
    fn run_joiner_rows(&self, enc: Vec<f32>, decs: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let (e, d) = (enc.len() / n.max(1), decs.len() / n.max(1));
        let out = self.joiner.run(vec![
            ("encoder_out", Tensor::f32(vec![n, e], enc)),
            ("decoder_out", Tensor::f32(vec![n, d], decs)),
        ])?;
        let t = out
            .into_iter()
            .next()
            .ok_or_else(|| AsrError::Layout("joiner has no output".into()))?;
        match t.data {
            TensorData::F32(v) => Ok(v),
            TensorData::I64(_) => Err(AsrError::Layout("joiner output is not f32".into())),
        }
    }

    /// A new decoding stream with greedy search.
    pub fn stream(self: &Arc<Self>) -> Result<DecodeStream> {
        self.stream_with(Decoding::Greedy)
    }

    /// A new decoding stream.
    pub fn stream_with(self: &Arc<Self>, decoding: Decoding) -> Result<DecodeStream> {
        let context = vec![self.blank; self.info.context];
        let dec = self.run_decoder(&context)?;
        Ok(DecodeStream {
            model: self.clone(),
            fbank: OnlineFbank::new(self.fbank.clone()),
            feats: Vec::new(),
            states: Some(self.initial_states()),
            decoding,
            committed: Vec::new(),
            hyps: vec![Hyp {
                suffix: Vec::new(),
                context,
                log_prob: 0.0,
                dec: Some(dec),
            }],
            frames_decoded: 0,
            audio_frames: None,
            finished: false,
            timings: DecodeTimings::default(),
        })
    }
}

/// How tokens are chosen from the joiner's output, at most one per encoder frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decoding {
    /// The most likely token at each frame (what the reference pipeline does).
    #[default]
    Greedy,
    /// Modified beam search as in icefall and sherpa-onnx: the `max_active_paths` most likely token
    /// sequences are kept (identical ones merged), and the best by length-normalised log-probability
    /// wins. A frame where two tokens are almost tied no longer decides the text alone.
    ModifiedBeam {
        /// Hypotheses kept per frame (sherpa-onnx's default is 4).
        max_active_paths: usize,
    },
}

impl Decoding {
    /// sherpa-onnx's name of the method.
    pub fn name(&self) -> &'static str {
        match self {
            Decoding::Greedy => "greedy_search",
            Decoding::ModifiedBeam { .. } => "modified_beam_search",
        }
    }

    /// sherpa-onnx's names: `greedy_search`, or `modified_beam_search` keeping `max_active_paths`.
    pub fn from_name(method: &str, max_active_paths: usize) -> std::result::Result<Self, String> {
        match method {
            "greedy_search" => Ok(Decoding::Greedy),
            "modified_beam_search" if (1..=64).contains(&max_active_paths) => {
                Ok(Decoding::ModifiedBeam { max_active_paths })
            }
            "modified_beam_search" => Err(format!(
                "max_active_paths {max_active_paths} is not between 1 and 64"
            )),
            other => Err(format!(
                "decoding method `{other}` is not one of greedy_search, modified_beam_search"
            )),
        }
    }
}

/// One hypothesis of the search: its tokens after the ones all hypotheses share.
#[derive(Debug, Clone)]
struct Hyp {
    suffix: Vec<Token>,
    /// The last `context` token ids (blank-padded), the decoder's input.
    context: Vec<i64>,
    log_prob: f64,
    /// The decoder's output for `context`; `None` until computed.
    dec: Option<Vec<f32>>,
}

/// Where decoding time went, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeTimings {
    /// Feature extraction.
    pub fbank: f64,
    /// Encoder calls.
    pub encoder: f64,
    /// Decoder and joiner calls (the search).
    pub search: f64,
}

impl std::ops::AddAssign for DecodeTimings {
    fn add_assign(&mut self, o: Self) {
        self.fbank += o.fbank;
        self.encoder += o.encoder;
        self.search += o.search;
    }
}

/// A decoded token and the encoder frame it was emitted at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Token id.
    pub id: i64,
    /// Encoder output frame (since the stream's start).
    pub frame: usize,
}

/// Trailing silence added when a stream ends, so the encoder's right context sees the last words.
pub const TAIL_PADDING_S: f64 = 0.66;

/// One utterance being decoded: features in, tokens out. Owned by one request at a time.
pub struct DecodeStream {
    model: Arc<Transducer>,
    fbank: OnlineFbank,
    /// Feature frames not yet consumed by a window (row-major).
    feats: Vec<f32>,
    states: Option<Vec<Tensor>>,
    decoding: Decoding,
    /// Tokens every hypothesis agrees on.
    committed: Vec<Token>,
    /// The hypotheses, best first (one with greedy search).
    hyps: Vec<Hyp>,
    frames_decoded: usize,
    /// Feature frames of real audio, known once the stream has ended (the rest is tail padding).
    audio_frames: Option<usize>,
    finished: bool,
    timings: DecodeTimings,
}

impl DecodeStream {
    /// The model.
    pub fn model(&self) -> &Arc<Transducer> {
        &self.model
    }

    /// Adds 16 kHz samples in [-1, 1] and decodes every complete window.
    pub fn accept(&mut self, samples: &[f32]) -> Result<()> {
        self.push_audio(samples);
        while self.step()? {}
        Ok(())
    }

    /// Ends the audio (adds the tail padding) and decodes the rest.
    pub fn finish(&mut self) -> Result<()> {
        self.push_end();
        while self.step()? {}
        Ok(())
    }

    /// Adds samples and computes their features, without decoding (see [`step`](Self::step)).
    pub fn push_audio(&mut self, samples: &[f32]) {
        if self.finished {
            return;
        }
        let t = Instant::now();
        self.fbank.accept(samples);
        self.feats.extend(self.fbank.take_frames());
        self.timings.fbank += t.elapsed().as_secs_f64();
    }

    /// Ends the audio (adds the tail padding), without decoding.
    pub fn push_end(&mut self) {
        if self.finished {
            return;
        }
        let t = Instant::now();
        self.audio_frames = Some(self.consumed() + self.feats.len() / self.model.info.feat_dim);
        self.fbank
            .accept(&vec![0.0; (TAIL_PADDING_S * 16_000.0) as usize]);
        self.fbank.finish();
        self.feats.extend(self.fbank.take_frames());
        self.timings.fbank += t.elapsed().as_secs_f64();
        self.finished = true;
    }

    /// Feature frames the windows have advanced over: `shift` per encoder call.
    fn consumed(&self) -> usize {
        self.frames_decoded / self.model.info.out_frames.max(1) * self.model.info.shift
    }

    /// Decodes one window if one is ready; false when there is none.
    pub fn step(&mut self) -> Result<bool> {
        let m = self.model.clone();
        let (window, shift, dim) = (m.info.window, m.info.shift, m.info.feat_dim);
        {
            let have = self.feats.len() / dim;
            if have < window {
                // At the end, a partial window that starts inside the real audio is padded with
                // silence so that every frame of speech is decoded. One that starts in the tail
                // padding is not run: its frames are padding, and sherpa-onnx skips it too (with
                // the 0.66 s tail, longer than a window, this is always the case).
                let starts_in_audio = self.audio_frames.is_some_and(|a| self.consumed() < a);
                if !self.finished || have <= window - shift || !starts_in_audio {
                    return Ok(false);
                }
                self.feats.resize(window * dim, (1e-10f32).ln());
            }
            let x = self.feats[..window * dim].to_vec();
            self.feats.drain(..shift * dim);
            let states = self
                .states
                .take()
                .ok_or_else(|| AsrError::Layout("stream state lost after an error".into()))?;
            let t = Instant::now();
            let (enc, next) = m.run_encoder(x, states)?;
            self.states = Some(next);
            self.timings.encoder += t.elapsed().as_secs_f64();
            let t = Instant::now();
            self.search(&enc)?;
            self.timings.search += t.elapsed().as_secs_f64();
        }
        Ok(true)
    }

    /// Searches one encoder output, frame by frame.
    fn search(&mut self, enc: &Tensor) -> Result<()> {
        let enc = enc.as_f32()?;
        let frames = self.model.info.out_frames.max(1);
        let dim = enc.len() / frames;
        for t in 0..frames {
            let frame = &enc[t * dim..(t + 1) * dim];
            match self.decoding {
                Decoding::Greedy => self.greedy_frame(frame, self.frames_decoded + t)?,
                Decoding::ModifiedBeam { max_active_paths } => {
                    self.beam_frame(frame, self.frames_decoded + t, max_active_paths.max(1))?
                }
            }
        }
        self.frames_decoded += frames;
        Ok(())
    }

    /// Greedy search, one frame. The joiner runs one frame at a time, as in sherpa-onnx: int8
    /// joiners quantise their input dynamically over the whole tensor, so batching frames would
    /// change the numbers.
    fn greedy_frame(&mut self, enc: &[f32], frame: usize) -> Result<()> {
        let m = self.model.clone();
        let h = self
            .hyps
            .first_mut()
            .ok_or_else(|| AsrError::Layout("no hypothesis".into()))?;
        let dec = h
            .dec
            .as_deref()
            .ok_or_else(|| AsrError::Layout("decoder output missing".into()))?;
        let k = argmax(&m.run_joiner(enc, 1, dec)?) as i64;
        if k != m.blank && Some(k) != m.unk {
            self.committed.push(Token { id: k, frame });
            h.context.remove(0);
            h.context.push(k);
            h.dec = Some(m.run_decoder(&h.context)?);
        }
        Ok(())
    }

    /// Modified beam search, one frame: every hypothesis is extended by every token (blank keeps
    /// it as it is), the `paths` best of those by total log-probability are kept, and the ones with
    /// the same tokens are merged (their probabilities add up).
    fn beam_frame(&mut self, enc: &[f32], frame: usize, paths: usize) -> Result<()> {
        let m = self.model.clone();
        let n = self.hyps.len();
        let mut encs = Vec::with_capacity(n * enc.len());
        let mut decs = Vec::new();
        for h in &self.hyps {
            encs.extend_from_slice(enc);
            decs.extend_from_slice(
                h.dec
                    .as_deref()
                    .ok_or_else(|| AsrError::Layout("decoder output missing".into()))?,
            );
        }
        let logits = m.run_joiner_rows(encs, decs, n)?;
        let vocab = logits.len() / n.max(1);
        if vocab == 0 {
            return Err(AsrError::Layout("joiner gives no logits".into()));
        }
        // Total log-probability of every (hypothesis, token) extension.
        let mut scores = Vec::with_capacity(logits.len());
        for (h, row) in self.hyps.iter().zip(logits.chunks_exact(vocab)) {
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            scores.extend(row.iter().map(|&x| h.log_prob + x as f64 - lse));
        }
        let mut best: Vec<usize> = (0..scores.len()).collect();
        let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
        if best.len() > paths {
            best.select_nth_unstable_by(paths - 1, by_score);
            best.truncate(paths);
        }
        best.sort_unstable_by(by_score);
        let mut next: Vec<Hyp> = Vec::with_capacity(paths);
        for i in best {
            let (prev, k) = (&self.hyps[i / vocab], (i % vocab) as i64);
            let mut h = Hyp {
                suffix: prev.suffix.clone(),
                context: prev.context.clone(),
                log_prob: scores[i],
                dec: prev.dec.clone(),
            };
            if k != m.blank && Some(k) != m.unk {
                h.suffix.push(Token { id: k, frame });
                h.context.remove(0);
                h.context.push(k);
                h.dec = None;
            }
            let same = |o: &Hyp| {
                o.suffix.len() == h.suffix.len()
                    && o.suffix.iter().zip(&h.suffix).all(|(a, b)| a.id == b.id)
            };
            match next.iter_mut().find(|o| same(o)) {
                // The first (more likely) one keeps its token times.
                Some(o) => o.log_prob = log_add(o.log_prob, h.log_prob),
                None => next.push(h),
            }
        }
        // One decoder call for every hypothesis that got a new token.
        let fresh: Vec<usize> = (0..next.len()).filter(|&i| next[i].dec.is_none()).collect();
        if !fresh.is_empty() {
            let contexts: Vec<i64> = fresh
                .iter()
                .flat_map(|&i| next[i].context.iter().copied())
                .collect();
            let out = m.run_decoder_batch(&contexts, fresh.len())?;
            let d = out.len() / fresh.len();
            for (&i, row) in fresh.iter().zip(out.chunks_exact(d.max(1))) {
                next[i].dec = Some(row.to_vec());
            }
        }
        self.hyps = next;
        self.sort_hyps();
        self.commit_shared();
        Ok(())
    }

    /// Orders the hypotheses best first, by log-probability per token (counting the blank context,
    /// as sherpa-onnx does), so that longer hypotheses are not penalised for their length.
    fn sort_hyps(&mut self) {
        let base = (self.committed.len() + self.model.info.context) as f64;
        let norm = |h: &Hyp| h.log_prob / (base + h.suffix.len() as f64);
        self.hyps.sort_by(|a, b| norm(b).total_cmp(&norm(a)));
    }

    /// Moves the tokens all hypotheses share into `committed`.
    fn commit_shared(&mut self) {
        let Some((first, rest)) = self.hyps.split_first() else {
            return;
        };
        let mut shared = first.suffix.len();
        for h in rest {
            shared = shared.min(
                first
                    .suffix
                    .iter()
                    .zip(&h.suffix)
                    .take_while(|(a, b)| a == b)
                    .count(),
            );
        }
        if shared > 0 {
            self.committed.extend_from_slice(&first.suffix[..shared]);
            for h in &mut self.hyps {
                h.suffix.drain(..shared);
            }
        }
    }

    /// Keeps only the best hypothesis, so that the tokens so far are final (at an endpoint).
    pub fn commit(&mut self) {
        self.hyps.truncate(1);
        if let Some(h) = self.hyps.first_mut() {
            self.committed.append(&mut h.suffix);
            h.log_prob = 0.0;
        }
    }

    /// The best hypothesis' tokens so far.
    pub fn tokens(&self) -> Cow<'_, [Token]> {
        match self.hyps.first() {
            Some(h) if !h.suffix.is_empty() => {
                Cow::Owned([self.committed.as_slice(), &h.suffix].concat())
            }
            _ => Cow::Borrowed(&self.committed),
        }
    }

    /// Encoder output frames decoded so far.
    pub fn frames_decoded(&self) -> usize {
        self.frames_decoded
    }

    /// Time spent so far.
    pub fn timings(&self) -> DecodeTimings {
        self.timings
    }
}

/// `ln(e^a + e^b)`.
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Runs the pieces on given inputs, for checks against golden tensors.
pub mod probe {
    use super::*;

    /// The encoder output for each window of `feats` (`n × feat_dim`), states carried.
    pub fn encoder_outputs(
        model: &Transducer,
        feats: &[f32],
        windows: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let (w, s, d) = (model.info.window, model.info.shift, model.info.feat_dim);
        let mut states = model.initial_states();
        let mut outs = Vec::new();
        for c in 0..windows {
            let x = feats[c * s * d..(c * s + w) * d].to_vec();
            let (enc, next) = model.run_encoder(x, states)?;
            states = next;
            outs.push(enc.as_f32()?.to_vec());
        }
        Ok(outs)
    }

    /// The decoder output for a context.
    pub fn decoder_output(model: &Transducer, context: &[i64]) -> Result<Vec<f32>> {
        model.run_decoder(context)
    }

    /// The joiner logits for one encoder frame and one decoder output.
    pub fn joiner_output(model: &Transducer, enc: &[f32], dec: &[f32]) -> Result<Vec<f32>> {
        model.run_joiner(enc, 1, dec)
    }
}

/// Adds up the memory of several models per device, in the order the devices first appear (so
/// the encoder's comes first); models that report none are left out.
pub fn memory_by_device(
    parts: impl IntoIterator<
        Item = (
            switchyard_infer::Device,
            Option<switchyard_infer::MemoryStats>,
        ),
    >,
) -> Vec<(switchyard_infer::Device, switchyard_infer::MemoryStats)> {
    let mut out: Vec<(switchyard_infer::Device, switchyard_infer::MemoryStats)> = Vec::new();
    for (device, m) in parts {
        let Some(m) = m else { continue };
        match out.iter_mut().find(|(d, _)| *d == device) {
            Some((_, t)) => {
                t.in_use_bytes += m.in_use_bytes;
                t.reserved_bytes += m.reserved_bytes;
                t.peak_bytes += m.peak_bytes;
            }
            None => out.push((device, m)),
        }
    }
    out
}
