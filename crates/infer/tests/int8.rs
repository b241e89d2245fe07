//! Integer matrix products give the model's exact values on both engines, on every CPU. ONNX
//! Runtime's uint8 × int8 kernel saturates on x86 CPUs without VNNI (pairs of products summed into 16
//! bits): the int8 weights then run as uint8 ([`Patch::ExactInt8`]).

use switchyard_infer::{EngineChoice, LoadOptions, Model, Patch, Tensor, int8_products_saturate};
use tract_onnx::pb::{
    self, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto,
    ValueInfoProto, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

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
fn model(zero_point: Option<[i8; N]>) -> Vec<u8> {
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

fn run(bytes: &[u8], engine: EngineChoice, patches: Vec<Patch>) -> Vec<f32> {
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
        let bytes = model(zp);
        for (engine, patches) in [
            // As a slot loads it: the rewrite only where this CPU needs it.
            (EngineChoice::Ort, vec![]),
            // The rewrite itself, checked on any CPU.
            (EngineChoice::Ort, vec![Patch::ExactInt8]),
            (EngineChoice::Tract, vec![]),
        ] {
            let got = run(&bytes, engine, patches.clone());
            assert_eq!(got, want, "{engine:?} {patches:?}, zero point {zp:?}");
        }
    }
}
