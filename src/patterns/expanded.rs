//! The ONNX `LayerNormalization` function body, expanded into a graph (what a tool that inlines
//! the op for a runtime without it produces, and the `*_expanded` conformance models):
//!
//! ```text
//! X2D = Flatten(X, axis=a) -> [Cast] -> statistics over axis 1 of X2D -> Normalized -> [Cast]
//! Y   = Reshape(Normalized * Flatten(Scale, 0) + Flatten(B, 0), Shape(X))
//! Mean      = Reshape(Mean2D, ReducedShape)        ReducedShape = X.shape[:a] + [1] * (r - a)
//! InvStdDev = Reshape(Reciprocal(StdDev), ReducedShape)
//! ```
//!
//! The statistics are matched over the 2-D view like any LayerNorm; this layer lifts the match
//! back to `X`: axis `a`, the un-flattened parameters, and the optional Mean/InvStdDev outputs.

use std::collections::HashSet;

use super::candidate::Statistics;
use super::canon::Canon;
use crate::graph::NodeId;
use crate::onnx::attr;

pub struct Lifted {
    pub input: String,
    pub output: String,
    /// The axis of `X` the flattened rows start at.
    pub axis: i64,
    pub scale: Option<String>,
    pub bias: Option<String>,
    pub mean_output: Option<String>,
    pub inv_std_output: Option<String>,
    pub core: Vec<NodeId>,
    pub aux: Vec<NodeId>,
}

/// Lifts a match over `Flatten(X)` back to `X`, when it is the function-body form.
pub fn lift(
    c: &Canon<'_, '_>,
    s: &Statistics,
    core: &HashSet<NodeId>,
    input: &str,
    output: &str,
    scale: Option<&str>,
    bias: Option<&str>,
) -> Option<Lifted> {
    let g = c.g;
    if s.axes.trailing_axis() != Some(-1) || s.axes.rank != Some(2) {
        return None;
    }
    let (flat_id, flat) = c.op(input, "Flatten")?;
    let x = flat.input.first()?.clone();
    let a = attr::int(flat, "axis").unwrap_or(1);
    let mut lifted_core = vec![flat_id];
    let mut aux = Vec::new();

    // Y = Reshape(out, Shape(X))
    let [reshape_id] = g.consumers(output) else {
        return None;
    };
    let reshape = g.node(*reshape_id);
    if reshape.op_type() != "Reshape" || reshape.input.first().map(String::as_str) != Some(output) {
        return None;
    }
    let shape_nodes = c.shape_of(reshape.input.get(1)?, &x)?;
    lifted_core.push(*reshape_id);
    aux.extend(shape_nodes);

    // Parameters are Flatten(P, axis=0) of the real ones.
    let unflatten = |p: Option<&str>, core: &mut Vec<NodeId>| -> Option<Option<String>> {
        let Some(p) = p else { return Some(None) };
        let (id, n) = c.op(p, "Flatten")?;
        if attr::int(n, "axis") != Some(0) {
            return None;
        }
        core.push(id);
        Some(Some(n.input.first()?.clone()))
    };
    let scale = unflatten(scale, &mut lifted_core)?;
    let bias = unflatten(bias, &mut lifted_core)?;

    // Optional Mean and InvStdDev outputs, reshaped to X.shape[:a] + [1]*(r-a).
    let mut mean_output = None;
    let mut inv_std_output = None;
    let first_moment = core.iter().copied().find(|&id| {
        let n = g.node(id);
        n.op_type() == "ReduceMean" && n.input.first().is_some_and(|i| c.origin(i).0 == s.x)
    });
    let reduced_reshape = |v: &str, aux: &mut Vec<NodeId>| -> Option<(NodeId, String)> {
        let id = *g
            .consumers(v)
            .iter()
            .find(|&&id| !core.contains(&id) && g.node(id).op_type() == "Reshape")?;
        let n = g.node(id);
        reduced_shape(c, n.input.get(1)?, &x, a, aux)?;
        Some((id, n.output[0].clone()))
    };
    if let Some(m) = first_moment {
        if let Some((id, out)) = reduced_reshape(&g.node(m).output[0], &mut aux) {
            lifted_core.push(id);
            mean_output = Some(out);
        }
    }
    let sigma = s.sigma.as_deref().unwrap_or_default();
    for &r in g.consumers(sigma) {
        if c.reciprocal_of(g.node(r)) == Some(sigma) && !core.contains(&r) {
            if let Some((id, out)) = reduced_reshape(&g.node(r).output[0], &mut aux) {
                lifted_core.extend([r, id]);
                inv_std_output = Some(out);
            }
        }
    }
    Some(Lifted {
        input: x,
        output: reshape.output[0].clone(),
        axis: a,
        scale,
        bias,
        mean_output,
        inv_std_output,
        core: lifted_core,
        aux,
    })
}

/// `X.shape[:a] + [1] * (r - a)`, as the function body computes it
/// (`Concat(Slice(Shape(X), [0], [a]), ConstantOfShape(Size(Shape(X)) - [a]))`) or as a constant
/// equal to it for a static shape.
fn reduced_shape(c: &Canon<'_, '_>, v: &str, x: &str, a: i64, aux: &mut Vec<NodeId>) -> Option<()> {
    if let Some(k) = c.g.constant(v) {
        let shape = c.g.shape(x)?;
        let r = shape.len() as i64;
        let a = if a < 0 { a + r } else { a };
        let want: Option<Vec<i64>> = shape
            .iter()
            .enumerate()
            .map(|(i, d)| if (i as i64) < a { d.known() } else { Some(1) })
            .collect();
        return (k.as_ints()? == want?.as_slice()).then_some(());
    }
    let (concat_id, concat) = c.op(v, "Concat")?;
    let [prefix, suffix] = concat.input.as_slice() else {
        return None;
    };
    let (slice_id, slice) = c.op(prefix, "Slice")?;
    let shape_nodes = c.shape_of(slice.input.first()?, x)?;
    let starts = c.g.constant(slice.input.get(1)?)?;
    let ends = c.g.constant(slice.input.get(2)?)?;
    if starts.as_ints()? != [0] || ends.as_ints()? != [a] {
        return None;
    }
    let (cos_id, cos) = c.op(suffix, "ConstantOfShape")?;
    // The fill value defaults to 0.0: it must be an explicit integer 1.
    let fill = crate::onnx::tensor::decode(c.g.model, attr::tensor(cos, "value")?).ok()??;
    if fill.as_ints()? != [1] {
        return None;
    }
    // The number of reduced axes: Size(Shape(X)) - a, or -a for a negative axis.
    let count = cos.input.first()?;
    if let Some((neg_id, neg)) = c.op(count, "Neg") {
        if a >= 0 || c.g.constant(neg.input.first()?)?.as_ints()? != [a] {
            return None;
        }
        aux.push(neg_id);
    } else {
        let (sub_id, sub) = c.op(count, "Sub")?;
        let (size_id, size) = c.op(sub.input.first()?, "Size")?;
        aux.extend(c.shape_of(size.input.first()?, x)?);
        if c.g.constant(sub.input.get(1)?)?.as_ints()? != [a] {
            return None;
        }
        aux.extend([sub_id, size_id]);
    }
    aux.extend([concat_id, slice_id, cos_id]);
    aux.extend(shape_nodes);
    Some(())
}
