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
        }
    }
}
