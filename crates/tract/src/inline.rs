//! Model-local functions (`ModelProto.functions`), spliced into the graph before tract parses it.
//!
//! tract never reads `ModelProto.functions`: a call parses as an unimplemented op, or, when the
//! function shares its name with a standard op (`local.Relu`), silently as tract's own op, since
//! tract ignores node domains. Inlining every call first avoids both.
//!
//! Each call is replaced by a copy of the body: the function's formal inputs and outputs become
//! the call's actual names, every other value gets a prefix unique to that call, attribute
//! references (`ref_attr_name`) take the call's attribute or else the function's default, and
//! calls inside the body (or inside If/Loop/Scan bodies) are expanded the same way.
//!
//! Functions named like this crate's own ops (`ai.adanorm.AdaNorm`, `ai.adanorm.LayerNormSimple`,
//! the bodies `adanorm-onnx rewrite --portable` adds for runtimes without the ops) are not
//! inlined: their calls run as the native ops, which implement the contract directly.

use std::collections::{HashMap, HashSet};

use adanorm_kernels::params::DOMAIN;
use prost::Message;
use tract_onnx::pb::{AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

use crate::builder::{node_label, OP_TYPES};

/// `(domain, name)` of a function, or `(domain, op_type)` of a node that may call one; the
/// default domain is `""` whether written `""` or `"ai.onnx"`.
type FunctionKey = (String, String);

fn key(domain: &str, name: &str) -> FunctionKey {
    let domain = if domain == "ai.onnx" { "" } else { domain };
    (domain.to_string(), name.to_string())
}

/// Attribute defaults of model-local functions (`FunctionProto.attribute_proto`, ONNX ≥ 1.13).
///
/// tract's protobuf types predate that field, so decoding a model with them drops the
/// defaults; [`FunctionAttributeDefaults::from_model_bytes`] reads them from the file's bytes.
#[derive(Debug, Clone, Default)]
pub struct FunctionAttributeDefaults {
    by_function: HashMap<FunctionKey, Vec<AttributeProto>>,
}

impl FunctionAttributeDefaults {
    /// Reads the defaults from an encoded `ModelProto`. Decoding skips every field but
    /// `functions`, so this costs little even for a large model.
    pub fn from_model_bytes(bytes: &[u8]) -> TractResult<FunctionAttributeDefaults> {
        let model = side_proto::ModelFunctions::decode(bytes)
            .context("Decoding the model's function attribute defaults")?;
        let by_function = model
            .functions
            .into_iter()
            .filter(|f| !f.attribute_proto.is_empty())
            .map(|f| {
                let k = key(
                    f.domain.as_deref().unwrap_or(""),
                    f.name.as_deref().unwrap_or(""),
                );
                (k, f.attribute_proto)
            })
            .collect();
        Ok(FunctionAttributeDefaults { by_function })
    }

    fn get(&self, k: &FunctionKey) -> &[AttributeProto] {
        self.by_function.get(k).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The fields of `ModelProto`/`FunctionProto` that tract's types lack, with the ONNX tags.
mod side_proto {
    use tract_onnx::pb::AttributeProto;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelFunctions {
        #[prost(message, repeated, tag = "25")]
        pub functions: Vec<FunctionDefaults>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FunctionDefaults {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "10")]
        pub domain: Option<String>,
        #[prost(message, repeated, tag = "11")]
        pub attribute_proto: Vec<AttributeProto>,
    }
}

/// Inlines every call of a model-local function and empties `proto.functions`; calls of
/// `ai.adanorm` functions named like this crate's ops stay, as the native ops.
///
/// An attribute reference with neither a call-site value nor a default is dropped, so the op's
/// own default applies (as ONNX specifies). Defaults themselves are not in tract's `pb` types:
/// use [`inline_functions_with_defaults`] (or [`crate::model_for_path`], which does) when the
/// model's functions may declare them.
pub fn inline_functions(proto: &mut ModelProto) -> TractResult<()> {
    inline_functions_with_defaults(proto, &FunctionAttributeDefaults::default())
}

/// [`inline_functions`], with the functions' attribute defaults read from the model's bytes.
///
/// On error (a recursive function, a call with more inputs or outputs than the function has,
/// two functions with one name) `proto` is left partly inlined and should be discarded.
pub fn inline_functions_with_defaults(
    proto: &mut ModelProto,
    defaults: &FunctionAttributeDefaults,
) -> TractResult<()> {
    if proto.functions.is_empty() {
        return Ok(());
    }
    let Some(mut graph) = proto.graph.take() else {
        return Ok(());
    };
    let functions = std::mem::take(&mut proto.functions);
    let result = inline_into(&mut graph, &functions, defaults);
    proto.graph = Some(graph);
    // The bodies' nodes now live in the graph, so the model must import their opsets.
    for import in result?.iter().flat_map(|f| &f.opset_import) {
        let imported = proto
            .opset_import
            .iter()
            .any(|o| key(&o.domain, "") == key(&import.domain, ""));
        if !imported {
            proto.opset_import.push(import.clone());
        }
    }
    Ok(())
}

/// Inlines into `graph`; returns the functions that were called.
fn inline_into<'f>(
    graph: &mut GraphProto,
    functions: &'f [FunctionProto],
    defaults: &'f FunctionAttributeDefaults,
) -> TractResult<Vec<&'f FunctionProto>> {
    let mut library = HashMap::new();
    for f in functions {
        let k = key(
            f.domain.as_deref().unwrap_or(""),
            f.name.as_deref().unwrap_or(""),
        );
        // `rewrite --portable` bodies of our own ops: the native op is the contract itself.
        if k.0 == DOMAIN && OP_TYPES.contains(&k.1.as_str()) {
            continue;
        }
        if library.insert(k.clone(), f).is_some() {
            bail!(
                "The model defines function {}.{} more than once; overloaded functions are not \
                 supported",
                k.0,
                k.1
            );
        }
    }
    let mut inliner = Inliner {
        library,
        defaults,
        stem: unused_stem(graph),
        calls: 0,
        called: HashSet::new(),
    };
    inliner.inline_graph(graph, &mut Vec::new())?;
    let called = inliner.called;
    Ok(functions
        .iter()
        .filter(|f| {
            called.contains(&key(
                f.domain.as_deref().unwrap_or(""),
                f.name.as_deref().unwrap_or(""),
            ))
        })
        .collect())
}

struct Inliner<'f> {
    library: HashMap<FunctionKey, &'f FunctionProto>,
    defaults: &'f FunctionAttributeDefaults,
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
    ) -> TractResult<()> {
        let nodes = std::mem::take(&mut graph.node);
        let mut expanded = Vec::with_capacity(nodes.len());
        for node in nodes {
            self.expand(node, &mut expanded, stack)?;
        }
        graph.node = expanded;
        Ok(())
    }

    /// Pushes `node` onto `out`, or, if it calls a function, the (recursively expanded) body.
    fn expand(
        &mut self,
        mut node: NodeProto,
        out: &mut Vec<NodeProto>,
        stack: &mut Vec<FunctionKey>,
    ) -> TractResult<()> {
        for attribute in &mut node.attribute {
            for g in attribute.g.iter_mut().chain(&mut attribute.graphs) {
                self.inline_graph(g, stack)?;
            }
        }
        let k = key(&node.domain, &node.op_type);
        let Some(&function) = self.library.get(&k) else {
            out.push(node);
            return Ok(());
        };
        if stack.contains(&k) {
            bail!(
                "{}: function {}.{} calls itself (through {:?}); ONNX functions may not recurse",
                node_label(&node),
                k.0,
                k.1,
                stack
            );
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
    ) -> TractResult<Vec<NodeProto>> {
        ensure!(
            call.input.len() <= function.input.len() && call.output.len() <= function.output.len(),
            "{}: calls function {}.{} with {} inputs and {} outputs; it has {} and {}",
            node_label(call),
            k.0,
            k.1,
            call.input.len(),
            call.output.len(),
            function.input.len(),
            function.output.len()
        );
        let prefix = format!("{}{}__{}/", self.stem, self.calls, k.1);
        self.calls += 1;
        let renames = Renames::new(function, call, prefix.clone());
        let defaults = self.defaults.get(k);

        let mut body = function.node.clone();
        for (ix, node) in body.iter_mut().enumerate() {
            let what = if node.name.is_empty() {
                &node.op_type
            } else {
                &node.name
            };
            node.name = format!("{prefix}{ix}_{what}");
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
            resolve_attribute_refs(&mut node.attribute, &call.attribute, defaults);
        }
        // A formal output that is also a formal input: nothing in the body produces it.
        for (ix, formal) in function.output.iter().enumerate() {
            if function.input.contains(formal) {
                body.push(NodeProto {
                    name: format!("{prefix}passthrough_{ix}"),
                    op_type: "Identity".into(),
                    input: vec![renames.read(formal)],
                    output: vec![renames.write(formal)],
                    ..NodeProto::default()
                });
            }
        }
        Ok(body)
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
    local.extend(g.input.iter().map(|i| i.name.clone()));
    local.extend(g.initializer.iter().map(|t| t.name.clone()));
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
    g.output.iter_mut().for_each(|o| free(&mut o.name));
}

/// Replaces each attribute reference by the call's attribute of that name, else the function's
/// default, else drops it; recurses into graph attributes, whose nodes may hold references too.
fn resolve_attribute_refs(
    attributes: &mut Vec<AttributeProto>,
    call: &[AttributeProto],
    defaults: &[AttributeProto],
) {
    attributes.retain_mut(|attribute| {
        if attribute.ref_attr_name.is_empty() {
            return true;
        }
        let source = call
            .iter()
            .chain(defaults)
            .find(|a| a.name == attribute.ref_attr_name);
        match source {
            Some(value) => {
                let name = std::mem::take(&mut attribute.name);
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
    names.extend(
        graph
            .input
            .iter()
            .chain(&graph.output)
            .map(|i| i.name.as_str()),
    );
    names.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    for node in &graph.node {
        names.insert(&node.name);
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

    fn node(op: &str, domain: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            domain: domain.into(),
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
        let mut m = model(
            vec![
                node("F", "local", &["a"], &["b"]),
                node("F", "local", &["b"], &["c"]),
            ],
            vec![f],
        );
        inline_functions(&mut m).unwrap();
        let nodes = &m.graph.as_ref().unwrap().node;
        assert!(m.functions.is_empty());
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].input, ["a"]);
        assert_eq!(nodes[1].output, ["b"]);
        assert_eq!(nodes[2].input, ["b"]);
        assert_eq!(nodes[3].output, ["c"]);
        assert_ne!(nodes[0].output, nodes[2].output);
        let names: HashSet<_> = nodes.iter().map(|n| &n.name).collect();
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
        inline_functions(&mut m).unwrap();
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
        let err = inline_functions(&mut m).unwrap_err();
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
        inline_functions(&mut m).unwrap();
        let nodes = &m.graph.as_ref().unwrap().node;
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].input, ["a"]);
        assert!(nodes[0].output[0].starts_with("__inlined0__F/"));
        assert_eq!(
            (
                nodes[1].op_type.as_str(),
                &nodes[1].input,
                &nodes[1].output[0]
            ),
            ("Identity", &vec!["a".to_string()], &"b".to_string())
        );
    }
}
