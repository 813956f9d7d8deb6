//! `libadanorm_ort`: the `ai.adanorm` operators (`AdaNorm`, `LayerNormSimple`, contract in
//! `ops-spec.md`) as an ONNX Runtime custom-op library.
//!
//! Hosts load the shared library by path (`SessionOptions.register_custom_ops_library` in Python,
//! `RegisterCustomOpsLibrary_V2` in C/C++, `SessionBuilder::with_operator_library` in Rust `ort`);
//! onnxruntime then calls [`RegisterCustomOps`]. The library links no onnxruntime: it uses the
//! host's C API table (ort-sys with `disable-linking` supplies only the declarations), so one build
//! serves every onnxruntime from 1.17 on; older ones get an error status naming the version.
//!
//! - [`api`]: the requested C API version and checked calls into it.
//! - [`status`]: errors, and the guards that keep errors and panics from crossing the boundary.
//! - [`op`]: the `OrtCustomOp` records, one per (op, element type, execution provider).
//! - [`kernel`]: a node's attributes, checked at session creation; dispatch per provider.
//! - [`cpu`]: the CPU compute, rows spread over onnxruntime's intra-op pool.
//! - [`cuda`]: the CUDA compute (feature `cuda`), launched on onnxruntime's compute stream.
//! - [`shape`]: shape inference for `Y`.
//! - [`attrs`], [`tensor`], [`elem`]: reading node info, tensors and element types.
//! - [`hooks`]: test-only panics and thread records, off unless `ADANORM_ORT_TEST_HOOKS=1`.
//!
//! All math is `adanorm_kernels` (CPU) and `adanorm_cuda` (GPU).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod api;
pub mod attrs;
pub mod cpu;
pub mod cuda;
pub mod elem;
pub mod hooks;
pub mod kernel;
pub mod op;
pub mod register;
pub mod shape;
pub mod status;
pub mod tensor;

pub use register::RegisterCustomOps;
