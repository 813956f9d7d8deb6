//! Model-local functions (`ModelProto.functions`) expanded at their call sites.
//!
//! Each call is replaced by a copy of the body: the function's formal inputs and outputs become
//! the call's actual names, every other value gets a prefix unique to that call, attribute
//! references (`ref_attr_name`) take the call's attribute or else the function's default
//! (`attribute_proto`), and calls inside the body (or inside If/Loop/Scan bodies) are expanded
//! the same way. Inlined node names keep the call's name as their prefix, so reports can say
//! where a node came from.
//!
//! Functions in domain `ai.adanorm` named like its ops (`AdaNorm`, `LayerNormSimple`: the bodies
//! `adanorm-onnx rewrite --portable` adds for runtimes without the ops) are never inlined: a
//! runtime with the ops runs them natively.

use std::collections::{HashMap, HashSet};
use std::fmt;

// The `ai.adanorm` domain and its ops (the kernels' contract): their portable bodies stay calls.
use adanorm_kernels::params::OpKind;

use crate::onnx::{AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto};

/// Why a model's functions could not be inlined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineError(pub String);

impl fmt::Display for InlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InlineError {}

/// `(domain, name, overload)` of a function, or of a node that may call one; the default domain
/// is `""` whether written `""` or `"ai.onnx"`.
pub type FunctionKey = (String, String, String);

fn key(domain: &str, name: &str, overload: &str) -> FunctionKey {
    let domain = if domain == "ai.onnx" { "" } else { domain };
    (domain.to_string(), name.to_string(), overload.to_string())
}

pub fn function_key(f: &FunctionProto) -> FunctionKey {
    key(f.domain(), f.name(), f.overload())
}

pub fn call_key(n: &NodeProto) -> FunctionKey {
    key(n.domain(), n.op_type(), n.overload())
}

/// Whether `f` is one of the `ai.adanorm` portable bodies, which are never inlined.
pub fn is_own_op_body(f: &FunctionProto) -> bool {
    OpKind::of_node(f.domain(), f.name()).is_some()
}

/// Inlines every call of a model-local function (but the `ai.adanorm` op bodies) in every graph
/// of `model`, drops the functions no longer called, and imports the opsets the inlined bodies
/// use. With `only`, just the calls of those functions are inlined (their nested calls of other
/// functions too, since a body's calls cannot stay behind once it is gone).
///
/// Returns the keys of the functions that were inlined. On error (a recursive function, a call
/// with more inputs or outputs than the function has, two functions with one key) `model` is
/// left partly inlined and should be discarded.
pub fn inline_functions(
    model: &mut ModelProto,
    only: Option<&HashSet<FunctionKey>>,
) -> Result<HashSet<FunctionKey>, InlineError> {
    let mut library = HashMap::new();
    for f in &model.functions {
        if is_own_op_body(f) {
            continue;
        }
        let k = function_key(f);
        if library.insert(k.clone(), f.clone()).is_some() {
            return Err(InlineError(format!(
                "the model defines function {}.{} more than once",
                k.0, k.1
            )));
        }
    }
    if library.is_empty() {
        return Ok(HashSet::new());
    }
    let Some(mut graph) = model.graph.take() else {
        return Ok(HashSet::new());
    };
    let mut inliner = Inliner {
        library: &library,
        only,
        stem: unused_stem(&graph),
        calls: 0,
        called: HashSet::new(),
    };
    let result = inliner.inline_graph(&mut graph, &mut Vec::new());
    model.graph = Some(graph);
    result?;
    let inlined = inliner.called;
    // The bodies' nodes now live in the graph, so the model must import their opsets.
    let imports: Vec<_> = model
        .functions
        .iter()
        .filter(|f| inlined.contains(&function_key(f)))
        .flat_map(|f| f.opset_import.clone())
        .collect();
    for import in imports {
        let canon = |d: &str| {
            if d == "ai.onnx" {
                String::new()
            } else {
                d.to_string()
            }
        };
        let imported = model
            .opset_import
            .iter()
            .any(|o| canon(o.domain()) == canon(import.domain()));
        if !imported {
            model.opset_import.push(import);
        }
    }
    let still_called = calls_in(model);
    model
        .functions
        .retain(|f| is_own_op_body(f) || still_called.contains(&function_key(f)));
    Ok(inlined)
}

/// Keys of every node of every graph (and function body) of `model`: what may call a function.
pub fn calls_in(model: &ModelProto) -> HashSet<FunctionKey> {
    fn walk(nodes: &[NodeProto], out: &mut HashSet<FunctionKey>) {
        for n in nodes {
            out.insert(call_key(n));
            for a in &n.attribute {
                for g in a.g.iter().chain(&a.graphs) {
                    walk(&g.node, out);
                }
            }
        }
    }
    let mut out = HashSet::new();
    if let Some(g) = &model.graph {
        walk(&g.node, &mut out);
    }
    for f in &model.functions {
        walk(&f.node, &mut out);
    }
    out
}

struct Inliner<'f> {
    library: &'f HashMap<FunctionKey, FunctionProto>,
    only: Option<&'f HashSet<FunctionKey>>,
    /// No existing value or node name starts with this, so `{stem}{call}__` prefixes are new.
    stem: String,
    calls: usize,
    called: HashSet<FunctionKey>,
}

impl Inliner<'_> {
    fn inline_graph(
        &mut self,
        graph: &mut GraphProto,
        stack: &mut Vec<FunctionKey>,
    ) -> Result<(), InlineError> {
        let nodes = std::mem::take(&mut graph.node);
        let mut expanded = Vec::with_capacity(nodes.len());
        for node in nodes {
            self.expand(node, &mut expanded, stack)?;
        }
        graph.node = expanded;
        Ok(())
    }

    /// Pushes `node` onto `out`, or, if it calls a function to inline, the (recursively
    /// expanded) body.
    fn expand(
        &mut self,
        mut node: NodeProto,
        out: &mut Vec<NodeProto>,
        stack: &mut Vec<FunctionKey>,
    ) -> Result<(), InlineError> {
        for attribute in &mut node.attribute {
            for g in attribute.g.iter_mut().chain(&mut attribute.graphs) {
                self.inline_graph(g, stack)?;
            }
        }
        let k = call_key(&node);
        // `only` picks among the calls written in the model; calls inside a body being inlined
        // always go with it.
        let left_out = stack.is_empty() && self.only.is_some_and(|only| !only.contains(&k));
        let Some(function) = self.library.get(&k).filter(|_| !left_out) else {
            out.push(node);
            return Ok(());
        };
        if stack.contains(&k) {
            return Err(InlineError(format!(
                "node '{}': function {}.{} calls itself (through {:?}); ONNX functions may not recurse",
                label(&node),
                k.0,
                k.1,
                stack.iter().map(|s| format!("{}.{}", s.0, s.1)).collect::<Vec<_>>()
            )));
        }
        let body = self.instantiate(function, &k, &node)?;
        self.called.insert(k.clone());
        stack.push(k);
        for inner in body {
            self.expand(inner, out, stack)?;
        }
        stack.pop();
        Ok(())
    }

    /// The function's body as called by `call`: values renamed, attribute references resolved.
    fn instantiate(
        &mut self,
        function: &FunctionProto,
        k: &FunctionKey,
        call: &NodeProto,
    ) -> Result<Vec<NodeProto>, InlineError> {
        if call.input.len() > function.input.len() || call.output.len() > function.output.len() {
            return Err(InlineError(format!(
                "node '{}' calls function {}.{} with {} inputs and {} outputs; it has {} and {}",
                label(call),
                k.0,
                k.1,
                call.input.len(),
                call.output.len(),
                function.input.len(),
                function.output.len()
            )));
        }
        let prefix = format!("{}{}__{}/", self.stem, self.calls, k.1);
        self.calls += 1;
        let renames = Renames::new(function, call, prefix.clone());
        // Node names: the call's own name leads, so a report can place an inlined node.
        let call_name = if call.name().is_empty() {
            prefix.trim_end_matches('/').to_string()
        } else {
            call.name().to_string()
        };

        let mut body = function.node.clone();
        for (ix, node) in body.iter_mut().enumerate() {
            let what = if node.name().is_empty() {
                node.op_type().to_string()
            } else {
                node.name().to_string()
            };
            node.name = Some(format!("{call_name}/{ix}_{what}"));
            for input in &mut node.input {
                *input = renames.read(input);
            }
            for output in &mut node.output {
                *output = renames.write(output);
            }
            for attribute in &mut node.attribute {
                for g in attribute.g.iter_mut().chain(&mut attribute.graphs) {
                    rename_free_names(g, &|name| renames.read(name), &HashSet::new());
                }
            }
            resolve_attribute_refs(
                &mut node.attribute,
                &call.attribute,
                &function.attribute_proto,
            );
        }
        // A formal output that is also a formal input: nothing in the body produces it.
        for (ix, formal) in function.output.iter().enumerate() {
            if function.input.contains(formal) {
                body.push(NodeProto {
                    name: Some(format!("{call_name}/passthrough_{ix}")),
                    op_type: Some("Identity".into()),
                    input: vec![renames.read(formal)],
                    output: vec![renames.write(formal)],
                    ..NodeProto::default()
                });
            }
        }
        Ok(body)
    }
}

fn label(n: &NodeProto) -> String {
    if n.name().is_empty() {
        n.op_type().to_string()
    } else {
        n.name().to_string()
    }
}

/// Formal names → actual names for one call; everything else gets the call's prefix.
struct Renames {
    inputs: HashMap<String, String>,
    outputs: HashMap<String, String>,
    prefix: String,
}

impl Renames {
    fn new(function: &FunctionProto, call: &NodeProto, prefix: String) -> Renames {
        // An input left off the call is absent: the empty name.
        let inputs = function
            .input
            .iter()
            .enumerate()
            .map(|(ix, formal)| {
                (
                    formal.clone(),
                    call.input.get(ix).cloned().unwrap_or_default(),
                )
            })
            .collect();
        // An output the call does not take still needs a (private) name for the body.
        let outputs = function
            .output
            .iter()
            .enumerate()
            .map(|(ix, formal)| {
                let actual = match call.output.get(ix) {
                    Some(actual) if !actual.is_empty() => actual.clone(),
                    _ => format!("{prefix}{formal}"),
                };
                (formal.clone(), actual)
            })
            .collect();
        Renames {
            inputs,
            outputs,
            prefix,
        }
    }

    /// The name a body node reads `name` under.
    fn read(&self, name: &str) -> String {
        if name.is_empty() {
            return String::new();
        }
        self.inputs
            .get(name)
            .or_else(|| self.outputs.get(name))
            .cloned()
            .unwrap_or_else(|| format!("{}{name}", self.prefix))
    }

    /// The name a body node writes `name` under.
    fn write(&self, name: &str) -> String {
        if name.is_empty() {
            return String::new();
        }
        self.outputs
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("{}{name}", self.prefix))
    }
}

/// Renames the names `g` reads from enclosing scopes (those not bound in `g` or in `bound`).
fn rename_free_names(g: &mut GraphProto, rename: &dyn Fn(&str) -> String, bound: &HashSet<String>) {
    let mut local = bound.clone();
    local.extend(g.input.iter().map(|i| i.name().to_string()));
    local.extend(g.initializer.iter().map(|t| t.name().to_string()));
    local.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    let free = |name: &mut String| {
        if !name.is_empty() && !local.contains(name.as_str()) {
            *name = rename(name);
        }
    };
    for node in &mut g.node {
        node.input.iter_mut().for_each(free);
        for attribute in &mut node.attribute {
            for inner in attribute.g.iter_mut().chain(&mut attribute.graphs) {
                rename_free_names(inner, rename, &local);
            }
        }
    }
    for o in &mut g.output {
        if let Some(name) = o.name.as_mut() {
            free(name);
        }
    }
}

/// Replaces each attribute reference by the call's attribute of that name, else the function's
/// default, else drops it (the op's own default then applies, as ONNX specifies); recurses into
/// graph attributes, whose nodes may hold references too.
fn resolve_attribute_refs(
    attributes: &mut Vec<AttributeProto>,
    call: &[AttributeProto],
    defaults: &[AttributeProto],
) {
    attributes.retain_mut(|attribute| {
        let Some(reference) = attribute.ref_attr_name.clone().filter(|r| !r.is_empty()) else {
            return true;
        };
        match call.iter().chain(defaults).find(|a| a.name() == reference) {
            Some(value) => {
                let name = attribute.name.take();
                *attribute = value.clone();
                attribute.name = name;
                true
            }
            None => false,
        }
    });
    for attribute in attributes {
        for g in attribute.g.iter_mut().chain(&mut attribute.graphs) {
            for node in &mut g.node {
                resolve_attribute_refs(&mut node.attribute, call, defaults);
            }
        }
    }
}

/// A stem no value or node name in `graph` (or its subgraphs) starts with.
fn unused_stem(graph: &GraphProto) -> String {
    let mut names = HashSet::new();
    collect_names(graph, &mut names);
    let mut stem = "__inlined".to_string();
    while names.iter().any(|n: &&str| n.starts_with(&stem)) {
        stem.push('_');
    }
    stem
}

fn collect_names<'g>(graph: &'g GraphProto, names: &mut HashSet<&'g str>) {
    names.extend(graph.input.iter().chain(&graph.output).map(|i| i.name()));
    names.extend(graph.initializer.iter().map(|t| t.name()));
    for node in &graph.node {
        names.insert(node.name());
        names.extend(node.input.iter().chain(&node.output).map(String::as_str));
        for attribute in &node.attribute {
            for g in attribute.g.iter().chain(&attribute.graphs) {
                collect_names(g, names);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::attribute_proto::AttributeType;

    fn node(op: &str, domain: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            domain: Some(domain.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..NodeProto::default()
        }
    }

    fn function(
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        body: Vec<NodeProto>,
    ) -> FunctionProto {
        FunctionProto {
            name: Some(name.into()),
            domain: Some("local".into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            node: body,
            ..FunctionProto::default()
        }
    }

    fn model(nodes: Vec<NodeProto>, functions: Vec<FunctionProto>) -> ModelProto {
        ModelProto {
            graph: Some(GraphProto {
                node: nodes,
                ..GraphProto::default()
            }),
            functions,
            ..ModelProto::default()
        }
    }

    fn float_attr(name: &str, v: f32) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            f: Some(v),
            r#type: Some(AttributeType::Float as i32),
            ..AttributeProto::default()
        }
    }

    fn reference(name: &str, to: &str) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            ref_attr_name: Some(to.into()),
            r#type: Some(AttributeType::Float as i32),
            ..AttributeProto::default()
        }
    }

    #[test]
    fn two_calls_get_distinct_internal_names_and_node_names() {
        let f = function(
            "F",
            &["x"],
            &["y"],
            vec![
                node("Neg", "", &["x"], &["t"]),
                node("Abs", "", &["t"], &["y"]),
            ],
        );
        let mut a = node("F", "local", &["a"], &["b"]);
        a.name = Some("first".into());
        let mut m = model(vec![a, node("F", "local", &["b"], &["c"])], vec![f]);
        let inlined = inline_functions(&mut m, None).unwrap();
        assert_eq!(inlined.len(), 1);
        let nodes = &m.graph.as_ref().unwrap().node;
        assert!(m.functions.is_empty());
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].input, ["a"]);
        assert_eq!(nodes[1].output, ["b"]);
        assert_eq!(nodes[2].input, ["b"]);
        assert_eq!(nodes[3].output, ["c"]);
        assert_ne!(nodes[0].output, nodes[2].output);
        assert_eq!(nodes[0].name(), "first/0_Neg", "the call's name leads");
        let names: HashSet<_> = nodes.iter().map(|n| n.name()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    #[test]
    fn stem_avoids_existing_names() {
        let f = function(
            "F",
            &["x"],
            &["y"],
            vec![
                node("Neg", "", &["x"], &["y2"]),
                node("Neg", "", &["y2"], &["y"]),
            ],
        );
        let mut m = model(
            vec![node("F", "local", &["__inlined0__F/y2"], &["b"])],
            vec![f],
        );
        inline_functions(&mut m, None).unwrap();
        let nodes = &m.graph.as_ref().unwrap().node;
        assert_eq!(nodes[0].input, ["__inlined0__F/y2"]);
        assert_eq!(nodes[0].output, ["__inlined_0__F/y2"]);
    }

    #[test]
    fn recursion_is_an_error() {
        let f = function(
            "F",
            &["x"],
            &["y"],
            vec![node("F", "local", &["x"], &["y"])],
        );
        let mut m = model(vec![node("F", "local", &["a"], &["b"])], vec![f]);
        let err = inline_functions(&mut m, None).unwrap_err();
        assert!(err.to_string().contains("calls itself"), "{err}");
    }

    #[test]
    fn passthrough_output_and_omitted_output() {
        let f = function(
            "F",
            &["x"],
            &["x", "z"],
            vec![node("Neg", "", &["x"], &["z"])],
        );
        let mut m = model(vec![node("F", "local", &["a"], &["b"])], vec![f]);
        inline_functions(&mut m, None).unwrap();
        let nodes = &m.graph.as_ref().unwrap().node;
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].input, ["a"]);
        assert!(nodes[0].output[0].starts_with("__inlined0__F/"));
        assert_eq!(
            (nodes[1].op_type(), &nodes[1].input, &nodes[1].output[0]),
            ("Identity", &vec!["a".to_string()], &"b".to_string())
        );
    }

    #[test]
    fn attribute_references_take_the_call_then_the_default_else_go() {
        let mut body = node("Op", "", &["x"], &["y"]);
        body.attribute = vec![
            reference("alpha", "a"),
            reference("beta", "b"),
            reference("gamma", "c"),
        ];
        let mut f = function("F", &["x"], &["y"], vec![body]);
        f.attribute_proto = vec![float_attr("b", 2.0), float_attr("a", 9.0)];
        let mut call = node("F", "local", &["x"], &["y"]);
        call.attribute = vec![float_attr("a", 1.0)];
        let mut m = model(vec![call], vec![f]);
        inline_functions(&mut m, None).unwrap();
        let attrs = &m.graph.as_ref().unwrap().node[0].attribute;
        let got: Vec<(&str, f32)> = attrs.iter().map(|a| (a.name(), a.f())).collect();
        assert_eq!(got, [("alpha", 1.0), ("beta", 2.0)]);
        assert!(attrs.iter().all(|a| a.ref_attr_name().is_empty()));
    }

    #[test]
    fn only_the_chosen_functions_are_inlined_and_own_op_bodies_never() {
        let f = function("F", &["x"], &["y"], vec![node("Neg", "", &["x"], &["y"])]);
        let g = function("G", &["x"], &["y"], vec![node("Abs", "", &["x"], &["y"])]);
        let mut own = function(
            "AdaNorm",
            &["X"],
            &["Y"],
            vec![node("Identity", "", &["X"], &["Y"])],
        );
        own.domain = Some(adanorm_kernels::params::DOMAIN.into());
        let mut m = model(
            vec![
                node("F", "local", &["a"], &["b"]),
                node("G", "local", &["b"], &["c"]),
                node("AdaNorm", adanorm_kernels::params::DOMAIN, &["c"], &["d"]),
            ],
            vec![f, g, own],
        );
        let only: HashSet<_> = [key("local", "F", "")].into_iter().collect();
        let inlined = inline_functions(&mut m, Some(&only)).unwrap();
        assert_eq!(inlined, only);
        let ops: Vec<&str> = m
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type())
            .collect();
        assert_eq!(ops, ["Neg", "G", "AdaNorm"]);
        let left: Vec<&str> = m.functions.iter().map(|f| f.name()).collect();
        assert_eq!(left, ["G", "AdaNorm"]);
    }

    #[test]
    fn calls_inside_subgraphs_are_inlined() {
        let f = function("F", &["x"], &["y"], vec![node("Neg", "", &["x"], &["y"])]);
        let mut iff = node("If", "", &["cond"], &["out"]);
        iff.attribute = vec![AttributeProto {
            name: Some("then_branch".into()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(GraphProto {
                node: vec![node("F", "local", &["outer"], &["t"])],
                ..GraphProto::default()
            }),
            ..AttributeProto::default()
        }];
        let mut m = model(vec![iff], vec![f]);
        inline_functions(&mut m, None).unwrap();
        let branch = m.graph.as_ref().unwrap().node[0].attribute[0]
            .g
            .as_ref()
            .unwrap();
        assert_eq!(branch.node[0].op_type(), "Neg");
        assert_eq!(branch.node[0].input, ["outer"]);
        assert!(m.functions.is_empty());
    }
}
