//! The grammar of normalisations: every LayerNorm form the matcher claims (README,
//! "What it recognises"; built as `tests/it/matcher_forms.rs` builds them) and the near-misses one
//! check away from a form, which must be left alone or reported not rewritable. A near-miss needs
//! no expected answer of its own: if the matcher takes it for a LayerNorm, a rewrite that claims
//! the same function computes something else, and the differential check sees it.

use super::graph::{Dim, A, F16, F32, G, I64, I8};
use super::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `LayerNormalization` (any opset, as ONNX Runtime saves it below 17 too).
    Fused,
    /// PyTorch's decomposed LayerNorm and its variants (square, root, reciprocal, γ placement).
    Decomposed,
    /// LayerNorm-simple / Annotated Transformer: unbiased std, ε after the root.
    Simple,
    /// lancopku's AdaNorm.
    AdaNorm,
    /// AdaNorm as the paper writes it: a LayerNorm without affine, then `C·(1 − k·y)·y` in one
    /// of its orders, and its near-misses (`PaperMiss`).
    PaperAdaNorm,
    /// RMSNorm: never a LayerNorm, never rewritten.
    RmsNorm,
    /// A LayerNorm over axis 1 of `[N, C, L]` with `[C, 1]` parameters (ConvNeXt's LayerNorm2d).
    ChannelsFirst,
}

/// One check the matcher relies on, broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    None,
    /// The variance's mean over other axes than the centring mean.
    VarAxes,
    /// The variance reduced with `keepdims = 0` and used without giving its dimension back.
    KeepdimsNoRestore,
    Pow3,
    /// ε a graph input.
    EpsInput,
    /// A one-element ε of higher rank than X (`[1,1,1,1]` on a rank-3 input): broadcasting it
    /// changes the output's shape.
    EpsHighRank,
    /// A one-element γ of higher rank than X.
    GammaHighRank,
    /// γ along another axis (`[S, 1]`).
    ParamOtherAxis,
    /// γ varying across rows (`[B, 1, H]`, `[S, H]` for a last-axis norm).
    ParamNotPerRow,
    /// The mean also read outside the subgraph.
    MeanEscapes,
    /// The centred value also read outside.
    CentredEscapes,
    /// The variance clamped at a positive floor (`Max(var, 0.1)`, `Clip(var, 0.01)`).
    PositiveFloor,
    /// `float32 → float16 → float32` on the centred value.
    NarrowingCast,
    /// The variance rounded to int8 and back (`QuantizeLinear → DequantizeLinear`, QDQ).
    Quantised,
    /// A Bessel factor for another row length (LayerNorm-simple).
    WrongBessel,
    /// A mean written as a sum divided by another count than the row length.
    WrongCount,
}

pub const DECOMPOSED_MISSES: &[Miss] = &[
    Miss::VarAxes,
    Miss::KeepdimsNoRestore,
    Miss::Pow3,
    Miss::EpsInput,
    Miss::EpsHighRank,
    Miss::GammaHighRank,
    Miss::ParamOtherAxis,
    Miss::ParamNotPerRow,
    Miss::MeanEscapes,
    Miss::CentredEscapes,
    Miss::PositiveFloor,
    Miss::NarrowingCast,
    Miss::WrongCount,
    Miss::Quantised,
];

/// Where a norm is emitted and what the surroundings decided for it.
pub struct Env {
    /// Element type of X (and of the parameters).
    pub t: i32,
    pub opset: i64,
    /// X's dimensions at run time (symbolic ones are 2, as `runner::random_inputs` draws them).
    pub shape: Vec<i64>,
    /// Tensors the surroundings tie to this norm: γ, β, the opset-18 axes constant.
    pub gamma: Option<String>,
    pub beta: Option<String>,
    pub axes_const: Option<String>,
    /// Whether a graph input may be added (not inside an If branch or a function body).
    pub may_add_inputs: bool,
}

/// What was emitted.
pub struct Norm {
    pub y: String,
    /// Inner values the surroundings must also read (escapes).
    pub escapes: Vec<String>,
    pub gamma: Option<String>,
    pub label: String,
}

impl Env {
    fn rank(&self) -> usize {
        self.shape.len()
    }
    fn h(&self) -> i64 {
        *self.shape.last().unwrap()
    }
}

/// The normalised axes, in one of their spellings (negative or positive).
fn axes(rng: &mut Rng, rank: usize, n: usize) -> Vec<i64> {
    let neg = rng.chance(0.5);
    (rank - n..rank)
        .map(|a| {
            if neg {
                a as i64 - rank as i64
            } else {
                a as i64
            }
        })
        .collect()
}

fn mean(g: &mut G, env: &Env, x: &str, axes: &[i64], keepdims: Option<i64>) -> String {
    let mut attrs = vec![];
    if let Some(k) = keepdims {
        attrs.push(("keepdims", A::I(k)));
    }
    if env.opset >= 18 {
        let a = match &env.axes_const {
            Some(shared) => shared.clone(),
            None => g.constant(
                I64,
                &[axes.len() as i64],
                &axes.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            ),
        };
        g.op("ReduceMean", &[x, &a], attrs)
    } else {
        attrs.push(("axes", A::Is(axes.to_vec())));
        g.op("ReduceMean", &[x], attrs)
    }
}

/// How a mean is written.
#[derive(Clone, Copy, PartialEq)]
enum MeanKind {
    ReduceMean,
    /// `ReduceSum(x) / N` (opset >= 13: axes as an input).
    SumDivided,
    /// `Unsqueeze(ReduceMean(x, keepdims = 0))`: the dimensions given back.
    Unsqueezed,
}

fn draw_mean(rng: &mut Rng, env: &Env) -> MeanKind {
    if env.opset < 13 || env.axes_const.is_some() {
        return MeanKind::ReduceMean;
    }
    *rng.pick(&[
        MeanKind::ReduceMean,
        MeanKind::ReduceMean,
        MeanKind::SumDivided,
        MeanKind::Unsqueezed,
    ])
}

// One knob per near-miss a mean can carry; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn mean_as(
    g: &mut G,
    rng: &mut Rng,
    env: &Env,
    t: i32,
    x: &str,
    axes: &[i64],
    keepdims: Option<i64>,
    kind: MeanKind,
    count_off: f64,
) -> String {
    let axes_t = |g: &mut G| {
        g.constant(
            I64,
            &[axes.len() as i64],
            &axes.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        )
    };
    match kind {
        MeanKind::ReduceMean => mean(g, env, x, axes, keepdims),
        MeanKind::SumDivided => {
            let a = axes_t(g);
            let s = g.op("ReduceSum", &[x, &a], vec![("keepdims", A::I(1))]);
            let r = env.rank() as i64;
            let n: i64 = axes
                .iter()
                .map(|&ax| env.shape[((ax + r) % r) as usize])
                .product();
            let nn = number(g, rng, t, &[], n as f64 + count_off);
            g.op("Div", &[&s, &nn], vec![])
        }
        MeanKind::Unsqueezed => {
            let mut attrs = vec![("keepdims", A::I(0))];
            let m = if env.opset >= 18 {
                let a = axes_t(g);
                g.op("ReduceMean", &[x, &a], attrs)
            } else {
                attrs.push(("axes", A::Is(axes.to_vec())));
                g.op("ReduceMean", &[x], attrs)
            };
            let a = axes_t(g);
            g.op("Unsqueeze", &[&m, &a], vec![])
        }
    }
}

/// A float constant, as a `Constant` node or an initializer (exporters write both).
fn number(g: &mut G, rng: &mut Rng, t: i32, dims: &[i64], v: f64) -> String {
    if g.consts_only || rng.chance(0.7) {
        g.constant(t, dims, &[v])
    } else {
        g.init("c", t, dims, &[v])
    }
}

/// A parameter tensor of `dims` (γ around 1, β around 0).
fn param(g: &mut G, rng: &mut Rng, env: &Env, stem: &str, dims: &[i64], around: f64) -> String {
    let n: i64 = dims.iter().product();
    let vals: Vec<f64> = rng
        .values(n as usize, -0.5, 0.5)
        .iter()
        .map(|v| around + v)
        .collect();
    g.init(stem, env.t, dims, &vals)
}

/// The per-row parameter shape, or the near-miss's.
fn param_dims(rng: &mut Rng, env: &Env, n_axes: usize, miss: Miss, is_gamma: bool) -> Vec<i64> {
    let s = &env.shape;
    let r = s.len();
    match miss {
        Miss::GammaHighRank if is_gamma => vec![1; r + 1],
        Miss::ParamOtherAxis if is_gamma && r >= 2 => vec![s[r - 2], 1],
        Miss::ParamNotPerRow if is_gamma && r >= 2 => {
            if r == 3 && rng.chance(0.5) {
                vec![s[0], 1, s[2]]
            } else if n_axes == 1 {
                vec![s[r - 2], s[r - 1]]
            } else {
                vec![s[0], s[1], s[2]]
            }
        }
        _ => {
            let mut d = s[r - n_axes..].to_vec();
            // A leading 1 broadcasts like the plain shape.
            if rng.chance(0.15) {
                d.insert(0, 1);
            }
            d
        }
    }
}

/// γ and β for a norm: the tied ones, or new ones (each present with some probability).
fn affine(
    g: &mut G,
    rng: &mut Rng,
    env: &Env,
    n_axes: usize,
    miss: Miss,
    need_gamma: bool,
) -> (Option<String>, Option<String>) {
    let gamma = match &env.gamma {
        Some(t) => Some(t.clone()),
        None if need_gamma || rng.chance(0.8) => {
            let d = param_dims(rng, env, n_axes, miss, true);
            Some(param(g, rng, env, "gamma", &d, 1.0))
        }
        None => None,
    };
    let beta = match &env.beta {
        Some(t) => Some(t.clone()),
        None if rng.chance(0.7) => {
            let d = param_dims(rng, env, n_axes, miss, false);
            Some(param(g, rng, env, "beta", &d, 0.0))
        }
        None => None,
    };
    (gamma, beta)
}

fn apply_affine(
    g: &mut G,
    rng: &mut Rng,
    n: String,
    gamma: Option<&str>,
    beta: Option<&str>,
) -> String {
    let mut y = n;
    if let Some(gm) = gamma {
        y = if rng.chance(0.5) {
            g.op("Mul", &[&y, gm], vec![])
        } else {
            g.op("Mul", &[gm, &y], vec![])
        };
    }
    if let Some(b) = beta {
        y = if rng.chance(0.5) {
            g.op("Add", &[&y, b], vec![])
        } else {
            g.op("Add", &[b, &y], vec![])
        };
    }
    y
}

/// Picks a form and a near-miss that fit `env`.
pub fn draw(rng: &mut Rng, env: &Env) -> (Form, Miss) {
    let form = *rng.pick(&[
        Form::Fused,
        Form::Decomposed,
        Form::Decomposed,
        Form::Decomposed,
        Form::Simple,
        Form::AdaNorm,
        Form::RmsNorm,
        Form::ChannelsFirst,
    ]);
    // Over fewer than 3 channels a float16 variance is ill-conditioned (two nearly equal values
    // leave float16 rounding, not the rewrite, to decide the output).
    let form = if form == Form::ChannelsFirst && (env.rank() != 3 || env.shape[1] < 3) {
        Form::Decomposed
    } else {
        form
    };
    // Half the AdaNorms the paper's way (drawn after the pick, so that the other forms' draws
    // are as they were).
    let form = if form == Form::AdaNorm && rng.chance(0.5) {
        Form::PaperAdaNorm
    } else {
        form
    };
    let miss = match form {
        Form::Decomposed if rng.chance(0.4) => *rng.pick(DECOMPOSED_MISSES),
        Form::Simple if rng.chance(0.2) => Miss::WrongBessel,
        _ => Miss::None,
    };
    let miss = match miss {
        Miss::EpsInput if !env.may_add_inputs => Miss::None,
        Miss::NarrowingCast | Miss::Quantised if env.t != F32 => Miss::None,
        // Needs a square rank-2 input; the surroundings choose the shape for it (see `needs_square`).
        Miss::KeepdimsNoRestore if !(env.rank() == 2 && env.shape[0] == env.shape[1]) => Miss::None,
        Miss::VarAxes | Miss::ParamOtherAxis | Miss::ParamNotPerRow if env.rank() < 2 => Miss::None,
        m => m,
    };
    (form, miss)
}

pub fn emit(g: &mut G, rng: &mut Rng, env: &Env, x: &str, form: Form, miss: Miss) -> Norm {
    match form {
        Form::Fused => fused(g, rng, env, x),
        Form::Decomposed => decomposed(g, rng, env, x, miss),
        Form::Simple => simple(g, rng, env, x, miss),
        Form::AdaNorm => adanorm(g, rng, env, x),
        Form::PaperAdaNorm => paper_adanorm(g, rng, env, x),
        Form::RmsNorm => rmsnorm(g, rng, env, x),
        Form::ChannelsFirst => channels_first(g, rng, env, x),
    }
}

fn epsilon(rng: &mut Rng) -> f64 {
    *rng.pick(&[1e-5, 1e-6, 1e-12, 1e-3])
}

fn fused(g: &mut G, rng: &mut Rng, env: &Env, x: &str) -> Norm {
    let n_axes = if env.rank() == 3 && rng.chance(0.2) {
        2
    } else {
        1
    };
    let (gamma, beta) = affine(g, rng, env, n_axes, Miss::None, true);
    // LayerNormalization wants Scale of exactly the normalised shape.
    let gamma = gamma.unwrap();
    let eps = epsilon(rng);
    let mut ins = vec![x, gamma.as_str()];
    if let Some(b) = &beta {
        ins.push(b);
    }
    let axis = if rng.chance(0.5) {
        -(n_axes as i64)
    } else {
        (env.rank() - n_axes) as i64
    };
    let attrs = vec![("axis", A::I(axis)), ("epsilon", A::F(eps as f32))];
    // (The type test comes after the draw, so that the other cases' streams stay as they were.)
    let (y, escapes) = if env.opset >= 17 && rng.chance(0.15) && env.t == F32 {
        // The Mean output read too: float32 (the default stash_type), so only in float32
        // models, where the surroundings may add it to float32 values (fuzz seed 9129).
        let (y, m) = (g.fresh("ln_y"), g.fresh("ln_mean"));
        g.node("", "LayerNormalization", &ins, &[&y, &m], attrs);
        (y, vec![m])
    } else {
        (g.op("LayerNormalization", &ins, attrs), vec![])
    };
    Norm {
        y,
        escapes,
        gamma: Some(gamma),
        label: format!("fused axis={axis}"),
    }
}

fn decomposed(g: &mut G, rng: &mut Rng, env: &Env, x0: &str, miss: Miss) -> Norm {
    let rank = env.rank();
    let n_axes = if rank == 3 && miss != Miss::VarAxes && rng.chance(0.15) {
        2
    } else {
        1
    };
    let ax = axes(rng, rank, n_axes);
    let keepdims = if rng.chance(0.5) { None } else { Some(1) };
    let mut label = format!("decomposed axes={ax:?}");
    // PyTorch's float16 export at opset <= 16: the statistics in float between Casts.
    let stats_in_float = env.t == F16 && rng.chance(0.4);
    let t = if stats_in_float { F32 } else { env.t };
    let x = if stats_in_float {
        label += " stats-in-float";
        g.op("Cast", &[x0], vec![("to", A::I(F32 as i64))])
    } else {
        x0.to_string()
    };
    // A float16 norm whose statistics ops each run in float32 between Casts, every result
    // rounded back to float16 (onnxconverter-common's op_block_list): rewritable, and computed
    // at least as precisely by the fused node.
    let islands = env.t == F16 && !stats_in_float && miss == Miss::None && rng.chance(0.3);
    if islands {
        label += " islands";
    }
    let to = |g: &mut G, v: &str, t: i32| g.op("Cast", &[v], vec![("to", A::I(t as i64))]);
    let isl = |g: &mut G, op: &str, ins: &[&str]| -> String {
        if !islands {
            return g.op(op, ins, vec![]);
        }
        let wide: Vec<String> = ins.iter().map(|v| to(g, v, F32)).collect();
        let refs: Vec<&str> = wide.iter().map(String::as_str).collect();
        let r = g.op(op, &refs, vec![]);
        to(g, &r, F16)
    };
    // The means in float32 on a widened input, rounded back (`t` is the numbers' type).
    let (mt, wide_x) = if islands {
        (F32, to(g, &x, F32))
    } else {
        (t, x.clone())
    };
    let kind = draw_mean(rng, env);
    let wrong_count = if miss == Miss::WrongCount { 1.0 } else { 0.0 };
    let kind = if miss == Miss::WrongCount {
        MeanKind::SumDivided
    } else {
        kind
    };
    if kind == MeanKind::SumDivided {
        label += " sums";
    } else if kind == MeanKind::Unsqueezed {
        label += " unsqueezed";
    }
    let m = mean_as(g, rng, env, mt, &wide_x, &ax, keepdims, kind, wrong_count);
    let m = if islands { to(g, &m, F16) } else { m };
    let d = isl(g, "Sub", &[&x, &m]);
    let d2 = if rng.chance(0.15) {
        isl(g, "Sub", &[&x, &m])
    } else {
        d.clone()
    };
    let dq = if miss == Miss::NarrowingCast {
        let h = g.op("Cast", &[&d], vec![("to", A::I(F16 as i64))]);
        g.op("Cast", &[&h], vec![("to", A::I(F32 as i64))])
    } else {
        d.clone()
    };
    let moments = miss == Miss::None && kind == MeanKind::ReduceMean && rng.chance(0.15);
    let sq = if moments {
        String::new()
    } else if rng.chance(0.6) || miss == Miss::Pow3 {
        let e = if miss == Miss::Pow3 { 3.0 } else { 2.0 };
        let two = number(g, rng, t, &[], e);
        isl(g, "Pow", &[&dq, &two])
    } else {
        isl(g, "Mul", &[&dq, &dq])
    };
    let var_axes = if miss == Miss::VarAxes {
        // Another axis of a rank >= 2 input: the one before the last.
        vec![ax[0] - 1]
    } else {
        ax.clone()
    };
    let var_keep = if miss == Miss::KeepdimsNoRestore {
        Some(0)
    } else {
        keepdims
    };
    let mut v = if moments {
        // E[x²] − E[x]²
        label += " moments";
        let xx = g.op("Mul", &[&x, &x], vec![]);
        let ex2 = mean(g, env, &xx, &ax, keepdims);
        let m2 = g.op("Mul", &[&m, &m], vec![]);
        g.op("Sub", &[&ex2, &m2], vec![])
    } else if islands {
        let wide_sq = to(g, &sq, F32);
        let v = if kind == MeanKind::ReduceMean {
            mean(g, env, &wide_sq, &var_axes, var_keep)
        } else {
            mean_as(g, rng, env, F32, &wide_sq, &var_axes, keepdims, kind, 0.0)
        };
        to(g, &v, F16)
    } else if miss == Miss::KeepdimsNoRestore || kind == MeanKind::ReduceMean {
        mean(g, env, &sq, &var_axes, var_keep)
    } else {
        mean_as(g, rng, env, t, &sq, &var_axes, keepdims, kind, 0.0)
    };
    match miss {
        Miss::Quantised => {
            let scale = number(g, rng, t, &[], 0.01);
            let zero = g.constant(I8, &[], &[-128.0]);
            let q = g.op("QuantizeLinear", &[&v, &scale, &zero], vec![]);
            v = g.op("DequantizeLinear", &[&q, &scale, &zero], vec![]);
            label += " qdq";
        }
        Miss::PositiveFloor => {
            let floor = number(g, rng, t, &[], 0.1);
            v = if rng.chance(0.5) {
                g.op("Max", &[&v, &floor], vec![])
            } else {
                g.op("Clip", &[&v, &floor], vec![])
            };
            label += " floor";
        }
        _ if rng.chance(0.1) => {
            // A guard that cannot change a variance (jax2onnx's Max(var, 0)).
            let zero = number(g, rng, t, &[], 0.0);
            v = g.op("Max", &[&v, &zero], vec![]);
        }
        _ => {}
    }
    let eps = if rng.chance(0.1) {
        None
    } else {
        Some(epsilon(rng))
    };
    let ve = match (eps, miss) {
        (_, Miss::EpsInput) => {
            let e = g.input("eps", t, &[]);
            g.op("Add", &[&v, &e], vec![])
        }
        (_, Miss::EpsHighRank) => {
            let e = number(g, rng, t, &vec![1; rank + 1], 1e-5);
            g.op("Add", &[&v, &e], vec![])
        }
        (Some(e), _) => {
            let dims: &[i64] = if rng.chance(0.2) { &[1] } else { &[] };
            let e = number(g, rng, t, dims, e);
            isl(g, "Add", &[&v, &e])
        }
        (None, _) => v,
    };
    // γ is made in the norm's own type: with statistics in float it is applied after the Cast back.
    let (gamma, beta) = affine(g, rng, env, n_axes, miss, false);
    let gamma_before_div = gamma.is_some() && !stats_in_float && rng.chance(0.2);
    let num = if gamma_before_div {
        let gm = gamma.as_deref().unwrap();
        if rng.chance(0.5) {
            g.op("Mul", &[gm, &d2], vec![])
        } else {
            g.op("Mul", &[&d2, gm], vec![])
        }
    } else {
        d2.clone()
    };
    let root = |g: &mut G, rng: &mut Rng, ve: &str| -> String {
        if rng.chance(0.8) {
            isl(g, "Sqrt", &[ve])
        } else {
            let half = number(g, rng, t, &[], 0.5);
            g.op("Pow", &[ve, &half], vec![])
        }
    };
    let gamma_in_reciprocal = std::cell::Cell::new(false);
    let n = match rng.below(4) {
        0 | 1 => {
            let s = root(g, rng, &ve);
            isl(g, "Div", &[&num, &s])
        }
        2 => {
            let s = root(g, rng, &ve);
            let r = if rng.chance(0.5) {
                g.op("Reciprocal", &[&s], vec![])
            } else {
                let one = number(g, rng, t, &[], 1.0);
                g.op("Div", &[&one, &s], vec![])
            };
            // tf2onnx: the gain multiplied into the reciprocal, (x − mean)·(rsqrt(var + ε)·γ).
            let r = match gamma.as_deref() {
                Some(gm)
                    if !gamma_before_div
                        && !gamma_in_reciprocal.get()
                        && !stats_in_float
                        && rng.chance(0.3) =>
                {
                    gamma_in_reciprocal.set(true);
                    g.op("Mul", &[&r, gm], vec![])
                }
                _ => r,
            };
            if rng.chance(0.5) {
                g.op("Mul", &[&r, &num], vec![])
            } else {
                g.op("Mul", &[&num, &r], vec![])
            }
        }
        _ => {
            let mhalf = number(g, rng, t, &[], -0.5);
            let r = g.op("Pow", &[&ve, &mhalf], vec![]);
            g.op("Mul", &[&num, &r], vec![])
        }
    };
    let n = if stats_in_float {
        g.op("Cast", &[&n], vec![("to", A::I(F16 as i64))])
    } else {
        n
    };
    let gamma_after = if gamma_before_div || gamma_in_reciprocal.get() {
        None
    } else {
        gamma.as_deref()
    };
    let y = apply_affine(g, rng, n, gamma_after, beta.as_deref());
    let mut escapes = vec![];
    match miss {
        Miss::MeanEscapes => escapes.push(m),
        Miss::CentredEscapes => escapes.push(d),
        _ => {}
    }
    // The statistics are float32 there: what escapes is read in the norm's own type.
    if stats_in_float {
        escapes = escapes
            .iter()
            .map(|e| g.op("Cast", &[e], vec![("to", A::I(F16 as i64))]))
            .collect();
    }
    if miss != Miss::None {
        label += &format!(" miss={miss:?}");
    }
    Norm {
        y,
        escapes,
        gamma,
        label,
    }
}

/// `N/(N−1)` (folded, or through Shape/Gather/ReduceProd/Cast) times the variance, its root, ε
/// after the root; returns (centred value, denominator). As `tests/it/matcher_forms.rs` has it.
fn unbiased_std(g: &mut G, rng: &mut Rng, env: &Env, x: &str, miss: Miss) -> (String, String) {
    let t = env.t;
    let ax = axes(rng, env.rank(), 1);
    let m1 = mean(g, env, x, &ax, Some(1));
    let m2 = if rng.chance(0.5) {
        mean(g, env, x, &ax, Some(1))
    } else {
        m1.clone()
    };
    let s2 = g.op("Sub", &[x, &m2], vec![]);
    let sq = g.op("Mul", &[&s2, &s2], vec![]);
    let v = mean(g, env, &sq, &ax, Some(1));
    let h = env.h() as f64;
    let vu = if rng.chance(0.5) || miss == Miss::WrongBessel {
        let nn = if miss == Miss::WrongBessel { 64.0 } else { h };
        let n = g.scalar(t, nn);
        let n1 = g.scalar(t, nn - 1.0);
        let vn = g.op("Mul", &[&v, &n], vec![]);
        g.op("Div", &[&vn, &n1], vec![])
    } else {
        let shape = g.op("Shape", &[x], vec![]);
        let idx = g.constant(I64, &[1], &[-1.0]);
        let gat = g.op("Gather", &[&shape, &idx], vec![("axis", A::I(0))]);
        let prod = g.op("ReduceProd", &[&gat], vec![("keepdims", A::I(0))]);
        let n = g.op("Cast", &[&prod], vec![("to", A::I(t as i64))]);
        let vn = g.op("Mul", &[&v, &n], vec![]);
        let one = g.scalar(t, 1.0);
        let n1 = g.op("Sub", &[&n, &one], vec![]);
        g.op("Div", &[&vn, &n1], vec![])
    };
    let sd = g.op("Sqrt", &[&vu], vec![]);
    let e = g.scalar(t, *rng.pick(&[1e-6, 1e-5]));
    let den = g.op("Add", &[&sd, &e], vec![]);
    let xc = g.op("Sub", &[x, &m1], vec![]);
    (xc, den)
}

fn simple(g: &mut G, rng: &mut Rng, env: &Env, x: &str, miss: Miss) -> Norm {
    let (xc, den) = unbiased_std(g, rng, env, x, miss);
    let (gamma, beta) = affine(g, rng, env, 1, Miss::None, false);
    let n = match &gamma {
        Some(gm) if rng.chance(0.6) => {
            let gx = g.op("Mul", &[gm, &xc], vec![]);
            let n = g.op("Div", &[&gx, &den], vec![]);
            apply_affine(g, rng, n, None, beta.as_deref())
        }
        _ => {
            let n = g.op("Div", &[&xc, &den], vec![]);
            apply_affine(g, rng, n, gamma.as_deref(), beta.as_deref())
        }
    };
    Norm {
        y: n,
        escapes: vec![],
        gamma,
        label: format!("simple miss={miss:?}"),
    }
}

fn adanorm(g: &mut G, rng: &mut Rng, env: &Env, x: &str) -> Norm {
    let t = env.t;
    let (xc, den) = unbiased_std(g, rng, env, x, Miss::None);
    let ax = axes(rng, env.rank(), 1);
    let m3 = mean(g, env, &xc, &ax, Some(1));
    let xcc = g.op("Sub", &[&xc, &m3], vec![]);
    let k = *rng.pick(&[0.1, 0.2, 0.5]);
    let kc = g.scalar(t, k);
    let tk = g.op("Mul", &[&xcc, &kc], vec![]);
    let gra = g.op("Div", &[&tk, &den], vec![]);
    let p = g.op("Mul", &[&xc, &gra], vec![]);
    let w = g.op("Sub", &[&xc, &p], vec![]);
    let mut y = g.op("Div", &[&w, &den], vec![]);
    let c = if rng.chance(0.6) {
        Some(*rng.pick(&[1.0, 2.0, 0.5]))
    } else {
        None
    };
    if let Some(c) = c {
        let cc = g.scalar(t, c);
        y = g.op("Mul", &[&y, &cc], vec![]);
    }
    Norm {
        y,
        escapes: vec![],
        gamma: None,
        label: format!("adanorm k={k} c={c:?}"),
    }
}

/// One check of the paper-form AdaNorm broken: each leaves a LayerNorm with the factor outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PaperMiss {
    None,
    /// `(1 − k·y)·x`: the factor multiplies the input, not `y`.
    TimesX,
    /// `(2 − k·y)·y`.
    TwoMinus,
    /// The factor also read outside.
    FactorEscapes,
    /// `y` also read outside.
    YEscapes,
}

fn paper_adanorm(g: &mut G, rng: &mut Rng, env: &Env, x: &str) -> Norm {
    let t = env.t;
    let h = env.h();
    let fused_inner = env.opset >= 17 && rng.chance(0.3);
    let y = if fused_inner {
        let ones = g.constant(t, &[h], &vec![1.0; h as usize]);
        let attrs = vec![("axis", A::I(-1)), ("epsilon", A::F(epsilon(rng) as f32))];
        g.op("LayerNormalization", &[x, &ones], attrs)
    } else {
        let ax = axes(rng, env.rank(), 1);
        let m = mean(g, env, x, &ax, Some(1));
        let d = g.op("Sub", &[x, &m], vec![]);
        let two = g.scalar(t, 2.0);
        let sq = g.op("Pow", &[&d, &two], vec![]);
        let v = mean(g, env, &sq, &ax, Some(1));
        let e = g.scalar(t, epsilon(rng));
        let ve = g.op("Add", &[&v, &e], vec![]);
        let s = g.op("Sqrt", &[&ve], vec![]);
        g.op("Div", &[&d, &s], vec![])
    };
    let miss = if rng.chance(0.3) {
        *rng.pick(&[
            PaperMiss::TimesX,
            PaperMiss::TwoMinus,
            PaperMiss::FactorEscapes,
            PaperMiss::YEscapes,
        ])
    } else {
        PaperMiss::None
    };
    let k = *rng.pick(&[0.1, 0.2, 0.5]);
    // `.detach()` is an Identity in TorchScript and jax2onnx exports, gone in dynamo's.
    let detached = if rng.chance(0.5) {
        g.op("Identity", &[&y], vec![])
    } else {
        y.clone()
    };
    let ky = match rng.below(3) {
        0 => {
            let d = g.scalar(t, 1.0 / k);
            g.op("Div", &[&detached, &d], vec![])
        }
        1 => {
            let kc = g.scalar(t, k);
            g.op("Mul", &[&kc, &detached], vec![])
        }
        _ => {
            let kc = g.scalar(t, k);
            g.op("Mul", &[&detached, &kc], vec![])
        }
    };
    let one = g.scalar(
        t,
        if miss == PaperMiss::TwoMinus {
            2.0
        } else {
            1.0
        },
    );
    // `1 + k·y` is AdaNorm with −k.
    let f = match rng.below(4) {
        0 => g.op("Add", &[&ky, &one], vec![]),
        _ => g.op("Sub", &[&one, &ky], vec![]),
    };
    let other: &str = if miss == PaperMiss::TimesX { x } else { &y };
    let c = *rng.pick(&[None, Some(2.0), Some(0.5), Some(1.5)]);
    let z = match (c, rng.below(3)) {
        (None, 0) => g.op("Mul", &[other, &f], vec![]),
        (None, _) => g.op("Mul", &[&f, other], vec![]),
        (Some(c), 0) => {
            let cc = g.scalar(t, c);
            let cf = g.op("Mul", &[&cc, &f], vec![]);
            g.op("Mul", &[&cf, other], vec![])
        }
        (Some(c), 1) => {
            let cc = g.scalar(t, c);
            let p = g.op("Mul", &[other, &f], vec![]);
            g.op("Mul", &[&p, &cc], vec![])
        }
        (Some(c), _) => {
            let cc = g.scalar(t, c);
            let cy = g.op("Mul", &[other, &cc], vec![]);
            g.op("Mul", &[&cy, &f], vec![])
        }
    };
    let (gamma, beta) = affine(g, rng, env, 1, Miss::None, false);
    let z = apply_affine(g, rng, z, gamma.as_deref(), beta.as_deref());
    let escapes = match miss {
        PaperMiss::FactorEscapes => vec![f],
        PaperMiss::YEscapes => vec![y],
        _ => vec![],
    };
    Norm {
        y: z,
        escapes,
        gamma,
        label: format!("paper adanorm fused={fused_inner} k={k} c={c:?} miss={miss:?}"),
    }
}

fn channels_first(g: &mut G, rng: &mut Rng, env: &Env, x: &str) -> Norm {
    let t = env.t;
    let c = env.shape[1];
    let m = mean(g, env, x, &[1], Some(1));
    let d = g.op("Sub", &[x, &m], vec![]);
    let two = g.scalar(t, 2.0);
    let p = g.op("Pow", &[&d, &two], vec![]);
    let v = mean(g, env, &p, &[1], Some(1));
    let e = g.scalar(t, 1e-6);
    let ve = g.op("Add", &[&v, &e], vec![]);
    let s = g.op("Sqrt", &[&ve], vec![]);
    let n = g.op("Div", &[&d, &s], vec![]);
    let dims: &[i64] = if rng.chance(0.5) { &[c, 1] } else { &[1, c, 1] };
    // (A function body has no initializers: there the parameters are the function's inputs.)
    let gamma = match &env.gamma {
        Some(gm) if g.consts_only || rng.chance(0.3) => gm.clone(),
        _ => param(g, rng, env, "cf_gamma", dims, 1.0),
    };
    let beta = if g.consts_only {
        env.beta.clone()
    } else {
        rng.chance(0.7)
            .then(|| param(g, rng, env, "cf_beta", dims, 0.0))
    };
    let y = apply_affine(g, rng, n, Some(&gamma), beta.as_deref());
    Norm {
        y,
        escapes: vec![],
        gamma: Some(gamma),
        label: format!("channels-first {dims:?}"),
    }
}

fn rmsnorm(g: &mut G, rng: &mut Rng, env: &Env, x: &str) -> Norm {
    let t = env.t;
    let two = g.scalar(t, 2.0);
    let p = g.op("Pow", &[x, &two], vec![]);
    let ax = axes(rng, env.rank(), 1);
    let ms = mean(g, env, &p, &ax, Some(1));
    let e = g.scalar(t, 1e-6);
    let ve = g.op("Add", &[&ms, &e], vec![]);
    let s = g.op("Sqrt", &[&ve], vec![]);
    let r = g.op("Reciprocal", &[&s], vec![]);
    let gamma = match &env.gamma {
        Some(gm) => gm.clone(),
        None => {
            let d = vec![env.h()];
            param(g, rng, env, "rms_w", &d, 1.0)
        }
    };
    // Keras' RMSNormalization through tf2onnx: the gain into the inverse root, then x.
    let keras = rng.chance(0.3);
    let y = if keras {
        let rg = g.op("Mul", &[&r, &gamma], vec![]);
        g.op("Mul", &[x, &rg], vec![])
    } else {
        let n = g.op("Mul", &[x, &r], vec![]);
        g.op("Mul", &[&gamma, &n], vec![])
    };
    Norm {
        y,
        escapes: vec![],
        gamma: Some(gamma),
        label: format!("rmsnorm keras={keras}"),
    }
}

/// Dimensions as declared for an input whose run-time dimensions are `shape`: the leading ones
/// symbolic when asked (they are then 2 at run time).
pub fn declared(shape: &[i64], symbolic: bool) -> Vec<Dim> {
    let names = ["batch", "seq"];
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if symbolic && i + 1 < shape.len() && i < 2 {
                Dim::Named(names[i])
            } else {
                Dim::Known(d)
            }
        })
        .collect()
}
