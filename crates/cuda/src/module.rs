//! The embedded PTX and its modules, loaded into each CUDA context once (on first use there) and
//! kept for the life of the process.

use std::collections::HashMap;
use std::ffi::{c_int, c_void, CString};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use crate::config;
use crate::driver::{self, CuFunction, CuModule, Driver};
use crate::dtype::DType;

/// One PTX module: the kernels of one element type, or the helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModuleId {
    Kernels(DType),
    Misc,
}

/// Entry points of the `misc` module, in the order [`functions`] returns them.
pub const MISC: [&str; 3] = ["expand_b16", "expand_b32", "copy_v4"];
pub const EXPAND_B16: usize = 0;
pub const EXPAND_B32: usize = 1;
pub const COPY_V4: usize = 2;

/// A folder to read `adanorm_<module>.ptx` from instead of the embedded PTX (kernel
/// experiments: see `device::use_ptx_from`).
static PTX_DIR: OnceLock<PathBuf> = OnceLock::new();

pub fn set_ptx_dir(dir: PathBuf) -> Result<(), String> {
    PTX_DIR
        .set(dir)
        .map_err(|_| "the PTX folder is already set".to_string())
}

/// Which of the two PTX builds (build.rs `ARCHS`) a GPU loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PtxArch {
    /// compute_80: Ampere and later, native bf16/f16 pair conversions.
    Cc80,
    /// compute_75: Turing (T4).
    Cc75,
}

impl PtxArch {
    /// The build for a GPU of compute capability `cc`; `ADANORM_CUDA_PTX=cc75` forces the
    /// Turing build on any GPU (to test it on a newer one).
    pub fn for_device(cc: (i32, i32)) -> PtxArch {
        if std::env::var("ADANORM_CUDA_PTX").as_deref() == Ok("cc75") || cc < (8, 0) {
            PtxArch::Cc75
        } else {
            PtxArch::Cc80
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            PtxArch::Cc80 => "",
            PtxArch::Cc75 => "_cc75",
        }
    }
}

fn file_name(id: ModuleId, arch: PtxArch) -> String {
    let stem = match id {
        ModuleId::Kernels(dtype) => dtype.name(),
        ModuleId::Misc => "misc",
    };
    format!("adanorm_{stem}{}.ptx", arch.suffix())
}

/// The PTX a context loads: the embedded text, or the override folder's file.
fn ptx_text(id: ModuleId, arch: PtxArch) -> Result<String, String> {
    match PTX_DIR.get() {
        None => Ok(ptx(id, arch).to_string()),
        Some(dir) => {
            let path = dir.join(file_name(id, arch));
            std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
        }
    }
}

/// The PTX text NVRTC made at build time.
pub fn ptx(id: ModuleId, arch: PtxArch) -> &'static str {
    macro_rules! embedded {
        ($stem:literal) => {
            match arch {
                PtxArch::Cc80 => include_str!(concat!(env!("OUT_DIR"), "/adanorm_", $stem, ".ptx")),
                PtxArch::Cc75 => {
                    include_str!(concat!(env!("OUT_DIR"), "/adanorm_", $stem, "_cc75.ptx"))
                }
            }
        };
    }
    match id {
        ModuleId::Kernels(DType::F32) => embedded!("f32"),
        ModuleId::Kernels(DType::F16) => embedded!("f16"),
        ModuleId::Kernels(DType::BF16) => embedded!("bf16"),
        ModuleId::Misc => embedded!("misc"),
    }
}

/// The compute capability of the current context's GPU.
fn current_compute_capability(d: &Driver) -> Result<(i32, i32), String> {
    let mut dev = 0;
    // SAFETY: writes the current context's device; the caller made a context current.
    driver::check(d, unsafe { (d.ctx_get_device)(&mut dev) }, "cuCtxGetDevice")?;
    let attr = |a| {
        let mut v = 0;
        // SAFETY: writes one int for a valid device and attribute.
        let r = unsafe { (d.device_get_attribute)(&mut v, a, dev) };
        driver::check(d, r, "cuDeviceGetAttribute").map(|_| v)
    };
    Ok((
        attr(driver::ATTR_COMPUTE_CAPABILITY_MAJOR)?,
        attr(driver::ATTR_COMPUTE_CAPABILITY_MINOR)?,
    ))
}

/// `major.minor` of the NVRTC that compiled the PTX.
pub const NVRTC_VERSION: &str = include_str!(concat!(env!("OUT_DIR"), "/nvrtc_version.txt"));

/// Entry point names of a module, in the order of `config::table` (kernels) or [`MISC`].
pub fn names(id: ModuleId) -> Vec<String> {
    match id {
        ModuleId::Kernels(dtype) => config::table(dtype).iter().map(|k| k.name(dtype)).collect(),
        ModuleId::Misc => MISC.iter().map(|s| s.to_string()).collect(),
    }
}

/// Function handles of one module in one context. Handles are plain driver pointers, valid in
/// any thread while the context lives.
pub struct Functions(Vec<CuFunction>);

// SAFETY: CUfunction handles are immutable driver objects usable from any thread.
unsafe impl Send for Functions {}
// SAFETY: as above; nothing mutates them after loading.
unsafe impl Sync for Functions {}

impl Functions {
    pub fn get(&self, index: usize) -> CuFunction {
        self.0[index]
    }
}

/// The functions of module `id` in the CURRENT context, identified by `context_key`; loads the
/// module on first use. Entries are leaked on purpose: a handful per context per process, and
/// launches then need no lock beyond the lookup.
pub fn functions(d: &Driver, context_key: u64, id: ModuleId) -> Result<&'static Functions, String> {
    static CACHE: Mutex<Option<HashMap<(u64, ModuleId), &'static Functions>>> = Mutex::new(None);
    // A panic while holding the lock leaves the map consistent (inserts are single steps).
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if let Some(f) = map.get(&(context_key, id)) {
        return Ok(f);
    }
    let loaded: &'static Functions = Box::leak(Box::new(load(d, id)?));
    map.insert((context_key, id), loaded);
    Ok(loaded)
}

fn load(d: &Driver, id: ModuleId) -> Result<Functions, String> {
    let arch = PtxArch::for_device(current_compute_capability(d)?);
    let text =
        CString::new(ptx_text(id, arch)?).map_err(|_| format!("{id:?} PTX holds a NUL byte"))?;
    let mut log = vec![0u8; 8192];
    let mut options = [
        driver::JIT_ERROR_LOG_BUFFER,
        driver::JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ];
    let mut values = [log.as_mut_ptr() as *mut c_void, log.len() as *mut c_void];
    let mut module: CuModule = std::ptr::null_mut();
    // SAFETY: `text` is NUL-terminated PTX; the two JIT options point at a live buffer of the
    // stated size; the driver writes the module handle.
    let r = unsafe {
        (d.module_load_data_ex)(
            &mut module,
            text.as_ptr() as *const c_void,
            options.len() as u32,
            options.as_mut_ptr() as *mut c_int,
            values.as_mut_ptr(),
        )
    };
    if r != driver::CUDA_SUCCESS {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let hint = if r == driver::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
            format!(
                " (the PTX was made by NVRTC {NVRTC_VERSION}; this driver is older and cannot \
                 JIT it: update the driver or build with an older nvidia-cuda-nvrtc-cu12)"
            )
        } else {
            String::new()
        };
        return Err(format!(
            "loading the {id:?} PTX module: {}{hint} {}",
            driver::describe(d, r),
            String::from_utf8_lossy(&log[..end]).trim()
        ));
    }
    let mut out = Vec::new();
    for name in names(id) {
        let cname = CString::new(name.as_str()).unwrap();
        let mut f: CuFunction = std::ptr::null_mut();
        // SAFETY: `module` was just loaded; `cname` is NUL-terminated.
        let r = unsafe { (d.module_get_function)(&mut f, module, cname.as_ptr()) };
        driver::check(d, r, &format!("kernel {name} in the {id:?} PTX"))?;
        out.push(f);
    }
    Ok(Functions(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(ptx: &str) -> Vec<String> {
        ptx.lines()
            .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
            .map(|l| l.split('(').next().unwrap().trim().to_string())
            .collect()
    }

    /// The Rust table and the .cu's macros must name the same kernels (no GPU needed).
    #[test]
    fn every_table_entry_is_in_the_ptx_and_back() {
        let ids = DType::ALL
            .map(ModuleId::Kernels)
            .into_iter()
            .chain([ModuleId::Misc]);
        for id in ids {
            let mut want = names(id);
            let mut got = entries(ptx(id, PtxArch::Cc80));
            let mut turing = entries(ptx(id, PtxArch::Cc75));
            turing.sort();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{id:?}");
            assert_eq!(turing, want, "{id:?} (compute_75)");
        }
    }

    #[test]
    fn each_build_targets_its_architecture() {
        for dtype in DType::ALL {
            let id = ModuleId::Kernels(dtype);
            assert!(ptx(id, PtxArch::Cc80).contains(".target sm_80"));
            assert!(ptx(id, PtxArch::Cc75).contains(".target sm_75"));
        }
        assert_eq!(
            crate::MIN_COMPUTE_CAPABILITY,
            (7, 5),
            "the oldest build is the floor"
        );
    }

    #[test]
    fn gpus_get_the_build_for_their_generation() {
        if std::env::var_os("ADANORM_CUDA_PTX").is_none() {
            assert_eq!(PtxArch::for_device((9, 0)), PtxArch::Cc80);
            assert_eq!(PtxArch::for_device((8, 0)), PtxArch::Cc80);
        }
        assert_eq!(PtxArch::for_device((7, 5)), PtxArch::Cc75);
    }
}
