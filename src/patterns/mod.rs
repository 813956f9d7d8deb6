//! The matcher: finds every LayerNorm-family subgraph in a graph.
//!
//! [`RECOGNISERS`] lists every way a normalisation is written that the matcher reads, in the
//! order they claim nodes, each with the ops a reading starts from. A recogniser reads the graph
//! canonically ([`canon`]) from one such node and either returns the match itself (one-node
//! forms, [`fused`]) or a [`Candidate`] ([`candidate`]): the decomposed forms read from the
//! square root ([`decomposed`], with the affine tail from [`affine`]), Keras' `BatchNormalization`
//! form ([`batchnorm`]), `InstanceNormalization` and `MeanVarianceNormalization` ([`norm_ops`]).
//! [`scan`] walks the graph; every candidate goes through the whole-match checks ([`cover`]): no
//! inner value may escape, and what the match would replace is exactly the nodes listed. A failed
//! recognition is `None`; a wrong match is the worst bug this tool can have, so every layer
//! checks keepdims, axes, constants and shapes. [`local_functions`] inlines the model-local
//! functions that hold a match first; which functions are tried is derived from the table.

pub mod adanorm_factor;
pub mod affine;
pub mod batchnorm;
pub mod candidate;
pub mod canon;
pub mod cover;
pub mod decomposed;
pub mod expanded;
pub mod fused;
pub mod keepdims;
pub mod local_functions;
pub mod norm_ops;
pub mod scan;

use std::collections::HashSet;

use adanorm_kernels::params::OpKind;
use serde::Serialize;

use crate::graph::{GraphIndex, NodeId};
use crate::onnx::dtype;
use crate::onnx::proto::NodeProto;
pub use candidate::{Candidate, Form, FusedOp};
use canon::Canon;

/// An op a recogniser starts reading from.
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    /// `""` for the standard ONNX domain (also written `ai.onnx`).
    pub domain: &'static str,
    pub op_type: &'static str,
}

impl Anchor {
    const fn std(op_type: &'static str) -> Anchor {
        Anchor {
            domain: "",
            op_type,
        }
    }

    const fn ms(op_type: &'static str) -> Anchor {
        Anchor {
            domain: "com.microsoft",
            op_type,
        }
    }

    const fn own(kind: OpKind) -> Anchor {
        Anchor {
            domain: adanorm_kernels::params::DOMAIN,
            op_type: kind.op_type(),
        }
    }

    pub fn matches(&self, n: &NodeProto) -> bool {
        let domain_ok = match self.domain {
            "" => crate::onnx::is_standard(n),
            d => n.domain() == d,
        };
        domain_ok && n.op_type() == self.op_type
    }
}

/// How a recogniser reads from its anchor node.
#[derive(Clone, Copy)]
pub enum Read {
    /// The anchor node alone is the normalisation: the match as it is.
    Node(for<'g, 'm> fn(&Canon<'g, 'm>, NodeId) -> Option<Match>),
    /// A candidate that the whole-match checks ([`cover::finish`]) make a match.
    Candidate(for<'g, 'm> fn(&Canon<'g, 'm>, NodeId) -> Option<Candidate>),
}

/// One way of writing a normalisation.
#[derive(Clone, Copy)]
pub struct Recogniser {
    pub name: &'static str,
    /// The nodes a reading starts from.
    pub anchors: &'static [Anchor],
    /// Other standard ops every match of this recogniser contains (its reductions): a
    /// model-local function holding one may hold part of a match, so it is tried for inlining.
    pub parts: &'static [&'static str],
    pub read: Read,
}

/// Every recogniser, in the order they claim nodes: a node taken by an earlier one is not read
/// again (fused ops first; the decomposed forms before the single-node ops whose affine tails
/// they could share).
pub const RECOGNISERS: &[Recogniser] = &[
    Recogniser {
        name: "fused",
        anchors: &[
            Anchor::std("LayerNormalization"),
            Anchor::ms("LayerNormalization"),
            Anchor::ms("SkipLayerNormalization"),
            Anchor::ms("EmbedLayerNormalization"),
            Anchor::std("SimplifiedLayerNormalization"),
            Anchor::ms("SimplifiedLayerNormalization"),
            Anchor::ms("SkipSimplifiedLayerNormalization"),
            Anchor::std("RMSNormalization"),
            Anchor::own(OpKind::AdaNorm),
            Anchor::own(OpKind::LayerNormSimple),
        ],
        parts: &[],
        read: Read::Node(fused::read),
    },
    Recogniser {
        name: "decomposed",
        // Roots as `Sqrt`, or written as powers (`** 0.5`, `** -0.5`).
        anchors: &[Anchor::std("Sqrt"), Anchor::std("Pow")],
        parts: &[
            "ReduceMean",
            "ReduceSum",
            "ReduceSumSquare",
            "GlobalAveragePool",
        ],
        read: Read::Candidate(decomposed::read),
    },
    Recogniser {
        name: "keras-batchnorm",
        anchors: &[Anchor::std("BatchNormalization")],
        parts: &["ReduceMean", "ReduceSumSquare"],
        read: Read::Candidate(batchnorm::read),
    },
    Recogniser {
        name: "instance-norm",
        anchors: &[Anchor::std("InstanceNormalization")],
        parts: &[],
        read: Read::Candidate(norm_ops::instance_norm),
    },
    Recogniser {
        name: "mean-variance-norm",
        anchors: &[Anchor::std("MeanVarianceNormalization")],
        parts: &[],
        read: Read::Candidate(norm_ops::mvn),
    },
];

/// Whether `n` is an op some match is read from or contains ([`Recogniser::anchors`] and
/// [`Recogniser::parts`]): the prefilter for model-local functions.
pub fn may_be_part_of_a_match(n: &NodeProto) -> bool {
    RECOGNISERS.iter().any(|r| {
        r.anchors.iter().any(|a| a.matches(n))
            || (crate::onnx::is_standard(n) && r.parts.contains(&n.op_type()))
    })
}

/// The names are `inspect`'s and the CLI's (`--only lnsimple,adanorm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    LayerNorm,
    LnSimple,
    AdaNorm,
    /// Reported, never rewritten.
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
    /// How it was written.
    pub form: Form,
    /// Read over `Flatten(X)` as the ONNX `LayerNormalization` function body writes it, and
    /// lifted back to `X` ([`expanded`]).
    pub function_body: bool,
    /// The paper's AdaNorm factor `C·(1 − k·y)·y` was read after the inner norm
    /// ([`adanorm_factor`]): `form` is the inner norm's.
    pub adanorm_factor: bool,
    /// Its intermediate values are rounded to integers between its ops (QDQ quantisation):
    /// found, never rewritten.
    pub quantised: bool,
    /// The nodes it covers (what a rewrite replaces), in graph order.
    pub nodes: Vec<NodeId>,
    /// Nodes in front of the match that it reads through but other nodes may read too (the
    /// centring Sub and mean of [`Form::CentredRms`], which two norms can share): a rewrite
    /// removes them once nothing but removed nodes reads them.
    pub released: Vec<NodeId>,
    /// Those of `nodes` that are Casts or Identities in front of its input, absorbed because
    /// only it reads them: the weakest claim, given up to a match that needs them
    /// ([`find_matches`]).
    pub input_casts: Vec<NodeId>,
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
    /// The element type the normalisation reads: its input's (an `EmbedLayerNormalization`'s
    /// embedding sum has its word table's).
    pub dtype: Option<i32>,
    pub rewritable: bool,
    pub reason: Option<String>,
}

impl Match {
    /// How it was written, for people: "fused LayerNormalization", "decomposed", ...
    pub fn form_name(&self) -> String {
        let mut name = self.form.to_string();
        if self.function_body {
            name.push_str(", ONNX function body (Flatten/Reshape)");
        }
        if self.channels_first {
            name.push_str(", channels-first (normalises axis 1 only)");
        }
        if self.adanorm_factor {
            name.push_str(", then the paper's AdaNorm C·(1 − k·y)·y");
        }
        if self.quantised {
            name.push_str(", quantised (QDQ: QuantizeLinear → DequantizeLinear between its ops)");
        }
        name
    }

    /// Whether the match is one node that already is a normalisation op (see
    /// [`Form::is_one_node_op`]): `fuse` leaves it as it is.
    pub fn is_one_node_op(&self) -> bool {
        self.nodes.len() == 1 && self.form.is_one_node_op()
    }

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
///
/// A match's input casts are its only when no other match needs them: a norm's tail crosses the
/// Identities after it, and a norm read after it by an earlier recogniser may have absorbed them
/// as its input casts. Such a norm is dropped as overlapping; the scan is then run again with
/// those nodes reserved (no match absorbs them as input casts), until no dropped match wants one.
pub fn find_matches(g: &GraphIndex<'_>) -> Vec<Match> {
    let c = Canon::new(g);
    let mut reserved: HashSet<NodeId> = HashSet::new();
    loop {
        let (mut matches, dropped) = find_matches_once(g, &c, &reserved);
        let casts: HashSet<NodeId> = matches
            .iter()
            .flat_map(|m| m.input_casts.iter().copied())
            .collect();
        let claimed: HashSet<NodeId> = matches
            .iter()
            .flat_map(|m| m.nodes.iter().copied())
            .collect();
        let wanted: Vec<NodeId> = dropped
            .iter()
            .filter_map(|m| {
                let overlap: Vec<NodeId> = m
                    .nodes
                    .iter()
                    .copied()
                    .filter(|n| claimed.contains(n))
                    .collect();
                overlap.iter().all(|n| casts.contains(n)).then_some(overlap)
            })
            .flatten()
            .filter(|n| !reserved.contains(n))
            .collect();
        if wanted.is_empty() {
            matches.sort_by_key(|m| {
                g.producer(&m.output)
                    .map(|(id, _)| id)
                    .unwrap_or(usize::MAX)
            });
            return matches;
        }
        reserved.extend(wanted);
    }
}

/// One pass of every recogniser: the matches kept, and those dropped as overlapping.
fn find_matches_once(
    g: &GraphIndex<'_>,
    c: &Canon<'_, '_>,
    reserved: &HashSet<NodeId>,
) -> (Vec<Match>, Vec<Match>) {
    let mut claimed: HashSet<NodeId> = HashSet::new();
    let mut matches = Vec::new();
    let mut dropped = Vec::new();
    for r in RECOGNISERS {
        let found = scan::scan(c, &claimed, reserved, r);
        dropped.extend(found.overlapping);
        let kept = found.kept.into_iter().filter(|m| match r.read {
            Read::Node(_) => true,
            Read::Candidate(_) => keeps_rank(g, m),
        });
        let kept: Vec<Match> = kept.collect();
        let mut taken: HashSet<NodeId> = claimed.clone();
        taken.extend(kept.iter().flat_map(|m| m.nodes.iter().copied()));
        for m in kept {
            // The paper-form AdaNorm: the factor after a plain norm any recogniser read.
            let m = match adanorm_factor::extend(c, &taken, &m) {
                Some(ext) => {
                    taken.extend(ext.nodes.iter().copied());
                    ext
                }
                None => m,
            };
            claimed.extend(m.nodes.iter().copied());
            matches.push(m);
        }
    }
    (matches, dropped)
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
