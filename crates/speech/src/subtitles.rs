//! Transcripts as subtitle files: SubRip (`.srt`) and WebVTT (`.vtt`), one cue per segment, for
//! video players, meeting tools and caption editors. Segments of a call split by channel name their
//! speaker: a WebVTT voice span (`<v Channel 1>`), or a `Channel 1: ` prefix in SubRip, which has
//! no markup for it.

use crate::recognizer::Segment;

/// Subtitle formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subtitles {
    /// SubRip: numbered cues, `00:00:01,250 --> 00:00:03,000`.
    Srt,
    /// WebVTT: `WEBVTT` header, `00:00:01.250 --> 00:00:03.000`.
    WebVtt,
}

impl Subtitles {
    /// `srt` or `vtt`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "srt" => Some(Self::Srt),
            "vtt" => Some(Self::WebVtt),
            _ => None,
        }
    }

    /// The media type of the file.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Srt => "application/x-subrip; charset=utf-8",
            Self::WebVtt => "text/vtt; charset=utf-8",
        }
    }

    /// The file: one cue per segment with text, in order.
    pub fn render(self, segments: &[Segment]) -> String {
        let mut out = String::new();
        if self == Self::WebVtt {
            out.push_str("WEBVTT\n\n");
        }
        let cues = segments.iter().filter(|s| !s.text.is_empty());
        for (n, s) in cues.enumerate() {
            let (sep, speaker) = match self {
                Self::Srt => (',', s.channel.map(|c| format!("Channel {}: ", c + 1))),
                Self::WebVtt => ('.', s.channel.map(|c| format!("<v Channel {}>", c + 1))),
            };
            if self == Self::Srt {
                out.push_str(&format!("{}\n", n + 1));
            }
            let end = s.end.max(s.start);
            out.push_str(&format!(
                "{} --> {}\n{}{}\n\n",
                timestamp(s.start, sep),
                timestamp(end, sep),
                speaker.unwrap_or_default(),
                match self {
                    Self::Srt => s.text.clone(),
                    Self::WebVtt => escape_vtt(&s.text),
                }
            ));
        }
        out
    }
}

/// `HH:MM:SS<sep>mmm`, rounded to the millisecond.
fn timestamp(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// WebVTT cue text cannot hold `&`, `<` or `>` as themselves.
fn escape_vtt(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: f64, end: f64, text: &str, channel: Option<usize>) -> Segment {
        Segment {
            start,
            end,
            text: text.into(),
            channel,
        }
    }

    #[test]
    fn srt_and_webvtt_cues() {
        let segs = [
            seg(0.166, 6.4585, "AFTER EARLY NIGHTFALL", None),
            seg(7.0, 7.0, "", None),
            seg(3725.0004, 3727.5, "R&D <NOW>", None),
        ];
        assert_eq!(
            Subtitles::Srt.render(&segs),
            "1\n00:00:00,166 --> 00:00:06,459\nAFTER EARLY NIGHTFALL\n\n\
             2\n01:02:05,000 --> 01:02:07,500\nR&D <NOW>\n\n"
        );
        assert_eq!(
            Subtitles::WebVtt.render(&segs),
            "WEBVTT\n\n00:00:00.166 --> 00:00:06.459\nAFTER EARLY NIGHTFALL\n\n\
             01:02:05.000 --> 01:02:07.500\nR&amp;D &lt;NOW&gt;\n\n"
        );
        assert_eq!(Subtitles::WebVtt.render(&[]), "WEBVTT\n\n");
        assert_eq!(Subtitles::Srt.render(&[]), "");
    }

    #[test]
    fn channels_name_the_speaker() {
        let segs = [
            seg(0.0, 1.0, "HELLO", Some(0)),
            seg(0.5, 2.0, "HI", Some(1)),
        ];
        assert_eq!(
            Subtitles::WebVtt.render(&segs),
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n<v Channel 1>HELLO\n\n\
             00:00:00.500 --> 00:00:02.000\n<v Channel 2>HI\n\n"
        );
        assert!(Subtitles::Srt.render(&segs).contains("\nChannel 2: HI\n"));
    }
}
