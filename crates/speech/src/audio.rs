//! Audio in: container/codec decoding (symphonia; Opus packets by `opus-pure`), downmixing and
//! resampling to 16 kHz (rubato).

use std::cell::Cell;
use std::io::Cursor;

use rubato::Resampler as _;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, CODEC_TYPE_OPUS, CodecParameters, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::formats::{FormatReader, Packet};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// The sample rate every model here runs at.
pub const MODEL_RATE: u32 = 16_000;
/// Lowest input sample rate accepted.
pub const MIN_RATE: u32 = 4_000;
/// Highest input sample rate accepted.
pub const MAX_RATE: u32 = 384_000;

/// Why audio could not be used. All of them are the client's fault (4xx).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AudioError {
    /// Not a container/codec we can read, or a broken header.
    #[error("not decodable audio: {0}")]
    Unsupported(String),
    /// Decodes to nothing.
    #[error("the audio has no samples")]
    Empty,
    /// Sample rate outside [`MIN_RATE`, `MAX_RATE`].
    #[error("sample rate {0} Hz is outside {MIN_RATE}..={MAX_RATE}")]
    BadRate(u32),
    /// Longer than allowed.
    #[error("audio is longer than the {0} s limit")]
    TooLong(f64),
    /// More channels than [`MAX_SPLIT_CHANNELS`] to recognise one by one.
    #[error(
        "{0} channels: at most {MAX_SPLIT_CHANNELS} can be recognised one by one (channels=split)"
    )]
    TooManyChannels(usize),
}

/// The most channels [`Channels::Split`] recognises separately.
pub const MAX_SPLIT_CHANNELS: usize = 8;

/// How a source with several channels becomes model input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Channels {
    /// Averaged into one signal (the default: one microphone recorded on several channels).
    #[default]
    Mix,
    /// One signal per channel, recognised separately: a call recorded with the agent on one
    /// channel and the customer on the other, or one microphone per speaker.
    Split,
}

impl Channels {
    /// `mix` or `split`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "mix" => Some(Self::Mix),
            "split" => Some(Self::Split),
            _ => None,
        }
    }

    /// The name [`from_name`](Self::from_name) reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mix => "mix",
            Self::Split => "split",
        }
    }
}

/// Decoded audio as it arrives, made model input: averaged into one track, or one track per channel
/// ([`Channels`]), each resampled to [`MODEL_RATE`] as it comes, so that memory holds 16 kHz
/// samples whatever the source's rate (a 384 kHz file would otherwise hold 24 times as many until
/// the end). The output is the same as resampling each whole track at once ([`StreamResampler`]).
/// Files are decoded into one and end it; live streams [`take`](Self::take) what is ready.
pub struct Tracks {
    layout: Channels,
    rate: u32,
    /// Source frames kept back from the resamplers (the Opus end-trim), dropped by `end`.
    holdback: usize,
    /// Per track: the held-back source samples, its resampler, its output.
    held: Vec<Vec<f32>>,
    resamplers: Vec<StreamResampler>,
    out: Vec<Vec<f32>>,
    /// Source frames received.
    frames: usize,
}

impl Tracks {
    /// Tracks of a source at `rate` Hz; the last `holdback` frames are dropped at the end (an Opus
    /// end-trim).
    pub fn new(layout: Channels, rate: u32, holdback: usize) -> Self {
        Self {
            layout,
            rate,
            holdback,
            held: vec![Vec::new()],
            resamplers: vec![StreamResampler::new(rate, MODEL_RATE)],
            out: vec![Vec::new()],
            frames: 0,
        }
    }

    /// Source frames so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Adds interleaved frames of `channels` channels (a split layout keeps its first count and
    /// accepts at most [`MAX_SPLIT_CHANNELS`]).
    pub fn push(&mut self, interleaved: &[f32], channels: usize) -> Result<(), AudioError> {
        let channels = channels.max(1);
        let n = interleaved.len() / channels;
        if self.layout == Channels::Mix || channels == 1 && self.held.len() == 1 {
            let mut mono = Vec::with_capacity(n);
            downmix_into(interleaved, channels, &mut mono);
            self.feed(0, mono);
        } else {
            if channels > MAX_SPLIT_CHANNELS {
                return Err(AudioError::TooManyChannels(channels));
            }
            if self.held.len() != channels {
                if self.frames > 0 {
                    return Err(AudioError::Unsupported(
                        "the channel count changes within the file; channels=split needs one"
                            .into(),
                    ));
                }
                self.held.resize_with(channels, Vec::new);
                self.out.resize_with(channels, Vec::new);
                let rate = self.rate;
                self.resamplers
                    .resize_with(channels, || StreamResampler::new(rate, MODEL_RATE));
            }
            for c in 0..channels {
                let track = interleaved.iter().skip(c).step_by(channels).copied();
                self.feed(c, track.take(n).collect());
            }
        }
        self.frames += n;
        Ok(())
    }

    /// Passes a track's new samples on to its resampler, but for the last `holdback`.
    fn feed(&mut self, t: usize, samples: Vec<f32>) {
        let held = &mut self.held[t];
        held.extend(samples);
        if held.len() > self.holdback {
            let ready = held.len() - self.holdback;
            self.out[t].extend(self.resamplers[t].push(&held[..ready]));
            held.drain(..ready);
        }
    }

    /// Samples ready at the model's rate, in the track that has most.
    pub fn ready(&self) -> usize {
        self.out.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// The samples ready in each track, at the model's rate.
    pub fn take(&mut self) -> Vec<Vec<f32>> {
        self.out.iter_mut().map(std::mem::take).collect()
    }

    /// The end of the audio: drops the held-back frames and flushes the resamplers.
    pub fn end(&mut self) {
        for ((out, r), held) in self
            .out
            .iter_mut()
            .zip(&mut self.resamplers)
            .zip(&mut self.held)
        {
            held.clear();
            out.extend(r.finish());
        }
    }

    /// Ends the audio; one [`Audio`] per track.
    fn finish(mut self, channels: usize, codec: &str) -> Result<Vec<Audio>, AudioError> {
        if self.frames <= self.holdback {
            return Err(AudioError::Empty);
        }
        self.end();
        let rate = self.rate;
        Ok(self
            .take()
            .into_iter()
            .map(|samples| Audio {
                samples,
                source_rate: rate,
                source_channels: channels,
                codec: codec.to_string(),
            })
            .collect())
    }
}

/// Decoded audio: mono, 16 kHz, samples in [-1, 1].
#[derive(Debug, Clone)]
pub struct Audio {
    /// Mono samples at [`MODEL_RATE`].
    pub samples: Vec<f32>,
    /// Sample rate of the source.
    pub source_rate: u32,
    /// Channels of the source.
    pub source_channels: usize,
    /// Codec name (`pcm_s16le`, `flac`, `mp3`, …).
    pub codec: String,
}

impl Audio {
    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / MODEL_RATE as f64
    }
}

fn check_rate(rate: u32) -> Result<(), AudioError> {
    if (MIN_RATE..=MAX_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::BadRate(rate))
    }
}

thread_local! {
    static DECODING_UNTRUSTED: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread decodes client audio under [`decode`]'s panic guard: a panic hook can tell
/// such a panic (answered 400) from a real crash.
pub fn decoding_untrusted_input() -> bool {
    DECODING_UNTRUSTED.with(Cell::get)
}

fn unsupported(e: SymError) -> AudioError {
    match e {
        SymError::Unsupported(what) => AudioError::Unsupported(format!(
            "{what} is not supported (WAV, GSM 6.10 WAV, FLAC, MP3, OGG/Vorbis, Opus in OGG or WebM and raw 16-bit PCM are)"
        )),
        e => AudioError::Unsupported(e.to_string()),
    }
}

/// The next packet of `track_id`; `None` at the end of the stream, or at an unreadable packet once
/// some audio was decoded (a truncated file: what was decoded is kept).
fn next_packet(
    format: &mut dyn FormatReader,
    track_id: u32,
    decoded_any: bool,
) -> Result<Option<Packet>, AudioError> {
    loop {
        match format.next_packet() {
            Ok(p) if p.track_id() == track_id => return Ok(Some(p)),
            Ok(_) => {}
            Err(SymError::IoError(_)) | Err(SymError::ResetRequired) => return Ok(None),
            Err(e) if decoded_any => {
                tracing::debug!(error = %e, "audio ends with an unreadable packet");
                return Ok(None);
            }
            Err(e) => return Err(unsupported(e)),
        }
    }
}

/// Decodes a whole file (WAV of any PCM/float format, FLAC, MP3, OGG/Vorbis, Opus in OGG or WebM), downmixes and
/// resamples it. `hint` is a file extension or MIME subtype if known. Stops with
/// [`AudioError::TooLong`] as soon as more than `max_seconds` have been decoded, so memory stays
/// bounded whatever the header claims.
pub fn decode<T>(bytes: T, hint: Option<&str>, max_seconds: f64) -> Result<Audio, AudioError>
where
    T: AsRef<[u8]> + Send + Sync + 'static,
{
    decode_channels(bytes, hint, max_seconds, Channels::Mix).map(first_track)
}

fn first_track(mut tracks: Vec<Audio>) -> Audio {
    // `Tracks::finish` never returns an empty list.
    tracks.swap_remove(0)
}

/// [`decode`] with a choice of channel layout: with [`Channels::Split`], one [`Audio`] per channel
/// of the source (a mono source gives one), each resampled on its own; at most
/// [`MAX_SPLIT_CHANNELS`].
pub fn decode_channels<T>(
    bytes: T,
    hint: Option<&str>,
    max_seconds: f64,
    layout: Channels,
) -> Result<Vec<Audio>, AudioError>
where
    T: AsRef<[u8]> + Send + Sync + 'static,
{
    // symphonia's demuxers are meant to return errors on malformed input, but its Matroska reader
    // panics on some (an `expect` on a corrupted element tree). The input is the client's, so a
    // panic there is a bad file: a 4xx, and the worker thread carries on.
    DECODING_UNTRUSTED.with(|d| d.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_unchecked(bytes, hint, max_seconds, layout)
    }));
    DECODING_UNTRUSTED.with(|d| d.set(false));
    result.unwrap_or_else(|_| {
        Err(AudioError::Unsupported(
            "malformed container (the demuxer gave up)".into(),
        ))
    })
}

fn decode_unchecked<T>(
    bytes: T,
    hint: Option<&str>,
    max_seconds: f64,
    layout: Channels,
) -> Result<Vec<Audio>, AudioError>
where
    T: AsRef<[u8]> + Send + Sync + 'static,
{
    if let Some(wav) = crate::gsm::wav49(bytes.as_ref()) {
        return decode_gsm(wav.map_err(AudioError::Unsupported)?, max_seconds, layout);
    }
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut h = Hint::new();
    if let Some(ext) = hint {
        h.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &h,
            mss,
            // Gapless: MP3 (LAME/Xing) and Vorbis decoders drop the encoder delay and padding, so
            // durations and segment times are the source's, not shifted by the codec's delay.
            &FormatOptions {
                enable_gapless: true,
                ..FormatOptions::default()
            },
            &MetadataOptions::default(),
        )
        .map_err(unsupported)?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AudioError::Unsupported("no audio track".into()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let rate = params
        .sample_rate
        .ok_or_else(|| AudioError::Unsupported("unknown sample rate".into()))?;
    check_rate(rate)?;
    if params.codec == CODEC_TYPE_OPUS {
        // The end-trim (RFC 7845 §4.4): the last page's granule position stops short of the
        // decoded end by this many frames, held back until the end and dropped.
        let padding = params.padding.unwrap_or(0) as usize;
        let mut tracks = Tracks::new(layout, OPUS_RATE, padding);
        let channels = decode_opus(format.as_mut(), track_id, &params, max_seconds, &mut tracks)?;
        return tracks.finish(channels, "opus");
    }
    let codec = symphonia::default::get_codecs()
        .get_codec(params.codec)
        .map(|d| d.short_name.to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(unsupported)?;
    let max_frames = (max_seconds * rate as f64).ceil() as usize;
    if let Some(n) = params.n_frames
        && n as usize > max_frames
    {
        return Err(AudioError::TooLong(max_seconds));
    }

    let mut tracks = Tracks::new(layout, rate, 0);
    let mut channels = params.channels.map(|c| c.count()).unwrap_or(1);
    let mut sample_buf: Option<SampleBuffer<f32>> = None;
    let mut decoded_any = false;
    while let Some(packet) = next_packet(format.as_mut(), track_id, decoded_any)? {
        let buf = match decoder.decode(&packet) {
            Ok(b) => b,
            // A corrupt packet: skip it, as players do.
            Err(SymError::DecodeError(e)) => {
                tracing::debug!(error = e, "skipping an undecodable audio packet");
                continue;
            }
            Err(SymError::IoError(_)) => break,
            Err(e) => return Err(unsupported(e)),
        };
        decoded_any = true;
        let spec = *buf.spec();
        check_rate(spec.rate)?;
        channels = spec.channels.count().max(1);
        let sb = match &mut sample_buf {
            Some(sb) if sb.capacity() >= buf.capacity() * channels => sb,
            _ => sample_buf.insert(SampleBuffer::new(buf.capacity() as u64, spec)),
        };
        sb.copy_interleaved_ref(buf);
        tracks.push(sb.samples(), channels)?;
        if tracks.frames() > max_frames {
            return Err(AudioError::TooLong(max_seconds));
        }
    }
    tracks.finish(channels, &codec)
}

/// A GSM 06.10 WAV file ([`crate::gsm`]): its whole blocks, up to the sample count of its `fact`
/// chunk (the encoder pads the last block).
fn decode_gsm(
    wav: crate::gsm::Wav49<'_>,
    max_seconds: f64,
    layout: Channels,
) -> Result<Vec<Audio>, AudioError> {
    use crate::gsm::{BLOCK_BYTES, BLOCK_SAMPLES};
    check_rate(wav.rate)?;
    let whole = wav.data.len() / BLOCK_BYTES * BLOCK_SAMPLES;
    let n = wav.samples.map_or(whole, |s| s.min(whole));
    if n as f64 > max_seconds * f64::from(wav.rate) {
        return Err(AudioError::TooLong(max_seconds));
    }
    let pcm: Vec<f32> = crate::gsm::decode(wav.data, n)
        .into_iter()
        .map(|s| f32::from(s) / 32768.0)
        .collect();
    let mut tracks = Tracks::new(layout, wav.rate, 0);
    tracks.push(&pcm, 1)?;
    tracks.finish(1, "gsm_ms")
}

/// Opus always decodes at 48 kHz (the rate in its header is the input's, for information only).
const OPUS_RATE: u32 = 48_000;

/// The Opus packets of an Ogg or WebM track (symphonia demuxes them; it has no Opus decoder) decoded by the
/// pure-Rust `opus-pure` at 48 kHz into `tracks`; the encoder's pre-skip is dropped. Mono/stereo
/// streams and surround ones (mapping family 1) are read. Returns the channel count.
fn decode_opus(
    format: &mut dyn FormatReader,
    track_id: u32,
    params: &CodecParameters,
    max_seconds: f64,
    tracks: &mut Tracks,
) -> Result<usize, AudioError> {
    use opus_pure::{MAX_PACKET_SAMPLES, OpusDecoder, OpusMSDecoder};
    enum Dec {
        One(Box<OpusDecoder>),
        Surround(OpusMSDecoder),
    }
    let bad = |e: opus_pure::Error| AudioError::Unsupported(format!("Opus: {e}"));
    // OpusHead (RFC 7845 §5.1; also Matroska's CodecPrivate): channels at 9, pre-skip at 10,
    // output gain (Q7.8 dB) at 16, mapping family at 18.
    let head = params.extra_data.as_deref().unwrap_or_default();
    let (channels, pre_skip, gain, family) = match (
        head.get(9),
        head.get(10..12),
        head.get(16..18),
        head.get(18),
    ) {
        (Some(&c), Some(p), Some(g), Some(&f)) if c > 0 => (
            c as usize,
            u16::from_le_bytes([p[0], p[1]]) as usize,
            i16::from_le_bytes([g[0], g[1]]),
            f,
        ),
        _ => return Err(AudioError::Unsupported("Opus: broken OpusHead".into())),
    };
    let mut dec = match family {
        0 => {
            let mut d = OpusDecoder::new(OPUS_RATE as i32, channels).map_err(bad)?;
            d.gain_q8 = i32::from(gain);
            Dec::One(Box::new(d))
        }
        f => Dec::Surround(OpusMSDecoder::new(OPUS_RATE as i32, channels, f).map_err(bad)?),
    };
    let max_frames = (max_seconds * OPUS_RATE as f64).ceil() as usize;
    let mut skip = pre_skip;
    let mut pcm = vec![0f32; MAX_PACKET_SAMPLES * channels];
    let mut decoded_any = false;
    while let Some(packet) = next_packet(format, track_id, decoded_any)? {
        if packet.data.is_empty() {
            continue;
        }
        let n = match &mut dec {
            Dec::One(d) => d.decode(&packet.data, MAX_PACKET_SAMPLES, &mut pcm),
            Dec::Surround(d) => d.decode(&packet.data, MAX_PACKET_SAMPLES, &mut pcm),
        };
        let n = match n {
            Ok(n) => n,
            // A corrupt packet: skip it, as players do.
            Err(e) => {
                tracing::debug!(error = %e, "skipping an undecodable Opus packet");
                continue;
            }
        };
        decoded_any = true;
        let drop = skip.min(n);
        skip -= drop;
        tracks.push(&pcm[drop * channels..n * channels], channels)?;
        if tracks.frames() > max_frames {
            return Err(AudioError::TooLong(max_seconds));
        }
    }
    Ok(channels)
}

/// Raw 16-bit little-endian PCM (`audio/l16`, `.raw`/`.pcm` files), `channels` interleaved.
pub fn from_pcm16(
    bytes: &[u8],
    rate: u32,
    channels: usize,
    max_seconds: f64,
) -> Result<Audio, AudioError> {
    pcm16_channels(bytes, rate, channels, max_seconds, Channels::Mix).map(first_track)
}

/// [`from_pcm16`] with a choice of channel layout (see [`decode_channels`]).
pub fn pcm16_channels(
    bytes: &[u8],
    rate: u32,
    channels: usize,
    max_seconds: f64,
    layout: Channels,
) -> Result<Vec<Audio>, AudioError> {
    check_rate(rate)?;
    let channels = channels.max(1);
    if bytes.len() / 2 / channels > (max_seconds * rate as f64).ceil() as usize {
        return Err(AudioError::TooLong(max_seconds));
    }
    let mut tracks = Tracks::new(layout, rate, 0);
    tracks.push(&pcm16_to_f32(bytes), channels)?;
    tracks.finish(channels, "pcm_s16le")
}

/// 16-bit little-endian PCM to floats in [-1, 1] (a trailing odd byte is ignored).
pub fn pcm16_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

fn downmix_into(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    if channels == 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(
        interleaved
            .chunks_exact(channels)
            .map(|f| f.iter().sum::<f32>() * scale),
    );
}

/// Resamples a whole mono signal (band-limited FFT resampler; output length `n·to/from`).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to {
        return samples.to_vec();
    }
    let mut r = StreamResampler::new(from, to);
    let mut out = r.push(samples);
    out.extend(r.finish());
    out
}

/// Resampling of a signal that arrives in pieces (live streams): the concatenated output of
/// [`push`](Self::push) and [`finish`](Self::finish) equals [`resample`] of the whole signal.
pub struct StreamResampler {
    inner: Option<rubato::FftFixedIn<f32>>,
    from: u32,
    to: u32,
    pending: Vec<f32>,
    /// Output samples still to drop (the resampler's delay).
    skip: usize,
    consumed: u64,
    produced: u64,
}

const RESAMPLE_CHUNK: usize = 4800;

impl StreamResampler {
    /// From `from` Hz to `to` Hz. Both rates must be within [`MIN_RATE`, `MAX_RATE`].
    pub fn new(from: u32, to: u32) -> Self {
        // Rubato's FFT resampler: exact to 1e-6 on a tone for 8–48 kHz inputs. The chunk is split in
        // 10 sub-chunks; with other splits (1, 3) its reported delay is off by a fraction of a sample
        // for 22.05 and 44.1 kHz, enough to change a borderline word.
        let inner = if from == to {
            None
        } else {
            rubato::FftFixedIn::<f32>::new(from as usize, to as usize, RESAMPLE_CHUNK, 10, 1).ok()
        };
        let skip = inner.as_ref().map(|r| r.output_delay()).unwrap_or(0);
        Self {
            inner,
            from,
            to,
            pending: Vec::new(),
            skip,
            consumed: 0,
            produced: 0,
        }
    }

    /// Adds input; returns the output that is ready.
    pub fn push(&mut self, input: &[f32]) -> Vec<f32> {
        let Some(r) = &mut self.inner else {
            return input.to_vec();
        };
        self.pending.extend_from_slice(input);
        let mut out = Vec::new();
        let mut at = 0;
        while self.pending.len() - at >= r.input_frames_next() {
            let n = r.input_frames_next();
            if let Ok(mut o) = r.process(&[&self.pending[at..at + n]], None) {
                out.append(&mut o[0]);
            }
            at += n;
            self.consumed += n as u64;
        }
        self.pending.drain(..at);
        self.trim(out)
    }

    /// Ends the signal; returns the rest of the output.
    pub fn finish(&mut self) -> Vec<f32> {
        let Some(r) = &mut self.inner else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        self.consumed += rest.len() as u64;
        if let Ok(mut o) = r.process_partial(Some(&[&rest[..]]), None) {
            out.append(&mut o[0]);
        }
        // Flush the delay line until the expected length is reached.
        let expected = self.consumed * self.to as u64 / self.from as u64;
        let mut guard = 0;
        while self.produced + (out.len().saturating_sub(self.skip)) as u64 <= expected && guard < 8
        {
            match r.process_partial::<&[f32]>(None, None) {
                Ok(mut o) => out.append(&mut o[0]),
                Err(_) => break,
            }
            guard += 1;
        }
        let mut out = self.trim(out);
        let left = expected.saturating_sub(self.produced - out.len() as u64) as usize;
        out.truncate(left);
        self.produced = expected;
        out
    }

    fn trim(&mut self, mut out: Vec<f32>) -> Vec<f32> {
        if self.skip > 0 {
            let n = self.skip.min(out.len());
            out.drain(..n);
            self.skip -= n;
        }
        self.produced += out.len() as u64;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 440 Hz tone resampled between common rates keeps its length, phase and amplitude.
    #[test]
    fn resampling_preserves_a_tone() {
        for from in [8_000u32, 22_050, 44_100, 48_000] {
            let n = from as usize * 2;
            let tone: Vec<f32> = (0..n)
                .map(|i| {
                    (2.0 * std::f64::consts::PI * 440.0 * i as f64 / from as f64).sin() as f32 * 0.5
                })
                .collect();
            let out = resample(&tone, from, 16_000);
            assert_eq!(out.len(), 32_000, "from {from}");
            // Away from the edges, the output is the same tone sampled at 16 kHz.
            let err = (2_000..30_000)
                .map(|i| {
                    let want = (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 16_000.0).sin()
                        as f32
                        * 0.5;
                    (out[i] - want).abs()
                })
                .fold(0.0f32, f32::max);
            assert!(err < 1e-4, "from {from}: max error {err}");
        }
    }

    /// Pushing in pieces gives the whole-signal result.
    #[test]
    fn streamed_resampling_matches_whole() {
        let x: Vec<f32> = (0..50_000)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let whole = resample(&x, 44_100, 16_000);
        let mut r = StreamResampler::new(44_100, 16_000);
        let mut parts = Vec::new();
        for c in x.chunks(777) {
            parts.extend(r.push(c));
        }
        parts.extend(r.finish());
        assert_eq!(parts, whole);
    }
}
