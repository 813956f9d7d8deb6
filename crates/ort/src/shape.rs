//! Shape inference while onnxruntime loads a model: `Y` has `X`'s shape, symbolic dims included.
//!
//! Element types need nothing from us: onnxruntime derives them from the registered records
//! (`op.rs`) before calling this. Limits of the API-17 interface shape what is done here:
//! - The status returned is discarded by onnxruntime, so nothing here can fail a model; bad
//!   inputs are reported by the kernel.
//! - There is no way to ask how many outputs the node has, and setting an output index the node
//!   lacks writes out of bounds inside onnxruntime. So only output 0 (`Y`, always present) is
//!   set; `Mean`/`InvStdDev` and version 2's `Sum` keep whatever shape the graph declares (the
//!   rewriter declares every output it adds, `Sum` included).
//! - An input without a shape reads as rank 0, like a real rank-0 tensor (which the kernel
//!   refuses), so rank 0 sets nothing.
//! - A dim that is neither known nor named would come out as `dim_value: -1` (the interface
//!   writes a value wherever there is no name), and leaving `Y` unset costs onnxruntime's own
//!   fusions downstream (`BiasGelu` needs the shape of the `MatMul` after the norm; onnxruntime's
//!   inference leaves the dims of a BERT's residual stream unnamed). Such a dim of `Y` gets a
//!   fresh name instead: it says only "unknown", as the unnamed dim did, and `Y`'s rank and
//!   known dims reach the ops after it.

use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicU64, Ordering};

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
    let unnamed: Vec<usize> = (0..ts.dims.len())
        .filter(|&i| ts.dims[i] < 0 && !named(symbols[i]))
        .collect();
    // Kept alive until the record is handed over (the interface copies the strings).
    let fresh: Vec<CString> = unnamed.iter().map(|_| fresh_dim_name()).collect();
    if !unnamed.is_empty() {
        for (&i, name) in unnamed.iter().zip(&fresh) {
            symbols[i] = name.as_ptr();
        }
        // `x` is the context's own copy of input 0's type, built for this call and read by
        // nothing after it: naming its unknown dims changes no value's recorded shape.
        // SAFETY: `x` is live and mutable; `symbols` has one valid string per dim.
        if unsafe {
            api.check((a.SetSymbolicDimensions)(
                x,
                symbols.as_mut_ptr(),
                symbols.len(),
            ))
        }
        .is_err()
        {
            return;
        }
    }
    // Y is X's shape: hand X's record back as output 0's. Failure leaves Y unknown, nothing worse.
    // SAFETY: `ctx` and `x` are live; output 0 exists on every node (Y is required).
    let _ = unsafe { api.check((a.ShapeInferContext_SetOutputTypeShape)(ctx, 0, x)) };
    drop(fresh);
}

/// A dim name no model uses (the prefix) and no other call hands out (the counter).
fn fresh_dim_name() -> CString {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    CString::new(format!("adanorm_unknown_{n}")).expect("no NUL in the name")
}
