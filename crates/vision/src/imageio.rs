//! Image decoding and encoding for untrusted input.
//!
//! Decoding refuses anything that is not JPEG, PNG or WebP, checks the pixel count from the header
//! *before* decoding (so a decompression bomb is refused without allocating), bounds the decoder's
//! allocations, and applies the EXIF orientation. Encoding writes the pixels and the input's ICC
//! colour profile (when it fits the output's colour space) only: EXIF, GPS, XMP and other metadata of
//! the input never reach the output (nor through [`crate::stripped`], the no-face path). A grayscale input stays grayscale and an alpha channel is kept,
//! in the formats that can hold them (PNG, WebP).

use std::borrow::Cow;
use std::io::Cursor;

use image::{
    DynamicImage, ExtendedColorType, GrayImage, ImageDecoder, ImageEncoder, ImageFormat,
    ImageReader, Limits, RgbImage,
};

use switchyard_infer::spare::Spares;

use crate::ycbcr::{Rgb420, Rgb444};
use crate::{Error, Result};

/// Spare pixel buffers: decoded photos and their resized copies for a detector, each megabytes
/// that a fresh allocation would have the kernel map and zero again for every request.
static PIXELS: Spares<u8> = Spares::new(64 << 20);

/// A zeroed buffer of `len` bytes for pixels: a spare when one fits, else a new one. A spare is
/// zeroed again, although decoders and resizers write every pixel: a decoder that stopped early
/// on damaged data must never leave another request's photo in this one's output. (Zeroing pages
/// already mapped costs a fraction of what mapping fresh ones does.)
pub(crate) fn pixel_buffer(len: usize) -> Vec<u8> {
    match PIXELS.take(len) {
        Some(mut v) => {
            v.clear();
            v.resize(len, 0);
            v
        }
        None => vec![0; len],
    }
}

/// Gives an image's pixel buffer back, for a later decode or resize of the same size to fill.
pub fn recycle(image: RgbImage) {
    PIXELS.put(image.into_raw());
}

/// Bytes of spare pixel buffers held now.
pub fn spare_pixel_bytes() -> usize {
    PIXELS.held_bytes()
}

/// Supported formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// WebP: lossy (libwebp) when the input was lossy or a quality is given, else lossless.
    Webp,
}

impl Format {
    /// Parses `jpeg`/`jpg`, `png`, `webp`.
    pub fn from_name(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" | "image/jpeg" => Some(Format::Jpeg),
            "png" | "image/png" => Some(Format::Png),
            "webp" | "image/webp" => Some(Format::Webp),
            _ => None,
        }
    }

    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Webp => "webp",
        }
    }
}

/// A decoded image, upright.
pub struct Decoded {
    /// RGB pixels after EXIF orientation.
    pub image: RgbImage,
    /// What the input had besides colour pixels, for the output to keep.
    pub channels: Channels,
    /// The input's format.
    pub format: Format,
    /// The EXIF orientation turned or flipped the stored pixels to make them upright.
    pub reoriented: bool,
}

/// What a decoded image had besides its RGB pixels, so that the output keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Channels {
    /// The input was grayscale: PNG and WebP output is grayscale too (JPEG output stays YCbCr, its
    /// chroma all neutral).
    pub gray: bool,
    /// The input's alpha channel, upright like the image: PNG and WebP output keeps it as it was
    /// (anonymisation changes colour only); JPEG cannot hold one: the image is flattened onto white.
    pub alpha: Option<GrayImage>,
    /// The input's ICC colour profile: the output carries it when it describes the output's colour
    /// space (RGB, or gray for a grayscale PNG or WebP), so that colours look the same as in the
    /// input (a Display P3 phone photo untagged would be shown as sRGB, washed out). It names a
    /// colour space, nothing about the person or the place; EXIF and XMP are still dropped.
    pub icc_profile: Option<Vec<u8>>,
    /// A JPEG input's quantization tables: JPEG output at [`Quality::Auto`] uses them, so that it is
    /// about the size of the input and re-quantised on the input's own grid (a phone's or a
    /// website's q75 photo is neither inflated to q90 nor degraded).
    pub jpeg_tables: Option<JpegTables>,
    /// The input was lossy (a JPEG, or a WebP holding a `VP8 ` bitstream): the quality WebP output
    /// at [`Quality::Auto`] is written at, not a lossless file several times the input's size. A
    /// lossy WebP's own quality ([`crate::webp::quality`]), else [`DEFAULT_QUALITY`]. `None`: a PNG
    /// or lossless WebP input, which stays lossless.
    pub lossy: Option<u8>,
}

/// The luma and chroma quantization tables of a JPEG, in natural (row-major) order, 8-bit values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegTables {
    /// The table of the first component (Y).
    pub luma: [u16; 64],
    /// The table of the second component (Cb; the luma one for a grayscale JPEG).
    pub chroma: [u16; 64],
    /// Chroma at full resolution (4:4:4, what "maximum quality" exports write): the output keeps
    /// it so. Otherwise the output is 4:2:0.
    pub full_chroma: bool,
}

/// Output quality: JPEG's, and lossy WebP's (libwebp's scale, as `cwebp -q`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// libjpeg's scale, 1–100: the standard (Annex K) tables scaled as libjpeg and Pillow scale them.
    Fixed(u8),
    /// The input's own quantization tables when it was a JPEG with 8-bit tables
    /// ([`Channels::jpeg_tables`]), else [`DEFAULT_QUALITY`]. WebP: lossy when the input was lossy,
    /// at a lossy WebP input's own quality, else at [`DEFAULT_QUALITY`] ([`Channels::lossy`]);
    /// lossless otherwise.
    Auto,
}

/// The quality of JPEG output when the input's cannot be kept (a PNG or WebP input), and of lossy
/// WebP output at [`Quality::Auto`] when the input's cannot be read (a JPEG input).
pub const DEFAULT_QUALITY: u8 = 90;

impl From<u8> for Quality {
    fn from(q: u8) -> Self {
        Quality::Fixed(q)
    }
}

/// The tables one JPEG encoding uses.
#[derive(Debug, Clone, Copy)]
enum Tables<'a> {
    Scaled(u8),
    Custom(&'a JpegTables),
}

/// Position of each zigzag-ordered coefficient in natural order (ITU T.81 figure A.6).
pub(crate) const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// The JPEG marker segment at `pos`, fill bytes (0xFF) before it skipped: where its marker
/// starts, the marker, and the segment's length field (the body is `pos + 4..pos + 2 + len`).
pub(crate) fn jpeg_segment(b: &[u8], mut pos: usize) -> Option<(usize, u8, usize)> {
    while *b.get(pos)? == 0xFF && *b.get(pos + 1)? == 0xFF {
        pos += 1;
    }
    if *b.get(pos)? != 0xFF {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*b.get(pos + 2)?, *b.get(pos + 3)?]));
    Some((pos, *b.get(pos + 1)?, len))
}

/// The tables of a DQT segment's body: for each, its id (0–3), whether its values are 16-bit, and
/// the values in natural order. `None` for a damaged segment, an id over 3 or a zero step (invalid;
/// decoders differ on what they make of it).
pub(crate) fn dqt_tables(mut body: &[u8]) -> Option<Vec<(usize, bool, [u16; 64])>> {
    let mut tables = Vec::new();
    while let [pq_tq, tail @ ..] = body {
        let (sixteen, id) = (pq_tq >> 4 != 0, usize::from(pq_tq & 0x0F));
        let size = if sixteen { 128 } else { 64 };
        let values = tail.get(..size)?;
        let mut table = [0u16; 64];
        for (k, &at) in ZIGZAG.iter().enumerate() {
            table[at] = if sixteen {
                u16::from_be_bytes([values[2 * k], values[2 * k + 1]])
            } else {
                u16::from(values[k])
            };
        }
        if id > 3 || table.contains(&0) {
            return None;
        }
        tables.push((id, sixteen, table));
        body = &tail[size..];
    }
    Some(tables)
}

/// The quantization tables of a baseline, extended or progressive Huffman JPEG as its first scan
/// uses them; `None` for anything else (arithmetic or lossless coding, 16-bit tables with values
/// over 255, a table used but not defined, a damaged header).
pub fn jpeg_tables(b: &[u8]) -> Option<JpegTables> {
    if b.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut defined: [Option<[u16; 64]>; 4] = [None; 4];
    let mut uses: Option<(usize, usize, bool)> = None;
    let mut pos = 2;
    loop {
        let (marker, len);
        (pos, marker, len) = jpeg_segment(b, pos)?;
        let body = || b.get(pos + 4..(pos + 2 + len).max(pos + 4));
        match marker {
            0xDB => {
                for (id, _, table) in dqt_tables(body()?)? {
                    if table.iter().any(|&v| v > 255) {
                        return None;
                    }
                    defined[id] = Some(table);
                }
            }
            // Huffman-coded frames: baseline, extended, progressive.
            0xC0..=0xC2 => {
                let body = body()?;
                let n = usize::from(*body.get(5)?);
                let table_of = |c: usize| body.get(6 + 3 * c + 2).map(|&t| usize::from(t));
                let sampling_of = |c: usize| body.get(6 + 3 * c + 1).copied();
                let luma = table_of(0)?;
                let chroma = if n >= 3 { table_of(1)? } else { luma };
                let full = n >= 3
                    && sampling_of(0)? == sampling_of(1)?
                    && sampling_of(0)? == sampling_of(2)?;
                uses = Some((luma, chroma, full));
            }
            // Other frame types (lossless, hierarchical, arithmetic coding).
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
            0xDA => {
                let (luma, chroma, full_chroma) = uses?;
                return Some(JpegTables {
                    luma: (*defined.get(luma)?)?,
                    chroma: (*defined.get(chroma)?)?,
                    full_chroma,
                });
            }
            0xD9 => return None,
            _ => {}
        }
        pos += 2 + len;
    }
}

/// Decodes untrusted bytes into an upright RGB image of at most `max_pixels` pixels.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Decoded> {
    if bytes.is_empty() {
        return Err(Error::BadImage("the body is empty; send an image".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::BadImage(format!("cannot read the image: {e}")))?;
    let format = match reader.format() {
        Some(ImageFormat::Jpeg) => Format::Jpeg,
        Some(ImageFormat::Png) => Format::Png,
        Some(ImageFormat::WebP) => Format::Webp,
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "{other:?} images are not supported; send JPEG, PNG or WebP"
            )));
        }
        None => {
            return Err(Error::BadImage(
                "the body is not a JPEG, PNG or WebP image".into(),
            ));
        }
    };
    if format == Format::Jpeg && !jpeg_is_complete(bytes) {
        return Err(Error::BadImage(
            "the JPEG is truncated (no end-of-image marker after its last scan)".into(),
        ));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(4).saturating_add(64 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels == 0 {
        return Err(Error::BadImage("the image has no pixels".into()));
    }
    if pixels > max_pixels {
        return Err(Error::TooLarge(format!(
            "the image has {w}×{h} = {pixels} pixels; the limit is {max_pixels}"
        )));
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    // A damaged profile is no reason to refuse the pixels: the output is then untagged, as before.
    let icc_profile = decoder.icc_profile().ok().flatten();
    let mut img = if decoder.color_type() == image::ColorType::Rgb8 {
        // What `DynamicImage::from_decoder` does, into a spare buffer.
        let len = usize::try_from(decoder.total_bytes())
            .map_err(|_| Error::TooLarge("the image is too large to decode here".into()))?;
        let mut buf = pixel_buffer(len);
        decoder.read_image(&mut buf).map_err(decode_error)?;
        let rgb = RgbImage::from_raw(w, h, buf).ok_or_else(|| {
            Error::BadImage("the decoder's output does not match the image size".into())
        })?;
        DynamicImage::ImageRgb8(rgb)
    } else {
        DynamicImage::from_decoder(decoder).map_err(decode_error)?
    };
    img.apply_orientation(orientation);
    let color = img.color();
    let (image, alpha) = if color.has_alpha() {
        let rgba = match img {
            DynamicImage::ImageRgba8(rgba) => rgba,
            other => other.to_rgba8(),
        };
        let (image, alpha) = split_alpha(&rgba);
        (image, Some(alpha))
    } else {
        let rgb = match img {
            DynamicImage::ImageRgb8(rgb) => rgb,
            other => other.to_rgb8(),
        };
        (rgb, None)
    };
    let channels = Channels {
        gray: !color.has_color(),
        alpha,
        icc_profile,
        jpeg_tables: if format == Format::Jpeg {
            jpeg_tables(bytes)
        } else {
            None
        },
        lossy: match format {
            Format::Jpeg => Some(DEFAULT_QUALITY),
            Format::Png => None,
            Format::Webp => crate::webp::lossy_quality(bytes, DEFAULT_QUALITY),
        },
    };
    Ok(Decoded {
        image,
        channels,
        format,
        reoriented: orientation != image::metadata::Orientation::NoTransforms,
    })
}

fn split_alpha(rgba: &image::RgbaImage) -> (RgbImage, GrayImage) {
    let (w, h) = rgba.dimensions();
    let mut rgb = RgbImage::new(w, h);
    let mut alpha = GrayImage::new(w, h);
    for ((px, c), a) in rgba
        .as_raw()
        .chunks_exact(4)
        .zip(rgb.chunks_exact_mut(3))
        .zip(alpha.iter_mut())
    {
        c.copy_from_slice(&px[..3]);
        *a = px[3];
    }
    (rgb, alpha)
}

/// Whether a JPEG ends its last scan with an end-of-image marker. Inside entropy-coded data 0xFF is
/// always followed by 0x00 or a restart marker, so `FF D9` after the last `FF DA` (start of scan) can
/// only be the real end. Data after the marker (motion photos, padding) is allowed.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(i) => bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

fn decode_error(e: image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(l) => {
            Error::TooLarge(format!("the image is too large to decode: {l}"))
        }
        other => Error::BadImage(format!("the image is damaged or truncated: {other}")),
    }
}

/// Encodes RGB pixels (no metadata) at `quality` (1–100): JPEG, lossy WebP, or PNG.
pub fn encode(img: &RgbImage, format: Format, quality: u8) -> Result<Vec<u8>> {
    encode_threads(img, format, quality, 1)
}

/// [`encode_threads`] with the input's [`Channels`]: PNG is written grayscale when the input was,
/// PNG and WebP with its alpha channel when it had one. JPEG, which holds no alpha, gets the image
/// flattened onto white; at [`Quality::Auto`] it uses the input's quantization tables when it has
/// them. WebP is lossy at a given quality, or at [`Quality::Auto`] when the input was lossy
/// ([`Channels::lossy`]). The input's ICC profile goes with the pixels when it fits the output.
pub fn encode_channels(
    img: &RgbImage,
    channels: &Channels,
    format: Format,
    quality: impl Into<Quality>,
    threads: usize,
) -> Result<Vec<u8>> {
    let quality = quality.into();
    let lossy_webp = match quality {
        Quality::Fixed(q) => Some(q),
        Quality::Auto => channels.lossy,
    };
    let quality = match (quality, &channels.jpeg_tables) {
        (Quality::Fixed(q), _) => Tables::Scaled(q),
        (Quality::Auto, Some(t)) => Tables::Custom(t),
        (Quality::Auto, None) => Tables::Scaled(DEFAULT_QUALITY),
    };
    let (w, h) = img.dimensions();
    let alpha = match &channels.alpha {
        Some(a) if a.dimensions() != (w, h) => {
            return Err(Error::Encode(format!(
                "alpha channel is {:?}, the image {w}×{h}",
                a.dimensions()
            )));
        }
        Some(a) => Some(a.as_raw()),
        None => None,
    };
    // WebP stores colour (VP8L's ARGB, VP8's YUV) even for gray pixels, so only PNG is gray.
    let gray_output = channels.gray && format == Format::Png;
    let icc = channels
        .icc_profile
        .as_deref()
        .filter(|p| icc_fits(p, gray_output));
    if let (Format::Webp, Some(q)) = (format, lossy_webp) {
        return crate::webp::encode_lossy(img.as_raw(), alpha.map(|a| &a[..]), (w, h), q, icc);
    }
    // Rec. 709 luma in integers: exact for a neutral pixel (r = g = b), which every pixel of a
    // grayscale input still is after anonymisation (it treats the three channels alike).
    let luma = |p: &[u8]| {
        ((2126 * u32::from(p[0]) + 7152 * u32::from(p[1]) + 722 * u32::from(p[2]) + 5000) / 10_000)
            as u8
    };
    let px = img.as_raw().chunks_exact(3);
    let (bytes, color): (Cow<'_, [u8]>, ExtendedColorType) = match (format, gray_output, alpha) {
        // JPEG holds no alpha: flatten onto white, as an image editor does, rather than show
        // whatever colour the transparent pixels happen to hold.
        (Format::Jpeg, _, Some(a)) => {
            let mut flat = img.clone();
            for (p, &a) in flat.chunks_exact_mut(3).zip(a) {
                for c in p {
                    *c = ((u32::from(*c) * u32::from(a) + 255 * (255 - u32::from(a)) + 127) / 255)
                        as u8;
                }
            }
            return encode_jpeg(&flat, quality, threads, icc);
        }
        (Format::Jpeg, _, None) => return encode_jpeg(img, quality, threads, icc),
        (_, false, None) => (Cow::Borrowed(img.as_raw()), ExtendedColorType::Rgb8),
        (_, true, None) => (px.map(luma).collect(), ExtendedColorType::L8),
        (_, true, Some(a)) => (
            px.zip(a).flat_map(|(p, &a)| [luma(p), a]).collect(),
            ExtendedColorType::La8,
        ),
        (_, false, Some(a)) => (
            px.zip(a)
                .flat_map(|(p, &a)| [p[0], p[1], p[2], a])
                .collect(),
            ExtendedColorType::Rgba8,
        ),
    };
    encode_lossless(format, &bytes, (w, h), color, icc)
}

/// Whether an ICC profile can tag the output: a well-formed header (the `acsp` signature, the
/// profile's own length) whose data colour space is the output's, RGB or gray. A CMYK or Lab
/// profile (the pixels were converted to RGB on decoding) or a gray one on colour output would
/// misdescribe the pixels.
pub(crate) fn icc_fits(profile: &[u8], gray_output: bool) -> bool {
    let space: &[u8] = if gray_output { b"GRAY" } else { b"RGB " };
    let declared = profile
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes);
    profile.len() >= 128
        && declared.is_some_and(|n| n as usize == profile.len())
        && profile.get(36..40) == Some(b"acsp")
        && profile.get(16..20) == Some(space)
}

/// PNG or lossless WebP of `bytes` laid out as `color`, tagged with `icc` when given.
fn encode_lossless(
    format: Format,
    bytes: &[u8],
    (w, h): (u32, u32),
    color: ExtendedColorType,
    icc: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::with_capacity(bytes.len() / 2));
    // An encoder that cannot take the profile writes the pixels untagged.
    let result = match format {
        Format::Png => {
            let mut enc = image::codecs::png::PngEncoder::new(&mut out);
            if let Some(p) = icc {
                let _ = enc.set_icc_profile(p.to_vec());
            }
            enc.write_image(bytes, w, h, color)
        }
        _ => {
            let mut enc = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            if let Some(p) = icc {
                let _ = enc.set_icc_profile(p.to_vec());
            }
            enc.write_image(bytes, w, h, color)
        }
    };
    result.map_err(|e| Error::Encode(e.to_string()))?;
    Ok(out.into_inner())
}

/// [`encode`] on up to `threads` threads. JPEG only (PNG and WebP use one): the image is cut into
/// horizontal strips of whole MCU rows, encoded at once and joined with restart markers, which gives
/// the same bytes as one encoder writing a restart marker after each strip's MCUs.
pub fn encode_threads(
    img: &RgbImage,
    format: Format,
    quality: u8,
    threads: usize,
) -> Result<Vec<u8>> {
    encode_channels(img, &Channels::default(), format, quality, threads)
}

impl Tables<'_> {
    /// Chroma at full resolution.
    fn full_chroma(self) -> bool {
        matches!(self, Tables::Custom(t) if t.full_chroma)
    }

    /// Pixel rows of one MCU, and its width: 16 at 4:2:0, 8 at 4:4:4.
    fn mcu(self) -> usize {
        if self.full_chroma() { 8 } else { 16 }
    }
}

/// Baseline JPEG, 4:2:0 chroma subsampling (libjpeg's default, what cameras write) unless the input's
/// tables say 4:4:4, through `jpeg-encoder` with its AVX2 paths (chosen at run time): 3–4× faster
/// than `image`'s encoder on a 1080p photo, which made encoding the largest cost after inference.
/// Chroma is each 2×2 block's average, as libjpeg makes it ([`Rgb420`]), not the encoder's default
/// point sample.
fn encode_jpeg(
    img: &RgbImage,
    quality: Tables<'_>,
    threads: usize,
    icc: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let (w, h) = img.dimensions();
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        // The client's image is fine, JPEG just cannot hold it: a 413 that says what to ask for.
        return Err(Error::TooLarge(format!(
            "JPEG holds at most 65535×65535 pixels, the image is {w}×{h}; ask for format=png"
        )));
    };
    let mcu = quality.mcu();
    let (cols, rows) = ((w as usize).div_ceil(mcu), (h as usize).div_ceil(mcu));
    // Strips of at least 128 pixel rows: thinner ones cost more in threads than they save.
    let threads = threads.min(rows * mcu / 128).max(1);
    // A restart interval counts MCUs in 16 bits; a row holds at most 8192 (4:4:4), so a strip has
    // ≥ 7 rows.
    let strip_rows = rows
        .div_ceil(threads)
        .min(usize::from(u16::MAX) / cols.max(1));
    if threads <= 1 || strip_rows >= rows {
        return jpeg_strip(img.as_raw(), w16, h16, quality, icc);
    }
    let row_bytes = w as usize * 3;
    let strips: Vec<&[u8]> = img.as_raw().chunks(strip_rows * mcu * row_bytes).collect();
    let encode = |px: &[u8]| jpeg_strip(px, w16, (px.len() / row_bytes) as u16, quality, icc);
    let per_thread = strips.len().div_ceil(threads);
    let parts: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
        let mut groups = strips.chunks(per_thread);
        let mine = groups.next().unwrap_or_default();
        let others: Vec<_> = groups
            .map(|g| s.spawn(move || g.iter().map(|px| encode(px)).collect::<Vec<_>>()))
            .collect();
        let mut parts: Vec<_> = mine.iter().map(|px| encode(px)).collect();
        for t in others {
            match t.join() {
                Ok(p) => parts.extend(p),
                Err(_) => parts.push(Err(Error::Encode("a JPEG encoder thread panicked".into()))),
            }
        }
        parts
    });
    let parts = parts.into_iter().collect::<Result<Vec<_>>>()?;
    match join_strips(&parts, h16, (strip_rows * cols) as u16) {
        Some(out) => Ok(out),
        // Not the layout this code knows (a new jpeg-encoder version?): encode in one piece.
        None => jpeg_strip(img.as_raw(), w16, h16, quality, icc),
    }
}

/// One baseline JPEG of `h` rows (every strip of an image gets the same headers, the ICC profile
/// included, so that they can be joined).
fn jpeg_strip(
    px: &[u8],
    w: u16,
    h: u16,
    quality: Tables<'_>,
    icc: Option<&[u8]>,
) -> Result<Vec<u8>> {
    use jpeg_encoder::QuantizationTableType::Custom;
    let mut out = Vec::with_capacity(px.len() / 8);
    let mut enc = match quality {
        Tables::Scaled(q) => jpeg_encoder::Encoder::new(&mut out, q.clamp(1, 100)),
        Tables::Custom(t) => {
            let mut enc = jpeg_encoder::Encoder::new(&mut out, 100);
            enc.set_quantization_tables(Custom(Box::new(t.luma)), Custom(Box::new(t.chroma)));
            enc
        }
    };
    if let Some(p) = icc {
        // Too large for APP2 segments (over 16 MB): the pixels go out untagged.
        let _ = enc.add_icc_profile(p);
    }
    let not_rgb = || Error::Encode(format!("{} bytes are not {w}×{h} RGB pixels", px.len()));
    let done = if quality.full_chroma() {
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_1_1);
        enc.encode_image(Rgb444::new(px, w, h).ok_or_else(not_rgb)?)
    } else {
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
        enc.encode_image(Rgb420::new(px, w, h).ok_or_else(not_rgb)?)
    };
    done.map_err(|e| Error::Encode(e.to_string()))?;
    Ok(out)
}

/// Offsets in a baseline JPEG: the SOS marker, the first byte of entropy-coded data, and the frame
/// height field of SOF0.
fn jpeg_layout(b: &[u8]) -> Option<(usize, usize, usize)> {
    if b.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let (mut pos, mut sof_height) = (2, None);
    loop {
        if *b.get(pos)? != 0xFF {
            return None;
        }
        let marker = *b.get(pos + 1)?;
        let len = usize::from(u16::from_be_bytes([*b.get(pos + 2)?, *b.get(pos + 3)?]));
        match marker {
            0xC0 => sof_height = Some(pos + 5),
            0xDA => return Some((pos, pos + 2 + len, sof_height?)),
            _ => {}
        }
        pos += 2 + len;
    }
}

/// Joins strips encoded with the same settings into one JPEG of `height` rows: the first strip's
/// headers (frame height changed), a DRI segment, then each strip's entropy-coded data with RSTn
/// markers between them. `None` when the strips do not have the expected, identical headers.
fn join_strips(parts: &[Vec<u8>], height: u16, interval: u16) -> Option<Vec<u8>> {
    let first = parts.first()?;
    let (sos, data, sof_h) = jpeg_layout(first)?;
    // Slices through `get`: a layout other than the one expected gives `None`, never a panic.
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum::<usize>() + 32);
    out.extend_from_slice(first.get(..sos)?);
    out.get_mut(sof_h..sof_h + 2)?
        .copy_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&[0xFF, 0xDD, 0x00, 0x04]);
    out.extend_from_slice(&interval.to_be_bytes());
    out.extend_from_slice(first.get(sos..data)?);
    for (i, p) in parts.iter().enumerate() {
        let (_, d, h) = jpeg_layout(p)?;
        let end = p.len().checked_sub(2)?;
        // Only the frame height may differ from the first strip's headers.
        if (h, d) != (sof_h, data)
            || p.get(..h)? != first.get(..h)?
            || p.get(h + 2..d)? != first.get(h + 2..d)?
            || p.get(end..)? != [0xFF, 0xD9]
        {
            return None;
        }
        if i > 0 {
            out.extend_from_slice(&[0xFF, 0xD0 + ((i - 1) % 8) as u8]);
        }
        out.extend_from_slice(p.get(d..end)?);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_pixel_buffer_comes_back_zeroed() {
        // An odd size no other test asks for, so that the spare is normally this test's own (a
        // test running at once may still take it for a smaller photo: the check holds either way).
        let (w, h) = (1001, 997);
        let len = w as usize * h as usize * 3;
        let mut first = pixel_buffer(len);
        first.fill(0xAB);
        recycle(RgbImage::from_raw(w, h, first).expect("size"));
        let again = pixel_buffer(len);
        assert_eq!(again.len(), len);
        assert!(again.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_recycled_pixel_buffer_keeps_nothing_of_the_last_image() {
        // Two photos of the same size (1.4 MB of pixels, large enough to be kept as spares), the
        // second decoded into the first one's buffer when no other test took it meanwhile.
        let photo = |seed: u32| {
            let img = RgbImage::from_fn(800, 600, |x, y| {
                let v = (x * 7 + y * 13 + seed * 101) % 256;
                image::Rgb([v as u8, (v * seed % 256) as u8, (255 - v) as u8])
            });
            encode(&img, Format::Png, 90).expect("encode")
        };
        let (a, b) = (photo(1), photo(2));
        let first = decode(&a, u64::MAX).expect("decode a").image;
        let expected_a = image::load_from_memory(&a).expect("reference").to_rgb8();
        assert_eq!(first, expected_a);
        recycle(first);
        let second = decode(&b, u64::MAX).expect("decode b").image;
        let expected_b = image::load_from_memory(&b).expect("reference").to_rgb8();
        assert_eq!(second, expected_b);
        recycle(second);
        // A smaller photo in a larger spare: the right length, the right pixels.
        let small = RgbImage::from_fn(700, 500, |x, y| image::Rgb([x as u8, y as u8, 9]));
        let png = encode(&small, Format::Png, 90).expect("encode");
        assert_eq!(decode(&png, u64::MAX).expect("decode").image, small);
    }

    #[test]
    fn strips_that_do_not_match_are_not_joined() {
        let px = vec![128u8; 64 * 32 * 3];
        let a = jpeg_strip(&px, 64, 32, Tables::Scaled(90), None).unwrap();
        let b = jpeg_strip(&px, 64, 32, Tables::Scaled(50), None).unwrap();
        assert!(join_strips(&[a.clone(), a.clone()], 64, 8).is_some());
        // Other quantisation tables: the strips cannot share one header.
        assert!(join_strips(&[a.clone(), b], 64, 8).is_none());
        // Truncated or not a JPEG at all.
        assert!(join_strips(&[a.clone(), a[..a.len() / 2].to_vec()], 64, 8).is_none());
        assert!(join_strips(&[vec![0xFF, 0xD8, 0xFF]], 64, 8).is_none());
        assert!(join_strips(&[], 64, 8).is_none());
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        encode(
            &RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30])),
            Format::Png,
            90,
        )
        .unwrap()
    }

    #[test]
    fn round_trips_each_format() {
        let img = RgbImage::from_fn(32, 16, |x, y| image::Rgb([x as u8 * 8, y as u8 * 16, 7]));
        for f in [Format::Jpeg, Format::Png, Format::Webp] {
            let d = decode(&encode(&img, f, 95).unwrap(), 1 << 20).unwrap();
            assert_eq!((d.format, d.image.dimensions()), (f, (32, 16)));
        }
    }

    #[test]
    fn an_image_wider_than_jpeg_allows_is_refused_as_too_large() {
        let wide = RgbImage::new(65536, 1);
        assert!(matches!(
            encode(&wide, Format::Jpeg, 90),
            Err(Error::TooLarge(m)) if m.contains("format=png")
        ));
        assert!(encode(&wide, Format::Png, 90).is_ok());
    }

    #[test]
    fn refuses_garbage_empty_truncated_and_huge() {
        assert!(matches!(decode(b"", 100), Err(Error::BadImage(_))));
        assert!(matches!(
            decode(b"hello, not an image at all", 100),
            Err(Error::BadImage(_))
        ));
        let full = png(64, 64);
        assert!(matches!(
            decode(&full[..full.len() / 2], 1 << 20),
            Err(Error::BadImage(_))
        ));
        assert!(matches!(
            decode(&full, 64 * 64 - 1),
            Err(Error::TooLarge(_))
        ));
        // GIF is recognised but not accepted.
        assert!(matches!(
            decode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00", 100),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn decompression_bomb_is_refused_from_the_header() {
        // A PNG header claiming 100000×100000 pixels, with no pixel data behind it.
        let mut bomb = Vec::new();
        bomb.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        bomb.extend_from_slice(&13u32.to_be_bytes());
        bomb.extend_from_slice(&ihdr);
        bomb.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
        // The start of the pixel data: a valid zlib stream of a few zero bytes (a real bomb would go
        // on for gigabytes).
        let mut idat = b"IDAT".to_vec();
        idat.extend_from_slice(&[0x78, 0x01, 0x01, 0x0a, 0x00, 0xf5, 0xff]);
        idat.extend_from_slice(&[0u8; 10]);
        idat.extend_from_slice(&0x000a_0001u32.to_be_bytes()); // adler32 of ten zero bytes
        bomb.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
        bomb.extend_from_slice(&idat);
        bomb.extend_from_slice(&crc32fast::hash(&idat).to_be_bytes());
        let r = decode(&bomb, 50_000_000);
        assert!(matches!(r, Err(Error::TooLarge(_))), "{:?}", r.err());
    }
}
