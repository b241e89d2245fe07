//! Graph edits applied to an ONNX model before an engine sees it, so that ONNX Runtime and tract run
//! the same graph. Each fixes a known defect of a published model file (see
//! `shared/notes/onnx-on-this-machine.md`).

use tract_onnx::pb::{
    self, AttributeProto, ModelProto, TensorProto, attribute_proto, tensor_shape_proto::dimension,
    type_proto,
};

/// One graph edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patch {
    /// Make every dimension of the graph inputs symbolic (rank kept), drop initializers that are
    /// also listed as graph inputs (so constant folding works), and forget declared output shapes.
    /// CenterFace declares a fixed `[10,3,32,32]` input but runs at any size that is a multiple of 32.
    DynamicInputs,
    /// Give `ConstantOfShape` nodes without a `value` attribute the spec's default, a float 0
    /// (tract would otherwise type them f64). Needed by the BlazeFace files.
    ConstantOfShapeF32,
    /// Drop intermediate `value_info` shapes (they may pin symbolic dimensions).
    ClearValueInfo,
    /// Give the constant int8 weights of integer matrix products (`MatMulInteger`, `ConvInteger`)
    /// a uint8 form: every weight and its zero point + 128, so `(w - zp)` and the product are
    /// unchanged. ONNX Runtime then multiplies uint8 by uint8, which is exact on every CPU, instead of
    /// uint8 by int8, which on x86 CPUs without VNNI (AMD Zen 1–3, Intel before Ice Lake) adds pairs
    /// of products into 16 bits with `vpmaddubsw` and saturates: a row of 255 × 127 comes out at half
    /// its value. [`Model::load`](crate::Model::load) applies it for ONNX Runtime on such CPUs (see
    /// [`int8_products_saturate`]); tract's integer products are exact and never need it.
    ExactInt8,
    /// Let the batch (first) dimension follow the input: the graph inputs' and outputs' first
    /// dimension becomes symbolic, a `Reshape` to a constant shape that starts with 1 reshapes to
    /// -1 there, and a `ConstantOfShape` of a constant shape that starts with 1 takes the first
    /// graph input's batch at run time. Intermediate `value_info` shapes are dropped. The BlazeFace
    /// files pin a batch of 1 this way; with it, many tiles go through one run (on a GPU, where each
    /// run costs a kernel launch per operator, that is most of the time of a tile).
    DynamicBatch,
}

/// Whether ONNX Runtime's uint8 × int8 matrix products saturate on this CPU: x86-64 without
/// AVX512-VNNI or AVX-VNNI, whose `vpdpbusd` sums four products in 32 bits. Elsewhere (VNNI, ARM's
/// dot-product or widening kernels) the products are exact.
pub fn int8_products_saturate() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !(std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The integer products [`Patch::ExactInt8`] rewrites, with the input positions of their weight
/// and its zero point.
const INT8_PRODUCTS: [(&str, usize, usize); 2] = [("MatMulInteger", 1, 3), ("ConvInteger", 1, 3)];

/// The int8 values of a constant tensor, or `None` when it is not int8 or its data lives elsewhere.
fn int8_values(t: &TensorProto) -> Option<Vec<i8>> {
    if t.data_type != pb::tensor_proto::DataType::Int8 as i32 {
        return None;
    }
    let len: i64 = t.dims.iter().product();
    let values: Vec<i8> = if !t.raw_data.is_empty() {
        t.raw_data.iter().map(|&b| b as i8).collect()
    } else {
        // int8 elements are stored one per int32 when not raw.
        t.int32_data.iter().map(|&v| v as i8).collect()
    };
    (values.len() as i64 == len).then_some(values)
}

/// `t` as uint8 named `name`, every value + 128.
fn shifted_to_u8(t: &TensorProto, values: &[i8], name: String) -> TensorProto {
    TensorProto {
        name,
        dims: t.dims.clone(),
        data_type: pb::tensor_proto::DataType::Uint8 as i32,
        raw_data: values.iter().map(|&v| (v as u8) ^ 0x80).collect(),
        ..Default::default()
    }
}

/// [`Patch::ExactInt8`] on one graph. New initializers take new names (an original may feed other
/// nodes); the originals it replaced are dropped when nothing else reads them. Returns how many nodes were rewritten.
pub(crate) fn exact_int8(graph: &mut pb::GraphProto) -> usize {
    let mut added: std::collections::HashMap<String, TensorProto> = Default::default();
    let index: std::collections::HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    let mut rewritten = 0;
    let mut replaced = std::collections::HashSet::new();
    for node in graph.node.iter_mut() {
        let Some(&(_, w, zp)) = INT8_PRODUCTS.iter().find(|(op, ..)| *op == node.op_type) else {
            continue;
        };
        let Some(weight) = node
            .input
            .get(w)
            .and_then(|n| index.get(n))
            .map(|&i| &graph.initializer[i])
        else {
            continue;
        };
        let Some(values) = int8_values(weight) else {
            continue;
        };
        // The zero point: absent or empty means 0; a non-constant one cannot be shifted.
        let zero_point = match node.input.get(zp).filter(|n| !n.is_empty()) {
            None => None,
            Some(n) => match index.get(n).map(|&i| &graph.initializer[i]) {
                Some(t) => match int8_values(t) {
                    Some(v) => Some((t, v)),
                    None => continue,
                },
                None => continue,
            },
        };
        let weight_name = format!("{}.exact_u8", weight.name);
        added
            .entry(weight_name.clone())
            .or_insert_with(|| shifted_to_u8(weight, &values, weight_name.clone()));
        let zp_name = match zero_point {
            Some((t, v)) => {
                let name = format!("{}.exact_u8", t.name);
                added
                    .entry(name.clone())
                    .or_insert_with(|| shifted_to_u8(t, &v, name.clone()));
                name
            }
            None => {
                let name = "switchyard.exact_u8.zero_point".to_string();
                added.entry(name.clone()).or_insert_with(|| TensorProto {
                    name: name.clone(),
                    data_type: pb::tensor_proto::DataType::Uint8 as i32,
                    raw_data: vec![128],
                    ..Default::default()
                });
                name
            }
        };
        replaced.insert(std::mem::replace(&mut node.input[w], weight_name));
        if node.input.len() <= zp {
            node.input.resize(zp + 1, String::new());
        }
        replaced.insert(std::mem::replace(&mut node.input[zp], zp_name));
        rewritten += 1;
    }
    if rewritten > 0 {
        let read: std::collections::HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .chain(graph.output.iter().map(|o| o.name.as_str()))
            .collect();
        let graph_inputs: std::collections::HashSet<&str> =
            graph.input.iter().map(|i| i.name.as_str()).collect();
        let keep: Vec<bool> = graph
            .initializer
            .iter()
            .map(|t| {
                let name = t.name.as_str();
                !replaced.contains(name) || read.contains(name) || graph_inputs.contains(name)
            })
            .collect();
        let mut keep = keep.into_iter();
        graph.initializer.retain(|_| keep.next().unwrap_or(true));
        let mut added: Vec<TensorProto> = added.into_values().collect();
        added.sort_by(|a, b| a.name.cmp(&b.name));
        graph.initializer.extend(added);
    }
    rewritten
}

/// The values of a constant int64 tensor, stored raw or not.
fn int64_values(t: &TensorProto) -> Option<Vec<i64>> {
    if t.data_type != pb::tensor_proto::DataType::Int64 as i32 {
        return None;
    }
    let values: Vec<i64> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()
    } else {
        t.int64_data.clone()
    };
    (values.len() as i64 == t.dims.iter().product::<i64>()).then_some(values)
}

fn int64_tensor(name: String, values: Vec<i64>) -> TensorProto {
    TensorProto {
        name,
        dims: vec![values.len() as i64],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        int64_data: values,
        ..Default::default()
    }
}

fn node(op: &str, inputs: Vec<String>, output: String) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: output.clone(),
        input: inputs,
        output: vec![output],
        ..Default::default()
    }
}

/// [`Patch::DynamicBatch`] on one graph. Returns how many constant shapes now follow the batch.
pub(crate) fn dynamic_batch(graph: &mut pb::GraphProto) -> usize {
    let symbolic = |v: &mut pb::ValueInfoProto| {
        if let Some(type_proto::Value::TensorType(t)) =
            v.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(first) = t.shape.as_mut().and_then(|s| s.dim.first_mut())
        {
            first.value = Some(dimension::Value::DimParam("batch".into()));
        }
    };
    let initializers: std::collections::HashSet<String> =
        graph.initializer.iter().map(|t| t.name.clone()).collect();
    let Some(input) = graph
        .input
        .iter()
        .find(|i| !initializers.contains(&i.name))
        .map(|i| i.name.clone())
    else {
        return 0;
    };
    graph.input.iter_mut().for_each(symbolic);
    graph.output.iter_mut().for_each(symbolic);
    graph.value_info.clear();
    let constants: std::collections::HashMap<String, Vec<i64>> = graph
        .initializer
        .iter()
        .filter_map(|t| Some((t.name.clone(), int64_values(t)?)))
        .collect();
    // The input's batch as a 1-element tensor, computed once, first in the graph.
    let batch = "switchyard.batch".to_string();
    let mut added = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len() + 4);
    let mut rewritten = 0;
    let mut have_batch = false;
    // Each constant shape's batch-following copy, made once however many nodes read it.
    let mut made = std::collections::HashSet::new();
    for mut n in std::mem::take(&mut graph.node) {
        // The constant shape a node reads: Reshape's second input, ConstantOfShape's only one.
        let shape_input = if n.op_type == "ConstantOfShape" { 0 } else { 1 };
        let values = n.input.get(shape_input).and_then(|s| constants.get(s));
        match (n.op_type.as_str(), values) {
            ("Reshape", Some(v)) if v.first() == Some(&1) && !v.contains(&-1) => {
                let name = format!("{}.batch", n.input[1]);
                let mut v = v.clone();
                v[0] = -1;
                added.push(int64_tensor(name.clone(), v));
                n.input[1] = name;
                rewritten += 1;
            }
            ("ConstantOfShape", Some(v)) if v.first() == Some(&1) => {
                if !have_batch {
                    have_batch = true;
                    added.push(int64_tensor("switchyard.batch.index".into(), vec![0]));
                    nodes.insert(
                        0,
                        node("Shape", vec![input.clone()], format!("{batch}.shape")),
                    );
                    nodes.insert(
                        1,
                        node(
                            "Gather",
                            vec![format!("{batch}.shape"), "switchyard.batch.index".into()],
                            batch.clone(),
                        ),
                    );
                }
                let full = format!("{}.batch", n.input[0]);
                if made.insert(full.clone()) {
                    let rest = format!("{}.rest", n.input[0]);
                    added.push(int64_tensor(rest.clone(), v[1..].to_vec()));
                    let mut concat = node("Concat", vec![batch.clone(), rest], full.clone());
                    concat.attribute.push(AttributeProto {
                        name: "axis".into(),
                        r#type: attribute_proto::AttributeType::Int as i32,
                        i: 0,
                        ..Default::default()
                    });
                    nodes.push(concat);
                }
                n.input[0] = full;
                rewritten += 1;
            }
            _ => {}
        }
        nodes.push(n);
    }
    graph.node = nodes;
    added.sort_by(|a, b| a.name.cmp(&b.name));
    added.dedup_by(|a, b| a.name == b.name);
    graph.initializer.extend(added);
    rewritten
}

impl Patch {
    /// Applies the edit.
    pub fn apply(self, model: &mut ModelProto) {
        let Some(graph) = model.graph.as_mut() else {
            return;
        };
        match self {
            Patch::DynamicInputs => {
                let init: std::collections::HashSet<String> =
                    graph.initializer.iter().map(|t| t.name.clone()).collect();
                graph.input.retain(|i| !init.contains(&i.name));
                for (i, input) in graph.input.iter_mut().enumerate() {
                    if let Some(type_proto::Value::TensorType(t)) =
                        input.r#type.as_mut().and_then(|t| t.value.as_mut())
                        && let Some(shape) = t.shape.as_mut()
                    {
                        for (j, d) in shape.dim.iter_mut().enumerate() {
                            d.value = Some(dimension::Value::DimParam(format!("in{i}_d{j}")));
                        }
                    }
                }
                for output in graph.output.iter_mut() {
                    if let Some(type_proto::Value::TensorType(t)) =
                        output.r#type.as_mut().and_then(|t| t.value.as_mut())
                    {
                        t.shape = None;
                    }
                }
            }
            Patch::ConstantOfShapeF32 => {
                for node in graph
                    .node
                    .iter_mut()
                    .filter(|n| n.op_type == "ConstantOfShape")
                {
                    if !node.attribute.iter().any(|a| a.name == "value") {
                        node.attribute.push(AttributeProto {
                            name: "value".into(),
                            r#type: attribute_proto::AttributeType::Tensor as i32,
                            t: Some(TensorProto {
                                dims: vec![1],
                                data_type: pb::tensor_proto::DataType::Float as i32,
                                float_data: vec![0.0],
                                ..Default::default()
                            }),
                            ..Default::default()
                        });
                    }
                }
            }
            Patch::ClearValueInfo => graph.value_info.clear(),
            Patch::ExactInt8 => {
                exact_int8(graph);
            }
            Patch::DynamicBatch => {
                dynamic_batch(graph);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str]) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![format!("{op}_out")],
            ..Default::default()
        }
    }

    fn tensor(name: &str, data_type: pb::tensor_proto::DataType, raw: &[u8]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: vec![raw.len() as i64],
            data_type: data_type as i32,
            raw_data: raw.to_vec(),
            ..Default::default()
        }
    }

    fn initializer<'a>(g: &'a pb::GraphProto, name: &str) -> Option<&'a TensorProto> {
        g.initializer.iter().find(|t| t.name == name)
    }

    #[test]
    fn int8_weights_and_zero_points_are_shifted_to_uint8() {
        use pb::tensor_proto::DataType::{Float, Int8};
        let mut g = pb::GraphProto {
            node: vec![
                // Two products share one weight; one has a zero point, one none.
                node("MatMulInteger", &["a", "w", "a_zp", "w_zp"]),
                node("MatMulInteger", &["b", "w"]),
                // A weight that another node also reads keeps its original.
                node("ConvInteger", &["c", "shared"]),
                node("Identity", &["shared"]),
                // A zero point computed at run time cannot be shifted: left alone.
                node("MatMulInteger", &["d", "v", "", "dynamic_zp"]),
                // Already uint8, or not constant: left alone.
                node("MatMulInteger", &["e", "u8"]),
                node("MatMulInteger", &["f", "g"]),
            ],
            initializer: vec![
                tensor("w", Int8, &[0x80, 0xff, 0x00, 0x7f]), // -128, -1, 0, 127
                tensor("w_zp", Int8, &[0xfe]),                // -2
                tensor("shared", Int8, &[1]),
                tensor("v", Int8, &[5]),
                tensor("u8", pb::tensor_proto::DataType::Uint8, &[5]),
                tensor("unrelated", Float, &[0; 4]),
            ],
            ..Default::default()
        };
        assert_eq!(exact_int8(&mut g), 3);
        let inputs: Vec<&[String]> = g.node.iter().map(|n| n.input.as_slice()).collect();
        assert_eq!(inputs[0], ["a", "w.exact_u8", "a_zp", "w_zp.exact_u8"]);
        assert_eq!(
            inputs[1],
            ["b", "w.exact_u8", "", "switchyard.exact_u8.zero_point"]
        );
        assert_eq!(
            inputs[2],
            ["c", "shared.exact_u8", "", "switchyard.exact_u8.zero_point"]
        );
        assert_eq!(inputs[4], ["d", "v", "", "dynamic_zp"]);
        assert_eq!(inputs[5], ["e", "u8"]);
        assert_eq!(inputs[6], ["f", "g"]);

        let w = initializer(&g, "w.exact_u8").expect("new weight");
        assert_eq!(w.data_type, pb::tensor_proto::DataType::Uint8 as i32);
        assert_eq!(w.raw_data, [0, 127, 128, 255]);
        assert_eq!(initializer(&g, "w_zp.exact_u8").unwrap().raw_data, [126]);
        assert_eq!(
            initializer(&g, "switchyard.exact_u8.zero_point")
                .unwrap()
                .raw_data,
            [128]
        );
        // Originals nothing reads are gone; the rest stay.
        assert!(initializer(&g, "w").is_none() && initializer(&g, "w_zp").is_none());
        for kept in ["shared", "v", "u8", "unrelated"] {
            assert!(initializer(&g, kept).is_some(), "{kept}");
        }
        // Each new initializer once, however many nodes read it.
        let mut names: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), g.initializer.len());
    }

    #[test]
    fn constant_shapes_that_pin_a_batch_of_one_follow_the_input() {
        use pb::tensor_proto::DataType::Int64;
        let i64s = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        // A graph input `[1,256,256,3]`.
        let input = pb::ValueInfoProto {
            name: "image".into(),
            r#type: Some(pb::TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: pb::tensor_proto::DataType::Float as i32,
                    shape: Some(pb::TensorShapeProto {
                        dim: [1, 256, 256, 3]
                            .into_iter()
                            .map(|d| pb::tensor_shape_proto::Dimension {
                                value: Some(dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut shaped = tensor("pinned", Int64, &i64s(&[1, 384, 16]));
        shaped.dims = vec![3];
        let mut free = tensor("free", Int64, &i64s(&[-1, 16]));
        free.dims = vec![2];
        let pad = TensorProto {
            name: "pad_shape".into(),
            dims: vec![4],
            data_type: Int64 as i32,
            int64_data: vec![1, 24, 32, 32],
            ..Default::default()
        };
        let mut g = pb::GraphProto {
            node: vec![
                node("Reshape", &["x", "pinned"]),
                node("Reshape", &["y", "free"]),
                node("ConstantOfShape", &["pad_shape"]),
                // A second reader of the same shape: no second Concat (one producer per name).
                node("ConstantOfShape", &["pad_shape"]),
            ],
            initializer: vec![shaped, free, pad],
            input: vec![input],
            value_info: vec![pb::ValueInfoProto {
                name: "pinned_somewhere".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(dynamic_batch(&mut g), 3);
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        // The input's batch first, then each constant shape's own, before the node that reads it.
        assert_eq!(
            ops,
            [
                "Shape",
                "Gather",
                "Reshape",
                "Reshape",
                "Concat",
                "ConstantOfShape",
                "ConstantOfShape"
            ]
        );
        assert_eq!(g.node[6].input, ["pad_shape.batch"]);
        assert_eq!(g.node[0].input, ["image"]);
        assert_eq!(g.node[2].input, ["x", "pinned.batch"]);
        assert_eq!(
            g.node[3].input,
            ["y", "free"],
            "a shape with -1 already is left alone"
        );
        assert_eq!(g.node[4].input, ["switchyard.batch", "pad_shape.rest"]);
        assert_eq!(g.node[5].input, ["pad_shape.batch"]);
        let values = |name: &str| int64_values(initializer(&g, name).expect(name)).unwrap();
        assert_eq!(values("pinned.batch"), [-1, 384, 16]);
        assert_eq!(values("pad_shape.rest"), [24, 32, 32]);
        assert_eq!(values("switchyard.batch.index"), [0]);
        assert!(g.value_info.is_empty());
        let Some(type_proto::Value::TensorType(t)) =
            g.input[0].r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            panic!("input type");
        };
        let dims: Vec<_> = t
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| d.value.clone())
            .collect();
        assert_eq!(dims[0], Some(dimension::Value::DimParam("batch".into())));
        assert_eq!(dims[3], Some(dimension::Value::DimValue(3)));
    }

    #[test]
    fn a_graph_without_integer_products_is_unchanged() {
        let mut g = pb::GraphProto {
            node: vec![node("MatMul", &["a", "w"])],
            initializer: vec![tensor("w", pb::tensor_proto::DataType::Int8, &[1, 2])],
            ..Default::default()
        };
        let before = g.clone();
        assert_eq!(exact_int8(&mut g), 0);
        assert_eq!(g, before);
    }
}
