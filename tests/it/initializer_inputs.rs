//! Initializers that are also graph inputs. Below IR version 4 every initializer had to be
//! listed as an input (the legacy exporters at opset 7–8 write IR 3), so there the listing
//! says nothing and the initializer is the model's constant: the norms are found, their
//! weights absorbed, and a tensor `fuse` adds is listed too (and unlisted again by `revert`).
//! From IR 4 such an initializer is a default a feed may override: never a constant.

use std::path::Path;

use crate::common::{self, Builder, A, F32};
use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::proto::ModelProto;
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::patterns::{find_matches, Family};
use adanorm_onnx::rewrite::{plan::plan_model, revert::revert, Affine, Target};
use adanorm_onnx::runner::{compare, run};
use adanorm_tract::tract_onnx::prelude::Tensor;

const H: i64 = 8;

/// The legacy exporter's LayerNorm over x [2, 3, H] at opset 8, every constant an initializer
/// listed as a graph input; the gain of `gamma_dims`.
fn legacy_layer_norm(ir_version: i64, gamma_dims: &[i64]) -> ModelProto {
    let mut b = Builder::new(8);
    let x = b.input("x", F32, &[2, 3, H]);
    let vals = |seed: usize| -> Vec<f32> {
        (0..H as usize)
            .map(|i| ((i * 7 + seed * 3) % 11) as f32 / 5.0 - 1.0)
            .collect()
    };
    let param = |b: &mut Builder, name: &str, dims: &[i64], v: &[f32]| {
        b.init(name, dims, v);
        b.inputs.push(common::value_info(name, F32, dims));
        name.to_string()
    };
    let gamma = param(&mut b, "gamma", gamma_dims, &vals(1));
    let beta = param(&mut b, "beta", &[H], &vals(2));
    let eps = param(&mut b, "eps", &[], &[1e-5]);
    let two = param(&mut b, "two", &[], &[2.0]);
    let m = b.op("ReduceMean", &[&x], vec![("axes", A::Is(vec![-1]))]);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let sq = b.op("Pow", &[&d, &two], vec![]);
    let var = b.op("ReduceMean", &[&sq], vec![("axes", A::Is(vec![-1]))]);
    let ve = b.op("Add", &[&var, &eps], vec![]);
    let sd = b.op("Sqrt", &[&ve], vec![]);
    let n = b.op("Div", &[&d, &sd], vec![]);
    let g = b.op("Mul", &[&n, &gamma], vec![]);
    b.node_named("ln_out", "Add", &[&g, &beta], &["y"], vec![]);
    b.output("y", F32);
    let mut model = b.model();
    model.ir_version = Some(ir_version);
    model
}

fn save(model: &ModelProto, dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    save_model(model, &path, true).unwrap();
    path
}

fn matches_of(model: &ModelProto) -> Vec<adanorm_onnx::patterns::Match> {
    let dir = tempfile::tempdir().unwrap();
    let m = load_model(&save(model, dir.path(), "m.onnx")).unwrap();
    let g = GraphIndex::build(&m).unwrap();
    find_matches(&g)
}

fn input_names(model: &ModelProto) -> Vec<String> {
    let g = model.graph.as_ref().unwrap();
    g.input.iter().map(|v| v.name().to_string()).collect()
}

fn feeds() -> Vec<(String, Tensor)> {
    let n = (6 * H) as usize;
    let x: Vec<f32> = (0..n).map(|i| ((i * 13) % 17) as f32 / 4.0 - 2.0).collect();
    vec![(
        "x".to_string(),
        Tensor::from_shape(&[2, 3, H as usize], &x).unwrap(),
    )]
}

#[test]
fn at_ir_3_initializers_listed_as_inputs_are_the_models_constants() {
    let ms = matches_of(&legacy_layer_norm(3, &[H]));
    assert_eq!(ms.len(), 1, "{ms:#?}");
    let m = &ms[0];
    assert_eq!(m.family, Family::LayerNorm);
    assert!(m.rewritable, "{:?}", m.reason);
    assert_eq!(
        (m.scale.as_deref(), m.bias.as_deref()),
        (Some("gamma"), Some("beta"))
    );
    // From IR 4 the same listing makes them defaults a feed may override: epsilon and the
    // exponent are not constants, so there is no LayerNorm to find.
    assert!(matches_of(&legacy_layer_norm(4, &[H])).is_empty());
}

#[test]
fn fuse_at_ir_3_lists_the_tensors_it_adds_and_revert_unlists_them() {
    let dir = tempfile::tempdir().unwrap();
    for gamma_dims in [&[H][..], &[1, 1, H]] {
        let what = format!("gain {gamma_dims:?}");
        let original = legacy_layer_norm(3, gamma_dims);
        let original_path = save(&original, dir.path(), "original.onnx");
        let loaded = load_model(&original_path).unwrap();
        let g = GraphIndex::build(&loaded).unwrap();
        let options = common::rewrite_options(Target::Same, Affine::Keep, None, true);
        let outcome = plan_model(&g, &options).unwrap();
        let fused = outcome.model.graph.as_ref().unwrap();
        let ops: Vec<&str> = fused.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["LayerNormSimple"], "{what}");
        // Every initializer is a graph input, as IR 3 requires (the [1, 1, H] gain is read
        // through a new [H] view of it).
        let inputs = input_names(&outcome.model);
        for t in &fused.initializer {
            assert!(
                inputs.iter().any(|i| i == t.name()),
                "{what}: {} unlisted",
                t.name()
            );
        }
        // ε and the exponent, which only the replaced nodes read, go with their listings (at
        // IR 3 a listing is no feed); so does the [1, 1, H] gain, read through an [H] view.
        let mut kept: Vec<&str> = fused.initializer.iter().map(|t| t.name()).collect();
        kept.sort_unstable();
        let gain = if gamma_dims.len() > 1 {
            "gamma:y/LayerNormSimple"
        } else {
            "gamma"
        };
        assert_eq!(kept, ["beta", gain], "{what}");
        assert!(
            !inputs.iter().any(|i| i == "eps" || i == "two"),
            "{what}: {inputs:?}"
        );
        let fused_path = save(&outcome.model, dir.path(), "fused.onnx");
        let want = run(&original_path, feeds()).unwrap();
        let got = run(&fused_path, feeds()).unwrap_or_else(|e| panic!("{what}: {e}"));
        for d in compare(&want, &got) {
            assert!(d.problem.is_none() && d.max_scaled <= 1e-5, "{what}: {d:?}");
        }
        // revert restores the graph, its inputs included.
        let back_model = load_model(&fused_path).unwrap();
        let back = revert(&GraphIndex::build(&back_model).unwrap(), None).unwrap();
        assert_eq!(
            back.model.graph.as_ref().unwrap().node,
            original.graph.as_ref().unwrap().node,
            "{what}"
        );
        assert_eq!(input_names(&back.model), input_names(&original), "{what}");
    }
}

#[test]
fn a_drop_at_ir_3_takes_the_weights_and_their_listings_and_revert_puts_both_back() {
    // At IR 3 a dropped gain's listing is no feed: it goes with the tensor (a listed input
    // without its initializer would be a required feed), and revert gives it back in its place.
    let dir = tempfile::tempdir().unwrap();
    let original = legacy_layer_norm(3, &[H]);
    let original_path = save(&original, dir.path(), "original.onnx");
    let loaded = load_model(&original_path).unwrap();
    let g = GraphIndex::build(&loaded).unwrap();
    let options = common::rewrite_options(Target::Simple, Affine::Drop, None, true);
    let outcome = plan_model(&g, &options).unwrap();
    assert_eq!(input_names(&outcome.model), ["x"]);
    assert!(outcome.model.graph.as_ref().unwrap().initializer.is_empty());
    let dropped = save(&outcome.model, dir.path(), "dropped.onnx");
    let weights = dir.path().join("dropped.safetensors");
    outcome.weights.unwrap().save(&weights, true).unwrap();
    let model = load_model(&dropped).unwrap();
    let index = GraphIndex::build(&model).unwrap();
    let refused = revert(&index, None).err().expect("the weights are needed");
    assert!(refused.to_string().contains("--weights"), "{refused}");
    let w = adanorm_onnx::rewrite::weights::WeightsFile::load(&weights).unwrap();
    let back = revert(&index, Some(&w)).unwrap();
    assert_eq!(input_names(&back.model), input_names(&original));
    let back_path = save(&back.model, dir.path(), "back.onnx");
    let want = run(&original_path, feeds()).unwrap();
    let got = run(&back_path, feeds()).unwrap();
    for d in compare(&want, &got) {
        assert!(d.problem.is_none() && d.max_scaled == 0.0, "{d:?}");
    }
}
