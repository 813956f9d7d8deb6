//! External tensor data (`data_location = EXTERNAL`): payloads that live in files beside the
//! model, which is how models over protobuf's 2 GiB limit are stored. Files are memory-mapped
//! once and shared; a tensor's payload is a zero-copy slice of its file.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use super::dtype;
use super::proto::{tensor_proto::DataLocation, TensorProto};
use crate::error::{Error, Result};

/// Where one tensor's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef {
    pub location: String,
    pub offset: u64,
    pub length: Option<u64>,
}

pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

/// Parses the `external_data` key/value list of an external tensor.
pub fn external_ref(t: &TensorProto) -> Result<ExternalRef> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for entry in &t.external_data {
        let value = entry.value();
        let parse = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                Error::msg(format!(
                    "tensor '{}': external_data {}='{}' is not a number",
                    t.name(),
                    entry.key(),
                    v
                ))
            })
        };
        match entry.key() {
            "location" => location = Some(value.to_string()),
            "offset" => offset = parse(value)?,
            "length" => length = Some(parse(value)?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| {
        Error::msg(format!(
            "tensor '{}': external data without a 'location'",
            t.name()
        ))
    })?;
    Ok(ExternalRef {
        location,
        offset,
        length,
    })
}

/// Whether any initializer of the main graph keeps its payload in an external file.
pub fn uses_external_data(model: &super::proto::ModelProto) -> bool {
    model
        .graph
        .as_ref()
        .is_some_and(|g| g.initializer.iter().any(is_external))
}

/// The byte length a tensor's payload must have, when its element type has a fixed size.
pub fn expected_len(t: &TensorProto) -> Option<u64> {
    let elem = dtype::byte_size(t.data_type())? as u64;
    let mut n = 1u64;
    for &d in &t.dims {
        n = n.checked_mul(u64::try_from(d).ok()?)?;
    }
    n.checked_mul(elem)
}

/// The external-data files of one model, resolved relative to the model's directory.
pub struct ExternalData {
    base_dir: PathBuf,
    files: Mutex<HashMap<String, Bytes>>,
}

impl ExternalData {
    pub fn new(base_dir: &Path) -> Self {
        ExternalData {
            base_dir: base_dir.to_path_buf(),
            files: Mutex::new(HashMap::new()),
        }
    }

    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// The path of a location, refusing anything that escapes the model's directory (the ONNX
    /// checker refuses the same: a model must not read arbitrary files).
    pub fn resolve(&self, location: &str) -> Result<PathBuf> {
        let rel = Path::new(location);
        let escapes = rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if escapes {
            return Err(Error::msg(format!(
                "external data location '{location}' must be a relative path inside the model's directory"
            )));
        }
        Ok(self.base_dir.join(rel))
    }

    fn file(&self, location: &str) -> Result<Bytes> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = files.get(location) {
            return Ok(b.clone());
        }
        let path = self.resolve(location)?;
        let file = std::fs::File::open(&path).map_err(|e| {
            Error::with_source(format!("cannot open external data file '{location}'"), e)
                .in_file(&path)
        })?;
        let len = file
            .metadata()
            .map_err(|e| Error::with_source("cannot stat external data file", e).in_file(&path))?
            .len();
        let bytes = if len == 0 {
            Bytes::new()
        } else {
            // SAFETY: the map is read-only; like every tool that maps model files we rely on
            // nobody truncating the file while we run.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| {
                Error::with_source("cannot map external data file", e).in_file(&path)
            })?;
            Bytes::from_owner(map)
        };
        files.insert(location.to_string(), bytes.clone());
        Ok(bytes)
    }

    /// The payload of an external tensor (a slice of its mapped file), checked for bounds and,
    /// where the element type has a fixed size, for length.
    pub fn read(&self, t: &TensorProto) -> Result<Bytes> {
        let r = external_ref(t)?;
        let file = self.file(&r.location)?;
        let file_len = file.len() as u64;
        let expected = expected_len(t);
        let length = match (r.length, expected) {
            (Some(l), Some(e)) if l != e => {
                return Err(Error::msg(format!(
                    "tensor '{}': external data length {l} does not match its shape and type ({e} bytes)",
                    t.name()
                )))
            }
            (Some(l), _) => l,
            (None, Some(e)) => e,
            (None, None) => file_len.saturating_sub(r.offset),
        };
        let end = r.offset.checked_add(length).filter(|&end| end <= file_len).ok_or_else(|| {
            Error::msg(format!(
                "tensor '{}': external data [{}, +{length}) lies beyond the end of '{}' ({file_len} bytes)",
                t.name(),
                r.offset,
                r.location
            ))
        })?;
        Ok(file.slice(r.offset as usize..end as usize))
    }
}
