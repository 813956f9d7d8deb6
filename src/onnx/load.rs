//! Loading a model: the file is memory-mapped and decoded in place, so every `raw_data` payload
//! is a slice of the map (no copy); external-data references are checked up front so a missing
//! or short data file is reported at load time, naming the tensor.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use super::external::{is_external, ExternalData};
use super::proto::{GraphProto, ModelProto, TensorProto};
use crate::error::{file_error, Error, Result};

/// A loaded model and what is needed to read its tensors.
pub struct Model {
    pub path: PathBuf,
    pub proto: ModelProto,
    pub external: ExternalData,
}

impl Model {
    /// Another version of this model (e.g. with functions inlined), read from the same place:
    /// same path, external data resolved in the same directory.
    pub fn with_proto(&self, proto: ModelProto) -> Model {
        Model {
            path: self.path.clone(),
            external: ExternalData::new(self.external.base_dir()),
            proto,
        }
    }

    pub fn graph(&self) -> &GraphProto {
        self.proto.graph.as_ref().expect("checked at load")
    }

    /// The raw little-endian payload of a tensor, wherever it is stored; `None` for tensors
    /// stored in typed fields (`float_data`, ...), which the caller decodes itself.
    pub fn raw_bytes(&self, t: &TensorProto) -> Result<Option<Bytes>> {
        if is_external(t) {
            return self
                .external
                .read(t)
                .map(Some)
                .map_err(|e| e.in_file(&self.path));
        }
        Ok(t.raw_data.clone())
    }

    /// The opset version the model imports for a domain (`""` and `"ai.onnx"` are the same).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let canon = |d: &str| if d == "ai.onnx" { "" } else { d }.to_string();
        let want = canon(domain);
        self.proto
            .opset_import
            .iter()
            .find(|o| canon(o.domain()) == want)
            .and_then(|o| o.version)
    }
}

/// Loads and sanity-checks an ONNX model.
pub fn load_model(path: &Path) -> Result<Model> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::with_source("cannot read the model", e).in_file(path))?;
    if !meta.is_file() {
        return Err(file_error(path, "not a regular file"));
    }
    if meta.len() == 0 {
        return Err(file_error(path, "empty file: not an ONNX model"));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| Error::with_source("cannot open the model", e).in_file(path))?;
    // SAFETY: read-only map; we rely on nobody truncating the file while we run, as every tool
    // that maps model files does. The input file is never written.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| Error::with_source("cannot map the model", e).in_file(path))?;
    let bytes = Bytes::from_owner(map);
    let proto = ModelProto::decode(bytes).map_err(|e| {
        Error::with_source(
            "not an ONNX model (protobuf decoding failed; truncated or another format?)",
            e,
        )
        .in_file(path)
    })?;
    check_is_model(&proto).map_err(|e| e.in_file(path))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let model = Model {
        path: path.to_path_buf(),
        external: ExternalData::new(&base_dir),
        proto,
    };
    check_external_data(&model)?;
    Ok(model)
}

/// Protobuf decodes many byte strings without complaint; a real model has a graph and an IR
/// version, and declares the opsets it uses.
fn check_is_model(m: &ModelProto) -> Result<()> {
    let graph = m
        .graph
        .as_ref()
        .ok_or_else(|| Error::msg("not an ONNX model: it has no graph"))?;
    if m.ir_version.unwrap_or(0) <= 0 {
        return Err(Error::msg("not an ONNX model: ir_version is missing"));
    }
    if m.opset_import.is_empty() && m.ir_version.unwrap_or(0) >= 3 {
        return Err(Error::msg("not an ONNX model: no opset_import"));
    }
    if graph.node.iter().any(|n| n.op_type().is_empty()) {
        return Err(Error::msg("not an ONNX model: a node has no op_type"));
    }
    Ok(())
}

/// Every external tensor's file must exist and hold the tensor's bytes.
fn check_external_data(model: &Model) -> Result<()> {
    let mut tensors: Vec<&TensorProto> = Vec::new();
    collect_graph_tensors(model.graph(), &mut tensors);
    for t in tensors.into_iter().filter(|t| is_external(t)) {
        model.external.read(t).map_err(|e| e.in_file(&model.path))?;
    }
    Ok(())
}

fn collect_graph_tensors<'a>(g: &'a GraphProto, out: &mut Vec<&'a TensorProto>) {
    out.extend(g.initializer.iter());
    for n in &g.node {
        for a in &n.attribute {
            out.extend(a.t.iter());
            out.extend(a.tensors.iter());
            for sub in a.g.iter().chain(a.graphs.iter()) {
                collect_graph_tensors(sub, out);
            }
        }
    }
}
