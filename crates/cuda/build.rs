//! Under the `cuda` feature: compiles `kernels/adanorm.cu` to PTX with NVRTC, loaded with dlopen
//! (no CUDA toolkit, no nvcc, no GPU needed), into `$OUT_DIR/adanorm_<module>.ptx`, one module
//! per element type plus `misc`. Without the feature it does nothing.
//!
//! Where NVRTC and the CUDA headers come from, first found wins:
//! 1. `ADANORM_NVRTC_LIB` (path of libnvrtc) and `ADANORM_CUDA_INCLUDE` (dir with cuda_fp16.h);
//! 2. the PyPI wheels `nvidia-cuda-nvrtc-cu12` / `nvidia-cuda-runtime-cu12` in a venv:
//!    `ADANORM_CUDA_VENV`, `VIRTUAL_ENV`, or `<workspace>/.venv-cuda`
//!    (`crates/cuda/scripts/setup-cuda-build.sh` makes that one);
//! 3. a CUDA toolkit: `CUDA_PATH`, `CUDA_HOME`, `/usr/local/cuda`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    nvrtc::build();
}

#[cfg(feature = "cuda")]
mod nvrtc {
    use std::ffi::{c_char, c_int, CStr, CString};
    use std::path::{Path, PathBuf};
    use std::{env, fs, ptr};

    /// Virtual architectures, each with its PTX file suffix. PTX JIT-compiles forward on every
    /// later GPU. compute_80 (Ampere and later) has the native bf16/f16 pair conversions;
    /// compute_75 is for Turing (T4), where cuda_bf16.h emulates them. The library picks by
    /// the GPU's compute capability (`module::PtxArch`).
    const ARCHS: [(&str, &str); 2] = [("compute_80", ""), ("compute_75", "_cc75")];
    /// One PTX module per element type keeps the driver's JIT work, on first use in a process,
    /// to the kernels of the types actually used.
    const MODULES: [(&str, &str); 4] = [
        ("f32", "ADANORM_F32"),
        ("f16", "ADANORM_F16"),
        ("bf16", "ADANORM_BF16"),
        ("misc", "ADANORM_MISC"),
    ];

    type Program = *mut std::ffi::c_void;
    type Status = c_int;

    struct Api {
        _lib: libloading::Library,
        create: unsafe extern "C" fn(
            *mut Program,
            *const c_char,
            *const c_char,
            c_int,
            *const *const c_char,
            *const *const c_char,
        ) -> Status,
        compile: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> Status,
        log_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
        log: unsafe extern "C" fn(Program, *mut c_char) -> Status,
        ptx_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
        ptx: unsafe extern "C" fn(Program, *mut c_char) -> Status,
        destroy: unsafe extern "C" fn(*mut Program) -> Status,
        error_string: unsafe extern "C" fn(Status) -> *const c_char,
        version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> Status,
    }

    pub fn build() {
        for var in [
            "ADANORM_NVRTC_LIB",
            "ADANORM_CUDA_INCLUDE",
            "ADANORM_CUDA_VENV",
            "VIRTUAL_ENV",
            "CUDA_PATH",
            "CUDA_HOME",
        ] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let source_path = Path::new("kernels/adanorm.cu");
        println!("cargo:rerun-if-changed={}", source_path.display());
        let source = fs::read_to_string(source_path).expect("read kernels/adanorm.cu");

        let (lib_path, include) = locate();
        let api = load(&lib_path);
        let (mut major, mut minor) = (0, 0);
        // SAFETY: nvrtcVersion writes two ints.
        unsafe { (api.version)(&mut major, &mut minor) };
        println!(
            "cargo:warning=adanorm-cuda: NVRTC {major}.{minor} from {}, headers from {}",
            lib_path.display(),
            include.display()
        );

        let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
        for (arch, suffix) in ARCHS {
            for (name, define) in MODULES {
                let ptx = compile(&api, &source, &include, define, arch);
                fs::write(out.join(format!("adanorm_{name}{suffix}.ptx")), ptx).expect("write PTX");
            }
        }
        fs::write(out.join("nvrtc_version.txt"), format!("{major}.{minor}")).expect("write");
    }

    fn locate() -> (PathBuf, PathBuf) {
        let mut tried = Vec::new();
        let lib = env::var_os("ADANORM_NVRTC_LIB").map(PathBuf::from);
        let include = env::var_os("ADANORM_CUDA_INCLUDE").map(PathBuf::from);
        if let (Some(lib), Some(include)) = (&lib, &include) {
            return (lib.clone(), include.clone());
        }
        tried.push("ADANORM_NVRTC_LIB + ADANORM_CUDA_INCLUDE".to_string());

        let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
        let mut venvs: Vec<PathBuf> = ["ADANORM_CUDA_VENV", "VIRTUAL_ENV"]
            .iter()
            .filter_map(|v| env::var_os(v).map(PathBuf::from))
            .collect();
        venvs.push(manifest.join("../../.venv-cuda"));
        for venv in &venvs {
            for site in site_packages(venv) {
                let nvidia = site.join("nvidia");
                let found_lib = lib
                    .clone()
                    .or_else(|| find_nvrtc(&nvidia.join("cuda_nvrtc/lib")));
                let found_inc = include
                    .clone()
                    .or_else(|| Some(nvidia.join("cuda_runtime/include")))
                    .filter(|d| d.join("cuda_fp16.h").is_file());
                if let (Some(l), Some(i)) = (found_lib, found_inc) {
                    return (l, i);
                }
            }
            tried.push(format!("venv {}", venv.display()));
        }

        let mut toolkits: Vec<PathBuf> = ["CUDA_PATH", "CUDA_HOME"]
            .iter()
            .filter_map(|v| env::var_os(v).map(PathBuf::from))
            .collect();
        toolkits.push(PathBuf::from("/usr/local/cuda"));
        for root in &toolkits {
            let found_lib = lib.clone().or_else(|| {
                ["lib64", "lib", "lib/x64", "bin"]
                    .iter()
                    .find_map(|d| find_nvrtc(&root.join(d)))
            });
            let found_inc = include
                .clone()
                .or_else(|| Some(root.join("include")))
                .filter(|d| d.join("cuda_fp16.h").is_file());
            if let (Some(l), Some(i)) = (found_lib, found_inc) {
                return (l, i);
            }
            tried.push(format!("toolkit {}", root.display()));
        }
        panic!(
            "adanorm-cuda: the `cuda` feature needs NVRTC and the CUDA headers, found in none of: \
             {}. Run crates/cuda/scripts/setup-cuda-build.sh (PyPI wheels, no GPU needed) or set \
             ADANORM_NVRTC_LIB and ADANORM_CUDA_INCLUDE.",
            tried.join("; ")
        );
    }

    fn site_packages(venv: &Path) -> Vec<PathBuf> {
        let mut out = vec![venv.join("Lib/site-packages")]; // Windows venvs
        for lib in ["lib", "lib64"] {
            if let Ok(entries) = fs::read_dir(venv.join(lib)) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with("python") {
                        out.push(e.path().join("site-packages"));
                    }
                }
            }
        }
        out.retain(|p| p.is_dir());
        out
    }

    /// `libnvrtc.so*` / `nvrtc64_*.dll`, but not the builtins or the static-linked alt copy.
    fn find_nvrtc(dir: &Path) -> Option<PathBuf> {
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                (n.starts_with("libnvrtc.so") || (n.starts_with("nvrtc64_") && n.ends_with(".dll")))
                    && !n.contains("builtins")
                    && !n.contains("alt")
            })
            .collect();
        names.sort();
        names.into_iter().next()
    }

    fn load(path: &Path) -> Api {
        // SAFETY: loading libnvrtc runs its initialisers, which have no preconditions.
        let lib = unsafe { libloading::Library::new(path) }
            .unwrap_or_else(|e| panic!("adanorm-cuda: cannot load {}: {e}", path.display()));
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the symbol has the signature of the field it is stored in (nvrtc.h);
                // the Library is kept in the Api beside the pointers, so they stay valid.
                unsafe {
                    *lib.get($name).unwrap_or_else(|e| {
                        panic!(
                            "adanorm-cuda: {} in {}: {e}",
                            String::from_utf8_lossy($name),
                            path.display()
                        )
                    })
                }
            };
        }
        Api {
            create: sym!(b"nvrtcCreateProgram"),
            compile: sym!(b"nvrtcCompileProgram"),
            log_size: sym!(b"nvrtcGetProgramLogSize"),
            log: sym!(b"nvrtcGetProgramLog"),
            ptx_size: sym!(b"nvrtcGetPTXSize"),
            ptx: sym!(b"nvrtcGetPTX"),
            destroy: sym!(b"nvrtcDestroyProgram"),
            error_string: sym!(b"nvrtcGetErrorString"),
            version: sym!(b"nvrtcVersion"),
            _lib: lib,
        }
    }

    fn compile(api: &Api, source: &str, include: &Path, define: &str, arch: &str) -> String {
        let src = CString::new(source).expect("no NUL in the source");
        let name = CString::new("adanorm.cu").unwrap();
        let options: Vec<CString> = [
            format!("--gpu-architecture={arch}"),
            "--std=c++17".to_string(),
            "-default-device".to_string(),
            format!("-D{define}"),
            format!("-I{}", include.display()),
        ]
        .into_iter()
        .map(|o| CString::new(o).unwrap())
        .collect();
        let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Program = ptr::null_mut();
        // SAFETY: every pointer is a live NUL-terminated string or null with count 0; `prog` is
        // destroyed below on every path.
        unsafe {
            check(
                api,
                (api.create)(
                    &mut prog,
                    src.as_ptr(),
                    name.as_ptr(),
                    0,
                    ptr::null(),
                    ptr::null(),
                ),
                "create",
            );
            let status = (api.compile)(prog, option_ptrs.len() as c_int, option_ptrs.as_ptr());
            let mut size = 0usize;
            (api.log_size)(prog, &mut size);
            let mut log = vec![0u8; size.max(1)];
            (api.log)(prog, log.as_mut_ptr() as *mut c_char);
            let log = CStr::from_bytes_until_nul(&log)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default();
            if status != 0 {
                (api.destroy)(&mut prog);
                panic!("adanorm-cuda: NVRTC failed on kernels/adanorm.cu (-D{define}):\n{log}");
            }
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                println!("cargo:warning=nvrtc (-D{define}): {line}");
            }
            let mut size = 0usize;
            check(api, (api.ptx_size)(prog, &mut size), "ptx size");
            let mut ptx = vec![0u8; size];
            check(api, (api.ptx)(prog, ptx.as_mut_ptr() as *mut c_char), "ptx");
            (api.destroy)(&mut prog);
            let end = ptx.iter().position(|&b| b == 0).unwrap_or(ptx.len());
            String::from_utf8(ptx[..end].to_vec()).expect("PTX is ASCII")
        }
    }

    fn check(api: &Api, status: Status, what: &str) {
        if status != 0 {
            // SAFETY: nvrtcGetErrorString returns a static string for any status.
            let msg = unsafe { CStr::from_ptr((api.error_string)(status)) };
            panic!("adanorm-cuda: NVRTC {what}: {}", msg.to_string_lossy());
        }
    }
}
