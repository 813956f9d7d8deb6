//! A small builder for hand-made ONNX graphs, so each matcher form and near-miss is a few lines.

use std::path::{Path, PathBuf};

use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::proto::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension, type_proto, AttributeProto,
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::patterns::{find_matches, Match};

pub const F32: i32 = 1;
pub const F16: i32 = 10;
pub const F64: i32 = 11;
pub const I64: i32 = 7;
pub const I8: i32 = 3;

/// An attribute value for [`Builder`] (test code: size does not matter).
#[allow(clippy::large_enum_variant)]
pub enum A {
    I(i64),
    F(f32),
    Is(Vec<i64>),
    T(TensorProto),
}

pub struct Builder {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    pub inputs: Vec<ValueInfoProto>,
    pub outputs: Vec<ValueInfoProto>,
    pub opset: i64,
    pub extra_opsets: Vec<(String, i64)>,
    counter: usize,
}

pub fn value_info(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    let named: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    value_info_named(
        name,
        elem_type,
        &named.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// A tensor value with dimensions given as numbers or as symbolic names ("batch").
pub fn value_info_named(name: &str, elem_type: i32, dims: &[&str]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d.parse::<i64>() {
            Ok(v) => dimension::Value::DimValue(v),
            Err(_) => dimension::Value::DimParam(d.to_string()),
        })
        .map(
            |v| adanorm_onnx::onnx::proto::tensor_shape_proto::Dimension {
                value: Some(v),
                ..Default::default()
            },
        )
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn tensor_f32(name: &str, dims: &[i64], vals: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(F32),
        raw_data: Some(
            vals.iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ),
        ..Default::default()
    }
}

pub fn tensor_typed(name: &str, elem_type: i32, dims: &[i64], vals: &[f64]) -> TensorProto {
    let raw: Vec<u8> = match elem_type {
        F32 => vals
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect(),
        F64 => vals.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        F16 => vals
            .iter()
            .flat_map(|&v| half::f16::from_f64(v).to_le_bytes())
            .collect(),
        I64 => vals
            .iter()
            .flat_map(|&v| (v as i64).to_le_bytes())
            .collect(),
        I8 => vals.iter().map(|&v| v as i8 as u8).collect(),
        _ => panic!("unsupported"),
    };
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(elem_type),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

impl Builder {
    pub fn new(opset: i64) -> Self {
        Builder {
            nodes: vec![],
            inits: vec![],
            inputs: vec![],
            outputs: vec![],
            opset,
            extra_opsets: vec![],
            counter: 0,
        }
    }

    pub fn input(&mut self, name: &str, elem_type: i32, dims: &[i64]) -> String {
        self.inputs.push(value_info(name, elem_type, dims));
        name.to_string()
    }

    /// A graph input with symbolic dimensions, e.g. `&["batch", "seq", "64"]`.
    pub fn input_named(&mut self, name: &str, elem_type: i32, dims: &[&str]) -> String {
        self.inputs.push(value_info_named(name, elem_type, dims));
        name.to_string()
    }

    pub fn output(&mut self, name: &str, elem_type: i32) {
        self.outputs.push(ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(elem_type),
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    pub fn init(&mut self, name: &str, dims: &[i64], vals: &[f32]) -> String {
        self.inits.push(tensor_f32(name, dims, vals));
        name.to_string()
    }

    pub fn init_typed(&mut self, name: &str, elem_type: i32, dims: &[i64], vals: &[f64]) -> String {
        self.inits.push(tensor_typed(name, elem_type, dims, vals));
        name.to_string()
    }

    /// A scalar float32 `Constant` node.
    pub fn constant(&mut self, v: f32) -> String {
        self.constant_typed(F32, &[], &[v as f64])
    }

    pub fn constant_typed(&mut self, elem_type: i32, dims: &[i64], vals: &[f64]) -> String {
        self.counter += 1;
        let out = format!("const_{}", self.counter);
        let t = tensor_typed("", elem_type, dims, vals);
        self.node_named(
            &format!("Constant_{}", self.counter),
            "Constant",
            &[],
            &[&out],
            vec![("value", A::T(t))],
        );
        out
    }

    pub fn node_named(
        &mut self,
        name: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, A)>,
    ) {
        let attribute = attrs
            .into_iter()
            .map(|(n, a)| {
                let mut p = AttributeProto {
                    name: Some(n.into()),
                    ..Default::default()
                };
                match a {
                    A::I(i) => {
                        p.i = Some(i);
                        p.r#type = Some(AttributeType::Int as i32);
                    }
                    A::F(f) => {
                        p.f = Some(f);
                        p.r#type = Some(AttributeType::Float as i32);
                    }
                    A::Is(v) => {
                        p.ints = v;
                        p.r#type = Some(AttributeType::Ints as i32);
                    }
                    A::T(t) => {
                        p.t = Some(t);
                        p.r#type = Some(AttributeType::Tensor as i32);
                    }
                }
                p
            })
            .collect();
        self.nodes.push(NodeProto {
            name: Some(name.into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        });
    }

    /// Adds a node with a generated name and output; returns the output.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, A)>) -> String {
        self.counter += 1;
        let out = format!("{}_{}_out", op.to_lowercase(), self.counter);
        self.node_named(
            &format!("{op}_{}", self.counter),
            op,
            inputs,
            &[&out],
            attrs,
        );
        out
    }

    pub fn domain_op(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&str, A)>,
    ) -> String {
        let out = self.op(op, inputs, attrs);
        self.nodes.last_mut().unwrap().domain = Some(domain.into());
        out
    }

    pub fn model(&self) -> ModelProto {
        let mut opset_import = vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(self.opset),
        }];
        for (d, v) in &self.extra_opsets {
            opset_import.push(OperatorSetIdProto {
                domain: Some(d.clone()),
                version: Some(*v),
            });
        }
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("adanorm-onnx tests".into()),
            opset_import,
            graph: Some(GraphProto {
                name: Some("g".into()),
                node: self.nodes.clone(),
                initializer: self.inits.clone(),
                input: self.inputs.clone(),
                output: self.outputs.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn save(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        save_model(&self.model(), &path, true).expect("save test model");
        path
    }

    /// Saves, loads and matches.
    pub fn matches(&self) -> Vec<Match> {
        let dir = tempfile::tempdir().unwrap();
        let path = self.save(dir.path(), "m.onnx");
        let model = load_model(&path).expect("load test model");
        let g = GraphIndex::build(&model).expect("index test model");
        find_matches(&g)
    }
}

/// Moves a tensor's payload out to external data at `location` (the file is the caller's to
/// write), with `offset`/`length` entries when given.
pub fn externalize(t: &mut TensorProto, location: &str, offset_length: Option<(u64, u64)>) {
    use adanorm_onnx::onnx::proto::StringStringEntryProto;
    let kv = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    t.raw_data = None;
    t.data_location = Some(1);
    t.external_data = vec![kv("location", location.into())];
    if let Some((offset, length)) = offset_length {
        t.external_data.push(kv("offset", offset.to_string()));
        t.external_data.push(kv("length", length.to_string()));
    }
}

/// `out = x * w` with a 4-element weight `w`: the smallest model with an initializer.
pub fn mul_by_weight() -> Builder {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[4]);
    let w = b.init("w", &[4], &[1.0, 2.0, 3.0, 4.0]);
    b.node_named("mul", "Mul", &[&x, &w], &["out"], vec![]);
    b.output("out", F32);
    b
}

/// Rewrite options as the CLI builds them (`portable` off).
pub fn rewrite_options(
    target: adanorm_onnx::rewrite::Target,
    affine: adanorm_onnx::rewrite::Affine,
    ck: Option<(f64, f64)>,
    include_fused: bool,
) -> adanorm_onnx::rewrite::Options {
    adanorm_onnx::rewrite::Options {
        target,
        c: ck.map(|x| x.0),
        k: ck.map(|x| x.1),
        affine,
        portable: false,
        include_fused,
        only: Vec::new(),
        residual: true,
    }
}

/// The one match of `ms`.
pub fn only(ms: Vec<Match>) -> Match {
    assert_eq!(ms.len(), 1, "expected exactly one match, got {ms:#?}");
    ms.into_iter().next().unwrap()
}

/// `other` computes what `original` computes on `inputs` (tract, within 1e-5 scaled).
pub fn assert_same_outputs(
    original: &Path,
    other: &Path,
    inputs: &[(String, adanorm_tract::tract_onnx::prelude::Tensor)],
    what: &str,
) {
    use adanorm_onnx::runner::{compare, run};
    let want = run(original, inputs.to_vec()).unwrap();
    let got = run(other, inputs.to_vec()).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(want.len(), got.len(), "{what}: output count");
    for d in compare(&want, &got) {
        assert!(
            d.problem.is_none() && d.max_scaled <= 1e-5,
            "{what}: output '{}' differs: {:?} (max {})",
            d.output,
            d.problem,
            d.max_scaled
        );
    }
}

/// Every node of `model`'s main graph as `domain:op_type:outputs`, sorted: what two models
/// that should hold the same nodes (a revert and its original) are compared by.
pub fn node_signatures(model: &ModelProto) -> Vec<String> {
    let mut v: Vec<String> = model
        .graph
        .as_ref()
        .map(|g| g.node.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|n| format!("{}:{}:{}", n.domain(), n.op_type(), n.output.join(",")))
        .collect();
    v.sort();
    v
}
