//! AdaNorm as the paper writes it: a LayerNorm without affine (any recogniser's form: decomposed,
//! fused `LayerNormalization`, the ONNX function body), then `z = C · (1 − k·y) · y`.
//!
//! The reference code's AdaNorm is read by the decomposed recogniser (its factor is computed from
//! the centred input, inside the statistics); this form multiplies the finished `y`, so it is read
//! here, after a recogniser has found the inner norm, and the match is extended by it:
//! `k·y` as `Mul(k, y)` or `Div(y, 1/k)`, `1 − k·y` (or `1 + k·y`, which is AdaNorm with `−k`),
//! `Identity` nodes for `.detach()` anywhere, the product with `y` and constant factors `C` in
//! any association (`C·(1 − k·y)·y`, `y·(1 − k·y)·C`, `(C·y)·(1 − k·y)`; no `Mul` when C = 1),
//! then the affine tail. Every value inside must be read only inside, or nothing is extended.

use std::collections::HashSet;

use super::affine::tail;
use super::canon::{filled_with, Axes, Canon};
use super::{Family, Match};
use crate::graph::NodeId;

/// What the factor read after `y`: the nodes, the final value, `C` and `k`.
struct Factor {
    nodes: Vec<NodeId>,
    output: String,
    c: f64,
    k: f64,
}

/// `m` extended by the AdaNorm factor after its output, when it has one that is exactly the
/// paper's; `None` leaves `m` as it is. No node of `taken` (other matches') joins.
pub fn extend(c: &Canon<'_, '_>, taken: &HashSet<NodeId>, m: &Match) -> Option<Match> {
    let plain_norm = matches!(m.family, Family::LayerNorm | Family::LnSimple)
        && m.c == 1.0
        && m.k == 0.0
        && !m.channels_first
        && m.scale
            .as_deref()
            .is_none_or(|s| filled_with(c, s, 1.0).is_some_and(|n| n.is_empty()))
        && m.bias
            .as_deref()
            .is_none_or(|b| filled_with(c, b, 0.0).is_some_and(|n| n.is_empty()));
    if !plain_norm || c.g.is_graph_output(&m.output) {
        return None;
    }
    let f = factor(c, &m.output)?;
    let axes = Axes::new(&m.axes, c.g.rank(&m.input))?;
    let t = tail(c, &f.output, &m.input, &axes, c.g.elem_type(&m.input), true);
    let mut added: Vec<NodeId> = f.nodes;
    added.extend(t.nodes);
    added.extend(constant_helpers(c, &added));
    let mut nodes: Vec<NodeId> = m
        .nodes
        .iter()
        .copied()
        .chain(added.iter().copied())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    if added
        .iter()
        .any(|id| taken.contains(id) || m.nodes.contains(id))
    {
        return None;
    }
    // Nothing computed inside may be read outside: y itself, k·y, the factor, the partial
    // products.
    let inside: HashSet<NodeId> = nodes.iter().copied().collect();
    let escapes = std::iter::once(&m.output)
        .chain(added.iter().flat_map(|&id| c.g.node(id).output.iter()))
        .filter(|v| **v != t.output && !v.is_empty())
        .any(|v| c.g.is_graph_output(v) || c.g.consumers(v).iter().any(|r| !inside.contains(r)));
    if escapes {
        return None;
    }
    let mut out = m.clone();
    out.family = Family::AdaNorm;
    out.adanorm_factor = true;
    out.nodes = nodes;
    out.output = t.output;
    out.c = f.c;
    out.k = f.k;
    out.scale = t.scale;
    out.bias = t.bias;
    Some(out)
}

/// Whether `v` is `y` itself or an `Identity` copy of it (`.detach()`).
fn is_y(c: &Canon<'_, '_>, v: &str, y: &str) -> Option<Vec<NodeId>> {
    let mut crossed = Vec::new();
    let mut w = v.to_string();
    loop {
        if w == y {
            return Some(crossed);
        }
        let (id, n) = c.g.producer_node(&w)?;
        if n.op_type() != "Identity" || !crate::onnx::is_standard(n) {
            return None;
        }
        crossed.push(id);
        w = n.input.first()?.clone();
    }
}

/// The only reader of `v` when `v` is no graph output, past `Identity` copies: the value and
/// the reader, with the Identities crossed.
fn only_reader(c: &Canon<'_, '_>, v: &str) -> Option<(NodeId, Vec<NodeId>)> {
    let (v, mut crossed) = c.past_identities(v);
    match c.g.consumers(&v) {
        [only] if !c.g.is_graph_output(&v) => {
            crossed.push(*only);
            Some((*only, crossed))
        }
        _ => None,
    }
}

/// A standard two-input node of this op type.
fn is_op(c: &Canon<'_, '_>, id: NodeId, op: &str) -> bool {
    let n = c.g.node(id);
    crate::onnx::is_standard(n) && n.op_type() == op && n.input.len() == 2
}

/// The factor `(1 − k·y)` among `y`'s readers, then the product with `y` and constants.
fn factor(c: &Canon<'_, '_>, y: &str) -> Option<Factor> {
    // `y` and its Identity copies (detach) are read by k·y.
    let mut views = vec![(y.to_string(), Vec::new())];
    let mut i = 0;
    while i < views.len() {
        let (v, path) = views[i].clone();
        for &r in c.g.consumers(&v) {
            let n = c.g.node(r);
            if n.op_type() == "Identity" && crate::onnx::is_standard(n) {
                let mut p = path.clone();
                p.push(r);
                views.push((n.output.first()?.clone(), p));
            }
        }
        i += 1;
    }
    for (v, path) in &views {
        for &r in c.g.consumers(v) {
            let n = c.g.node(r);
            let k = if is_op(c, r, "Mul") {
                c.other_operand(n, v).and_then(|o| c.scalar(o))
            } else if is_op(c, r, "Div") && n.input[0] == *v {
                c.scalar(&n.input[1]).map(|d| 1.0 / d)
            } else {
                None
            };
            let Some(k) = k.filter(|k| k.is_finite()) else {
                continue;
            };
            let mut nodes = path.clone();
            nodes.push(r);
            if let Some(f) = one_minus(c, y, &n.output[0], k, nodes) {
                return Some(f);
            }
        }
    }
    None
}

/// `1 − t` or `1 + t` for `t = k·y`, then the product.
fn one_minus(
    c: &Canon<'_, '_>,
    y: &str,
    t: &str,
    k: f64,
    mut nodes: Vec<NodeId>,
) -> Option<Factor> {
    let (r, crossed) = only_reader(c, t)?;
    let (t, _) = c.past_identities(t);
    let n = c.g.node(r);
    let k = if is_op(c, r, "Sub") && n.input[1] == t && c.scalar(&n.input[0]) == Some(1.0) {
        k
    } else if is_op(c, r, "Add") && c.other_operand(n, &t).and_then(|o| c.scalar(o)) == Some(1.0) {
        -k
    } else {
        return None;
    };
    nodes.extend(crossed);
    product(c, y, &n.output[0], k, nodes)
}

/// From the factor `s`, the chain of `Mul`s that multiplies it by `y` once and by constants
/// (`C`) any number of times, in any association.
fn product(c: &Canon<'_, '_>, y: &str, s: &str, k: f64, mut nodes: Vec<NodeId>) -> Option<Factor> {
    let mut cur = s.to_string();
    let mut big_c = 1.0;
    let mut have_y = false;
    while let Some((r, crossed)) = only_reader(c, &cur) {
        if !is_op(c, r, "Mul") {
            break;
        }
        let (past, _) = c.past_identities(&cur);
        let n = c.g.node(r);
        let Some(o) = c.other_operand(n, &past) else {
            break;
        };
        let mut step = crossed;
        if let (false, Some(ids)) = (have_y, is_y(c, o, y)) {
            have_y = true;
            step.extend(ids);
        } else if let Some(v) = c.scalar(o) {
            big_c *= v;
        } else if let (false, Some((cy, ids))) = (have_y, scaled_y(c, o, y)) {
            have_y = true;
            big_c *= cy;
            step.extend(ids);
        } else {
            break;
        }
        nodes.extend(step);
        cur = n.output[0].clone();
    }
    let (cur, ids) = c.past_identities(&cur);
    nodes.extend(ids);
    (have_y && big_c.is_finite()).then_some(Factor {
        nodes,
        output: cur,
        c: big_c,
        k,
    })
}

/// `C·y` (either order, a chain of constant factors) read only by the product: the constant
/// and the nodes.
fn scaled_y(c: &Canon<'_, '_>, v: &str, y: &str) -> Option<(f64, Vec<NodeId>)> {
    let (id, n) = c.g.producer_node(v)?;
    if !is_op(c, id, "Mul") || c.g.consumers(v).len() != 1 || c.g.is_graph_output(v) {
        return None;
    }
    let (a, b) = (&n.input[0], &n.input[1]);
    let (k, other) = match (c.scalar(a), c.scalar(b)) {
        (Some(k), None) => (k, b),
        (None, Some(k)) => (k, a),
        _ => return None,
    };
    if let Some(mut ids) = is_y(c, other, y) {
        ids.push(id);
        return Some((k, ids));
    }
    let (inner, mut ids) = scaled_y(c, other, y)?;
    ids.push(id);
    Some((k * inner, ids))
}

/// `Constant` nodes that only the added nodes read (k, 1, C written as nodes).
fn constant_helpers(c: &Canon<'_, '_>, added: &[NodeId]) -> Vec<NodeId> {
    let set: HashSet<NodeId> = added.iter().copied().collect();
    let mut out = Vec::new();
    for &id in added {
        for v in &c.g.node(id).input {
            let Some((p, n)) = c.g.producer_node(v) else {
                continue;
            };
            let only_here =
                !c.g.is_graph_output(v) && c.g.consumers(v).iter().all(|r| set.contains(r));
            if n.op_type() == "Constant" && crate::onnx::is_standard(n) && only_here {
                out.push(p);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}
