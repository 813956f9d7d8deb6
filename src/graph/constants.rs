//! Constant values: initializers (unless a graph input of the same name can override them: IR ≥ 4),
//! `Constant` nodes, `Identity`/`Cast`/`CastLike`/`Reshape`/`Squeeze`/`Unsqueeze` of a constant,
//! and arithmetic and comparisons of one-element constants (jax2onnx writes a variance's divisor
//! as `Sub(32.0, Cast(ddof))` and guards it with `Greater(divisor, 0)`).
//! Values are decoded lazily and cached; only small tensors are decoded (weights are referred
//! to by name, never read).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use half::{bf16, f16};

use super::GraphIndex;
use crate::onnx::dtype::{self, BFLOAT16, BOOL, FLOAT, FLOAT16, INT32, INT64};
use crate::onnx::proto::NodeProto;
use crate::onnx::tensor::{decode, ConstValue};
use crate::onnx::{attr, Model};

pub struct Constants<'m> {
    model: &'m Model,
    cache: RefCell<HashMap<String, Option<Rc<ConstValue>>>>,
}

impl<'m> Constants<'m> {
    pub fn new(model: &'m Model) -> Self {
        Constants {
            model,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// Records a value known from an enclosing graph (see `GraphIndex::subgraphs`).
    pub fn seed(&self, name: &str, value: Rc<ConstValue>) {
        self.cache
            .borrow_mut()
            .insert(name.to_string(), Some(value));
    }

    pub fn value(&self, g: &GraphIndex<'m>, name: &str) -> Option<Rc<ConstValue>> {
        if let Some(hit) = self.cache.borrow().get(name) {
            return hit.clone();
        }
        let v = self.compute(g, name, 0).map(Rc::new);
        self.cache.borrow_mut().insert(name.to_string(), v.clone());
        v
    }

    /// Whether a value is a constant at all (large weights included, which `value` does not
    /// decode).
    pub fn is_constant(&self, g: &GraphIndex<'m>, name: &str) -> bool {
        if (g.initializer(name).is_some() && !g.is_overridable(name)) || g.is_outer_constant(name) {
            return true;
        }
        match g.producer_node(name) {
            Some((_, n)) if n.op_type() == "Constant" && crate::onnx::is_standard(n) => true,
            Some((_, n))
                if matches!(n.op_type(), "Identity" | "Cast" | "CastLike")
                    && crate::onnx::is_standard(n) =>
            {
                n.input.first().is_some_and(|i| self.is_constant(g, i))
            }
            // A constant viewed in another shape (axes lists built by Reshape of a Constant).
            Some((_, n))
                if matches!(n.op_type(), "Reshape" | "Squeeze" | "Unsqueeze" | "Flatten")
                    && crate::onnx::is_standard(n) =>
            {
                n.input
                    .iter()
                    .filter(|i| !i.is_empty())
                    .all(|i| self.is_constant(g, i))
            }
            // A quantised constant read back as floats (QDQ models store ε, γ and β so).
            Some((_, n)) if n.op_type() == "DequantizeLinear" && crate::onnx::is_standard(n) => n
                .input
                .iter()
                .filter(|i| !i.is_empty())
                .all(|i| self.is_constant(g, i)),
            // Scalar arithmetic: constant exactly when it folds (see `compute`); likewise a
            // quantised one-element constant (ONNX Runtime's QDQ of an ε `Constant` node).
            Some((_, n))
                if is_scalar_arithmetic(n)
                    || n.op_type() == "Size"
                    || (n.op_type() == "QuantizeLinear" && crate::onnx::is_standard(n)) =>
            {
                self.value(g, name).is_some()
            }
            _ => false,
        }
    }

    fn compute(&self, g: &GraphIndex<'m>, name: &str, depth: usize) -> Option<ConstValue> {
        // (Deep enough for paddle2onnx's row counts: Size, Casts, Div, Identity after each.)
        if depth > 24 {
            return None;
        }
        if let Some(t) = g.initializer(name) {
            if g.is_overridable(name) {
                return None; // a default the caller may override: not a constant
            }
            return decode(self.model, t).ok().flatten();
        }
        let (_, node) = g.producer_node(name)?;
        if !crate::onnx::is_standard(node) {
            return None;
        }
        match node.op_type() {
            "Constant" => constant_node_value(self.model, node),
            "Identity" => self.value_of_input(g, node, 0, depth),
            "Cast" => {
                let v = self.value_of_input(g, node, 0, depth)?;
                cast(v, attr::int(node, "to")? as i32)
            }
            // The type comes from the second input (the dynamo exporter without its optimizer
            // writes `CastLike(Constant 1.0, x)`).
            "CastLike" => {
                let v = self.value_of_input(g, node, 0, depth)?;
                cast(v, g.elem_type(node.input.get(1)?)?)
            }
            "Reshape" | "Squeeze" | "Unsqueeze" | "Flatten" => {
                // Only the numbers matter to the matcher (axes lists, scalars), not the layout.
                let mut v = self.value_of_input(g, node, 0, depth)?;
                v.dims = vec![v.numel() as i64];
                Some(v)
            }
            // The element count of a value whose dimensions are all known.
            "Size" => {
                let shape = g.shape(node.input.first()?)?;
                let count = shape
                    .iter()
                    .try_fold(1i64, |n, d| n.checked_mul(d.known()?))?;
                Some(ConstValue {
                    elem_type: INT64,
                    dims: vec![],
                    floats: None,
                    ints: Some(vec![count]),
                })
            }
            "DequantizeLinear" => {
                let q = self.value_of_input(g, node, 0, depth)?;
                let scale = self.value_of_input(g, node, 1, depth)?;
                let zero = match node.input.get(2).filter(|z| !z.is_empty()) {
                    Some(_) => self.value_of_input(g, node, 2, depth)?.scalar_f64()?,
                    None => 0.0,
                };
                dequantized(&q, &scale, zero)
            }
            "QuantizeLinear" => {
                let x = self.value_of_input(g, node, 0, depth)?;
                let scale = self.value_of_input(g, node, 1, depth)?;
                let zero = match node.input.get(2).filter(|z| !z.is_empty()) {
                    Some(_) => Some(self.value_of_input(g, node, 2, depth)?),
                    None => None,
                };
                quantized(node, &x, &scale, zero.as_ref())
            }
            _ if is_scalar_arithmetic(node) => {
                let a = self.value_of_input(g, node, 0, depth)?;
                let b = self.value_of_input(g, node, 1, depth)?;
                scalar_arithmetic(node.op_type(), &a, &b)
            }
            _ => None,
        }
    }

    fn value_of_input(
        &self,
        g: &GraphIndex<'m>,
        node: &NodeProto,
        i: usize,
        depth: usize,
    ) -> Option<ConstValue> {
        let input = node.input.get(i)?;
        if let Some(hit) = self.cache.borrow().get(input.as_str()) {
            return hit.as_deref().cloned();
        }
        self.compute(g, input, depth + 1)
    }
}

fn constant_node_value(model: &Model, node: &NodeProto) -> Option<ConstValue> {
    if let Some(t) = attr::tensor(node, "value") {
        return decode(model, t).ok().flatten();
    }
    if let Some(f) = attr::float(node, "value_float") {
        return Some(ConstValue {
            elem_type: FLOAT,
            dims: vec![],
            floats: Some(vec![f as f64]),
            ints: None,
        });
    }
    if let Some(i) = attr::int(node, "value_int") {
        return Some(ConstValue {
            elem_type: INT64,
            dims: vec![],
            floats: None,
            ints: Some(vec![i]),
        });
    }
    let a = attr::find(node, "value_floats").or_else(|| attr::find(node, "value_ints"))?;
    if a.name() == "value_floats" {
        let f: Vec<f64> = a.floats.iter().map(|&v| v as f64).collect();
        Some(ConstValue {
            elem_type: FLOAT,
            dims: vec![f.len() as i64],
            floats: Some(f),
            ints: None,
        })
    } else {
        Some(ConstValue {
            elem_type: INT64,
            dims: vec![a.ints.len() as i64],
            floats: None,
            ints: Some(a.ints.clone()),
        })
    }
}

fn is_scalar_arithmetic(node: &NodeProto) -> bool {
    crate::onnx::is_standard(node)
        && node.input.len() == 2
        && matches!(
            node.op_type(),
            "Add"
                | "Sub"
                | "Mul"
                | "Div"
                | "Max"
                | "Min"
                | "Greater"
                | "Less"
                | "GreaterOrEqual"
                | "LessOrEqual"
                | "Equal"
        )
}

/// `op(a, b)` for one-element constants (any rank; the result has the larger rank, all ones),
/// rounded to the operands' type as the runtime would; comparisons give a bool. Integer
/// division only where it is exact (ONNX leaves the rounding of the rest to the runtime).
fn scalar_arithmetic(op: &str, a: &ConstValue, b: &ConstValue) -> Option<ConstValue> {
    let (x, y) = (a.scalar_f64()?, b.scalar_f64()?);
    let dims = vec![1; a.dims.len().max(b.dims.len())];
    let compared = match op {
        "Greater" => Some(x > y),
        "Less" => Some(x < y),
        "GreaterOrEqual" => Some(x >= y),
        "LessOrEqual" => Some(x <= y),
        "Equal" => Some(x == y),
        _ => None,
    };
    if let Some(c) = compared {
        return Some(ConstValue {
            elem_type: BOOL,
            dims,
            floats: None,
            ints: Some(vec![c as i64]),
        });
    }
    if a.elem_type != b.elem_type {
        return None; // not valid ONNX: leave it to the runtime to refuse
    }
    let value = if a.is_float() {
        match op {
            "Add" => x + y,
            "Sub" => x - y,
            "Mul" => x * y,
            "Max" => x.max(y),
            "Min" => x.min(y),
            _ => x / y,
        }
    } else {
        let (i, j) = (a.ints.as_ref()?[0], b.ints.as_ref()?[0]);
        (match op {
            "Add" => i.checked_add(j),
            "Sub" => i.checked_sub(j),
            "Mul" => i.checked_mul(j),
            "Max" => Some(i.max(j)),
            "Min" => Some(i.min(j)),
            // (checked: i64::MIN / -1 overflows)
            _ => (i.checked_rem(j) == Some(0))
                .then(|| i.checked_div(j))
                .flatten(),
        })? as f64
    };
    let mut out = cast(
        ConstValue {
            elem_type: dtype::DOUBLE,
            dims: vec![],
            floats: Some(vec![value]),
            ints: None,
        },
        a.elem_type,
    )?;
    out.dims = dims;
    Some(out)
}

/// `QuantizeLinear` of a one-element float constant as ONNX Runtime computes it: `x / scale` in
/// float32, rounded half to even, plus the zero point, saturated to the integer type (the zero
/// point's, else `output_dtype`, else uint8).
fn quantized(
    node: &NodeProto,
    x: &ConstValue,
    scale: &ConstValue,
    zero: Option<&ConstValue>,
) -> Option<ConstValue> {
    if !x.is_float() || !scale.is_float() {
        return None;
    }
    let to = match zero {
        Some(z) => z.elem_type,
        None => attr::int(node, "output_dtype")
            .map(|t| t as i32)
            .filter(|&t| t != 0)
            .unwrap_or(dtype::UINT8),
    };
    let (lo, hi) = match to {
        dtype::INT8 => (-128.0, 127.0),
        dtype::UINT8 => (0.0, 255.0),
        dtype::INT16 => (-32768.0, 32767.0),
        dtype::UINT16 => (0.0, 65535.0),
        _ => return None,
    };
    let zp = zero.map_or(Some(0.0), ConstValue::scalar_f64)? as f32;
    let (x, s) = (x.scalar_f64()? as f32, scale.scalar_f64()? as f32);
    let q = ((x / s).round_ties_even() + zp).clamp(lo, hi);
    if !q.is_finite() {
        return None;
    }
    Some(ConstValue {
        elem_type: to,
        dims: vec![],
        floats: None,
        ints: Some(vec![q as i64]),
    })
}

/// `(q − zero) · scale` for a one-element quantised constant with a per-tensor scale, in the
/// scale's type (what ONNX Runtime computes; `DequantizeLinear` of a larger tensor is a
/// parameter, never decoded).
fn dequantized(q: &ConstValue, scale: &ConstValue, zero: f64) -> Option<ConstValue> {
    let q_dims = &q.dims;
    let (q, s) = (q.scalar_f64()?, scale.scalar_f64()?);
    if !scale.is_float() {
        return None;
    }
    cast(
        ConstValue {
            elem_type: dtype::DOUBLE,
            dims: q_dims.to_vec(),
            floats: Some(vec![(q - zero) * s]),
            ints: None,
        },
        scale.elem_type,
    )
}

/// Applies a Cast to a constant, rounding floats to the target precision as the runtime would.
fn cast(v: ConstValue, to: i32) -> Option<ConstValue> {
    let as_f64: Vec<f64> = match (&v.floats, &v.ints) {
        (Some(f), _) => f.clone(),
        (_, Some(i)) => i.iter().map(|&x| x as f64).collect(),
        _ => return None,
    };
    let out = ConstValue {
        elem_type: to,
        dims: v.dims.clone(),
        floats: None,
        ints: None,
    };
    Some(match to {
        FLOAT => ConstValue {
            floats: Some(as_f64.iter().map(|&x| x as f32 as f64).collect()),
            ..out
        },
        FLOAT16 => ConstValue {
            floats: Some(as_f64.iter().map(|&x| f16::from_f64(x).to_f64()).collect()),
            ..out
        },
        BFLOAT16 => ConstValue {
            floats: Some(as_f64.iter().map(|&x| bf16::from_f64(x).to_f64()).collect()),
            ..out
        },
        t if t == dtype::DOUBLE => ConstValue {
            floats: Some(as_f64),
            ..out
        },
        INT64 | INT32 => ConstValue {
            ints: Some(as_f64.iter().map(|&x| x as i64).collect()),
            ..out
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: f64, dims: &[i64]) -> ConstValue {
        ConstValue {
            elem_type: FLOAT,
            dims: dims.to_vec(),
            floats: Some(vec![v]),
            ints: None,
        }
    }

    fn i64s(v: i64) -> ConstValue {
        ConstValue {
            elem_type: INT64,
            dims: vec![],
            floats: None,
            ints: Some(vec![v]),
        }
    }

    #[test]
    fn scalar_arithmetic_rounds_to_the_operand_type() {
        let n = scalar_arithmetic("Sub", &f32s(32.0, &[]), &f32s(1.0, &[1])).unwrap();
        assert_eq!(
            (n.scalar_f64(), n.dims.as_slice()),
            (Some(31.0), &[1i64][..])
        );
        // 1/3 in float32, as the runtime computes it.
        let third = scalar_arithmetic("Div", &f32s(1.0, &[]), &f32s(3.0, &[])).unwrap();
        assert_eq!(third.scalar_f64(), Some((1.0f32 / 3.0) as f64));
        let gt = scalar_arithmetic("Greater", &f32s(31.0, &[]), &f32s(0.0, &[])).unwrap();
        assert_eq!((gt.elem_type, gt.ints), (BOOL, Some(vec![1])));
    }

    #[test]
    fn integer_division_only_where_exact_and_never_overflowing() {
        assert_eq!(
            scalar_arithmetic("Div", &i64s(12), &i64s(4)).and_then(|v| v.scalar_f64()),
            Some(3.0)
        );
        assert!(scalar_arithmetic("Div", &i64s(7), &i64s(2)).is_none());
        assert!(scalar_arithmetic("Div", &i64s(7), &i64s(0)).is_none());
        assert!(scalar_arithmetic("Div", &i64s(i64::MIN), &i64s(-1)).is_none());
        assert!(scalar_arithmetic("Mul", &i64s(i64::MAX), &i64s(2)).is_none());
    }

    #[test]
    fn mixed_types_and_tensors_are_not_folded() {
        assert!(scalar_arithmetic("Add", &f32s(1.0, &[]), &i64s(1)).is_none());
        let pair = ConstValue {
            elem_type: FLOAT,
            dims: vec![2],
            floats: Some(vec![1.0, 2.0]),
            ints: None,
        };
        assert!(scalar_arithmetic("Add", &pair, &f32s(1.0, &[])).is_none());
    }
}
