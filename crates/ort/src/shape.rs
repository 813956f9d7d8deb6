//! Shape inference while onnxruntime loads a model: `Y` has `X`'s shape, symbolic dims included.
//!
//! Element types need nothing from us: onnxruntime derives them from the registered records
//! (`op.rs`) before calling this. Limits of the API-17 interface shape what is done here:
//! - The status returned is discarded by onnxruntime, so nothing here can fail a model; bad
//!   inputs are reported by the kernel.
//! - There is no way to ask how many outputs the node has, and setting an output index the node
//!   lacks writes out of bounds inside onnxruntime. So only output 0 (`Y`, always present) is
//!   set; `Mean`/`InvStdDev` keep whatever shape the graph declares.
//! - An input without a shape reads as rank 0, like a real rank-0 tensor (which the kernel
//!   refuses), so rank 0 sets nothing; nor does a dim that is neither known nor named, which
//!   would come out as `dim_value: -1`.

use std::ffi::c_char;

use ort_sys::{OrtShapeInferContext, OrtTensorTypeAndShapeInfo};

use crate::api::Api;
use crate::tensor::read_type_shape;

/// Sets `Y`'s shape from `X`'s when it is fully known or named.
///
/// # Safety
/// `ctx` must be the live context of an `InferOutputShapeFn` call.
pub unsafe fn infer(api: Api, ctx: *mut OrtShapeInferContext) {
    let a = api.get();
    let mut count = 0usize;
    // SAFETY: `ctx` is live.
    if unsafe { api.check((a.ShapeInferContext_GetInputCount)(ctx, &mut count)) }.is_err()
        || count == 0
    {
        return;
    }
    let mut x: *mut OrtTensorTypeAndShapeInfo = std::ptr::null_mut();
    // SAFETY: index 0 < count; the info is owned by the context, not released by us.
    if unsafe { api.check((a.ShapeInferContext_GetInputTypeShape)(ctx, 0, &mut x)) }.is_err()
        || x.is_null()
    {
        return;
    }
    // SAFETY: `x` is live for the call.
    let Ok(ts) = (unsafe { read_type_shape(api, x) }) else {
        return;
    };
    if ts.dims.is_empty() {
        return;
    }
    let mut symbols: Vec<*const c_char> = vec![std::ptr::null(); ts.dims.len()];
    // SAFETY: `symbols` has one slot per dim; the strings are owned by `x`.
    if unsafe {
        api.check((a.GetSymbolicDimensions)(
            x,
            symbols.as_mut_ptr(),
            symbols.len(),
        ))
    }
    .is_err()
    {
        return;
    }
    // SAFETY: each non-NULL entry is a NUL-terminated string owned by `x`.
    let named = |p: *const c_char| !p.is_null() && unsafe { *p } != 0;
    let expressible = ts
        .dims
        .iter()
        .zip(&symbols)
        .all(|(&d, &s)| d >= 0 || named(s));
    if !expressible {
        return;
    }
    // Y is X's shape: hand X's record back as output 0's. Failure leaves Y unknown, nothing worse.
    // SAFETY: `ctx` and `x` are live; output 0 exists on every node (Y is required).
    let _ = unsafe { api.check((a.ShapeInferContext_SetOutputTypeShape)(ctx, 0, x)) };
}
