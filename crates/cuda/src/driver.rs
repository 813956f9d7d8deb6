//! The CUDA driver API, loaded with dlopen (`libcuda.so.1` / `nvcuda.dll`) on first use, so the
//! library builds without CUDA and loads on machines without a GPU. Only the calls this crate
//! makes are bound.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

pub type CuResult = c_int;
pub type CuDevice = c_int;
pub type CuContext = *mut c_void;
pub type CuModule = *mut c_void;
pub type CuFunction = *mut c_void;
pub type CuStream = *mut c_void;
pub type CuDevicePtr = u64;

pub const CUDA_SUCCESS: CuResult = 0;
pub const CUDA_ERROR_UNSUPPORTED_PTX_VERSION: CuResult = 222;

pub const ATTR_MULTIPROCESSOR_COUNT: c_int = 16;
pub const ATTR_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
pub const ATTR_COMPUTE_CAPABILITY_MINOR: c_int = 76;

pub const JIT_ERROR_LOG_BUFFER: c_int = 5;
pub const JIT_ERROR_LOG_BUFFER_SIZE_BYTES: c_int = 6;

/// `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`: special handles that are not stream objects.
pub const STREAM_LEGACY: usize = 0x1;
pub const STREAM_PER_THREAD: usize = 0x2;

macro_rules! driver_api {
    ($( $field:ident = $sym:literal : fn($($arg:ty),*); )*) => {
        /// Function pointers into libcuda; the library handle keeps them valid.
        pub struct Driver {
            _lib: libloading::Library,
            $( pub $field: unsafe extern "C" fn($($arg),*) -> CuResult, )*
            /// CUDA >= 12.0; absent on older drivers (then contexts are keyed by address).
            pub ctx_get_id: Option<unsafe extern "C" fn(CuContext, *mut u64) -> CuResult>,
        }

        impl Driver {
            fn open() -> Result<Driver, String> {
                let lib = open_library()?;
                Ok(Driver {
                    $( $field: {
                        // SAFETY: the symbol is the driver API function of this name, whose C
                        // signature (cuda.h) is the field's type; `lib` is stored beside it.
                        let s = unsafe { lib.get::<unsafe extern "C" fn($($arg),*) -> CuResult>($sym) };
                        *s.map_err(|e| format!("libcuda has no {}: {e}", String::from_utf8_lossy($sym)))?
                    }, )*
                    // SAFETY: as above; cuCtxGetId(CUcontext, unsigned long long*).
                    ctx_get_id: unsafe { lib.get(b"cuCtxGetId").ok().map(|s| *s) },
                    _lib: lib,
                })
            }
        }
    };
}

driver_api! {
    init = b"cuInit": fn(c_uint);
    driver_get_version = b"cuDriverGetVersion": fn(*mut c_int);
    device_get_count = b"cuDeviceGetCount": fn(*mut c_int);
    device_get = b"cuDeviceGet": fn(*mut CuDevice, c_int);
    device_get_name = b"cuDeviceGetName": fn(*mut c_char, c_int, CuDevice);
    device_get_attribute = b"cuDeviceGetAttribute": fn(*mut c_int, c_int, CuDevice);
    device_total_mem = b"cuDeviceTotalMem_v2": fn(*mut usize, CuDevice);
    primary_ctx_retain = b"cuDevicePrimaryCtxRetain": fn(*mut CuContext, CuDevice);
    ctx_get_current = b"cuCtxGetCurrent": fn(*mut CuContext);
    ctx_set_current = b"cuCtxSetCurrent": fn(CuContext);
    ctx_push_current = b"cuCtxPushCurrent_v2": fn(CuContext);
    ctx_pop_current = b"cuCtxPopCurrent_v2": fn(*mut CuContext);
    ctx_get_device = b"cuCtxGetDevice": fn(*mut CuDevice);
    ctx_synchronize = b"cuCtxSynchronize": fn();
    stream_get_ctx = b"cuStreamGetCtx": fn(CuStream, *mut CuContext);
    stream_create = b"cuStreamCreate": fn(*mut CuStream, c_uint);
    stream_destroy = b"cuStreamDestroy_v2": fn(CuStream);
    stream_synchronize = b"cuStreamSynchronize": fn(CuStream);
    module_load_data_ex = b"cuModuleLoadDataEx":
        fn(*mut CuModule, *const c_void, c_uint, *mut c_int, *mut *mut c_void);
    module_get_function = b"cuModuleGetFunction": fn(*mut CuFunction, CuModule, *const c_char);
    launch_kernel = b"cuLaunchKernel": fn(
        CuFunction, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, CuStream,
        *mut *mut c_void, *mut *mut c_void
    );
    get_error_name = b"cuGetErrorName": fn(CuResult, *mut *const c_char);
    get_error_string = b"cuGetErrorString": fn(CuResult, *mut *const c_char);
    mem_alloc = b"cuMemAlloc_v2": fn(*mut CuDevicePtr, usize);
    mem_free = b"cuMemFree_v2": fn(CuDevicePtr);
    memcpy_htod = b"cuMemcpyHtoD_v2": fn(CuDevicePtr, *const c_void, usize);
    memcpy_dtoh = b"cuMemcpyDtoH_v2": fn(*mut c_void, CuDevicePtr, usize);
    memcpy_dtod_async = b"cuMemcpyDtoDAsync_v2": fn(CuDevicePtr, CuDevicePtr, usize, CuStream);
}

fn open_library() -> Result<libloading::Library, String> {
    let names: &[&str] = if cfg!(windows) {
        &["nvcuda.dll"]
    } else {
        &["libcuda.so.1", "libcuda.so"]
    };
    let mut errors = Vec::new();
    for name in names {
        // SAFETY: libcuda's initialisers have no preconditions.
        match unsafe { libloading::Library::new(*name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => {
                // libloading keeps dlerror()'s text as the error's source.
                let why =
                    std::error::Error::source(&e).map_or(String::new(), |s| format!(" ({s})"));
                errors.push(format!("{name}: {e}{why}"))
            }
        }
    }
    Err(format!(
        "no CUDA driver (libcuda) on this machine: {}",
        errors.join("; ")
    ))
}

/// The driver, opened and `cuInit`-ed once per process; the error says why not.
pub fn driver() -> Result<&'static Driver, String> {
    static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            let d = Driver::open()?;
            // SAFETY: cuInit takes flags = 0 and may be called any number of times.
            let r = unsafe { (d.init)(0) };
            if r != CUDA_SUCCESS {
                return Err(format!("cuInit failed: {}", describe(&d, r)));
            }
            Ok(d)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `NAME (code): description` for a driver error code.
pub fn describe(d: &Driver, r: CuResult) -> String {
    let mut name: *const c_char = std::ptr::null();
    let mut text: *const c_char = std::ptr::null();
    // SAFETY: both calls write a pointer to a static string, or leave it null for unknown codes.
    unsafe {
        (d.get_error_name)(r, &mut name);
        (d.get_error_string)(r, &mut text);
    }
    let s = |p: *const c_char| {
        if p.is_null() {
            "unknown".to_string()
        } else {
            // SAFETY: non-null pointers from the calls above are static NUL-terminated strings.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    format!("{} ({r}): {}", s(name), s(text))
}

/// Turns a driver status into `Err("<what>: <NAME (code): description>")`.
pub fn check(d: &Driver, r: CuResult, what: &str) -> Result<(), String> {
    if r == CUDA_SUCCESS {
        Ok(())
    } else {
        Err(format!("{what}: {}", describe(d, r)))
    }
}
