//! The affine tail `y * scale + bias` after a normalisation, and the rule that a parameter
//! belongs to the normalisation only when it is constant and its shape is per-row: it must
//! broadcast onto the normalised dimensions alone (size 1 on every other axis), without
//! expanding the output.

use super::canon::{Axes, Canon};
use crate::graph::{shape_tensors, Dim, NodeId};
use crate::onnx::attr;

/// Whether `param`'s shape is a valid Scale/B for a normalisation of `x` over `axes`. It need not
/// be constant (fused LayerNormalization takes computed parameters too); folding and dropping
/// check constness themselves.
pub fn is_row_parameter(c: &Canon<'_, '_>, param: &str, x: &str, axes: &Axes) -> bool {
    let Some(pshape) = c.g.shape(param) else {
        return false;
    };
    let x_shape = c.g.shape(x);
    let rank = axes.rank.or(x_shape.map(<[Dim]>::len));
    match rank {
        Some(r) => {
            if pshape.len() > r {
                return false; // would expand the output
            }
            let off = r - pshape.len();
            pshape.iter().enumerate().all(|(i, d)| {
                let axis = (off + i) as i64;
                let normalised =
                    axes.axes.contains(&axis) || axes.axes.contains(&(axis - r as i64));
                match d {
                    Dim::Known(1) => true,
                    // A computed parameter must have a known size on the normalised axes.
                    Dim::Known(n) if normalised => {
                        match x_shape.and_then(|s| s.get(off + i)).and_then(Dim::known) {
                            Some(xn) => xn == *n,
                            None => true, // the runtime would reject a mismatch; nothing else fits
                        }
                    }
                    _ => false,
                }
            })
        }
        // Rank unknown (negative trailing axes): the parameter must fit in the trailing axes. A
        // leading 1 is refused too: it could be one axis more than X has ([1, 1, 1, H] on a
        // rank-3 X broadcasts the output to rank 4).
        None => pshape.len() <= axes.axes.len(),
    }
}

/// What the tail absorbed.
#[derive(Debug, Default)]
pub struct Tail {
    pub output: String,
    pub scale: Option<String>,
    pub bias: Option<String>,
    pub nodes: Vec<NodeId>,
}

/// Follows `y` through an optional Cast back to `out_type`, then `Mul(scale)` and `Add(bias)`
/// (either operand order), each only when `y` has that single consumer. Copies between the
/// steps (`Canon::past_copies`: float16 converters put Casts around the ops they keep in
/// float32, QDQ puts a round trip through int8 after each) are crossed where a step follows
/// them; a float island the tail opened is closed by a Cast back to `out_type` after it.
pub fn tail(
    c: &Canon<'_, '_>,
    y: &str,
    x: &str,
    axes: &Axes,
    out_type: Option<i32>,
    want_scale: bool,
) -> Tail {
    let mut t = Tail {
        output: y.to_string(),
        ..Tail::default()
    };
    let single = |v: &str| -> Option<NodeId> {
        match c.g.consumers(v) {
            [only] if !c.g.is_graph_output(v) => Some(*only),
            _ => None,
        }
    };
    // Identity nodes after a step are crossed (paddle2onnx writes one after almost every op).
    let skip_identities = |t: &mut Tail| {
        let (past, identities) = c.past_identities(&t.output);
        t.nodes.extend(identities);
        t.output = past;
    };
    skip_identities(&mut t);
    // A Cast back to the input's type closes a higher-precision island
    if let (Some(id), Some(want)) = (single(&t.output), out_type) {
        let n = c.g.node(id);
        // (or a no-op Cast to the same type, which function bodies write).
        if n.op_type() == "Cast" && attr::int(n, "to") == Some(want as i64) {
            t.nodes.push(id);
            t.output = n.output[0].clone();
        }
    }
    let mut opened_island = false;
    for (op, wanted) in [("Mul", want_scale), ("Add", true)] {
        let (at, copies) = c.past_copies(&t.output);
        let Some(id) = single(&at).filter(|_| wanted) else {
            continue;
        };
        let n = c.g.node(id);
        if n.op_type() != op {
            continue;
        }
        let Some(p) = c.other_operand(n, &at) else {
            continue;
        };
        // A neutral constant (paddle2onnx's scale op with its defaults) is no parameter at all.
        let neutral = if op == "Mul" { 1.0 } else { 0.0 };
        let taken = if c.scalar(p) == Some(neutral)
            && c.g
                .constant(p)
                .is_some_and(|k| k.dims.len() <= axes.axes.len())
        {
            true
        } else {
            let (param, expand) = match unexpanded(c, p, &at) {
                Some((q, e)) => (q, Some(e)),
                None => (p.to_string(), None),
            };
            let fits = is_row_parameter(c, &param, x, axes) && !computed_from(c, &param, x);
            if fits {
                *(if op == "Mul" {
                    &mut t.scale
                } else {
                    &mut t.bias
                }) = Some(param);
                t.nodes.extend(expand);
            }
            fits
        };
        if taken {
            opened_island |= copies.iter().any(|&k| c.g.node(k).op_type() == "Cast");
            t.nodes.extend(copies);
            t.nodes.push(id);
            t.output = n.output[0].clone();
            skip_identities(&mut t);
        }
    }
    // The Cast closing an island the steps crossed into.
    if let (true, Some(id), Some(want)) = (opened_island, single(&t.output), out_type) {
        let n = c.g.node(id);
        let wider = c.g.elem_type(&t.output) != Some(want);
        if wider && n.op_type() == "Cast" && attr::int(n, "to") == Some(want as i64) {
            t.nodes.push(id);
            t.output = n.output[0].clone();
        }
    }
    t
}

/// Whether `value` is computed from `x` (or may be: the search gives up after a few hundred
/// nodes). Such a value is no parameter of the normalisation of `x`: the centred value itself
/// can have a per-row shape (`[1, S, H]` for axes `[-2, -1]`), and taking it as B would make a
/// rewrite read a value it removes.
fn computed_from(c: &Canon<'_, '_>, value: &str, x: &str) -> bool {
    let mut stack = vec![value.to_string()];
    let mut seen = std::collections::HashSet::new();
    while let Some(v) = stack.pop() {
        if v == x {
            return true;
        }
        if !seen.insert(v.clone()) {
            continue;
        }
        if seen.len() > 256 {
            return true;
        }
        if let Some((_, n)) = c.g.producer_node(&v) {
            stack.extend(n.input.iter().filter(|i| !i.is_empty()).cloned());
        }
    }
    false
}

/// A parameter spelled out to the full shape, `Expand(q, s)` read by nothing else, where `s`
/// only repeats dimensions `y` already has (jax2onnx writes the bias so): `q` and the Expand.
/// Adding or multiplying by `q` broadcasts to the same values.
fn unexpanded(c: &Canon<'_, '_>, p: &str, y: &str) -> Option<(String, NodeId)> {
    let (id, n) = c.op(p, "Expand")?;
    if c.g.consumers(p).len() != 1 || c.g.is_graph_output(p) {
        return None;
    }
    let target = shape_tensors::contents(c.g, n.input.get(1)?)?;
    let y_shape = c.g.shape(y)?;
    let off = y_shape.len().checked_sub(target.dims.len())?;
    let fits = target
        .dims
        .iter()
        .enumerate()
        .all(|(i, d)| d.is(c.g, &y_shape[off + i]) || d.is(c.g, &Dim::Known(1)));
    let q = n.input.first().filter(|q| !q.is_empty())?;
    fits.then(|| (q.clone(), id))
}
