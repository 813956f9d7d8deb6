//! Every zoo model, rewritten, run in tract with the ai.adanorm ops and compared with the
//! exporter's reference outputs: `fuse`; `rewrite --to adanorm --k 0 --c 1` and
//! `rewrite --to simple --affine fold` on LayerNorm models; AdaNorm and LayerNorm-simple models
//! rewritten to their own kind. Tolerances: fp32 1e-4, fp16 3e-2, as max |out - ref| /
//! max(1, |ref|). `revert` of an `--affine drop` rewrite with its weights gives the original
//! model's outputs bit for bit. The zoo here includes fixtures/normops.

use crate::common;
use std::path::{Path, PathBuf};

use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::npz::read_npz;
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::patterns::{find_matches, summary, Family};
use adanorm_onnx::rewrite::{
    plan::plan, revert::revert, weights::WeightsFile, Affine, Options, Target,
};
use adanorm_onnx::runner::{compare, run};

/// The zoo, and the LayerNorms written with other ONNX normalisation ops (fixtures/normops,
/// same layout, onnxruntime's outputs as references).
fn zoo() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<PathBuf> = ["fixtures/zoo", "fixtures/normops"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    v.sort();
    v
}

use crate::common::rewrite_options as opts;

/// Rewrites `case`'s model with `o`, saves it (and its weights) in `dir`, returns the path.
fn rewritten(case: &Path, dir: &Path, tag: &str, o: &Options) -> (PathBuf, Option<PathBuf>, usize) {
    let model = load_model(&case.join("model.onnx")).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let outcome = plan(&g, &find_matches(&g), o).unwrap();
    let out = dir.join(format!("{tag}.onnx"));
    save_model(&outcome.model, &out, true).unwrap();
    let w = outcome.weights.map(|w| {
        let p = dir.join(format!("{tag}.safetensors"));
        w.save(&p, true).unwrap();
        p
    });
    (out, w, outcome.changes.len())
}

fn assert_matches_reference(case: &Path, model: &Path) {
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    let tol = if name.contains("fp16") { 3e-2 } else { 1e-4 };
    let outputs = run(model, read_npz(&case.join("inputs.npz")).unwrap())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // Quantised models round to int8 between ops, and tract's integer kernels round some
    // ties otherwise than ONNX Runtime's (ref_output.npz): there the reference is the
    // original model in tract, so the comparison is of the rewrite alone.
    let quantised = name.contains("qdq") || name.contains("qdynamic");
    let reference = if quantised {
        run(
            &case.join("model.onnx"),
            read_npz(&case.join("inputs.npz")).unwrap(),
        )
        .unwrap()
    } else {
        read_npz(&case.join("ref_output.npz")).unwrap()
    };
    let diffs = compare(&reference, &outputs);
    assert!(!diffs.is_empty());
    for d in diffs {
        assert!(
            d.problem.is_none() && d.max_scaled <= tol,
            "{name} {}: {d:?}",
            model.display()
        );
    }
}

fn families(case: &Path) -> [(Family, usize); 4] {
    let model = load_model(&case.join("model.onnx")).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    summary(&find_matches(&g))
}

fn count(case: &Path, f: Family) -> usize {
    families(case).iter().find(|(x, _)| *x == f).unwrap().1
}

#[test]
fn fuse_output_matches_the_reference_in_tract() {
    let tmp = tempfile::tempdir().unwrap();
    let mut fused_any = 0;
    for case in zoo() {
        let (out, _, n) = rewritten(
            &case,
            tmp.path(),
            "fused",
            &opts(Target::Same, Affine::Keep, None, false),
        );
        fused_any += n;
        assert_matches_reference(&case, &out);
    }
    assert!(
        fused_any >= 30,
        "the zoo has 30+ decomposed normalisations to fuse, fused {fused_any}"
    );
}

#[test]
fn layernorm_rewrites_that_keep_the_function_match_in_tract() {
    let tmp = tempfile::tempdir().unwrap();
    // (A model that also holds AdaNorms has no single k, C that keeps them all.)
    for case in zoo()
        .into_iter()
        .filter(|c| count(c, Family::LayerNorm) > 0 && count(c, Family::AdaNorm) == 0)
    {
        let (a, _, _) = rewritten(
            &case,
            tmp.path(),
            "k0",
            &opts(Target::AdaNorm, Affine::Keep, Some((1.0, 0.0)), true),
        );
        assert_matches_reference(&case, &a);
        let (f, _, _) = rewritten(
            &case,
            tmp.path(),
            "fold",
            &opts(Target::Simple, Affine::Fold, None, true),
        );
        assert_matches_reference(&case, &f);
    }
}

#[test]
fn revert_of_a_drop_matches_in_tract() {
    let tmp = tempfile::tempdir().unwrap();
    for case in zoo() {
        // tract cannot run Keras 2's BatchNormalization with computed statistics, so a model
        // reverted to it neither; tests/python/test_rewrite.py checks that revert in onnxruntime.
        let Ok(original) = run(
            &case.join("model.onnx"),
            read_npz(&case.join("inputs.npz")).unwrap(),
        ) else {
            continue;
        };
        let (d, w, _) = rewritten(
            &case,
            tmp.path(),
            "drop",
            &opts(Target::AdaNorm, Affine::Drop, None, true),
        );
        let model = load_model(&d).unwrap();
        let g = GraphIndex::build(&model).unwrap();
        let weights = w.as_deref().map(|p| WeightsFile::load(p).unwrap());
        let o = revert(&g, weights.as_ref()).unwrap();
        let r = tmp.path().join("reverted.onnx");
        save_model(&o.model, &r, true).unwrap();
        // The original subgraph is back: the same outputs as the original model, bit for bit
        // (the reference itself can be out of reach of tract's float16 arithmetic on the
        // decomposed graph; the rewritten models are compared with it above).
        let reverted = run(&r, read_npz(&case.join("inputs.npz")).unwrap()).unwrap();
        let diffs = compare(&original, &reverted);
        assert!(!diffs.is_empty());
        for d in diffs {
            assert!(
                d.problem.is_none() && d.max_abs == 0.0,
                "{}: {d:?}",
                case.display()
            );
        }
    }
}

#[test]
fn adanorm_and_lnsimple_rewritten_to_their_own_kind_match_in_tract() {
    let tmp = tempfile::tempdir().unwrap();
    for case in zoo() {
        // Models of one family only (a rewrite to AdaNorm changes what a LayerNorm-simple
        // computes; mixed models are covered by `fuse`).
        let total: usize = families(&case).iter().map(|(_, n)| n).sum();
        let target = if count(&case, Family::AdaNorm) == total && total > 0 {
            Target::AdaNorm
        } else if count(&case, Family::LnSimple) == total && total > 0 {
            Target::Simple
        } else {
            continue;
        };
        let (out, _, n) = rewritten(
            &case,
            tmp.path(),
            "own",
            &opts(target, Affine::Keep, None, true),
        );
        let rewritable = {
            let model = load_model(&case.join("model.onnx")).unwrap();
            let g = GraphIndex::build(&model).unwrap();
            find_matches(&g).iter().filter(|m| m.rewritable).count()
        };
        assert_eq!(n, rewritable, "{}", case.display());
        assert_matches_reference(&case, &out);
    }
}

/// A channels-first LayerNorm over axis 1 of a rank-3 `[N, C, L]` input whose gain is computed
/// (`Identity` of a `[C, 1]` initializer, so the rewrite reshapes it) and whose bias is a
/// `[1, C, 1]` initializer (a renamed `[C]` view): the rewrite, with its Transposes, must compute
/// what the decomposed original computes, in tract, on random inputs.
#[test]
fn channels_first_rank_3_with_a_computed_gain_matches_the_original_in_tract() {
    use common::{Builder, A, F32};
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 4, 6]);
    let mean = |b: &mut Builder, v: &str| {
        b.op(
            "ReduceMean",
            &[v],
            vec![("axes", A::Is(vec![1])), ("keepdims", A::I(1))],
        )
    };
    let m = mean(&mut b, &x);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let two = b.constant(2.0);
    let p = b.op("Pow", &[&d, &two], vec![]);
    let v = mean(&mut b, &p);
    let e = b.constant(1e-6);
    let ve = b.op("Add", &[&v, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let n = b.op("Div", &[&d, &s], vec![]);
    let g0 = b.init("gamma0", &[4, 1], &[0.5, -1.0, 2.0, 1.5]);
    let g = b.op("Identity", &[&g0], vec![]);
    let y = b.op("Mul", &[&n, &g], vec![]);
    let beta = b.init("beta", &[1, 4, 1], &[0.1, 0.2, -0.3, 0.4]);
    let z = b.op("Add", &[&y, &beta], vec![]);
    b.node_named("out", "Identity", &[&z], &["out"], vec![]);
    b.output("out", F32);

    let tmp = tempfile::tempdir().unwrap();
    let original = b.save(tmp.path(), "cf");
    let model = load_model(&original).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let matches = find_matches(&g);
    assert_eq!(matches.len(), 1);
    assert!(
        matches[0].channels_first && matches[0].rewritable,
        "{:?}",
        matches[0]
    );
    let outcome = plan(&g, &matches, &opts(Target::Same, Affine::Keep, None, false)).unwrap();
    assert_eq!(outcome.changes.len(), 1);
    assert!(outcome.changes[0].same_function);
    let ops: Vec<&str> = outcome
        .model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type())
        .collect();
    assert_eq!(
        ops.iter().filter(|o| **o == "Transpose").count(),
        2,
        "{ops:?}"
    );
    assert!(
        ops.contains(&"Reshape"),
        "the computed gain is reshaped to [C]: {ops:?}"
    );
    let fused = tmp.path().join("cf.fused.onnx");
    save_model(&outcome.model, &fused, true).unwrap();

    let inputs = adanorm_onnx::runner::random_inputs(&original, &Default::default(), 7).unwrap();
    let want = run(&original, inputs.clone()).unwrap();
    let got = run(&fused, inputs).unwrap();
    let diffs = compare(&want, &got);
    assert_eq!(diffs.len(), 1);
    assert!(
        diffs[0].problem.is_none() && diffs[0].max_scaled <= 1e-5,
        "{:?}",
        diffs[0]
    );
}

/// Version-2 nodes in `model` that read a residual (`Skip` present).
fn residual_nodes(model: &Path) -> usize {
    load_model(model)
        .unwrap()
        .graph()
        .node
        .iter()
        .filter(|n| n.domain() == "ai.adanorm" && n.input.get(3).is_some_and(|s| !s.is_empty()))
        .count()
}

#[test]
fn every_residual_norm_of_the_zoo_absorbs_its_add_and_revert_restores_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/zoo");
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("residual_truth.json")).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut absorbed = 0;
    let cases: Vec<PathBuf> = zoo().into_iter().filter(|c| c.starts_with(&root)).collect();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let expected = &truth[name.as_str()];
        assert!(expected.is_object(), "{name} has no residual ground truth");
        for (tool, include_fused) in [("fuse", false), ("rewrite", true)] {
            let (out, _, _) = rewritten(
                case,
                tmp.path(),
                tool,
                &opts(Target::Same, Affine::Keep, None, include_fused),
            );
            let n = residual_nodes(&out);
            assert_eq!(
                n as u64,
                expected[tool].as_u64().unwrap(),
                "{name} after {tool}: {n} norms absorbed their residual Add ({})",
                expected["why"]
            );
            absorbed += n;
            assert_matches_reference(case, &out);
            if n == 0 {
                continue;
            }
            // revert brings the Adds (and Identity copies) back as they were.
            let model = load_model(&out).unwrap();
            let o = revert(&GraphIndex::build(&model).unwrap(), None).unwrap();
            let original = load_model(&case.join("model.onnx")).unwrap();
            assert_eq!(
                common::node_signatures(&o.model),
                common::node_signatures(&original.proto),
                "{name}: revert of {tool}"
            );
        }
    }
    assert_eq!(
        truth.as_object().unwrap().len(),
        cases.len() + 1,
        "every ground-truth entry names a zoo model"
    );
    assert!(absorbed >= 100, "absorbed {absorbed}");
}
