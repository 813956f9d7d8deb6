//! Fast row kernels: the formulas of `reference`, over contiguous rows, in the compute precision
//! (f32 for f32/f16/bf16, f64 for f64).
//!
//! Per row: one pass for a first mean `m`, two for `sum(x - m)` and `sum((x - m)^2)` (one on
//! AVX-512), then one fused output pass (normalise, AdaNorm factor, `* Scale`, `+ B`).
//! `sum(x - m)` corrects `m` (the "corrected two-pass" variance): on a row like `1e4 + noise`, `m` alone is only as exact
//! as one f32 at `1e4` (~5e-4), which would show up directly in `y`; `m + sum(x - m)/N` is exact
//! to the precision of the deviations instead.
//!
//! Sums use [`LANES`] independent accumulators over fixed-size chunks so they vectorise (f32's
//! with explicit vectors, `sums`), and restart every [`BLOCK`] elements so long rows do not build
//! one long rounding chain. f16/bf16 rows are widened to f32 into a working row by the first
//! pass, which also sums them (f16 with F16C, `convert`), and the output pass narrows them a
//! chunk at a time as it goes; f32/f64 rows are used as they are.
//!
//! [`normalize_rows`], [`normalize_rows_in_place`] and everything they call are
//! `#[inline(always)]`, so a caller can compile the whole kernel inside its own
//! `#[target_feature(enable = "avx2")]` function and pick it at run time (as `adanorm-tract`
//! does); this module stays free of unsafe code and builds for the baseline target. Vector width
//! does not change results: the summation order is fixed by the lanes, and nothing is fused.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Sub};

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::params::{Params, Variant};

/// Independent accumulators per sum. Each accumulator takes one add per 64 elements, so the
/// loop is bound by add latency (about 4 cycles), not by loads: 64 f32 lanes (16 SSE or 8 AVX
/// registers) keep enough adds in flight that the passes over an L1-resident row cost less than
/// streaming it from memory; 16 lanes made the kernel compute-bound at about twice that.
pub(crate) const LANES: usize = 64;
/// Elements summed into one partial result before it joins the row total.
pub(crate) const BLOCK: usize = 64 * LANES;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// `X` and `Y` rows seen in the compute type (see `Element::as_acc_rows`).
pub type AccRows<'a, T> = (&'a [<T as Element>::Acc], &'a mut [<T as Element>::Acc]);

/// The compute precision: `f32` or `f64`. Sealed.
pub trait Accumulator:
    sealed::Sealed
    + Copy
    + Debug
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + AddAssign
    + MulAssign
{
    const ZERO: Self;
    const ONE: Self;
    const NAN: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn from_usize(n: usize) -> Self;
    fn sqrt(self) -> Self;

    /// `sum(x)` in the order of [`sum_map`]; f32 overrides it with explicit vectors (`sums`).
    #[inline(always)]
    fn row_sum(x: &[Self]) -> Self {
        sum_map(x, |v| v)
    }

    /// `(sum(x - shift), sum((x - shift)²))` in the order of [`sum_map`].
    ///
    /// Two sweeps rather than one loop with two accumulator sets: fused, the vectoriser packs
    /// each lane's `d` with its `d²` instead of packing lanes together, and runs mostly scalar.
    #[inline(always)]
    fn centered_sums(x: &[Self], shift: Self) -> (Self, Self) {
        (
            sum_map(x, |v| v - shift),
            sum_map(x, |v| (v - shift) * (v - shift)),
        )
    }
}

macro_rules! accumulator {
    ($t:ident $(, $sum:path, $centered:path)?) => {
        impl Accumulator for $t {
            const ZERO: $t = 0.0;
            const ONE: $t = 1.0;
            const NAN: $t = $t::NAN;
            fn from_f64(v: f64) -> $t {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_usize(n: usize) -> $t {
                n as $t
            }
            fn sqrt(self) -> $t {
                $t::sqrt(self)
            }
            $(
                #[inline(always)]
                fn row_sum(x: &[$t]) -> $t {
                    $sum(x)
                }
                #[inline(always)]
                fn centered_sums(x: &[$t], shift: $t) -> ($t, $t) {
                    $centered(x, shift)
                }
            )?
        }
    };
}

accumulator!(f32, crate::sums::sum, crate::sums::centered);
accumulator!(f64);

/// A tensor element type `T` of the spec, with its compute precision.
///
/// Only `to_acc`/`from_acc` are required; the row methods have converting defaults, which `f32`
/// and `f64` override to work on the data without a copy and `f16`/`bf16` override with `half`'s
/// bulk (SIMD where available) conversions.
pub trait Element: Copy + Send + Sync + 'static {
    type Acc: Accumulator;
    /// Whether `Self` is its own compute type (f32, f64): arithmetic in `Acc` then rounds to
    /// `Self` at every step by itself.
    const IS_ACC: bool = false;

    fn to_acc(self) -> Self::Acc;
    fn from_acc(acc: Self::Acc) -> Self;

    /// `row` in compute precision: `row` itself when `Self` is `Acc`, else a copy in `buf`.
    fn acc_row<'a>(row: &'a [Self], buf: &'a mut Vec<Self::Acc>) -> &'a [Self::Acc] {
        buf.clear();
        buf.extend(row.iter().map(|v| v.to_acc()));
        buf
    }

    /// Widens `src` into `dst` (the same length). Called a chunk at a time, interleaved with
    /// the arithmetic, so that the conversion overlaps it instead of running as its own pass.
    fn widen_into(src: &[Self], dst: &mut [Self::Acc]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s.to_acc();
        }
    }

    /// `buf = row` widened and `sum(buf)` (summed exactly as `sum` does), in one pass; float16
    /// overrides it with F16C.
    #[inline(always)]
    fn widen_sum(row: &[Self], buf: &mut [Self::Acc]) -> Self::Acc {
        widen_sum(row, buf)
    }

    /// Rounds every value of `row` to `Self` (and back): what storing an `Add`'s result in
    /// `Self` does. Nothing to do when `Self` is its own compute type.
    fn round_row(row: &mut [Self::Acc], scratch: &mut Vec<Self>) {
        let _ = scratch;
        for v in row.iter_mut() {
            *v = Self::from_acc(*v).to_acc();
        }
    }

    /// Stores `src` (compute precision) into `dst`.
    fn store_row(src: &[Self::Acc], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = Self::from_acc(s);
        }
    }

    /// Version 2's residual for a type that is not its own compute type: `work` = `S`, each
    /// `Add` rounded to `Self`, and `S` stored into `sum` when given. The default widens `x` and
    /// `skip` into `bufs` and adds row by row; float16 overrides it with one F16C pass.
    #[inline(always)]
    fn residual_row(
        x: &[Self],
        bias: Option<&[Self::Acc]>,
        skip: Option<&[Self]>,
        work: &mut [Self::Acc],
        sum: Option<&mut [Self]>,
        bufs: &mut RowBufs<Self>,
    ) {
        residual_row_widened(x, bias, skip, work, sum, bufs);
    }

    /// The rows themselves when `Self` is its own compute type (f32, f64): the out-of-place
    /// kernel then reads `X` and writes `Y` directly, with no working copy.
    #[inline(always)]
    fn as_acc_rows<'a>(_src: &'a [Self], _dst: &'a mut [Self]) -> Option<AccRows<'a, Self>> {
        None
    }

    /// The row itself when `Self` is its own compute type, for the in-place kernel.
    #[inline(always)]
    fn as_acc_row(_row: &mut [Self]) -> Option<&mut [Self::Acc]> {
        None
    }
}

macro_rules! native_element {
    ($t:ty) => {
        impl Element for $t {
            type Acc = $t;
            const IS_ACC: bool = true;
            fn to_acc(self) -> $t {
                self
            }
            fn from_acc(acc: $t) -> $t {
                acc
            }
            fn acc_row<'a>(row: &'a [$t], _: &'a mut Vec<$t>) -> &'a [$t] {
                row
            }
            #[inline(always)]
            fn as_acc_rows<'a>(
                src: &'a [$t],
                dst: &'a mut [$t],
            ) -> Option<(&'a [$t], &'a mut [$t])> {
                Some((src, dst))
            }
            #[inline(always)]
            fn as_acc_row(row: &mut [$t]) -> Option<&mut [$t]> {
                Some(row)
            }
            #[inline(always)]
            fn widen_into(src: &[$t], dst: &mut [$t]) {
                dst.copy_from_slice(src);
            }
            #[inline(always)]
            fn round_row(_: &mut [$t], _: &mut Vec<$t>) {}
            #[inline(always)]
            fn store_row(src: &[$t], dst: &mut [$t]) {
                dst.copy_from_slice(src);
            }
        }
    };
}

native_element!(f32);
native_element!(f64);

/// Working rows of [`Element::residual_row`].
pub struct RowBufs<T: Element> {
    x: Vec<T::Acc>,
    skip: Vec<T::Acc>,
    narrow: Vec<T>,
}

impl<T: Element> Default for RowBufs<T> {
    fn default() -> Self {
        RowBufs {
            x: Vec::new(),
            skip: Vec::new(),
            narrow: Vec::new(),
        }
    }
}

/// [`Element::residual_row`] through widened copies of `x` and `skip`.
#[inline(always)]
fn residual_row_widened<T: Element>(
    x: &[T],
    bias: Option<&[T::Acc]>,
    skip: Option<&[T]>,
    work: &mut [T::Acc],
    sum: Option<&mut [T]>,
    bufs: &mut RowBufs<T>,
) {
    let src = T::acc_row(x, &mut bufs.x);
    let skip = skip.map(|k| T::acc_row(k, &mut bufs.skip));
    residual_sum(src, bias, skip, work, &mut bufs.narrow);
    if let Some(s) = sum {
        T::store_row(work, s);
    }
}

macro_rules! half_element {
    ($t:ty, $widen:path, $widen_sum:path, $narrow:path, $round:path, $residual:path) => {
        impl Element for $t {
            type Acc = f32;
            fn to_acc(self) -> f32 {
                self.to_f32()
            }
            fn from_acc(acc: f32) -> $t {
                <$t>::from_f32(acc)
            }
            fn acc_row<'a>(row: &'a [$t], buf: &'a mut Vec<f32>) -> &'a [f32] {
                buf.resize(row.len(), 0.0);
                $widen(row, buf);
                buf
            }
            #[inline(always)]
            fn round_row(row: &mut [f32], scratch: &mut Vec<$t>) {
                $round(row, scratch);
            }
            #[inline(always)]
            fn residual_row(
                x: &[$t],
                bias: Option<&[f32]>,
                skip: Option<&[$t]>,
                work: &mut [f32],
                sum: Option<&mut [$t]>,
                bufs: &mut RowBufs<$t>,
            ) {
                $residual(x, bias, skip, work, sum, bufs);
            }
            #[inline(always)]
            fn store_row(src: &[f32], dst: &mut [$t]) {
                $narrow(src, dst);
            }
            #[inline(always)]
            fn widen_into(src: &[$t], dst: &mut [f32]) {
                $widen(src, dst);
            }
            #[inline(always)]
            fn widen_sum(row: &[$t], buf: &mut [f32]) -> f32 {
                $widen_sum(row, buf)
            }
        }
    };
}

half_element!(
    f16,
    crate::convert::f16_to_f32,
    widen_sum_f16,
    crate::convert::f32_to_f16,
    crate::convert::round_through_f16,
    residual_row_f16
);
half_element!(
    bf16,
    bf16_to_f32,
    widen_sum::<bf16>,
    f32_to_bf16,
    round_through_bf16,
    residual_row_widened
);

/// float16's [`Element::widen_sum`]: one F16C pass where the CPU has it.
#[inline(always)]
fn widen_sum_f16(row: &[f16], buf: &mut [f32]) -> f32 {
    if crate::convert::has_f16c() {
        crate::convert::widen_sum_f16(row, buf)
    } else {
        widen_sum(row, buf)
    }
}

/// float16's [`Element::residual_row`]: one F16C pass where the CPU has it.
#[inline(always)]
fn residual_row_f16(
    x: &[f16],
    bias: Option<&[f32]>,
    skip: Option<&[f16]>,
    work: &mut [f32],
    sum: Option<&mut [f16]>,
    bufs: &mut RowBufs<f16>,
) {
    if crate::convert::has_f16c() {
        crate::convert::residual_f16(x, bias, skip, work, sum);
    } else {
        residual_row_widened(x, bias, skip, work, sum, bufs);
    }
}

// bfloat16 rows through `half`'s slice conversions (bfloat16 has no x86 conversion instructions
// below AVX-512 BF16).
fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    src.convert_to_f32_slice(dst);
}

fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    dst.convert_from_f32_slice(src);
}

fn round_through_bf16(row: &mut [f32], scratch: &mut Vec<bf16>) {
    scratch.resize(row.len(), bf16::ZERO);
    scratch.convert_from_f32_slice(row);
    scratch.convert_to_f32_slice(row);
}

/// Normalises each `row_len`-element row of `x` into `y`.
///
/// `scale` and `bias` hold one full row each (see `layout::expand_param`). `mean` and
/// `inv_std_dev`, when given, receive one entry per row. `params` should have passed
/// `Params::validate`; the kernel itself checks nothing about them and never panics on them.
/// Rows are independent, so callers may split `x`/`y` (and the stats) at row boundaries across
/// threads.
///
/// With `row_len == 0` there are no rows to read; every entry of `mean` and `inv_std_dev` is set
/// to NaN (the statistics of an empty row, as in `reference`).
///
/// # Panics
/// On length mismatches: `y.len() != x.len()`, `x.len()` not a multiple of `row_len`, `scale` or
/// `bias` not `row_len` long, `mean`/`inv_std_dev` not one per row.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn normalize_rows<T: Element>(
    x: &[T],
    y: &mut [T],
    row_len: usize,
    scale: Option<&[T]>,
    bias: Option<&[T]>,
    params: &Params,
    mut mean: Option<&mut [T::Acc]>,
    mut inv_std_dev: Option<&mut [T::Acc]>,
) {
    assert_eq!(x.len(), y.len(), "x and y differ in length");
    if check_lengths(x.len(), row_len, scale, bias, &mut mean, &mut inv_std_dev).is_none() {
        return;
    }
    let mut epilogue_bufs = EpilogueBufs::default();
    let epilogue = Epilogue::new(params, scale, bias, &mut epilogue_bufs);
    let mut buf = Vec::new();
    for (r, (xr, yr)) in x
        .chunks_exact(row_len)
        .zip(y.chunks_exact_mut(row_len))
        .enumerate()
    {
        if let Some((src, dst)) = T::as_acc_rows(xr, yr) {
            let stats = normalize_row_into(src, dst, params, &epilogue);
            stats.store(r, mean.as_deref_mut(), inv_std_dev.as_deref_mut());
            continue;
        }
        buf.resize(row_len, <T::Acc as Accumulator>::ZERO);
        let first_sum = T::widen_sum(xr, &mut buf);
        let stats = RowStats::with_sum(&buf, first_sum, params);
        epilogue.store(&stats, &mut buf, yr);
        stats.store(r, mean.as_deref_mut(), inv_std_dev.as_deref_mut());
    }
}

/// [`normalize_rows`] with `Y` written over `X`.
///
/// # Panics
/// As [`normalize_rows`], less the `y` length.
#[inline(always)]
pub fn normalize_rows_in_place<T: Element>(
    xy: &mut [T],
    row_len: usize,
    scale: Option<&[T]>,
    bias: Option<&[T]>,
    params: &Params,
    mut mean: Option<&mut [T::Acc]>,
    mut inv_std_dev: Option<&mut [T::Acc]>,
) {
    if check_lengths(xy.len(), row_len, scale, bias, &mut mean, &mut inv_std_dev).is_none() {
        return;
    }
    let mut epilogue_bufs = EpilogueBufs::default();
    let epilogue = Epilogue::new(params, scale, bias, &mut epilogue_bufs);
    let mut buf = Vec::new();
    for (r, row) in xy.chunks_exact_mut(row_len).enumerate() {
        let stats = match T::as_acc_row(row) {
            Some(row) => normalize_row(row, params, &epilogue),
            None => {
                buf.resize(row_len, <T::Acc as Accumulator>::ZERO);
                let first_sum = T::widen_sum(row, &mut buf);
                let stats = RowStats::with_sum(&buf, first_sum, params);
                epilogue.store(&stats, &mut buf, row);
                stats
            }
        };
        stats.store(r, mean.as_deref_mut(), inv_std_dev.as_deref_mut());
    }
}

/// Version 2's residual for [`normalize_rows_residual`], in the element type.
pub struct Residual<'a, T> {
    /// `Bias`: one full row (see `layout::expand_param`).
    pub bias: Option<&'a [T]>,
    /// `Skip` as whole rows (`layout::SkipRows::Rows`; expand any other broadcast first).
    pub skip: Option<SkipInput<'a, T>>,
    /// `Sum`: receives `S`, the shape of `x`.
    pub sum: Option<&'a mut [T]>,
}

/// `Skip`'s rows: row `r` of the call's `x` adds row `(first_row + r) % (rows.len() / row_len)`.
#[derive(Clone, Copy)]
pub struct SkipInput<'a, T> {
    pub rows: &'a [T],
    /// The index in the whole `X` of the call's first row, for callers that split `X`.
    pub first_row: usize,
}

/// [`normalize_rows`] of `S = (x + Bias) + Skip`, each `Add` rounded to `T`, with `S` written
/// to `Sum` when asked: per row, one pass reads `x` and `Skip` and makes `S` (in `Sum`'s row, or
/// `y`'s row without `Sum`, for f32/f64; in a working row for f16/bf16, with `Sum` stored in the
/// same pass: `Element::residual_row`), then the statistics and the output pass as in version 1. Without `Skip`, `Bias` and `Sum` it is [`normalize_rows`].
///
/// # Panics
/// As [`normalize_rows`], and when `Bias` is not one row, `Skip` not whole non-empty rows, or
/// `Sum` not as long as `x`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn normalize_rows_residual<T: Element>(
    x: &[T],
    y: &mut [T],
    row_len: usize,
    scale: Option<&[T]>,
    b: Option<&[T]>,
    residual: Residual<'_, T>,
    params: &Params,
    mut mean: Option<&mut [T::Acc]>,
    mut inv_std_dev: Option<&mut [T::Acc]>,
) {
    let Residual {
        bias,
        skip,
        mut sum,
    } = residual;
    if bias.is_none() && skip.is_none() && sum.is_none() {
        return normalize_rows(x, y, row_len, scale, b, params, mean, inv_std_dev);
    }
    assert_eq!(x.len(), y.len(), "x and y differ in length");
    if let Some(s) = sum.as_deref() {
        assert_eq!(s.len(), x.len(), "sum must be as long as x");
    }
    if let Some(bias) = bias {
        assert_eq!(bias.len(), row_len, "Bias must hold one row");
    }
    if check_lengths(x.len(), row_len, scale, b, &mut mean, &mut inv_std_dev).is_none()
        || x.is_empty()
    {
        return;
    }
    let skip_rows = skip.map(|k| {
        assert!(
            !k.rows.is_empty() && k.rows.len() % row_len == 0,
            "skip must hold whole rows"
        );
        k.rows.len() / row_len
    });
    let mut epilogue_bufs = EpilogueBufs::default();
    let epilogue = Epilogue::new(params, scale, b, &mut epilogue_bufs);
    let mut bias_buf = Vec::new();
    let bias = bias.map(|b| T::acc_row(b, &mut bias_buf));
    let (mut skip_buf, mut work) = (Vec::new(), Vec::new());
    let mut scratch: Vec<T> = Vec::new();
    let mut bufs = RowBufs::<T>::default();
    for (r, (xr, yr)) in x
        .chunks_exact(row_len)
        .zip(y.chunks_exact_mut(row_len))
        .enumerate()
    {
        let skip_raw = skip.zip(skip_rows).map(|(k, n)| {
            let i = (k.first_row + r) % n;
            &k.rows[i * row_len..(i + 1) * row_len]
        });
        let sum_row = sum
            .as_deref_mut()
            .map(|s| &mut s[r * row_len..(r + 1) * row_len]);
        let stats = match T::as_acc_rows(xr, yr) {
            // f32, f64: S is made in Y's row, which the output pass then overwrites.
            Some((src, dst)) => {
                let skip_row = skip_raw.map(|k| T::acc_row(k, &mut skip_buf));
                match sum_row {
                    // f32, f64 with Sum: S is made in Sum's row and read from there by the
                    // statistics and the output pass, which writes Y's row.
                    Some(s) => match T::as_acc_rows(xr, &mut *s) {
                        Some((_, s_acc)) => {
                            residual_sum(src, bias, skip_row, s_acc, &mut scratch);
                            normalize_row_into(s_acc, dst, params, &epilogue)
                        }
                        None => {
                            residual_sum(src, bias, skip_row, dst, &mut scratch);
                            T::store_row(dst, s);
                            normalize_row(dst, params, &epilogue)
                        }
                    },
                    // Without Sum: S is made in Y's row, which the output pass overwrites.
                    None => {
                        residual_sum(src, bias, skip_row, dst, &mut scratch);
                        normalize_row(dst, params, &epilogue)
                    }
                }
            }
            None => {
                work.resize(row_len, <T::Acc as Accumulator>::ZERO);
                T::residual_row(xr, bias, skip_raw, &mut work, sum_row, &mut bufs);
                let stats = RowStats::of(&work, params);
                epilogue.store(&stats, &mut work, yr);
                stats
            }
        };
        stats.store(r, mean.as_deref_mut(), inv_std_dev.as_deref_mut());
    }
}

/// `out = round(round(x + bias) + skip)`, each term only when given, in as few passes as the
/// rounding allows: one where `T` is its own compute type (each `+` already rounds to `T`) or
/// only one term is given; f16/bf16 with both round in between, by bulk conversion.
#[inline(always)]
fn residual_sum<T: Element>(
    x: &[T::Acc],
    bias: Option<&[T::Acc]>,
    skip: Option<&[T::Acc]>,
    out: &mut [T::Acc],
    scratch: &mut Vec<T>,
) {
    let add = |out: &mut [T::Acc], a: &[T::Acc], b: &[T::Acc]| {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = a + b;
        }
    };
    match (bias, skip) {
        (Some(b), Some(k)) if T::IS_ACC => {
            for (((o, &v), &b), &k) in out.iter_mut().zip(x).zip(b).zip(k) {
                *o = (v + b) + k;
            }
        }
        (Some(b), Some(k)) => {
            add(out, x, b);
            T::round_row(out, scratch);
            for (o, &k) in out.iter_mut().zip(k) {
                *o += k;
            }
            T::round_row(out, scratch);
        }
        (Some(t), None) | (None, Some(t)) => {
            add(out, x, t);
            T::round_row(out, scratch);
        }
        (None, None) => out.copy_from_slice(x),
    }
}

/// Normalises one non-empty row from `src` into `dst`, in compute precision: statistics from
/// `src`, then one pass writing `dst`.
#[inline(always)]
fn normalize_row_into<A: Accumulator>(
    src: &[A],
    dst: &mut [A],
    params: &Params,
    epilogue: &Epilogue<'_, A>,
) -> RowStats<A> {
    let stats = RowStats::of(src, params);
    epilogue.apply(Out::Into(src, dst), |v| stats.normalize(v));
    stats
}

/// Normalises one non-empty row in place, in compute precision.
#[inline(always)]
fn normalize_row<A: Accumulator>(
    row: &mut [A],
    params: &Params,
    epilogue: &Epilogue<'_, A>,
) -> RowStats<A> {
    let stats = RowStats::of(row, params);
    epilogue.apply(Out::InPlace(row), |v| stats.normalize(v));
    stats
}

/// Asserts the documented length contract; returns the row count, or `None` when
/// `row_len == 0` (after filling the stats with NaN).
fn check_lengths<T: Element>(
    len: usize,
    row_len: usize,
    scale: Option<&[T]>,
    bias: Option<&[T]>,
    mean: &mut Option<&mut [T::Acc]>,
    inv_std_dev: &mut Option<&mut [T::Acc]>,
) -> Option<usize> {
    for (name, p) in [("scale", scale), ("bias", bias)] {
        if let Some(p) = p {
            assert_eq!(p.len(), row_len, "{name} must hold one row");
        }
    }
    if row_len == 0 {
        assert_eq!(len, 0, "row_len 0 with a non-empty x");
        for s in [mean.as_deref_mut(), inv_std_dev.as_deref_mut()]
            .into_iter()
            .flatten()
        {
            s.fill(<T::Acc as Accumulator>::NAN);
        }
        return None;
    }
    assert_eq!(len % row_len, 0, "x length is not a multiple of row_len");
    let rows = len / row_len;
    for (name, s) in [
        ("mean", mean.as_deref()),
        ("inv_std_dev", inv_std_dev.as_deref()),
    ] {
        if let Some(s) = s {
            assert_eq!(s.len(), rows, "{name} must hold one entry per row");
        }
    }
    Some(rows)
}

/// A row's statistics: `mean = shift + corr`, kept apart because `shift + corr` rounded to `A`
/// would lose exactly the precision `corr` restores.
#[derive(Debug, Clone, Copy)]
struct RowStats<A> {
    shift: A,
    corr: A,
    inv_std_dev: A,
}

impl<A: Accumulator> RowStats<A> {
    /// Requires a non-empty row.
    #[inline(always)]
    fn of(x: &[A], params: &Params) -> RowStats<A> {
        RowStats::with_sum(x, sum(x), params)
    }

    /// [`RowStats::of`] given `sum(x)`.
    #[inline(always)]
    fn with_sum(x: &[A], first_sum: A, params: &Params) -> RowStats<A> {
        let n = A::from_usize(x.len());
        let shift = first_sum / n;
        let (sum_d, sum_d2) = A::centered_sums(x, shift);
        let corr = sum_d / n;
        // sum((x - mean)^2) = sum(d^2) - sum(d)^2 / N with d = x - shift. Mathematically >= 0;
        // the clamp only removes rounding below zero and lets NaN through.
        let mut sum_sq = sum_d2 - sum_d * corr;
        if sum_sq < A::ZERO {
            sum_sq = A::ZERO;
        }
        // N = 1, unbiased: 0 / 0 = NaN, as the spec (and torch) say.
        let var = sum_sq / if params.unbiased { n - A::ONE } else { n };
        let eps = A::from_f64(params.epsilon);
        let sigma = if params.eps_in_sqrt {
            (var + eps).sqrt()
        } else {
            var.sqrt() + eps
        };
        RowStats {
            shift,
            corr,
            inv_std_dev: A::ONE / sigma,
        }
    }

    #[inline(always)]
    fn normalize(&self, v: A) -> A {
        ((v - self.shift) - self.corr) * self.inv_std_dev
    }

    fn store(&self, row: usize, mean: Option<&mut [A]>, inv_std_dev: Option<&mut [A]>) {
        if let Some(m) = mean {
            m[row] = self.shift + self.corr;
        }
        if let Some(s) = inv_std_dev {
            s[row] = self.inv_std_dev;
        }
    }
}

/// What follows `y = d / sigma`, with AdaNorm's constants folded into the columns once per
/// call: `C·(1 − k·y)·y·Scale + B` is computed as `y·(cs − cks·y) + B` with `cs = C·Scale` and
/// `cks = (C·k)·Scale`, two multiplies per element fewer than the formula's order (which made
/// the float16 AdaNorm with Scale/B slower than ORT's own LayerNormalization); the roundings
/// differ from the formula's by a few ulps, well inside the reference tolerances.
struct Epilogue<'a, A> {
    form: Form<'a, A>,
    bias: Option<&'a [A]>,
}

#[derive(Clone, Copy)]
enum Form<'a, A> {
    /// LayerNormSimple: `y`, or `y · Scale`.
    Simple(Option<&'a [A]>),
    /// AdaNorm without Scale: `y · (C − C·k·y)`.
    Ada { c: A, ck: A },
    /// AdaNorm with Scale: `y · (cs − cks·y)`.
    AdaScaled { cs: &'a [A], cks: &'a [A] },
}

/// The column buffers an [`Epilogue`] borrows: Scale and B widened, or Scale folded.
struct EpilogueBufs<A> {
    scale: Vec<A>,
    scale_k: Vec<A>,
    bias: Vec<A>,
}

// By hand: a derive would require `A: Default`, which `Accumulator` does not promise.
impl<A> Default for EpilogueBufs<A> {
    fn default() -> Self {
        EpilogueBufs {
            scale: Vec::new(),
            scale_k: Vec::new(),
            bias: Vec::new(),
        }
    }
}

/// Where an output pass writes: over its input, or from `src` into `dst`.
enum Out<'r, A> {
    InPlace(&'r mut [A]),
    Into(&'r [A], &'r mut [A]),
}

impl<'a, A: Accumulator> Epilogue<'a, A> {
    fn new<T: Element<Acc = A>>(
        params: &Params,
        scale: Option<&'a [T]>,
        bias: Option<&'a [T]>,
        bufs: &'a mut EpilogueBufs<A>,
    ) -> Epilogue<'a, A> {
        let EpilogueBufs {
            scale: scale_buf,
            scale_k: scale_k_buf,
            bias: bias_buf,
        } = bufs;
        let form = match (params.variant, scale) {
            (Variant::LayerNormSimple, s) => Form::Simple(s.map(|s| T::acc_row(s, scale_buf))),
            (Variant::AdaNorm { c, k }, None) => Form::Ada {
                c: A::from_f64(c),
                ck: A::from_f64(c * k),
            },
            (Variant::AdaNorm { c, k }, Some(s)) => {
                // Widened once (F16C for float16), then scaled in A: callers that split X into
                // many calls pay this per call. The widened Scale borrows B's buffer, which B
                // overwrites below once both folds are made.
                let s = T::acc_row(s, bias_buf);
                let (c, ck) = (A::from_f64(c), A::from_f64(c * k));
                scale_buf.clear();
                scale_buf.extend(s.iter().map(|&v| c * v));
                scale_k_buf.clear();
                scale_k_buf.extend(s.iter().map(|&v| ck * v));
                Form::AdaScaled {
                    cs: scale_buf,
                    cks: scale_k_buf,
                }
            }
        };
        Epilogue {
            form,
            bias: bias.map(|b| T::acc_row(b, bias_buf)),
        }
    }

    /// The columns `at` of this epilogue, for an output pass over part of a row.
    fn part(&self, at: std::ops::Range<usize>) -> Epilogue<'_, A> {
        let cut = |v: &'a [A]| &v[at.clone()];
        Epilogue {
            form: match self.form {
                Form::Simple(s) => Form::Simple(s.map(cut)),
                Form::Ada { c, ck } => Form::Ada { c, ck },
                Form::AdaScaled { cs, cks } => Form::AdaScaled {
                    cs: cut(cs),
                    cks: cut(cks),
                },
            },
            bias: self.bias.map(cut),
        }
    }

    /// The output pass: `out = epilogue(y(v))` for every `v`. One loop per form and B keeps
    /// each loop branch-free, so it vectorises.
    #[inline(always)]
    fn apply(&self, out: Out<'_, A>, y: impl Fn(A) -> A) {
        match (self.form, self.bias) {
            (Form::Simple(None), None) => each0(out, y),
            (Form::Simple(None), Some(b)) => each1(out, b, |v, b| y(v) + b),
            (Form::Simple(Some(s)), None) => each1(out, s, |v, s| y(v) * s),
            (Form::Simple(Some(s)), Some(b)) => each2(out, s, b, |v, s, b| y(v) * s + b),
            (Form::Ada { c, ck }, None) => each0(out, |v| {
                let y = y(v);
                y * (c - ck * y)
            }),
            (Form::Ada { c, ck }, Some(b)) => each1(out, b, |v, b| {
                let y = y(v);
                y * (c - ck * y) + b
            }),
            (Form::AdaScaled { cs, cks }, None) => each2(out, cs, cks, |v, cs, cks| {
                let y = y(v);
                y * (cs - cks * y)
            }),
            (Form::AdaScaled { cs, cks }, Some(b)) => each3(out, cs, cks, b, |v, cs, cks, b| {
                let y = y(v);
                y * (cs - cks * y) + b
            }),
        }
    }

    /// The output pass of a widened row: `work` is normalised in place a chunk at a time, each
    /// chunk narrowed into `dst` while it is still in L1 so that the conversion overlaps the
    /// arithmetic of the next chunk. `work` is left undefined.
    #[inline(always)]
    fn store<T: Element<Acc = A>>(&self, stats: &RowStats<A>, work: &mut [A], dst: &mut [T]) {
        const CHUNK: usize = 256;
        for (i, (w, d)) in work
            .chunks_mut(CHUNK)
            .zip(dst.chunks_mut(CHUNK))
            .enumerate()
        {
            let at = i * CHUNK..i * CHUNK + w.len();
            self.part(at)
                .apply(Out::InPlace(&mut *w), |v| stats.normalize(v));
            T::store_row(w, d);
        }
    }
}

// The output loops by number of column operands; each a plain zip, so that it vectorises.

#[inline(always)]
fn each0<A: Copy>(out: Out<'_, A>, f: impl Fn(A) -> A) {
    match out {
        Out::InPlace(row) => row.iter_mut().for_each(|v| *v = f(*v)),
        Out::Into(src, dst) => dst.iter_mut().zip(src).for_each(|(d, &v)| *d = f(v)),
    }
}

#[inline(always)]
fn each1<A: Copy>(out: Out<'_, A>, a: &[A], f: impl Fn(A, A) -> A) {
    match out {
        Out::InPlace(row) => row.iter_mut().zip(a).for_each(|(v, &a)| *v = f(*v, a)),
        Out::Into(src, dst) => {
            for ((d, &v), &a) in dst.iter_mut().zip(src).zip(a) {
                *d = f(v, a);
            }
        }
    }
}

#[inline(always)]
fn each2<A: Copy>(out: Out<'_, A>, a: &[A], b: &[A], f: impl Fn(A, A, A) -> A) {
    match out {
        Out::InPlace(row) => {
            for ((v, &a), &b) in row.iter_mut().zip(a).zip(b) {
                *v = f(*v, a, b);
            }
        }
        Out::Into(src, dst) => {
            for (((d, &v), &a), &b) in dst.iter_mut().zip(src).zip(a).zip(b) {
                *d = f(v, a, b);
            }
        }
    }
}

#[inline(always)]
fn each3<A: Copy>(out: Out<'_, A>, a: &[A], b: &[A], c: &[A], f: impl Fn(A, A, A, A) -> A) {
    match out {
        Out::InPlace(row) => {
            for (((v, &a), &b), &c) in row.iter_mut().zip(a).zip(b).zip(c) {
                *v = f(*v, a, b, c);
            }
        }
        Out::Into(src, dst) => {
            for ((((d, &v), &a), &b), &c) in dst.iter_mut().zip(src).zip(a).zip(b).zip(c) {
                *d = f(v, a, b, c);
            }
        }
    }
}

/// The accumulators of a sum, cache-line aligned: where the compiler keeps them in memory
/// rather than registers, each iteration stores and reloads them, and a vector store split
/// across two cache lines cannot be forwarded to the next load (measured: the two centred sums
/// ran 3× slower, or not, depending on where the stack frame put the array).
#[repr(C, align(64))]
struct Lanes<A>([A; LANES]);

/// `sum(f(x))` with [`LANES`] independent accumulators, restarted every [`BLOCK`] elements.
#[inline(always)]
pub(crate) fn sum_map<A: Accumulator>(x: &[A], f: impl Fn(A) -> A) -> A {
    let mut total = A::ZERO;
    for block in x.chunks(BLOCK) {
        let (chunks, tail) = block.as_chunks::<LANES>();
        let mut acc = Lanes([A::ZERO; LANES]);
        for chunk in chunks {
            for (a, &v) in acc.0.iter_mut().zip(chunk) {
                *a += f(v);
            }
        }
        total += reduce(acc.0) + tail.iter().fold(A::ZERO, |s, &v| s + f(v));
    }
    total
}

#[inline(always)]
fn sum<A: Accumulator>(x: &[A]) -> A {
    A::row_sum(x)
}

/// `buf = row` widened and `sum(buf)` (summed exactly as [`sum`] does), in one pass: each
/// [`LANES`]-long chunk is widened and then added while it is still in registers or L1.
#[inline(always)]
fn widen_sum<T: Element>(row: &[T], buf: &mut [T::Acc]) -> T::Acc {
    let mut total = <T::Acc as Accumulator>::ZERO;
    for (src, dst) in row.chunks(BLOCK).zip(buf.chunks_mut(BLOCK)) {
        let (src_chunks, src_tail) = src.as_chunks::<LANES>();
        let (dst_chunks, dst_tail) = dst.as_chunks_mut::<LANES>();
        let mut acc = Lanes([<T::Acc as Accumulator>::ZERO; LANES]);
        for (s, d) in src_chunks.iter().zip(dst_chunks) {
            T::widen_into(s, d);
            for (a, &v) in acc.0.iter_mut().zip(d.iter()) {
                *a += v;
            }
        }
        T::widen_into(src_tail, dst_tail);
        total += reduce(acc.0)
            + dst_tail
                .iter()
                .fold(<T::Acc as Accumulator>::ZERO, |s, &v| s + v);
    }
    total
}

/// Sums the lanes by halving: lane `j` takes lane `j + width/2` until four remain.
///
/// Each step adds two contiguous halves, which the vectoriser turns into whole-register adds.
#[inline(always)]
pub(crate) fn reduce<A: Accumulator>(mut acc: [A; LANES]) -> A {
    let mut width = LANES;
    while width > 4 {
        width /= 2;
        for j in 0..width {
            let upper = acc[j + width];
            acc[j] += upper;
        }
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lns(epsilon: f64) -> Params {
        Params {
            variant: Variant::LayerNormSimple,
            epsilon,
            unbiased: false,
            eps_in_sqrt: true,
        }
    }

    #[test]
    fn sums_cover_chunks_tails_and_blocks() {
        for n in [
            0,
            1,
            15,
            16,
            17,
            100,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK + 5,
        ] {
            let x: Vec<f64> = (0..n).map(|i| (i % 7) as f64).collect();
            let expect: f64 = x.iter().sum();
            assert_eq!(sum(&x), expect, "n = {n}");
            let (d, d2) = f64::centered_sums(&x, 3.0);
            assert_eq!(d, expect - 3.0 * n as f64, "n = {n}");
            assert_eq!(
                d2,
                x.iter().map(|v| (v - 3.0) * (v - 3.0)).sum::<f64>(),
                "n = {n}"
            );
        }
    }

    #[test]
    fn hand_computed_row() {
        // [1, 2, 3, 4]: mean 2.5, biased var 1.25.
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut y = [0.0f32; 4];
        let (mut mean, mut inv) = ([0.0f32], [0.0f32]);
        normalize_rows(
            &x,
            &mut y,
            4,
            None,
            None,
            &lns(0.0),
            Some(&mut mean),
            Some(&mut inv),
        );
        let s = 1.25f32.sqrt();
        assert_eq!(mean, [2.5]);
        assert!((inv[0] - 1.0 / s).abs() < 1e-7);
        for (got, want) in y.iter().zip([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]) {
            assert!((got - want).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn large_mean_row_stays_accurate_in_f32() {
        // 1e4 + {-1, +1} alternating: mean exactly 1e4, d = ±1, y = ±1 with eps 0.
        // E[x²] - E[x]² in f32 would give var = 0 or a multiple of ulp(1e8) = 8 here.
        let n = 1000;
        let x: Vec<f32> = (0..n)
            .map(|i| if i % 2 == 0 { 9999.0 } else { 10001.0 })
            .collect();
        let mut y = vec![0.0f32; n];
        let mut mean = [0.0f32];
        normalize_rows(&x, &mut y, n, None, None, &lns(0.0), Some(&mut mean), None);
        assert_eq!(mean, [1e4]);
        for (i, v) in y.iter().enumerate() {
            let want = if i % 2 == 0 { -1.0 } else { 1.0 };
            assert!((v - want).abs() < 1e-6, "y[{i}] = {v}");
        }
    }

    #[test]
    fn constant_rows_are_exactly_zero() {
        // 0.1 is not a short binary fraction, so the first mean m is off by an ulp or so; the
        // correction must still bring every d (and var) to exactly 0.
        let n = 1000;
        for eps_in_sqrt in [false, true] {
            let p = Params {
                eps_in_sqrt,
                ..lns(0.25)
            };
            let x = vec![0.1f32; n];
            let (mut y, mut mean, mut inv) = (vec![1.0f32; n], [0.0f32], [0.0f32]);
            normalize_rows(
                &x,
                &mut y,
                n,
                None,
                None,
                &p,
                Some(&mut mean),
                Some(&mut inv),
            );
            assert!(y.iter().all(|&v| v == 0.0), "{:?}", &y[..4]);
            assert_eq!(mean, [0.1]);
            assert_eq!(inv, [if eps_in_sqrt { 2.0 } else { 4.0 }]);

            let mut xy = vec![f16::from_f32(0.1); n];
            normalize_rows_in_place(&mut xy, n, None, None, &p, None, None);
            assert!(xy.iter().all(|&v| v == f16::ZERO));
        }
        // And with eps = 0 that is 0 / 0.
        let mut y = vec![0.0f32; n];
        normalize_rows(
            &vec![0.1f32; n],
            &mut y,
            n,
            None,
            None,
            &lns(0.0),
            None,
            None,
        );
        assert!(y.iter().all(|v| v.is_nan()));
    }

    /// An element type that uses the trait's default row methods (here with an f64 `Acc`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Wrapped(f32);

    impl Element for Wrapped {
        type Acc = f64;
        fn to_acc(self) -> f64 {
            self.0 as f64
        }
        fn from_acc(acc: f64) -> Wrapped {
            Wrapped(acc as f32)
        }
    }

    #[test]
    fn default_row_methods_work() {
        let x: Vec<f32> = (0..40).map(|i| ((i * 37) % 11) as f32 - 3.0).collect();
        let wx: Vec<Wrapped> = x.iter().map(|&v| Wrapped(v)).collect();
        let scale: Vec<Wrapped> = (0..8).map(|i| Wrapped(1.0 + i as f32)).collect();
        let p = Params {
            variant: Variant::AdaNorm { c: 1.5, k: 0.2 },
            unbiased: true,
            ..lns(1e-5)
        };
        let mut wy = vec![Wrapped(0.0); 40];
        let mut mean = [0.0f64; 5];
        normalize_rows(
            &wx,
            &mut wy,
            8,
            Some(&scale),
            None,
            &p,
            Some(&mut mean),
            None,
        );
        let mut wxy = wx.clone();
        normalize_rows_in_place(&mut wxy, 8, Some(&scale), None, &p, None, None);
        assert_eq!(wy, wxy);

        let mut y = vec![0.0f32; 40];
        let s: Vec<f32> = scale.iter().map(|w| w.0).collect();
        normalize_rows(&x, &mut y, 8, Some(&s), None, &p, None, None);
        for (w, v) in wy.iter().zip(&y) {
            assert!((w.0 - v).abs() <= 1e-5 * v.abs().max(1.0), "{} vs {v}", w.0);
        }
        let row0: f64 = x[..8].iter().map(|&v| v as f64).sum::<f64>() / 8.0;
        assert_eq!(mean[0], row0);
    }

    #[test]
    fn empty_inputs_do_not_panic() {
        let p = lns(1e-5);
        let mut mean = [1.0f32; 3];
        let mut inv = [1.0f32; 3];
        normalize_rows::<f32>(
            &[],
            &mut [],
            0,
            Some(&[]),
            None,
            &p,
            Some(&mut mean),
            Some(&mut inv),
        );
        assert!(mean.iter().chain(&inv).all(|v| v.is_nan()));
        normalize_rows::<f16>(&[], &mut [], 4, None, None, &p, Some(&mut []), None);
        normalize_rows_in_place::<bf16>(&mut [], 0, None, None, &p, None, None);
        normalize_rows_in_place::<f64>(&mut [], 8, None, None, &p, None, Some(&mut []));
    }

    #[test]
    fn unbiased_single_element_gives_nan() {
        let p = Params {
            unbiased: true,
            ..lns(1e-5)
        };
        let mut y = [0.0f32];
        let mut inv = [0.0f32];
        normalize_rows(&[5.0f32], &mut y, 1, None, None, &p, None, Some(&mut inv));
        assert!(y[0].is_nan() && inv[0].is_nan());
    }

    #[test]
    #[should_panic(expected = "one entry per row")]
    fn wrong_stats_length_panics() {
        normalize_rows(
            &[1.0f32; 4],
            &mut [0.0; 4],
            2,
            None,
            None,
            &lns(0.0),
            Some(&mut [0.0; 1]),
            None,
        );
    }

    #[test]
    #[should_panic(expected = "multiple of row_len")]
    fn ragged_input_panics() {
        normalize_rows_in_place(&mut [1.0f32; 5], 2, None, None, &lns(0.0), None, None);
    }

    #[test]
    #[should_panic(expected = "scale must hold one row")]
    fn short_scale_panics() {
        normalize_rows(
            &[1.0f32; 4],
            &mut [0.0; 4],
            2,
            Some(&[1.0]),
            None,
            &lns(0.0),
            None,
            None,
        );
    }
}
