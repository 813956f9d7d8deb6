//! Roundings inside a LayerNorm chain (issue 16 items 1 and 2), hand-built in the shapes the
//! real tools write them (`fixtures/zoo/make_fp16_qdq.py` has the real exports): a float16
//! model whose ops run in float32 islands between Casts is one rewritable LayerNorm (every
//! rounding is to its own type: the fused node, computing in float32 and rounding once, is at
//! least as precise); a float32 norm that rounds to float16 inside, or a QDQ-quantised one, is
//! found and reported not rewritable, with the reason.

use crate::common::{node_signatures, only, Builder, A, F16, F32, I8};
use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::patterns::Family;
use adanorm_onnx::rewrite::plan::plan_model;
use adanorm_onnx::rewrite::revert::revert;
use adanorm_onnx::rewrite::{Affine, Target};
use adanorm_onnx::runner::{compare, run};
use adanorm_tract::tract_onnx::prelude::Tensor;

const H: i64 = 16;

fn cast(b: &mut Builder, v: &str, to: i32) -> String {
    b.op("Cast", &[v], vec![("to", A::I(to as i64))])
}

fn mean(b: &mut Builder, v: &str) -> String {
    b.op("ReduceMean", &[v], vec![("axes", A::Is(vec![-1]))])
}

/// `op` computed in float32 on float16 operands, its result cast back to float16: what
/// `convert_float_to_float16(op_block_list=...)` writes around each blocked op.
fn island(b: &mut Builder, op: &str, operands: &[&str]) -> String {
    let wide: Vec<String> = operands.iter().map(|v| cast(b, v, F32)).collect();
    let refs: Vec<&str> = wide.iter().map(String::as_str).collect();
    let r = b.op(op, &refs, vec![]);
    cast(b, &r, F16)
}

/// A float16 LayerNorm with a float32 island around every op of the statistics (the mean, the
/// centring, the square, the variance, ε, the root, the division), the gain in float16 and the
/// bias in a float32 island of its own, as the converter writes it with a long block list.
fn float16_islands(bias_in_float32: bool) -> Builder {
    let mut b = Builder::new(14);
    let x = b.input("x", F16, &[2, 3, H]);
    let m = {
        let w = cast(&mut b, &x, F32);
        let r = mean(&mut b, &w);
        cast(&mut b, &r, F16)
    };
    let d = island(&mut b, "Sub", &[&x, &m]);
    let two = b.constant_typed(F16, &[], &[2.0]);
    let sq = island(&mut b, "Pow", &[&d, &two]);
    let v = {
        let w = cast(&mut b, &sq, F32);
        let r = mean(&mut b, &w);
        cast(&mut b, &r, F16)
    };
    let eps = b.constant_typed(F16, &[], &[1e-5]);
    let ve = island(&mut b, "Add", &[&v, &eps]);
    let s = island(&mut b, "Sqrt", &[&ve]);
    let y = island(&mut b, "Div", &[&d, &s]);
    let gain: Vec<f64> = (0..H).map(|i| 0.5 + i as f64 / 8.0).collect();
    let bias: Vec<f64> = (0..H).map(|i| i as f64 / 4.0 - 1.0).collect();
    let g = b.init_typed("gamma", F16, &[H], &gain);
    let scaled = b.op("Mul", &[&y, &g], vec![]);
    let out = if bias_in_float32 {
        let beta = b.init_typed("beta", F32, &[H], &bias);
        let w = cast(&mut b, &scaled, F32);
        let r = b.op("Add", &[&w, &beta], vec![]);
        cast(&mut b, &r, F16)
    } else {
        let beta = b.init_typed("beta", F16, &[H], &bias);
        b.op("Add", &[&scaled, &beta], vec![])
    };
    b.node_named("consumer", "Relu", &[&out], &["out"], vec![]);
    b.output("out", F16);
    b
}

/// Fuses `b`'s model, checks the fused one against the original in tract (within `tol`
/// scaled), reverts it and checks that every original node is back; returns the fused op types.
fn fuse_run_revert(b: &Builder, x_type: i32, tol: f64) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let original = b.save(dir.path(), "m.onnx");
    let model = load_model(&original).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let options = crate::common::rewrite_options(Target::Same, Affine::Keep, None, false);
    let outcome = plan_model(&g, &options).unwrap();
    let fused = dir.path().join("fused.onnx");
    save_model(&outcome.model, &fused, true).unwrap();
    let vals: Vec<f32> = (0..6 * H)
        .map(|i| ((i * 37 % 23) as f32) / 4.0 - 2.5)
        .collect();
    let x = Tensor::from_shape(&[2, 3, H as usize], &vals).unwrap();
    let x = if x_type == F16 {
        x.cast_to::<half::f16>().unwrap().into_owned()
    } else {
        x
    };
    let feeds = vec![("x".to_string(), x)];
    let want = run(&original, feeds.clone()).unwrap();
    let got = run(&fused, feeds).unwrap();
    for d in compare(&want, &got) {
        assert!(
            d.problem.is_none() && d.max_scaled <= tol,
            "fused output '{}' differs: {d:?}",
            d.output
        );
    }
    let fused_model = load_model(&fused).unwrap();
    let back = revert(&GraphIndex::build(&fused_model).unwrap(), None).unwrap();
    assert_eq!(
        node_signatures(&back.model),
        node_signatures(&model.proto),
        "revert restores every node"
    );
    outcome
        .model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type().to_string())
        .collect()
}

#[test]
fn a_float16_layernorm_in_float32_islands_is_one_rewritable_layernorm() {
    for bias_in_float32 in [false, true] {
        let b = float16_islands(bias_in_float32);
        let m = only(b.matches());
        assert!(
            m.rewritable && m.family == Family::LayerNorm,
            "bias in float32 {bias_in_float32}: {m:#?}"
        );
        assert_eq!(m.input, "x");
        assert_eq!(
            (m.scale.as_deref(), m.bias.as_deref()),
            (Some("gamma"), Some("beta"))
        );
        assert_eq!(m.dtype, Some(F16));
        // Every node but the Relu (the Constants too) belongs to the match.
        assert_eq!(m.nodes.len(), b.nodes.len() - 1, "{m:#?}");
        // float16 outputs: the fused node rounds once, the original after every op (ops-spec's
        // float16 tolerance).
        let ops = fuse_run_revert(&b, F16, 1e-2);
        assert!(
            ops.iter().filter(|o| *o == "LayerNormSimple").count() == 1,
            "{ops:?}"
        );
        assert_eq!(ops.last().map(String::as_str), Some("Relu"), "{ops:?}");
    }
}

/// A float32 LayerNorm whose value after `stage` goes through `round` (a float16 round trip, a
/// QDQ pair) before the next op reads it.
fn float32_ln_rounding(stage: &str, round: impl Fn(&mut Builder, &str) -> String) -> Builder {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let at = |b: &mut Builder, here: &str, v: String| {
        if here == stage {
            round(b, &v)
        } else {
            v
        }
    };
    let m = mean(&mut b, &x);
    let m = at(&mut b, "mean", m);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let two = b.constant(2.0);
    let sq = b.op("Pow", &[&d, &two], vec![]);
    let v = mean(&mut b, &sq);
    let v = at(&mut b, "variance", v);
    let eps = b.constant(1e-5);
    let ve = b.op("Add", &[&v, &eps], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let s = at(&mut b, "root", s);
    let y = b.op("Div", &[&d, &s], vec![]);
    let y = at(&mut b, "y", y);
    let gain: Vec<f32> = (0..H).map(|i| 0.5 + i as f32 / 8.0).collect();
    let g = b.init("gamma", &[H], &gain);
    let scaled = b.op("Mul", &[&y, &g], vec![]);
    let scaled = at(&mut b, "scaled", scaled);
    let beta: Vec<f32> = (0..H).map(|i| i as f32 / 4.0 - 1.0).collect();
    let beta = b.init("beta", &[H], &beta);
    let out = b.op("Add", &[&scaled, &beta], vec![]);
    let out = at(&mut b, "out", out);
    b.node_named("consumer", "Relu", &[&out], &["out"], vec![]);
    b.output("out", F32);
    b
}

fn through_float16(b: &mut Builder, v: &str) -> String {
    let h = cast(b, v, F16);
    cast(b, &h, F32)
}

fn qdq(b: &mut Builder, v: &str) -> String {
    let scale = b.constant(0.05);
    let zero = b.constant_typed(I8, &[], &[0.0]);
    let q = b.op("QuantizeLinear", &[v, &scale, &zero], vec![]);
    b.op("DequantizeLinear", &[&q, &scale, &zero], vec![])
}

#[test]
fn a_float32_layernorm_that_rounds_to_float16_inside_is_found_and_not_rewritten() {
    for stage in ["mean", "variance", "root", "y", "scaled"] {
        let m = only(float32_ln_rounding(stage, through_float16).matches());
        assert!(
            !m.rewritable && m.family == Family::LayerNorm,
            "{stage}: {m:#?}"
        );
        let reason = m.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("to float16 inside, narrower than its input's float32"),
            "{stage}: {reason}"
        );
    }
    // Rounded after its last op, the norm itself is exact: the round trip stays outside.
    let m = only(float32_ln_rounding("out", through_float16).matches());
    assert!(
        m.rewritable && m.scale.is_some() && m.bias.is_some(),
        "{m:#?}"
    );
}

#[test]
fn a_qdq_quantised_layernorm_is_found_and_reported_not_rewritable() {
    for stage in ["mean", "variance", "root", "y", "scaled"] {
        let b = float32_ln_rounding(stage, qdq);
        let m = only(b.matches());
        assert!(
            !m.rewritable && m.family == Family::LayerNorm && m.quantised,
            "{stage}: {m:#?}"
        );
        assert!(
            m.form_name().contains("quantised (QDQ"),
            "{stage}: {}",
            m.form_name()
        );
        let reason = m.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("QuantizeLinear → DequantizeLinear after")
                && reason.contains("would not round where the original does"),
            "{stage}: {reason}"
        );
        // fuse leaves it as it is.
        let dir = tempfile::tempdir().unwrap();
        let model = load_model(&b.save(dir.path(), "m.onnx")).unwrap();
        let g = GraphIndex::build(&model).unwrap();
        let options = crate::common::rewrite_options(Target::Same, Affine::Keep, None, false);
        let outcome = plan_model(&g, &options).unwrap();
        assert!(outcome.changes.is_empty(), "{stage}");
        assert_eq!(outcome.model.graph, model.proto.graph, "{stage}");
    }
    // Quantised after the norm only: the norm is exact and rewritten, the QDQ pair stays.
    let b = float32_ln_rounding("out", qdq);
    let m = only(b.matches());
    assert!(m.rewritable && !m.quantised, "{m:#?}");
    let ops = fuse_run_revert(&b, F32, 1e-5);
    assert_eq!(
        ops.iter().filter(|o| o.ends_with("uantizeLinear")).count(),
        2,
        "{ops:?}"
    );
}

/// A float32 norm's start as the static quantiser leaves it: the centred input `d` and the
/// variance `v` after a QDQ round trip; ε, the root and the rest are the caller's.
fn quantised_variance() -> (Builder, String, String) {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let m = mean(&mut b, &x);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let sq = b.op("Mul", &[&d, &d], vec![]);
    let v = mean(&mut b, &sq);
    let v = qdq(&mut b, &v);
    (b, d, v)
}

#[test]
fn epsilon_gain_and_bias_read_through_dequantize_linear() {
    // QDQ stores ε, γ and β as int8 constants behind DequantizeLinear: ε = (127 − (−128)) ·
    // 3.92e-15 as ONNX Runtime computes it in float32.
    let (mut b, d, v) = quantised_variance();
    let eps_q = b.init_typed("eps_q", I8, &[], &[127.0]);
    let eps_s = b.init("eps_scale", &[], &[3.921_568_6e-15]);
    let eps_z = b.init_typed("eps_zero", I8, &[], &[-128.0]);
    let eps = b.op("DequantizeLinear", &[&eps_q, &eps_s, &eps_z], vec![]);
    let ve = b.op("Add", &[&v, &eps], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let y = b.op("Div", &[&d, &s], vec![]);
    let gq: Vec<f64> = (0..H).map(|i| i as f64 - 8.0).collect();
    let gq = b.init_typed("gamma_q", I8, &[H], &gq);
    let g_s = b.init("gamma_scale", &[], &[0.01]);
    let g = b.op("DequantizeLinear", &[&gq, &g_s], vec![]);
    let scaled = b.op("Mul", &[&y, &g], vec![]);
    b.node_named("consumer", "Relu", &[&scaled], &["out"], vec![]);
    b.output("out", F32);
    let m = only(b.matches());
    assert!(m.quantised && !m.rewritable, "{m:#?}");
    let want = (255.0 * 3.921_568_6e-15_f32 as f64) as f32 as f64;
    assert_eq!(m.epsilon, want);
    assert_eq!(
        m.scale.as_deref(),
        Some(b.nodes[b.nodes.len() - 3].output[0].as_str())
    );
}

/// ONNX Runtime's static quantiser on an export whose ε is a `Constant` node (torch at opset 14)
/// writes ε as `DequantizeLinear(QuantizeLinear(Constant))`: the matcher folds both as ONNX
/// Runtime computes them (`x / scale` in float32, rounded half to even, plus the zero point,
/// saturated) and finds the norm, quantised. The same with an ε the quantiser's range cannot
/// hold saturates, and with no zero point the quantised value is uint8.
#[test]
fn epsilon_quantised_from_a_constant_node_folds_as_onnx_runtime_computes_it() {
    // (ε, scale, zero point (int8) or none (uint8), the ε ONNX Runtime reads back)
    let cases: [(f32, f32, Option<f64>, f64); 4] = [
        // 1e-5 / 3.92e-8 = 255.0 → 255 − 128 = 127 → (127 + 128) · scale.
        (
            1e-5,
            3.921_568_6e-8,
            Some(-128.0),
            (255.0 * 3.921_568_6e-8_f32) as f64,
        ),
        // 2.5 → 2 (half to even).
        (2.5, 1.0, Some(0.0), 2.0),
        // 1000 saturates at 127.
        (1000.0, 1.0, Some(0.0), 127.0),
        // uint8: 3.5 → 4 (half to even).
        (3.5, 1.0, None, 4.0),
    ];
    for (eps, scale, zero, want) in cases {
        let (mut b, d, v) = quantised_variance();
        let e = b.constant(eps);
        let s = b.constant(scale);
        let mut q_in = vec![e.clone(), s.clone()];
        if let Some(z) = zero {
            q_in.push(b.constant_typed(I8, &[], &[z]));
        }
        let q_refs: Vec<&str> = q_in.iter().map(String::as_str).collect();
        let q = b.op("QuantizeLinear", &q_refs, vec![]);
        let mut dq_in = vec![q.as_str(), s.as_str()];
        if zero.is_some() {
            dq_in.push(q_refs[2]);
        }
        let eps_dq = b.op("DequantizeLinear", &dq_in, vec![]);
        let ve = b.op("Add", &[&v, &eps_dq], vec![]);
        let root = b.op("Sqrt", &[&ve], vec![]);
        let y = b.op("Div", &[&d, &root], vec![]);
        b.node_named("consumer", "Relu", &[&y], &["out"], vec![]);
        b.output("out", F32);
        let m = only(b.matches());
        assert!(m.quantised && !m.rewritable, "ε {eps}: {m:#?}");
        assert_eq!(m.epsilon, want as f32 as f64, "ε {eps}");
    }
}
