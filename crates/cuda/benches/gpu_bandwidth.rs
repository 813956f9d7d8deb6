//! GPU bandwidth of the kernels against the device's own copy speed.
//!
//! For each shape and dtype: a device-to-device copy of the same bytes (cuMemcpyDtoDAsync, and a
//! plain 16-byte copy kernel; the faster is the floor), then our kernels. Effective GB/s =
//! (bytes of X read + bytes of Y written) / time; Scale/B (one row) and the stats are left out,
//! as they are for the copy. Time: host clock around `ITERS` back-to-back launches on one
//! stream, then one stream sync, after a warm-up.
//!
//! Run: `cargo bench -p adanorm-cuda --features cuda --bench gpu_bandwidth`; prints a markdown
//! table, also written to `$ADANORM_BENCH_OUT` when set. Without a GPU it prints why and exits 0
//! (exits 1 instead when `ADANORM_REQUIRE_GPU=1` is set, as the device scripts do).
//! `ADANORM_BENCH_QUICK=1`: only the two large shapes in f32 and f16. `ADANORM_BENCH_PTX_DIR`:
//! load the kernels' PTX from that folder (variants of `kernels/adanorm.cu`).

/// Prints why nothing can be measured; under `ADANORM_REQUIRE_GPU=1`, where a GPU is expected,
/// says so and exits 1 instead of letting the missing GPU pass as a skip.
fn skip_or_fail(reason: &str) {
    if std::env::var("ADANORM_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        eprintln!("ADANORM_REQUIRE_GPU=1 is set, but no GPU is usable: {reason}");
        std::process::exit(1);
    }
    println!("skipping: {reason}");
}

#[cfg(not(feature = "cuda"))]
fn main() {
    skip_or_fail(&adanorm_cuda::available().unwrap_err());
}

#[cfg(feature = "cuda")]
fn main() {
    let info = match adanorm_cuda::available() {
        Ok(info) => info,
        Err(reason) => {
            skip_or_fail(&reason);
            return;
        }
    };
    if let Err(e) = bench::run(&info) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "cuda")]
mod bench {
    use std::ffi::c_void;
    use std::fmt::Write as _;
    use std::ptr::{null, null_mut};
    use std::time::Instant;

    use adanorm_cuda::device::{make_primary_current, DeviceBuffer, Stream};
    use adanorm_cuda::{launch, DType, DeviceInfo};
    use adanorm_kernels::{Params, Variant};

    const SHAPES: [(&str, usize, usize); 3] = [
        ("[256,512,1024]", 256 * 512, 1024),
        ("[64,128,768]", 64 * 128, 768),
        ("[8192,4096]", 8192, 4096),
    ];

    /// Seconds per call of `f`, averaged over enough calls for ~0.2 s (at least 20).
    fn time(
        stream: &Stream,
        bytes: usize,
        mut f: impl FnMut() -> Result<(), String>,
    ) -> Result<f64, String> {
        for _ in 0..5 {
            f()?;
        }
        stream.synchronize()?;
        // Aim at ~0.2 s assuming ~2 TB/s; bounded both ways.
        let iters = (4e11 / bytes as f64).clamp(20.0, 5000.0) as usize;
        let start = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        stream.synchronize()?;
        Ok(start.elapsed().as_secs_f64() / iters as f64)
    }

    fn fill(dtype: DType, n: usize, seed: u32) -> Vec<u8> {
        // Deterministic values in [-2, 2); their distribution does not affect the speed.
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        let mut out = Vec::with_capacity(n * dtype.size());
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let v = (state >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0;
            match dtype {
                DType::F32 => out.extend(v.to_le_bytes()),
                // Truncation to the upper half is bf16; for f16 any bit pattern that is not
                // Inf/NaN will do, so build one from the sign and a small exponent.
                DType::BF16 => out.extend(((v.to_bits() >> 16) as u16).to_le_bytes()),
                DType::F16 => out.extend((((state & 0x83ff) | 0x3800) as u16).to_le_bytes()),
            }
        }
        out
    }

    pub fn run(info: &DeviceInfo) -> Result<(), String> {
        make_primary_current(info.ordinal)?;
        let quick = std::env::var_os("ADANORM_BENCH_QUICK").is_some();
        if let Some(dir) = std::env::var_os("ADANORM_BENCH_PTX_DIR") {
            adanorm_cuda::device::use_ptx_from(std::path::Path::new(&dir))?;
            println!("PTX from {}", std::path::Path::new(&dir).display());
        }
        let stream = Stream::new()?;
        let mut table = String::new();
        writeln!(table, "Device: {info}\n").unwrap();
        // The first launch of a dtype in a context loads its PTX module (the driver JIT-compiles
        // it, or takes it from its compute cache).
        for dtype in DType::ALL {
            let x = DeviceBuffer::alloc(64 * dtype.size())?;
            let p = Params::new(Variant::LayerNormSimple);
            let start = Instant::now();
            // SAFETY: a live 64-element device buffer, read and written in place.
            unsafe {
                launch(
                    stream.raw(),
                    dtype,
                    x.ptr(),
                    x.ptr(),
                    null(),
                    null(),
                    null_mut(),
                    null_mut(),
                    1,
                    64,
                    &p,
                )?
            };
            stream.synchronize()?;
            writeln!(
                table,
                "First launch of {} (module load + JIT): {:.0} ms",
                dtype.name(),
                start.elapsed().as_secs_f64() * 1e3
            )
            .unwrap();
        }
        writeln!(table).unwrap();
        writeln!(
            table,
            "| shape | dtype | copy (DtoD) GB/s | copy kernel GB/s | op | µs | GB/s | vs copy |"
        )
        .unwrap();
        writeln!(table, "|---|---|---:|---:|---|---:|---:|---:|").unwrap();
        print!("{table}");
        let mut printed = table.len();

        let ops: [(&str, Params, bool, bool); 4] = [
            (
                "LayerNormSimple",
                Params::new(Variant::LayerNormSimple),
                false,
                false,
            ),
            (
                "LayerNormSimple +Scale+B",
                Params::new(Variant::LayerNormSimple),
                true,
                false,
            ),
            (
                "AdaNorm +Scale+B",
                Params::new(Variant::ada_norm_default()),
                true,
                false,
            ),
            (
                "AdaNorm +Scale+B+Mean+InvStdDev",
                Params::new(Variant::ada_norm_default()),
                true,
                true,
            ),
        ];
        for (shape, rows, row_len) in SHAPES {
            if quick && row_len == 768 {
                continue;
            }
            let dtypes: &[DType] = if quick {
                &[DType::F32, DType::F16]
            } else {
                &DType::ALL
            };
            for &dtype in dtypes {
                let bytes = rows * row_len * dtype.size();
                let moved = 2.0 * bytes as f64;
                let x = DeviceBuffer::from_bytes(&fill(dtype, rows * row_len, 1))?;
                let y = DeviceBuffer::alloc(bytes)?;
                let scale = DeviceBuffer::from_bytes(&fill(dtype, row_len, 2))?;
                let bias = DeviceBuffer::from_bytes(&fill(dtype, row_len, 3))?;
                let stats = DeviceBuffer::alloc(8 * rows)?;

                let t_copy = time(&stream, bytes, || stream.copy(&y, &x, bytes))?;
                let t_kcopy = time(&stream, bytes, || stream.copy_kernel(&y, &x, bytes))?;
                let floor = t_copy.min(t_kcopy);
                for (op, params, affine, with_stats) in &ops {
                    let (s, b) = if *affine {
                        (scale.ptr() as *const c_void, bias.ptr() as *const c_void)
                    } else {
                        (null(), null())
                    };
                    let (mean, inv) = if *with_stats {
                        let m = stats.ptr() as *mut f32;
                        (m, m.wrapping_add(rows))
                    } else {
                        (null_mut(), null_mut())
                    };
                    let t = time(&stream, bytes, || {
                        // SAFETY: live device buffers of the stated sizes on this context.
                        unsafe {
                            launch(
                                stream.raw(),
                                dtype,
                                x.ptr(),
                                y.ptr(),
                                s,
                                b,
                                mean,
                                inv,
                                rows,
                                row_len,
                                params,
                            )
                        }
                    })?;
                    writeln!(
                        table,
                        "| {shape} | {} | {:.0} | {:.0} | {op} | {:.1} | {:.0} | {:.2} |",
                        dtype.name(),
                        moved / t_copy / 1e9,
                        moved / t_kcopy / 1e9,
                        t * 1e6,
                        moved / t / 1e9,
                        floor / t
                    )
                    .unwrap();
                    print!("{}", &table[printed..]);
                    printed = table.len();
                }
            }
        }
        if let Ok(path) = std::env::var("ADANORM_BENCH_OUT") {
            std::fs::write(&path, &table).map_err(|e| format!("writing {path}: {e}"))?;
        }
        Ok(())
    }
}
