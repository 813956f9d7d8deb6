//! Model-local function bodies for the `ai.adanorm` ops, in standard ONNX ops, so that a runtime
//! without our library (stock ONNX Runtime inlines model-local functions) runs the model; and
//! `inline` to expand a node into that body with its attributes substituted (revert's fallback).
//!
//! One body serves every call: attributes are referenced, and the choices they make are
//! arithmetic, not structure — the variance is scaled by `N / (N - unbiased)`, and sigma is
//! `e·sqrt(var + eps) + (1 - e)·(sqrt(var) + eps)` with `e = eps_in_sqrt`. Rows are the
//! `Flatten(X, axis)` view, so any axis works without knowing the rank. When every call in the
//! model has one element type, the body computes in float32 and casts back to it, as our kernels
//! do; with mixed types it computes in each call's own type. A version-2 node's residual slots
//! are written as the `Add`s they replace in front of a version-1 call (`residual::split`).

use std::collections::HashMap;

use super::names::Names;
use super::node::{float_attr, int_attr, ints_attr, op_attr, OpKind, OpParams, DOMAIN};
use crate::error::{Error, Result};
use crate::onnx::proto::{
    attribute_proto::AttributeType, AttributeProto, FunctionProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto,
};

/// The lowest default-domain opset a function body can be written for: the body reads the
/// call's attributes through `Constant`'s `value_int`/`value_float`, which exist from opset 12.
/// (Unsqueeze and ReduceMean take their axes as attributes below 13 and 18.)
pub const MIN_OPSET: i64 = 12;

/// The lowest opset an inlined body (attributes substituted as tensors) can be written for:
/// `Slice` with inputs and `Mod` exist from opset 10.
pub const MIN_INLINE_OPSET: i64 = 10;

struct Body {
    nodes: Vec<NodeProto>,
    opset: i64,
}

impl Body {
    fn node(&mut self, op: &str, inputs: &[&str], out: &str, attrs: Vec<AttributeProto>) -> String {
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            attribute: attrs,
            ..Default::default()
        });
        out.to_string()
    }

    fn reference(name: &str, attr: &str, ty: AttributeType) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            ref_attr_name: Some(attr.into()),
            r#type: Some(ty as i32),
            ..Default::default()
        }
    }

    fn const_tensor(&mut self, out: &str, t: TensorProto) -> String {
        let a = AttributeProto {
            name: Some("value".into()),
            t: Some(t),
            r#type: Some(AttributeType::Tensor as i32),
            ..Default::default()
        };
        self.node("Constant", &[], out, vec![a])
    }

    fn const_i64s(&mut self, out: &str, v: &[i64]) -> String {
        let t = TensorProto {
            dims: vec![v.len() as i64],
            data_type: Some(7),
            int64_data: v.to_vec(),
            ..Default::default()
        };
        self.const_tensor(out, t)
    }

    /// `x` with a new leading axis.
    fn unsqueeze0(&mut self, x: &str, out: &str) -> String {
        if self.opset >= 13 {
            let axes = self.const_i64s(&format!("{out}_axes"), &[0]);
            self.node("Unsqueeze", &[x, &axes], out, vec![])
        } else {
            self.node("Unsqueeze", &[x], out, vec![ints_attr("axes", &[0])])
        }
    }

    fn mean_rows(&mut self, x: &str, out: &str) -> String {
        let keep = int_attr("keepdims", 1);
        if self.opset >= 18 {
            let axes = self.const_i64s(&format!("{out}_axes"), &[1]);
            self.node("ReduceMean", &[x, &axes], out, vec![keep])
        } else {
            let axes = AttributeProto {
                name: Some("axes".into()),
                ints: vec![1],
                r#type: Some(AttributeType::Ints as i32),
                ..Default::default()
            };
            self.node("ReduceMean", &[x], out, vec![axes, keep])
        }
    }
}

/// The body; `compute_in_f32_from` is the element type of every call when they share one.
pub fn function_proto(kind: OpKind, opset: i64, compute_in_f32_from: Option<i32>) -> FunctionProto {
    let mut b = Body {
        nodes: Vec::new(),
        opset,
    };
    let float = || int_attr("to", 1);
    let xshape = b.node("Shape", &["X"], "XShape", vec![]);
    let x2d = b.node(
        "Flatten",
        &["X"],
        "X2D",
        vec![Body::reference("axis", op_attr::AXIS, AttributeType::Int)],
    );
    let xf = match compute_in_f32_from {
        Some(_) => b.node("Cast", &[&x2d], "XF", vec![float()]),
        None => x2d.clone(),
    };
    // Scalars in the compute type.
    let to_compute = |b: &mut Body, v: &str, out: &str| match compute_in_f32_from {
        Some(_) => b.node("Cast", &[v], out, vec![float()]),
        None => b.node("CastLike", &[v, "X"], out, vec![]),
    };
    let mean = b.mean_rows(&xf, "Mean2D");
    let d = b.node("Sub", &[&xf, &mean], "D", vec![]);
    let dd = b.node("Mul", &[&d, &d], "DD", vec![]);
    let var_b = b.mean_rows(&dd, "VarBiased");
    // N / (N - unbiased)
    let shape2d = b.node("Shape", &[&x2d], "Shape2D", vec![]);
    let one_idx = b.const_tensor(
        "OneIndex",
        TensorProto {
            data_type: Some(7),
            int64_data: vec![1],
            ..Default::default()
        },
    );
    let n_int = b.node("Gather", &[&shape2d, &one_idx], "NInt", vec![]);
    let n = to_compute(&mut b, &n_int, "N");
    let ub_i = b.node(
        "Constant",
        &[],
        "UnbiasedInt",
        vec![Body::reference(
            "value_int",
            op_attr::UNBIASED,
            AttributeType::Int,
        )],
    );
    let ub = to_compute(&mut b, &ub_i, "Unbiased");
    let n_minus = b.node("Sub", &[&n, &ub], "Divisor", vec![]);
    let factor = b.node("Div", &[&n, &n_minus], "Bessel", vec![]);
    let var = b.node("Mul", &[&var_b, &factor], "Var", vec![]);
    // sigma = e*sqrt(var+eps) + (1-e)*(sqrt(var)+eps)
    let eps_f = b.node(
        "Constant",
        &[],
        "EpsF32",
        vec![Body::reference(
            "value_float",
            op_attr::EPSILON,
            AttributeType::Float,
        )],
    );
    let eps = to_compute(&mut b, &eps_f, "Eps");
    let e_i = b.node(
        "Constant",
        &[],
        "EpsInSqrtInt",
        vec![Body::reference(
            "value_int",
            op_attr::EPS_IN_SQRT,
            AttributeType::Int,
        )],
    );
    let e = to_compute(&mut b, &e_i, "EpsInSqrt");
    let one_f = b.const_tensor(
        "OneF32",
        TensorProto {
            data_type: Some(1),
            float_data: vec![1.0],
            ..Default::default()
        },
    );
    let one = to_compute(&mut b, &one_f, "One");
    let ve = b.node("Add", &[&var, &eps], "VarEps", vec![]);
    let s_in = b.node("Sqrt", &[&ve], "SigmaIn", vec![]);
    let sv = b.node("Sqrt", &[&var], "StdDev", vec![]);
    let s_out = b.node("Add", &[&sv, &eps], "SigmaOut", vec![]);
    let w_in = b.node("Mul", &[&e, &s_in], "WeightedIn", vec![]);
    let not_e = b.node("Sub", &[&one, &e], "NotEpsInSqrt", vec![]);
    let w_out = b.node("Mul", &[&not_e, &s_out], "WeightedOut", vec![]);
    let sigma = b.node("Add", &[&w_in, &w_out], "Sigma", vec![]);
    let mut y = b.node("Div", &[&d, &sigma], "Y2D", vec![]);
    if kind == OpKind::AdaNorm {
        let c_f = b.node(
            "Constant",
            &[],
            "CF32",
            vec![Body::reference(
                "value_float",
                op_attr::C,
                AttributeType::Float,
            )],
        );
        let c = to_compute(&mut b, &c_f, "C");
        let k_f = b.node(
            "Constant",
            &[],
            "KF32",
            vec![Body::reference(
                "value_float",
                op_attr::K,
                AttributeType::Float,
            )],
        );
        let k = to_compute(&mut b, &k_f, "K");
        let ky = b.node("Mul", &[&k, &y], "KY", vec![]);
        let fac = b.node("Sub", &[&one, &ky], "Factor", vec![]);
        let cf = b.node("Mul", &[&c, &fac], "CFactor", vec![]);
        y = b.node("Mul", &[&cf, &y], "Z2D", vec![]);
    }
    let yf = b.node("Reshape", &[&y, &xshape], "YF", vec![]);
    let yt = match compute_in_f32_from {
        Some(t) => b.node("Cast", &[&yf], "YT", vec![int_attr("to", t as i64)]),
        None => yf,
    };
    // Without one element type for every call (mixed, float64 or unknown), a default gain and
    // bias added for a call of unknown type is float32: cast like X (a no-op for a valid call).
    let (scale, bias) = match compute_in_f32_from {
        Some(_) => ("Scale".to_string(), "B".to_string()),
        None => (
            b.node("CastLike", &["Scale", "X"], "ScaleT", vec![]),
            b.node("CastLike", &["B", "X"], "BT", vec![]),
        ),
    };
    let ys = b.node("Mul", &[&yt, &scale], "YScaled", vec![]);
    b.node("Add", &[&ys, &bias], "Y", vec![]);
    // Mean and InvStdDev in X.shape[:a] + [1]*(r-a)
    let rank = b.node("Size", &[&xshape], "Rank", vec![]);
    let a = b.node(
        "Constant",
        &[],
        "AxisScalar",
        vec![Body::reference(
            "value_int",
            op_attr::AXIS,
            AttributeType::Int,
        )],
    );
    let a_r = b.node("Add", &[&a, &rank], "AxisPlusRank", vec![]);
    let a_norm = b.node("Mod", &[&a_r, &rank], "AxisNorm", vec![]);
    let zero = b.const_i64s("Zero1D", &[0]);
    let a1 = b.unsqueeze0(&a_norm, "Axis1D");
    let prefix = b.node("Slice", &[&xshape, &zero, &a1], "Prefix", vec![]);
    let count = b.node("Sub", &[&rank, &a_norm], "Count", vec![]);
    let count1 = b.unsqueeze0(&count, "Count1D");
    let ones = TensorProto {
        dims: vec![1],
        data_type: Some(7),
        int64_data: vec![1],
        ..Default::default()
    };
    let fill = AttributeProto {
        name: Some("value".into()),
        t: Some(ones),
        r#type: Some(AttributeType::Tensor as i32),
        ..Default::default()
    };
    let suffix = b.node("ConstantOfShape", &[&count1], "Suffix", vec![fill]);
    let reduced = b.node(
        "Concat",
        &[&prefix, &suffix],
        "ReducedShape",
        vec![int_attr("axis", 0)],
    );
    b.node("Reshape", &[&mean, &reduced], "Mean", vec![]);
    let inv = b.node("Reciprocal", &[&sigma], "InvStdDev2D", vec![]);
    b.node("Reshape", &[&inv, &reduced], "InvStdDev", vec![]);

    let mut attribute_proto = vec![
        int_attr(op_attr::AXIS, op_attr::DEFAULT_AXIS),
        float_attr(op_attr::EPSILON, op_attr::DEFAULT_EPSILON),
        int_attr(op_attr::UNBIASED, op_attr::DEFAULT_UNBIASED),
        int_attr(op_attr::EPS_IN_SQRT, op_attr::DEFAULT_EPS_IN_SQRT),
    ];
    if kind == OpKind::AdaNorm {
        attribute_proto.extend([
            float_attr(op_attr::C, op_attr::DEFAULT_C),
            float_attr(op_attr::K, op_attr::DEFAULT_K),
        ]);
    }
    FunctionProto {
        name: Some(kind.op_type().into()),
        domain: Some(DOMAIN.into()),
        input: vec!["X".into(), "Scale".into(), "B".into()],
        output: vec!["Y".into(), "Mean".into(), "InvStdDev".into()],
        attribute_proto,
        node: b.nodes,
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        doc_string: Some(format!(
            "ai.adanorm {} in standard ONNX ops (adanorm-onnx --portable); see docs/ops-spec.md",
            kind.op_type()
        )),
        ..Default::default()
    }
}

fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .and_then(|o| o.version)
}

/// Adds the function bodies of the `ai.adanorm` ops the graph uses. Calls without Scale/B get
/// ones/zeros (a function's inputs cannot be optional per call), shaped `[1]`, and every call
/// names all three outputs.
pub fn add_portable_functions(
    model: &mut ModelProto,
    elem_type_of: &dyn Fn(&str) -> Option<i32>,
    call_type: &dyn Fn(&str) -> Option<i32>,
) -> Result<()> {
    let opset = default_opset(model).unwrap_or(0);
    if opset < MIN_OPSET {
        return Err(Error::msg(format!(
            "--portable needs the model's default opset >= {MIN_OPSET} (it imports {opset})"
        )));
    }
    let mut names = Names::of_model(model);
    let graph = model.graph.as_mut().expect("checked at load");
    let mut used = Vec::new();
    let mut types = std::collections::HashSet::new();
    let mut split = Vec::new();
    make_calls_portable(
        graph,
        elem_type_of,
        call_type,
        &mut names,
        &mut used,
        &mut types,
        &mut split,
    );
    // A recorded node's Adds go with it on revert, which restores the recorded ones.
    for (node, adds) in split {
        super::apply::extend_record_inserted(model, &node, &adds);
    }
    for kind in used {
        model
            .functions
            .retain(|f| !(f.domain() == DOMAIN && f.name() == kind.op_type()));
        // float64 calls compute in float64 (CastLike); one narrower type computes in float32.
        let shared = match types.iter().collect::<Vec<_>>().as_slice() {
            [Some(t)] if *t != 11 => Some(*t),
            _ if opset < 15 => {
                return Err(Error::msg(format!(
                    "--portable: these ai.adanorm calls mix element types, use float64, or read a value whose element type is not known; their body then needs CastLike, opset >= 15 (the model imports {opset}): leave out --portable, or convert the model to opset 15 or later first (onnx.version_converter)"
                )))
            }
            _ => None,
        };
        model.functions.push(function_proto(kind, opset, shared));
    }
    if model.ir_version.unwrap_or(0) < 8 {
        model.ir_version = Some(8); // model-local functions arrive with IR version 8
    }
    Ok(())
}

/// Gives every `ai.adanorm` node of `graph` and of its subgraphs the inputs and outputs a
/// function call binds, noting the kinds and element types met. What it adds has fresh names
/// (`names`): nodes may have no name, or names that other values use.
fn make_calls_portable(
    graph: &mut GraphProto,
    elem_type_of: &dyn Fn(&str) -> Option<i32>,
    call_type: &dyn Fn(&str) -> Option<i32>,
    names: &mut Names,
    used: &mut Vec<OpKind>,
    types: &mut std::collections::HashSet<Option<i32>>,
    split: &mut Vec<(String, Vec<String>)>,
) {
    let mut new_inits = Vec::new();
    // Version 2's residual slots become the `Add`s they stand for, before a version-1 call: the
    // bodies then need no per-call optional inputs for them (the call could not leave them out).
    // The sums have X's element type.
    let mut sum_types: HashMap<String, Option<i32>> = HashMap::new();
    let nodes = std::mem::take(&mut graph.node);
    for n in nodes {
        match (n.domain() == DOMAIN)
            .then(|| super::residual::split(&n, names))
            .flatten()
        {
            Some((adds, v1)) => {
                let t = call_type(n.name()).or_else(|| elem_type_of(&n.input[0]));
                sum_types.insert(v1.input[0].clone(), t);
                split.push((
                    n.name().to_string(),
                    adds.iter().map(|a| a.name().to_string()).collect(),
                ));
                graph.node.extend(adds);
                graph.node.push(v1);
            }
            None => graph.node.push(n),
        }
    }
    let outer = elem_type_of;
    let elem_type_of = |v: &str| match sum_types.get(v) {
        Some(t) => *t,
        None => outer(v),
    };
    for n in graph.node.iter_mut() {
        for a in &mut n.attribute {
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                make_calls_portable(sub, &elem_type_of, call_type, names, used, types, split);
            }
        }
        if n.domain() != DOMAIN {
            continue;
        }

        let Some(kind) = OpKind::from_op_type(n.op_type()) else {
            continue;
        };
        // The type the plan computed the call in, by node name: a value's name alone can
        // mean another value in another graph (merged decoders reuse names across branches).
        let x_type = call_type(n.name()).or_else(|| elem_type_of(&n.input[0]));
        types.insert(x_type);
        if !used.contains(&kind) {
            used.push(kind);
        }
        while n.input.len() < 3 {
            n.input.push(String::new());
        }
        // Function calls bind every declared output (ONNX Runtime refuses fewer).
        for (slot, what) in [(1usize, "mean"), (2, "inv_std_dev")] {
            if n.output.len() <= slot {
                n.output.push(String::new());
            }
            if n.output[slot].is_empty() {
                n.output[slot] = names.fresh(&format!("{}/unused_{what}", label(n)));
            }
        }
        for (slot, value) in [(1usize, 1.0f32), (2, 0.0)] {
            if n.input[slot].is_empty() {
                // Of unknown type the default is float32; the body then casts it like X.
                let elem = x_type.unwrap_or(1);
                let name = names.fresh(&format!(
                    "{}/portable_{}",
                    label(n),
                    if slot == 1 { "scale" } else { "bias" }
                ));
                new_inits.push(filled(&name, elem, value));
                n.input[slot] = name;
            }
        }
    }
    graph.initializer.extend(new_inits);
}

/// What a node's added names start with: its name, else its output's.
fn label(n: &NodeProto) -> &str {
    if n.name().is_empty() {
        n.output.first().map_or("adanorm", String::as_str)
    } else {
        n.name()
    }
}

fn filled(name: &str, elem_type: i32, v: f32) -> TensorProto {
    let raw: Vec<u8> = match elem_type {
        10 => half::f16::from_f32(v).to_le_bytes().to_vec(),
        16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
        11 => (v as f64).to_le_bytes().to_vec(),
        _ => v.to_le_bytes().to_vec(),
    };
    TensorProto {
        name: Some(name.into()),
        dims: vec![1],
        data_type: Some(elem_type),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// Expands one `ai.adanorm` node into the body's standard ops (revert's fallback for nodes
/// without a record): attributes substituted as constant tensors (so the body needs no opset-12
/// `value_int`), internal names fresh ones (`names`) prefixed by the node's name.
/// `opset` must be at least [`MIN_INLINE_OPSET`].
pub fn inline(
    n: &NodeProto,
    p: &OpParams,
    opset: i64,
    elem_type: i32,
    names: &mut Names,
) -> (Vec<NodeProto>, Vec<TensorProto>) {
    let f = function_proto(p.kind, opset, Some(elem_type));
    let prefix = label(n).to_string();
    let mut inits = Vec::new();
    let mut actual: HashMap<String, String> = HashMap::new();
    for (i, formal) in f.input.iter().enumerate() {
        let given = n.input.get(i).filter(|s| !s.is_empty()).cloned();
        let value = given.unwrap_or_else(|| {
            let name = names.fresh(&format!("{prefix}/{formal}_default"));
            inits.push(filled(&name, elem_type, if i == 1 { 1.0 } else { 0.0 }));
            name
        });
        actual.insert(formal.clone(), value);
    }
    for (i, formal) in f.output.iter().enumerate() {
        let name = n
            .output
            .get(i)
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| names.fresh(&format!("{prefix}/{formal}_unused")));
        actual.insert(formal.clone(), name);
    }
    // Every internal value gets a fresh name, the same one wherever the body mentions it.
    let mut rename = |v: &String, names: &mut Names| {
        if v.is_empty() {
            return v.clone();
        }
        actual
            .entry(v.clone())
            .or_insert_with(|| names.fresh(&format!("{prefix}/{v}")))
            .clone()
    };
    let values: HashMap<&str, AttributeProto> = [
        (op_attr::AXIS, int_attr("", p.axis)),
        (op_attr::EPSILON, float_attr("", p.epsilon as f32)),
        (op_attr::UNBIASED, int_attr("", p.unbiased as i64)),
        (op_attr::EPS_IN_SQRT, int_attr("", p.eps_in_sqrt as i64)),
        (op_attr::C, float_attr("", p.c as f32)),
        (op_attr::K, float_attr("", p.k as f32)),
    ]
    .into_iter()
    .collect();
    let mut nodes = Vec::with_capacity(f.node.len());
    for (i, body) in f.node.iter().enumerate() {
        let mut m = body.clone();
        m.name = Some(names.fresh(&format!("{prefix}/{}_{i}", body.op_type())));
        m.input = body.input.iter().map(|v| rename(v, names)).collect();
        m.output = body.output.iter().map(|v| rename(v, names)).collect();
        for a in &mut m.attribute {
            if let Some(r) = a.ref_attr_name.take() {
                let v = &values[r.as_str()];
                a.i = v.i;
                a.f = v.f;
            }
            as_tensor_value(a);
        }
        nodes.push(m);
    }
    (nodes, inits)
}

/// A `Constant`'s `value_int`/`value_float` (opset 12) as the scalar tensor `value` every opset
/// knows.
fn as_tensor_value(a: &mut AttributeProto) {
    let t = match a.name() {
        "value_int" => TensorProto {
            data_type: Some(7),
            int64_data: vec![a.i()],
            ..Default::default()
        },
        "value_float" => TensorProto {
            data_type: Some(1),
            float_data: vec![a.f()],
            ..Default::default()
        },
        _ => return,
    };
    *a = AttributeProto {
        name: Some("value".into()),
        t: Some(t),
        r#type: Some(AttributeType::Tensor as i32),
        ..Default::default()
    };
}
