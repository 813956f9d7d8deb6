//! Normalisations that are already one node: ONNX `LayerNormalization` (at any opset the file
//! declares: ORT-optimised models hold it below 17), ONNX Runtime's `com.microsoft` fusions, ONNX
//! `RMSNormalization`, and our own `ai.adanorm` ops.

use adanorm_kernels::params::{attr as op_attr, OpKind, DOMAIN};

use super::affine;
use super::candidate::{Form, FusedOp};
use super::canon::{Axes, Canon};
use super::{Family, Match};
use crate::graph::{Dim, GraphIndex, NodeId};
use crate::onnx::attr;

/// The op's Scale and B must broadcast onto the normalised dimensions alone (ops-spec: each
/// unidirectionally broadcastable to `X.shape[axis:]`). ONNX Runtime's and tract's
/// LayerNormalization broadcast a `[1, S, 1]` Scale over the whole input, which no ai.adanorm
/// node can take: such a node is reported, not rewritten.
fn row_parameters(g: &GraphIndex<'_>, m: &mut Match) {
    let Some(xs) = g.shape(&m.input) else { return };
    if m.axes.is_empty() || m.axes.len() > xs.len() {
        return;
    }
    let first_normalised = xs.len() - m.axes.len();
    for p in [m.scale.clone(), m.bias.clone()].into_iter().flatten() {
        let Some(ps) = g.shape(&p) else { continue };
        // Aligned to X's trailing dimensions: 1 before the normalised ones (a leading 1 is a
        // view), X's size or 1 on them.
        let off = xs.len().wrapping_sub(ps.len());
        let fits = ps.len() <= xs.len()
            && ps.iter().enumerate().all(|(i, d)| match (d, &xs[off + i]) {
                (Dim::Known(1), _) => true,
                _ if off + i < first_normalised => false,
                (Dim::Known(a), Dim::Known(b)) => a == b,
                _ => true,
            });
        if !fits {
            m.not_rewritable(format!(
                "its Scale/B '{p}' does not broadcast onto the normalised dimensions alone"
            ));
        }
    }
}

/// An RMSNorm op whose input is `Sub(x, mean(x))` over its own axes, with `x` of the input's
/// type: a LayerNorm of `x` (its second output, 1/σ of the centred input, is the LayerNorm's
/// InvStdDev). The centring stays where something else reads it (ONNX Runtime writes one Sub
/// for the two norms of a parallel block); a rewrite removes it once nothing else does.
fn centred_input(c: &Canon<'_, '_>, m: &mut Match, op: FusedOp) -> bool {
    let g = c.g;
    let Some(centred) = c.centred(&m.input) else {
        return false;
    };
    let axes = match m.axes.is_empty() {
        true => None,
        false => Axes::new(&m.axes, g.rank(&m.input)),
    };
    let Some(axes) = axes.filter(|a| a.same_as(&centred.axes)) else {
        return false;
    };
    let x_type = g.elem_type(&centred.x);
    if x_type.is_none() || x_type != g.elem_type(&m.input) {
        return false;
    }
    let n = g.node(m.nodes[0]);
    if centred.constant_row_guard {
        m.not_rewritable(super::decomposed::CONSTANT_ROW_GUARD);
    }
    m.family = Family::LayerNorm;
    m.form = Form::CentredRms(op);
    m.input = centred.x;
    m.released = centred.nodes;
    m.inv_std_output = n.output.get(1).filter(|s| !s.is_empty()).cloned();
    // The optimiser writes the LayerNorm's bias as an `Add` after the node: the match's B.
    let tail = affine::tail(c, &m.output, &m.input, &axes, g.elem_type(&m.output), false);
    if tail.bias.is_some() {
        m.bias = tail.bias;
        m.nodes.extend(tail.nodes);
        m.output = tail.output;
    }
    row_parameters(g, m);
    true
}

/// The recogniser: the node itself is the normalisation.
pub fn read(c: &Canon<'_, '_>, id: NodeId) -> Option<Match> {
    let g = c.g;
    let n = g.node(id);
    let domain = match n.domain() {
        "ai.onnx" => "",
        d => d,
    };
    let input = |i: usize| n.input.get(i).filter(|s| !s.is_empty()).cloned();
    let x = input(0)?;
    let rank = g.rank(&x);
    let eps_attr = |default: f32| attr::float(n, "epsilon").unwrap_or(default) as f64;
    let axis_attr = attr::int(n, "axis").unwrap_or(-1);
    let base = |family, form: Form, epsilon, axis: i64| {
        // The axis as the file has it may be anything: only an axis inside the rank (or, with
        // the rank unknown, a small negative one) names axes.
        let axes: Vec<i64> = match rank {
            Some(r) => {
                let r = r as i64;
                let a = if axis < 0 { axis + r } else { axis };
                if (0..r).contains(&a) {
                    (a..r).collect()
                } else {
                    vec![]
                }
            }
            None if (-64..0).contains(&axis) => (axis..0).collect(),
            None => vec![],
        };
        let valid = !axes.is_empty();
        let axis = Axes::new(&[axis], rank)
            .map(|a| a.negative()[0])
            .or(Some(axis));
        let mut m = Match {
            family,
            form,
            function_body: false,
            adanorm_factor: false,
            quantised: false,
            nodes: vec![id],
            released: vec![],
            input_casts: vec![],
            input: x.clone(),
            output: n.output.first().cloned().unwrap_or_default(),
            axes,
            axis,
            channels_first: false,
            epsilon,
            unbiased: false,
            eps_in_sqrt: true,
            c: 1.0,
            k: 0.0,
            scale: None,
            bias: None,
            mean_output: None,
            inv_std_output: None,
            dtype: g.elem_type(&x),
            rewritable: true,
            reason: None,
        };
        if !valid {
            m.not_rewritable(format!(
                "its axis {} is outside the input's rank",
                axis.unwrap_or(0)
            ));
        }
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            m.not_rewritable(format!("its epsilon {epsilon} is not a finite number >= 0"));
        }
        m
    };
    let m = match (domain, n.op_type()) {
        ("" | "com.microsoft", "LayerNormalization") => {
            let mut m = base(
                Family::LayerNorm,
                Form::Fused(FusedOp::LayerNormalization),
                eps_attr(1e-5),
                axis_attr,
            );
            m.scale = input(1);
            m.bias = input(2);
            row_parameters(g, &mut m);
            m.mean_output = n.output.get(1).filter(|s| !s.is_empty()).cloned();
            m.inv_std_output = n.output.get(2).filter(|s| !s.is_empty()).cloned();
            m
        }
        ("com.microsoft", "SkipLayerNormalization") => {
            let mut m = base(
                Family::LayerNorm,
                Form::Fused(FusedOp::SkipLayerNormalization),
                eps_attr(1e-12),
                -1,
            );
            m.scale = input(2);
            m.bias = input(3);
            row_parameters(g, &mut m);
            m
        }
        ("com.microsoft", "EmbedLayerNormalization") => {
            let mut m = base(
                Family::LayerNorm,
                Form::Fused(FusedOp::EmbedLayerNormalization),
                eps_attr(1e-12),
                -1,
            );
            // The norm runs on the embedding sum, of the word table's type; `rewrite` splits
            // the lookups off (`rewrite::embed`), `fuse` keeps the node.
            m.dtype = input(2).and_then(|w| g.elem_type(&w));
            m.scale = input(5);
            m.bias = input(6);
            m
        }
        ("" | "com.microsoft", "SimplifiedLayerNormalization")
        | ("com.microsoft", "SkipSimplifiedLayerNormalization")
        | ("", "RMSNormalization") => {
            let op = match n.op_type() {
                "SimplifiedLayerNormalization" => FusedOp::SimplifiedLayerNormalization,
                "SkipSimplifiedLayerNormalization" => FusedOp::SkipSimplifiedLayerNormalization,
                _ => FusedOp::RmsNormalization,
            };
            let skip = op == FusedOp::SkipSimplifiedLayerNormalization;
            let mut m = base(
                Family::RmsNorm,
                Form::Fused(op),
                eps_attr(1e-5),
                if skip { -1 } else { axis_attr },
            );
            m.scale = input(if skip { 2 } else { 1 });
            if !skip && centred_input(c, &mut m, op) {
                return Some(m);
            }
            m.not_rewritable("RMSNorm has no centring: reported, left alone");
            m
        }
        (DOMAIN, op) if OpKind::from_op_type(op).is_some() => {
            let kind = OpKind::from_op_type(op)?;
            let ada = kind == OpKind::AdaNorm;
            let unbiased =
                attr::int(n, op_attr::UNBIASED).unwrap_or(op_attr::DEFAULT_UNBIASED) == 1;
            let eps_in_sqrt =
                attr::int(n, op_attr::EPS_IN_SQRT).unwrap_or(op_attr::DEFAULT_EPS_IN_SQRT) == 1;
            let family = match (ada, unbiased, eps_in_sqrt) {
                (true, _, _) => Family::AdaNorm,
                (false, false, true) => Family::LayerNorm,
                _ => Family::LnSimple,
            };
            let mut m = base(
                family,
                Form::Fused(FusedOp::Own(kind)),
                eps_attr(op_attr::DEFAULT_EPSILON),
                axis_attr,
            );
            m.unbiased = unbiased;
            m.eps_in_sqrt = eps_in_sqrt;
            if ada {
                m.c = attr::float(n, op_attr::C).unwrap_or(op_attr::DEFAULT_C) as f64;
                m.k = attr::float(n, op_attr::K).unwrap_or(op_attr::DEFAULT_K) as f64;
            }
            m.scale = input(1);
            m.bias = input(2);
            row_parameters(g, &mut m);
            m.mean_output = n.output.get(1).filter(|s| !s.is_empty()).cloned();
            m.inv_std_output = n.output.get(2).filter(|s| !s.is_empty()).cloned();
            if crate::rewrite::apply::uses_residual_slots(n) {
                // A match carries no residual yet: a rewrite would drop Skip, Bias and Sum.
                m.not_rewritable(
                    "it uses version 2's residual slots (Skip, Bias, Sum); it is left as it is",
                );
            }
            m
        }
        _ => return None,
    };
    Some(m)
}
