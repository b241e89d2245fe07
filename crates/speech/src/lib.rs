//! Speech recognition for Switchyard's `asr` slots, in-process.
//!
//! * [`audio`]: WAV/FLAC/MP3/OGG decoding (symphonia), downmix, resampling to 16 kHz (rubato);
//! * [`gsm`]: GSM 06.10 WAV decoding (call recordings; symphonia has no GSM codec);
//! * [`fbank`]: Kaldi-compatible log-mel features, computed incrementally;
//! * [`transducer`]: sherpa-onnx streaming transducers (encoder/decoder/joiner), greedy search,
//!   configured from the model's own metadata;
//! * [`vad`]: Silero VAD and an online speech segmenter;
//! * [`recognizer`]: sessions that turn audio into partial and final results, for files and live
//!   streams alike;
//! * [`subtitles`]: transcripts as SubRip and WebVTT files.

pub mod audio;
pub mod fbank;
pub mod gsm;
pub mod recognizer;
pub mod subtitles;
pub mod transducer;
pub mod vad;

pub use audio::{Audio, AudioError};
pub use recognizer::{Event, Recognizer, RecognizerOptions, Segment, Session, Transcript};
pub use transducer::{AsrError, Decoding, Transducer, TransducerInfo};
pub use vad::{VadModel, VadOptions};

/// Word error rate pieces: (substitutions + deletions + insertions, reference words), by word-level
/// Levenshtein distance after the reference scorer's normalisation: upper case, hyphens as spaces.
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let words = |s: &str| -> Vec<String> {
        s.to_uppercase()
            .replace('-', " ")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let (r, h) = (words(reference), words(hypothesis));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    (prev[h.len()], r.len())
}
