//! Rewrites on graphs where a tensor or node is shared between a match and the rest of the
//! graph, as exporters write them (equal initializers deduplicated by the dynamo exporter and the
//! onnxscript optimizer, tied weights, shared `Constant`s, values read inside If branches).
//!
//! Each case is hand-built, rewritten every way (`fuse`, `rewrite` with fold / drop / keep),
//! checked for structural validity (unique names, SSA, nothing undefined, one tensor per name),
//! run in tract against the original where the rewrite claims the same function, and reverted
//! (with its weights file) to a model that computes exactly what the original computes.
//! The real exports of the same situations are in `fixtures/sharing/` (their own test below).

use crate::common;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::common::{Builder, A, F32};
use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::proto::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto,
};
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::rewrite::{
    plan::plan_model, revert::revert, weights::WeightsFile, Affine, Options, Target,
};
use adanorm_onnx::runner::{compare, random_inputs, run};
use adanorm_tract::tract_onnx::prelude::Tensor;

const H: i64 = 8;

fn values(seed: u64, n: usize) -> Vec<f32> {
    // Distinct, non-trivial numbers (not ones and zeros: a fold of those would hide errors).
    (0..n)
        .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32) / 500.0 - 1.0)
        .collect()
}

/// The PyTorch decomposed LayerNorm over the last axis; `axes` given as an opset-18 input when
/// `Some`, as the attribute otherwise. Returns the output.
fn layer_norm(
    b: &mut Builder,
    x: &str,
    gamma: &str,
    beta: &str,
    eps: &str,
    axes: Option<&str>,
) -> String {
    let mean = |b: &mut Builder, v: &str| match axes {
        Some(a) => b.op("ReduceMean", &[v, a], vec![]),
        None => b.op("ReduceMean", &[v], vec![("axes", A::Is(vec![-1]))]),
    };
    let m = mean(b, x);
    let d = b.op("Sub", &[x, &m], vec![]);
    let two = b.constant(2.0);
    let sq = b.op("Pow", &[&d, &two], vec![]);
    let var = mean(b, &sq);
    let ve = b.op("Add", &[&var, eps], vec![]);
    let sd = b.op("Sqrt", &[&ve], vec![]);
    let n = b.op("Div", &[&d, &sd], vec![]);
    let g = b.op("Mul", &[&n, gamma], vec![]);
    b.op("Add", &[&g, beta], vec![])
}

/// `y · W + b` as a `MatMul` and a bias `Add`, both named.
fn linear(b: &mut Builder, y: &str, w: &str, bias: &str, name: &str) -> String {
    let mm = format!("{name}_mm");
    let out = format!("{name}_out");
    b.node_named(&format!("{name}/MatMul"), "MatMul", &[y, w], &[&mm], vec![]);
    b.node_named(&format!("{name}/Add"), "Add", &[&mm, bias], &[&out], vec![]);
    out
}

fn opts(target: Target, affine: Affine, ck: Option<(f64, f64)>, fused: bool) -> Options {
    common::rewrite_options(target, affine, ck, fused)
}

/// Every way the tool rewrites a model, with whether it claims the same function.
fn variants() -> Vec<(&'static str, Options)> {
    vec![
        ("fuse", opts(Target::Same, Affine::Keep, None, false)),
        (
            "rewrite --k 0 --c 1",
            opts(Target::AdaNorm, Affine::Keep, Some((1.0, 0.0)), true),
        ),
        (
            "rewrite --k 0 --c 1 --affine fold",
            opts(Target::AdaNorm, Affine::Fold, Some((1.0, 0.0)), true),
        ),
        (
            "rewrite --to simple --affine fold",
            opts(Target::Simple, Affine::Fold, None, true),
        ),
        (
            "rewrite --affine drop",
            opts(Target::AdaNorm, Affine::Drop, None, true),
        ),
    ]
}

/// Structural validity of a written model: in every graph (subgraphs at any depth, seeing the
/// values of the graphs around them), every node input is defined, no value is defined twice
/// (by nodes, initializers or graph inputs, here or in an enclosing graph), node names are unique,
/// and each initializer name appears once.
fn assert_valid(model: &ModelProto, what: &str) {
    fn walk(g: &GraphProto, outer: &HashSet<String>, what: &str) {
        let mut defined: HashSet<String> = outer.clone();
        let mut here: HashSet<String> = HashSet::new();
        let mut define = |name: &str, by: &str| {
            if name.is_empty() {
                return;
            }
            assert!(
                here.insert(name.to_string()) && !outer.contains(name),
                "{what}: value '{name}' is defined twice ({by})"
            );
        };
        for t in &g.initializer {
            define(t.name(), "initializer");
        }
        let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
        for i in &g.input {
            if !inits.contains(i.name()) {
                define(i.name(), "graph input");
            }
        }
        for n in &g.node {
            for o in &n.output {
                define(o, n.name());
            }
        }
        defined.extend(here.iter().cloned());
        let mut node_names = HashSet::new();
        for n in &g.node {
            assert!(
                n.name().is_empty() || node_names.insert(n.name()),
                "{what}: node name '{}' is used twice",
                n.name()
            );
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                assert!(
                    defined.contains(i),
                    "{what}: node '{}' reads '{i}', which nothing defines",
                    n.name()
                );
            }
            for a in &n.attribute {
                for sub in a.g.iter().chain(a.graphs.iter()) {
                    walk(sub, &defined, what);
                }
            }
        }
        for o in &g.output {
            assert!(
                defined.contains(o.name()),
                "{what}: output '{}' undefined",
                o.name()
            );
        }
    }
    walk(model.graph.as_ref().unwrap(), &HashSet::new(), what);
}

struct Written {
    model: PathBuf,
    weights: Option<PathBuf>,
    same_function: bool,
    changes: usize,
}

fn rewrite(original: &Path, dir: &Path, tag: &str, o: &Options) -> Written {
    let model = load_model(original).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let outcome = plan_model(&g, o).unwrap_or_else(|e| panic!("{tag}: {e}"));
    assert_valid(&outcome.model, tag);
    let path = dir.join(format!("{}.onnx", tag.replace(' ', "_")));
    save_model(&outcome.model, &path, true).unwrap();
    let weights = outcome.weights.as_ref().map(|w| {
        let p = path.with_extension("safetensors");
        w.save(&p, true).unwrap();
        p
    });
    Written {
        model: path,
        weights,
        same_function: outcome.same_function(),
        changes: outcome.changes.len(),
    }
}

fn reverted(w: &Written, tag: &str) -> PathBuf {
    let model = load_model(&w.model).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let weights = w.weights.as_ref().map(|p| WeightsFile::load(p).unwrap());
    let outcome = revert(&g, weights.as_ref()).unwrap_or_else(|e| panic!("revert of {tag}: {e}"));
    assert_valid(&outcome.model, &format!("revert of {tag}"));
    let path = w.model.with_extension("reverted.onnx");
    save_model(&outcome.model, &path, true).unwrap();
    path
}

fn outputs(model: &Path, inputs: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    run(model, inputs.to_vec()).unwrap_or_else(|e| panic!("{}: {e}", model.display()))
}

/// Rewrites `original` every way; claimed-exact outputs within 1e-4 of the original's (scaled
/// as in the zoo tests), every revert bit for bit equal to the original. Returns, per variant,
/// how many matches changed.
fn check_variants(
    original: &Path,
    inputs: &[(String, Tensor)],
    case: &str,
) -> HashMap<&'static str, usize> {
    let dir = tempfile::tempdir().unwrap();
    let reference = outputs(original, inputs);
    let mut changed = HashMap::new();
    for (tag, o) in variants() {
        let w = rewrite(original, dir.path(), tag, &o);
        changed.insert(tag, w.changes);
        if w.same_function {
            for d in compare(&reference, &outputs(&w.model, inputs)) {
                assert!(
                    d.problem.is_none() && d.max_scaled <= 1e-4,
                    "{case}, {tag}: output '{}' differs from the original: {:?} (max {})",
                    d.output,
                    d.problem,
                    d.max_scaled
                );
            }
        }
        let back = reverted(&w, tag);
        for d in compare(&reference, &outputs(&back, inputs)) {
            assert!(
                d.problem.is_none() && d.max_abs == 0.0,
                "{case}, revert of {tag}: output '{}' differs: {:?} (max {})",
                d.output,
                d.problem,
                d.max_abs
            );
        }
    }
    changed
}

/// [`check_variants`] on a hand-built model with random inputs.
fn check_every_rewrite(b: &Builder, case: &str) -> HashMap<&'static str, usize> {
    let dir = tempfile::tempdir().unwrap();
    let original = b.save(dir.path(), "original.onnx");
    assert_valid(&b.model(), case);
    let inputs = random_inputs(&original, &HashMap::new(), 7).unwrap();
    check_variants(&original, &inputs, case)
}

fn initializer_names(path: &Path) -> Vec<String> {
    let m = load_model(path).unwrap();
    m.graph()
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .collect()
}

/// q, k and v read one zero bias (what deduplication makes of a fresh attention layer).
#[test]
fn a_bias_shared_by_q_k_and_v_is_folded_into_one_copy_per_reader() {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let gamma = b.init("ln.weight", &[H], &values(1, H as usize));
    let beta = b.init("ln.bias", &[H], &values(2, H as usize));
    let eps = b.constant(1e-5);
    let y = layer_norm(&mut b, &x, &gamma, &beta, &eps, None);
    let bias = b.init("shared.bias", &[H], &[0.0; H as usize]);
    for (i, name) in ["q", "k", "v"].into_iter().enumerate() {
        let w = b.init(
            &format!("{name}.weight"),
            &[H, H],
            &values(10 + i as u64, (H * H) as usize),
        );
        let out = linear(&mut b, &y, &w, &bias, name);
        b.output(&out, F32);
    }
    let changed = check_every_rewrite(&b, "shared q/k/v bias");
    assert!(changed.values().all(|&n| n == 1), "{changed:?}");

    // Each Add reads its own folded copy; no name holds two tensors.
    let dir = tempfile::tempdir().unwrap();
    let original = b.save(dir.path(), "m.onnx");
    let w = rewrite(
        &original,
        dir.path(),
        "fold",
        &opts(Target::Simple, Affine::Fold, None, true),
    );
    let names = initializer_names(&w.model);
    let unique: HashSet<&String> = names.iter().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "duplicate initializers: {names:?}"
    );
    let m = load_model(&w.model).unwrap();
    let biases: HashSet<&str> = m
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type() == "Add" && n.name().ends_with("/Add"))
        .map(|n| n.input[1].as_str())
        .collect();
    assert_eq!(biases.len(), 3, "one folded bias per reader: {biases:?}");
}

/// The norm's zero bias and a Linear's zero bias are one tensor: `drop` must not delete it.
#[test]
fn a_tensor_that_is_both_a_norm_bias_and_a_linear_bias_survives_drop_and_fold() {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let gamma = b.init("ln.weight", &[H], &values(3, H as usize));
    let zeros = b.init("zeros", &[H], &[0.0; H as usize]);
    let eps = b.constant(1e-5);
    let y = layer_norm(&mut b, &x, &gamma, &zeros, &eps, None);
    let w = b.init("fc.weight", &[H, H], &values(4, (H * H) as usize));
    let out = linear(&mut b, &y, &w, &zeros, "fc");
    // A second reader of the same zeros outside the norm and its consumer.
    let other = b.op("Add", &[&x, &zeros], vec![]);
    b.output(&out, F32);
    b.output(&other, F32);
    check_every_rewrite(&b, "norm bias = linear bias");

    let dir = tempfile::tempdir().unwrap();
    let original = b.save(dir.path(), "m.onnx");
    let w = rewrite(
        &original,
        dir.path(),
        "drop",
        &opts(Target::AdaNorm, Affine::Drop, None, true),
    );
    assert!(
        initializer_names(&w.model).iter().any(|n| n == "zeros"),
        "'zeros' is still read by two nodes and must stay"
    );
}

/// One gain read by two norms (tied parameters): both fold, drop and revert without
/// duplicating it.
#[test]
fn a_gain_tied_between_two_norms() {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let gamma = b.init("tied.weight", &[H], &values(5, H as usize));
    let beta = b.init("ln.bias", &[H], &values(6, H as usize));
    let eps = b.init("eps", &[], &[1e-5]);
    let y1 = layer_norm(&mut b, &x, &gamma, &beta, &eps, None);
    let w1 = b.init("fc1.weight", &[H, H], &values(7, (H * H) as usize));
    let b1 = b.init("fc1.bias", &[H], &values(8, H as usize));
    let h = linear(&mut b, &y1, &w1, &b1, "fc1");
    let y2 = layer_norm(&mut b, &h, &gamma, &beta, &eps, None);
    let w2 = b.init("fc2.weight", &[H, H], &values(9, (H * H) as usize));
    let out = linear(&mut b, &y2, &w2, &b1, "fc2");
    b.output(&out, F32);
    let changed = check_every_rewrite(&b, "tied gain");
    assert!(changed.values().all(|&n| n == 2), "{changed:?}");
}

/// Two opset-18 norms whose four ReduceMeans read one axes `Constant`: it belongs to neither, so
/// it stays, and `revert` does not make it a second time.
#[test]
fn a_shared_axes_constant_is_kept_and_not_recreated() {
    let mut b = Builder::new(18);
    let x = b.input("x", F32, &[2, 3, H]);
    let axes = b.constant_typed(common::I64, &[1], &[-1.0]);
    let gamma = b.init("ln.weight", &[H], &values(11, H as usize));
    let beta = b.init("ln.bias", &[H], &values(12, H as usize));
    let eps = b.constant(1e-5);
    let y1 = layer_norm(&mut b, &x, &gamma, &beta, &eps, Some(&axes));
    let gamma2 = b.init("ln2.weight", &[H], &values(13, H as usize));
    let y2 = layer_norm(&mut b, &y1, &gamma2, &beta, &eps, Some(&axes));
    b.output(&y2, F32);
    let changed = check_every_rewrite(&b, "shared axes Constant");
    assert!(changed.values().all(|&n| n == 2), "{changed:?}");
}

/// A tied embedding: the table the `Gather` reads is also the LM head's weight (`Gemm` with
/// `transB`). Folding the final norm's gain into the head must leave the embedding untouched.
#[test]
fn tied_embedding_and_output_weights() {
    let vocab = 6;
    let mut b = Builder::new(14);
    let ids = b.input("ids", common::I64, &[2, 3]);
    let table = b.init("wte.weight", &[vocab, H], &values(14, (vocab * H) as usize));
    let emb = b.op("Gather", &[&table, &ids], vec![]);
    let gamma = b.init("ln_f.weight", &[H], &values(15, H as usize));
    let beta = b.init("ln_f.bias", &[H], &values(16, H as usize));
    let eps = b.constant(1e-5);
    let y = layer_norm(&mut b, &emb, &gamma, &beta, &eps, None);
    let flat_shape = b.init_typed("flat", common::I64, &[2], &[-1.0, H as f64]);
    let flat = b.op("Reshape", &[&y, &flat_shape], vec![]);
    let head_bias = b.init("head.bias", &[vocab], &[0.0; 6]);
    b.node_named(
        "lm_head",
        "Gemm",
        &[&flat, &table, &head_bias],
        &["logits"],
        vec![("transB", A::I(1))],
    );
    b.output("logits", F32);
    b.output(&emb, F32);
    check_every_rewrite(&b, "tied embedding");

    let dir = tempfile::tempdir().unwrap();
    let original = b.save(dir.path(), "m.onnx");
    let w = rewrite(
        &original,
        dir.path(),
        "fold",
        &opts(Target::Simple, Affine::Fold, None, true),
    );
    let m = load_model(&w.model).unwrap();
    let gather = m
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "Gather")
        .unwrap();
    assert_eq!(
        gather.input[0], "wte.weight",
        "the embedding keeps the original table"
    );
    let head = m
        .graph()
        .node
        .iter()
        .find(|n| n.name() == "lm_head")
        .unwrap();
    assert_ne!(
        head.input[1], "wte.weight",
        "the head reads its own folded copy"
    );
}

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

/// The norm's mean is also read inside an If branch (an implicit input of the `If`): that read
/// is an escape like any other, so the norm is not rewritten, and every output stays valid.
#[test]
fn a_value_read_inside_an_if_branch_is_a_reader_too() {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let cond = b.input("cond", 9, &[]);
    let gamma = b.init("ln.weight", &[H], &values(17, H as usize));
    let beta = b.init("ln.bias", &[H], &values(18, H as usize));
    let eps = b.constant(1e-5);
    let y = layer_norm(&mut b, &x, &gamma, &beta, &eps, None);
    let mean = b
        .nodes
        .iter()
        .find(|n| n.op_type() == "ReduceMean")
        .unwrap()
        .output[0]
        .clone();
    let branch = |out: &str, reads: &str| GraphProto {
        name: Some(out.into()),
        node: vec![NodeProto {
            name: Some(format!("{out}/Identity")),
            op_type: Some("Identity".into()),
            input: vec![reads.into()],
            output: vec![out.into()],
            ..Default::default()
        }],
        output: vec![common::value_info(out, F32, &[2, 3, 1])],
        ..Default::default()
    };
    b.nodes.push(NodeProto {
        name: Some("branch".into()),
        op_type: Some("If".into()),
        input: vec![cond],
        output: vec!["branch_out".into()],
        attribute: vec![
            graph_attr("then_branch", branch("then_out", &mean)),
            graph_attr("else_branch", branch("else_out", &mean)),
        ],
        ..Default::default()
    });
    b.output(&y, F32);
    b.output("branch_out", F32);

    let dir = tempfile::tempdir().unwrap();
    let original = b.save(dir.path(), "m.onnx");
    let model = load_model(&original).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let matches = adanorm_onnx::patterns::find_matches(&g);
    assert_eq!(matches.len(), 1);
    assert!(
        !matches[0].rewritable,
        "the mean escapes into the If branch: {:?}",
        matches[0].reason
    );
    for (tag, o) in variants() {
        let w = rewrite(&original, dir.path(), tag, &o);
        assert_eq!(
            w.changes, 0,
            "{tag} changed a norm whose mean a branch reads"
        );
    }
}

/// An ε shared by a norm of the main graph and a norm inside an If branch (an outer-scope
/// read): the rewrite records it once, and `revert` restores both norms.
#[test]
fn an_epsilon_shared_with_an_if_branch_reverts() {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let cond = b.input("cond", 9, &[]);
    let gamma = b.init("ln.weight", &[H], &values(19, H as usize));
    let beta = b.init("ln.bias", &[H], &values(20, H as usize));
    let eps = b.init("eps", &[], &[1e-5]);
    let y = layer_norm(&mut b, &x, &gamma, &beta, &eps, None);
    // The branch: its own norm of y, reading the outer gamma, beta and eps.
    let mut inner = Builder::new(14);
    // Its generated names must not meet the outer graph's: move its counter past them.
    while inner.op("Identity", &[&x], vec![]) != format!("identity_{}_out", b.nodes.len() + 1) {}
    inner.nodes.clear();
    let z = layer_norm(&mut inner, &y, &gamma, &beta, &eps, None);
    let then_branch = GraphProto {
        name: Some("then".into()),
        node: inner.nodes.clone(),
        output: vec![common::value_info(&z, F32, &[2, 3, H])],
        ..Default::default()
    };
    let mut other = Builder::new(14);
    let w = other.op("Identity", &[&y], vec![]);
    let else_branch = GraphProto {
        name: Some("else".into()),
        node: other.nodes.clone(),
        output: vec![common::value_info(&w, F32, &[2, 3, H])],
        ..Default::default()
    };
    // Inner node names must differ from the outer ones (the builders count separately).
    let mut then_branch = then_branch;
    for n in &mut then_branch.node {
        n.name = Some(format!("then/{}", n.name()));
    }
    let mut else_branch = else_branch;
    for n in &mut else_branch.node {
        n.name = Some(format!("else/{}", n.name()));
        for o in &mut n.output {
            *o = format!("else/{o}");
        }
    }
    else_branch.output = vec![common::value_info(&format!("else/{w}"), F32, &[2, 3, H])];
    b.nodes.push(NodeProto {
        name: Some("branch".into()),
        op_type: Some("If".into()),
        input: vec![cond],
        output: vec!["branch_out".into()],
        attribute: vec![
            graph_attr("then_branch", then_branch),
            graph_attr("else_branch", else_branch),
        ],
        ..Default::default()
    });
    b.output("branch_out", F32);
    assert_valid(&b.model(), "the hand-built model");

    let dir = tempfile::tempdir().unwrap();
    let original = b.save(dir.path(), "m.onnx");
    for (tag, o) in variants() {
        let w = rewrite(&original, dir.path(), tag, &o);
        assert_eq!(w.changes, 2, "{tag}: both norms change");
        let back = reverted(&w, tag);
        let m = load_model(&back).unwrap();
        let eps_count = m
            .graph()
            .initializer
            .iter()
            .filter(|t| t.name() == "eps")
            .count();
        assert_eq!(eps_count, 1, "{tag}: eps is restored once");
        GraphIndex::build(&m).unwrap();
    }
}

/// The real exports (fixtures/sharing/make*.py): dynamo + onnxscript optimizer models whose q/k/v
/// and norm biases are one zero tensor and whose norms share one gain, a tied embedding, legacy
/// exports with shared constants. Every rewrite is valid; claimed-exact ones compute what the
/// original computes in tract; every revert gives the original's outputs bit for bit.
#[test]
fn real_exports_with_deduplicated_tensors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sharing");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 3, "{cases:?}");
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let original = case.join("model.onnx");
        let before = std::fs::read(&original).unwrap();
        let inputs = adanorm_onnx::npz::read_npz(&case.join("inputs.npz")).unwrap();
        let changed = check_variants(&original, &inputs, &name);
        for (tag, n) in changed {
            // (`fuse` leaves fused LayerNormalization nodes as they are.)
            assert!(n > 0 || tag == "fuse", "{name}, {tag}: nothing changed");
        }
        assert_eq!(
            std::fs::read(&original).unwrap(),
            before,
            "{name}: input changed"
        );
    }
}

/// A gain and bias written as `Constant` nodes: `drop` puts their values in the weights file and
/// the revert record keeps the nodes; revert must bring them back once, as the nodes (fuzz seed
/// 190: the values came back as initializers beside the restored nodes, each defined twice).
#[test]
fn a_gain_and_bias_made_by_constant_nodes_come_back_once_after_drop() {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let gamma = b.constant_typed(
        F32,
        &[H],
        &values(5, H as usize)
            .iter()
            .map(|&v| v as f64)
            .collect::<Vec<_>>(),
    );
    let beta = b.constant(0.25);
    let eps = b.constant(1e-5);
    let y = layer_norm(&mut b, &x, &gamma, &beta, &eps, None);
    let r = b.op("Relu", &[&y], vec![]);
    b.output(&r, F32);
    let changed = check_every_rewrite(&b, "Constant-node gain and bias");
    assert!(changed.values().all(|&n| n == 1), "{changed:?}");
}
