//! Typed reads of node attributes.

use super::proto::{AttributeProto, NodeProto, TensorProto};

pub fn find<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

pub fn int(node: &NodeProto, name: &str) -> Option<i64> {
    find(node, name).and_then(|a| a.i)
}

pub fn float(node: &NodeProto, name: &str) -> Option<f32> {
    find(node, name).and_then(|a| a.f)
}

pub fn ints<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    find(node, name).map(|a| a.ints.as_slice())
}

/// A string attribute, as UTF-8 (lossy: ONNX strings are bytes).
pub fn string(node: &NodeProto, name: &str) -> Option<String> {
    find(node, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

pub fn tensor<'a>(node: &'a NodeProto, name: &str) -> Option<&'a TensorProto> {
    find(node, name).and_then(|a| a.t.as_ref())
}
