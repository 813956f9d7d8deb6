//! The launches: argument checks, the choice of kernel, and `cuLaunchKernel` on the caller's
//! stream. Asynchronous: an error inside a kernel shows at the caller's next synchronisation.

use std::ffi::c_void;

use adanorm_kernels::{check_param_shape, Params, Variant};

use crate::config;
use crate::context::ContextScope;
use crate::driver::{self, driver, CuFunction, Driver};
use crate::dtype::DType;
use crate::module::{self, ModuleId};

/// `AdaNormArgs` of the .cu, field for field.
#[repr(C)]
struct KernelArgs {
    x: *const c_void,
    y: *mut c_void,
    scale: *const c_void,
    bias: *const c_void,
    mean: *mut f32,
    inv_std: *mut f32,
    rows: i64,
    row_len: i64,
    epsilon: f32,
    c: f32,
    k: f32,
    flags: i32,
}

const FLAG_UNBIASED: i32 = 1;
const FLAG_EPS_IN_SQRT: i32 = 2;
const FLAG_ADANORM: i32 = 4;

/// `ExpandArgs` of the .cu.
const EXPAND_MAX_DIMS: usize = 8;
#[repr(C)]
struct ExpandArgs {
    src: *const c_void,
    dst: *mut c_void,
    n: i64,
    dims: [i64; EXPAND_MAX_DIMS],
    strides: [i64; EXPAND_MAX_DIMS],
    ndim: i32,
    pad: i32,
}

/// The largest grid.x the hardware takes.
const MAX_GRID: usize = i32::MAX as usize;

fn aligned(p: *const c_void) -> bool {
    p.is_null() || (p as usize).is_multiple_of(16)
}

/// See [`crate::launch`].
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
    params.validate().map_err(|e| e.to_string())?;
    if rows == 0 {
        return Ok(());
    }
    let elems = rows
        .checked_mul(row_len)
        .and_then(|n| n.checked_mul(dtype.size()))
        .filter(|&b| b <= i64::MAX as usize)
        .ok_or_else(|| format!("{rows} rows of {row_len} elements do not fit in memory"))?;
    if elems > 0 && (x.is_null() || y.is_null()) {
        return Err("X and Y must be device pointers, got null".to_string());
    }
    let d = driver()?;
    let scope = ContextScope::enter(d, stream)?;
    let funcs = module::functions(d, scope.key, ModuleId::Kernels(dtype))?;

    let vectorised = row_len > 0
        && row_len.is_multiple_of(dtype.vector_width())
        && [x, y as *const c_void, scale, bias]
            .iter()
            .all(|&p| aligned(p));
    let index = config::choose(dtype, row_len, vectorised);
    let kernel = config::table(dtype)[index];

    let (c, k, ada) = match params.variant {
        Variant::AdaNorm { c, k } => (c as f32, k as f32, FLAG_ADANORM),
        Variant::LayerNormSimple => (1.0, 0.0, 0),
    };
    let mut args = KernelArgs {
        x,
        y,
        scale,
        bias,
        mean,
        inv_std: inv_std_dev,
        rows: rows as i64,
        row_len: row_len as i64,
        epsilon: params.epsilon as f32,
        c,
        k,
        flags: ada
            | if params.unbiased { FLAG_UNBIASED } else { 0 }
            | if params.eps_in_sqrt {
                FLAG_EPS_IN_SQRT
            } else {
                0
            },
    };
    // Kernels handle one row per warp (block) without a grid-stride loop; row counts beyond one
    // grid (2^31 - 1 blocks) are split into several launches.
    let rows_per_launch = MAX_GRID * kernel.rows_per_block() as usize;
    let row_bytes = row_len * dtype.size();
    let mut first = 0usize;
    while first < rows {
        let count = (rows - first).min(rows_per_launch);
        let grid = count.div_ceil(kernel.rows_per_block() as usize) as u32;
        args.rows = count as i64;
        launch_raw(
            d,
            funcs.get(index),
            grid,
            kernel.block_threads(),
            stream,
            &mut args as *mut KernelArgs as *mut c_void,
        )
        .map_err(|e| format!("{} ({rows} rows of {row_len}): {e}", kernel.name(dtype)))?;
        first += count;
        // Only pointer arithmetic here; nothing is dereferenced on the host.
        args.x = (args.x as *const u8).wrapping_add(count * row_bytes) as *const c_void;
        args.y = (args.y as *mut u8).wrapping_add(count * row_bytes) as *mut c_void;
        if !args.mean.is_null() {
            args.mean = args.mean.wrapping_add(count);
        }
        if !args.inv_std.is_null() {
            args.inv_std = args.inv_std.wrapping_add(count);
        }
    }
    Ok(())
}

/// One `cuLaunchKernel` with a single by-value struct argument.
fn launch_raw(
    d: &Driver,
    f: CuFunction,
    grid: u32,
    block: u32,
    stream: *mut c_void,
    args: *mut c_void,
) -> Result<(), String> {
    let mut params = [args];
    // SAFETY: `f` is a kernel of the current context taking exactly one struct argument, whose
    // #[repr(C)] layout `args` points at; the driver copies it before returning.
    let r = unsafe {
        (d.launch_kernel)(
            f,
            grid,
            1,
            1,
            block,
            1,
            1,
            0,
            stream,
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    };
    driver::check(d, r, "cuLaunchKernel")
}

/// See [`crate::launch_expand_param`].
pub unsafe fn launch_expand_param(
    stream: *mut c_void,
    dtype: DType,
    src: *const c_void,
    dst: *mut c_void,
    param_shape: &[usize],
    normalized_shape: &[usize],
) -> Result<(), String> {
    check_param_shape(param_shape, normalized_shape, "param").map_err(|e| e.to_string())?;
    let n: usize = normalized_shape.iter().product();
    if n == 0 {
        return Ok(());
    }
    if src.is_null() || dst.is_null() {
        return Err("src and dst must be device pointers, got null".to_string());
    }
    // Dims of size 1 index nothing; dropping them keeps deep shapes within EXPAND_MAX_DIMS.
    let offset = normalized_shape.len() - param_shape.len();
    let mut stride = 1i64;
    let mut dims = Vec::new();
    for (i, &dim) in normalized_shape.iter().enumerate().rev() {
        let p = if i >= offset {
            param_shape[i - offset]
        } else {
            1
        };
        if dim != 1 {
            dims.push((dim as i64, if p == 1 { 0 } else { stride }));
        }
        stride *= p as i64;
    }
    dims.reverse();
    if dims.len() > EXPAND_MAX_DIMS {
        return Err(format!(
            "a parameter broadcast over {} dims of size > 1 (at most {EXPAND_MAX_DIMS})",
            dims.len()
        ));
    }
    let mut args = ExpandArgs {
        src,
        dst,
        n: n as i64,
        dims: [1; EXPAND_MAX_DIMS],
        strides: [0; EXPAND_MAX_DIMS],
        ndim: dims.len() as i32,
        pad: 0,
    };
    for (i, (dim, s)) in dims.into_iter().enumerate() {
        args.dims[i] = dim;
        args.strides[i] = s;
    }
    let d = driver()?;
    let scope = ContextScope::enter(d, stream)?;
    let funcs = module::functions(d, scope.key, ModuleId::Misc)?;
    let f = funcs.get(match dtype.size() {
        2 => module::EXPAND_B16,
        _ => module::EXPAND_B32,
    });
    let grid = n.div_ceil(256).min(65_535) as u32;
    launch_raw(
        d,
        f,
        grid,
        256,
        stream,
        &mut args as *mut ExpandArgs as *mut c_void,
    )
    .map_err(|e| format!("expand_param: {e}"))
}

/// Launches the `copy_v4` kernel (the benchmark's copy floor); `bytes` must be a multiple of 16.
pub unsafe fn launch_copy_kernel(
    stream: *mut c_void,
    dst: *mut c_void,
    src: *const c_void,
    bytes: usize,
) -> Result<(), String> {
    if !bytes.is_multiple_of(16) || !aligned(src) || !aligned(dst) {
        return Err("copy_v4 needs 16-byte aligned pointers and sizes".to_string());
    }
    let d = driver()?;
    let scope = ContextScope::enter(d, stream)?;
    let funcs = module::functions(d, scope.key, ModuleId::Misc)?;
    #[repr(C)]
    struct CopyArgs {
        src: *const c_void,
        dst: *mut c_void,
        n: i64,
    }
    let n = bytes / 16;
    let mut a = CopyArgs {
        src,
        dst,
        n: n as i64,
    };
    let mut params = [
        &mut a.src as *mut _ as *mut c_void,
        &mut a.dst as *mut _ as *mut c_void,
        &mut a.n as *mut _ as *mut c_void,
    ];
    let grid = n.div_ceil(256).clamp(1, 65_535 * 16) as u32;
    // SAFETY: copy_v4(const uint4*, uint4*, long long) takes the three values pointed at.
    let r = unsafe {
        (d.launch_kernel)(
            funcs.get(module::COPY_V4),
            grid,
            1,
            1,
            256,
            1,
            1,
            0,
            stream,
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    };
    driver::check(d, r, "cuLaunchKernel(copy_v4)")
}
