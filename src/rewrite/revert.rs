//! `revert`: every `ai.adanorm` node becomes standard ONNX again. A node `fuse`/`rewrite` made
//! carries a record of the subgraph it replaced (model metadata): that subgraph is restored
//! exactly, with dropped or folded weights taken back from the weights file. A node without a
//! record becomes `LayerNormalization` where the opset (>= 17) and its semantics allow, or the
//! standard-op body of [`super::function`] otherwise.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use prost::Message;

use super::apply::{self, Patch, Replacement, RECORD_PREFIX};
use super::fold::{Folded, FOLD_PREFIX};
use super::names::Names;
use super::node::{float_attr, int_attr, OpKind, OpParams, DOMAIN};
use super::weights::WeightsFile;
use super::{portable, Change, Outcome};
use crate::error::{Error, Result};
use crate::graph::GraphIndex;
use crate::onnx::proto::{GraphProto, NodeProto};

pub fn revert(g: &GraphIndex<'_>, weights: Option<&WeightsFile>) -> Result<Outcome> {
    let model = &g.model.proto;
    let meta: HashMap<&str, &str> = model
        .metadata_props
        .iter()
        .map(|e| (e.key(), e.value()))
        .collect();
    let mut changes = Vec::new();
    let mut used_keys = Vec::new();
    // Every graph: ai.adanorm nodes inside If branches and Loop bodies go back too; subgraphs
    // are patched before the graphs holding them.
    let subgraphs = g.subgraphs()?;
    let mut names = Names::of_model(model);
    let mut patches: Vec<(&GraphIndex<'_>, Patch)> = Vec::new();
    // Enclosing graphs come first: what they restore, a subgraph may read (an ε shared by the
    // main graph and an If branch is recorded once, by the graph that held it).
    for scope in std::iter::once(g).chain(&subgraphs) {
        let restored_around: HashSet<String> = patches
            .iter()
            .filter(|(outer, _)| scope.scope.0.starts_with(&outer.scope.0))
            .flat_map(|(_, p)| p.add_initializers.iter().map(|t| t.name().to_string()))
            .collect();
        let patch = revert_scope(
            scope,
            weights,
            &meta,
            &restored_around,
            &mut names,
            &mut changes,
            &mut used_keys,
        )?;
        patches.push((scope, patch));
    }
    patches.sort_by_key(|(scope, _)| std::cmp::Reverse(scope.scope.0.len()));
    let mut out = model.clone();
    for (scope, patch) in patches {
        apply::apply_to(&mut out, scope, patch);
    }
    out.metadata_props
        .retain(|e| !used_keys.iter().any(|k| k == e.key()));
    apply::sync_adanorm_opset(&mut out);
    let still_called = |name: &str| {
        fn calls(gr: &GraphProto, name: &str) -> bool {
            gr.node.iter().any(|n| {
                (n.domain() == DOMAIN && n.op_type() == name)
                    || n.attribute
                        .iter()
                        .any(|a| a.g.iter().chain(a.graphs.iter()).any(|s| calls(s, name)))
            })
        }
        out.graph.as_ref().is_some_and(|gr| calls(gr, name))
    };
    let keep: Vec<bool> = out
        .functions
        .iter()
        .map(|f| f.domain() != DOMAIN || still_called(f.name()))
        .collect();
    let mut keep = keep.into_iter();
    out.functions.retain(|_| keep.next().unwrap_or(true));
    Ok(Outcome {
        model: out,
        changes,
        skipped: vec![],
        weights: None,
    })
}

/// The patch that turns one graph's `ai.adanorm` nodes back into standard ONNX.
fn revert_scope(
    g: &GraphIndex<'_>,
    weights: Option<&WeightsFile>,
    meta: &HashMap<&str, &str>,
    restored_around: &HashSet<String>,
    names: &mut Names,
    changes: &mut Vec<Change>,
    used_keys: &mut Vec<String>,
) -> Result<Patch> {
    let opset = g.model.opset("").unwrap_or(0);
    let by_name: HashMap<&str, usize> = g
        .nodes()
        .filter(|(_, n)| !n.name().is_empty())
        .map(|(i, n)| (n.name(), i))
        .collect();
    let mut patch = Patch::default();
    // Every record of this graph's ai.adanorm nodes, decoded once: a record may read a value
    // another one gives back (a centring two norms shared goes back with the first of them).
    let mut records: HashMap<usize, Result<GraphProto>> = g
        .nodes()
        .filter(|(_, n)| OpParams::from_node(n).is_some() && !n.name().is_empty())
        .filter_map(|(id, n)| {
            let encoded = meta.get(format!("{RECORD_PREFIX}{}", n.name()).as_str())?;
            Some((id, decode_record(encoded)))
        })
        .collect();
    let restored_here: HashSet<String> = records
        .values()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|r| r.node.iter().flat_map(|n| n.output.iter().cloned()))
        .collect();

    for (id, n) in g.nodes() {
        let Some(p) = OpParams::from_node(n) else {
            continue;
        };
        let label = g.label(id);
        let key = format!("{RECORD_PREFIX}{}", n.name());
        let (insert, remove, how) = if let Some(decoded) = records.remove(&id) {
            used_keys.push(key.clone());
            let record = decoded.map_err(|e| e.at_node(&label).in_file(&g.model.path))?;
            // Input listings of the initializers it removed (IR < 4) go back to their places.
            let places: Vec<usize> = record
                .metadata_props
                .iter()
                .find(|e| e.key() == apply::INPUT_PLACES)
                .and_then(|e| serde_json::from_str(e.value()).ok())
                .unwrap_or_default();
            patch
                .restore_inputs
                .extend(places.into_iter().zip(record.input.iter().cloned()));
            // The value_info the rewrite added for the node's outputs goes with it.
            patch
                .drop_value_info
                .extend(record.output.iter().map(|v| v.name().to_string()));
            let inserted: Vec<String> =
                serde_json::from_str(record.doc_string()).unwrap_or_default();
            let mut remove = vec![id];
            remove.extend(
                inserted
                    .iter()
                    .filter(|s| s.as_str() != n.name())
                    .filter_map(|s| by_name.get(s.as_str()).copied()),
            );
            // What is still in the model is not re-created: a node or tensor the rewrite kept
            // because something else reads it would otherwise exist twice.
            let mut record = record;
            let kept = |o: &String| {
                g.producer(o)
                    .is_some_and(|(producer, _)| !remove.contains(&producer))
            };
            record.node.retain(|r| !r.output.iter().any(kept));
            patch.add_initializers.extend(
                record
                    .initializer
                    .iter()
                    .filter(|t| {
                        g.initializer(t.name()).is_none()
                            && g.producer(t.name()).is_none()
                            && !restored_around.contains(t.name())
                    })
                    .cloned(),
            );
            // Dropped gain/bias come back from the weights file.
            let prefix = format!("{}/", n.name());
            let ours: Vec<_> = weights
                .iter()
                .flat_map(|w| w.tensors.iter())
                .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].starts_with("fold/"))
                .collect();
            let needs: Vec<&str> = record
                .node
                .iter()
                .flat_map(|r| r.input.iter().map(String::as_str))
                .collect();
            // Not where the record makes the value itself: a gain that was a `Constant` node
            // comes back as that node (fuzz seed 190), and would otherwise be produced twice.
            let recorded = |v: &str| {
                record.node.iter().any(|r| r.output.iter().any(|o| o == v))
                    || record.initializer.iter().any(|t| t.name() == v)
            };
            for (_, (original, t)) in &ours {
                if needs.contains(&original.as_str())
                    && g.initializer(original).is_none()
                    && !g.is_outer_value(original)
                    && !restored_around.contains(original.as_str())
                    && !recorded(original)
                {
                    patch.add_initializers.push(t.to_proto(original));
                }
            }
            let missing: Vec<&str> = needs
                .iter()
                .copied()
                .filter(|v| !v.is_empty())
                .filter(|v| {
                    g.producer(v).is_none()
                        && g.initializer(v).is_none()
                        && !g.is_graph_input(v)
                        && !g.is_outer_value(v)
                        && !restored_around.contains(*v)
                        && !recorded(v)
                        && !restored_here.contains(*v)
                        && !ours.iter().any(|(_, (o, _))| o == v)
                })
                .collect();
            if !missing.is_empty() {
                return Err(Error::msg(format!(
                    "its original weights {missing:?} were dropped into a weights file: pass it with --weights FILE"
                ))
                .at_node(label)
                .in_file(&g.model.path));
            }
            (record.node, remove, "restored the recorded subgraph")
        } else {
            if opset < portable::MIN_INLINE_OPSET {
                return Err(Error::msg(format!(
                    "it has no revert record, and its standard-op form needs the model's default opset >= {} (it imports {opset})",
                    portable::MIN_INLINE_OPSET
                ))
                .at_node(label)
                .in_file(&g.model.path));
            }
            let elem = g.elem_type(&n.input[0]).unwrap_or(1);
            let (nodes, inits, how) = standard_ops(n, &p, opset, elem, names);
            patch.add_initializers.extend(inits);
            (nodes, vec![id], how)
        };
        // Folded weights go back into their consumers.
        if let Some(json) = meta.get(format!("{FOLD_PREFIX}{}", n.name()).as_str()) {
            used_keys.push(format!("{FOLD_PREFIX}{}", n.name()));
            let mapping: Vec<Folded> = serde_json::from_str(json)
                .map_err(|e| Error::with_source("a fold record is corrupt", e).at_node(&label))?;
            let w = weights.ok_or_else(|| {
                Error::msg("its gain and bias were folded into the following layers; pass the weights file with --weights FILE").at_node(&label).in_file(&g.model.path)
            })?;
            for f in mapping {
                let key = format!("{}/fold/{}", n.name(), f.original);
                let (_, t) = w.tensors.get(&key).ok_or_else(|| {
                    Error::msg(format!("the weights file lacks '{key}'")).at_node(&label)
                })?;
                let consumer = *by_name.get(f.node.as_str()).ok_or_else(|| {
                    Error::msg(format!("node '{}' (a folded consumer) is gone", f.node))
                })?;
                if g.initializer(&f.original).is_none() && g.producer(&f.original).is_none() {
                    patch.add_initializers.push(t.to_proto(&f.original));
                }
                patch.repoint.push((consumer, f.input, f.original.clone()));
                patch.maybe_unused.push(f.folded.clone());
            }
        }
        changes.push(Change {
            before: format!("{} '{}'", n.op_type(), label),
            after: how.to_string(),
            same_function: true,
            note: None,
        });
        patch.replacements.push(Replacement {
            remove,
            insert,
            outputs: n.output.iter().filter(|o| !o.is_empty()).cloned().collect(),
            record_key: None,
            inserted_names: vec![],
            drop_initializers: vec![],
            value_info: vec![],
        });
    }
    // Initializers restored twice (shared by two records) are added once.
    let mut seen = std::collections::HashSet::new();
    patch
        .add_initializers
        .retain(|t| seen.insert(t.name().to_string()));
    Ok(patch)
}

fn decode_record(encoded: &str) -> Result<GraphProto> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| Error::with_source("its revert record is not valid base64", e))?;
    GraphProto::decode(bytes.as_slice())
        .map_err(|e| Error::with_source("its revert record is not a valid subgraph", e))
}

/// `LayerNormalization` for a plain LayerNorm at opset >= 17 with a gain; the standard-op body
/// otherwise.
fn standard_ops(
    n: &NodeProto,
    p: &OpParams,
    opset: i64,
    elem: i32,
    names: &mut Names,
) -> (
    Vec<NodeProto>,
    Vec<crate::onnx::proto::TensorProto>,
    &'static str,
) {
    if let Some((mut adds, v1)) = super::residual::split(n, names) {
        let (nodes, inits, how) = standard_ops(&v1, p, opset, elem, names);
        adds.extend(nodes);
        let how = match how {
            "LayerNormalization" => "Add(s) and LayerNormalization",
            _ => "Add(s) and standard ops (the ops-spec formula)",
        };
        return (adds, inits, how);
    }
    let plain = p.effective_ck() == (1.0, 0.0) && !p.unbiased && p.eps_in_sqrt;
    let has_scale = n.input.get(1).is_some_and(|s| !s.is_empty());
    if plain && opset >= 17 && has_scale && !(p.kind == OpKind::AdaNorm && p.k != 0.0) {
        let ln = NodeProto {
            name: n.name.clone(),
            op_type: Some("LayerNormalization".into()),
            input: n.input.clone(),
            output: n.output.clone(),
            attribute: vec![
                int_attr("axis", p.axis),
                float_attr("epsilon", p.epsilon as f32),
            ],
            ..Default::default()
        };
        return (vec![ln], vec![], "LayerNormalization");
    }
    let (nodes, inits) = portable::inline(n, p, opset, elem, names);
    (nodes, inits, "standard ops (the ops-spec formula)")
}
