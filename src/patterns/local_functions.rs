//! LayerNorms inside model-local functions (`ModelProto.functions`): PyTorch's
//! `export_modules_as_functions`, the dynamo exporter of torch 2.1-2.4, onnxscript models. The
//! matcher reads graphs, so the calls of functions whose bodies hold a normalisation are inlined
//! first (`adanorm_proto::inline`, attribute references resolved per call: each call's `eps`
//! becomes that instance's constant). Only those: functions without one stay functions.

use std::collections::HashSet;

use adanorm_proto::inline::{
    call_key, calls_in, function_key, inline_functions, is_own_op_body, FunctionKey,
};
use adanorm_proto::onnx::{FunctionProto, NodeProto};

use super::find_matches_everywhere;
use crate::error::{Error, Result};
use crate::graph::GraphIndex;
use crate::onnx::Model;

/// `model` with the calls of every function that holds a normalisation inlined, and those
/// functions' names (`domain.name`); `model` itself when there are none.
pub fn inline_functions_with_matches(model: Model) -> Result<(Model, Vec<String>)> {
    let library: HashSet<FunctionKey> = model
        .proto
        .functions
        .iter()
        .filter(|f| !is_own_op_body(f))
        .map(function_key)
        .collect();
    if library.is_empty() {
        return Ok((model, Vec::new()));
    }
    // Only functions that hold (or call one that holds) an op a normalisation is made of are
    // tried: an exporter can write hundreds of module functions.
    let candidates = holding_norm_ops(&model.proto.functions);
    let mut called: Vec<FunctionKey> = calls_in(&model.proto)
        .into_iter()
        .filter(|k| library.contains(k) && candidates.contains(k))
        .collect();
    if called.is_empty() {
        return Ok((model, Vec::new()));
    }
    called.sort();
    let before = count_matches(&model)?;
    let mut chosen = HashSet::new();
    for k in called {
        let only = HashSet::from([k.clone()]);
        if count_matches(&inlined(&model, &only)?)? > before {
            chosen.insert(k);
        }
    }
    if chosen.is_empty() {
        return Ok((model, Vec::new()));
    }
    let mut names: Vec<String> = chosen.iter().map(|(d, n, _)| format!("{d}.{n}")).collect();
    names.sort();
    Ok((inlined(&model, &chosen)?, names))
}

/// Functions whose bodies hold a node some match is read from or contains
/// ([`super::may_be_part_of_a_match`], derived from the recogniser table), directly, in a
/// subgraph, or through a call of another such function.
fn holding_norm_ops(functions: &[FunctionProto]) -> HashSet<FunctionKey> {
    fn has(nodes: &[NodeProto], known: &HashSet<FunctionKey>) -> bool {
        nodes.iter().any(|n| {
            super::may_be_part_of_a_match(n)
                || known.contains(&call_key(n))
                || n.attribute
                    .iter()
                    .any(|a| a.g.iter().chain(&a.graphs).any(|g| has(&g.node, known)))
        })
    }
    let mut known = HashSet::new();
    loop {
        let before = known.len();
        for f in functions {
            if !known.contains(&function_key(f)) && has(&f.node, &known) {
                known.insert(function_key(f));
            }
        }
        if known.len() == before {
            return known;
        }
    }
}

fn inlined(model: &Model, only: &HashSet<FunctionKey>) -> Result<Model> {
    let mut proto = model.proto.clone(); // tensor payloads are shared, not copied
    inline_functions(&mut proto, Some(only)).map_err(|e| {
        Error::msg(format!("inlining model-local functions: {e}")).in_file(&model.path)
    })?;
    Ok(model.with_proto(proto))
}

fn count_matches(model: &Model) -> Result<usize> {
    let g = GraphIndex::build(model)?;
    let subgraphs = g.subgraphs()?;
    Ok(find_matches_everywhere(&g, &subgraphs)
        .iter()
        .map(|(_, ms)| ms.len())
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, ops: &[(&str, &str)]) -> FunctionProto {
        FunctionProto {
            name: Some(name.into()),
            domain: Some("m".into()),
            node: ops
                .iter()
                .map(|(op, domain)| NodeProto {
                    op_type: Some(op.to_string()),
                    domain: Some(domain.to_string()),
                    ..NodeProto::default()
                })
                .collect(),
            ..FunctionProto::default()
        }
    }

    #[test]
    fn only_functions_reaching_a_normalisation_op_are_candidates() {
        let functions = [
            f("Encoder", &[("Block", "m"), ("Relu", "")]),
            f("Block", &[("MatMul", ""), ("LayerNorm", "m")]),
            f("LayerNorm", &[("ReduceMean", ""), ("Sub", "")]),
            f("Mlp", &[("MatMul", ""), ("Gelu", "")]),
        ];
        let mut got: Vec<String> = holding_norm_ops(&functions)
            .into_iter()
            .map(|k| k.1)
            .collect();
        got.sort();
        assert_eq!(got, ["Block", "Encoder", "LayerNorm"]);
    }
}
