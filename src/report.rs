//! What `inspect` prints: a table for people, or one JSON object for programs (its fields are
//! documented in README.md under `inspect`; scripts rely on them).

use serde_json::{json, Value};

use crate::graph::GraphIndex;
use crate::patterns::{summary, Match};

pub fn match_json(g: &GraphIndex<'_>, m: &Match) -> Value {
    json!({
        "graph": g.scope.label(),
        "family": m.family.name(),
        "form": m.form_name(),
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

/// Every graph's matches, the main graph first (see `GraphIndex::subgraphs`).
pub type Found<'a, 'm> = [(&'a GraphIndex<'m>, Vec<Match>)];

fn all_matches<'f>(
    found: &'f Found<'_, '_>,
) -> impl Iterator<Item = (&'f GraphIndex<'f>, &'f Match)> {
    found
        .iter()
        .flat_map(|(g, ms)| ms.iter().map(move |m| (*g, m)))
}

fn summary_of(found: &Found<'_, '_>) -> [(crate::patterns::Family, usize); 4] {
    let matches: Vec<Match> = all_matches(found).map(|(_, m)| m.clone()).collect();
    summary(&matches)
}

pub fn inspect_json(path: &str, found: &Found<'_, '_>) -> Value {
    let summary: serde_json::Map<String, Value> = summary_of(found)
        .iter()
        .map(|(f, n)| (f.name().to_string(), json!(n)))
        .collect();
    json!({
        "model": path,
        "matches": all_matches(found).map(|(g, m)| match_json(g, m)).collect::<Vec<_>>(),
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

pub fn inspect_table(path: &str, found: &Found<'_, '_>) -> String {
    let count = all_matches(found).count();
    let mut out = format!("{path}: {count} normalisation subgraph(s)\n");
    for (i, (g, m)) in all_matches(found).enumerate() {
        let axis = match m.axis {
            Some(a) => a.to_string(),
            None => format!("axes {:?}", m.axes),
        };
        out.push_str(&format!(
            "\n#{i} {family:<9} {form}\n{scope}   nodes    {nodes}\n   input    {input}  ->  output {output}\n   axis {axis}  epsilon {eps:e}  unbiased {ub}  eps_in_sqrt {eis}  c {c}  k {k}  dtype {dt}\n   scale    {scale}\n   bias     {bias}\n   rewrite  {rw}\n",
            family = m.family.name(),
            form = m.form_name(),
            scope = if g.scope.is_main() { String::new() } else { format!("   graph    {}\n", g.scope.label()) },
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
    let s = summary_of(found);
    out.push_str(&format!(
        "\nsummary: {}\n",
        s.iter()
            .map(|(f, n)| format!("{} {n}", f.name()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out
}

/// What `fuse`, `rewrite` and `revert` did, as `--json` prints it and the Python API returns it.
pub fn outcome_json(
    command: &str,
    input: &std::path::Path,
    output: &std::path::Path,
    weights: Option<&std::path::Path>,
    outcome: &crate::rewrite::Outcome,
    inlined_functions: &[String],
) -> Value {
    json!({
        "command": command,
        "model": input.display().to_string(),
        "output": output.display().to_string(),
        "weights": weights.map(|w| w.display().to_string()),
        "changes": outcome.changes.iter().map(|c| json!({
            "before": c.before,
            "after": c.after,
            "same_function": c.same_function,
            "note": c.note,
        })).collect::<Vec<_>>(),
        "left_as_is": outcome.skipped.iter().map(|(what, why)| json!({
            "what": what,
            "why": why,
        })).collect::<Vec<_>>(),
        "replaced": outcome.changes.len(),
        "same_function": outcome.same_function(),
        "inlined_functions": inlined_functions,
    })
}
