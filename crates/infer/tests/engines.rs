//! Both engines load the real face models (as fetched by `make setup`) and agree on their outputs.

use std::path::PathBuf;

use switchyard_infer::{EngineChoice, EngineKind, LoadOptions, Model, Patch, Tensor};

fn model_path(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    assert!(p.exists(), "{} is missing: run `make setup`", p.display());
    p
}

fn opts(engine: EngineChoice, patches: &[Patch]) -> LoadOptions {
    LoadOptions {
        engine,
        patches: patches.to_vec(),
        threads: 1,
        ..Default::default()
    }
}

/// Deterministic, non-trivial input in [-1, 1].
fn ramp(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape, b.shape);
    a.as_f32()
        .unwrap()
        .iter()
        .zip(b.as_f32().unwrap())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn blazeface_runs_on_both_engines_with_the_same_outputs() {
    let path = model_path("models/blazeface/face_detection_back_256x256.onnx");
    let patches = [Patch::ConstantOfShapeF32];
    let ort = Model::load(&path, &opts(EngineChoice::Ort, &patches)).expect("ort load");
    let tract = Model::load(&path, &opts(EngineChoice::Tract, &patches)).expect("tract load");
    assert_eq!(
        (ort.engine, tract.engine),
        (EngineKind::Ort, EngineKind::Tract)
    );
    assert_eq!(ort.outputs.len(), 4);
    let input = Tensor::f32(vec![1, 256, 256, 3], ramp(256 * 256 * 3));
    let a = ort
        .run(vec![(ort.inputs[0].as_str(), input.clone())])
        .unwrap();
    let b = tract.run(vec![(tract.inputs[0].as_str(), input)]).unwrap();
    let shapes: Vec<_> = a.iter().map(|t| t.shape.clone()).collect();
    assert!(
        shapes.contains(&vec![1, 512, 16]) && shapes.contains(&vec![1, 384, 1]),
        "{shapes:?}"
    );
    for (x, y) in a.iter().zip(&b) {
        assert!(
            max_abs_diff(x, y) < 1e-2,
            "engines disagree: {}",
            max_abs_diff(x, y)
        );
    }
}

#[test]
fn centerface_runs_at_any_multiple_of_32() {
    let path = model_path("models/centerface/centerface.onnx");
    let patches = [Patch::DynamicInputs];
    let ort = Model::load(&path, &opts(EngineChoice::Ort, &patches)).expect("ort load");
    let tract = Model::load(&path, &opts(EngineChoice::Tract, &patches)).expect("tract load");
    for (h, w) in [(96, 128), (160, 96)] {
        let input = Tensor::f32(
            vec![1, 3, h, w],
            ramp(3 * h * w).iter().map(|v| (v + 1.0) * 127.5).collect(),
        );
        let a = ort
            .run(vec![(ort.inputs[0].as_str(), input.clone())])
            .unwrap();
        let b = tract.run(vec![(tract.inputs[0].as_str(), input)]).unwrap();
        assert_eq!(a[0].shape, vec![1, 1, h / 4, w / 4]);
        for (x, y) in a.iter().zip(&b) {
            assert!(
                max_abs_diff(x, y) < 1e-2,
                "engines disagree at {h}x{w}: {}",
                max_abs_diff(x, y)
            );
        }
    }
}

#[test]
fn bad_model_files_and_inputs_are_errors() {
    let dir = std::env::temp_dir().join(format!("sy-infer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    for engine in [EngineChoice::Ort, EngineChoice::Tract] {
        assert!(Model::load(&junk, &opts(engine, &[])).is_err());
        assert!(Model::load(&dir.join("missing.onnx"), &opts(engine, &[])).is_err());
    }
    let path = model_path("models/blazeface/face_detection_front_128x128.onnx");
    let m = Model::load(
        &path,
        &opts(EngineChoice::Ort, &[Patch::ConstantOfShapeF32]),
    )
    .unwrap();
    let wrong = Tensor::f32(vec![1, 128, 128, 3], vec![0.0; 10]);
    assert!(m.run(vec![(m.inputs[0].as_str(), wrong)]).is_err());
    let wrong_shape = Tensor::f32(vec![1, 64, 64, 3], vec![0.0; 64 * 64 * 3]);
    assert!(m.run(vec![(m.inputs[0].as_str(), wrong_shape)]).is_err());
}

#[test]
fn onnx_runtime_reports_the_memory_a_model_holds() {
    let path = model_path("models/centerface/centerface.onnx");
    let patches = [Patch::DynamicInputs];
    let ort = Model::load(&path, &opts(EngineChoice::Ort, &patches)).expect("ort load");
    let tract = Model::load(&path, &opts(EngineChoice::Tract, &patches)).expect("tract load");
    assert_eq!(tract.memory(), None, "tract has no allocator statistics");
    let small = Tensor::f32(vec![1, 3, 96, 128], ramp(3 * 96 * 128));
    ort.run(vec![(ort.inputs[0].as_str(), small)]).unwrap();
    let after_small = ort.memory().expect("ORT arena statistics");
    assert!(after_small.reserved_bytes > 0, "{after_small:?}");
    assert!(after_small.peak_bytes >= after_small.in_use_bytes);
    // A 16× larger input needs more arena memory for its intermediate tensors.
    let big = Tensor::f32(vec![1, 3, 384, 512], ramp(3 * 384 * 512));
    ort.run(vec![(ort.inputs[0].as_str(), big)]).unwrap();
    let after_big = ort.memory().expect("ORT arena statistics");
    assert!(
        after_big.peak_bytes > 4 * after_small.peak_bytes,
        "{after_small:?} then {after_big:?}"
    );
}

#[test]
fn adaptive_threads_use_every_core_for_a_request_alone_and_own_sessions_when_requests_overlap() {
    let path = model_path("models/centerface/centerface.onnx");
    let load = |sessions| {
        Model::load(
            &path,
            &LoadOptions {
                engine: EngineChoice::Ort,
                patches: vec![Patch::DynamicInputs],
                sessions,
                adaptive_threads: true,
                ..Default::default()
            },
        )
        .expect("ort load")
    };
    let model = load(2);
    let input = Tensor::f32(
        vec![1, 3, 96, 128],
        ramp(3 * 96 * 128)
            .iter()
            .map(|v| (v + 1.0) * 127.5)
            .collect(),
    );
    let run = || {
        model
            .run(vec![(model.inputs[0].as_str(), input.clone())])
            .unwrap()
    };
    let machine_has_cores = switchyard_infer::cores() > 1;

    // One request: the all-cores session.
    let alone = {
        let _r = model.request();
        run()
    };
    assert_eq!(model.alone_runs(), u64::from(machine_has_cores));
    // Two requests at once: a session of the pool, and the same numbers.
    let overlapped = {
        let (_a, _b) = (model.request(), model.request());
        run()
    };
    assert_eq!(model.alone_runs(), u64::from(machine_has_cores));
    for (x, y) in alone.iter().zip(&overlapped) {
        assert!(max_abs_diff(x, y) < 1e-4, "{}", max_abs_diff(x, y));
    }
    // Both requests over: alone again.
    run();
    assert_eq!(model.alone_runs(), 2 * u64::from(machine_has_cores));

    // With one session: never.
    let fixed = load(1);
    fixed
        .run(vec![(fixed.inputs[0].as_str(), input.clone())])
        .unwrap();
    assert_eq!(fixed.alone_runs(), 0);
}
