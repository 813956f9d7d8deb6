//! What a recogniser hands to the whole-match checks ([`super::cover`]): one normalisation as
//! it was read, and how it was written ([`Form`]).

use std::fmt;

use adanorm_kernels::params::OpKind;

use super::affine::Tail;
use super::canon::Axes;
use super::Family;
use crate::graph::NodeId;

/// How a normalisation is written in the model: the recogniser that read it, and for one-node
/// forms the op. `inspect` prints it (`Display`); `fuse` decides by it what is already fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Decomposed, the variance as `mean((x - mean x)²)`.
    Decomposed,
    /// Decomposed, the variance as `mean(x²) - mean(x)²`.
    MomentDifference,
    /// lancopku's AdaNorm module as exported.
    DecomposedAdaNorm,
    /// Keras through tf2onnx: `x * s + (beta - mean * s)`.
    KerasFoldedAffine,
    /// `x / sqrt(mean(x²) + eps)`: no centring.
    DecomposedRmsNorm,
    /// tf2onnx's Keras fused LayerNormalization over a `BatchNormalization`.
    KerasBatchNorm,
    /// `InstanceNormalization` with unit scale and zero bias.
    InstanceNorm,
    /// `MeanVarianceNormalization`.
    MeanVarianceNorm,
    /// A node that is a normalisation op by itself.
    Fused(FusedOp),
    /// An RMSNorm op over `Sub(x, ReduceMean(x))` on the same axes: a LayerNorm of `x`. ONNX
    /// Runtime's optimiser writes it where two LayerNorms read one input (GPT-NeoX, Falcon).
    CentredRms(FusedOp),
}

/// The normalisation ops [`Form::Fused`] covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedOp {
    LayerNormalization,
    SkipLayerNormalization,
    EmbedLayerNormalization,
    SimplifiedLayerNormalization,
    SkipSimplifiedLayerNormalization,
    RmsNormalization,
    /// An `ai.adanorm` node already (a model this tool rewrote).
    Own(OpKind),
}

impl FusedOp {
    pub fn op_type(self) -> &'static str {
        match self {
            FusedOp::LayerNormalization => "LayerNormalization",
            FusedOp::SkipLayerNormalization => "SkipLayerNormalization",
            FusedOp::EmbedLayerNormalization => "EmbedLayerNormalization",
            FusedOp::SimplifiedLayerNormalization => "SimplifiedLayerNormalization",
            FusedOp::SkipSimplifiedLayerNormalization => "SkipSimplifiedLayerNormalization",
            FusedOp::RmsNormalization => "RMSNormalization",
            FusedOp::Own(kind) => kind.op_type(),
        }
    }
}

impl Form {
    /// Forms that are one standard or contrib normalisation node when nothing else (an affine
    /// tail, helpers that make its unit scale) belongs to the match. `fuse` leaves such a match
    /// as it is: the runtime already runs it as one op. `InstanceNormalization` and
    /// `MeanVarianceNormalization` count: a bare one is an op like `LayerNormalization`; with a
    /// `Mul`/`Add` after it the match has several nodes, and `fuse` makes them one.
    pub fn is_one_node_op(self) -> bool {
        matches!(
            self,
            Form::Fused(_) | Form::InstanceNorm | Form::MeanVarianceNorm
        )
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Form::Decomposed => f.write_str("decomposed"),
            Form::MomentDifference => f.write_str("decomposed, E[x²]−E[x]²"),
            Form::DecomposedAdaNorm => f.write_str("decomposed AdaNorm"),
            Form::KerasFoldedAffine => f.write_str("Keras, folded affine (tf2onnx, jax2onnx)"),
            Form::DecomposedRmsNorm => f.write_str("decomposed RMSNorm"),
            Form::KerasBatchNorm => f.write_str("Keras fused (tf2onnx BatchNormalization)"),
            Form::InstanceNorm => {
                f.write_str("InstanceNormalization with unit scale and zero bias")
            }
            Form::MeanVarianceNorm => f.write_str("MeanVarianceNormalization"),
            Form::Fused(op @ FusedOp::SkipLayerNormalization) => {
                write!(f, "com.microsoft {} (residual Add fused in)", op.op_type())
            }
            Form::Fused(op @ FusedOp::EmbedLayerNormalization) => {
                write!(f, "com.microsoft {} (embeddings fused in)", op.op_type())
            }
            Form::Fused(op @ FusedOp::Own(_)) => {
                write!(f, "ai.adanorm {}", op.op_type())
            }
            Form::Fused(op) => write!(f, "fused {}", op.op_type()),
            Form::CentredRms(op) => {
                write!(
                    f,
                    "fused {} of a centred input (Sub of its mean)",
                    op.op_type()
                )
            }
        }
    }
}

/// The statistics a recogniser read: over which values, and how sigma is made.
#[derive(Debug, Clone)]
pub struct Statistics {
    /// The normalised input, Identity and precision casts looked through (casts in front of it
    /// are judged by `cover`: they may be shared).
    pub x: String,
    pub axes: Axes,
    pub epsilon: f64,
    pub unbiased: bool,
    pub eps_in_sqrt: bool,
    /// The value dividing the centred input, where the graph has one: an `InvStdDev` output is
    /// its reciprocal.
    pub sigma: Option<String>,
}

/// One normalisation as a recogniser read it, before the whole-match checks.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub family: Family,
    pub form: Form,
    pub stats: Statistics,
    /// The nodes that compute it.
    pub core: Vec<NodeId>,
    /// Helper nodes (row counts, shape arithmetic, made-up unit scales) that belong to the match
    /// only when nothing else uses them.
    pub aux: Vec<NodeId>,
    pub output: String,
    pub scale: Option<String>,
    pub bias: Option<String>,
    pub c: f64,
    pub k: f64,
    /// Reasons it cannot be rewritten although it is a match.
    pub problems: Vec<String>,
}

impl Candidate {
    /// A candidate that is neither AdaNorm nor scaled (c = 1, k = 0): `core`, then the affine
    /// tail `t`, whose output, gain and bias it takes.
    pub fn with_tail(
        family: Family,
        form: Form,
        stats: Statistics,
        (mut core, aux): (Vec<NodeId>, Vec<NodeId>),
        t: Tail,
    ) -> Candidate {
        core.extend(t.nodes);
        Candidate {
            family,
            form,
            stats,
            core,
            aux,
            output: t.output,
            scale: t.scale,
            bias: t.bias,
            c: 1.0,
            k: 0.0,
            problems: vec![],
        }
    }
}
