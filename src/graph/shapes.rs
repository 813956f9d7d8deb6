//! Element types and shapes of values: declared ones (graph inputs/outputs, `value_info`,
//! initializers, `Constant` nodes) first, then a forward pass over the ops whose output shape
//! the matcher needs (ranks for positive axes and `GlobalAveragePool`, normalised dimensions
//! for parameter-shape checks). Unknown stays unknown; nothing here guesses.

use std::collections::HashMap;

use adanorm_kernels::params::OpKind;

use super::GraphIndex;
use crate::onnx::attr;
use crate::onnx::dtype::{BOOL, INT64};
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
    Named(String),
    Unknown,
}

impl Dim {
    pub fn known(&self) -> Option<i64> {
        match self {
            Dim::Known(v) => Some(*v),
            _ => None,
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
                    Dim::Unknown => None,
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
        }
    }
    facts
}

fn broadcast(shapes: &[&Vec<Dim>]) -> Vec<Dim> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    (0..rank)
        .map(|i| {
            let mut out = Dim::Known(1);
            for s in shapes {
                let off = rank - s.len();
                if i < off {
                    continue;
                }
                let d = &s[i - off];
                out = match (&out, d) {
                    (Dim::Known(1), _) => d.clone(),
                    (_, Dim::Known(1)) => out,
                    (a, b) if a == b => out,
                    (Dim::Known(_), _) => out,
                    (_, Dim::Known(_)) => d.clone(),
                    _ => Dim::Unknown,
                };
            }
            out
        })
        .collect()
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
        "Gemm" => with(in_type(0), None.or(Some(vec![Dim::Unknown, Dim::Unknown]))),
        "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" => with(
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
            let target = node.input.get(1).and_then(|n| g.constant(n));
            let shape = target.and_then(|t| {
                let dims = t.as_ints()?;
                let src = in_shape(0);
                let mut out: Vec<Dim> = dims
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match d {
                        0 => src.and_then(|s| s.get(i).cloned()).unwrap_or(Dim::Unknown),
                        -1 => Dim::Unknown,
                        d => Dim::Known(d),
                    })
                    .collect();
                // Infer a single -1 when every other size is known.
                if let (Some(pos), Some(s)) = (dims.iter().position(|&d| d == -1), src) {
                    let total = checked_product(s.iter().map(Dim::known));
                    let rest = checked_product(
                        out.iter()
                            .enumerate()
                            .filter(|(i, _)| *i != pos)
                            .map(|(_, d)| d.known()),
                    );
                    if let (Some(t), Some(r)) = (total, rest) {
                        if r > 0 && t % r == 0 {
                            out[pos] = Dim::Known(t / r);
                        }
                    }
                }
                Some(out)
            });
            // A computed target shape still tells the rank, through its own length.
            let shape = shape.or_else(|| match in_shape(1).map(Vec::as_slice) {
                Some([Dim::Known(n)]) if (0..=MAX_RANK).contains(n) => {
                    Some(vec![Dim::Unknown; *n as usize])
                }
                _ => None,
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
        "Slice" | "Pad" | "Expand" | "Tile" | "Split" | "Resize" | "Upsample" | "ScatterND"
        | "ScatterElements" | "GatherElements" | "GatherND" | "DepthToSpace" | "SpaceToDepth"
        | "BatchNormalization" | "ReduceLogSumExp" | "Einsum" | "ReverseSequence" | "Compress" => {
            let t = ValueFacts {
                elem_type: in_type(0),
                shape: None,
            };
            vec![t; node.output.len().max(1)]
        }
        _ => vec![],
    }
}
