//! WebP's RIFF container (RFC 9649) and lossy WebP output.
//!
//! A lossy WebP photo re-encoded losslessly comes out several times larger than it came in, so a
//! lossy input (or an explicit `quality`) is answered lossy, through libwebp (the `webp` crate, the
//! reference encoder; only its encoder is used: decoding stays in the pure-Rust `image-webp`, so
//! untrusted bytes never reach C code). The profile is added here, in the container, since libwebp's
//! one-call encoder writes none.

use crate::{Error, Result};

/// `VP8X` flags (first byte of its payload).
pub(crate) const ICC: u8 = 0x20;
pub(crate) const EXIF: u8 = 0x08;
pub(crate) const XMP: u8 = 0x04;
pub(crate) const ANIMATION: u8 = 0x02;

/// A chunk: its kind (FourCC) and payload.
pub(crate) type Chunk<'a> = ([u8; 4], &'a [u8]);

/// The chunks of a WebP file in order, or `None` when it is not one or its container is damaged
/// (a chunk running past the RIFF size, a RIFF size past the end of the bytes). Bytes after the
/// RIFF size are not part of the file.
pub(crate) fn chunks(b: &[u8]) -> Option<Vec<Chunk<'_>>> {
    if b.get(..4)? != b"RIFF" || b.get(8..12)? != b"WEBP" {
        return None;
    }
    let riff = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?) as usize;
    let body = b.get(12..riff.checked_add(8)?)?;
    let (mut out, mut pos) = (Vec::new(), 0);
    while pos < body.len() {
        let kind: [u8; 4] = body.get(pos..pos + 4)?.try_into().ok()?;
        let len = u32::from_le_bytes(body.get(pos + 4..pos + 8)?.try_into().ok()?) as usize;
        out.push((kind, body.get(pos + 8..(pos + 8).checked_add(len)?)?));
        // Chunks are padded to an even size (the last one may lack its pad byte in the wild).
        pos += 8 + len + (len & 1);
    }
    Some(out)
}

/// A WebP file of these chunks.
pub(crate) fn assemble(chunks: &[Chunk<'_>]) -> Option<Vec<u8>> {
    let mut out = b"RIFF\0\0\0\0WEBP".to_vec();
    for (kind, data) in chunks {
        out.extend_from_slice(kind);
        out.extend_from_slice(&u32::try_from(data.len()).ok()?.to_le_bytes());
        out.extend_from_slice(data);
        if data.len() & 1 == 1 {
            out.push(0);
        }
    }
    let size = u32::try_from(out.len() - 8).ok()?;
    out[4..8].copy_from_slice(&size.to_le_bytes());
    Some(out)
}

/// A still WebP's lossy (`VP8 `) bitstream; `None` for a lossless (`VP8L`) or animated one (its
/// frames sit inside `ANMF` chunks) or a damaged container.
fn lossy_bitstream(bytes: &[u8]) -> Option<&[u8]> {
    chunks(bytes)?
        .into_iter()
        .find_map(|(kind, data)| (&kind == b"VP8 ").then_some(data))
}

/// Whether a WebP holds a lossy (`VP8 `) bitstream rather than a lossless (`VP8L`) one.
pub fn is_lossy(bytes: &[u8]) -> bool {
    lossy_bitstream(bytes).is_some()
}

/// For a lossy WebP, the quality lossy output keeps: its own ([`quality`]), or `fallback` when its
/// header cannot be read; `None` for a lossless one. One walk over the container.
pub(crate) fn lossy_quality(bytes: &[u8], fallback: u8) -> Option<u8> {
    lossy_bitstream(bytes).map(|vp8| vp8_quality(vp8).unwrap_or(fallback))
}

/// The libwebp quality (0–100, as `cwebp -q`) a lossy WebP was most likely written at, read from
/// the quantiser indices of its `VP8 ` key-frame header; `None` for a lossless, animated or damaged
/// file. Lossy WebP output at [`Quality::Auto`](crate::imageio::Quality::Auto) uses it, as JPEG
/// output uses the input's quantization tables: a q75 phone photo is neither inflated to q90 nor
/// degraded.
///
/// libwebp turns a quality into a quantiser index through its compression curve (`quant_enc.c`:
/// `c = linear(q)^(1/3)`, `index = 127 (1 − c)`), raised per segment to `1 − amp·alpha` by the
/// segment's complexity alpha. With its defaults (what `cwebp`, Pillow and browsers write: four
/// segments, `sns_strength` 50), segment 0 is the least complex one, alpha −127, so its index
/// gives the quality back to within a point or two; an unsegmented frame carries the curve's own
/// index. Other settings shift the estimate by a few points, never out of 0–100.
pub fn quality(bytes: &[u8]) -> Option<u8> {
    vp8_quality(lossy_bitstream(bytes)?)
}

/// [`quality`] of a `VP8 ` chunk's payload.
fn vp8_quality(vp8: &[u8]) -> Option<u8> {
    let indices = quantiser_indices(vp8)?;
    // libwebp: amp = SNS_TO_DQ (0.9) × sns_strength / 100 / 128.
    let exponent = if indices.len() > 1 {
        1.0 + 0.9 * 0.5 / 128.0 * 127.0
    } else {
        1.0
    };
    // libwebp truncates the index; at its lower end the estimate falls on the quality written.
    let c = (1.0 - f64::from(indices[0]) / 127.0).powf(1.0 / exponent);
    let linear = c * c * c;
    let q = if linear < 0.5 {
        linear * 1.5
    } else {
        (linear + 1.0) / 2.0
    };
    Some((100.0 * q).round().clamp(0.0, 100.0) as u8)
}

/// The luma AC quantiser index of each segment of a VP8 key frame (RFC 6386 §9.2–9.6; one value
/// when the frame is not segmented), from the first partition's header.
fn quantiser_indices(vp8: &[u8]) -> Option<Vec<u8>> {
    let tag = u32::from_le_bytes([*vp8.first()?, *vp8.get(1)?, *vp8.get(2)?, 0]);
    if tag & 1 != 0 || vp8.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None; // not a key frame
    }
    let first_partition = (tag >> 5) as usize;
    let mut d = BoolDecoder::new(vp8.get(10..)?.get(..first_partition)?)?;
    d.literal(2); // colour space, clamping type
    let mut segments = None;
    if d.flag() {
        let update_map = d.flag();
        if d.flag() {
            let absolute = d.flag();
            let quantisers: Vec<Option<i32>> =
                (0..4).map(|_| d.flag().then(|| d.signed(7))).collect();
            for _ in 0..4 {
                if d.flag() {
                    d.signed(6); // loop filter level
                }
            }
            segments = Some((absolute, quantisers));
        }
        if update_map {
            for _ in 0..3 {
                if d.flag() {
                    d.literal(8); // tree probability
                }
            }
        }
    }
    d.literal(1 + 6 + 3); // filter type, level, sharpness
    if d.flag() && d.flag() {
        for _ in 0..8 {
            if d.flag() {
                d.signed(6); // reference frame and mode filter deltas
            }
        }
    }
    d.literal(2); // DCT partitions
    let base = d.literal(7) as i32;
    let index = |v: i32| v.clamp(0, 127) as u8;
    Some(match segments {
        Some((true, q)) => q.iter().map(|v| index(v.unwrap_or(0))).collect(),
        Some((false, q)) => q.iter().map(|v| index(base + v.unwrap_or(0))).collect(),
        None => vec![index(base)],
    })
}

/// VP8's boolean entropy decoder (RFC 6386 §7.3), for the frame header's fixed-probability fields.
/// Past the end of its data it reads zeros.
struct BoolDecoder<'a> {
    data: &'a [u8],
    pos: usize,
    value: u32,
    range: u32,
    bits: u32,
}

impl<'a> BoolDecoder<'a> {
    fn new(data: &'a [u8]) -> Option<Self> {
        let value = (u32::from(*data.first()?) << 8) | u32::from(*data.get(1)?);
        Some(Self {
            data,
            pos: 2,
            value,
            range: 255,
            bits: 0,
        })
    }

    fn bool(&mut self, probability: u32) -> bool {
        let split = 1 + (((self.range - 1) * probability) >> 8);
        let big_split = split << 8;
        let bit = self.value >= big_split;
        if bit {
            self.range -= split;
            self.value -= big_split;
        } else {
            self.range = split;
        }
        while self.range < 128 {
            self.value <<= 1;
            self.range <<= 1;
            self.bits += 1;
            if self.bits == 8 {
                self.bits = 0;
                self.value |= u32::from(self.data.get(self.pos).copied().unwrap_or(0));
                self.pos += 1;
            }
        }
        bit
    }

    fn flag(&mut self) -> bool {
        self.bool(128)
    }

    /// An unsigned `n`-bit literal, most significant bit first.
    fn literal(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |v, _| (v << 1) | u32::from(self.flag()))
    }

    /// A magnitude of `n` bits followed by its sign.
    fn signed(&mut self, n: u32) -> i32 {
        let v = self.literal(n) as i32;
        if self.flag() { -v } else { v }
    }
}

/// Lossy WebP of `rgb` pixels at `quality` (libwebp's 0–100 scale, as `cwebp -q`), with `alpha`
/// when given (compressed losslessly: its values come back exactly), tagged with `icc` when given.
pub fn encode_lossy(
    rgb: &[u8],
    alpha: Option<&[u8]>,
    (w, h): (u32, u32),
    quality: u8,
    icc: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let pixels = (w as usize) * (h as usize);
    if w == 0 || h == 0 || w > 16_383 || h > 16_383 || rgb.len() != pixels * 3 {
        return Err(Error::Encode(format!(
            "WebP holds 1 to 16383 pixels a side; the image is {w}×{h}"
        )));
    }
    let rgba;
    let encoder = match alpha {
        Some(a) if a.len() == pixels => {
            rgba = rgb
                .chunks_exact(3)
                .zip(a)
                .flat_map(|(p, &a)| [p[0], p[1], p[2], a])
                .collect::<Vec<u8>>();
            webp::Encoder::from_rgba(&rgba, w, h)
        }
        Some(_) => {
            return Err(Error::Encode(
                "the alpha channel is not the image's size".into(),
            ));
        }
        None => webp::Encoder::from_rgb(rgb, w, h),
    };
    let memory = encoder
        .encode_simple(false, f32::from(quality.min(100)))
        .map_err(|e| Error::Encode(format!("libwebp: {e:?}")))?;
    match icc {
        Some(profile) => with_profile(&memory, profile, (w, h))
            .ok_or_else(|| Error::Encode("libwebp wrote an unexpected container".into())),
        None => Ok(memory.to_vec()),
    }
}

/// `file` with an `ICCP` chunk after its extended header (`VP8X`, written when the simple format
/// had none), as RFC 9649 orders them.
fn with_profile(file: &[u8], profile: &[u8], (w, h): (u32, u32)) -> Option<Vec<u8>> {
    let mut chunks = chunks(file)?;
    let mut header = match chunks.first() {
        Some((kind, data)) if kind == b"VP8X" && data.len() == 10 => {
            let header = data.to_vec();
            chunks.remove(0);
            header
        }
        _ => {
            // Canvas width and height minus one, 24 bits each, little-endian.
            let mut header = vec![0; 4];
            header.extend_from_slice(&(w - 1).to_le_bytes()[..3]);
            header.extend_from_slice(&(h - 1).to_le_bytes()[..3]);
            header
        }
    };
    header[0] |= ICC;
    let mut all: Vec<Chunk<'_>> = vec![(*b"VP8X", &header), (*b"ICCP", profile)];
    all.extend(chunks);
    assemble(&all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo_like(w: u32, h: u32) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [
                    (x * 7 % 256) as u8,
                    (y * 5 % 256) as u8,
                    ((x + y) % 256) as u8,
                ]
            })
            .collect()
    }

    #[test]
    fn lossy_output_is_a_vp8_file_with_its_alpha_exact_and_its_profile() {
        let (w, h) = (33, 21);
        let rgb = photo_like(w, h);
        let alpha: Vec<u8> = (0..w * h).map(|i| (i * 13 % 256) as u8).collect();
        let profile = b"a profile of odd length";
        let out = encode_lossy(&rgb, Some(&alpha), (w, h), 80, Some(profile)).expect("encode");
        let kinds: Vec<[u8; 4]> = chunks(&out)
            .expect("a container")
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(kinds, [*b"VP8X", *b"ICCP", *b"ALPH", *b"VP8 "]);
        assert!(is_lossy(&out));
        let decoded = image::load_from_memory(&out).expect("decodes").to_rgba8();
        assert_eq!(decoded.dimensions(), (w, h));
        let back: Vec<u8> = decoded.pixels().map(|p| p[3]).collect();
        assert_eq!(back, alpha);
        // Without alpha: the simple format grows an extended header for the profile.
        let out = encode_lossy(&rgb, None, (w, h), 80, Some(profile)).expect("encode");
        let found = chunks(&out).expect("a container");
        assert_eq!(found[0].0, *b"VP8X");
        assert_eq!(found[0].1, [ICC, 0, 0, 0, 32, 0, 0, 20, 0, 0]);
        assert_eq!(found[1], (*b"ICCP", &profile[..]));
        assert_eq!(found[2].0, *b"VP8 ");
        let decoder = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&out));
        use image::ImageDecoder;
        assert_eq!(
            decoder.expect("decoder").icc_profile().expect("read"),
            Some(profile.to_vec())
        );
        // Untagged: libwebp's own simple file.
        let plain = encode_lossy(&rgb, None, (w, h), 80, None).expect("encode");
        assert_eq!(&plain[12..16], b"VP8 ");
    }

    #[test]
    fn impossible_sizes_are_errors() {
        assert!(encode_lossy(&[], None, (0, 0), 80, None).is_err());
        assert!(encode_lossy(&[0; 6], None, (3, 1), 80, None).is_err());
        assert!(encode_lossy(&[0; 6], Some(&[0; 3]), (2, 1), 80, None).is_err());
    }
}
