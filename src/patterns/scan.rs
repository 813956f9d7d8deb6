//! Walking a graph with one recogniser: each anchor node in graph order is read, and a match is
//! kept unless it overlaps nodes claimed before it (by an earlier recogniser or an earlier
//! match of this one).

use std::collections::HashSet;

use super::canon::Canon;
use super::{cover, Match, Read, Recogniser};
use crate::graph::NodeId;

/// What one recogniser found.
pub struct Scan {
    /// In graph order, none overlapping the claimed nodes or each other.
    pub kept: Vec<Match>,
    /// Read, but overlapping a node claimed before.
    pub overlapping: Vec<Match>,
}

/// Every match `r` reads in `c`'s graph, in graph order. A match overlapping `claimed` or an
/// earlier one is not kept; no match absorbs a node of `claimed` or `reserved` as an input cast.
pub fn scan(
    c: &Canon<'_, '_>,
    claimed: &HashSet<NodeId>,
    reserved: &HashSet<NodeId>,
    r: &Recogniser,
) -> Scan {
    let g = c.g;
    let mut used = claimed.clone();
    let mut not_absorbable: HashSet<NodeId> = claimed.union(reserved).copied().collect();
    let mut found = Scan {
        kept: Vec::new(),
        overlapping: Vec::new(),
    };
    for &id in g.topological() {
        if used.contains(&id) || !r.anchors.iter().any(|a| a.matches(g.node(id))) {
            continue;
        }
        let m = match r.read {
            Read::Node(read) => read(c, id),
            Read::Candidate(read) => {
                read(c, id).map(|cand| cover::finish(c, &not_absorbable, cand))
            }
        };
        let Some(m) = m else { continue };
        if m.nodes.iter().any(|n| used.contains(n)) {
            found.overlapping.push(m);
            continue;
        }
        used.extend(m.nodes.iter().copied());
        not_absorbable.extend(m.nodes.iter().copied());
        found.kept.push(m);
    }
    found
}
