//! Numeric values of (small) constant tensors, whichever field stores them.

use half::{bf16, f16};

use super::dtype::{
    self, BFLOAT16, DOUBLE, FLOAT, FLOAT16, INT16, INT32, INT64, INT8, UINT16, UINT8,
};
use super::proto::TensorProto;
use super::Model;
use crate::error::Result;

/// Tensors larger than this are never decoded by value (the matcher only needs scalars, axes
/// and shape vectors; weights are passed by name).
pub const MAX_DECODED_ELEMENTS: usize = 1 << 16;

/// A constant decoded to numbers: floats widened to f64 (exactly), integers to i64.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstValue {
    pub elem_type: i32,
    pub dims: Vec<i64>,
    pub floats: Option<Vec<f64>>,
    pub ints: Option<Vec<i64>>,
}

impl ConstValue {
    pub fn numel(&self) -> usize {
        self.dims.iter().map(|&d| d.max(0) as usize).product()
    }

    /// The single value of a one-element tensor (scalar or `[1]`, `[1,1]`, ...), as f64.
    pub fn scalar_f64(&self) -> Option<f64> {
        if self.numel() != 1 {
            return None;
        }
        match (&self.floats, &self.ints) {
            (Some(f), _) => f.first().copied(),
            (_, Some(i)) => i.first().map(|&v| v as f64),
            _ => None,
        }
    }

    pub fn as_ints(&self) -> Option<&[i64]> {
        self.ints.as_deref()
    }

    pub fn is_float(&self) -> bool {
        dtype::is_float(self.elem_type)
    }
}

fn numel(t: &TensorProto) -> Option<usize> {
    let mut n = 1usize;
    for &d in &t.dims {
        n = n.checked_mul(usize::try_from(d).ok()?)?;
    }
    Some(n)
}

/// Decodes a tensor's values when it is small and numeric; `Ok(None)` otherwise.
pub fn decode(model: &Model, t: &TensorProto) -> Result<Option<ConstValue>> {
    let Some(n) = numel(t) else { return Ok(None) };
    if n > MAX_DECODED_ELEMENTS {
        return Ok(None);
    }
    let elem_type = t.data_type();
    let raw = model.raw_bytes(t)?;
    let mut floats = None;
    let mut ints = None;
    match (elem_type, raw) {
        (FLOAT, Some(b)) => {
            floats =
                le_chunks::<4>(&b, n).map(|v| v.map(|c| f32::from_le_bytes(c) as f64).collect())
        }
        (DOUBLE, Some(b)) => {
            floats = le_chunks::<8>(&b, n).map(|v| v.map(f64::from_le_bytes).collect())
        }
        (FLOAT16, Some(b)) => {
            floats =
                le_chunks::<2>(&b, n).map(|v| v.map(|c| f16::from_le_bytes(c).to_f64()).collect())
        }
        (BFLOAT16, Some(b)) => {
            floats =
                le_chunks::<2>(&b, n).map(|v| v.map(|c| bf16::from_le_bytes(c).to_f64()).collect())
        }
        (INT64, Some(b)) => {
            ints = le_chunks::<8>(&b, n).map(|v| v.map(i64::from_le_bytes).collect())
        }
        (INT32, Some(b)) => {
            ints = le_chunks::<4>(&b, n).map(|v| v.map(|c| i32::from_le_bytes(c) as i64).collect())
        }
        // 8- and 16-bit integers: QDQ models' quantised constants (ε, γ, β, zero points).
        (INT8, Some(b)) => {
            ints = le_chunks::<1>(&b, n).map(|v| v.map(|c| c[0] as i8 as i64).collect())
        }
        (UINT8, Some(b)) => ints = le_chunks::<1>(&b, n).map(|v| v.map(|c| c[0] as i64).collect()),
        (INT16, Some(b)) => {
            ints = le_chunks::<2>(&b, n).map(|v| v.map(|c| i16::from_le_bytes(c) as i64).collect())
        }
        (UINT16, Some(b)) => {
            ints = le_chunks::<2>(&b, n).map(|v| v.map(|c| u16::from_le_bytes(c) as i64).collect())
        }
        (INT8 | UINT8 | INT16 | UINT16, None) if t.int32_data.len() == n => {
            ints = Some(t.int32_data.iter().map(|&v| v as i64).collect())
        }
        (FLOAT, None) if t.float_data.len() == n => {
            floats = Some(t.float_data.iter().map(|&v| v as f64).collect())
        }
        (DOUBLE, None) if t.double_data.len() == n => floats = Some(t.double_data.clone()),
        // float16/bfloat16 typed storage keeps the 16-bit pattern in int32_data.
        (FLOAT16, None) if t.int32_data.len() == n => {
            floats = Some(
                t.int32_data
                    .iter()
                    .map(|&v| f16::from_bits(v as u16).to_f64())
                    .collect(),
            )
        }
        (BFLOAT16, None) if t.int32_data.len() == n => {
            floats = Some(
                t.int32_data
                    .iter()
                    .map(|&v| bf16::from_bits(v as u16).to_f64())
                    .collect(),
            )
        }
        (INT64, None) if t.int64_data.len() == n => ints = Some(t.int64_data.clone()),
        (INT32, None) if t.int32_data.len() == n => {
            ints = Some(t.int32_data.iter().map(|&v| v as i64).collect())
        }
        _ => return Ok(None),
    }
    if floats.is_none() && ints.is_none() {
        return Ok(None);
    }
    Ok(Some(ConstValue {
        elem_type,
        dims: t.dims.clone(),
        floats,
        ints,
    }))
}

fn le_chunks<const W: usize>(b: &[u8], n: usize) -> Option<impl Iterator<Item = [u8; W]> + '_> {
    (b.len() == n * W).then(|| {
        b.chunks_exact(W)
            .map(|c| c.try_into().expect("exact chunk"))
    })
}
