//! Version 2's residual slots in standard ops: a node with `Skip` / `Bias` / `Sum` is the `Add`s it
//! stands for, `S = (X + Bias) + Skip` rounded per `Add` (ops-spec.md), followed by the same node
//! without those slots reading `S`. `revert` and `--portable` write that form.

use adanorm_kernels::params::slot;

use super::names::Names;
use crate::onnx::proto::NodeProto;

/// The name of input or output `index` of `names`, if present (named, not empty).
fn present(names: &[String], index: usize) -> Option<&str> {
    names
        .get(index)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// Splits a version-2 node into the `Add`s of its residual and a version-1 node reading their
/// sum: `Add(X, Bias)`, then `Add(., Skip)`, each present term only, the last writing `Sum`'s
/// name when the node has one. `None` for a node without residual slots.
pub fn split(n: &NodeProto, names: &mut Names) -> Option<(Vec<NodeProto>, NodeProto)> {
    let skip = present(&n.input, slot::SKIP);
    let bias = present(&n.input, slot::BIAS);
    let sum = present(&n.output, slot::SUM);
    if skip.is_none() && bias.is_none() && sum.is_none() {
        return None;
    }
    let label = n
        .name
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| n.output.first().cloned())
        .unwrap_or_else(|| "adanorm".into());
    let mut adds = Vec::new();
    let mut s = n.input[slot::X].clone();
    let terms: Vec<(&str, &str)> = [("bias", bias), ("skip", skip)]
        .into_iter()
        .filter_map(|(what, t)| Some((what, t?)))
        .collect();
    for (i, (what, term)) in terms.iter().enumerate() {
        let last = i + 1 == terms.len();
        let out = match (last, sum) {
            (true, Some(sum)) => sum.to_string(),
            _ => names.fresh(&format!("{label}/residual_{what}")),
        };
        adds.push(NodeProto {
            name: Some(names.fresh(&format!("{label}/add_{what}"))),
            op_type: Some("Add".into()),
            input: vec![s, term.to_string()],
            output: vec![out.clone()],
            ..Default::default()
        });
        s = out;
    }
    if terms.is_empty() {
        // Sum alone is X itself.
        let sum = sum.expect("one of the slots is present");
        adds.push(NodeProto {
            name: Some(names.fresh(&format!("{label}/sum"))),
            op_type: Some("Identity".into()),
            input: vec![s.clone()],
            output: vec![sum.to_string()],
            ..Default::default()
        });
    }
    let mut v1 = n.clone();
    v1.input.truncate(slot::SKIP);
    v1.input[slot::X] = s;
    v1.output.truncate(slot::SUM);
    Some((adds, v1))
}
