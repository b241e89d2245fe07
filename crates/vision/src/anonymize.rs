//! Making faces unrecognisable. Every style covers an ellipse around the face box grown by `margin`,
//! with strength proportional to the face's size, so a large face is as anonymous as a small one.

use image::RgbImage;

use crate::Face;
use crate::detector::resize_region;

/// How faces are hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    /// Strong blur (three box-blur passes ≈ Gaussian) with radius ∝ face size.
    #[default]
    Blur,
    /// Blocks of a size ∝ face size.
    Pixelate,
    /// Solid black.
    Mask,
}

impl Style {
    /// Parses `blur`, `pixelate`, `mask`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "blur" => Some(Self::Blur),
            "pixelate" => Some(Self::Pixelate),
            "mask" => Some(Self::Mask),
            _ => None,
        }
    }
}

/// Hides every face in `img`. `strength` (default 1) scales the blur radius or block size;
/// `margin` grows each box on every side by that fraction of its width/height. Returns the
/// rectangles `(x, y, width, height)` it wrote to: no pixel outside them changed.
pub fn anonymize(
    img: &mut RgbImage,
    faces: &[Face],
    style: Style,
    strength: f32,
    margin: f32,
) -> Vec<(u32, u32, u32, u32)> {
    let (iw, ih) = (img.width() as f32, img.height() as f32);
    let strength = strength.clamp(0.1, 10.0);
    let mut written = Vec::with_capacity(faces.len());
    for face in faces {
        let (w, h) = face.size();
        if !(w > 0.0 && h > 0.0) {
            continue;
        }
        let x1 = (face.bbox[0] - w * margin).clamp(0.0, iw).floor() as u32;
        let y1 = (face.bbox[1] - h * margin).clamp(0.0, ih).floor() as u32;
        let x2 = (face.bbox[2] + w * margin).clamp(0.0, iw).ceil() as u32;
        let y2 = (face.bbox[3] + h * margin).clamp(0.0, ih).ceil() as u32;
        if x2 <= x1 || y2 <= y1 {
            continue;
        }
        let size = (x2 - x1).max(y2 - y1) as f32;
        let region = (x1, y1, x2 - x1, y2 - y1);
        let patch = match style {
            Style::Blur => blurred(img, region, ((size * 0.12 * strength).ceil() as u32).max(2)),
            Style::Pixelate => {
                pixelated(img, region, ((size / 8.0 * strength).round() as u32).max(2))
            }
            Style::Mask => RgbImage::new(region.2, region.3),
        };
        paste_ellipse(img, &patch, region);
        written.push(region);
    }
    written
}

fn paste_ellipse(img: &mut RgbImage, patch: &RgbImage, (x0, y0, w, h): (u32, u32, u32, u32)) {
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = ((x as f32 + 0.5 - cx) / cx, (y as f32 + 0.5 - cy) / cy);
            if dx * dx + dy * dy <= 1.0 {
                img.put_pixel(x0 + x, y0 + y, *patch.get_pixel(x, y));
            }
        }
    }
}

/// The region blurred with three box-blur passes of radius `r` (edges clamp to the region).
///
/// Blurring of this strength keeps no detail finer than about `r` pixels, so it runs at a reduced
/// scale: the region is shrunk by `k ≈ r/3` (an antialiased resize, itself a low-pass), blurred with
/// radius `r/k`, and enlarged bilinearly. Same look, `k²` less work: a large face costs well under a
/// millisecond instead of several.
fn blurred(img: &RgbImage, region: (u32, u32, u32, u32), r: u32) -> RgbImage {
    let (_, _, w, h) = region;
    let k = (r / 3).max(1);
    if k > 1 {
        let (sw, sh) = (w.div_ceil(k), h.div_ceil(k));
        let shrunk = resize_region(img, region, sw, sh)
            .map(|small| box_blur(&small, (0, 0, sw, sh), (r / k).max(1)))
            .and_then(|small| resize_region(&small, (0, 0, sw, sh), w, h));
        if let Ok(patch) = shrunk {
            return patch;
        }
    }
    box_blur(img, region, r)
}

/// Three box-blur passes of radius `r` over the region, in f32.
fn box_blur(img: &RgbImage, (x0, y0, w, h): (u32, u32, u32, u32), r: u32) -> RgbImage {
    let mut buf: Vec<[f32; 3]> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| {
            let p = img.get_pixel(x0 + x, y0 + y).0;
            [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])]
        })
        .collect();
    let (w, h) = (w as usize, h as usize);
    let r = r as usize;
    let mut tmp = buf.clone();
    for _ in 0..3 {
        box_pass(&buf, &mut tmp, w, h, r, true);
        box_pass(&tmp, &mut buf, w, h, r, false);
    }
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let p = buf[y as usize * w + x as usize];
        image::Rgb([p[0].round() as u8, p[1].round() as u8, p[2].round() as u8])
    })
}

/// One running-sum box blur along rows (`horizontal`) or columns, clamping at the edges.
fn box_pass(
    src: &[[f32; 3]],
    dst: &mut [[f32; 3]],
    w: usize,
    h: usize,
    r: usize,
    horizontal: bool,
) {
    let (lines, len) = if horizontal { (h, w) } else { (w, h) };
    let at = |line: usize, i: usize| {
        if horizontal {
            line * w + i
        } else {
            i * w + line
        }
    };
    let norm = 1.0 / (2 * r + 1) as f32;
    for line in 0..lines {
        let get = |i: isize| src[at(line, i.clamp(0, len as isize - 1) as usize)];
        let mut sum = [0.0f32; 3];
        for i in -(r as isize)..=(r as isize) {
            let p = get(i);
            for c in 0..3 {
                sum[c] += p[c];
            }
        }
        for i in 0..len {
            dst[at(line, i)] = [sum[0] * norm, sum[1] * norm, sum[2] * norm];
            let (add, sub) = (
                get(i as isize + r as isize + 1),
                get(i as isize - r as isize),
            );
            for c in 0..3 {
                sum[c] += add[c] - sub[c];
            }
        }
    }
}

fn pixelated(img: &RgbImage, (x0, y0, w, h): (u32, u32, u32, u32), block: u32) -> RgbImage {
    let mut out = RgbImage::new(w, h);
    for by in (0..h).step_by(block as usize) {
        for bx in (0..w).step_by(block as usize) {
            let (bw, bh) = (block.min(w - bx), block.min(h - by));
            let mut sum = [0u64; 3];
            for y in by..by + bh {
                for x in bx..bx + bw {
                    let p = img.get_pixel(x0 + x, y0 + y).0;
                    for c in 0..3 {
                        sum[c] += u64::from(p[c]);
                    }
                }
            }
            let n = u64::from(bw * bh);
            let avg = image::Rgb([(sum[0] / n) as u8, (sum[1] / n) as u8, (sum[2] / n) as u8]);
            for y in by..by + bh {
                for x in bx..bx + bw {
                    out.put_pixel(x, y, avg);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            if (x / 2 + y / 2) % 2 == 0 {
                image::Rgb([230, 210, 190])
            } else {
                image::Rgb([20, 40, 60])
            }
        })
    }

    fn face(b: [f32; 4]) -> Face {
        Face {
            bbox: b,
            score: 1.0,
            landmarks: vec![],
        }
    }

    #[test]
    fn each_style_changes_the_face_and_nothing_else() {
        for style in [Style::Blur, Style::Pixelate, Style::Mask] {
            let orig = checker(100, 100);
            let mut img = orig.clone();
            anonymize(&mut img, &[face([40.0, 40.0, 60.0, 60.0])], style, 1.0, 0.2);
            assert_ne!(
                img.get_pixel(50, 50),
                orig.get_pixel(50, 50),
                "{style:?} centre"
            );
            let changed_inside = (45..55)
                .flat_map(|y| (45..55).map(move |x| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y) != orig.get_pixel(x, y))
                .count();
            assert!(changed_inside > 50, "{style:?}: {changed_inside}");
            for (x, y) in [(0, 0), (99, 99), (30, 50), (70, 50), (50, 30), (50, 70)] {
                assert_eq!(
                    img.get_pixel(x, y),
                    orig.get_pixel(x, y),
                    "{style:?} at {x},{y}"
                );
            }
        }
    }

    #[test]
    fn blur_removes_detail() {
        let orig = checker(200, 200);
        let mut img = orig.clone();
        anonymize(
            &mut img,
            &[face([50.0, 50.0, 150.0, 150.0])],
            Style::Blur,
            1.0,
            0.0,
        );
        // A checkerboard of 2-px squares blurred with radius 12 is flat grey in the middle.
        let p = img.get_pixel(100, 100).0;
        assert!((100..=155).contains(&p[0]), "{p:?}");
    }

    #[test]
    fn degenerate_boxes_are_ignored() {
        let mut img = checker(10, 10);
        anonymize(
            &mut img,
            &[
                face([5.0, 5.0, 5.0, 5.0]),
                face([f32::NAN, 0.0, 1.0, 1.0]),
                face([-50.0, -50.0, -10.0, -10.0]),
            ],
            Style::Blur,
            1.0,
            0.2,
        );
        assert_eq!(img, checker(10, 10));
    }
}
