//! Canonical reading of the graph for the matcher: look through what does not change meaning
//! (Identity, precision Casts between float types), read constants as numbers whatever node holds
//! them, treat Add/Mul as commutative, `Div(1, x)` as `Reciprocal(x)`, `Pow(d, 2)` as `Mul(d, d)`,
//! normalise reduction axes (attribute or opset-18 input, either sign, `GlobalAveragePool`), and
//! recognise "a centred value" `x - mean(x)` by meaning, so duplicated `Sub`/`ReduceMean` nodes are
//! the same thing.

use super::keepdims;
use crate::graph::{Dim, GraphIndex, NodeId};
use crate::onnx::attr;
use crate::onnx::dtype;
use crate::onnx::proto::NodeProto;
use crate::onnx::tensor::decode;

/// Normalised reduction axes: sorted and deduplicated, positive when the rank is known, else the
/// negative form (only all-negative axes can be compared without a rank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Axes {
    pub axes: Vec<i64>,
    pub rank: Option<usize>,
}

impl Axes {
    pub fn new(raw: &[i64], rank: Option<usize>) -> Option<Axes> {
        if raw.is_empty() {
            return None;
        }
        let mut axes: Vec<i64> = match rank {
            Some(r) => {
                let r = r as i64;
                raw.iter()
                    .map(|&a| {
                        let p = if a < 0 { a + r } else { a };
                        (0..r).contains(&p).then_some(p)
                    })
                    .collect::<Option<_>>()?
            }
            None if raw.iter().all(|&a| a < 0) => raw.to_vec(),
            None => return None,
        };
        axes.sort_unstable();
        axes.dedup();
        Some(Axes { axes, rank })
    }

    /// The ops-spec `axis` when the axes are one contiguous run ending at the last axis (what
    /// `ai.adanorm` ops and ONNX LayerNormalization can express), as a negative number.
    pub fn trailing_axis(&self) -> Option<i64> {
        let n = self.axes.len() as i64;
        let last = *self.axes.last()?;
        let contiguous = self.axes.windows(2).all(|w| w[1] == w[0] + 1);
        let ends_last = match self.rank {
            Some(r) => last == r as i64 - 1,
            None => last == -1,
        };
        (contiguous && ends_last).then_some(-n)
    }

    /// The normalised axes in negative form, when it can be known.
    pub fn negative(&self) -> Vec<i64> {
        match self.rank {
            Some(r) => self.axes.iter().map(|&a| a - r as i64).collect(),
            None => self.axes.clone(),
        }
    }

    /// Same axes, comparing across values whose rank may be known on only one side.
    pub fn same_as(&self, other: &Axes) -> bool {
        match (self.rank, other.rank) {
            (Some(a), Some(b)) if a != b => false,
            (Some(_), Some(_)) => self.axes == other.axes,
            _ => self.negative() == other.negative(),
        }
    }
}

/// A reduction over `axes` of `input` that keeps dimensions (`ReduceMean` or
/// `GlobalAveragePool`).
#[derive(Debug, Clone)]
pub struct MeanOf {
    /// The nodes computing the mean (the reduction, a division by the count, layers giving
    /// dropped dimensions back).
    pub nodes: Vec<NodeId>,
    pub input: String,
    pub axes: Axes,
    /// The reduction squares its input itself (`ReduceSumSquare(d) / N`): a mean of `input²`.
    pub squared: bool,
}

/// What a sum is divided by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Divisor {
    /// A constant (the caller checks it against the row length).
    Number(f64),
    /// `Size(x) / Size(sum)` (paddle2onnx): the row length whatever the dimensions.
    RowLength,
    /// The same less one (`Max(N - 1, 0)`): an unbiased variance's divisor.
    RowLengthMinusOne,
}

/// `x - mean(x)`: the centring layer.
#[derive(Debug, Clone)]
pub struct Centred {
    /// `x` with Identity and precision Casts looked through.
    pub x: String,
    pub axes: Axes,
    /// The Sub, the mean, and any casts crossed.
    pub nodes: Vec<NodeId>,
    /// Rows whose elements are all equal get exactly 0 ([`Canon::constant_row_guarded`]).
    pub constant_row_guard: bool,
}

/// Whether every value of float type `from` is exactly a value of float type `to` (mantissa
/// and exponent range both at least as wide).
pub fn holds_exactly(to: i32, from: i32) -> bool {
    // (mantissa bits, exponent bits)
    let bits = |t: i32| match t {
        dtype::FLOAT16 => Some((10, 5)),
        dtype::BFLOAT16 => Some((7, 8)),
        dtype::FLOAT => Some((23, 8)),
        dtype::DOUBLE => Some((52, 11)),
        _ => None,
    };
    match (bits(to), bits(from)) {
        (Some((mt, et)), Some((mf, ef))) => mt >= mf && et >= ef,
        _ => false,
    }
}

/// The two operands of a binary node: `None` unless it has exactly two non-empty inputs.
pub fn operands(node: &NodeProto) -> Option<(&str, &str)> {
    match node.input.as_slice() {
        [a, b] if !a.is_empty() && !b.is_empty() => Some((a, b)),
        _ => None,
    }
}

/// A node's `axes` as written: an attribute before opset 13 (18 for most reductions), the
/// second input after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AxesArg {
    Listed(Vec<i64>),
    /// Neither attribute nor input: the op's default (every axis, for a reduction).
    Absent,
}

/// `Cast(ReduceProd(Gather(Shape(x), axes)))`: the number of elements of `x` over `axes`, as
/// exporters compute a row length from a dynamic shape.
#[derive(Debug, Clone)]
pub struct ElementCount {
    /// The tensor whose shape is read (precision casts looked through: they keep the shape).
    pub x: String,
    /// The gathered axes, as written.
    pub axes: Vec<i64>,
    pub nodes: Vec<NodeId>,
}

pub struct Canon<'g, 'm> {
    pub g: &'g GraphIndex<'m>,
}

impl<'g, 'm> Canon<'g, 'm> {
    pub fn new(g: &'g GraphIndex<'m>) -> Self {
        Canon { g }
    }

    /// The producer of `value` when it is a standard-domain node with this op type.
    /// Copies in between are looked through ([`Canon::copied_value`]: `Identity`, which
    /// paddle2onnx writes after almost every op; float Casts, which float16 converters put
    /// around each op they keep in float32; a QDQ pair); `cover` takes those inside a match into
    /// it and judges the roundings they make.
    pub fn op(&self, value: &str, op_type: &str) -> Option<(NodeId, &'m NodeProto)> {
        let mut v = value;
        for _ in 0..8 {
            let (id, node) = self.g.producer_node(v)?;
            let std_domain = crate::onnx::is_standard(node);
            if !std_domain {
                return None;
            }
            if node.op_type() == op_type {
                return Some((id, node));
            }
            v = self.copied_value(node)?;
        }
        None
    }

    /// The value `node` passes on as it is, or rounded to another precision: `Identity`, a
    /// Cast between float types, or the `DequantizeLinear` of a `QuantizeLinear` (a round trip
    /// through 8-bit integers), whose input it returns. The caller judges the rounding.
    pub fn copied_value(&self, node: &'m NodeProto) -> Option<&'m String> {
        if !crate::onnx::is_standard(node) {
            return None;
        }
        let input = node.input.first().filter(|i| !i.is_empty())?;
        match node.op_type() {
            "Identity" => Some(input),
            "Cast" => {
                let to = attr::int(node, "to")? as i32;
                let from = self.g.elem_type(input);
                (dtype::is_float(to) && from.is_none_or(dtype::is_float)).then_some(input)
            }
            "DequantizeLinear" => {
                let (_, q) = self.g.producer_node(input)?;
                let quantised = crate::onnx::is_standard(q) && q.op_type() == "QuantizeLinear";
                quantised
                    .then(|| q.input.first().filter(|i| !i.is_empty()))
                    .flatten()
            }
            _ => None,
        }
    }

    /// Forward from `value` through copies ([`Canon::copied_value`]) that are its only reader,
    /// one after another (not past a graph output): the value they end in and the nodes
    /// crossed. The caller takes them only where a node it wants reads what they end in.
    pub fn past_copies(&self, value: &str) -> (String, Vec<NodeId>) {
        let mut v = value.to_string();
        let mut crossed = Vec::new();
        while let [only] = self.g.consumers(&v) {
            if self.g.is_graph_output(&v) {
                break;
            }
            let n = self.g.node(*only);
            // A QuantizeLinear is crossed together with the one DequantizeLinear reading it.
            let (ids, out) = match n.op_type() {
                "QuantizeLinear" if crate::onnx::is_standard(n) => {
                    let Some(q_out) = n.output.first() else { break };
                    let [dq] = self.g.consumers(q_out) else { break };
                    let dq_node = self.g.node(*dq);
                    if self.g.is_graph_output(q_out) || self.copied_value(dq_node) != Some(&v) {
                        break;
                    }
                    (vec![*only, *dq], dq_node.output.first())
                }
                _ if self.copied_value(n) == Some(&v) => (vec![*only], n.output.first()),
                _ => break,
            };
            let Some(out) = out.filter(|o| !o.is_empty()) else {
                break;
            };
            crossed.extend(ids);
            v = out.clone();
        }
        (v, crossed)
    }

    /// `op_type`'s node making `value` (as [`Canon::op`]) when it has exactly two operands, with
    /// them.
    pub fn binary(
        &self,
        value: &str,
        op_type: &str,
    ) -> Option<(NodeId, &'m NodeProto, &'m str, &'m str)> {
        let (id, n) = self.op(value, op_type)?;
        let (a, b) = operands(n)?;
        Some((id, n, a, b))
    }

    /// A node's axes from its `axes` attribute or its second input; `None` when that input is
    /// not a constant list of integers.
    pub fn axes_arg(&self, node: &NodeProto) -> Option<AxesArg> {
        if let Some(a) = attr::ints(node, "axes") {
            return Some(AxesArg::Listed(a.to_vec()));
        }
        match node.input.get(1).filter(|s| !s.is_empty()) {
            Some(v) => Some(AxesArg::Listed(self.g.constant(v)?.as_ints()?.to_vec())),
            None => Some(AxesArg::Absent),
        }
    }

    /// A node's axes when it lists them (see [`Canon::axes_arg`]).
    pub fn listed_axes(&self, node: &NodeProto) -> Option<Vec<i64>> {
        match self.axes_arg(node)? {
            AxesArg::Listed(a) => Some(a),
            AxesArg::Absent => None,
        }
    }

    /// Whether `node` is a `Shape` of its input's whole shape (no slice, or one that starts at
    /// 0 and ends at or past the last axis).
    pub fn is_whole_shape(&self, node: &NodeProto) -> bool {
        if node.op_type() != "Shape" {
            return false;
        }
        let rank = node.input.first().and_then(|i| self.g.rank(i));
        let start_ok = match attr::int(node, "start") {
            None | Some(0) => true,
            Some(s) => rank.is_some_and(|r| s < 0 && s + r as i64 <= 0),
        };
        let end_ok = match attr::int(node, "end") {
            None => true,
            Some(e) => rank.is_some_and(|r| e >= r as i64),
        };
        start_ok && end_ok
    }

    /// `value` is `x`'s whole shape: `Shape(x)` (through Casts and Identity), or a constant equal
    /// to `x`'s fully known shape. Returns the nodes computing it.
    pub fn shape_of(&self, value: &str, x: &str) -> Option<Vec<NodeId>> {
        if let Some(v) = self.g.constant(value) {
            let known: Option<Vec<i64>> = self.g.shape(x)?.iter().map(|d| d.known()).collect();
            return (v.as_ints()? == known?.as_slice()).then(Vec::new);
        }
        let mut nodes = Vec::new();
        let mut v = value.to_string();
        for _ in 0..4 {
            let (id, node) = self.g.producer_node(&v)?;
            if !crate::onnx::is_standard(node) {
                return None;
            }
            nodes.push(id);
            match node.op_type() {
                "Cast" | "Identity" => v = node.input.first()?.clone(),
                "Shape" => {
                    let of_x = node.input.first().map(String::as_str) == Some(x);
                    return (of_x && self.is_whole_shape(node)).then_some(nodes);
                }
                _ => return None,
            }
        }
        None
    }

    /// `value` as an [`ElementCount`]: `ReduceProd(Gather(Shape(x), axes))` along axis 0 of the
    /// whole shape, behind up to three Casts/CastLikes (to the model's type, in float16 models
    /// through float32 first).
    pub fn element_count(&self, value: &str) -> Option<ElementCount> {
        let mut v = value.to_string();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let Some((id, n)) = self.op(&v, "Cast").or_else(|| self.op(&v, "CastLike")) else {
                break;
            };
            nodes.push(id);
            v = n.input.first()?.clone();
        }
        let (prod_id, prod) = self.op(&v, "ReduceProd")?;
        let (gather_id, gather) = self.op(prod.input.first()?, "Gather")?;
        if attr::int(gather, "axis").unwrap_or(0) != 0 {
            return None;
        }
        let (shape_id, shape) = self.op(gather.input.first()?, "Shape")?;
        if !self.is_whole_shape(shape) {
            return None;
        }
        let axes = self.g.constant(gather.input.get(1)?)?.as_ints()?.to_vec();
        let (x, _) = self.origin(shape.input.first()?);
        nodes.extend([prod_id, gather_id, shape_id]);
        Some(ElementCount { x, axes, nodes })
    }

    /// Looks through Identity, Casts between float types and the exact no-ops `Mul(v, 1)` and
    /// `Add(v, 0)` (paddle2onnx's `scale` op with its defaults), returning the value `value`
    /// originates from and the nodes crossed. (The matcher's "root" is the square root.)
    pub fn origin(&self, value: &str) -> (String, Vec<NodeId>) {
        self.walk_back(value, 8, |node| self.origin_step(node))
    }

    /// The input `origin` follows through `node`, if it passes it.
    pub fn origin_step(&self, node: &'m NodeProto) -> Option<&'m String> {
        match node.op_type() {
            "Identity" => node.input.first(),
            "Cast" => {
                let to = attr::int(node, "to").unwrap_or(0) as i32;
                let input = node.input.first()?;
                let from = self.g.elem_type(input);
                if !dtype::is_float(to) || !from.is_none_or(dtype::is_float) {
                    return None;
                }
                let exact = from.is_some_and(|f| holds_exactly(to, f));
                (exact || !self.widened_again(node)).then_some(input)
            }
            "Mul" => self.operand_beside_neutral(node, 1.0),
            "Add" => self.operand_beside_neutral(node, 0.0),
            _ => None,
        }
    }

    /// Whether a rounding Cast's result is cast back up (`float32 → float16 → float32`): the
    /// round trip rounded the value, so the wider value before it is not where it originates
    /// (a LayerNorm of it is not the LayerNorm of the wider value). A widening Cast is crossed
    /// to the rounded value; the rounding Cast is not.
    fn widened_again(&self, narrowing: &NodeProto) -> bool {
        let Some(out) = narrowing.output.first() else {
            return false;
        };
        let narrow = attr::int(narrowing, "to").unwrap_or(0) as i32;
        self.g.consumers(out).iter().any(|&id| {
            let n = self.g.node(id);
            n.op_type() == "Cast"
                && attr::int(n, "to")
                    .is_some_and(|to| to as i32 != narrow && holds_exactly(to as i32, narrow))
        })
    }

    /// Walks back from `value` through the producers of standard ops for which `step` names
    /// the input to follow, at most `limit` of them: the value reached and the nodes crossed.
    pub fn walk_back(
        &self,
        value: &str,
        limit: usize,
        step: impl Fn(&'m NodeProto) -> Option<&'m String>,
    ) -> (String, Vec<NodeId>) {
        let mut v = value.to_string();
        let mut crossed = Vec::new();
        for _ in 0..limit {
            let Some((id, node)) = self.g.producer_node(&v) else {
                break;
            };
            let next = crate::onnx::is_standard(node)
                .then(|| step(node))
                .flatten()
                .filter(|i| !i.is_empty());
            let Some(next) = next else {
                break;
            };
            crossed.push(id);
            v = next.clone();
        }
        (v, crossed)
    }

    /// For `Mul`/`Add`, the operand beside a one-element constant equal to `neutral` (1 or 0)
    /// that cannot broadcast the result to a higher rank.
    fn operand_beside_neutral(&self, node: &'m NodeProto, neutral: f64) -> Option<&'m String> {
        if node.input.len() != 2 {
            return None;
        }
        let at = (0..2).find(|&i| self.scalar(&node.input[i]) == Some(neutral))?;
        let other = &node.input[1 - at];
        let k_rank = self.g.constant(&node.input[at])?.dims.len();
        (k_rank == 0 || self.g.rank(other).is_some_and(|r| r >= k_rank)).then_some(other)
    }

    /// The float Cast making `value` when only one node reads it (paddle2onnx's float16
    /// converter casts each ReduceMean's input to float32): it belongs with that reader.
    fn widening_cast(&self, value: &str) -> Option<NodeId> {
        let (id, n) = self.op(value, "Cast")?;
        let to = attr::int(n, "to")? as i32;
        let from = n.input.first().and_then(|i| self.g.elem_type(i));
        let sole = self.g.consumers(value).len() == 1 && !self.g.is_graph_output(value);
        (sole && dtype::is_float(to) && from.is_none_or(dtype::is_float)).then_some(id)
    }

    /// Forward through `Identity` nodes that are `value`'s only reader, one after another (not
    /// past a graph output): the value they end in and the nodes crossed.
    pub fn past_identities(&self, value: &str) -> (String, Vec<NodeId>) {
        let mut v = value.to_string();
        let mut crossed = Vec::new();
        while let [only] = self.g.consumers(&v) {
            let n = self.g.node(*only);
            if n.op_type() != "Identity"
                || !crate::onnx::is_standard(n)
                || self.g.is_graph_output(&v)
            {
                break;
            }
            let Some(out) = n.output.first() else { break };
            crossed.push(*only);
            v = out.clone();
        }
        (v, crossed)
    }

    /// The numeric value of a one-element float or integer constant.
    pub fn scalar(&self, value: &str) -> Option<f64> {
        self.g.constant(value)?.scalar_f64()
    }

    pub fn is_constant(&self, value: &str) -> bool {
        self.g.constants.is_constant(self.g, value)
    }

    /// For a two-input node, the operand beside `value` (compared by name, nothing looked
    /// through): how commutative ops are read. `None` when `value` is not an operand or the node
    /// has not exactly two inputs.
    pub fn other_operand(&self, node: &'m NodeProto, value: &str) -> Option<&'m str> {
        let (a, b) = operands(node)?;
        if a == value {
            Some(b)
        } else if b == value {
            Some(a)
        } else {
            None
        }
    }

    /// `ReduceMean(x, axes, keepdims=1)` or `GlobalAveragePool(x)` (axes 2.. of a known rank).
    pub fn mean_of(&self, value: &str) -> Option<MeanOf> {
        self.reduction(value)
            .filter(|(m, kept)| *kept && !m.squared)
            .map(|(m, _)| m)
    }

    /// A mean like [`Canon::mean_of`], with whether it keeps the reduced dimensions: a
    /// `ReduceMean`, a `GlobalAveragePool`, or a `ReduceSum` divided by the row length; one
    /// that dropped them and got them back (`keepdims`) keeps them.
    pub fn reduction(&self, value: &str) -> Option<(MeanOf, bool)> {
        // Precision casts around the reduction (paddle2onnx's float16 converter computes each
        // ReduceMean in float32 between Casts) are looked through, as everywhere.
        let (value, crossed) = self.origin(value);
        let layers = keepdims::strip(self, &value);
        let (mut mean, kept) = if !layers.any() {
            self.bare_reduction(&value)?
        } else {
            let (mut mean, kept) = self.bare_reduction(&layers.inner)?;
            if !layers.restores(self, &mean.input, &mean.axes, kept) {
                return None;
            }
            mean.nodes.extend(layers.nodes);
            (mean, true)
        };
        mean.nodes.extend(crossed);
        Some((mean, kept))
    }

    fn bare_reduction(&self, value: &str) -> Option<(MeanOf, bool)> {
        if let Some((mean, count, kept)) = self.sum_divided(value) {
            let is_mean = match count {
                Divisor::Number(n) => self.row_length(&mean.input, &mean.axes) == Some(n),
                Divisor::RowLength => true,
                Divisor::RowLengthMinusOne => false,
            };
            return is_mean.then_some((mean, kept));
        }
        if let Some((id, node)) = self.op(value, "ReduceMean") {
            let input = node.input.first()?.clone();
            let kept = attr::int(node, "keepdims").unwrap_or(1) == 1;
            let raw: Vec<i64> = match self.axes_arg(node)? {
                AxesArg::Listed(a) => a,
                // No axes: every axis (unless noop_with_empty_axes makes it the identity).
                AxesArg::Absent => {
                    if attr::int(node, "noop_with_empty_axes").unwrap_or(0) != 0 {
                        return None;
                    }
                    let r = self.g.rank(&input)?;
                    (0..r as i64).collect()
                }
            };
            let axes = Axes::new(&raw, self.g.rank(&input))?;
            let mut nodes = vec![id];
            nodes.extend(self.widening_cast(&input));
            return Some((
                MeanOf {
                    nodes,
                    input,
                    axes,
                    squared: false,
                },
                kept,
            ));
        }
        if let Some((id, node)) = self.op(value, "GlobalAveragePool") {
            let input = node.input.first()?.clone();
            let r = self.g.rank(&input)?;
            if r < 3 {
                return None;
            }
            let axes = Axes::new(&(2..r as i64).collect::<Vec<_>>(), Some(r))?;
            return Some((
                MeanOf {
                    nodes: vec![id],
                    input,
                    axes,
                    squared: false,
                },
                true,
            ));
        }
        None
    }

    /// `ReduceSum(x, axes) / d` or `ReduceSum(x, axes) * (1/d)` for a constant `d` (or
    /// `ReduceSumSquare`, flagged `squared`), the sum's
    /// dropped dimensions possibly given back in between (`torch.std_mean`/`var_mean` through
    /// the dynamo exporter): the sum as a mean over `axes`, `d`, and whether it keeps the
    /// reduced dimensions. Callers check `d` (the row length, or one less for an unbiased
    /// variance).
    pub fn sum_divided(&self, value: &str) -> Option<(MeanOf, Divisor, bool)> {
        // A divisor computed from element counts is read once the sum is known.
        let mut counted: Option<&str> = None;
        let (id, node, count) = if let Some((id, n)) = self.op(value, "Div") {
            let d = n.input.get(1)?;
            match self.scalar(d) {
                Some(v) => (id, n, v),
                None => {
                    counted = Some(d);
                    (id, n, 1.0)
                }
            }
        } else {
            let (id, n) = self.op(value, "Mul")?;
            if n.input.len() != 2 {
                return None;
            }
            let at = (0..2).find(|&i| self.scalar(&n.input[i]).is_some())?;
            (id, n, 1.0 / self.scalar(&n.input[at])?)
        };
        if !(count.is_finite() && count > 0.0) {
            return None;
        }
        // `* (1/N)` in float32 inverts to N only approximately (1/768 → 767.99994).
        let count = if (count - count.round()).abs() <= 1e-4 * count {
            count.round()
        } else {
            count
        };
        let summed = match node.op_type() {
            "Div" => node.input.first()?,
            _ => node.input.iter().find(|v| self.scalar(v).is_none())?,
        };
        let layers = keepdims::strip(self, summed);
        // `ReduceSumSquare` (jax2onnx's `jnp.var`, Flax's slow variance) sums the squares itself.
        let (sum_id, sum, squared) = match self.op(&layers.inner, "ReduceSum") {
            Some((id, n)) => (id, n, false),
            None => {
                let (id, n) = self.op(&layers.inner, "ReduceSumSquare")?;
                (id, n, true)
            }
        };
        let input = sum.input.first()?.clone();
        let kept = attr::int(sum, "keepdims").unwrap_or(1) == 1;
        let raw = self.listed_axes(sum)?;
        let axes = Axes::new(&raw, self.g.rank(&input))?;
        let kept = if layers.any() {
            if !layers.restores(self, &input, &axes, kept) {
                return None;
            }
            true
        } else {
            kept
        };
        let mut nodes = vec![sum_id];
        nodes.extend(layers.nodes);
        nodes.push(id);
        let count = match counted {
            None => Divisor::Number(count),
            Some(d) => {
                let (divisor, chain) = self.row_length_divisor(d, &sum.output[0], &input)?;
                nodes.extend(chain);
                divisor
            }
        };
        Some((
            MeanOf {
                nodes,
                input,
                axes,
                squared,
            },
            count,
            kept,
        ))
    }

    /// `Size(a) / Size(sum)` with `a` shaped as the sum's input (each size through Casts and
    /// Identity), optionally less one and clamped at zero (`Max(N - 1, 0)`): paddle2onnx's row
    /// count, exact whatever the dimensions. Returns it with the nodes computing it.
    fn row_length_divisor(
        &self,
        value: &str,
        sum_out: &str,
        sum_input: &str,
    ) -> Option<(Divisor, Vec<NodeId>)> {
        // The count is one number: the rank a neutral `Mul(·, [1])` would add does not matter.
        let origin = |v: &str| {
            self.walk_back(v, 16, |n| {
                let neutral_mul = (n.op_type() == "Mul" && n.input.len() == 2)
                    .then(|| (0..2).find(|&i| self.scalar(&n.input[i]) == Some(1.0)))
                    .flatten()
                    .map(|at| &n.input[1 - at]);
                self.origin_step(n).or(neutral_mul)
            })
        };
        let (mut v, mut nodes) = origin(value);
        if let Some((id, n)) = self.op(&v, "Max").filter(|(_, n)| n.input.len() == 2) {
            let at = (0..2).find(|&i| self.scalar(&n.input[i]).is_some_and(|c| c <= 0.0))?;
            let (inner, crossed) = origin(&n.input[1 - at]);
            nodes.push(id);
            nodes.extend(crossed);
            v = inner;
        }
        let mut minus_one = false;
        if let Some((id, n)) = self.op(&v, "Add").filter(|(_, n)| n.input.len() == 2) {
            let at = (0..2).find(|&i| self.scalar(&n.input[i]) == Some(-1.0))?;
            let (inner, crossed) = origin(&n.input[1 - at]);
            nodes.push(id);
            nodes.extend(crossed);
            v = inner;
            minus_one = true;
        }
        let (div_id, div) = self.op(&v, "Div")?;
        nodes.push(div_id);
        // Size(t) through Casts and Identity nodes: t and the nodes.
        let size_of = |s: &str, nodes: &mut Vec<NodeId>| -> Option<String> {
            let mut s = s.to_string();
            for _ in 0..8 {
                let (id, n) = self.g.producer_node(&s)?;
                nodes.push(id);
                match n.op_type() {
                    "Cast" | "Identity" => s = n.input.first()?.clone(),
                    "Size" => return n.input.first().cloned(),
                    _ => return None,
                }
            }
            None
        };
        let all = size_of(div.input.first()?, &mut nodes)?;
        let rows = size_of(div.input.get(1)?, &mut nodes)?;
        if self.origin(&rows).0 != sum_out {
            return None;
        }
        let same_dims =
            |a: &[Dim], b: &[Dim]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y));
        if !same_dims(self.g.shape(&all)?, self.g.shape(sum_input)?) {
            return None;
        }
        let divisor = if minus_one {
            Divisor::RowLengthMinusOne
        } else {
            Divisor::RowLength
        };
        Some((divisor, nodes))
    }

    /// The number of elements of a row of `x` over `axes`, when its dimensions are known.
    pub fn row_length(&self, x: &str, axes: &Axes) -> Option<f64> {
        let shape = self.g.shape(x)?;
        let rank = shape.len() as i64;
        axes.axes
            .iter()
            .map(|&a| {
                let p = if a < 0 { a + rank } else { a };
                shape.get(p as usize)?.known().map(|d| d as f64)
            })
            .product()
    }

    /// `value` (through casts) is `Sub(x, mean(x))` with the mean over `x` itself.
    pub fn centred(&self, value: &str) -> Option<Centred> {
        let (v, nodes) = self.origin(value);
        if let Some(mut guarded) = self.constant_row_guarded(&v) {
            guarded.nodes.extend(nodes);
            return Some(guarded);
        }
        self.centred_at(&v, nodes)
    }

    /// `Where(constant_row, 0, x − mean(x))`, the centring jax2onnx writes for Flax's
    /// `use_fast_variance=False`: a row whose elements are all equal (`ReduceMin(x) ==
    /// ReduceMax(x)` over the same axes) and whose mean is finite (`mean − mean == 0`) is
    /// centred to exactly 0. One fused node computes `x − mean` there, which rounding of the
    /// mean can make non-zero: the match is a LayerNorm its recogniser reports, not rewritable.
    pub fn constant_row_guarded(&self, value: &str) -> Option<Centred> {
        let (where_id, w) = self.op(value, "Where")?;
        let (cond, zero, inner) = (w.input.first()?, w.input.get(1)?, w.input.get(2)?);
        let fill = filled_with(self, zero, 0.0)?;
        let (inner, crossed) = self.origin(inner);
        let mut cen = self.centred_at(&inner, crossed)?;
        let (and_id, and) = self.op(cond, "And")?;
        let (a, b) = operands(and)?;
        // One side compares the row's extrema, the other tests the mean for finiteness.
        let test = |side: &str, extrema: bool| -> Option<Vec<NodeId>> {
            let (id, eq) = self.op(side, "Equal")?;
            let (l, r) = operands(eq)?;
            let mut nodes = match extrema {
                true => self.equal_extrema(l, r, &cen)?,
                false => self.finite_test(l, r)?,
            };
            nodes.push(id);
            Some(nodes)
        };
        let tests = [(a, b), (b, a)].into_iter().find_map(|(e, f)| {
            let mut nodes = test(e, true)?;
            nodes.extend(test(f, false)?);
            Some(nodes)
        })?;
        cen.nodes.extend([where_id, and_id]);
        cen.nodes.extend(tests);
        cen.nodes.extend(fill);
        cen.constant_row_guard = true;
        Some(cen)
    }

    /// `ReduceMin(x)` and `ReduceMax(x)` (either order), both over `cen`'s axes keeping them.
    fn equal_extrema(&self, l: &str, r: &str, cen: &Centred) -> Option<Vec<NodeId>> {
        let reduced = |v: &str, op: &str| -> Option<NodeId> {
            let (id, n) = self.op(v, op)?;
            let kept = attr::int(n, "keepdims").unwrap_or(1) == 1;
            let axes = Axes::new(&self.listed_axes(n)?, self.g.rank(n.input.first()?))?;
            let (x, _) = self.origin(n.input.first()?);
            (kept && x == cen.x && axes.same_as(&cen.axes)).then_some(id)
        };
        let pair =
            |lo: &str, hi: &str| Some(vec![reduced(lo, "ReduceMin")?, reduced(hi, "ReduceMax")?]);
        pair(l, r).or_else(|| pair(r, l))
    }

    /// `Sub(m, m) == 0` (either order): true exactly where `m` is finite.
    fn finite_test(&self, l: &str, r: &str) -> Option<Vec<NodeId>> {
        let test = |d: &str, zero: &str| -> Option<Vec<NodeId>> {
            (self.scalar(zero)? == 0.0).then_some(())?;
            let (id, sub) = self.op(d, "Sub")?;
            let (p, q) = operands(sub)?;
            (p == q).then(|| vec![id])
        };
        test(l, r).or_else(|| test(r, l))
    }

    /// `Sub(x, mean(x))` at `v` (reached through the `crossed` copies).
    fn centred_at(&self, v: &str, mut nodes: Vec<NodeId>) -> Option<Centred> {
        let (sub_id, sub) = self.op(v, "Sub")?;
        let (mean_value, x_value) = (sub.input.get(1)?, sub.input.first()?);
        let mean = self.mean_of(mean_value)?;
        let (x, _) = self.origin(x_value);
        let (mx, _) = self.origin(&mean.input);
        if x != mx {
            return None;
        }
        nodes.push(sub_id);
        nodes.extend(mean.nodes);
        Some(Centred {
            x,
            axes: mean.axes,
            nodes,
            constant_row_guard: false,
        })
    }

    /// `Pow(a, 2)` or `Mul(a, b)` with `a` and `b` the same value or equivalent centred values,
    /// behind precision casts: returns the squared operand and the nodes (the square, the casts).
    pub fn square(&self, value: &str) -> Option<(String, Vec<NodeId>)> {
        let (value, mut nodes) = self.origin(value);
        if let Some((id, _, base, e)) = self.binary(&value, "Pow") {
            nodes.push(id);
            return (self.scalar(e)? == 2.0).then(|| (base.to_string(), nodes));
        }
        let (id, node) = self.op(&value, "Mul")?;
        nodes.push(id);
        let (a, b) = (node.input.first()?, node.input.get(1)?);
        if a == b {
            return Some((a.clone(), nodes));
        }
        let (ca, cb) = (self.centred(a)?, self.centred(b)?);
        (ca.x == cb.x && ca.axes.same_as(&cb.axes)).then(|| (a.clone(), nodes))
    }

    /// `Reciprocal(d)` or `Div(1, d)`: returns `d`.
    pub fn reciprocal_of(&self, node: &'m NodeProto) -> Option<&'m str> {
        let std_domain = crate::onnx::is_standard(node);
        if !std_domain {
            return None;
        }
        match node.op_type() {
            "Reciprocal" => node.input.first().map(String::as_str),
            "Div" if self.scalar(node.input.first()?) == Some(1.0) => {
                node.input.get(1).map(String::as_str)
            }
            _ => None,
        }
    }
}

/// `value` holds one number everywhere: a constant of equal values, `ConstantOfShape`, or
/// `Expand` of a one-value constant, to any shape. Returns the number and the nodes computing
/// it, with the shape arithmetic behind the shape where there is some (helpers of the match).
pub fn uniform_fill(c: &Canon<'_, '_>, value: &str) -> Option<(f64, Vec<NodeId>)> {
    let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
    if let Some(v) = c.g.constant(value) {
        let floats = v.floats.as_ref()?;
        let first = *floats.first()?;
        return floats
            .iter()
            .all(|&f| same(f, first))
            .then(|| (first, Vec::new()));
    }
    let (held, id, shape) = if let Some((id, n)) = c.op(value, "ConstantOfShape") {
        // No `value` attribute: float zeros.
        let held = match attr::tensor(n, "value") {
            Some(t) => decode(c.g.model, t).ok().flatten()?.scalar_f64()?,
            None => 0.0,
        };
        (held, id, n.input.first()?)
    } else {
        let (id, expand) = c.op(value, "Expand")?;
        (c.scalar(expand.input.first()?)?, id, expand.input.get(1)?)
    };
    let mut nodes = vec![id];
    nodes.extend(shape_arithmetic(c, shape, 0).unwrap_or_default());
    Some((held, nodes))
}

/// `value` holds `fill` only ([`uniform_fill`]); the nodes computing it.
pub fn filled_with(c: &Canon<'_, '_>, value: &str, fill: f64) -> Option<Vec<NodeId>> {
    let (held, nodes) = uniform_fill(c, value)?;
    (held == fill).then_some(nodes)
}

/// The nodes computing `value` from tensor shapes and constants only (`Shape`, casts, slices,
/// products...): helpers whose result does not depend on any tensor's contents.
fn shape_arithmetic(c: &Canon<'_, '_>, value: &str, depth: usize) -> Option<Vec<NodeId>> {
    if c.is_constant(value) {
        return Some(vec![]);
    }
    if depth > 12 {
        return None;
    }
    let (id, node) = c.g.producer_node(value)?;
    let mut nodes = vec![id];
    match node.op_type() {
        "Shape" => {}
        "Cast" | "Slice" | "Gather" | "ReduceProd" | "Unsqueeze" | "Squeeze" | "Concat"
        | "Reshape" | "Mul" => {
            for input in node.input.iter().filter(|i| !i.is_empty()) {
                nodes.extend(shape_arithmetic(c, input, depth + 1)?);
            }
        }
        _ => return None,
    }
    Some(nodes)
}
