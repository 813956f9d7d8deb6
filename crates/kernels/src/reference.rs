//! The float64 oracle: `ops-spec.md` written out formula for formula, for reading, not for speed.
//!
//! Every fast path (the row kernels here, the tract ops, the ONNX Runtime ops, CUDA) is tested
//! against this function. It does its own `Scale`/`B` broadcasting instead of calling
//! `layout::expand_param`, so a broadcasting bug there cannot hide behind a matching bug here.

use crate::layout::{check_bias_shape, check_param_shape, row_layout, skip_rows};
use crate::params::{Params, SpecError, Variant};

/// `Y`, `Mean` and `InvStdDev` in float64; `mean` and `inv_std_dev` have one entry per row.
#[derive(Debug, Clone, PartialEq)]
pub struct RefOutput {
    pub y: Vec<f64>,
    pub mean: Vec<f64>,
    pub inv_std_dev: Vec<f64>,
    /// Version 2's `Sum`: the `S` the statistics are taken over (`X` itself without a residual).
    pub sum: Vec<f64>,
}

/// Version 2's residual inputs, each `(values, shape)`, and how an `Add` of the element type
/// rounds: `round(v)` is `v` rounded to `T` (the identity for f64). The exact sum of two
/// f16/bf16/f32 values rounded once to `T` is what an `Add` computing in f32 and rounding gives.
#[derive(Debug, Clone, Copy)]
pub struct RefResidual<'a> {
    pub skip: Option<(&'a [f64], &'a [usize])>,
    pub bias: Option<(&'a [f64], &'a [usize])>,
    pub round: fn(f64) -> f64,
}

impl RefResidual<'_> {
    /// No residual: version 1.
    pub const NONE: RefResidual<'static> = RefResidual {
        skip: None,
        bias: None,
        round: |v| v,
    };
}

/// Runs the op on `x` of shape `x_shape`, with optional `Scale` and `B` given as
/// `(values, shape)`.
///
/// Returns every spec error a runtime must give for these inputs (rank, axis, broadcast,
/// parameter values). A row with `N = 0` elements has `mean = inv_std_dev = NaN` (`0/0`, as
/// torch's `mean` of an empty dimension).
///
/// # Panics
/// If a values slice does not hold `prod(shape)` elements.
pub fn reference(
    x: &[f64],
    x_shape: &[usize],
    axis: i64,
    scale: Option<(&[f64], &[usize])>,
    bias: Option<(&[f64], &[usize])>,
    params: &Params,
) -> Result<RefOutput, SpecError> {
    reference_residual(x, x_shape, axis, scale, bias, &RefResidual::NONE, params)
}

/// [`reference`] with version 2's residual: the statistics and `Y` of
/// `S = round(round(X + Bias) + Skip)`, each term only when given.
pub fn reference_residual(
    x: &[f64],
    x_shape: &[usize],
    axis: i64,
    scale: Option<(&[f64], &[usize])>,
    bias: Option<(&[f64], &[usize])>,
    residual: &RefResidual<'_>,
    params: &Params,
) -> Result<RefOutput, SpecError> {
    params.validate()?;
    let layout = row_layout(x_shape, axis)?;
    assert_eq!(
        x.len(),
        layout.rows * layout.row_len,
        "x does not match x_shape"
    );
    let normalized = &x_shape[layout.axis..];
    let scale = scale
        .map(|(v, s)| Broadcast::new(v, s, normalized, "Scale"))
        .transpose()?;
    let bias = bias
        .map(|(v, s)| Broadcast::new(v, s, normalized, "B"))
        .transpose()?;
    let residual_bias = residual
        .bias
        .map(|(v, s)| {
            check_bias_shape(s, normalized)?;
            Ok(Broadcast::over(v, s, normalized, "Bias"))
        })
        .transpose()?;
    let skip = residual
        .skip
        .map(|(v, s)| {
            skip_rows(s, x_shape, layout.axis)?;
            Ok(Broadcast::over(v, s, x_shape, "Skip"))
        })
        .transpose()?;
    // S, element by element, in the order of the Adds it replaces.
    let round = residual.round;
    let sums: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let mut s = v;
            if let Some(b) = &residual_bias {
                s = round(s + b.at(i % layout.row_len.max(1)));
            }
            if let Some(k) = &skip {
                s = round(s + k.at(i));
            }
            s
        })
        .collect();

    let n = layout.row_len;
    let mut out = RefOutput {
        y: Vec::with_capacity(x.len()),
        mean: Vec::with_capacity(layout.rows),
        inv_std_dev: Vec::with_capacity(layout.rows),
        sum: Vec::new(),
    };
    for row in 0..layout.rows {
        let xs = &sums[row * n..(row + 1) * n];
        let n = n as f64;

        let mean = xs.iter().sum::<f64>() / n;
        let sum_sq: f64 = xs.iter().map(|&v| (v - mean) * (v - mean)).sum();
        let var = if params.unbiased {
            sum_sq / (n - 1.0)
        } else {
            sum_sq / n
        };
        let sigma = if params.eps_in_sqrt {
            (var + params.epsilon).sqrt()
        } else {
            var.sqrt() + params.epsilon
        };

        for (j, &v) in xs.iter().enumerate() {
            let y = (v - mean) / sigma;
            let mut out_j = match params.variant {
                Variant::AdaNorm { c, k } => c * (1.0 - k * y) * y,
                Variant::LayerNormSimple => y,
            };
            if let Some(s) = &scale {
                out_j *= s.at(j);
            }
            if let Some(b) = &bias {
                out_j += b.at(j);
            }
            out.y.push(out_j);
        }
        // With N = 0 the loops above see nothing and these are 0/0; say so explicitly.
        let (mean, inv) = if xs.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (mean, 1.0 / sigma)
        };
        out.mean.push(mean);
        out.inv_std_dev.push(inv);
    }
    out.sum = sums;
    Ok(out)
}

/// A `Scale` or `B` read at a position of the normalised row, numpy-broadcasting style.
struct Broadcast<'a> {
    values: &'a [f64],
    shape: &'a [usize],
    normalized: &'a [usize],
}

impl<'a> Broadcast<'a> {
    fn new(
        values: &'a [f64],
        shape: &'a [usize],
        normalized: &'a [usize],
        what: &str,
    ) -> Result<Broadcast<'a>, SpecError> {
        check_param_shape(shape, normalized, what)?;
        Ok(Broadcast::over(values, shape, normalized, what))
    }

    /// Over `normalized`, whose broadcast the caller checked.
    fn over(
        values: &'a [f64],
        shape: &'a [usize],
        normalized: &'a [usize],
        what: &str,
    ) -> Broadcast<'a> {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "{what} values do not match its shape"
        );
        Broadcast {
            values,
            shape,
            normalized,
        }
    }

    /// The value at flat position `j` of the normalised row (of `X`, for `Skip`).
    fn at(&self, j: usize) -> f64 {
        // Unravel `j` over the normalised shape, last dim fastest, then re-ravel over the
        // parameter's shape with size-1 dims pinned to 0.
        let mut rest = j;
        let mut index = 0;
        let mut stride = 1;
        let offset = self.normalized.len() - self.shape.len();
        for d in (0..self.normalized.len()).rev() {
            let i = rest % self.normalized[d];
            rest /= self.normalized[d];
            if d >= offset {
                let p = self.shape[d - offset];
                if p != 1 {
                    index += i * stride;
                }
                stride *= p;
            }
        }
        self.values[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::rule;

    fn lns() -> Params {
        Params {
            variant: Variant::LayerNormSimple,
            epsilon: 0.0,
            unbiased: false,
            eps_in_sqrt: true,
        }
    }

    #[test]
    fn hand_computed_layer_norm() {
        // Row [1, 2, 3, 4]: mean 2.5, d = [-1.5, -0.5, 0.5, 1.5], sum d² = 5.
        //   biased var 1.25 -> sigma = sqrt(1.25); unbiased var 5/3.
        let x = [1.0, 2.0, 3.0, 4.0];
        let out = reference(&x, &[4], -1, None, None, &lns()).unwrap();
        let s = 1.25f64.sqrt();
        assert_eq!(out.mean, vec![2.5]);
        assert_eq!(out.inv_std_dev, vec![1.0 / s]);
        assert_eq!(out.y, vec![-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]);

        let p = Params {
            unbiased: true,
            epsilon: 0.5,
            eps_in_sqrt: false,
            ..lns()
        };
        let out = reference(&x, &[4], 0, None, None, &p).unwrap();
        let s = (5.0f64 / 3.0).sqrt() + 0.5;
        assert_eq!(out.inv_std_dev, vec![1.0 / s]);
        assert_eq!(out.y[3], 1.5 / s);

        let p = Params {
            epsilon: 0.75,
            ..lns()
        };
        let out = reference(&x, &[4], 0, None, None, &p).unwrap();
        assert_eq!(out.inv_std_dev, vec![1.0 / 2.0f64.sqrt()]);
    }

    #[test]
    fn hand_computed_ada_norm_with_scale_and_bias() {
        // Row [0, 2]: mean 1, d = [-1, 1], var 1 (biased), sigma 1 with eps 0 -> y = [-1, 1].
        // c=2, k=0.5: Y = 2*(1 - 0.5*y)*y = [-3, 1]; scale [10, 100]: [-30, 100]; bias +1.
        let p = Params {
            variant: Variant::AdaNorm { c: 2.0, k: 0.5 },
            ..lns()
        };
        let out = reference(
            &[0.0, 2.0],
            &[1, 2],
            1,
            Some((&[10.0, 100.0], &[2])),
            Some((&[1.0], &[1])),
            &p,
        )
        .unwrap();
        assert_eq!(out.y, vec![-29.0, 101.0]);
        assert_eq!(out.mean, vec![1.0]);
        assert_eq!(out.inv_std_dev, vec![1.0]);
    }

    #[test]
    fn hand_computed_residual() {
        // X [[0, 1], [2, 3]], Bias [1, -1], Skip [[1, 1]] broadcast over both rows:
        // S = X + Bias + Skip = [[2, 1], [4, 3]]: means 1.5, 3.5, d = ±0.5, sigma 0.5.
        let x = [0.0, 1.0, 2.0, 3.0];
        let r = RefResidual {
            skip: Some((&[1.0, 1.0], &[1, 2])),
            bias: Some((&[1.0, -1.0], &[2])),
            round: |v| v,
        };
        let out = reference_residual(&x, &[2, 2], -1, None, None, &r, &lns()).unwrap();
        assert_eq!(out.sum, vec![2.0, 1.0, 4.0, 3.0]);
        assert_eq!(out.mean, vec![1.5, 3.5]);
        assert_eq!(out.y, vec![1.0, -1.0, 1.0, -1.0]);
        // Without a residual, S is X and nothing else changes.
        let plain = reference(&x, &[2, 2], -1, None, None, &lns()).unwrap();
        assert_eq!(plain.sum, x.to_vec());
        let none = reference_residual(&x, &[2, 2], -1, None, None, &RefResidual::NONE, &lns());
        assert_eq!(none.unwrap(), plain);
    }

    #[test]
    fn residual_rounds_after_each_add() {
        // In f32, 1 + 2^-24 rounds to 1 (ties to even), so (1 + 2^-24) + 2^-24 is 1 as two
        // f32 Adds compute it, though the exact sum 1 + 2^-23 is an f32.
        let tiny = 2f64.powi(-24);
        let r = RefResidual {
            skip: Some((&[tiny, tiny], &[2])),
            bias: Some((&[tiny, 0.0], &[2])),
            round: |v| v as f32 as f64,
        };
        let out = reference_residual(&[1.0, 0.0], &[2], -1, None, None, &r, &lns()).unwrap();
        assert_eq!(out.sum, vec![1.0, tiny]);
    }

    #[test]
    fn residual_shape_errors() {
        let x = [1.0, 2.0];
        let r = RefResidual {
            skip: Some((&[1.0; 3], &[3])),
            ..RefResidual::NONE
        };
        let err = reference_residual(&x, &[2], 0, None, None, &r, &lns()).unwrap_err();
        assert_eq!(err.rule, rule::SKIP_BROADCAST);
        let r = RefResidual {
            bias: Some((&[1.0; 3], &[3])),
            ..RefResidual::NONE
        };
        let err = reference_residual(&x, &[2], 0, None, None, &r, &lns()).unwrap_err();
        assert_eq!(err.rule, rule::BIAS_BROADCAST);
    }

    #[test]
    fn rows_follow_the_axis() {
        // Shape [2, 2], axis 0 -> one row of 4; axis 1 -> two rows of 2.
        let x = [0.0, 2.0, 4.0, 6.0];
        let whole = reference(&x, &[2, 2], 0, None, None, &lns()).unwrap();
        assert_eq!(whole.mean, vec![3.0]);
        let rows = reference(&x, &[2, 2], -1, None, None, &lns()).unwrap();
        assert_eq!(rows.mean, vec![1.0, 5.0]);
        assert_eq!(rows.y, vec![-1.0, 1.0, -1.0, 1.0]);
    }

    #[test]
    fn broadcast_scale_over_two_dims() {
        // Normalised shape [2, 2]; Scale [2, 1] repeats down the last dim: [a, a, b, b].
        // x = [0, 0, 2, 2]: mean 1, sigma 1, y = [-1, -1, 1, 1].
        let out = reference(
            &[0.0, 0.0, 2.0, 2.0],
            &[2, 2],
            0,
            Some((&[3.0, 5.0], &[2, 1])),
            None,
            &lns(),
        )
        .unwrap();
        assert_eq!(out.y, vec![-3.0, -3.0, 5.0, 5.0]);
        let out = reference(
            &[0.0, 0.0, 2.0, 2.0],
            &[2, 2],
            0,
            None,
            Some((&[3.0, 5.0], &[1, 2])),
            &lns(),
        )
        .unwrap();
        assert_eq!(out.y, vec![2.0, 4.0, 4.0, 6.0]);
    }

    #[test]
    fn unbiased_single_element_is_nan() {
        let p = Params {
            unbiased: true,
            epsilon: 1e-5,
            ..lns()
        };
        let out = reference(&[3.0], &[1], -1, None, None, &p).unwrap();
        assert_eq!(out.mean, vec![3.0]);
        assert!(out.y[0].is_nan() && out.inv_std_dev[0].is_nan());
    }

    #[test]
    fn empty_rows_and_empty_tensors() {
        let out = reference(&[], &[3, 0], -1, None, None, &lns()).unwrap();
        assert!(out.y.is_empty());
        assert_eq!(out.mean.len(), 3);
        assert!(out.mean.iter().chain(&out.inv_std_dev).all(|v| v.is_nan()));
        let out = reference(&[], &[0, 4], -1, Some((&[1.0; 4], &[4])), None, &lns()).unwrap();
        assert!(out.y.is_empty() && out.mean.is_empty() && out.inv_std_dev.is_empty());
    }

    #[test]
    fn spec_errors_come_through() {
        let x = [1.0, 2.0];
        assert_eq!(
            reference(&[1.0], &[], 0, None, None, &lns())
                .unwrap_err()
                .rule,
            rule::RANK
        );
        assert_eq!(
            reference(&x, &[2], 1, None, None, &lns()).unwrap_err().rule,
            rule::AXIS
        );
        let err = reference(&x, &[2], 0, Some((&[1.0; 3], &[3])), None, &lns()).unwrap_err();
        assert_eq!(
            (err.rule, err.detail.starts_with("Scale ")),
            (rule::BROADCAST, true)
        );
        let err = reference(&x, &[2], 0, None, Some((&[1.0; 3], &[3])), &lns()).unwrap_err();
        assert_eq!(
            (err.rule, err.detail.starts_with("B ")),
            (rule::BROADCAST, true)
        );
        let p = Params {
            epsilon: -1.0,
            ..lns()
        };
        assert_eq!(
            reference(&x, &[2], 0, None, None, &p).unwrap_err().rule,
            rule::EPSILON_NEGATIVE
        );
        let p = Params {
            variant: Variant::AdaNorm {
                c: f64::NAN,
                k: 0.1,
            },
            ..lns()
        };
        assert_eq!(
            reference(&x, &[2], 0, None, None, &p).unwrap_err().rule,
            rule::NON_FINITE
        );
    }
}
