//! ONNX node → [`NormOp`]: the parsers tract calls for `AdaNorm` and `LayerNormSimple` nodes.
//!
//! tract looks builders up by `op_type` alone, so these check the domain themselves: a node
//! `AdaNorm` in any other domain is refused rather than run as ours.

use adanorm_kernels::params::{attr, rule, slot};
use adanorm_kernels::params::{OpKind, DOMAIN, FIRST_OPSET_VERSION, OPSET_VERSION};
use adanorm_kernels::{Params, Variant};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use crate::op::NormOp;

/// Registers the `AdaNorm` and `LayerNormSimple` parsers in `onnx`.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register
        .insert(OpKind::AdaNorm.op_type(), build_ada_norm);
    onnx.op_register
        .insert(OpKind::LayerNormSimple.op_type(), build_layer_norm_simple);
}

fn build_ada_norm(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let c = float_attr(node, attr::C, attr::DEFAULT_C)?;
    let k = float_attr(node, attr::K, attr::DEFAULT_K)?;
    build(ctx, node, Variant::AdaNorm { c, k })
}

fn build_layer_norm_simple(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    build(ctx, node, Variant::LayerNormSimple)
}

/// `node "name" (domain.op_type)` for messages about a node that is not (yet) a `NormOp`.
pub(crate) fn node_label(node: &NodeProto) -> String {
    let domain = if node.domain.is_empty() {
        "ai.onnx"
    } else {
        &node.domain
    };
    format!("node {:?} ({domain}.{})", node_name(node), node.op_type)
}

/// The node's name, or its first output's when it has none (as tract names such nodes).
fn node_name(node: &NodeProto) -> &str {
    if node.name.is_empty() {
        node.output.first().map(String::as_str).unwrap_or("")
    } else {
        &node.name
    }
}

fn build(
    ctx: &ParsingContext,
    node: &NodeProto,
    variant: Variant,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let label = node_label(node);
    if node.domain != DOMAIN {
        bail!(
            "{label}: {} is an op of domain {DOMAIN:?} only; this node is in {:?}, which this \
             runtime does not implement",
            node.op_type,
            node.domain
        );
    }
    let import = ctx
        .model
        .opset_import
        .iter()
        .find(|o| o.domain == DOMAIN)
        .map(|o| o.version);
    if let Some(version) = import {
        ensure!(
            (FIRST_OPSET_VERSION..=OPSET_VERSION).contains(&version),
            "{label}: the model imports {DOMAIN} version {version}, this runtime implements \
             versions {FIRST_OPSET_VERSION} to {OPSET_VERSION}"
        );
    }
    // A model without an import of the domain is read as version 1, the domain's first.
    let version = import.unwrap_or(FIRST_OPSET_VERSION);
    let (max_inputs, max_outputs) = slot::counts(OPSET_VERSION);
    ensure!(
        (1..=max_inputs).contains(&node.input.len()) && !node.input[0].is_empty(),
        "{label}: expected inputs X [, Scale [, B [, Skip [, Bias]]]], got {:?}",
        node.input
    );
    ensure!(
        (1..=max_outputs).contains(&node.output.len()) && !node.output[0].is_empty(),
        "{label}: expected outputs Y [, Mean [, InvStdDev [, Sum]]], got {:?}",
        node.output
    );
    // Present means named: an empty name and a name left off the end both mean absent.
    let input = |slot: usize| node.input.get(slot).is_some_and(|i| !i.is_empty());
    let output = |slot: usize| node.output.get(slot).is_some_and(|o| !o.is_empty());
    let (version_inputs, version_outputs) = slot::counts(version);
    let uses_newer_slots =
        (version_inputs..max_inputs).any(input) || (version_outputs..max_outputs).any(output);
    if uses_newer_slots {
        bail!(
            "{label}: {}: the node has inputs {:?} and outputs {:?}, the model imports {DOMAIN} \
             version {version}",
            rule::VERSION,
            node.input,
            node.output
        );
    }

    let axis = node
        .get_attr_opt::<i64>(attr::AXIS)?
        .unwrap_or(attr::DEFAULT_AXIS);
    let epsilon = float_attr(node, attr::EPSILON, attr::DEFAULT_EPSILON)?;
    let unbiased = node
        .get_attr_opt::<i64>(attr::UNBIASED)?
        .unwrap_or(attr::DEFAULT_UNBIASED);
    let eps_in_sqrt = node
        .get_attr_opt::<i64>(attr::EPS_IN_SQRT)?
        .unwrap_or(attr::DEFAULT_EPS_IN_SQRT);
    let params = Params::from_attributes(variant, epsilon, unbiased, eps_in_sqrt)
        .map_err(|e| format_err!("{label}: {e}"))?;

    let op = NormOp {
        node: node_name(node).to_string(),
        params,
        axis,
        has_scale: input(slot::SCALE),
        has_bias: input(slot::B),
        mean_output: output(slot::MEAN),
        inv_std_dev_output: output(slot::INV_STD_DEV),
        has_skip: input(slot::SKIP),
        has_residual_bias: input(slot::BIAS),
        sum_output: output(slot::SUM),
    };
    Ok((Box::new(op), vec![]))
}

/// A float attribute, widened to f64 (ONNX float attributes are f32).
/// A float attribute: an ONNX float32, present or defaulted, widened to f64 afterwards.
fn float_attr(node: &NodeProto, name: &str, default: f32) -> TractResult<f64> {
    Ok(f64::from(
        node.get_attr_opt::<f32>(name)?.unwrap_or(default),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ONNX float attributes are float32 (ops-spec): present or defaulted, a double node
    /// computes with the float32 value widened, as ONNX Runtime reads it.
    #[test]
    fn float_attributes_are_float32_present_or_absent() {
        let mut node = NodeProto::default();
        let k = float_attr(&node, attr::K, attr::DEFAULT_K).unwrap();
        assert_eq!(k, f64::from(0.1f32));
        assert_ne!(k, 0.1, "the double 0.1 is not an ONNX float attribute");
        node.attribute.push(tract_onnx::pb::AttributeProto {
            name: attr::K.into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Float as i32,
            f: 0.3,
            ..Default::default()
        });
        assert_eq!(
            float_attr(&node, attr::K, attr::DEFAULT_K).unwrap(),
            f64::from(0.3f32)
        );
    }
}
