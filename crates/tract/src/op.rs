//! The op: one struct for both `AdaNorm` and `LayerNormSimple` (they differ only in
//! `Params::variant`), with its shape and type rules for tract's inference and typed stages.
//! Evaluation is in `eval.rs`.

use adanorm_kernels::params::{rule, slot, DOMAIN};
use adanorm_kernels::{
    check_bias_shape, check_param_shape, row_layout, Params, SpecError, Variant,
};
use tract_onnx::tract_hir::internal::*;

/// An `ai.adanorm` node: `AdaNorm` or `LayerNormSimple`, by `params.variant`.
///
/// Optional inputs and outputs that the ONNX node leaves empty or off are not wired at all, so
/// the op records which ones it has. The wired ones keep the spec's slot order
/// (`params::slot`): inputs `X`, `Scale`, `B`, then version 2's `Skip` and `Bias`; outputs
/// `Y`, `Mean`, `InvStdDev`, then version 2's `Sum`.
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
    /// Version 2: `Skip` (input 3), added to `X + Bias` before the statistics.
    pub has_skip: bool,
    /// Version 2: the residual `Bias` (input 4), added to `X` first. Not `B`, the output bias.
    pub has_residual_bias: bool,
    /// Version 2: `Sum` (output 3), the normalised `S = (X + Bias) + Skip`.
    pub sum_output: bool,
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

    /// Which input slots the node wires, indexed by `params::slot`.
    fn wired_inputs(&self) -> [bool; 5] {
        [
            true,
            self.has_scale,
            self.has_bias,
            self.has_skip,
            self.has_residual_bias,
        ]
    }

    /// Which output slots the node wires, indexed by `params::slot`.
    fn wired_outputs(&self) -> [bool; 4] {
        [
            true,
            self.mean_output,
            self.inv_std_dev_output,
            self.sum_output,
        ]
    }

    pub(crate) fn input_count(&self) -> usize {
        self.wired_inputs().iter().filter(|&&w| w).count()
    }

    pub(crate) fn output_count(&self) -> usize {
        self.wired_outputs().iter().filter(|&&w| w).count()
    }

    /// Where input `slot` is among the wired inputs, if the node wires it.
    pub(crate) fn input_position(&self, slot: usize) -> Option<usize> {
        position(&self.wired_inputs(), slot)
    }

    /// Where output `slot` is among the wired outputs, if the node wires it.
    pub(crate) fn output_position(&self, slot: usize) -> Option<usize> {
        position(&self.wired_outputs(), slot)
    }

    /// Whether the node uses a version-2 slot (and so computes from `S`, not `X`).
    pub(crate) fn is_residual(&self) -> bool {
        self.has_skip || self.has_residual_bias || self.sum_output
    }

    /// `(position among the wired inputs, name, rule)` of the inputs broadcast to one row
    /// (`Scale`, `B` and the residual `Bias`), those that are present.
    pub(crate) fn row_inputs(
        &self,
    ) -> impl Iterator<Item = (usize, &'static str, &'static str)> + '_ {
        [
            (slot::SCALE, "Scale", rule::BROADCAST),
            (slot::B, "B", rule::BROADCAST),
            (slot::BIAS, "Bias", rule::BIAS_BROADCAST),
        ]
        .into_iter()
        .filter_map(|(s, what, rule)| Some((self.input_position(s)?, what, rule)))
    }

    /// The positions of the `Mean`/`InvStdDev` outputs that are wired.
    pub(crate) fn stats_outputs(&self) -> impl Iterator<Item = usize> + '_ {
        [slot::MEAN, slot::INV_STD_DEV]
            .into_iter()
            .filter_map(|s| self.output_position(s))
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

    /// Checks a row input's shape (`Scale`, `B`, `Bias`) against `X.shape[axis:]` under `rule`.
    pub(crate) fn check_row_dims(
        &self,
        x_shape: &[TDim],
        param_shape: &[TDim],
        what: &str,
        rule: &'static str,
    ) -> TractResult<()> {
        let axis = self.resolve_axis(x_shape.len())?;
        self.check_broadcast_dims(&x_shape[axis..], "X.shape[axis:]", param_shape, what, rule)
    }

    /// Checks that `shape` broadcasts unidirectionally to `target` where symbolic dimensions
    /// allow it: two dimensions conflict only when both are known numbers that differ and the
    /// one of `shape` is not 1. Fully known shapes get the kernels' own check and message.
    pub(crate) fn check_broadcast_dims(
        &self,
        target: &[TDim],
        target_name: &str,
        shape: &[TDim],
        what: &str,
        rule: &'static str,
    ) -> TractResult<()> {
        let concrete = |dims: &[TDim]| -> Option<Vec<usize>> {
            dims.iter().map(|d| d.to_usize().ok()).collect()
        };
        if let (Some(n), Some(p)) = (concrete(target), concrete(shape)) {
            let known = match rule {
                rule::BROADCAST => Some(check_param_shape(&p, &n, what)),
                rule::BIAS_BROADCAST => Some(check_bias_shape(&p, &n)),
                _ => None,
            };
            if let Some(result) = known {
                return result.map_err(|e| self.spec_error(e));
            }
        }
        let too_many = shape.len() > target.len();
        let conflict =
            shape.iter().rev().zip(target.iter().rev()).any(|(p, n)| {
                p != n && !p.is_one() && p.to_usize().is_ok() && n.to_usize().is_ok()
            });
        if too_many || conflict {
            return Err(self.spec_error(SpecError::new(
                rule,
                format!(
                    "{what} has shape {}, {target_name} is {}",
                    dims_text(shape),
                    dims_text(target)
                ),
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
        for (ix, what, rule) in self.row_inputs() {
            self.check_same_type(x.datum_type, inputs[ix].datum_type, what)?;
            self.check_row_dims(&x.shape, &inputs[ix].shape, what, rule)?;
        }
        if let Some(ix) = self.input_position(slot::SKIP) {
            self.check_same_type(x.datum_type, inputs[ix].datum_type, "Skip")?;
            self.check_broadcast_dims(
                &x.shape,
                "X",
                &inputs[ix].shape,
                "Skip",
                rule::SKIP_BROADCAST,
            )?;
        }
        let mut facts = tvec![x.datum_type.fact(x.shape.clone())];
        let stats_shape = x
            .shape
            .iter()
            .take(axis)
            .cloned()
            .chain(std::iter::repeat_n(1.to_dim(), x.rank() - axis));
        let stats_fact = Self::stats_type(x.datum_type).fact(ShapeFact::from_dims(stats_shape));
        for _ in self.stats_outputs() {
            facts.push(stats_fact.clone());
        }
        if self.sum_output {
            facts.push(x.datum_type.fact(x.shape.clone()));
        }
        Ok(facts)
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        // Per element: four passes (mean, two centred sums, output), about one FMA each, and
        // one more per residual term.
        let count: TDim = inputs[0].shape.iter().product();
        let terms = 4 + self.has_skip as i64 + self.has_residual_bias as i64;
        Ok(tvec!((Cost::FMA(inputs[0].datum_type), count * terms)))
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
            for ix in self.stats_outputs() {
                s.equals(&outputs[ix].datum_type, Self::stats_type(dt))?;
            }
            Ok(())
        })?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        if let Some(sum) = self.output_position(slot::SUM) {
            s.equals(&outputs[sum].datum_type, &inputs[0].datum_type)?;
            s.equals(&outputs[sum].shape, &inputs[0].shape)?;
        }
        s.given(&inputs[0].rank, move |s, rank| {
            let axis = self.resolve_axis(rank as usize)?;
            for stats in self.stats_outputs().map(|ix| &outputs[ix]) {
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
        for (ix, what, rule) in self.row_inputs() {
            s.given_2(
                &inputs[0].datum_type,
                &inputs[ix].datum_type,
                move |_, x, param| self.check_same_type(x, param, what),
            )?;
            s.given_2(&inputs[0].shape, &inputs[ix].shape, move |_, x, param| {
                self.check_row_dims(&x, &param, what, rule)
            })?;
        }
        if let Some(ix) = self.input_position(slot::SKIP) {
            s.given_2(
                &inputs[0].datum_type,
                &inputs[ix].datum_type,
                move |_, x, skip| self.check_same_type(x, skip, "Skip"),
            )?;
            s.given_2(&inputs[0].shape, &inputs[ix].shape, move |_, x, skip| {
                self.check_broadcast_dims(&x, "X", &skip, "Skip", rule::SKIP_BROADCAST)
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

/// The position of `slot` among the wired slots, if it is wired.
fn position(wired: &[bool], slot: usize) -> Option<usize> {
    wired
        .get(slot)
        .copied()
        .unwrap_or(false)
        .then(|| wired[..slot].iter().filter(|&&w| w).count())
}

/// `[2, S, 768]`: dimensions as written in messages (numbers and symbols, no `Val(..)`).
fn dims_text(dims: &[TDim]) -> String {
    let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}
