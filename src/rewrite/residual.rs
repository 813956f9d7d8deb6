//! Version 2's residual slots and the `Add`s they stand for, `S = (X + Bias) + Skip` rounded per
//! `Add` (ops-spec.md), both ways:
//! - [`absorb`]: the `Add` feeding a norm (and a bias `Add` in front of it) that a version-2 node
//!   can compute exactly, for `fuse`/`rewrite`;
//! - [`split`]: a version-2 node as those `Add`s and the same node without the slots, for
//!   `revert` and `--portable`.

use std::collections::HashSet;

use adanorm_kernels::params::slot;

use super::names::Names;
use crate::graph::shapes::Dim;
use crate::graph::{GraphIndex, NodeId};
use crate::onnx::proto::NodeProto;
use crate::patterns::Match;

/// Version 2's slots of a node being built: `Skip`, the residual `Bias`, `Sum` (value names).
#[derive(Debug, Clone, Default)]
pub struct Slots {
    pub skip: Option<String>,
    pub bias: Option<String>,
    pub sum: Option<String>,
}

/// ONNX Runtime's `SkipLayerNormalization(input, skip, gamma, beta, bias)` as version-2 slots:
/// it sums `(input + skip) + bias`, so without `bias` the node reads `X = input`, `Skip = skip`;
/// with it, `input + skip` stays an `Add` (pushed to `insert`) and `bias` becomes the residual
/// `Bias` (`S = (X + Bias)` with `X` that sum). Its fourth output, the sum, becomes `Sum`.
/// Returns the node's `X` and its slots.
pub fn from_skip_layer_norm(
    n: &NodeProto,
    name: &str,
    insert: &mut Vec<NodeProto>,
    names: &mut Names,
) -> Result<(String, Slots), String> {
    let (Some(input), Some(skip)) = (present(&n.input, 0), present(&n.input, 1)) else {
        return Err("it lacks its input or its skip input".into());
    };
    let sum = present(&n.output, 3).map(str::to_string);
    match present(&n.input, 4) {
        None => Ok((
            input.to_string(),
            Slots {
                skip: Some(skip.to_string()),
                bias: None,
                sum,
            },
        )),
        Some(bias) => {
            let skip_sum = names.fresh(&format!("{name}/skip_sum"));
            insert.push(NodeProto {
                name: Some(names.fresh(&format!("{name}/SkipAdd"))),
                op_type: Some("Add".into()),
                input: vec![input.to_string(), skip.to_string()],
                output: vec![skip_sum.clone()],
                ..Default::default()
            });
            Ok((
                skip_sum,
                Slots {
                    skip: None,
                    bias: Some(bias.to_string()),
                    sum,
                },
            ))
        }
    }
}

/// What a version-2 node takes over from the graph in front of a norm.
#[derive(Debug, Clone)]
pub struct Absorbed {
    /// The new node's `X`: an operand of the residual `Add` (or of the bias `Add` before it).
    pub x: String,
    pub skip: String,
    /// The residual `Bias` (a per-row value the bias `Add` added to `x`).
    pub bias: Option<String>,
    /// Whether the sum is read outside the norm (pre-LN's residual stream): the node then writes
    /// it as `Sum`, under its name.
    pub sum: bool,
    /// The `Add` nodes it replaces: the residual one, then the bias one.
    pub nodes: Vec<NodeId>,
    /// The `Identity` nodes between them and the norm it removes too (copies only they read).
    pub copies: Vec<NodeId>,
}

impl Absorbed {
    /// The report's words: `residual Add 'a' (Skip), bias Add 'b' (Bias), the sum read on (Sum)`.
    pub fn describe(&self, g: &GraphIndex<'_>) -> String {
        let mut parts = vec![format!("residual Add '{}' (Skip)", g.label(self.nodes[0]))];
        if let Some(&b) = self.nodes.get(1) {
            parts.push(format!("bias Add '{}' (Bias)", g.label(b)));
        }
        if self.sum {
            parts.push("the sum is read on (Sum)".into());
        }
        format!("absorbed the {}", parts.join(", "))
    }
}

fn same_shape(a: &[Dim], b: &[Dim]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(p, q)| p.same(q))
}

/// Whether `small` broadcasts unidirectionally to `big` for sure.
fn broadcasts_to(small: &[Dim], big: &[Dim]) -> bool {
    small.len() <= big.len()
        && small
            .iter()
            .rev()
            .zip(big.iter().rev())
            .all(|(s, b)| s.broadcasts_to(b))
}

/// A default-domain `Add` of two named inputs with one output.
fn is_plain_add(n: &NodeProto) -> bool {
    matches!(n.domain(), "" | "ai.onnx")
        && n.op_type() == "Add"
        && n.input.len() == 2
        && n.input.iter().all(|i| !i.is_empty())
        && n.output.len() == 1
}

/// The residual `Add` in front of match `m` that a version-2 node over the last `-axis` axes
/// computes exactly, if there is one: it makes the match's input, its operands have that
/// input's type, one has its full shape (`X`) and the other broadcasts to it (`Skip`). Where
/// `X` is itself `Add(t, b)` of a full-shape `t` and a `b` that broadcasts to the normalised
/// axes, read by nothing else, that `Add` is absorbed too (`X = t`, `Bias = b`): the node then
/// computes `(t + b) + skip`, rounded per `Add`, as the graph did (`Add` is commutative, so the
/// operand order does not matter). Neither `Add` may belong to a match (`claimed`). When
/// something outside the match reads the sum, the node writes it as `Sum`; every such reader
/// must come after `insert_at`, where the node goes, so the graph stays in topological order.
pub fn absorb(
    g: &GraphIndex<'_>,
    m: &Match,
    axis: i64,
    claimed: &HashSet<NodeId>,
    insert_at: NodeId,
) -> Option<Absorbed> {
    let (mut copies, sum_value) = behind_identities(g, &m.input, claimed);
    let (add_id, add) = g.producer_node(sum_value)?;
    if !is_plain_add(add) || claimed.contains(&add_id) || g.is_outer_value(&m.input) {
        return None;
    }
    let ty = g.elem_type(&m.input)?;
    let out = g.shape(&m.input)?;
    let rows = usize::try_from(-axis)
        .ok()
        .filter(|&r| r >= 1 && r <= out.len())?;
    let normalized = &out[out.len() - rows..];
    let typed = |v: &str| g.elem_type(v) == Some(ty);
    let full = |v: &str| typed(v) && g.shape(v).is_some_and(|s| same_shape(s, out));
    let (a, b) = (add.input[0].as_str(), add.input[1].as_str());
    // X: a full-shape operand whose Skip broadcasts to it; one that is a bias Add's output first.
    let per_row = |v: &str| typed(v) && g.shape(v).is_some_and(|s| broadcasts_to(s, normalized));
    let candidates: Vec<_> = [(a, b), (b, a)]
        .into_iter()
        .filter(|&(x, skip)| {
            full(x) && typed(skip) && g.shape(skip).is_some_and(|s| broadcasts_to(s, out))
        })
        .map(|(x, skip)| {
            // Add(v, v): the bias Add's output is also Skip, so it must stay.
            let bias = (x != skip)
                .then(|| bias_add(g, x, add_id, claimed, &full, &per_row))
                .flatten();
            (x, skip, bias)
        })
        .collect();
    let (x, skip, bias) = candidates
        .iter()
        .find(|c| c.2.is_some())
        .or(candidates.first())
        .cloned()?;
    let match_nodes: HashSet<NodeId> = m.nodes.iter().copied().collect();
    let outside: Vec<NodeId> = g
        .consumers(&m.input)
        .iter()
        .copied()
        .filter(|id| !match_nodes.contains(id))
        .collect();
    if outside.iter().any(|&id| id <= insert_at) {
        return None;
    }
    let sum = !outside.is_empty() || g.is_graph_output(&m.input);
    let mut nodes = vec![add_id];
    let (x, bias) = match bias {
        Some((bias_id, bias_copies, t, b)) => {
            nodes.push(bias_id);
            copies.extend(bias_copies);
            (t, Some(b))
        }
        None => (x.to_string(), None),
    };
    Some(Absorbed {
        x,
        skip: skip.to_string(),
        bias,
        sum,
        nodes,
        copies,
    })
}

/// `x = Add(t, b)` (through copies only the chain reads) with `t` of the full shape and `b` per
/// row, read only by `residual`: `(its id, the copies, t, b)`.
fn bias_add(
    g: &GraphIndex<'_>,
    x: &str,
    residual: NodeId,
    claimed: &HashSet<NodeId>,
    full: &dyn Fn(&str) -> bool,
    per_row: &dyn Fn(&str) -> bool,
) -> Option<(NodeId, Vec<NodeId>, String, String)> {
    if g.consumers(x) != [residual] || g.is_graph_output(x) {
        return None;
    }
    let (copies, v) = behind_identities(g, x, claimed);
    let (id, n) = g.producer_node(v)?;
    if !is_plain_add(n) || claimed.contains(&id) {
        return None;
    }
    let (p, q) = (n.input[0].as_str(), n.input[1].as_str());
    [(p, q), (q, p)]
        .into_iter()
        .find(|&(t, b)| full(t) && per_row(b))
        .map(|(t, b)| (id, copies, t.to_string(), b.to_string()))
}

/// `v` followed back through the `Identity` nodes that copy it (paddle2onnx writes one after
/// almost every op) as long as nothing else reads what they copy: `(those Identities, the value
/// they copy)`. `v` itself may have other readers; the copied values are gone once absorbed.
fn behind_identities<'a>(
    g: &'a GraphIndex<'_>,
    v: &'a str,
    claimed: &HashSet<NodeId>,
) -> (Vec<NodeId>, &'a str) {
    let mut copies = Vec::new();
    let mut v = v;
    while let Some((id, n)) = g.producer_node(v) {
        let copied = match n.input.first() {
            Some(w) if is_identity(n) && !claimed.contains(&id) => w.as_str(),
            _ => break,
        };
        if g.consumers(copied) != [id] || g.is_graph_output(copied) || g.is_outer_value(copied) {
            break;
        }
        copies.push(id);
        v = copied;
    }
    (copies, v)
}

/// A default-domain `Identity` of one named input.
fn is_identity(n: &NodeProto) -> bool {
    matches!(n.domain(), "" | "ai.onnx")
        && n.op_type() == "Identity"
        && n.input.len() == 1
        && !n.input[0].is_empty()
        && n.output.len() == 1
}

/// The name of input or output `index` of `names`, if present (named, not empty).
fn present(names: &[String], index: usize) -> Option<&str> {
    names
        .get(index)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// The standard ops `slots` stand for over `x`: `Add(x, Bias)`, then `Add(., Skip)`, each
/// present term only, the last writing `Sum`'s name when there is one (an `Identity` for a
/// `Sum` alone, which leaves `x` the value to read). Returns the nodes and the value holding
/// `S`; names are fresh under `label`.
pub fn as_adds(x: &str, slots: &Slots, label: &str, names: &mut Names) -> (Vec<NodeProto>, String) {
    let mut adds = Vec::new();
    let mut s = x.to_string();
    let terms: Vec<(&str, &str)> = [("bias", &slots.bias), ("skip", &slots.skip)]
        .into_iter()
        .filter_map(|(what, t)| Some((what, t.as_deref()?)))
        .collect();
    for (i, (what, term)) in terms.iter().enumerate() {
        let out = match (i + 1 == terms.len(), &slots.sum) {
            (true, Some(sum)) => sum.clone(),
            _ => names.fresh(&format!("{label}/residual_{what}")),
        };
        adds.push(NodeProto {
            name: Some(names.fresh(&format!("{label}/add_{what}"))),
            op_type: Some("Add".into()),
            input: vec![s, term.to_string()],
            output: vec![out.clone()],
            ..Default::default()
        });
        s = out;
    }
    if let (true, Some(sum)) = (terms.is_empty(), &slots.sum) {
        // Sum alone is X itself.
        adds.push(NodeProto {
            name: Some(names.fresh(&format!("{label}/sum"))),
            op_type: Some("Identity".into()),
            input: vec![s.clone()],
            output: vec![sum.clone()],
            ..Default::default()
        });
    }
    (adds, s)
}

/// Splits a version-2 node into the `Add`s of its residual and a version-1 node reading their
/// sum: `Add(X, Bias)`, then `Add(., Skip)`, each present term only, the last writing `Sum`'s
/// name when the node has one. `None` for a node without residual slots.
pub fn split(n: &NodeProto, names: &mut Names) -> Option<(Vec<NodeProto>, NodeProto)> {
    let slots = Slots {
        skip: present(&n.input, slot::SKIP).map(str::to_string),
        bias: present(&n.input, slot::BIAS).map(str::to_string),
        sum: present(&n.output, slot::SUM).map(str::to_string),
    };
    if slots.skip.is_none() && slots.bias.is_none() && slots.sum.is_none() {
        return None;
    }
    let label = n
        .name
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| n.output.first().cloned())
        .unwrap_or_else(|| "adanorm".into());
    let (adds, s) = as_adds(&n.input[slot::X], &slots, &label, names);
    let mut v1 = n.clone();
    v1.input.truncate(slot::SKIP);
    v1.input[slot::X] = s;
    v1.output.truncate(slot::SUM);
    Some((adds, v1))
}
