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

/// Version 2's residual inputs for a case: `Skip` of X's shape, a suffix of it, or another
/// broadcast (expanded as runtimes do), and `Bias` over the normalised axes.
#[derive(Debug, Clone)]
struct ResidualCase {
    skip: Option<Param>,
    bias: Option<Param>,
    sum: bool,
}

fn random_residual(rng: &mut Rng, shape: &[usize], axis: usize) -> ResidualCase {
    let skip = rng.chance(0.8).then(|| {
        let rank = match rng.below(3) {
            0 => shape.len(),
            _ => rng.below(shape.len() + 1),
        };
        let mut dims: Vec<usize> = shape[shape.len() - rank..].to_vec();
        if rng.chance(0.3) && !dims.is_empty() {
            let d = rng.below(dims.len());
            dims[d] = 1;
        }
        if rng.chance(0.2) {
            dims.insert(0, 1);
            if dims.len() > shape.len() {
                dims.remove(0);
            }
        }
        let len = dims.iter().product();
        Param {
            values: (0..len).map(|_| 3.0 * rng.normal()).collect(),
            shape: dims,
        }
    });
    let bias = random_param(rng, &shape[axis..], 0.0);
    ResidualCase {
        skip,
        bias,
        sum: rng.chance(0.6),
    }
}

/// `Skip` as the kernels read it: whole rows, expanded to X's shape where it is no suffix.
fn skip_as_rows<T: Copy>(
    values: &[T],
    skip_shape: &[usize],
    x_shape: &[usize],
    axis: usize,
) -> Vec<T> {
    match adanorm_kernels::skip_rows(skip_shape, x_shape, axis).unwrap() {
        adanorm_kernels::SkipRows::Rows(_) => values.to_vec(),
        adanorm_kernels::SkipRows::Expand => expand_param(values, skip_shape, x_shape),
    }
}

/// One case with a residual: `Sum` exactly the reference's `S` (both round each Add once),
/// `Y` and the statistics within the spec's tolerances, and the same results when `X` is split
/// into two calls at a row boundary (as the ORT library's thread pool splits it).
fn check_residual<T: TestFloat>(case: &Case, res: &ResidualCase, params: &Params) -> usize {
    use adanorm_kernels::{reference_residual, RefResidual, Residual, SkipInput};
    let ctx = || {
        format!(
            "{} {params:?}, X {:?} axis {}, {res:?}",
            T::NAME,
            case.shape,
            case.axis
        )
    };
    let x = round::<T>(&case.x, &case.shape);
    let rounded = |p: &Option<Param>| p.as_ref().map(|p| round::<T>(&p.values, &p.shape));
    let (scale, b) = (rounded(&case.scale), rounded(&case.bias));
    let (skip, bias) = (rounded(&res.skip), rounded(&res.bias));
    let want = reference_residual(
        &x.exact,
        &case.shape,
        case.axis,
        scale.as_ref().map(Rounded::exact),
        b.as_ref().map(Rounded::exact),
        &RefResidual {
            skip: skip.as_ref().map(Rounded::exact),
            bias: bias.as_ref().map(Rounded::exact),
            round: |v| T::from_f64(v).to_f64(),
        },
        params,
    )
    .unwrap();

    let layout = row_layout(&case.shape, case.axis).unwrap();
    let (n, rows) = (layout.row_len, layout.rows);
    let normalized = &case.shape[layout.axis..];
    let expand = |p: &Option<Rounded<T>>| {
        p.as_ref()
            .map(|p| expand_param(&p.values, &p.shape, normalized))
    };
    let (scale_row, b_row, bias_row) = (expand(&scale), expand(&b), expand(&bias));
    let skip_rows = skip
        .as_ref()
        .map(|k| skip_as_rows(&k.values, &k.shape, &case.shape, layout.axis));
    let nan = <T::Acc as Accumulator>::NAN;
    // Split at `at` rows: two calls, the second told where it starts.
    let run = |at: usize| {
        let mut y = vec![T::from_f64(f64::NAN); x.values.len()];
        let mut sum = vec![T::from_f64(f64::NAN); x.values.len()];
        let (mut mean, mut inv) = (vec![nan; rows], vec![nan; rows]);
        let split = (at * n).min(y.len());
        let (y0, y1) = y.split_at_mut(split);
        let (s0, s1) = sum.split_at_mut(split);
        let (m0, m1) = mean.split_at_mut(at.min(rows));
        let (i0, i1) = inv.split_at_mut(at.min(rows));
        let (x0, x1) = x.values.split_at(split);
        for (first_row, xs, ys, ss, ms, is) in [(0, x0, y0, s0, m0, i0), (at, x1, y1, s1, m1, i1)] {
            adanorm_kernels::dispatch::out_of_place_residual(
                xs,
                ys,
                n,
                scale_row.as_deref(),
                b_row.as_deref(),
                Residual {
                    bias: bias_row.as_deref(),
                    skip: skip_rows
                        .as_deref()
                        .map(|rows| SkipInput { rows, first_row }),
                    sum: res.sum.then_some(ss),
                },
                params,
                Some(ms),
                Some(is),
            );
        }
        (y, sum, mean, inv)
    };
    let (y, sum, mean, inv) = run(rows);
    if res.sum {
        for (i, (&got, &want_s)) in sum.iter().zip(&want.sum).enumerate() {
            assert!(
                same(got.to_f64(), want_s),
                "sum[{i}] = {}, want {want_s}: {}",
                got.to_f64(),
                ctx()
            );
        }
    }
    for (i, (&got, &want_y)) in y.iter().zip(&want.y).enumerate() {
        let cond = f64_reference_condition::<T>(&want, i / n);
        assert!(
            close(got.to_f64(), want_y, T::Y_TOL * cond),
            "y[{i}] = {}, want {want_y}: {}",
            got.to_f64(),
            ctx()
        );
    }
    for r in 0..rows {
        assert!(
            close(mean[r].to_f64(), want.mean[r], T::STATS_TOL),
            "mean[{r}]: {}",
            ctx()
        );
        let tol = T::STATS_TOL * f64_reference_condition::<T>(&want, r);
        assert!(
            close_rel(inv[r].to_f64(), want.inv_std_dev[r], tol),
            "inv[{r}]: {}",
            ctx()
        );
    }
    if rows > 1 {
        let (y2, sum2, mean2, inv2) = run(rows / 2);
        let bits = |v: &[T]| v.iter().map(|v| v.to_f64().to_bits()).collect::<Vec<_>>();
        let bits_acc = |v: &[T::Acc]| v.iter().map(|v| v.to_f64().to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&y2), "split y: {}", ctx());
        assert_eq!(bits(&sum), bits(&sum2), "split sum: {}", ctx());
        assert_eq!(
            (bits_acc(&mean), bits_acc(&inv)),
            (bits_acc(&mean2), bits_acc(&inv2)),
            "split stats: {}",
            ctx()
        );
    }
    y.len()
}

fn run_residual_cases<T: TestFloat>(seed: u64, cases: usize) {
    let mut rng = Rng(seed);
    let (mut compared, mut expanded, mut suffix, mut rounded_away) = (0, 0, 0, 0);
    for _ in 0..cases {
        let case = random_case(&mut rng);
        let layout = row_layout(&case.shape, case.axis).unwrap();
        let res = random_residual(&mut rng, &case.shape, layout.axis);
        if let Some(k) = &res.skip {
            match adanorm_kernels::skip_rows(&k.shape, &case.shape, layout.axis).unwrap() {
                adanorm_kernels::SkipRows::Expand => expanded += 1,
                adanorm_kernels::SkipRows::Rows(r) if r < layout.rows => suffix += 1,
                _ => {}
            }
        }
        for params in all_params(&case).into_iter().step_by(3) {
            compared += check_residual::<T>(&case, &res, &params);
        }
        // Rounding each Add matters: S differs from the once-rounded exact sum somewhere.
        if let (Some(k), Some(b)) = (&res.skip, &res.bias) {
            if k.values.is_empty() || b.values.is_empty() {
                continue;
            }
            let one = |v: f64| T::from_f64(v).to_f64();
            let x0 = one(case.x.first().copied().unwrap_or(0.0));
            let (k0, b0) = (one(k.values[0]), one(b.values[0]));
            rounded_away += (one(one(x0 + b0) + k0) != one(x0 + b0 + k0)) as usize;
        }
    }
    assert!(compared > 20_000, "{compared} values compared");
    assert!(
        expanded > 0 && suffix > 0,
        "expanded {expanded}, suffix {suffix}"
    );
    if T::NAME != "f64" {
        assert!(rounded_away > 0, "no case where rounding each Add matters");
    }
}

#[test]
fn f32_residual_matches_reference() {
    run_residual_cases::<f32>(0x2F32, 300);
}

#[test]
fn f64_residual_matches_reference() {
    run_residual_cases::<f64>(0x2F64, 300);
}

#[test]
fn f16_residual_matches_reference() {
    run_residual_cases::<f16>(0x2F16, 300);
}

#[test]
fn bf16_residual_matches_reference() {
    run_residual_cases::<bf16>(0x2BF16, 300);
}
