//! The safetensors file beside a rewritten model: what `--affine drop` removed (gain and bias,
//! keyed `<node>/scale`, `<node>/bias`) and what `--affine fold` replaced (the consumers' original
//! weights, keyed `<node>/fold/<initializer>`), plus in its metadata the original initializer name
//! of each, so `revert` can put them back under their own names.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::onnx::dtype;
use crate::onnx::proto::TensorProto;
use crate::onnx::Model;

pub const FORMAT_KEY: &str = "format";
pub const FORMAT: &str = "adanorm-onnx weights v1";

#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    pub elem_type: i32,
    pub dims: Vec<i64>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightsFile {
    /// key -> (original initializer name, tensor)
    pub tensors: BTreeMap<String, (String, WeightTensor)>,
}

fn st_dtype(elem_type: i32) -> Option<Dtype> {
    Some(match elem_type {
        dtype::FLOAT => Dtype::F32,
        dtype::FLOAT16 => Dtype::F16,
        dtype::BFLOAT16 => Dtype::BF16,
        dtype::DOUBLE => Dtype::F64,
        dtype::INT64 => Dtype::I64,
        dtype::INT32 => Dtype::I32,
        dtype::INT8 => Dtype::I8,
        dtype::UINT8 => Dtype::U8,
        _ => return None,
    })
}

fn onnx_dtype(d: Dtype) -> Option<i32> {
    Some(match d {
        Dtype::F32 => dtype::FLOAT,
        Dtype::F16 => dtype::FLOAT16,
        Dtype::BF16 => dtype::BFLOAT16,
        Dtype::F64 => dtype::DOUBLE,
        Dtype::I64 => dtype::INT64,
        Dtype::I32 => dtype::INT32,
        Dtype::I8 => dtype::INT8,
        Dtype::U8 => dtype::UINT8,
        _ => return None,
    })
}

impl WeightTensor {
    /// The tensor's bytes, little-endian, from whichever field stores them.
    pub fn from_proto(model: &Model, t: &TensorProto) -> Result<WeightTensor> {
        let elem_type = t.data_type();
        let data: Vec<u8> = match model.raw_bytes(t)? {
            Some(b) => b.to_vec(),
            None => match elem_type {
                dtype::FLOAT => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                dtype::DOUBLE => t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                dtype::INT64 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                dtype::INT32 => t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                dtype::FLOAT16 | dtype::BFLOAT16 => t
                    .int32_data
                    .iter()
                    .flat_map(|&v| (v as u16).to_le_bytes())
                    .collect(),
                _ => {
                    return Err(Error::msg(format!(
                        "tensor '{}' has a type safetensors cannot hold",
                        t.name()
                    )))
                }
            },
        };
        Ok(WeightTensor {
            elem_type,
            dims: t.dims.clone(),
            data,
        })
    }

    pub fn to_proto(&self, name: &str) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: self.dims.clone(),
            data_type: Some(self.elem_type),
            raw_data: Some(self.data.clone().into()),
            ..Default::default()
        }
    }
}

impl WeightsFile {
    pub fn insert(&mut self, key: String, original_name: &str, t: WeightTensor) {
        self.tensors.insert(key, (original_name.to_string(), t));
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Writes atomically ([`crate::atomic_file`]); an existing file needs `overwrite`.
    pub fn save(&self, path: &Path, overwrite: bool) -> Result<()> {
        if path.exists() && !overwrite {
            return Err(
                Error::msg("the weights file exists (use --force to replace it)").in_file(path),
            );
        }
        let mut views = Vec::new();
        let mut metadata: HashMap<String, String> = HashMap::new();
        metadata.insert(FORMAT_KEY.into(), FORMAT.into());
        for (key, (original, t)) in &self.tensors {
            let dt = st_dtype(t.elem_type).ok_or_else(|| {
                Error::msg(format!(
                    "tensor '{original}' has a type safetensors cannot hold"
                ))
            })?;
            let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            let view = TensorView::new(dt, shape, &t.data)
                .map_err(|e| Error::msg(format!("tensor '{original}': {e}")))?;
            views.push((key.clone(), view));
            metadata.insert(key.clone(), original.clone());
        }
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::msg(format!("safetensors: {e}")).in_file(path))?;
        crate::atomic_file::write_atomically(path, overwrite, |mut file| {
            use std::io::Write;
            file.write_all(&bytes)
                .map_err(|e| Error::with_source("cannot write the weights file", e))?;
            Ok(file)
        })
    }

    pub fn load(path: &Path) -> Result<WeightsFile> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::with_source("cannot read the weights file", e).in_file(path))?;
        let bad = |m: String| Error::msg(m).in_file(path);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let info = meta.metadata().clone().unwrap_or_default();
        if info.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!(
                "not a weights file written by adanorm-onnx (no '{FORMAT_KEY}: {FORMAT}' metadata)"
            )));
        }
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let mut out = WeightsFile::default();
        for (key, view) in st.tensors() {
            let original = info.get(&key).cloned().ok_or_else(|| {
                bad(format!(
                    "tensor '{key}' has no original name in the metadata"
                ))
            })?;
            let elem_type = onnx_dtype(view.dtype())
                .ok_or_else(|| bad(format!("tensor '{key}' has an unsupported type")))?;
            let t = WeightTensor {
                elem_type,
                dims: view.shape().iter().map(|&d| d as i64).collect(),
                data: view.data().to_vec(),
            };
            out.insert(key, &original, t);
        }
        Ok(out)
    }
}
