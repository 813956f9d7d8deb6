//! Element types and shapes of values: declared ones (graph inputs/outputs, `value_info`,
//! initializers, `Constant` nodes) first, then a forward pass over the ops whose output shape
//! the matcher needs (ranks for positive axes and `GlobalAveragePool`, normalised dimensions
//! for parameter-shape checks). Unknown stays unknown; nothing here guesses.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use adanorm_kernels::params::OpKind;

use super::shape_tensors::{self, DimRef};
use super::GraphIndex;
use crate::onnx::attr;
use crate::onnx::dtype::{BOOL, FLOAT, INT64};
use crate::onnx::proto::{type_proto, NodeProto, ValueInfoProto};

/// The product of dimensions, `None` when one is unknown or the product overflows `i64`
/// (a model may declare any sizes; an overflow is "unknown", never a wrapped number).
pub fn checked_product(dims: impl IntoIterator<Item = Option<i64>>) -> Option<i64> {
    dims.into_iter()
        .try_fold(1i64, |acc, d| acc.checked_mul(d?))
}

/// One dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Known(i64),
    /// A `dim_param`: the same name is the same size everywhere in the model.
    Named(String),
    /// A size known by identity only (see [`Atom`]): the broadcast of these sizes. Every run
    /// that computed a value of this dimension broadcast them together, so each is 1 or the
    /// largest, and the dimension is the largest. A single `dim_param` is always `Named`.
    Sym(BTreeSet<Atom>),
    /// A size nothing is known of, not even its identity: equal to nothing, itself included.
    Unknown,
}

/// A size the model fixes at run time, known by identity: a `dim_param`, or a size without a
/// name (an axis of a value whose size nothing here computes) that is the same wherever it
/// flows, and only there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Atom {
    Param(String),
    Fresh(u64),
}

impl Dim {
    pub fn known(&self) -> Option<i64> {
        match self {
            Dim::Known(v) => Some(*v),
            _ => None,
        }
    }

    /// A size without a name, new: the same as nothing but itself. Process-wide numbering,
    /// so that sizes flowing from an enclosing graph into a subgraph never meet a namesake.
    pub fn fresh() -> Dim {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Dim::Sym(BTreeSet::from([Atom::Fresh(
            NEXT.fetch_add(1, Ordering::Relaxed),
        )]))
    }

    fn atoms(&self) -> Option<BTreeSet<Atom>> {
        match self {
            Dim::Named(p) => Some(BTreeSet::from([Atom::Param(p.clone())])),
            Dim::Sym(a) => Some(a.clone()),
            _ => None,
        }
    }

    fn from_atoms(atoms: BTreeSet<Atom>) -> Dim {
        match atoms.iter().next() {
            Some(Atom::Param(p)) if atoms.len() == 1 => Dim::Named(p.clone()),
            _ => Dim::Sym(atoms),
        }
    }

    /// Whether the two are the same size for sure: equal numbers, or the same symbolic size.
    pub fn same(&self, other: &Dim) -> bool {
        match (self, other) {
            (Dim::Known(p), Dim::Known(q)) => p == q,
            (Dim::Unknown, _) | (_, Dim::Unknown) | (Dim::Known(_), _) | (_, Dim::Known(_)) => {
                false
            }
            _ => self.atoms() == other.atoms(),
        }
    }

    /// Whether this size broadcasts to `big` for sure (is 1 or `big`): also a symbolic size
    /// made of some of the sizes `big` is the broadcast of.
    pub fn broadcasts_to(&self, big: &Dim) -> bool {
        if self.known() == Some(1) || self.same(big) {
            return true;
        }
        match (self, big) {
            (Dim::Named(_) | Dim::Sym(_), Dim::Sym(b)) => {
                self.atoms().is_some_and(|a| a.is_subset(b))
            }
            _ => false,
        }
    }

    /// The size of a broadcast of the two, as far as it is known (a run where they do not
    /// broadcast fails there, so only runs where they do matter).
    pub fn broadcast(&self, other: &Dim) -> Dim {
        match (self, other) {
            (Dim::Known(1), d) | (d, Dim::Known(1)) => d.clone(),
            // The other is 1 or this number.
            (Dim::Known(_), _) => self.clone(),
            (_, Dim::Known(_)) => other.clone(),
            (Dim::Unknown, _) | (_, Dim::Unknown) => Dim::Unknown,
            _ => match (self.atoms(), other.atoms()) {
                (Some(mut a), Some(b)) => {
                    a.extend(b);
                    Dim::from_atoms(a)
                }
                _ => Dim::Unknown,
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueFacts {
    pub elem_type: Option<i32>,
    /// `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
}

fn from_value_info(v: &ValueInfoProto) -> Option<ValueFacts> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let shape = t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(crate::onnx::proto::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                    Dim::Known(*v)
                }
                Some(crate::onnx::proto::tensor_shape_proto::dimension::Value::DimParam(p))
                    if !p.is_empty() =>
                {
                    Dim::Named(p.clone())
                }
                _ => Dim::Unknown,
            })
            .collect()
    });
    Some(ValueFacts {
        elem_type: t.elem_type.filter(|&e| e != 0),
        shape,
    })
}

/// `facts` as the `value_info` entry of `name`, when its element type is known (an unknown
/// dimension is written without value or name, as ONNX allows).
pub fn to_value_info(name: &str, facts: &ValueFacts) -> Option<ValueInfoProto> {
    use crate::onnx::proto::tensor_shape_proto::{dimension, Dimension};
    use crate::onnx::proto::{TensorShapeProto, TypeProto};
    let elem_type = facts.elem_type?;
    let shape = facts.shape.as_ref().map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: match d {
                    Dim::Known(v) => Some(dimension::Value::DimValue(*v)),
                    Dim::Named(p) => Some(dimension::Value::DimParam(p.clone())),
                    // A size known by identity has no name to write.
                    Dim::Sym(_) | Dim::Unknown => None,
                },
                ..Default::default()
            })
            .collect(),
    });
    Some(ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Ranks above this are not believed (a crafted model could declare any length for a
/// computed shape; no runtime runs such tensors).
const MAX_RANK: i64 = 64;

pub fn infer(g: &GraphIndex<'_>) -> HashMap<String, ValueFacts> {
    infer_with(g, HashMap::new())
}

/// [`infer`], starting from what is known of values read from enclosing graphs.
pub fn infer_with(
    g: &GraphIndex<'_>,
    outer: HashMap<String, ValueFacts>,
) -> HashMap<String, ValueFacts> {
    let mut facts: HashMap<String, ValueFacts> = outer;
    for t in &g.graph.initializer {
        facts.insert(
            t.name().to_string(),
            ValueFacts {
                elem_type: Some(t.data_type()),
                shape: Some(t.dims.iter().map(|&d| Dim::Known(d)).collect()),
            },
        );
    }
    for v in g
        .graph
        .input
        .iter()
        .chain(&g.graph.value_info)
        .chain(&g.graph.output)
    {
        if let Some(f) = from_value_info(v) {
            let entry = facts.entry(v.name().to_string()).or_default();
            entry.elem_type = entry.elem_type.or(f.elem_type);
            if entry.shape.is_none() {
                entry.shape = f.shape;
            }
        }
    }
    for (name, f) in facts.iter_mut() {
        if g.producer(name).is_none() {
            name_unknowns(f);
        }
    }
    for &id in g.topological() {
        let node = g.node(id);
        let inferred = infer_node(g, node, &facts);
        for (slot, out) in node.output.iter().enumerate() {
            if out.is_empty() {
                continue;
            }
            let Some(new) = inferred.get(slot).cloned() else {
                continue;
            };
            let entry = facts.entry(out.clone()).or_default();
            entry.elem_type = entry.elem_type.or(new.elem_type);
            // Declared shapes win; an inferred one fills in what was not declared.
            match (&mut entry.shape, new.shape) {
                (None, s) => entry.shape = s,
                (Some(decl), Some(inf)) if decl.len() == inf.len() => {
                    for (d, i) in decl.iter_mut().zip(inf) {
                        if *d == Dim::Unknown {
                            *d = i;
                        }
                    }
                }
                _ => {}
            }
            name_unknowns(entry);
        }
    }
    facts
}

fn broadcast(shapes: &[&Vec<Dim>]) -> Vec<Dim> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    (0..rank)
        .map(|i| {
            shapes.iter().fold(Dim::Known(1), |out, s| {
                let off = rank - s.len();
                if i < off {
                    out
                } else {
                    out.broadcast(&s[i - off])
                }
            })
        })
        .collect()
}

/// Every dimension nothing is known of becomes a size of its own, known by identity.
fn name_unknowns(facts: &mut ValueFacts) {
    for d in facts.shape.iter_mut().flatten() {
        if *d == Dim::Unknown {
            *d = Dim::fresh();
        }
    }
}

fn normalize_axes(axes: &[i64], rank: usize) -> Option<Vec<usize>> {
    let mut out: Vec<usize> = axes
        .iter()
        .map(|&a| {
            let a = if a < 0 { a + rank as i64 } else { a };
            (0..rank as i64).contains(&a).then_some(a as usize)
        })
        .collect::<Option<_>>()?;
    out.sort_unstable();
    out.dedup();
    Some(out)
}

fn infer_node(
    g: &GraphIndex<'_>,
    node: &NodeProto,
    facts: &HashMap<String, ValueFacts>,
) -> Vec<ValueFacts> {
    let input = |i: usize| {
        node.input
            .get(i)
            .filter(|s| !s.is_empty())
            .and_then(|n| facts.get(n.as_str()))
    };
    let in_type = |i: usize| input(i).and_then(|f| f.elem_type);
    let in_shape = |i: usize| input(i).and_then(|f| f.shape.as_ref());
    let same = |i: usize| vec![input(i).cloned().unwrap_or_default()];
    let with =
        |elem_type: Option<i32>, shape: Option<Vec<Dim>>| vec![ValueFacts { elem_type, shape }];
    // Y, and a residual sum (version 2's `Sum`, SkipLayerNormalization's fourth output): X's
    // type and shape; the statistics in between are left unknown.
    let y_and_sum = || {
        let x = input(0).cloned().unwrap_or_default();
        vec![x.clone(), ValueFacts::default(), ValueFacts::default(), x]
    };
    if OpKind::of_node(node.domain(), node.op_type()).is_some() {
        return y_and_sum();
    }
    if !crate::onnx::is_standard(node) {
        if node.domain() != "com.microsoft" {
            return vec![];
        }
        return match node.op_type() {
            "SkipLayerNormalization" | "SkipSimplifiedLayerNormalization" => y_and_sum(),
            // The com.microsoft normalisations and activations keep X's type and shape.
            "LayerNormalization"
            | "SimplifiedLayerNormalization"
            | "Gelu"
            | "FastGelu"
            | "BiasGelu"
            | "QuickGelu" => same(0),
            // ONNX Runtime's attention and matmul fusions keep the input's type (their shapes
            // depend on weights and attributes: left unknown).
            "Attention" | "MultiHeadAttention" | "FusedMatMul" => with(in_type(0), None),
            // EmbedLayerNormalization: the embedding table's type; int32 mask_index.
            "EmbedLayerNormalization" => vec![
                ValueFacts {
                    elem_type: in_type(2),
                    shape: None,
                },
                ValueFacts {
                    elem_type: Some(crate::onnx::dtype::INT32),
                    shape: None,
                },
                ValueFacts {
                    elem_type: in_type(2),
                    shape: None,
                },
            ],
            _ => vec![],
        };
    }
    match node.op_type() {
        // What both branches declare they give back (HF optimum's merged decoders normalise If
        // outputs): a type or shape only where the branches agree.
        "If" => {
            let branch = |name: &str| {
                node.attribute
                    .iter()
                    .find(|a| a.name() == name)
                    .and_then(|a| a.g.as_ref())
            };
            let (Some(then_g), Some(else_g)) = (branch("then_branch"), branch("else_branch"))
            else {
                return vec![];
            };
            then_g
                .output
                .iter()
                .zip(&else_g.output)
                .map(|(a, b)| {
                    let (a, b) = (
                        from_value_info(a).unwrap_or_default(),
                        from_value_info(b).unwrap_or_default(),
                    );
                    ValueFacts {
                        elem_type: a.elem_type.filter(|_| a.elem_type == b.elem_type),
                        shape: a.shape.clone().filter(|_| a.shape == b.shape),
                    }
                })
                .collect()
        }
        "Identity"
        | "Neg"
        | "Sqrt"
        | "Reciprocal"
        | "Relu"
        | "Erf"
        | "Exp"
        | "Log"
        | "Tanh"
        | "Sigmoid"
        | "Abs"
        | "Softmax"
        | "Dropout"
        | "LayerNormalization"
        | "SimplifiedLayerNormalization"
        | "RMSNormalization"
        | "Gelu"
        | "Sin"
        | "Cos"
        | "Floor"
        | "Ceil"
        | "Round"
        | "Clip"
        | "LeakyRelu"
        | "HardSigmoid"
        | "Elu"
        | "Selu"
        | "Celu"
        | "Softplus"
        | "Softsign"
        | "HardSwish"
        | "Mish"
        | "Sign"
        | "LogSoftmax"
        | "MeanVarianceNormalization"
        | "InstanceNormalization"
        | "LpNormalization"
        | "ThresholdedRelu"
        | "Trilu"
        | "CumSum" => same(0),
        "Cast" => with(
            attr::int(node, "to").map(|t| t as i32),
            in_shape(0).cloned(),
        ),
        "CastLike" => with(in_type(1), in_shape(0).cloned()),
        // QDQ: the shape of the input, the type of the scale (dequantised) or of the zero point
        // (quantised; uint8 without one, or as `output_dtype` says from opset 21).
        "DequantizeLinear" => with(in_type(1), in_shape(0).cloned()),
        "QuantizeLinear" => {
            let quantised = in_type(2)
                .or(attr::int(node, "output_dtype")
                    .filter(|&t| t != 0)
                    .map(|t| t as i32))
                .or(Some(crate::onnx::dtype::UINT8));
            with(quantised, in_shape(0).cloned())
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Mod" | "PRelu" => {
            let shapes: Option<Vec<&Vec<Dim>>> = (0..node.input.len()).map(in_shape).collect();
            with(in_type(0), shapes.map(|s| broadcast(&s)))
        }
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Not" | "And" | "Or" => {
            let shapes: Option<Vec<&Vec<Dim>>> = (0..node.input.len()).map(in_shape).collect();
            with(Some(BOOL), shapes.map(|s| broadcast(&s)))
        }
        "Where" => {
            let shapes: Option<Vec<&Vec<Dim>>> = (0..3).map(in_shape).collect();
            with(in_type(1), shapes.map(|s| broadcast(&s)))
        }
        "ReduceMean" | "ReduceSum" | "ReduceProd" | "ReduceMax" | "ReduceMin" | "ReduceL2"
        | "ReduceSumSquare" => {
            let keepdims = attr::int(node, "keepdims").unwrap_or(1) != 0;
            let axes: Option<Vec<i64>> = match attr::ints(node, "axes") {
                Some(a) => Some(a.to_vec()),
                None if node.input.len() > 1 && !node.input[1].is_empty() => g
                    .constant(&node.input[1])
                    .and_then(|c| c.as_ints().map(<[i64]>::to_vec)),
                None => Some(vec![]), // no axes: all axes (noop_with_empty_axes aside)
            };
            let shape = in_shape(0).and_then(|s| {
                let axes = axes.as_ref()?;
                let axes = if axes.is_empty() {
                    (0..s.len()).collect()
                } else {
                    normalize_axes(axes, s.len())?
                };
                Some(if keepdims {
                    s.iter()
                        .enumerate()
                        .map(|(i, d)| {
                            if axes.contains(&i) {
                                Dim::Known(1)
                            } else {
                                d.clone()
                            }
                        })
                        .collect()
                } else {
                    s.iter()
                        .enumerate()
                        .filter(|(i, _)| !axes.contains(i))
                        .map(|(_, d)| d.clone())
                        .collect()
                })
            });
            with(in_type(0), shape)
        }
        "GlobalAveragePool" | "GlobalMaxPool" => with(
            in_type(0),
            in_shape(0).map(|s| {
                s.iter()
                    .enumerate()
                    .map(|(i, d)| if i < 2 { d.clone() } else { Dim::Known(1) })
                    .collect()
            }),
        ),
        "Transpose" => {
            let shape = in_shape(0).and_then(|s| match attr::ints(node, "perm") {
                Some(p) => p.iter().map(|&i| s.get(i as usize).cloned()).collect(),
                None => Some(s.iter().rev().cloned().collect()),
            });
            with(in_type(0), shape)
        }
        "MatMul" => {
            let shape = match (in_shape(0), in_shape(1)) {
                (Some(a), Some(b)) if a.len() >= 2 && b.len() >= 2 => {
                    let batch =
                        broadcast(&[&a[..a.len() - 2].to_vec(), &b[..b.len() - 2].to_vec()]);
                    let mut s = batch;
                    s.push(a[a.len() - 2].clone());
                    s.push(b[b.len() - 1].clone());
                    Some(s)
                }
                (Some(a), Some(b)) if a.len() >= 2 && b.len() == 1 => {
                    Some(a[..a.len() - 1].to_vec())
                }
                _ => None,
            };
            with(in_type(0), shape)
        }
        // [M, K] · [K, N] (either transposed by its flag); C broadcasts to the result.
        "Gemm" => {
            let trans = |name: &str| usize::from(attr::int(node, name).unwrap_or(0) != 0);
            let shape = match (in_shape(0), in_shape(1)) {
                (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => {
                    vec![a[trans("transA")].clone(), b[1 - trans("transB")].clone()]
                }
                _ => vec![Dim::Unknown, Dim::Unknown],
            };
            with(in_type(0), Some(shape))
        }
        "Conv" | "MaxPool" | "AveragePool" | "LpPool" => {
            let kernel = (node.op_type() == "Conv").then(|| in_shape(1)).flatten();
            let shape = in_shape(0).map(|s| windowed(node, s, kernel.map(Vec::as_slice)));
            let mut facts = vec![with(in_type(0), shape).remove(0)];
            // MaxPool's optional Indices: the same shape, int64.
            if node.output.len() > 1 {
                facts.push(ValueFacts {
                    elem_type: Some(INT64),
                    shape: facts[0].shape.clone(),
                });
            }
            facts
        }
        "ConvTranspose" => with(
            in_type(0),
            in_shape(0).map(|s| {
                s.iter()
                    .enumerate()
                    .map(|(i, d)| if i == 0 { d.clone() } else { Dim::Unknown })
                    .collect()
            }),
        ),
        "Gather" => {
            let axis = attr::int(node, "axis").unwrap_or(0);
            let shape = match (in_shape(0), in_shape(1)) {
                (Some(d), Some(i)) if !d.is_empty() => {
                    let r = d.len() as i64;
                    let a = if axis < 0 { axis + r } else { axis };
                    (0..r).contains(&a).then(|| {
                        let a = a as usize;
                        d[..a]
                            .iter()
                            .chain(i.iter())
                            .chain(d[a + 1..].iter())
                            .cloned()
                            .collect()
                    })
                }
                _ => None,
            };
            with(in_type(0), shape)
        }
        "Flatten" => {
            let shape = in_shape(0).map(|s| {
                let r = s.len() as i64;
                let a = attr::int(node, "axis").unwrap_or(1);
                let a = if a < 0 { a + r } else { a }.clamp(0, r) as usize;
                let prod = |d: &[Dim]| {
                    checked_product(d.iter().map(Dim::known)).map_or(Dim::Unknown, Dim::Known)
                };
                vec![prod(&s[..a]), prod(&s[a..])]
            });
            with(in_type(0), shape)
        }
        "Shape" => with(
            Some(INT64),
            in_shape(0).map(|s| vec![Dim::Known(s.len() as i64)]),
        ),
        "Reshape" => {
            let shape = node
                .input
                .get(1)
                .and_then(|t| shape_tensor_dims(g, t, facts))
                .map(|target| {
                    reshaped(
                        in_shape(0).map(Vec::as_slice),
                        &target,
                        attr::int(node, "allowzero").unwrap_or(0) != 0,
                    )
                });
            // A target whose entries are not all known still tells the rank, through its
            // own length.
            let shape = shape.or_else(|| match in_shape(1).map(Vec::as_slice) {
                Some([Dim::Known(n)]) if (0..=MAX_RANK).contains(n) => {
                    Some(vec![Dim::Unknown; *n as usize])
                }
                _ => None,
            });
            with(in_type(0), shape)
        }
        "Expand" => {
            let shape = match (in_shape(0), node.input.get(1)) {
                (Some(s), Some(t)) => match shape_tensor_dims(g, t, facts) {
                    Some(target) => Some(broadcast(&[s, &target])),
                    None => match in_shape(1).map(Vec::as_slice) {
                        Some([Dim::Known(n)]) if (0..=MAX_RANK).contains(n) => {
                            Some(vec![Dim::Unknown; s.len().max(*n as usize)])
                        }
                        _ => None,
                    },
                },
                _ => None,
            };
            with(in_type(0), shape)
        }
        "ConstantOfShape" => {
            let elem_type = attr::tensor(node, "value").map_or(FLOAT, |t| t.data_type());
            let shape = node.input.first().and_then(|t| {
                shape_tensor_dims(g, t, facts).or_else(|| match in_shape(0).map(Vec::as_slice) {
                    Some([Dim::Known(n)]) if (0..=MAX_RANK).contains(n) => {
                        Some(vec![Dim::Unknown; *n as usize])
                    }
                    _ => None,
                })
            });
            with(Some(elem_type), shape)
        }
        "Slice" => with(in_type(0), in_shape(0).map(|s| sliced(g, node, s))),
        "GatherElements" => with(in_type(0), in_shape(1).cloned()),
        "Range" => with(in_type(0), Some(vec![Dim::Unknown])),
        "Split" => {
            let shapes = in_shape(0).map(|s| split(g, node, s));
            (0..node.output.len())
                .map(|i| ValueFacts {
                    elem_type: in_type(0),
                    shape: shapes.as_ref().and_then(|s| s.get(i).cloned()),
                })
                .collect()
        }
        "Tile" => {
            let repeats = node
                .input
                .get(1)
                .and_then(|r| g.constant(r))
                .and_then(|c| c.as_ints().map(<[i64]>::to_vec));
            let shape = in_shape(0).map(|s| {
                s.iter()
                    .enumerate()
                    .map(|(i, d)| match repeats.as_ref().and_then(|r| r.get(i)) {
                        Some(&1) => d.clone(),
                        Some(&r) => d
                            .known()
                            .and_then(|v| v.checked_mul(r))
                            .map_or(Dim::Unknown, Dim::Known),
                        None => Dim::Unknown,
                    })
                    .collect()
            });
            with(in_type(0), shape)
        }
        "Pad" => {
            let pads = match attr::ints(node, "pads") {
                Some(p) => Some(p.to_vec()),
                None => node
                    .input
                    .get(1)
                    .and_then(|p| g.constant(p))
                    .and_then(|c| c.as_ints().map(<[i64]>::to_vec)),
            };
            // Pads over some axes only (opset 18's `axes`) are not followed.
            let all_axes = node.input.get(3).is_none_or(|a| a.is_empty());
            let shape = in_shape(0).map(|s| {
                let r = s.len();
                s.iter()
                    .enumerate()
                    .map(
                        |(i, d)| match pads.as_ref().filter(|p| p.len() == 2 * r && all_axes) {
                            Some(p) if p[i] == 0 && p[i + r] == 0 => d.clone(),
                            Some(p) => d
                                .known()
                                .and_then(|v| v.checked_add(p[i])?.checked_add(p[i + r]))
                                .filter(|&v| v >= 0)
                                .map_or(Dim::Unknown, Dim::Known),
                            None => Dim::Unknown,
                        },
                    )
                    .collect()
            });
            with(in_type(0), shape)
        }
        "Unsqueeze" | "Squeeze" => {
            let axes = attr::ints(node, "axes").map(<[i64]>::to_vec).or_else(|| {
                node.input
                    .get(1)
                    .and_then(|n| g.constant(n))
                    .and_then(|c| c.as_ints().map(<[i64]>::to_vec))
            });
            let shape = in_shape(0).and_then(|s| {
                let axes = axes?;
                if node.op_type() == "Unsqueeze" {
                    let rank = s.len() + axes.len();
                    let axes = normalize_axes(&axes, rank)?;
                    let mut src = s.iter();
                    Some(
                        (0..rank)
                            .map(|i| {
                                if axes.contains(&i) {
                                    Dim::Known(1)
                                } else {
                                    src.next().cloned().unwrap_or(Dim::Unknown)
                                }
                            })
                            .collect(),
                    )
                } else {
                    let axes = normalize_axes(&axes, s.len())?;
                    Some(
                        s.iter()
                            .enumerate()
                            .filter(|(i, _)| !axes.contains(i))
                            .map(|(_, d)| d.clone())
                            .collect(),
                    )
                }
            });
            with(in_type(0), shape)
        }
        "Concat" => {
            let shapes: Option<Vec<&Vec<Dim>>> = (0..node.input.len()).map(in_shape).collect();
            let shape = shapes.filter(|s| !s.is_empty()).map(|s| {
                let r = s[0].len() as i64;
                let axis = attr::int(node, "axis").unwrap_or(0);
                let axis = if axis < 0 { axis + r } else { axis } as usize;
                (0..s[0].len())
                    .map(|i| {
                        if i == axis {
                            s.iter()
                                .map(|d| d.get(i).and_then(Dim::known))
                                .sum::<Option<i64>>()
                                .map_or(Dim::Unknown, Dim::Known)
                        } else {
                            s[0][i].clone()
                        }
                    })
                    .collect()
            });
            with(in_type(0), shape)
        }
        "Constant" => {
            let t = attr::tensor(node, "value");
            with(
                t.map(|t| t.data_type()),
                t.map(|t| t.dims.iter().map(|&d| Dim::Known(d)).collect()),
            )
        }
        // Ops whose outputs keep the data input's element type, shape not followed: the type
        // still has to flow past them (a `--portable` body is typed by its input; Swin reaches
        // its LayerNorms through Slice/Pad/Concat of windows).
        "Resize" | "Upsample" | "ScatterND" | "ScatterElements" | "GatherND" | "DepthToSpace"
        | "SpaceToDepth" | "BatchNormalization" | "ReduceLogSumExp" | "Einsum"
        | "ReverseSequence" | "Compress" => {
            let t = ValueFacts {
                elem_type: in_type(0),
                shape: None,
            };
            vec![t; node.output.len().max(1)]
        }
        _ => vec![],
    }
}

/// The entries of shape tensor `value` as dimensions (numbers, or the sizes of the axes they
/// read), when every entry can be named.
/// The output shape of a sliding-window op (`Conv` with its weight's shape, or a pool) over
/// `x = [N, C, spatial...]`: `N`, the channels (`Conv`: the weight's first axis), then per
/// spatial axis `floor((D + pads - dilation * (k - 1) - 1) / stride) + 1`, or `ceil(D / stride)`
/// for `SAME_*` auto padding. A symbolic `D` stays itself where the window keeps the size
/// (stride 1 and the pads making up for the kernel); every other size it cannot compute is
/// unknown.
fn windowed(node: &NodeProto, x: &[Dim], weight: Option<&[Dim]>) -> Vec<Dim> {
    let mut out = x.to_vec();
    if x.len() < 3 {
        return x.iter().map(|_| Dim::Unknown).collect();
    }
    let spatial = x.len() - 2;
    let ints = |name: &str| {
        attr::ints(node, name)
            .filter(|v| v.len() == spatial)
            .map(<[i64]>::to_vec)
    };
    let ones = vec![1; spatial];
    let kernel: Option<Vec<i64>> = ints("kernel_shape").or_else(|| {
        let w = weight.filter(|w| w.len() == x.len())?;
        w[2..]
            .iter()
            .map(|d| match d {
                Dim::Known(k) => Some(*k),
                _ => None,
            })
            .collect()
    });
    if node.op_type() == "Conv" {
        out[1] = weight
            .and_then(|w| w.first().cloned())
            .unwrap_or(Dim::Unknown);
    }
    let strides = ints("strides").unwrap_or_else(|| ones.clone());
    let dilations = ints("dilations").unwrap_or_else(|| ones.clone());
    let auto_pad = attr::string(node, "auto_pad").unwrap_or_default();
    let ceil_mode = attr::int(node, "ceil_mode").unwrap_or(0) != 0;
    let pads = match auto_pad.as_str() {
        "" | "NOTSET" => {
            attr::ints(node, "pads").map_or_else(|| vec![0; 2 * spatial], <[i64]>::to_vec)
        }
        "VALID" => vec![0; 2 * spatial],
        _ => vec![],
    };
    for i in 0..spatial {
        let d = &x[2 + i];
        let stride = strides[i];
        out[2 + i] = match (&kernel, d) {
            _ if stride < 1 || dilations[i] < 1 => Dim::Unknown,
            // SAME_UPPER / SAME_LOWER: the output covers the input at the stride.
            _ if pads.is_empty() => match d {
                Dim::Known(v) if *v >= 0 => Dim::Known((v + stride - 1) / stride),
                _ if stride == 1 => d.clone(),
                _ => Dim::Unknown,
            },
            (Some(k), _) if pads.len() == 2 * spatial => {
                let reach = dilations[i] * (k[i] - 1) + 1;
                let padded = pads[i] + pads[spatial + i];
                match d {
                    Dim::Known(v) if v + padded >= reach => {
                        let span = v + padded - reach;
                        let steps = if ceil_mode {
                            (span + stride - 1) / stride
                        } else {
                            span / stride
                        };
                        Dim::Known(steps + 1)
                    }
                    _ if stride == 1 && padded == reach - 1 => d.clone(),
                    _ => Dim::Unknown,
                }
            }
            _ => Dim::Unknown,
        };
    }
    out
}

fn shape_tensor_dims(
    g: &GraphIndex<'_>,
    value: &str,
    facts: &HashMap<String, ValueFacts>,
) -> Option<Vec<Dim>> {
    let shape = |v: &str| facts.get(v).and_then(|f| f.shape.as_ref());
    let contents = shape_tensors::contents_with(g, value, &|v| shape(v).cloned())?;
    Some(
        contents
            .dims
            .iter()
            .map(|d| match d {
                DimRef::Known(v) => Dim::Known(*v),
                DimRef::Of { value, axis } => shape(value)
                    .and_then(|s| s.get(*axis).cloned())
                    .unwrap_or(Dim::Unknown),
            })
            .collect(),
    )
}

/// The shape `Reshape` gives `src` for `target`. A 0 entry copies the input's size unless
/// `allowzero`; a size read from the graph (`Shape`) is taken as it is, since one that is 0
/// at run time belongs to an empty tensor. A single -1 is the element count left over: the
/// sizes both sides share cancel, the rest must be numbers.
fn reshaped(src: Option<&[Dim]>, target: &[Dim], allowzero: bool) -> Vec<Dim> {
    let mut out: Vec<Dim> = target
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Known(0) if !allowzero => {
                src.and_then(|s| s.get(i).cloned()).unwrap_or(Dim::Unknown)
            }
            Dim::Known(v) if *v < 0 => Dim::Unknown,
            d => d.clone(),
        })
        .collect();
    let minus_one: Vec<usize> = (0..target.len())
        .filter(|&i| target[i] == Dim::Known(-1))
        .collect();
    if let ([pos], Some(src)) = (minus_one.as_slice(), src) {
        let mut left: Vec<&Dim> = src.iter().collect();
        let mut rest = Some(1i64);
        for (_, d) in out.iter().enumerate().filter(|(i, _)| i != pos) {
            match d.known() {
                Some(v) => rest = rest.and_then(|r| r.checked_mul(v)),
                None => match left.iter().position(|s| s.same(d)) {
                    Some(k) => {
                        left.swap_remove(k);
                    }
                    None => rest = None,
                },
            }
        }
        let total = checked_product(left.iter().map(|d| d.known()));
        // One size by identity left over (`[batch, 8, 64] -> [-1, 8, 2, 32]`): -1 is that size
        // when the numbers on both sides make the same product.
        let (sizes, numbers): (Vec<&Dim>, Vec<&Dim>) =
            left.iter().partition(|d| d.known().is_none());
        let one_size = match sizes.as_slice() {
            [d] if !matches!(d, Dim::Unknown) => {
                checked_product(numbers.iter().map(|d| d.known())).map(|p| (p, (*d).clone()))
            }
            _ => None,
        };
        match (total, rest, one_size) {
            (Some(t), Some(r), _) if r > 0 && t % r == 0 => out[*pos] = Dim::Known(t / r),
            (_, Some(r), Some((p, d))) if p == r => out[*pos] = d,
            _ => {}
        }
    }
    out
}

/// One constant integer list of a `Slice`: the attribute (opset < 10) or the input.
fn slice_arg(
    g: &GraphIndex<'_>,
    node: &NodeProto,
    attr_name: &str,
    input: usize,
) -> Option<Vec<i64>> {
    if let Some(v) = attr::ints(node, attr_name) {
        return Some(v.to_vec());
    }
    let name = node.input.get(input).filter(|s| !s.is_empty())?;
    g.constant(name)
        .and_then(|c| c.as_ints().map(<[i64]>::to_vec))
}

/// The shape `Slice` gives `src`: axes it does not slice keep their size, sliced ones have
/// theirs computed from constant bounds of a known size (or kept, for a whole-axis slice).
fn sliced(g: &GraphIndex<'_>, node: &NodeProto, src: &[Dim]) -> Vec<Dim> {
    let rank = src.len() as i64;
    let opset_inputs = attr::ints(node, "starts").is_none();
    let starts = slice_arg(g, node, "starts", 1);
    let ends = slice_arg(g, node, "ends", 2);
    let has = |i: usize| node.input.get(i).is_some_and(|s| !s.is_empty());
    let axes = if opset_inputs && has(3) || !opset_inputs && attr::ints(node, "axes").is_some() {
        slice_arg(g, node, "axes", 3)
    } else {
        starts.as_ref().map(|s| (0..s.len() as i64).collect())
    };
    let steps = if opset_inputs && has(4) {
        slice_arg(g, node, "steps", 4)
    } else {
        starts.as_ref().map(|s| vec![1; s.len()])
    };
    let (Some(starts), Some(ends), Some(axes), Some(steps)) = (starts, ends, axes, steps) else {
        // Which axes are sliced is not known (or not their bounds): only the rank is.
        let sliced_axes = slice_arg(g, node, "axes", 3);
        return src
            .iter()
            .enumerate()
            .map(|(i, d)| match &sliced_axes {
                Some(a) if !a.iter().any(|&x| x == i as i64 || x + rank == i as i64) => d.clone(),
                _ => Dim::Unknown,
            })
            .collect();
    };
    if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
        return vec![Dim::Unknown; src.len()];
    }
    let mut out = src.to_vec();
    for (((&a, &start), &end), &step) in axes.iter().zip(&starts).zip(&ends).zip(&steps) {
        let a = if a < 0 { a + rank } else { a };
        let Some(d) = usize::try_from(a).ok().and_then(|a| out.get_mut(a)) else {
            return vec![Dim::Unknown; src.len()];
        };
        // No axis has 2^62 elements: an end this large is the axis' end.
        const WHOLE: i64 = 1 << 62;
        if start == 0 && end >= WHOLE && step == 1 {
            continue;
        }
        // In i128: no bound or step of a crafted model overflows.
        let (start, end, step) = (i128::from(start), i128::from(end), i128::from(step));
        let at = |v: i128, n: i128| if v < 0 { v + n } else { v };
        *d = match d.known().map(i128::from).filter(|&n| n >= 0) {
            Some(n) if step > 0 => {
                let (b, e) = (at(start, n).clamp(0, n), at(end, n).clamp(0, n));
                let len = if e > b { (e - b + step - 1) / step } else { 0 };
                i64::try_from(len).map_or(Dim::Unknown, Dim::Known)
            }
            Some(0) if step < 0 => Dim::Known(0),
            Some(n) if step < 0 => {
                let (b, e) = (at(start, n).clamp(0, n - 1), at(end, n).clamp(-1, n - 1));
                let len = if b > e { (b - e - step - 1) / -step } else { 0 };
                i64::try_from(len).map_or(Dim::Unknown, Dim::Known)
            }
            _ => Dim::Unknown,
        };
    }
    out
}

/// The shapes of `Split`'s outputs: `src` with the split axis' size per output when the
/// sizes are given as constants or the axis divides evenly into the outputs.
fn split(g: &GraphIndex<'_>, node: &NodeProto, src: &[Dim]) -> Vec<Vec<Dim>> {
    let count = node.output.len();
    let rank = src.len() as i64;
    let axis = attr::int(node, "axis").unwrap_or(0);
    let axis = if axis < 0 { axis + rank } else { axis };
    let Some(axis) = usize::try_from(axis).ok().filter(|&a| a < src.len()) else {
        return vec![];
    };
    let sizes: Option<Vec<i64>> = match attr::ints(node, "split") {
        Some(s) => Some(s.to_vec()),
        None => match node.input.get(1).filter(|s| !s.is_empty()) {
            Some(n) => g.constant(n).and_then(|c| c.as_ints().map(<[i64]>::to_vec)),
            // Opset 18 splits a remainder into a shorter last part.
            None => src[axis]
                .known()
                .filter(|&n| count > 0 && n % count as i64 == 0)
                .map(|n| vec![n / count as i64; count]),
        },
    };
    (0..count)
        .map(|i| {
            let mut s = src.to_vec();
            s[axis] = sizes
                .as_ref()
                .filter(|v| v.len() == count)
                .map_or(Dim::Unknown, |v| Dim::Known(v[i]));
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{attribute_proto::AttributeType, AttributeProto};
    use crate::rewrite::node::ints_attr;

    fn named(p: &str) -> Dim {
        Dim::Named(p.into())
    }

    #[test]
    fn symbolic_sizes_are_equal_by_identity_only() {
        let (a, b) = (Dim::fresh(), Dim::fresh());
        assert!(a.same(&a) && !a.same(&b));
        assert!(named("batch").same(&named("batch")) && !named("batch").same(&named("seq")));
        assert!(!Dim::Unknown.same(&Dim::Unknown));
        assert!(!Dim::Known(3).same(&named("batch")));
        // The broadcast of two sizes is neither of them, but each broadcasts to it.
        let ab = a.broadcast(&b);
        assert!(!ab.same(&a) && a.broadcasts_to(&ab) && b.broadcasts_to(&ab));
        assert!(!ab.broadcasts_to(&a));
        assert!(ab.same(&b.broadcast(&a)));
        assert!(Dim::Known(1).broadcasts_to(&a) && !Dim::Known(2).broadcasts_to(&a));
        assert_eq!(Dim::Known(1).broadcast(&a), a);
        assert_eq!(Dim::Known(4).broadcast(&a), Dim::Known(4));
        assert_eq!(Dim::Unknown.broadcast(&a), Dim::Unknown);
        // A single dim_param stays a name.
        assert_eq!(named("n").broadcast(&named("n")), named("n"));
    }

    #[test]
    fn reshape_minus_one_cancels_the_sizes_both_sides_share() {
        let (batch, seq) = (named("batch"), named("seq"));
        let src = [batch.clone(), seq.clone(), Dim::Known(768)];
        // [batch, seq, 768] -> [batch, seq, 12, -1]: -1 is 64.
        let out = reshaped(
            Some(&src),
            &[batch.clone(), seq.clone(), Dim::Known(12), Dim::Known(-1)],
            false,
        );
        assert_eq!(out[3], Dim::Known(64));
        // [batch, seq, 768] -> [-1, 768]: batch * seq is nothing known, so -1 stays unknown.
        let out = reshaped(Some(&src), &[Dim::Known(-1), Dim::Known(768)], false);
        assert_eq!(out[0], Dim::Unknown);
        // [batch, 8, 64] -> [-1, 8, 2, 32]: the one size left over is -1.
        let src = [batch.clone(), Dim::Known(8), Dim::Known(64)];
        let target = [Dim::Known(-1), Dim::Known(8), Dim::Known(2), Dim::Known(32)];
        assert_eq!(reshaped(Some(&src), &target, false)[0], batch);
        // ... but not when the numbers do not make the same product.
        let target = [Dim::Known(-1), Dim::Known(8), Dim::Known(4), Dim::Known(32)];
        assert_eq!(reshaped(Some(&src), &target, false)[0], Dim::Unknown);
        // 0 copies the input's size unless allowzero.
        let target = [Dim::Known(0), Dim::Known(512)];
        assert_eq!(reshaped(Some(&src), &target, false)[0], batch);
        assert_eq!(reshaped(Some(&src), &target, true)[0], Dim::Known(0));
    }

    fn window(op: &str, attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        }
    }

    fn string_attr(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            s: Some(v.as_bytes().to_vec().into()),
            r#type: Some(AttributeType::String as i32),
            ..Default::default()
        }
    }

    #[test]
    fn window_ops_give_their_output_sizes() {
        let x = [named("n"), Dim::Known(3), Dim::Known(224), named("w")];
        let weight = [Dim::Known(96), Dim::Known(3), Dim::Known(4), Dim::Known(4)];
        // ConvNeXt's stem: kernel 4, stride 4, no pads.
        let conv = window("Conv", vec![ints_attr("strides", &[4, 4])]);
        let out = windowed(&conv, &x, Some(&weight));
        assert_eq!(out[..3], [named("n"), Dim::Known(96), Dim::Known(56)]);
        assert_eq!(out[3], Dim::Unknown, "a symbolic size strided is not known");
        // A 3x3 pool with pads 1 and stride 1 keeps every size, the symbolic one too.
        let pool = window(
            "MaxPool",
            vec![
                ints_attr("kernel_shape", &[3, 3]),
                ints_attr("pads", &[1, 1, 1, 1]),
            ],
        );
        assert_eq!(windowed(&pool, &x, None), x.to_vec());
        // ceil_mode rounds the last partial window up.
        let pool = window(
            "AveragePool",
            vec![
                ints_attr("kernel_shape", &[2, 2]),
                ints_attr("strides", &[2, 2]),
                crate::rewrite::node::int_attr("ceil_mode", 1),
            ],
        );
        let odd = [named("n"), Dim::Known(3), Dim::Known(7), Dim::Known(7)];
        assert_eq!(windowed(&pool, &odd, None)[2], Dim::Known(4));
        // SAME_UPPER covers the input at the stride: ceil(7 / 2).
        let same = window(
            "Conv",
            vec![
                ints_attr("strides", &[2, 2]),
                string_attr("auto_pad", "SAME_UPPER"),
            ],
        );
        let w = [Dim::Known(8), Dim::Known(3), Dim::Known(3), Dim::Known(3)];
        let out = windowed(&same, &odd, Some(&w));
        assert_eq!(out[1..], [Dim::Known(8), Dim::Known(4), Dim::Known(4)]);
    }
}
