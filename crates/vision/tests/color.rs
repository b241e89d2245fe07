//! Colour profiles: anonymised photos keep the ICC profile of the input, in every output format, so
//! that their colours look as they did (real photos: rocket.jpg is Adobe RGB (1998), astronaut.png
//! sRGB; the profiles as Pillow reads them, from tests/reference/image_codec.py).

mod common;

use std::io::Cursor;

use common::*;
use image::ImageDecoder;
use switchyard_infer::EngineChoice;
use switchyard_vision::imageio::{self, Format, Quality};
use switchyard_vision::pipeline::{self, BlurOptions};
use switchyard_vision::{DetectorKind, DetectorParams};

/// The profile of a test photo according to the reference, as bytes.
fn reference_profile(name: &str) -> Vec<u8> {
    let reference = codec_reference();
    let hex = reference["icc_profiles"][name]["hex"]
        .as_str()
        .expect("profile");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The ICC profile of an encoded image, read by the `image` crate's decoders (not by the code that
/// wrote it).
fn profile_of(bytes: &[u8]) -> Option<Vec<u8>> {
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .expect("format");
    reader
        .into_decoder()
        .expect("decoder")
        .icc_profile()
        .expect("icc")
}

#[test]
fn anonymised_photos_keep_their_colour_profile_in_every_format() {
    let det = detector(
        DetectorKind::CenterFace,
        EngineChoice::Ort,
        DetectorParams::default(),
    );
    for name in ["rocket.jpg", "astronaut.png"] {
        let expected = reference_profile(name);
        let input = std::fs::read(existing(&format!(".cache/testdata/{name}"))).expect("photo");
        for format in [
            None,
            Some(Format::Jpeg),
            Some(Format::Png),
            Some(Format::Webp),
        ] {
            let opts = BlurOptions {
                format,
                ..Default::default()
            };
            let (out, written, _) = pipeline::blur(&det, &input, 100_000_000, &opts).expect("blur");
            let profile = profile_of(&out);
            assert!(
                profile.as_deref() == Some(expected.as_slice()),
                "{name} as {written:?}: profile of {:?} bytes, expected {}",
                profile.map(|p| p.len()),
                expected.len()
            );
        }
    }
}

#[test]
fn a_jpeg_encoded_on_several_cores_keeps_the_profile_once() {
    let input = std::fs::read(existing(".cache/testdata/astronaut.png")).expect("photo");
    let decoded = imageio::decode(&input, 100_000_000).expect("decode");
    let out = imageio::encode_channels(&decoded.image, &decoded.channels, Format::Jpeg, 90, 4)
        .expect("encode");
    // Joined strips (a DRI segment), one profile: the APP2 ICC_PROFILE marker appears once.
    assert!(
        out.windows(2).any(|w| w == [0xFF, 0xDD]),
        "not encoded in strips"
    );
    let markers = out.windows(12).filter(|w| w == b"ICC_PROFILE\0").count();
    assert_eq!(markers, 1);
    assert_eq!(profile_of(&out), Some(reference_profile("astronaut.png")));
    // The pixels are those of a plain encoding of the same image.
    let plain = imageio::encode(&decoded.image, Format::Jpeg, 90).expect("encode");
    let a = imageio::decode(&out, 100_000_000).expect("decode").image;
    let b = imageio::decode(&plain, 100_000_000).expect("decode").image;
    assert!(a.as_raw() == b.as_raw());
}

#[test]
fn a_profile_for_another_colour_space_is_dropped() {
    let input = std::fs::read(existing(".cache/testdata/rocket.jpg")).expect("photo");
    let mut decoded = imageio::decode(&input, 100_000_000).expect("decode");
    let rgb = decoded
        .channels
        .icc_profile
        .clone()
        .expect("rocket.jpg has a profile");
    // The same profile claiming CMYK data (as a print-ready JPEG's would): the pixels were converted
    // to RGB on decoding, so it would misdescribe them.
    let mut cmyk = rgb.clone();
    cmyk[16..20].copy_from_slice(b"CMYK");
    decoded.channels.icc_profile = Some(cmyk);
    for format in [Format::Jpeg, Format::Png, Format::Webp] {
        let out = imageio::encode_channels(&decoded.image, &decoded.channels, format, 90, 1)
            .expect("encode");
        assert_eq!(profile_of(&out), None, "{format:?}");
    }
    // A grayscale input keeps an RGB profile only where its output is RGB (JPEG, and WebP, which
    // stores colour whatever the pixels), and a gray one only where it stays gray (PNG). WebP
    // lossy (libwebp, the profile added to its container) and lossless alike.
    decoded.channels.gray = true;
    let mut gray = rgb.clone();
    gray[16..20].copy_from_slice(b"GRAY");
    for (profile, format, kept) in [
        (&rgb, Format::Jpeg, true),
        (&rgb, Format::Png, false),
        (&gray, Format::Png, true),
        (&gray, Format::Webp, false),
        (&rgb, Format::Webp, true),
        (&gray, Format::Jpeg, false),
    ] {
        decoded.channels.icc_profile = Some(profile.clone());
        for (quality, lossy) in [(Quality::Fixed(90), Some(90)), (Quality::Auto, None)] {
            decoded.channels.lossy = lossy;
            let out =
                imageio::encode_channels(&decoded.image, &decoded.channels, format, quality, 1)
                    .expect("encode");
            assert_eq!(
                profile_of(&out),
                kept.then(|| profile.clone()),
                "{format:?} at {quality:?} (lossy input: {lossy:?}) with a {:?} profile",
                std::str::from_utf8(&profile[16..20])
            );
        }
    }
    // Garbage in place of a profile is not written, nor a profile cut short.
    decoded.channels.gray = false;
    for broken in [vec![7; 200], rgb[..rgb.len() - 1].to_vec()] {
        decoded.channels.icc_profile = Some(broken);
        let out = imageio::encode_channels(&decoded.image, &decoded.channels, Format::Png, 90, 1)
            .expect("encode");
        assert_eq!(profile_of(&out), None);
    }
}
