//! `device = "cuda:N"` on a machine where the CUDA provider cannot run (this one: no GPU, and
//! either the CPU build of ONNX Runtime or the CUDA build without CUDA's libraries): a clear error,
//! or with `device_fallback` the CPU. Its own test binary, so that its process loads the library a
//! GPU would (`.cache/onnxruntime-gpu/` when fetched) without changing the other tests' library.

use std::path::PathBuf;

use switchyard_infer::{Device, EngineChoice, EngineKind, LoadOptions, Model, Patch, Tensor};

fn blazeface() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/blazeface/face_detection_back_256x256.onnx");
    assert!(p.exists(), "{} is missing: run `make setup`", p.display());
    p
}

#[test]
fn without_a_cuda_provider_a_gpu_model_fails_clearly_or_falls_back_to_the_cpu() {
    if std::process::Command::new("nvidia-smi")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("a GPU is here: scripts/cuda-check.sh checks the CUDA path instead");
        return;
    }
    let opts = LoadOptions {
        engine: EngineChoice::Ort,
        device: Device::Cuda(0),
        threads: 1,
        patches: vec![Patch::ConstantOfShapeF32],
        ..Default::default()
    };
    let err = match Model::load(&blazeface(), &opts) {
        Ok(m) => panic!("loaded on {} without a GPU", m.device),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("CUDA execution provider unavailable on cuda:0"),
        "{err}"
    );

    let model = Model::load(
        &blazeface(),
        &LoadOptions {
            device_fallback: true,
            ..opts
        },
    )
    .expect("falls back to the CPU");
    assert_eq!((model.engine, model.device), (EngineKind::Ort, Device::Cpu));
    let out = model
        .run(vec![(
            model.inputs[0].as_str(),
            Tensor::f32(vec![1, 256, 256, 3], vec![0.5; 256 * 256 * 3]),
        )])
        .expect("runs on the CPU");
    let shapes: Vec<_> = out.iter().map(|t| t.shape.clone()).collect();
    assert!(shapes.contains(&vec![1, 512, 16]), "{shapes:?}");
}
