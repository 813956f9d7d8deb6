//! Applying replacements to a model: each set of matched nodes is removed and its new nodes are
//! placed where the subgraph's last output was produced (so node order stays topological);
//! initializers and `value_info` only the removed nodes used go with them; everything else —
//! node order, names, metadata, functions, external-data references — is untouched. What is
//! removed is recorded in the model's `metadata_props`, so `revert` can restore it exactly.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use prost::Message;

use crate::graph::{GraphIndex, NodeId};
use crate::onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    ValueInfoProto,
};

/// Key prefix of the records in `ModelProto.metadata_props`.
pub const RECORD_PREFIX: &str = "adanorm.original:";

pub struct Replacement {
    pub remove: Vec<NodeId>,
    pub insert: Vec<NodeProto>,
    /// The values whose producers the new nodes replace (the match's outputs): the new nodes go
    /// where the last of them was produced.
    pub outputs: Vec<String>,
    /// Record the removed subgraph under this key (the new node's name).
    pub record_key: Option<String>,
    /// Names of every inserted node, so `revert` removes them all.
    pub inserted_names: Vec<String>,
    /// Initializers the replacement moves out of the model (dropped weights, kept in a
    /// safetensors file instead of the record). One that something else still reads stays.
    pub drop_initializers: Vec<String>,
    /// `value_info` for the new node's outputs (ONNX Runtime cannot infer every custom-op
    /// output, e.g. version 2's `Sum`), added where the graph declares none; the record lists
    /// those added, so `revert` takes them out again.
    pub value_info: Vec<ValueInfoProto>,
}

#[derive(Default)]
pub struct Patch {
    pub replacements: Vec<Replacement>,
    pub add_initializers: Vec<TensorProto>,
    /// (node, input slot, new value name): repointed inputs of nodes that stay.
    pub repoint: Vec<(NodeId, usize, String)>,
    /// Initializers that go if nothing reads them any more (weights replaced by folded copies).
    pub maybe_unused: Vec<String>,
    /// Metadata entries to add (key, value).
    pub metadata: Vec<(String, String)>,
    /// `value_info` entries to take out (those a rewrite added, on `revert`).
    pub drop_value_info: Vec<String>,
    /// Graph input listings to put back at their places (`revert`, IR < 4).
    pub restore_inputs: Vec<(usize, ValueInfoProto)>,
}

pub fn apply(g: &GraphIndex<'_>, patch: Patch) -> ModelProto {
    let mut model = g.model.proto.clone();
    apply_to(&mut model, g, patch);
    model
}

/// Applies `patch` to the graph `g` indexes, inside `model` (a copy of `g`'s model that may
/// already carry patches of other graphs): subgraphs are patched before the graphs holding
/// them, which keeps every node at its index until its own graph's turn.
pub fn apply_to(model: &mut ModelProto, g: &GraphIndex<'_>, patch: Patch) {
    let root = model.graph.as_mut().expect("checked at load");
    let graph = g
        .scope
        .graph_mut(root)
        .expect("the scope's graph exists until its own patch");
    // Nodes as they are now (a subgraph inside one may have been patched already).
    let current = std::mem::take(&mut graph.node);

    let mut removed: HashSet<NodeId> = HashSet::new();
    let mut place: HashMap<NodeId, usize> = HashMap::new();
    for (i, r) in patch.replacements.iter().enumerate() {
        removed.extend(r.remove.iter().copied());
        let at = r
            .outputs
            .iter()
            .filter_map(|o| g.producer(o).map(|(id, _)| id))
            .chain(r.remove.iter().copied())
            .max()
            .expect("a replacement removes something");
        place.insert(at, i);
    }
    let repoint: HashMap<(NodeId, usize), &str> = patch
        .repoint
        .iter()
        .map(|(n, s, v)| ((*n, *s), v.as_str()))
        .collect();

    let mut nodes = Vec::with_capacity(current.len());
    for (id, node) in current.into_iter().enumerate() {
        if !removed.contains(&id) {
            let mut n = node;
            for (slot, input) in n.input.iter_mut().enumerate() {
                if let Some(v) = repoint.get(&(id, slot)) {
                    *input = v.to_string();
                }
            }
            nodes.push(n);
        }
        if let Some(&i) = place.get(&id) {
            nodes.extend(patch.replacements[i].insert.iter().cloned());
        }
    }
    graph.node = nodes;

    // Initializers go when nothing reads them any more (at any depth, graph outputs included)
    // and the patch is why: removed nodes read them, or they were moved out or replaced. A
    // tensor anything else reads is never removed, whatever the patch asked.
    let referenced = referenced_names(graph);
    let dropped: HashSet<&str> = patch
        .replacements
        .iter()
        .flat_map(|r| r.drop_initializers.iter().map(String::as_str))
        .collect();
    let mut removed_inits: HashMap<String, TensorProto> = HashMap::new();
    let was_read_by_removed: HashSet<&str> = removed
        .iter()
        .flat_map(|&id| g.node(id).input.iter().map(String::as_str))
        .collect();
    // A graph input that only lists an initializer this tool added (IR < 4) is no feed.
    let ours_listed: HashSet<String> = graph
        .input
        .iter()
        .filter(|v| v.doc_string() == LISTED_INITIALIZER)
        .map(|v| v.name().to_string())
        .collect();
    graph.initializer.retain(|t| {
        let name = t.name();
        // (Below IR 4 every initializer is listed as an input: there the listing is no feed.)
        let unread =
            !referenced.contains(name) && (!g.is_overridable(name) || ours_listed.contains(name));
        let goes = unread
            && (dropped.contains(name)
                || was_read_by_removed.contains(name)
                || patch.maybe_unused.iter().any(|m| m == name));
        if goes {
            removed_inits.insert(name.to_string(), t.clone());
        }
        !goes
    });
    // The input listing of a removed initializer (IR < 4) goes with it; its place is recorded.
    let mut removed_listings: HashMap<String, (usize, ValueInfoProto)> = HashMap::new();
    let mut at = 0;
    graph.input.retain(|v| {
        let goes = removed_inits.contains_key(v.name());
        if goes {
            removed_listings.insert(v.name().to_string(), (at, v.clone()));
        }
        at += 1;
        !goes
    });
    graph.initializer.extend(patch.add_initializers);
    // Listings `revert` gives back, each at its recorded place (ascending, so that the places
    // of the earlier ones hold).
    let mut restored = patch.restore_inputs;
    restored.sort_by_key(|(i, _)| *i);
    for (i, v) in restored {
        if !graph.input.iter().any(|w| w.name() == v.name()) {
            let i = i.min(graph.input.len());
            graph.input.insert(i, v);
        }
    }

    // value_info of values nothing produces any more.
    let produced: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let mut removed_infos = HashMap::new();
    graph.value_info.retain(|v| {
        let keep = produced.contains(v.name()) || g.producer(v.name()).is_none();
        if !keep {
            removed_infos.insert(v.name().to_string(), v.clone());
        }
        keep && !patch.drop_value_info.iter().any(|d| d == v.name())
    });
    // Declarations for the new nodes' outputs, where the graph has none.
    let mut declared: HashSet<String> = graph
        .value_info
        .iter()
        .chain(&graph.input)
        .chain(&graph.output)
        .map(|v| v.name().to_string())
        .collect();
    let mut added_infos: Vec<Vec<ValueInfoProto>> = Vec::new();
    for r in &patch.replacements {
        let mut added = Vec::new();
        for v in &r.value_info {
            if declared.insert(v.name().to_string()) {
                graph.value_info.push(v.clone());
                added.push(v.clone());
            }
        }
        added_infos.push(added);
    }

    // Records for revert.
    for (r, added) in patch.replacements.iter().zip(&added_infos) {
        let Some(key) = &r.record_key else { continue };
        let mut ids = r.remove.clone();
        ids.sort_unstable();
        let nodes: Vec<NodeProto> = ids.iter().map(|&id| g.node(id).clone()).collect();
        let reads: HashSet<&str> = nodes
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .collect();
        let outs: HashSet<&str> = nodes
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .collect();
        // Input listings of the initializers it removed (IR < 4), with their places.
        let mut listings: Vec<&(usize, ValueInfoProto)> = removed_listings
            .iter()
            .filter(|(name, _)| reads.contains(name.as_str()))
            .map(|(_, l)| l)
            .collect();
        listings.sort_by_key(|(i, _)| *i);
        let record = GraphProto {
            input: listings.iter().map(|(_, v)| v.clone()).collect(),
            metadata_props: if listings.is_empty() {
                vec![]
            } else {
                let places: Vec<usize> = listings.iter().map(|(i, _)| *i).collect();
                vec![StringStringEntryProto {
                    key: Some(INPUT_PLACES.into()),
                    value: Some(serde_json::to_string(&places).expect("numbers")),
                }]
            },
            node: nodes.clone(),
            initializer: removed_inits
                .iter()
                .filter(|(name, _)| {
                    reads.contains(name.as_str()) && !dropped.contains(name.as_str())
                })
                .map(|(_, t)| t.clone())
                .collect(),
            value_info: removed_infos
                .iter()
                .filter(|(n, _)| outs.contains(n.as_str()))
                .map(|(_, v)| v.clone())
                .collect(),
            // Not the subgraph's outputs: the value_info this rewrite added (revert drops them).
            output: added.clone(),
            doc_string: Some(serde_json::to_string(&r.inserted_names).expect("names")),
            ..Default::default()
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(record.encode_to_vec());
        set_metadata(model, &format!("{RECORD_PREFIX}{key}"), encoded);
    }
    for (k, v) in patch.metadata {
        set_metadata(model, &k, v);
    }
    if g.scope.is_main() && model.ir_version.unwrap_or(0) < 4 {
        if let Some(graph) = model.graph.as_mut() {
            list_initializers_as_inputs(graph);
        }
    }
}

/// The record's `metadata_props` key of the places its `input` listings had among the graph
/// inputs (a JSON list, in the same order).
pub const INPUT_PLACES: &str = "adanorm-onnx: input places";

/// Marks the graph inputs [`list_initializers_as_inputs`] adds, so that the one it added for
/// a tensor a later patch (`revert`) removes goes with it.
const LISTED_INITIALIZER: &str = "adanorm-onnx: lists an initializer (IR version < 4)";

/// Below IR version 4 every initializer must also be a graph input: lists the new ones, and
/// drops the listings this tool added whose initializer is gone.
fn list_initializers_as_inputs(graph: &mut GraphProto) {
    use crate::onnx::proto::{
        tensor_shape_proto, type_proto, TensorShapeProto, TypeProto, ValueInfoProto,
    };
    let inits: HashSet<String> = graph
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    graph
        .input
        .retain(|v| v.doc_string() != LISTED_INITIALIZER || inits.contains(v.name()));
    let listed: HashSet<String> = graph.input.iter().map(|v| v.name().to_string()).collect();
    let new: Vec<ValueInfoProto> = graph
        .initializer
        .iter()
        .filter(|t| !listed.contains(t.name()))
        .map(|t| ValueInfoProto {
            name: t.name.clone(),
            doc_string: Some(LISTED_INITIALIZER.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: t.data_type,
                    shape: Some(TensorShapeProto {
                        dim: t
                            .dims
                            .iter()
                            .map(|&d| tensor_shape_proto::Dimension {
                                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    graph.input.extend(new);
}

/// Adds `names` to the nodes `revert` removes with node `node`'s record: nodes a later pass put
/// in front of it (`--portable` writes a version-2 node's slots as `Add`s). A node without a
/// record, or a record that does not decode, is left alone (revert then reports it).
pub fn extend_record_inserted(model: &mut ModelProto, node: &str, names: &[String]) {
    let key = format!("{RECORD_PREFIX}{node}");
    let Some(entry) = model.metadata_props.iter_mut().find(|e| e.key() == key) else {
        return;
    };
    let engine = &base64::engine::general_purpose::STANDARD;
    let Ok(bytes) = engine.decode(entry.value()) else {
        return;
    };
    let Ok(mut record) = GraphProto::decode(bytes.as_slice()) else {
        return;
    };
    let mut inserted: Vec<String> = serde_json::from_str(record.doc_string()).unwrap_or_default();
    inserted.extend(names.iter().cloned());
    record.doc_string = Some(serde_json::to_string(&inserted).expect("names"));
    entry.value = Some(engine.encode(record.encode_to_vec()));
}

pub fn set_metadata(model: &mut ModelProto, key: &str, value: String) {
    model.metadata_props.retain(|e| e.key() != key);
    model.metadata_props.push(StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value),
    });
}

/// Declares `ai.adanorm` when the graph uses it, and drops the import when nothing does. The
/// version is the oldest that has every slot the nodes use: 1 (which every release of the
/// runtimes reads) unless a node uses version 2's `Skip`, `Bias` or `Sum`.
pub fn sync_adanorm_opset(model: &mut ModelProto) {
    use adanorm_kernels::params::{FIRST_OPSET_VERSION, RESIDUAL_OPSET_VERSION};
    /// Per node of ours: whether it is one, and whether it uses a version-2 slot.
    fn ours(n: &NodeProto) -> Option<bool> {
        (n.domain() == super::node::DOMAIN).then(|| uses_residual_slots(n))
    }
    fn walk(nodes: &[NodeProto], found: &mut Option<bool>) {
        for n in nodes {
            if let Some(v2) = ours(n) {
                *found = Some(found.unwrap_or(false) || v2);
            }
            for a in &n.attribute {
                for g in a.g.iter().chain(a.graphs.iter()) {
                    walk(&g.node, found);
                }
            }
        }
    }
    let mut found = None;
    if let Some(g) = &model.graph {
        walk(&g.node, &mut found);
    }
    for f in &model.functions {
        walk(&f.node, &mut found);
    }
    model
        .opset_import
        .retain(|o| o.domain() != super::node::DOMAIN);
    if let Some(v2) = found {
        model.opset_import.push(OperatorSetIdProto {
            domain: Some(super::node::DOMAIN.into()),
            version: Some(if v2 {
                RESIDUAL_OPSET_VERSION
            } else {
                FIRST_OPSET_VERSION
            }),
        });
    }
}

/// Whether an `ai.adanorm` node names one of version 2's slots (`Skip`, `Bias`, `Sum`).
pub fn uses_residual_slots(n: &NodeProto) -> bool {
    use adanorm_kernels::params::slot;
    let named = |names: &[String], from: usize| names.iter().skip(from).any(|s| !s.is_empty());
    named(&n.input, slot::SKIP) || named(&n.output, slot::SUM)
}

/// Every value name read anywhere (nodes of the graph and of its subgraphs) or output.
pub fn referenced_names(g: &GraphProto) -> HashSet<String> {
    let mut out = HashSet::new();
    fn walk(g: &GraphProto, out: &mut HashSet<String>) {
        for n in &g.node {
            out.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
            for a in &n.attribute {
                for sub in a.g.iter().chain(a.graphs.iter()) {
                    walk(sub, out);
                }
            }
        }
        out.extend(g.output.iter().map(|o| o.name().to_string()));
    }
    walk(g, &mut out);
    out
}
