//! Decomposed normalisations, read from the statistics outwards: the statistics ending in a
//! square root ([`stats`]), then how the centred input is divided by sigma (plain, through a
//! reciprocal, with the gain before the division, the AdaNorm factor, the Keras folded affine)
//! and the affine tail after it.

mod stats;

use super::affine::{is_row_parameter, tail, Tail};
use super::candidate::{Candidate, Form, Statistics};
use super::canon::{operands, Canon};
use super::Family;
use crate::graph::NodeId;
use stats::{stats_at_sqrt, Stats, VarianceForm};

/// The recogniser: the statistics read back from a root node (`Sqrt`, or a power `** 0.5` /
/// `** -0.5`), then the normalisation read forward from them.
pub fn read(c: &Canon<'_, '_>, root: NodeId) -> Option<Candidate> {
    let stats = stats_at_sqrt(c, root)?;
    let n = normalisation(c, &stats)?;
    let mut core = stats.core;
    core.extend(n.core);
    let mut problems = n.problems;
    if stats.form == VarianceForm::TwoPassConstantRowGuard {
        problems.push(CONSTANT_ROW_GUARD.into());
    }
    Some(Candidate {
        family: n.family,
        form: n.form,
        stats: Statistics {
            x: stats.x,
            axes: stats.axes,
            epsilon: stats.epsilon,
            unbiased: stats.unbiased,
            eps_in_sqrt: stats.eps_in_sqrt,
            sigma: Some(stats.den).filter(|d| !d.is_empty()),
        },
        core,
        aux: stats.aux,
        output: n.output,
        scale: n.scale,
        bias: n.bias,
        c: n.c,
        k: n.k,
        problems,
    })
}

/// Why a norm with jax2onnx's constant-row guard is not rewritten.
pub const CONSTANT_ROW_GUARD: &str = "it centres rows whose elements are all equal to exactly 0 (jax2onnx's constant-row guard); one fused node computes x − mean there, which the rounding of the mean can make non-zero";

/// What the normalisation layer read after the statistics.
#[derive(Debug)]
struct Normalised {
    family: Family,
    form: Form,
    core: Vec<NodeId>,
    output: String,
    scale: Option<String>,
    bias: Option<String>,
    c: f64,
    k: f64,
    problems: Vec<String>,
}

impl Normalised {
    /// Neither AdaNorm nor scaled (c = 1, k = 0): `core`, then the affine tail `t`, whose
    /// output, gain and bias it takes.
    fn with_tail(family: Family, form: Form, mut core: Vec<NodeId>, t: Tail) -> Normalised {
        core.extend(t.nodes);
        Normalised {
            family,
            form,
            core,
            output: t.output,
            scale: t.scale,
            bias: t.bias,
            c: 1.0,
            k: 0.0,
            problems: vec![],
        }
    }
}

fn normalisation(c: &Canon<'_, '_>, s: &Stats) -> Option<Normalised> {
    if s.form == VarianceForm::MeanSquare {
        return rms(c, s);
    }
    adanorm(c, s)
        .or_else(|| keras(c, s))
        .or_else(|| plain(c, s))
}

fn family_of(s: &Stats) -> Family {
    if !s.unbiased && s.eps_in_sqrt {
        Family::LayerNorm
    } else {
        Family::LnSimple
    }
}

/// The centring nodes when `v` is `x - mean(x)` for this statistics' `x` and axes, guarded for
/// constant rows exactly when the variance's centring is.
fn centred_here(c: &Canon<'_, '_>, s: &Stats, v: &str) -> Option<Vec<NodeId>> {
    let cen = c.centred(v)?;
    let guarded = s.form == VarianceForm::TwoPassConstantRowGuard;
    (cen.x == s.x && cen.axes.same_as(&s.axes) && cen.constant_row_guard == guarded)
        .then_some(cen.nodes)
}

/// The standard `op` nodes with two operands that read `v`.
fn consumers_of<'a>(
    c: &'a Canon<'_, '_>,
    v: &str,
    op: &'a str,
) -> impl Iterator<Item = NodeId> + 'a {
    c.g.consumers(v).to_vec().into_iter().filter(move |&id| {
        let n = c.g.node(id);
        crate::onnx::is_standard(n) && n.op_type() == op && operands(n).is_some()
    })
}

/// The nodes computing 1/sigma: Reciprocal(den) / Div(1, den), or the inverse root itself.
fn reciprocals(c: &Canon<'_, '_>, s: &Stats) -> Vec<NodeId> {
    let den = s.den.as_str();
    c.g.consumers(den)
        .iter()
        .copied()
        .filter(|&id| c.reciprocal_of(c.g.node(id)) == Some(den))
        .chain(s.inverse)
        .collect()
}

/// `d / sigma`, `d * (1/sigma)`, or `(gamma * d) / sigma`, then the affine tail.
fn plain(c: &Canon<'_, '_>, s: &Stats) -> Option<Normalised> {
    let x_type = c.g.elem_type(&s.x);
    let finish_tail = |core: Vec<NodeId>, y: String, scale: Option<String>| {
        let t = tail(c, &y, &s.x, &s.axes, x_type, scale.is_none());
        let form = if s.form == VarianceForm::MomentDifference {
            Form::MomentDifference
        } else {
            Form::Decomposed
        };
        let mut cand = Normalised::with_tail(family_of(s), form, core, t);
        cand.scale = scale.or(cand.scale);
        cand
    };
    for id in consumers_of(c, &s.den, "Div") {
        let n = c.g.node(id);
        let Some((num, _)) = operands(n).filter(|&(_, d)| d == s.den) else {
            continue;
        };
        if let Some(mut nodes) = centred_here(c, s, num) {
            nodes.push(id);
            return Some(finish_tail(nodes, n.output[0].clone(), None));
        }
        // Gain before the division (Annotated Transformer): (gamma * d) / sigma.
        if let Some((mul_id, _, a, b)) = c.binary(num, "Mul") {
            for (d, gamma) in [(a, b), (b, a)] {
                let Some(mut nodes) = centred_here(c, s, d) else {
                    continue;
                };
                nodes.extend([mul_id, id]);
                let mut cand = finish_tail(nodes, n.output[0].clone(), Some(gamma.to_string()));
                if !is_row_parameter(c, gamma, &s.x, &s.axes) {
                    cand.problems.push(format!("its gain '{gamma}' (applied before the division) is not a constant per-row parameter"));
                }
                return Some(cand);
            }
        }
    }
    for r in reciprocals(c, s) {
        let inv = c.g.node(r).output[0].clone();
        for id in consumers_of(c, &inv, "Mul") {
            let n = c.g.node(id);
            let Some(d) = c.other_operand(n, &inv) else {
                continue;
            };
            if let Some(mut nodes) = centred_here(c, s, d) {
                nodes.extend([r, id]);
                return Some(finish_tail(nodes, n.output[0].clone(), None));
            }
            // The gain multiplied into the reciprocal first, d * (inv * gamma): how tf2onnx
            // writes TensorFlow's `(x - mean) * rsqrt(var + eps) * gamma`.
            if !is_row_parameter(c, d, &s.x, &s.axes) || centred_here(c, s, d).is_some() {
                continue;
            }
            let scaled = &n.output[0];
            for outer in consumers_of(c, scaled, "Mul") {
                let o = c.g.node(outer);
                let Some(centred) = c.other_operand(o, scaled) else {
                    continue;
                };
                if let Some(mut nodes) = centred_here(c, s, centred) {
                    nodes.extend([r, id, outer]);
                    return Some(finish_tail(nodes, o.output[0].clone(), Some(d.to_string())));
                }
            }
        }
    }
    None
}

/// AdaNorm as lancopku's module exports it:
/// `y = (xc - xc * (k * (xc - mean(xc)) / sigma)) / sigma`, then `* C` (absent when C = 1).
fn adanorm(c: &Canon<'_, '_>, s: &Stats) -> Option<Normalised> {
    // Sigma, and its copies with the node computing each.
    let dens: Vec<(&String, Option<&Vec<NodeId>>)> = std::iter::once((&s.den, None))
        .chain(s.den_copies.iter().map(|(v, ids)| (v, Some(ids))))
        .collect();
    let divisions = || {
        dens.iter().flat_map(|&(den, copy)| {
            consumers_of(c, den, "Div")
                .filter(move |&id| c.g.node(id).input.get(1) == Some(den))
                .map(move |id| (id, copy))
        })
    };
    for (g_id, g_copy) in divisions() {
        let g_div = c.g.node(g_id);
        let Some((k, mut nodes)) = operands(g_div).and_then(|(num, _)| k_times_centred(c, s, num))
        else {
            continue;
        };
        nodes.push(g_id);
        nodes.extend(g_copy.into_iter().flatten());
        let g_out = &g_div.output[0];
        // The second division: (xc - xc * g) / sigma.
        for (y_id, y_copy) in divisions() {
            let y_div = c.g.node(y_id);
            if y_id == g_id {
                continue;
            }
            let Some((w_id, _, xc, product)) =
                operands(y_div).and_then(|(num, _)| c.binary(num, "Sub"))
            else {
                continue;
            };
            let Some(xc_nodes) = centred_here(c, s, xc) else {
                continue;
            };
            let Some((p_id, _, pa, pb)) = c.binary(product, "Mul") else {
                continue;
            };
            // `.detach()` may leave an Identity between the factor and its use.
            let Some((other, detached)) =
                [(pa, pb), (pb, pa)].into_iter().find_map(|(v, other)| {
                    let (origin, crossed) = c.origin(v);
                    (origin == *g_out).then_some((other, crossed))
                })
            else {
                continue;
            };
            let Some(xc2_nodes) = centred_here(c, s, other) else {
                continue;
            };
            let mut core = nodes.clone();
            core.extend(
                y_copy
                    .filter(|ids| Some(*ids) != g_copy)
                    .into_iter()
                    .flatten(),
            );
            core.extend(detached);
            core.extend(xc_nodes);
            core.extend(xc2_nodes);
            core.extend([w_id, p_id, y_id]);
            let (mut out, identities) = c.past_identities(&y_div.output[0]);
            core.extend(identities);
            let mut big_c = 1.0;
            if let [only] = c.g.consumers(&out) {
                let n = c.g.node(*only);
                if n.op_type() == "Mul" && !c.g.is_graph_output(&out) {
                    if let Some(cv) = c.other_operand(n, &out).and_then(|v| c.scalar(v)) {
                        big_c = cv;
                        core.push(*only);
                        out = n.output[0].clone();
                    }
                }
            }
            let t = tail(c, &out, &s.x, &s.axes, c.g.elem_type(&s.x), true);
            core.extend(t.nodes);
            return Some(Normalised {
                family: Family::AdaNorm,
                form: Form::DecomposedAdaNorm,
                core,
                output: t.output,
                scale: t.scale,
                bias: t.bias,
                c: big_c,
                k,
                problems: vec![],
            });
        }
    }
    None
}

/// `k * (xc - mean(xc))` or `k * xc` (either operand order), or the same divided by `1/k`.
fn k_times_centred(c: &Canon<'_, '_>, s: &Stats, v: &str) -> Option<(f64, Vec<NodeId>)> {
    // (`Add(·, 0)` and Identity after it: paddle2onnx's scale op.)
    let (v, noops) = if c.op(v, "Mul").is_some() || c.op(v, "Div").is_some() {
        (v.to_string(), Vec::new())
    } else {
        c.origin(v)
    };
    let v = v.as_str();
    let (id, kv, u) = if let Some((id, _, a, b)) = c.binary(v, "Mul") {
        match (c.scalar(a), c.scalar(b)) {
            (None, Some(k)) => (id, k, a),
            (Some(k), None) => (id, k, b),
            _ => return None,
        }
    } else {
        let (id, _, num, den) = c.binary(v, "Div")?;
        (id, 1.0 / c.scalar(den)?, num)
    };
    if !kv.is_finite() {
        return None;
    }
    let mut nodes = vec![id];
    nodes.extend(noops);
    if let Some(cn) = centred_here(c, s, u) {
        nodes.extend(cn);
        return Some((kv, nodes));
    }
    // xc - mean(xc): the reference recentres before scaling.
    let (sub_id, _, xc, mean) = c.binary(u, "Sub")?;
    let xc_nodes = centred_here(c, s, xc)?;
    let m3 = c.mean_of(mean)?;
    if c.origin(&m3.input).0 != c.origin(xc).0 || !m3.axes.same_as(&s.axes) {
        return None;
    }
    nodes.extend(xc_nodes);
    nodes.push(sub_id);
    nodes.extend(m3.nodes);
    Some((kv, nodes))
}

/// Keras through tf2onnx: `x * s + (beta - mean * s)` with `s = gamma / sigma`
/// (`Reciprocal`, gain optional, `Neg(mean)` or `Sub(beta, ·)`, bias optional).
fn keras(c: &Canon<'_, '_>, s: &Stats) -> Option<Normalised> {
    for r in reciprocals(c, s) {
        let inv = c.g.node(r).output[0].clone();
        let mut core = vec![r];
        let mut scale = None;
        let mut g_val = inv.clone();
        if let [only] = c.g.consumers(&inv) {
            let n = c.g.node(*only);
            if n.op_type() == "Mul" {
                if let Some(p) = c.other_operand(n, &inv) {
                    if is_row_parameter(c, p, &s.x, &s.axes) {
                        scale = Some(p.to_string());
                        core.push(*only);
                        g_val = n.output[0].clone();
                    }
                }
            }
        }
        let muls: Vec<NodeId> = consumers_of(c, &g_val, "Mul").collect();
        if muls.len() != 2 || c.g.consumers(&g_val).len() != 2 {
            continue;
        }
        // Which product is x * s and which is mean * s (or -mean * s)?
        let mut x_prod = None;
        let mut m_prod = None;
        for &id in &muls {
            let other = c.other_operand(c.g.node(id), &g_val)?;
            if c.origin(other).0 == s.x {
                x_prod = Some(id);
            } else if let Some(nodes) = mean_here(c, s, other) {
                m_prod = Some((id, nodes, false));
            } else if let Some((neg_id, neg)) = c.op(other, "Neg") {
                let mut nodes = mean_here(c, s, neg.input.first()?)?;
                nodes.push(neg_id);
                m_prod = Some((id, nodes, true));
            }
        }
        let (x_prod, (m_id, m_nodes, negated)) = (x_prod?, m_prod?);
        core.extend([x_prod, m_id]);
        core.extend(m_nodes);
        let xs = c.g.node(x_prod).output[0].clone();
        let ms = c.g.node(m_id).output[0].clone();
        let [last] = c.g.consumers(&xs) else { continue };
        let last_node = c.g.node(*last);
        let mut bias = None;
        let ok = match (last_node.op_type(), negated) {
            ("Sub", false) => operands(last_node) == Some((xs.as_str(), ms.as_str())),
            ("Add", true) => {
                let rest = c.other_operand(last_node, &xs)?;
                if rest == ms {
                    true
                } else {
                    let (add_id, add) = c.op(rest, "Add")?;
                    let beta = c.other_operand(add, &ms)?;
                    bias = Some(beta.to_string());
                    core.push(add_id);
                    is_row_parameter(c, beta, &s.x, &s.axes)
                }
            }
            ("Add", false) => {
                let rest = c.other_operand(last_node, &xs)?;
                let (sub_id, _, beta, subtracted) = c.binary(rest, "Sub")?;
                if subtracted != ms {
                    return None;
                }
                bias = Some(beta.to_string());
                core.push(sub_id);
                is_row_parameter(c, beta, &s.x, &s.axes)
            }
            _ => false,
        };
        if !ok {
            continue;
        }
        core.push(*last);
        return Some(Normalised {
            family: family_of(s),
            form: Form::KerasFoldedAffine,
            core,
            output: last_node.output[0].clone(),
            scale,
            bias,
            c: 1.0,
            k: 0.0,
            problems: vec![],
        });
    }
    None
}

/// The mean of this statistics' `x` over its axes.
fn mean_here(c: &Canon<'_, '_>, s: &Stats, v: &str) -> Option<Vec<NodeId>> {
    let m = c.mean_of(v)?;
    (c.origin(&m.input).0 == s.x && m.axes.same_as(&s.axes)).then_some(m.nodes)
}

/// RMSNorm: `x / sqrt(mean(x²) + eps)`, `x * (1 / sqrt(...))` or `x * ((1 / sqrt(...)) * γ)`
/// (Keras), then the gain.
fn rms(c: &Canon<'_, '_>, s: &Stats) -> Option<Normalised> {
    let x_type = c.g.elem_type(&s.x);
    // The `Mul` of `v` by x and its output (the last such reader).
    let times_x = |v: &str| -> Option<(NodeId, String)> {
        consumers_of(c, v, "Mul")
            .filter(|&id| {
                c.other_operand(c.g.node(id), v)
                    .is_some_and(|o| c.origin(o).0 == s.x)
            })
            .last()
            .map(|id| (id, c.g.node(id).output[0].clone()))
    };
    // (core nodes, output, a gain read inside the core)
    let mut found: Option<(Vec<NodeId>, String, Option<String>)> = consumers_of(c, &s.den, "Div")
        .filter(|&id| {
            operands(c.g.node(id)).is_some_and(|(num, den)| den == s.den && c.origin(num).0 == s.x)
        })
        .last()
        .map(|id| (vec![id], c.g.node(id).output[0].clone(), None));
    let inverses: Vec<(NodeId, String)> = reciprocals(c, s)
        .into_iter()
        .map(|r| (r, c.g.node(r).output[0].clone()))
        .collect();
    if found.is_none() {
        found = inverses
            .iter()
            .rev()
            .find_map(|(r, inv)| times_x(inv).map(|(id, y)| (vec![*r, id], y, None)));
    }
    // Keras' RMSNormalization through tf2onnx: the gain multiplied into the inverse root
    // before `x`, `x · (rsqrt(mean(x²) + ε) · γ)`.
    if found.is_none() {
        for (r, inv) in &inverses {
            for gid in consumers_of(c, inv, "Mul") {
                let gn = c.g.node(gid);
                let Some(gamma) = c.other_operand(gn, inv) else {
                    continue;
                };
                if c.origin(gamma).0 == s.x || !is_row_parameter(c, gamma, &s.x, &s.axes) {
                    continue;
                }
                if let Some((id, y)) = times_x(&gn.output[0]) {
                    found = Some((vec![*r, gid, id], y, Some(gamma.to_string())));
                }
            }
        }
    }
    let (core, y, gain) = found?;
    let t = tail(c, &y, &s.x, &s.axes, x_type, gain.is_none());
    let mut n = Normalised::with_tail(Family::RmsNorm, Form::DecomposedRmsNorm, core, t);
    n.scale = gain.or(n.scale);
    Some(n)
}
