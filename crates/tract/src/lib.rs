//! The `ai.adanorm` operator set (`AdaNorm`, `LayerNormSimple`, contract in `docs/ops-spec.md`)
//! as tract 0.23 ops, plus what a program needs to load and run ONNX models that use them.
//!
//! - [`onnx`]: tract's ONNX framework with both ops registered.
//! - [`model_for_path`] / [`run_model`]: load (inlining model-local functions first) and run.
//! - [`inline_functions`]: splices `ModelProto.functions` calls into the graph, which tract
//!   itself does not do (the inliner is `adanorm-proto`'s, shared with the CLI).
//! - [`NormOp`]: the op itself; the math is `adanorm_kernels`.
//!
//! ```no_run
//! use adanorm_tract::tract_onnx::prelude::*;
//!
//! # fn main() -> TractResult<()> {
//! let model = adanorm_tract::model_for_path(std::path::Path::new("model.onnx"))?
//!     .with_input_fact(0, f32::fact([2, 8, 768]).into())?
//!     .into_optimized()?
//!     .into_runnable()?;
//! let x = Tensor::zero::<f32>(&[2, 8, 768])?;
//! let outputs = model.run(tvec![x.into_tvalue()])?;
//! # Ok(()) }
//! ```

mod builder;
mod eval;
mod load;
mod node_checks;
mod op;

/// The tract this crate is built against; use its types (and `tract_onnx::prelude::tract_ndarray`)
/// so tensors and models pass between crates without conversion.
pub use tract_onnx;

pub use builder::register;
pub use load::{inline_functions, model_for_path, proto_for_path, run_model};
pub use op::NormOp;

/// tract's ONNX framework with `AdaNorm` and `LayerNormSimple` registered.
///
/// Parsing with it directly (`onnx().model_for_path(..)`) skips [`inline_functions`] and the
/// whole-model checks of [`model_for_path`]; prefer that function for files.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    register(&mut onnx);
    onnx
}

/// Compiles the README's example.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
