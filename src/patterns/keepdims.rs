//! Statistics reduced without `keepdims` and given their dimensions back. PyTorch's dynamo
//! exporter writes `std`, `var` and `std_mean` this way: the reduction drops the axis, then a
//! `Reshape` to a constant (static shapes) or to `Concat(Shape(v)[0:1], …, [1])` (dynamic
//! shapes) puts a 1 back, and with dynamic shapes an `Expand` broadcasts to a shape read from
//! elsewhere, which changes nothing. Other writers use `Unsqueeze`. Read backwards from the
//! statistic's consumer; checked against the reduction's input and axes once those are known.

use super::canon::{Axes, Canon};
use crate::graph::shape_tensors::{self, DimRef};
use crate::graph::NodeId;

/// The layers found above a reduced statistic (none when it was used as reduced).
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The value under the layers.
    pub inner: String,
    /// The layer nodes (and casts crossed between them).
    pub nodes: Vec<NodeId>,
    restore: Option<Restore>,
    /// The target of a final `Expand`.
    expand: Option<String>,
}

#[derive(Debug, Clone)]
enum Restore {
    /// `Reshape(input, target)`, the target constant or computed from shapes.
    Reshape { input: String, target: String },
    /// `Unsqueeze` at these axes.
    Unsqueeze(Vec<i64>),
}

/// Looks through `[Expand] ([Reshape] | [Unsqueeze])` above `value`.
pub fn strip(c: &Canon<'_, '_>, value: &str) -> Restored {
    let (mut v, mut nodes) = c.origin(value);
    let mut expand = None;
    if let Some((id, e)) = c.op(&v, "Expand") {
        if let (Some(input), Some(target)) = (e.input.first(), e.input.get(1)) {
            nodes.push(id);
            expand = Some(target.clone());
            let (r, crossed) = c.origin(input);
            nodes.extend(crossed);
            v = r;
        }
    }
    let mut restore = None;
    if let Some((id, r)) = c.op(&v, "Reshape") {
        if let (Some(input), Some(target)) = (r.input.first(), r.input.get(1)) {
            nodes.push(id);
            restore = Some(Restore::Reshape {
                input: input.clone(),
                target: target.clone(),
            });
            let (r, crossed) = c.origin(input);
            nodes.extend(crossed);
            v = r;
        }
    } else if let Some((id, u)) = c.op(&v, "Unsqueeze") {
        let axes = c.listed_axes(u);
        if let (Some(axes), Some(input)) = (axes, u.input.first()) {
            nodes.push(id);
            restore = Some(Restore::Unsqueeze(axes));
            let (r, crossed) = c.origin(input);
            nodes.extend(crossed);
            v = r;
        }
    }
    Restored {
        inner: v,
        nodes,
        restore,
        expand,
    }
}

impl Restored {
    /// Whether any layer was found.
    pub fn any(&self) -> bool {
        self.restore.is_some() || self.expand.is_some()
    }

    /// Whether the statistic of `x` over `axes` under these layers has the keepdims shape, and
    /// the same values, as `ReduceMean(x, axes, keepdims=1)` would: dropped dimensions come back
    /// exactly where they were (`kept`: whether the reduction kept them itself), and an
    /// `Expand` only repeats along dimensions of size 1 up to `x`'s size.
    pub fn restores(&self, c: &Canon<'_, '_>, x: &str, axes: &Axes, kept: bool) -> bool {
        let restored = match &self.restore {
            None => kept,
            Some(Restore::Unsqueeze(_)) if kept => false,
            Some(r) => restores_keepdims(c, x, axes, r),
        };
        restored
            && self
                .expand
                .as_ref()
                .is_none_or(|t| broadcasts_into(c, x, t))
    }
}

fn restores_keepdims(c: &Canon<'_, '_>, x: &str, axes: &Axes, restore: &Restore) -> bool {
    let Some(rank) = c.g.rank(x) else {
        return false;
    };
    let r = rank as i64;
    let reduced = |i: usize| axes.axes.contains(&(i as i64)) || axes.axes.contains(&(i as i64 - r));
    match restore {
        Restore::Unsqueeze(u) => Axes::new(u, Some(rank)).is_some_and(|u| u.same_as(axes)),
        Restore::Reshape { input, target } => {
            let Some(t) = shape_tensors::contents(c.g, target) else {
                return false;
            };
            let x_shape = c.g.shape(x).unwrap_or_default();
            // An entry may name the reshaped value's own axis: that value has the kept
            // dimensions of x in order, as long as its rank says nothing was broadcast in.
            let kept_rank = (0..rank).filter(|&i| !reduced(i)).count();
            let own_axis = |d: &DimRef, k: usize| {
                matches!(d, DimRef::Of { value, axis } if value == input && *axis == k)
                    && c.g.rank(input) == Some(kept_rank)
            };
            let mut k = 0;
            t.dims.len() == rank
                && t.dims.iter().enumerate().all(|(i, d)| {
                    if reduced(i) {
                        return *d == DimRef::Known(1);
                    }
                    let same = own_axis(d, k) || x_shape.get(i).is_some_and(|xd| d.is(c.g, xd));
                    k += 1;
                    same
                })
        }
    }
}

/// Whether each entry of `target` is 1 or the size of `x` on that axis (aligned right).
fn broadcasts_into(c: &Canon<'_, '_>, x: &str, target: &str) -> bool {
    let (Some(shape), Some(t)) = (c.g.shape(x), shape_tensors::contents(c.g, target)) else {
        return false;
    };
    let Some(offset) = shape.len().checked_sub(t.dims.len()) else {
        return false;
    };
    t.dims
        .iter()
        .enumerate()
        .all(|(i, d)| *d == DimRef::Known(1) || d.is(c.g, &shape[offset + i]))
}
