//! The matcher: finds every LayerNorm-family subgraph in a model's main graph.
//!
//! It reads the graph canonically ([`canon`]), then recognises layers: statistics ending in a
//! `Sqrt` ([`stats`]), the normalisation that divides the centred input by them and the affine
//! tail ([`decomposed`], [`affine`]), fused ops as they are ([`fused`]). Each candidate is then
//! checked as a whole ([`cover`]): no inner value may escape, and what the match would replace is
//! exactly the nodes listed. A failed recognition is `None`; a wrong match is the worst bug this
//! tool can have, so every layer checks keepdims, axes, constants and shapes.

pub mod affine;
pub mod batchnorm;
pub mod canon;
pub mod cover;
pub mod decomposed;
pub mod function_body;
pub mod functions;
pub mod fused;
pub mod keepdims;
pub mod norm_ops;
pub mod stats;

use serde::Serialize;

use crate::graph::{GraphIndex, NodeId};
use crate::onnx::dtype;

/// The names are `inspect`'s and the CLI's (`--only lnsimple,adanorm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[value(name = "layernorm")]
    LayerNorm,
    #[value(name = "lnsimple")]
    LnSimple,
    #[value(name = "adanorm")]
    AdaNorm,
    /// Reported, never rewritten: not offered to `--only`.
    #[value(skip)]
    RmsNorm,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::LayerNorm => "layernorm",
            Family::LnSimple => "lnsimple",
            Family::AdaNorm => "adanorm",
            Family::RmsNorm => "rmsnorm",
        }
    }
}

/// One LayerNorm-family subgraph, with the `ai.adanorm` parameters it computes.
#[derive(Debug, Clone)]
pub struct Match {
    pub family: Family,
    /// How it was written, for people: "fused LayerNormalization", "decomposed", ...
    pub form: String,
    /// The nodes it covers (what a rewrite replaces), in graph order.
    pub nodes: Vec<NodeId>,
    pub input: String,
    pub output: String,
    /// Normalised axes as found (positive when the rank is known).
    pub axes: Vec<i64>,
    /// The ops-spec axis, when the axes are the trailing ones.
    pub axis: Option<i64>,
    /// Axis 1 alone of a rank >= 3 input (NCHW, ConvNeXt/SAM `LayerNorm2d`): not a trailing-axes
    /// normalisation, so a rewrite puts the op between Transposes that move axis 1 last and back.
    pub channels_first: bool,
    /// As stored in the model, widened to f64.
    pub epsilon: f64,
    pub unbiased: bool,
    pub eps_in_sqrt: bool,
    pub c: f64,
    pub k: f64,
    pub scale: Option<String>,
    pub bias: Option<String>,
    /// Optional outputs (ops-spec `Mean`, `InvStdDev`) the subgraph also computes.
    pub mean_output: Option<String>,
    pub inv_std_output: Option<String>,
    pub dtype: Option<i32>,
    pub rewritable: bool,
    pub reason: Option<String>,
}

impl Match {
    pub fn dtype_name(&self) -> String {
        self.dtype
            .map(dtype::name)
            .unwrap_or_else(|| "unknown".into())
    }

    pub fn not_rewritable(&mut self, reason: impl Into<String>) {
        if self.rewritable {
            self.rewritable = false;
            self.reason = Some(reason.into());
        }
    }
}

/// Every match in the graph, in graph order of their outputs' producers.
pub fn find_matches(g: &GraphIndex<'_>) -> Vec<Match> {
    let mut matches = fused::find(g);
    let mut claimed: std::collections::HashSet<NodeId> = matches
        .iter()
        .flat_map(|m| m.nodes.iter().copied())
        .collect();
    for m in decomposed::find(g, &claimed)
        .into_iter()
        .filter(|m| keeps_rank(g, m))
    {
        claimed.extend(m.nodes.iter().copied());
        matches.push(m);
    }
    for m in batchnorm::find(g, &claimed) {
        claimed.extend(m.nodes.iter().copied());
        matches.push(m);
    }
    for m in norm_ops::find(g, &claimed) {
        claimed.extend(m.nodes.iter().copied());
        matches.push(m);
    }
    matches.sort_by_key(|m| {
        g.producer(&m.output)
            .map(|(id, _)| id)
            .unwrap_or(usize::MAX)
    });
    matches
}

/// Whether the match's output has its input's rank (where both are known). A one-element
/// constant of higher rank than X (ε stored as `[1, 1, 1, 1]` on a rank-3 input) broadcasts the
/// output up to its rank: read as a scalar, it would make a normalisation of X out of a subgraph
/// whose output has another shape.
fn keeps_rank(g: &GraphIndex<'_>, m: &Match) -> bool {
    match (g.rank(&m.input), g.rank(&m.output)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// The matches of the main graph `g`, then of each of its `subgraphs` (`GraphIndex::subgraphs`:
/// If branches, Loop and Scan bodies; merged decoders keep every LayerNorm there).
pub fn find_matches_everywhere<'a, 'm>(
    g: &'a GraphIndex<'m>,
    subgraphs: &'a [GraphIndex<'m>],
) -> Vec<(&'a GraphIndex<'m>, Vec<Match>)> {
    std::iter::once(g)
        .chain(subgraphs)
        .map(|scope| (scope, find_matches(scope)))
        .collect()
}

/// Matches per family, in the order the report prints them.
pub fn summary(matches: &[Match]) -> [(Family, usize); 4] {
    let count = |f| matches.iter().filter(|m| m.family == f).count();
    [
        (Family::LayerNorm, count(Family::LayerNorm)),
        (Family::LnSimple, count(Family::LnSimple)),
        (Family::AdaNorm, count(Family::AdaNorm)),
        (Family::RmsNorm, count(Family::RmsNorm)),
    ]
}
