//! The ops inside tract's pipeline: symbolic shapes, `into_optimized` keeping them, ops between
//! standard ones, and in-place evaluation.

mod common;

use adanorm_kernels::{reference, Params, Variant};
use adanorm_tract::tract_onnx::prelude::*;
use common::*;

const ADA: Variant = Variant::AdaNorm { c: 2.0, k: 0.125 };

fn ada_attributes() -> Vec<tract_onnx::pb::AttributeProto> {
    vec![attr_f("c", 2.0), attr_f("k", 0.125), attr_i("unbiased", 1)]
}

fn ada_params() -> Params {
    Params::from_attributes(ADA, 1e-5f32 as f64, 1, 1).unwrap()
}

fn simple_params() -> Params {
    Params::from_attributes(Variant::LayerNormSimple, 1e-5f32 as f64, 0, 1).unwrap()
}

/// X [N, T, 16] → AdaNorm → Relu → LayerNormSimple (with Mean) → Y, Mean.
fn chain_model() -> tract_onnx::pb::ModelProto {
    let x_dims = [Dim::S("N"), Dim::S("T"), Dim::N(16)];
    model(
        graph(
            vec![
                node("AdaNorm", "ai.adanorm", &["X"], &["A"], ada_attributes()),
                node("Relu", "", &["A"], &["R"], vec![]),
                node(
                    "LayerNormSimple",
                    "ai.adanorm",
                    &["R", "S"],
                    &["Y", "Mean"],
                    vec![],
                ),
            ],
            vec![value_info("X", FLOAT, Some(&x_dims))],
            vec![
                value_info("Y", FLOAT, None),
                value_info("Mean", FLOAT, None),
            ],
            vec![tensor_f32("S", &[16], &[0.5; 16])],
        ),
        17,
    )
}

fn expected_chain(x: &[f64], shape: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let a = reference(x, shape, -1, None, None, &ada_params())
        .unwrap()
        .y;
    // A is stored as f32 before Relu reads it.
    let r: Vec<f64> = a.iter().map(|&v| (v as f32 as f64).max(0.0)).collect();
    let out = reference(
        &r,
        shape,
        -1,
        Some((&[0.5; 16], &[16])),
        None,
        &simple_params(),
    )
    .unwrap();
    (out.y, out.mean)
}

#[test]
fn symbolic_shapes_survive_optimisation_and_run_for_several_sizes() {
    let path = save(&chain_model());
    let optimized = adanorm_tract::model_for_path(&path)
        .unwrap()
        .into_optimized()
        .unwrap();
    let ops: Vec<String> = optimized
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect();
    assert!(ops.contains(&"AdaNorm".to_string()), "{ops:?}");
    assert!(ops.contains(&"LayerNormSimple".to_string()), "{ops:?}");
    // Mean keeps the symbolic batch dimensions: [N, T, 1].
    let mean = optimized.output_fact(1).unwrap();
    assert_eq!(format!("{:?}", mean.shape), "N,T,1");

    let plan = optimized.into_runnable().unwrap();
    for (seed, shape) in [(1, [2usize, 3, 16]), (2, [1, 5, 16])] {
        let x = rounded(FLOAT, &values(shape.iter().product(), seed));
        let outputs = plan
            .run(tvec![tract_tensor(FLOAT, &shape, &x).into_tvalue()])
            .unwrap();
        let (y, mean) = expected_chain(&x, &shape);
        assert_eq!(outputs[0].shape(), shape);
        assert_eq!(outputs[1].shape(), [shape[0], shape[1], 1]);
        assert_close("Y", &as_f64(&outputs[0]), &y, 1e-5);
        assert_close("Mean", &as_f64(&outputs[1]), &mean, 1e-5);
    }
}

#[test]
fn every_stage_keeps_the_ops() {
    let path = save(&chain_model());
    let model = adanorm_tract::model_for_path(&path).unwrap();
    let typed = model.into_typed().unwrap();
    let decluttered = typed.clone().into_decluttered().unwrap();
    for (stage, m) in [("typed", &typed), ("decluttered", &decluttered)] {
        let ops: Vec<String> = m.nodes().iter().map(|n| n.op.name().to_string()).collect();
        assert!(ops.contains(&"AdaNorm".to_string()), "{stage}: {ops:?}");
        assert!(
            ops.contains(&"LayerNormSimple".to_string()),
            "{stage}: {ops:?}"
        );
    }
}

/// A plan running one AdaNorm node on f32 [4, 64].
fn single_node_plan() -> std::sync::Arc<TypedRunnableModel> {
    let model = model(
        graph(
            vec![node(
                "AdaNorm",
                "ai.adanorm",
                &["X"],
                &["Y"],
                ada_attributes(),
            )],
            vec![value_info("X", FLOAT, Some(&dims(&[4, 64])))],
            vec![value_info("Y", FLOAT, None)],
            vec![],
        ),
        17,
    );
    let path = save(&model);
    adanorm_tract::model_for_path(&path)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap()
}

fn ptr(t: &Tensor) -> *const f32 {
    t.as_ptr::<f32>().unwrap()
}

#[test]
fn exclusive_input_is_normalised_in_its_own_buffer() {
    let plan = single_node_plan();
    let x = rounded(FLOAT, &values(256, 7));
    let input = tract_tensor(FLOAT, &[4, 64], &x);
    let input_ptr = ptr(&input);
    let outputs = plan.run(tvec![input.into_tvalue()]).unwrap();
    assert_eq!(
        ptr(&outputs[0]),
        input_ptr,
        "the output should reuse the input's buffer"
    );
    let want = reference(&x, &[4, 64], -1, None, None, &ada_params()).unwrap();
    assert_close("Y", &as_f64(&outputs[0]), &want.y, 1e-5);
}

#[test]
fn shared_input_is_left_untouched() {
    let plan = single_node_plan();
    let x = rounded(FLOAT, &values(256, 8));
    let input = tract_tensor(FLOAT, &[4, 64], &x).into_tvalue();
    let kept = input.clone();
    let outputs = plan.run(tvec![input]).unwrap();
    assert_ne!(ptr(&outputs[0]), ptr(&kept));
    assert_eq!(as_f64(&kept), x, "the caller's tensor must not change");
    let want = reference(&x, &[4, 64], -1, None, None, &ada_params()).unwrap();
    assert_close("Y", &as_f64(&outputs[0]), &want.y, 1e-5);
}
