//! What `inspect` prints: a table for people, or one JSON object for programs (the shape is
//! fixed in design.md).

use serde_json::{json, Value};

use crate::graph::GraphIndex;
use crate::patterns::{summary, Match};

pub fn match_json(g: &GraphIndex<'_>, m: &Match) -> Value {
    json!({
        "family": m.family.name(),
        "form": m.form,
        "nodes": m.nodes.iter().map(|&id| g.label(id)).collect::<Vec<_>>(),
        "input": m.input,
        "output": m.output,
        "axis": m.axis,
        "axes": m.axes,
        "epsilon": m.epsilon,
        "unbiased": m.unbiased as i64,
        "eps_in_sqrt": m.eps_in_sqrt as i64,
        "c": m.c,
        "k": m.k,
        "scale": m.scale,
        "bias": m.bias,
        "mean_output": m.mean_output,
        "inv_std_output": m.inv_std_output,
        "dtype": m.dtype_name(),
        "rewritable": m.rewritable,
        "reason": m.reason,
    })
}

pub fn inspect_json(path: &str, g: &GraphIndex<'_>, matches: &[Match]) -> Value {
    let summary: serde_json::Map<String, Value> = summary(matches)
        .iter()
        .map(|(f, n)| (f.name().to_string(), json!(n)))
        .collect();
    json!({
        "model": path,
        "matches": matches.iter().map(|m| match_json(g, m)).collect::<Vec<_>>(),
        "summary": summary,
    })
}

/// Node names, shortened for the table when a match covers many nodes.
fn node_list(g: &GraphIndex<'_>, m: &Match) -> String {
    let names: Vec<String> = m.nodes.iter().map(|&id| g.label(id)).collect();
    if names.len() <= 2 {
        names.join(", ")
    } else {
        format!(
            "{} nodes: {} .. {}",
            names.len(),
            names[0],
            names[names.len() - 1]
        )
    }
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("none")
}

pub fn inspect_table(path: &str, g: &GraphIndex<'_>, matches: &[Match]) -> String {
    let mut out = format!("{path}: {} normalisation subgraph(s)\n", matches.len());
    for (i, m) in matches.iter().enumerate() {
        let axis = match m.axis {
            Some(a) => a.to_string(),
            None => format!("axes {:?}", m.axes),
        };
        out.push_str(&format!(
            "\n#{i} {family:<9} {form}\n   nodes    {nodes}\n   input    {input}  ->  output {output}\n   axis {axis}  epsilon {eps:e}  unbiased {ub}  eps_in_sqrt {eis}  c {c}  k {k}  dtype {dt}\n   scale    {scale}\n   bias     {bias}\n   rewrite  {rw}\n",
            family = m.family.name(),
            form = m.form,
            nodes = node_list(g, m),
            input = m.input,
            output = m.output,
            eps = m.epsilon,
            ub = m.unbiased as u8,
            eis = m.eps_in_sqrt as u8,
            c = m.c,
            k = m.k,
            dt = m.dtype_name(),
            scale = opt(&m.scale),
            bias = opt(&m.bias),
            rw = if m.rewritable && m.channels_first { "yes, between Transposes that make axis 1 the last".to_string() } else if m.rewritable { "yes".to_string() } else { format!("no: {}", m.reason.as_deref().unwrap_or("")) },
        ));
    }
    let s = summary(matches);
    out.push_str(&format!(
        "\nsummary: {}\n",
        s.iter()
            .map(|(f, n)| format!("{} {n}", f.name()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out
}
