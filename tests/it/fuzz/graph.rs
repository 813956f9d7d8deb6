//! A graph under construction, with subgraphs (If branches) and model-local functions: the
//! fuzzer's builder. Unlike `tests/it/common.rs`'s `Builder`, every name comes from one counter shared
//! by a graph and all graphs made from it, so a generated model is SSA across subgraphs by
//! construction and any duplicate in a rewritten model is the tool's.

use std::cell::Cell;
use std::rc::Rc;

use adanorm_onnx::onnx::proto::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension, type_proto, AttributeProto,
    FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

pub const F32: i32 = 1;
pub const F16: i32 = 10;
pub const I64: i32 = 7;
pub const BOOL: i32 = 9;
pub const I8: i32 = 3;

/// An attribute value.
#[allow(clippy::large_enum_variant)]
pub enum A {
    I(i64),
    F(f32),
    Is(Vec<i64>),
    T(TensorProto),
    G(GraphProto),
    /// A reference to the enclosing function's attribute (`ref_attr_name`) of this type.
    Ref(&'static str, AttributeType),
}

/// A dimension as declared on a graph input.
#[derive(Clone, Debug)]
pub enum Dim {
    Known(i64),
    Named(&'static str),
}

pub fn tensor(name: &str, elem: i32, dims: &[i64], vals: &[f64]) -> TensorProto {
    let raw: Vec<u8> = match elem {
        F32 => vals
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect(),
        F16 => vals
            .iter()
            .flat_map(|&v| half::f16::from_f64(v).to_le_bytes())
            .collect(),
        I64 => vals
            .iter()
            .flat_map(|&v| (v as i64).to_le_bytes())
            .collect(),
        I8 => vals.iter().map(|&v| v as i8 as u8).collect(),
        _ => panic!("tensor of type {elem}"),
    };
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(elem),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

pub fn value_info(name: &str, elem: i32, dims: Option<&[Dim]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(
                |d| adanorm_onnx::onnx::proto::tensor_shape_proto::Dimension {
                    value: Some(match d {
                        Dim::Known(v) => dimension::Value::DimValue(*v),
                        Dim::Named(n) => dimension::Value::DimParam(n.to_string()),
                    }),
                    ..Default::default()
                },
            )
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attribute(name: &str, a: A) -> AttributeProto {
    let mut p = AttributeProto {
        name: Some(name.into()),
        ..Default::default()
    };
    let ty = match a {
        A::I(i) => {
            p.i = Some(i);
            AttributeType::Int
        }
        A::F(f) => {
            p.f = Some(f);
            AttributeType::Float
        }
        A::Is(v) => {
            p.ints = v;
            AttributeType::Ints
        }
        A::T(t) => {
            p.t = Some(t);
            AttributeType::Tensor
        }
        A::G(g) => {
            p.g = Some(g);
            AttributeType::Graph
        }
        A::Ref(to, ty) => {
            p.ref_attr_name = Some(to.into());
            ty
        }
    };
    p.r#type = Some(ty as i32);
    p
}

pub struct G {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    pub inputs: Vec<ValueInfoProto>,
    pub outputs: Vec<ValueInfoProto>,
    /// Names are `<prefix><stem>_<n>`, `n` from the counter every related graph shares.
    counter: Rc<Cell<usize>>,
    prefix: String,
    /// A function body: constants must be `Constant` nodes (a function has no initializers).
    pub consts_only: bool,
    /// The main graph (whose values can be graph outputs of the model).
    pub is_main: bool,
}

impl G {
    pub fn new() -> G {
        G {
            nodes: vec![],
            inits: vec![],
            inputs: vec![],
            outputs: vec![],
            counter: Rc::new(Cell::new(0)),
            prefix: String::new(),
            consts_only: false,
            is_main: true,
        }
    }

    /// A graph (a branch, a function body) whose names never collide with this one's.
    pub fn sub(&self, prefix: &str) -> G {
        G {
            nodes: vec![],
            inits: vec![],
            inputs: vec![],
            outputs: vec![],
            counter: self.counter.clone(),
            prefix: format!("{}{prefix}", self.prefix),
            consts_only: false,
            is_main: false,
        }
    }

    pub fn fresh(&self, stem: &str) -> String {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        format!("{}{stem}_{n}", self.prefix)
    }

    pub fn node(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, A)>,
    ) {
        let name = self.fresh(&format!("/{op}"));
        self.nodes.push(NodeProto {
            name: Some(name),
            op_type: Some(op.into()),
            domain: (!domain.is_empty()).then(|| domain.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.into_iter().map(|(n, a)| attribute(n, a)).collect(),
            ..Default::default()
        });
    }

    /// A standard op with one generated output; returns it.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, A)>) -> String {
        self.dop("", op, inputs, attrs)
    }

    pub fn dop(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&str, A)>,
    ) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node(domain, op, inputs, &[&out], attrs);
        out
    }

    pub fn init(&mut self, stem: &str, elem: i32, dims: &[i64], vals: &[f64]) -> String {
        let name = self.fresh(stem);
        self.inits.push(tensor(&name, elem, dims, vals));
        name
    }

    /// A `Constant` node.
    pub fn constant(&mut self, elem: i32, dims: &[i64], vals: &[f64]) -> String {
        let t = tensor("", elem, dims, vals);
        self.op("Constant", &[], vec![("value", A::T(t))])
    }

    pub fn scalar(&mut self, elem: i32, v: f64) -> String {
        self.constant(elem, &[], &[v])
    }

    pub fn input(&mut self, stem: &str, elem: i32, dims: &[Dim]) -> String {
        let name = self.fresh(stem);
        self.inputs.push(value_info(&name, elem, Some(dims)));
        name
    }

    pub fn output(&mut self, name: &str, elem: i32) {
        if !self.outputs.iter().any(|o| o.name() == name) {
            self.outputs.push(value_info(name, elem, None));
        }
    }

    pub fn graph(self, name: &str) -> GraphProto {
        GraphProto {
            name: Some(name.into()),
            node: self.nodes,
            initializer: self.inits,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        }
    }

    /// The nodes as a function body: `inputs`/`outputs` by name.
    pub fn function(
        self,
        domain: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[&str],
        opset: i64,
    ) -> FunctionProto {
        FunctionProto {
            name: Some(name.into()),
            domain: Some(domain.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.iter().map(|s| s.to_string()).collect(),
            node: self.nodes,
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            ..Default::default()
        }
    }
}

pub fn model(
    graph: GraphProto,
    opsets: &[(&str, i64)],
    functions: Vec<FunctionProto>,
) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("adanorm-onnx fuzz".into()),
        opset_import: opsets
            .iter()
            .map(|(d, v)| OperatorSetIdProto {
                domain: Some(d.to_string()),
                version: Some(*v),
            })
            .collect(),
        graph: Some(graph),
        functions,
        ..Default::default()
    }
}
