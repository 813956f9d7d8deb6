//! The op: one struct for both `AdaNorm` and `LayerNormSimple` (they differ only in
//! `Params::variant`), with its shape and type rules for tract's inference and typed stages.
//! Evaluation is in `eval.rs`.

use adanorm_kernels::params::{rule, DOMAIN};
use adanorm_kernels::{check_param_shape, row_layout, Params, SpecError, Variant};
use tract_onnx::tract_hir::internal::*;

/// An `ai.adanorm` node: `AdaNorm` or `LayerNormSimple`, by `params.variant`.
///
/// Optional inputs and outputs that the ONNX node leaves empty or off are not wired at all, so
/// the op records which ones it has: inputs are `X`, then `Scale` if `has_scale`, then `B` if
/// `has_bias`; outputs are `Y`, then `Mean` if `mean_output`, then `InvStdDev` if
/// `inv_std_dev_output`.
#[derive(Debug, Clone, PartialEq)]
pub struct NormOp {
    /// The ONNX node's name (its first output's when it has none), for error messages.
    pub node: String,
    /// Validated attributes other than `axis`.
    pub params: Params,
    /// The `axis` attribute as written (negative counts from the end); checked against the
    /// rank once that is known.
    pub axis: i64,
    pub has_scale: bool,
    pub has_bias: bool,
    pub mean_output: bool,
    pub inv_std_dev_output: bool,
}

// `Op` needs `Eq`. The only non-`Eq` fields are `Params`' floats, which `Params::validate` has
// made finite, so `==` on them is reflexive.
impl Eq for NormOp {}

impl NormOp {
    /// `node "name" (ai.adanorm.AdaNorm)`, the prefix of every error this op gives.
    pub fn label(&self) -> String {
        format!(
            "node {:?} ({DOMAIN}.{})",
            self.node,
            self.params.variant.op_type()
        )
    }

    /// A broken contract rule as an error naming this node.
    pub(crate) fn spec_error(&self, error: SpecError) -> TractError {
        format_err!("{}: {error}", self.label())
    }

    pub(crate) fn input_count(&self) -> usize {
        1 + self.has_scale as usize + self.has_bias as usize
    }

    pub(crate) fn output_count(&self) -> usize {
        1 + self.mean_output as usize + self.inv_std_dev_output as usize
    }

    /// `(position among the wired inputs, name)` of `Scale` and `B`, those that are present.
    pub(crate) fn param_inputs(&self) -> impl Iterator<Item = (usize, &'static str)> {
        let scale = self.has_scale.then_some((1, "Scale"));
        let bias = self.has_bias.then_some((1 + self.has_scale as usize, "B"));
        scale.into_iter().chain(bias)
    }

    /// The normalised axis for a rank, or the spec's rank/axis error.
    pub(crate) fn resolve_axis(&self, rank: usize) -> TractResult<usize> {
        // row_layout checks rank and axis before it looks at any dimension.
        row_layout(&vec![1; rank], self.axis)
            .map(|layout| layout.axis)
            .map_err(|e| self.spec_error(e))
    }

    /// The element type of `Y` must be one the spec lists that tract has: bfloat16 is in the
    /// spec, but tract 0.23 has no bfloat16 tensors.
    pub(crate) fn check_type(&self, dt: DatumType) -> TractResult<()> {
        match dt {
            DatumType::F16 | DatumType::F32 | DatumType::F64 => Ok(()),
            other => Err(self.spec_error(SpecError::new(
                rule::TYPE,
                format!("X is {other:?} (tract has no bfloat16, so float, float16 or double)"),
            ))),
        }
    }

    /// `Scale`/`B` must have the type of `X`.
    pub(crate) fn check_same_type(
        &self,
        x: DatumType,
        param: DatumType,
        what: &str,
    ) -> TractResult<()> {
        if x == param {
            Ok(())
        } else {
            Err(self.spec_error(SpecError::new(
                rule::TYPE,
                format!("X is {x:?} but {what} is {param:?}"),
            )))
        }
    }

    /// Checks `Scale`/`B`'s shape against `X.shape[axis:]` where symbolic dimensions allow it:
    /// two dimensions conflict only when both are known numbers, or when the parameter has a
    /// dimension that is neither 1 nor the same expression as `X`'s and both are numbers.
    pub(crate) fn check_param_dims(
        &self,
        x_shape: &[TDim],
        param_shape: &[TDim],
        what: &str,
    ) -> TractResult<()> {
        let axis = self.resolve_axis(x_shape.len())?;
        let normalized = &x_shape[axis..];
        let concrete = |dims: &[TDim]| -> Option<Vec<usize>> {
            dims.iter().map(|d| d.to_usize().ok()).collect()
        };
        if let (Some(n), Some(p)) = (concrete(normalized), concrete(param_shape)) {
            return check_param_shape(&p, &n, what).map_err(|e| self.spec_error(e));
        }
        let too_many = param_shape.len() > normalized.len();
        let conflict = param_shape
            .iter()
            .rev()
            .zip(normalized.iter().rev())
            .any(|(p, n)| p != n && !p.is_one() && p.to_usize().is_ok() && n.to_usize().is_ok());
        if too_many || conflict {
            return Err(self.spec_error(SpecError::new(
                rule::BROADCAST,
                format!("{what} has shape {param_shape:?}, X.shape[axis:] is {normalized:?}"),
            )));
        }
        Ok(())
    }

    /// Element type of `Mean`/`InvStdDev`: the compute precision.
    pub(crate) fn stats_type(x: DatumType) -> DatumType {
        if x == DatumType::F64 {
            DatumType::F64
        } else {
            DatumType::F32
        }
    }
}

impl Op for NormOp {
    fn name(&self) -> StaticName {
        self.params.variant.op_type().into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let Params {
            variant,
            epsilon,
            unbiased,
            eps_in_sqrt,
        } = self.params;
        let mut info = format!(
            "node: {:?}, axis: {}, epsilon: {epsilon:e}, unbiased: {unbiased}, eps_in_sqrt: {eps_in_sqrt}",
            self.node, self.axis
        );
        if let Variant::AdaNorm { c, k } = variant {
            info.push_str(&format!(", c: {c}, k: {k}"));
        }
        Ok(vec![info])
    }

    op_as_typed_op!();
}

impl TypedOp for NormOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == self.input_count(),
            "{}: expected {} inputs, got {}",
            self.label(),
            self.input_count(),
            inputs.len()
        );
        let x = inputs[0];
        self.check_type(x.datum_type)?;
        let axis = self.resolve_axis(x.rank())?;
        for (ix, what) in self.param_inputs() {
            self.check_same_type(x.datum_type, inputs[ix].datum_type, what)?;
            self.check_param_dims(&x.shape, &inputs[ix].shape, what)?;
        }
        let mut facts = tvec![x.datum_type.fact(x.shape.clone())];
        let stats_shape = x
            .shape
            .iter()
            .take(axis)
            .cloned()
            .chain(std::iter::repeat_n(1.to_dim(), x.rank() - axis));
        let stats_fact = Self::stats_type(x.datum_type).fact(ShapeFact::from_dims(stats_shape));
        for _ in 1..self.output_count() {
            facts.push(stats_fact.clone());
        }
        Ok(facts)
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        // Per element: four passes (mean, two centred sums, output), about one FMA each.
        let count: TDim = inputs[0].shape.iter().product();
        Ok(tvec!((Cost::FMA(inputs[0].datum_type), count * 4)))
    }

    as_op!();
}

impl InferenceRulesOp for NormOp {
    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, self.input_count())?;
        check_output_arity(outputs, self.output_count())?;

        s.given(&inputs[0].datum_type, move |s, dt| {
            self.check_type(dt)?;
            s.equals(&outputs[0].datum_type, dt)?;
            for stats in &outputs[1..] {
                s.equals(&stats.datum_type, Self::stats_type(dt))?;
            }
            Ok(())
        })?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        s.given(&inputs[0].rank, move |s, rank| {
            let axis = self.resolve_axis(rank as usize)?;
            for stats in &outputs[1..] {
                s.equals(&stats.rank, rank)?;
                for ax in 0..rank as usize {
                    if ax < axis {
                        s.equals(&stats.shape[ax], &inputs[0].shape[ax])?;
                    } else {
                        s.equals(&stats.shape[ax], 1.to_dim())?;
                    }
                }
            }
            Ok(())
        })?;
        for (ix, what) in self.param_inputs() {
            s.given_2(
                &inputs[0].datum_type,
                &inputs[ix].datum_type,
                move |_, x, param| self.check_same_type(x, param, what),
            )?;
            s.given_2(&inputs[0].shape, &inputs[ix].shape, move |_, x, param| {
                self.check_param_dims(&x, &param, what)
            })?;
        }
        Ok(())
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(self.output_count())
    }

    as_op!();
    to_typed!();
}
