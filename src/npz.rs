//! `.npz` files (numpy's zip of `.npy` arrays) to and from tract tensors, keyed by name, each in
//! its own element type. float16 is carried as numpy's `<f2`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use adanorm_tract::tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn};
use adanorm_tract::tract_onnx::prelude::{DatumType, Tensor};
use ndarray_npy::{
    NpzReader, NpzWriter, ReadDataError, ReadableElement, WritableElement, WriteDataError,
};

use crate::error::{Error, Result};

/// numpy float16 (`<f2`), which ndarray-npy does not know.
#[derive(Clone, Copy, Debug)]
struct F16(half::f16);

impl ReadableElement for F16 {
    fn read_to_end_exact_vec<R: Read>(
        mut reader: R,
        desc: &py_literal::Value,
        len: usize,
    ) -> Result<Vec<Self>, ReadDataError> {
        match desc {
            py_literal::Value::String(s) if s == "<f2" || s == "|f2" => {}
            other => return Err(ReadDataError::WrongDescriptor(other.clone())),
        }
        let mut bytes = vec![0u8; len * 2];
        reader
            .read_exact(&mut bytes)
            .map_err(|_| ReadDataError::MissingData)?;
        let mut rest = [0u8; 1];
        if reader.read(&mut rest).map_err(ReadDataError::Io)? != 0 {
            return Err(ReadDataError::ExtraBytes(1));
        }
        Ok(bytes
            .chunks_exact(2)
            .map(|c| F16(half::f16::from_le_bytes([c[0], c[1]])))
            .collect())
    }
}

impl WritableElement for F16 {
    fn type_descriptor() -> py_literal::Value {
        py_literal::Value::String("<f2".into())
    }
    fn write<W: Write>(&self, mut writer: W) -> Result<(), WriteDataError> {
        writer
            .write_all(&self.0.to_le_bytes())
            .map_err(WriteDataError::Io)
    }
    fn write_slice<W: Write>(slice: &[Self], mut writer: W) -> Result<(), WriteDataError> {
        let bytes: Vec<u8> = slice.iter().flat_map(|v| v.0.to_le_bytes()).collect();
        writer.write_all(&bytes).map_err(WriteDataError::Io)
    }
}

/// Reads every array of an `.npz`, in the file's order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let located = |m: String| Error::msg(m).in_file(path);
    let file = File::open(path)
        .map_err(|e| Error::with_source("cannot open the inputs", e).in_file(path))?;
    let mut npz = NpzReader::new(file).map_err(|e| located(format!("not an .npz file: {e}")))?;
    let names = npz
        .names()
        .map_err(|e| located(format!("not an .npz file: {e}")))?;
    let mut out = Vec::new();
    for name in names {
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let t = read_one(&mut npz, &name).ok_or_else(|| {
            located(format!(
                "array '{key}' has an element type this tool does not read"
            ))
        })?;
        out.push((key, t));
    }
    Ok(out)
}

fn read_one(npz: &mut NpzReader<File>, name: &str) -> Option<Tensor> {
    macro_rules! try_as {
        ($($t:ty),*) => {$(
            if let Ok(a) = npz.by_name::<_, IxDyn>(name).map(|a: ArrayD<$t>| a) {
                return Some(Tensor::from(a));
            }
        )*};
    }
    try_as!(f32, f64, i64, i32, i8, u8, bool);
    if let Ok(a) = npz.by_name::<_, IxDyn>(name).map(|a: ArrayD<F16>| a) {
        return Some(Tensor::from(a.mapv(|v| v.0)));
    }
    None
}

/// Writes tensors to an `.npz` atomically ([`crate::atomic_file`]), replacing an existing file.
pub fn write_npz(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    crate::atomic_file::write_atomically(path, true, |file| {
        let mut npz = NpzWriter::new(file);
        for (name, t) in tensors {
            add(&mut npz, name, t).map_err(|e| Error::msg(format!("output '{name}': {e}")))?;
        }
        npz.finish()
            .map_err(|e| Error::msg(format!("cannot finish the .npz: {e}")))
    })
}

fn add(npz: &mut NpzWriter<File>, name: &str, t: &Tensor) -> std::result::Result<(), String> {
    macro_rules! put {
        ($t:ty) => {{
            let view = t.to_plain_array_view::<$t>().map_err(|e| e.to_string())?;
            npz.add_array(name, &view.to_owned())
                .map_err(|e| e.to_string())
        }};
    }
    match t.datum_type() {
        DatumType::F32 => put!(f32),
        DatumType::F64 => put!(f64),
        DatumType::I64 => put!(i64),
        DatumType::I32 => put!(i32),
        DatumType::I8 => put!(i8),
        DatumType::U8 => put!(u8),
        DatumType::Bool => put!(bool),
        DatumType::F16 => {
            let view = t
                .to_plain_array_view::<half::f16>()
                .map_err(|e| e.to_string())?;
            npz.add_array(name, &view.mapv(F16))
                .map_err(|e| e.to_string())
        }
        other => Err(format!("element type {other:?} cannot be written to .npz")),
    }
}
