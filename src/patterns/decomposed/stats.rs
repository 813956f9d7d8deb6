//! The statistics layers, read backwards from a `Sqrt`: the denominator (where epsilon goes),
//! the variance (biased, unbiased by `N/(N-1)`, or `E[x²]−E[x]²`, behind guards that cannot
//! change a variance), and whether it is centred (LayerNorm family) or not (RMSNorm).

use crate::graph::NodeId;
use crate::onnx::attr;
use crate::onnx::proto::NodeProto;
use crate::patterns::canon::{operands, uniform_fill, Axes, Canon, Divisor};
use crate::patterns::keepdims;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarianceForm {
    /// `mean((x - mean x)²)`
    TwoPass,
    /// `mean(d²)` of a centring that sets constant rows to 0 ([`Canon::constant_row_guarded`]).
    TwoPassConstantRowGuard,
    /// `mean(x²) - mean(x)²`
    MomentDifference,
    /// `mean(x²)`: no centring (RMSNorm).
    MeanSquare,
}

#[derive(Debug, Clone)]
pub struct Stats {
    /// The normalised input, Identity and precision casts looked through.
    pub x: String,
    pub axes: Axes,
    pub form: VarianceForm,
    pub unbiased: bool,
    pub epsilon: f64,
    pub eps_in_sqrt: bool,
    /// The value dividing the centred input (sigma).
    pub den: String,
    /// Copies of `den` computed again by their own nodes (the dynamo exporter without its
    /// optimizer repeats `Add(sqrt, eps)` for each use): value and nodes.
    pub den_copies: Vec<(String, Vec<NodeId>)>,
    /// Nodes computing the statistics.
    pub core: Vec<NodeId>,
    /// Helper nodes (row-count chains) that belong to the match only if nothing else uses them.
    pub aux: Vec<NodeId>,
    /// A node computing `1/sigma` itself (`Pow(var + eps, -0.5)`); `den` is then empty.
    pub inverse: Option<NodeId>,
}

/// Reads the statistics that end in the root node `sqrt`: `Sqrt(v)`, `Pow(v, 0.5)` (PyTorch's
/// `** 0.5`), or `Pow(v, -0.5)` (`** -0.5`, the inverse root itself).
pub fn stats_at_sqrt(c: &Canon<'_, '_>, sqrt: NodeId) -> Option<Stats> {
    let node = c.g.node(sqrt);
    let inverse = match node.op_type() {
        "Sqrt" => false,
        "Pow" => match c.scalar(node.input.get(1)?)? {
            0.5 => false,
            -0.5 => true,
            _ => return None,
        },
        _ => return None,
    };
    let s_in = node.input.first()?;
    let s_out = node.output.first()?;
    let mut core = vec![sqrt];
    let mut copies = Vec::new();

    // Epsilon inside the root: Sqrt(Add(var, eps)).
    let (var_value, epsilon, eps_in_sqrt, den) = if let Some((add_id, add)) = c.op(s_in, "Add") {
        let (eps, var) = constant_and_other(c, add)?;
        core.push(add_id);
        (var.to_string(), eps, true, s_out.clone())
    } else if inverse {
        // Nothing can be added after an inverse root: no epsilon.
        (s_in.clone(), 0.0, true, s_out.clone())
    } else {
        // Epsilon outside: Add(Sqrt(var), eps), possibly after a Cast back to the model's type.
        let mut after = s_out.clone();
        let mut crossed = Vec::new();
        if let [only] = c.g.consumers(&after) {
            let n = c.g.node(*only);
            if n.op_type() == "Cast"
                && attr::int(n, "to").is_some_and(|t| crate::onnx::dtype::is_float(t as i32))
            {
                crossed.push(*only);
                after = n.output[0].clone();
            }
        }
        // Every reader adds the same epsilon (usually there is one reader).
        let adds: Option<Vec<EpsAdd>> =
            c.g.consumers(&after)
                .iter()
                .map(|&id| eps_add_from(c, &after, id))
                .collect();
        let eps_add = adds.filter(|a| !a.is_empty() && a.iter().all(|e| e.eps == a[0].eps));
        match eps_add {
            Some(mut adds) => {
                core.extend(crossed);
                let first = adds.remove(0);
                core.extend(first.nodes);
                copies = adds.into_iter().map(|e| (e.den, e.nodes)).collect();
                (s_in.clone(), first.eps, false, first.den)
            }
            // No epsilon at all (removed by an optimiser, or underflowed away).
            None => (s_in.clone(), 0.0, true, s_out.clone()),
        }
    };

    // Copies after sigma (paddle2onnx's Identity nodes, a float16 converter's Cast back from
    // its float32 island) are crossed: the division reads what they make.
    let den = if inverse {
        den
    } else {
        let (past, copies) = c.past_copies(&den);
        core.extend(copies);
        past
    };
    let mut stats = variance(c, &var_value)?;
    stats.core.extend(core);
    stats.epsilon = epsilon;
    stats.eps_in_sqrt = eps_in_sqrt;
    stats.den = if inverse { String::new() } else { den };
    stats.den_copies = copies;
    stats.inverse = inverse.then_some(sqrt);
    Some(stats)
}

/// `sigma + eps` read forward from `sigma`, starting at its reader `first`: exact no-ops before the
/// `Add` (`Identity`, `Mul(·, 1)`: paddle2onnx's scale op) and `Identity` nodes after it are
/// crossed.
struct EpsAdd {
    eps: f64,
    /// The value dividing the centred input.
    den: String,
    nodes: Vec<NodeId>,
}

fn eps_add_from(c: &Canon<'_, '_>, sigma: &str, first: NodeId) -> Option<EpsAdd> {
    let mut nodes = Vec::new();
    let mut v = sigma.to_string();
    let mut id = first;
    for _ in 0..8 {
        let n = c.g.node(id);
        if !crate::onnx::is_standard(n) {
            return None;
        }
        let noop = match n.op_type() {
            "Identity" => true,
            "Mul" => c.other_operand(n, &v).and_then(|k| c.scalar(k)) == Some(1.0),
            _ => false,
        };
        if noop {
            nodes.push(id);
            v = n.output[0].clone();
            id = match c.g.consumers(&v) {
                [only] if !c.g.is_graph_output(&v) => *only,
                _ => return None,
            };
            continue;
        }
        if n.op_type() != "Add" {
            return None;
        }
        let (eps, _) = constant_and_other(c, n)?;
        nodes.push(id);
        let (den, identities) = c.past_identities(&n.output[0]);
        nodes.extend(identities);
        return Some(EpsAdd { eps, den, nodes });
    }
    None
}

/// A constant, finite, non-negative scalar operand of a two-input node, and the other operand.
/// A one-element constant of rank above 1 counts only beside a value known to have at least its
/// rank: beside a lower rank it would broadcast the result up (`[1,1,1,1]` added to a rank-3
/// variance makes it rank 4), which the written node would not do.
fn constant_and_other<'a>(
    c: &Canon<'_, '_>,
    n: &'a crate::onnx::proto::NodeProto,
) -> Option<(f64, &'a str)> {
    let (a, b) = operands(n)?;
    let (eps, eps_value, other) = match (c.scalar(a), c.scalar(b)) {
        (None, Some(e)) => (e, b, a),
        (Some(e), None) => (e, a, b),
        _ => return None,
    };
    let eps_rank = c.g.constant(eps_value)?.dims.len();
    // A variance is never of rank 0 (it keeps the reduced dimensions), so rank 1 is safe.
    let no_broadcast = eps_rank <= 1 || c.g.rank(other).is_some_and(|r| r >= eps_rank);
    (no_broadcast && eps.is_finite() && eps >= 0.0).then_some((eps, other))
}

/// The variance layer: `[unbiased correction] (mean(d²) | mean(x²) - mean(x)² | mean(x²))`.
fn variance(c: &Canon<'_, '_>, value: &str) -> Option<Stats> {
    let (v, mut core) = c.origin(value);
    let (v, guards) = strip_guards(c, &v);
    let mut aux = Vec::new();
    // The branch an all-true `Where` guard never takes, when it is a fill (jax2onnx's NaN
    // spread to the variance's shape): helpers, not a second input.
    for &id in &guards {
        let n = c.g.node(id);
        if n.op_type() == "Where" {
            if let Some((_, fill)) = n.input.get(2).and_then(|o| uniform_fill(c, o)) {
                aux.extend(fill);
            }
        }
    }
    core.extend(guards);

    // The dynamo exporter reduces the variance without keepdims and gives the dimensions back
    // before the Sqrt (see `keepdims`).
    let layers = keepdims::strip(c, &v);
    core.extend(layers.nodes.iter().copied());
    let v = layers.inner.clone();

    // Bessel's correction: v*N/(N-1) in any of the shapes exporters write.
    let mut unbiased = None::<RowCount>;
    let mut inner = v.clone();
    if let Some((div_id, div)) = c.op(&v, "Div") {
        let (num, den) = (div.input.first()?, div.input.get(1)?);
        if let Some((mul_id, mul)) = c.op(num, "Mul") {
            for (var_side, n_side) in [(0, 1), (1, 0)] {
                let (var_in, n_in) = (&mul.input[var_side], &mul.input[n_side]);
                let Some(n) = row_count(c, n_in, &mut aux) else {
                    continue;
                };
                let Some(n_minus_1) = n_minus_one(c, den, &n, &mut aux) else {
                    continue;
                };
                core.extend([div_id, mul_id]);
                core.extend(n_minus_1);
                inner = var_in.clone();
                unbiased = Some(n);
                break;
            }
        }
    } else if let Some((mul_id, mul)) = c.op(&v, "Mul") {
        // Folded factor N/(N-1): only accepted where the row length is known to match it.
        if let Some((factor, var_in)) = constant_and_other(c, mul) {
            core.push(mul_id);
            inner = var_in.to_string();
            unbiased = Some(RowCount::Factor(factor));
        }
    }

    // A sum of squares divided by N - 1 (hand-written unbiased variance).
    let mut sum_minus_one = None;
    if unbiased.is_none() {
        match c.sum_divided(&v) {
            Some((sum, Divisor::Number(d), kept))
                if c.row_length(&sum.input, &sum.axes) != Some(d) =>
            {
                unbiased = Some(RowCount::Constant(d + 1.0));
                sum_minus_one = Some((sum, kept));
            }
            Some((sum, Divisor::RowLengthMinusOne, kept)) => {
                unbiased = Some(RowCount::RowLength);
                sum_minus_one = Some((sum, kept));
            }
            _ => {}
        }
    }

    let (inner_root, crossed) = c.origin(&inner);
    core.extend(crossed);
    let (x, axes, form, more, kept) = match sum_minus_one {
        Some((sum, kept)) => variance_of_mean(c, sum, kept)?,
        None => biased_variance(c, &inner_root)?,
    };
    core.extend(more);
    if !layers.restores(c, &x, &axes, kept) {
        return None;
    }

    if let Some(n) = &unbiased {
        if !n.counts(c, &x, &axes) {
            return None;
        }
    }
    Some(Stats {
        x,
        axes,
        form,
        unbiased: unbiased.is_some(),
        epsilon: 0.0,
        eps_in_sqrt: true,
        den: String::new(),
        den_copies: Vec::new(),
        inverse: None,
        core,
        aux,
    })
}

/// Looks through guards that leave a variance (never negative, or NaN) as it is: `Max(v, c)`
/// and `Clip(v, c)` with a constant `c <= 0` (Flax clamps `E[x²]−E[x]²` at 0), `Relu(v)`, and
/// `Where(cond, v, other)` with a constant, all-true `cond` (jax2onnx's `jnp.var` guards a
/// divisor `N - ddof > 0`). Returns the guarded value and the guards, casts between them
/// included. The op's own variance is computed non-negative, so the clamp is implied; a clamp
/// at a positive floor (`Max(v, eps)`) changes the function and is not looked through.
fn strip_guards(c: &Canon<'_, '_>, value: &str) -> (String, Vec<NodeId>) {
    // Guards, and what `origin` looks through between them.
    c.walk_back(value, 16, |node| {
        guarded(c, node).or_else(|| c.origin_step(node))
    })
}

/// The value a guard (see `strip_guards`) passes on unchanged.
fn guarded<'m>(c: &Canon<'_, 'm>, node: &'m NodeProto) -> Option<&'m String> {
    let not_positive = |name: &str| c.scalar(name).is_some_and(|f| f <= 0.0);
    match node.op_type() {
        "Relu" => node.input.first(),
        "Max" if node.input.len() == 2 => (0..2)
            .find(|&i| not_positive(&node.input[i]))
            .map(|i| &node.input[1 - i]),
        "Clip" => {
            let max_absent = node.input.get(2).is_none_or(|m| m.is_empty())
                && attr::float(node, "max").is_none_or(|m| m == f32::INFINITY);
            let min_ok = match node.input.get(1).filter(|m| !m.is_empty()) {
                Some(min) => not_positive(min),
                None => attr::float(node, "min").is_some_and(|m| m <= 0.0),
            };
            (max_absent && min_ok).then(|| node.input.first()).flatten()
        }
        "Where" => {
            let cond = node.input.first().and_then(|k| c.g.constant(k));
            let all_true = cond.and_then(|k| {
                k.ints
                    .as_ref()
                    .map(|i| !i.is_empty() && i.iter().all(|&b| b != 0))
            });
            all_true
                .unwrap_or(false)
                .then(|| node.input.get(1))
                .flatten()
        }
        _ => None,
    }
}

/// `mean(d²)` with d centred, `mean(x²) - mean(x)²`, or `mean(x²)`; with whether the outer
/// mean keeps its dimensions.
fn biased_variance(
    c: &Canon<'_, '_>,
    value: &str,
) -> Option<(String, Axes, VarianceForm, Vec<NodeId>, bool)> {
    if let Some((mean, kept)) = c.reduction(value) {
        return variance_of_mean(c, mean, kept);
    }
    // E[x²] - E[x]²
    let (sub_id, sub) = c.op(value, "Sub")?;
    let (ex2, kept) = c.reduction(sub.input.first()?)?;
    if !kept {
        return None;
    }
    let (sq_in, sq_node) = squared_operand(c, &ex2)?;
    let (x, _) = c.origin(&sq_in);
    let (m_in, m_sq_node) = c.square(sub.input.get(1)?)?;
    let (m_root, _) = c.origin(&m_in);
    let mean = c.mean_of(&m_root)?;
    let (mx, _) = c.origin(&mean.input);
    if mx != x || !mean.axes.same_as(&ex2.axes) {
        return None;
    }
    Some((
        x,
        ex2.axes,
        VarianceForm::MomentDifference,
        [vec![sub_id], m_sq_node, sq_node, ex2.nodes, mean.nodes].concat(),
        true,
    ))
}

/// `mean(d²)` (two-pass) or `mean(x²)` (mean square) read from the outer mean.
fn variance_of_mean(
    c: &Canon<'_, '_>,
    mean: crate::patterns::canon::MeanOf,
    kept: bool,
) -> Option<(String, Axes, VarianceForm, Vec<NodeId>, bool)> {
    let (squared, sq_node) = squared_operand(c, &mean)?;
    let mut nodes = mean.nodes;
    nodes.extend(sq_node);
    if let Some(cen) = c.centred(&squared) {
        if !cen.axes.same_as(&mean.axes) {
            return None;
        }
        nodes.extend(cen.nodes);
        let form = if cen.constant_row_guard {
            VarianceForm::TwoPassConstantRowGuard
        } else {
            VarianceForm::TwoPass
        };
        return Some((cen.x, mean.axes, form, nodes, kept));
    }
    // Casts in front of x are the caller's to judge (they may be shared).
    let (x, _) = c.origin(&squared);
    Some((x, mean.axes, VarianceForm::MeanSquare, nodes, kept))
}

/// What a mean of squares squares: its input (`ReduceSumSquare`) or the operand of the
/// `Mul(d, d)`/`Pow(d, 2)` it reads, with those nodes.
fn squared_operand(
    c: &Canon<'_, '_>,
    mean: &crate::patterns::canon::MeanOf,
) -> Option<(String, Vec<NodeId>)> {
    if mean.squared {
        return Some((mean.input.clone(), Vec::new()));
    }
    c.square(&mean.input)
}

/// What a row-count operand is.
#[derive(Debug, Clone)]
enum RowCount {
    /// A constant `N`.
    Constant(f64),
    /// `Cast(ReduceProd(Gather(Shape(x), axes)))`.
    Dynamic { x: String, axes: Vec<i64> },
    /// A folded `N/(N-1)`.
    Factor(f64),
    /// Computed from element counts as the row length itself (`Divisor::RowLength*`).
    RowLength,
}

impl RowCount {
    /// Whether this count is the number of elements of a row of `x` over `axes`.
    fn counts(&self, c: &Canon<'_, '_>, x: &str, axes: &Axes) -> bool {
        let known_len = || c.row_length(x, axes);
        match self {
            RowCount::Dynamic { x: sx, axes: sa } => {
                sx == x && Axes::new(sa, c.g.rank(sx)).is_some_and(|a| a.same_as(axes))
            }
            // Without a known row length a constant N cannot be checked; exporters fold N only
            // from static shapes, so an unknown length with a constant N is refused.
            RowCount::Constant(n) => known_len().is_some_and(|len| len == *n),
            RowCount::Factor(f) => known_len()
                .is_some_and(|len| len > 1.0 && ((len / (len - 1.0)) - f).abs() <= 1e-6 * f.abs()),
            // Checked where it was read (`Canon::sum_divided`) against that sum's own input.
            RowCount::RowLength => true,
        }
    }
}

fn row_count(c: &Canon<'_, '_>, value: &str, aux: &mut Vec<NodeId>) -> Option<RowCount> {
    if let Some(n) = c.scalar(value) {
        return Some(RowCount::Constant(n));
    }
    let count = c.element_count(value)?;
    aux.extend(count.nodes);
    Some(RowCount::Dynamic {
        x: count.x,
        axes: count.axes,
    })
}

/// `N - 1` for the same `N` (the same chain, or a constant one less): returns the nodes.
fn n_minus_one(
    c: &Canon<'_, '_>,
    value: &str,
    n: &RowCount,
    aux: &mut Vec<NodeId>,
) -> Option<Vec<NodeId>> {
    match n {
        RowCount::Constant(nv) => (c.scalar(value)? == nv - 1.0).then(Vec::new),
        RowCount::Dynamic { .. } => {
            // fp16 models subtract in float and cast the difference back.
            let (value, crossed) = c.origin(value);
            let (sub_id, sub) = c.op(&value, "Sub")?;
            if c.scalar(sub.input.get(1)?)? != 1.0 {
                return None;
            }
            let mut scratch = Vec::new();
            match row_count(c, sub.input.first()?, &mut scratch)? {
                RowCount::Dynamic { x, axes } if matches!(n, RowCount::Dynamic { x: nx, axes: na } if *nx == x && *na == axes) =>
                {
                    aux.extend(scratch);
                    Some([crossed, vec![sub_id]].concat())
                }
                _ => None,
            }
        }
        RowCount::Factor(_) | RowCount::RowLength => None,
    }
}
