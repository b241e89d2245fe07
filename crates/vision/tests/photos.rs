//! Real photos through the real models.

mod common;

use common::*;
use image::{RgbImage, imageops};
use switchyard_infer::EngineChoice;
use switchyard_vision::{DetectorKind, DetectorParams, Face, Style, anonymize, nms};

/// Every face of `truth` is one of `found` (IoU ≥ 0.5).
fn assert_finds(found: &[Face], truth: &[Face]) {
    for f in truth {
        assert!(
            found.iter().any(|t| nms::iou(&t.bbox, &f.bbox) >= 0.5),
            "the face at {:?} is missing from {found:?}",
            f.bbox
        );
    }
}

#[test]
fn group_photo_faces_are_found_and_blurred_and_nothing_else_changes() {
    let img = photo("t1.jpg");
    let cf = detector(
        DetectorKind::CenterFace,
        EngineChoice::Ort,
        DetectorParams::default(),
    );
    let faces = cf.detect(&img).unwrap();
    assert_eq!(faces.len(), 6, "{faces:?}");
    let bf = detector(
        DetectorKind::BlazeFaceBack,
        EngineChoice::Ort,
        DetectorParams::default(),
    );
    let tiled = bf.detect(&img).unwrap();
    // Tiled BlazeFace finds the same six faces (CenterFace, full frame, is the independent check)...
    assert_finds(&tiled, &faces);
    // ...and does not count a face twice: the lower half of a face, cut by a tile edge, is part of
    // that face, not a face of its own.
    for (i, a) in tiled.iter().enumerate() {
        for b in &tiled[i + 1..] {
            assert!(
                nms::covered(&a.bbox, &b.bbox) <= 0.6 && nms::covered(&b.bbox, &a.bbox) <= 0.6,
                "one face reported twice: {a:?} and {b:?}"
            );
        }
    }

    let mut out = img.clone();
    anonymize(&mut out, &faces, Style::Blur, 1.0, 0.2);
    for f in &faces {
        let [x1, y1, x2, y2] = f.bbox.map(|v| v as u32);
        let (cx, cy) = ((x1 + x2) / 2, (y1 + y2) / 2);
        let mut changed = 0;
        let mut total = 0;
        for y in (cy - (y2 - y1) / 4..cy + (y2 - y1) / 4).step_by(2) {
            for x in (cx - (x2 - x1) / 4..cx + (x2 - x1) / 4).step_by(2) {
                total += 1;
                changed += usize::from(out.get_pixel(x, y) != img.get_pixel(x, y));
            }
        }
        assert!(
            changed * 10 >= total * 9,
            "face {:?}: only {changed}/{total} pixels changed",
            f.bbox
        );
    }
    // Pixels farther than one face size from every face are untouched.
    let far = |x: u32, y: u32| {
        faces.iter().all(|f| {
            let (w, h) = f.size();
            (x as f32) < f.bbox[0] - w
                || (x as f32) > f.bbox[2] + w
                || (y as f32) < f.bbox[1] - h
                || (y as f32) > f.bbox[3] + h
        })
    };
    let mut checked = 0;
    for y in (0..img.height()).step_by(5) {
        for x in (0..img.width()).step_by(5) {
            if far(x, y) {
                assert_eq!(
                    out.get_pixel(x, y),
                    img.get_pixel(x, y),
                    "pixel {x},{y} far from faces changed"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

#[test]
fn astronaut_has_one_face_on_every_detector() {
    let img = photo("astronaut.png");
    for kind in [
        DetectorKind::CenterFace,
        DetectorKind::BlazeFaceBack,
        DetectorKind::BlazeFaceFront,
    ] {
        let faces = detector(kind, EngineChoice::Ort, DetectorParams::default())
            .detect(&img)
            .unwrap();
        assert_eq!(faces.len(), 1, "{}: {faces:?}", kind.as_str());
        let [x1, y1, x2, y2] = faces[0].bbox;
        assert!(
            x1 > 150.0 && x2 < 300.0 && y1 > 40.0 && y2 < 200.0,
            "{}: {:?}",
            kind.as_str(),
            faces[0].bbox
        );
    }
}

/// A 3840×2560 real background with the real 112-px face pasted at sizes from 160 down to 16 px.
fn far_face_scene() -> (RgbImage, Vec<(u32, [u32; 4])>) {
    let bg = imageops::resize(
        &photo("rocket.jpg"),
        3840,
        2560,
        imageops::FilterType::Triangle,
    );
    let face = photo("face112.png");
    let mut scene = bg;
    let mut placed = Vec::new();
    let sizes = [160u32, 128, 96, 64, 48, 32, 24, 20, 16];
    for (row, y) in [300u32, 1300, 2100].into_iter().enumerate() {
        for (i, &size) in sizes.iter().enumerate() {
            let x = 150 + i as u32 * 400 + row as u32 * 60;
            let patch = imageops::resize(&face, size, size, imageops::FilterType::Lanczos3);
            imageops::overlay(&mut scene, &patch, i64::from(x), i64::from(y));
            placed.push((size, [x, y, x + size, y + size]));
        }
    }
    (scene, placed)
}

fn found(faces: &[Face], at: [u32; 4]) -> bool {
    let size = (at[2] - at[0]) as f32;
    faces.iter().any(|f| {
        let (cx, cy) = ((f.bbox[0] + f.bbox[2]) / 2.0, (f.bbox[1] + f.bbox[3]) / 2.0);
        let w = f.size().0;
        cx > at[0] as f32
            && cx < at[2] as f32
            && cy > at[1] as f32
            && cy < at[3] as f32
            && w > size * 0.3
            && w < size * 2.0
    })
}

#[test]
fn far_faces_are_found_by_the_tiled_detector() {
    let (scene, placed) = far_face_scene();
    let detectors = [
        (
            "blazeface-back tiled",
            detector(
                DetectorKind::BlazeFaceBack,
                EngineChoice::Ort,
                DetectorParams::default(),
            ),
        ),
        (
            "blazeface-back tiled 128",
            detector(
                DetectorKind::BlazeFaceBack,
                EngineChoice::Ort,
                DetectorParams {
                    min_tile: 128,
                    ..Default::default()
                },
            ),
        ),
        (
            "blazeface-back full frame",
            detector(
                DetectorKind::BlazeFaceBack,
                EngineChoice::Ort,
                DetectorParams {
                    tiling: false,
                    ..Default::default()
                },
            ),
        ),
        (
            "centerface max_side 1280",
            detector(
                DetectorKind::CenterFace,
                EngineChoice::Ort,
                DetectorParams::default(),
            ),
        ),
        (
            "centerface max_side 3840",
            detector(
                DetectorKind::CenterFace,
                EngineChoice::Ort,
                DetectorParams {
                    max_side: 3840,
                    ..Default::default()
                },
            ),
        ),
    ];
    println!("recall by face size (3 faces per size) in a 3840×2560 photo:");
    println!(
        "{:<28} {}",
        "detector",
        placed
            .iter()
            .take(9)
            .map(|p| format!("{:>5}", p.0))
            .collect::<String>()
    );
    let mut tiled_recall = Vec::new();
    let mut fine_recall = Vec::new();
    for (name, det) in &detectors {
        let faces = det.detect(&scene).unwrap();
        let mut row = String::new();
        for size in placed.iter().take(9).map(|p| p.0) {
            let hits = placed
                .iter()
                .filter(|p| p.0 == size && found(&faces, p.1))
                .count();
            row.push_str(
                &format!("{:>4}/3", hits)
                    .chars()
                    .rev()
                    .take(5)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>(),
            );
            if *name == "blazeface-back tiled" {
                tiled_recall.push((size, hits));
            }
            if *name == "blazeface-back tiled 128" {
                fine_recall.push((size, hits));
            }
        }
        println!("{name:<28} {row}   ({} detections)", faces.len());
    }
    // Measured at the default threshold (0.5): 3/3 down to 32 px, 2/3 at 24 and 20 px (the third
    // 24-px face, on a busy background, scores 0.33), 0/3 at 16 px. Lowering the threshold to 0.3
    // finds it but adds many false faces on real photos, so the default stays 0.5.
    // With `min_tile = 128` (tiles up-scaled 2× into the 256-px model) every face of 24 px and more
    // is found, and here even 16 px, at the price of about 4× the tiles and more false faces on
    // busy backgrounds (31 detections for 27 faces, against 25; before faces had to be seen at two
    // scales, 71 against 35): the setting for small-face work.
    for (size, hits) in fine_recall {
        if size >= 24 {
            assert_eq!(hits, 3, "min_tile 128 found {hits}/3 faces of {size} px");
        }
    }
    for (size, hits) in tiled_recall {
        match size {
            32.. => assert_eq!(hits, 3, "tiled BlazeFace found {hits}/3 faces of {size} px"),
            24 => assert!(hits >= 2, "tiled BlazeFace found {hits}/3 faces of 24 px"),
            _ => {}
        }
    }
}

#[test]
fn transparency_and_grayscale_survive_anonymisation() {
    // The astronaut photo with an alpha channel (a gradient, fully transparent in the top-left corner),
    // and the same in grayscale, in PNG and lossless WebP.
    let rgb = photo("astronaut.png");
    let (w, h) = rgb.dimensions();
    let alpha =
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x + y) * 255 / (w + h)) as u8]));
    let rgba = image::RgbaImage::from_fn(w, h, |x, y| {
        let p = rgb.get_pixel(x, y);
        image::Rgba([p[0], p[1], p[2], alpha.get_pixel(x, y)[0]])
    });
    let gray_alpha = image::DynamicImage::ImageRgba8(rgba.clone()).to_luma_alpha8();
    let det = detector(
        DetectorKind::CenterFace,
        EngineChoice::Ort,
        DetectorParams::default(),
    );
    for (name, input) in [
        ("rgba", image::DynamicImage::ImageRgba8(rgba)),
        (
            "gray+alpha",
            image::DynamicImage::ImageLumaA8(gray_alpha.clone()),
        ),
        (
            "gray",
            image::DynamicImage::ImageLuma8(
                image::DynamicImage::ImageLumaA8(gray_alpha).to_luma8(),
            ),
        ),
    ] {
        for format in [image::ImageFormat::Png, image::ImageFormat::WebP] {
            if format == image::ImageFormat::WebP && name != "rgba" {
                continue; // WebP has no grayscale: it decodes as RGB(A) whatever was written.
            }
            let mut bytes = Vec::new();
            input
                .write_to(&mut std::io::Cursor::new(&mut bytes), format)
                .unwrap();
            let (out, _, d) =
                switchyard_vision::pipeline::blur(&det, &bytes, 100_000_000, &Default::default())
                    .unwrap_or_else(|e| panic!("{name} {format:?}: {e}"));
            assert_eq!(d.faces.len(), 1, "{name} {format:?}");
            let back = image::load_from_memory(&out).unwrap();
            assert_eq!(
                back.color(),
                input.color(),
                "{name} {format:?}: the output's channels are not the input's"
            );
            // Transparency is the input's, to the byte; the colour changed only in the face.
            if input.color().has_alpha() {
                assert_eq!(
                    back.to_rgba8().pixels().map(|p| p[3]).collect::<Vec<_>>(),
                    alpha.as_raw().clone(),
                    "{name} {format:?}: alpha changed"
                );
            }
            let (a, b) = (input.to_rgb8(), back.to_rgb8());
            let f = &d.faces[0].bbox;
            let (cx, cy) = (((f[0] + f[2]) / 2.0) as u32, ((f[1] + f[3]) / 2.0) as u32);
            assert_ne!(
                a.get_pixel(cx, cy),
                b.get_pixel(cx, cy),
                "{name}: face not blurred"
            );
            assert_eq!(
                a.get_pixel(w - 5, h - 5),
                b.get_pixel(w - 5, h - 5),
                "{name}"
            );
        }
    }
    // Asked for as JPEG, which holds no alpha, the image is flattened onto white: the transparent
    // corner is white, the opaque one its own colour (JPEG error aside).
    let mut png = Vec::new();
    image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(w, h, |x, y| {
        let p = rgb.get_pixel(x, y);
        image::Rgba([p[0], p[1], p[2], alpha.get_pixel(x, y)[0]])
    }))
    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
    .unwrap();
    let opts = switchyard_vision::pipeline::BlurOptions {
        format: Some(switchyard_vision::imageio::Format::Jpeg),
        ..Default::default()
    };
    let (jpeg, _, _) = switchyard_vision::pipeline::blur(&det, &png, 100_000_000, &opts).unwrap();
    let flat = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    assert!(
        flat.get_pixel(1, 1).0.iter().all(|&c| c >= 245),
        "{:?}",
        flat.get_pixel(1, 1)
    );
    let (a, b) = (rgb.get_pixel(w - 3, h - 3), flat.get_pixel(w - 3, h - 3));
    assert!(
        a.0.iter().zip(b.0).all(|(&x, y)| x.abs_diff(y) <= 12),
        "{a:?} against {b:?}"
    );
}

#[test]
fn a_phone_size_photo_is_not_blurred_in_dozens_of_places() {
    // t1.jpg at 12 megapixels (a phone photo's size; upscaled, so soft like one). Tiling runs the
    // model on ~300 regions; before a face had to be seen at two scales (or be too small for the
    // coarser one), 18 textures (lamps, bowls, folds) were reported as faces here at scores up to
    // 0.72 (47 at 24 megapixels), each one a blurred patch. Now 2.
    let small = photo("t1.jpg");
    let img = imageops::resize(&small, 4000, 2769, imageops::FilterType::Triangle);
    let cf = detector(
        DetectorKind::CenterFace,
        EngineChoice::Ort,
        DetectorParams {
            max_side: 4000,
            ..Default::default()
        },
    );
    let truth = cf.detect(&img).unwrap();
    assert_eq!(truth.len(), 6, "{truth:?}");
    let bf = detector(
        DetectorKind::BlazeFaceBack,
        EngineChoice::Ort,
        DetectorParams::default(),
    );
    let tiled = bf.detect(&img).unwrap();
    assert_finds(&tiled, &truth);
    let others: Vec<_> = tiled
        .iter()
        .filter(|t| truth.iter().all(|f| nms::iou(&t.bbox, &f.bbox) < 0.5))
        .collect();
    eprintln!(
        "{} faces, {} other detections: {others:?}",
        truth.len(),
        others.len()
    );
    assert!(
        others.len() <= 5,
        "{} detections that are not faces",
        others.len()
    );
}

#[test]
fn tiles_spread_over_one_core_sessions_find_the_same_faces() {
    // A face slot's layout (one session per core, adaptive threads): a request alone runs its tiles
    // on every session at once. The faces must be those of one session running them in turn.
    let img = photo("t1.jpg");
    let load = |engine: EngineChoice, sessions: usize| {
        let opts = switchyard_infer::LoadOptions {
            engine,
            sessions,
            adaptive_threads: true,
            ..Default::default()
        };
        let kind = DetectorKind::BlazeFaceBack;
        switchyard_vision::FaceDetector::load(
            kind,
            &model_file(kind),
            DetectorParams::default(),
            opts,
        )
        .expect("load detector")
    };
    let (spread, single) = (load(EngineChoice::Ort, 2), load(EngineChoice::Ort, 1));
    let tract = load(EngineChoice::Tract, 1);
    assert_eq!(tract.model.lanes(), switchyard_infer::cores());
    if switchyard_infer::cores() > 1 {
        assert_eq!(spread.model.lanes(), 2);
        // Another request in progress: no lanes, the cores are its too.
        let _other = spread.model.request();
        let _this = spread.model.request();
        assert_eq!(spread.model.lanes(), 1);
    }
    assert_eq!(single.model.lanes(), 1);
    let (a, b) = (spread.detect(&img).unwrap(), single.detect(&img).unwrap());
    assert_same_faces(&a, &b, 0.01, 1e-4);
    // tract on every core finds what ONNX Runtime finds (the reference test's tolerance).
    assert_same_faces(&tract.detect(&img).unwrap(), &b, 1.0, 0.01);
}

#[test]
fn tiles_in_batches_find_the_same_faces_as_tiles_one_by_one() {
    // The GPU's layout, run here on the CPU: several tiles per run of a BlazeFace graph whose batch
    // dimension follows the input (the file pins it at 1: the run of 8 would fail without the
    // patch), every run exactly 8 tiles, the last padded. Same faces as one tile per run.
    let img = photo("t1.jpg");
    for engine in [EngineChoice::Ort, EngineChoice::Tract] {
        let load = |tile_batch| {
            let params = DetectorParams {
                tile_batch,
                ..Default::default()
            };
            detector(DetectorKind::BlazeFaceBack, engine, params)
        };
        let (batched, single) = (load(Some(8)), load(None));
        assert_eq!((batched.tile_batch(), single.tile_batch()), (8, 1));
        let want = single.detect(&img).unwrap();
        assert!(want.len() >= 6, "{want:?}");
        assert_same_faces(&batched.detect(&img).unwrap(), &want, 0.01, 1e-4);
        // The full frame alone, a run of one through the patched graph: what the file's graph finds.
        assert_same_faces(
            &batched.detect_single(&img).unwrap(),
            &single.detect_single(&img).unwrap(),
            0.01,
            1e-4,
        );
    }
}

fn assert_same_faces(a: &[Face], b: &[Face], px: f32, score: f32) {
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!(
            x.bbox.iter().zip(y.bbox).all(|(p, q)| (p - q).abs() < px)
                && (x.score - y.score).abs() < score,
            "{x:?} against {y:?}"
        );
    }
}

/// A lossy WebP (libwebp, quality 80) comes back lossy at its own quality: near its own size, not
/// the lossless file nine times larger; the faces are blurred and the rest of the picture stays as
/// it was, but for a second generation of lossy coding.
#[test]
fn a_lossy_webp_stays_lossy_near_its_size() {
    let input = std::fs::read(existing(".cache/reference/jpeg/t1_lossy.webp")).expect("input");
    let reference = codec_reference();
    let lossless = reference["webp_inputs"]["t1_lossy.webp"]["lossless_bytes"]
        .as_u64()
        .expect("size") as usize;
    let det = detector(
        DetectorKind::CenterFace,
        EngineChoice::Ort,
        DetectorParams::default(),
    );
    let decode = |b: &[u8]| image::load_from_memory(b).expect("decodes").to_rgb8();
    let before = decode(&input);
    let mut sizes = Vec::new();
    for quality in [
        switchyard_vision::imageio::Quality::Auto,
        switchyard_vision::imageio::Quality::Fixed(60),
    ] {
        let opts = switchyard_vision::pipeline::BlurOptions {
            quality,
            ..Default::default()
        };
        let (out, format, d) =
            switchyard_vision::pipeline::blur(&det, &input, 100_000_000, &opts).expect("blur");
        assert_eq!(format, switchyard_vision::imageio::Format::Webp);
        assert_eq!(d.faces.len(), 6);
        assert!(switchyard_vision::webp::is_lossy(&out), "{quality:?}");
        sizes.push(out.len());
        let after = decode(&out);
        // Away from the faces: the same picture, to lossy coding's error.
        let near_face = |x: u32, y: u32| {
            d.faces.iter().any(|f| {
                let [x1, y1, x2, y2] = f.bbox;
                let (mx, my) = ((x2 - x1) * 0.5, (y2 - y1) * 0.5);
                (x as f32) > x1 - mx
                    && (x as f32) < x2 + mx
                    && (y as f32) > y1 - my
                    && (y as f32) < y2 + my
            })
        };
        // PSNR between the two pictures over the pixels `inside` says.
        let psnr = |inside: &dyn Fn(u32, u32) -> bool| {
            let (mut err, mut n) = (0f64, 0f64);
            for (x, y, p) in before.enumerate_pixels().filter(|(x, y, _)| inside(*x, *y)) {
                for (a, b) in p.0.iter().zip(after.get_pixel(x, y).0) {
                    err += (f64::from(*a) - f64::from(b)).powi(2);
                    n += 1.0;
                }
            }
            10.0 * (255f64.powi(2) / (err / n)).log10()
        };
        let away = psnr(&|x, y| !near_face(x, y));
        // The middle half of each face box: blurred, so far from what it was.
        let in_faces = psnr(&|x, y| {
            d.faces.iter().any(|f| {
                let [x1, y1, x2, y2] = f.bbox;
                let (qx, qy) = ((x2 - x1) * 0.25, (y2 - y1) * 0.25);
                (x as f32) > x1 + qx
                    && (x as f32) < x2 - qx
                    && (y as f32) > y1 + qy
                    && (y as f32) < y2 - qy
            })
        });
        eprintln!(
            "{quality:?}: {} bytes from {}; {away:.1} dB away from the faces, {in_faces:.1} dB in them",
            out.len(),
            input.len()
        );
        assert!(away > 30.0, "{quality:?}: {away:.1} dB away from the faces");
        assert!(
            in_faces < away - 6.0,
            "{quality:?}: faces at {in_faces:.1} dB"
        );
    }
    // At quality=auto (the input's own, 80, read from its header) about the input's size, far from
    // the lossless one; 60 is smaller.
    let ratio = sizes[0] as f64 / input.len() as f64;
    assert!(
        (0.8..1.1).contains(&ratio) && sizes[0] * 4 < lossless,
        "auto: {} bytes from {} (lossless {lossless})",
        sizes[0],
        input.len()
    );
    assert!(sizes[1] < sizes[0], "{sizes:?}");
}

#[test]
fn the_first_photos_after_a_warm_up_find_the_arenas_already_grown() {
    // A face slot's layout on the CPU: a request alone runs CenterFace on the all-cores session at
    // the photo's own input shape, overlapping requests each on a session of the pool. `warm_up`
    // (the gateway's load and hot swap) runs all of them at a 16:9 photo's shape at `max_side`, so
    // the first 1080p photos after it, alone or overlapping, reserve no more memory (growing an
    // arena is what made those first photos slow).
    let opts = switchyard_infer::LoadOptions {
        engine: EngineChoice::Ort,
        sessions: 2,
        adaptive_threads: true,
        ..Default::default()
    };
    let kind = DetectorKind::CenterFace;
    let det = switchyard_vision::FaceDetector::load(
        kind,
        &model_file(kind),
        DetectorParams::default(),
        opts,
    )
    .expect("load detector");
    det.warm_up().expect("warm-up");
    let reserved = || det.model.memory().expect("arena statistics").reserved_bytes;
    let before = reserved();
    let img = imageops::resize(&photo("t1.jpg"), 1920, 1080, imageops::FilterType::Triangle);
    {
        let _alone = det.model.request();
        let runs = det.model.alone_runs();
        let faces = det.detect(&img).expect("detect");
        assert_eq!(
            det.model.alone_runs(),
            runs + 1,
            "the photo ran on the all-cores session"
        );
        assert!(!faces.is_empty());
        assert_eq!(reserved(), before, "the first photo grew the arena");
    }
    // Two requests at once, each on a session of the pool (the first free one): both sessions run.
    let runs = det.model.alone_runs();
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let _overlapping = det.model.request();
                start.wait();
                assert!(!det.detect(&img).expect("detect").is_empty());
            });
        }
    });
    assert_eq!(det.model.alone_runs(), runs, "the photos overlapped");
    assert_eq!(
        reserved(),
        before,
        "overlapping photos grew the pool's arenas"
    );
}
