//! AdaNorm in tract against its alternatives, side by side, on f32 activations:
//!
//! - (a) the row kernel alone (`normalize_rows`, out of place, into a reused buffer), as the
//!   default target compiles it (SSE2), and (a') compiled for AVX2 as the op's dispatch does;
//! - (b) tract running one `AdaNorm` node (optimized plan; each run gets a fresh owned input,
//!   copied outside the timer, so the op works in place); (b') the same with the caller keeping
//!   a reference to the input, so the op writes a new tensor;
//! - (c) tract running ONNX `LayerNormalization` (opset 17, scale and bias);
//! - (d) tract running the AdaNorm subgraph PyTorch's legacy exporter emits (the node structure
//!   of `fixtures/zoo/adanorm_legacy_op14`, `/blocks.0/norm1/*`);
//! - (e) the memory floor: `y[i] = x[i] * s` into a separate, reused buffer.
//!
//! Run: `cargo bench -p adanorm-tract -j1 --bench tract_ops` (prints medians and ratios).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adanorm_kernels::{normalize_rows, Params, Variant};
use adanorm_tract::tract_onnx::prelude::*;
use common::*;
use tract_onnx::pb::{ModelProto, NodeProto};

/// The legacy exporter's AdaNorm: C = 1, k = 0.1, unbiased std, epsilon added after the sqrt.
fn legacy_params() -> Params {
    Params::from_attributes(Variant::AdaNorm { c: 1.0, k: 0.1 }, 1e-5f32 as f64, 1, 0).unwrap()
}

fn single_node_model(
    n: NodeProto,
    shape: &[usize],
    initializers: Vec<tract_onnx::pb::TensorProto>,
    opset: i64,
) -> ModelProto {
    model(
        graph(
            vec![n],
            vec![value_info("X", FLOAT, Some(&dims(shape)))],
            vec![value_info("Y", FLOAT, None)],
            initializers,
        ),
        opset,
    )
}

fn ada_norm_model(shape: &[usize]) -> ModelProto {
    let attributes = vec![
        attr_f("c", 1.0),
        attr_f("k", 0.1),
        attr_i("unbiased", 1),
        attr_i("eps_in_sqrt", 0),
    ];
    single_node_model(
        node("AdaNorm", "ai.adanorm", &["X"], &["Y"], attributes),
        shape,
        vec![],
        17,
    )
}

fn layer_normalization_model(shape: &[usize]) -> ModelProto {
    let w = *shape.last().unwrap();
    let scale = values(w, 21)
        .iter()
        .map(|v| 1.0 + 0.1 * *v as f32)
        .collect::<Vec<_>>();
    let bias = values(w, 22)
        .iter()
        .map(|v| 0.1 * *v as f32)
        .collect::<Vec<_>>();
    let n = node(
        "LayerNormalization",
        "",
        &["X", "scale", "bias"],
        &["Y"],
        vec![attr_i("axis", -1), attr_f("epsilon", 1e-5)],
    );
    single_node_model(
        n,
        shape,
        vec![
            tensor_f32("scale", &[w], &scale),
            tensor_f32("bias", &[w], &bias),
        ],
        17,
    )
}

/// `/blocks.0/norm1/*` of the legacy op14 AdaNorm export, node for node.
fn decomposed_model(shape: &[usize]) -> ModelProto {
    let mean = |x: &str, y: &str| {
        node(
            "ReduceMean",
            "",
            &[x],
            &[y],
            vec![attr_ints("axes", &[-1]), attr_i("keepdims", 1)],
        )
    };
    let op = |op: &str, a: &str, b: &str, y: &str| node(op, "", &[a, b], &[y], vec![]);
    let nodes = vec![
        mean("X", "mean_0"),
        mean("X", "mean_1"),
        node("Shape", "", &["X"], &["shape"], vec![]),
        node(
            "Constant",
            "",
            &[],
            &["last"],
            vec![attr_t("value", tensor_i64("", &[1], &[-1]))],
        ),
        node(
            "Gather",
            "",
            &["shape", "last"],
            &["row_dims"],
            vec![attr_i("axis", 0)],
        ),
        node(
            "ReduceProd",
            "",
            &["row_dims"],
            &["n_int"],
            vec![attr_i("keepdims", 0)],
        ),
        op("Sub", "X", "mean_1", "centred_1"),
        op("Mul", "centred_1", "centred_1", "squares"),
        mean("squares", "biased_var"),
        node(
            "Cast",
            "",
            &["n_int"],
            &["n"],
            vec![attr_i("to", FLOAT as i64)],
        ),
        op("Mul", "biased_var", "n", "sum_squares"),
        scalar_f32("one", 1.0),
        op("Sub", "n", "one", "n_minus_1"),
        op("Div", "sum_squares", "n_minus_1", "var"),
        node("Sqrt", "", &["var"], &["std"], vec![]),
        op("Sub", "X", "mean_0", "d"),
        mean("d", "mean_d"),
        op("Sub", "d", "mean_d", "d_centred"),
        scalar_f32("k", 0.1),
        op("Mul", "d_centred", "k", "k_d"),
        scalar_f32("eps", 1e-5),
        op("Add", "std", "eps", "sigma"),
        op("Div", "k_d", "sigma", "k_y"),
        op("Mul", "d", "k_y", "d_k_y"),
        op("Sub", "d", "d_k_y", "d_factor"),
        op("Div", "d_factor", "sigma", "ada"),
        scalar_f32("c", 1.0),
        op("Mul", "ada", "c", "Y"),
    ];
    model(
        graph(
            nodes,
            vec![value_info("X", FLOAT, Some(&dims(shape)))],
            vec![value_info("Y", FLOAT, None)],
            vec![],
        ),
        14,
    )
}

/// The kernel compiled for AVX2, as the op's run-time dispatch does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn normalize_rows_avx2(x: &[f32], y: &mut [f32], row_len: usize, params: &Params) {
    normalize_rows(x, y, row_len, None, None, params, None, None);
}

fn plan_for(model: &ModelProto) -> Arc<TypedRunnableModel> {
    let path = save(model);
    adanorm_tract::model_for_path(&path)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("building the plan")
}

/// The median and the fastest of a case's runs (the minimum shows how much of the median is
/// noise from the shared machine).
#[derive(Clone, Copy)]
struct Timing {
    median: Duration,
    min: Duration,
}

/// Times `runs` runs after `warmup` untimed ones; `run` times one run itself, so it can leave
/// its setup out.
fn measure(warmup: usize, runs: usize, mut run: impl FnMut() -> Duration) -> Timing {
    for _ in 0..warmup {
        run();
    }
    let mut times: Vec<Duration> = (0..runs).map(|_| run()).collect();
    times.sort();
    Timing {
        median: times[runs / 2],
        min: times[0],
    }
}

/// Times `plan` on a copy of `x`; with `keep_input`, the caller holds a second reference.
fn time_plan(plan: &Arc<TypedRunnableModel>, x: &Tensor, keep_input: bool, runs: usize) -> Timing {
    measure(3, runs, || {
        let input = x.clone().into_tvalue();
        let kept = keep_input.then(|| input.clone());
        let start = Instant::now();
        let outputs = plan.run(tvec![input]).expect("run");
        let elapsed = start.elapsed();
        drop((black_box(outputs), kept));
        elapsed
    })
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    as_f64(a)
        .iter()
        .zip(as_f64(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench_shape(shape: &[usize], runs: usize) {
    let numel: usize = shape.iter().product();
    let row_len = *shape.last().unwrap();
    let bytes = 2.0 * numel as f64 * 4.0;
    let data = values(numel, 1);
    let x_vec: Vec<f32> = data.iter().map(|&v| v as f32).collect();
    let x = Tensor::from_shape(shape, &x_vec).unwrap();
    let params = legacy_params();

    let mut y = vec![0f32; numel];
    let kernel = measure(3, runs, || {
        let start = Instant::now();
        normalize_rows(
            black_box(&x_vec),
            &mut y,
            row_len,
            None,
            None,
            &params,
            None,
            None,
        );
        let elapsed = start.elapsed();
        black_box(&y);
        elapsed
    });

    #[cfg(target_arch = "x86_64")]
    let kernel_avx2 = std::arch::is_x86_feature_detected!("avx2").then(|| {
        measure(3, runs, || {
            let start = Instant::now();
            // Safety: the CPU supports AVX2, checked above.
            unsafe { normalize_rows_avx2(black_box(&x_vec), &mut y, row_len, &params) };
            let elapsed = start.elapsed();
            black_box(&y);
            elapsed
        })
    });
    #[cfg(not(target_arch = "x86_64"))]
    let kernel_avx2: Option<Timing> = None;

    let ada_plan = plan_for(&ada_norm_model(shape));
    let ada_fresh = time_plan(&ada_plan, &x, false, runs);
    let ada_shared = time_plan(&ada_plan, &x, true, runs);
    let ln_plan = plan_for(&layer_normalization_model(shape));
    let ln = time_plan(&ln_plan, &x, false, runs);
    let decomposed_plan = plan_for(&decomposed_model(shape));
    let decomposed = time_plan(&decomposed_plan, &x, false, runs);

    let scale = black_box(1.0001f32);
    let copy = measure(3, runs, || {
        let start = Instant::now();
        for (o, &i) in y.iter_mut().zip(black_box(&x_vec)) {
            *o = i * scale;
        }
        let elapsed = start.elapsed();
        black_box(&y);
        elapsed
    });

    // The decomposed graph and the op compute the same function.
    let ada_out = ada_plan
        .run(tvec![x.clone().into_tvalue()])
        .unwrap()
        .remove(0);
    let dec_out = decomposed_plan
        .run(tvec![x.clone().into_tvalue()])
        .unwrap()
        .remove(0);
    let diff = max_abs_diff(&ada_out, &dec_out);

    println!(
        "\nf32 {shape:?}: {numel} elements, {:.1} MB read + written per run, {runs} runs each",
        bytes / 1e6
    );
    println!(
        "{:<58} {:>10} {:>8} {:>8}",
        "case", "median ms", "min ms", "GB/s"
    );
    let mut rows = vec![(
        "(a) kernel normalize_rows, out of place (SSE2 build)",
        kernel,
    )];
    rows.extend(kernel_avx2.map(|d| ("(a') kernel normalize_rows, out of place, AVX2", d)));
    rows.extend([
        (
            "(b) tract AdaNorm node, fresh owned input (in place)",
            ada_fresh,
        ),
        (
            "(b') tract AdaNorm node, input kept by caller (new tensor)",
            ada_shared,
        ),
        ("(c) tract LayerNormalization opset 17, scale + bias", ln),
        (
            "(d) tract decomposed legacy AdaNorm subgraph (opset 14)",
            decomposed,
        ),
        ("(e) copy floor y[i] = x[i] * s, separate buffer", copy),
    ]);
    for (name, t) in rows {
        println!(
            "{name:<58} {:>10.3} {:>8.3} {:>8.1}",
            ms(t.median),
            ms(t.min),
            bytes / t.median.as_secs_f64() / 1e9
        );
    }
    for (what, pick) in [
        ("medians", (|t: Timing| t.median) as fn(Timing) -> Duration),
        ("minima", |t: Timing| t.min),
    ] {
        let (ada, copy, ln, dec) = (pick(ada_fresh), pick(copy), pick(ln), pick(decomposed));
        println!(
            "ratios of {what}: AdaNorm/copy {:.2} (target <= 1.3) | AdaNorm/LayerNormalization {:.2} (target <= 0.5) | decomposed/AdaNorm {:.1}",
            ms(ada) / ms(copy),
            ms(ada) / ms(ln),
            ms(dec) / ms(ada)
        );
    }
    println!("max |AdaNorm node - decomposed subgraph| = {diff:.2e}");
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported, every case runs.
    bench_shape(&[64, 128, 768], 30);
    bench_shape(&[16, 512, 1024], 30);
}
