//! Streaming transducer (RNN-T) models in the sherpa-onnx layout: `encoder`, `decoder`, `joiner`
//! ONNX files and `tokens.txt`, decoded greedily.
//!
//! Nothing about one particular model is hard-coded: the window and shift come from the encoder's
//! metadata (`T`, `decode_chunk_len`), the cached states are every encoder input other than the
//! features (with their shapes and types from the graph; outputs `new_<name>` or, failing that, the
//! outputs after `encoder_out` in input order), the decoder context size from its `context_size`
//! metadata, the feature dimension from the encoder input, the frame rate of the encoder output from
//! a warm-up run.

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
        // Decoder and joiner calls are tiny: one thread each avoids spinning thread pools.
        let small = LoadOptions {
            threads: 1,
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

    /// Memory held by the three networks' ONNX Runtime sessions (`None` on tract).
    pub fn memory(&self) -> Option<switchyard_infer::MemoryStats> {
        sum_memory([&self.encoder, &self.decoder, &self.joiner].map(Model::memory))
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
        let y = Tensor::i64(vec![1, context.len()], context.to_vec());
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
        let d = dec.len();
        let mut decs = Vec::with_capacity(n * d);
        for _ in 0..n {
            decs.extend_from_slice(dec);
        }
        let out = self.joiner.run(vec![
            (
                "encoder_out",
                Tensor::f32(vec![n, enc.len() / n], enc.to_vec()),
            ),
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

    /// A new decoding stream.
    pub fn stream(self: &Arc<Self>) -> Result<DecodeStream> {
        let context = vec![self.blank; self.info.context];
        let dec = self.run_decoder(&context)?;
        Ok(DecodeStream {
            model: self.clone(),
            fbank: OnlineFbank::new(self.fbank.clone()),
            feats: Vec::new(),
            states: Some(self.initial_states()),
            context,
            dec,
            tokens: Vec::new(),
            frames_decoded: 0,
            audio_frames: None,
            finished: false,
            timings: DecodeTimings::default(),
        })
    }
}

/// Where decoding time went, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeTimings {
    /// Feature extraction.
    pub fbank: f64,
    /// Encoder calls.
    pub encoder: f64,
    /// Decoder and joiner calls (the greedy search).
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
    context: Vec<i64>,
    dec: Vec<f32>,
    tokens: Vec<Token>,
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

    /// Greedy search over one encoder output, at most one symbol per frame. The joiner runs one
    /// frame at a time, as in sherpa-onnx: int8 joiners quantise their input dynamically over the
    /// whole tensor, so batching frames would change the numbers.
    fn search(&mut self, enc: &Tensor) -> Result<()> {
        let m = self.model.clone();
        let enc = enc.as_f32()?;
        let frames = m.info.out_frames.max(1);
        let dim = enc.len() / frames;
        for t in 0..frames {
            let logits = m.run_joiner(&enc[t * dim..(t + 1) * dim], 1, &self.dec)?;
            let k = argmax(&logits) as i64;
            if k != m.blank && Some(k) != m.unk {
                self.tokens.push(Token {
                    id: k,
                    frame: self.frames_decoded + t,
                });
                self.context.remove(0);
                self.context.push(k);
                self.dec = m.run_decoder(&self.context)?;
            }
        }
        self.frames_decoded += frames;
        Ok(())
    }

    /// Tokens decoded so far.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
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

/// Adds up the memory of several models; `None` when none reports any.
pub fn sum_memory(
    parts: impl IntoIterator<Item = Option<switchyard_infer::MemoryStats>>,
) -> Option<switchyard_infer::MemoryStats> {
    parts
        .into_iter()
        .flatten()
        .reduce(|a, b| switchyard_infer::MemoryStats {
            in_use_bytes: a.in_use_bytes + b.in_use_bytes,
            reserved_bytes: a.reserved_bytes + b.reserved_bytes,
            peak_bytes: a.peak_bytes + b.peak_bytes,
        })
}
