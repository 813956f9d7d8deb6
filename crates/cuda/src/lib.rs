//! The `ai.adanorm` ops (`AdaNorm`, `LayerNormSimple`, contract in `ops-spec.md`) as CUDA kernels
//! for f32, f16 and bf16 (statistics in f32), knowing nothing of ONNX Runtime: device pointers,
//! sizes and a stream in, an asynchronous launch out.
//!
//! - Feature `cuda` off (the default): no CUDA anywhere; [`available`] and [`launch`] return
//!   `Err("built without the cuda feature")`.
//! - Feature `cuda` on: `build.rs` compiles `kernels/adanorm.cu` to PTX with NVRTC (from a PyPI
//!   wheel or a toolkit, no GPU needed) and embeds it; at run time `libcuda` is opened with
//!   dlopen, so the library still loads where there is no GPU, and the PTX is JIT-compiled by the
//!   driver into each context on first use.
//!
//! Modules: [`config`] (kernel table and choice), `dtype`, and under `cuda`: `driver` (dlopen'd
//! driver API), `context` (which context a launch uses), `module` (PTX modules per context),
//! `launch`, and `device` (test and benchmark helpers).

use std::ffi::c_void;

use adanorm_kernels::Params;

pub mod config;
mod dtype;

pub use dtype::DType;

#[cfg(feature = "cuda")]
mod context;
#[cfg(feature = "cuda")]
pub mod device;
#[cfg(feature = "cuda")]
mod driver;
#[cfg(feature = "cuda")]
mod launch;
#[cfg(feature = "cuda")]
mod module;

/// Why nothing runs without the feature.
#[cfg(not(feature = "cuda"))]
const NO_FEATURE: &str = "built without the cuda feature";

/// The oldest GPU the embedded PTX runs on (`compute_75` in build.rs: Turing, e.g. T4; Ampere
/// and later load the `compute_80` build).
pub const MIN_COMPUTE_CAPABILITY: (i32, i32) = (7, 5);

/// The GPU a launch from this thread would use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: i32,
    pub name: String,
    /// (major, minor), e.g. (9, 0) for H100/H200.
    pub compute_capability: (i32, i32),
    pub multiprocessors: i32,
    pub total_memory: usize,
    /// As `cuDriverGetVersion`: 1000 * major + 10 * minor.
    pub driver_version: i32,
    /// `major.minor` of the NVRTC that compiled the embedded PTX.
    pub nvrtc_version: &'static str,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (device {}, sm_{}{}, {} SMs, {:.1} GiB, driver {}.{}, PTX by NVRTC {})",
            self.name,
            self.ordinal,
            self.compute_capability.0,
            self.compute_capability.1,
            self.multiprocessors,
            self.total_memory as f64 / (1u64 << 30) as f64,
            self.driver_version / 1000,
            self.driver_version % 1000 / 10,
            self.nvrtc_version
        )
    }
}

impl DeviceInfo {
    /// The oldest driver, as [`DeviceInfo::driver_version`] counts, that can JIT the embedded
    /// PTX: PTX carries the ISA version of the NVRTC that made it, and a driver accepts ISA
    /// versions up to its own CUDA version.
    pub fn ptx_min_driver(&self) -> Option<i32> {
        let (major, minor) = self.nvrtc_version.split_once('.')?;
        Some(major.trim().parse::<i32>().ok()? * 1000 + minor.trim().parse::<i32>().ok()? * 10)
    }

    /// `Err` saying why the embedded PTX cannot run on this device: a GPU older than
    /// [`MIN_COMPUTE_CAPABILITY`] (no kernel image for it), or a driver older than the PTX
    /// (every module load would fail with CUDA_ERROR_UNSUPPORTED_PTX_VERSION).
    pub fn check_runs_embedded_ptx(&self) -> Result<(), String> {
        if self.compute_capability < MIN_COMPUTE_CAPABILITY {
            return Err(format!(
                "{} is sm_{}{}; the embedded PTX targets compute_{}{} and later GPUs",
                self.name,
                self.compute_capability.0,
                self.compute_capability.1,
                MIN_COMPUTE_CAPABILITY.0,
                MIN_COMPUTE_CAPABILITY.1
            ));
        }
        match self.ptx_min_driver() {
            Some(min) if self.driver_version < min => Err(format!(
                "the CUDA driver supports CUDA {}.{}, older than the {}.{} the embedded PTX needs \
                 (made by NVRTC {}): update the driver, or build with an older NVRTC \
                 (CUDA_WHEEL_VERSION, see crates/cuda/scripts/setup-cuda-build.sh)",
                self.driver_version / 1000,
                self.driver_version % 1000 / 10,
                min / 1000,
                min % 1000 / 10,
                self.nvrtc_version
            )),
            _ => Ok(()),
        }
    }
}

/// The device of the thread's current context, or device 0 when none is current; `Err` says
/// why nothing can run (feature off, no driver, no GPU).
pub fn available() -> Result<DeviceInfo, String> {
    #[cfg(feature = "cuda")]
    {
        device_info()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(NO_FEATURE.to_string())
    }
}

#[cfg(feature = "cuda")]
fn device_info() -> Result<DeviceInfo, String> {
    use driver::{check, driver};
    let d = driver()?;
    // SAFETY: every call below writes plain values into the locals it is given; `name` has room
    // for the 256 bytes announced.
    unsafe {
        let mut count = 0;
        check(d, (d.device_get_count)(&mut count), "cuDeviceGetCount")?;
        if count == 0 {
            return Err("the CUDA driver sees no GPU".to_string());
        }
        let mut ctx = std::ptr::null_mut();
        check(d, (d.ctx_get_current)(&mut ctx), "cuCtxGetCurrent")?;
        let mut dev = 0;
        if ctx.is_null() {
            check(d, (d.device_get)(&mut dev, 0), "cuDeviceGet")?;
        } else {
            check(d, (d.ctx_get_device)(&mut dev), "cuCtxGetDevice")?;
        }
        let mut name = [0 as std::ffi::c_char; 256];
        check(
            d,
            (d.device_get_name)(name.as_mut_ptr(), 256, dev),
            "cuDeviceGetName",
        )?;
        let attr = |a| {
            let mut v = 0;
            check(
                d,
                (d.device_get_attribute)(&mut v, a, dev),
                "cuDeviceGetAttribute",
            )
            .map(|_| v)
        };
        let mut total = 0usize;
        check(d, (d.device_total_mem)(&mut total, dev), "cuDeviceTotalMem")?;
        let mut version = 0;
        check(
            d,
            (d.driver_get_version)(&mut version),
            "cuDriverGetVersion",
        )?;
        Ok(DeviceInfo {
            ordinal: dev,
            name: std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned(),
            compute_capability: (
                attr(driver::ATTR_COMPUTE_CAPABILITY_MAJOR)?,
                attr(driver::ATTR_COMPUTE_CAPABILITY_MINOR)?,
            ),
            multiprocessors: attr(driver::ATTR_MULTIPROCESSOR_COUNT)?,
            total_memory: total,
            driver_version: version,
            nvrtc_version: module::NVRTC_VERSION.trim(),
        })
    }
}

/// Normalises `rows` rows of `row_len` contiguous elements of `x` into `y`, asynchronously on
/// `stream`.
///
/// - `stream`: a `CUstream` / `cudaStream_t` (the runtime's and the driver's handles are the
///   same), or null for the legacy default stream. Given a stream object, the launch runs in the
///   context that stream belongs to (made current for the call if another one is); given null,
///   in the thread's current context. The PTX module is loaded into a context on its first
///   launch there (about 10 ms measured on an H200; the driver then JIT-compiles each kernel
///   at its own first launch).
/// - `x`, `y`: device pointers to `rows * row_len` elements of `dtype`; `y` may equal `x`.
/// - `scale`, `bias`: device pointers to `row_len` elements of `dtype` (already broadcast to one
///   full row, see [`launch_expand_param`]), or null when absent.
/// - `mean`, `inv_std_dev`: device pointers to `rows` f32 values, or null when not wanted.
/// - 16-byte aligned pointers and `row_len` a multiple of 16 / element size get vectorised
///   kernels; anything else still works, at scalar speed.
///
/// Returns `Err` naming the reason for invalid parameters (as `Params::validate`), null `x`/`y`,
/// sizes beyond memory, no CUDA context, a module that does not load, or a refused launch.
/// `rows == 0` is a no-op; `row_len == 0` writes NaN to `mean` / `inv_std_dev`.
///
/// # Safety
/// Every non-null pointer must be a device pointer (or managed/mapped memory) of the launch's
/// context with the stated number of elements, live until the work on `stream` has finished;
/// `stream` must be null, `CU_STREAM_LEGACY`, `CU_STREAM_PER_THREAD` or a live stream.
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch(
    stream: *mut c_void,
    dtype: DType,
    x: *const c_void,
    y: *mut c_void,
    scale: *const c_void,
    bias: *const c_void,
    mean: *mut f32,
    inv_std_dev: *mut f32,
    rows: usize,
    row_len: usize,
    params: &Params,
) -> Result<(), String> {
    #[cfg(feature = "cuda")]
    // SAFETY: the caller's contract is this function's (`# Safety` above), passed on unchanged.
    unsafe {
        launch::launch(
            stream,
            dtype,
            x,
            y,
            scale,
            bias,
            mean,
            inv_std_dev,
            rows,
            row_len,
            params,
        )
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (
            stream,
            dtype,
            x,
            y,
            scale,
            bias,
            mean,
            inv_std_dev,
            rows,
            row_len,
            params,
        );
        Err(NO_FEATURE.to_string())
    }
}

/// Broadcasts a `Scale` or `B` of `param_shape` (unidirectionally broadcastable to
/// `normalized_shape = X.shape[axis:]`, as `layout::check_param_shape` checks) to one full row of
/// `prod(normalized_shape)` elements at `dst`, asynchronously on `stream`: the device-side twin
/// of `adanorm_kernels::expand_param`, for runtimes whose parameters live on the GPU.
///
/// # Safety
/// `src` and `dst` are device pointers of the launch's context holding `prod(param_shape)` and
/// `prod(normalized_shape)` elements of `dtype`, live until the work on `stream` has finished;
/// `stream` as for [`launch`].
pub unsafe fn launch_expand_param(
    stream: *mut c_void,
    dtype: DType,
    src: *const c_void,
    dst: *mut c_void,
    param_shape: &[usize],
    normalized_shape: &[usize],
) -> Result<(), String> {
    #[cfg(feature = "cuda")]
    // SAFETY: as in `launch`: the caller's contract, passed on unchanged.
    unsafe {
        launch::launch_expand_param(stream, dtype, src, dst, param_shape, normalized_shape)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (stream, dtype, src, dst, param_shape, normalized_shape);
        Err(NO_FEATURE.to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn driver_versions_are_compared_with_the_ptx() {
        let mut info = super::DeviceInfo {
            ordinal: 0,
            name: "test".into(),
            compute_capability: (9, 0),
            multiprocessors: 132,
            total_memory: 1 << 30,
            driver_version: 12080,
            nvrtc_version: "12.9",
        };
        assert_eq!(info.ptx_min_driver(), Some(12090));
        let err = info.check_runs_embedded_ptx().unwrap_err();
        assert!(err.contains("CUDA 12.8") && err.contains("12.9"), "{err}");
        info.driver_version = 12090;
        assert!(info.check_runs_embedded_ptx().is_ok());
        info.driver_version = 13000;
        assert!(info.check_runs_embedded_ptx().is_ok());
        info.nvrtc_version = "unknown";
        assert!(info.check_runs_embedded_ptx().is_ok());
        info.compute_capability = (7, 5);
        assert!(
            info.check_runs_embedded_ptx().is_ok(),
            "Turing has its own build"
        );
        info.compute_capability = (7, 0);
        let err = info.check_runs_embedded_ptx().unwrap_err();
        assert!(err.contains("sm_70") && err.contains("compute_75"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_everything_says_so() {
        use super::*;
        let p = Params::new(adanorm_kernels::Variant::LayerNormSimple);
        assert_eq!(available().unwrap_err(), NO_FEATURE);
        let null = std::ptr::null_mut();
        // SAFETY: nothing is dereferenced without the feature.
        let r = unsafe {
            launch(
                null,
                DType::F32,
                null,
                null,
                null,
                null,
                null as _,
                null as _,
                1,
                1,
                &p,
            )
        };
        assert_eq!(r.unwrap_err(), NO_FEATURE);
    }
}
