//! Evaluation: checks the concrete shapes, then hands the rows to `adanorm_kernels` (through
//! `dispatch`, which picks the widest instructions the CPU has).
//!
//! `Y` is written over `X` when the op holds the only reference to `X` (tract drops its own
//! references before the last consumer runs, and a caller that hands over an owned tensor keeps
//! none); otherwise into a fresh, uninitialised tensor, never a clone that is then overwritten.

use std::borrow::Cow;

use adanorm_kernels::{
    check_bias_shape, check_param_shape, param_row, row_layout, skip_values, stats_shape,
    Accumulator, Element, Residual, SkipInput,
};
use tract_onnx::tract_hir::internal::*;

use crate::op::NormOp;
use adanorm_kernels::dispatch;

impl EvalOp for NormOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == self.input_count(),
            "{}: expected {} inputs, got {}",
            self.label(),
            self.input_count(),
            inputs.len()
        );
        let mut inputs = inputs.into_iter();
        let x = inputs.next().unwrap();
        let mut next_if = |wired: bool| if wired { inputs.next() } else { None };
        let given = Inputs {
            scale: next_if(self.has_scale),
            b: next_if(self.has_bias),
            skip: next_if(self.has_skip),
            bias: next_if(self.has_residual_bias),
        };
        let dt = x.datum_type();
        self.check_type(dt)?;
        for (input, what) in given.named() {
            if let Some(t) = input {
                self.check_same_type(dt, t.datum_type(), what)?;
            }
        }
        match dt {
            DatumType::F32 => self.eval_as::<f32>(x, given),
            DatumType::F16 => self.eval_as::<f16>(x, given),
            DatumType::F64 => self.eval_as::<f64>(x, given),
            _ => unreachable!("check_type admits only F16, F32 and F64"),
        }
    }
}

/// The optional inputs of one evaluation, by name.
struct Inputs {
    scale: Option<TValue>,
    b: Option<TValue>,
    skip: Option<TValue>,
    bias: Option<TValue>,
}

impl Inputs {
    fn named(&self) -> [(&Option<TValue>, &'static str); 4] {
        [
            (&self.scale, "Scale"),
            (&self.b, "B"),
            (&self.skip, "Skip"),
            (&self.bias, "Bias"),
        ]
    }
}

impl NormOp {
    fn eval_as<T>(&self, x: TValue, given: Inputs) -> TractResult<TVec<TValue>>
    where
        T: Element + Datum,
        T::Acc: Datum,
    {
        let shape = x.shape().to_vec();
        let layout = row_layout(&shape, self.axis).map_err(|e| self.spec_error(e))?;
        let normalized = &shape[layout.axis..];
        let scale_row = given
            .scale
            .as_deref()
            .map(|t| self.param_row::<T>(t, normalized, "Scale"))
            .transpose()?;
        let b_row = given
            .b
            .as_deref()
            .map(|t| self.param_row::<T>(t, normalized, "B"))
            .transpose()?;

        // One entry per row: small next to X, so plain vectors, copied into tensors at the end.
        let mut mean = self.mean_output.then(|| vec![T::Acc::ZERO; layout.rows]);
        let mut inv_std_dev = self
            .inv_std_dev_output
            .then(|| vec![T::Acc::ZERO; layout.rows]);
        let (mean_slice, inv_slice) = (mean.as_deref_mut(), inv_std_dev.as_deref_mut());

        let (scale_row, b_row) = (scale_row.as_deref(), b_row.as_deref());
        let mut sum = None;
        let y = if self.is_residual() {
            let bias_row = given
                .bias
                .as_deref()
                .map(|t| self.bias_row::<T>(t, normalized))
                .transpose()?;
            let skip = given
                .skip
                .as_deref()
                .map(|t| self.skip_rows::<T>(t, &shape, layout.axis))
                .transpose()?;
            // SAFETY: the kernel writes every element of `y` before anything reads it.
            let mut y = unsafe { Tensor::uninitialized::<T>(&shape)? };
            let mut s = self
                .sum_output
                // SAFETY: as for `y`, every element of `Sum` is written by the kernel.
                .then(|| unsafe { Tensor::uninitialized::<T>(&shape) })
                .transpose()?;
            let mut sum_ram = s.as_mut().map(|s| s.try_as_plain_ram_mut()).transpose()?;
            let sum_slice = sum_ram
                .as_mut()
                .map(|ram| ram.as_slice_mut::<T>())
                .transpose()?;
            dispatch::out_of_place_residual(
                x.try_as_plain_ram()?.as_slice::<T>()?,
                y.try_as_plain_ram_mut()?.as_slice_mut::<T>()?,
                layout.row_len,
                scale_row,
                b_row,
                Residual {
                    bias: bias_row.as_deref(),
                    skip: skip.as_deref().map(|rows| SkipInput { rows, first_row: 0 }),
                    sum: sum_slice,
                },
                &self.params,
                mean_slice,
                inv_slice,
            );
            sum = s;
            y
        } else if x.is_exclusive() {
            let mut y = x.into_tensor();
            dispatch::in_place(
                y.try_as_plain_ram_mut()?.as_slice_mut::<T>()?,
                layout.row_len,
                scale_row,
                b_row,
                &self.params,
                mean_slice,
                inv_slice,
            );
            y
        } else {
            // Safety: the kernel writes every element of `y` before anything reads it.
            let mut y = unsafe { Tensor::uninitialized::<T>(&shape)? };
            dispatch::out_of_place(
                x.try_as_plain_ram()?.as_slice::<T>()?,
                y.try_as_plain_ram_mut()?.as_slice_mut::<T>()?,
                layout.row_len,
                scale_row,
                b_row,
                &self.params,
                mean_slice,
                inv_slice,
            );
            y
        };
        let stats_shape = stats_shape(&shape, layout.axis);
        let mut outputs = tvec![y.into_tvalue()];
        for stats in mean.into_iter().chain(inv_std_dev) {
            outputs.push(Tensor::from_shape(&stats_shape, &stats)?.into_tvalue());
        }
        outputs.extend(sum.map(Tensor::into_tvalue));
        Ok(outputs)
    }

    /// `Scale` or `B` as one full row (borrowed when it already is one).
    fn param_row<'a, T: Datum + Copy>(
        &self,
        param: &'a Tensor,
        normalized: &[usize],
        what: &str,
    ) -> TractResult<Cow<'a, [T]>> {
        check_param_shape(param.shape(), normalized, what).map_err(|e| self.spec_error(e))?;
        let values = param.try_as_plain_ram()?.as_slice::<T>()?;
        Ok(param_row(values, param.shape(), normalized))
    }

    /// The residual `Bias` as one full row, as [`Self::param_row`] under `Bias`'s own rule.
    fn bias_row<'a, T: Datum + Copy>(
        &self,
        bias: &'a Tensor,
        normalized: &[usize],
    ) -> TractResult<Cow<'a, [T]>> {
        check_bias_shape(bias.shape(), normalized).map_err(|e| self.spec_error(e))?;
        let values = bias.try_as_plain_ram()?.as_slice::<T>()?;
        Ok(param_row(values, bias.shape(), normalized))
    }

    /// `Skip` as the whole rows the kernels read (`adanorm_kernels::skip_values`).
    fn skip_rows<'a, T: Datum + Copy>(
        &self,
        skip: &'a Tensor,
        x_shape: &[usize],
        axis: usize,
    ) -> TractResult<Cow<'a, [T]>> {
        let values = skip.try_as_plain_ram()?.as_slice::<T>()?;
        skip_values(values, skip.shape(), x_shape, axis).map_err(|e| self.spec_error(e))
    }
}
