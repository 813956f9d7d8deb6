//! The operator's names, attributes and their validation: everything in `ops-spec.md` that is not
//! a shape or a formula.

use std::ffi::CStr;
use std::fmt;

/// The ONNX domain both ops live in.
pub const DOMAIN: &str = "ai.adanorm";
/// The newest opset version of [`DOMAIN`]: version 2 adds the residual slots `Skip`, `Bias`
/// (inputs 3, 4) and `Sum` (output 3); a node without them computes what version 1 does.
pub const OPSET_VERSION: i64 = 2;
/// The first opset version of [`DOMAIN`].
pub const FIRST_OPSET_VERSION: i64 = 1;
/// The version that brought the residual slots; a model whose nodes use them imports it.
pub const RESIDUAL_OPSET_VERSION: i64 = 2;

/// Input and output positions of both ops.
pub mod slot {
    pub const X: usize = 0;
    pub const SCALE: usize = 1;
    pub const B: usize = 2;
    /// Version 2.
    pub const SKIP: usize = 3;
    /// Version 2.
    pub const BIAS: usize = 4;
    pub const Y: usize = 0;
    pub const MEAN: usize = 1;
    pub const INV_STD_DEV: usize = 2;
    /// Version 2.
    pub const SUM: usize = 3;
    /// Inputs and outputs a version has at most.
    pub const fn counts(version: i64) -> (usize, usize) {
        if version >= super::RESIDUAL_OPSET_VERSION {
            (5, 4)
        } else {
            (3, 3)
        }
    }
}

/// The ops of [`DOMAIN`] by name, without their attributes: what a node's `op_type` says.
///
/// The rewriter, the inliner, tract's builder and the ONNX Runtime registration all name the
/// ops through this type, so the list is written once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    AdaNorm,
    LayerNormSimple,
}

impl OpKind {
    /// Every op of the domain.
    pub const ALL: [OpKind; 2] = [OpKind::AdaNorm, OpKind::LayerNormSimple];

    /// The ONNX `op_type`.
    pub const fn op_type(self) -> &'static str {
        match self {
            OpKind::AdaNorm => "AdaNorm",
            OpKind::LayerNormSimple => "LayerNormSimple",
        }
    }

    /// [`OpKind::op_type`] as a C string (what onnxruntime's `GetName` returns).
    pub const fn op_type_c(self) -> &'static CStr {
        match self {
            OpKind::AdaNorm => c"AdaNorm",
            OpKind::LayerNormSimple => c"LayerNormSimple",
        }
    }

    /// The op a node of [`DOMAIN`] with this `op_type` is, if it is one.
    pub fn from_op_type(op_type: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.op_type() == op_type)
    }

    /// The op a node with this domain and `op_type` is, if it is one of ours.
    pub fn of_node(domain: &str, op_type: &str) -> Option<OpKind> {
        (domain == DOMAIN)
            .then(|| OpKind::from_op_type(op_type))
            .flatten()
    }
}

/// Attribute names and their defaults, shared by every runtime and by the rewriter.
pub mod attr {
    pub const AXIS: &str = "axis";
    pub const EPSILON: &str = "epsilon";
    pub const UNBIASED: &str = "unbiased";
    pub const EPS_IN_SQRT: &str = "eps_in_sqrt";
    pub const C: &str = "c";
    pub const K: &str = "k";

    // Float attributes are ONNX float32 values (ops-spec): an absent one is the float32
    // default, which a double computation widens (`k` is `0.1f32`, not the double 0.1).
    pub const DEFAULT_AXIS: i64 = -1;
    pub const DEFAULT_EPSILON: f32 = 1e-5;
    pub const DEFAULT_UNBIASED: i64 = 0;
    pub const DEFAULT_EPS_IN_SQRT: i64 = 1;
    pub const DEFAULT_C: f32 = 1.0;
    pub const DEFAULT_K: f32 = 0.1;
}

/// The rules of the spec's "Errors" section, as the text a [`SpecError`] starts with.
///
/// Compare [`SpecError::rule`] against these instead of parsing messages.
pub mod rule {
    pub const RANK: &str = "X must have rank >= 1";
    pub const AXIS: &str = "axis must be in [-r, r)";
    pub const BROADCAST: &str =
        "Scale and B must be unidirectionally broadcastable to X.shape[axis:]";
    pub const SKIP_BROADCAST: &str = "Skip must be unidirectionally broadcastable to X";
    pub const BIAS_BROADCAST: &str =
        "Bias must be unidirectionally broadcastable to X.shape[axis:]";
    /// A node using `Skip`, `Bias` or `Sum` in a model that imports only version 1.
    pub const VERSION: &str = "Skip, Bias and Sum need ai.adanorm version 2";
    pub const TYPE: &str = "all inputs must share one type among float, float16, bfloat16, double";
    pub const BOOL_ATTR: &str = "unbiased and eps_in_sqrt must be 0 or 1";
    pub const EPSILON_NEGATIVE: &str = "epsilon must be >= 0";
    pub const NON_FINITE: &str = "c, k and epsilon must be finite";
    /// Not in the spec's list: a shape whose element count does not fit in `usize` cannot be
    /// checked or indexed, so it is refused rather than wrapped.
    pub const SHAPE_OVERFLOW: &str = "the element count of X must fit in usize";
}

/// A broken rule of the operator contract.
///
/// Displays as `"{rule}: {detail}"`; the caller prefixes the node name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// One of the [`rule`] constants.
    pub rule: &'static str,
    /// What was found, e.g. `"axis = 3 for rank 2"`.
    pub detail: String,
}

impl SpecError {
    pub fn new(rule: &'static str, detail: impl Into<String>) -> SpecError {
        SpecError {
            rule,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

impl std::error::Error for SpecError {}

/// Which of the two ops; only AdaNorm has attributes of its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Variant {
    /// `Y = c * (1 - k*y) * y`.
    AdaNorm { c: f64, k: f64 },
    /// `Y = y`.
    LayerNormSimple,
}

impl Variant {
    /// Which op this variant is.
    pub fn kind(&self) -> OpKind {
        match self {
            Variant::AdaNorm { .. } => OpKind::AdaNorm,
            Variant::LayerNormSimple => OpKind::LayerNormSimple,
        }
    }

    /// The ONNX `op_type` of this variant.
    pub fn op_type(&self) -> &'static str {
        self.kind().op_type()
    }

    /// AdaNorm with the spec's default `c` and `k`.
    pub fn ada_norm_default() -> Variant {
        Variant::AdaNorm {
            c: f64::from(attr::DEFAULT_C),
            k: f64::from(attr::DEFAULT_K),
        }
    }
}

/// Every attribute except `axis`, which belongs to the shape (see `layout::row_layout`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub variant: Variant,
    pub epsilon: f64,
    /// Variance divisor `N - 1` instead of `N`.
    pub unbiased: bool,
    /// `sigma = sqrt(var + eps)` instead of `sqrt(var) + eps`.
    pub eps_in_sqrt: bool,
}

impl Params {
    /// The spec's defaults for `variant`.
    pub fn new(variant: Variant) -> Params {
        Params {
            variant,
            epsilon: f64::from(attr::DEFAULT_EPSILON),
            unbiased: attr::DEFAULT_UNBIASED != 0,
            eps_in_sqrt: attr::DEFAULT_EPS_IN_SQRT != 0,
        }
    }

    /// Builds and validates `Params` from raw attribute values as an ONNX node carries them.
    pub fn from_attributes(
        variant: Variant,
        epsilon: f64,
        unbiased: i64,
        eps_in_sqrt: i64,
    ) -> Result<Params, SpecError> {
        let params = Params {
            variant,
            epsilon,
            unbiased: bool_attr(attr::UNBIASED, unbiased)?,
            eps_in_sqrt: bool_attr(attr::EPS_IN_SQRT, eps_in_sqrt)?,
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks the value rules: finite `c`, `k`, `epsilon`, and `epsilon >= 0`.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Variant::AdaNorm { c, k } = self.variant {
            finite(attr::C, c)?;
            finite(attr::K, k)?;
        }
        finite(attr::EPSILON, self.epsilon)?;
        if self.epsilon < 0.0 {
            return Err(SpecError::new(
                rule::EPSILON_NEGATIVE,
                format!("epsilon = {:e}", self.epsilon),
            ));
        }
        Ok(())
    }
}

/// Reads an int attribute that must be 0 or 1 (`unbiased`, `eps_in_sqrt`).
pub fn bool_attr(name: &str, value: i64) -> Result<bool, SpecError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(SpecError::new(rule::BOOL_ATTR, format!("{name} = {value}"))),
    }
}

fn finite(name: &str, value: f64) -> Result<(), SpecError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(SpecError::new(
            rule::NON_FINITE,
            format!("{name} = {value}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_spec() {
        let p = Params::new(Variant::ada_norm_default());
        // The float32 values, widened: what an ONNX float attribute can hold.
        assert_eq!(
            p.variant,
            Variant::AdaNorm {
                c: 1.0,
                k: f64::from(0.1f32)
            }
        );
        assert_ne!(f64::from(0.1f32), 0.1);
        assert_eq!(p.epsilon, f64::from(1e-5f32));
        assert!(!p.unbiased);
        assert!(p.eps_in_sqrt);
        assert_eq!(p.variant.op_type(), "AdaNorm");
        assert_eq!(Variant::LayerNormSimple.op_type(), "LayerNormSimple");
        for kind in OpKind::ALL {
            assert_eq!(OpKind::from_op_type(kind.op_type()), Some(kind));
            assert_eq!(kind.op_type_c().to_str().unwrap(), kind.op_type());
            assert_eq!(OpKind::of_node(DOMAIN, kind.op_type()), Some(kind));
            assert_eq!(OpKind::of_node("", kind.op_type()), None);
        }
        assert_eq!(OpKind::from_op_type("LayerNormalization"), None);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn bool_attrs_accept_only_0_and_1() {
        assert_eq!(bool_attr("unbiased", 0), Ok(false));
        assert_eq!(bool_attr("unbiased", 1), Ok(true));
        for bad in [-1, 2, i64::MAX] {
            let err = bool_attr("eps_in_sqrt", bad).unwrap_err();
            assert_eq!(err.rule, rule::BOOL_ATTR);
            assert!(
                err.to_string().contains(&format!("eps_in_sqrt = {bad}")),
                "{err}"
            );
        }
    }

    #[test]
    fn from_attributes_checks_every_value() {
        let ln = Variant::LayerNormSimple;
        let ok = Params::from_attributes(ln, 0.0, 1, 0).unwrap();
        assert!(ok.unbiased && !ok.eps_in_sqrt);
        assert_eq!(
            Params::from_attributes(ln, 1e-5, 2, 1).unwrap_err().rule,
            rule::BOOL_ATTR
        );
        assert_eq!(
            Params::from_attributes(ln, 1e-5, 0, -1).unwrap_err().rule,
            rule::BOOL_ATTR
        );
        assert_eq!(
            Params::from_attributes(ln, -1e-5, 0, 1).unwrap_err().rule,
            rule::EPSILON_NEGATIVE
        );
    }

    #[test]
    fn epsilon_must_be_non_negative() {
        let mut p = Params::new(Variant::LayerNormSimple);
        p.epsilon = -1e-12;
        let err = p.validate().unwrap_err();
        assert_eq!(err.rule, rule::EPSILON_NEGATIVE);
        assert_eq!(err.to_string(), "epsilon must be >= 0: epsilon = -1e-12");
        p.epsilon = 0.0;
        assert_eq!(p.validate(), Ok(()));
        // -0.0 is not below zero and behaves as 0.
        p.epsilon = -0.0;
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn non_finite_values_are_refused() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut p = Params::new(Variant::AdaNorm { c: bad, k: 0.1 });
            assert_eq!(p.validate().unwrap_err().rule, rule::NON_FINITE);
            p.variant = Variant::AdaNorm { c: 1.0, k: bad };
            let err = p.validate().unwrap_err();
            assert_eq!(err.rule, rule::NON_FINITE);
            assert!(err.detail.starts_with("k = "), "{err}");
            p.variant = Variant::LayerNormSimple;
            p.epsilon = bad;
            let err = p.validate().unwrap_err();
            assert_eq!(err.rule, rule::NON_FINITE);
            assert!(err.detail.starts_with("epsilon = "), "{err}");
        }
    }
}
