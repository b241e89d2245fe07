//! JPEG output that keeps the input's bits outside the changed regions (`splice`): real photos and
//! JPEGs of every layout the encoder writes, checked by decoding the output.

mod common;

use common::*;
use image::{RgbImage, imageops};
use switchyard_vision::imageio;
use switchyard_vision::splice::{Region, splice};

fn decode(bytes: &[u8]) -> RgbImage {
    imageio::decode(bytes, 100_000_000).expect("decodes").image
}

/// A JPEG of `img` with the given layout, from one `jpeg-encoder` run.
fn jpeg(img: &RgbImage, f: impl FnOnce(&mut jpeg_encoder::Encoder<&mut Vec<u8>>)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 85);
    f(&mut enc);
    enc.encode(
        img.as_raw(),
        img.width() as u16,
        img.height() as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .expect("encode");
    out
}

/// `img` with each region filled by a smooth gradient (what a blur leaves) unlike the photo.
fn paint(img: &RgbImage, regions: &[Region]) -> RgbImage {
    let mut out = img.clone();
    for &(x0, y0, w, h) in regions {
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                let (u, v) = ((x - x0) * 255 / w, (y - y0) * 255 / h);
                out.put_pixel(x, y, image::Rgb([u as u8, v as u8, 200]));
            }
        }
    }
    out
}

/// Whether pixel (x, y) is at least `d` pixels away from every region.
fn far(x: u32, y: u32, regions: &[Region], d: u32) -> bool {
    regions
        .iter()
        .all(|&(rx, ry, w, h)| x + d < rx || x >= rx + w + d || y + d < ry || y >= ry + h + d)
}

/// Mean absolute error over the region's channels between two images.
fn region_error(a: &RgbImage, b: &RgbImage, (x0, y0, w, h): Region) -> f64 {
    let mut err = 0u64;
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            let (p, q) = (a.get_pixel(x, y).0, b.get_pixel(x, y).0);
            err += p
                .iter()
                .zip(q)
                .map(|(&p, q)| u64::from(p.abs_diff(q)))
                .sum::<u64>();
        }
    }
    err as f64 / f64::from(3 * w * h)
}

/// Splices `painted` into `input` and checks the output: the input's exact pixels away from the
/// regions (two MCUs' margin: a changed MCU reaches up to 15 px out of its region, and chroma
/// upsampling blends one more sample), and inside them the painted pixels, as close as when the
/// whole image is encoded again with the input's tables.
fn check(input: &[u8], painted: &RgbImage, regions: &[Region]) -> Vec<u8> {
    let decoded = imageio::decode(input, 100_000_000).expect("decodes");
    let before = decoded.image;
    let full = imageio::encode_channels(
        painted,
        &decoded.channels,
        imageio::Format::Jpeg,
        imageio::Quality::Auto,
        1,
    )
    .expect("encodes");
    let full = decode(&full);
    let out = splice(input, painted, regions, None).expect("spliced");
    let after = decode(&out);
    assert_eq!(after.dimensions(), before.dimensions());
    let (w, h) = before.dimensions();
    let mut differ = 0;
    for y in 0..h {
        for x in 0..w {
            if far(x, y, regions, 32) && after.get_pixel(x, y) != before.get_pixel(x, y) {
                differ += 1;
            }
        }
    }
    assert_eq!(differ, 0, "pixels away from the regions changed");
    for &r in regions {
        let (spliced, reencoded) = (
            region_error(&after, painted, r),
            region_error(&full, painted, r),
        );
        eprintln!("region {r:?}: mean error {spliced:.2}, encoded in full {reencoded:.2}");
        assert!(
            spliced <= reencoded * 1.2 + 0.3,
            "region {r:?}: mean error {spliced:.2} from the new pixels, {reencoded:.2} encoded in full"
        );
    }
    out
}

#[test]
fn an_unchanged_photo_decodes_to_the_same_pixels() {
    for name in ["t1.jpg", "rocket.jpg"] {
        let input = std::fs::read(existing(&format!(".cache/testdata/{name}"))).expect("photo");
        let img = decode(&input);
        let out = splice(&input, &img, &[], None).expect("a baseline JPEG");
        assert_eq!(decode(&out), img, "{name}");
        // The same entropy-coded data: the size differs by headers and metadata only.
        assert!(
            out.len() <= input.len() + 512,
            "{name}: {} > {}",
            out.len(),
            input.len()
        );
    }
}

#[test]
fn changed_regions_carry_the_new_pixels_and_the_rest_stays_bit_exact() {
    // t1.jpg's Huffman tables are optimised for it: its luma AC table lacks symbols and has no
    // room for more, so some new coefficients are fitted to it.
    let input = std::fs::read(existing(".cache/testdata/t1.jpg")).expect("photo");
    let img = decode(&input);
    let (w, h) = img.dimensions();
    // A region on MCU boundaries, one off them, one at the right and bottom edges, two that touch.
    let regions = [
        (32, 48, 64, 80),
        (203, 101, 57, 43),
        (w - 41, h - 29, 41, 29),
        (400, 200, 30, 30),
        (430, 210, 25, 40),
    ];
    let painted = paint(&img, &regions);
    let out = check(&input, &painted, &regions);
    // Nothing of the input's face data is left: the painted MCUs decode to the painting, checked
    // above; and the file is still about the input's size, not a re-encoding at another quality.
    assert!(out.len() < input.len() * 11 / 10);
}

#[test]
fn every_layout_the_encoder_writes_splices() {
    use jpeg_encoder::SamplingFactor as S;
    let full = photo("t1.jpg");
    // Odd sizes: partial MCUs at the right and bottom.
    let img = imageops::crop_imm(&full, 3, 5, 517, 301).to_image();
    let regions = [(100, 60, 90, 70), (480, 250, 37, 51)];
    let painted = paint(&img, &regions);
    for (name, sampling, restart) in [
        ("4:2:0", S::F_2_2, 0),
        ("4:4:4", S::F_1_1, 0),
        ("4:2:2", S::F_2_1, 0),
        ("4:4:0", S::F_1_2, 0),
        ("4:2:0, restart every MCU", S::F_2_2, 1),
        ("4:2:0, restart every 7 MCUs", S::F_2_2, 7),
        ("4:4:4, restart every 64 MCUs", S::F_1_1, 64),
    ] {
        let input = jpeg(&img, |e| {
            e.set_sampling_factor(sampling);
            e.set_restart_interval(restart);
        });
        eprintln!("{name}");
        check(&input, &painted, &regions);
        let unchanged = splice(&input, &img, &[], None).expect(name);
        assert_eq!(decode(&unchanged), decode(&input), "{name}");
    }
}

#[test]
fn a_grayscale_jpeg_splices() {
    let full = photo("t1.jpg");
    let gray = image::DynamicImage::ImageRgb8(full).to_luma8();
    let mut input = Vec::new();
    jpeg_encoder::Encoder::new(&mut input, 90)
        .encode(
            gray.as_raw(),
            gray.width() as u16,
            gray.height() as u16,
            jpeg_encoder::ColorType::Luma,
        )
        .expect("encode");
    let img = decode(&input);
    let regions = [(50, 50, 100, 120)];
    // Gray paint: a grayscale JPEG has no chroma to carry colour.
    let mut painted = img.clone();
    for y in 50..170 {
        for x in 50..150 {
            let v = ((x - 50) * 2) as u8;
            painted.put_pixel(x, y, image::Rgb([v, v, v]));
        }
    }
    check(&input, &painted, &regions);
}

#[test]
fn what_it_cannot_splice_is_left_to_the_encoder() {
    let img = imageops::crop_imm(&photo("t1.jpg"), 0, 0, 256, 192).to_image();
    // Progressive: several scans.
    let progressive = jpeg(&img, |e| e.set_progressive(true));
    assert!(splice(&progressive, &img, &[], None).is_none());
    // Baseline with one scan per component (what jpeg-encoder writes at 4:1:1).
    let separate = jpeg(&img, |e| {
        e.set_sampling_factor(jpeg_encoder::SamplingFactor::F_4_1)
    });
    assert!(splice(&separate, &img, &[], None).is_none());
    // Another size than the pixels given.
    let other = imageops::crop_imm(&img, 0, 0, 128, 96).to_image();
    let baseline = jpeg(&img, |_| {});
    assert!(splice(&baseline, &other, &[], None).is_none());
    // Regions over more than a third of the MCUs: encoding in full is faster.
    assert!(splice(&baseline, &img, &[(0, 0, 256, 80)], None).is_none());
    assert!(splice(&baseline, &img, &[(0, 0, 256, 48)], None).is_some());
    // Not a JPEG.
    assert!(splice(b"\x89PNG\r\n\x1a\n", &img, &[], None).is_none());
}

#[test]
fn damaged_input_is_refused_without_a_panic() {
    let img = imageops::crop_imm(&photo("t1.jpg"), 0, 0, 200, 150).to_image();
    let input = jpeg(&img, |e| e.set_restart_interval(5));
    let regions = [(20, 20, 40, 40)];
    // Every truncation, and a byte changed at a stride through the whole file.
    for len in (0..input.len()).step_by(7) {
        assert!(splice(&input[..len], &img, &regions, None).is_none() || len > input.len() - 2);
    }
    for i in (0..input.len()).step_by(5) {
        for x in [0x00, 0xFF, 0xD9, input[i] ^ 0x10] {
            let mut bad = input.clone();
            bad[i] = x;
            // Refused, or a file that decodes when the damaged input did (the gateway splices
            // only what it could decode).
            if let Some(out) = splice(&bad, &img, &regions, None) {
                let input_ok = imageio::decode(&bad, 1_000_000).is_ok();
                if let Err(e) = imageio::decode(&out, 1_000_000) {
                    assert!(!input_ok, "byte {i} = {x:#x}: {e}");
                }
            }
        }
    }
}

#[test]
fn an_icc_profile_goes_with_the_output() {
    let img = imageops::crop_imm(&photo("t1.jpg"), 0, 0, 128, 128).to_image();
    let input = jpeg(&img, |_| {});
    // 70,000 bytes: two APP2 chunks.
    let mut profile = vec![7u8; 70_000];
    profile[..4].copy_from_slice(&70_000u32.to_be_bytes());
    let out = splice(&input, &img, &[], Some(&profile)).expect("spliced");
    let decoded = imageio::decode(&out, 1_000_000).expect("decodes");
    assert_eq!(decoded.channels.icc_profile.as_deref(), Some(&profile[..]));
    assert_eq!(decoded.image, decode(&input));
}
