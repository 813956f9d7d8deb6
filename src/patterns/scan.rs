//! Walking a graph with one recogniser: each anchor node in graph order is read, and a match is
//! kept unless it overlaps nodes claimed before it (by an earlier recogniser or an earlier
//! match of this one).

use std::collections::HashSet;

use super::canon::Canon;
use super::{cover, Match, Read, Recogniser};
use crate::graph::NodeId;

/// Every match `r` reads in `c`'s graph, in graph order, none overlapping `claimed` or an
/// earlier one.
pub fn scan(c: &Canon<'_, '_>, claimed: &HashSet<NodeId>, r: &Recogniser) -> Vec<Match> {
    let g = c.g;
    let mut used = claimed.clone();
    let mut out = Vec::new();
    for &id in g.topological() {
        if used.contains(&id) || !r.anchors.iter().any(|a| a.matches(g.node(id))) {
            continue;
        }
        let m = match r.read {
            Read::Node(read) => read(c, id),
            Read::Candidate(read) => read(c, id).map(|cand| cover::finish(c, cand)),
        };
        let Some(m) = m else { continue };
        if m.nodes.iter().any(|n| used.contains(n)) {
            continue;
        }
        used.extend(m.nodes.iter().copied());
        out.push(m);
    }
    out
}
