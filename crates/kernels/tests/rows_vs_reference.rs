//! Property tests: the row kernels against `reference` on many seeded random cases, for every
//! element type, every attribute combination and both the out-of-place and in-place entry points.
//!
//! Each case draws a shape (rank 1-4, including N = 1, empty tensors and rows longer than one
//! summation block), an axis (negative or positive), data (plain, offset 1e4 with tiny spread,
//! constant rows, outliers), optional Scale/B of full or broadcast shapes, and an epsilon. The
//! reference runs in f64 on the inputs already rounded to the element type, so only the kernel's
//! own arithmetic is measured.

use adanorm_kernels::rows::{normalize_rows, normalize_rows_in_place, Accumulator, Element};
use adanorm_kernels::{expand_param, reference, row_layout, Params, Variant};
use half::{bf16, f16};

/// SplitMix64: tiny, deterministic, good enough to spread test cases.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Approximately standard normal (Irwin-Hall with 12 terms).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }
}

/// The test's view of an element type: exact conversions and the spec's tolerances.
trait TestFloat: Element {
    const NAME: &'static str;
    /// Max abs error of Y, relative to max(1, |Y|).
    const Y_TOL: f64;
    /// Max error of Mean / InvStdDev, relative; they are computed in `Acc`.
    const STATS_TOL: f64;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl TestFloat for f32 {
    const NAME: &'static str = "f32";
    const Y_TOL: f64 = 1e-5;
    const STATS_TOL: f64 = 1e-5;
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl TestFloat for f64 {
    const NAME: &'static str = "f64";
    const Y_TOL: f64 = 1e-12;
    const STATS_TOL: f64 = 1e-12;
    fn from_f64(v: f64) -> f64 {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
}

impl TestFloat for f16 {
    const NAME: &'static str = "f16";
    const Y_TOL: f64 = 1e-2;
    const STATS_TOL: f64 = 1e-5;
    fn from_f64(v: f64) -> f16 {
        f16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
}

impl TestFloat for bf16 {
    const NAME: &'static str = "bf16";
    const Y_TOL: f64 = 2e-2;
    const STATS_TOL: f64 = 1e-5;
    fn from_f64(v: f64) -> bf16 {
        bf16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
}

#[derive(Debug, Clone)]
struct Param {
    values: Vec<f64>,
    shape: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Case {
    shape: Vec<usize>,
    axis: i64,
    x: Vec<f64>,
    scale: Option<Param>,
    bias: Option<Param>,
    epsilon: f64,
    /// AdaNorm's (c, k) when the case runs as AdaNorm.
    ada: (f64, f64),
}

const DIMS: &[usize] = &[1, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 33, 64, 100];
const EPSILONS: &[f64] = &[0.0, 1e-12, 1e-5, 1e-3, 0.5];

fn random_shape(rng: &mut Rng) -> Vec<usize> {
    if rng.chance(0.05) {
        // Longer than one summation block, so block restarts are exercised.
        return vec![rng.pick(&[1, 2]), rng.pick(&[1023, 1024, 1025, 2100])];
    }
    loop {
        let rank = 1 + rng.below(4);
        let mut shape: Vec<usize> = (0..rank).map(|_| rng.pick(DIMS)).collect();
        if rng.chance(0.05) {
            let d = rng.below(rank);
            shape[d] = 0;
        }
        if shape.iter().product::<usize>() <= 3000 {
            return shape;
        }
    }
}

fn random_param(rng: &mut Rng, normalized: &[usize], center: f64) -> Option<Param> {
    if rng.chance(0.3) {
        return None;
    }
    let rank = rng.below(normalized.len() + 1);
    let shape: Vec<usize> = normalized[normalized.len() - rank..]
        .iter()
        .map(|&d| if rng.chance(0.3) { 1 } else { d })
        .collect();
    let len = shape.iter().product();
    let values = (0..len).map(|_| center + rng.range(-1.0, 1.0)).collect();
    Some(Param { values, shape })
}

fn random_data(rng: &mut Rng, len: usize, row_len: usize) -> Vec<f64> {
    match rng.below(5) {
        0 | 1 => {
            let (mu, s) = (rng.range(-3.0, 3.0), rng.pick(&[0.1, 1.0, 10.0]));
            (0..len).map(|_| mu + s * rng.normal()).collect()
        }
        2 => {
            // A large mean with a small spread: the case E[x^2] - E[x]^2 gets wrong.
            let mu = rng.pick(&[1e4, -1e4, 3e3]);
            let spread = rng.pick(&[1e-2, 1.0, 100.0]);
            (0..len).map(|_| mu + spread * rng.normal()).collect()
        }
        3 => {
            // Constant rows: var = 0, so eps = 0 gives sigma = 0 and y = 0/0. Values are
            // multiples of 1/8 so that even the f64 reference sums them exactly; arbitrary
            // constants are tested against the kernel alone in `rows`.
            let mut x = Vec::with_capacity(len);
            while x.len() < len {
                let v = (rng.below(81) as f64 - 40.0) / 8.0;
                x.extend(std::iter::repeat_n(v, row_len.max(1)));
            }
            x.truncate(len);
            x
        }
        _ => {
            // Mostly small values with rare outliers.
            (0..len)
                .map(|_| {
                    if rng.chance(0.02) {
                        50.0 * rng.normal()
                    } else {
                        rng.normal()
                    }
                })
                .collect()
        }
    }
}

fn random_case(rng: &mut Rng) -> Case {
    let shape = random_shape(rng);
    let r = shape.len() as i64;
    let axis = rng.below(2 * shape.len()) as i64 - r;
    let axis = if rng.chance(0.5) && axis < 0 {
        axis + r
    } else {
        axis
    };
    let layout = row_layout(&shape, axis).unwrap();
    let normalized = &shape[layout.axis..];
    let x = random_data(rng, layout.rows * layout.row_len, layout.row_len);
    let scale = random_param(rng, normalized, 1.0);
    let bias = random_param(rng, normalized, 0.0);
    let epsilon = rng.pick(EPSILONS);
    let ada = (
        rng.pick(&[1.0, 0.5, 2.0, -1.5]),
        rng.pick(&[0.0, 0.1, 0.25, 0.5]),
    );
    Case {
        shape,
        axis,
        x,
        scale,
        bias,
        epsilon,
        ada,
    }
}

/// All eight (variant, unbiased, eps_in_sqrt) combinations for a case.
fn all_params(case: &Case) -> Vec<Params> {
    let mut out = Vec::new();
    for variant in [
        Variant::AdaNorm {
            c: case.ada.0,
            k: case.ada.1,
        },
        Variant::LayerNormSimple,
    ] {
        for unbiased in [false, true] {
            for eps_in_sqrt in [false, true] {
                out.push(Params {
                    variant,
                    epsilon: case.epsilon,
                    unbiased,
                    eps_in_sqrt,
                });
            }
        }
    }
    out
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// `got` matches `want` to `tol * max(1, |want|)`, with NaN only where `want` is NaN and
/// infinities matching exactly.
fn close(got: f64, want: f64, tol: f64) -> bool {
    if want.is_nan() || got.is_nan() || want.is_infinite() || got.is_infinite() {
        return same(got, want);
    }
    (got - want).abs() <= tol * want.abs().max(1.0)
}

/// How much the reference's own rounding is amplified on row `r` when it runs on f64 data.
///
/// The reference rounds `sum(x) / N` to f64 and subtracts that from every `x`, so its `d` (and,
/// with `eps_in_sqrt = 0`, its `sigma`) carry an error of about `eps_f64 * |mean|`, which `y`
/// sees divided by sigma. On f32/f16/bf16 data that error is far below the tolerance; on f64
/// data the tolerance is widened by `|mean| / sigma` (1 on ordinary rows). The kernels' corrected
/// mean is more exact than this, so it is the reference being allowed for here.
fn f64_reference_condition<T: TestFloat>(want: &adanorm_kernels::RefOutput, r: usize) -> f64 {
    if T::NAME == "f64" {
        let cond = want.mean[r].abs() * want.inv_std_dev[r];
        if cond.is_finite() {
            cond.max(1.0)
        } else {
            1.0
        }
    } else {
        1.0
    }
}

/// `got` matches `want` to `tol * |want|`; non-finite values must match exactly.
fn close_rel(got: f64, want: f64, tol: f64) -> bool {
    if !want.is_finite() || !got.is_finite() {
        return same(got, want);
    }
    (got - want).abs() <= tol * want.abs()
}

/// Values rounded to `T`, kept both as `T` (for the kernel) and as f64 (for the reference).
struct Rounded<T> {
    values: Vec<T>,
    exact: Vec<f64>,
    shape: Vec<usize>,
}

impl<T> Rounded<T> {
    fn exact(&self) -> (&[f64], &[usize]) {
        (&self.exact, &self.shape)
    }
}

fn round<T: TestFloat>(v: &[f64], shape: &[usize]) -> Rounded<T> {
    let values: Vec<T> = v.iter().map(|&v| T::from_f64(v)).collect();
    let exact = values.iter().map(|&v| v.to_f64()).collect();
    Rounded {
        values,
        exact,
        shape: shape.to_vec(),
    }
}

/// Runs one case with one set of params through both entry points and the reference; returns
/// the number of Y values compared.
fn check<T: TestFloat>(case: &Case, params: &Params) -> usize {
    let ctx = || {
        let shape = |p: &Option<Param>| p.as_ref().map(|p| p.shape.clone());
        format!(
            "{} {params:?}, X {:?} axis {}, Scale {:?}, B {:?}",
            T::NAME,
            case.shape,
            case.axis,
            shape(&case.scale),
            shape(&case.bias)
        )
    };
    let x = round::<T>(&case.x, &case.shape);
    let rounded = |p: &Option<Param>| p.as_ref().map(|p| round::<T>(&p.values, &p.shape));
    let (scale, bias) = (rounded(&case.scale), rounded(&case.bias));
    let want = reference(
        &x.exact,
        &case.shape,
        case.axis,
        scale.as_ref().map(Rounded::exact),
        bias.as_ref().map(Rounded::exact),
        params,
    )
    .unwrap();

    let layout = row_layout(&case.shape, case.axis).unwrap();
    let normalized = &case.shape[layout.axis..];
    let expand = |p: &Option<Rounded<T>>| {
        p.as_ref()
            .map(|p| expand_param(&p.values, &p.shape, normalized))
    };
    let (scale_row, bias_row) = (expand(&scale), expand(&bias));
    let x = x.values;

    let nan = <T::Acc as Accumulator>::NAN;
    let mut y = vec![T::from_f64(f64::NAN); x.len()];
    let (mut mean, mut inv) = (vec![nan; layout.rows], vec![nan; layout.rows]);
    normalize_rows(
        &x,
        &mut y,
        layout.row_len,
        scale_row.as_deref(),
        bias_row.as_deref(),
        params,
        Some(&mut mean),
        Some(&mut inv),
    );

    assert_eq!(
        (y.len(), want.mean.len()),
        (want.y.len(), layout.rows),
        "{}",
        ctx()
    );
    for (i, (&got, &want_y)) in y.iter().zip(&want.y).enumerate() {
        let got = got.to_f64();
        let cond = f64_reference_condition::<T>(&want, i / layout.row_len);
        assert!(
            close(got, want_y, T::Y_TOL * cond),
            "y[{i}] = {got}, want {want_y}: {}",
            ctx()
        );
    }
    for r in 0..layout.rows {
        let (m, s) = (mean[r].to_f64(), inv[r].to_f64());
        assert!(
            close(m, want.mean[r], T::STATS_TOL),
            "mean[{r}] = {m}, want {}: {}",
            want.mean[r],
            ctx()
        );
        let tol = T::STATS_TOL * f64_reference_condition::<T>(&want, r);
        assert!(
            close_rel(s, want.inv_std_dev[r], tol),
            "inv_std_dev[{r}] = {s}, want {}: {}",
            want.inv_std_dev[r],
            ctx()
        );
    }

    // In place must compute exactly what out-of-place does.
    let mut xy = x.clone();
    let (mut mean2, mut inv2) = (vec![nan; layout.rows], vec![nan; layout.rows]);
    normalize_rows_in_place(
        &mut xy,
        layout.row_len,
        scale_row.as_deref(),
        bias_row.as_deref(),
        params,
        Some(&mut mean2),
        Some(&mut inv2),
    );
    for (i, (a, b)) in xy.iter().zip(&y).enumerate() {
        assert!(
            same(a.to_f64(), b.to_f64()),
            "in place y[{i}] = {}, out of place {}: {}",
            a.to_f64(),
            b.to_f64(),
            ctx()
        );
    }
    for r in 0..layout.rows {
        assert!(
            same(mean2[r].to_f64(), mean[r].to_f64()),
            "in place mean[{r}]: {}",
            ctx()
        );
        assert!(
            same(inv2[r].to_f64(), inv[r].to_f64()),
            "in place inv_std_dev[{r}]: {}",
            ctx()
        );
    }
    y.len()
}

fn run_cases<T: TestFloat>(seed: u64, cases: usize) {
    let mut rng = Rng(seed);
    let (mut compared, mut empty, mut single, mut broadcast) = (0, 0, 0, 0);
    for _ in 0..cases {
        let case = random_case(&mut rng);
        let layout = row_layout(&case.shape, case.axis).unwrap();
        empty += (layout.rows * layout.row_len == 0) as usize;
        single += (layout.row_len == 1) as usize;
        let full: usize = layout.row_len;
        broadcast += [&case.scale, &case.bias]
            .iter()
            .any(|p| p.as_ref().is_some_and(|p| p.values.len() != full))
            as usize;
        for params in all_params(&case) {
            compared += check::<T>(&case, &params);
        }
    }
    // The generator must actually reach the edge cases it claims to cover.
    assert!(compared > 100_000, "{compared} values compared");
    assert!(
        empty > 0 && single > 0 && broadcast > 0,
        "empty {empty}, N=1 {single}, broadcast {broadcast}"
    );
}

#[test]
fn f32_matches_reference() {
    run_cases::<f32>(0xF32, 400);
}

#[test]
fn f64_matches_reference() {
    run_cases::<f64>(0xF64, 400);
}

#[test]
fn f16_matches_reference() {
    run_cases::<f16>(0xF16, 400);
}

#[test]
fn bf16_matches_reference() {
    run_cases::<bf16>(0xBF16, 400);
}

/// `AdaNorm` with `k = 0, c = 1` is `LayerNormSimple`, bit for bit.
#[test]
fn ada_norm_k0_c1_is_layer_norm_simple() {
    let mut rng = Rng(7);
    for _ in 0..50 {
        let case = random_case(&mut rng);
        let layout = row_layout(&case.shape, case.axis).unwrap();
        let n = layout.row_len;
        let x: Vec<f32> = case.x.iter().map(|&v| v as f32).collect();
        let run = |variant| {
            let p = Params {
                variant,
                epsilon: case.epsilon.max(1e-5),
                unbiased: false,
                eps_in_sqrt: true,
            };
            let mut y = vec![0.0f32; x.len()];
            normalize_rows(&x, &mut y, n, None, None, &p, None, None);
            y
        };
        let ada = run(Variant::AdaNorm { c: 1.0, k: 0.0 });
        let simple = run(Variant::LayerNormSimple);
        assert_eq!(ada, simple, "{:?}", case.shape);
        // Guard against a `run` that ignores the variant altogether.
        if ada.iter().any(|&v| v != 0.0) {
            assert_ne!(
                ada,
                run(Variant::AdaNorm { c: 1.0, k: 0.1 }),
                "k must matter"
            );
        }
    }
}
