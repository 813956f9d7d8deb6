//! LayerNorms inside model-local functions (PyTorch's `export_modules_as_functions`): the calls
//! are inlined (each with its own `eps`), found, rewritten, and run in tract against PyTorch's
//! output. Fixture: `fixtures/functions/export.py`.

use crate::common;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common::{Builder, A, F32};

use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::npz::read_npz;
use adanorm_onnx::onnx::proto::{FunctionProto, OperatorSetIdProto};
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::patterns::find_matches_everywhere;
use adanorm_onnx::patterns::local_functions::inline_functions_with_matches;
use adanorm_onnx::patterns::{Family, Form};
use adanorm_onnx::rewrite::{plan::plan_model, revert::revert, Affine, Options, Target};
use adanorm_onnx::runner::{compare, random_inputs, run};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/functions/torch_modules_as_functions_op15")
}

fn assert_matches_reference(model: &Path) {
    let got = run(model, read_npz(&fixture().join("inputs.npz")).unwrap()).unwrap();
    let want = read_npz(&fixture().join("ref_output.npz")).unwrap();
    let diffs = compare(&want, &got);
    assert_eq!(diffs.len(), 1);
    assert!(
        diffs[0].problem.is_none() && diffs[0].max_scaled <= 1e-5,
        "{diffs:?}"
    );
}

#[test]
fn layernorms_inside_functions_are_found_with_each_calls_epsilon() {
    let original = load_model(&fixture().join("model.onnx")).unwrap();
    // Without inlining the graph only shows two calls of an unknown op.
    let g = GraphIndex::build(&original).unwrap();
    assert!(find_matches_everywhere(&g, &g.subgraphs().unwrap())
        .iter()
        .all(|(_, ms)| ms.is_empty()));
    let (model, inlined) = inline_functions_with_matches(original).unwrap();
    assert_eq!(inlined, ["torch.nn.modules.normalization.LayerNorm"]);
    assert!(
        model.proto.functions.is_empty(),
        "the only function was inlined"
    );
    let g = GraphIndex::build(&model).unwrap();
    let found = find_matches_everywhere(&g, &[]);
    let eps: Vec<f32> = found[0].1.iter().map(|m| m.epsilon as f32).collect();
    assert_eq!(eps, [1e-5, 1e-6]);
    assert!(found[0]
        .1
        .iter()
        .all(|m| m.rewritable && m.scale.is_some() && m.bias.is_some()));
}

#[test]
fn rewrites_compute_what_pytorch_computed_and_revert() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) =
        inline_functions_with_matches(load_model(&fixture().join("model.onnx")).unwrap()).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    for (tag, target, ck) in [
        ("fused", Target::Same, None),
        ("k0", Target::AdaNorm, Some((1.0, 0.0))),
    ] {
        let o = plan_model(
            &g,
            &Options {
                target,
                c: ck.map(|x: (f64, f64)| x.0),
                k: ck.map(|x| x.1),
                affine: Affine::Keep,
                portable: false,
                include_fused: true,
                only: Vec::new(),
                residual: true,
            },
        )
        .unwrap();
        assert_eq!(o.changes.len(), 2, "{tag}");
        let out = tmp.path().join(format!("{tag}.onnx"));
        save_model(&o.model, &out, true).unwrap();
        assert_matches_reference(&out);
        if tag == "fused" {
            let back = load_model(&out).unwrap();
            let r = revert(&GraphIndex::build(&back).unwrap(), None).unwrap();
            let reverted = tmp.path().join("reverted.onnx");
            save_model(&r.model, &reverted, true).unwrap();
            assert_matches_reference(&reverted);
        }
    }
}

/// A model whose graph calls the model-local function `m.Norm` once, on `X: float[2, 4, 8]`;
/// the function's body is what `body` writes on its input `x`, its output the value it returns.
fn calling_a_function(body: impl FnOnce(&mut Builder, &str) -> String) -> (Builder, FunctionProto) {
    let mut f = Builder::new(18);
    let y = body(&mut f, "x");
    let function = FunctionProto {
        name: Some("Norm".into()),
        domain: Some("m".into()),
        input: vec!["x".into()],
        output: vec![y],
        node: f.nodes,
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(18),
        }],
        ..Default::default()
    };
    let mut main = Builder::new(18);
    main.extra_opsets.push(("m".into(), 1));
    let x = main.input("X", F32, &[2, 4, 8]);
    main.node_named("call", "Norm", &[&x], &["Y"], vec![]);
    main.nodes.last_mut().unwrap().domain = Some("m".into());
    main.output("Y", F32);
    (main, function)
}

/// Saves `main` with the function `calling_a_function` made, inlines what holds a match, and
/// checks the one match found there and that `fuse` computes what the inlined original does.
fn found_inside_a_function((main, function): (Builder, FunctionProto), family: Family, form: Form) {
    let dir = tempfile::tempdir().unwrap();
    let mut proto = main.model();
    proto.functions = vec![function];
    let path = dir.path().join("calls.onnx");
    save_model(&proto, &path, true).unwrap();
    let (model, inlined) = inline_functions_with_matches(load_model(&path).unwrap()).unwrap();
    assert_eq!(inlined, ["m.Norm"], "{form}");
    let g = GraphIndex::build(&model).unwrap();
    let found = find_matches_everywhere(&g, &[]);
    let ms = &found[0].1;
    assert_eq!(ms.len(), 1, "{form}: {ms:#?}");
    assert_eq!((ms[0].family, ms[0].form), (family, form));
    assert!(ms[0].rewritable, "{:?}", ms[0].reason);

    let changes = fuse_computes_what_the_inlined_model_does(&g, &model.proto, dir.path());
    assert_eq!(changes, 1, "{form}");
}

/// Fuses the inlined `model` (indexed as `g`), runs both in tract on the same random inputs
/// and checks the outputs agree; returns the number of changes `fuse` made.
fn fuse_computes_what_the_inlined_model_does(
    g: &GraphIndex<'_>,
    model: &adanorm_onnx::onnx::proto::ModelProto,
    dir: &Path,
) -> usize {
    let inlined_path = dir.join("inlined.onnx");
    save_model(model, &inlined_path, true).unwrap();
    let o = plan_model(
        g,
        &Options {
            target: Target::Same,
            c: None,
            k: None,
            affine: Affine::Keep,
            portable: false,
            include_fused: false,
            only: Vec::new(),
            residual: true,
        },
    )
    .unwrap();
    let fused = dir.join("fused.onnx");
    save_model(&o.model, &fused, true).unwrap();
    let inputs = random_inputs(&inlined_path, &HashMap::new(), 7).unwrap();
    let want = run(&inlined_path, inputs.clone()).unwrap();
    let diffs = compare(&want, &run(&fused, inputs).unwrap());
    assert!(
        diffs
            .iter()
            .all(|d| d.problem.is_none() && d.max_scaled <= 1e-5),
        "{diffs:?}"
    );
    o.changes.len()
}

/// `MeanVarianceNormalization` over the last axis, then a gain and a bias.
#[test]
fn mean_variance_normalization_inside_a_function_is_found() {
    let main = calling_a_function(|b, x| {
        let n = b.op(
            "MeanVarianceNormalization",
            &[x],
            vec![("axes", A::Is(vec![2]))],
        );
        let gamma = b.constant(1.5);
        let beta = b.constant(-0.25);
        let scaled = b.op("Mul", &[&n, &gamma], vec![]);
        b.op("Add", &[&scaled, &beta], vec![])
    });
    found_inside_a_function(main, Family::LnSimple, Form::MeanVarianceNorm);
}

/// tf2onnx's contrib `layer_norm`: `InstanceNormalization` with ones and zeros made from the
/// input's channel count.
#[test]
fn instance_normalization_inside_a_function_is_found() {
    let main = calling_a_function(|b, x| {
        let channels = b.op("Shape", &[x], vec![("start", A::I(1)), ("end", A::I(2))]);
        let one = common::tensor_typed("", F32, &[1], &[1.0]);
        let zero = common::tensor_typed("", F32, &[1], &[0.0]);
        let ones = b.op("ConstantOfShape", &[&channels], vec![("value", A::T(one))]);
        let zeros = b.op("ConstantOfShape", &[&channels], vec![("value", A::T(zero))]);
        b.op(
            "InstanceNormalization",
            &[x, &ones, &zeros],
            vec![("epsilon", A::F(1e-5))],
        )
    });
    found_inside_a_function(main, Family::LayerNorm, Form::InstanceNorm);
}

/// Means written as `ReduceSum / N` (no `ReduceMean` anywhere in the body).
#[test]
fn layernorm_with_reducesum_means_inside_a_function_is_found() {
    let main = calling_a_function(|b, x| {
        let axes = b.constant_typed(common::I64, &[1], &[2.0]);
        let n = b.constant(8.0);
        let sum = b.op("ReduceSum", &[x, &axes], vec![]);
        let mean = b.op("Div", &[&sum, &n], vec![]);
        let d = b.op("Sub", &[x, &mean], vec![]);
        let d2 = b.op("Mul", &[&d, &d], vec![]);
        let sum2 = b.op("ReduceSum", &[&d2, &axes], vec![]);
        let var = b.op("Div", &[&sum2, &n], vec![]);
        let eps = b.constant(1e-5);
        let ve = b.op("Add", &[&var, &eps], vec![]);
        let sigma = b.op("Sqrt", &[&ve], vec![]);
        b.op("Div", &[&d, &sigma], vec![])
    });
    found_inside_a_function(main, Family::LayerNorm, Form::Decomposed);
}

/// The graph of `calling_a_function` with the call's result read by what `after` writes in the
/// main graph, whose result becomes the output `Z`. The body ends in an `Identity`, as
/// exporters write a function output that is another value's copy.
fn read_after_a_call(
    body: impl FnOnce(&mut Builder, &str) -> String,
    after: impl FnOnce(&mut Builder, &str) -> String,
) -> Vec<(Family, Form)> {
    let (mut main, function) = calling_a_function(|b, x| {
        let y = body(b, x);
        b.op("Identity", &[&y], vec![])
    });
    main.outputs.clear();
    let z = after(&mut main, "Y");
    main.node_named("out", "Identity", &[&z], &["Z"], vec![]);
    main.output("Z", F32);
    let dir = tempfile::tempdir().unwrap();
    let mut proto = main.model();
    proto.functions = vec![function];
    let path = dir.path().join("calls.onnx");
    save_model(&proto, &path, true).unwrap();
    let (model, inlined) = inline_functions_with_matches(load_model(&path).unwrap()).unwrap();
    assert_eq!(inlined, ["m.Norm"]);
    let g = GraphIndex::build(&model).unwrap();
    let found = find_matches_everywhere(&g, &[]);
    let ms = &found[0].1;
    let mut got: Vec<(Family, Form)> = ms.iter().map(|m| (m.family, m.form)).collect();
    got.sort_by_key(|(f, form)| (f.name(), form.to_string()));

    // `fuse` rewrites every rewritable one and computes what the inlined original does.
    let changes = fuse_computes_what_the_inlined_model_does(&g, &model.proto, dir.path());
    assert_eq!(
        changes,
        ms.iter().filter(|m| m.rewritable).count(),
        "{ms:#?}"
    );
    got
}

/// `x / sqrt(mean(x²) + eps) * w` over the last axis.
fn rms_norm(b: &mut Builder, x: &str) -> String {
    let axes = b.constant_typed(common::I64, &[1], &[2.0]);
    let sq = b.op("Mul", &[x, x], vec![]);
    let ms = b.op("ReduceMean", &[&sq, &axes], vec![]);
    let eps = b.constant(1e-6);
    let me = b.op("Add", &[&ms, &eps], vec![]);
    let r = b.op("Sqrt", &[&me], vec![]);
    let n = b.op("Div", &[x, &r], vec![]);
    let w = b.constant(0.5);
    b.op("Mul", &[&n, &w], vec![])
}

/// `(x - mean) / sqrt(var + eps)` with ReduceMean means over the last axis.
fn layer_norm(b: &mut Builder, x: &str) -> String {
    let axes = b.constant_typed(common::I64, &[1], &[2.0]);
    let mean = b.op("ReduceMean", &[x, &axes], vec![]);
    let d = b.op("Sub", &[x, &mean], vec![]);
    let d2 = b.op("Mul", &[&d, &d], vec![]);
    let var = b.op("ReduceMean", &[&d2, &axes], vec![]);
    let eps = b.constant(1e-5);
    let ve = b.op("Add", &[&var, &eps], vec![]);
    let sigma = b.op("Sqrt", &[&ve], vec![]);
    b.op("Div", &[&d, &sigma], vec![])
}

/// The `Identity` that ends the function body belongs to the norm inside it: the norm reading
/// the call's result starts after it, and both are found (fuzzer seed 6116: the second norm's
/// input absorption took that Identity, so the second norm was dropped as overlapping).
#[test]
fn a_norm_reading_a_functions_norm_is_found_too() {
    assert_eq!(
        read_after_a_call(layer_norm, rms_norm),
        [
            (Family::LayerNorm, Form::Decomposed),
            (Family::RmsNorm, Form::DecomposedRmsNorm)
        ]
    );
    // The other order of the recogniser table: the main graph's decomposed LayerNorm is
    // scanned before the function's MVN.
    let mvn = |b: &mut Builder, x: &str| {
        b.op(
            "MeanVarianceNormalization",
            &[x],
            vec![("axes", A::Is(vec![2]))],
        )
    };
    assert_eq!(
        read_after_a_call(mvn, layer_norm),
        [
            (Family::LayerNorm, Form::Decomposed),
            (Family::LnSimple, Form::MeanVarianceNorm)
        ]
    );
}
