//! The input slots an op cannot do without. A node that leaves one of them out (or empty) is a
//! broken model that no runtime loads; the index refuses it at load with the node's name, so no
//! later reader (the matcher, the rewrites) ever meets a `Div` without a divisor.
//!
//! Only ops whose inputs this project reads by position are listed; other ops are taken as they
//! are.

use adanorm_kernels::params::OpKind;

use super::proto::NodeProto;

/// The required input slots of `node`'s op, by position (empty for ops not listed).
pub fn required_inputs(node: &NodeProto) -> &'static [usize] {
    const ONE: &[usize] = &[0];
    const TWO: &[usize] = &[0, 1];
    const THREE: &[usize] = &[0, 1, 2];
    match (node.domain(), node.op_type()) {
        ("" | "ai.onnx", op) => match op {
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "MatMul" | "Gemm" | "Reshape" | "Expand"
            | "Gather" | "Equal" | "Greater" | "GreaterOrEqual" | "Less" | "LessOrEqual"
            | "LayerNormalization" | "RMSNormalization" => TWO,
            "Where" | "InstanceNormalization" | "Range" => THREE,
            "BatchNormalization" => &[0, 1, 2, 3, 4],
            "Identity"
            | "Cast"
            | "Sqrt"
            | "Reciprocal"
            | "Relu"
            | "Neg"
            | "Shape"
            | "Size"
            | "ReduceMean"
            | "ReduceSum"
            | "ReduceSumSquare"
            | "ReduceProd"
            | "ReduceMax"
            | "ReduceMin"
            | "GlobalAveragePool"
            | "MeanVarianceNormalization"
            | "Flatten"
            | "Transpose"
            | "Squeeze"
            | "Unsqueeze"
            | "Concat"
            | "Max"
            | "Min"
            | "Clip"
            | "ConstantOfShape"
            | "Slice"
            | "If"
            | "Scan"
            | "Erf"
            | "Tanh"
            | "Sigmoid"
            | "Softmax"
            | "Exp"
            | "Log"
            | "Abs"
            | "Not"
            | "Sum"
            | "Mean" => ONE,
            _ => &[],
        },
        ("com.microsoft", op) => match op {
            "SkipLayerNormalization" | "SkipSimplifiedLayerNormalization" => THREE,
            "SimplifiedLayerNormalization" | "LayerNormalization" => TWO,
            // input_ids, word, position embeddings, gamma, beta (segments are optional).
            "EmbedLayerNormalization" => &[0, 2, 3, 5, 6],
            _ => &[],
        },
        (adanorm_kernels::params::DOMAIN, op) if OpKind::from_op_type(op).is_some() => ONE,
        _ => &[],
    }
}

/// The first required slot `node` leaves out, if any.
pub fn missing_input(node: &NodeProto) -> Option<usize> {
    required_inputs(node)
        .iter()
        .copied()
        .find(|&i| node.input.get(i).is_none_or(|s| s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(domain: &str, op: &str, inputs: &[&str]) -> NodeProto {
        NodeProto {
            domain: Some(domain.into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn missing_and_empty_required_slots_are_found() {
        assert_eq!(missing_input(&node("", "Div", &["a"])), Some(1));
        assert_eq!(missing_input(&node("", "Div", &["a", ""])), Some(1));
        assert_eq!(missing_input(&node("", "Div", &["a", "b"])), None);
        assert_eq!(missing_input(&node("ai.onnx", "Mul", &[])), Some(0));
        assert_eq!(
            missing_input(&node("com.microsoft", "SkipLayerNormalization", &["x"])),
            Some(1)
        );
        // Optional slots may be empty; unknown ops are not judged.
        assert_eq!(
            missing_input(&node("", "LayerNormalization", &["x", "s", ""])),
            None
        );
        assert_eq!(missing_input(&node("custom", "Mul", &[])), None);
    }
}
