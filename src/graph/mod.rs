//! A read-only index over a model's main graph: who produces and who consumes each value,
//! which values are constants (and their numbers), graph inputs/outputs, a topological order,
//! and the element types and shapes known or inferred for each value.
//!
//! Building the index validates the graph: a node reading an undefined value, a value produced
//! twice, or a cycle is an error naming the node.

pub mod constants;
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
    producer: HashMap<&'m str, (NodeId, usize)>,
    consumers: HashMap<&'m str, Vec<NodeId>>,
    initializers: HashMap<&'m str, &'m TensorProto>,
    graph_inputs: HashSet<&'m str>,
    graph_outputs: HashSet<&'m str>,
    order: Vec<NodeId>,
    facts: HashMap<String, ValueFacts>,
    pub constants: Constants<'m>,
}

impl<'m> GraphIndex<'m> {
    pub fn build(model: &'m Model) -> Result<Self> {
        let graph = model.graph();
        let located = |e: Error| e.in_file(&model.path);
        let initializers: HashMap<&str, &TensorProto> =
            graph.initializer.iter().map(|t| (t.name(), t)).collect();
        let graph_inputs: HashSet<&str> = graph.input.iter().map(|v| v.name()).collect();
        let graph_outputs: HashSet<&str> = graph.output.iter().map(|v| v.name()).collect();

        let mut producer = HashMap::new();
        for (id, node) in graph.node.iter().enumerate() {
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
            producer,
            consumers,
            initializers,
            graph_inputs,
            graph_outputs,
            order,
            facts: HashMap::new(),
            constants: Constants::new(model),
        };
        index.facts = shapes::infer(&index);
        Ok(index)
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
