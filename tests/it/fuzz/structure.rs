//! Structural checks every written model must pass, whatever the command: unique node names per
//! graph, SSA across a graph and its subgraphs, no initializer duplicated or also produced by a
//! node, every input defined before use (in its graph or an enclosing one), graph outputs
//! defined, `ai.adanorm` declared in `opset_import` exactly when a node uses it, and one element
//! type for X/Scale/B of each `ai.adanorm` node (ops-spec: no mixed types).

use std::collections::{HashMap, HashSet};

use adanorm_onnx::graph::GraphIndex;
use adanorm_onnx::onnx::proto::{GraphProto, ModelProto};

pub const DOMAIN: &str = "ai.adanorm";

/// (class, detail) for each problem.
pub type Problems = Vec<(String, String)>;

pub fn check(m: &ModelProto) -> Problems {
    let mut p = Problems::new();
    let mut produced: HashMap<String, &'static str> = HashMap::new();
    if let Some(g) = &m.graph {
        walk(g, &HashSet::new(), &mut produced, &mut p, "main");
    }
    for f in &m.functions {
        let mut defined: HashSet<String> = f.input.iter().cloned().collect();
        let mut names = HashSet::new();
        for n in &f.node {
            if !n.name().is_empty() && !names.insert(n.name().to_string()) {
                p.push((
                    "structure: duplicate node name".into(),
                    format!("function {}: {}", f.name(), n.name()),
                ));
            }
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                if !defined.contains(i) {
                    p.push((
                        "structure: dangling input".into(),
                        format!("function {}: node {} reads {i}", f.name(), n.name()),
                    ));
                }
            }
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if !defined.insert(o.clone()) {
                    p.push((
                        "structure: value produced twice".into(),
                        format!("function {}: {o}", f.name()),
                    ));
                }
            }
        }
    }
    let uses = uses_domain(m);
    let declared = m.opset_import.iter().any(|o| o.domain() == DOMAIN);
    if uses != declared {
        p.push((
            "structure: ai.adanorm opset_import".into(),
            format!("nodes use it: {uses}, opset_import declares it: {declared}"),
        ));
    }
    p
}

fn walk(
    g: &GraphProto,
    outer: &HashSet<String>,
    produced: &mut HashMap<String, &'static str>,
    p: &mut Problems,
    path: &str,
) {
    let mut defined = outer.clone();
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let mut seen_inits = HashSet::new();
    for t in &g.initializer {
        if !seen_inits.insert(t.name()) {
            p.push((
                "structure: duplicate initializer".into(),
                format!("{path}: {}", t.name()),
            ));
        } else if let Some(prev) = produced.insert(t.name().to_string(), "initializer") {
            p.push((
                "structure: initializer name used twice".into(),
                format!("{path}: {} (also a {prev})", t.name()),
            ));
        }
        defined.insert(t.name().to_string());
    }
    for i in &g.input {
        if inits.contains(i.name()) {
            continue;
        }
        if let Some(prev) = produced.insert(i.name().to_string(), "graph input") {
            p.push((
                "structure: value produced twice".into(),
                format!("{path}: input {} (also a {prev})", i.name()),
            ));
        }
        defined.insert(i.name().to_string());
    }
    let later: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let mut names = HashSet::new();
    for n in &g.node {
        if !n.name().is_empty() && !names.insert(n.name()) {
            p.push((
                "structure: duplicate node name".into(),
                format!("{path}: {}", n.name()),
            ));
        }
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(i) {
                let class = if later.contains(i.as_str()) {
                    "structure: not in topological order"
                } else {
                    "structure: dangling input"
                };
                p.push((class.into(), format!("{path}: node {} reads {i}", n.name())));
            }
        }
        for a in &n.attribute {
            for (k, sub) in a.g.iter().chain(a.graphs.iter()).enumerate() {
                walk(
                    sub,
                    &defined,
                    produced,
                    p,
                    &format!("{path}/{}.{}[{k}]", n.name(), a.name()),
                );
            }
        }
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            match produced.insert(o.clone(), "node output") {
                Some("initializer") => p.push((
                    "structure: initializer also produced by a node".into(),
                    format!("{path}: {o} by {}", n.name()),
                )),
                Some(prev) => p.push((
                    "structure: value produced twice".into(),
                    format!("{path}: {o} by {} (also a {prev})", n.name()),
                )),
                None => {}
            }
            defined.insert(o.clone());
        }
    }
    for o in &g.output {
        if !defined.contains(o.name()) {
            p.push((
                "structure: undefined graph output".into(),
                format!("{path}: {}", o.name()),
            ));
        }
    }
}

fn uses_domain(m: &ModelProto) -> bool {
    fn in_graph(g: &GraphProto) -> bool {
        g.node.iter().any(|n| {
            n.domain() == DOMAIN
                || n.attribute
                    .iter()
                    .any(|a| a.g.iter().chain(a.graphs.iter()).any(in_graph))
        })
    }
    m.graph.as_ref().is_some_and(in_graph)
        || m.functions
            .iter()
            .any(|f| f.node.iter().any(|n| n.domain() == DOMAIN))
}

/// Element types of X, Scale and B of each ai.adanorm node, from the index's type facts.
pub fn adanorm_types(g: &GraphIndex<'_>, p: &mut Problems) {
    for (_, n) in g.nodes() {
        if n.domain() != DOMAIN {
            continue;
        }
        let types: Vec<(String, i32)> = n
            .input
            .iter()
            .take(3)
            .filter(|i| !i.is_empty())
            .filter_map(|i| g.elem_type(i).map(|t| (i.clone(), t)))
            .collect();
        if types.windows(2).any(|w| w[0].1 != w[1].1) {
            p.push((
                "structure: ai.adanorm with mixed element types".into(),
                format!("{} {}: {types:?}", g.scope.label(), n.name()),
            ));
        }
    }
}

/// ai.adanorm nodes anywhere in the model's graphs.
pub fn count_adanorm(m: &ModelProto) -> usize {
    fn in_graph(g: &GraphProto) -> usize {
        g.node
            .iter()
            .map(|n| {
                (n.domain() == DOMAIN) as usize
                    + n.attribute
                        .iter()
                        .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
                        .map(in_graph)
                        .sum::<usize>()
            })
            .sum()
    }
    m.graph.as_ref().map_or(0, in_graph)
}
