//! Model I/O: what the tool does not change round-trips; external data is read from beside the
//! model; saving is atomic and never replaces a file unasked.

use crate::common;
use std::path::Path;

use crate::common::{Builder, F32};
use adanorm_onnx::onnx::{load_model, save_model};

#[test]
fn zoo_models_round_trip_byte_for_byte() {
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/zoo");
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "bert_dynamo_default",
        "keras_tf2onnx_op13",
        "bert_legacy_op14_fp16half",
    ] {
        let src = zoo.join(name).join("model.onnx");
        let m = load_model(&src).unwrap();
        let out = dir.path().join(format!("{name}.onnx"));
        save_model(&m.proto, &out, false).unwrap();
        let again = load_model(&out).unwrap();
        assert_eq!(m.proto, again.proto, "{name}: decoded models differ");
        assert_eq!(
            std::fs::read(&src).unwrap(),
            std::fs::read(&out).unwrap(),
            "{name}: bytes differ"
        );
    }
}

#[test]
fn large_payloads_stream_through_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[1, 1 << 20]);
    let vals: Vec<f32> = (0..(1 << 20)).map(|i| i as f32).collect();
    let w = b.init("w", &[1, 1 << 20], &vals);
    b.node_named("mul", "Mul", &[&x, &w], &["out"], vec![]);
    b.output("out", F32);
    let p = b.save(dir.path(), "big.onnx");
    let m = load_model(&p).unwrap();
    assert_eq!(m.proto, b.model());
}

#[test]
fn external_data_is_read_and_its_references_survive_a_save() {
    let dir = tempfile::tempdir().unwrap();
    let vals = [1.0f32, 2.0, 3.0, 4.0];
    let mut data = vec![0u8; 16]; // an offset, as real writers align
    data.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(dir.path().join("weights.bin"), &data).unwrap();
    let mut b = common::mul_by_weight();
    common::externalize(&mut b.inits[0], "weights.bin", Some((16, 16)));
    let p = b.save(dir.path(), "ext.onnx");

    let m = load_model(&p).unwrap();
    let t = &m.graph().initializer[0];
    let bytes = m.raw_bytes(t).unwrap().unwrap();
    assert_eq!(&bytes[..], &data[16..]);

    let out = dir.path().join("ext2.onnx");
    save_model(&m.proto, &out, false).unwrap();
    let again = load_model(&out).unwrap();
    assert_eq!(
        again.graph().initializer[0].external_data,
        m.graph().initializer[0].external_data
    );
}

#[test]
fn external_data_beyond_the_file_end_is_an_error_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("short.bin"), [0u8; 8]).unwrap();
    let mut b = common::mul_by_weight();
    common::externalize(&mut b.inits[0], "short.bin", None);
    let p = b.save(dir.path(), "m.onnx");
    let err = load_model(&p).err().expect("must fail").to_string();
    assert!(
        err.contains("tensor 'w'") && err.contains("short.bin"),
        "{err}"
    );
}

#[test]
fn external_data_may_not_escape_the_model_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = common::mul_by_weight();
    common::externalize(&mut b.inits[0], "../../etc/passwd", None);
    let p = b.save(dir.path(), "m.onnx");
    let err = load_model(&p).err().expect("must fail").to_string();
    assert!(
        err.contains("relative path inside the model's directory"),
        "{err}"
    );
}

#[test]
fn an_existing_output_is_not_replaced_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("taken.onnx");
    std::fs::write(&dest, b"precious").unwrap();
    let model = Builder::new(14).model();
    assert!(save_model(&model, &dest, false).is_err());
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
    save_model(&model, &dest, true).unwrap();
    assert_ne!(std::fs::read(&dest).unwrap(), b"precious");
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn a_failed_save_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("no_such_dir").join("out.onnx");
    assert!(save_model(&Builder::new(14).model(), &dest, false).is_err());
    assert!(!dest.exists());
}
