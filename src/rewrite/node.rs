//! Building `ai.adanorm` nodes: the op, its attributes (always all of them, explicitly, so a
//! model-local function body can reference each), a name derived from the subgraph it replaces.

use crate::onnx::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto};
// The op contract (domain, op names, attribute names and defaults) is the kernels' own.
pub use adanorm_kernels::params::{attr as op_attr, OpKind, DOMAIN};

/// Everything an `ai.adanorm` node computes.
#[derive(Debug, Clone, PartialEq)]
pub struct OpParams {
    pub kind: OpKind,
    pub axis: i64,
    pub epsilon: f64,
    pub unbiased: bool,
    pub eps_in_sqrt: bool,
    pub c: f64,
    pub k: f64,
}

impl OpParams {
    /// The (c, k) this node effectively applies: LayerNormSimple is AdaNorm with c = 1, k = 0.
    pub fn effective_ck(&self) -> (f64, f64) {
        match self.kind {
            OpKind::AdaNorm => (self.c, self.k),
            OpKind::LayerNormSimple => (1.0, 0.0),
        }
    }

    /// Reads them back from a node (defaults per ops-spec).
    pub fn from_node(n: &NodeProto) -> Option<OpParams> {
        use crate::onnx::attr;
        let kind = OpKind::of_node(n.domain(), n.op_type())?;
        Some(OpParams {
            kind,
            axis: attr::int(n, op_attr::AXIS).unwrap_or(op_attr::DEFAULT_AXIS),
            epsilon: attr::float(n, op_attr::EPSILON).unwrap_or(op_attr::DEFAULT_EPSILON) as f64,
            unbiased: attr::int(n, op_attr::UNBIASED).unwrap_or(op_attr::DEFAULT_UNBIASED) == 1,
            eps_in_sqrt: attr::int(n, op_attr::EPS_IN_SQRT).unwrap_or(op_attr::DEFAULT_EPS_IN_SQRT)
                == 1,
            c: attr::float(n, op_attr::C).unwrap_or(op_attr::DEFAULT_C) as f64,
            k: attr::float(n, op_attr::K).unwrap_or(op_attr::DEFAULT_K) as f64,
        })
    }
}

pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        i: Some(v),
        r#type: Some(AttributeType::Int as i32),
        ..Default::default()
    }
}

pub fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn float_attr(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        f: Some(v),
        r#type: Some(AttributeType::Float as i32),
        ..Default::default()
    }
}

/// Optional inputs/outputs: empty names in the middle, trailing empties dropped.
fn trimmed(values: &[Option<&str>]) -> Vec<String> {
    let mut v: Vec<String> = values.iter().map(|s| s.unwrap_or("").to_string()).collect();
    while v.last().is_some_and(String::is_empty) {
        v.pop();
    }
    v
}

pub fn build(
    name: &str,
    p: &OpParams,
    inputs: &[Option<&str>],
    outputs: &[Option<&str>],
    doc: &str,
) -> NodeProto {
    let mut attribute = vec![
        int_attr(op_attr::AXIS, p.axis),
        float_attr(op_attr::EPSILON, p.epsilon as f32),
        int_attr(op_attr::UNBIASED, p.unbiased as i64),
        int_attr(op_attr::EPS_IN_SQRT, p.eps_in_sqrt as i64),
    ];
    if p.kind == OpKind::AdaNorm {
        attribute.push(float_attr(op_attr::C, p.c as f32));
        attribute.push(float_attr(op_attr::K, p.k as f32));
    }
    NodeProto {
        name: Some(name.into()),
        op_type: Some(p.kind.op_type().into()),
        domain: Some(DOMAIN.into()),
        input: trimmed(inputs),
        output: trimmed(outputs),
        attribute,
        doc_string: (!doc.is_empty()).then(|| doc.to_string()),
        ..Default::default()
    }
}

/// `/blocks.0/norm1/` + op type for nodes `/blocks.0/norm1/*`; the output name + op type when
/// the nodes share no scope. Made unique against `taken`.
pub fn derive_name(
    node_names: &[&str],
    output: &str,
    kind: OpKind,
    taken: &dyn Fn(&str) -> bool,
) -> String {
    let prefix = common_scope(node_names);
    let base = if prefix.is_empty() {
        if let [only] = node_names {
            format!("{only}/{}", kind.op_type())
        } else {
            format!("{output}/{}", kind.op_type())
        }
    } else {
        format!("{prefix}{}", kind.op_type())
    };
    let mut name = base.clone();
    let mut i = 1;
    while taken(&name) {
        name = format!("{base}_{i}");
        i += 1;
    }
    name
}

/// The longest common prefix of the names that ends with '/'.
fn common_scope(names: &[&str]) -> String {
    let Some(first) = names.first() else {
        return String::new();
    };
    let mut len = first.len();
    for n in &names[1..] {
        len = len.min(
            first
                .bytes()
                .zip(n.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    match first[..len].rfind('/') {
        Some(i) if i > 0 || len > 1 => first[..=i].to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_shared_scope() {
        let none = |_: &str| false;
        let n = derive_name(
            &["/blocks.0/norm1/ReduceMean", "/blocks.0/norm1/Sub"],
            "y",
            OpKind::AdaNorm,
            &none,
        );
        assert_eq!(n, "/blocks.0/norm1/AdaNorm");
        let n = derive_name(&["a", "b"], "y", OpKind::LayerNormSimple, &none);
        assert_eq!(n, "y/LayerNormSimple");
        let taken = |s: &str| s == "ln/AdaNorm";
        assert_eq!(
            derive_name(&["ln"], "y", OpKind::AdaNorm, &taken),
            "ln/AdaNorm_1"
        );
    }

    #[test]
    fn optional_inputs_keep_their_slots() {
        let p = OpParams {
            kind: OpKind::LayerNormSimple,
            axis: -1,
            epsilon: 1e-5f32 as f64,
            unbiased: false,
            eps_in_sqrt: true,
            c: 1.0,
            k: 0.1f32 as f64,
        };
        let n = build(
            "n",
            &p,
            &[Some("x"), None, Some("b")],
            &[Some("y"), None, None],
            "",
        );
        assert_eq!(n.input, ["x", "", "b"]);
        assert_eq!(n.output, ["y"]);
        assert_eq!(OpParams::from_node(&n), Some(p));
    }
}
