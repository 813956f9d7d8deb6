//! `run` and `verify`: models executed in tract with the `ai.adanorm` ops, on inputs from an
//! `.npz` or drawn at random from the declared input types and shapes.

use std::collections::HashMap;
use std::path::Path;

use adanorm_tract::tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn};
use adanorm_tract::tract_onnx::prelude::{DatumType, Tensor};

use crate::error::{Error, Result};
use crate::graph::Dim;
use crate::onnx::{dtype, load_model};

/// Size given to a dynamic dimension nobody named with `--dim`.
pub const DEFAULT_DYNAMIC_DIM: usize = 2;

/// The most elements `verify` draws for one input (1 GiB of float32).
pub const MAX_RANDOM_ELEMENTS: usize = 1 << 28;

pub fn run(path: &Path, inputs: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
    adanorm_tract::run_model(path, inputs).map_err(|e| Error::msg(format!("{e:#}")).in_file(path))
}

/// A small deterministic generator (xorshift), so `verify` runs are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Roughly standard normal (sum of uniforms).
    fn normal(&mut self) -> f64 {
        (0..4).map(|_| self.unit()).sum::<f64>() * 1.7320508 - 3.4641016
    }
}

/// Random inputs of the model's declared types and shapes. Dynamic dimensions take their value
/// from `dims` (by `dim_param` name) or [`DEFAULT_DYNAMIC_DIM`]. Integer inputs (token ids,
/// masks) are drawn from {0, 1}, which every embedding table and mask accepts.
pub fn random_inputs(
    path: &Path,
    dims: &HashMap<String, usize>,
    seed: u64,
) -> Result<Vec<(String, Tensor)>> {
    let model = load_model(path)?;
    let g = crate::graph::GraphIndex::build(&model)?;
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    for input in &model.graph().input {
        let name = input.name();
        if g.initializer(name).is_some() {
            continue;
        }
        let facts = g.facts(name).ok_or_else(|| {
            Error::msg(format!("input '{name}' declares no tensor type")).in_file(path)
        })?;
        let shape: Vec<usize> = facts
            .shape
            .as_ref()
            .ok_or_else(|| {
                Error::msg(format!("input '{name}' declares no shape; pass --inputs")).in_file(path)
            })?
            .iter()
            .map(|d| match d {
                Dim::Known(v) => usize::try_from(*v).map_err(|_| {
                    Error::msg(format!("input '{name}' declares the dimension {v}")).in_file(path)
                }),
                Dim::Named(n) => Ok(dims.get(n).copied().unwrap_or(DEFAULT_DYNAMIC_DIM)),
                Dim::Sym(_) | Dim::Unknown => Ok(DEFAULT_DYNAMIC_DIM),
            })
            .collect::<Result<_>>()?;
        // Zero-sized dimensions aside: ndarray refuses shapes whose other sizes overflow.
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))
            .filter(|&n| n <= MAX_RANDOM_ELEMENTS)
            .ok_or_else(|| {
                Error::msg(format!(
                    "input '{name}' of shape {shape:?} is too large to draw at random \
                     (more than {MAX_RANDOM_ELEMENTS} elements); pass --inputs or smaller --dim values"
                ))
                .in_file(path)
            })?;
        let ix = IxDyn(&shape);
        let t = match facts.elem_type.unwrap_or(0) {
            dtype::FLOAT => Tensor::from(ArrayD::from_shape_fn(ix, |_| rng.normal() as f32)),
            dtype::DOUBLE => Tensor::from(ArrayD::from_shape_fn(ix, |_| rng.normal())),
            dtype::FLOAT16 => Tensor::from(ArrayD::from_shape_fn(ix, |_| {
                half::f16::from_f64(rng.normal())
            })),
            dtype::INT64 => Tensor::from(ArrayD::from_shape_fn(ix, |_| (rng.next() % 2) as i64)),
            dtype::INT32 => Tensor::from(ArrayD::from_shape_fn(ix, |_| (rng.next() % 2) as i32)),
            dtype::BOOL => Tensor::from(ArrayD::from_shape_fn(ix, |_| rng.next() % 2 == 1)),
            other => {
                return Err(Error::msg(format!(
                    "input '{name}' has type {} which verify cannot draw; pass --inputs",
                    dtype::name(other)
                ))
                .in_file(path))
            }
        };
        debug_assert_eq!(t.len(), n);
        out.push((name.to_string(), t));
    }
    Ok(out)
}

/// Per-output difference between two runs.
#[derive(Debug, Clone)]
pub struct Difference {
    pub output: String,
    pub max_abs: f64,
    /// max |a - b| / max(1, |b|)
    pub max_scaled: f64,
    pub problem: Option<String>,
}

fn as_f64(t: &Tensor) -> Option<Vec<f64>> {
    let t = t.cast_to_dt(DatumType::F64).ok()?;
    Some(
        t.to_plain_array_view::<f64>()
            .ok()?
            .iter()
            .copied()
            .collect(),
    )
}

pub fn compare(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> Vec<Difference> {
    let by_name: HashMap<&str, &Tensor> = b.iter().map(|(n, t)| (n.as_str(), t)).collect();
    a.iter()
        .map(|(name, ta)| {
            let mut d = Difference {
                output: name.clone(),
                max_abs: 0.0,
                max_scaled: 0.0,
                problem: None,
            };
            match by_name.get(name.as_str()) {
                None => d.problem = Some("missing in the second model".into()),
                Some(tb) if ta.shape() != tb.shape() => {
                    d.problem = Some(format!(
                        "shapes differ: {:?} vs {:?}",
                        ta.shape(),
                        tb.shape()
                    ))
                }
                Some(tb) => match (as_f64(ta), as_f64(tb)) {
                    (Some(x), Some(y)) => {
                        for (u, v) in x.iter().zip(&y) {
                            let diff = (u - v).abs();
                            if diff.is_nan() && !(u.is_nan() && v.is_nan()) {
                                d.problem = Some("NaN in one model only".into());
                            }
                            if diff.is_finite() {
                                d.max_abs = d.max_abs.max(diff);
                                d.max_scaled = d.max_scaled.max(diff / v.abs().max(1.0));
                            }
                        }
                    }
                    _ => d.problem = Some("not numeric".into()),
                },
            }
            d
        })
        .collect()
}
