//! Both engines load the real face models (as fetched by `make setup`) and agree on their outputs;
//! integer matrix products give the model's exact values on both engines, on every CPU (ONNX
//! Runtime's uint8 × int8 kernel saturates on x86 CPUs without VNNI, pairs of products summed into
//! 16 bits: the int8 weights then run as uint8, [`Patch::ExactInt8`]).

use std::path::PathBuf;

use switchyard_infer::{
    EngineChoice, EngineKind, LoadOptions, Model, Patch, Tensor, int8_products_saturate,
};
use tract_onnx::pb::{
    self, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto,
    ValueInfoProto, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

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

const K: usize = 64;
const N: usize = 4;

fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn int8(name: &str, dims: &[i64], values: &[i8]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Int8 as i32,
        // The ONNX layout of int8 elements when not raw: one per int32.
        int32_data: values.iter().map(|&v| v as i32).collect(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// `x [1,K]` float → DynamicQuantizeLinear (uint8) → MatMulInteger with constant int8 weights
/// `[K,N]` all 127 and the given zero point (none, or one per column) → Cast to float `[1,N]`.
fn int8_model(zero_point: Option<[i8; N]>) -> Vec<u8> {
    let mut initializer = vec![int8("w", &[K as i64, N as i64], &[127; K * N])];
    let mut inputs = vec!["q", "w", "q_zp"];
    if let Some(zp) = zero_point {
        initializer.push(int8("w_zp", &[N as i64], &zp));
        inputs.push("w_zp");
    }
    let mut cast = node("Cast", &["y32"], &["y"]);
    cast.attribute.push(pb::AttributeProto {
        name: "to".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: DataType::Float as i64,
        ..Default::default()
    });
    let model = ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            name: "int8".into(),
            node: vec![
                node("DynamicQuantizeLinear", &["x"], &["q", "q_scale", "q_zp"]),
                node("MatMulInteger", &inputs, &["y32"]),
                cast,
            ],
            initializer,
            input: vec![value_info("x", &[1, K])],
            output: vec![value_info("y", &[1, N])],
            ..Default::default()
        }),
        ..Default::default()
    };
    prost::Message::encode_to_vec(&model)
}

fn run_int8(bytes: &[u8], engine: EngineChoice, patches: Vec<Patch>) -> Vec<f32> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("int8.onnx");
    std::fs::write(&path, bytes).expect("write the model");
    let opts = LoadOptions {
        engine,
        patches,
        threads: 1,
        ..Default::default()
    };
    let m = Model::load(&path, &opts).expect("load");
    // All ones quantise to 255 (scale 1/255, zero point 0).
    let out = m
        .run(vec![("x", Tensor::f32(vec![1, K], vec![1.0; K]))])
        .expect("run");
    out[0].as_f32().expect("float output").to_vec()
}

#[test]
fn integer_products_are_exact_on_every_cpu() {
    eprintln!(
        "this CPU's ONNX Runtime uint8 x int8 products saturate: {}",
        int8_products_saturate()
    );
    // Exact: 255 × (127 − zp) × K per column. Saturating pairs would give 32767 × K/2 = 1,048,544
    // for every column.
    let cases: [(Option<[i8; N]>, [f32; N]); 2] = [
        (None, [2_072_640.0; N]),
        (
            Some([0, -1, 1, 127]),
            [2_072_640.0, 2_088_960.0, 2_056_320.0, 0.0],
        ),
    ];
    for (zp, want) in cases {
        let bytes = int8_model(zp);
        for (engine, patches) in [
            // As a slot loads it: the rewrite only where this CPU needs it.
            (EngineChoice::Ort, vec![]),
            // The rewrite itself, checked on any CPU.
            (EngineChoice::Ort, vec![Patch::ExactInt8]),
            (EngineChoice::Tract, vec![]),
        ] {
            let got = run_int8(&bytes, engine, patches.clone());
            assert_eq!(got, want, "{engine:?} {patches:?}, zero point {zp:?}");
        }
    }
}

/// tract's AMX int8 kernel (Sapphire Rapids and later) is out of the kernels tract dispatches to
/// once a model is loaded: it crashed the ASR suite now and then (SIGSEGV in `tileloadd`).
#[test]
#[cfg(target_arch = "x86_64")]
fn tract_never_runs_its_amx_int8_kernel() {
    use tract_onnx::tract_hir::tract_core::tract_linalg::{isa, knobs};
    let got = run_int8(&int8_model(None), EngineChoice::Tract, vec![]);
    assert_eq!(got, [2_072_640.0; N]);
    assert_eq!(knobs::TRACT_CPU_ISA.get().as_deref(), Some("-amx-int8"));
    let native = isa::native();
    eprintln!("tract dispatches on {native:?}");
    assert!(!native.has(isa::Isa::X86_64AmxInt8));
}

#[test]
fn a_gpu_looks_for_the_cuda_library_before_the_cpu_one() {
    use switchyard_infer::{Device, Runtime};
    let cwd = std::env::current_dir().unwrap();
    let gpu = cwd.join(".cache/onnxruntime-gpu/libonnxruntime.so.1.31.1");
    let cpu = cwd.join(".cache/onnxruntime/libonnxruntime.so.1.31.1");
    let on_gpu = Runtime::candidates(None, Device::Cuda(0));
    let at = |p: &PathBuf| on_gpu.iter().position(|c| c == p);
    assert!(at(&gpu).unwrap() < at(&cpu).unwrap(), "{on_gpu:#?}");
    // An explicit path still comes first; the CPU never looks for the GPU library.
    let explicit = PathBuf::from("/opt/ort/libonnxruntime.so.1.31.1");
    assert_eq!(
        Runtime::candidates(Some(&explicit), Device::Cuda(0))[0],
        explicit
    );
    let on_cpu = Runtime::candidates(None, Device::Cpu);
    assert!(on_cpu.contains(&cpu));
    assert!(
        !on_cpu
            .iter()
            .any(|p| p.to_string_lossy().contains("onnxruntime-gpu")),
        "{on_cpu:#?}"
    );
}
