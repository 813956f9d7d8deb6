//! Generates a large model for the memory/time measurement of `inspect` (and later `fuse`):
//! `layers` blocks of MatMul (a `hidden x hidden` f32 weight) followed by a decomposed LayerNorm
//! as PyTorch's legacy exporter writes it.
//!
//! cargo run --release --example make_large_model -- OUT.onnx [--layers 20] [--hidden 4096] [--external]
//!
//! With `--external` the weights go to `OUT.onnx.data` beside the model (ONNX external data).

use std::io::Write;

use adanorm_onnx::onnx::proto::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use adanorm_onnx::onnx::save_model;

fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn axes(v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some("axes".into()),
        ints: v.to_vec(),
        r#type: Some(AttributeType::Ints as i32),
        ..Default::default()
    }
}

fn scalar(name: &str, v: f32) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(1),
        raw_data: Some(v.to_le_bytes().to_vec().into()),
        ..Default::default()
    }
}

fn input(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = std::path::PathBuf::from(
        args.first()
            .expect("usage: make_large_model OUT.onnx [--layers N] [--hidden H] [--external]"),
    );
    let flag = |name: &str, default: i64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().unwrap())
    };
    let layers = flag("--layers", 20);
    let hidden = flag("--hidden", 4096);
    let external = args.iter().any(|a| a == "--external");

    let mut g = GraphProto {
        name: Some("large".into()),
        ..Default::default()
    };
    g.input.push(input("x", &[1, 16, hidden]));
    g.initializer.push(scalar("two", 2.0));
    g.initializer.push(scalar("eps", 1e-5));
    let weight_bytes = (hidden * hidden * 4) as usize;
    let mut data_file =
        external.then(|| std::fs::File::create(out.with_extension("onnx.data")).unwrap());
    let mut offset = 0usize;
    let mut x = "x".to_string();
    for l in 0..layers {
        let w = format!("w{l}");
        // Deterministic non-zero weights, so nothing compresses to pages of zeros.
        let payload: Vec<u8> = (0..weight_bytes / 4)
            .flat_map(|i| (((i * 7 + l as usize) % 97) as f32 * 1e-3).to_le_bytes())
            .collect();
        let mut t = TensorProto {
            name: Some(w.clone()),
            dims: vec![hidden, hidden],
            data_type: Some(1),
            ..Default::default()
        };
        match data_file.as_mut() {
            Some(f) => {
                f.write_all(&payload).unwrap();
                let kv = |k: &str, v: String| StringStringEntryProto {
                    key: Some(k.into()),
                    value: Some(v),
                };
                let location = out
                    .with_extension("onnx.data")
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                t.data_location = Some(1);
                t.external_data = vec![
                    kv("location", location),
                    kv("offset", offset.to_string()),
                    kv("length", weight_bytes.to_string()),
                ];
                offset += weight_bytes;
            }
            None => t.raw_data = Some(payload.into()),
        }
        g.initializer.push(t);
        let p = |s: &str| format!("l{l}/{s}");
        g.node
            .push(node(&p("MatMul"), "MatMul", &[&x, &w], &p("mm"), vec![]));
        g.node.push(node(
            &p("ReduceMean"),
            "ReduceMean",
            &[&p("mm")],
            &p("mean"),
            vec![axes(&[-1])],
        ));
        g.node.push(node(
            &p("Sub"),
            "Sub",
            &[&p("mm"), &p("mean")],
            &p("d"),
            vec![],
        ));
        g.node
            .push(node(&p("Pow"), "Pow", &[&p("d"), "two"], &p("sq"), vec![]));
        g.node.push(node(
            &p("ReduceMean_1"),
            "ReduceMean",
            &[&p("sq")],
            &p("var"),
            vec![axes(&[-1])],
        ));
        g.node.push(node(
            &p("Add"),
            "Add",
            &[&p("var"), "eps"],
            &p("ve"),
            vec![],
        ));
        g.node
            .push(node(&p("Sqrt"), "Sqrt", &[&p("ve")], &p("sd"), vec![]));
        g.node.push(node(
            &p("Div"),
            "Div",
            &[&p("d"), &p("sd")],
            &p("y"),
            vec![],
        ));
        x = p("y");
    }
    g.output.push(ValueInfoProto {
        name: Some(x),
        ..Default::default()
    });
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(14),
        }],
        producer_name: Some("adanorm-onnx make_large_model".into()),
        graph: Some(g),
        ..Default::default()
    };
    save_model(&model, &out, true).unwrap();
    eprintln!(
        "wrote {} ({layers} layers, hidden {hidden}, external: {external})",
        out.display()
    );
}
