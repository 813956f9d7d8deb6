//! Evaluation: checks the concrete shapes, then hands the rows to `adanorm_kernels` (through
//! `dispatch`, which picks the widest instructions the CPU has).
//!
//! `Y` is written over `X` when the op holds the only reference to `X` (tract drops its own
//! references before the last consumer runs, and a caller that hands over an owned tensor keeps
//! none); otherwise into a fresh, uninitialised tensor, never a clone that is then overwritten.

use std::borrow::Cow;

use adanorm_kernels::{
    check_param_shape, expand_param, row_layout, stats_shape, Accumulator, Element,
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
        let scale = if self.has_scale { inputs.next() } else { None };
        let bias = if self.has_bias { inputs.next() } else { None };
        let dt = x.datum_type();
        self.check_type(dt)?;
        for (param, what) in [(&scale, "Scale"), (&bias, "B")] {
            if let Some(p) = param {
                self.check_same_type(dt, p.datum_type(), what)?;
            }
        }
        match dt {
            DatumType::F32 => self.eval_as::<f32>(x, scale, bias),
            DatumType::F16 => self.eval_as::<f16>(x, scale, bias),
            DatumType::F64 => self.eval_as::<f64>(x, scale, bias),
            _ => unreachable!("check_type admits only F16, F32 and F64"),
        }
    }
}

impl NormOp {
    fn eval_as<T>(
        &self,
        x: TValue,
        scale: Option<TValue>,
        bias: Option<TValue>,
    ) -> TractResult<TVec<TValue>>
    where
        T: Element + Datum,
        T::Acc: Datum,
    {
        let shape = x.shape().to_vec();
        let layout = row_layout(&shape, self.axis).map_err(|e| self.spec_error(e))?;
        let normalized = &shape[layout.axis..];
        let scale_row = scale
            .as_deref()
            .map(|s| self.param_row::<T>(s, normalized, "Scale"))
            .transpose()?;
        let bias_row = bias
            .as_deref()
            .map(|b| self.param_row::<T>(b, normalized, "B"))
            .transpose()?;

        // One entry per row: small next to X, so plain vectors, copied into tensors at the end.
        let mut mean = self.mean_output.then(|| vec![T::Acc::ZERO; layout.rows]);
        let mut inv_std_dev = self
            .inv_std_dev_output
            .then(|| vec![T::Acc::ZERO; layout.rows]);
        let (mean_slice, inv_slice) = (mean.as_deref_mut(), inv_std_dev.as_deref_mut());

        let (scale_row, bias_row) = (scale_row.as_deref(), bias_row.as_deref());
        let y = if x.is_exclusive() {
            let mut y = x.into_tensor();
            dispatch::in_place(
                y.try_as_plain_ram_mut()?.as_slice_mut::<T>()?,
                layout.row_len,
                scale_row,
                bias_row,
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
                bias_row,
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
        Ok(outputs)
    }

    /// `Scale` or `B` as one full row: borrowed when it already has the row's element count,
    /// broadcast into a new row otherwise.
    fn param_row<'a, T: Datum + Copy>(
        &self,
        param: &'a Tensor,
        normalized: &[usize],
        what: &str,
    ) -> TractResult<Cow<'a, [T]>> {
        check_param_shape(param.shape(), normalized, what).map_err(|e| self.spec_error(e))?;
        let values = param.try_as_plain_ram()?.as_slice::<T>()?;
        if values.len() == normalized.iter().product::<usize>() {
            Ok(Cow::Borrowed(values))
        } else {
            Ok(Cow::Owned(expand_param(values, param.shape(), normalized)))
        }
    }
}
