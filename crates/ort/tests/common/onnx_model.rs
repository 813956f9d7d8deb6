//! Just enough ONNX protobuf writing to build one-node `ai.adanorm` test models, so the Rust
//! host tests need no protobuf crate and no Python.
//!
//! Field numbers are those of `onnx.proto` (ModelProto, GraphProto, NodeProto, AttributeProto,
//! ValueInfoProto, TypeProto, TensorShapeProto, TensorProto, OperatorSetIdProto).

/// ONNX element type codes (TensorProto.DataType).
pub mod dtype {
    pub const FLOAT: i32 = 1;
    pub const INT32: i32 = 6;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const BFLOAT16: i32 = 16;
}

/// An attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Float(f32),
    Int(i64),
    Str(String),
}

/// A dimension in a declared shape.
#[derive(Debug, Clone)]
pub enum Dim {
    Known(i64),
    Named(&'static str),
}

/// A declared graph input or output: name, element type, optional shape.
#[derive(Debug, Clone)]
pub struct ValueInfo {
    pub name: String,
    pub elem: i32,
    pub shape: Option<Vec<Dim>>,
}

impl ValueInfo {
    pub fn new(name: &str, elem: i32, shape: Option<&[i64]>) -> ValueInfo {
        ValueInfo {
            name: name.to_owned(),
            elem,
            shape: shape.map(|s| s.iter().map(|&d| Dim::Known(d)).collect()),
        }
    }
}

/// A one-node model: `op_type` in domain `domain` with `inputs` -> `outputs`.
#[derive(Debug, Clone)]
pub struct OneNodeModel {
    pub op_type: String,
    pub domain: String,
    pub node_name: String,
    pub node_inputs: Vec<String>,
    pub node_outputs: Vec<String>,
    pub attrs: Vec<(String, Attr)>,
    pub graph_inputs: Vec<ValueInfo>,
    pub graph_outputs: Vec<ValueInfo>,
    pub opset: i64,
}

impl OneNodeModel {
    /// Serialised `ModelProto` (IR version 8, default opset 17, `domain` at `opset`).
    pub fn encode(&self) -> Vec<u8> {
        let mut node = Vec::new();
        for i in &self.node_inputs {
            put_str(&mut node, 1, i);
        }
        for o in &self.node_outputs {
            put_str(&mut node, 2, o);
        }
        put_str(&mut node, 3, &self.node_name);
        put_str(&mut node, 4, &self.op_type);
        for (name, value) in &self.attrs {
            put_msg(&mut node, 5, &attribute(name, value));
        }
        put_str(&mut node, 7, &self.domain);

        let mut graph = Vec::new();
        put_msg(&mut graph, 1, &node);
        put_str(&mut graph, 2, "g");
        for v in &self.graph_inputs {
            put_msg(&mut graph, 11, &value_info(v));
        }
        for v in &self.graph_outputs {
            put_msg(&mut graph, 12, &value_info(v));
        }

        let mut model = Vec::new();
        put_varint_field(&mut model, 1, 8);
        put_str(&mut model, 2, "adanorm-ort tests");
        put_msg(&mut model, 7, &graph);
        put_msg(&mut model, 8, &opset_id("", 17));
        put_msg(&mut model, 8, &opset_id(&self.domain, self.opset));
        model
    }
}

fn attribute(name: &str, value: &Attr) -> Vec<u8> {
    let mut a = Vec::new();
    put_str(&mut a, 1, name);
    match value {
        Attr::Float(f) => {
            put_key(&mut a, 2, 5);
            a.extend_from_slice(&f.to_le_bytes());
            put_varint_field(&mut a, 20, 1);
        }
        Attr::Int(i) => {
            put_varint_field(&mut a, 3, *i as u64);
            put_varint_field(&mut a, 20, 2);
        }
        Attr::Str(s) => {
            put_str(&mut a, 4, s);
            put_varint_field(&mut a, 20, 3);
        }
    }
    a
}

fn value_info(v: &ValueInfo) -> Vec<u8> {
    let mut tensor = Vec::new();
    put_varint_field(&mut tensor, 1, v.elem as u64);
    if let Some(dims) = &v.shape {
        let mut shape = Vec::new();
        for d in dims {
            let mut dim = Vec::new();
            match d {
                Dim::Known(n) => put_varint_field(&mut dim, 1, *n as u64),
                Dim::Named(s) => put_str(&mut dim, 2, s),
            }
            put_msg(&mut shape, 1, &dim);
        }
        put_msg(&mut tensor, 2, &shape);
    }
    let mut ty = Vec::new();
    put_msg(&mut ty, 1, &tensor);
    let mut vi = Vec::new();
    put_str(&mut vi, 1, &v.name);
    put_msg(&mut vi, 2, &ty);
    vi
}

fn opset_id(domain: &str, version: i64) -> Vec<u8> {
    let mut o = Vec::new();
    put_str(&mut o, 1, domain);
    put_varint_field(&mut o, 2, version as u64);
    o
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(buf, ((field << 3) | wire) as u64);
}

fn put_varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_key(buf, field, 0);
    put_varint(buf, v);
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, 2);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn put_str(buf: &mut Vec<u8>, field: u32, s: &str) {
    put_bytes(buf, field, s.as_bytes());
}

fn put_msg(buf: &mut Vec<u8>, field: u32, msg: &[u8]) {
    put_bytes(buf, field, msg);
}
