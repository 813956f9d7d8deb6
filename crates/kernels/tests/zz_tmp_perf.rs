use adanorm_kernels::*;
use std::time::Instant;
#[test]
fn perf() {
    let (rows, n) = (4096usize, 768usize);
    let x: Vec<f32> = (0..rows * n).map(|i| ((i * 7919) % 1000) as f32 * 0.001 + 1e4).collect();
    let mut y = vec![0f32; x.len()];
    let scale = vec![1.5f32; n];
    let bias = vec![0.5f32; n];
    let p = Params::new(Variant::ada_norm_default());
    for t in 0..3 {
        let t0 = Instant::now();
        normalize_rows(&x, &mut y, n, Some(&scale), Some(&bias), &p, None, None);
        let dt = t0.elapsed().as_secs_f64();
        eprintln!("f32 run {t}: {:.2} ms, {:.2} GB/s (read+write)", dt * 1e3, (x.len() * 8) as f64 / dt / 1e9);
    }
    let xh: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v - 1e4)).collect();
    let mut yh = xh.clone();
    let sh: Vec<half::f16> = scale.iter().map(|&v| half::f16::from_f32(v)).collect();
    for t in 0..3 {
        let t0 = Instant::now();
        normalize_rows(&xh, &mut yh, n, Some(&sh), None, &p, None, None);
        let dt = t0.elapsed().as_secs_f64();
        eprintln!("f16 run {t}: {:.2} ms", dt * 1e3);
    }
    // naive scalar baseline
    let t0 = Instant::now();
    for (xr, yr) in x.chunks(n).zip(y.chunks_mut(n)) {
        let m = xr.iter().sum::<f32>() / n as f32;
        let v = xr.iter().map(|a| (a - m) * (a - m)).sum::<f32>() / n as f32;
        let inv = 1.0 / (v + 1e-5).sqrt();
        for j in 0..n { let yy = (xr[j] - m) * inv; yr[j] = 1.0 * (1.0 - 0.1 * yy) * yy * scale[j] + bias[j]; }
    }
    eprintln!("naive scalar: {:.2} ms", t0.elapsed().as_secs_f64() * 1e3);
    std::hint::black_box(&y);
}
