//! The float64 oracle: `ops-spec.md` written out formula for formula, for reading, not for speed.
//!
//! Every fast path (the row kernels here, the tract ops, the ONNX Runtime ops, CUDA) is tested
//! against this function. It does its own `Scale`/`B` broadcasting instead of calling
//! `layout::expand_param`, so a broadcasting bug there cannot hide behind a matching bug here.

use crate::layout::{check_param_shape, row_layout};
use crate::params::{Params, SpecError, Variant};

/// `Y`, `Mean` and `InvStdDev` in float64; `mean` and `inv_std_dev` have one entry per row.
#[derive(Debug, Clone, PartialEq)]
pub struct RefOutput {
    pub y: Vec<f64>,
    pub mean: Vec<f64>,
    pub inv_std_dev: Vec<f64>,
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

    let n = layout.row_len;
    let mut out = RefOutput {
        y: Vec::with_capacity(x.len()),
        mean: Vec::with_capacity(layout.rows),
        inv_std_dev: Vec::with_capacity(layout.rows),
    };
    for row in 0..layout.rows {
        let xs = &x[row * n..(row + 1) * n];
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
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "{what} values do not match its shape"
        );
        Ok(Broadcast {
            values,
            shape,
            normalized,
        })
    }

    /// The value at flat position `j` of the normalised row.
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
