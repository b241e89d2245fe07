//! Kaldi-compatible log-mel filterbank features, computed incrementally.
//!
//! The convention is the one of `kaldi-native-fbank` as configured by sherpa-onnx and icefall: 16 kHz
//! input in [-1, 1], 25 ms frames every 10 ms, `snip_edges = false` (frame `i` starts at
//! `i·shift − (length − shift)/2` and samples outside the signal are reflected), DC removal,
//! pre-emphasis 0.97, Povey window, 512-point power spectrum, 80 triangular mel bins from 20 Hz to
//! Nyquist − 400 Hz, natural log floored at `f32::EPSILON`, no dither and no normalisation.
//!
//! [`OnlineFbank`] produces exactly the frames of a whole-signal computation however the audio is
//! split into chunks: a frame is emitted once all its samples have arrived, and the last frames,
//! which reflect around the end of the signal, once [`OnlineFbank::finish`] says there is no more.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Filterbank options (the defaults are the sherpa-onnx streaming transducer ones).
#[derive(Debug, Clone, PartialEq)]
pub struct FbankOptions {
    /// Sample rate of the input, Hz.
    pub sample_rate: u32,
    /// Frame length in samples (25 ms).
    pub frame_length: usize,
    /// Frame shift in samples (10 ms).
    pub frame_shift: usize,
    /// Number of mel bins.
    pub num_bins: usize,
    /// Lowest mel bin edge, Hz.
    pub low_freq: f32,
    /// Highest mel bin edge, Hz; ≤ 0 means relative to Nyquist.
    pub high_freq: f32,
}

impl Default for FbankOptions {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            frame_length: 400,
            frame_shift: 160,
            num_bins: 80,
            low_freq: 20.0,
            high_freq: -400.0,
        }
    }
}

/// The part of the computation shared by all streams: window, mel filters, FFT plan.
pub struct FbankComputer {
    opts: FbankOptions,
    padded: usize,
    window: Vec<f32>,
    /// Per mel bin: first FFT bin and its weights.
    mel: Vec<(usize, Vec<f32>)>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for FbankComputer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FbankComputer")
            .field("opts", &self.opts)
            .finish()
    }
}

fn mel_scale(f: f32) -> f32 {
    1127.0 * (1.0 + f / 700.0).ln()
}

impl FbankComputer {
    /// Prepares the window, mel filters and FFT for `opts`.
    pub fn new(opts: FbankOptions) -> Self {
        let padded = opts.frame_length.next_power_of_two();
        let n = opts.frame_length;
        let window = (0..n)
            .map(|j| {
                let a = 2.0 * std::f64::consts::PI * j as f64 / (n - 1) as f64;
                (0.5 - 0.5 * a.cos()).powf(0.85) as f32
            })
            .collect();
        let nyquist = opts.sample_rate as f32 / 2.0;
        let high = if opts.high_freq <= 0.0 {
            nyquist + opts.high_freq
        } else {
            opts.high_freq
        };
        let num_fft_bins = padded / 2;
        let bin_width = opts.sample_rate as f32 / padded as f32;
        let (mel_low, mel_high) = (mel_scale(opts.low_freq), mel_scale(high));
        let delta = (mel_high - mel_low) / (opts.num_bins + 1) as f32;
        let mel = (0..opts.num_bins)
            .map(|b| {
                let left = mel_low + b as f32 * delta;
                let center = left + delta;
                let right = center + delta;
                let mut first = None;
                let mut weights = Vec::new();
                for i in 0..num_fft_bins {
                    let m = mel_scale(bin_width * i as f32);
                    if m > left && m < right {
                        let w = if m <= center {
                            (m - left) / (center - left)
                        } else {
                            (right - m) / (right - center)
                        };
                        first.get_or_insert(i);
                        weights.push(w);
                    }
                }
                (first.unwrap_or(0), weights)
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(padded);
        Self {
            opts,
            padded,
            window,
            mel,
            fft,
        }
    }

    /// The options.
    pub fn options(&self) -> &FbankOptions {
        &self.opts
    }

    /// Number of frames of a whole signal of `n` samples (`snip_edges = false`).
    pub fn num_frames(&self, n: usize) -> usize {
        (n + self.opts.frame_shift / 2) / self.opts.frame_shift
    }

    /// Features of a whole signal, frame after frame (`num_frames × num_bins`).
    pub fn compute(self: &Arc<Self>, samples: &[f32]) -> Vec<f32> {
        let mut online = OnlineFbank::new(self.clone());
        online.accept(samples);
        online.finish();
        online.take_frames()
    }

    fn frame(&self, get: impl Fn(usize) -> f32, scratch: &mut Scratch, out: &mut Vec<f32>) {
        let n = self.opts.frame_length;
        let buf = &mut scratch.input;
        buf.clear();
        buf.extend((0..n).map(get));
        let mean = buf.iter().sum::<f32>() / n as f32;
        buf.iter_mut().for_each(|v| *v -= mean);
        for j in (1..n).rev() {
            buf[j] -= 0.97 * buf[j - 1];
        }
        buf[0] -= 0.97 * buf[0];
        for (v, w) in buf.iter_mut().zip(&self.window) {
            *v *= w;
        }
        buf.resize(self.padded, 0.0);
        // The FFT cannot fail on buffers of the planned length.
        let _ = self
            .fft
            .process_with_scratch(buf, &mut scratch.spectrum, &mut scratch.fft);
        let power: &mut Vec<f32> = &mut scratch.power;
        power.clear();
        power.extend(scratch.spectrum.iter().map(|c| c.re * c.re + c.im * c.im));
        for (first, weights) in &self.mel {
            let e: f32 = weights
                .iter()
                .zip(&power[*first..])
                .map(|(w, p)| w * p)
                .sum();
            out.push(e.max(f32::EPSILON).ln());
        }
    }
}

struct Scratch {
    input: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    fft: Vec<realfft::num_complex::Complex<f32>>,
    power: Vec<f32>,
}

/// Incremental fbank of one audio stream.
pub struct OnlineFbank {
    computer: Arc<FbankComputer>,
    /// Samples from absolute index `offset` on.
    buf: Vec<f32>,
    offset: usize,
    total: usize,
    finished: bool,
    next_frame: usize,
    frames: Vec<f32>,
    scratch: Scratch,
}

impl OnlineFbank {
    /// A new stream.
    pub fn new(computer: Arc<FbankComputer>) -> Self {
        let scratch = Scratch {
            input: Vec::with_capacity(computer.padded),
            spectrum: computer.fft.make_output_vec(),
            fft: computer.fft.make_scratch_vec(),
            power: Vec::new(),
        };
        Self {
            computer,
            buf: Vec::new(),
            offset: 0,
            total: 0,
            finished: false,
            next_frame: 0,
            frames: Vec::new(),
            scratch,
        }
    }

    /// Adds samples (16 kHz, [-1, 1]) and computes every frame they complete.
    pub fn accept(&mut self, samples: &[f32]) {
        if self.finished {
            return;
        }
        self.buf.extend_from_slice(samples);
        self.total += samples.len();
        self.compute_ready();
    }

    /// No more samples: computes the last frames (reflected at the end).
    pub fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.compute_ready();
        }
    }

    /// Frames computed so far and not yet taken.
    pub fn ready(&self) -> usize {
        self.frames.len() / self.computer.opts.num_bins
    }

    /// Takes the computed frames (row-major, `num_bins` per frame).
    pub fn take_frames(&mut self) -> Vec<f32> {
        std::mem::take(&mut self.frames)
    }

    /// Frames emitted since the start (taken or not).
    pub fn frames_emitted(&self) -> usize {
        self.next_frame
    }

    fn compute_ready(&mut self) {
        let o = &self.computer.opts;
        let (len, shift) = (o.frame_length as i64, o.frame_shift as i64);
        let half = (len - shift) / 2;
        let limit = if self.finished {
            self.computer.num_frames(self.total)
        } else {
            usize::MAX
        };
        let n = self.total as i64;
        while self.next_frame < limit {
            let start = self.next_frame as i64 * shift - half;
            if !self.finished && start + len > n {
                break;
            }
            let (buf, offset) = (&self.buf, self.offset as i64);
            let get = |j: usize| {
                let mut s = start + j as i64;
                while s < 0 || s >= n {
                    s = if s < 0 { -s - 1 } else { 2 * n - 1 - s };
                }
                buf[(s - offset) as usize]
            };
            let computer = &self.computer;
            computer.frame(get, &mut self.scratch, &mut self.frames);
            self.next_frame += 1;
        }
        // Keep what the next frame can still read; the first frame reflects samples 0..half.
        let keep_from = (self.next_frame as i64 * shift - half).max(0) as usize;
        if !self.finished && keep_from > self.offset + 4096 {
            self.buf.drain(..keep_from - self.offset);
            self.offset = keep_from;
        }
    }
}
