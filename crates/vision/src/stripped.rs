//! A photo's own compressed data without its metadata: what `/blur` answers when it found no face,
//! instead of decoding and re-encoding the same pixels (which costs a JPEG its quality a second time
//! and the CPU a full encode).
//!
//! Kept is only what decoding and colour need; everything else is dropped, known or not. JPEG keeps
//! its frame, tables, restart interval and scans, the JFIF header when it carries no thumbnail, the
//! ICC profile and Adobe's colour-transform segment; EXIF (GPS, camera, its thumbnail), XMP, IPTC,
//! MPF (the further pictures of a phone's photo, depth maps among them), comments and anything after
//! the end-of-image marker (motion photos' video) go. PNG keeps its critical chunks and the colour,
//! transparency and density ones; text, EXIF, time and unknown ancillary chunks (C2PA provenance…)
//! go. WebP keeps its bitstream (VP8 or VP8L, with its alpha) and ICC profile; EXIF, XMP and
//! unknown chunks go, and the extended header no longer announces them. Anything unexpected (a
//! damaged structure, an animated PNG or WebP whose other frames were never looked at, an unknown
//! critical chunk) gives `None`, and the caller encodes as before.

use crate::imageio::Format;

/// `bytes` (a whole JPEG, PNG or WebP file) without metadata, or `None` when it cannot be taken
/// apart safely.
pub fn stripped(bytes: &[u8], format: Format) -> Option<Vec<u8>> {
    match format {
        Format::Jpeg => jpeg(bytes),
        Format::Png => png(bytes),
        Format::Webp => webp(bytes),
    }
}

/// A JPEG's segments and scans without metadata, ending at its first end-of-image marker.
pub fn jpeg(b: &[u8]) -> Option<Vec<u8>> {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&[0xFF, 0xD8]);
    let (mut pos, mut frame, mut scan) = (2, false, false);
    loop {
        // A marker: 0xFF, any fill bytes 0xFF, the code.
        if *b.get(pos)? != 0xFF {
            return None;
        }
        while *b.get(pos)? == 0xFF {
            pos += 1;
        }
        let code = b[pos];
        pos += 1;
        match code {
            0xD9 => {
                out.extend_from_slice(&[0xFF, 0xD9]);
                return (frame && scan).then_some(out);
            }
            // Standalone markers out of place, a second SOI, reserved codes, hierarchical and
            // extension segments (which decoding might need): not ours to judge.
            0x00..=0xBF | 0xC8 | 0xD0..=0xD8 | 0xDE | 0xDF | 0xF0..=0xFD => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*b.get(pos)?, *b.get(pos + 1)?]));
        let body = b.get(pos + 2..pos + len.checked_sub(2)? + 2)?;
        pos += len;
        let segment = |out: &mut Vec<u8>, body: &[u8]| {
            out.extend_from_slice(&[0xFF, code]);
            out.extend_from_slice(&(body.len() as u16 + 2).to_be_bytes());
            out.extend_from_slice(body);
        };
        match code {
            // Frame headers (every coding process), tables, arithmetic conditioning, restart
            // interval, number of lines.
            0xC0..=0xCF | 0xDB | 0xDC | 0xDD => {
                frame |= matches!(code, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF);
                segment(&mut out, body);
            }
            0xDA => {
                if !frame {
                    return None;
                }
                segment(&mut out, body);
                // Entropy-coded data runs to the next marker that is neither a stuffed 0xFF00 nor
                // a restart marker.
                let start = pos;
                loop {
                    let ff = pos + b.get(pos..)?.iter().position(|&x| x == 0xFF)?;
                    let mut next = ff;
                    while *b.get(next)? == 0xFF {
                        next += 1;
                    }
                    if matches!(b[next], 0x00 | 0xD0..=0xD7) {
                        pos = next + 1;
                    } else {
                        pos = ff;
                        break;
                    }
                }
                out.extend_from_slice(&b[start..pos]);
                scan = true;
            }
            // JFIF's header, when it carries no thumbnail (version, density).
            0xE0 if body.len() >= 14
                && body.starts_with(b"JFIF\0")
                && body[12] == 0
                && body[13] == 0 =>
            {
                segment(&mut out, &body[..14]);
            }
            0xE2 if body.starts_with(b"ICC_PROFILE\0") => segment(&mut out, body),
            // Adobe's segment says whether the components are YCbCr, RGB or YCCK: decoding needs it.
            0xEE if body.starts_with(b"Adobe") => segment(&mut out, body),
            _ => {}
        }
    }
}

/// A PNG's chunks without metadata, ending at IEND.
pub fn png(b: &[u8]) -> Option<Vec<u8>> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !b.starts_with(SIGNATURE) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(SIGNATURE);
    let mut pos = SIGNATURE.len();
    loop {
        let len = u32::from_be_bytes(b.get(pos..pos + 4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = b.get(pos + 4..pos + 8)?.try_into().ok()?;
        let chunk = b.get(pos..pos.checked_add(12)?.checked_add(len)?)?;
        pos += chunk.len();
        match &kind {
            b"IEND" => {
                out.extend_from_slice(chunk);
                return Some(out);
            }
            // The image, and how its colours and transparency are to be shown.
            b"IHDR" | b"PLTE" | b"IDAT" | b"tRNS" | b"cHRM" | b"gAMA" | b"iCCP" | b"sBIT"
            | b"sRGB" | b"cICP" | b"mDCV" | b"cLLI" | b"bKGD" | b"pHYs" => {
                out.extend_from_slice(chunk);
            }
            // An animation: its other frames were never looked at for faces.
            b"acTL" | b"fcTL" | b"fdAT" => return None,
            // Another critical chunk (upper-case first letter) would change the image: not ours to
            // judge. Ancillary ones (text, EXIF, time, private data) are dropped.
            _ if kind[0].is_ascii_uppercase() => return None,
            _ => {}
        }
    }
}

/// A WebP's image chunks without metadata (RFC 9649): the RIFF container rebuilt from the
/// bitstream (`VP8 ` or `VP8L`), its alpha (`ALPH`), its ICC profile (`ICCP`) and the extended
/// header (`VP8X`) with the EXIF and XMP flags cleared. Animations are refused.
pub fn webp(b: &[u8]) -> Option<Vec<u8>> {
    use crate::webp::{ANIMATION, EXIF, XMP};
    let mut kept = Vec::new();
    let mut header = Vec::new();
    let mut images = 0;
    for (i, (kind, data)) in crate::webp::chunks(b)?.into_iter().enumerate() {
        match &kind {
            b"VP8X" if i == 0 && data.len() >= 10 => {
                if data[0] & ANIMATION != 0 {
                    return None;
                }
                header = data.to_vec();
                header[0] &= !(EXIF | XMP);
            }
            b"VP8 " | b"VP8L" => {
                images += 1;
                kept.push((kind, data));
            }
            b"ALPH" | b"ICCP" if images == 0 => kept.push((kind, data)),
            // Frames never looked at; a header out of place.
            b"ANIM" | b"ANMF" | b"VP8X" | b"ALPH" | b"ICCP" => return None,
            // EXIF, XMP and unknown chunks, which readers ignore.
            _ => {}
        }
    }
    if images != 1 {
        return None;
    }
    if !header.is_empty() {
        kept.insert(0, (*b"VP8X", &header));
    }
    crate::webp::assemble(&kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG segment.
    fn seg(code: u8, body: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, code];
        s.extend_from_slice(&(body.len() as u16 + 2).to_be_bytes());
        s.extend_from_slice(body);
        s
    }

    /// A small JPEG written by the `image` crate.
    fn small_jpeg() -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(40, 24, |x, y| image::Rgb([x as u8 * 6, y as u8 * 9, 77]));
        let mut out = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::Jpeg,
        )
        .expect("encode");
        out
    }

    fn assert_none_kept(out: &[u8], secrets: &[&[u8]]) {
        for secret in secrets {
            assert!(
                !out.windows(secret.len()).any(|w| w == *secret),
                "{secret:?} kept"
            );
        }
    }

    fn pixels(b: &[u8]) -> Vec<u8> {
        image::load_from_memory(b)
            .expect("decodes")
            .to_rgb8()
            .into_raw()
    }

    #[test]
    fn jpeg_metadata_goes_and_decoding_is_unchanged() {
        let clean = small_jpeg();
        let jfif_thumb = {
            let mut b = b"JFIF\0\x01\x02\0\0\x48\0\x48\x01\x01".to_vec();
            b.extend_from_slice(&[200, 100, 50]); // a 1×1 RGB thumbnail
            b
        };
        let mut dirty = clean[..2].to_vec();
        dirty.extend(seg(0xE0, &jfif_thumb));
        dirty.extend(seg(0xE1, b"Exif\0\0MM\0\x2a\0\0\0\x08GPS-SECRET"));
        dirty.extend(seg(
            0xE1,
            b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>NAME</x:xmpmeta>",
        ));
        dirty.extend(seg(0xE2, b"MPF\0more pictures"));
        dirty.extend(seg(0xE2, b"ICC_PROFILE\0\x01\x01profile"));
        dirty.extend(seg(0xED, b"Photoshop 3.0\0IPTC-SECRET"));
        dirty.extend(seg(0xEE, b"Adobe\0\x64\0\0\0\0\x01"));
        dirty.extend(seg(0xFE, b"a COMMENT-SECRET"));
        // Fill bytes before a marker are allowed.
        dirty.extend_from_slice(&[0xFF, 0xFF]);
        dirty.extend_from_slice(&clean[2..]);
        dirty.extend_from_slice(b"MOTION-PHOTO-VIDEO after the end");
        let out = jpeg(&dirty).expect("a sound JPEG");
        assert_none_kept(
            &out,
            &[
                b"GPS-SECRET",
                b"xmpmeta",
                b"MPF",
                b"IPTC-SECRET",
                b"COMMENT-SECRET",
                b"MOTION-PHOTO",
                &[200, 100, 50],
            ],
        );
        assert!(out.windows(12).any(|w| w == b"ICC_PROFILE\0"));
        assert!(out.windows(5).any(|w| w == b"Adobe"));
        assert!(out.ends_with(&[0xFF, 0xD9]));
        assert_eq!(pixels(&out), pixels(&clean));
        // The clean file comes back as it was, but for its JFIF header (kept: no thumbnail).
        assert_eq!(jpeg(&clean).expect("clean"), clean);
    }

    #[test]
    fn entropy_data_with_stuffed_bytes_and_restart_markers_is_copied_whole() {
        // A frame and a scan whose data holds FF00 and RST markers, then EOI.
        let mut b = vec![0xFF, 0xD8];
        b.extend(seg(0xDD, &[0, 4]));
        b.extend(seg(0xC0, &[8, 0, 8, 0, 8, 1, 1, 0x11, 0]));
        b.extend(seg(0xDA, &[1, 1, 0, 0, 63, 0]));
        let data = [
            0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xD1, 0x78,
        ];
        b.extend_from_slice(&data);
        b.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(jpeg(&b).expect("sound"), b);
    }

    #[test]
    fn damaged_jpegs_are_refused() {
        let clean = small_jpeg();
        // Cut anywhere before the end, or without a scan: no copy.
        for cut in [3, 20, clean.len() / 2, clean.len() - 1] {
            assert!(jpeg(&clean[..cut]).is_none(), "cut at {cut}");
        }
        assert!(jpeg(b"not a jpeg").is_none());
        let mut no_scan = vec![0xFF, 0xD8];
        no_scan.extend(seg(0xC0, &[8, 0, 8, 0, 8, 1, 1, 0x11, 0]));
        no_scan.extend_from_slice(&[0xFF, 0xD9]);
        assert!(jpeg(&no_scan).is_none());
        // A segment length running past the end.
        let mut long = vec![0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xF0];
        long.extend_from_slice(&clean[2..]);
        assert!(jpeg(&long).is_none());
        // Every cut and every flipped byte: never a panic.
        for i in 0..clean.len() {
            let _ = jpeg(&clean[..i]);
            let mut f = clean.clone();
            f[i] ^= 0xFF;
            let _ = jpeg(&f);
        }
    }

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        let mut crc_in = kind.to_vec();
        crc_in.extend_from_slice(data);
        c.extend_from_slice(&crc32fast::hash(&crc_in).to_be_bytes());
        c
    }

    fn small_png() -> Vec<u8> {
        let img = image::RgbaImage::from_fn(9, 7, |x, y| {
            image::Rgba([x as u8 * 20, y as u8 * 30, 5, 128 + x as u8])
        });
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("encode");
        out
    }

    #[test]
    fn png_metadata_goes_and_decoding_is_unchanged() {
        let clean = small_png();
        let ihdr_end = 8 + 12 + 13;
        let mut dirty = clean[..ihdr_end].to_vec();
        dirty.extend(chunk(b"tEXt", b"Author\0TEXT-SECRET"));
        dirty.extend(chunk(b"eXIf", b"MM\0\x2aEXIF-SECRET"));
        dirty.extend(chunk(b"tIME", &[7, 234, 12, 3, 10, 0, 0]));
        dirty.extend(chunk(b"caBX", b"C2PA-SECRET"));
        dirty.extend(chunk(b"pHYs", &[0, 0, 11, 19, 0, 0, 11, 19, 1]));
        dirty.extend_from_slice(&clean[ihdr_end..]);
        dirty.extend_from_slice(b"TRAILER-SECRET");
        let out = png(&dirty).expect("a sound PNG");
        assert_none_kept(
            &out,
            &[
                b"TEXT-SECRET",
                b"EXIF-SECRET",
                b"tIME",
                b"C2PA-SECRET",
                b"TRAILER-SECRET",
            ],
        );
        assert!(out.windows(4).any(|w| w == b"pHYs"));
        let decode = |b: &[u8]| {
            image::load_from_memory(b)
                .expect("decodes")
                .to_rgba8()
                .into_raw()
        };
        assert_eq!(decode(&out), decode(&clean));
        assert_eq!(png(&clean).expect("clean"), clean);
    }

    #[test]
    fn animated_damaged_or_unknown_critical_pngs_are_refused() {
        let clean = small_png();
        let ihdr_end = 8 + 12 + 13;
        for extra in [
            chunk(b"acTL", &[0, 0, 0, 2, 0, 0, 0, 0]),
            chunk(b"QQQQ", b"?"),
        ] {
            let mut b = clean[..ihdr_end].to_vec();
            b.extend(extra);
            b.extend_from_slice(&clean[ihdr_end..]);
            assert!(png(&b).is_none());
        }
        for cut in [4, 8, ihdr_end + 3, clean.len() - 1] {
            assert!(png(&clean[..cut]).is_none(), "cut at {cut}");
        }
        let mut huge = clean[..ihdr_end].to_vec();
        huge.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        huge.extend_from_slice(b"tEXt");
        assert!(png(&huge).is_none());
    }

    /// A RIFF chunk, padded to an even size.
    fn riff_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = kind.to_vec();
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(data);
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    }

    fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = chunks.concat();
        let mut b = b"RIFF".to_vec();
        b.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
        b.extend_from_slice(b"WEBP");
        b.extend(body);
        b
    }

    /// A small lossless WebP written by the `image` crate (the simple format: one `VP8L` chunk),
    /// and that chunk.
    fn small_webp() -> (Vec<u8>, Vec<u8>) {
        let img = image::RgbaImage::from_fn(9, 7, |x, y| {
            image::Rgba([x as u8 * 20, y as u8 * 30, 5, 128 + x as u8])
        });
        let mut out = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::WebP,
        )
        .expect("encode");
        assert_eq!(&out[12..16], b"VP8L");
        let vp8l = out[12..].to_vec();
        (out, vp8l)
    }

    #[test]
    fn webp_metadata_goes_and_decoding_is_unchanged() {
        let (clean, vp8l) = small_webp();
        // The extended format: header with ICC, alpha, EXIF and XMP flags; 9×7 canvas.
        let vp8x = riff_chunk(
            b"VP8X",
            &[0x20 | 0x10 | 0x08 | 0x04, 0, 0, 0, 8, 0, 0, 6, 0, 0],
        );
        let dirty = {
            let mut b = riff(&[
                vp8x,
                riff_chunk(b"ICCP", b"an ICC profile"),
                vp8l.clone(),
                riff_chunk(b"EXIF", b"MM\0\x2a GPS-SECRET"),
                riff_chunk(b"XMP ", b"<x:xmpmeta>NAME-SECRET</x:xmpmeta>"),
                riff_chunk(b"ZZZZ", b"PRIVATE-SECRET"),
            ]);
            b.extend_from_slice(b"TRAILER-SECRET");
            b
        };
        let out = webp(&dirty).expect("a sound WebP");
        assert_none_kept(
            &out,
            &[
                b"GPS-SECRET",
                b"NAME-SECRET",
                b"PRIVATE-SECRET",
                b"TRAILER-SECRET",
                b"EXIF",
            ],
        );
        assert!(out.windows(14).any(|w| w == b"an ICC profile"));
        // The header no longer announces EXIF or XMP; the RIFF size is the file's.
        assert_eq!(out[20], 0x20 | 0x10);
        assert_eq!(
            u32::from_le_bytes(out[4..8].try_into().expect("4 bytes")) as usize,
            out.len() - 8
        );
        let decode = |b: &[u8]| {
            image::load_from_memory_with_format(b, image::ImageFormat::WebP)
                .expect("decodes")
                .to_rgba8()
                .into_raw()
        };
        assert_eq!(decode(&out), decode(&clean));
        assert_eq!(webp(&clean).expect("clean"), clean);
        assert_eq!(stripped(&clean, Format::Webp), Some(clean));
    }

    #[test]
    fn animated_damaged_or_imageless_webps_are_refused() {
        let (clean, vp8l) = small_webp();
        let vp8x = |flags: u8| riff_chunk(b"VP8X", &[flags, 0, 0, 0, 8, 0, 0, 6, 0, 0]);
        for chunks in [
            vec![vp8x(0x02), riff_chunk(b"ANIM", &[0; 6]), vp8l.clone()],
            vec![vp8x(0), riff_chunk(b"ANMF", &[0; 16]), vp8l.clone()],
            vec![vp8x(0), vp8l.clone(), vp8l.clone()],
            vec![vp8x(0), riff_chunk(b"EXIF", b"no image")],
            vec![vp8l.clone(), vp8x(0)],
            vec![vp8x(0), vp8l.clone(), riff_chunk(b"ICCP", b"late")],
        ] {
            assert!(webp(&riff(&chunks)).is_none());
        }
        for cut in [4, 12, 20, clean.len() - 1] {
            assert!(webp(&clean[..cut]).is_none(), "cut at {cut}");
        }
        // Every cut and every flipped byte: never a panic.
        for i in 0..clean.len() {
            let _ = webp(&clean[..i]);
            let mut f = clean.clone();
            f[i] ^= 0xFF;
            let _ = webp(&f);
        }
    }
}
