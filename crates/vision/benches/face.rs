//! Per-stage costs of the face pipeline on a real 1080p photo, and ONNX Runtime against tract per model.
//!
//! `cargo bench -p switchyard-vision --bench face` (after `make setup`). Prints criterion's estimates;
//! the engine comparison prints the tract/ort ratio for each model at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use image::RgbImage;
use switchyard_infer::{EngineChoice, LoadOptions, Model, Patch, Tensor};
use switchyard_vision::imageio::{self, Format};
use switchyard_vision::{DetectorKind, DetectorParams, FaceDetector, Style, anonymize};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// t1.jpg (a real group photo) resized to 1920×1080.
fn photo_1080p() -> (RgbImage, Vec<u8>) {
    let bytes = std::fs::read(root().join(".cache/testdata/t1.jpg")).expect("run `make setup`");
    let img = imageio::decode(&bytes, u64::MAX).unwrap().image;
    let img = image::imageops::resize(&img, 1920, 1080, image::imageops::FilterType::Triangle);
    let jpeg = imageio::encode(&img, Format::Jpeg, 90).unwrap();
    (img, jpeg)
}

fn detector(kind: DetectorKind, engine: EngineChoice) -> FaceDetector {
    let path = root().join(kind.default_model());
    let opts = LoadOptions {
        engine,
        ..Default::default()
    };
    FaceDetector::load(kind, &path, DetectorParams::default(), opts).unwrap()
}

fn stages(c: &mut Criterion) {
    let (img, jpeg) = photo_1080p();
    let cf = detector(DetectorKind::CenterFace, EngineChoice::Ort);
    let faces = cf.detect(&img).unwrap();
    let mut g = c.benchmark_group("stages_1080p");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.bench_function("decode_jpeg", |b| {
        b.iter(|| imageio::decode(&jpeg, u64::MAX).unwrap())
    });
    // The tensor's buffer goes back to the stock after each run, as the gateway's requests do (a
    // fresh 11 MB buffer each time would measure the kernel's page zeroing instead).
    g.bench_function("preprocess_centerface_1280", |b| {
        b.iter(|| {
            let t = switchyard_vision::centerface::preprocess(&img, 1280, 736).unwrap();
            switchyard_infer::spare::recycle([t]);
        })
    });
    g.bench_function("detect_centerface_1280_ort", |b| {
        b.iter(|| cf.detect(&img).unwrap())
    });
    g.bench_function("anonymise_blur", |b| {
        b.iter_batched(
            || img.clone(),
            |mut i| anonymize(&mut i, &faces, Style::Blur, 1.0, 0.2),
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("encode_jpeg_q90", |b| {
        b.iter(|| imageio::encode(&img, Format::Jpeg, 90).unwrap())
    });
    // What a request alone on its slot does: strips on every core, joined with restart markers.
    g.bench_function("encode_jpeg_q90_all_cores", |b| {
        b.iter(|| {
            imageio::encode_threads(&img, Format::Jpeg, 90, switchyard_infer::cores()).unwrap()
        })
    });
    // JPEG to JPEG at the input's quality: the input's bits kept outside the six faces.
    let mut blurred = img.clone();
    let regions = anonymize(&mut blurred, &faces, Style::Blur, 1.0, 0.2);
    assert!(switchyard_vision::splice::splice(&jpeg, &blurred, &regions, None).is_some());
    g.bench_function("splice_jpeg_6_faces", |b| {
        b.iter(|| switchyard_vision::splice::splice(&jpeg, &blurred, &regions, None).unwrap())
    });
    // The same with no face: parsing the input's entropy-coded data and copying it.
    g.bench_function("splice_jpeg_no_face", |b| {
        b.iter(|| switchyard_vision::splice::splice(&jpeg, &blurred, &[], None).unwrap())
    });
    // WebP output: lossy through libwebp (a lossy input, or a quality given), lossless otherwise.
    g.bench_function("encode_webp_lossy_q90", |b| {
        b.iter(|| imageio::encode(&img, Format::Webp, 90).unwrap())
    });
    g.finish();
}

fn median_ms(model: &Model, input: &Tensor, runs: usize) -> f64 {
    let name = model.inputs[0].clone();
    model.run(vec![(name.as_str(), input.clone())]).unwrap();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            model.run(vec![(name.as_str(), input.clone())]).unwrap();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn engines(_c: &mut Criterion) {
    let cases: [(&str, &str, Patch, Vec<usize>); 4] = [
        (
            "blazeface-front 1x128x128x3",
            DetectorKind::BlazeFaceFront.default_model(),
            Patch::ConstantOfShapeF32,
            vec![1, 128, 128, 3],
        ),
        (
            "blazeface-back 1x256x256x3",
            DetectorKind::BlazeFaceBack.default_model(),
            Patch::ConstantOfShapeF32,
            vec![1, 256, 256, 3],
        ),
        (
            "centerface 1x3x480x640",
            DetectorKind::CenterFace.default_model(),
            Patch::DynamicInputs,
            vec![1, 3, 480, 640],
        ),
        (
            "centerface 1x3x736x1280",
            DetectorKind::CenterFace.default_model(),
            Patch::DynamicInputs,
            vec![1, 3, 736, 1280],
        ),
    ];
    println!("\nengine comparison (median ms per inference, default threads):");
    println!(
        "{:<28} {:>9} {:>9} {:>12}",
        "model", "ort", "tract", "tract/ort"
    );
    for (name, file, patch, shape) in cases {
        let n: usize = shape.iter().product();
        let input = Tensor::f32(shape, (0..n).map(|i| (i % 251) as f32 / 251.0).collect());
        let load = |engine| {
            Model::load(
                &root().join(file),
                &LoadOptions {
                    engine,
                    patches: vec![patch],
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let runs = if name.contains("1280") { 9 } else { 25 };
        let ort = median_ms(&load(EngineChoice::Ort), &input, runs);
        let tract = median_ms(&load(EngineChoice::Tract), &input, runs);
        println!("{name:<28} {ort:>9.2} {tract:>9.2} {:>11.1}x", tract / ort);
    }
}

criterion_group!(benches, stages, engines);
criterion_main!(benches);
