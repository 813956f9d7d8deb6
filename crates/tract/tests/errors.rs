//! Every error of the spec's list, and the loader's own, names the node (or input) and the rule.

mod common;

use adanorm_tract::tract_onnx::prelude::*;
use common::*;
use tract_onnx::pb::{AttributeProto, ModelProto, TensorProto};

/// One node `ln1` of `op_type` in `domain` reading X (f32, `x_shape`), with `attributes`.
fn one_node(
    op_type: &str,
    domain: &str,
    x_shape: &[usize],
    attributes: Vec<AttributeProto>,
) -> ModelProto {
    let mut n = node(op_type, domain, &["X"], &["Y"], attributes);
    n.name = "ln1".into();
    model(
        graph(
            vec![n],
            vec![value_info("X", FLOAT, Some(&dims(x_shape)))],
            vec![value_info("Y", FLOAT, None)],
            vec![],
        ),
        17,
    )
}

/// The full error chain of loading and optimising `model`.
fn load_error(model: &ModelProto) -> String {
    let path = save(model);
    let result = adanorm_tract::model_for_path(&path).and_then(|m| m.into_optimized());
    match result {
        Ok(_) => panic!("the model loaded without error"),
        Err(e) => format!("{e:?}"),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{part:?} not in:\n{message}");
    }
}

#[test]
fn op_in_another_domain_is_refused() {
    let e = load_error(&one_node("AdaNorm", "com.example", &[2, 8], vec![]));
    assert_mentions(&e, &["\"ln1\"", "com.example", "ai.adanorm"]);
    let e = load_error(&one_node("LayerNormSimple", "", &[2, 8], vec![]));
    assert_mentions(&e, &["\"ln1\"", "LayerNormSimple", "ai.adanorm"]);
}

#[test]
fn unknown_op_in_the_domain_is_refused() {
    // tract would otherwise run its own Relu: it looks ops up by op_type alone.
    let e = load_error(&one_node("Relu", "ai.adanorm", &[2, 8], vec![]));
    assert_mentions(&e, &["\"ln1\"", "has no op \"Relu\""]);
}

#[test]
fn bad_attribute_values_are_refused() {
    let cases: Vec<(AttributeProto, &str)> = vec![
        (
            attr_i("unbiased", 2),
            "unbiased and eps_in_sqrt must be 0 or 1: unbiased = 2",
        ),
        (
            attr_i("eps_in_sqrt", -1),
            "unbiased and eps_in_sqrt must be 0 or 1: eps_in_sqrt = -1",
        ),
        (attr_f("epsilon", -1e-3), "epsilon must be >= 0"),
        (
            attr_f("epsilon", f32::NAN),
            "c, k and epsilon must be finite: epsilon = NaN",
        ),
        (
            attr_f("k", f32::INFINITY),
            "c, k and epsilon must be finite: k = inf",
        ),
        (
            attr_f("c", f32::NEG_INFINITY),
            "c, k and epsilon must be finite: c = -inf",
        ),
    ];
    for (attribute, rule) in cases {
        let e = load_error(&one_node("AdaNorm", "ai.adanorm", &[2, 8], vec![attribute]));
        assert_mentions(&e, &["\"ln1\"", "AdaNorm", rule]);
    }
    let e = load_error(&one_node(
        "LayerNormSimple",
        "ai.adanorm",
        &[2, 8],
        vec![attr_i("unbiased", 2)],
    ));
    assert_mentions(&e, &["\"ln1\"", "LayerNormSimple", "unbiased = 2"]);
}

#[test]
fn axis_outside_the_rank_is_refused() {
    for axis in [2, -3, 100] {
        let e = load_error(&one_node(
            "AdaNorm",
            "ai.adanorm",
            &[2, 8],
            vec![attr_i("axis", axis)],
        ));
        assert_mentions(
            &e,
            &[
                "\"ln1\"",
                &format!("axis must be in [-r, r): axis = {axis} for rank 2"),
            ],
        );
    }
}

#[test]
fn rank_0_is_refused() {
    let e = load_error(&one_node("LayerNormSimple", "ai.adanorm", &[], vec![]));
    assert_mentions(&e, &["\"ln1\"", "X must have rank >= 1"]);
}

fn with_scale(x_shape: &[usize], scale: TensorProto) -> ModelProto {
    let mut m = one_node("AdaNorm", "ai.adanorm", x_shape, vec![]);
    let g = m.graph.as_mut().unwrap();
    g.node[0].input.push("S".into());
    g.initializer.push(scale);
    m
}

#[test]
fn scale_that_does_not_broadcast_is_refused() {
    let e = load_error(&with_scale(&[2, 8], tensor_f32("S", &[5], &[1.0; 5])));
    assert_mentions(&e, &["\"ln1\"", "broadcastable", "Scale has shape [5]"]);
    let e = load_error(&with_scale(&[2, 8], tensor_f32("S", &[2, 8], &[1.0; 16])));
    assert_mentions(&e, &["\"ln1\"", "Scale has shape [2, 8]"]);
}

#[test]
fn mixed_and_unsupported_types_are_refused() {
    let e = load_error(&with_scale(&[2, 8], tensor_f64("S", &[8], &[1.0; 8])));
    assert_mentions(
        &e,
        &[
            "\"ln1\"",
            "must share one type",
            "X is F32 but Scale is F64",
        ],
    );

    let mut ints = one_node("AdaNorm", "ai.adanorm", &[2, 8], vec![]);
    ints.graph.as_mut().unwrap().input[0] = value_info("X", INT64, Some(&dims(&[2, 8])));
    let e = load_error(&ints);
    assert_mentions(&e, &["\"ln1\"", "must share one type", "X is I64"]);

    let mut bf16 = one_node("AdaNorm", "ai.adanorm", &[2, 8], vec![]);
    bf16.graph.as_mut().unwrap().input[0] = value_info("X", BFLOAT16, Some(&dims(&[2, 8])));
    let e = load_error(&bf16);
    assert_mentions(&e, &["\"ln1\"", "\"X\" is bfloat16"]);
}

#[test]
fn another_version_of_the_domain_is_refused() {
    let mut m = one_node("AdaNorm", "ai.adanorm", &[2, 8], vec![]);
    m.opset_import[1].version = 3;
    let e = load_error(&m);
    assert_mentions(&e, &["\"ln1\"", "version 3"]);
}

#[test]
fn scale_mismatch_known_only_at_run_time_fails_in_eval() {
    // X [N, D] and Scale [E] are both symbolic, so the shapes can only be compared when run.
    let mut n = node("AdaNorm", "ai.adanorm", &["X", "S"], &["Y"], vec![]);
    n.name = "ln1".into();
    let m = model(
        graph(
            vec![n],
            vec![
                value_info("X", FLOAT, Some(&[Dim::S("N"), Dim::S("D")])),
                value_info("S", FLOAT, Some(&[Dim::S("E")])),
            ],
            vec![value_info("Y", FLOAT, None)],
            vec![],
        ),
        17,
    );
    let path = save(&m);
    let plan = adanorm_tract::model_for_path(&path)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let x = Tensor::from_shape(&[2, 8], &[1.0f32; 16]).unwrap();
    let s = Tensor::from_shape(&[5], &[1.0f32; 5]).unwrap();
    let e = format!(
        "{:?}",
        plan.run(tvec![x.into_tvalue(), s.into_tvalue()])
            .unwrap_err()
    );
    assert_mentions(
        &e,
        &["\"ln1\"", "Scale has shape [5], X.shape[axis:] is [8]"],
    );
}

#[test]
fn run_model_names_missing_and_unknown_inputs() {
    let path = save(&one_node("AdaNorm", "ai.adanorm", &[2, 8], vec![]));
    let x = || Tensor::from_shape(&[2, 8], &[1.0f32; 16]).unwrap();
    let e = format!("{:?}", adanorm_tract::run_model(&path, vec![]).unwrap_err());
    assert_mentions(&e, &["no value given for the model input \"X\""]);
    let e = format!(
        "{:?}",
        adanorm_tract::run_model(&path, vec![("X".into(), x()), ("Z".into(), x())]).unwrap_err()
    );
    assert_mentions(&e, &["no input \"Z\"", "[\"X\"]"]);
    let e = format!(
        "{:?}",
        adanorm_tract::run_model(&path, vec![("X".into(), x()), ("X".into(), x())]).unwrap_err()
    );
    assert_mentions(&e, &["\"X\" is given twice"]);
}

/// `ln1` with X [2, 8] and a run-time `Skip` of `skip_shape` in input slot 3.
fn with_skip(skip_shape: &[usize], version: i64) -> ModelProto {
    let mut m = one_node("AdaNorm", "ai.adanorm", &[2, 8], vec![]);
    m.opset_import[1].version = version;
    let g = m.graph.as_mut().unwrap();
    g.node[0].input = vec!["X".into(), String::new(), String::new(), "K".into()];
    g.input
        .push(value_info("K", FLOAT, Some(&dims(skip_shape))));
    m
}

#[test]
fn residual_slots_under_version_1_are_refused() {
    let e = load_error(&with_skip(&[2, 8], 1));
    assert_mentions(
        &e,
        &[
            "\"ln1\"",
            "Skip, Bias and Sum need ai.adanorm version 2",
            "version 1",
        ],
    );
    // A Sum output alone is a version-2 slot too.
    let mut m = one_node("LayerNormSimple", "ai.adanorm", &[2, 8], vec![]);
    m.graph.as_mut().unwrap().node[0].output =
        vec!["Y".into(), String::new(), String::new(), "Sum".into()];
    let e = load_error(&m);
    assert_mentions(&e, &["\"ln1\"", "need ai.adanorm version 2"]);
    // Empty names in those slots use nothing: version 1 runs the node.
    let mut m = one_node("AdaNorm", "ai.adanorm", &[2, 8], vec![]);
    m.graph.as_mut().unwrap().node[0].input =
        vec!["X".into(), String::new(), String::new(), String::new()];
    let path = save(&m);
    adanorm_tract::model_for_path(&path)
        .and_then(|m| m.into_optimized())
        .expect("empty version-2 slots are absent");
}

#[test]
fn skip_or_bias_that_does_not_broadcast_is_refused() {
    let e = load_error(&with_skip(&[3, 8], 2));
    assert_mentions(
        &e,
        &[
            "\"ln1\"",
            "Skip must be unidirectionally broadcastable to X",
            "[3, 8]",
        ],
    );
    let mut m = with_skip(&[2, 8], 2);
    let g = m.graph.as_mut().unwrap();
    g.node[0].input.push("RB".into());
    g.initializer.push(tensor_f32("RB", &[4], &[1.0; 4]));
    let e = load_error(&m);
    assert_mentions(&e, &["\"ln1\"", "Bias has shape [4]"]);
    let mut m = with_skip(&[2, 8], 2);
    m.graph.as_mut().unwrap().input[1] = value_info("K", FLOAT16, Some(&dims(&[2, 8])));
    let e = load_error(&m);
    assert_mentions(&e, &["\"ln1\"", "X is F32 but Skip is F16"]);
}
