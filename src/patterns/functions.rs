//! LayerNorms inside model-local functions (`ModelProto.functions`): PyTorch's
//! `export_modules_as_functions`, the dynamo exporter of torch 2.1-2.4, onnxscript models. The
//! matcher reads graphs, so the calls of functions whose bodies hold a normalisation are inlined
//! first (`adanorm_proto::inline`, attribute references resolved per call: each call's `eps`
//! becomes that instance's constant). Only those: functions without one stay functions.

use std::collections::HashSet;

use adanorm_proto::inline::{
    calls_in, function_key, inline_functions, is_own_op_body, FunctionKey,
};

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
    let mut called: Vec<FunctionKey> = calls_in(&model.proto)
        .into_iter()
        .filter(|k| library.contains(k))
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
