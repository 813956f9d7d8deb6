//! Model-local functions: calls are inlined before tract parses the model, with attribute
//! references, defaults and nested calls resolved, and never replaced by a standard op of the
//! same name.

mod common;

use adanorm_kernels::{reference, Params, Variant};
use common::*;
use prost::Message;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::{AttributeProto, FunctionProto, ModelProto, NodeProto, OperatorSetIdProto};

fn function(
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: &[&str],
    body: Vec<NodeProto>,
) -> FunctionProto {
    FunctionProto {
        name: Some(name.into()),
        domain: Some("local".into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes.iter().map(|s| s.to_string()).collect(),
        node: body,
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            },
            OperatorSetIdProto {
                domain: "ai.adanorm".into(),
                version: 1,
            },
        ],
        ..FunctionProto::default()
    }
}

/// `local.Inner(x) -> y` with attribute `k_inner`: `AdaNorm(x, c = 2, k = k_inner)`.
fn inner() -> FunctionProto {
    function(
        "Inner",
        &["x"],
        &["y"],
        &["k_inner"],
        vec![node(
            "AdaNorm",
            "ai.adanorm",
            &["x"],
            &["y"],
            vec![
                attr_f("c", 2.0),
                attr_ref("k", "k_inner", AttributeType::Float),
            ],
        )],
    )
}

/// `local.Outer(x) -> z` with attribute `kk`: `n = Inner(x, k_inner = kk); z = n + n`.
fn outer() -> FunctionProto {
    function(
        "Outer",
        &["x"],
        &["z"],
        &["kk"],
        vec![
            node(
                "Inner",
                "local",
                &["x"],
                &["n"],
                vec![attr_ref("k_inner", "kk", AttributeType::Float)],
            ),
            node("Add", "", &["n", "n"], &["z"], vec![]),
        ],
    )
}

fn ada(x: &[f64], shape: &[usize], k: f32) -> Vec<f64> {
    // epsilon is the op's default, 1e-5.
    let params = Params::new(Variant::AdaNorm {
        c: 2.0,
        k: k as f64,
    });
    reference(x, shape, -1, None, None, &params).unwrap().y
}

fn run(path: &std::path::Path, shape: &[usize], x: &[f64]) -> Vec<(String, Vec<f64>)> {
    adanorm_tract::run_model(path, vec![("X".into(), tract_tensor(FLOAT, shape, x))])
        .unwrap_or_else(|e| panic!("{e:?}"))
        .into_iter()
        .map(|(name, t)| (name, as_f64(&t)))
        .collect()
}

#[test]
fn nested_calls_with_attribute_references_run_correctly() {
    // Z1 = Outer(X, kk = 0.5); Z2 = Outer(Z1, kk = 0.25): two calls of the same function, each
    // expanding a nested call, with the attribute passed through two levels of references.
    let shape = [3, 8];
    let mut m = model(
        graph(
            vec![
                node("Outer", "local", &["X"], &["Z1"], vec![attr_f("kk", 0.5)]),
                node("Outer", "local", &["Z1"], &["Z2"], vec![attr_f("kk", 0.25)]),
            ],
            vec![value_info("X", FLOAT, Some(&dims(&shape)))],
            vec![value_info("Z1", FLOAT, None), value_info("Z2", FLOAT, None)],
            vec![],
        ),
        17,
    );
    m.functions = vec![outer(), inner()];
    let path = save(&m);
    let x = rounded(FLOAT, &values(24, 11));
    let outputs = run(&path, &shape, &x);

    // By hand: each Outer is 2 * AdaNorm(c = 2, k = kk) of its input.
    let z1: Vec<f64> = ada(&x, &shape, 0.5).iter().map(|v| 2.0 * v).collect();
    let z1_f32 = rounded(FLOAT, &z1);
    let z2: Vec<f64> = ada(&z1_f32, &shape, 0.25).iter().map(|v| 2.0 * v).collect();
    assert_eq!(outputs[0].0, "Z1");
    assert_eq!(outputs[1].0, "Z2");
    assert_close("Z1", &outputs[0].1, &z1, 2e-5);
    assert_close("Z2", &outputs[1].1, &z2, 2e-5);
    // k matters here: with the op's default k = 0.1 the results would differ.
    let with_default_k: Vec<f64> = ada(&x, &shape, 0.1).iter().map(|v| 2.0 * v).collect();
    assert!(with_default_k
        .iter()
        .zip(&z1)
        .any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn function_named_like_a_standard_op_is_inlined_not_replaced() {
    // local.Relu(x) = x * 2 + 1. tract would build its own Relu for it; the standard Relu beside
    // it must still be tract's.
    let relu = function(
        "Relu",
        &["x"],
        &["y"],
        &[],
        vec![
            scalar_f32("two", 2.0),
            node("Mul", "", &["x", "two"], &["doubled"], vec![]),
            scalar_f32("one", 1.0),
            node("Add", "", &["doubled", "one"], &["y"], vec![]),
        ],
    );
    let shape = [2, 5];
    let mut m = model(
        graph(
            vec![
                node("Relu", "local", &["X"], &["Y"], vec![]),
                node("Relu", "", &["X"], &["R"], vec![]),
            ],
            vec![value_info("X", FLOAT, Some(&dims(&shape)))],
            vec![value_info("Y", FLOAT, None), value_info("R", FLOAT, None)],
            vec![],
        ),
        17,
    );
    m.functions = vec![relu];
    let path = save(&m);
    let x = rounded(FLOAT, &values(10, 5));
    assert!(x.iter().any(|&v| v < 0.0));
    let outputs = run(&path, &shape, &x);
    let y: Vec<f64> = x.iter().map(|v| v * 2.0 + 1.0).collect();
    let r: Vec<f64> = x.iter().map(|v| v.max(0.0)).collect();
    assert_close("Y", &outputs[0].1, &y, 1e-6);
    assert_close("R", &outputs[1].1, &r, 0.0);
}

/// The encoded model with `attribute_proto` defaults appended to its function `index`.
///
/// tract's `FunctionProto` lacks field 11, so the defaults are written as a raw second part of
/// the same function message: protobuf merges concatenated parts of one message.
fn encode_with_defaults(m: &ModelProto, defaults: Vec<AttributeProto>) -> Vec<u8> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Defaults {
        #[prost(message, repeated, tag = "11")]
        attribute_proto: Vec<AttributeProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawFunctions {
        #[prost(bytes = "vec", repeated, tag = "25")]
        functions: Vec<Vec<u8>>,
    }
    let mut without = m.clone();
    let functions = std::mem::take(&mut without.functions);
    let mut raw = RawFunctions::default();
    for (ix, f) in functions.iter().enumerate() {
        let mut bytes = f.encode_to_vec();
        if ix == 0 {
            bytes.extend(
                Defaults {
                    attribute_proto: defaults.clone(),
                }
                .encode_to_vec(),
            );
        }
        raw.functions.push(bytes);
    }
    let mut bytes = without.encode_to_vec();
    bytes.extend(raw.encode_to_vec());
    bytes
}

#[test]
fn attribute_default_of_the_function_applies_when_the_call_omits_it() {
    // Inner's default k_inner = 0.5; the first call omits it, the second gives 0.25.
    let shape = [2, 16];
    let mut m = model(
        graph(
            vec![
                node("Inner", "local", &["X"], &["A"], vec![]),
                node(
                    "Inner",
                    "local",
                    &["X"],
                    &["B"],
                    vec![attr_f("k_inner", 0.25)],
                ),
            ],
            vec![value_info("X", FLOAT, Some(&dims(&shape)))],
            vec![value_info("A", FLOAT, None), value_info("B", FLOAT, None)],
            vec![],
        ),
        17,
    );
    m.functions = vec![inner()];
    let path = save_bytes(&encode_with_defaults(&m, vec![attr_f("k_inner", 0.5)]));
    let x = rounded(FLOAT, &values(32, 3));
    let outputs = run(&path, &shape, &x);
    assert_close("A", &outputs[0].1, &ada(&x, &shape, 0.5), 1e-5);
    assert_close("B", &outputs[1].1, &ada(&x, &shape, 0.25), 1e-5);

    // Without defaults (plain `inline_functions`), the reference is dropped: the op's k = 0.1.
    let mut proto = m.clone();
    adanorm_tract::inline_functions(&mut proto).unwrap();
    let k: Vec<_> = proto.graph.as_ref().unwrap().node[0]
        .attribute
        .iter()
        .map(|a| a.name.clone())
        .collect();
    assert_eq!(k, ["c"]);
}

#[test]
fn inlining_imports_the_opsets_the_bodies_use() {
    let shape = [2, 4];
    let mut m = model(
        graph(
            vec![node(
                "Inner",
                "local",
                &["X"],
                &["A"],
                vec![attr_f("k_inner", 0.5)],
            )],
            vec![value_info("X", FLOAT, Some(&dims(&shape)))],
            vec![value_info("A", FLOAT, None)],
            vec![],
        ),
        17,
    );
    m.opset_import.retain(|o| o.domain.is_empty());
    m.functions = vec![inner()];
    adanorm_tract::inline_functions(&mut m).unwrap();
    assert!(m.functions.is_empty());
    assert!(m
        .opset_import
        .iter()
        .any(|o| o.domain == "ai.adanorm" && o.version == 1));
    let nodes = &m.graph.as_ref().unwrap().node;
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (nodes[0].op_type.as_str(), nodes[0].domain.as_str()),
        ("AdaNorm", "ai.adanorm")
    );
    assert_eq!(
        (nodes[0].input.as_slice(), nodes[0].output.as_slice()),
        (&["X".to_string()][..], &["A".to_string()][..])
    );
    let k = nodes[0].attribute.iter().find(|a| a.name == "k").unwrap();
    assert_eq!((k.f, k.ref_attr_name.as_str()), (0.5, ""));
}

#[test]
fn portable_bodies_of_our_own_ops_run_as_the_native_op() {
    // `rewrite --portable` adds ai.adanorm.AdaNorm as a function for runtimes without the op.
    // tract has the op, so the call must run natively; this body (a plain copy) would be wrong.
    let body = FunctionProto {
        domain: Some("ai.adanorm".into()),
        ..function(
            "AdaNorm",
            &["X", "Scale", "B"],
            &["Y"],
            &["c", "k"],
            vec![node("Identity", "", &["X"], &["Y"], vec![])],
        )
    };
    let shape = [2, 8];
    let mut m = model(
        graph(
            vec![node(
                "AdaNorm",
                "ai.adanorm",
                &["X"],
                &["Y"],
                vec![attr_f("c", 2.0), attr_f("k", 0.5)],
            )],
            vec![value_info("X", FLOAT, Some(&dims(&shape)))],
            vec![value_info("Y", FLOAT, None)],
            vec![],
        ),
        17,
    );
    m.functions = vec![body];
    let path = save(&m);
    let x = rounded(FLOAT, &values(16, 9));
    let outputs = run(&path, &shape, &x);
    assert_close("Y", &outputs[0].1, &ada(&x, &shape, 0.5), 1e-5);
    let proto = adanorm_tract::proto_for_path(&path).unwrap();
    assert!(proto.functions.is_empty());
    assert_eq!(proto.graph.unwrap().node[0].op_type, "AdaNorm");
}
