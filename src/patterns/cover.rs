//! Whole-match checks: which nodes a match covers (core nodes, plus constant and shape helpers
//! that nothing else uses), where its input really is (casts in front of it belong to it only
//! when nothing else reads them), and whether it can be rewritten: no inner value may be a graph
//! output or be read outside the subgraph, and the axes must be expressible.

use std::collections::HashSet;

use super::canon::Canon;
use super::decomposed::Candidate;
use super::function_body;
use super::stats::Stats;
use super::{Family, Match};
use crate::graph::{dims, GraphIndex, NodeId};

/// Every match read at a standard-domain node of one of `op_types` (the anchors: the root for
/// decomposed forms, `BatchNormalization` for Keras 2's), in graph order, none overlapping
/// `claimed` or an earlier one.
pub fn scan(
    g: &GraphIndex<'_>,
    claimed: &HashSet<NodeId>,
    op_types: &[&str],
    read: impl Fn(&Canon<'_, '_>, NodeId) -> Option<(Stats, Candidate)>,
) -> Vec<Match> {
    let c = Canon::new(g);
    let mut used = claimed.clone();
    let mut out = Vec::new();
    for &id in g.topological() {
        let n = g.node(id);
        let std_domain = crate::onnx::is_standard(n);
        if !std_domain || !op_types.contains(&n.op_type()) || used.contains(&id) {
            continue;
        }
        let Some((stats, cand)) = read(&c, id) else {
            continue;
        };
        let m = finish(&c, &stats, cand);
        if m.nodes.iter().any(|n| used.contains(n)) {
            continue;
        }
        used.extend(m.nodes.iter().copied());
        out.push(m);
    }
    out
}

pub fn finish(c: &Canon<'_, '_>, s: &Stats, cand: Candidate) -> Match {
    let g = c.g;
    let mut core: HashSet<NodeId> = s.core.iter().chain(&cand.core).copied().collect();
    let mut problems = cand.problems.clone();
    let stats_aux: HashSet<NodeId> = s.aux.iter().copied().collect();
    let is_param = |v: &str| cand.scale.as_deref() == Some(v) || cand.bias.as_deref() == Some(v);

    // Chains of Identity nodes between two nodes of the match (`Canon::op` looks through them)
    // are the match's when nothing else reads them.
    loop {
        let mut interior: Vec<NodeId> = Vec::new();
        for &id in &core {
            for v in &g.node(id).input {
                let mut chain: Vec<NodeId> = Vec::new();
                let mut w = v.as_str();
                while let Some((p, n)) = g.producer_node(w) {
                    if core.contains(&p)
                        || n.op_type() != "Identity"
                        || !crate::onnx::is_standard(n)
                    {
                        break;
                    }
                    let Some(input) = n.input.first() else { break };
                    chain.push(p);
                    w = input;
                }
                let from_core = g.producer(w).is_some_and(|(p, _)| core.contains(&p));
                let only_read_here = chain.iter().all(|&i| {
                    let Some(out) = g.node(i).output.first() else {
                        return false;
                    };
                    !g.is_graph_output(out)
                        && g.consumers(out)
                            .iter()
                            .all(|c| core.contains(c) || chain.contains(c))
                });
                if from_core && !chain.is_empty() && only_read_here {
                    interior.extend(chain);
                }
            }
        }
        interior.retain(|i| !core.contains(i));
        if interior.is_empty() {
            break;
        }
        core.extend(interior);
    }

    // Shapes the core reads that are computed from other shapes (dynamic Reshape and Expand
    // targets): their nodes are helpers, the values are not data inputs.
    let mut shape_values: HashSet<&str> = HashSet::new();
    let mut shape_helpers: Vec<NodeId> = Vec::new();
    for &id in &core {
        for v in &g.node(id).input {
            let outside = g.producer(v).is_some_and(|(p, _)| !core.contains(&p));
            if outside && !c.is_constant(v) {
                if let Some(t) = dims::contents(g, v) {
                    shape_values.insert(v.as_str());
                    shape_helpers.extend(t.nodes);
                }
            }
        }
    }

    // Where the input is read: absorb Casts in front of the match that only it reads.
    let reads: HashSet<String> = core
        .iter()
        .flat_map(|&id| g.node(id).input.iter())
        .filter(|v| !v.is_empty() && !is_param(v) && !c.is_constant(v))
        .filter(|v| !shape_values.contains(v.as_str()))
        .filter(|v| {
            g.producer(v)
                .is_none_or(|(p, _)| !core.contains(&p) && !stats_aux.contains(&p))
        })
        .cloned()
        .collect();
    let mut inputs = HashSet::new();
    // Each read's chain of absorbed casts: (the value a cast made, that cast).
    let mut chains: Vec<Vec<(String, NodeId)>> = Vec::new();
    // Until nothing changes: a cast read by two reads' chains is the match's only once both
    // chains reached it, whichever is walked first.
    loop {
        let before = core.len();
        inputs.clear();
        chains.clear();
        for r in &reads {
            let mut v = r.clone();
            let mut chain = Vec::new();
            while v != s.x {
                let Some((id, node)) = g.producer_node(&v) else {
                    break;
                };
                let is_cast = matches!(node.op_type(), "Cast" | "Identity");
                let only_us =
                    g.consumers(&v).iter().all(|n| core.contains(n)) && !g.is_graph_output(&v);
                if !is_cast || !only_us {
                    break;
                }
                core.insert(id);
                chain.push((v.clone(), id));
                v = node.input[0].clone();
            }
            chains.push(chain);
            inputs.insert(v);
        }
        if core.len() == before {
            break;
        }
    }
    let mut input = match inputs.len() {
        1 => inputs.into_iter().next().expect("one input"),
        _ => {
            problems.push(format!(
                "it reads its input '{}' through several different casts",
                s.x
            ));
            s.x.clone()
        }
    };
    // A normalisation computed in a wider type from a cast of its input, whose result stays in
    // that type (Keras mixed precision: float32 statistics, gain and bias; the cast back comes
    // after the affine): the match starts after the cast, where its own type begins.
    if let ([chain], Some(out_type)) = (chains.as_slice(), g.elem_type(&cand.output)) {
        if g.elem_type(&input) != Some(out_type) {
            if let Some(at) = chain
                .iter()
                .position(|(v, _)| g.elem_type(v) == Some(out_type))
            {
                for (_, id) in &chain[at..] {
                    core.remove(id);
                }
                input = chain[at].0.clone();
            }
        }
    }

    // The ONNX function-body form works on a flattened view: lift it back to X.
    let (mut output, mut scale, mut bias) =
        (cand.output.clone(), cand.scale.clone(), cand.bias.clone());
    let (mut mean_output, mut inv_std_output, mut lifted_axis) = (None, None, None);
    let mut aux: Vec<NodeId> = s.aux.clone();
    aux.extend(shape_helpers);
    if let Some(l) = function_body::lift(
        c,
        s,
        &core,
        &input,
        &output,
        scale.as_deref(),
        bias.as_deref(),
    ) {
        core.extend(l.core);
        aux.extend(l.aux);
        (input, output, scale, bias) = (l.input, l.output, l.scale, l.bias);
        (mean_output, inv_std_output, lifted_axis) =
            (l.mean_output, l.inv_std_output, Some(l.axis));
    }
    let params: HashSet<&str> = scale.iter().chain(&bias).map(String::as_str).collect();

    // Helpers: row-count chains and the nodes holding constants the core reads.
    let mut stack: Vec<NodeId> = core.iter().chain(&aux).copied().collect();
    let mut seen = HashSet::new();
    while let Some(id) = stack.pop() {
        for v in &g.node(id).input {
            if v.is_empty() || params.contains(v.as_str()) || !c.is_constant(v) {
                continue;
            }
            if let Some((p, _)) = g.producer(v) {
                if seen.insert(p) && !core.contains(&p) {
                    aux.push(p);
                    stack.push(p);
                }
            }
        }
    }

    // Helpers belong to the match when nothing outside it uses them.
    let mut included: HashSet<NodeId> = HashSet::new();
    loop {
        let before = included.len();
        for &a in &aux {
            if included.contains(&a) || core.contains(&a) {
                continue;
            }
            let outputs = &g.node(a).output;
            let only_us = outputs.iter().all(|o| {
                !g.is_graph_output(o)
                    && g.consumers(o)
                        .iter()
                        .all(|n| core.contains(n) || included.contains(n))
            });
            if only_us {
                included.insert(a);
            }
        }
        if included.len() == before {
            break;
        }
    }

    // No inner value may escape: only the match's outputs are read outside it.
    let outputs: HashSet<&str> = [Some(&output), mean_output.as_ref(), inv_std_output.as_ref()]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let mut escapes = None;
    let mut ids: Vec<NodeId> = core.iter().copied().collect();
    ids.sort_unstable();
    for &id in &ids {
        for o in g
            .node(id)
            .output
            .iter()
            .filter(|o| !o.is_empty() && !outputs.contains(o.as_str()))
        {
            if g.is_graph_output(o) {
                escapes.get_or_insert(format!("inner value '{o}' is a graph output"));
            }
            if let Some(&outside) = g
                .consumers(o)
                .iter()
                .find(|n| !core.contains(n) && !included.contains(n))
            {
                escapes.get_or_insert(format!(
                    "inner value '{o}' is also read by node '{}' outside the subgraph",
                    g.label(outside)
                ));
            }
        }
    }
    problems.extend(escapes);

    // Axes the ai.adanorm ops (and ONNX LayerNormalization) can express.
    let mut axes = s.axes.axes.clone();
    let mut axis = s.axes.trailing_axis();
    let mut form = cand.form.clone();
    let mut channels_first = false;
    if let Some(a) = lifted_axis {
        form.push_str(", ONNX function body (Flatten/Reshape)");
        match g.rank(&input) {
            Some(r) => {
                let a = if a < 0 { a + r as i64 } else { a };
                axes = (a..r as i64).collect();
                axis = Some(a - r as i64);
            }
            None => {
                axes = vec![];
                axis = Some(a);
            }
        }
    } else if axis.is_none() {
        let rank = s.axes.rank.or(g.rank(&s.x));
        if s.axes.axes == [1] && rank.is_some_and(|r| r >= 3) {
            form.push_str(", channels-first (normalises axis 1 only)");
            channels_first = true;
        } else if rank.is_none() {
            problems.push(format!("the rank of '{}' is unknown, so axes {:?} cannot be checked to be the trailing axes", s.x, s.axes.axes));
        } else {
            problems.push(format!(
                "it normalises axes {:?}, which are not the trailing axes",
                s.axes.axes
            ));
        }
    }

    let dtype = g.elem_type(&input);
    if let (Some(i), Some(o)) = (dtype, g.elem_type(&output)) {
        if i != o {
            problems.push(format!(
                "its output type ({}) differs from its input type ({})",
                crate::onnx::dtype::name(o),
                crate::onnx::dtype::name(i)
            ));
        }
    }
    let family = cand.family.unwrap_or(Family::LayerNorm);
    if family == Family::RmsNorm {
        problems.insert(0, "RMSNorm has no centring: reported, left alone".into());
    }

    let mut nodes: Vec<NodeId> = core.into_iter().chain(included).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut m = Match {
        family,
        form,
        nodes,
        input,
        output,
        axes,
        axis,
        channels_first,
        epsilon: s.epsilon,
        unbiased: s.unbiased,
        eps_in_sqrt: s.eps_in_sqrt,
        c: cand.c,
        k: cand.k,
        scale,
        bias,
        mean_output,
        inv_std_output,
        dtype,
        rewritable: true,
        reason: None,
    };
    if let Some(p) = problems.into_iter().next() {
        m.not_rewritable(p);
    }
    m
}
