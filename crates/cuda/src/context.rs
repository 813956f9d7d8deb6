//! Which CUDA context a launch runs in: the stream's own context when a stream object is given
//! (made current for the launch if another one is), else the thread's current context.

use std::ffi::c_void;

use crate::driver::{self, CuContext, CuStream, Driver};

/// Keeps the launch's context current until dropped, restoring the caller's afterwards.
pub struct ContextScope<'a> {
    d: &'a Driver,
    pushed: bool,
    /// Stable identity of `ctx` for the module cache (cuCtxGetId, else the address).
    pub key: u64,
}

impl<'a> ContextScope<'a> {
    pub fn enter(d: &'a Driver, stream: *mut c_void) -> Result<ContextScope<'a>, String> {
        let mut current: CuContext = std::ptr::null_mut();
        // SAFETY: writes the calling thread's current context (or null).
        driver::check(
            d,
            unsafe { (d.ctx_get_current)(&mut current) },
            "cuCtxGetCurrent",
        )?;
        let special = matches!(
            stream as usize,
            0 | driver::STREAM_LEGACY | driver::STREAM_PER_THREAD
        );
        let (ctx, pushed) = if special {
            if current.is_null() {
                return Err(
                    "no CUDA context is current on this thread and no stream was given: \
                            make the device's context current first (cudaSetDevice / \
                            cuCtxSetCurrent), or pass the stream"
                        .to_string(),
                );
            }
            (current, false)
        } else {
            let mut owner: CuContext = std::ptr::null_mut();
            // SAFETY: `stream` is a stream handle per `launch`'s contract; the driver writes the
            // context it was created in.
            let r = unsafe { (d.stream_get_ctx)(stream as CuStream, &mut owner) };
            driver::check(d, r, "cuStreamGetCtx on the given stream")?;
            if owner == current {
                (current, false)
            } else {
                // SAFETY: `owner` is a live context (its stream is live); popped in Drop.
                let r = unsafe { (d.ctx_push_current)(owner) };
                driver::check(d, r, "cuCtxPushCurrent")?;
                (owner, true)
            }
        };
        let key = match d.ctx_get_id {
            Some(get_id) => {
                let mut id = 0u64;
                // SAFETY: `ctx` is live; the driver writes its unique id.
                let r = unsafe { get_id(ctx, &mut id) };
                if r == driver::CUDA_SUCCESS {
                    id
                } else {
                    ctx as u64
                }
            }
            None => ctx as u64,
        };
        Ok(ContextScope { d, pushed, key })
    }
}

impl Drop for ContextScope<'_> {
    fn drop(&mut self) {
        if self.pushed {
            let mut popped: CuContext = std::ptr::null_mut();
            // SAFETY: pops exactly the context `enter` pushed on this thread.
            unsafe { (self.d.ctx_pop_current)(&mut popped) };
        }
    }
}
