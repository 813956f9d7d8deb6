//! Hand-built ONNX models for the tests and the benchmark: small constructors over tract's
//! protobuf types, deterministic data, and the spec's tolerances.
#![allow(dead_code)]

use std::io::Write;

use half::f16;
use prost::Message;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::*;

pub const FLOAT: i32 = DataType::Float as i32;
pub const FLOAT16: i32 = DataType::Float16 as i32;
pub const DOUBLE: i32 = DataType::Double as i32;
pub const INT64: i32 = DataType::Int64 as i32;
pub const BFLOAT16: i32 = DataType::Bfloat16 as i32;

/// A dimension of a declared input: a number or a symbol.
#[derive(Debug, Clone)]
pub enum Dim {
    N(usize),
    S(&'static str),
}

pub fn dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::N(d)).collect()
}

pub fn value_info(name: &str, elem_type: i32, shape: Option<&[Dim]>) -> ValueInfoProto {
    let shape = shape.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::N(n) => dimension::Value::DimValue(*n as i64),
                    Dim::S(s) => dimension::Value::DimParam(s.to_string()),
                }),
                ..Dimension::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape,
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

fn tensor_dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

pub fn tensor_f32(name: &str, shape: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: tensor_dims(shape),
        data_type: FLOAT,
        float_data: data.to_vec(),
        ..TensorProto::default()
    }
}

pub fn tensor_f64(name: &str, shape: &[usize], data: &[f64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: tensor_dims(shape),
        data_type: DOUBLE,
        double_data: data.to_vec(),
        ..TensorProto::default()
    }
}

pub fn tensor_f16(name: &str, shape: &[usize], data: &[f16]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: tensor_dims(shape),
        data_type: FLOAT16,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

pub fn tensor_i64(name: &str, shape: &[usize], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: tensor_dims(shape),
        data_type: INT64,
        int64_data: data.to_vec(),
        ..TensorProto::default()
    }
}

/// An initializer of element type `elem_type` holding `data` (rounded to that type).
pub fn tensor_of(elem_type: i32, name: &str, shape: &[usize], data: &[f64]) -> TensorProto {
    match elem_type {
        FLOAT => tensor_f32(
            name,
            shape,
            &data.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        ),
        DOUBLE => tensor_f64(name, shape, data),
        FLOAT16 => tensor_f16(
            name,
            shape,
            &data.iter().map(|&v| f16::from_f64(v)).collect::<Vec<_>>(),
        ),
        other => panic!("no test tensors of type {other}"),
    }
}

pub fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..AttributeProto::default()
    }
}

pub fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..AttributeProto::default()
    }
}

pub fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..AttributeProto::default()
    }
}

pub fn attr_t(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Tensor as i32,
        t: Some(t),
        ..AttributeProto::default()
    }
}

/// An attribute of a function body that refers to the function's attribute `refers_to`.
pub fn attr_ref(name: &str, refers_to: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: kind as i32,
        ref_attr_name: refers_to.into(),
        ..AttributeProto::default()
    }
}

pub fn node(
    op_type: &str,
    domain: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op_type.into(),
        domain: domain.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes,
        ..NodeProto::default()
    }
}

/// A `Constant` node holding a float scalar.
pub fn scalar_f32(output: &str, value: f32) -> NodeProto {
    node(
        "Constant",
        "",
        &[],
        &[output],
        vec![attr_t("value", tensor_f32("", &[], &[value]))],
    )
}

pub fn graph(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    initializers: Vec<TensorProto>,
) -> GraphProto {
    GraphProto {
        name: "test".into(),
        node: nodes,
        input: inputs,
        output: outputs,
        initializer: initializers,
        ..GraphProto::default()
    }
}

/// A model importing the default domain at `opset` and `ai.adanorm` version 1.
pub fn model(graph: GraphProto, opset: i64) -> ModelProto {
    ModelProto {
        ir_version: 8,
        producer_name: "adanorm-tract tests".into(),
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            },
            OperatorSetIdProto {
                domain: "ai.adanorm".into(),
                version: 1,
            },
        ],
        graph: Some(graph),
        ..ModelProto::default()
    }
}

/// Writes the encoded model to a temporary file, deleted when the returned path drops.
pub fn save(model: &ModelProto) -> tempfile::TempPath {
    save_bytes(&model.encode_to_vec())
}

pub fn save_bytes(bytes: &[u8]) -> tempfile::TempPath {
    let mut file = tempfile::Builder::new()
        .suffix(".onnx")
        .tempfile()
        .expect("temp file");
    file.write_all(bytes).expect("write model");
    file.into_temp_path()
}

/// Deterministic values in `[-2, 2)` (a 64-bit LCG; no `rand` needed).
pub fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
        })
        .collect()
}

/// Rounds `data` through element type `elem_type`, as storing it in such a tensor does.
pub fn rounded(elem_type: i32, data: &[f64]) -> Vec<f64> {
    match elem_type {
        FLOAT => data.iter().map(|&v| v as f32 as f64).collect(),
        FLOAT16 => data.iter().map(|&v| f16::from_f64(v).to_f64()).collect(),
        DOUBLE => data.to_vec(),
        other => panic!("no test tensors of type {other}"),
    }
}

/// A tract tensor of element type `elem_type` holding `data`.
pub fn tract_tensor(elem_type: i32, shape: &[usize], data: &[f64]) -> tract_onnx::prelude::Tensor {
    use tract_onnx::prelude::Tensor;
    match elem_type {
        FLOAT => Tensor::from_shape(shape, &data.iter().map(|&v| v as f32).collect::<Vec<_>>()),
        FLOAT16 => Tensor::from_shape(
            shape,
            &data.iter().map(|&v| f16::from_f64(v)).collect::<Vec<_>>(),
        ),
        DOUBLE => Tensor::from_shape(shape, data),
        other => panic!("no test tensors of type {other}"),
    }
    .expect("tensor")
}

/// A tract tensor's elements as f64 (it must be f16, f32 or f64).
pub fn as_f64(t: &tract_onnx::prelude::Tensor) -> Vec<f64> {
    t.cast_to::<f64>()
        .expect("cast to f64")
        .try_as_plain_ram()
        .expect("plain")
        .as_slice::<f64>()
        .expect("f64 slice")
        .to_vec()
}

/// The spec's tolerance for element type `elem_type`: `|got - want| <= tol * max(1, |want|)`.
pub fn tolerance(elem_type: i32) -> f64 {
    match elem_type {
        FLOAT => 1e-5,
        FLOAT16 => 1e-2,
        DOUBLE => 1e-9,
        other => panic!("no tolerance for type {other}"),
    }
}

/// Asserts `got` matches `want` within `tol * max(1, |want|)` element-wise (NaN matches NaN).
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= tol * w.abs().max(1.0);
        assert!(ok, "{what}[{i}]: got {g}, want {w} (tolerance {tol})");
    }
}
