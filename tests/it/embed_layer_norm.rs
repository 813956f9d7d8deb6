//! ONNX Runtime's `EmbedLayerNormalization` in real optimizer output (fixtures/ort_optimised,
//! made by its make.py): `rewrite` splits the lookups into standard ops in front of the new
//! node, so the model runs in tract; `fuse` keeps the fused op; `revert` restores it exactly.
//! (Its semantics case by case, against ONNX Runtime itself, are in
//! tests/python/test_rewrite.py.)

use std::path::{Path, PathBuf};

use crate::common::node_signatures;
use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::npz::read_npz;
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::patterns::find_matches;
use adanorm_onnx::rewrite::plan::plan_model;
use adanorm_onnx::rewrite::revert::revert;
use adanorm_onnx::rewrite::{Affine, Target};
use adanorm_onnx::runner::{compare, run};

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/ort_optimised")
        .join(name)
}

/// `rewrite` (same function: the matches' own kind) or `fuse` of `name`'s model, saved.
fn rewritten(name: &str, include_fused: bool, dir: &Path) -> (PathBuf, usize) {
    let model = load_model(&case(name).join("model.onnx")).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let options = crate::common::rewrite_options(Target::Same, Affine::Keep, None, include_fused);
    let outcome = plan_model(&g, &options).unwrap();
    let out = dir.join(format!("{name}.{include_fused}.onnx"));
    save_model(&outcome.model, &out, true).unwrap();
    (out, outcome.changes.len())
}

#[test]
fn embed_layer_normalization_is_found_rewritable_with_its_table_type() {
    for name in ["bert_ort_opt", "bert_ort_opt_embed_skip"] {
        let model = load_model(&case(name).join("model.onnx")).unwrap();
        let g = GraphIndex::build(&model).unwrap();
        let ms = find_matches(&g);
        assert_eq!(
            ms.len(),
            5,
            "{name}: the embedding norm and four SkipLayerNormalization"
        );
        let embed = ms
            .iter()
            .find(|m| g.node(m.nodes[0]).op_type() == "EmbedLayerNormalization")
            .unwrap();
        assert!(embed.rewritable, "{name}: {embed:#?}");
        assert_eq!(embed.dtype, Some(1), "{name}: the word table's float32");
        assert!(embed.scale.is_some() && embed.bias.is_some(), "{name}");
    }
}

#[test]
fn rewrite_splits_the_embedding_lookups_and_tract_runs_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let name = "bert_ort_opt_embed_skip";
    let (out, changes) = rewritten(name, true, dir.path());
    assert_eq!(changes, 5);
    let model = load_model(&out).unwrap();
    let contrib: Vec<String> = node_signatures(&model.proto)
        .into_iter()
        .filter(|o| o.starts_with("com.microsoft"))
        .collect();
    assert!(contrib.is_empty(), "{contrib:?}");
    // The lookups as standard ops: word and segment Gathers, the position rows by Slice.
    let all = node_signatures(&model.proto);
    assert!(all.iter().any(|o| o.starts_with(":Slice:")), "{all:?}");
    assert!(all.iter().filter(|o| o.starts_with(":Gather:")).count() >= 2);
    let outputs = run(&out, read_npz(&case(name).join("inputs.npz")).unwrap()).unwrap();
    let reference = read_npz(&case(name).join("ref_output.npz")).unwrap();
    let diffs = compare(&reference, &outputs);
    assert!(!diffs.is_empty());
    for d in diffs {
        assert!(d.problem.is_none() && d.max_scaled <= 1e-4, "{d:?}");
    }
    // revert gives the fused op back, and every other node as it was.
    let back = revert(&GraphIndex::build(&model).unwrap(), None).unwrap();
    let original = load_model(&case(name).join("model.onnx")).unwrap();
    assert_eq!(
        node_signatures(&back.model),
        node_signatures(&original.proto)
    );
}

#[test]
fn mask_index_read_by_attention_is_computed_by_standard_ops() {
    let dir = tempfile::tempdir().unwrap();
    let name = "bert_ort_opt";
    let original = load_model(&case(name).join("model.onnx")).unwrap();
    let eln = original
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "EmbedLayerNormalization")
        .unwrap();
    let mask_index = eln.output[1].clone();
    let (out, _) = rewritten(name, true, dir.path());
    let model = load_model(&out).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    assert!(!node_signatures(&model.proto)
        .iter()
        .any(|o| o.contains(":EmbedLayerNormalization:")));
    let (_, producer) = g.producer_node(&mask_index).unwrap();
    assert_eq!(producer.op_type(), "ReduceSum");
    let readers: Vec<&str> = g
        .consumers(&mask_index)
        .iter()
        .map(|&id| g.node(id).op_type())
        .collect();
    assert_eq!(readers, ["Attention", "Attention"]);
    let back = revert(&g, None).unwrap();
    assert_eq!(
        node_signatures(&back.model),
        node_signatures(&original.proto)
    );
}

#[test]
fn fuse_keeps_embed_layer_normalization() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["bert_ort_opt", "bert_ort_opt_embed_skip"] {
        let (out, changes) = rewritten(name, false, dir.path());
        assert_eq!(changes, 0, "{name}: fuse leaves fused ops to the runtime");
        let model = load_model(&out).unwrap();
        assert!(node_signatures(&model.proto)
            .iter()
            .any(|o| o.contains(":EmbedLayerNormalization:")));
    }
}
