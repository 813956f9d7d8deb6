//! Hand-built graphs for each LayerNorm form the matcher must recognise, and near-misses it must
//! not take for a LayerNorm.

use crate::common;
use crate::common::{assert_same_outputs, only, rewrite_options, Builder, A, F16, F32, F64, I64};
use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::{load_model, save_model};
use adanorm_onnx::patterns::{Family, Match};
use adanorm_onnx::rewrite::plan::plan_model;
use adanorm_onnx::rewrite::{Affine, Target};

const H: i64 = 8;

#[derive(Clone)]
struct Ln {
    opset: i64,
    axes: Vec<i64>,
    /// Axes for the variance mean, when different from the centring mean.
    var_axes: Option<Vec<i64>>,
    keepdims: Option<i64>,
    square: &'static str, // "pow", "mul"
    pow_exponent: f32,
    norm: &'static str, // "div", "reciprocal", "div_one"
    eps: Option<f32>,
    eps_from_input: bool,
    /// The epsilon constant's dimensions (one element; `[]` is a scalar).
    eps_dims: Vec<i64>,
    gamma: Option<Vec<i64>>,
    gamma_first: bool,
    beta: bool,
    dup_sub: bool,
    shape: Vec<i64>,
}

impl Default for Ln {
    fn default() -> Self {
        Ln {
            opset: 14,
            axes: vec![-1],
            var_axes: None,
            keepdims: None,
            square: "pow",
            pow_exponent: 2.0,
            norm: "div",
            eps: Some(1e-5),
            eps_from_input: false,
            eps_dims: vec![],
            gamma: Some(vec![H]),
            gamma_first: false,
            beta: true,
            dup_sub: false,
            shape: vec![2, 3, H],
        }
    }
}

fn mean(b: &mut Builder, x: &str, axes: &[i64], opset: i64, keepdims: Option<i64>) -> String {
    let mut attrs = vec![];
    if let Some(k) = keepdims {
        attrs.push(("keepdims", A::I(k)));
    }
    if opset >= 18 {
        let a = b.constant_typed(
            I64,
            &[axes.len() as i64],
            &axes.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        );
        b.op("ReduceMean", &[x, &a], attrs)
    } else {
        attrs.push(("axes", A::Is(axes.to_vec())));
        b.op("ReduceMean", &[x], attrs)
    }
}

fn build_ln(o: &Ln) -> Builder {
    let mut b = Builder::new(o.opset);
    let x = b.input("x", F32, &o.shape);
    let m = mean(&mut b, &x, &o.axes, o.opset, o.keepdims);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let d2 = if o.dup_sub {
        b.op("Sub", &[&x, &m], vec![])
    } else {
        d.clone()
    };
    let sq = match o.square {
        "pow" => {
            let two = b.constant(o.pow_exponent);
            b.op("Pow", &[&d, &two], vec![])
        }
        _ => b.op("Mul", &[&d, &d], vec![]),
    };
    let var_axes = o.var_axes.clone().unwrap_or(o.axes.clone());
    let v = mean(&mut b, &sq, &var_axes, o.opset, o.keepdims);
    let ve = match o.eps {
        Some(e) => {
            let eps = if o.eps_from_input {
                b.input("eps", F32, &[])
            } else {
                b.constant_typed(F32, &o.eps_dims, &[e as f64])
            };
            b.op("Add", &[&v, &eps], vec![])
        }
        None => v,
    };
    let s = b.op("Sqrt", &[&ve], vec![]);
    let n = match o.norm {
        "div" => b.op("Div", &[&d2, &s], vec![]),
        "reciprocal" => {
            let r = b.op("Reciprocal", &[&s], vec![]);
            b.op("Mul", &[&r, &d2], vec![])
        }
        _ => {
            let one = b.constant(1.0);
            let r = b.op("Div", &[&one, &s], vec![]);
            b.op("Mul", &[&d2, &r], vec![])
        }
    };
    let mut y = n;
    if let Some(gs) = &o.gamma {
        let count: i64 = gs.iter().product();
        let g = b.init(
            "gamma",
            gs,
            &(0..count)
                .map(|i| 1.0 + i as f32 / 10.0)
                .collect::<Vec<_>>(),
        );
        y = if o.gamma_first {
            b.op("Mul", &[&g, &y], vec![])
        } else {
            b.op("Mul", &[&y, &g], vec![])
        };
    }
    if o.beta {
        let bias = b.init("beta", &[H], &[0.5; H as usize]);
        y = b.op("Add", &[&bias, &y], vec![]);
    }
    b.node_named("consumer", "Relu", &[&y], &["out"], vec![]);
    b.output("out", F32);
    b
}

fn ln_ok(o: &Ln) -> Match {
    let m = only(build_ln(o).matches());
    assert_eq!(m.family, Family::LayerNorm);
    assert!(m.rewritable, "{:?}", m.reason);
    assert_eq!(m.input, "x");
    m
}

#[test]
fn legacy_layernorm_with_affine() {
    let m = ln_ok(&Ln::default());
    assert_eq!(m.axis, Some(-1));
    assert_eq!(m.epsilon, 1e-5f32 as f64);
    assert!(!m.unbiased && m.eps_in_sqrt);
    assert_eq!(m.scale.as_deref(), Some("gamma"));
    assert_eq!(m.bias.as_deref(), Some("beta"));
    // ReduceMean, Sub, Pow (+its Constant), ReduceMean, Add (+eps Constant), Sqrt, Div, Mul, Add
    assert_eq!(m.nodes.len(), 11);
}

/// A LayerNorm of a stored table (DeBERTa-v2 normalises its relative position embeddings):
/// every read is of the initializer, which the node reads as its input.
#[test]
fn layernorm_of_an_initializer_reads_it_as_input() {
    let mut b = build_ln(&Ln::default());
    b.inputs.clear();
    let table: Vec<f32> = (0..6 * H).map(|i| ((i * 7 % 11) as f32) - 5.0).collect();
    b.init("x", &[2, 3, H], &table);
    let m = ln_ok(&Ln::default()).input;
    assert_eq!(m, "x");
    let found = only(b.matches());
    assert!(found.rewritable, "{:?}", found.reason);
    assert_eq!(found.input, "x");

    let dir = tempfile::tempdir().unwrap();
    let original = b.save(dir.path(), "m.onnx");
    let model = load_model(&original).unwrap();
    let g = GraphIndex::build(&model).unwrap();
    let options = rewrite_options(Target::Same, Affine::Keep, None, false);
    let fused = plan_model(&g, &options).unwrap();
    assert_eq!(fused.changes.len(), 1);
    let out = dir.path().join("fused.onnx");
    save_model(&fused.model, &out, true).unwrap();
    assert_same_outputs(&original, &out, &[], "a norm of a stored table, fused");
}

#[test]
fn opset18_axes_inputs_of_either_sign() {
    let m = ln_ok(&Ln {
        opset: 18,
        axes: vec![-1],
        var_axes: Some(vec![2]),
        keepdims: Some(1),
        ..Ln::default()
    });
    assert_eq!(m.axis, Some(-1));
}

#[test]
fn gamma_first_operand_order_and_dup_sub() {
    let m = ln_ok(&Ln {
        gamma_first: true,
        dup_sub: true,
        ..Ln::default()
    });
    assert_eq!(m.scale.as_deref(), Some("gamma"));
    assert_eq!(m.nodes.len(), 12, "both Subs belong to the match");
}

#[test]
fn no_gamma_no_beta_and_scale_only() {
    let m = ln_ok(&Ln {
        gamma: None,
        beta: false,
        ..Ln::default()
    });
    assert_eq!((m.scale, m.bias), (None, None));
    let m = ln_ok(&Ln {
        beta: false,
        ..Ln::default()
    });
    assert_eq!((m.scale.as_deref(), m.bias), (Some("gamma"), None));
}

#[test]
fn eps_removed_by_the_exporter() {
    let m = ln_ok(&Ln {
        eps: None,
        ..Ln::default()
    });
    assert_eq!(m.epsilon, 0.0);
}

#[test]
fn reciprocal_forms_and_mul_square() {
    for norm in ["reciprocal", "div_one"] {
        ln_ok(&Ln {
            norm,
            square: "mul",
            ..Ln::default()
        });
    }
}

#[test]
fn two_trailing_axes_with_2d_parameters() {
    let m = ln_ok(&Ln {
        axes: vec![-2, -1],
        gamma: Some(vec![3, H]),
        beta: false,
        ..Ln::default()
    });
    assert_eq!(m.axis, Some(-2));
    assert_eq!(m.scale.as_deref(), Some("gamma"));
}

// ---- near-misses ----

#[test]
fn keepdims_zero_is_not_layernorm() {
    assert!(build_ln(&Ln {
        keepdims: Some(0),
        ..Ln::default()
    })
    .matches()
    .is_empty());
}

#[test]
fn different_axes_on_the_two_means_is_not_layernorm() {
    let o = Ln {
        axes: vec![-1],
        var_axes: Some(vec![-2]),
        ..Ln::default()
    };
    assert!(build_ln(&o).matches().is_empty());
}

#[test]
fn pow_three_is_not_layernorm() {
    assert!(build_ln(&Ln {
        pow_exponent: 3.0,
        ..Ln::default()
    })
    .matches()
    .is_empty());
}

#[test]
fn non_constant_eps_is_not_layernorm() {
    assert!(build_ln(&Ln {
        eps_from_input: true,
        ..Ln::default()
    })
    .matches()
    .is_empty());
}

#[test]
fn higher_rank_one_element_eps_only_beside_a_known_rank() {
    // `var + eps` with eps of shape [1,1,1,1] is rank 4 whatever the variance's rank: the node
    // that replaces it keeps X's rank, so such an eps is an epsilon only where X is known to have
    // rank 4 or more (the fuzzer found it behind an If whose branches differ in rank).
    let four = Ln {
        eps_dims: vec![1, 1, 1, 1],
        shape: vec![2, 2, 3, H],
        ..Ln::default()
    };
    let m = ln_ok(&four);
    assert!((m.epsilon - 1e-5).abs() < 1e-9, "{}", m.epsilon);

    let mut unranked = build_ln(&four);
    if let Some(t) = unranked.inputs[0].r#type.as_mut() {
        if let Some(adanorm_onnx::onnx::proto::type_proto::Value::TensorType(tt)) = t.value.as_mut()
        {
            tt.shape = None;
        }
    }
    let ms = unranked.matches();
    assert!(
        ms.iter().all(|m| !m.rewritable),
        "an eps that may broadcast the rank was taken: {ms:#?}"
    );

    let three = Ln {
        eps_dims: vec![1, 1, 1, 1],
        ..Ln::default()
    };
    let ms = build_ln(&three).matches();
    assert!(ms.iter().all(|m| !m.rewritable), "{ms:#?}");
}

#[test]
fn gamma_of_the_wrong_length_stays_outside() {
    let m = ln_ok(&Ln {
        gamma: Some(vec![H / 2]),
        beta: false,
        ..Ln::default()
    });
    assert_eq!(m.scale, None, "a [H/2] gain cannot scale rows of length H");
}

#[test]
fn gamma_that_broadcasts_over_rows_stays_outside() {
    let m = ln_ok(&Ln {
        gamma: Some(vec![3, 1]),
        beta: false,
        ..Ln::default()
    });
    assert_eq!(
        m.scale, None,
        "a [3,1] tensor varies across rows: not a LayerNorm gain"
    );
}

#[test]
fn inner_value_used_elsewhere_is_reported_not_rewritable() {
    let mut b = build_ln(&Ln::default());
    // Read the centred value outside the subgraph.
    let d = b
        .nodes
        .iter()
        .find(|n| n.op_type() == "Sub")
        .unwrap()
        .output[0]
        .clone();
    b.node_named("spy", "Relu", &[&d], &["spy_out"], vec![]);
    b.output("spy_out", F32);
    let m = only(b.matches());
    assert!(!m.rewritable);
    assert!(
        m.reason.as_deref().unwrap().contains("spy"),
        "{:?}",
        m.reason
    );
}

#[test]
fn inner_value_that_is_a_graph_output_is_not_rewritable() {
    let mut b = build_ln(&Ln::default());
    let s = b
        .nodes
        .iter()
        .find(|n| n.op_type() == "Sqrt")
        .unwrap()
        .output[0]
        .clone();
    b.output(&s, F32);
    let m = only(b.matches());
    assert!(!m.rewritable);
    assert!(m.reason.as_deref().unwrap().contains("graph output"));
}

/// x - mean(y): centring against another tensor's mean.
#[test]
fn mean_of_another_tensor_is_not_centring() {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, H]);
    let z = b.input("z", F32, &[2, H]);
    let m = mean(&mut b, &z, &[-1], 14, None);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let two = b.constant(2.0);
    let p = b.op("Pow", &[&d, &two], vec![]);
    let v = mean(&mut b, &p, &[-1], 14, None);
    let e = b.constant(1e-5);
    let ve = b.op("Add", &[&v, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let y = b.op("Div", &[&d, &s], vec![]);
    b.node_named("c", "Identity", &[&y], &["out"], vec![]);
    b.output("out", F32);
    // Not a LayerNorm of x; what it does compute is an RMSNorm of the difference.
    let m = only(b.matches());
    assert_eq!((m.family, m.input.as_str()), (Family::RmsNorm, d.as_str()));
}

// ---- mixed precision ----

/// fp16 model, legacy exporter: Cast(d)->double, f64 constants, Cast back to f16 before gamma.
#[test]
fn fp16_with_double_island() {
    let mut b = Builder::new(14);
    let x = b.input("x", F16, &[2, H]);
    let m = mean(&mut b, &x, &[-1], 14, None);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let dd = b.op("Cast", &[&d], vec![("to", A::I(F64 as i64))]);
    let two = b.constant_typed(F64, &[], &[2.0]);
    let p = b.op("Pow", &[&dd, &two], vec![]);
    let v = mean(&mut b, &p, &[-1], 14, None);
    let e = b.constant_typed(F64, &[], &[1e-12]);
    let ve = b.op("Add", &[&v, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let n = b.op("Div", &[&dd, &s], vec![]);
    let nh = b.op("Cast", &[&n], vec![("to", A::I(F16 as i64))]);
    let g = b.init_typed("gamma", F16, &[H], &[1.5; H as usize]);
    let y = b.op("Mul", &[&nh, &g], vec![]);
    let bb = b.init_typed("beta", F16, &[H], &[0.25; H as usize]);
    let y = b.op("Add", &[&y, &bb], vec![]);
    b.node_named("c", "Identity", &[&y], &["out"], vec![]);
    b.output("out", F16);
    let m = only(b.matches());
    assert_eq!(m.family, Family::LayerNorm);
    assert!(m.rewritable, "{:?}", m.reason);
    assert_eq!(m.dtype, Some(F16));
    assert_eq!(m.epsilon, 1e-12);
    assert_eq!(
        (m.scale.as_deref(), m.bias.as_deref()),
        (Some("gamma"), Some("beta"))
    );
}

/// fp16 eps underflowed to 0 still matches with epsilon 0.
#[test]
fn fp16_eps_underflowed_to_zero() {
    let mut b = Builder::new(14);
    let x = b.input("x", F16, &[2, H]);
    let m = mean(&mut b, &x, &[-1], 14, Some(1));
    let d = b.op("Sub", &[&x, &m], vec![]);
    let two = b.constant_typed(F16, &[], &[2.0]);
    let p = b.op("Pow", &[&d, &two], vec![]);
    let v = mean(&mut b, &p, &[-1], 14, Some(1));
    let e = b.constant_typed(F16, &[], &[0.0]);
    let ve = b.op("Add", &[&v, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let n = b.op("Div", &[&d, &s], vec![]);
    b.node_named("c", "Identity", &[&n], &["out"], vec![]);
    b.output("out", F16);
    let m = only(b.matches());
    assert_eq!(
        (m.family, m.epsilon, m.dtype),
        (Family::LayerNorm, 0.0, Some(F16))
    );
}

// ---- E[x²] − E[x]² ----

#[test]
fn moment_difference_variance() {
    // (No guard: the variance as it is.)
    let m = only(guarded_moment_difference(|_, v| v.to_string()).0);
    assert_eq!(m.family, Family::LayerNorm);
    assert!(m.form_name().contains("E[x²]"), "{}", m.form);
    assert!(m.rewritable, "{:?}", m.reason);
}

// ---- LayerNorm-simple / Annotated Transformer / AdaNorm ----

/// `N/(N-1)` through Shape/Gather/ReduceProd/Cast, eps after Sqrt, optional gain before the
/// division; returns (builder, centred value, denominator).
fn unbiased_std(b: &mut Builder, x: &str, folded: bool) -> (String, String) {
    let m1 = mean(b, x, &[-1], 14, Some(1));
    let m2 = mean(b, x, &[-1], 14, Some(1));
    let s2 = b.op("Sub", &[x, &m2], vec![]);
    let sq = b.op("Mul", &[&s2, &s2], vec![]);
    let v = mean(b, &sq, &[-1], 14, Some(1));
    let vu = if folded {
        let n = b.constant(H as f32);
        let n1 = b.constant((H - 1) as f32);
        let vn = b.op("Mul", &[&v, &n], vec![]);
        b.op("Div", &[&vn, &n1], vec![])
    } else {
        let shape = b.op("Shape", &[x], vec![]);
        let idx = b.constant_typed(I64, &[1], &[-1.0]);
        let gat = b.op("Gather", &[&shape, &idx], vec![("axis", A::I(0))]);
        let prod = b.op("ReduceProd", &[&gat], vec![("keepdims", A::I(0))]);
        let n = b.op("Cast", &[&prod], vec![("to", A::I(F32 as i64))]);
        let vn = b.op("Mul", &[&v, &n], vec![]);
        let one = b.constant(1.0);
        let n1 = b.op("Sub", &[&n, &one], vec![]);
        b.op("Div", &[&vn, &n1], vec![])
    };
    let sd = b.op("Sqrt", &[&vu], vec![]);
    let e = b.constant(1e-6);
    let den = b.op("Add", &[&sd, &e], vec![]);
    let xc = b.op("Sub", &[x, &m1], vec![]);
    (xc, den)
}

#[test]
fn annotated_transformer_layernorm_is_lnsimple_with_affine() {
    for folded in [false, true] {
        let mut b = Builder::new(14);
        let x = b.input("x", F32, &[2, 3, H]);
        let (xc, den) = unbiased_std(&mut b, &x, folded);
        let g = b.init("a_2", &[H], &[2.0; H as usize]);
        let gx = b.op("Mul", &[&g, &xc], vec![]);
        let n = b.op("Div", &[&gx, &den], vec![]);
        let bb = b.init("b_2", &[H], &[0.1; H as usize]);
        let y = b.op("Add", &[&n, &bb], vec![]);
        b.node_named("c", "Identity", &[&y], &["out"], vec![]);
        b.output("out", F32);
        let m = only(b.matches());
        assert_eq!(m.family, Family::LnSimple, "folded={folded}");
        assert!(m.unbiased && !m.eps_in_sqrt);
        assert_eq!(m.epsilon, 1e-6f32 as f64);
        assert_eq!(
            (m.scale.as_deref(), m.bias.as_deref()),
            (Some("a_2"), Some("b_2"))
        );
        assert!(m.rewritable, "{:?}", m.reason);
    }
}

#[test]
fn folded_bessel_factor_must_match_the_row_length() {
    let mut b = Builder::new(14);
    // Row length 8, but the graph multiplies by 64/63: not this tensor's Bessel correction.
    let x = b.input("x", F32, &[2, H]);
    let m = mean(&mut b, &x, &[-1], 14, Some(1));
    let xc = b.op("Sub", &[&x, &m], vec![]);
    let sq = b.op("Mul", &[&xc, &xc], vec![]);
    let v = mean(&mut b, &sq, &[-1], 14, Some(1));
    let n = b.constant(64.0);
    let n1 = b.constant(63.0);
    let vn = b.op("Mul", &[&v, &n], vec![]);
    let vu = b.op("Div", &[&vn, &n1], vec![]);
    let sd = b.op("Sqrt", &[&vu], vec![]);
    let y = b.op("Div", &[&xc, &sd], vec![]);
    b.node_named("c", "Identity", &[&y], &["out"], vec![]);
    b.output("out", F32);
    assert!(b.matches().is_empty());
}

fn adanorm_graph(c: Option<f32>, k: f32) -> Builder {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let (xc, den) = unbiased_std(&mut b, &x, false);
    let m3 = mean(&mut b, &xc, &[-1], 14, Some(1));
    let xcc = b.op("Sub", &[&xc, &m3], vec![]);
    let kc = b.constant(k);
    let t = b.op("Mul", &[&xcc, &kc], vec![]);
    let gra = b.op("Div", &[&t, &den], vec![]);
    let p = b.op("Mul", &[&xc, &gra], vec![]);
    let w = b.op("Sub", &[&xc, &p], vec![]);
    let mut y = b.op("Div", &[&w, &den], vec![]);
    if let Some(c) = c {
        let cc = b.constant(c);
        y = b.op("Mul", &[&y, &cc], vec![]);
    }
    b.node_named("c", "Identity", &[&y], &["out"], vec![]);
    b.output("out", F32);
    b
}

#[test]
fn adanorm_recovers_c_and_k() {
    let m = only(adanorm_graph(Some(2.5), 0.1).matches());
    assert_eq!(m.family, Family::AdaNorm);
    assert_eq!((m.c, m.k), (2.5, 0.1f32 as f64));
    assert!(m.unbiased && !m.eps_in_sqrt && m.rewritable);
    // C = 1 exported by an optimiser that drops Mul(., 1): no trailing Mul at all.
    let m = only(adanorm_graph(None, 0.2).matches());
    assert_eq!((m.family, m.c, m.k), (Family::AdaNorm, 1.0, 0.2f32 as f64));
}

// ---- Keras (tf2onnx) ----

#[test]
fn keras_folded_affine_sub_form() {
    let mut b = Builder::new(13);
    let x = b.input("x", F32, &[2, 3, H]);
    let m = b.op("GlobalAveragePool", &[&x], vec![]);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let sq = b.op("Mul", &[&d, &d], vec![]);
    let v = b.op("GlobalAveragePool", &[&sq], vec![]);
    let e = b.init("eps", &[], &[1e-3]);
    let ve = b.op("Add", &[&v, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let inv = b.op("Reciprocal", &[&s], vec![]);
    let g = b.init("gamma", &[1, 1, H], &[1.5; H as usize]);
    let sc = b.op("Mul", &[&inv, &g], vec![]);
    let xs = b.op("Mul", &[&x, &sc], vec![]);
    let ms = b.op("Mul", &[&m, &sc], vec![]);
    let bb = b.init("beta", &[1, 1, H], &[0.5; H as usize]);
    let r = b.op("Sub", &[&bb, &ms], vec![]);
    let y = b.op("Add", &[&xs, &r], vec![]);
    b.node_named("c", "Identity", &[&y], &["out"], vec![]);
    b.output("out", F32);
    let m = only(b.matches());
    assert_eq!(m.family, Family::LayerNorm);
    assert!(m.form_name().contains("Keras"));
    assert_eq!(
        (m.scale.as_deref(), m.bias.as_deref(), m.axis),
        (Some("gamma"), Some("beta"), Some(-1))
    );
    assert_eq!(m.epsilon, 1e-3f32 as f64);
    assert!(m.rewritable, "{:?}", m.reason);
}

// ---- channels-first ----

fn channels_first(gamma_dims: &[i64]) -> Builder {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[1, 4, 5, 6]);
    let m = mean(&mut b, &x, &[1], 14, Some(1));
    let d = b.op("Sub", &[&x, &m], vec![]);
    let two = b.constant(2.0);
    let p = b.op("Pow", &[&d, &two], vec![]);
    let v = mean(&mut b, &p, &[1], 14, Some(1));
    let e = b.constant(1e-6);
    let ve = b.op("Add", &[&v, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let n = b.op("Div", &[&d, &s], vec![]);
    let count: i64 = gamma_dims.iter().product();
    let g = b.init("gamma", gamma_dims, &vec![2.0; count as usize]);
    let y = b.op("Mul", &[&g, &n], vec![]);
    b.node_named("c", "Identity", &[&y], &["out"], vec![]);
    b.output("out", F32);
    b
}

#[test]
fn channels_first_is_never_a_trailing_axes_normalisation() {
    let m = only(channels_first(&[4, 1, 1]).matches());
    assert_eq!(m.family, Family::LayerNorm);
    assert_eq!(m.axes, vec![1]);
    assert_eq!(
        m.axis, None,
        "axis 1 alone is not ops-spec axis=1 (which means axes 1..)"
    );
    assert!(m.channels_first);
    assert!(m.rewritable, "{:?}", m.reason);
    assert_eq!(m.scale.as_deref(), Some("gamma"));
}

#[test]
fn channels_first_with_a_trailing_shaped_scale_keeps_the_scale_outside() {
    let m = only(channels_first(&[6]).matches());
    assert_eq!(m.scale, None, "a [W] tensor is not a per-channel gain");
}

// ---- RMSNorm ----

#[test]
fn rmsnorm_is_reported_as_rmsnorm() {
    let mut b = Builder::new(18);
    let x = b.input("x", F32, &[2, H]);
    let two = b.constant(2.0);
    let p = b.op("Pow", &[&x, &two], vec![]);
    let ms = mean(&mut b, &p, &[-1], 18, Some(1));
    let e = b.constant(1e-6);
    let ve = b.op("Add", &[&ms, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let r = b.op("Reciprocal", &[&s], vec![]);
    let n = b.op("Mul", &[&x, &r], vec![]);
    let g = b.init("w", &[H], &[1.0; H as usize]);
    let y = b.op("Mul", &[&g, &n], vec![]);
    b.node_named("c", "Identity", &[&y], &["out"], vec![]);
    b.output("out", F32);
    let m = only(b.matches());
    assert_eq!(m.family, Family::RmsNorm);
    assert_eq!(m.scale.as_deref(), Some("w"));
    assert!(!m.rewritable);
}

/// Keras' `RMSNormalization` as tf2onnx writes it: `Mul(x, x)`, `GlobalAveragePool` (the last
/// axis of a rank-3 tensor), `Reciprocal(Sqrt)`, the gain multiplied into the inverse root, then
/// `Mul(x, ·)`. Near-misses: the "gain" varying across rows, and the product with another tensor
/// than x; and Keras' `LayerNormalization(rms_scaling=True)`, `x · rsqrt(var + ε) · γ` with the
/// variance centred but x not, which is neither a LayerNorm nor an RMSNorm.
#[test]
fn keras_rmsnorm_gain_into_the_inverse_root() {
    enum Case {
        Keras,
        GainPerToken,
        OtherTensor,
        RmsScaling,
    }
    for case in [
        Case::Keras,
        Case::GainPerToken,
        Case::OtherTensor,
        Case::RmsScaling,
    ] {
        let mut b = Builder::new(13);
        let x = b.input("x", F32, &[2, 3, H]);
        let other = b.input("other", F32, &[2, 3, H]);
        let sq = if let Case::RmsScaling = case {
            let m = b.op("GlobalAveragePool", &[&x], vec![]);
            let d = b.op("Sub", &[&x, &m], vec![]);
            b.op("Mul", &[&d, &d], vec![])
        } else {
            b.op("Mul", &[&x, &x], vec![])
        };
        let ms = b.op("GlobalAveragePool", &[&sq], vec![]);
        let e = b.constant(1e-6);
        let ve = b.op("Add", &[&ms, &e], vec![]);
        let s = b.op("Sqrt", &[&ve], vec![]);
        let r = b.op("Reciprocal", &[&s], vec![]);
        let gains: Vec<f32> = (0..H).map(|i| 1.0 + i as f32 / 16.0).collect();
        let g = match case {
            Case::GainPerToken => b.init("w", &[3, 1], &[0.5, 1.0, 1.5]),
            _ => b.init("w", &[H], &gains),
        };
        let y = if let Case::RmsScaling = case {
            let n = b.op("Mul", &[&x, &r], vec![]);
            b.op("Mul", &[&n, &g], vec![])
        } else {
            let rg = b.op("Mul", &[&r, &g], vec![]);
            let times = if let Case::OtherTensor = case {
                &other
            } else {
                &x
            };
            b.op("Mul", &[times, &rg], vec![])
        };
        b.node_named("c", "Relu", &[&y], &["out"], vec![]);
        b.output("out", F32);
        let found = b.matches();
        match case {
            Case::Keras => {
                let m = only(found);
                assert_eq!(m.family, Family::RmsNorm);
                assert_eq!((m.input.as_str(), m.scale.as_deref()), ("x", Some("w")));
                assert_eq!(m.output, y);
                assert!(!m.rewritable);
            }
            _ => assert!(
                found.iter().all(|m| m.output != y),
                "a near-miss taken whole: {found:#?}"
            ),
        }
    }
}

// ---- fused ops ----

#[test]
fn fused_ops_in_their_families() {
    let mut b = Builder::new(14); // LayerNormalization below opset 17, as ORT saves it
    b.extra_opsets.push(("com.microsoft".into(), 1));
    let x = b.input("x", F32, &[2, 3, H]);
    let skip = b.input("skip", F32, &[2, 3, H]);
    let g = b.init("g", &[H], &[1.0; H as usize]);
    let bb = b.init("b", &[H], &[0.0; H as usize]);
    let y1 = b.op(
        "LayerNormalization",
        &[&x, &g, &bb],
        vec![("epsilon", A::F(1e-6)), ("axis", A::I(-1))],
    );
    let y2 = b.domain_op(
        "com.microsoft",
        "SkipLayerNormalization",
        &[&y1, &skip, &g, &bb],
        vec![],
    );
    let y3 = b.domain_op(
        "com.microsoft",
        "SkipSimplifiedLayerNormalization",
        &[&y2, &skip, &g],
        vec![],
    );
    let y4 = b.op("SimplifiedLayerNormalization", &[&y3, &g], vec![]);
    b.node_named("c", "Identity", &[&y4], &["out"], vec![]);
    b.output("out", F32);
    let ms = b.matches();
    let fams: Vec<Family> = ms.iter().map(|m| m.family).collect();
    assert_eq!(
        fams,
        [
            Family::LayerNorm,
            Family::LayerNorm,
            Family::RmsNorm,
            Family::RmsNorm
        ]
    );
    assert_eq!(ms[0].epsilon, 1e-6f32 as f64);
    assert_eq!(ms[0].axis, Some(-1));
    assert!(ms[0].rewritable && ms[1].rewritable && !ms[2].rewritable);
}

#[test]
fn fused_layernorm_with_an_impossible_axis_or_epsilon_is_not_rewritable() {
    for (axis, eps, why) in [
        (-(1i64 << 40), 1e-5, "axis"),
        (3, 1e-5, "axis"),
        (-1, f32::INFINITY, "epsilon"),
        (-1, -1e-5, "epsilon"),
    ] {
        let mut b = Builder::new(17);
        let x = b.input("x", F32, &[2, 3, H]);
        let g = b.init("g", &[H], &[1.0; H as usize]);
        b.node_named(
            "ln",
            "LayerNormalization",
            &[&x, &g],
            &["out"],
            vec![("epsilon", A::F(eps)), ("axis", A::I(axis))],
        );
        b.output("out", F32);
        let m = only(b.matches());
        assert!(!m.rewritable, "{axis} {eps}");
        assert!(
            m.reason.as_deref().unwrap_or("").contains(why),
            "{:?}",
            m.reason
        );
    }
}

/// The dynamo exporter's AdaNorm (opset 18): axes as initializer inputs, positive axis in the
/// std decomposition, the variance reduced without keepdims and reshaped back, N/(N-1) folded
/// to constants, and no trailing Mul when C = 1.
fn dynamo_adanorm(reshape_to: &[i64]) -> Builder {
    dynamo_adanorm_on(&["2", "3", &H.to_string()], |b, vu| {
        let shape = b.init_typed(
            "keep_shape",
            I64,
            &[3],
            &reshape_to.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        );
        b.op("Reshape", &[vu, &shape], vec![])
    })
}

/// [`dynamo_adanorm`] on an input of dimensions `x_dims`, with `restore` giving the reduced
/// variance its dimensions back (returns the value the Sqrt reads).
fn dynamo_adanorm_on(
    x_dims: &[&str],
    restore: impl FnOnce(&mut Builder, &str) -> String,
) -> Builder {
    let mut b = Builder::new(18);
    let x = b.input_named("x", F32, x_dims);
    let minus1 = b.init_typed("axes_m1", I64, &[1], &[-1.0]);
    let two = b.init_typed("axes_2", I64, &[1], &[2.0]);
    let m1 = b.op(
        "ReduceMean",
        &[&x, &minus1],
        vec![("keepdims", A::I(1)), ("noop_with_empty_axes", A::I(0))],
    );
    let m2 = b.op("ReduceMean", &[&x, &two], vec![("keepdims", A::I(1))]);
    let s = b.op("Sub", &[&x, &m2], vec![]);
    let sq = b.op("Mul", &[&s, &s], vec![]);
    let v = b.op("ReduceMean", &[&sq, &two], vec![("keepdims", A::I(0))]);
    let n = b.init("n", &[], &[H as f32]);
    let n1 = b.init("n_minus_1", &[], &[(H - 1) as f32]);
    let vn = b.op("Mul", &[&v, &n], vec![]);
    let vu = b.op("Div", &[&vn, &n1], vec![]);
    let r = restore(&mut b, &vu);
    let sd = b.op("Sqrt", &[&r], vec![]);
    let eps = b.init("eps", &[], &[1e-5]);
    let den = b.op("Add", &[&sd, &eps], vec![]);
    let xc = b.op("Sub", &[&x, &m1], vec![]);
    let m3 = b.op("ReduceMean", &[&xc, &minus1], vec![("keepdims", A::I(1))]);
    let xcc = b.op("Sub", &[&xc, &m3], vec![]);
    let k = b.init("k", &[], &[0.1]);
    let t = b.op("Mul", &[&xcc, &k], vec![]);
    let g = b.op("Div", &[&t, &den], vec![]);
    let p = b.op("Mul", &[&xc, &g], vec![]);
    let w = b.op("Sub", &[&xc, &p], vec![]);
    let y = b.op("Div", &[&w, &den], vec![]);
    b.node_named("c", "Identity", &[&y], &["out"], vec![]);
    b.output("out", F32);
    b
}

#[test]
fn dynamo_adanorm_with_a_reshaped_variance() {
    let m = only(dynamo_adanorm(&[2, 3, 1]).matches());
    assert_eq!(m.family, Family::AdaNorm);
    assert_eq!(
        (m.c, m.k, m.unbiased, m.eps_in_sqrt),
        (1.0, 0.1f32 as f64, true, false)
    );
    assert!(m.rewritable, "{:?}", m.reason);
    assert_eq!(m.axis, Some(-1));
}

#[test]
fn a_variance_reshaped_to_the_wrong_shape_is_not_a_match() {
    assert!(dynamo_adanorm(&[2, 1, 3]).matches().is_empty());
}

#[test]
fn a_variance_without_keepdims_and_no_reshape_is_not_a_match() {
    let mut b = dynamo_adanorm(&[2, 3, 1]);
    // Bypass the Reshape: the Sqrt reads the [2,3] variance directly.
    let reshape = b
        .nodes
        .iter()
        .find(|n| n.op_type() == "Reshape")
        .unwrap()
        .clone();
    for n in b.nodes.iter_mut().filter(|n| n.op_type() == "Sqrt") {
        n.input[0] = reshape.input[0].clone();
    }
    assert!(b.matches().is_empty());
}

/// `Concat` of one-dimension `Shape` slices of `of` (`Some(axis)`) and constant 1s (`None`), as
/// the dynamo exporter builds targets from dynamic shapes.
fn shape_target(b: &mut Builder, of: &str, pieces: &[Option<i64>]) -> String {
    let flat = b.init_typed(&format!("flat_{}", b.nodes.len()), I64, &[1], &[-1.0]);
    let parts: Vec<String> = pieces
        .iter()
        .map(|p| match p {
            Some(a) => {
                let s = b.op(
                    "Shape",
                    &[of],
                    vec![("start", A::I(*a)), ("end", A::I(a + 1))],
                );
                b.op("Reshape", &[&s, &flat], vec![])
            }
            None => b.init_typed(&format!("one_{}", b.nodes.len()), I64, &[1], &[1.0]),
        })
        .collect();
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    b.op("Concat", &refs, vec![("axis", A::I(0))])
}

/// The dynamo exporter with dynamic batch and sequence: the variance's dimensions come back by a
/// `Reshape` to its own sizes plus a 1, then an `Expand` to a shape read from another input.
fn dynamo_adanorm_dynamic(reshape: &[Option<i64>], expand_from: &[&str]) -> Builder {
    let h = H.to_string();
    let expand_from: Vec<String> = expand_from.iter().map(|s| s.to_string()).collect();
    let reshape = reshape.to_vec();
    dynamo_adanorm_on(&["batch", "seq", &h], move |b, vu| {
        let target = shape_target(b, vu, &reshape);
        let r = b.op("Reshape", &[vu, &target], vec![]);
        let names: Vec<&str> = expand_from.iter().map(String::as_str).collect();
        let ids = b.input_named("ids", I64, &names);
        let to = shape_target(b, &ids, &[Some(0), Some(1), None]);
        b.op("Expand", &[&r, &to], vec![])
    })
}

#[test]
fn dynamic_shapes_reshape_and_expand_the_variance_back() {
    let m = only(dynamo_adanorm_dynamic(&[Some(0), Some(1), None], &["batch", "seq"]).matches());
    assert_eq!(m.family, Family::AdaNorm);
    assert!(m.rewritable, "{:?}", m.reason);
    assert_eq!((m.unbiased, m.eps_in_sqrt), (true, false));
    // The variance's own target chain belongs to the match; the Expand target (read from
    // another input, shared in real models) only when nothing else uses it: here nothing does.
    assert!(m.nodes.len() >= 24 + 5, "{}", m.nodes.len());
}

#[test]
fn a_shape_computed_target_in_the_wrong_order_is_not_a_match() {
    assert!(
        dynamo_adanorm_dynamic(&[Some(1), Some(0), None], &["batch", "seq"])
            .matches()
            .is_empty()
    );
    assert!(
        dynamo_adanorm_dynamic(&[Some(0), None, Some(1)], &["batch", "seq"])
            .matches()
            .is_empty()
    );
}

#[test]
fn an_expand_that_could_broadcast_rows_is_not_a_match() {
    // The Expand target names other dimensions than x's: it might copy statistics across rows.
    assert!(
        dynamo_adanorm_dynamic(&[Some(0), Some(1), None], &["seq", "batch"])
            .matches()
            .is_empty()
    );
    assert!(
        dynamo_adanorm_dynamic(&[Some(0), Some(1), None], &["batch", "other"])
            .matches()
            .is_empty()
    );
}

#[test]
fn an_unsqueeze_at_the_reduced_axis_restores_the_variance() {
    let ok = |axes: &[f64]| {
        let axes = axes.to_vec();
        dynamo_adanorm_on(&["batch", "seq", &H.to_string()], move |b, vu| {
            let a = b.init_typed("unsq_axes", I64, &[axes.len() as i64], &axes);
            b.op("Unsqueeze", &[vu, &a], vec![])
        })
        .matches()
    };
    assert_eq!(only(ok(&[-1.0])).family, Family::AdaNorm);
    assert_eq!(only(ok(&[2.0])).family, Family::AdaNorm);
    assert!(ok(&[1.0]).is_empty());
}

/// Statistics as sums divided by hand: `mean = Unsqueeze(ReduceSum(x, keepdims=0)) / n_mean`,
/// `var = ReduceSum(d², keepdims=1) / n_var`, `y = d / sqrt(var + eps)`.
fn sums(n_mean: f32, n_var: f32) -> Builder {
    sums_of(n_mean, n_var, false)
}

/// [`sums`] over `x`, or over `Gemm(x2d, W[16, H], b)` (whose row length only the `Gemm`
/// shape rule tells: nothing declares it).
fn sums_of(n_mean: f32, n_var: f32, of_gemm: bool) -> Builder {
    let mut b = Builder::new(13);
    let x = if of_gemm {
        let x = b.input_named("x", F32, &["rows", "16"]);
        let w = b.init("W", &[16, H], &vec![0.5; 16 * H as usize]);
        let bias = b.init("gemm_b", &[H], &vec![0.25; H as usize]);
        b.op("Gemm", &[&x, &w, &bias], vec![])
    } else {
        b.input("x", F32, &[2, 3, H])
    };
    let axes = b.init_typed("axes", I64, &[1], &[-1.0]);
    let s = b.op("ReduceSum", &[&x, &axes], vec![("keepdims", A::I(0))]);
    let s = b.op("Unsqueeze", &[&s, &axes], vec![]);
    let nm = b.init("n_mean", &[], &[n_mean]);
    let m = b.op("Div", &[&s, &nm], vec![]);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let sq = b.op("Mul", &[&d, &d], vec![]);
    let ss = b.op("ReduceSum", &[&sq, &axes], vec![("keepdims", A::I(1))]);
    let nv = b.init("n_var", &[], &[n_var]);
    let v = b.op("Div", &[&ss, &nv], vec![]);
    let eps = b.init("eps", &[], &[1e-5]);
    let ve = b.op("Add", &[&v, &eps], vec![]);
    let sd = b.op("Sqrt", &[&ve], vec![]);
    b.node_named("y", "Div", &[&d, &sd], &["out"], vec![]);
    b.output("out", F32);
    b
}

#[test]
fn sums_divided_by_the_row_length_are_means() {
    let m = only(sums(H as f32, H as f32).matches());
    assert_eq!(
        (m.family, m.unbiased, m.eps_in_sqrt),
        (Family::LayerNorm, false, true)
    );
    assert!(m.rewritable, "{:?}", m.reason);
    let m = only(sums(H as f32, (H - 1) as f32).matches());
    assert_eq!((m.family, m.unbiased), (Family::LnSimple, true));
    assert!(m.rewritable, "{:?}", m.reason);
}

#[test]
fn row_counts_of_a_gemm_output_are_known() {
    let m = only(sums_of(H as f32, H as f32, true).matches());
    assert_eq!((m.family, m.unbiased), (Family::LayerNorm, false));
    assert!(m.rewritable, "{:?}", m.reason);
    let m = only(sums_of(H as f32, (H - 1) as f32, true).matches());
    assert_eq!((m.family, m.unbiased), (Family::LnSimple, true));
    // A count that is not the Gemm's row length is not a mean.
    assert!(sums_of(H as f32 + 1.0, H as f32, true)
        .matches()
        .iter()
        .all(|m| m.family != Family::LayerNorm));
}

#[test]
fn a_sum_times_the_float32_reciprocal_of_the_row_length_is_a_mean() {
    // 1/768 is not exact in float32: its reciprocal is 767.99994.
    let mut b = Builder::new(13);
    let x = b.input("x", F32, &[2, 768]);
    let axes = b.init_typed("axes", I64, &[1], &[-1.0]);
    let s = b.op("ReduceSum", &[&x, &axes], vec![("keepdims", A::I(1))]);
    let inv = b.init("inv_n", &[], &[1.0 / 768.0]);
    let m = b.op("Mul", &[&inv, &s], vec![]);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let sq = b.op("Mul", &[&d, &d], vec![]);
    let v = mean(&mut b, &sq, &[-1], 13, Some(1));
    let eps = b.init("eps", &[], &[1e-5]);
    let ve = b.op("Add", &[&v, &eps], vec![]);
    let sd = b.op("Sqrt", &[&ve], vec![]);
    b.node_named("y", "Div", &[&d, &sd], &["out"], vec![]);
    b.output("out", F32);
    let m = only(b.matches());
    assert_eq!(m.family, Family::LayerNorm);
    assert!(m.rewritable, "{:?}", m.reason);
}

#[test]
fn sums_divided_by_another_count_are_not_means() {
    // Not centred by its mean: at most an RMSNorm of `x - m`, never a LayerNorm.
    let ms = sums(H as f32 - 2.0, H as f32).matches();
    assert!(
        ms.iter()
            .all(|m| m.family == Family::RmsNorm && !m.rewritable),
        "{ms:#?}"
    );
    assert!(sums(H as f32, H as f32 - 2.0).matches().is_empty());
    assert!(sums(H as f32, H as f32 + 1.0).matches().is_empty());
}

/// AdaNorm with sigma computed twice, `Add(sqrt, eps)` once per division (the dynamo exporter
/// without its optimizer).
fn adanorm_two_sigmas(eps_a: f32, eps_b: f32) -> Builder {
    let mut b = adanorm_graph(Some(2.0), 0.1);
    let add = b
        .nodes
        .iter()
        .find(|n| {
            n.op_type() == "Add"
                && b.nodes
                    .iter()
                    .any(|s| s.op_type() == "Sqrt" && s.output[0] == n.input[0])
        })
        .expect("eps Add after the Sqrt")
        .clone();
    let eps_b = b.init("eps_b", &[], &[eps_b]);
    let eps_a = b.init("eps_a", &[], &[eps_a]);
    for n in b.nodes.iter_mut().filter(|n| n.output == add.output) {
        n.input[1] = eps_a.clone();
    }
    let second = b.op("Add", &[&add.input[0], &eps_b], vec![]);
    // The second division (the one whose numerator is a Sub) reads the copy.
    let y_div = b
        .nodes
        .iter()
        .position(|n| {
            n.op_type() == "Div"
                && n.input[1] == add.output[0]
                && b.nodes
                    .iter()
                    .any(|s| s.op_type() == "Sub" && s.output[0] == n.input[0])
        })
        .expect("the second division");
    b.nodes[y_div].input[1] = second;
    b
}

#[test]
fn adanorm_with_sigma_computed_per_use() {
    let m = only(adanorm_two_sigmas(1e-5, 1e-5).matches());
    assert_eq!((m.family, m.c), (Family::AdaNorm, 2.0));
    assert!(m.rewritable, "{:?}", m.reason);
    // Two different epsilons are two different functions: not AdaNorm.
    assert!(adanorm_two_sigmas(1e-5, 1e-3)
        .matches()
        .iter()
        .all(|m| m.family != Family::AdaNorm));
}

// ---- Keras 2's fused LayerNormalization (tf2onnx BatchNormalization) ----

/// `x [2, 5, 8]` viewed as `[1, 10, 8, 1]`, normalised by BatchNormalization with batch statistics
/// over `stat_axes` of the view, `bn_scale` as its scale, reshaped back, scaled by `gamma`.
fn keras_batchnorm(stat_axes: &[i64], bn_scale: f32) -> Builder {
    let mut b = Builder::new(13);
    let x = b.input("x", F32, &[2, 5, 8]);
    let view_shape = b.constant_typed(I64, &[4], &[1.0, -1.0, 8.0, 1.0]);
    let view = b.op("Reshape", &[&x, &view_shape], vec![]);
    let m = b.op(
        "ReduceMean",
        &[&view],
        vec![("axes", A::Is(stat_axes.to_vec())), ("keepdims", A::I(1))],
    );
    let d = b.op("Sub", &[&view, &m], vec![]);
    let ss = b.op(
        "ReduceSumSquare",
        &[&d],
        vec![("axes", A::Is(stat_axes.to_vec())), ("keepdims", A::I(0))],
    );
    let squeeze_axes = b.constant_typed(I64, &[3], &[0.0, 2.0, 3.0]);
    let mean = b.op("Squeeze", &[&m, &squeeze_axes], vec![]);
    let count = b.constant(8.0);
    let var = b.op("Div", &[&ss, &count], vec![]);
    let ones = b.init("ones", &[10], &[bn_scale; 10]);
    let zeros = b.init("zeros", &[10], &[0.0; 10]);
    let n = b.op(
        "BatchNormalization",
        &[&view, &ones, &zeros, &mean, &var],
        vec![("epsilon", A::F(1e-3))],
    );
    let back_shape = b.constant_typed(I64, &[3], &[2.0, 5.0, 8.0]);
    let y = b.op("Reshape", &[&n, &back_shape], vec![]);
    let g = b.init("gamma", &[8], &[1.5; 8]);
    let out = b.op("Mul", &[&y, &g], vec![]);
    b.node_named("c", "Identity", &[&out], &["out"], vec![]);
    b.output("out", F32);
    b
}

#[test]
fn keras_fused_layernorm_through_batchnormalization_is_a_layernorm() {
    let m = only(keras_batchnorm(&[0, 2, 3], 1.0).matches());
    assert_eq!(m.family, Family::LayerNorm);
    assert!(m.rewritable, "{:?}", m.reason);
    assert_eq!((m.input.as_str(), m.axis), ("x", Some(-1)));
    assert!((m.epsilon - 1e-3).abs() < 1e-9 && !m.unbiased && m.eps_in_sqrt);
    assert_eq!(m.scale.as_deref(), Some("gamma"));
}

#[test]
fn batchnormalization_that_is_not_a_layernorm_is_left_alone() {
    // Statistics over the wrong axes of the view, or a scale other than 1: not a LayerNorm.
    assert!(keras_batchnorm(&[0, 2], 1.0).matches().is_empty());
    assert!(keras_batchnorm(&[0, 2, 3], 2.0).matches().is_empty());
}

// ---- TensorFlow's (x - mean) * rsqrt(var + eps) * gamma, as tf2onnx writes it ----

/// Means as GlobalAveragePool over `x [2, 5, 8]`, the gain multiplied into the reciprocal
/// first: `d * (Reciprocal(Sqrt(var + eps)) * gamma) + beta`.
fn tf_gain_in_reciprocal(gamma_dims: &[i64]) -> Builder {
    let mut b = Builder::new(13);
    let x = b.input("x", F32, &[2, 5, 8]);
    let m = b.op("GlobalAveragePool", &[&x], vec![]);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let sq = b.op("Mul", &[&d, &d], vec![]);
    let v = b.op("GlobalAveragePool", &[&sq], vec![]);
    let e = b.constant(1e-12);
    let ve = b.op("Add", &[&v, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let inv = b.op("Reciprocal", &[&s], vec![]);
    let count: i64 = gamma_dims.iter().product();
    let g = b.init("gamma", gamma_dims, &vec![1.5; count as usize]);
    let scaled = b.op("Mul", &[&inv, &g], vec![]);
    let y = b.op("Mul", &[&d, &scaled], vec![]);
    let beta = b.init("beta", &[8], &[0.5; 8]);
    let z = b.op("Add", &[&y, &beta], vec![]);
    b.node_named("c", "Identity", &[&z], &["out"], vec![]);
    b.output("out", F32);
    b
}

#[test]
fn gain_multiplied_into_the_reciprocal_is_the_scale() {
    let m = only(tf_gain_in_reciprocal(&[8]).matches());
    assert_eq!(m.family, Family::LayerNorm);
    assert!(m.rewritable, "{:?}", m.reason);
    assert_eq!(m.axis, Some(-1));
    assert_eq!(
        (m.scale.as_deref(), m.bias.as_deref()),
        (Some("gamma"), Some("beta"))
    );
}

#[test]
fn a_gain_that_varies_across_rows_is_not_taken_into_the_reciprocal_form() {
    // [5, 8] differs from row to row: not a LayerNorm gain, so not this form's scale.
    let ms = tf_gain_in_reciprocal(&[5, 8]).matches();
    assert!(
        ms.iter().all(|m| m.scale.as_deref() != Some("gamma")),
        "{ms:#?}"
    );
}

// ---- Other ONNX normalisation ops that are a LayerNorm for some settings ----

/// `MeanVarianceNormalization` of an input of rank `rank` (`axes`: the attribute, or absent),
/// then `Mul(gamma)`, `Add(beta)` over the last axis.
fn mvn(rank: usize, axes: Option<Vec<i64>>) -> Builder {
    let mut b = Builder::new(13);
    let dims: Vec<i64> = (0..rank as i64 - 1).map(|i| i + 2).chain([H]).collect();
    let x = b.input("x", F32, &dims);
    let attrs = axes.map(|a| vec![("axes", A::Is(a))]).unwrap_or_default();
    let n = b.op("MeanVarianceNormalization", &[&x], attrs);
    let gamma = b.init("gamma", &[H], &[1.5; H as usize]);
    let beta = b.init("beta", &[H], &[0.25; H as usize]);
    let s = b.op("Mul", &[&n, &gamma], vec![]);
    b.node_named("shift", "Add", &[&s, &beta], &["out"], vec![]);
    b.output("out", F32);
    b
}

#[test]
fn mean_variance_normalization_over_trailing_axes_is_layernorm_simple() {
    let m = only(mvn(3, Some(vec![-1])).matches());
    assert_eq!(m.family, Family::LnSimple);
    assert_eq!(
        (m.epsilon, m.unbiased, m.eps_in_sqrt, m.axis),
        (1e-9, false, false, Some(-1))
    );
    assert_eq!(
        (m.scale.as_deref(), m.bias.as_deref()),
        (Some("gamma"), Some("beta"))
    );
    assert!(m.rewritable, "{:?}", m.reason);
    // Axes [2, 3] of a rank-4 input: the two trailing ones; the [H] gain is per row element.
    let m = only(mvn(4, Some(vec![2, 3])).matches());
    assert_eq!(m.axis, Some(-2));
    assert!(m.rewritable, "{:?}", m.reason);
}

/// `fuse` leaves a match that is one normalisation node as it is, as it leaves
/// `LayerNormalization`: a bare `MeanVarianceNormalization` stays; with its gain and bias the
/// three nodes become one. `rewrite` changes both.
#[test]
fn fuse_keeps_a_bare_mean_variance_normalization_and_fuses_one_with_an_affine() {
    use adanorm_onnx::graph::GraphIndex;
    use adanorm_onnx::rewrite::{plan::plan_model, Affine, Target};
    let mut bare = Builder::new(13);
    let x = bare.input("x", F32, &[2, 3, H]);
    bare.node_named(
        "mvn",
        "MeanVarianceNormalization",
        &[&x],
        &["out"],
        vec![("axes", A::Is(vec![2]))],
    );
    bare.output("out", F32);
    let dir = tempfile::tempdir().unwrap();
    for (name, b, fused_changes) in [("bare", bare, 0), ("affine", mvn(3, Some(vec![-1])), 1)] {
        let model = adanorm_onnx::onnx::load_model(&b.save(dir.path(), name)).unwrap();
        let g = GraphIndex::build(&model).unwrap();
        let m = only(adanorm_onnx::patterns::find_matches(&g));
        assert_eq!(m.is_one_node_op(), fused_changes == 0, "{name}");
        for (include_fused, want) in [(false, fused_changes), (true, 1)] {
            let opts = common::rewrite_options(Target::Same, Affine::Keep, None, include_fused);
            let o = plan_model(&g, &opts).unwrap();
            let changed = o.changes.iter().filter(|c| c.same_function).count();
            assert_eq!(changed, want, "{name}, include_fused {include_fused}");
        }
    }
}

#[test]
fn mean_variance_normalization_with_default_axes_is_not_rewritable() {
    // No attribute: axes [0, 2, 3], across the batch.
    let m = only(mvn(4, None).matches());
    assert_eq!(m.axes, [0, 2, 3]);
    assert!(!m.rewritable);
}

/// `InstanceNormalization(x, scale, bias)` on `[2, 3, H]` with per-channel `scale` and `bias`
/// filled to the channel count in the graph (`ConstantOfShape` of `Shape(x)[1:2]`, as tf2onnx
/// writes them) or stored (`stored`, as PyTorch writes instance and group norms), then the gain.
fn instance_norm(scale: f32, bias: f32, stored: bool) -> Builder {
    let mut b = Builder::new(13);
    let x = b.input("x", F32, &[2, 3, H]);
    let (s, bi) = if stored {
        (
            b.init("in_scale", &[3], &[scale; 3]),
            b.init("in_bias", &[3], &[bias; 3]),
        )
    } else {
        let shape = b.op("Shape", &[&x], vec![]);
        let (one, two) = (
            b.init_typed("one", I64, &[1], &[1.0]),
            b.init_typed("two", I64, &[1], &[2.0]),
        );
        let channels = b.op("Slice", &[&shape, &one, &two], vec![]);
        let fill = |b: &mut Builder, v: f32| {
            let t = common::tensor_f32("", &[1], &[v]);
            b.op("ConstantOfShape", &[&channels], vec![("value", A::T(t))])
        };
        (fill(&mut b, scale), fill(&mut b, bias))
    };
    let n = b.op(
        "InstanceNormalization",
        &[&x, &s, &bi],
        vec![("epsilon", A::F(1e-12))],
    );
    let gamma = b.init("gamma", &[H], &[1.5; H as usize]);
    b.node_named("scale", "Mul", &[&n, &gamma], &["out"], vec![]);
    b.output("out", F32);
    b
}

#[test]
fn instance_normalization_with_unit_scale_and_zero_bias_is_layernorm() {
    let m = only(instance_norm(1.0, 0.0, false).matches());
    assert_eq!(m.family, Family::LayerNorm);
    assert_eq!(
        (m.epsilon, m.unbiased, m.eps_in_sqrt, m.axis),
        (1e-12f32 as f64, false, true, Some(-1))
    );
    assert_eq!(
        (m.scale.as_deref(), m.bias.as_deref()),
        (Some("gamma"), None)
    );
    assert!(m.rewritable, "{:?}", m.reason);
    // The fills' Shape/Slice chain belongs to the match: 1 + 2 fills + 2 + the gain's Mul.
    assert_eq!(m.nodes.len(), 6, "{:?}", m.nodes);
}

#[test]
fn instance_normalization_with_a_real_scale_or_bias_is_not_layernorm() {
    assert!(instance_norm(2.0, 0.0, false).matches().is_empty());
    assert!(instance_norm(1.0, 0.5, false).matches().is_empty());
}

#[test]
fn stored_unit_scale_and_zero_bias_are_an_instance_norm() {
    // PyTorch's InstanceNorm (affine=False) and GroupNorm (over a [N, groups, -1] view).
    assert!(instance_norm(1.0, 0.0, true).matches().is_empty());
}

// ---- Roots written as powers ----

/// `(x - mean) * (var + eps) ** exponent` (`inverse`) or `(x - mean) / (var + eps) ** exponent`,
/// then the gain.
fn pow_root(exponent: f32, inverse: bool) -> Builder {
    let mut b = Builder::new(13);
    let x = b.input("x", F32, &[2, 3, H]);
    let m = mean(&mut b, &x, &[-1], 13, Some(1));
    let d = b.op("Sub", &[&x, &m], vec![]);
    let two = b.constant(2.0);
    let sq = b.op("Pow", &[&d, &two], vec![]);
    let v = mean(&mut b, &sq, &[-1], 13, Some(1));
    let eps = b.constant(1e-5);
    let ve = b.op("Add", &[&v, &eps], vec![]);
    let e = b.constant(exponent);
    let root = b.op("Pow", &[&ve, &e], vec![]);
    let y = b.op(if inverse { "Mul" } else { "Div" }, &[&d, &root], vec![]);
    let gamma = b.init("gamma", &[H], &[1.5; H as usize]);
    b.node_named("scale", "Mul", &[&y, &gamma], &["out"], vec![]);
    b.output("out", F32);
    b
}

#[test]
fn roots_written_as_powers() {
    for (exponent, inverse) in [(0.5, false), (-0.5, true)] {
        let m = only(pow_root(exponent, inverse).matches());
        assert_eq!(m.family, Family::LayerNorm, "{exponent}");
        assert_eq!((m.epsilon, m.eps_in_sqrt), (1e-5f32 as f64, true));
        assert_eq!(m.scale.as_deref(), Some("gamma"));
        assert!(m.rewritable, "{:?}", m.reason);
    }
}

#[test]
fn other_powers_are_not_roots() {
    // Dividing by the inverse root, multiplying by the root, or another exponent.
    for (exponent, inverse) in [(-0.5, false), (0.5, true), (0.25, false), (-1.0, true)] {
        assert!(
            pow_root(exponent, inverse).matches().is_empty(),
            "{exponent} {inverse}"
        );
    }
}

#[test]
fn a_crafted_shape_computation_is_given_up_on() {
    // A reshape target built from 20 levels of Concat(t, t, t, t): reading it entry by entry
    // would visit 4^20 values; the walk gives up instead (and the match with it).
    let b = dynamo_adanorm_on(&["batch", "seq", &H.to_string()], |b, vu| {
        let s = b.op("Shape", &[vu], vec![("start", A::I(0)), ("end", A::I(1))]);
        let mut t = s;
        for _ in 0..20 {
            t = b.op("Concat", &[&t, &t, &t, &t], vec![("axis", A::I(0))]);
        }
        b.op("Reshape", &[vu, &t], vec![])
    });
    assert!(b.matches().is_empty());
}

// ---- guards around the variance, folded divisors, ReduceSumSquare (Flax / jax2onnx) ----

/// `E[x²]−E[x]²`, then `guard(var)`, eps, Sqrt, Div: how Flax's fast variance is exported.
fn guarded_moment_difference(
    guard: impl Fn(&mut Builder, &str) -> String,
) -> (Vec<Match>, Vec<String>) {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, H]);
    let m = mean(&mut b, &x, &[-1], 14, None);
    let x2 = b.op("Mul", &[&x, &x], vec![]);
    let ex2 = mean(&mut b, &x2, &[-1], 14, None);
    let m2 = b.op("Mul", &[&m, &m], vec![]);
    let var = b.op("Sub", &[&ex2, &m2], vec![]);
    let guarded = guard(&mut b, &var);
    let e = b.constant(1e-6);
    let ve = b.op("Add", &[&guarded, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let n = b.op("Div", &[&d, &s], vec![]);
    b.node_named("c", "Identity", &[&n], &["out"], vec![]);
    b.output("out", F32);
    let model = b.model();
    let ops = model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type().to_string())
        .collect();
    (b.matches(), ops)
}

#[test]
fn variance_clamped_at_zero_is_the_variance() {
    let zero_max = |b: &mut Builder, v: &str| {
        let z = b.constant(0.0);
        b.op("Max", &[&z, v], vec![])
    };
    let relu = |b: &mut Builder, v: &str| b.op("Relu", &[v], vec![]);
    let clip = |b: &mut Builder, v: &str| {
        let z = b.constant(0.0);
        b.op("Clip", &[v, &z], vec![])
    };
    for (guard, (ms, ops)) in [
        ("Max", guarded_moment_difference(zero_max)),
        ("Relu", guarded_moment_difference(relu)),
        ("Clip", guarded_moment_difference(clip)),
    ] {
        let m = only(ms);
        assert_eq!(m.family, Family::LayerNorm, "{guard}");
        assert!(
            m.rewritable && m.epsilon == 1e-6f32 as f64,
            "{guard}: {m:?}"
        );
        // The guard is part of the match (it is removed with it).
        assert!(
            m.nodes.iter().any(|&i| ops[i] == guard),
            "{guard}: {:?}",
            m.nodes
        );
    }
    // A positive floor changes the function (a clamp-style epsilon): not looked through.
    let floor = |b: &mut Builder, v: &str| {
        let f = b.constant(1e-5);
        b.op("Max", &[v, &f], vec![])
    };
    assert!(guarded_moment_difference(floor).0.is_empty());
    // Nor is a Clip with an upper bound.
    let capped = |b: &mut Builder, v: &str| {
        let z = b.constant(0.0);
        let top = b.constant(10.0);
        b.op("Clip", &[v, &z, &top], vec![])
    };
    assert!(guarded_moment_difference(capped).0.is_empty());
}

/// jax.numpy's variance: `ReduceSumSquare(x - mean) / (N - ddof)` with the divisor
/// `Sub(N, Cast(ddof))` and the guard `Where(Greater(divisor, 0), var, NaN)`.
fn jnp_variance(ddof: i64, n: f32, cond_from_input: bool) -> Vec<Match> {
    jnp_variance_nan(ddof, n, cond_from_input, false)
}

/// The same; with `spread`, the NaN `Expand`ed to the variance's shape read by `Shape`, as
/// Keras 3 on JAX writes it through jax2onnx.
fn jnp_variance_nan(ddof: i64, n: f32, cond_from_input: bool, spread: bool) -> Vec<Match> {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, H]);
    let m = mean(&mut b, &x, &[-1], 14, None);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let ss = b.op("ReduceSumSquare", &[&d], vec![("axes", A::Is(vec![-1]))]);
    let ddof = b.constant_typed(I64, &[], &[ddof as f64]);
    let ddof_f = b.op("Cast", &[&ddof], vec![("to", A::I(F32 as i64))]);
    let count = b.constant(n);
    let divisor = b.op("Sub", &[&count, &ddof_f], vec![]);
    let var = b.op("Div", &[&ss, &divisor], vec![]);
    let cond = if cond_from_input {
        let t = b.input("t", F32, &[]);
        b.op("Greater", &[&t, &divisor], vec![])
    } else {
        let zero = b.constant(0.0);
        b.op("Greater", &[&divisor, &zero], vec![])
    };
    let nan = if spread {
        let one_nan = b.constant(f32::NAN);
        let shape = b.op("Shape", &[&var], vec![]);
        b.op("Expand", &[&one_nan, &shape], vec![])
    } else {
        b.init("nan", &[2, 1], &[f32::NAN; 2])
    };
    let guarded = b.op("Where", &[&cond, &var, &nan], vec![]);
    let e = b.constant(1e-5);
    let ve = b.op("Add", &[&guarded, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let y = b.op("Div", &[&d, &s], vec![]);
    b.node_named("c", "Identity", &[&y], &["out"], vec![]);
    b.output("out", F32);
    b.matches()
}

#[test]
fn jnp_var_and_std_through_reduce_sum_square() {
    let biased = only(jnp_variance(0, H as f32, false));
    assert_eq!((biased.family, biased.unbiased), (Family::LayerNorm, false));
    assert!(biased.rewritable, "{:?}", biased.reason);
    // Sub, Cast, Greater and Where belong to the match: nothing is left reading a removed value.
    // Every node, the Identity after it included (it only renames the output).
    assert_eq!(biased.nodes, (0..16).collect::<Vec<_>>(), "{biased:?}");
    let unbiased = only(jnp_variance(1, H as f32, false));
    // (Unbiased and no affine: the LayerNorm-simple family.)
    assert_eq!(
        (unbiased.family, unbiased.unbiased),
        (Family::LnSimple, true)
    );
    // A divisor that is neither N nor N - 1 is not a variance.
    assert!(jnp_variance(2, H as f32, false).is_empty());
    assert!(jnp_variance(0, (H + 1) as f32, false).is_empty());
    // A guard whose condition depends on an input is a real choice, not a guard.
    assert!(jnp_variance(0, H as f32, true).is_empty());
    // The NaN spread by Expand over Shape(var): its nodes are the match's helpers, not a
    // second input (was "reads its input through several different casts").
    let spread = only(jnp_variance_nan(0, H as f32, false, true));
    assert!(spread.rewritable, "{:?}", spread.reason);
    assert_eq!(spread.input, "x");
    assert_eq!(spread.nodes, (0..19).collect::<Vec<_>>(), "{spread:?}");
}

/// A bias spelled out to the full shape by `Expand` is the bias when the expansion repeats
/// only dimensions the output has; an Expand that grows the output is not absorbed.
#[test]
fn expanded_bias_is_the_bias_when_it_only_repeats() {
    for (target, absorbed) in [(vec![2i64, 3, H], true), (vec![4, 2, 3, H], false)] {
        let mut b = Builder::new(14);
        let x = b.input("x", F32, &[2, 3, H]);
        let m = mean(&mut b, &x, &[-1], 14, None);
        let d = b.op("Sub", &[&x, &m], vec![]);
        let sq = b.op("Mul", &[&d, &d], vec![]);
        let v = mean(&mut b, &sq, &[-1], 14, None);
        let e = b.constant(1e-5);
        let ve = b.op("Add", &[&v, &e], vec![]);
        let s = b.op("Sqrt", &[&ve], vec![]);
        let n = b.op("Div", &[&d, &s], vec![]);
        let beta = b.init("beta", &[H], &[0.5; H as usize]);
        let shape = b.constant_typed(
            I64,
            &[target.len() as i64],
            &target.iter().map(|&t| t as f64).collect::<Vec<_>>(),
        );
        let wide = b.op("Expand", &[&beta, &shape], vec![]);
        let y = b.op("Add", &[&n, &wide], vec![]);
        b.node_named("c", "Identity", &[&y], &["out"], vec![]);
        b.output("out", F32);
        let m = only(b.matches());
        assert_eq!(m.bias.is_some(), absorbed, "target {target:?}: {m:?}");
        assert!(m.rewritable);
    }
}

/// paddle2onnx's float16 converter: a float16 LayerNorm whose means run in float32 between
/// Casts, its input behind an Identity. The casts and the Identity belong to the match, found
/// whichever read is followed first; a float32 copy also read outside the match keeps it from
/// being rewritten (it could not be removed), with the reason.
fn fp16_with_float32_means(cast_read_outside: bool) -> Vec<Match> {
    let mut b = Builder::new(13);
    let x = b.input("x", F16, &[2, H]);
    let v = b.op("Identity", &[&x], vec![]);
    let f32_mean = |b: &mut Builder, t: &str| {
        let up = b.op("Cast", &[t], vec![("to", A::I(F32 as i64))]);
        let m = mean(b, &up, &[-1], 13, None);
        (b.op("Cast", &[&m], vec![("to", A::I(F16 as i64))]), up)
    };
    let (m, up) = f32_mean(&mut b, &v);
    let d = b.op("Sub", &[&v, &m], vec![]);
    let two = b.constant_typed(F16, &[], &[2.0]);
    let sq = b.op("Pow", &[&d, &two], vec![]);
    let (var, _) = f32_mean(&mut b, &sq);
    let e = b.constant_typed(F16, &[], &[1e-5]);
    let ve = b.op("Add", &[&var, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let y = b.op("Div", &[&d, &s], vec![]);
    b.node_named("c", "Identity", &[&y], &["out"], vec![]);
    b.output("out", F16);
    if cast_read_outside {
        b.node_named("other", "Identity", &[&up], &["other_out"], vec![]);
        b.output("other_out", F32);
    }
    b.matches()
}

#[test]
fn float32_means_between_casts_in_a_float16_layernorm() {
    let m = only(fp16_with_float32_means(false));
    assert_eq!(
        (m.family, m.dtype, m.input.as_str()),
        (Family::LayerNorm, Some(F16), "x")
    );
    assert!(m.rewritable, "{:?}", m.reason);
    let shared = only(fp16_with_float32_means(true));
    assert!(!shared.rewritable);
    assert!(shared.reason.unwrap().contains("several different casts"));
}

/// paddle2onnx's style: an Identity after every op and the variance scaled by its `scale` op
/// (`Mul(var, s)` then `Add(., eps)`). With `s = 1` it is a LayerNorm and every Identity belongs
/// to the match; `s = 2` changes the variance; an inner Identity read outside keeps the match
/// from being rewritten.
fn identity_laden(scale: f32, identity_read_outside: bool) -> Vec<Match> {
    identity_laden_in("", scale, identity_read_outside)
}

/// The same with the Identity nodes in `domain` ("" or its other spelling "ai.onnx").
fn identity_laden_in(domain: &str, scale: f32, identity_read_outside: bool) -> Vec<Match> {
    let mut b = Builder::new(13);
    let x = b.input("x", F32, &[2, H]);
    let id = |b: &mut Builder, v: &str| b.domain_op(domain, "Identity", &[v], vec![]);
    let m = mean(&mut b, &x, &[-1], 13, None);
    let m = id(&mut b, &m);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let d = id(&mut b, &d);
    let sq = b.op("Mul", &[&d, &d], vec![]);
    let sq = id(&mut b, &sq);
    let v = mean(&mut b, &sq, &[-1], 13, None);
    let v = id(&mut b, &v);
    let s = b.constant(scale);
    let scaled = b.op("Mul", &[&v, &s], vec![]);
    let e = b.constant(1e-5);
    let ve = b.op("Add", &[&scaled, &e], vec![]);
    let ve = id(&mut b, &ve);
    let root = b.op("Sqrt", &[&ve], vec![]);
    let root = id(&mut b, &root);
    let y = b.op("Div", &[&d, &root], vec![]);
    let y = id(&mut b, &y);
    b.node_named("c", "Relu", &[&y], &["out"], vec![]);
    b.output("out", F32);
    if identity_read_outside {
        b.node_named("peek", "Identity", &[&v], &["peek_out"], vec![]);
        b.output("peek_out", F32);
    }
    b.matches()
}

#[test]
fn identities_inside_the_chain_and_a_neutral_scale() {
    let m = only(identity_laden(1.0, false));
    assert_eq!((m.family, m.input.as_str()), (Family::LayerNorm, "x"));
    assert!(m.rewritable, "{:?}", m.reason);
    // Every node but the Relu reading the result (the last of 18).
    assert_eq!(m.nodes, (0..17).collect::<Vec<_>>(), "{m:?}");
    // "ai.onnx" is the default domain too.
    let spelled = only(identity_laden_in("ai.onnx", 1.0, false));
    assert_eq!((spelled.nodes, spelled.rewritable), (m.nodes.clone(), true));
    // A variance times 2 is not a variance.
    assert!(identity_laden(2.0, false).is_empty());
    // The variance read outside the match: found, not rewritable.
    let shared = only(identity_laden(1.0, true));
    assert!(!shared.rewritable, "{shared:?}");
}

/// paddle2onnx's row count with dynamic dimensions: `N = Size(x) / Size(sum)`, the unbiased
/// divisor `Max(N - 1, 0)`. Counting the elements of another tensor (`Size(other)`) is not
/// the row length; `N + 1` is no variance divisor.
fn size_ratio_variance(numerator_of_x: bool, minus: f32) -> Vec<Match> {
    let mut b = Builder::new(13);
    let x = b.input_named("x", F32, &["batch", "seq", "8"]);
    let other = b.input_named("other", F32, &["batch", "seq", "16"]);
    let m = mean(&mut b, &x, &[-1], 13, None);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let sq = b.op("Mul", &[&d, &d], vec![]);
    let sum = b.op(
        "ReduceSum",
        &[&sq],
        vec![("axes", A::Is(vec![-1])), ("keepdims", A::I(1))],
    );
    let size = |b: &mut Builder, t: &str| {
        let n = b.op("Size", &[t], vec![]);
        b.op("Cast", &[&n], vec![("to", A::I(F32 as i64))])
    };
    let all = size(&mut b, if numerator_of_x { &x } else { &other });
    let rows = size(&mut b, &sum);
    let n = b.op("Div", &[&all, &rows], vec![]);
    let one = b.constant(1.0);
    let n = b.op("Mul", &[&n, &one], vec![]);
    let k = b.constant(minus);
    let n1 = b.op("Add", &[&n, &k], vec![]);
    let zero = b.init("zero", &[1], &[0.0]);
    let n1 = b.op("Max", &[&n1, &zero], vec![]);
    let var = b.op("Div", &[&sum, &n1], vec![]);
    let s = b.op("Sqrt", &[&var], vec![]);
    let e = b.constant(1e-5);
    let den = b.op("Add", &[&s, &e], vec![]);
    let y = b.op("Div", &[&d, &den], vec![]);
    b.node_named("c", "Relu", &[&y], &["out"], vec![]);
    b.output("out", F32);
    b.matches()
}

#[test]
fn dynamic_row_count_from_element_counts() {
    let m = only(size_ratio_variance(true, -1.0));
    assert_eq!(
        (m.family, m.unbiased, m.eps_in_sqrt),
        (Family::LnSimple, true, false)
    );
    assert!(m.rewritable, "{:?}", m.reason);
    assert!(size_ratio_variance(false, -1.0).is_empty());
    assert!(size_ratio_variance(true, 1.0).is_empty());
}

// ---- found by tests/it/fuzz_rewrites.rs ----

/// The PyTorch chain on a rank-3 input with ε made by `eps(b)` and the centred value passed
/// through `centred(b, d)` before it is squared.
fn ln_with(
    eps: impl Fn(&mut Builder) -> String,
    centred: impl Fn(&mut Builder, &str) -> String,
) -> Vec<Match> {
    ln_on(false, eps, centred)
}

/// [`ln_with`], X made by a custom op (its element type unknown) when `opaque`.
fn ln_on(
    opaque: bool,
    eps: impl Fn(&mut Builder) -> String,
    centred: impl Fn(&mut Builder, &str) -> String,
) -> Vec<Match> {
    let mut b = Builder::new(14);
    let mut x = b.input("x", F32, &[2, 3, H]);
    if opaque {
        b.extra_opsets.push(("custom.ops".into(), 1));
        x = b.domain_op("custom.ops", "Opaque", &[&x], vec![]);
    }
    let m = mean(&mut b, &x, &[-1], 14, None);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let dq = centred(&mut b, &d);
    let two = b.constant(2.0);
    let sq = b.op("Pow", &[&dq, &two], vec![]);
    let v = mean(&mut b, &sq, &[-1], 14, None);
    let e = eps(&mut b);
    let ve = b.op("Add", &[&v, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let y = b.op("Div", &[&d, &s], vec![]);
    b.node_named("consumer", "Relu", &[&y], &["out"], vec![]);
    b.output("out", F32);
    b.matches()
}

#[test]
fn a_one_element_epsilon_of_higher_rank_than_x_is_not_a_scalar() {
    // [1, 1, 1, 1] on a rank-3 input: the output is [1, 2, 3, H], no normalisation of X.
    let ms = ln_with(
        |b| b.constant_typed(F32, &[1, 1, 1, 1], &[1e-5]),
        |_, d| d.to_string(),
    );
    assert!(ms.iter().all(|m| !m.rewritable), "{ms:#?}");
    // Of X's rank or lower it only broadcasts like a scalar.
    for dims in [&[1, 1, 1][..], &[1], &[]] {
        let m = only(ln_with(
            |b| b.constant_typed(F32, dims, &[1e-5]),
            |_, d| d.to_string(),
        ));
        assert!(
            m.rewritable && m.family == Family::LayerNorm,
            "{dims:?}: {m:?}"
        );
    }
}

#[test]
fn a_round_trip_through_float16_inside_the_chain_is_not_a_precision_cast() {
    // float32 → float16 → float32 on the centred value rounds it: not the LayerNorm of x.
    let ms = ln_with(
        |b| b.constant(1e-5),
        |b, d| {
            let h = b.op("Cast", &[d], vec![("to", A::I(F16 as i64))]);
            b.op("Cast", &[&h], vec![("to", A::I(F32 as i64))])
        },
    );
    assert!(ms.iter().all(|m| !m.rewritable), "{ms:#?}");
    // Widening and back (float32 → float64 → float32) is exact and still a LayerNorm.
    let m = only(ln_with(
        |b| b.constant(1e-5),
        |b, d| {
            let w = b.op("Cast", &[d], vec![("to", A::I(F64 as i64))]);
            b.op("Cast", &[&w], vec![("to", A::I(F32 as i64))])
        },
    ));
    assert!(m.rewritable, "{m:?}");
}

#[test]
fn a_round_trip_from_a_value_of_unknown_type_is_taken_to_round() {
    // X's type unknown (a custom op makes it): the Cast to float16 may narrow, so the round trip
    // is not looked through (nothing can tell it is exact).
    let ms = ln_on(
        true,
        |b| b.constant(1e-5),
        |b, d| {
            let h = b.op("Cast", &[d], vec![("to", A::I(F16 as i64))]);
            b.op("Cast", &[&h], vec![("to", A::I(F32 as i64))])
        },
    );
    assert!(ms.iter().all(|m| !m.rewritable), "{ms:#?}");
    let m = only(ln_on(true, |b| b.constant(1e-5), |_, d| d.to_string()));
    assert!(m.rewritable, "{m:?}");
}

#[test]
fn a_fused_layernorm_whose_scale_spans_other_axes_is_not_rewritable() {
    // ONNX Runtime and tract broadcast a [1, S, 1] Scale over the whole input; an ai.adanorm
    // node takes only parameters that broadcast onto X.shape[axis:].
    let fused = |scale_dims: &[i64], bias_dims: &[i64]| {
        let mut b = Builder::new(17);
        let x = b.input("x", F32, &[1, 5, H]);
        let n: i64 = scale_dims.iter().product();
        let s = b.init("scale", scale_dims, &vec![1.5; n as usize]);
        let n: i64 = bias_dims.iter().product();
        let bias = b.init("bias", bias_dims, &vec![0.5; n as usize]);
        let y = b.op(
            "LayerNormalization",
            &[&x, &s, &bias],
            vec![("axis", A::I(-1))],
        );
        b.node_named("c", "Identity", &[&y], &["out"], vec![]);
        b.output("out", F32);
        only(b.matches())
    };
    assert!(!fused(&[1, 5, 1], &[H]).rewritable);
    assert!(!fused(&[H], &[5, 1]).rewritable);
    for (s, bias) in [(&[H][..], &[H][..]), (&[1, H], &[1]), (&[1, 1, H], &[H])] {
        let m = fused(s, bias);
        assert!(m.rewritable, "{s:?} {bias:?}: {:?}", m.reason);
    }
}

#[test]
fn the_centred_value_added_after_the_norm_is_no_bias() {
    // Axes [-2, -1] on a [1, S, H] input: the centred value has a per-row shape, but it is made
    // inside the match; as B a rewrite would read a value it removes.
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[1, 3, H]);
    let m = mean(&mut b, &x, &[-2, -1], 14, None);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let two = b.constant(2.0);
    let sq = b.op("Pow", &[&d, &two], vec![]);
    let v = mean(&mut b, &sq, &[-2, -1], 14, None);
    let e = b.constant(1e-5);
    let ve = b.op("Add", &[&v, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let n = b.op("Div", &[&d, &s], vec![]);
    let y = b.op("Add", &[&n, &d], vec![]);
    b.node_named("consumer", "Relu", &[&y], &["out"], vec![]);
    b.output("out", F32);
    for m in b.matches() {
        assert_ne!(m.bias.as_deref(), Some(d.as_str()), "{m:?}");
        assert!(!m.rewritable, "the centred value escapes: {m:?}");
    }
}

#[test]
fn with_the_input_rank_unknown_a_gain_with_leading_ones_is_not_the_scale() {
    // X made by a custom op: its rank is unknown, and [1, 1, 1, H] may be one axis more.
    let gained = |dims: &[i64]| {
        let mut b = Builder::new(14);
        let x0 = b.input("x", F32, &[2, 3, H]);
        b.extra_opsets.push(("custom.ops".into(), 1));
        let x = b.domain_op("custom.ops", "Opaque", &[&x0], vec![]);
        let m = mean(&mut b, &x, &[-1], 14, None);
        let d = b.op("Sub", &[&x, &m], vec![]);
        let two = b.constant(2.0);
        let sq = b.op("Pow", &[&d, &two], vec![]);
        let v = mean(&mut b, &sq, &[-1], 14, None);
        let e = b.constant(1e-5);
        let ve = b.op("Add", &[&v, &e], vec![]);
        let s = b.op("Sqrt", &[&ve], vec![]);
        let n = b.op("Div", &[&d, &s], vec![]);
        let count: i64 = dims.iter().product();
        let g = b.init("gamma", dims, &vec![1.5; count as usize]);
        let y = b.op("Mul", &[&n, &g], vec![]);
        b.node_named("consumer", "Relu", &[&y], &["out"], vec![]);
        b.output("out", F32);
        only(b.matches())
    };
    assert_eq!(gained(&[H]).scale.as_deref(), Some("gamma"));
    assert_ne!(gained(&[1, 1, 1, H]).scale.as_deref(), Some("gamma"));
}

/// jax2onnx's centring for Flax `use_fast_variance=False`: `Where(ReduceMin(x) == ReduceMax(x)
/// and mean − mean == 0, 0, x − mean)` zeroes constant rows exactly. Found as the LayerNorm it
/// is, and not rewritten: one fused node's `x − mean` is not exactly 0 there. With extrema
/// over other axes it is no constant-row test, and no LayerNorm.
fn constant_row_guarded_ln(extrema_axes: &[i64]) -> Vec<Match> {
    constant_row_guarded_ln_with(extrema_axes, true)
}

/// The same; without `extrema`, both sides of the `And` are the finiteness test, which zeroes
/// every finite row: no constant-row guard, and no LayerNorm.
fn constant_row_guarded_ln_with(extrema_axes: &[i64], extrema: bool) -> Vec<Match> {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 3, H]);
    let m = mean(&mut b, &x, &[-1], 14, None);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let reduce = |b: &mut Builder, op: &str| {
        b.op(
            op,
            &[&x],
            vec![
                ("axes", A::Is(extrema_axes.to_vec())),
                ("keepdims", A::I(1)),
            ],
        )
    };
    let lo = reduce(&mut b, "ReduceMin");
    let hi = reduce(&mut b, "ReduceMax");
    let equal_extrema = b.op("Equal", &[&lo, &hi], vec![]);
    let delta = b.op("Sub", &[&m, &m], vec![]);
    let zero = b.constant(0.0);
    let finite = b.op("Equal", &[&delta, &zero], vec![]);
    let first = if extrema {
        equal_extrema
    } else {
        finite.clone()
    };
    let constant_row = b.op("And", &[&first, &finite], vec![]);
    let stable = b.op("Where", &[&constant_row, &zero, &d], vec![]);
    let sq = b.op("Mul", &[&stable, &stable], vec![]);
    let v = mean(&mut b, &sq, &[-1], 14, None);
    let e = b.constant(1e-6);
    let ve = b.op("Add", &[&v, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let y = b.op("Div", &[&stable, &s], vec![]);
    b.node_named("consumer", "Relu", &[&y], &["out"], vec![]);
    b.output("out", F32);
    b.matches()
}

#[test]
fn jax2onnx_constant_row_guard_is_a_layernorm_left_as_it_is() {
    let m = only(constant_row_guarded_ln(&[-1]));
    assert_eq!(m.family, Family::LayerNorm, "{m:#?}");
    assert_eq!(m.input, "x");
    assert!(!m.rewritable);
    assert!(
        m.reason
            .as_deref()
            .is_some_and(|r| r.contains("constant-row guard")),
        "{:?}",
        m.reason
    );
    let other_axes = constant_row_guarded_ln(&[1]);
    assert!(
        other_axes.iter().all(|m| m.family != Family::LayerNorm),
        "{other_axes:#?}"
    );
    let no_extrema = constant_row_guarded_ln_with(&[-1], false);
    assert!(
        no_extrema.iter().all(|m| m.family != Family::LayerNorm),
        "{no_extrema:#?}"
    );
}
