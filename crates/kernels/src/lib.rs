//! The math and the contract of the `ai.adanorm` operator set (`AdaNorm`, `LayerNormSimple`),
//! shared by every runtime (the tract ops, the ONNX Runtime custom-op library, the CUDA
//! kernels' tests) and by the rewriter: [`params`] names the domain, the ops and their
//! attributes once for all of them.
//!
//! Per row of `N = prod(X.shape[axis:])` elements, in f32 (f64 for f64 tensors):
//!
//! ```text
//! mean  = sum(x) / N                 d = x - mean
//! var   = sum(d*d) / N               (unbiased = 1: / (N - 1); N = 1 gives NaN)
//! sigma = sqrt(var + epsilon)        (eps_in_sqrt = 0: sqrt(var) + epsilon)
//! y     = d / sigma
//! Y     = c * (1 - k*y) * y          (AdaNorm; LayerNormSimple: Y = y)
//! Y     = Y * Scale + B              (each when given)
//! ```
//!
//! `InvStdDev = 1 / sigma`. Version 2 normalises `S = (X + Bias) + Skip` instead of `X` (each
//! `Add` rounded to the element type) and can write `S` as `Sum`. The contract itself is
//! `ops-spec.md`.
//!
//! - [`params`]: op names, attributes, their defaults and validation, [`SpecError`].
//! - [`layout`]: rows of `X`, allowed `Scale`/`B` shapes, the stats' output shape.
//! - [`reference`]: the float64 oracle, formula for formula; every fast path is tested against it.
//! - [`rows`]: the fast row kernels for f32, f16, bf16 and f64.
//! - [`dispatch`]: the same kernels also compiled for AVX2 and for AVX-512 (x86_64); the widest
//!   the CPU supports is picked at run time, the baseline build otherwise.
//!
//! A runtime checks `Params::validate`, `layout::row_layout` and `layout::check_param_shape`,
//! expands `Scale`/`B` with `layout::expand_param`, then calls `dispatch::out_of_place` or
//! `dispatch::in_place` (the `rows` kernels at the widest instructions the CPU has); with a
//! residual also `layout::check_bias_shape` and `layout::skip_rows`, then
//! `dispatch::out_of_place_residual`.
// The only unsafe code is the call into `#[target_feature]` functions after the CPU check
// (`dispatch`), and `convert`'s F16C and `sums`' AVX loops.
#![deny(unsafe_code)]

pub mod convert;
pub mod dispatch;
pub mod layout;
pub mod params;
pub mod reference;
pub mod rows;
mod sums;

pub use layout::{
    check_bias_shape, check_param_shape, expand_param, param_row, row_layout, skip_rows,
    skip_values, stats_shape, RowLayout, SkipRows,
};
pub use params::{OpKind, Params, SpecError, Variant};
pub use reference::{reference, reference_residual, RefOutput, RefResidual};
pub use rows::{
    normalize_rows, normalize_rows_in_place, normalize_rows_residual, Accumulator, Element,
    Residual, SkipInput,
};
