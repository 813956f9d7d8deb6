//! Other ONNX normalisation ops that are a LayerNorm for some of their settings:
//!
//! - `InstanceNormalization(x, 1, 0)`: with unit scale and zero bias it normalises each
//!   `x[n, c, ...]` over axes 2.. — a LayerNorm over those axes (biased variance, epsilon inside
//!   the root). tf2onnx's rewriter for TensorFlow's contrib `layer_norm` writes exactly this,
//!   with `ConstantOfShape` ones and zeros sized from `Shape(x)`, followed by the real gain and
//!   bias. Only that form is taken: stored ones and zeros come from instance and group norms.
//! - `MeanVarianceNormalization(x, axes)`: `(x - mean) / (sqrt(E[x²] - mean²) + 1e-9)`, the
//!   ONNX function body: LayerNorm-simple with a biased variance and epsilon 1e-9 after the
//!   root; a LayerNorm wherever its axes are the trailing ones (OpenVINO-style converters write
//!   LayerNorm as MVN, Mul, Add).
//!
//! Both go through the same affine tail and whole-match checks as the decomposed forms.

use super::affine::tail;
use super::candidate::{Candidate, Form, Statistics};
use super::canon::{filled_with, Axes, Canon};
use super::Family;
use crate::graph::NodeId;
use crate::onnx::attr;

/// The epsilon the ONNX function body of MeanVarianceNormalization adds to the deviation.
const MVN_EPSILON: f64 = 1e-9;

/// The recogniser of `InstanceNormalization` as a LayerNorm, read at the node.
pub fn instance_norm(c: &Canon<'_, '_>, id: NodeId) -> Option<Candidate> {
    let n = c.g.node(id);
    let (x, scale, bias) = (n.input.first()?, n.input.get(1)?, n.input.get(2)?);
    let rank = c.g.rank(x)?;
    if rank < 3 {
        return None;
    }
    // Per-channel scale and bias that do nothing, made to the input's channel count in the graph
    // as tf2onnx writes them. Stored ones and zeros are what PyTorch writes for InstanceNorm and
    // GroupNorm (over a [N, groups, -1] view): those are instance and group norms, left alone.
    let mut aux = filled_with(c, scale, 1.0)?;
    aux.extend(filled_with(c, bias, 0.0)?);
    if c.is_constant(scale) || c.is_constant(bias) {
        return None;
    }
    let axes = Axes::new(&(2..rank as i64).collect::<Vec<_>>(), Some(rank))?;
    let epsilon = attr::float(n, "epsilon").map_or(1e-5, |e| e as f64);
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return None;
    }
    single_node(
        c,
        id,
        x,
        axes,
        aux,
        (epsilon, true),
        Family::LayerNorm,
        Form::InstanceNorm,
    )
}

/// The recogniser of `MeanVarianceNormalization`, read at the node.
pub fn mvn(c: &Canon<'_, '_>, id: NodeId) -> Option<Candidate> {
    let n = c.g.node(id);
    let x = n.input.first()?;
    let raw = attr::ints(n, "axes").map_or(vec![0, 2, 3], <[i64]>::to_vec);
    let axes = Axes::new(&raw, c.g.rank(x))?;
    single_node(
        c,
        id,
        x,
        axes,
        vec![],
        (MVN_EPSILON, false),
        Family::LnSimple,
        Form::MeanVarianceNorm,
    )
}

/// The statistics and candidate of a one-node normalisation of `x` over `axes`, with its
/// affine tail.
#[allow(clippy::too_many_arguments)]
fn single_node(
    c: &Canon<'_, '_>,
    id: NodeId,
    x: &str,
    axes: Axes,
    aux: Vec<NodeId>,
    (epsilon, eps_in_sqrt): (f64, bool),
    family: Family,
    form: Form,
) -> Option<Candidate> {
    let out = c.g.node(id).output.first()?.clone();
    let t = tail(c, &out, x, &axes, c.g.elem_type(x), true);
    let stats = Statistics {
        x: x.to_string(),
        axes,
        unbiased: false,
        epsilon,
        eps_in_sqrt,
        sigma: None,
    };
    Some(Candidate::with_tail(
        family,
        form,
        stats,
        (vec![id], aux),
        t,
    ))
}
