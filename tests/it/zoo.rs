//! Every real exporter model in fixtures/zoo is inspected against its ground-truth counts per
//! family, and the parameters each family must carry are checked.

use std::path::{Path, PathBuf};

use adanorm_onnx::graph::{GraphIndex, NodeId};
use adanorm_onnx::onnx::load_model;
use adanorm_onnx::patterns::{find_matches, summary, Family, Match};

fn zoo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/zoo")
}

fn inspect(name: &str) -> Vec<Match> {
    let model = load_model(&zoo().join(name).join("model.onnx")).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    find_matches(&g)
}

#[test]
fn every_zoo_model_matches_its_ground_truth_exactly() {
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(zoo().join("ground_truth.json")).unwrap())
            .unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(zoo()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("model.onnx").exists() {
            continue;
        }
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let expected = truth
            .get(&name)
            .unwrap_or_else(|| panic!("{name} has no ground truth"));
        let found = summary(&inspect(&name));
        for (family, n) in found {
            let want = expected
                .get(family.name())
                .and_then(|v| v.as_u64())
                .unwrap_or(0) as usize;
            assert_eq!(n, want, "{name}: {} matches", family.name());
        }
        checked += 1;
    }
    assert_eq!(checked, 57, "all zoo models were inspected");
}

fn all(ms: &[Match], pred: impl Fn(&Match) -> bool) -> bool {
    !ms.is_empty() && ms.iter().all(pred)
}

#[test]
fn layernorm_models_are_rewritable_with_their_weights() {
    for name in [
        "bert_legacy_op14",
        "bert_legacy_op17",
        "bert_dynamo_default",
        "gpt2_legacy_op14",
        "keras_tf2onnx_op13",
    ] {
        let ms = inspect(name);
        assert!(
            all(&ms, |m| m.rewritable
                && m.axis == Some(-1)
                && m.scale.is_some()
                && m.bias.is_some()
                && !m.unbiased
                && m.eps_in_sqrt),
            "{name}: {ms:#?}"
        );
    }
}

#[test]
fn bert_decomposed_epsilon_is_as_stored() {
    let ms = inspect("bert_legacy_op14");
    assert!(all(&ms, |m| m.epsilon == 1e-12f32 as f64 && m.dtype == Some(1)));
}

#[test]
fn fp16_model_reports_float16_and_its_float64_epsilon() {
    let ms = inspect("bert_legacy_op14_fp16half");
    assert!(
        all(&ms, |m| m.dtype == Some(10)
            && m.epsilon == 1e-12
            && m.rewritable),
        "{ms:#?}"
    );
    // The output is after the Cast back to float16 and the affine.
    assert!(
        ms.iter()
            .all(|m| m.output.ends_with("LayerNorm/Add_1_output_0")
                || m.output == "last_hidden_state")
    );
}

#[test]
fn adanorm_module_parameters() {
    let ms = inspect("adanorm_legacy_op14");
    assert!(all(&ms, |m| m.family == Family::AdaNorm
        && m.k == 0.1f32 as f64
        && m.c == 1.0
        && m.unbiased
        && !m.eps_in_sqrt
        && m.epsilon == 1e-5f32 as f64
        && m.rewritable));
    // The whole exported module: 28 nodes including its Shape/Gather/ReduceProd chain.
    assert!(ms.iter().all(|m| m.nodes.len() == 28));
}

/// The dynamo exporter with dynamic batch and sequence: the unbiased variance is reduced
/// without keepdims and given its dimensions back by a shape-computed Reshape and an Expand.
#[test]
fn dynamo_adanorm_modules_with_dynamic_shapes() {
    for (name, c, k, eps, dtype) in [
        ("adanorm_dynamo_op18", 2.0, 0.1f32 as f64, 1e-5f32 as f64, 1),
        (
            "adanorm_dynamo_op18_c1",
            1.0,
            0.1f32 as f64,
            1e-5f32 as f64,
            1,
        ),
        // float16 constants: k and eps as the fp16 graph holds them.
        (
            "adanorm_dynamo_op18_fp16",
            2.0,
            0.0999755859375,
            1.0013580322265625e-5,
            10,
        ),
    ] {
        let ms = inspect(name);
        assert!(
            all(&ms, |m| m.family == Family::AdaNorm
                && m.c == c
                && m.k == k
                && m.epsilon == eps
                && m.dtype == Some(dtype)
                && m.unbiased
                && !m.eps_in_sqrt
                && m.axis == Some(-1)
                && m.rewritable),
            "{name}: {ms:#?}"
        );
    }
}

/// AdaNorm as the paper writes it (a LayerNorm without affine, then `C·(1 − k·y)·y`) from
/// the TorchScript exporter (decomposed, and fused `LayerNormalization` at opset 17), the dynamo
/// exporter and jax2onnx: one AdaNorm per module with the module's own `C` and `k`, the
/// biased variance under the root.
#[test]
fn paper_form_adanorm_from_three_exporters() {
    for name in [
        "paperform_legacy_op14",
        "paperform_legacy_op17",
        "paperform_dynamo_op18",
        "paperform_jnp_jax2onnx_op18",
    ] {
        let ms = inspect(name);
        let cs: Vec<f64> = ms.iter().map(|m| m.c).collect();
        assert_eq!(cs, [2.0, 1.0, 1.5, 1.0], "{name}");
        assert!(
            all(&ms, |m| m.family == Family::AdaNorm
                && m.form_name().contains("paper's AdaNorm")
                && (m.k - 0.1).abs() < 1e-8
                && !m.unbiased
                && m.eps_in_sqrt
                && m.epsilon == 1e-5f32 as f64
                && m.scale.is_none()
                && m.bias.is_none()
                && m.rewritable),
            "{name}: {ms:#?}"
        );
    }
}

/// The TorchScript exporter in float16: the Bessel factor's `N` goes through float to float16
/// and `N - 1` is computed in float and cast back.
#[test]
fn legacy_fp16_paper_modules() {
    let ms = inspect("paper_legacy_op14_fp16");
    let kinds: Vec<(Family, f64, f64)> = ms.iter().map(|m| (m.family, m.c, m.k)).collect();
    let ada = (Family::AdaNorm, 2.0, 0.0999755859375);
    let simple = (Family::LnSimple, 1.0, 0.0);
    assert_eq!(kinds, [ada, simple, ada, simple]);
    assert!(all(&ms, |m| m.unbiased
        && !m.eps_in_sqrt
        && m.dtype == Some(10)
        && m.epsilon == 1.0013580322265625e-5
        && m.rewritable));
}

/// Keras 3 mixed precision: the LayerNorm runs in float32 between a cast of its float16 input
/// and a cast back after the float32 affine. The match starts after the first cast, so the
/// op runs in float32 with the float32 gain and bias, exactly as before.
#[test]
fn keras_mixed_precision_layernorm_runs_in_float32() {
    let ms = inspect("keras3_mixed_fp16_tf2onnx_op13");
    assert!(all(&ms, |m| m.family == Family::LayerNorm
        && m.dtype == Some(1)
        && m.scale.is_some()
        && m.bias.is_some()
        && m.rewritable));
    assert!(ms.iter().all(|m| m.input.ends_with("/Cast:0")), "{ms:#?}");
}

#[test]
fn dynamo_layernorm_variants() {
    let ms = inspect("lnvariants_dynamo_op18");
    // Fused LayerNormalization for the nn.LayerNorm ones (no affine: a constant gain of ones and
    // no bias; gain only; two axes), the hand-written rsqrt LayerNorm decomposed with its gain
    // and bias.
    let shape: Vec<(bool, bool, Option<i64>, bool)> = ms
        .iter()
        .map(|m| {
            (
                m.scale.is_some(),
                m.bias.is_some(),
                m.axis,
                m.form_name().contains("decomposed"),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (true, false, Some(-1), false),
            (true, false, Some(-1), false),
            (true, true, Some(-2), false),
            (true, true, Some(-1), true)
        ],
        "{ms:#?}"
    );
}

#[test]
fn lnsimple_module_parameters() {
    for name in ["lnsimple_legacy_op14", "lnsimple_dynamo_op18"] {
        let ms = inspect(name);
        assert!(
            all(&ms, |m| m.family == Family::LnSimple
                && m.unbiased
                && !m.eps_in_sqrt
                && m.scale.is_none()
                && m.rewritable),
            "{name}"
        );
    }
}

#[test]
fn lnvariants_affine_shapes() {
    let ms = inspect("lnvariants_legacy_op14");
    let shape: Vec<(bool, bool, Option<i64>)> = ms
        .iter()
        .map(|m| (m.scale.is_some(), m.bias.is_some(), m.axis))
        .collect();
    assert_eq!(
        shape,
        [
            (false, false, Some(-1)),
            (true, false, Some(-1)),
            (true, true, Some(-2))
        ]
    );
}

#[test]
fn channels_first_convnext_is_axis_1_only_and_rewritable() {
    let ms = inspect("convnext_cf_legacy_op14");
    assert!(all(&ms, |m| m.axes == [1]
        && m.axis.is_none()
        && m.channels_first
        && m.rewritable
        && m.scale.is_some()
        && m.bias.is_some()));
    // HF ConvNeXt wraps its channels-first LayerNorm in Transposes: those are ordinary trailing ones.
    let ms = inspect("convnext_legacy_op14");
    assert!(all(&ms, |m| m.axis == Some(-1) && m.rewritable));
}

#[test]
fn t5_rmsnorm_is_never_layernorm() {
    let ms = inspect("t5_legacy_op14");
    assert!(all(&ms, |m| m.family == Family::RmsNorm
        && m.scale.is_some()
        && !m.rewritable));
}

/// Keras 3's RMSNormalization through its own ONNX export: the gain multiplied into the inverse
/// root before `x`; each norm with its gain and its epsilon, reported and never rewritten.
#[test]
fn keras_rmsnorm_through_tf2onnx() {
    let ms = inspect("keras_rmsnorm_tf2onnx_op13");
    let eps: Vec<f64> = ms.iter().map(|m| m.epsilon).collect();
    assert_eq!(eps, [1e-6f32 as f64, 1e-5f32 as f64, 1e-4f32 as f64]);
    assert!(all(&ms, |m| m.family == Family::RmsNorm
        && m.scale.is_some()
        && !m.rewritable));
}

/// JAX through jax2onnx: the guards and the folded divisors are read, each norm's parameters
/// come out as the source wrote them, and every node of the guard belongs to the match.
#[test]
fn jax2onnx_norms_and_their_parameters() {
    // Flax's fast variance clamps E[x²]−E[x]² at zero; the slow one sums squares itself.
    for (name, form) in [
        ("flax_linen_fastvar_jax2onnx_op18", "E[x²]−E[x]²"),
        ("flax_linen_slowvar_jax2onnx_op18", "decomposed"),
        ("flax_nnx_fp16_jax2onnx_op18", "E[x²]−E[x]²"),
    ] {
        let ms = inspect(name);
        assert!(
            all(&ms, |m| m.family == Family::LayerNorm
                && m.form_name().contains(form)
                && !m.unbiased
                && m.eps_in_sqrt
                && m.epsilon == 1e-6f32 as f64
                && m.scale.is_some()
                && m.bias.is_some()
                && m.rewritable),
            "{name}: {ms:#?}"
        );
    }
    // jnp.var (ddof 0), jnp.std (ddof 1) and the paper's AdaNorm, each behind
    // Where(Greater(N - ddof, 0), var, NaN).
    let ms = inspect("paper_jnp_jax2onnx_op18");
    let found: Vec<(Family, bool, bool)> = ms
        .iter()
        .map(|m| (m.family, m.unbiased, m.eps_in_sqrt))
        .collect();
    assert_eq!(
        found,
        [
            (Family::LayerNorm, false, true),
            (Family::LnSimple, true, false),
            (Family::AdaNorm, true, false)
        ],
        "{ms:#?}"
    );
    let ada = &ms[2];
    assert!(
        ada.c == 2.0 && ada.k == 0.1f32 as f64 && ada.rewritable,
        "{ada:#?}"
    );
    // The model holds one Where per norm; each is inside its match.
    let m = load_model(&zoo().join("paper_jnp_jax2onnx_op18/model.onnx")).unwrap();
    let g = GraphIndex::build(&m).unwrap();
    let wheres: Vec<NodeId> = (0..m.graph().node.len())
        .filter(|&i| g.node(i).op_type() == "Where")
        .collect();
    assert_eq!(wheres.len(), 3);
    assert!(wheres
        .iter()
        .all(|w| ms.iter().any(|m| m.nodes.contains(w))));
}

/// paddle2onnx: Identity after almost every op (fp32), and its float16 converter computing each
/// ReduceMean in float32 between Casts: the casts belong to the match, whose input is the
/// float16 activation.
#[test]
fn paddle2onnx_layernorms() {
    for (name, dtype) in [
        ("paddle_preln_paddle2onnx_op13", 1),
        ("paddle_postln_fp16_paddle2onnx_op13", 10),
    ] {
        let ms = inspect(name);
        assert!(
            all(&ms, |m| m.family == Family::LayerNorm
                && !m.unbiased
                && m.eps_in_sqrt
                && m.scale.is_some()
                && m.bias.is_some()
                && m.dtype == Some(dtype)
                && m.rewritable),
            "{name}: {ms:#?}"
        );
    }
    // Hand-written: the scale op's neutral Mul(., 1)/Add(., 0) are no parameters, C and k are
    // the module's, N = Size(x)/Size(sum) and Max(N - 1, 0) fold with the static shape.
    let ms = inspect("paper_paddle_paddle2onnx_op13");
    let found: Vec<_> = ms
        .iter()
        .map(|m| {
            (
                m.family,
                m.unbiased,
                m.scale.is_some(),
                m.bias.is_some(),
                m.c,
                m.rewritable,
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (Family::AdaNorm, true, false, false, 2.0, true),
            (Family::LnSimple, true, false, false, 1.0, true),
            (Family::LayerNorm, false, true, true, 1.0, true)
        ],
        "{ms:#?}"
    );
    assert_eq!(ms[0].k, 0.1f32 as f64);
}

#[test]
fn float16_models_with_float32_islands_around_each_op() {
    // onnxconverter-common's convert_float_to_float16 with a block list (fixtures/zoo/
    // make_fp16_qdq.py): Casts between nearly every op of the chain. ε is the converter's clamp
    // of 1e-12 to its min_positive_val 1e-7, stored as float16.
    for (name, bias_type) in [
        ("bert_fp16_islands_legacy_op14", 1),
        ("bert_fp16_islands_small_legacy_op14", 10),
    ] {
        let model = load_model(&zoo().join(name).join("model.onnx")).unwrap();
        let g = GraphIndex::build(&model).unwrap();
        let ms = find_matches(&g);
        assert_eq!(ms.len(), 5, "{name}");
        for m in &ms {
            assert!(
                m.rewritable && m.family == Family::LayerNorm,
                "{name}: {m:#?}"
            );
            assert_eq!(m.dtype, Some(10), "{name}: float16 input");
            assert_eq!(m.epsilon, 1.1920928955078125e-07, "{name}");
            assert_eq!(g.elem_type(m.scale.as_deref().unwrap()), Some(10), "{name}");
            assert_eq!(
                g.elem_type(m.bias.as_deref().unwrap()),
                Some(bias_type),
                "{name}"
            );
        }
    }
}

#[test]
fn qdq_quantised_layernorms_are_found_and_not_rewritable() {
    // quantize_static in QDQ format rounds the variance, var + ε, the division and the gain's
    // product to int8; ε, γ and β are DequantizeLinear of int8 constants.
    let ms = inspect("bert_qdq_static_legacy_op14");
    assert_eq!(ms.len(), 5);
    for m in &ms {
        assert!(
            !m.rewritable && m.quantised && m.family == Family::LayerNorm,
            "{m:#?}"
        );
        assert!(m.form_name().contains("quantised"), "{}", m.form_name());
        assert!((m.epsilon - 1e-12).abs() < 1e-15, "{}", m.epsilon);
        assert!(m
            .scale
            .as_deref()
            .is_some_and(|s| s.ends_with("DequantizeLinear_Output")));
        assert!(m
            .bias
            .as_deref()
            .is_some_and(|s| s.ends_with("DequantizeLinear_Output")));
        let reason = m.reason.as_deref().unwrap();
        assert_eq!(reason.matches("_QuantizeLinear").count(), 0, "{reason}");
        assert_eq!(
            reason.matches("_output_0'").count(),
            4,
            "four roundings inside: {reason}"
        );
    }
    // Quantised without quant_pre_process: ε is DequantizeLinear(QuantizeLinear(Constant)),
    // 1e-12 rounded to int8 on the quantiser's scale and read back.
    let ms = inspect("bert_qdq_static_noprep_legacy_op14");
    assert_eq!(ms.len(), 5);
    for m in &ms {
        assert!(!m.rewritable && m.quantised, "{m:#?}");
        assert!((m.epsilon - 1e-12).abs() < 1e-14, "{}", m.epsilon);
    }
    // QDQ around a fused LayerNormalization, and dynamic quantisation (DynamicQuantizeLinear
    // after the norm): the norms themselves are exact and rewritable.
    for name in ["bert_qdq_static_legacy_op17", "bert_qdynamic_legacy_op14"] {
        let ms = inspect(name);
        assert!(
            ms.len() == 5 && all(&ms, |m| m.rewritable && !m.quantised && m.scale.is_some()),
            "{name}: {ms:#?}"
        );
    }
}

#[test]
fn ir_version_3_legacy_exports_read_their_initializer_inputs_as_constants() {
    // torch's legacy exporter at opsets 7 and 8 writes IR 3 and lists every initializer as a
    // graph input (fixtures/zoo/export_ir3.py): there they are the model's constants.
    for name in ["bert_legacy_op7_ir3", "bert_legacy_op8_ir3"] {
        let model = load_model(&zoo().join(name).join("model.onnx")).unwrap();
        assert_eq!(model.proto.ir_version, Some(3), "{name}");
        let graph = model.graph();
        let inputs: Vec<&str> = graph.input.iter().map(|i| i.name()).collect();
        assert!(
            graph.initializer.iter().all(|t| inputs.contains(&t.name())),
            "{name}"
        );
        let ms = inspect(name);
        assert_eq!(ms.len(), 5, "{name}");
        assert!(
            all(&ms, |m| m.rewritable && m.epsilon == 1e-12f32 as f64),
            "{name}: {ms:#?}"
        );
        // Four with gain and bias, one without (elementwise_affine=False).
        let affine = ms
            .iter()
            .filter(|m| m.scale.is_some() && m.bias.is_some())
            .count();
        let bare = ms
            .iter()
            .filter(|m| m.scale.is_none() && m.bias.is_none())
            .count();
        assert_eq!((affine, bare), (4, 1), "{name}");
    }
}

#[test]
fn deberta_normalises_its_relative_position_table_read_as_the_input() {
    // DeBERTa-v2's encoder LayerNorm reads the stored relative-embedding table itself.
    let ms = inspect("deberta_v2_legacy_op14");
    assert_eq!(ms.len(), 6);
    assert!(ms.iter().all(|m| m.rewritable), "{ms:#?}");
    let table: Vec<&Match> = ms
        .iter()
        .filter(|m| m.input.ends_with("rel_embeddings.weight"))
        .collect();
    assert_eq!(table.len(), 1, "{ms:#?}");
}
