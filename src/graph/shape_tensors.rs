//! What a shape tensor holds when it is computed in the graph: `Shape` slices, `Gather`s of
//! them, constants, `Concat`. Exporters with dynamic dimensions build reshape and expand
//! targets this way (the dynamo exporter restores a reduced statistic's dimensions with
//! `Reshape(v, Concat(Shape(v)[0:1], Shape(v)[1:2], [1]))`), and the matcher has to know
//! that such a target is exactly the shape it expects. Each entry is a known number or "axis
//! i of value t"; nothing is guessed.

use super::shapes::Dim;
use super::{GraphIndex, NodeId};
use crate::onnx::attr;

/// One entry of a shape tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DimRef {
    Known(i64),
    /// The size of axis `axis` of `value`.
    Of {
        value: String,
        axis: usize,
    },
}

/// The entries of a 1-D integer shape tensor, with the nodes that compute it.
#[derive(Debug, Clone, Default)]
pub struct ShapeContents {
    pub dims: Vec<DimRef>,
    pub nodes: Vec<NodeId>,
}

/// The contents of `value`, when every entry can be named.
pub fn contents(g: &GraphIndex<'_>, value: &str) -> Option<ShapeContents> {
    contents_with(g, value, &|v| g.shape(v).map(<[Dim]>::to_vec))
}

/// [`contents`], with the shapes of values from `shape` (shape inference asks while it runs,
/// before the index knows any).
pub fn contents_with(
    g: &GraphIndex<'_>,
    value: &str,
    shape: &dyn Fn(&str) -> Option<Vec<Dim>>,
) -> Option<ShapeContents> {
    let mut nodes = Vec::new();
    let mut budget = MAX_VISITS;
    let dims = walk(g, value, shape, &mut nodes, &mut budget)?;
    Some(ShapeContents { dims, nodes })
}

impl DimRef {
    /// This entry as a dimension: numbers as they are, an axis of a value as that value's
    /// declared or inferred dimension (a number or a symbolic name).
    pub fn resolve(&self, g: &GraphIndex<'_>) -> Dim {
        match self {
            DimRef::Known(v) => Dim::Known(*v),
            DimRef::Of { value, axis } => g
                .shape(value)
                .and_then(|s| s.get(*axis).cloned())
                .unwrap_or(Dim::Unknown),
        }
    }

    /// Whether this entry is certainly the dimension `d` (unknown dimensions never are).
    pub fn is(&self, g: &GraphIndex<'_>, d: &Dim) -> bool {
        self.resolve(g).same(d)
    }
}

/// Values looked at per question: shape chains are short, and a crafted graph of nested
/// `Concat`s must not make the walk exponential.
const MAX_VISITS: usize = 256;

fn walk(
    g: &GraphIndex<'_>,
    value: &str,
    shape_of: &dyn Fn(&str) -> Option<Vec<Dim>>,
    nodes: &mut Vec<NodeId>,
    budget: &mut usize,
) -> Option<Vec<DimRef>> {
    *budget = budget.checked_sub(1)?;
    if let Some(c) = g.constant(value) {
        return Some(c.as_ints()?.iter().map(|&v| DimRef::Known(v)).collect());
    }
    let (id, n) = g.producer_node(value)?;
    if !crate::onnx::is_standard(n) {
        return None;
    }
    let input = |i: usize| n.input.get(i).filter(|s| !s.is_empty());
    let dims = match n.op_type() {
        "Shape" => {
            let of = input(0)?;
            let rank = shape_of(of)?.len() as i64;
            let clamp = |v: i64| if v < 0 { v + rank } else { v }.clamp(0, rank);
            let start = clamp(attr::int(n, "start").unwrap_or(0));
            let end = clamp(attr::int(n, "end").unwrap_or(rank));
            (start..end)
                .map(|axis| DimRef::Of {
                    value: of.clone(),
                    axis: axis as usize,
                })
                .collect()
        }
        // A one-dimensional shape tensor keeps its entries through these (a scalar and a
        // one-element vector hold the same entry).
        "Identity" | "Squeeze" | "Unsqueeze" => walk(g, input(0)?, shape_of, nodes, budget)?,
        "Reshape" => {
            let inner = walk(g, input(0)?, shape_of, nodes, budget)?;
            let target = g.constant(input(1)?)?;
            let flat = match target.as_ints()? {
                [-1] => true,
                [n] => *n == inner.len() as i64,
                [] => inner.len() == 1,
                _ => false,
            };
            if !flat {
                return None;
            }
            inner
        }
        "Cast" => {
            let to = attr::int(n, "to")? as i32;
            if !matches!(to, crate::onnx::dtype::INT64 | crate::onnx::dtype::INT32) {
                return None;
            }
            walk(g, input(0)?, shape_of, nodes, budget)?
        }
        "Concat" => {
            if attr::int(n, "axis") != Some(0) && attr::int(n, "axis") != Some(-1) {
                return None;
            }
            let mut all = Vec::new();
            for i in n.input.iter().filter(|s| !s.is_empty()) {
                all.extend(walk(g, i, shape_of, nodes, budget)?);
            }
            all
        }
        "Gather" => {
            if attr::int(n, "axis").unwrap_or(0) != 0 {
                return None;
            }
            let inner = walk(g, input(0)?, shape_of, nodes, budget)?;
            let idx = g.constant(input(1)?)?;
            let len = inner.len() as i64;
            idx.as_ints()?
                .iter()
                .map(|&i| {
                    let p = if i < 0 { i + len } else { i };
                    (0..len).contains(&p).then(|| inner[p as usize].clone())
                })
                .collect::<Option<Vec<_>>>()?
        }
        "Slice" => {
            let inner = walk(g, input(0)?, shape_of, nodes, budget)?;
            let one = |i: usize| -> Option<Option<i64>> {
                match input(i) {
                    None => Some(None),
                    Some(v) => match g.constant(v)?.as_ints()? {
                        [x] => Some(Some(*x)),
                        _ => None,
                    },
                }
            };
            let (start, end) = (one(1)??, one(2)??);
            if one(3)?.is_some_and(|a| a != 0 && a != -1) || one(4)?.is_some_and(|s| s != 1) {
                return None;
            }
            let len = inner.len() as i64;
            let clamp = |v: i64| if v < 0 { v + len } else { v }.clamp(0, len) as usize;
            let (s, e) = (clamp(start), clamp(end));
            inner.get(s..e.max(s))?.to_vec()
        }
        // Element-wise over entries of one length (tf2onnx's einsum takes the broadcast batch
        // as `Max` of both operands' sizes): a size against itself, or numbers.
        "Max" | "Min" => {
            let parts = n
                .input
                .iter()
                .filter(|s| !s.is_empty())
                .map(|i| walk(g, i, shape_of, nodes, budget))
                .collect::<Option<Vec<_>>>()?;
            let len = parts.first()?.len();
            if parts.iter().any(|p| p.len() != len) {
                return None;
            }
            let size = |d: &DimRef| match d {
                DimRef::Known(v) => Dim::Known(*v),
                DimRef::Of { value, axis } => shape_of(value)
                    .and_then(|s| s.get(*axis).cloned())
                    .unwrap_or(Dim::Unknown),
            };
            (0..len)
                .map(|i| {
                    let sizes: Vec<Dim> = parts.iter().map(|p| size(&p[i])).collect();
                    if sizes.iter().all(|d| d.same(&sizes[0])) {
                        return Some(parts[0][i].clone());
                    }
                    let known = sizes
                        .iter()
                        .map(|d| match d {
                            Dim::Known(v) => Some(*v),
                            _ => None,
                        })
                        .collect::<Option<Vec<i64>>>()?;
                    let pick = if n.op_type() == "Max" {
                        known.iter().max()
                    } else {
                        known.iter().min()
                    };
                    pick.map(|&v| DimRef::Known(v))
                })
                .collect::<Option<Vec<_>>>()?
        }
        _ => return None,
    };
    nodes.push(id);
    Some(dims)
}
