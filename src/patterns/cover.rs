//! Whole-match checks: which nodes a match covers (core nodes, plus constant and shape helpers
//! that nothing else uses), where its input really is (casts in front of it belong to it only
//! when nothing else reads them), and whether it can be rewritten: no inner value may be a graph
//! output or be read outside the subgraph, and the axes must be expressible.
//!
//! [`finish`] runs the passes in order on a [`Cover`], the match under construction.

use std::collections::HashSet;

use super::candidate::Candidate;
use super::canon::Canon;
use super::expanded;
use super::{Family, Match};
use crate::graph::{shape_tensors, GraphIndex, NodeId};

/// A candidate on its way to a match: the nodes found so far and what the passes decided.
struct Cover<'c, 'g, 'm> {
    c: &'c Canon<'g, 'm>,
    /// Nodes earlier matches own, or reserved for a match that needs them: the input's casts
    /// are absorbed only up to one of them.
    not_absorbable: &'c HashSet<NodeId>,
    cand: Candidate,
    core: HashSet<NodeId>,
    /// Helpers: they join the match when nothing outside it reads them.
    aux: Vec<NodeId>,
    /// The helpers that joined.
    included: HashSet<NodeId>,
    /// Shape values the core reads that are computed in the graph (not data inputs).
    shape_values: HashSet<String>,
    input: String,
    /// Each read's chain of absorbed casts: (the value a cast made, that cast).
    input_chains: Vec<Vec<(String, NodeId)>>,
    output: String,
    scale: Option<String>,
    bias: Option<String>,
    mean_output: Option<String>,
    inv_std_output: Option<String>,
    /// The axis of `X` the rows start at, for the ONNX function-body form.
    lifted_axis: Option<i64>,
    /// Its intermediate values go through QDQ round trips ([`Cover::check_inner_roundings`]).
    quantised: bool,
    problems: Vec<String>,
}

/// The candidate as a match: every pass of the whole-match checks, in order. No node of
/// `not_absorbable` (earlier matches', reserved ones) is absorbed as an input cast.
pub fn finish(c: &Canon<'_, '_>, not_absorbable: &HashSet<NodeId>, cand: Candidate) -> Match {
    let mut m = Cover::new(c, not_absorbable, cand);
    m.absorb_inner_copies();
    m.find_shape_helpers();
    m.absorb_input_casts();
    m.start_at_own_type();
    m.check_inner_roundings();
    m.lift_function_body();
    m.find_constant_helpers();
    m.include_unshared_helpers();
    m.check_no_inner_value_escapes();
    m.into_match()
}

impl<'c, 'g, 'm> Cover<'c, 'g, 'm> {
    fn new(c: &'c Canon<'g, 'm>, not_absorbable: &'c HashSet<NodeId>, cand: Candidate) -> Self {
        Cover {
            c,
            not_absorbable,
            core: cand.core.iter().copied().collect(),
            aux: cand.aux.clone(),
            included: HashSet::new(),
            shape_values: HashSet::new(),
            input: cand.stats.x.clone(),
            input_chains: Vec::new(),
            output: cand.output.clone(),
            scale: cand.scale.clone(),
            bias: cand.bias.clone(),
            mean_output: None,
            inv_std_output: None,
            lifted_axis: None,
            quantised: false,
            problems: cand.problems.clone(),
            cand,
        }
    }

    fn g(&self) -> &'g GraphIndex<'m> {
        self.c.g
    }

    /// Chains of copies between two nodes of the match (`Canon::op` looks through them:
    /// Identity, float Casts, QDQ pairs) are the match's when nothing else reads them. A copy
    /// that two chains share (a centred value rounded once, then widened again for the variance
    /// and for the division) joins when every reader of it does.
    fn absorb_inner_copies(&mut self) {
        let (c, g) = (self.c, self.g());
        loop {
            let mut chains: Vec<Vec<NodeId>> = Vec::new();
            for &id in &self.core {
                for v in &g.node(id).input {
                    let mut chain: Vec<NodeId> = Vec::new();
                    let mut w = v.as_str();
                    while let Some((p, n)) = g.producer_node(w) {
                        if self.core.contains(&p) {
                            break;
                        }
                        let Some(input) = c.copied_value(n) else {
                            break;
                        };
                        chain.push(p);
                        // A DequantizeLinear is crossed with its QuantizeLinear.
                        if n.op_type() == "DequantizeLinear" {
                            chain.extend(g.producer(&n.input[0]).map(|(q, _)| q));
                        }
                        w = input;
                    }
                    let from_core = g.producer(w).is_some_and(|(p, _)| self.core.contains(&p));
                    if from_core && !chain.is_empty() {
                        chains.push(chain);
                    }
                }
            }
            // Drop chains with a node read outside the core and the chains kept, until none is.
            loop {
                let kept: HashSet<NodeId> = chains.iter().flatten().copied().collect();
                let read_here_only = |id: &NodeId| {
                    g.node(*id)
                        .output
                        .iter()
                        .filter(|o| !o.is_empty())
                        .all(|o| {
                            !g.is_graph_output(o)
                                && g.consumers(o)
                                    .iter()
                                    .all(|r| self.core.contains(r) || kept.contains(r))
                        })
                };
                let before = chains.len();
                chains.retain(|chain| chain.iter().all(read_here_only));
                if chains.len() == before {
                    break;
                }
            }
            let interior: Vec<NodeId> = chains
                .into_iter()
                .flatten()
                .filter(|id| !self.core.contains(id))
                .collect();
            if interior.is_empty() {
                break;
            }
            self.core.extend(interior);
        }
    }

    /// Shapes the core reads that are computed from other shapes (dynamic Reshape and Expand
    /// targets): their nodes are helpers, the values are not data inputs.
    fn find_shape_helpers(&mut self) {
        let (c, g) = (self.c, self.g());
        for &id in &self.core {
            for v in &g.node(id).input {
                let outside = g.producer(v).is_some_and(|(p, _)| !self.core.contains(&p));
                if outside && !c.is_constant(v) {
                    if let Some(t) = shape_tensors::contents(g, v) {
                        self.shape_values.insert(v.clone());
                        self.aux.extend(t.nodes);
                    }
                }
            }
        }
    }

    /// Where the input is read: Casts in front of the match that only it reads are absorbed.
    /// Every data read must reach the same input. A cast another match owns or needs (the
    /// Identity that ends a function body, say) stays its: the input starts after it.
    fn absorb_input_casts(&mut self) {
        let (c, g) = (self.c, self.g());
        let x = self.cand.stats.x.clone();
        let is_param =
            |v: &str| self.cand.scale.as_deref() == Some(v) || self.cand.bias.as_deref() == Some(v);
        let candidate_aux: HashSet<NodeId> = self.cand.aux.iter().copied().collect();
        let reads: HashSet<String> = self
            .core
            .iter()
            .flat_map(|&id| g.node(id).input.iter())
            .filter(|v| !v.is_empty() && !is_param(v) && !c.is_constant(v))
            .filter(|v| !self.shape_values.contains(v.as_str()))
            .filter(|v| {
                g.producer(v)
                    .is_none_or(|(p, _)| !self.core.contains(&p) && !candidate_aux.contains(&p))
            })
            .cloned()
            .collect();
        let mut inputs = HashSet::new();
        // Until nothing changes: a cast read by two reads' chains is the match's only once both
        // chains reached it, whichever is walked first.
        loop {
            let before = self.core.len();
            inputs.clear();
            self.input_chains.clear();
            for r in &reads {
                let mut v = r.clone();
                let mut chain = Vec::new();
                while v != x {
                    let Some((id, node)) = g.producer_node(&v) else {
                        break;
                    };
                    let is_cast = matches!(node.op_type(), "Cast" | "Identity")
                        && !self.not_absorbable.contains(&id);
                    let only_us = g.consumers(&v).iter().all(|n| self.core.contains(n))
                        && !g.is_graph_output(&v);
                    if !is_cast || !only_us {
                        break;
                    }
                    self.core.insert(id);
                    chain.push((v.clone(), id));
                    v = node.input[0].clone();
                }
                self.input_chains.push(chain);
                inputs.insert(v);
            }
            if self.core.len() == before {
                break;
            }
        }
        self.input = match inputs.len() {
            1 => inputs.into_iter().next().expect("one input"),
            // Every read is of a constant: the norm normalises a stored table (DeBERTa-v2's
            // relative position embeddings), which the node reads as it is.
            0 if c.is_constant(&x) => x,
            _ => {
                self.problems.push(format!(
                    "it reads its input '{x}' through several different casts"
                ));
                x
            }
        };
    }

    /// A normalisation computed in a wider type from a cast of its input, whose result stays in
    /// that type (Keras mixed precision: float32 statistics, gain and bias; the cast back comes
    /// after the affine): the match starts after the cast, where its own type begins.
    fn start_at_own_type(&mut self) {
        let g = self.g();
        let ([chain], Some(out_type)) = (self.input_chains.as_slice(), g.elem_type(&self.output))
        else {
            return;
        };
        if g.elem_type(&self.input) == Some(out_type) {
            return;
        }
        if let Some(at) = chain
            .iter()
            .position(|(v, _)| g.elem_type(v) == Some(out_type))
        {
            for (_, id) in &chain[at..] {
                self.core.remove(id);
            }
            self.input = chain[at].0.clone();
        }
    }

    /// Roundings inside the match that one fused node would not make: a round trip through
    /// 8-bit integers (QDQ after the variance, the division, the gain...), or a Cast to a type
    /// narrower than the input's (a float32 LayerNorm rounding its mean to float16). A Cast to
    /// the input's own type or a wider one is what a norm computed in that type does anyway
    /// (a float16 model's float32 islands), and the fused node, which computes in float32 at
    /// least and rounds once, is at least as precise.
    fn check_inner_roundings(&mut self) {
        let g = self.g();
        let in_front: HashSet<NodeId> = self
            .input_chains
            .iter()
            .flatten()
            .map(|&(_, id)| id)
            .collect();
        let x_type = g.elem_type(&self.input);
        let mut ids: Vec<NodeId> = self.core.difference(&in_front).copied().collect();
        ids.sort_unstable();
        let mut quantised_after = Vec::new();
        for id in ids {
            let n = g.node(id);
            match n.op_type() {
                "QuantizeLinear" => quantised_after.extend(n.input.first().cloned()),
                "Cast" => {
                    let to = crate::onnx::attr::int(n, "to").unwrap_or(0) as i32;
                    let from = g.elem_type(&n.input[0]);
                    let holds = |t: i32| super::canon::holds_exactly(to, t);
                    // Without the input's type, only a Cast known to be exact is taken.
                    let rounds = match x_type {
                        Some(x) => !holds(x),
                        None => !from.is_some_and(holds),
                    };
                    if crate::onnx::dtype::is_float(to) && rounds {
                        let than = match x_type {
                            Some(x) => {
                                format!("narrower than its input's {}", crate::onnx::dtype::name(x))
                            }
                            None => "and its input's type is unknown".into(),
                        };
                        self.problems.push(format!(
                            "it rounds '{}' to {} inside, {than}: one fused node would not round there",
                            n.input[0],
                            crate::onnx::dtype::name(to),
                        ));
                    }
                }
                _ => {}
            }
        }
        if !quantised_after.is_empty() {
            self.quantised = true;
            // First: this is what makes it not rewritable whatever else holds.
            self.problems.insert(0, format!(
                "it rounds its intermediate values to integers (QuantizeLinear → DequantizeLinear after {}): one fused node would not round where the original does",
                quantised_after.iter().map(|v| format!("'{v}'")).collect::<Vec<_>>().join(", ")
            ));
        }
    }

    /// The ONNX function-body form works on a flattened view: lift it back to X.
    fn lift_function_body(&mut self) {
        let Some(l) = expanded::lift(
            self.c,
            &self.cand.stats,
            &self.core,
            &self.input,
            &self.output,
            self.scale.as_deref(),
            self.bias.as_deref(),
        ) else {
            return;
        };
        self.core.extend(l.core);
        self.aux.extend(l.aux);
        (self.input, self.output, self.scale, self.bias) = (l.input, l.output, l.scale, l.bias);
        (self.mean_output, self.inv_std_output, self.lifted_axis) =
            (l.mean_output, l.inv_std_output, Some(l.axis));
    }

    /// Helpers: the nodes holding constants the core and the helpers read (row-count chains
    /// end in them).
    fn find_constant_helpers(&mut self) {
        let (c, g) = (self.c, self.g());
        let params: HashSet<&str> = self
            .scale
            .iter()
            .chain(&self.bias)
            .map(String::as_str)
            .collect();
        let mut stack: Vec<NodeId> = self.core.iter().chain(&self.aux).copied().collect();
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        while let Some(id) = stack.pop() {
            for v in &g.node(id).input {
                if v.is_empty() || params.contains(v.as_str()) || !c.is_constant(v) {
                    continue;
                }
                if let Some((p, _)) = g.producer(v) {
                    if seen.insert(p) && !self.core.contains(&p) {
                        found.push(p);
                        stack.push(p);
                    }
                }
            }
        }
        self.aux.extend(found);
    }

    /// Helpers belong to the match when nothing outside it uses them.
    fn include_unshared_helpers(&mut self) {
        let g = self.g();
        loop {
            let before = self.included.len();
            for &a in &self.aux {
                if self.included.contains(&a) || self.core.contains(&a) {
                    continue;
                }
                let outputs = &g.node(a).output;
                let only_us = outputs.iter().all(|o| {
                    !g.is_graph_output(o)
                        && g.consumers(o)
                            .iter()
                            .all(|n| self.core.contains(n) || self.included.contains(n))
                });
                if only_us {
                    self.included.insert(a);
                }
            }
            if self.included.len() == before {
                break;
            }
        }
    }

    /// No inner value may escape: only the match's outputs are read outside it.
    fn check_no_inner_value_escapes(&mut self) {
        let g = self.g();
        let outputs: HashSet<&str> = [
            Some(&self.output),
            self.mean_output.as_ref(),
            self.inv_std_output.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        let mut escapes = None;
        let mut ids: Vec<NodeId> = self.core.iter().copied().collect();
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
                    .find(|n| !self.core.contains(n) && !self.included.contains(n))
                {
                    escapes.get_or_insert(format!(
                        "inner value '{o}' is also read by node '{}' outside the subgraph",
                        g.label(outside)
                    ));
                }
            }
        }
        self.problems.extend(escapes);
    }

    /// The match: the axes the ai.adanorm ops (and ONNX LayerNormalization) can express, the
    /// element type, and the first problem found as the reason it cannot be rewritten.
    fn into_match(self) -> Match {
        let g = self.g();
        let Cover {
            cand,
            core,
            included,
            input,
            output,
            scale,
            bias,
            mean_output,
            inv_std_output,
            input_chains,
            lifted_axis,
            quantised,
            mut problems,
            ..
        } = self;
        let s = &cand.stats;
        let mut axes = s.axes.axes.clone();
        let mut axis = s.axes.trailing_axis();
        let mut channels_first = false;
        if let Some(a) = lifted_axis {
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
        if cand.family == Family::RmsNorm {
            problems.insert(0, "RMSNorm has no centring: reported, left alone".into());
        }

        let mut nodes: Vec<NodeId> = core.into_iter().chain(included).collect();
        nodes.sort_unstable();
        nodes.dedup();
        // (`start_at_own_type` may have given some of the chains' casts back.)
        let mut input_casts: Vec<NodeId> = input_chains
            .iter()
            .flatten()
            .map(|&(_, id)| id)
            .filter(|id| nodes.binary_search(id).is_ok())
            .collect();
        input_casts.sort_unstable();
        input_casts.dedup();
        let mut m = Match {
            family: cand.family,
            form: cand.form,
            function_body: lifted_axis.is_some(),
            adanorm_factor: false,
            quantised,
            nodes,
            released: vec![],
            input_casts,
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
}
