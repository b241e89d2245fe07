//! Damaged uploads: real photos cut short at many places and with bytes flipped. Every one must come
//! back as an image or as an error; none may panic (a panic in a request is a 500, in the CLI a crash).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use switchyard_vision::imageio::{self, Format};

fn photo(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/testdata")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run `make setup`)", p.display()))
}

/// The file cut at `n` places and, at `n` places, with a run of bytes flipped from there on.
fn damaged(file: &[u8], n: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for k in 1..n {
        let at = file.len() * k / n;
        out.push((format!("cut at {at}"), file[..at].to_vec()));
        let mut flipped = file.to_vec();
        for b in flipped.iter_mut().skip(at).step_by(131).take(24) {
            *b ^= 0x5a;
        }
        out.push((format!("flipped from {at}"), flipped));
    }
    out
}

#[test]
fn damaged_photos_never_panic() {
    let jpeg = photo("t1.jpg");
    let png = photo("astronaut.png");
    let rgb = imageio::decode(&jpeg, 50_000_000).expect("t1.jpg").image;
    let webp = imageio::encode(&rgb, Format::Webp, 90).expect("webp");
    let mut panics = Vec::new();
    let mut decoded = 0;
    for (name, file) in [
        ("t1.jpg", &jpeg),
        ("astronaut.png", &png),
        ("t1.webp", &webp),
    ] {
        for (how, bytes) in damaged(file, 60) {
            match catch_unwind(AssertUnwindSafe(|| imageio::decode(&bytes, 50_000_000))) {
                Ok(Ok(_)) => decoded += 1,
                Ok(Err(_)) => {}
                Err(_) => panics.push(format!("{name}, {how}")),
            }
        }
    }
    assert!(panics.is_empty(), "decoding panicked on: {panics:#?}");
    // Flipped bytes inside entropy-coded data often still decode (to a damaged picture).
    assert!(decoded > 0);
}

#[test]
fn damaged_colour_profiles_never_panic() {
    // Photos whose ICC profile the output keeps: rocket.jpg (Adobe RGB in JPEG APP2 segments),
    // astronaut.png (sRGB in a compressed iCCP chunk), and astronaut as WebP (an ICCP chunk). Each
    // damaged, and byte by byte through its first 1,200 bytes, where the profiles are; whatever
    // decodes is encoded again in every format, profile and all.
    let png = photo("astronaut.png");
    let d = imageio::decode(&png, 50_000_000).expect("astronaut.png");
    let webp = imageio::encode_channels(&d.image, &d.channels, Format::Webp, 90, 1).expect("webp");
    let mut panics = Vec::new();
    let (mut decoded, mut tagged) = (0, 0);
    for (name, file) in [
        ("rocket.jpg", photo("rocket.jpg")),
        ("astronaut.png", png),
        ("astronaut.webp", webp),
    ] {
        let mut cases = damaged(&file, 30);
        for at in (2..file.len().min(1200)).step_by(5) {
            let mut b = file.clone();
            b[at] ^= 0xff;
            cases.push((format!("byte {at} inverted"), b));
        }
        for (how, bytes) in cases {
            let run = || {
                let Ok(d) = imageio::decode(&bytes, 50_000_000) else {
                    return (false, false);
                };
                let kept = d.channels.icc_profile.is_some();
                for f in [Format::Jpeg, Format::Png, Format::Webp] {
                    let _ = imageio::encode_channels(&d.image, &d.channels, f, 90, 2);
                }
                (true, kept)
            };
            match catch_unwind(AssertUnwindSafe(run)) {
                Ok((ok, kept)) => {
                    decoded += usize::from(ok);
                    tagged += usize::from(kept);
                }
                Err(_) => panics.push(format!("{name}, {how}")),
            }
        }
    }
    assert!(panics.is_empty(), "panicked on: {panics:#?}");
    assert!(
        decoded > 0 && tagged > 0,
        "{decoded} decoded, {tagged} with a profile"
    );
}
