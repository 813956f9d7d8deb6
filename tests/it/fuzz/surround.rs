//! Surroundings: a whole model around one or two normalisations from the grammar. What comes
//! before X (a Linear, a Transpose, an embedding Gather, a float16 Cast island), who reads the
//! output (Linear with and without bias, q/k/v with one shared bias, Gemm, residual Add, Relu,
//! Transpose, a second norm, the graph output), tensors shared and tied between them, and where
//! the norm lives (the main graph, an If branch reading outer values, a model-local function).

use super::grammar::{self, declared, Env, Form};
use super::graph::{self, Dim, A, BOOL, F16, F32, G, I64};
use super::rng::Rng;
use adanorm_onnx::onnx::proto::{attribute_proto::AttributeType, ModelProto};

pub struct Case {
    pub model: ModelProto,
    /// What was generated, for the failure report.
    pub desc: Vec<String>,
    /// A node lost inputs (the missing-inputs mutation): only "no panic" is asked of it.
    pub mutated: bool,
    /// float16 arithmetic somewhere (a float16 model or island).
    pub half: bool,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Place {
    Main,
    Branch,
    Function,
}

struct Ctx {
    rng: Rng,
    desc: Vec<String>,
    t: i32,
    opset: i64,
    shape: Vec<i64>,
    /// Float16 island: the graph's inputs and outputs are float32, the middle float16.
    island: bool,
    /// Graph outputs (name, element type).
    outs: Vec<(String, i32)>,
    /// The first `[H, H]` Linear weight after a norm: later readers (the second norm's, one
    /// inside an If branch) may read it too.
    shared_w: Option<String>,
}

impl Ctx {
    fn h(&self) -> i64 {
        *self.shape.last().unwrap()
    }
    fn weight(&mut self, g: &mut G, stem: &str, t: i32) -> String {
        let h = self.h() as usize;
        let vals = self.rng.values(h * h, -0.5, 0.5);
        g.init(stem, t, &[h as i64, h as i64], &vals)
    }
    fn matrix(&mut self, g: &mut G, stem: &str, t: i32, rows: i64, cols: i64) -> String {
        let vals = self.rng.values((rows * cols) as usize, -0.5, 0.5);
        g.init(stem, t, &[rows, cols], &vals)
    }
    fn vector(&mut self, g: &mut G, stem: &str, t: i32, around: f64) -> String {
        let h = self.h() as usize;
        let vals: Vec<f64> = self
            .rng
            .values(h, -0.5, 0.5)
            .iter()
            .map(|v| v + around)
            .collect();
        g.init(stem, t, &[h as i64], &vals)
    }
}

pub fn generate(seed: u64) -> Case {
    let mut c = Ctx {
        rng: Rng::new(seed),
        desc: vec![],
        t: F32,
        opset: 14,
        shape: vec![],
        island: false,
        outs: vec![],
        shared_w: None,
    };
    let rng = &mut c.rng;
    c.opset = *rng.pick(&[13, 14, 17, 18, 18]);
    c.t = if rng.chance(0.3) { F16 } else { F32 };
    c.island = c.t == F16 && rng.chance(0.4);
    let symbolic = rng.chance(0.3);
    let h = *rng.pick(&[4i64, 8, 16]);
    let (b, s) = if symbolic {
        (2, 2)
    } else {
        (*rng.pick(&[1i64, 2]), *rng.pick(&[3i64, 5]))
    };
    let shape_kind = rng.below(10);
    c.shape = match shape_kind {
        0 if !symbolic => vec![h, h],
        1 | 2 => vec![s, h],
        _ => vec![b, s, h],
    };
    let place = match rng.below(20) {
        0..=13 => Place::Main,
        14..=16 => Place::Branch,
        _ => Place::Function,
    };
    c.desc.push(format!(
        "opset {} {} shape {:?}{}{} in {:?}",
        c.opset,
        if c.t == F16 { "f16" } else { "f32" },
        c.shape,
        if symbolic { " symbolic" } else { "" },
        if c.island { " f16-island" } else { "" },
        place
    ));

    let mut main = G::new();
    let x = prefix(&mut c, &mut main, symbolic);
    let tied_weight = x.1.clone();
    let x = x.0;
    let mut functions = vec![];
    let mut extra_opsets: Vec<(&str, i64)> = vec![];

    // Ties decided up front, so the norm and its readers can share tensors.
    let t = c.t;
    let tie_beta_bias = c
        .rng
        .chance(0.25)
        .then(|| c.vector(&mut main, "shared_bias", t, 0.0));
    let shared_axes =
        (c.opset >= 18 && c.rng.chance(0.3)).then(|| main.constant(I64, &[1], &[-1.0]));
    if tie_beta_bias.is_some() {
        c.desc.push("β = a Linear's bias".into());
    }
    if shared_axes.is_some() {
        c.desc.push("one axes Constant for every mean".into());
    }

    let y = match place {
        Place::Main => {
            let env = Env {
                t,
                opset: c.opset,
                shape: c.shape.clone(),
                gamma: None,
                beta: tie_beta_bias.clone(),
                axes_const: shared_axes.clone(),
                may_add_inputs: true,
            };
            let (form, miss) = grammar::draw(&mut c.rng, &env);
            // ONNX Runtime's own forms, one case in twenty (a second draw picks which).
            let ort_form = c.rng.chance(0.05);
            if ort_form && c.rng.chance(0.5) {
                centred_simplified(&mut c, &mut main, &x)
            } else if ort_form {
                // ONNX Runtime's fusion with its residual Add, in the com.microsoft domain.
                extra_opsets.push(("com.microsoft", 1));
                let gm = c.vector(&mut main, "skip_gamma", t, 1.0);
                let be = c.vector(&mut main, "skip_beta", t, 0.0);
                let y = main.dop(
                    "com.microsoft",
                    "SkipLayerNormalization",
                    &[&x, &x, &gm, &be],
                    vec![("epsilon", A::F(1e-5))],
                );
                c.desc.push("SkipLayerNormalization".into());
                (y, None, Form::Fused)
            } else {
                let n = grammar::emit(&mut main, &mut c.rng, &env, &x, form, miss);
                c.desc.push(n.label.clone());
                let y = escapes(&mut c, &mut main, n.y.clone(), &n.escapes);
                (y, n.gamma, form)
            }
        }
        Place::Branch => {
            let gm = c.vector(&mut main, "outer_gamma", t, 1.0);
            let be = tie_beta_bias
                .clone()
                .unwrap_or_else(|| c.vector(&mut main, "outer_beta", t, 0.0));
            let w_outer = c.weight(&mut main, "outer_w", t);
            let cond = main.input("cond", BOOL, &[]);
            let mut branches = vec![];
            for side in ["then", "else"] {
                let mut br = main.sub(&format!("/{side}"));
                let out = if side == "else" && c.rng.chance(0.4) {
                    br.op("Relu", &[&x], vec![])
                } else {
                    let env = Env {
                        t,
                        opset: c.opset,
                        shape: c.shape.clone(),
                        gamma: Some(gm.clone()),
                        beta: Some(be.clone()),
                        axes_const: shared_axes.clone(),
                        may_add_inputs: false,
                    };
                    let (form, miss) = grammar::draw(&mut c.rng, &env);
                    let n = grammar::emit(&mut br, &mut c.rng, &env, &x, form, miss);
                    c.desc.push(format!("{side}: {}", n.label));
                    let y = escapes(&mut c, &mut br, n.y.clone(), &n.escapes);
                    // A Linear inside the branch on an outer weight that the main graph reads too.
                    if c.rng.chance(0.5) {
                        br.op("MatMul", &[&y, &w_outer], vec![])
                    } else {
                        y
                    }
                };
                br.output(&out, t);
                branches.push(br.graph(side));
            }
            let else_g = branches.pop().unwrap();
            let then_g = branches.pop().unwrap();
            let y = main.op(
                "If",
                &[&cond],
                vec![("then_branch", A::G(then_g)), ("else_branch", A::G(else_g))],
            );
            let z = main.op("MatMul", &[&y, &w_outer], vec![]);
            c.outs.push((z, t));
            (y, Some(gm), Form::Decomposed)
        }
        Place::Function => {
            let domain = "fuzz.local";
            extra_opsets.push((domain, 1));
            let mut body = main.sub("/fn");
            body.consts_only = true;
            let fused = c.rng.chance(0.3);
            if fused {
                // The epsilon is the call's attribute.
                body.node(
                    "",
                    "LayerNormalization",
                    &["X", "W", "B"],
                    &["Y"],
                    vec![
                        ("axis", A::I(-1)),
                        ("epsilon", A::Ref("eps", AttributeType::Float)),
                    ],
                );
                c.desc
                    .push("function: LayerNormalization, eps by attribute".into());
            } else {
                let env = Env {
                    t,
                    opset: c.opset,
                    shape: c.shape.clone(),
                    gamma: Some("W".into()),
                    beta: Some("B".into()),
                    axes_const: None,
                    may_add_inputs: false,
                };
                let (form, miss) = grammar::draw(&mut c.rng, &env);
                let n = grammar::emit(&mut body, &mut c.rng, &env, "X", form, miss);
                c.desc.push(format!("function: {}", n.label));
                let y = escapes_inside(&mut body, n.y, &n.escapes);
                body.node("", "Identity", &[&y], &["Y"], vec![]);
            }
            let attrs: &[&str] = if fused { &["eps"] } else { &[] };
            functions.push(body.function(domain, "Norm", &["X", "W", "B"], &["Y"], attrs, c.opset));
            let calls = 1 + c.rng.below(2);
            let mut v = x.clone();
            let gm = c.vector(&mut main, "fn_gamma", t, 1.0);
            for i in 0..calls {
                let be = tie_beta_bias
                    .clone()
                    .unwrap_or_else(|| c.vector(&mut main, "fn_beta", t, 0.0));
                let attrs = if fused {
                    vec![("eps", A::F(if i == 0 { 1e-5 } else { 1e-6 }))]
                } else {
                    vec![]
                };
                let out = main.dop(domain, "Norm", &[&v, &gm, &be], attrs);
                if i + 1 < calls {
                    c.outs.push((out.clone(), t));
                    v = main.op("Add", &[&x, &out], vec![]);
                } else {
                    v = out;
                }
            }
            (v, Some(gm), Form::Decomposed)
        }
    };
    let (y, gamma, _form) = y;
    readers(
        &mut c,
        &mut main,
        &x,
        &y,
        gamma,
        tie_beta_bias,
        shared_axes,
        tied_weight,
    );

    let mutated = c.rng.chance(0.07);
    if mutated {
        mutate(&mut c, &mut main, &x, &mut extra_opsets);
    }
    // Outputs, cast back to float32 on an island.
    let outs = std::mem::take(&mut c.outs);
    for (name, t) in outs {
        if c.island && t == F16 {
            let o = main.op("Cast", &[&name], vec![("to", A::I(F32 as i64))]);
            main.output(&o, F32);
        } else {
            main.output(&name, t);
        }
    }
    let mut opsets = vec![("", c.opset)];
    opsets.extend(extra_opsets);
    let model = graph::model(main.graph("fuzz"), &opsets, functions);
    Case {
        model,
        desc: c.desc,
        mutated,
        half: c.t == F16,
    }
}

/// ONNX Runtime's optimiser's form of two LayerNorms of one input: one centring
/// `Sub(x, ReduceMean(x))` read by `SimplifiedLayerNormalization` nodes, the bias an `Add` after
/// the node. Now and then a second norm on the same centring, and the centred value read
/// elsewhere (then it must stay). The original runs in ONNX Runtime only: the Python judge
/// compares the rewrites there.
fn centred_simplified(c: &mut Ctx, main: &mut G, x: &str) -> (String, Option<String>, Form) {
    let t = c.t;
    let mean = if c.opset >= 18 {
        let axes = main.constant(I64, &[1], &[-1.0]);
        main.op("ReduceMean", &[x, &axes], vec![("keepdims", A::I(1))])
    } else {
        main.op(
            "ReduceMean",
            &[x],
            vec![("axes", A::Is(vec![-1])), ("keepdims", A::I(1))],
        )
    };
    let centred = main.op("Sub", &[x, &mean], vec![]);
    let norm = |main: &mut G, gamma: &str| {
        main.op(
            "SimplifiedLayerNormalization",
            &[&centred, gamma],
            vec![("axis", A::I(-1)), ("epsilon", A::F(1e-5))],
        )
    };
    let gm = c.vector(main, "simplified_gamma", t, 1.0);
    let mut y = norm(main, &gm);
    let mut label = String::from("SimplifiedLayerNormalization of a centred input");
    if c.rng.chance(0.6) {
        let be = c.vector(main, "simplified_beta", t, 0.0);
        y = main.op("Add", &[&y, &be], vec![]);
        label.push_str(", its bias an Add after");
    }
    if c.rng.chance(0.5) {
        let g2 = c.vector(main, "simplified_gamma2", t, 1.0);
        let y2 = norm(main, &g2);
        c.outs.push((y2, t));
        label.push_str(", a second norm on the same centring");
    }
    if c.rng.chance(0.2) {
        c.outs.push((centred.clone(), t));
        label.push_str(", the centred value read on");
    }
    c.desc.push(label);
    (y, Some(gm), Form::Fused)
}

/// X: a graph input, possibly through a Linear, a Transpose, an embedding Gather and a Cast to
/// float16. Also returns a weight the readers may tie to (the Linear's, the embedding table).
fn prefix(c: &mut Ctx, main: &mut G, symbolic: bool) -> (String, Option<String>) {
    let t_in = if c.island { F32 } else { c.t };
    let shape = c.shape.clone();
    let h = c.h();
    let kind = c.rng.below(7);
    let (x, tied) = match kind {
        4 => {
            // A transformer block's residual: Add(x, Add(MatMul(x, W), b)) in either order,
            // the sum also a graph output half the time (pre-LN: the stream goes on).
            let x_in = main.input("x", t_in, &declared(&shape, symbolic));
            let w = c.weight(main, "res_w", t_in);
            let mut branch = main.op("MatMul", &[&x_in, &w], vec![]);
            if c.rng.chance(0.7) {
                let b = c.vector(main, "res_b", t_in, 0.0);
                branch = if c.rng.chance(0.5) {
                    main.op("Add", &[&branch, &b], vec![])
                } else {
                    main.op("Add", &[&b, &branch], vec![])
                };
            }
            // paddle2onnx writes an Identity after almost every op; the copied value is read
            // elsewhere too, now and then.
            let copies = c.rng.chance(0.3);
            let copied = |c: &mut Ctx, main: &mut G, v: String| {
                if !copies {
                    return v;
                }
                if c.rng.chance(0.2) && !c.island {
                    c.outs.push((v.clone(), c.t));
                }
                main.op("Identity", &[&v], vec![])
            };
            branch = copied(c, main, branch);
            let sum = if c.rng.chance(0.5) {
                main.op("Add", &[&x_in, &branch], vec![])
            } else {
                main.op("Add", &[&branch, &x_in], vec![])
            };
            let sum = copied(c, main, sum);
            let read_on = c.rng.chance(0.5);
            if read_on && !c.island {
                c.outs.push((sum.clone(), c.t));
            }
            c.desc.push(format!(
                "pre: residual block{}{}",
                if copies { " with Identity copies" } else { "" },
                if read_on { ", sum read on" } else { "" }
            ));
            (sum, Some(w))
        }
        1 => {
            let x_in = main.input("x", t_in, &declared(&shape, symbolic));
            let w = c.weight(main, "pre_w", t_in);
            let mut x = main.op("MatMul", &[&x_in, &w], vec![]);
            if c.rng.chance(0.5) {
                let b = c.vector(main, "pre_b", t_in, 0.0);
                x = main.op("Add", &[&x, &b], vec![]);
            }
            c.desc.push("pre: Linear".into());
            (x, Some(w))
        }
        2 if shape.len() == 3 => {
            let mut d = declared(&shape, symbolic);
            d.swap(1, 2);
            let x_in = main.input("x", t_in, &d);
            c.desc.push("pre: Transpose".into());
            (
                main.op("Transpose", &[&x_in], vec![("perm", A::Is(vec![0, 2, 1]))]),
                None,
            )
        }
        3 if shape.len() >= 2 => {
            // Token ids from {0, 1} (runner::random_inputs) into an [H, H] table, so the table can
            // also be the weight of a MatMul after the norm.
            let d = declared(&shape[..shape.len() - 1], symbolic);
            let d: Vec<Dim> = if shape.len() == 2 {
                vec![d[0].clone()]
            } else {
                d
            };
            let ids = main.input("ids", I64, &d);
            let table = c.weight(main, "embedding", t_in);
            c.desc.push("pre: Gather".into());
            let e = main.op("Gather", &[&table, &ids], vec![("axis", A::I(0))]);
            // Position embeddings, as BERT adds them: ids from {0, 1} alone repeat rows, and a
            // channels-first norm over repeated rows has a zero variance, where float16
            // rounding, not the rewrite, decides the output.
            let s = shape[shape.len() - 2];
            let vals = c.rng.values((s * h) as usize, -1.0, 1.0);
            let pos = main.init("positions", t_in, &[s, h], &vals);
            (main.op("Add", &[&e, &pos], vec![]), Some(table))
        }
        _ => (main.input("x", t_in, &declared(&shape, symbolic)), None),
    };
    if c.island {
        (main.op("Cast", &[&x], vec![("to", A::I(F16 as i64))]), None)
    } else {
        (x, tied)
    }
}

/// Inner values that escape: a graph output, or read by an Add into the output.
fn escapes(c: &mut Ctx, g: &mut G, y: String, esc: &[String]) -> String {
    let mut y = y;
    for e in esc {
        if g.is_main && c.rng.chance(0.5) {
            c.outs.push((e.clone(), c.t));
        } else {
            y = g.op("Add", &[&y, e], vec![]);
        }
    }
    y
}

fn escapes_inside(g: &mut G, y: String, esc: &[String]) -> String {
    esc.iter().fold(y, |y, e| g.op("Add", &[&y, e], vec![]))
}

#[allow(clippy::too_many_arguments)]
fn readers(
    c: &mut Ctx,
    main: &mut G,
    x: &str,
    y: &str,
    gamma: Option<String>,
    tie_beta_bias: Option<String>,
    shared_axes: Option<String>,
    tied_weight: Option<String>,
) {
    let t = c.t;
    let rank = c.shape.len();
    let n = 1 + c.rng.below(3);
    let mut any_output = false;
    for _ in 0..n {
        match c.rng.below(15) {
            0 | 1 => {
                let w = match &tied_weight {
                    Some(w) if c.rng.chance(0.6) => {
                        c.desc
                            .push("a weight read before and after the norm".into());
                        w.clone()
                    }
                    _ => match c.shared_w.clone() {
                        Some(w) if c.rng.chance(0.5) => {
                            c.desc.push("one W after two norms".into());
                            w
                        }
                        _ => {
                            let w = c.weight(main, "w", t);
                            c.shared_w.get_or_insert(w.clone());
                            w
                        }
                    },
                };
                let mut z = main.op("MatMul", &[y, &w], vec![]);
                match (&tie_beta_bias, c.rng.below(3)) {
                    (Some(b), 0 | 1) => z = main.op("Add", &[&z, b], vec![]),
                    (_, 0) => {
                        let b = c.vector(main, "bias", t, 0.0);
                        z = main.op("Add", &[&b, &z], vec![]);
                    }
                    _ => {}
                }
                c.outs.push((z, t));
            }
            2 => {
                let b = tie_beta_bias
                    .clone()
                    .unwrap_or_else(|| c.vector(main, "qkv_bias", t, 0.0));
                c.desc.push("q/k/v with one bias".into());
                for _ in 0..3 {
                    let w = c.weight(main, "w_qkv", t);
                    let z = main.op("MatMul", &[y, &w], vec![]);
                    let z = main.op("Add", &[&z, &b], vec![]);
                    c.outs.push((z, t));
                }
            }
            3 if rank == 2 => {
                let w = c.weight(main, "gemm_w", t);
                let mut ins = vec![y.to_string(), w];
                if c.rng.chance(0.6) {
                    ins.push(
                        tie_beta_bias
                            .clone()
                            .unwrap_or_else(|| c.vector(main, "gemm_b", t, 0.0)),
                    );
                }
                let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
                let tb = c.rng.below(2) as i64;
                let z = main.op("Gemm", &ins, vec![("transB", A::I(tb))]);
                c.outs.push((z, t));
            }
            4 => {
                let z = main.op("Add", &[x, y], vec![]);
                c.outs.push((z, t));
            }
            5 => {
                let z = main.op("Relu", &[y], vec![]);
                c.outs.push((z, t));
            }
            6 if rank == 3 => {
                let z = main.op("Transpose", &[y], vec![("perm", A::Is(vec![0, 2, 1]))]);
                c.outs.push((z, t));
            }
            7 => {
                // A second norm: on the residual sum, γ possibly the first norm's.
                let x2 = if c.rng.chance(0.5) {
                    main.op("Add", &[x, y], vec![])
                } else {
                    y.to_string()
                };
                let tie_gamma = gamma.clone().filter(|_| c.rng.chance(0.5));
                if tie_gamma.is_some() {
                    c.desc.push("one γ read by two norms".into());
                }
                let env = Env {
                    t,
                    opset: c.opset,
                    shape: c.shape.clone(),
                    gamma: tie_gamma,
                    beta: tie_beta_bias.clone().filter(|_| c.rng.chance(0.5)),
                    axes_const: shared_axes.clone(),
                    may_add_inputs: true,
                };
                let (form, miss) = grammar::draw(&mut c.rng, &env);
                let n2 = grammar::emit(main, &mut c.rng, &env, &x2, form, miss);
                c.desc.push(format!("second: {}", n2.label));
                let z = escapes(c, main, n2.y.clone(), &n2.escapes);
                if c.rng.chance(0.5) {
                    let w = match c.shared_w.clone() {
                        Some(w) if c.rng.chance(0.5) => {
                            c.desc.push("one W after two norms".into());
                            w
                        }
                        _ => c.weight(main, "w2", t),
                    };
                    let z = main.op("MatMul", &[&z, &w], vec![]);
                    c.outs.push((z, t));
                } else {
                    c.outs.push((z, t));
                }
            }
            8 => {
                // A Linear to another width.
                let k = *c.rng.pick(&[3i64, 5, 16]);
                let w = c.matrix(main, "w_wide", t, c.h(), k);
                let z = main.op("MatMul", &[y, &w], vec![]);
                let z = if c.rng.chance(0.5) {
                    let vals = c.rng.values(k as usize, -0.5, 0.5);
                    let b = main.init("b_wide", t, &[k], &vals);
                    main.op("Add", &[&z, &b], vec![])
                } else {
                    z
                };
                c.outs.push((z, t));
            }
            9 => {
                // The norm output as the right operand: nothing to fold into.
                let rows = c.shape[rank - 2];
                let w = c.matrix(main, "w_left", t, 3, rows);
                let z = main.op("MatMul", &[&w, y], vec![]);
                c.outs.push((z, t));
                c.desc.push("MatMul(W, norm)".into());
            }
            10 => {
                // A weight that is a graph input: not a constant to fold into.
                let h = c.h();
                let w = main.input("w_in", t, &[Dim::Known(h), Dim::Known(h)]);
                let z = main.op("MatMul", &[y, &w], vec![]);
                c.outs.push((z, t));
                c.desc.push("MatMul(norm, input)".into());
            }
            11 => {
                // Through a Reshape that keeps the row: [-1, H].
                let shape = main.constant(I64, &[2], &[-1.0, c.h() as f64]);
                let r = main.op("Reshape", &[y, &shape], vec![]);
                let w = c.weight(main, "w_flat", t);
                let z = main.op("MatMul", &[&r, &w], vec![]);
                c.outs.push((z, t));
                c.desc.push("Reshape → MatMul".into());
            }
            12 => {
                // γ also read by an op outside the norm.
                if let Some(gm) = &gamma {
                    let z = main.op("Mul", &[x, gm], vec![]);
                    c.outs.push((z, t));
                    c.desc.push("γ also read outside".into());
                }
            }
            13 => {
                // The norm output read inside an If branch of the main graph.
                let cond = main.input("cond", BOOL, &[]);
                let w = match c.shared_w.clone() {
                    Some(w) if c.rng.chance(0.6) => {
                        c.desc
                            .push("a W read after the norm and inside an If".into());
                        w
                    }
                    _ => c.weight(main, "w_branch", t),
                };
                let mut then_b = main.sub("/rthen");
                let z = then_b.op("MatMul", &[y, &w], vec![]);
                then_b.output(&z, t);
                let mut else_b = main.sub("/relse");
                // γ read inside the other branch (by an op that is no norm).
                let z2 = match &gamma {
                    Some(gm) if c.rng.chance(0.5) => {
                        c.desc.push("γ read inside an If".into());
                        else_b.op("Mul", &[y, gm], vec![])
                    }
                    _ => else_b.op("Relu", &[y], vec![]),
                };
                else_b.output(&z2, t);
                let o = main.op(
                    "If",
                    &[&cond],
                    vec![
                        ("then_branch", A::G(then_b.graph("then"))),
                        ("else_branch", A::G(else_b.graph("else"))),
                    ],
                );
                c.outs.push((o, t));
                c.desc.push("norm output read inside an If".into());
            }
            _ => {
                any_output = true;
            }
        }
    }
    if any_output || c.outs.is_empty() {
        c.outs.push((y.to_string(), t));
    }
}

/// The missing-inputs mutation: a binary op of the chain loses its second input, or a
/// com.microsoft SkipLayerNormalization gets only one.
fn mutate(c: &mut Ctx, main: &mut G, x: &str, extra_opsets: &mut Vec<(&'static str, i64)>) {
    let binary: Vec<usize> = main
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            matches!(n.op_type(), "Mul" | "Div" | "Add" | "Sub" | "Pow") && n.input.len() == 2
        })
        .map(|(i, _)| i)
        .collect();
    if !binary.is_empty() && c.rng.chance(0.6) {
        let i = binary[c.rng.below(binary.len())];
        main.nodes[i].input.truncate(1);
        c.desc.push(format!(
            "mutation: {} '{}' has one input",
            main.nodes[i].op_type(),
            main.nodes[i].name()
        ));
    } else {
        if !extra_opsets.iter().any(|(d, _)| *d == "com.microsoft") {
            extra_opsets.push(("com.microsoft", 1));
        }
        let z = main.dop("com.microsoft", "SkipLayerNormalization", &[x], vec![]);
        c.outs.push((z, c.t));
        c.desc
            .push("mutation: one-input SkipLayerNormalization".into());
    }
}
