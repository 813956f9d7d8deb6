//! Times the row kernels on one thread, X larger than the caches (`[64·128·768 / N, N]`): AdaNorm
//! with Scale and B in float16 and float32, and float16 without them, called once for the whole
//! tensor and in 64 KiB pieces (the many calls of a thread pool). Interleaved rounds; median (min).
//!
//!     cargo run --release -p adanorm-kernels --example row_kernels -- [N]
use adanorm_kernels::dispatch;
use adanorm_kernels::params::{Params, Variant};
use half::f16;
use std::time::Instant;

const ROUNDS: usize = 60;
const WARMUP: usize = 5;

/// One timed call (or calls) of a kernel.
type Case<'a> = Box<dyn FnMut() + 'a>;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(768, |a| a.parse().expect("N: the row length"));
    let rows = 64 * 128 * 768 / n;
    let x32: Vec<f32> = (0..rows * n)
        .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 2.0)
        .collect();
    let g32: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.01).collect();
    let x16: Vec<f16> = x32.iter().map(|&v| f16::from_f32(v)).collect();
    let g16: Vec<f16> = g32.iter().map(|&v| f16::from_f32(v)).collect();
    // One output per case, so that each closure owns its own.
    let mut y32 = vec![0f32; x32.len()];
    let [mut y16a, mut y16b, mut y16c] = [(); 3].map(|_| vec![f16::ZERO; x16.len()]);
    let params = Params::from_attributes(Variant::AdaNorm { c: 2.0, k: 0.1 }, 1e-5, 1, 0)
        .expect("valid attributes");
    let piece = (64 * 1024 / (2 * n)).max(1) * n;

    let mut cases: Vec<(&str, Case)> = vec![
        (
            "f16 AdaNorm +Scale+B",
            Box::new(|| {
                dispatch::out_of_place(
                    &x16,
                    &mut y16a,
                    n,
                    Some(&g16),
                    Some(&g16),
                    &params,
                    None,
                    None,
                )
            }),
        ),
        (
            "f16 AdaNorm +Scale+B, 64 KiB calls",
            Box::new(|| {
                for (x, y) in x16.chunks(piece).zip(y16b.chunks_mut(piece)) {
                    dispatch::out_of_place(x, y, n, Some(&g16), Some(&g16), &params, None, None);
                }
            }),
        ),
        (
            "f16 AdaNorm",
            Box::new(|| {
                dispatch::out_of_place(&x16, &mut y16c, n, None, None, &params, None, None)
            }),
        ),
        (
            "f32 AdaNorm +Scale+B",
            Box::new(|| {
                dispatch::out_of_place(
                    &x32,
                    &mut y32,
                    n,
                    Some(&g32),
                    Some(&g32),
                    &params,
                    None,
                    None,
                )
            }),
        ),
    ];
    let mut times = vec![Vec::new(); cases.len()];
    for round in 0..WARMUP + ROUNDS {
        for (i, (_, run)) in cases.iter_mut().enumerate() {
            let start = Instant::now();
            run();
            if round >= WARMUP {
                times[i].push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    println!("[{rows}, {n}], {ROUNDS} interleaved rounds, ms: median (min)");
    for ((name, _), t) in cases.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        println!("  {name:<36} {:.3} ({:.3})", t[t.len() / 2], t[0]);
    }
}
