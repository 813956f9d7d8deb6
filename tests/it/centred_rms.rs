//! An RMSNorm op over `Sub(x, ReduceMean(x))` is a LayerNorm of `x`: ONNX Runtime's transformer
//! optimiser writes `SimplifiedLayerNormalization` so where two LayerNorms read one input
//! (GPT-NeoX and Falcon parallel blocks), both reading one shared Sub. Hand-built here (the real
//! optimiser output is `fixtures/ort_optimised/gptneox_ort_opt`); tract has no
//! SimplifiedLayerNormalization, so the reference is the same graph with ONNX
//! `LayerNormalization` in its place.

use std::path::Path;

use crate::common::{assert_same_outputs, node_signatures, rewrite_options, Builder, A};
use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::patterns::{Family, Match};
use adanorm_onnx::rewrite::plan::plan_model;
use adanorm_onnx::rewrite::revert::revert;
use adanorm_onnx::rewrite::{Affine, Target};
use adanorm_tract::tract_onnx::prelude::Tensor;

const F32: i32 = 1;
const H: i64 = 8;
const EPS: f32 = 1e-5;

/// How the second norm (and anything else) reads the centring.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// Two norms share one Sub, nothing else reads it.
    Shared,
    /// A third node reads the centred value too.
    CentredReadElsewhere,
    /// The second norm's gain is `[3, H]`: no ai.adanorm node can take it (not rewritable).
    SecondNotRewritable,
}

/// `x → ReduceMean → Sub → two SimplifiedLayerNormalization(·, γ_i)`, the first with `Add(β)`
/// after it, summed; or with `reference` the same with `LayerNormalization(x, γ_i, β_i)` (what
/// it computes).
fn model(shape: Shape, reference: bool) -> Builder {
    let mut b = Builder::new(17);
    let x = b.input("x", F32, &[2, 3, H]);
    let g1: Vec<f32> = (0..H).map(|i| 1.0 + 0.1 * i as f32).collect();
    let g2_dims: &[i64] = if shape == Shape::SecondNotRewritable {
        &[3, H]
    } else {
        &[H]
    };
    let n2: i64 = g2_dims.iter().product();
    let g2: Vec<f32> = (0..n2).map(|i| 0.5 - 0.05 * i as f32).collect();
    let g1 = b.init("g1", &[H], &g1);
    let g2 = b.init("g2", g2_dims, &g2);
    let zeros = b.init("zeros", &[H], &[0.0; H as usize]);
    let b1: Vec<f32> = (0..H).map(|i| 0.25 * i as f32 - 1.0).collect();
    let b1 = b.init("b1", &[H], &b1);
    let eps = || vec![("axis", A::I(-1)), ("epsilon", A::F(EPS))];
    let (y1, y2);
    let mut centred = None;
    if reference {
        y1 = b.op("LayerNormalization", &[&x, &g1, &b1], eps());
        // LayerNormalization broadcasts a [3, H] gain over [2, 3, H] as the Simplified op does.
        y2 = b.op("LayerNormalization", &[&x, &g2, &zeros], eps());
        if shape == Shape::CentredReadElsewhere {
            let mean = b.op(
                "ReduceMean",
                &[&x],
                vec![("axes", A::Is(vec![-1])), ("keepdims", A::I(1))],
            );
            centred = Some(b.op("Sub", &[&x, &mean], vec![]));
        }
    } else {
        let mean = b.op(
            "ReduceMean",
            &[&x],
            vec![("axes", A::Is(vec![-1])), ("keepdims", A::I(1))],
        );
        let c = b.op("Sub", &[&x, &mean], vec![]);
        // The first norm's bias as the optimiser writes it: an Add after the node.
        let n1 = b.op("SimplifiedLayerNormalization", &[&c, &g1], eps());
        y1 = b.op("Add", &[&n1, &b1], vec![]);
        y2 = b.op("SimplifiedLayerNormalization", &[&c, &g2], eps());
        centred = Some(c);
    }
    let mut out = b.op("Add", &[&y1, &y2], vec![]);
    if shape == Shape::CentredReadElsewhere {
        out = b.op("Add", &[&out, centred.as_ref().unwrap()], vec![]);
    }
    b.node_named("out", "Identity", &[&out], &["out"], vec![]);
    b.output("out", F32);
    b
}

fn feeds() -> Vec<(String, Tensor)> {
    let vals: Vec<f32> = (0..6 * H)
        .map(|i| ((i * 37 % 23) as f32) / 4.0 - 2.5)
        .collect();
    vec![(
        "x".to_string(),
        Tensor::from_shape(&[2, 3, H as usize], &vals).unwrap(),
    )]
}

fn op_count(path: &Path, op: &str) -> usize {
    let m = load_model(path).unwrap();
    node_signatures(&m.proto)
        .iter()
        .filter(|s| s.split(':').nth(1) == Some(op))
        .count()
}

/// `fuse` (`plan_model` with fused ops kept, as the CLI's `fuse`) of `path`, saved beside it.
fn fused(path: &Path) -> (std::path::PathBuf, usize) {
    let model = load_model(path).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let options = rewrite_options(Target::Same, Affine::Keep, None, false);
    let outcome = plan_model(&g, &options).unwrap();
    let out = path.with_extension("fused.onnx");
    save_model(&outcome.model, &out, true).unwrap();
    (out, outcome.changes.len())
}

/// `revert` of `written` holds the nodes of `original` (the centring once, every norm).
fn assert_reverts_to(written: &Path, original: &Path) {
    let model = load_model(written).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let back = revert(&g, None).unwrap_or_else(|e| panic!("revert: {e}"));
    let original = load_model(original).unwrap();
    assert_eq!(
        node_signatures(&back.model),
        node_signatures(&original.proto)
    );
}

fn is_centred_layer_norm(m: &Match) -> bool {
    m.family == Family::LayerNorm
        && m.form_name()
            .contains("SimplifiedLayerNormalization of a centred input")
}

#[test]
fn both_norms_of_a_shared_centring_are_layer_norms_and_the_centring_goes_with_them() {
    let ms = model(Shape::Shared, false).matches();
    assert_eq!(ms.len(), 2, "{ms:#?}");
    for m in &ms {
        assert!(is_centred_layer_norm(m) && m.rewritable, "{m:#?}");
        assert_eq!(m.input, "x", "the norm reads x, not the centred value");
        assert!((m.epsilon - EPS as f64).abs() < 1e-12 && m.eps_in_sqrt && !m.unbiased);
    }
    let params = |m: &Match| (m.scale.clone(), m.bias.clone());
    assert_eq!(params(&ms[0]), (Some("g1".into()), Some("b1".into())));
    assert_eq!(params(&ms[1]), (Some("g2".into()), None));

    let dir = tempfile::tempdir().unwrap();
    let original = model(Shape::Shared, false).save(dir.path(), "m.onnx");
    let reference = model(Shape::Shared, true).save(dir.path(), "ref.onnx");
    let (out, changes) = fused(&original);
    assert_eq!(changes, 2);
    for op in ["SimplifiedLayerNormalization", "Sub", "ReduceMean"] {
        assert_eq!(op_count(&out, op), 0, "{op} left after fuse");
    }
    assert_eq!(op_count(&out, "LayerNormSimple"), 2);
    assert_same_outputs(&reference, &out, &feeds(), "against LayerNormalization");
    assert_reverts_to(&out, &original);
}

#[test]
fn a_centring_something_else_reads_stays() {
    let dir = tempfile::tempdir().unwrap();
    let original = model(Shape::CentredReadElsewhere, false).save(dir.path(), "m.onnx");
    let reference = model(Shape::CentredReadElsewhere, true).save(dir.path(), "ref.onnx");
    let (out, changes) = fused(&original);
    assert_eq!(changes, 2);
    assert_eq!(op_count(&out, "SimplifiedLayerNormalization"), 0);
    assert_eq!(op_count(&out, "Sub"), 1, "the centred value is still read");
    assert_eq!(op_count(&out, "ReduceMean"), 1);
    assert_same_outputs(&reference, &out, &feeds(), "against LayerNormalization");
    assert_reverts_to(&out, &original);
}

#[test]
fn a_centring_a_norm_left_as_it_is_reads_stays() {
    let ms = model(Shape::SecondNotRewritable, false).matches();
    assert_eq!(ms.len(), 2);
    assert_eq!(ms.iter().filter(|m| m.rewritable).count(), 1, "{ms:#?}");
    let dir = tempfile::tempdir().unwrap();
    let original = model(Shape::SecondNotRewritable, false).save(dir.path(), "m.onnx");
    let (out, changes) = fused(&original);
    assert_eq!(changes, 1);
    // The norm left as it is still reads the centred value.
    assert_eq!(op_count(&out, "SimplifiedLayerNormalization"), 1);
    assert_eq!(op_count(&out, "Sub"), 1);
    assert_eq!(op_count(&out, "ReduceMean"), 1);
    assert_reverts_to(&out, &original);
}

/// Centrings that are not the norm's: another axis, the operands the other way round, a mean
/// of another value, `x` of another type than the norm's input. Each stays an RMSNorm, left alone.
#[test]
fn near_misses_stay_rms_norms() {
    type Centring = fn(&mut Builder, &str) -> String;
    let cases: [(&str, Centring); 4] = [
        ("mean over axis 1", |b, x| {
            let m = b.op(
                "ReduceMean",
                &[x],
                vec![("axes", A::Is(vec![1])), ("keepdims", A::I(1))],
            );
            b.op("Sub", &[x, &m], vec![])
        }),
        ("mean minus x", |b, x| {
            let m = b.op(
                "ReduceMean",
                &[x],
                vec![("axes", A::Is(vec![-1])), ("keepdims", A::I(1))],
            );
            b.op("Sub", &[&m, x], vec![])
        }),
        ("mean of another value", |b, x| {
            let other = b.op("Relu", &[x], vec![]);
            let m = b.op(
                "ReduceMean",
                &[&other],
                vec![("axes", A::Is(vec![-1])), ("keepdims", A::I(1))],
            );
            b.op("Sub", &[x, &m], vec![])
        }),
        ("x in float16, the centring in float32", |b, x| {
            let half = b.op("Cast", &[x], vec![("to", A::I(10))]);
            let wide = b.op("Cast", &[&half], vec![("to", A::I(1))]);
            let m = b.op(
                "ReduceMean",
                &[&half],
                vec![("axes", A::Is(vec![-1])), ("keepdims", A::I(1))],
            );
            let m = b.op("Cast", &[&m], vec![("to", A::I(1))]);
            b.op("Sub", &[&wide, &m], vec![])
        }),
    ];
    for (what, centring) in cases {
        let mut b = Builder::new(17);
        let x = b.input("x", F32, &[2, 3, H]);
        let g = b.init("g", &[H], &[1.0; H as usize]);
        let c = centring(&mut b, &x);
        let y = b.op(
            "SimplifiedLayerNormalization",
            &[&c, &g],
            vec![("axis", A::I(-1))],
        );
        b.node_named("out", "Identity", &[&y], &["out"], vec![]);
        b.output("out", F32);
        let rms: Vec<Match> = b.matches().into_iter().filter(|m| m.output == y).collect();
        assert_eq!(rms.len(), 1, "{what}: {rms:#?}");
        assert_eq!(rms[0].family, Family::RmsNorm, "{what}: {:#?}", rms[0]);
        assert!(!rms[0].rewritable, "{what}");
    }
}

/// The real thing: `fixtures/ort_optimised/gptneox_ort_opt`, ONNX Runtime's optimiser output for
/// a GPT-NeoX parallel block (made by its make.py). `rewrite` leaves no contrib op, so tract runs
/// it against ONNX Runtime's output of the original; `revert` gives every node back.
#[test]
fn real_optimizer_output_is_rewritten_run_in_tract_and_reverted() {
    use adanorm_onnx::npz::read_npz;
    use adanorm_onnx::patterns::find_matches;
    use adanorm_onnx::runner::{compare, run};
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ort_optimised/gptneox_ort_opt");
    let original = case.join("model.onnx");
    let model = load_model(&original).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let ms = find_matches(&g);
    assert_eq!(ms.len(), 5, "{ms:#?}");
    let centred: Vec<&Match> = ms.iter().filter(|m| is_centred_layer_norm(m)).collect();
    assert_eq!(centred.len(), 4);
    // Each with its gain, and its bias from the Add the optimiser wrote after it.
    assert!(
        centred
            .iter()
            .all(|m| m.scale.is_some() && m.bias.is_some()),
        "{centred:#?}"
    );
    assert!(ms.iter().all(|m| m.rewritable), "{ms:#?}");

    let dir = tempfile::tempdir().unwrap();
    let options = rewrite_options(Target::Same, Affine::Keep, None, true);
    let outcome = plan_model(&g, &options).unwrap();
    assert_eq!(outcome.changes.len(), 5);
    let out = dir.path().join("rewritten.onnx");
    save_model(&outcome.model, &out, true).unwrap();
    let left: Vec<String> = node_signatures(&outcome.model)
        .into_iter()
        .filter(|s| s.starts_with("com.microsoft") || s.contains(":SimplifiedLayerNormalization:"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    for op in ["Sub", "ReduceMean"] {
        assert_eq!(op_count(&out, op), 0, "{op}: the shared centrings go");
    }
    let got = run(&out, read_npz(&case.join("inputs.npz")).unwrap()).unwrap();
    let want = read_npz(&case.join("ref_output.npz")).unwrap();
    let diffs = compare(&want, &got);
    assert!(!diffs.is_empty());
    for d in diffs {
        assert!(d.problem.is_none() && d.max_scaled <= 1e-4, "{d:?}");
    }
    assert_reverts_to(&out, &original);
}
