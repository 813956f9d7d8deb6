//! The CUDA kernels against `adanorm_kernels::reference` (f64) at the spec's tolerances, through
//! the library's own entry point. Every dtype, both ops, every attribute combination, with and
//! without Scale/B and Mean/InvStdDev, row lengths 0..65536 (warp, block and loop kernels,
//! vectorised and scalar), > 65535 rows, rows of mean 1e4 with a tiny spread, constant rows,
//! misaligned pointers, a stream of our own and the legacy stream.
//!
//! Without the `cuda` feature, or without a driver or GPU, each test prints
//! "skipping: <reason>" and passes, unless `ADANORM_REQUIRE_GPU=1` is set (the device scripts
//! set it): then each fails with the reason.

/// Prints why the GPU tests cannot run, or panics with it under `ADANORM_REQUIRE_GPU=1`, where a
/// GPU is expected and a skip would hide its absence.
fn skip_or_fail(reason: &str) {
    if std::env::var("ADANORM_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("ADANORM_REQUIRE_GPU=1 is set, but no GPU is usable: {reason}");
    }
    println!("skipping: {reason}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn gpu_tests_need_the_cuda_feature() {
    skip_or_fail(&adanorm_cuda::available().unwrap_err());
}

#[cfg(feature = "cuda")]
mod gpu {
    use std::ffi::c_void;
    use std::ptr::{null, null_mut};

    use adanorm_cuda::device::{make_primary_current, synchronize, DeviceBuffer, Stream};
    use adanorm_cuda::{available, launch, launch_expand_param, DType};
    use adanorm_kernels::{expand_param, reference, Params, Variant};
    use half::{bf16, f16};

    /// Makes the GPU's primary context current on this test thread, or says why not (fails
    /// instead under `ADANORM_REQUIRE_GPU=1`).
    /// `ADANORM_TEST_PTX_DIR` runs the tests on PTX from that folder (kernel variants).
    fn gpu() -> bool {
        match available() {
            Ok(info) => {
                static PTX_DIR: std::sync::Once = std::sync::Once::new();
                PTX_DIR.call_once(|| {
                    if let Some(dir) = std::env::var_os("ADANORM_TEST_PTX_DIR") {
                        adanorm_cuda::device::use_ptx_from(std::path::Path::new(&dir)).unwrap();
                    }
                });
                make_primary_current(info.ordinal).expect("make the primary context current");
                true
            }
            Err(reason) => {
                super::skip_or_fail(&reason);
                false
            }
        }
    }

    /// SplitMix64.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
        }
    }

    /// Spec tolerances for Y (relative to max(1, |Y|)); Mean/InvStdDev are f32 for every dtype.
    fn y_tol(dtype: DType) -> f64 {
        match dtype {
            DType::F32 => 1e-5,
            DType::F16 => 1e-2,
            DType::BF16 => 2e-2,
        }
    }
    const STATS_TOL: f64 = 1e-5;

    /// Rounds `values` to `dtype`: the bytes for the GPU and the exact values for the reference.
    fn encode(dtype: DType, values: &[f64]) -> (Vec<u8>, Vec<f64>) {
        let mut bytes = Vec::with_capacity(values.len() * dtype.size());
        let mut exact = Vec::with_capacity(values.len());
        for &v in values {
            match dtype {
                DType::F32 => {
                    let r = v as f32;
                    bytes.extend(r.to_le_bytes());
                    exact.push(r as f64);
                }
                DType::F16 => {
                    let r = f16::from_f64(v);
                    bytes.extend(r.to_bits().to_le_bytes());
                    exact.push(r.to_f64());
                }
                DType::BF16 => {
                    let r = bf16::from_f64(v);
                    bytes.extend(r.to_bits().to_le_bytes());
                    exact.push(r.to_f64());
                }
            }
        }
        (bytes, exact)
    }

    fn decode(dtype: DType, bytes: &[u8]) -> Vec<f64> {
        match dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64())
                .collect(),
        }
    }

    fn same(a: f64, b: f64) -> bool {
        a == b || (a.is_nan() && b.is_nan())
    }

    fn close(got: f64, want: f64, tol: f64) -> bool {
        if !want.is_finite() || !got.is_finite() {
            return same(got, want);
        }
        (got - want).abs() <= tol * want.abs().max(1.0)
    }

    fn close_rel(got: f64, want: f64, tol: f64) -> bool {
        if !want.is_finite() || !got.is_finite() {
            return same(got, want);
        }
        (got - want).abs() <= tol * want.abs()
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Data {
        /// N(mu, s) with mu in [-3, 3].
        Plain,
        /// 1e4 + a spread of a few units in the last place of the dtype at 1e4.
        Offset,
        /// Each row one constant (a multiple of 1/8, so the f64 reference sums it exactly).
        Constant,
    }

    #[derive(Debug, Clone, Copy)]
    struct Case {
        dtype: DType,
        rows: usize,
        row_len: usize,
        params: Params,
        scale: bool,
        bias: bool,
        stats: bool,
        data: Data,
        /// Shift every pointer by one element (no 16-byte alignment: scalar kernels).
        misalign: bool,
        /// Launch on a stream of our own (else the legacy stream, null).
        own_stream: bool,
    }

    fn make_x(case: &Case, rng: &mut Rng) -> Vec<f64> {
        let n = case.rows * case.row_len;
        match case.data {
            Data::Plain => {
                let mu = 6.0 * rng.unit() - 3.0;
                let s = [0.1, 1.0, 10.0][(rng.next_u64() % 3) as usize];
                (0..n).map(|_| mu + s * rng.normal()).collect()
            }
            Data::Offset => {
                let spread = match case.dtype {
                    DType::F32 => 1e-2,
                    DType::F16 => 16.0,
                    DType::BF16 => 128.0,
                };
                (0..n).map(|_| 1e4 + spread * rng.normal()).collect()
            }
            Data::Constant => (0..case.rows)
                .flat_map(|_| {
                    let v = ((rng.next_u64() % 81) as f64 - 40.0) / 8.0;
                    std::iter::repeat_n(v, case.row_len)
                })
                .collect(),
        }
    }

    /// Runs one case on the GPU and checks it; the error names the case and the first mismatch.
    fn check(case: &Case, seed: u64) {
        let mut rng = Rng(seed);
        let (rows, n, dt) = (case.rows, case.row_len, case.dtype);
        let (x_bytes, x) = encode(dt, &make_x(case, &mut rng));
        let scale_vals: Vec<f64> = (0..n).map(|_| 0.5 + rng.unit()).collect();
        let bias_vals: Vec<f64> = (0..n).map(|_| 2.0 * rng.unit() - 1.0).collect();
        let (scale_bytes, scale) = encode(dt, &scale_vals);
        let (bias_bytes, bias) = encode(dt, &bias_vals);

        // Misaligned: every buffer one element past a 256-byte aligned allocation.
        let off = if case.misalign { dt.size() } else { 0 };
        let upload = |bytes: &[u8]| {
            let buf = DeviceBuffer::alloc(bytes.len() + off).unwrap();
            buf.write(off, bytes).unwrap();
            buf
        };
        let d_x = upload(&x_bytes);
        let d_y = DeviceBuffer::alloc(x_bytes.len() + off).unwrap();
        let d_scale = upload(&scale_bytes);
        let d_bias = upload(&bias_bytes);
        let d_mean = DeviceBuffer::from_f32(&vec![-7.0; rows]).unwrap();
        let d_inv = DeviceBuffer::from_f32(&vec![-7.0; rows]).unwrap();
        let stream = if case.own_stream {
            Some(Stream::new().unwrap())
        } else {
            None
        };
        let raw_stream = stream.as_ref().map_or(null_mut(), |s| s.raw());
        // SAFETY: every pointer is a live device buffer of the stated size in the current
        // context; the buffers outlive the synchronisation below.
        let r = unsafe {
            launch(
                raw_stream,
                dt,
                d_x.ptr_at(off),
                d_y.ptr_at(off),
                if case.scale {
                    d_scale.ptr_at(off)
                } else {
                    null()
                },
                if case.bias {
                    d_bias.ptr_at(off)
                } else {
                    null()
                },
                if case.stats {
                    d_mean.ptr() as *mut f32
                } else {
                    null_mut()
                },
                if case.stats {
                    d_inv.ptr() as *mut f32
                } else {
                    null_mut()
                },
                rows,
                n,
                &case.params,
            )
        };
        r.unwrap_or_else(|e| panic!("{case:?}: launch failed: {e}"));
        match &stream {
            Some(s) => s.synchronize(),
            None => synchronize(),
        }
        .unwrap_or_else(|e| panic!("{case:?}: {e}"));

        let want = reference(
            &x,
            &[rows, n],
            -1,
            case.scale.then_some((&scale[..], &[n][..])),
            case.bias.then_some((&bias[..], &[n][..])),
            &case.params,
        )
        .unwrap();
        let got = decode(dt, &d_y.to_bytes().unwrap()[off..]);
        let tol = y_tol(dt);
        if let Some(i) = (0..got.len()).find(|&i| !close(got[i], want.y[i], tol)) {
            panic!(
                "{case:?}: Y[{}][{}] = {} but the reference says {} (tol {tol:e})",
                i / n.max(1),
                i % n.max(1),
                got[i],
                want.y[i]
            );
        }
        let (mean, inv) = (d_mean.to_f32().unwrap(), d_inv.to_f32().unwrap());
        for r in 0..rows {
            if case.stats {
                assert!(
                    close_rel(mean[r] as f64, want.mean[r], STATS_TOL)
                        || (mean[r] as f64 - want.mean[r]).abs() <= STATS_TOL,
                    "{case:?}: Mean[{r}] = {} vs {}",
                    mean[r],
                    want.mean[r]
                );
                assert!(
                    close_rel(inv[r] as f64, want.inv_std_dev[r], STATS_TOL),
                    "{case:?}: InvStdDev[{r}] = {} vs {}",
                    inv[r],
                    want.inv_std_dev[r]
                );
            } else {
                assert!(
                    mean[r] == -7.0 && inv[r] == -7.0,
                    "{case:?}: stats written when absent"
                );
            }
        }
    }

    /// All 8 attribute combinations of both ops, with non-default epsilon/c/k.
    fn param_sets() -> Vec<Params> {
        let mut out = Vec::new();
        for variant in [
            Variant::AdaNorm { c: 1.5, k: 0.1 },
            Variant::LayerNormSimple,
        ] {
            for unbiased in [false, true] {
                for eps_in_sqrt in [true, false] {
                    out.push(Params {
                        variant,
                        epsilon: if eps_in_sqrt { 1e-5 } else { 1e-3 },
                        unbiased,
                        eps_in_sqrt,
                    });
                }
            }
        }
        out
    }

    /// Row lengths around every strategy and vector-width boundary.
    const ROW_LENS: &[usize] = &[
        1, 2, 3, 4, 7, 8, 16, 31, 32, 33, 63, 64, 100, 127, 128, 129, 255, 256, 257, 512, 768,
        1000, 1023, 1024, 1025, 1536, 2048, 3000, 4096, 5000, 8192, 12288, 16384, 20000, 32768,
        32769, 40000, 65536,
    ];

    fn rows_for(row_len: usize) -> usize {
        (200_000 / row_len).clamp(3, 40)
    }

    /// Every dtype x row length x the 8 attribute sets, rotating Scale/B, stats, alignment and
    /// streams so each length sees each of them; plus an offset and a constant case per length.
    #[test]
    fn every_dtype_and_row_length_matches_the_reference() {
        if !gpu() {
            return;
        }
        let sets = param_sets();
        let mut seed = 1;
        for dtype in DType::ALL {
            for &row_len in ROW_LENS {
                for (i, &params) in sets.iter().enumerate() {
                    let case = Case {
                        dtype,
                        rows: rows_for(row_len),
                        row_len,
                        params,
                        scale: i % 2 == 0,
                        bias: i % 4 < 2,
                        stats: i % 3 != 2,
                        data: Data::Plain,
                        misalign: i == 5,
                        own_stream: i % 2 == 1,
                    };
                    seed += 1;
                    check(&case, seed);
                }
                for (data, misalign) in [
                    (Data::Offset, false),
                    (Data::Offset, true),
                    (Data::Constant, false),
                ] {
                    let case = Case {
                        dtype,
                        rows: rows_for(row_len),
                        row_len,
                        params: sets[(seed % 8) as usize],
                        scale: true,
                        bias: true,
                        stats: true,
                        data,
                        misalign,
                        own_stream: false,
                    };
                    seed += 1;
                    check(&case, seed);
                }
            }
        }
    }

    /// The full cross of attributes x Scale/B x stats x alignment on a few lengths.
    #[test]
    fn every_option_combination_on_a_few_lengths() {
        if !gpu() {
            return;
        }
        let mut seed = 10_000;
        for dtype in DType::ALL {
            for row_len in [1, 33, 1024, 4097, 40000] {
                for params in param_sets() {
                    for opts in 0..16 {
                        let case = Case {
                            dtype,
                            rows: rows_for(row_len).min(8),
                            row_len,
                            params,
                            scale: opts & 1 != 0,
                            bias: opts & 2 != 0,
                            stats: opts & 4 != 0,
                            data: Data::Plain,
                            misalign: opts & 8 != 0,
                            own_stream: true,
                        };
                        seed += 1;
                        check(&case, seed);
                    }
                }
            }
        }
    }

    /// More rows than a grid dimension of 65535 would hold, for short rows (warp kernels) and a
    /// block-kernel length.
    #[test]
    fn many_rows() {
        if !gpu() {
            return;
        }
        let p = Params::new(Variant::ada_norm_default());
        for dtype in DType::ALL {
            // 270_000 rows of 1 or 3: over 65535 blocks of 4 warp-rows each.
            for (rows, row_len) in [(270_001, 3), (66_000, 8), (270_000, 1)] {
                let case = Case {
                    dtype,
                    rows,
                    row_len,
                    params: p,
                    scale: true,
                    bias: true,
                    stats: true,
                    data: Data::Plain,
                    misalign: false,
                    own_stream: true,
                };
                check(&case, rows as u64);
            }
        }
        // Over 65535 one-row blocks (scalar block kernel: 1025 is no multiple of 8).
        let case = Case {
            dtype: DType::F16,
            rows: 65_600,
            row_len: 1025,
            params: p,
            scale: true,
            bias: true,
            stats: true,
            data: Data::Offset,
            misalign: false,
            own_stream: false,
        };
        check(&case, 99);
    }

    /// Arbitrary constants (0.1 is no short binary fraction): the corrected mean still gives
    /// exactly y = 0 with epsilon > 0, and 0/0 = NaN with epsilon = 0 where the sums of the
    /// (identical) deviations stay exact in f32, as in the CPU kernels' test (N = 1000).
    #[test]
    fn constant_rows_normalise_to_exact_zero_or_nan() {
        if !gpu() {
            return;
        }
        for row_len in [1000usize, 4096, 40000] {
            for eps in [0.25, 0.0] {
                if eps == 0.0 && row_len > 4096 {
                    continue;
                }
                let p = Params {
                    variant: Variant::LayerNormSimple,
                    epsilon: eps,
                    unbiased: false,
                    eps_in_sqrt: true,
                };
                let x = DeviceBuffer::from_f32(&vec![0.1f32; 2 * row_len]).unwrap();
                let y = DeviceBuffer::alloc(8 * row_len).unwrap();
                // SAFETY: live device buffers of 2 rows.
                unsafe {
                    launch(
                        null_mut(),
                        DType::F32,
                        x.ptr(),
                        y.ptr(),
                        null(),
                        null(),
                        null_mut(),
                        null_mut(),
                        2,
                        row_len,
                        &p,
                    )
                }
                .unwrap();
                let y = y.to_f32().unwrap();
                if eps > 0.0 {
                    assert!(y.iter().all(|&v| v == 0.0), "{row_len}: {:?}", &y[..4]);
                } else {
                    assert!(y.iter().all(|v| v.is_nan()), "{row_len}: {:?}", &y[..4]);
                }
            }
        }
    }

    /// N = 1 unbiased is 0/0 = NaN; N = 0 writes NaN statistics and no Y; rows = 0 is a no-op.
    #[test]
    fn degenerate_sizes() {
        if !gpu() {
            return;
        }
        let p = Params {
            unbiased: true,
            ..Params::new(Variant::LayerNormSimple)
        };
        let x = DeviceBuffer::from_f32(&[3.0, 4.0]).unwrap();
        let y = DeviceBuffer::from_f32(&[0.0, 0.0]).unwrap();
        let stats = DeviceBuffer::from_f32(&[0.0; 4]).unwrap();
        let mean = stats.ptr() as *mut f32;
        // SAFETY: live device buffers; mean/inv are two f32 each.
        let inv = unsafe { mean.add(2) };
        unsafe {
            launch(
                null_mut(),
                DType::F32,
                x.ptr(),
                y.ptr(),
                null(),
                null(),
                mean,
                inv,
                2,
                1,
                &p,
            )
        }
        .unwrap();
        let s = stats.to_f32().unwrap();
        assert_eq!(&s[..2], &[3.0, 4.0]);
        assert!(s[2].is_nan() && s[3].is_nan());
        assert!(y.to_f32().unwrap().iter().all(|v| v.is_nan()));

        // SAFETY: row_len 0 reads and writes no elements; the stats buffers hold 2 rows.
        unsafe {
            launch(
                null_mut(),
                DType::F16,
                x.ptr(),
                y.ptr(),
                null(),
                null(),
                mean,
                inv,
                2,
                0,
                &p,
            )
        }
        .unwrap();
        assert!(stats.to_f32().unwrap().iter().all(|v| v.is_nan()));
        // SAFETY: rows 0 touches nothing.
        unsafe {
            launch(
                null_mut(),
                DType::F16,
                null(),
                null_mut(),
                null(),
                null(),
                null_mut(),
                null_mut(),
                0,
                5,
                &p,
            )
        }
        .unwrap();
    }

    #[test]
    fn bad_arguments_are_errors_not_crashes() {
        if !gpu() {
            return;
        }
        let x = DeviceBuffer::from_f32(&[1.0; 4]).unwrap();
        let mut p = Params::new(Variant::LayerNormSimple);
        p.epsilon = -1.0;
        // SAFETY: refused before any pointer is used.
        let e = unsafe {
            launch(
                null_mut(),
                DType::F32,
                x.ptr(),
                x.ptr(),
                null(),
                null(),
                null_mut(),
                null_mut(),
                1,
                4,
                &p,
            )
        }
        .unwrap_err();
        assert!(e.contains("epsilon must be >= 0"), "{e}");
        p.epsilon = 1e-5;
        // SAFETY: refused before any pointer is used.
        let e = unsafe {
            launch(
                null_mut(),
                DType::F32,
                null(),
                x.ptr(),
                null(),
                null(),
                null_mut(),
                null_mut(),
                1,
                4,
                &p,
            )
        }
        .unwrap_err();
        assert!(e.contains("null"), "{e}");
        // SAFETY: refused before any pointer is used.
        let e = unsafe {
            launch(
                null_mut(),
                DType::F32,
                x.ptr(),
                x.ptr(),
                null(),
                null(),
                null_mut(),
                null_mut(),
                usize::MAX / 2,
                4,
                &p,
            )
        }
        .unwrap_err();
        assert!(e.contains("do not fit"), "{e}");
    }

    /// y == x works (each thread writes only what it read, after reading it).
    #[test]
    fn in_place() {
        if !gpu() {
            return;
        }
        let p = Params::new(Variant::ada_norm_default());
        for row_len in [768usize, 5000, 40000] {
            let host: Vec<f32> = (0..3 * row_len)
                .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
                .collect();
            let want = reference(
                &host.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                &[3, row_len],
                -1,
                None,
                None,
                &p,
            )
            .unwrap();
            let buf = DeviceBuffer::from_f32(&host).unwrap();
            // SAFETY: one live buffer as both X and Y.
            unsafe {
                launch(
                    null_mut(),
                    DType::F32,
                    buf.ptr(),
                    buf.ptr(),
                    null(),
                    null(),
                    null_mut(),
                    null_mut(),
                    3,
                    row_len,
                    &p,
                )
            }
            .unwrap();
            let got = buf.to_f32().unwrap();
            for (g, w) in got.iter().zip(&want.y) {
                assert!(close(*g as f64, *w, 1e-5), "{g} vs {w}");
            }
        }
    }

    /// The device broadcast of Scale/B equals `adanorm_kernels::expand_param`.
    #[test]
    fn expand_param_matches_the_host_version() {
        if !gpu() {
            return;
        }
        let cases: &[(&[usize], &[usize])] = &[
            (&[4], &[3, 4]),
            (&[3, 1], &[3, 4]),
            (&[1], &[2, 3, 5]),
            (&[], &[7]),
            (&[2, 1, 3], &[2, 4, 3]),
            (
                &[2, 1, 1, 1, 1, 1, 1, 1, 1, 3],
                &[2, 2, 1, 2, 1, 2, 1, 2, 1, 3],
            ),
            (&[768], &[768]),
        ];
        for dtype in [DType::F32, DType::F16] {
            for &(param, normalized) in cases {
                let count: usize = param.iter().product();
                let values: Vec<u32> = (0..count as u32).map(|v| v * 3 + 1).collect();
                let want = expand_param(&values, param, normalized);
                let n: usize = normalized.iter().product();
                let (src, dst) = match dtype {
                    DType::F32 => (
                        DeviceBuffer::from_bytes(
                            &values
                                .iter()
                                .flat_map(|v| v.to_le_bytes())
                                .collect::<Vec<_>>(),
                        )
                        .unwrap(),
                        DeviceBuffer::alloc(4 * n).unwrap(),
                    ),
                    _ => (
                        DeviceBuffer::from_u16(
                            &values.iter().map(|&v| v as u16).collect::<Vec<_>>(),
                        )
                        .unwrap(),
                        DeviceBuffer::alloc(2 * n).unwrap(),
                    ),
                };
                // SAFETY: src holds prod(param) and dst prod(normalized) elements.
                unsafe {
                    launch_expand_param(null_mut(), dtype, src.ptr(), dst.ptr(), param, normalized)
                }
                .unwrap();
                synchronize().unwrap();
                let got: Vec<u32> = match dtype {
                    DType::F32 => dst
                        .to_bytes()
                        .unwrap()
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                    _ => dst.to_u16().unwrap().into_iter().map(u32::from).collect(),
                };
                assert_eq!(got, want, "{param:?} -> {normalized:?}");
            }
        }
        // SAFETY: refused before any pointer is used.
        let e =
            unsafe { launch_expand_param(null_mut(), DType::F32, null(), null_mut(), &[2], &[3]) }
                .unwrap_err();
        assert!(e.contains("broadcastable"), "{e}");
    }

    /// A launch from a thread with no current context works when given the stream (the
    /// stream's context is used) and is refused with a clear message without one.
    #[test]
    fn context_comes_from_the_stream() {
        if !gpu() {
            return;
        }
        let stream = Stream::new().unwrap();
        let x = DeviceBuffer::from_f32(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        let y = DeviceBuffer::alloc(16).unwrap();
        let (xp, yp, sp) = (x.ptr() as usize, y.ptr() as usize, stream.raw() as usize);
        let p = Params::new(Variant::LayerNormSimple);
        std::thread::spawn(move || {
            // SAFETY: live buffers and stream, owned by the joining thread.
            let ok = unsafe {
                launch(
                    sp as *mut c_void,
                    DType::F32,
                    xp as *const c_void,
                    yp as *mut c_void,
                    null(),
                    null(),
                    null_mut(),
                    null_mut(),
                    1,
                    4,
                    &p,
                )
            };
            ok.unwrap();
            // SAFETY: refused before any pointer is used: no context on this thread.
            let e = unsafe {
                launch(
                    null_mut(),
                    DType::F32,
                    xp as *const c_void,
                    yp as *mut c_void,
                    null(),
                    null(),
                    null_mut(),
                    null_mut(),
                    1,
                    4,
                    &p,
                )
            }
            .unwrap_err();
            assert!(e.contains("no CUDA context is current"), "{e}");
        })
        .join()
        .unwrap();
        stream.synchronize().unwrap();
        let y = y.to_f32().unwrap();
        assert!((y[0] + 1.3416).abs() < 1e-3, "{y:?}");
    }
}
