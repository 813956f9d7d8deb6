//! Keras' fused LayerNormalization as tf2onnx converts it (tf_keras / Keras 2, the default path
//! whenever epsilon >= 1.001e-5): the rows are reshaped into the channels of a 4-D view,
//! normalised by a `BatchNormalization` with unit scale, zero bias and batch statistics computed
//! in the graph, reshaped back, then scaled and shifted:
//!
//! ```text
//! v    = Reshape(x, [1, -1, H, 1])                      rows -> axis 1, a row's H values -> 2..
//! m    = ReduceMean(v, axes=[0,2,3], keepdims=1)
//! var  = ReduceSumSquare(v - m, axes=[0,2,3], keepdims=0) / count
//! n    = BatchNormalization(v, 1, 0, Squeeze(m), var, epsilon)
//! y    = Reshape(n, Shape(x)) * gamma + beta
//! ```
//!
//! which is a LayerNorm of `x` over its trailing axes holding those H values (biased variance,
//! epsilon inside the root). Every piece is checked: the view puts whole rows on axis 1, both
//! statistics reduce every other axis of that view, the count is the row length, the scale and
//! bias are exactly 1 and 0, and the result is reshaped back to `x`'s own shape.

use crate::graph::shapes::checked_product;

use super::affine::tail;
use super::candidate::{Candidate, Form, Statistics};
use super::canon::{filled_with, Axes, Canon};
use super::Family;
use crate::graph::NodeId;
use crate::onnx::attr;

/// The recogniser, read at the `BatchNormalization` node.
pub fn read(c: &Canon<'_, '_>, bn_id: NodeId) -> Option<Candidate> {
    let g = c.g;
    let bn = g.node(bn_id);
    // Inference form only: one output, no training mode.
    if bn.input.len() != 5
        || bn.output.iter().skip(1).any(|o| !o.is_empty())
        || attr::int(bn, "training_mode").unwrap_or(0) != 0
    {
        return None;
    }
    let epsilon = attr::float(bn, "epsilon").map_or(1e-5, |e| e as f64);
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return None;
    }
    let [view, scale, bias, mean, var] = [0, 1, 2, 3, 4].map(|i| bn.input[i].as_str());
    let mut core = vec![bn_id];
    let mut aux = Vec::new();

    // The view: whole rows of x on axis 1.
    let (view_id, view_node) = c.op(view, "Reshape")?;
    core.push(view_id);
    let x = view_node.input.first()?.clone();
    let target = g.constant(view_node.input.get(1)?)?;
    let target = target.as_ints()?;
    if target.len() < 3 || target[0] != 1 || g.rank(view) != Some(target.len()) {
        return None;
    }
    let row_len = checked_product(target[2..].iter().map(|&d| (d > 0).then_some(d)))?;
    let x_shape = g.shape(&x)?;
    let r = x_shape.len();
    // The fewest trailing axes of x holding exactly the row's values.
    let k = (1..=r)
        .find(|&k| checked_product(x_shape[r - k..].iter().map(|d| d.known())) == Some(row_len))?;
    if target[1] > 0 {
        let rows = checked_product(x_shape[..r - k].iter().map(|d| d.known()));
        if rows != Some(target[1]) {
            return None;
        }
    }
    let others: Vec<i64> = std::iter::once(0).chain(2..target.len() as i64).collect();
    let view_axes = Axes::new(&others, Some(target.len()))?;

    // The mean: ReduceMean over every axis but 1, kept, then squeezed for the op.
    let (sq_id, sq) = c.op(mean, "Squeeze")?;
    let kept_mean = sq.input.first()?.clone();
    let squeezed = c.listed_axes(sq)?;
    if !Axes::new(&squeezed, Some(target.len()))?.same_as(&view_axes) {
        return None;
    }
    let m = c.mean_of(&kept_mean)?;
    if m.input != view || !m.axes.same_as(&view_axes) {
        return None;
    }
    core.extend(m.nodes.iter().copied());
    core.push(sq_id);

    // The variance: ReduceSumSquare(view - mean) / count, over the same axes.
    let (div_id, _, sum_of_squares, count) = c.binary(var, "Div")?;
    let (ss_id, ss) = c.op(sum_of_squares, "ReduceSumSquare")?;
    let ss_axes = c.listed_axes(ss)?;
    if attr::int(ss, "keepdims").unwrap_or(1) != 0
        || !Axes::new(&ss_axes, Some(target.len()))?.same_as(&view_axes)
    {
        return None;
    }
    let (sub_id, _, centred, mean_read) = c.binary(ss.input.first()?, "Sub")?;
    if centred != view || mean_read != kept_mean {
        return None;
    }
    match c.scalar(count) {
        Some(n) if n == row_len as f64 => {}
        Some(_) => return None,
        None => aux.extend(count_of(c, count, view, &view_axes)?),
    }
    core.extend([div_id, ss_id, sub_id]);

    // Unit scale, zero bias.
    aux.extend(filled_with(c, scale, 1.0)?);
    aux.extend(filled_with(c, bias, 0.0)?);

    // Back to x's shape.
    let normalised = bn.output.first()?;
    let [back_id] = g.consumers(normalised) else {
        return None;
    };
    let back = g.node(*back_id);
    if back.op_type() != "Reshape" || back.input.first() != Some(normalised) {
        return None;
    }
    aux.extend(c.shape_of(back.input.get(1)?, &x)?);
    core.push(*back_id);
    let y = back.output.first()?.clone();

    let axes = Axes::new(&((r - k) as i64..r as i64).collect::<Vec<_>>(), Some(r))?;
    let t = tail(c, &y, &x, &axes, g.elem_type(&x), true);
    let stats = Statistics {
        x,
        axes,
        unbiased: false,
        epsilon,
        eps_in_sqrt: true,
        sigma: None,
    };
    Some(Candidate::with_tail(
        Family::LayerNorm,
        Form::KerasBatchNorm,
        stats,
        (core, aux),
        t,
    ))
}

/// `value` is the number of elements of `view` over `axes` (as tf2onnx writes it, see
/// [`Canon::element_count`]). Returns those nodes.
fn count_of(c: &Canon<'_, '_>, value: &str, view: &str, axes: &Axes) -> Option<Vec<NodeId>> {
    let count = c.element_count(value)?;
    let picked = Axes::new(&count.axes, axes.rank)?;
    (count.x == view && picked.same_as(axes)).then_some(count.nodes)
}
