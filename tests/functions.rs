//! LayerNorms inside model-local functions (PyTorch's `export_modules_as_functions`): the calls
//! are inlined (each with its own `eps`), found, rewritten, and run in tract against PyTorch's
//! output. Fixture: `fixtures/functions/export.py`.

use std::path::{Path, PathBuf};

use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::npz::read_npz;
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::patterns::find_matches_everywhere;
use adanorm_onnx::patterns::local_functions::inline_functions_with_matches;
use adanorm_onnx::rewrite::{plan::plan_model, revert::revert, Affine, Options, Target};
use adanorm_onnx::runner::{compare, run};

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
