//! The CUDA execution provider: the same checks as the CPU path, then one asynchronous launch of
//! `adanorm_cuda`'s kernels on onnxruntime's compute stream. Tensors stay on the device and
//! nothing here reads their data; the kernels' errors come back as statuses naming the node.
//!
//! Registration is decided once per process ([`registration`]): only with the `cuda` feature, a
//! driver and a GPU that can run the embedded PTX. Everywhere else the records are left out and
//! onnxruntime runs these nodes on the CPU records, as it does for any op without a CUDA kernel.

use std::ffi::{c_char, c_void, CString};
use std::sync::OnceLock;

use adanorm_cuda::{DType, DeviceInfo};
use adanorm_kernels::{check_param_shape, row_layout, stats_shape};
use ort_sys::{OrtAllocator, OrtApi, OrtKernelContext, OrtMemoryInfo, OrtStatusPtr};

use crate::api::Api;
use crate::attrs::type_mismatch;
use crate::elem::Elem;
use crate::hooks;
use crate::kernel::Kernel;
use crate::status::Error;
use crate::tensor::{Input, KernelIo};

/// Set to `1`, the CUDA records are never registered (the nodes run on the CPU kernels).
pub const DISABLE_ENV: &str = "ADANORM_ORT_DISABLE_CUDA";

/// The onnxruntime release whose C API (18) added `KernelContext_GetScratchBuffer`.
const SCRATCH_MIN_VERSION: (u32, u32) = (1, 18);

/// Whether this process registers the CUDA records: `Ok` with the GPU they will run on, or why not.
/// Decided on first use and kept, so every session of the process sees the same records.
pub fn registration() -> &'static Result<DeviceInfo, String> {
    static DECISION: OnceLock<Result<DeviceInfo, String>> = OnceLock::new();
    DECISION.get_or_init(|| {
        if std::env::var_os(DISABLE_ENV).is_some_and(|v| v == "1") {
            // Also keeps the driver uninitialised (no cuInit), for processes that fork later.
            return Err(format!("disabled by {DISABLE_ENV}=1"));
        }
        let decision = adanorm_cuda::available().and_then(|info| {
            info.check_runs_embedded_ptx()
                .map(|()| info)
                .inspect_err(|why| {
                    // A GPU is there but cannot run our kernels: the nodes silently falling back to
                    // the CPU would be a surprise, so say it once.
                    eprintln!(
                        "libadanorm_ort: the ai.adanorm CUDA kernels are not registered ({why}); \
                     these nodes run on the CPU"
                    )
                })
        });
        if decision.is_err() && hooks::force_cuda_records() {
            // Tests on machines without a GPU: the records must coexist with CPU sessions.
            return Ok(DeviceInfo {
                ordinal: -1,
                name: "none (records forced by a test switch)".to_string(),
                compute_capability: (0, 0),
                multiprocessors: 0,
                total_memory: 0,
                driver_version: 0,
                nvrtc_version: "",
            });
        }
        decision
    })
}

/// A line for users and tests: whether the CUDA kernels are registered, and on what or why not.
/// Valid for the life of the process.
#[no_mangle]
pub extern "C" fn adanorm_ort_cuda_status() -> *const c_char {
    static TEXT: OnceLock<CString> = OnceLock::new();
    crate::status::guard_value(std::ptr::null(), || {
        TEXT.get_or_init(|| {
            let line = match registration() {
                Ok(info) => format!("registered for CUDAExecutionProvider: {info}"),
                Err(why) => format!("not registered: {why}"),
            };
            CString::new(line.replace('\0', " ")).expect("NULs were replaced")
        })
        .as_ptr()
    })
}

fn dtype(elem: Elem) -> Result<DType, Error> {
    match elem {
        Elem::F32 => Ok(DType::F32),
        Elem::F16 => Ok(DType::F16),
        Elem::BF16 => Ok(DType::BF16),
        // Never registered (see `op::cuda_ops`).
        Elem::F64 => Err(Error::internal("no CUDA kernel for double")),
    }
}

/// # Safety
/// `ctx` must be the live context of the compute call.
pub unsafe fn compute(kernel: &Kernel, ctx: *mut OrtKernelContext) -> Result<(), Error> {
    // SAFETY: per the contract; `io` does not outlive this call.
    let io = unsafe { KernelIo::new(kernel.api(), ctx) };
    let elem = kernel.op.elem;
    let dtype = dtype(elem)?;
    let x = io
        .input(0)?
        .ok_or_else(|| Error::invalid("input X is required"))?;
    if x.ts.elem != elem.code() {
        return Err(Error::invalid(type_mismatch("X", x.ts.elem, elem.code())));
    }
    let layout = row_layout(&x.shape, kernel.axis)?;
    let normalized = &x.shape[layout.axis..];
    let scale = io.input(1)?;
    let bias = io.input(2)?;
    for (param, what) in [(&scale, "Scale"), (&bias, "B")] {
        if let Some(p) = param {
            if p.ts.elem != elem.code() {
                return Err(Error::invalid(type_mismatch(what, p.ts.elem, elem.code())));
            }
            check_param_shape(&p.shape, normalized, what)?;
        }
    }

    let mut y = io
        .output(0, &x.shape)?
        .ok_or_else(|| Error::invalid("output Y is required"))?;
    let stats_dims = stats_shape(&x.shape, layout.axis);
    // Mean/InvStdDev are float for every GPU type (`Elem::stats`), as the kernels write them.
    let mean = io
        .output(1, &stats_dims)?
        .map_or(std::ptr::null_mut(), |mut m| m.raw());
    let inv_std_dev = io
        .output(2, &stats_dims)?
        .map_or(std::ptr::null_mut(), |mut s| s.raw());
    if layout.rows == 0 {
        return Ok(());
    }

    let stream = io.gpu_stream()?;
    let mut scratch = Scratch::new(&io, &x);
    let scale_row = full_row(
        &mut scratch,
        stream,
        dtype,
        scale.as_ref(),
        "Scale",
        normalized,
    )?;
    let bias_row = full_row(&mut scratch, stream, dtype, bias.as_ref(), "B", normalized)?;
    // SAFETY: every pointer is onnxruntime's device memory for this call, sized as checked above
    // (X/Y rows * row_len, Scale/B one row, Mean/InvStdDev rows floats), on the device of
    // `stream`, and stays allocated until the stream has run the launch (scratch rows are
    // stream-ordered, see `Scratch`).
    unsafe {
        adanorm_cuda::launch(
            stream,
            dtype,
            x.raw(),
            y.raw(),
            scale_row,
            bias_row,
            mean.cast(),
            inv_std_dev.cast(),
            layout.rows,
            layout.row_len,
            &kernel.params,
        )
    }
    .map_err(|e| Error::internal(format!("CUDA: {e}")))
}

/// A device pointer to one full row of `Scale`/`B`: the tensor itself when it already holds
/// `prod(normalized)` elements (the same layout up to leading 1s), else a broadcast copy.
fn full_row(
    scratch: &mut Scratch<'_>,
    stream: *mut c_void,
    dtype: DType,
    param: Option<&Input>,
    what: &str,
    normalized: &[usize],
) -> Result<*const c_void, Error> {
    let Some(param) = param else {
        return Ok(std::ptr::null());
    };
    let row_len: usize = normalized.iter().product();
    if param.shape.iter().product::<usize>() == row_len {
        return Ok(param.raw());
    }
    let dst = scratch.alloc(row_len * dtype.size(), || {
        format!(
            "{what} of shape {:?} is broadcast over the normalized shape {normalized:?}",
            param.shape
        )
    })?;
    // SAFETY: `param` holds prod(param.shape) elements on the device; `dst` has room for
    // `row_len`; both live until the stream has run the copy.
    unsafe {
        adanorm_cuda::launch_expand_param(stream, dtype, param.raw(), dst, &param.shape, normalized)
    }
    .map_err(|e| Error::internal(format!("CUDA: broadcasting {what}: {e}")))?;
    Ok(dst)
}

/// Device memory for broadcast rows, from onnxruntime's allocator for X's device, returned when
/// the compute call ends.
///
/// `KernelContext_GetScratchBuffer` tags each block with the node's compute stream, so handing a
/// block back right after the asynchronous launch is safe: onnxruntime's arena lets work on
/// another stream reuse it only once this stream has passed that point, as its own CUDA kernels
/// rely on.
struct Scratch<'a> {
    io: &'a KernelIo,
    x: &'a Input,
    allocator: *mut OrtAllocator,
    blocks: Vec<*mut c_void>,
}

impl<'a> Scratch<'a> {
    fn new(io: &'a KernelIo, x: &'a Input) -> Scratch<'a> {
        Scratch {
            io,
            x,
            allocator: std::ptr::null_mut(),
            blocks: Vec::new(),
        }
    }

    /// `bytes` of device memory; `why` describes the need for the error on old runtimes.
    fn alloc(&mut self, bytes: usize, why: impl Fn() -> String) -> Result<*mut c_void, Error> {
        let version = Api::registered_version();
        if version.is_none_or(|v| v < SCRATCH_MIN_VERSION) {
            let shown = version.map_or("an unknown version".to_string(), |(a, b)| {
                format!("{a}.{b}")
            });
            return Err(Error::invalid(format!(
                "{}: on CUDA that needs onnxruntime >= {}.{} (this is {shown}); give it the full \
                 normalized shape instead (adanorm-onnx rewrite writes weights that way)",
                why(),
                SCRATCH_MIN_VERSION.0,
                SCRATCH_MIN_VERSION.1
            )));
        }
        let api = self.io.api();
        let ctx = self.io.context();
        let info = self.x.memory_info(api)?;
        if self.allocator.is_null() {
            // SAFETY: `ctx` and `info` are live for the call; onnxruntime writes an allocator we
            // release in Drop.
            unsafe {
                api.check((api.get().KernelContext_GetAllocator)(
                    ctx,
                    info,
                    &mut self.allocator,
                ))?
            };
        }
        let mut block: *mut c_void = std::ptr::null_mut();
        // SAFETY: the runtime is >= 1.18 (checked above), so its table has the function; `ctx`
        // and `info` are live; onnxruntime writes a block we free in Drop.
        unsafe {
            let get = scratch_buffer_fn(api);
            api.check(get(ctx, info, bytes, &mut block))?;
        }
        if block.is_null() {
            return Err(Error::internal(format!(
                "onnxruntime returned no scratch memory for {bytes} bytes"
            )));
        }
        self.blocks.push(block);
        Ok(block)
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if self.allocator.is_null() {
            return;
        }
        let api = self.io.api();
        for &block in &self.blocks {
            // SAFETY: each block came from this allocator's device, through GetScratchBuffer,
            // and is freed once. A failure cannot be reported from here; ignoring it leaks.
            let _ = api.check(unsafe { (api.get().AllocatorFree)(self.allocator, block) });
        }
        // SAFETY: the allocator came from KernelContext_GetAllocator, which hands ownership of
        // the wrapper to us.
        unsafe { (api.get().ReleaseAllocator)(self.allocator) };
    }
}

type ScratchBufferFn = unsafe extern "system" fn(
    *const OrtKernelContext,
    *const OrtMemoryInfo,
    usize,
    *mut *mut c_void,
) -> OrtStatusPtr;

/// Where `KernelContext_GetScratchBuffer` sits in the table: C API 18 appended
/// `SessionOptionsAppendExecutionProvider_VitisAI` and then it right after API 17's last entry,
/// `SessionOptionsAppendExecutionProvider_OpenVINO_V2`. ort-sys declares it only under its
/// `api-18` feature, which would raise the C API version this library asks every runtime for.
const SCRATCH_BUFFER_OFFSET: usize =
    std::mem::offset_of!(OrtApi, SessionOptionsAppendExecutionProvider_OpenVINO_V2)
        + 2 * std::mem::size_of::<usize>();

/// # Safety
/// `api` must be the table of an onnxruntime >= 1.18.
unsafe fn scratch_buffer_fn(api: Api) -> ScratchBufferFn {
    // SAFETY: per the contract the table extends past the offset; entries are non-null function
    // pointers of this signature.
    unsafe {
        api.as_ptr()
            .cast::<u8>()
            .add(SCRATCH_BUFFER_OFFSET)
            .cast::<ScratchBufferFn>()
            .read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_buffer_slot_is_where_api_18_declares_it() {
        // The dev-dependency on ort-sys turns `api-18` on for tests, so the field exists here.
        assert_eq!(
            SCRATCH_BUFFER_OFFSET,
            std::mem::offset_of!(OrtApi, KernelContext_GetScratchBuffer)
        );
    }

    #[test]
    fn only_gpu_types_map_to_kernels() {
        assert_eq!(dtype(Elem::F32).unwrap(), DType::F32);
        assert_eq!(dtype(Elem::F16).unwrap(), DType::F16);
        assert_eq!(dtype(Elem::BF16).unwrap(), DType::BF16);
        assert!(dtype(Elem::F64).is_err());
    }

    #[test]
    fn the_status_line_says_what_was_decided() {
        // SAFETY: a static NUL-terminated string.
        let line = unsafe { std::ffi::CStr::from_ptr(adanorm_ort_cuda_status()) }
            .to_string_lossy()
            .into_owned();
        match registration() {
            Ok(_) => assert!(
                line.starts_with("registered for CUDAExecutionProvider"),
                "{line}"
            ),
            Err(why) => assert_eq!(line, format!("not registered: {why}")),
        }
        #[cfg(not(feature = "cuda"))]
        if !hooks::force_cuda_records() {
            assert_eq!(line, "not registered: built without the cuda feature");
        }
    }
}
