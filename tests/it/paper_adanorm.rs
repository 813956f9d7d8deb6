//! AdaNorm as the paper writes it (issue 16 item 0): a LayerNorm without affine — decomposed or
//! a fused `LayerNormalization` with a ones gain — then `z = C·(1 − k·y)·y` in the ways people
//! write it, found as one `adanorm` match with the model's `C` and `k`, fused into one node that
//! computes what the original computes (tract) and reverted exactly; and the near-misses that
//! must stay a plain LayerNorm with the factor outside the match.

use std::path::Path;

use crate::common::{assert_same_outputs, only, Builder, A, F32};
use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::patterns::Family;
use adanorm_onnx::rewrite::{plan::plan_model, revert::revert, Affine, Target};
use adanorm_tract::tract_onnx::prelude::Tensor;

const H: i64 = 8;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Inner {
    /// `(x − mean) / sqrt(var + ε)`, no affine.
    Decomposed,
    /// ONNX `LayerNormalization` with a stored ones gain (what dynamo writes for
    /// `F.layer_norm(x, shape)`).
    Fused,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    /// `C·(1 − k·y.detach())·y`: the constant multiplies the factor first.
    CFirst,
    /// `(1 − y.detach() / 10)·y`: k as a division, C = 1 (no Mul).
    Div,
    /// `y·(1 − k·y)·C`.
    YFirst,
    /// `(C·y)·(1 − k·y)`.
    ScaledY,
}

/// The inner norm of `x`; its output.
fn inner(b: &mut Builder, x: &str, form: Inner) -> String {
    match form {
        Inner::Decomposed => {
            let m = b.op("ReduceMean", &[x], vec![("axes", A::Is(vec![-1]))]);
            let d = b.op("Sub", &[x, &m], vec![]);
            let two = b.constant(2.0);
            let sq = b.op("Pow", &[&d, &two], vec![]);
            let v = b.op("ReduceMean", &[&sq], vec![("axes", A::Is(vec![-1]))]);
            let eps = b.constant(1e-5);
            let ve = b.op("Add", &[&v, &eps], vec![]);
            let s = b.op("Sqrt", &[&ve], vec![]);
            b.op("Div", &[&d, &s], vec![])
        }
        Inner::Fused => {
            let ones = b.init("ones", &[H], &[1.0; H as usize]);
            b.op(
                "LayerNormalization",
                &[x, &ones],
                vec![("axis", A::I(-1)), ("epsilon", A::F(1e-5))],
            )
        }
    }
}

/// `C·(1 − k·y)·y` of `y` written as `order`, with `sign` −1 for `1 + k·y`; its output.
fn factor(b: &mut Builder, y: &str, order: Order, c: f32, k: f32, sign: f32) -> String {
    let detached = b.op("Identity", &[y], vec![]);
    let ky = if order == Order::Div {
        let d = b.constant(1.0 / k);
        b.op("Div", &[&detached, &d], vec![])
    } else {
        let kc = b.constant(k);
        b.op("Mul", &[&kc, &detached], vec![])
    };
    let one = b.constant(1.0);
    let f = if sign > 0.0 {
        b.op("Sub", &[&one, &ky], vec![])
    } else {
        b.op("Add", &[&ky, &one], vec![])
    };
    if order == Order::Div {
        return b.op("Mul", &[&f, y], vec![]);
    }
    let cc = b.constant(c);
    match order {
        Order::CFirst => {
            let cf = b.op("Mul", &[&cc, &f], vec![]);
            b.op("Mul", &[&cf, y], vec![])
        }
        Order::Div => unreachable!("C = 1 has no Mul"),
        Order::YFirst => {
            let p = b.op("Mul", &[y, &f], vec![]);
            b.op("Mul", &[&p, &cc], vec![])
        }
        Order::ScaledY => {
            let cy = b.op("Mul", &[y, &cc], vec![]);
            b.op("Mul", &[&cy, &f], vec![])
        }
    }
}

/// x [2, 3, H] → inner norm → factor → optional gain and bias → Relu.
fn paper_model(form: Inner, order: Order, c: f32, k: f32, affine: bool) -> Builder {
    let mut b = Builder::new(17);
    let x = b.input("x", F32, &[2, 3, H]);
    let y = inner(&mut b, &x, form);
    let mut z = factor(&mut b, &y, order, c, k, 1.0);
    if affine {
        let g: Vec<f32> = (0..H).map(|i| 1.0 + i as f32 / 8.0).collect();
        let gamma = b.init("gamma", &[H], &g);
        let beta = b.init("beta", &[H], &[0.25; H as usize]);
        z = b.op("Mul", &[&z, &gamma], vec![]);
        z = b.op("Add", &[&beta, &z], vec![]);
    }
    b.node_named("consumer", "Relu", &[&z], &["out"], vec![]);
    b.output("out", F32);
    b
}

const FORMS: [Inner; 2] = [Inner::Decomposed, Inner::Fused];
const ORDERS: [Order; 4] = [Order::CFirst, Order::Div, Order::YFirst, Order::ScaledY];

#[test]
fn the_paper_form_is_one_adanorm_with_the_models_c_and_k() {
    for form in FORMS {
        for order in ORDERS {
            for affine in [false, true] {
                let what = format!("{form:?} {order:?} affine {affine}");
                let c = if order == Order::Div { 1.0 } else { 2.5 };
                let m = only(paper_model(form, order, c, 0.1, affine).matches());
                assert_eq!(m.family, Family::AdaNorm, "{what}");
                assert!(m.rewritable, "{what}: {:?}", m.reason);
                assert!(m.form_name().contains("paper's AdaNorm"), "{what}");
                assert_eq!((m.unbiased, m.eps_in_sqrt), (false, true), "{what}");
                assert!((m.c - c as f64).abs() < 1e-6, "{what}: c {}", m.c);
                assert!((m.k - 0.1).abs() < 1e-6, "{what}: k {}", m.k);
                assert_eq!(m.input, "x", "{what}");
                assert_eq!(
                    (m.scale.as_deref(), m.bias.as_deref()),
                    if affine {
                        (Some("gamma"), Some("beta"))
                    } else {
                        (None, None)
                    },
                    "{what}"
                );
                // Every node but the Relu, its input read from the match's output.
                let model = paper_model(form, order, c, 0.1, affine).model();
                let graph = model.graph.as_ref().unwrap();
                assert_eq!(m.nodes.len(), graph.node.len() - 1, "{what}");
                assert_eq!(graph.node.last().unwrap().input[0], m.output, "{what}");
            }
        }
    }
}

#[test]
fn one_plus_k_y_is_adanorm_with_a_negative_k() {
    for form in FORMS {
        let mut b = Builder::new(17);
        let x = b.input("x", F32, &[2, 3, H]);
        let y = inner(&mut b, &x, form);
        let z = factor(&mut b, &y, Order::CFirst, 2.0, 0.1, -1.0);
        b.node_named("consumer", "Relu", &[&z], &["out"], vec![]);
        b.output("out", F32);
        let m = only(b.matches());
        assert_eq!(m.family, Family::AdaNorm, "{form:?}");
        assert!((m.k + 0.1).abs() < 1e-6, "{form:?}: k {}", m.k);
    }
}

/// `other` computes what `original` computes on one fixed x.
fn assert_same(original: &Path, other: &Path, what: &str) {
    let vals: Vec<f32> = (0..6 * H)
        .map(|i| ((i * 37 % 23) as f32) / 4.0 - 2.5)
        .collect();
    let feeds = vec![(
        "x".to_string(),
        Tensor::from_shape(&[2, 3, H as usize], &vals).unwrap(),
    )];
    assert_same_outputs(original, other, &feeds, what);
}

#[test]
fn fuse_makes_one_node_that_computes_the_same_and_revert_restores_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    for form in FORMS {
        for order in ORDERS {
            let what = format!("{form:?} {order:?}");
            let original = paper_model(form, order, 1.5, 0.1, true).save(dir.path(), "m.onnx");
            let model = load_model(&original).unwrap();
            let g = GraphIndex::build(&model).unwrap();
            let options = crate::common::rewrite_options(Target::Same, Affine::Keep, None, false);
            let outcome = plan_model(&g, &options).unwrap_or_else(|e| panic!("{what}: {e}"));
            let graph = outcome.model.graph.as_ref().unwrap();
            let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
            assert_eq!(ops, ["AdaNorm", "Relu"], "{what}");
            let fused = dir.path().join("fused.onnx");
            save_model(&outcome.model, &fused, true).unwrap();
            assert_same(&original, &fused, &what);
            let fused_model = load_model(&fused).unwrap();
            let back = revert(&GraphIndex::build(&fused_model).unwrap(), None).unwrap();
            assert_eq!(
                back.model.graph.as_ref().unwrap().node,
                model.proto.graph.as_ref().unwrap().node,
                "{what}: revert"
            );
        }
    }
}

/// The near-misses: each is a LayerNorm whose output the factor reads, not AdaNorm.
#[test]
fn near_misses_stay_a_layernorm_with_the_factor_outside() {
    type Case = (&'static str, fn(&mut Builder, &str, &str) -> String);
    let cases: [Case; 5] = [
        ("(1 - k*y) * x", |b, x, y| {
            let kc = b.constant(0.1);
            let ky = b.op("Mul", &[&kc, y], vec![]);
            let one = b.constant(1.0);
            let f = b.op("Sub", &[&one, &ky], vec![]);
            b.op("Mul", &[&f, x], vec![])
        }),
        ("k from a graph input", |b, _x, y| {
            let kc = b.input("k", F32, &[]);
            let ky = b.op("Mul", &[&kc, y], vec![]);
            let one = b.constant(1.0);
            let f = b.op("Sub", &[&one, &ky], vec![]);
            b.op("Mul", &[&f, y], vec![])
        }),
        ("(2 - k*y) * y", |b, _x, y| {
            let kc = b.constant(0.1);
            let ky = b.op("Mul", &[&kc, y], vec![]);
            let two = b.constant(2.0);
            let f = b.op("Sub", &[&two, &ky], vec![]);
            b.op("Mul", &[&f, y], vec![])
        }),
        ("(k*y - 1) * y", |b, _x, y| {
            let kc = b.constant(0.1);
            let ky = b.op("Mul", &[&kc, y], vec![]);
            let one = b.constant(1.0);
            let f = b.op("Sub", &[&ky, &one], vec![]);
            b.op("Mul", &[&f, y], vec![])
        }),
        ("the factor also read elsewhere", |b, _x, y| {
            let kc = b.constant(0.1);
            let ky = b.op("Mul", &[&kc, y], vec![]);
            let one = b.constant(1.0);
            let f = b.op("Sub", &[&one, &ky], vec![]);
            b.output(&f, F32);
            b.op("Mul", &[&f, y], vec![])
        }),
    ];
    for form in FORMS {
        for (what, make) in cases {
            let mut b = Builder::new(17);
            let x = b.input("x", F32, &[2, 3, H]);
            let y = inner(&mut b, &x, form);
            let z = make(&mut b, &x, &y);
            b.node_named("consumer", "Relu", &[&z], &["out"], vec![]);
            b.output("out", F32);
            let m = only(b.matches());
            assert_eq!(m.family, Family::LayerNorm, "{form:?} {what}");
            assert_eq!((m.c, m.k), (1.0, 0.0), "{form:?} {what}");
            assert_ne!(m.output, z, "{form:?} {what}: the factor stays outside");
            // With x in the product, y's one reader is `0.1·y`: a scalar gain of the
            // LayerNorm, and right to take. Everywhere else y has two readers.
            if !what.contains("* x") {
                assert_eq!(m.output, y, "{form:?} {what}: the factor stays outside");
            }
        }
    }
    // The factor made of another norm's y multiplies this one's: two LayerNorms.
    let mut b = Builder::new(17);
    let x = b.input("x", F32, &[2, 3, H]);
    let x2 = b.input("x2", F32, &[2, 3, H]);
    let y = inner(&mut b, &x, Inner::Decomposed);
    let y2 = inner(&mut b, &x2, Inner::Decomposed);
    let kc = b.constant(0.1);
    let ky = b.op("Mul", &[&kc, &y2], vec![]);
    let one = b.constant(1.0);
    let f = b.op("Sub", &[&one, &ky], vec![]);
    let z = b.op("Mul", &[&f, &y], vec![]);
    b.node_named("consumer", "Relu", &[&z], &["out"], vec![]);
    b.output("out", F32);
    let ms = b.matches();
    assert_eq!(ms.len(), 2);
    assert!(ms.iter().all(|m| m.family == Family::LayerNorm));
}
