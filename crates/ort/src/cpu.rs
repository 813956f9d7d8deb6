//! The CPU execution provider: check the tensors against the contract, allocate the outputs, and
//! normalise chunks of rows on onnxruntime's intra-op thread pool.
//!
//! Rows go through `KernelContext_ParallelFor`, so a session's `intra_op_num_threads` decides how
//! many threads run them (1: all on the calling thread, no pool).

use std::borrow::Cow;
use std::ffi::c_void;
use std::sync::Mutex;

use adanorm_kernels::params::slot;
use adanorm_kernels::{
    check_bias_shape, check_param_shape, dispatch, param_row, row_layout, skip_values, stats_shape,
    Element, Residual, SkipInput,
};
use half::{bf16, f16};
use ort_sys::OrtKernelContext;

use crate::attrs::type_mismatch;
use crate::elem::{Elem, OrtElement};
use crate::kernel::Kernel;
use crate::status::{catch, Error};
use crate::tensor::{Input, KernelIo};

/// Bytes of `X` per thread-pool task: large enough that scheduling and each call's setup (Scale
/// and B widened and folded, working rows allocated) cost little — at 64 KiB the setup made the
/// float16 AdaNorm with Scale/B 10% slower than ORT's LayerNormalization — small enough that
/// uneven rows still balance across threads (float16 hidden 768: 170 rows a task, so 48 tasks
/// at the op bench's 8192 rows, 6 at BERT-base's batch of 8 × 128 tokens).
const CHUNK_BYTES: usize = 256 * 1024;

/// # Safety
/// `ctx` must be the live context of the compute call.
pub unsafe fn compute(kernel: &Kernel, ctx: *mut OrtKernelContext) -> Result<(), Error> {
    // SAFETY: per the contract; `io` does not outlive this call.
    let io = unsafe { KernelIo::new(kernel.api(), ctx) };
    match kernel.op.elem {
        Elem::F32 => run::<f32>(kernel, &io),
        Elem::F16 => run::<f16>(kernel, &io),
        Elem::BF16 => run::<bf16>(kernel, &io),
        Elem::F64 => run::<f64>(kernel, &io),
    }
}

fn run<T: OrtElement>(kernel: &Kernel, io: &KernelIo) -> Result<(), Error> {
    let x = io
        .input(0)?
        .ok_or_else(|| Error::invalid("input X is required"))?;
    if x.ts.elem != T::ELEM.code() {
        // Only reachable if onnxruntime picked a kernel for another type.
        return Err(Error::invalid(type_mismatch(
            "X",
            x.ts.elem,
            T::ELEM.code(),
        )));
    }
    let layout = row_layout(&x.shape, kernel.axis)?;
    let normalized = &x.shape[layout.axis..];
    let (scale_in, bias_in) = (io.input(slot::SCALE)?, io.input(slot::B)?);
    let scale = param::<T>(scale_in.as_ref(), "Scale", normalized)?;
    let bias = param::<T>(bias_in.as_ref(), "B", normalized)?;
    // Version 2's slots; a version-1 kernel was refused at creation if its node used them.
    let (skip_in, residual_bias_in) = (io.input(slot::SKIP)?, io.input(slot::BIAS)?);
    let skip = skip_input::<T>(skip_in.as_ref(), &x.shape, layout.axis)?;
    let residual_bias = residual_bias_row::<T>(residual_bias_in.as_ref(), normalized)?;

    let mut y = io
        .output(slot::Y, &x.shape)?
        .ok_or_else(|| Error::invalid("output Y is required"))?;
    let stats_dims = stats_shape(&x.shape, layout.axis);
    let mut mean = io.output(slot::MEAN, &stats_dims)?;
    let mut inv_std_dev = io.output(slot::INV_STD_DEV, &stats_dims)?;
    let mut sum = io.output(slot::SUM, &x.shape)?;

    // SAFETY: X was checked to be T; Y was allocated as T; Mean/InvStdDev are declared with the
    // compute precision `T::Acc` (see `Elem::stats`). All live until the call returns.
    let (x_data, y_data) = unsafe { (x.data::<T>()?, y.data::<T>()?) };
    let mean_data = match &mut mean {
        // SAFETY: as above.
        Some(m) => Some(unsafe { m.data::<T::Acc>()? }),
        None => None,
    };
    let inv_data = match &mut inv_std_dev {
        // SAFETY: as above.
        Some(s) => Some(unsafe { s.data::<T::Acc>()? }),
        None => None,
    };
    let sum_data = match &mut sum {
        // SAFETY: Sum is allocated as T, the shape of X.
        Some(s) => Some(unsafe { s.data::<T>()? }),
        None => None,
    };
    let job = RowJob {
        kernel,
        x: x_data,
        y: y_data.as_mut_ptr(),
        mean: mean_data.map(|m| m.as_mut_ptr()),
        inv_std_dev: inv_data.map(|s| s.as_mut_ptr()),
        rows: layout.rows,
        row_len: layout.row_len,
        rows_per_chunk: rows_per_chunk::<T>(layout.row_len),
        scale: scale.as_deref(),
        bias: bias.as_deref(),
        skip: skip.as_deref(),
        residual_bias: residual_bias.as_deref(),
        sum: sum_data.map(|s| s.as_mut_ptr()),
        error: Mutex::new(None),
    };
    job.run(io)
}

/// Checks an optional `Skip` and returns it as whole rows (borrowed when it already is, see
/// `layout::SkipRows`, expanded to `X`'s shape otherwise).
fn skip_input<'a, T: OrtElement>(
    input: Option<&'a Input>,
    x_shape: &[usize],
    axis: usize,
) -> Result<Option<Cow<'a, [T]>>, Error> {
    let Some(input) = input else {
        return Ok(None);
    };
    check_type::<T>(input, "Skip")?;
    // SAFETY: the element type was checked above; the data lives until the call returns.
    let data = unsafe { input.data::<T>()? };
    Ok(Some(skip_values(data, &input.shape, x_shape, axis)?))
}

/// Checks an optional residual `Bias` and returns one full row of it.
fn residual_bias_row<'a, T: OrtElement>(
    input: Option<&'a Input>,
    normalized: &[usize],
) -> Result<Option<Cow<'a, [T]>>, Error> {
    let Some(input) = input else {
        return Ok(None);
    };
    check_type::<T>(input, "Bias")?;
    check_bias_shape(&input.shape, normalized)?;
    // SAFETY: the element type was checked above; the data lives until the call returns.
    Ok(Some(param_row(
        unsafe { input.data::<T>()? },
        &input.shape,
        normalized,
    )))
}

fn check_type<T: OrtElement>(input: &Input, what: &str) -> Result<(), Error> {
    if input.ts.elem == T::ELEM.code() {
        Ok(())
    } else {
        Err(Error::invalid(type_mismatch(
            what,
            input.ts.elem,
            T::ELEM.code(),
        )))
    }
}

/// Checks an optional `Scale`/`B` and returns one full row of it.
fn param<'a, T: OrtElement>(
    input: Option<&'a Input>,
    what: &str,
    normalized: &[usize],
) -> Result<Option<Cow<'a, [T]>>, Error> {
    let Some(input) = input else {
        return Ok(None);
    };
    check_type::<T>(input, what)?;
    check_param_shape(&input.shape, normalized, what)?;
    // SAFETY: the element type was checked above; the data lives until the call returns.
    Ok(Some(param_row(
        unsafe { input.data::<T>()? },
        &input.shape,
        normalized,
    )))
}

fn rows_per_chunk<T>(row_len: usize) -> usize {
    let row_bytes = row_len.saturating_mul(std::mem::size_of::<T>()).max(1);
    (CHUNK_BYTES / row_bytes).max(1)
}

/// Normalising `rows` rows, split into chunks of `rows_per_chunk` that may run on any pool thread.
struct RowJob<'a, T: Element> {
    kernel: &'a Kernel,
    x: &'a [T],
    y: *mut T,
    mean: Option<*mut T::Acc>,
    inv_std_dev: Option<*mut T::Acc>,
    rows: usize,
    row_len: usize,
    rows_per_chunk: usize,
    scale: Option<&'a [T]>,
    bias: Option<&'a [T]>,
    /// Version 2: `Skip` as whole rows, the residual `Bias` as one row, and `Sum` (`rows * n`).
    skip: Option<&'a [T]>,
    residual_bias: Option<&'a [T]>,
    sum: Option<*mut T>,
    /// The first failure of any task (a panic, caught there).
    error: Mutex<Option<Error>>,
}

impl<T: Element> RowJob<'_, T> {
    fn chunks(&self) -> usize {
        self.rows.div_ceil(self.rows_per_chunk)
    }

    fn run(&self, io: &KernelIo) -> Result<(), Error> {
        let chunks = self.chunks();
        if self.row_len == 0 || chunks <= 1 {
            // Empty rows (statistics are NaN) or too little work to hand to the pool.
            return catch(|| {
                self.run_chunk(0, self.rows);
                Ok(())
            });
        }
        let api = self.kernel.api();
        // SAFETY: `self` outlives the call: ParallelFor returns only after every task finished.
        // `run_task::<T>` is only ever given `self` as data.
        let status = unsafe {
            (api.get().KernelContext_ParallelFor)(
                io.context(),
                run_task::<T>,
                chunks,
                0,
                (self as *const Self).cast_mut().cast::<c_void>(),
            )
        };
        api.check(status)?;
        match self.error.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Runs chunk `index`; a panic is recorded for `run` to return.
    fn task(&self, index: usize) {
        let result = catch(|| {
            self.kernel.hooks.at_worker(index);
            let start = index.saturating_mul(self.rows_per_chunk).min(self.rows);
            let end = start.saturating_add(self.rows_per_chunk).min(self.rows);
            self.run_chunk(start, end);
            Ok(())
        });
        if let Err(err) = result {
            self.error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(err);
        }
    }

    /// Normalises rows `start..end`.
    fn run_chunk(&self, start: usize, end: usize) {
        let n = self.row_len;
        let (lo, hi) = (start * n, end * n);
        // SAFETY: chunks cover disjoint row ranges, so each task writes only its own part of Y,
        // Mean and InvStdDev; the buffers hold `rows * n` and `rows` elements and live until
        // ParallelFor returns.
        let y = unsafe { std::slice::from_raw_parts_mut(self.y.add(lo), hi - lo) };
        let mean = self
            .mean
            // SAFETY: as above, entries `start..end` of a `rows`-long buffer.
            .map(|m| unsafe { std::slice::from_raw_parts_mut(m.add(start), end - start) });
        let inv = self
            .inv_std_dev
            // SAFETY: as above.
            .map(|s| unsafe { std::slice::from_raw_parts_mut(s.add(start), end - start) });
        let sum = self
            .sum
            // SAFETY: as for Y: the chunk's own rows of a `rows * n` buffer.
            .map(|s| unsafe { std::slice::from_raw_parts_mut(s.add(lo), hi - lo) });
        // The kernels at the widest instructions this CPU has (AVX2 where present).
        if self.skip.is_none() && self.residual_bias.is_none() && sum.is_none() {
            dispatch::out_of_place(
                &self.x[lo..hi],
                y,
                n,
                self.scale,
                self.bias,
                &self.kernel.params,
                mean,
                inv,
            );
            return;
        }
        dispatch::out_of_place_residual(
            &self.x[lo..hi],
            y,
            n,
            self.scale,
            self.bias,
            Residual {
                bias: self.residual_bias,
                skip: self.skip.map(|rows| SkipInput {
                    rows,
                    first_row: start,
                }),
                sum,
            },
            &self.kernel.params,
            mean,
            inv,
        );
    }
}

/// The `KernelContext_ParallelFor` callback. It may run on any pool thread and must not unwind.
extern "C" fn run_task<T: Element>(data: *mut c_void, index: usize) {
    // SAFETY: `data` is the `RowJob<T>` that `RowJob::run` passed, alive for the whole ParallelFor.
    let job = unsafe { &*data.cast::<RowJob<'_, T>>() };
    // `task` catches panics itself; this outer guard only covers recording the error.
    crate::status::guard_value((), || job.task(index));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_about_256_kib() {
        assert_eq!(rows_per_chunk::<f32>(768), 85);
        assert_eq!(rows_per_chunk::<f64>(1 << 20), 1);
        assert_eq!(rows_per_chunk::<f16>(0), CHUNK_BYTES);
        assert_eq!(rows_per_chunk::<f32>(1), 65536);
    }
}
