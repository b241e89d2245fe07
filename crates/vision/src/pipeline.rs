//! The whole job on encoded bytes: decode → detect → anonymise → encode, with the time of each stage
//! (a photo with no face to anonymise is answered with its own data, stripped of metadata).
//! Shared by the HTTP face slot and the `switchyard blur`/`detect` commands.

use std::time::Instant;

use crate::imageio::{self, Format, Quality};
use crate::{Face, FaceDetector, Result, Style, anonymize};

/// How to anonymise.
#[derive(Debug, Clone, Copy)]
pub struct BlurOptions {
    /// Style.
    pub style: Style,
    /// Strength multiplier (1 = default).
    pub strength: f32,
    /// Box growth on each side, as a fraction of the box size.
    pub margin: f32,
    /// Output format; `None` = the input's.
    pub format: Option<Format>,
    /// JPEG quality: by default the input's own quantization tables (see [`Quality::Auto`]).
    pub quality: Quality,
}

impl Default for BlurOptions {
    fn default() -> Self {
        Self {
            style: Style::Blur,
            strength: 1.0,
            margin: 0.2,
            format: None,
            quality: Quality::Auto,
        }
    }
}

/// Seconds spent in each stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Decoding the input.
    pub decode: f64,
    /// Detection (pre-processing, inference, decoding of outputs, NMS).
    pub infer: f64,
    /// Anonymising.
    pub anonymize: f64,
    /// Encoding the output.
    pub encode: f64,
}

/// How the output image was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// No output (detection only).
    #[default]
    None,
    /// The input's own data, its metadata stripped: nothing to anonymise, nothing to convert.
    Kept,
    /// A JPEG whose MCUs away from the faces are the input's ([`crate::splice`]).
    Spliced,
    /// Encoded in full from the anonymised pixels.
    Encoded,
}

impl Output {
    /// The ways [`blur`] makes an output.
    pub const MADE: [Output; 3] = [Output::Kept, Output::Spliced, Output::Encoded];

    /// The metric label: `none`, `kept`, `spliced` or `encoded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Output::None => "none",
            Output::Kept => "kept",
            Output::Spliced => "spliced",
            Output::Encoded => "encoded",
        }
    }
}

/// Faces found in an image.
#[derive(Debug, Clone)]
pub struct Detection {
    /// Image width after EXIF orientation.
    pub width: u32,
    /// Image height after EXIF orientation.
    pub height: u32,
    /// The faces, in image pixels.
    pub faces: Vec<Face>,
    /// The input's format.
    pub format: Format,
    /// Stage times.
    pub timings: Timings,
    /// How the output was made ([`Output::None`] for [`detect`]).
    pub output: Output,
}

/// Decodes and detects.
pub fn detect(det: &FaceDetector, bytes: &[u8], max_pixels: u64) -> Result<Detection> {
    let _request = det.model.request();
    let (decoded, d) = decode_detect(det, bytes, max_pixels)?;
    imageio::recycle(decoded.image);
    Ok(d)
}

fn decode_detect(
    det: &FaceDetector,
    bytes: &[u8],
    max_pixels: u64,
) -> Result<(imageio::Decoded, Detection)> {
    let t0 = Instant::now();
    let decoded = imageio::decode(bytes, max_pixels)?;
    let t1 = Instant::now();
    let faces = det.detect(&decoded.image)?;
    let t2 = Instant::now();
    let (width, height) = decoded.image.dimensions();
    let timings = Timings {
        decode: (t1 - t0).as_secs_f64(),
        infer: (t2 - t1).as_secs_f64(),
        ..Default::default()
    };
    let format = decoded.format;
    Ok((
        decoded,
        Detection {
            width,
            height,
            faces,
            format,
            timings,
            output: Output::None,
        },
    ))
}

/// Whether the input's own compressed data can serve for an output in `format` at `quality`: the
/// same format, JPEG or WebP at [`Quality::Auto`] (PNG at any), pixels stored upright.
fn keeps_input_data(decoded: &imageio::Decoded, format: Format, quality: Quality) -> bool {
    format == decoded.format
        && (format == Format::Png || quality == Quality::Auto)
        && !decoded.reoriented
}

/// The input itself, without its metadata ([`crate::stripped`]), when there is nothing to
/// anonymise and nothing asked of the output that the input's own data does not already give.
fn unchanged_output(
    bytes: &[u8],
    decoded: &imageio::Decoded,
    faces: usize,
    format: Format,
    quality: Quality,
) -> Option<Vec<u8>> {
    if faces > 0 || !keeps_input_data(decoded, format, quality) {
        return None;
    }
    crate::stripped::stripped(bytes, format)
}

/// Decodes, detects, anonymises and encodes. Returns the output bytes, their format and the detection.
pub fn blur(
    det: &FaceDetector,
    bytes: &[u8],
    max_pixels: u64,
    opts: &BlurOptions,
) -> Result<(Vec<u8>, Format, Detection)> {
    let _request = det.model.request();
    blur_marked(det, bytes, max_pixels, opts)
}

/// [`blur`] for a caller that already holds [`Model::request`](switchyard_infer::Model::request)
/// for this photo, over more than the pipeline sees (a batch worker from reading the file to writing
/// the result), so that the pipeline knows a photo is alone only when it really is.
pub fn blur_marked(
    det: &FaceDetector,
    bytes: &[u8],
    max_pixels: u64,
    opts: &BlurOptions,
) -> Result<(Vec<u8>, Format, Detection)> {
    let (mut decoded, d) = decode_detect(det, bytes, max_pixels)?;
    let out = anonymise_encode(det, bytes, &mut decoded, d, opts);
    imageio::recycle(decoded.image);
    out
}

fn anonymise_encode(
    det: &FaceDetector,
    bytes: &[u8],
    decoded: &mut imageio::Decoded,
    mut d: Detection,
    opts: &BlurOptions,
) -> Result<(Vec<u8>, Format, Detection)> {
    let format = opts.format.unwrap_or(d.format);
    let t0 = Instant::now();
    if let Some(out) = unchanged_output(bytes, decoded, d.faces.len(), format, opts.quality) {
        d.timings.encode = t0.elapsed().as_secs_f64();
        d.output = Output::Kept;
        return Ok((out, format, d));
    }
    let spliceable = format == Format::Jpeg && keeps_input_data(decoded, format, opts.quality);
    let (img, channels) = (&mut decoded.image, &decoded.channels);
    let regions = anonymize(img, &d.faces, opts.style, opts.strength, opts.margin);
    let t1 = Instant::now();
    // A JPEG kept a JPEG at its own quality: the input's bits wherever no face was (no second
    // generation of loss there, and a fraction of the encoding work).
    let spliced = if spliceable {
        let icc = channels
            .icc_profile
            .as_deref()
            .filter(|p| imageio::icc_fits(p, false));
        crate::splice::splice(bytes, img, &regions, icc)
    } else {
        None
    };
    let out = match spliced {
        Some(out) => {
            d.output = Output::Spliced;
            out
        }
        None => {
            d.output = Output::Encoded;
            // With adaptive threads (the face slot's `threads = 0`), a request alone on the model
            // encodes on every core; with others in progress the cores are busy with them, one
            // thread each is better.
            let threads = if det.model.alone() {
                switchyard_infer::cores()
            } else {
                1
            };
            imageio::encode_channels(img, channels, format, opts.quality, threads)?
        }
    };
    d.timings.anonymize = (t1 - t0).as_secs_f64();
    d.timings.encode = t1.elapsed().as_secs_f64();
    Ok((out, format, d))
}
