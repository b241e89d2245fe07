//! RGB pixels as `jpeg-encoder` input: at 4:2:0 with chroma averaged over each 2×2 block
//! ([`Rgb420`]), and at 4:4:4 ([`Rgb444`]).
//!
//! At 4:2:0 a JPEG keeps one chroma sample per 2×2 pixels. libjpeg (and so every camera and photo
//! tool) makes it the block's average; `jpeg-encoder` by default keeps the top-left pixel's chroma, which
//! aliases colour edges: on the test photo 0.7 dB less PSNR than libjpeg-turbo at quality 90, in a file
//! 1.2 % larger. Its own averaging mode fixes that at ~1.5 ms more per 1080p photo. [`Rgb420`] does the
//! colour conversion and the averaging in one pass over each pair of rows instead (one chroma
//! conversion per block, compiled for AVX2 where the CPU has it) and hands the encoder luma and
//! block-averaged chroma, which it then samples at no further cost: libjpeg-turbo's fidelity in no
//! more time than the point-sampled default.

use std::cell::RefCell;

use jpeg_encoder::{ImageBuffer, JpegColorType};

/// Packed 8-bit RGB rows as a YCbCr image whose chroma is constant over each 2×2 block (the block
/// average, rounded): what a JPEG encoder sampling chroma at 4:2:0 should see.
pub struct Rgb420<'a> {
    px: &'a [u8],
    width: u16,
    height: u16,
    pair: RefCell<RowPair>,
}

/// The last pair of rows converted (rows `2 * index` and `2 * index + 1`).
struct RowPair {
    index: usize,
    luma: [Vec<u8>; 2],
    cb: Vec<u8>,
    cr: Vec<u8>,
}

impl<'a> Rgb420<'a> {
    /// `px` holds `height` rows of `width` RGB pixels; `None` when its length says otherwise or the
    /// image is empty.
    pub fn new(px: &'a [u8], width: u16, height: u16) -> Option<Self> {
        let (w, h) = (usize::from(width), usize::from(height));
        (w > 0 && h > 0 && px.len() == w * h * 3).then(|| Self {
            px,
            width,
            height,
            pair: RefCell::new(RowPair {
                index: usize::MAX,
                luma: [vec![0; w], vec![0; w]],
                cb: vec![0; w],
                cr: vec![0; w],
            }),
        })
    }

    fn row(&self, y: usize) -> &[u8] {
        let stride = usize::from(self.width) * 3;
        &self.px[y * stride..(y + 1) * stride]
    }
}

impl ImageBuffer for Rgb420<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        // The encoder asks for rows in order (the last one again for the padding below the image),
        // so each pair of rows is converted once.
        let y = usize::from(y).min(usize::from(self.height) - 1);
        let mut pair = self.pair.borrow_mut();
        if pair.index != y / 2 {
            let top = 2 * (y / 2);
            // An odd height's last row pairs with itself, as libjpeg replicates it.
            let bottom = (top + 1).min(usize::from(self.height) - 1);
            let RowPair { luma, cb, cr, .. } = &mut *pair;
            let [luma_top, luma_bottom] = luma;
            convert_pair(
                self.row(top),
                self.row(bottom),
                luma_top,
                luma_bottom,
                cb,
                cr,
            );
            pair.index = y / 2;
        }
        buffers[0].extend_from_slice(&pair.luma[y % 2]);
        buffers[1].extend_from_slice(&pair.cb);
        buffers[2].extend_from_slice(&pair.cr);
    }
}

/// Packed 8-bit RGB rows as a full-resolution YCbCr image, for 4:4:4 output: the same fixed-point
/// conversion, and so the same bytes, as `jpeg-encoder`'s own RGB input. Handing the encoder this
/// type rather than calling its `encode(…, ColorType::Rgb)` compiles the encoder for one more
/// input type instead of for each of its ten colour types, which made up a tenth of this crate's
/// build.
pub struct Rgb444<'a> {
    px: &'a [u8],
    width: u16,
    height: u16,
}

impl<'a> Rgb444<'a> {
    /// `px` holds `height` rows of `width` RGB pixels; `None` when its length says otherwise or the
    /// image is empty.
    pub fn new(px: &'a [u8], width: u16, height: u16) -> Option<Self> {
        let (w, h) = (usize::from(width), usize::from(height));
        (w > 0 && h > 0 && px.len() == w * h * 3).then_some(Self { px, width, height })
    }
}

impl ImageBuffer for Rgb444<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        // Rows below the image (the encoder's padding) repeat the last one.
        let y = usize::from(y).min(usize::from(self.height) - 1);
        let w = usize::from(self.width);
        let row = &self.px[y * w * 3..(y + 1) * w * 3];
        let [luma, cb, cr, _] = buffers;
        let start = luma.len();
        for plane in [&mut *luma, &mut *cb, &mut *cr] {
            plane.resize(start + w, 0);
        }
        convert_row(
            row,
            &mut luma[start..],
            &mut cb[start..start + w],
            &mut cr[start..start + w],
        );
    }
}

/// Luma and chroma of each pixel of a row.
fn convert_row(px: &[u8], luma: &mut [u8], cb: &mut [u8], cr: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of the function.
        unsafe { convert_row_avx2(px, luma, cb, cr) };
        return;
    }
    convert_row_any(px, luma, cb, cr);
}

/// [`convert_row_any`] compiled for AVX2 (separate slice arguments, as for [`convert_pair_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn convert_row_avx2(px: &[u8], luma: &mut [u8], cb: &mut [u8], cr: &mut [u8]) {
    convert_row_any(px, luma, cb, cr);
}

#[inline(always)]
fn convert_row_any(px: &[u8], luma_out: &mut [u8], cb: &mut [u8], cr: &mut [u8]) {
    for (i, ((l, u), v)) in luma_out.iter_mut().zip(cb).zip(cr).enumerate() {
        let (r, g, b) = rgb(px, 3 * i);
        *l = luma(r, g, b);
        // jpeg-encoder's rounding (`rgb_to_ycbcr`), to the bit.
        *u = ((-11059 * r - 21709 * g + 32768 * b + (128 << 16) + 0x7FFF) >> 16) as u8;
        *v = ((32768 * r - 27439 * g - 5329 * b + (128 << 16) + 0x7FFF) >> 16) as u8;
    }
}

/// Luma of two rows, and their chroma averaged over each 2×2 block (an odd width's last column pairs
/// with itself).
fn convert_pair(
    top: &[u8],
    bottom: &[u8],
    luma_top: &mut [u8],
    luma_bottom: &mut [u8],
    cb: &mut [u8],
    cr: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of the function.
        unsafe { convert_pair_avx2(top, bottom, luma_top, luma_bottom, cb, cr) };
        return;
    }
    convert_pair_any(top, bottom, luma_top, luma_bottom, cb, cr);
}

/// [`convert_pair_any`] compiled for AVX2 (the compiler vectorises it; ~1 ms less per 1080p photo).
/// The six slices stay separate arguments, here and there: as arguments the compiler knows they do
/// not overlap, which is what lets the loop vectorise (bundled in a struct of the planes, the encode
/// took 13.3 ms instead of 10.7 per 1080p photo).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn convert_pair_avx2(
    top: &[u8],
    bottom: &[u8],
    luma_top: &mut [u8],
    luma_bottom: &mut [u8],
    cb: &mut [u8],
    cr: &mut [u8],
) {
    convert_pair_any(top, bottom, luma_top, luma_bottom, cb, cr);
}

/// JFIF's RGB → YCbCr in 16-bit fixed point (the coefficients libjpeg and `jpeg-encoder` use).
#[inline(always)]
fn luma(r: i32, g: i32, b: i32) -> u8 {
    ((19595 * r + 38470 * g + 7471 * b + 0x7FFF) >> 16) as u8
}

/// Cb and Cr of the sum of four pixels, divided by four and rounded: the block's average chroma.
#[inline(always)]
fn chroma_of_sum(r: i32, g: i32, b: i32) -> (u8, u8) {
    // Four times the +128 offset, and half of the final divisor (2^16 · 4) for rounding.
    const OFFSET: i32 = (512 << 16) + (1 << 17);
    let cb = (-11059 * r - 21709 * g + 32768 * b + OFFSET) >> 18;
    let cr = (32768 * r - 27439 * g - 5329 * b + OFFSET) >> 18;
    (cb as u8, cr as u8)
}

/// The pixel whose red byte is at `i`, widened for the fixed-point sums.
#[inline(always)]
fn rgb(p: &[u8], i: usize) -> (i32, i32, i32) {
    (i32::from(p[i]), i32::from(p[i + 1]), i32::from(p[i + 2]))
}

#[inline(always)]
fn convert_pair_any(
    top: &[u8],
    bottom: &[u8],
    luma_top: &mut [u8],
    luma_bottom: &mut [u8],
    cb: &mut [u8],
    cr: &mut [u8],
) {
    for c in 0..luma_top.len() / 2 {
        let (t, b) = (&top[c * 6..c * 6 + 6], &bottom[c * 6..c * 6 + 6]);
        let px = |p: &[u8], i: usize| (i32::from(p[i]), i32::from(p[i + 1]), i32::from(p[i + 2]));
        let (p0, p1, p2, p3) = (px(t, 0), px(t, 3), px(b, 0), px(b, 3));
        luma_top[2 * c] = luma(p0.0, p0.1, p0.2);
        luma_top[2 * c + 1] = luma(p1.0, p1.1, p1.2);
        luma_bottom[2 * c] = luma(p2.0, p2.1, p2.2);
        luma_bottom[2 * c + 1] = luma(p3.0, p3.1, p3.2);
        let (u, v) = chroma_of_sum(
            p0.0 + p1.0 + p2.0 + p3.0,
            p0.1 + p1.1 + p2.1 + p3.1,
            p0.2 + p1.2 + p2.2 + p3.2,
        );
        cb[2 * c] = u;
        cb[2 * c + 1] = u;
        cr[2 * c] = v;
        cr[2 * c + 1] = v;
    }
    // An odd width: the last column is a block of its own, twice as wide as it is.
    let w = luma_top.len();
    if w % 2 == 1 {
        let i = w - 1;
        let (t, b) = (rgb(top, 3 * i), rgb(bottom, 3 * i));
        luma_top[i] = luma(t.0, t.1, t.2);
        luma_bottom[i] = luma(b.0, b.1, b.2);
        let (u, v) = chroma_of_sum(2 * (t.0 + b.0), 2 * (t.1 + b.1), 2 * (t.2 + b.2));
        cb[i] = u;
        cr[i] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_resolution_rows_are_jpeg_encoders_own_conversion() {
        // Every value of each channel against the others, in rows of odd length (the vector loop's
        // tail), and the padding rows below the image.
        let (w, h) = (37u16, 3u16);
        let px: Vec<u8> = (0..usize::from(w) * usize::from(h) * 3)
            .map(|i| (i * 97 % 256) as u8)
            .collect();
        let img = Rgb444::new(&px, w, h).expect("image");
        for y in 0..h + 2 {
            let mut buffers: [Vec<u8>; 4] = Default::default();
            img.fill_buffers(y, &mut buffers);
            let row = usize::from(y.min(h - 1));
            let stride = usize::from(w) * 3;
            let pixels = px[row * stride..(row + 1) * stride].chunks_exact(3);
            let got = buffers[0].iter().zip(&buffers[1]).zip(&buffers[2]);
            for (x, (p, ((&l, &u), &v))) in pixels.zip(got).enumerate() {
                let want = jpeg_encoder::rgb_to_ycbcr(p[0], p[1], p[2]);
                assert_eq!((l, u, v), want, "{x},{y}");
            }
            assert_eq!(buffers[0].len(), usize::from(w));
        }
        for (r, g, b) in [
            (0, 0, 0),
            (255, 255, 255),
            (255, 0, 0),
            (0, 255, 0),
            (0, 0, 255),
        ] {
            let one = [r, g, b];
            let mut buffers: [Vec<u8>; 4] = Default::default();
            Rgb444::new(&one, 1, 1)
                .expect("one pixel")
                .fill_buffers(0, &mut buffers);
            assert_eq!(
                (buffers[0][0], buffers[1][0], buffers[2][0]),
                jpeg_encoder::rgb_to_ycbcr(r, g, b)
            );
        }
        assert!(Rgb444::new(&px, w, h + 1).is_none());
    }

    /// Fills every row of `img` as the encoder would.
    fn planes(img: &Rgb420<'_>) -> [Vec<u8>; 4] {
        let mut out: [Vec<u8>; 4] = Default::default();
        for y in 0..img.height() {
            img.fill_buffers(y, &mut out);
        }
        out
    }

    #[test]
    fn luma_is_jfif_and_chroma_the_block_average_at_odd_sizes() {
        // 5×3 pixels of varied colours: odd width and height make partial blocks on both edges.
        let (w, h) = (5usize, 3usize);
        let px: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i * 97 + 13) % 256) as u8)
            .collect();
        let img = Rgb420::new(&px, w as u16, h as u16).expect("size");
        let [y_plane, cb_plane, cr_plane, _] = planes(&img);
        let at = |x: usize, y: usize| {
            let i = (y * w + x) * 3;
            jpeg_encoder::rgb_to_ycbcr(px[i], px[i + 1], px[i + 2])
        };
        for y in 0..h {
            for x in 0..w {
                // Luma: exactly the crate's own conversion.
                assert_eq!(y_plane[y * w + x], at(x, y).0, "luma at {x},{y}");
                // Chroma: the mean of the block's converted pixels (edges replicated), within the
                // rounding of converting the sum instead of each pixel.
                let (bx, by) = (x & !1, y & !1);
                let cells = [(bx, by), (bx + 1, by), (bx, by + 1), (bx + 1, by + 1)]
                    .map(|(cx, cy)| at(cx.min(w - 1), cy.min(h - 1)));
                let mean = |f: fn(&(u8, u8, u8)) -> u8| {
                    cells.iter().map(|c| f64::from(f(c))).sum::<f64>() / 4.0
                };
                let (cb, cr) = (mean(|c| c.1), mean(|c| c.2));
                assert!(
                    (f64::from(cb_plane[y * w + x]) - cb).abs() <= 1.0,
                    "cb at {x},{y}: {} against {cb}",
                    cb_plane[y * w + x]
                );
                assert!(
                    (f64::from(cr_plane[y * w + x]) - cr).abs() <= 1.0,
                    "cr at {x},{y}: {} against {cr}",
                    cr_plane[y * w + x]
                );
            }
        }
    }

    #[test]
    fn rows_asked_in_the_encoders_order_are_those_of_a_fresh_conversion() {
        // The encoder asks for rows 0, 1, 2, … and then the last one again for each padding row;
        // the pair cache must give every row what a conversion of that row alone gives.
        let (w, h) = (6u16, 5u16);
        let px: Vec<u8> = (0..usize::from(w * h) * 3)
            .map(|i| (i * 53 % 256) as u8)
            .collect();
        let img = Rgb420::new(&px, w, h).expect("size");
        for y in [0, 1, 2, 3, 4, 4, 4, 4] {
            let mut cached: [Vec<u8>; 4] = Default::default();
            img.fill_buffers(y, &mut cached);
            let mut fresh: [Vec<u8>; 4] = Default::default();
            Rgb420::new(&px, w, h)
                .expect("size")
                .fill_buffers(y, &mut fresh);
            assert_eq!(cached, fresh, "row {y}");
        }
    }

    #[test]
    fn a_buffer_of_the_wrong_length_is_refused() {
        assert!(Rgb420::new(&[0; 11], 2, 2).is_none());
        assert!(Rgb420::new(&[], 0, 0).is_none());
        assert!(Rgb420::new(&[0; 12], 2, 2).is_some());
    }
}
