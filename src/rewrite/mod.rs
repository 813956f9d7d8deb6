//! Rewriting matches into `ai.adanorm` nodes (`fuse`, `rewrite`) and back (`revert`).
//!
//! A rewrite is planned per match ([`plan`]), then applied to a copy of the model in one pass
//! ([`apply`]); tensor payloads are shared with the input, not copied. Removed subgraphs are
//! recorded in the model so `revert` restores them exactly; dropped or folded weights go to a
//! safetensors file ([`weights`]).

pub mod apply;
pub mod embed;
pub mod fold;
pub mod names;
pub mod node;
pub mod plan;
pub mod portable;
pub mod residual;
pub mod revert;
pub mod weights;

use crate::onnx::proto::ModelProto;

/// Which op each match becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The op that computes exactly what the match computes (`fuse`).
    Same,
    AdaNorm,
    Simple,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affine {
    Keep,
    Fold,
    Drop,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub c: Option<f64>,
    pub k: Option<f64>,
    pub affine: Affine,
    pub portable: bool,
    /// `fuse` leaves single-node normalisations (fused LayerNormalization, ai.adanorm) alone.
    pub include_fused: bool,
    /// Only matches of these families change (`--only`); empty: every family.
    pub only: Vec<crate::patterns::Family>,
    /// Absorb the residual `Add` (and a bias `Add` before it) feeding a norm into a version-2
    /// node (`Skip`, `Bias`, `Sum`); off with `--no-residual`.
    pub residual: bool,
}

/// One line of the printed report.
#[derive(Debug, Clone)]
pub struct Change {
    pub before: String,
    pub after: String,
    /// Whether the model still computes the same function at this place.
    pub same_function: bool,
    pub note: Option<String>,
}

pub struct Outcome {
    pub model: ModelProto,
    pub changes: Vec<Change>,
    /// Matches left as they were, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Tensors removed from the model that must be written beside it.
    pub weights: Option<weights::WeightsFile>,
}

impl Outcome {
    pub fn same_function(&self) -> bool {
        self.changes.iter().all(|c| c.same_function)
    }
}
