//! The Rust twin of `crates/ort/bench/bench_ort.py`, for machines that have no Python packages:
//! the same models (written by `bench_ort.py --write-models DIR`), the same interleaved rounds and
//! IO binding, through the `ort` crate and a `libonnxruntime.so`.
//!
//! ```text
//! python crates/ort/bench/bench_ort.py --write-models target/bench-models
//! cargo bench -p adanorm-ort --bench ort_ops -- --models target/bench-models \
//!     --ort .venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0
//! ```
//! Options: `--lib PATH` (default: target/release/libadanorm_ort.so), `--rounds N` (40),
//! `--warmup N` (5), `--threads 1,2`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use half::f16;
use ort::environment::Environment;
use ort::memory::Allocator;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{PrimitiveTensorElementType, Tensor};

const VARIANTS: [&str; 5] = [
    "adanorm",
    "adanorm_affine",
    "layernorm",
    "decomposed",
    "copy",
];
const SHAPES: [[usize; 3]; 2] = [[64, 128, 768], [16, 512, 1024]];

/// Per variant: (median, min) in ms, or `None` when the runtime has no kernel for it.
type Timings = Vec<Option<(f64, f64)>>;

struct Args {
    models: PathBuf,
    ort: PathBuf,
    lib: PathBuf,
    rounds: usize,
    warmup: usize,
    threads: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        models: PathBuf::new(),
        ort: PathBuf::new(),
        lib: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/release/libadanorm_ort.so"
        )),
        rounds: 40,
        warmup: 5,
        threads: vec![1, 2],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--models" => a.models = value().into(),
            "--ort" => a.ort = value().into(),
            "--lib" => a.lib = value().into(),
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--warmup" => a.warmup = value().parse().expect("--warmup N"),
            "--threads" => {
                a.threads = value()
                    .split(',')
                    .map(|t| t.parse().expect("--threads 1,2"))
                    .collect()
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        a.models.is_dir(),
        "--models DIR (from bench_ort.py --write-models) is required"
    );
    assert!(
        a.ort.is_file(),
        "--ort PATH to libonnxruntime.so is required"
    );
    a
}

/// Median and minimum, in ms.
fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2] * 1e3, v[0] * 1e3)
}

fn bench<T: PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static>(
    env: &Environment,
    a: &Args,
    dtype: &str,
    shape: [usize; 3],
    threads: usize,
    from_f32: fn(f32) -> T,
) -> Timings {
    let n: usize = shape.iter().product();
    let mut s = 0x2545f4914f6cdd1du64;
    let x: Vec<T> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            from_f32(3.0 + ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0)
        })
        .collect();
    let mut runs = Vec::new();
    for v in VARIANTS {
        let path: PathBuf = a.models.join(format!("{v}_{dtype}_h{}.onnx", shape[2]));
        match runner(env, &path, &a.lib, threads, &x, shape) {
            Ok(r) => runs.push(Some(r)),
            Err(e) => {
                eprintln!("{v} {dtype} skipped: {}", e.lines().next().unwrap_or(""));
                runs.push(None);
            }
        }
    }
    for _ in 0..a.warmup {
        for (s, b) in runs.iter_mut().flatten() {
            s.run_binding(b).expect("run");
        }
    }
    let mut times = vec![Vec::new(); runs.len()];
    for _ in 0..a.rounds {
        for (i, r) in runs.iter_mut().enumerate() {
            if let Some((s, b)) = r {
                let t = Instant::now();
                s.run_binding(b).expect("run");
                times[i].push(t.elapsed().as_secs_f64());
            }
        }
    }
    times
        .into_iter()
        .map(|t| (!t.is_empty()).then(|| stats(t)))
        .collect()
}

fn runner<T: PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static>(
    env: &Environment,
    model: &Path,
    lib: &Path,
    threads: usize,
    x: &[T],
    shape: [usize; 3],
) -> Result<(Session, ort::session::IoBinding), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut session = Session::builder(env)
        .map_err(|x| e(&x))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|x| e(&x))?
        .with_intra_threads(threads)
        .map_err(|x| e(&x))?
        .with_inter_threads(1)
        .map_err(|x| e(&x))?
        .with_operator_library(lib)
        .map_err(|x| e(&x))?
        .commit_from_file(model)
        .map_err(|x| e(&x))?;
    let input = Tensor::from_array((shape.to_vec(), x.to_vec())).map_err(|x| e(&x))?;
    let output = Tensor::<T>::new(&Allocator::default(), shape.to_vec()).map_err(|x| e(&x))?;
    let mut binding = session.create_binding().map_err(|x| e(&x))?;
    binding.bind_input("X", &input).map_err(|x| e(&x))?;
    binding.bind_output("Y", output).map_err(|x| e(&x))?;
    session.run_binding(&binding).map_err(|x| e(&x))?;
    Ok((session, binding))
}

fn main() {
    let a = args();
    let env = ort::init_from(&a.ort)
        .expect("load onnxruntime")
        .build()
        .expect("environment");
    println!(
        "ort crate host, {} (libadanorm_ort {}), {} logical CPUs; {} interleaved rounds after {} warm-up; \
         medians in ms (min)\n",
        a.ort.display(),
        a.lib.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.rounds,
        a.warmup
    );
    println!(
        "| shape | dtype | threads | {} | affine/LN | decomposed/adanorm | adanorm/copy |",
        VARIANTS.join(" | ")
    );
    println!("{}|", "|---".repeat(VARIANTS.len() + 6));
    let mut at: std::collections::HashMap<(usize, &str, usize), Timings> = Default::default();
    for (si, shape) in SHAPES.iter().enumerate() {
        for dtype in ["float32", "float16"] {
            for &threads in &a.threads {
                let t = match dtype {
                    "float32" => bench::<f32>(&env, &a, dtype, *shape, threads, |v| v),
                    _ => bench::<f16>(&env, &a, dtype, *shape, threads, f16::from_f32),
                };
                let med = |i: usize| t[i].map(|x| x.0);
                let ratio = |p: Option<f64>, q: Option<f64>| match (p, q) {
                    (Some(p), Some(q)) => format!("{:.2}x", p / q),
                    _ => "n/a".into(),
                };
                let cells: Vec<String> = t
                    .iter()
                    .map(|c| c.map_or("n/a".into(), |(m, lo)| format!("{m:.2} ({lo:.2})")))
                    .collect();
                println!(
                    "| {shape:?} | {dtype} | {threads} | {} | {} | {} | {} |",
                    cells.join(" | "),
                    ratio(med(1), med(2)),
                    ratio(med(3), med(0)),
                    ratio(med(0), med(4))
                );
                at.insert((si, dtype, threads), t);
            }
        }
    }
    if a.threads.contains(&1) && a.threads.contains(&2) {
        println!("\nScaling, 1 -> 2 intra-op threads (median time at 1 / at 2):\n");
        println!("| shape | dtype | adanorm | adanorm_affine | layernorm |");
        println!("|---|---|---|---|---|");
        for (si, shape) in SHAPES.iter().enumerate() {
            for dtype in ["float32", "float16"] {
                let (one, two) = (&at[&(si, dtype, 1)], &at[&(si, dtype, 2)]);
                let cells: Vec<String> = (0..3)
                    .map(|i| match (one[i], two[i]) {
                        (Some(p), Some(q)) => format!("{:.2}x", p.0 / q.0),
                        _ => "n/a".into(),
                    })
                    .collect();
                println!("| {shape:?} | {dtype} | {} |", cells.join(" | "));
            }
        }
    }
}
