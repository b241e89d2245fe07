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

/// Whether a WebP holds a lossy (`VP8 `) bitstream rather than a lossless (`VP8L`) one.
pub fn is_lossy(bytes: &[u8]) -> bool {
    chunks(bytes).is_some_and(|c| c.iter().any(|(kind, _)| kind == b"VP8 "))
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
