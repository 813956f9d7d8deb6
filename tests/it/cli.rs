//! The `adanorm-onnx` binary: `inspect` output, and bad input giving a one-line error naming the
//! file (and node), exit code 2, never a panic.

use crate::common;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{Builder, F32};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_adanorm-onnx"))
}

fn zoo_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/zoo")
        .join(name)
        .join("model.onnx")
}

fn inspect(path: &Path) -> Output {
    bin().arg("inspect").arg(path).output().unwrap()
}

fn assert_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "expected {n:?} in: {stderr}");
    }
}

#[test]
fn inspect_json_has_matches_and_summary() {
    let out = bin()
        .args(["inspect", "--json"])
        .arg(zoo_model("adanorm_legacy_op14"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["summary"]["adanorm"], 4);
    assert_eq!(j["summary"]["layernorm"], 0);
    let m = &j["matches"][0];
    for key in [
        "family",
        "nodes",
        "input",
        "output",
        "axis",
        "epsilon",
        "unbiased",
        "eps_in_sqrt",
        "c",
        "k",
        "scale",
        "bias",
        "dtype",
        "rewritable",
        "reason",
    ] {
        assert!(m.get(key).is_some(), "match lacks {key}");
    }
    assert_eq!(m["family"], "adanorm");
    assert_eq!(m["unbiased"], 1);
    assert_eq!(m["eps_in_sqrt"], 0);
}

/// `fuse`/`rewrite`/`revert --json`: the report instead of the text, and the files written as
/// without it (the Python API reads this document).
#[test]
fn transform_json_reports_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let (fused, rewritten, weights) = (
        dir.path().join("f.onnx"),
        dir.path().join("r.onnx"),
        dir.path().join("w.safetensors"),
    );
    let model = zoo_model("adanorm_legacy_op14");
    let report = |args: &[&std::ffi::OsStr]| -> serde_json::Value {
        let out = bin().args(args).arg("--json").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
    };
    let j = report(&[
        "fuse".as_ref(),
        model.as_os_str(),
        "-o".as_ref(),
        fused.as_os_str(),
    ]);
    assert_eq!(j["command"], "fuse");
    assert_eq!(j["output"], fused.display().to_string());
    assert_eq!(j["replaced"], 4);
    assert_eq!(j["changes"].as_array().unwrap().len(), 4);
    assert_eq!(j["same_function"], true);
    assert!(j["weights"].is_null() && fused.exists());
    // A model with gains and biases to drop.
    let model = zoo_model("bert_legacy_op14");
    let j = report(&[
        "rewrite".as_ref(),
        model.as_os_str(),
        "-o".as_ref(),
        rewritten.as_os_str(),
        "--affine".as_ref(),
        "drop".as_ref(),
        "--weights-out".as_ref(),
        weights.as_os_str(),
    ]);
    assert_eq!(j["weights"], weights.display().to_string());
    assert_eq!(j["same_function"], false);
    assert!(weights.exists() && rewritten.exists());
    let rewritten_count = j["replaced"].clone();
    assert!(rewritten_count.as_u64().unwrap() > 0);
    let back = dir.path().join("b.onnx");
    let j = report(&[
        "revert".as_ref(),
        rewritten.as_os_str(),
        "-o".as_ref(),
        back.as_os_str(),
        "--weights".as_ref(),
        weights.as_os_str(),
    ]);
    assert_eq!(j["command"], "revert");
    assert_eq!(j["replaced"], rewritten_count);
}

#[test]
fn inspect_table_lists_each_match() {
    let out = inspect(&zoo_model("gpt2_legacy_op14"));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("layernorm ").count(), 6, "{text}"); // 5 rows + summary
    assert!(text.contains("summary: layernorm 5, lnsimple 0, adanorm 0, rmsnorm 0"));
}

#[test]
fn a_directory_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    assert_error(
        &inspect(dir.path()),
        &[&dir.path().display().to_string(), "not a regular file"],
    );
}

#[test]
fn a_missing_file() {
    assert_error(
        &inspect(Path::new("/nonexistent/model.onnx")),
        &["/nonexistent/model.onnx"],
    );
}

#[test]
fn a_text_file_is_not_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.onnx");
    std::fs::write(&p, "this is not a protobuf, just some text\n").unwrap();
    assert_error(&inspect(&p), &["notes.onnx", "not an ONNX model"]);
}

#[test]
fn a_truncated_model() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(zoo_model("bert_legacy_op14")).unwrap();
    let p = dir.path().join("cut.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_error(&inspect(&p), &["cut.onnx", "not an ONNX model"]);
}

fn tiny() -> Builder {
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, 4]);
    let w = b.init("w", &[4], &[1.0, 2.0, 3.0, 4.0]);
    let y = b.op("Mul", &[&x, &w], vec![]);
    b.node_named("last", "Relu", &[&y], &["out"], vec![]);
    b.output("out", F32);
    b
}

#[test]
fn a_missing_external_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tiny();
    common::externalize(&mut b.inits[0], "weights.bin", None);
    let p = b.save(dir.path(), "ext.onnx");
    assert_error(
        &inspect(&p),
        &["weights.bin", "cannot open external data file"],
    );
}

#[test]
fn a_node_reading_an_undefined_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tiny();
    b.nodes[1].input[0] = "ghost".into();
    let p = b.save(dir.path(), "undef.onnx");
    assert_error(
        &inspect(&p),
        &["undef.onnx", "node 'last'", "'ghost' is not defined"],
    );
}

/// A standard op with no outputs (the matcher would find a LayerNorm's output read by it).
#[test]
fn a_node_without_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tiny();
    let x = "x".to_string();
    b.node_named("sink", "Relu", &[&x], &[], vec![]);
    let path = b.save(dir.path(), "sink.onnx");
    assert_error(
        &inspect(&path),
        &["sink.onnx", "node 'sink'", "Relu node has no outputs"],
    );
}

/// A node without one of its op's required inputs (a one-input `Mul`; a
/// `SkipLayerNormalization` without its skip) is refused at load, in every command.
#[test]
fn a_node_without_a_required_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tiny();
    b.nodes[0].input.truncate(1);
    let p = b.save(dir.path(), "short.onnx");
    for cmd in ["inspect", "fuse", "rewrite", "revert"] {
        let out = bin().arg(cmd).arg(&p).output().unwrap();
        assert_error(&out, &["short.onnx", "Mul node lacks its required input 1"]);
    }
    let mut b = tiny();
    b.nodes[0] = adanorm_onnx::onnx::proto::NodeProto {
        name: Some("skipln".into()),
        op_type: Some("SkipLayerNormalization".into()),
        domain: Some("com.microsoft".into()),
        input: vec!["x".into()],
        output: b.nodes[0].output.clone(),
        ..Default::default()
    };
    let p = b.save(dir.path(), "skip.onnx");
    let out = bin().arg("rewrite").arg(&p).output().unwrap();
    assert_error(&out, &["node 'skipln'", "lacks its required input 1"]);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "nothing written"
    );
}

/// `drop`'s weights file lands beside the output, not in the input's folder.
#[test]
fn the_weights_file_goes_beside_the_output() {
    let input_dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let src = zoo_model("bert_legacy_op14");
    let copy = input_dir.path().join("model.onnx");
    std::fs::copy(&src, &copy).unwrap();
    let out = out_dir.path().join("bert.onnx");
    let run = bin()
        .args(["rewrite", "--affine", "drop", "-o"])
        .arg(&out)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let listing = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(listing(input_dir.path()), ["model.onnx"]);
    assert_eq!(
        listing(out_dir.path()),
        ["bert.onnx", "bert.weights.safetensors"]
    );
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tiny();
    // Mul reads the Relu's output, which reads the Mul's.
    b.nodes[0].input[0] = "out".into();
    let p = b.save(dir.path(), "cycle.onnx");
    assert_error(&inspect(&p), &["cycle.onnx", "cycle", "node '"]);
}

#[test]
fn unknown_subcommand_exits_2() {
    let out = bin().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A LayerNorm whose gain lives in external data: `fuse` keeps the reference, and refuses to
/// write the output somewhere the relative location would no longer resolve.
#[test]
fn fuse_keeps_external_data_references_and_stays_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let h = 4i64;
    let mut b = Builder::new(14);
    let x = b.input("x", F32, &[2, h]);
    let m = b.op("ReduceMean", &[&x], vec![("axes", common::A::Is(vec![-1]))]);
    let d = b.op("Sub", &[&x, &m], vec![]);
    let two = b.constant(2.0);
    let p = b.op("Pow", &[&d, &two], vec![]);
    let v = b.op("ReduceMean", &[&p], vec![("axes", common::A::Is(vec![-1]))]);
    let e = b.constant(1e-5);
    let ve = b.op("Add", &[&v, &e], vec![]);
    let s = b.op("Sqrt", &[&ve], vec![]);
    let n = b.op("Div", &[&d, &s], vec![]);
    let g = b.init("gamma", &[h], &[1.0, 2.0, 3.0, 4.0]);
    b.node_named("scale", "Mul", &[&n, &g], &["out"], vec![]);
    b.output("out", F32);
    std::fs::write(
        dir.path().join("gamma.bin"),
        [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    common::externalize(&mut b.inits[0], "gamma.bin", None);
    let src = b.save(dir.path(), "ext.onnx");

    let elsewhere = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("fuse")
        .arg(&src)
        .arg("-o")
        .arg(elsewhere.path().join("f.onnx"))
        .output()
        .unwrap();
    assert_error(&out, &["external data", "into that directory"]);
    assert!(!elsewhere.path().join("f.onnx").exists());

    let fused = dir.path().join("ext.fused.onnx");
    let out = bin().arg("fuse").arg(&src).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = adanorm_onnx::onnx::load_model(&fused).unwrap();
    let t = &m
        .graph()
        .initializer
        .iter()
        .find(|t| t.name() == "gamma")
        .unwrap();
    assert_eq!(
        m.raw_bytes(t).unwrap().unwrap().len(),
        16,
        "the external gain is still read from gamma.bin"
    );
    assert!(
        m.graph()
            .node
            .iter()
            .any(|n| n.domain() == "ai.adanorm"
                && n.input.get(1).map(String::as_str) == Some("gamma"))
    );
}

/// ai.adanorm op types in a model's main graph.
fn adanorm_ops(path: &Path) -> Vec<String> {
    let m = adanorm_onnx::onnx::load_model(path).unwrap();
    let mut ops: Vec<String> = m
        .graph()
        .node
        .iter()
        .filter(|n| n.domain() == "ai.adanorm")
        .map(|n| n.op_type().to_string())
        .collect();
    ops.sort();
    ops
}

/// Runs `adanorm-onnx ARGS SRC -o OUT`.
fn cli_to(args: &[&str], src: &Path, out: &Path) -> Output {
    bin()
        .args(args)
        .arg(src)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

/// `--only` changes the named families and reports the others as left alone; the result still
/// computes the original function (checked in tract by `verify`).
#[test]
fn only_changes_the_selected_families() {
    let dir = tempfile::tempdir().unwrap();
    // Two AdaNorm and two LayerNorm-simple modules, as the dynamo exporter writes them.
    let src = zoo_model("paper_dynamo_op18_noopt");
    let succeeded = |out: &Output| {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        text
    };

    let fused = dir.path().join("only-adanorm.onnx");
    let report = succeeded(&cli_to(&["fuse", "--only", "adanorm"], &src, &fused));
    assert_eq!(adanorm_ops(&fused), ["AdaNorm", "AdaNorm"]);
    assert_eq!(
        report.matches("lnsimple is not selected by --only").count(),
        2,
        "{report}"
    );
    let inputs = src.with_file_name("inputs.npz");
    succeeded(
        &bin()
            .arg("verify")
            .arg(&src)
            .arg(&fused)
            .arg("--inputs")
            .arg(&inputs)
            .output()
            .unwrap(),
    );

    // Both families, as a list.
    let both = dir.path().join("both.onnx");
    succeeded(&cli_to(
        &["fuse", "--only", "lnsimple,adanorm"],
        &src,
        &both,
    ));
    assert_eq!(
        adanorm_ops(&both),
        ["AdaNorm", "AdaNorm", "LayerNormSimple", "LayerNormSimple"]
    );

    // rewrite honours it too: only the LayerNorm-simple modules change.
    let rewritten = dir.path().join("rewritten.onnx");
    succeeded(&cli_to(
        &["rewrite", "--only", "lnsimple", "--to", "simple"],
        &src,
        &rewritten,
    ));
    assert_eq!(
        adanorm_ops(&rewritten),
        ["LayerNormSimple", "LayerNormSimple"]
    );

    // A family that does not exist is a usage error naming the choices; nothing is written.
    let bad = dir.path().join("bad.onnx");
    let out = cli_to(&["fuse", "--only", "batchnorm"], &src, &bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("layernorm, lnsimple, adanorm"));
    assert!(!bad.exists());
}

/// `inspect ... | head`: a reader that goes away is not an internal error.
#[test]
fn a_closed_stdout_ends_quietly() {
    let mut child = bin()
        .arg("inspect")
        .arg(zoo_model("bert_legacy_op14"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the child has loaded the model and written anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "stderr: {stderr}");
    assert!(!stderr.contains("internal error"), "{stderr}");
}
