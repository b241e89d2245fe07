//! Recognition sessions: a transducer, optionally behind a VAD, turning 16 kHz audio into partial and
//! final results. Files and live streams go through the same [`Session`], so a file transcribed at
//! once and the same audio streamed in any chunking give the same segments and text.
//!
//! * Without VAD, one decoding stream runs over all the audio and is cut into segments at endpoints:
//!   `endpoint_silence_s` of trailing blanks after some text, or `max_segment_s` of text.
//! * With VAD, each speech segment (with padding) is decoded by a fresh stream; the segment times come
//!   from the VAD. Silence is never decoded.

use std::sync::Arc;
use std::time::Instant;

use crate::transducer::{AsrError, DecodeStream, DecodeTimings, Decoding, Transducer};
use crate::vad::{Segmenter, VadEvent, VadModel, VadOptions, WINDOW};

/// Recognition settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RecognizerOptions {
    /// Trailing silence (blank output) that ends a segment when there is no VAD, seconds.
    pub endpoint_silence_s: f64,
    /// Longest segment without VAD, seconds.
    pub max_segment_s: f64,
    /// VAD segmentation.
    pub vad: VadOptions,
    /// Search.
    pub decoding: Decoding,
}

impl Default for RecognizerOptions {
    fn default() -> Self {
        Self {
            endpoint_silence_s: 1.2,
            max_segment_s: 20.0,
            vad: VadOptions::default(),
            decoding: Decoding::default(),
        }
    }
}

/// A model and its optional VAD; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recognizer {
    /// The transducer.
    pub model: Arc<Transducer>,
    /// The VAD, if configured.
    pub vad: Option<Arc<VadModel>>,
    /// Settings.
    pub options: RecognizerOptions,
}

/// A recognised segment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Segment {
    /// Start, seconds since the beginning of the audio.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Text.
    pub text: String,
    /// The source channel (from 0), when the channels are recognised separately.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<usize>,
}

/// What a session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The text of the current segment so far, and the audio time (seconds since the start) up to
    /// which its last token was heard.
    Partial {
        /// Text.
        text: String,
        /// End of the audio frame of the last token, seconds.
        until: f64,
    },
    /// A finished segment.
    Final(Segment),
}

/// Where the time went, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionTimings {
    /// Transducer parts.
    pub decode: DecodeTimings,
    /// VAD.
    pub vad: f64,
}

/// The result of a whole file.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// All segments' text, space-separated.
    pub text: String,
    /// Segments.
    pub segments: Vec<Segment>,
    /// Audio duration, seconds.
    pub duration_s: f64,
    /// Where the time went.
    pub timings: SessionTimings,
    /// Token ids in order (all segments; channel after channel when split).
    pub token_ids: Vec<i64>,
    /// Each channel's text, when the channels are recognised separately
    /// ([`Recognizer::transcribe_channels`]); empty otherwise.
    pub channels: Vec<String>,
}

impl Recognizer {
    /// A new session.
    pub fn session(&self) -> Result<Session, AsrError> {
        Session::new(self.clone())
    }

    /// Transcribes a whole 16 kHz signal.
    pub fn transcribe(&self, samples: &[f32]) -> Result<Transcript, AsrError> {
        let mut s = self.session()?;
        let mut segments = Vec::new();
        for e in s.accept(samples)?.into_iter().chain(s.finish()?) {
            if let Event::Final(seg) = e {
                segments.push(seg);
            }
        }
        Ok(Transcript {
            text: join(&segments),
            duration_s: samples.len() as f64 / 16_000.0,
            timings: s.timings(),
            token_ids: s.token_ids,
            segments,
            channels: Vec::new(),
        })
    }

    /// Transcribes each channel of a recording separately (a call with one speaker per channel)
    /// and merges the results: `segments` in time order, each naming its `channel`; `text` their
    /// texts in that order; `channels` each channel's own text. One channel gives what
    /// [`transcribe`](Self::transcribe) gives. The channels are recognised one after the other;
    /// see [`transcribe_channels_on`](Self::transcribe_channels_on) to use several threads.
    pub fn transcribe_channels(&self, channels: &[Vec<f32>]) -> Result<Transcript, AsrError> {
        self.transcribe_channels_on(channels, 1)
    }

    /// [`transcribe_channels`](Self::transcribe_channels) on up to `lanes` threads at once, the
    /// channels dealt out among them: the same result, in less time when the model has a free
    /// session per lane (ONNX Runtime) or spare cores (tract). The caller decides how many lanes
    /// the model can serve without making other requests wait.
    pub fn transcribe_channels_on(
        &self,
        channels: &[Vec<f32>],
        lanes: usize,
    ) -> Result<Transcript, AsrError> {
        if let [one] = channels {
            return self.transcribe(one);
        }
        let lanes = lanes.clamp(1, channels.len().max(1));
        let results: Vec<Result<Transcript, AsrError>> = if lanes == 1 {
            channels.iter().map(|c| self.transcribe(c)).collect()
        } else {
            // Lane l takes channels l, l + lanes, …; results go back into channel order.
            let mut done: Vec<(usize, Result<Transcript, AsrError>)> =
                std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..lanes)
                        .map(|lane| {
                            scope.spawn(move || {
                                (lane..channels.len())
                                    .step_by(lanes)
                                    .map(|c| (c, self.transcribe(&channels[c])))
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                        .collect()
                });
            done.sort_by_key(|(c, _)| *c);
            done.into_iter().map(|(_, r)| r).collect()
        };
        let mut merged = Transcript {
            text: String::new(),
            segments: Vec::new(),
            duration_s: 0.0,
            timings: SessionTimings::default(),
            token_ids: Vec::new(),
            channels: Vec::with_capacity(channels.len()),
        };
        for (c, t) in results.into_iter().enumerate() {
            let t = t?;
            merged.duration_s = merged.duration_s.max(t.duration_s);
            merged.timings.decode += t.timings.decode;
            merged.timings.vad += t.timings.vad;
            merged.token_ids.extend(t.token_ids);
            merged.channels.push(t.text);
            merged
                .segments
                .extend(t.segments.into_iter().map(|s| Segment {
                    channel: Some(c),
                    ..s
                }));
        }
        // Stable: segments starting together keep their channel order.
        merged.segments.sort_by(|a, b| a.start.total_cmp(&b.start));
        merged.text = join(&merged.segments);
        Ok(merged)
    }
}

/// Joins segment texts with single spaces.
pub fn join(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| s.text.as_str())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// How long before its first token a segment's speech starts, seconds: the transducer emits a
/// token once it has heard its chunk and some look-ahead. Measured on the 13 test clips against
/// Silero VAD's speech starts: 0.32–0.60 s, median 0.47.
const TOKEN_LEAD_S: f64 = 0.5;

/// Start of a segment without VAD: [`TOKEN_LEAD_S`] before its first token, but not before the
/// audio it was decoded from (`from`, in encoder frames). Silence before a segment is cut only in
/// steps of twice the endpoint silence, so `from` alone is up to 2.4 s early.
fn segment_start(from: usize, toks: &[crate::transducer::Token], frame_s: f64) -> f64 {
    let lead = (TOKEN_LEAD_S / frame_s).round() as usize;
    let first = toks.first().map_or(from, |t| t.frame.saturating_sub(lead));
    first.max(from) as f64 * frame_s
}

/// One audio stream being recognised.
pub struct Session {
    rec: Recognizer,
    /// Samples received.
    received: usize,
    stream: Option<DecodeStream>,
    /// Without VAD: first encoder frame and first token of the current segment.
    seg_frame: usize,
    seg_token: usize,
    /// With VAD: segmenter, recent audio (from `recent_at`), the current segment's start and how far
    /// the stream has been fed.
    segmenter: Option<Segmenter>,
    recent: Vec<f32>,
    recent_at: usize,
    seg_start: usize,
    fed: usize,
    last_partial: String,
    finished_timings: DecodeTimings,
    vad_seconds: f64,
    token_ids: Vec<i64>,
    ended: bool,
}

impl Session {
    fn new(rec: Recognizer) -> Result<Session, AsrError> {
        let segmenter = rec
            .vad
            .as_ref()
            .map(|v| Segmenter::new(v.clone(), rec.options.vad.clone()));
        let stream = if segmenter.is_none() {
            Some(rec.model.stream_with(rec.options.decoding)?)
        } else {
            None
        };
        Ok(Session {
            rec,
            received: 0,
            stream,
            seg_frame: 0,
            seg_token: 0,
            segmenter,
            recent: Vec::new(),
            recent_at: 0,
            seg_start: 0,
            fed: 0,
            last_partial: String::new(),
            finished_timings: DecodeTimings::default(),
            vad_seconds: 0.0,
            token_ids: Vec::new(),
            ended: false,
        })
    }

    /// The recognizer (model) this session runs on.
    pub fn recognizer(&self) -> &Recognizer {
        &self.rec
    }

    /// Seconds of audio received.
    pub fn received_s(&self) -> f64 {
        self.received as f64 / 16_000.0
    }

    /// Time spent so far.
    pub fn timings(&self) -> SessionTimings {
        let mut decode = self.finished_timings;
        if let Some(s) = &self.stream {
            decode += s.timings();
        }
        SessionTimings {
            decode,
            vad: self.vad_seconds,
        }
    }

    /// Adds 16 kHz samples in [-1, 1]; returns what they produced.
    pub fn accept(&mut self, samples: &[f32]) -> Result<Vec<Event>, AsrError> {
        if self.ended {
            return Ok(Vec::new());
        }
        self.received += samples.len();
        let mut events = Vec::new();
        if self.segmenter.is_some() {
            self.accept_vad(samples, &mut events)?;
        } else if let Some(stream) = &mut self.stream {
            stream.push_audio(samples);
            self.decode_plain(false, &mut events)?;
        }
        Ok(events)
    }

    /// Ends the audio; returns the last results.
    pub fn finish(&mut self) -> Result<Vec<Event>, AsrError> {
        if self.ended {
            return Ok(Vec::new());
        }
        self.ended = true;
        let mut events = Vec::new();
        if let Some(seg) = &mut self.segmenter {
            let t = Instant::now();
            let vad_events = seg.finish(self.received);
            self.vad_seconds += t.elapsed().as_secs_f64();
            for e in vad_events {
                self.on_vad_event(e, &mut events)?;
            }
        } else if let Some(stream) = &mut self.stream {
            stream.push_end();
            self.decode_plain(true, &mut events)?;
        }
        Ok(events)
    }

    // --- without VAD ---

    fn decode_plain(&mut self, last: bool, events: &mut Vec<Event>) -> Result<(), AsrError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let frame_s = stream.model().info().frame_seconds;
        let silence = (self.rec.options.endpoint_silence_s / frame_s).round() as usize;
        let max_len = (self.rec.options.max_segment_s / frame_s).round() as usize;
        let mut advanced = false;
        while stream.step()? {
            advanced = true;
            let frames = stream.frames_decoded();
            let all = stream.tokens();
            let toks = &all[self.seg_token..];
            let trailing = frames - toks.last().map(|t| t.frame + 1).unwrap_or(self.seg_frame);
            let endpoint =
                !toks.is_empty() && (trailing >= silence || frames - self.seg_frame >= max_len);
            if endpoint {
                let text = stream
                    .model()
                    .text(&toks.iter().map(|t| t.id).collect::<Vec<_>>());
                let end = (frames as f64 * frame_s).min(self.received as f64 / 16_000.0);
                events.push(Event::Final(Segment {
                    channel: None,
                    start: segment_start(self.seg_frame, toks, frame_s),
                    end,
                    text,
                }));
                self.seg_token = all.len();
                self.seg_frame = frames;
                // The segment's text is final: the search goes on from its best hypothesis.
                stream.commit();
                self.last_partial.clear();
            } else if toks.is_empty() && trailing >= 2 * silence {
                // A long silence: the next segment starts later.
                self.seg_frame = frames;
            }
        }
        let all = stream.tokens();
        let toks = &all[self.seg_token..];
        let text = stream
            .model()
            .text(&toks.iter().map(|t| t.id).collect::<Vec<_>>());
        if last {
            if !text.is_empty() {
                events.push(Event::Final(Segment {
                    channel: None,
                    start: segment_start(self.seg_frame, toks, frame_s),
                    end: self.received as f64 / 16_000.0,
                    text,
                }));
            }
            self.token_ids = stream.tokens().iter().map(|t| t.id).collect();
        } else if advanced && text != self.last_partial && !text.is_empty() {
            self.last_partial = text.clone();
            let until = toks
                .last()
                .map(|t| (t.frame + 1) as f64 * frame_s)
                .unwrap_or(0.0);
            events.push(Event::Partial { text, until });
        }
        Ok(())
    }

    // --- with VAD ---

    fn accept_vad(&mut self, samples: &[f32], events: &mut Vec<Event>) -> Result<(), AsrError> {
        self.recent.extend_from_slice(samples);
        let Some(seg) = self.segmenter.as_mut() else {
            return Ok(());
        };
        let t = Instant::now();
        let vad_events = seg.accept(samples).map_err(AsrError::Infer)?;
        self.vad_seconds += t.elapsed().as_secs_f64();
        for e in vad_events {
            self.on_vad_event(e, events)?;
        }
        // Feed the open segment as far as no End can still fall before it.
        if self.stream.is_some() {
            let limit = self.safe_feed_limit();
            self.feed_to(limit, events)?;
        }
        // Keep enough recent audio for the padding of a segment that starts later.
        let o = &self.rec.options.vad;
        let keep = ((o.pad_s + o.min_speech_s) * 16_000.0) as usize + 4 * WINDOW;
        let mut keep_from = self.received.saturating_sub(keep);
        if self.stream.is_some() {
            keep_from = keep_from.min(self.fed);
        }
        if keep_from > self.recent_at + 16_000 {
            self.recent.drain(..keep_from - self.recent_at);
            self.recent_at = keep_from;
        }
        Ok(())
    }

    fn safe_feed_limit(&self) -> usize {
        let o = &self.rec.options.vad;
        let pos = self.segmenter.as_ref().map(|s| s.position()).unwrap_or(0);
        let lag = ((o.min_silence_s - o.pad_s).max(0.0) * 16_000.0) as usize + WINDOW;
        pos.saturating_sub(lag)
    }

    fn feed_to(&mut self, end: usize, events: &mut Vec<Event>) -> Result<(), AsrError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        if end <= self.fed {
            return Ok(());
        }
        let from = self.fed.max(self.recent_at) - self.recent_at;
        let to = (end - self.recent_at).min(self.recent.len());
        if from < to {
            stream.push_audio(&self.recent[from..to]);
        }
        self.fed = end;
        let mut advanced = false;
        while stream.step()? {
            advanced = true;
        }
        if advanced {
            let text = stream
                .model()
                .text(&stream.tokens().iter().map(|t| t.id).collect::<Vec<_>>());
            if !text.is_empty() && text != self.last_partial {
                self.last_partial = text.clone();
                let frame_s = stream.model().info().frame_seconds;
                let until = self.seg_start as f64 / 16_000.0
                    + stream
                        .tokens()
                        .last()
                        .map(|t| (t.frame + 1) as f64 * frame_s)
                        .unwrap_or(0.0);
                events.push(Event::Partial { text, until });
            }
        }
        Ok(())
    }

    fn on_vad_event(&mut self, e: VadEvent, events: &mut Vec<Event>) -> Result<(), AsrError> {
        match e {
            VadEvent::Start(s) => {
                self.stream = Some(self.rec.model.stream_with(self.rec.options.decoding)?);
                self.seg_start = s.max(self.recent_at);
                self.fed = self.seg_start;
                self.last_partial.clear();
            }
            VadEvent::End(e) => {
                self.feed_to(e, events)?;
                if let Some(mut stream) = self.stream.take() {
                    stream.finish()?;
                    let ids: Vec<i64> = stream.tokens().iter().map(|t| t.id).collect();
                    let text = stream.model().text(&ids);
                    self.token_ids.extend_from_slice(&ids);
                    self.finished_timings += stream.timings();
                    if !text.is_empty() {
                        events.push(Event::Final(Segment {
                            channel: None,
                            start: self.seg_start as f64 / 16_000.0,
                            end: e as f64 / 16_000.0,
                            text,
                        }));
                    }
                }
                self.last_partial.clear();
            }
        }
        Ok(())
    }
}
