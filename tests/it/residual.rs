//! `ai.adanorm` version 2 nodes (the residual slots `Skip`, `Bias`, `Sum`) in the rewriter: they
//! are reported and left alone by `fuse`/`rewrite` (a match carries no residual yet), `revert`
//! writes them as the `Add`s they stand for in front of a standard-op norm, and `--portable`
//! as those `Add`s in front of a version-1 call. Every result computes what the node computes
//! (tract, whose version-2 op is checked against the f64 oracle in crates/tract).

use std::path::Path;

use crate::common::{Builder, A, F32};
use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::proto::ModelProto;
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::rewrite::{plan::plan_model, revert::revert, Affine, Target};
use adanorm_onnx::runner::{compare, run};
use adanorm_tract::tract_onnx::prelude::Tensor;

const H: i64 = 8;

fn values(seed: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32) / 250.0 - 2.0)
        .collect()
}

/// `op` (version 2) over x [2, 3, H] with Scale, B, the residual `Bias` and a `Skip` of
/// `skip_dims` (a graph input), writing Y and, with `sum`, Sum (read again by a `Relu`, as a
/// pre-LN residual stream is).
fn v2_model(op: &str, attrs: Vec<(&str, A)>, skip_dims: &[i64], sum: bool) -> Builder {
    let mut b = Builder::new(17);
    b.extra_opsets.push(("ai.adanorm".into(), 2));
    let x = b.input("x", F32, &[2, 3, H]);
    let skip = b.input("skip", F32, skip_dims);
    let scale = b.init("scale", &[H], &values(1, H as usize));
    let beta = b.init("beta", &[H], &values(2, H as usize));
    let bias = b.init("bias", &[H], &values(3, H as usize));
    let outputs: &[&str] = if sum { &["y", "", "", "s"] } else { &["y"] };
    b.node_named(
        "norm",
        op,
        &[&x, &scale, &beta, &skip, &bias],
        outputs,
        attrs,
    );
    b.nodes.last_mut().unwrap().domain = Some("ai.adanorm".into());
    b.output("y", F32);
    if sum {
        b.node_named("relu", "Relu", &["s"], &["r"], vec![]);
        b.output("r", F32);
    }
    b
}

fn inputs(skip_dims: &[i64]) -> Vec<(String, Tensor)> {
    let x = Tensor::from_shape(&[2, 3, H as usize], &values(4, 6 * H as usize)).unwrap();
    let dims: Vec<usize> = skip_dims.iter().map(|&d| d as usize).collect();
    let n = dims.iter().product();
    let skip = Tensor::from_shape(&dims, &values(5, n)).unwrap();
    vec![("x".into(), x), ("skip".into(), skip)]
}

fn assert_same_outputs(original: &Path, other: &Path, inputs: &[(String, Tensor)], what: &str) {
    let want = run(original, inputs.to_vec()).unwrap();
    let got = run(other, inputs.to_vec()).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(want.len(), got.len(), "{what}: output count");
    for d in compare(&want, &got) {
        assert!(
            d.problem.is_none() && d.max_scaled <= 1e-5,
            "{what}: output '{}' differs: {:?} (max {})",
            d.output,
            d.problem,
            d.max_scaled
        );
    }
}

fn nodes_of(model: &ModelProto) -> Vec<(String, String, usize, usize)> {
    model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| {
            (
                n.domain().to_string(),
                n.op_type().to_string(),
                n.input.len(),
                n.output.len(),
            )
        })
        .collect()
}

fn save(model: &ModelProto, dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    save_model(model, &path, true).unwrap();
    path
}

const CASES: [(&str, &[i64], bool); 4] = [
    ("LayerNormSimple", &[2, 3, H], true),
    ("LayerNormSimple", &[3, H], false),
    ("AdaNorm", &[2, 1, H], true),
    ("AdaNorm", &[2, 3, H], false),
];

fn attrs_of(op: &str) -> Vec<(&'static str, A)> {
    match op {
        "AdaNorm" => vec![("c", A::F(1.5)), ("k", A::F(0.25)), ("unbiased", A::I(1))],
        _ => vec![("epsilon", A::F(1e-5))],
    }
}

#[test]
fn revert_writes_the_adds_and_a_standard_norm() {
    let dir = tempfile::tempdir().unwrap();
    for (op, skip_dims, sum) in CASES {
        let what = format!("{op} skip {skip_dims:?} sum {sum}");
        let original = v2_model(op, attrs_of(op), skip_dims, sum).save(dir.path(), "v2.onnx");
        let model = load_model(&original).unwrap();
        let g = GraphIndex::build(&model).unwrap();
        let outcome = revert(&g, None).unwrap_or_else(|e| panic!("{what}: {e}"));
        let nodes = nodes_of(&outcome.model);
        assert!(
            nodes.iter().all(|(d, ..)| d != "ai.adanorm"),
            "{what}: {nodes:?}"
        );
        let adds = nodes.iter().filter(|(_, op, ..)| op == "Add").count();
        assert!(
            adds >= 2,
            "{what}: the residual Adds are missing: {nodes:?}"
        );
        if op == "LayerNormSimple" {
            assert!(
                nodes.iter().any(|(_, op, ..)| op == "LayerNormalization"),
                "{what}: {nodes:?}"
            );
        }
        let back = save(&outcome.model, dir.path(), "reverted.onnx");
        assert_same_outputs(&original, &back, &inputs(skip_dims), &what);
    }
}

#[test]
fn portable_writes_the_adds_and_a_version_1_call() {
    let dir = tempfile::tempdir().unwrap();
    for (op, skip_dims, sum) in CASES {
        let what = format!("{op} skip {skip_dims:?} sum {sum}");
        let original = v2_model(op, attrs_of(op), skip_dims, sum).save(dir.path(), "v2.onnx");
        let model = load_model(&original).unwrap();
        let g = GraphIndex::build(&model).unwrap();
        let mut options = crate::common::rewrite_options(Target::Same, Affine::Keep, None, true);
        options.portable = true;
        let outcome = plan_model(&g, &options).unwrap_or_else(|e| panic!("{what}: {e}"));
        let ours: Vec<_> = nodes_of(&outcome.model)
            .into_iter()
            .filter(|(d, ..)| d == "ai.adanorm")
            .collect();
        assert_eq!(ours.len(), 1, "{what}: {ours:?}");
        assert!(
            ours[0].2 <= 3 && ours[0].3 == 3,
            "{what}: a version-1 call: {ours:?}"
        );
        let version = outcome
            .model
            .opset_import
            .iter()
            .find(|o| o.domain() == "ai.adanorm")
            .and_then(|o| o.version);
        assert_eq!(version, Some(1), "{what}: no version-2 slot is left");
        assert!(
            outcome.model.functions.iter().any(|f| f.name() == op),
            "{what}: the body"
        );
        let portable = save(&outcome.model, dir.path(), "portable.onnx");
        assert_same_outputs(&original, &portable, &inputs(skip_dims), &what);
    }
}

#[test]
fn a_version_2_node_is_reported_and_left_alone() {
    let b = v2_model("LayerNormSimple", vec![], &[2, 3, H], true);
    let matches = b.matches();
    assert_eq!(matches.len(), 1);
    let m = &matches[0];
    assert!(!m.rewritable);
    assert!(
        m.reason.as_deref().unwrap_or("").contains("residual slots"),
        "{:?}",
        m.reason
    );
    let dir = tempfile::tempdir().unwrap();
    let original = b.save(dir.path(), "v2.onnx");
    let model = load_model(&original).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let options = crate::common::rewrite_options(Target::AdaNorm, Affine::Keep, None, true);
    let outcome = plan_model(&g, &options).unwrap();
    let after = save(&outcome.model, dir.path(), "rewritten.onnx");
    assert_same_outputs(
        &original,
        &after,
        &inputs(&[2, 3, H]),
        "rewrite --to adanorm",
    );
}
