//! A read-only index over a model's main graph: who produces and who consumes each value,
//! which values are constants (and their numbers), graph inputs/outputs, a topological order,
//! and the element types and shapes known or inferred for each value.
//!
//! Building the index validates the graph: a node reading an undefined value, a value produced
//! twice, a standard op without outputs, or a cycle is an error naming the node.

pub mod constants;
pub mod shape_tensors;
pub mod shapes;

use std::collections::{HashMap, HashSet, VecDeque};

use crate::error::{Error, Result};
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto};
use crate::onnx::Model;

pub use constants::Constants;
pub use shapes::{Dim, ValueFacts};

/// Index of a node in `GraphProto.node`.
pub type NodeId = usize;

pub struct GraphIndex<'m> {
    pub model: &'m Model,
    pub graph: &'m GraphProto,
    /// Where `graph` sits: empty for the main graph, else the steps from it down to a subgraph.
    pub scope: Scope,
    producer: HashMap<&'m str, (NodeId, usize)>,
    consumers: HashMap<&'m str, Vec<NodeId>>,
    initializers: HashMap<&'m str, &'m TensorProto>,
    graph_inputs: HashSet<&'m str>,
    graph_outputs: HashSet<&'m str>,
    /// Values of enclosing graphs a subgraph reads that are constants there (`Constant` nodes;
    /// outer initializers are in `initializers`).
    outer_constants: HashSet<String>,
    /// Every value an enclosing graph defines (read here or not).
    outer_values: HashSet<String>,
    order: Vec<NodeId>,
    facts: HashMap<String, ValueFacts>,
    pub constants: Constants<'m>,
}

/// One step from a graph into a subgraph: node `node`'s attribute `attribute`, its graph
/// `index` (0 for a `GRAPH` attribute, the position in a `GRAPHS` one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeStep {
    pub node: NodeId,
    pub attribute: usize,
    pub index: usize,
    /// `If '/dec/If' then_branch`, for reports.
    pub label: String,
}

/// The path from the main graph to a (sub)graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(pub Vec<ScopeStep>);

impl Scope {
    pub fn is_main(&self) -> bool {
        self.0.is_empty()
    }

    /// `main graph`, or `If '/x' then_branch > Loop 'l' body`.
    pub fn label(&self) -> String {
        if self.is_main() {
            return "main graph".into();
        }
        self.0
            .iter()
            .map(|s| s.label.as_str())
            .collect::<Vec<_>>()
            .join(" > ")
    }

    /// The graph this scope names inside `root` (the main graph), if it still exists there.
    pub fn graph_mut<'a>(&self, root: &'a mut GraphProto) -> Option<&'a mut GraphProto> {
        let mut g = root;
        for step in &self.0 {
            let a = g
                .node
                .get_mut(step.node)?
                .attribute
                .get_mut(step.attribute)?;
            // `subgraphs` numbers a GRAPH attribute's graph 0, then a GRAPHS attribute's.
            let has_g = a.g.is_some();
            g = if has_g && step.index == 0 {
                a.g.as_mut()?
            } else {
                a.graphs.get_mut(step.index - usize::from(has_g))?
            };
        }
        Some(g)
    }
}

impl<'m> GraphIndex<'m> {
    pub fn build(model: &'m Model) -> Result<Self> {
        Self::build_scope(model, model.graph(), Scope::default(), None)
    }

    /// Indexes of every subgraph (If branches, Loop and Scan bodies, nested at any depth),
    /// each seeing the values of the graphs around it: outer initializers count as its
    /// constants, other outer values as its inputs, with what is known of their types.
    pub fn subgraphs(&self) -> Result<Vec<GraphIndex<'m>>> {
        let mut out = Vec::new();
        for (id, node) in self.graph.node.iter().enumerate() {
            for (ai, a) in node.attribute.iter().enumerate() {
                let graphs: Vec<&'m GraphProto> = a.g.iter().chain(a.graphs.iter()).collect();
                for (gi, sub) in graphs.into_iter().enumerate() {
                    let mut scope = self.scope.clone();
                    scope.0.push(ScopeStep {
                        node: id,
                        attribute: ai,
                        index: gi,
                        label: format!("{} '{}' {}", node.op_type(), self.label(id), a.name()),
                    });
                    let index = Self::build_scope(self.model, sub, scope, Some(self))?;
                    let nested = index.subgraphs()?;
                    out.push(index);
                    out.extend(nested);
                }
            }
        }
        Ok(out)
    }

    fn build_scope(
        model: &'m Model,
        graph: &'m GraphProto,
        scope: Scope,
        outer: Option<&GraphIndex<'m>>,
    ) -> Result<Self> {
        let where_ = (!scope.is_main()).then(|| scope.label());
        let located = |mut e: Error| {
            if let Some(w) = &where_ {
                e.message = format!("in {w}: {}", e.message);
            }
            e.in_file(&model.path)
        };
        let mut initializers: HashMap<&str, &TensorProto> =
            graph.initializer.iter().map(|t| (t.name(), t)).collect();
        let mut graph_inputs: HashSet<&str> = graph.input.iter().map(|v| v.name()).collect();
        // What a subgraph reads from enclosing graphs (names it does not define itself).
        let mut outer_facts = HashMap::new();
        let mut outer_constants = HashSet::new();
        let mut outer_values = HashSet::new();
        if let Some(outer) = outer {
            outer_values.clone_from(&outer.outer_values);
            outer_values.extend(outer.producer.keys().map(|s| s.to_string()));
            outer_values.extend(outer.initializers.keys().map(|s| s.to_string()));
            outer_values.extend(outer.graph_inputs.iter().map(|s| s.to_string()));
            let local: HashSet<&str> = graph
                .node
                .iter()
                .flat_map(|n| n.output.iter().map(String::as_str))
                .chain(initializers.keys().copied())
                .chain(graph_inputs.iter().copied())
                .collect();
            // Names read here or in graphs nested deeper, which reach outer values through us.
            let mut read = Vec::new();
            names_read_below(graph, &mut read);
            for name in read {
                if name.is_empty() || local.contains(name) {
                    continue;
                }
                match outer
                    .initializer(name)
                    .filter(|_| !outer.is_overridable(name))
                {
                    Some(t) => {
                        initializers.insert(name, t);
                    }
                    None if outer.is_defined(name) => {
                        graph_inputs.insert(name);
                        if outer.constants.is_constant(outer, name) {
                            outer_constants.insert(name.to_string());
                        }
                    }
                    None => {}
                }
                if let Some(f) = outer.facts(name) {
                    outer_facts.insert(name.to_string(), f.clone());
                }
            }
        }
        let graph_outputs: HashSet<&str> = graph.output.iter().map(|v| v.name()).collect();

        let mut producer = HashMap::new();
        for (id, node) in graph.node.iter().enumerate() {
            // Every standard ONNX op has at least one output; one without is a broken model
            // (and would leave the matcher a node whose result it cannot name).
            if node.output.is_empty() && crate::onnx::is_standard(node) {
                return Err(located(
                    Error::msg(format!("{} node has no outputs", node.op_type()))
                        .at_node(node_label(node, id)),
                ));
            }
            // Nor does it run without its required inputs (a one-input `Div`).
            if let Some(slot) = crate::onnx::arity::missing_input(node) {
                return Err(located(
                    Error::msg(format!(
                        "{} node lacks its required input {slot}",
                        node.op_type()
                    ))
                    .at_node(node_label(node, id)),
                ));
            }
            for (slot, out) in node.output.iter().enumerate() {
                if out.is_empty() {
                    continue;
                }
                if producer.insert(out.as_str(), (id, slot)).is_some()
                    || initializers.contains_key(out.as_str())
                {
                    return Err(located(
                        Error::msg(format!("value '{out}' is produced more than once"))
                            .at_node(node_label(node, id)),
                    ));
                }
            }
        }
        let mut consumers: HashMap<&str, Vec<NodeId>> = HashMap::new();
        for (id, node) in graph.node.iter().enumerate() {
            for input in node.input.iter().filter(|i| !i.is_empty()) {
                let defined = producer.contains_key(input.as_str())
                    || initializers.contains_key(input.as_str())
                    || graph_inputs.contains(input.as_str());
                if !defined {
                    return Err(located(
                        Error::msg(format!("input '{input}' is not defined by any node, initializer or graph input"))
                            .at_node(node_label(node, id)),
                    ));
                }
                let list = consumers.entry(input.as_str()).or_default();
                if list.last() != Some(&id) {
                    list.push(id);
                }
            }
            // A value read inside a subgraph (If branch, Loop/Scan body, at any depth) is read
            // by the node holding it: an implicit input, as real as an explicit one.
            let mut below = Vec::new();
            for a in &node.attribute {
                for sub in a.g.iter().chain(a.graphs.iter()) {
                    names_read_below(sub, &mut below);
                }
            }
            for name in below {
                let here = producer.contains_key(name)
                    || initializers.contains_key(name)
                    || graph_inputs.contains(name);
                if !here {
                    continue; // defined inside the subgraph, or further out
                }
                let list = consumers.entry(name).or_default();
                if list.last() != Some(&id) {
                    list.push(id);
                }
            }
        }
        for out in &graph.output {
            let name = out.name();
            if !(producer.contains_key(name)
                || initializers.contains_key(name)
                || graph_inputs.contains(name))
            {
                return Err(located(Error::msg(format!(
                    "graph output '{name}' is not produced by anything"
                ))));
            }
        }
        let order = topological_order(graph, &producer).map_err(located)?;
        let mut index = GraphIndex {
            model,
            graph,
            scope,
            producer,
            consumers,
            initializers,
            graph_inputs,
            graph_outputs,
            outer_constants,
            outer_values,
            order,
            facts: HashMap::new(),
            constants: Constants::new(model),
        };
        if let Some(outer) = outer {
            // Outer constants made by nodes (a `Constant` ε) keep their values here.
            for name in &index.outer_constants {
                if let Some(v) = outer.constant(name) {
                    index.constants.seed(name, v);
                }
            }
        }
        index.facts = shapes::infer_with(&index, outer_facts);
        Ok(index)
    }

    /// Whether `name` is a value of this graph or of one around it.
    fn is_defined(&self, name: &str) -> bool {
        self.producer.contains_key(name)
            || self.initializers.contains_key(name)
            || self.graph_inputs.contains(name)
    }

    /// Whether an enclosing graph defines `name` (a subgraph may read it without defining it).
    pub fn is_outer_value(&self, name: &str) -> bool {
        self.outer_values.contains(name)
    }

    /// A value an enclosing graph makes with a `Constant` node (see `outer_constants`).
    pub fn is_outer_constant(&self, name: &str) -> bool {
        self.outer_constants.contains(name)
    }

    pub fn node(&self, id: NodeId) -> &'m NodeProto {
        &self.graph.node[id]
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &'m NodeProto)> + '_ {
        self.graph.node.iter().enumerate()
    }

    /// Node ids in an order where producers come before consumers.
    pub fn topological(&self) -> &[NodeId] {
        &self.order
    }

    /// The node producing a value (and which of its outputs it is).
    pub fn producer(&self, value: &str) -> Option<(NodeId, usize)> {
        self.producer.get(value).copied()
    }

    pub fn producer_node(&self, value: &str) -> Option<(NodeId, &'m NodeProto)> {
        self.producer(value).map(|(id, _)| (id, self.node(id)))
    }

    /// Nodes reading a value, each once, in graph order.
    pub fn consumers(&self, value: &str) -> &[NodeId] {
        self.consumers.get(value).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn initializer(&self, name: &str) -> Option<&'m TensorProto> {
        self.initializers.get(name).copied()
    }

    pub fn is_graph_input(&self, name: &str) -> bool {
        self.graph_inputs.contains(name)
    }

    /// Whether a feed may replace this value's initializer: it is also a graph input, at IR
    /// version 4 or later. Below IR 4 every initializer had to be listed as an input, so the
    /// listing says nothing there: the initializer is the model's constant.
    pub fn is_overridable(&self, name: &str) -> bool {
        self.is_graph_input(name) && self.model.proto.ir_version.unwrap_or(0) >= 4
    }

    pub fn is_graph_output(&self, name: &str) -> bool {
        self.graph_outputs.contains(name)
    }

    pub fn facts(&self, value: &str) -> Option<&ValueFacts> {
        self.facts.get(value)
    }

    pub fn elem_type(&self, value: &str) -> Option<i32> {
        self.facts(value).and_then(|f| f.elem_type)
    }

    pub fn rank(&self, value: &str) -> Option<usize> {
        self.facts(value)
            .and_then(|f| f.shape.as_ref())
            .map(Vec::len)
    }

    pub fn shape(&self, value: &str) -> Option<&[Dim]> {
        self.facts(value).and_then(|f| f.shape.as_deref())
    }

    /// The name a report shows for a node: its name, or `op_type#index` when it has none.
    pub fn label(&self, id: NodeId) -> String {
        node_label(self.node(id), id)
    }

    /// The constant value of `value`, if it is one (see [`Constants`]).
    pub fn constant(&self, value: &str) -> Option<std::rc::Rc<crate::onnx::tensor::ConstValue>> {
        self.constants.value(self, value)
    }
}

/// Every input name of `graph`'s nodes and of the nodes of its subgraphs, at any depth.
fn names_read_below<'g>(graph: &'g GraphProto, out: &mut Vec<&'g str>) {
    for n in &graph.node {
        out.extend(n.input.iter().map(String::as_str));
        for a in &n.attribute {
            for sub in a.g.iter().chain(a.graphs.iter()) {
                names_read_below(sub, out);
            }
        }
    }
}

pub fn node_label(node: &NodeProto, id: NodeId) -> String {
    if node.name().is_empty() {
        format!("{}#{id}", node.op_type())
    } else {
        node.name().to_string()
    }
}

/// Kahn's algorithm; a node left over sits on a cycle.
fn topological_order(
    graph: &GraphProto,
    producer: &HashMap<&str, (NodeId, usize)>,
) -> Result<Vec<NodeId>> {
    let n = graph.node.len();
    let mut pending = vec![0usize; n];
    let mut dependents: Vec<Vec<NodeId>> = vec![Vec::new(); n];
    for (id, node) in graph.node.iter().enumerate() {
        let mut seen = HashSet::new();
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if let Some(&(p, _)) = producer.get(input.as_str()) {
                if seen.insert(p) {
                    pending[id] += 1;
                    dependents[p].push(id);
                }
            }
        }
    }
    let mut ready: VecDeque<NodeId> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(id) = ready.pop_front() {
        order.push(id);
        for &d in &dependents[id] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    if order.len() != n {
        let stuck = (0..n)
            .find(|&i| pending[i] > 0)
            .expect("some node is pending");
        return Err(
            Error::msg("the graph has a cycle").at_node(node_label(&graph.node[stuck], stuck))
        );
    }
    Ok(order)
}
