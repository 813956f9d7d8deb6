//! Whole-model checks on the proto, before tract parses it, for mistakes tract would either miss
//! (it ignores node domains, so `ai.adanorm.Relu` would silently become tract's `Relu`),
//! report without naming our node (a bfloat16 `X`, which tract cannot represent), or run into
//! without bound (a `Transpose` perm that repeats an axis).

use std::collections::HashSet;

use adanorm_kernels::params::rule;
use adanorm_kernels::params::DOMAIN;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::type_proto::Value;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

use adanorm_kernels::params::OpKind;

use crate::builder::node_label;

/// Refuses `ai.adanorm` nodes this runtime cannot run faithfully, naming the node: unknown op
/// types, and bfloat16 inputs.
pub(crate) fn check_adanorm_nodes(proto: &ModelProto) -> TractResult<()> {
    if let Some(graph) = &proto.graph {
        check_graph(graph)?;
    }
    Ok(())
}

fn check_graph(graph: &GraphProto) -> TractResult<()> {
    let bf16 = bfloat16_values(graph);
    for node in &graph.node {
        if node.domain == DOMAIN {
            ensure!(
                OpKind::from_op_type(&node.op_type).is_some(),
                "{}: {DOMAIN} has no op {:?} (it has {:?})",
                node_label(node),
                node.op_type,
                OpKind::ALL.map(OpKind::op_type)
            );
            if let Some(input) = node.input.iter().find(|i| bf16.contains(i.as_str())) {
                bail!(
                    "{}: {}: {input:?} is bfloat16, which tract 0.23 has no tensor type for; \
                     run this model in float, float16 or double, or with ONNX Runtime",
                    node_label(node),
                    rule::TYPE
                );
            }
        }
        check_transpose(node)?;
        for attribute in &node.attribute {
            for g in attribute.g.iter().chain(&attribute.graphs) {
                check_graph(g)?;
            }
        }
    }
    Ok(())
}

/// A `Transpose` whose `perm` is not a permutation: tract 0.23 does not refuse it, and may
/// then allocate without bound.
fn check_transpose(node: &NodeProto) -> TractResult<()> {
    let is_default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
    if !is_default_domain || node.op_type != "Transpose" {
        return Ok(());
    }
    if let Some(perm) = node.attribute.iter().find(|a| a.name == "perm") {
        let n = perm.ints.len() as i64;
        let mut seen = vec![false; perm.ints.len()];
        let valid = perm
            .ints
            .iter()
            .all(|&p| (0..n).contains(&p) && !std::mem::replace(&mut seen[p as usize], true));
        ensure!(
            valid,
            "{}: Transpose perm {:?} is not a permutation of 0..{n}",
            node_label(node),
            perm.ints
        );
    }
    Ok(())
}

/// Names of the values the graph declares or makes bfloat16: typed inputs, outputs and
/// value_info, initializers, and `Cast`/`Constant` outputs.
fn bfloat16_values(graph: &GraphProto) -> HashSet<&str> {
    let bf16 = DataType::Bfloat16 as i32;
    let declared = graph
        .input
        .iter()
        .chain(&graph.output)
        .chain(&graph.value_info)
        .filter(|info| {
            matches!(
                info.r#type.as_ref().and_then(|t| t.value.as_ref()),
                Some(Value::TensorType(t)) if t.elem_type == bf16
            )
        })
        .map(|info| info.name.as_str());
    let initialized = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == bf16)
        .map(|t| t.name.as_str());
    let produced = graph
        .node
        .iter()
        .filter(|n| produces_bfloat16(n, bf16))
        .flat_map(|n| n.output.first())
        .map(String::as_str);
    declared.chain(initialized).chain(produced).collect()
}

fn produces_bfloat16(node: &NodeProto, bf16: i32) -> bool {
    let is_default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
    is_default_domain
        && node.attribute.iter().any(|a| match node.op_type.as_str() {
            "Cast" => a.name == "to" && a.i == bf16 as i64,
            "Constant" => a.name == "value" && a.t.as_ref().is_some_and(|t| t.data_type == bf16),
            _ => false,
        })
}
