//! `--affine fold`: the gain and bias move into the linear layers that read the normalisation.
//! For `y = n·γ + β` read by `MatMul(y, W)` (+ `Add(b)`) or `Gemm(y, W, b)`:
//! `y·W + b = n·(diag(γ)·W) + (β·W + b)` — exact up to the weights' rounding. Where a consumer is
//! not linear in the normalised axis, or its weight is not a constant, nothing is folded and the
//! caller keeps the affine, saying why.
//!
//! The originals are written to the weights file and the mapping to the model's metadata
//! (`adanorm.fold:<node>`), so `revert` restores them exactly.
//!
//! Copy-on-write: a folded weight or bias is a new tensor under a fresh name for each consumer
//! input it feeds; the original stays untouched for every other reader (exporters deduplicate
//! equal tensors: q, k and v often read one zero bias, a tied embedding is also the LM head) and
//! leaves the model only when nothing reads it any more.

use serde::{Deserialize, Serialize};

use super::names::Names;
use super::weights::WeightTensor;
use crate::graph::{GraphIndex, NodeId};
use crate::onnx::proto::TensorProto;
use crate::onnx::{attr, dtype};
use crate::patterns::Match;

pub const FOLD_PREFIX: &str = "adanorm.fold:";

/// One repointed consumer input, as `revert` needs it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Folded {
    pub node: String,
    pub input: usize,
    pub original: String,
    pub folded: String,
}

#[derive(Default)]
pub struct FoldPlan {
    pub originals: Vec<(String, String, WeightTensor)>,
    pub new_initializers: Vec<TensorProto>,
    pub repoint: Vec<(NodeId, usize, String)>,
    pub consumers: Vec<String>,
    pub mapping: Vec<Folded>,
    pub folded_any: bool,
}

/// The initializer behind a value (through `Identity`, which exporters use to share weights).
fn initializer<'m>(g: &GraphIndex<'m>, name: &str) -> Option<&'m TensorProto> {
    let mut v = name.to_string();
    for _ in 0..4 {
        if let Some(t) = g.initializer(&v).filter(|_| !g.is_overridable(&v)) {
            return Some(t);
        }
        let (_, n) = g
            .producer_node(&v)
            .filter(|(_, n)| n.op_type() == "Identity")?;
        v = n.input.first()?.clone();
    }
    None
}

fn values(g: &GraphIndex<'_>, name: &str) -> Result<(Vec<f64>, Vec<i64>), String> {
    let t = initializer(g, name).ok_or_else(|| {
        if g.is_overridable(name) {
            format!("'{name}' is an initializer that is also a graph input (IR version >= 4): a feed may override it")
        } else {
            format!("'{name}' is not a constant initializer")
        }
    })?;
    let w = WeightTensor::from_proto(g.model, t).map_err(|e| e.to_string())?;
    let v = decode(&w).ok_or_else(|| format!("'{name}' has a type that cannot be folded"))?;
    Ok((v, t.dims.clone()))
}

fn decode(w: &WeightTensor) -> Option<Vec<f64>> {
    let d = &w.data;
    Some(match w.elem_type {
        dtype::FLOAT => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        dtype::DOUBLE => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        dtype::FLOAT16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        dtype::BFLOAT16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        _ => return None,
    })
}

fn encode(elem_type: i32, v: &[f64]) -> Vec<u8> {
    match elem_type {
        dtype::FLOAT => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
        dtype::DOUBLE => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        dtype::FLOAT16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f64(x).to_le_bytes())
            .collect(),
        _ => v
            .iter()
            .flat_map(|&x| half::bf16::from_f64(x).to_le_bytes())
            .collect(),
    }
}

/// A per-row vector of length `h` from a `[h]` or `[1, .., 1, h]` parameter.
fn row_vector(
    g: &GraphIndex<'_>,
    p: &Option<String>,
    h: usize,
) -> Result<Option<Vec<f64>>, String> {
    let Some(p) = p else { return Ok(None) };
    let (v, dims) = values(g, p)?;
    let leading_ones = dims.iter().rev().skip(1).all(|&d| d == 1);
    if v.len() != h || !leading_ones {
        return Err(format!("'{p}' is not a vector over the last axis"));
    }
    Ok(Some(v))
}

/// The nodes that consume the normalised values, looking through what keeps the last axis as it
/// is (`Reshape` to `[..., H]`) and ignoring what reads only the shape (`Shape`, `Size`).
fn linear_consumers(g: &GraphIndex<'_>, output: &str) -> Result<Vec<(NodeId, String)>, String> {
    let mut out = Vec::new();
    let mut stack = vec![output.to_string()];
    while let Some(v) = stack.pop() {
        for &cid in g.consumers(&v) {
            let c = g.node(cid);
            match c.op_type() {
                "Shape" | "Size" => {}
                "Reshape" if c.input.first() == Some(&v) && keeps_last_axis(g, &v, c) => {
                    if g.is_graph_output(&c.output[0]) {
                        return Err(format!("'{}' is a graph output", c.output[0]));
                    }
                    stack.push(c.output[0].clone());
                }
                _ => out.push((cid, v.clone())),
            }
        }
    }
    Ok(out)
}

/// A `Reshape` whose constant target ends in the input's known last dimension.
fn keeps_last_axis(
    g: &GraphIndex<'_>,
    input: &str,
    reshape: &crate::onnx::proto::NodeProto,
) -> bool {
    let last = g
        .shape(input)
        .and_then(|s| s.last())
        .and_then(|d| d.known());
    let target = reshape.input.get(1).and_then(|t| g.constant(t));
    match (
        last,
        target
            .as_ref()
            .and_then(|t| t.as_ints())
            .and_then(|t| t.last().copied()),
    ) {
        (Some(h), Some(t)) => h == t,
        _ => false,
    }
}

pub fn plan(
    g: &GraphIndex<'_>,
    m: &Match,
    node_name: &str,
    names: &mut Names,
) -> Result<FoldPlan, String> {
    if m.scale.is_none() && m.bias.is_none() {
        return Ok(FoldPlan::default());
    }
    if m.axis != Some(-1) {
        return Err(
            "only a normalisation over the last axis can be folded into a linear layer".into(),
        );
    }
    if g.is_graph_output(&m.output) {
        return Err(format!("its output '{}' is a graph output", m.output));
    }
    let mut plan = FoldPlan::default();
    let consumers = linear_consumers(g, &m.output)?;
    if consumers.is_empty() {
        return Err("nothing reads its output".into());
    }
    for (cid, read) in consumers {
        let c = g.node(cid);
        let label = g.label(cid);
        if c.name().is_empty() {
            return Err(format!(
                "consumer '{label}' has no name, so a revert could not find it again"
            ));
        }
        let not_linear = || {
            format!("consumer '{label}' ({}) is not a MatMul/Gemm reading it as its first input with a constant 2-D weight", c.op_type())
        };
        let linear = match c.op_type() {
            "MatMul" => true,
            "Gemm" => {
                attr::int(c, "transA").unwrap_or(0) == 0
                    && attr::float(c, "alpha").unwrap_or(1.0) == 1.0
                    && attr::float(c, "beta").unwrap_or(1.0) == 1.0
            }
            _ => false,
        };
        if !linear || c.input.first() != Some(&read) || c.input.get(1) == Some(&read) {
            return Err(not_linear());
        }
        let w_name = &c.input[1];
        let (w, dims) = values(g, w_name).map_err(|_| not_linear())?;
        if dims.len() != 2 {
            return Err(not_linear());
        }
        let trans_b = c.op_type() == "Gemm" && attr::int(c, "transB").unwrap_or(0) == 1;
        let (h, o) = if trans_b {
            (dims[1] as usize, dims[0] as usize)
        } else {
            (dims[0] as usize, dims[1] as usize)
        };
        // The payload must hold exactly the declared elements (a malformed file may not).
        if h.checked_mul(o) != Some(w.len()) || dims.iter().any(|&d| d < 0) {
            return Err(format!("weight '{w_name}' of consumer '{label}' holds {} values, not its declared {dims:?}", w.len()));
        }
        let at = |i: usize, j: usize| if trans_b { j * h + i } else { i * o + j };
        let gamma = row_vector(g, &m.scale, h)?;
        let beta = row_vector(g, &m.bias, h)?;
        let w_t = initializer(g, w_name).expect("checked");
        let elem = w_t.data_type();

        // W' = diag(gamma) W
        if let Some(gamma) = &gamma {
            let mut w2 = w.clone();
            for i in 0..h {
                for j in 0..o {
                    w2[at(i, j)] *= gamma[i];
                }
            }
            let new_name = names.fresh(&format!("{w_name}.folded:{}", c.name()));
            plan.new_initializers.push(
                WeightTensor {
                    elem_type: elem,
                    dims: dims.clone(),
                    data: encode(elem, &w2),
                }
                .to_proto(&new_name),
            );
            plan.originals.push((
                format!("{node_name}/fold/{w_name}"),
                w_name.clone(),
                WeightTensor::from_proto(g.model, w_t).map_err(|e| e.to_string())?,
            ));
            plan.repoint.push((cid, 1, new_name.clone()));
            plan.mapping.push(Folded {
                node: c.name().to_string(),
                input: 1,
                original: w_name.clone(),
                folded: new_name,
            });
        }
        // b' = b + beta W, into the consumer's bias (Gemm C, or the Add after a MatMul).
        if let Some(beta) = &beta {
            let bw: Vec<f64> = (0..o)
                .map(|j| (0..h).map(|i| beta[i] * w[at(i, j)]).sum())
                .collect();
            let (bias_node, slot, b_name) = if c.op_type() == "Gemm" {
                let b = c.input.get(2).filter(|s| !s.is_empty()).ok_or_else(|| {
                    format!("consumer '{label}' has no bias to fold the normalisation's bias into")
                })?;
                (cid, 2, b.clone())
            } else {
                let out = &c.output[0];
                let [add_id] = g.consumers(out) else {
                    return Err(format!("consumer '{label}' is not followed by a single bias Add to fold the normalisation's bias into"));
                };
                let add = g.node(*add_id);
                if add.name().is_empty() {
                    return Err(format!("the bias Add after '{label}' has no name, so a revert could not find it again"));
                }
                let slot = add
                    .input
                    .iter()
                    .position(|i| i != out)
                    .filter(|_| add.op_type() == "Add" && !g.is_graph_output(out));
                let slot = slot
                    .ok_or_else(|| format!("consumer '{label}' is not followed by a bias Add"))?;
                (*add_id, slot, add.input[slot].clone())
            };
            let (b, b_dims) = values(g, &b_name)?;
            if b.len() != o || b_dims.iter().rev().skip(1).any(|&d| d != 1) {
                return Err(format!(
                    "bias '{b_name}' of consumer '{label}' is not a vector of its {o} outputs"
                ));
            }
            let b2: Vec<f64> = b.iter().zip(&bw).map(|(x, y)| x + y).collect();
            let b_t = initializer(g, &b_name).expect("checked");
            let new_name = names.fresh(&format!("{b_name}.folded:{}", g.node(bias_node).name()));
            plan.new_initializers.push(
                WeightTensor {
                    elem_type: b_t.data_type(),
                    dims: b_dims.clone(),
                    data: encode(b_t.data_type(), &b2),
                }
                .to_proto(&new_name),
            );
            plan.originals.push((
                format!("{node_name}/fold/{b_name}"),
                b_name.clone(),
                WeightTensor::from_proto(g.model, b_t).map_err(|e| e.to_string())?,
            ));
            plan.repoint.push((bias_node, slot, new_name.clone()));
            plan.mapping.push(Folded {
                node: g.node(bias_node).name().to_string(),
                input: slot,
                original: b_name,
                folded: new_name,
            });
        }
        plan.consumers.push(format!("'{label}'"));
    }
    // The gain/bias themselves are recorded with the removed subgraph (they are constants the
    // removed nodes read), so nothing else is needed for revert.
    plan.folded_any = true;
    Ok(plan)
}
