//! ONNX Runtime's `com.microsoft.EmbedLayerNormalization` split into standard ops in front of
//! the node that replaces its norm, so that `rewrite` can change that norm too and the model
//! runs where the contrib op does not (tract, runtimes without ONNX Runtime's contrib ops).
//!
//! What the op computes (ONNX Runtime's CPU kernel, the reference; its schema doc says the same
//! for the cases a BERT tokenizer produces):
//! - `sum = (word_embedding[input_ids] + position_embedding[positions]) + segment`, positions
//!   `position_ids` when given (`[1, S]` or `[B, S]`), else `0..S`; the segment term is
//!   `segment_embedding[segment_ids]`, or `segment_embedding[0]` for every token when only the
//!   table is given, or nothing;
//! - output 0: LayerNorm of the sum over the hidden axis (biased variance, ε inside the root),
//!   then γ and β: what the new node computes;
//! - output 1 (`mask_index`, int32 `[B]`): per row, how many mask entries equal 1 (zeros
//!   without a mask); output 2 (`embedding_sum`): the sum itself.
//!
//! Nothing here is a node the original had: every node is in `insert`, recorded as inserted,
//! and `revert` removes them when it restores the op.

use super::names::Names;
use super::node::{int_attr, ints_attr};
use crate::graph::GraphIndex;
use crate::onnx::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto, TensorProto};

/// The input slots of `EmbedLayerNormalization`.
const INPUT_IDS: usize = 0;
const SEGMENT_IDS: usize = 1;
const WORD_EMBEDDING: usize = 2;
const POSITION_EMBEDDING: usize = 3;
const SEGMENT_EMBEDDING: usize = 4;
const MASK: usize = 7;
const POSITION_IDS: usize = 8;
/// Its optional outputs.
const MASK_INDEX: usize = 1;
const EMBEDDING_SUM: usize = 2;

/// The opset the standard ops below need (`Slice` with its bounds as inputs).
pub const MIN_OPSET: i64 = 10;

fn present(values: &[String], i: usize) -> Option<&str> {
    values.get(i).map(String::as_str).filter(|s| !s.is_empty())
}

/// The outputs other than the normalised one that the split computes, for the revert record.
pub fn extra_outputs(n: &NodeProto) -> Vec<String> {
    [MASK_INDEX, EMBEDDING_SUM]
        .into_iter()
        .filter_map(|i| present(&n.output, i).map(str::to_string))
        .collect()
}

/// Whether `n` can be split: its ids and tables are there, a segment table with its ids, and the
/// model's opset has the ops. What `split` needs, checked before anything is staged.
pub fn can_split(g: &GraphIndex<'_>, n: &NodeProto) -> Result<(), String> {
    if [INPUT_IDS, WORD_EMBEDDING, POSITION_EMBEDDING]
        .iter()
        .any(|&i| present(&n.input, i).is_none())
    {
        return Err("it lacks its input_ids or an embedding table".into());
    }
    if present(&n.input, SEGMENT_IDS).is_some() && present(&n.input, SEGMENT_EMBEDDING).is_none() {
        return Err("it has segment_ids but no segment_embedding table".into());
    }
    let opset = g.model.opset("").unwrap_or(1);
    if opset < MIN_OPSET {
        return Err(format!(
            "its standard-op form needs the model's default opset >= {MIN_OPSET} (it imports {opset})"
        ));
    }
    Ok(())
}

/// Builds the embedding sum of `n` (and its `mask_index` / `embedding_sum` outputs where the
/// graph reads them) as standard ops pushed to `insert`; returns the sum's name, the new node's
/// `X`. `Err` says why the op cannot be split (missing inputs, too old an opset).
pub fn split(
    g: &GraphIndex<'_>,
    n: &NodeProto,
    name: &str,
    insert: &mut Vec<NodeProto>,
    names: &mut Names,
) -> Result<String, String> {
    can_split(g, n)?;
    let (Some(ids), Some(word), Some(position)) = (
        present(&n.input, INPUT_IDS),
        present(&n.input, WORD_EMBEDDING),
        present(&n.input, POSITION_EMBEDDING),
    ) else {
        return Err("it lacks its input_ids or an embedding table".into());
    };
    let opset = g.model.opset("").unwrap_or(1);
    let mut b = Emitter {
        prefix: name,
        insert,
        names,
    };
    let words = b.node("Gather", "word", &[word, ids], vec![int_attr("axis", 0)]);
    let positions = match present(&n.input, POSITION_IDS) {
        Some(position_ids) => b.node(
            "Gather",
            "position",
            &[position, position_ids],
            vec![int_attr("axis", 0)],
        ),
        // The first S rows of the table, S = input_ids' second dimension.
        None => {
            let shape = b.node("Shape", "ids_shape", &[ids], vec![]);
            let one = b.int64("one", &[1], &[1]);
            let seq = b.node(
                "Gather",
                "seq_len",
                &[&shape, &one],
                vec![int_attr("axis", 0)],
            );
            let zero = b.int64("zero", &[1], &[0]);
            b.node("Slice", "position", &[position, &zero, &seq, &zero], vec![])
        }
    };
    let sum = b.node("Add", "word_plus_position", &[&words, &positions], vec![]);
    let segment = match (
        present(&n.input, SEGMENT_EMBEDDING),
        present(&n.input, SEGMENT_IDS),
    ) {
        (Some(table), Some(segment_ids)) => Some(b.node(
            "Gather",
            "segment",
            &[table, segment_ids],
            vec![int_attr("axis", 0)],
        )),
        (Some(table), None) => {
            let first = b.int64("first_segment", &[], &[0]);
            Some(b.node(
                "Gather",
                "segment",
                &[table, &first],
                vec![int_attr("axis", 0)],
            ))
        }
        (None, _) => None,
    };
    let sum = match segment {
        Some(s) => b.node("Add", "embedding_sum", &[&sum, &s], vec![]),
        None => sum,
    };
    // Under the op's own names where the graph reads them.
    if let Some(out) = present(&n.output, EMBEDDING_SUM) {
        b.node_into("Identity", "embedding_sum_out", &[&sum], out, vec![]);
    }
    if let Some(out) = present(&n.output, MASK_INDEX) {
        mask_index(&mut b, g, n, ids, out, opset);
    }
    Ok(sum)
}

/// `mask_index`: per row, the count of mask entries equal to 1, as int32; zeros without a mask.
fn mask_index(
    b: &mut Emitter<'_>,
    g: &GraphIndex<'_>,
    n: &NodeProto,
    ids: &str,
    out: &str,
    opset: i64,
) {
    let Some(mask) = present(&n.input, MASK) else {
        let shape = b.node("Shape", "ids_shape_for_mask", &[ids], vec![]);
        let zero = b.int64("batch_axis", &[1], &[0]);
        let batch = b.node(
            "Gather",
            "batch",
            &[&shape, &zero],
            vec![int_attr("axis", 0)],
        );
        let value = tensor(crate::onnx::dtype::INT32, &[1], &[0]);
        b.node_into(
            "ConstantOfShape",
            "mask_index",
            &[&batch],
            out,
            vec![tensor_attr("value", value)],
        );
        return;
    };
    let mask_type = g.elem_type(mask).unwrap_or(crate::onnx::dtype::INT32);
    let one = b.constant("mask_one", tensor(mask_type, &[], &[1]));
    let ones = b.node("Equal", "mask_is_one", &[mask, &one], vec![]);
    let counted = b.node(
        "Cast",
        "mask_as_int32",
        &[&ones],
        vec![int_attr("to", crate::onnx::dtype::INT32 as i64)],
    );
    // ReduceSum takes its axes as an input from opset 13.
    if opset >= 13 {
        let axes = b.int64("mask_axes", &[1], &[1]);
        b.node_into(
            "ReduceSum",
            "mask_index",
            &[&counted, &axes],
            out,
            vec![int_attr("keepdims", 0)],
        );
    } else {
        b.node_into(
            "ReduceSum",
            "mask_index",
            &[&counted],
            out,
            vec![ints_attr("axes", &[1]), int_attr("keepdims", 0)],
        );
    }
}

/// Writes the split's nodes, each named (and its output) fresh under the replaced op's name.
struct Emitter<'a> {
    prefix: &'a str,
    insert: &'a mut Vec<NodeProto>,
    names: &'a mut Names,
}

impl Emitter<'_> {
    fn node(
        &mut self,
        op: &str,
        what: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        let out = self.names.fresh(&format!("{}/{what}", self.prefix));
        self.node_into(op, what, inputs, &out, attrs);
        out
    }

    fn node_into(
        &mut self,
        op: &str,
        what: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<AttributeProto>,
    ) {
        let name = self.names.fresh(&format!("{}/{op}_{what}", self.prefix));
        self.insert.push(NodeProto {
            name: Some(name),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute: attrs,
            ..Default::default()
        });
    }

    fn constant(&mut self, what: &str, value: TensorProto) -> String {
        self.node("Constant", what, &[], vec![tensor_attr("value", value)])
    }

    fn int64(&mut self, what: &str, dims: &[i64], values: &[i64]) -> String {
        self.constant(what, tensor(crate::onnx::dtype::INT64, dims, values))
    }
}

/// A small integer tensor (`int64_data` or `int32_data`, as ONNX stores those types).
fn tensor(elem_type: i32, dims: &[i64], values: &[i64]) -> TensorProto {
    let mut t = TensorProto {
        dims: dims.to_vec(),
        data_type: Some(elem_type),
        ..Default::default()
    };
    if elem_type == crate::onnx::dtype::INT64 {
        t.int64_data = values.to_vec();
    } else {
        t.int32_data = values.iter().map(|&v| v as i32).collect();
    }
    t
}

fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}
