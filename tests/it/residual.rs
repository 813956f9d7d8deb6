//! `ai.adanorm` version 2 (the residual slots `Skip`, `Bias`, `Sum`) in the rewriter: `fuse` and
//! `rewrite` absorb a norm's residual `Add` (and the bias `Add` before it) and turn ORT's
//! `SkipLayerNormalization` into one node, never an `Add` another norm holds or one whose sum is
//! read before the node's place; existing version-2 nodes are reported and left alone; `revert`
//! writes them as the `Add`s they stand for in front of a standard-op norm (restoring recorded
//! ones exactly), and `--portable` as those `Add`s in front of a version-1 call. Every result
//! computes what the original computes (tract, whose version-2 op is checked against the f64
//! oracle in crates/tract).

use std::path::Path;

use crate::common::{assert_same_outputs, Builder, A, F32};
use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::proto::ModelProto;
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::rewrite::{plan::plan_model, revert::revert, Affine, Options, Outcome, Target};
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

/// `plan_model` of the model at `path` (the rewrite `fuse`/`rewrite` would write).
fn planned(path: &Path, options: &Options) -> Outcome {
    let model = load_model(path).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    plan_model(&g, options).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `revert` of the model at `path`.
fn reverted(path: &Path) -> Outcome {
    let model = load_model(path).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    revert(&g, None).unwrap_or_else(|e| panic!("revert of {}: {e}", path.display()))
}

/// The `ai.adanorm` version `model` imports.
fn adanorm_version(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain() == "ai.adanorm")
        .and_then(|o| o.version)
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
        let outcome = reverted(&original);
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
        let mut options = crate::common::rewrite_options(Target::Same, Affine::Keep, None, true);
        options.portable = true;
        let outcome = planned(&original, &options);
        let ours: Vec<_> = nodes_of(&outcome.model)
            .into_iter()
            .filter(|(d, ..)| d == "ai.adanorm")
            .collect();
        assert_eq!(ours.len(), 1, "{what}: {ours:?}");
        assert!(
            ours[0].2 <= 3 && ours[0].3 == 3,
            "{what}: a version-1 call: {ours:?}"
        );
        let version = adanorm_version(&outcome.model);
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

/// ORT's `SkipLayerNormalization(input, skip, gamma, beta[, bias])` with its sum output, as
/// `onnxruntime.transformers.optimizer` writes it.
fn skip_layer_norm_model(with_bias: bool) -> Builder {
    let mut b = Builder::new(17);
    b.extra_opsets.push(("com.microsoft".into(), 1));
    let x = b.input("x", F32, &[2, 3, H]);
    let skip = b.input("skip", F32, &[2, 3, H]);
    let gamma = b.init("gamma", &[H], &values(1, H as usize));
    let beta = b.init("beta", &[H], &values(2, H as usize));
    let mut inputs = vec![x.as_str(), skip.as_str(), gamma.as_str(), beta.as_str()];
    let bias = b.init("bias", &[H], &values(3, H as usize));
    if with_bias {
        inputs.push(&bias);
    }
    b.node_named(
        "sln",
        "SkipLayerNormalization",
        &inputs,
        &["y", "", "", "s"],
        vec![("epsilon", A::F(1e-5))],
    );
    b.nodes.last_mut().unwrap().domain = Some("com.microsoft".into());
    b.output("y", F32);
    b.output("s", F32);
    b
}

/// What `skip_layer_norm_model` computes, in standard ops: `(x + skip) + bias`, then
/// LayerNormalization.
fn skip_layer_norm_reference(with_bias: bool) -> Builder {
    let mut b = Builder::new(17);
    let x = b.input("x", F32, &[2, 3, H]);
    let skip = b.input("skip", F32, &[2, 3, H]);
    let gamma = b.init("gamma", &[H], &values(1, H as usize));
    let beta = b.init("beta", &[H], &values(2, H as usize));
    let bias = b.init("bias", &[H], &values(3, H as usize));
    let sum = if with_bias {
        let xs = b.op("Add", &[&x, &skip], vec![]);
        b.node_named("add_bias", "Add", &[&xs, &bias], &["s"], vec![]);
        "s".to_string()
    } else {
        b.node_named("add_skip", "Add", &[&x, &skip], &["s"], vec![]);
        "s".to_string()
    };
    b.node_named(
        "ln",
        "LayerNormalization",
        &[&sum, &gamma, &beta],
        &["y"],
        vec![("epsilon", A::F(1e-5)), ("axis", A::I(-1))],
    );
    b.output("y", F32);
    b.output("s", F32);
    b
}

#[test]
fn ort_skip_layer_normalization_becomes_one_version_2_node() {
    let dir = tempfile::tempdir().unwrap();
    for with_bias in [false, true] {
        let what = format!("SkipLayerNormalization, bias {with_bias}");
        let original = skip_layer_norm_model(with_bias).save(dir.path(), "sln.onnx");
        let reference = skip_layer_norm_reference(with_bias).save(dir.path(), "ref.onnx");
        let model = load_model(&original).unwrap();
        let g = GraphIndex::build(&model).unwrap();
        let options = crate::common::rewrite_options(Target::Simple, Affine::Keep, None, true);
        let outcome = plan_model(&g, &options).unwrap_or_else(|e| panic!("{what}: {e}"));
        let nodes = nodes_of(&outcome.model);
        let ours: Vec<_> = nodes.iter().filter(|(d, ..)| d == "ai.adanorm").collect();
        assert_eq!(ours.len(), 1, "{what}: {nodes:?}");
        let adds = nodes.iter().filter(|(_, op, ..)| op == "Add").count();
        // Without bias the node takes input and skip itself; with it, input + skip stays an
        // Add (ORT sums (input + skip) + bias) and the bias is the node's residual Bias.
        assert_eq!(adds, with_bias as usize, "{what}: {nodes:?}");
        // Inputs X, Scale, B, then Skip (without bias) or "", Bias (with it).
        assert_eq!(
            ours[0].2,
            if with_bias { 5 } else { 4 },
            "{what}: {nodes:?}"
        );
        assert_eq!(ours[0].3, 4, "{what}: Sum is written: {nodes:?}");
        let rewritten = save(&outcome.model, dir.path(), "rewritten.onnx");
        assert_same_outputs(&reference, &rewritten, &inputs(&[2, 3, H]), &what);
        let mut keep = crate::common::rewrite_options(Target::Simple, Affine::Keep, None, true);
        keep.residual = false;
        let split = plan_model(&g, &keep).unwrap();
        assert!(
            nodes_of(&split.model)
                .iter()
                .all(|(d, _, i, o)| d != "ai.adanorm" || (*i <= 3 && *o <= 3)),
            "{what}: --no-residual writes version 1"
        );
        let split = save(&split.model, dir.path(), "split.onnx");
        assert_same_outputs(&reference, &split, &inputs(&[2, 3, H]), &what);
    }
}

/// The PyTorch decomposed LayerNorm over the last axis of `x`; returns its output.
fn decomposed_layer_norm(b: &mut Builder, x: &str, tag: &str) -> String {
    let gamma = b.init(&format!("{tag}_gamma"), &[H], &values(7, H as usize));
    let beta = b.init(&format!("{tag}_beta"), &[H], &values(8, H as usize));
    let eps = b.constant(1e-5);
    let two = b.constant(2.0);
    let m = b.op("ReduceMean", &[x], vec![("axes", A::Is(vec![-1]))]);
    let d = b.op("Sub", &[x, &m], vec![]);
    let sq = b.op("Pow", &[&d, &two], vec![]);
    let var = b.op("ReduceMean", &[&sq], vec![("axes", A::Is(vec![-1]))]);
    let ve = b.op("Add", &[&var, &eps], vec![]);
    let sd = b.op("Sqrt", &[&ve], vec![]);
    let n = b.op("Div", &[&d, &sd], vec![]);
    let g = b.op("Mul", &[&n, &gamma], vec![]);
    b.op("Add", &[&g, &beta], vec![])
}

/// A block `norm(x + (x·W + b))`; with `pre_ln` the sum is also a graph output (the residual
/// stream goes on); with `bias_read_elsewhere` the bias Add's output is an output too.
fn residual_block(pre_ln: bool, bias_read_elsewhere: bool) -> Builder {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let w = b.init("w", &[H, H], &values(9, (H * H) as usize));
    let bias = b.init("b", &[H], &values(10, H as usize));
    let mm = b.op("MatMul", &[&x, &w], vec![]);
    b.node_named("dense_bias", "Add", &[&mm, &bias], &["dense"], vec![]);
    b.node_named("residual", "Add", &["dense", &x], &["sum"], vec![]);
    let y = decomposed_layer_norm(&mut b, "sum", "ln");
    b.output(&y, F32);
    if pre_ln {
        b.output("sum", F32);
    }
    if bias_read_elsewhere {
        b.output("dense", F32);
    }
    b
}

#[test]
fn fuse_absorbs_the_residual_and_the_bias_and_revert_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    for (pre_ln, bias_elsewhere) in [(false, false), (true, false), (false, true), (true, true)] {
        let what = format!("pre-LN {pre_ln}, bias read elsewhere {bias_elsewhere}");
        let original = residual_block(pre_ln, bias_elsewhere).save(dir.path(), "block.onnx");
        let model = load_model(&original).unwrap();
        let g = GraphIndex::build(&model).unwrap();
        let options = crate::common::rewrite_options(Target::Same, Affine::Keep, None, false);
        let outcome = plan_model(&g, &options).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(outcome.changes.len(), 1, "{what}");
        let note = outcome.changes[0].note.clone().unwrap_or_default();
        assert!(
            note.contains("residual Add 'residual' (Skip)"),
            "{what}: {note}"
        );
        assert_eq!(
            note.contains("bias Add 'dense_bias' (Bias)"),
            !bias_elsewhere,
            "{what}: {note}"
        );
        assert_eq!(note.contains("(Sum)"), pre_ln, "{what}: {note}");
        let graph = outcome.model.graph.as_ref().unwrap();
        let ours: Vec<_> = graph
            .node
            .iter()
            .filter(|n| n.domain() == "ai.adanorm")
            .collect();
        assert_eq!(ours.len(), 1, "{what}");
        let node = ours[0];
        assert_eq!(
            node.input.get(3).map(String::as_str),
            Some("x"),
            "{what}: Skip"
        );
        if bias_elsewhere {
            assert_eq!(node.input[0], "dense", "{what}: X is the bias Add's output");
            assert!(node.input.len() == 4, "{what}: no residual Bias");
        } else {
            assert_eq!(
                node.input.get(4).map(String::as_str),
                Some("b"),
                "{what}: Bias"
            );
        }
        assert_eq!(
            node.output.get(3).is_some_and(|s| s == "sum"),
            pre_ln,
            "{what}: Sum"
        );
        assert!(graph.node.iter().all(|n| n.name() != "residual"), "{what}");
        let version = adanorm_version(&outcome.model);
        assert_eq!(version, Some(2), "{what}");
        let fused = save(&outcome.model, dir.path(), "fused.onnx");
        let feeds = vec![(
            "x".to_string(),
            Tensor::from_shape(&[2, 3, H as usize], &values(11, 6 * H as usize)).unwrap(),
        )];
        assert_same_outputs(&original, &fused, &feeds, &what);
        // revert restores the Adds and the norm exactly.
        let g2_model = load_model(&fused).unwrap();
        let g2 = GraphIndex::build(&g2_model).unwrap();
        let back = revert(&g2, None).unwrap();
        let strip = |m: &ModelProto| {
            let mut g = m.graph.clone().unwrap();
            g.value_info.clear();
            g
        };
        assert_eq!(
            back.model.graph.as_ref().unwrap().node,
            model.proto.graph.as_ref().unwrap().node,
            "{what}: revert"
        );
        assert_eq!(strip(&back.model), strip(&model.proto), "{what}: revert");
        // --no-residual keeps them.
        let mut keep = options.clone();
        keep.residual = false;
        let kept = plan_model(&g, &keep).unwrap();
        let kept_graph = kept.model.graph.as_ref().unwrap();
        assert!(
            kept_graph.node.iter().any(|n| n.name() == "residual"),
            "{what}"
        );
        assert!(kept_graph
            .node
            .iter()
            .filter(|n| n.domain() == "ai.adanorm")
            .all(|n| n.input.len() <= 3));
    }
}

#[test]
fn a_sum_read_before_the_norm_ends_or_an_add_another_norm_holds_is_not_absorbed() {
    // The sum is read by a node that sits between the residual Add and the norm's last node in
    // node order: the new node goes where the norm ended, after that reader, so Sum would be
    // read before it is written.
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let skip = b.input("skip", F32, &[2, 3, H]);
    b.node_named("residual", "Add", &[&x, &skip], &["sum"], vec![]);
    b.node_named("early", "Relu", &["sum"], &["early_out"], vec![]);
    let y = decomposed_layer_norm(&mut b, "sum", "ln");
    b.output(&y, F32);
    b.output("early_out", F32);
    // Move the Relu into the middle of the norm's nodes.
    let relu = b.nodes.remove(1);
    let at = b.nodes.len() - 3;
    b.nodes.insert(at, relu);
    let dir = tempfile::tempdir().unwrap();
    let path = b.save(dir.path(), "m.onnx");
    let model = load_model(&path).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let options = crate::common::rewrite_options(Target::Same, Affine::Keep, None, false);
    let outcome = plan_model(&g, &options).unwrap();
    assert_eq!(outcome.changes.len(), 1);
    assert!(
        outcome.changes[0].note.is_none(),
        "{:?}",
        outcome.changes[0].note
    );
    let graph = outcome.model.graph.as_ref().unwrap();
    assert!(graph.node.iter().any(|n| n.name() == "residual"));

    // Two norms in a row: the first one's output Add (its beta) is never the second one's
    // residual Bias.
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let y1 = decomposed_layer_norm(&mut b, &x, "ln1");
    let s = b.op("Add", &[&y1, &x], vec![]);
    let y2 = decomposed_layer_norm(&mut b, &s, "ln2");
    b.output(&y2, F32);
    let path = b.save(dir.path(), "two.onnx");
    let model = load_model(&path).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let outcome = plan_model(&g, &options).unwrap();
    assert_eq!(outcome.changes.len(), 2);
    let graph = outcome.model.graph.as_ref().unwrap();
    let ours: Vec<_> = graph
        .node
        .iter()
        .filter(|n| n.domain() == "ai.adanorm")
        .collect();
    assert_eq!(ours.len(), 2);
    let second = ours
        .iter()
        .find(|n| n.input.len() > 3)
        .expect("the second absorbs the Add");
    assert!(
        second.input.len() == 4,
        "no Bias taken from the first norm: {second:?}"
    );
    let fused = save(&outcome.model, dir.path(), "two.fused.onnx");
    let feeds = vec![(
        "x".to_string(),
        Tensor::from_shape(&[2, 3, H as usize], &values(12, 6 * H as usize)).unwrap(),
    )];
    assert_same_outputs(&path, &fused, &feeds, "two norms");
}

#[test]
fn portable_after_fuse_still_reverts_to_the_original() {
    // fuse absorbs the residual (a recorded version-2 node); a later --portable writes its
    // slots as Adds in front of a version-1 call; revert takes those Adds away with the call
    // and restores the recorded ones.
    let dir = tempfile::tempdir().unwrap();
    let original = residual_block(true, false).save(dir.path(), "block.onnx");
    let fuse = crate::common::rewrite_options(Target::Same, Affine::Keep, None, false);
    let fused = save(&planned(&original, &fuse).model, dir.path(), "fused.onnx");
    let mut portable = fuse.clone();
    portable.portable = true;
    let outcome = planned(&fused, &portable);
    assert!(
        nodes_of(&outcome.model)
            .iter()
            .any(|(d, op, ..)| d.is_empty() && op == "Add"),
        "the slots became Adds"
    );
    let portable = save(&outcome.model, dir.path(), "portable.onnx");
    let back = reverted(&portable);
    let model = load_model(&original).unwrap();
    assert_eq!(
        back.model.graph.as_ref().unwrap().node,
        model.proto.graph.as_ref().unwrap().node,
        "revert restores exactly the original nodes, no Add left over"
    );
}
