//! Fresh names for everything a rewrite adds (nodes, values, initializers, revert records).
//!
//! One allocator per rewrite, seeded with every name the model already uses anywhere: the main
//! graph and every subgraph at any depth (node names, values, initializers, sparse
//! initializers, graph inputs/outputs, `value_info`), model-local functions (their names, nodes
//! and values) and the node names our revert records are keyed by. A name is handed out once, so
//! two tensors with different contents never share a name, whatever graph they end up in.

use std::collections::HashSet;

use crate::onnx::proto::{GraphProto, ModelProto};

#[derive(Debug, Default, Clone)]
pub struct Names {
    taken: HashSet<String>,
}

impl Names {
    /// Every name `model` uses (see the module doc).
    pub fn of_model(model: &ModelProto) -> Names {
        let mut names = Names::default();
        if let Some(g) = &model.graph {
            names.add_graph(g);
        }
        for f in &model.functions {
            names.reserve(f.name());
            names.reserve_all(f.input.iter().chain(&f.output));
            names.reserve_all(f.value_info.iter().map(|v| v.name()));
            for n in &f.node {
                names.reserve(n.name());
                names.reserve_all(n.input.iter().chain(&n.output));
                names.add_subgraphs(n);
            }
        }
        // Records name the node they belong to: a later rewrite must not reuse that name, or it
        // would overwrite the record of a node that is still in the model.
        for e in &model.metadata_props {
            for prefix in [super::apply::RECORD_PREFIX, super::fold::FOLD_PREFIX] {
                if let Some(node) = e.key().strip_prefix(prefix) {
                    names.reserve(node);
                }
            }
        }
        names
    }

    fn add_graph(&mut self, g: &GraphProto) {
        self.reserve_all(g.input.iter().chain(&g.output).map(|v| v.name()));
        self.reserve_all(g.value_info.iter().map(|v| v.name()));
        self.reserve_all(g.initializer.iter().map(|t| t.name()));
        self.reserve_all(
            g.sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref())
                .map(|t| t.name()),
        );
        for n in &g.node {
            self.reserve(n.name());
            self.reserve_all(n.input.iter().chain(&n.output));
            self.add_subgraphs(n);
        }
    }

    fn add_subgraphs(&mut self, n: &crate::onnx::proto::NodeProto) {
        for a in &n.attribute {
            for sub in a.g.iter().chain(a.graphs.iter()) {
                self.add_graph(sub);
            }
        }
    }

    fn reserve_all<'a>(&mut self, names: impl IntoIterator<Item = impl AsRef<str> + 'a>) {
        for n in names {
            self.reserve(n.as_ref());
        }
    }

    /// Marks `name` as used (the empty name, ONNX's "absent", is never a name).
    pub fn reserve(&mut self, name: &str) {
        if !name.is_empty() {
            self.taken.insert(name.to_string());
        }
    }

    pub fn is_taken(&self, name: &str) -> bool {
        self.taken.contains(name)
    }

    /// `base` if no one uses it yet, else `base.1`, `base.2`, …; reserved before it is returned.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1u64;
        while name.is_empty() || self.is_taken(&name) {
            name = format!("{base}.{i}");
            i += 1;
        }
        self.reserve(&name);
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{
        attribute_proto::AttributeType, AttributeProto, FunctionProto, NodeProto, TensorProto,
        ValueInfoProto,
    };

    fn node(name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            name: Some(name.into()),
            op_type: Some("Identity".into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn every_graph_and_function_is_seen_and_no_name_is_given_twice() {
        let branch = GraphProto {
            node: vec![node("inner", &["outer_w"], &["branch_out"])],
            output: vec![ValueInfoProto {
                name: Some("branch_out".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut if_node = node("if", &["cond"], &["if_out"]);
        if_node.attribute.push(AttributeProto {
            name: Some("then_branch".into()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(branch),
            ..Default::default()
        });
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![if_node],
                initializer: vec![TensorProto {
                    name: Some("outer_w".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            functions: vec![FunctionProto {
                name: Some("f".into()),
                node: vec![node("fn_node", &["fx"], &["fy"])],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut names = Names::of_model(&model);
        for used in ["if", "inner", "branch_out", "outer_w", "fn_node", "fy", "f"] {
            assert!(names.is_taken(used), "{used}");
        }
        assert_eq!(names.fresh("inner"), "inner.1");
        assert_eq!(names.fresh("inner"), "inner.2");
        assert_eq!(names.fresh("new"), "new");
        assert_eq!(names.fresh("new"), "new.1");
        assert_eq!(names.fresh(""), ".1");
    }
}
