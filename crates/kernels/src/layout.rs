//! Shapes: how `X` splits into rows, which `Scale`/`B` shapes are allowed, and the shape of the
//! `Mean`/`InvStdDev` outputs. Every runtime checks shapes through here so they all refuse the
//! same inputs with the same messages.

use std::borrow::Cow;

use crate::params::{rule, SpecError};

/// `X` seen as `rows` rows of `row_len` contiguous elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowLayout {
    /// The normalised axis in `[0, rank)`.
    pub axis: usize,
    /// `prod(X.shape[:axis])`; also the element count of `Mean` and `InvStdDev`.
    pub rows: usize,
    /// `N = prod(X.shape[axis:])`.
    pub row_len: usize,
}

/// Splits `x_shape` at `axis` (negative counts from the end).
///
/// Errors: rank 0, `axis` outside `[-r, r)`, or an element count that overflows `usize`.
pub fn row_layout(x_shape: &[usize], axis: i64) -> Result<RowLayout, SpecError> {
    let rank = x_shape.len();
    if rank == 0 {
        return Err(SpecError::new(rule::RANK, "X has rank 0"));
    }
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(SpecError::new(
            rule::AXIS,
            format!("axis = {axis} for rank {rank}"),
        ));
    }
    let axis = if axis < 0 { axis + r } else { axis } as usize;
    let rows = checked_product(&x_shape[..axis], x_shape)?;
    let row_len = checked_product(&x_shape[axis..], x_shape)?;
    // rows * row_len can still overflow when both halves fit.
    rows.checked_mul(row_len)
        .ok_or_else(|| SpecError::new(rule::SHAPE_OVERFLOW, format!("X has shape {x_shape:?}")))?;
    Ok(RowLayout {
        axis,
        rows,
        row_len,
    })
}

fn checked_product(dims: &[usize], x_shape: &[usize]) -> Result<usize, SpecError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| SpecError::new(rule::SHAPE_OVERFLOW, format!("X has shape {x_shape:?}")))
}

/// Checks that `param_shape` is unidirectionally broadcastable to `normalized_shape`
/// (`X.shape[axis:]`): aligned from the right, each dimension equal or 1, and no more dimensions
/// than `normalized_shape` has. `what` names the input (`"Scale"`, `"B"`) in the message.
pub fn check_param_shape(
    param_shape: &[usize],
    normalized_shape: &[usize],
    what: &str,
) -> Result<(), SpecError> {
    if broadcasts_to(param_shape, normalized_shape) {
        Ok(())
    } else {
        Err(SpecError::new(
            rule::BROADCAST,
            format!("{what} has shape {param_shape:?}, X.shape[axis:] is {normalized_shape:?}"),
        ))
    }
}

/// Whether `shape` is unidirectionally broadcastable to `target` (aligned from the right, each
/// dimension equal or 1, no more dimensions).
fn broadcasts_to(shape: &[usize], target: &[usize]) -> bool {
    shape.len() <= target.len()
        && shape
            .iter()
            .rev()
            .zip(target.iter().rev())
            .all(|(&p, &n)| p == n || p == 1)
}

/// Version 2's `Bias`: [`check_param_shape`] with its own rule.
pub fn check_bias_shape(bias_shape: &[usize], normalized_shape: &[usize]) -> Result<(), SpecError> {
    if broadcasts_to(bias_shape, normalized_shape) {
        Ok(())
    } else {
        Err(SpecError::new(
            rule::BIAS_BROADCAST,
            format!("Bias has shape {bias_shape:?}, X.shape[axis:] is {normalized_shape:?}"),
        ))
    }
}

/// How version 2's `Skip` lines up with the rows of `X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipRows {
    /// `Skip` is `rows` whole rows: row `r` of `X` adds row `r % rows` of `Skip` (the shape of
    /// `X`, or a suffix of it covering the normalised axes, as `[S, H]` for `X` of `[B, S, H]`).
    Rows(usize),
    /// Any other broadcast (`[B, 1, H]`, a 1 inside the row): expand `Skip` to `X`'s shape with
    /// [`expand_param`] (`normalized_shape` = the shape of `X`) and read it as `Rows(rows)`.
    Expand,
}

/// Checks `Skip`'s shape against `X`'s and says how the kernels read it.
pub fn skip_rows(
    skip_shape: &[usize],
    x_shape: &[usize],
    axis: usize,
) -> Result<SkipRows, SpecError> {
    if !broadcasts_to(skip_shape, x_shape) {
        return Err(SpecError::new(
            rule::SKIP_BROADCAST,
            format!("Skip has shape {skip_shape:?}, X has {x_shape:?}"),
        ));
    }
    // Leading 1s change nothing; what is left must be X's own trailing dims, rows included.
    let first = skip_shape
        .iter()
        .position(|&d| d != 1)
        .unwrap_or(skip_shape.len());
    let own = &skip_shape[first..];
    let suffix = &x_shape[x_shape.len() - own.len()..];
    if own == suffix && own.len() >= x_shape.len() - axis {
        Ok(SkipRows::Rows(
            own[..own.len() - (x_shape.len() - axis)].iter().product(),
        ))
    } else if own.is_empty() && x_shape[axis..].iter().all(|&d| d == 1) {
        Ok(SkipRows::Rows(1))
    } else {
        Ok(SkipRows::Expand)
    }
}

/// `values` (of shape `shape`, checked with [`check_param_shape`] or [`check_bias_shape`]) as
/// one full row of `normalized_shape`: borrowed when it already holds the row's element count
/// (the same layout up to leading 1s), broadcast with [`expand_param`] otherwise.
pub fn param_row<'a, T: Copy>(
    values: &'a [T],
    shape: &[usize],
    normalized_shape: &[usize],
) -> Cow<'a, [T]> {
    if values.len() == normalized_shape.iter().product::<usize>() {
        Cow::Borrowed(values)
    } else {
        Cow::Owned(expand_param(values, shape, normalized_shape))
    }
}

/// Version 2's `Skip` (`values` of `skip_shape`) as the whole rows the kernels read: checked
/// against `X` ([`skip_rows`]), borrowed when it already is rows, expanded to `X`'s shape
/// otherwise.
pub fn skip_values<'a, T: Copy>(
    values: &'a [T],
    skip_shape: &[usize],
    x_shape: &[usize],
    axis: usize,
) -> Result<Cow<'a, [T]>, SpecError> {
    Ok(match skip_rows(skip_shape, x_shape, axis)? {
        SkipRows::Rows(_) => Cow::Borrowed(values),
        SkipRows::Expand => Cow::Owned(expand_param(values, skip_shape, x_shape)),
    })
}

/// Broadcasts `values` (of shape `param_shape`) to one full row of `prod(normalized_shape)`
/// elements, so row kernels can index `Scale`/`B` by position in the row.
///
/// # Panics
/// If `values.len() != prod(param_shape)` or the shapes fail [`check_param_shape`]; call that
/// first.
pub fn expand_param<T: Copy>(
    values: &[T],
    param_shape: &[usize],
    normalized_shape: &[usize],
) -> Vec<T> {
    assert_eq!(
        values.len(),
        param_shape.iter().product::<usize>(),
        "values do not match param_shape"
    );
    assert!(
        check_param_shape(param_shape, normalized_shape, "param").is_ok(),
        "{param_shape:?} is not broadcastable to {normalized_shape:?}"
    );
    let row_len: usize = normalized_shape.iter().product();
    if param_shape.iter().product::<usize>() == row_len {
        // Same element count means the same dims up to leading 1s: a plain copy.
        return values.to_vec();
    }
    // Stride of each normalized dim inside `values`; 0 where the parameter broadcasts.
    let offset = normalized_shape.len() - param_shape.len();
    let mut strides = vec![0usize; normalized_shape.len()];
    let mut stride = 1;
    for (i, &p) in param_shape.iter().enumerate().rev() {
        strides[offset + i] = if p == 1 { 0 } else { stride };
        stride *= p;
    }
    let mut out = Vec::with_capacity(row_len);
    let mut index = vec![0usize; normalized_shape.len()];
    let mut src = 0usize;
    for _ in 0..row_len {
        out.push(values[src]);
        // Odometer increment over the normalized shape, keeping `src` in step.
        for d in (0..index.len()).rev() {
            index[d] += 1;
            src += strides[d];
            if index[d] < normalized_shape[d] {
                break;
            }
            src -= strides[d] * index[d];
            index[d] = 0;
        }
    }
    out
}

/// Shape of `Mean` and `InvStdDev`: `X.shape[:axis] + [1] * (rank - axis)`.
///
/// `axis` is the normalised axis from [`RowLayout::axis`].
pub fn stats_shape(x_shape: &[usize], axis: usize) -> Vec<usize> {
    let mut shape = x_shape[..axis].to_vec();
    shape.resize(x_shape.len(), 1);
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_layout_splits_at_axis() {
        let s = [2, 3, 4];
        assert_eq!(
            row_layout(&s, -1),
            Ok(RowLayout {
                axis: 2,
                rows: 6,
                row_len: 4
            })
        );
        assert_eq!(
            row_layout(&s, 2),
            Ok(RowLayout {
                axis: 2,
                rows: 6,
                row_len: 4
            })
        );
        assert_eq!(
            row_layout(&s, 1),
            Ok(RowLayout {
                axis: 1,
                rows: 2,
                row_len: 12
            })
        );
        assert_eq!(
            row_layout(&s, -3),
            Ok(RowLayout {
                axis: 0,
                rows: 1,
                row_len: 24
            })
        );
        assert_eq!(
            row_layout(&[5], 0),
            Ok(RowLayout {
                axis: 0,
                rows: 1,
                row_len: 5
            })
        );
        assert_eq!(
            row_layout(&[3, 0], -1),
            Ok(RowLayout {
                axis: 1,
                rows: 3,
                row_len: 0
            })
        );
        assert_eq!(
            row_layout(&[0, 3], -1),
            Ok(RowLayout {
                axis: 1,
                rows: 0,
                row_len: 3
            })
        );
    }

    #[test]
    fn rank_0_is_refused() {
        let err = row_layout(&[], -1).unwrap_err();
        assert_eq!(err.rule, rule::RANK);
        assert_eq!(err.to_string(), "X must have rank >= 1: X has rank 0");
    }

    #[test]
    fn axis_outside_range_is_refused() {
        for axis in [3, -4, i64::MAX, i64::MIN] {
            let err = row_layout(&[2, 3, 4], axis).unwrap_err();
            assert_eq!(err.rule, rule::AXIS);
            assert!(err.detail.contains(&format!("axis = {axis}")), "{err}");
        }
    }

    #[test]
    fn overflowing_shape_is_refused() {
        let big = usize::MAX / 2;
        assert_eq!(
            row_layout(&[big, 3], -1).unwrap_err().rule,
            rule::SHAPE_OVERFLOW
        );
        assert_eq!(
            row_layout(&[3, big], -1).unwrap_err().rule,
            rule::SHAPE_OVERFLOW
        );
        assert_eq!(
            row_layout(&[1 << 40, 1 << 40], -1).unwrap_err().rule,
            rule::SHAPE_OVERFLOW
        );
        // A zero dimension before the overflow keeps each half small.
        assert_eq!(
            row_layout(&[0, big, 3], -1),
            Ok(RowLayout {
                axis: 2,
                rows: 0,
                row_len: 3
            })
        );
        assert_eq!(
            row_layout(&[0, big], -1),
            Ok(RowLayout {
                axis: 1,
                rows: 0,
                row_len: big
            })
        );
    }

    #[test]
    fn broadcastable_param_shapes() {
        let n = [3, 4];
        for ok in [&[3, 4][..], &[4], &[1, 4], &[3, 1], &[1], &[1, 1], &[]] {
            assert_eq!(check_param_shape(ok, &n, "Scale"), Ok(()), "{ok:?}");
        }
        for bad in [&[4, 3][..], &[3], &[2, 4], &[1, 3, 4], &[12], &[5]] {
            let err = check_param_shape(bad, &n, "B").unwrap_err();
            assert_eq!(err.rule, rule::BROADCAST);
            assert_eq!(
                err.detail,
                format!("B has shape {bad:?}, X.shape[axis:] is [3, 4]")
            );
        }
        // Empty rows: a 1 broadcasts to 0, like numpy.
        assert_eq!(check_param_shape(&[1], &[0], "Scale"), Ok(()));
        assert_eq!(check_param_shape(&[0], &[0], "Scale"), Ok(()));
        assert!(check_param_shape(&[2], &[0], "Scale").is_err());
    }

    #[test]
    fn skip_shapes_line_up_with_rows() {
        let x = [2, 3, 4];
        assert_eq!(skip_rows(&[2, 3, 4], &x, 2), Ok(SkipRows::Rows(6)));
        assert_eq!(skip_rows(&[3, 4], &x, 2), Ok(SkipRows::Rows(3)));
        assert_eq!(skip_rows(&[1, 3, 4], &x, 2), Ok(SkipRows::Rows(3)));
        assert_eq!(skip_rows(&[4], &x, 2), Ok(SkipRows::Rows(1)));
        assert_eq!(skip_rows(&[1, 1, 4], &x, 2), Ok(SkipRows::Rows(1)));
        assert_eq!(skip_rows(&[3, 4], &x, 1), Ok(SkipRows::Rows(1)));
        // Not whole rows of X: expanded.
        assert_eq!(skip_rows(&[4], &x, 1), Ok(SkipRows::Expand));
        assert_eq!(skip_rows(&[2, 1, 4], &x, 2), Ok(SkipRows::Expand));
        assert_eq!(skip_rows(&[3, 1], &x, 2), Ok(SkipRows::Expand));
        assert_eq!(skip_rows(&[1], &x, 2), Ok(SkipRows::Expand));
        assert_eq!(skip_rows(&[], &x, 2), Ok(SkipRows::Expand));
        assert_eq!(skip_rows(&[1], &[2, 1], 1), Ok(SkipRows::Rows(1)));
        for bad in [&[2, 2, 4][..], &[5], &[1, 2, 3, 4]] {
            let err = skip_rows(bad, &x, 2).unwrap_err();
            assert_eq!(err.rule, rule::SKIP_BROADCAST);
            assert_eq!(
                err.detail,
                format!("Skip has shape {bad:?}, X has [2, 3, 4]")
            );
        }
        assert_eq!(check_bias_shape(&[4], &[4]), Ok(()));
        assert_eq!(
            check_bias_shape(&[3], &[4]).unwrap_err().rule,
            rule::BIAS_BROADCAST
        );
    }

    #[test]
    fn expand_param_broadcasts_to_one_row() {
        let n = [2, 3];
        assert_eq!(
            expand_param(&[1, 2, 3, 4, 5, 6], &[2, 3], &n),
            vec![1, 2, 3, 4, 5, 6]
        );
        assert_eq!(expand_param(&[1, 2, 3], &[3], &n), vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(
            expand_param(&[1, 2, 3], &[1, 3], &n),
            vec![1, 2, 3, 1, 2, 3]
        );
        assert_eq!(expand_param(&[7, 8], &[2, 1], &n), vec![7, 7, 7, 8, 8, 8]);
        assert_eq!(expand_param(&[9], &[1], &n), vec![9; 6]);
        assert_eq!(expand_param(&[9], &[], &n), vec![9; 6]);
        assert_eq!(
            expand_param(&[1, 2, 3, 4], &[2, 1, 2], &[2, 3, 2]),
            vec![1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]
        );
        assert_eq!(
            expand_param(&[1, 2], &[2, 1, 1], &[2, 2, 2]),
            vec![1, 1, 1, 1, 2, 2, 2, 2]
        );
        assert_eq!(expand_param::<u8>(&[5], &[1], &[0]), Vec::<u8>::new());
    }

    #[test]
    #[should_panic(expected = "not broadcastable")]
    fn expand_param_panics_on_bad_shape() {
        expand_param(&[1, 2], &[2], &[3]);
    }

    #[test]
    fn stats_shape_keeps_rank() {
        assert_eq!(stats_shape(&[2, 3, 4], 2), vec![2, 3, 1]);
        assert_eq!(stats_shape(&[2, 3, 4], 1), vec![2, 1, 1]);
        assert_eq!(stats_shape(&[2, 3, 4], 0), vec![1, 1, 1]);
        assert_eq!(stats_shape(&[7], 0), vec![1]);
    }
}
