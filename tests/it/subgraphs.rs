//! LayerNorms inside subgraphs (If branches, Loop bodies, nested Ifs), as in merged decoders:
//! found with the graph they sit in, rewritten in place, run in tract against onnxruntime's
//! outputs for every branch, and reverted to the original graph byte for byte.
//! Fixtures: `fixtures/subgraphs/make.py`, and a real merged decoder from HF optimum
//! (`fixtures/subgraphs/export_gpt2_merged.py`).

use crate::common;
use std::path::{Path, PathBuf};

use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::npz::read_npz;
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::patterns::find_matches_everywhere;
use adanorm_onnx::rewrite::{plan::plan_model, revert::revert, Affine, Options, Target};
use adanorm_onnx::runner::{compare, run};
use prost::Message;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/subgraphs")
        .join(name)
}

fn opts(target: Target, affine: Affine, ck: Option<(f64, f64)>) -> Options {
    common::rewrite_options(target, affine, ck, true)
}

/// (graph label, node count) of every match.
fn found(model: &Path) -> Vec<(String, usize, bool)> {
    let m = load_model(model).unwrap();
    let g = GraphIndex::build(&m).unwrap();
    let subgraphs = g.subgraphs().unwrap();
    find_matches_everywhere(&g, &subgraphs)
        .into_iter()
        .flat_map(|(scope, ms)| {
            ms.into_iter()
                .map(move |m| (scope.scope.label(), m.nodes.len(), m.rewritable))
        })
        .collect()
}

/// Runs `model` on every `inputs_<case>.npz` of `dir` (but those in `skip`) against
/// `ref_<case>.npz`.
fn assert_every_case_matches(dir: &Path, model: &Path, tol: f64, skip: &[&str]) {
    let mut cases = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        let Some(case) = name
            .strip_prefix("inputs_")
            .and_then(|n| n.strip_suffix(".npz"))
        else {
            continue;
        };
        if skip.contains(&case) {
            continue;
        }
        cases += 1;
        let got = run(model, read_npz(&dir.join(&name)).unwrap())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let want = read_npz(&dir.join(format!("ref_{case}.npz"))).unwrap();
        for d in compare(&want, &got) {
            assert!(
                d.problem.is_none() && d.max_scaled <= tol,
                "{} case {case}: {d:?}",
                model.display()
            );
        }
    }
    assert!(cases > 0, "no cases in {}", dir.display());
}

fn rewritten(case: &str, dir: &Path, tag: &str, o: &Options) -> (PathBuf, usize, Vec<String>) {
    let model = load_model(&fixture(case).join("model.onnx")).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let outcome = plan_model(&g, o).unwrap();
    let out = dir.join(format!("{case}.{tag}.onnx"));
    save_model(&outcome.model, &out, true).unwrap();
    let notes = outcome
        .changes
        .iter()
        .filter_map(|c| c.note.clone())
        .collect();
    (out, outcome.changes.len(), notes)
}

#[test]
fn layernorms_are_found_in_the_graph_they_sit_in() {
    assert_eq!(
        found(&fixture("if_branches/model.onnx")),
        vec![
            ("If '/decoder/If' else_branch".to_string(), 9, true),
            ("If '/decoder/If' then_branch".to_string(), 9, true),
        ]
    );
    assert_eq!(
        found(&fixture("loop_body/model.onnx")),
        vec![("Loop '/refine/Loop' body".to_string(), 9, true)]
    );
    // A real merged decoder (HF optimum, opset 14): five decomposed LayerNorms per branch.
    let gpt2 = found(&fixture("gpt2_merged_optimum_op14/model.onnx"));
    assert_eq!(gpt2.len(), 10);
    for branch in ["else_branch", "then_branch"] {
        let here: Vec<_> = gpt2
            .iter()
            .filter(|(g, _, _)| g.ends_with(branch))
            .collect();
        assert_eq!(here.len(), 5, "{branch}");
        assert!(here
            .iter()
            .all(|(g, _, ok)| g.starts_with("If 'optimum::if'") && *ok));
    }
    let nested = found(&fixture("nested_if/model.onnx"));
    assert_eq!(nested.len(), 1);
    assert_eq!(
        nested[0].0,
        "If '/outer/If' then_branch > If '/inner/If' then_branch"
    );
    assert!(nested[0].2, "fp16 with float statistics is rewritable");
}

#[test]
fn rewrites_inside_subgraphs_compute_what_the_original_computed() {
    let tmp = tempfile::tempdir().unwrap();
    // tract cannot run Loop, nor the merged decoder's step with past keys (its If analysis
    // unifies the branches' shapes); it says so for the original models too. Those run in
    // onnxruntime instead (tests/python/test_rewrite.py, scripts/test).
    for (case, expected, tol, skip) in [
        ("if_branches", 2, 1e-4, &[][..]),
        ("nested_if", 1, 3e-2, &[]),
        ("gpt2_merged_optimum_op14", 10, 1e-4, &["step"]),
    ] {
        let dir = fixture(case);
        let (fused, n, _) = rewritten(
            case,
            tmp.path(),
            "fused",
            &opts(Target::Same, Affine::Keep, None),
        );
        assert_eq!(n, expected, "{case}");
        assert_every_case_matches(&dir, &fused, tol, skip);
        let (k0, _, _) = rewritten(
            case,
            tmp.path(),
            "k0",
            &opts(Target::AdaNorm, Affine::Keep, Some((1.0, 0.0))),
        );
        assert_every_case_matches(&dir, &k0, tol, skip);
        // Folding into weights the enclosing graph shares with other branches is refused.
        let (folded, _, notes) = rewritten(
            case,
            tmp.path(),
            "fold",
            &opts(Target::Simple, Affine::Fold, None),
        );
        assert!(
            notes.iter().all(|n| n.contains("inside a subgraph")),
            "{notes:?}"
        );
        assert_every_case_matches(&dir, &folded, tol, skip);
    }
}

/// The op types of each branch of the main graph's If, after `fuse` with `options`, and the
/// `ai.adanorm` version the model imports.
fn branch_ops_after(options: &Options) -> (Vec<Vec<String>>, Vec<Vec<usize>>, i64) {
    let tmp = tempfile::tempdir().unwrap();
    let (fused, _, _) = rewritten("if_branches", tmp.path(), "fused", options);
    let m = load_model(&fused).unwrap();
    let main = m.graph();
    assert_eq!(
        main.node.len(),
        2,
        "the main graph keeps its Constant and If"
    );
    let branches: Vec<&adanorm_onnx::onnx::proto::GraphProto> = main.node[1]
        .attribute
        .iter()
        .map(|a| a.g.as_ref().unwrap())
        .collect();
    let ops = branches
        .iter()
        .map(|g| {
            g.node
                .iter()
                .map(|n| format!("{}:{}", n.domain(), n.op_type()))
                .collect()
        })
        .collect();
    let arity = branches
        .iter()
        .map(|g| g.node.iter().map(|n| n.input.len()).collect())
        .collect();
    let version = m
        .proto
        .opset_import
        .iter()
        .find(|o| o.domain() == "ai.adanorm")
        .map_or(0, |o| o.version());
    (ops, arity, version)
}

#[test]
fn the_rewritten_graph_holds_the_op_where_the_subgraph_was() {
    // The else branch normalises Add(x, residual): fuse absorbs the Add as Skip (version 2).
    let (ops, arity, version) = branch_ops_after(&opts(Target::Same, Affine::Keep, None));
    let one = vec!["ai.adanorm:LayerNormSimple".to_string()];
    assert_eq!(ops, vec![one.clone(), one], "{ops:?}");
    assert!(
        arity.iter().any(|a| a[0] >= 4),
        "one node reads a Skip: {arity:?}"
    );
    assert_eq!(version, 2);
    // --no-residual keeps the Add and version 1.
    let mut keep = opts(Target::Same, Affine::Keep, None);
    keep.residual = false;
    let (ops, _, version) = branch_ops_after(&keep);
    assert!(ops.contains(&vec!["ai.adanorm:LayerNormSimple".to_string()]));
    assert!(ops.contains(&vec![
        ":Add".to_string(),
        "ai.adanorm:LayerNormSimple".to_string()
    ]));
    assert_eq!(version, 1);
}

#[test]
fn revert_restores_every_subgraph_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    for case in [
        "if_branches",
        "loop_body",
        "nested_if",
        "gpt2_merged_optimum_op14",
    ] {
        let (fused, _, _) = rewritten(
            case,
            tmp.path(),
            "fused",
            &opts(Target::AdaNorm, Affine::Keep, None),
        );
        let m = load_model(&fused).unwrap();
        let g = GraphIndex::build(&m).unwrap();
        let o = revert(&g, None).unwrap();
        let original = load_model(&fixture(case).join("model.onnx")).unwrap();
        assert_eq!(
            o.model.graph.as_ref().unwrap().encode_to_vec(),
            original.graph().encode_to_vec(),
            "{case}"
        );
        assert!(o
            .model
            .opset_import
            .iter()
            .all(|i| i.domain() != "ai.adanorm"));
    }
}

#[test]
fn the_new_nodes_outputs_are_declared_in_their_branch_with_numbers_only() {
    // ORT's fusions after our nodes need their shapes; in a subgraph a `dim_param` would be
    // bound apart from the main graph's (tract fails to unify it with the run's size), so only
    // numbers are written there.
    let tmp = tempfile::tempdir().unwrap();
    let (fused, _, _) = rewritten(
        "gpt2_merged_optimum_op14",
        tmp.path(),
        "fused",
        &opts(Target::Same, Affine::Keep, None),
    );
    let m = load_model(&fused).unwrap();
    let mut declared_dims = 0;
    let mut outputs = 0;
    for node in &m.graph().node {
        for g in node.attribute.iter().filter_map(|a| a.g.as_ref()) {
            for n in g.node.iter().filter(|n| n.domain() == "ai.adanorm") {
                for out in n.output.iter().filter(|o| !o.is_empty()) {
                    outputs += 1;
                    let vi = g
                        .value_info
                        .iter()
                        .find(|v| v.name() == out)
                        .unwrap_or_else(|| panic!("{out} is not declared in its branch"));
                    let Some(adanorm_onnx::onnx::proto::type_proto::Value::TensorType(t)) =
                        vi.r#type.as_ref().and_then(|t| t.value.as_ref())
                    else {
                        panic!("{out}: not a tensor type");
                    };
                    assert_eq!(t.elem_type(), 1, "{out}: float");
                    for d in t.shape.iter().flat_map(|s| &s.dim) {
                        use adanorm_onnx::onnx::proto::tensor_shape_proto::dimension::Value;
                        assert!(!matches!(d.value, Some(Value::DimParam(_))), "{out}: {d:?}");
                        declared_dims += matches!(d.value, Some(Value::DimValue(32))) as usize;
                    }
                }
            }
        }
    }
    assert_eq!(outputs, 10, "five norms per branch");
    assert!(declared_dims > 0, "some row length is declared");
    // And the fused model still runs every branch in tract.
    let dir = fixture("gpt2_merged_optimum_op14");
    assert_every_case_matches(&dir, &fused, 1e-4, &["step"]);
}
