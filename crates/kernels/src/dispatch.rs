//! The row kernels compiled three times — for the baseline target (SSE2 on x86_64), with AVX2,
//! and with AVX-512, both with F16C (every AVX2 CPU has it; it lets `convert`'s loops inline) —
//! and picked at run time. The default build cannot assume either, and at
//! SSE2 width the kernel's passes over a row cost more than streaming the row from memory.
//!
//! [`crate::rows`] marks its entry points `#[inline(always)]`, so calling them from a
//! `#[target_feature]` function compiles the whole kernel for that feature set. Results are
//! identical either way: Rust never fuses or reorders float operations, so only the instruction
//! width changes.

#![allow(unsafe_code)]

use crate::params::Params;
use crate::rows::{
    normalize_rows, normalize_rows_in_place, normalize_rows_residual, Element, Residual,
};

/// The instruction sets worth a separate build, widest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    Avx512,
    Avx2,
    Baseline,
}

/// The widest instruction set this CPU runs (checked once per call; the check is a cached load).
pub fn width() -> Width {
    #[cfg(target_arch = "x86_64")]
    {
        // Every feature the AVX-512 build is compiled with (`feature_build!` below), so that
        // calling it is sound on any CPU that passes.
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return Width::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return Width::Avx2;
        }
    }
    Width::Baseline
}

/// [`normalize_rows_in_place`] with the widest instructions this CPU has.
pub fn in_place<T: Element>(
    xy: &mut [T],
    row_len: usize,
    scale: Option<&[T]>,
    bias: Option<&[T]>,
    params: &Params,
    mean: Option<&mut [T::Acc]>,
    inv_std_dev: Option<&mut [T::Acc]>,
) {
    match width() {
        // SAFETY: the CPU has these features, checked by `width`.
        #[cfg(target_arch = "x86_64")]
        Width::Avx512 => unsafe {
            avx512::in_place(xy, row_len, scale, bias, params, mean, inv_std_dev)
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Width::Avx2 => unsafe {
            avx2::in_place(xy, row_len, scale, bias, params, mean, inv_std_dev)
        },
        _ => normalize_rows_in_place(xy, row_len, scale, bias, params, mean, inv_std_dev),
    }
}

/// [`normalize_rows`] with the widest instructions this CPU has.
#[allow(clippy::too_many_arguments)]
pub fn out_of_place<T: Element>(
    x: &[T],
    y: &mut [T],
    row_len: usize,
    scale: Option<&[T]>,
    bias: Option<&[T]>,
    params: &Params,
    mean: Option<&mut [T::Acc]>,
    inv_std_dev: Option<&mut [T::Acc]>,
) {
    match width() {
        // SAFETY: the CPU has these features, checked by `width`.
        #[cfg(target_arch = "x86_64")]
        Width::Avx512 => unsafe {
            avx512::out_of_place(x, y, row_len, scale, bias, params, mean, inv_std_dev)
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Width::Avx2 => unsafe {
            avx2::out_of_place(x, y, row_len, scale, bias, params, mean, inv_std_dev)
        },
        _ => normalize_rows(x, y, row_len, scale, bias, params, mean, inv_std_dev),
    }
}

/// [`normalize_rows_residual`] with the widest instructions this CPU has.
#[allow(clippy::too_many_arguments)]
pub fn out_of_place_residual<T: Element>(
    x: &[T],
    y: &mut [T],
    row_len: usize,
    scale: Option<&[T]>,
    b: Option<&[T]>,
    residual: Residual<'_, T>,
    params: &Params,
    mean: Option<&mut [T::Acc]>,
    inv_std_dev: Option<&mut [T::Acc]>,
) {
    match width() {
        // SAFETY: the CPU has these features, checked by `width`.
        #[cfg(target_arch = "x86_64")]
        Width::Avx512 => unsafe {
            avx512::out_of_place_residual(
                x,
                y,
                row_len,
                scale,
                b,
                residual,
                params,
                mean,
                inv_std_dev,
            )
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Width::Avx2 => unsafe {
            avx2::out_of_place_residual(
                x,
                y,
                row_len,
                scale,
                b,
                residual,
                params,
                mean,
                inv_std_dev,
            )
        },
        _ => normalize_rows_residual(x, y, row_len, scale, b, residual, params, mean, inv_std_dev),
    }
}

/// One module of the entry points compiled for a feature set.
macro_rules! feature_build {
    ($module:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $module {
            use super::*;

            #[target_feature(enable = $features)]
            pub(super) fn in_place<T: Element>(
                xy: &mut [T],
                row_len: usize,
                scale: Option<&[T]>,
                bias: Option<&[T]>,
                params: &Params,
                mean: Option<&mut [T::Acc]>,
                inv_std_dev: Option<&mut [T::Acc]>,
            ) {
                normalize_rows_in_place(xy, row_len, scale, bias, params, mean, inv_std_dev);
            }

            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            pub(super) fn out_of_place<T: Element>(
                x: &[T],
                y: &mut [T],
                row_len: usize,
                scale: Option<&[T]>,
                bias: Option<&[T]>,
                params: &Params,
                mean: Option<&mut [T::Acc]>,
                inv_std_dev: Option<&mut [T::Acc]>,
            ) {
                normalize_rows(x, y, row_len, scale, bias, params, mean, inv_std_dev);
            }

            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            pub(super) fn out_of_place_residual<T: Element>(
                x: &[T],
                y: &mut [T],
                row_len: usize,
                scale: Option<&[T]>,
                b: Option<&[T]>,
                residual: Residual<'_, T>,
                params: &Params,
                mean: Option<&mut [T::Acc]>,
                inv_std_dev: Option<&mut [T::Acc]>,
            ) {
                normalize_rows_residual(
                    x,
                    y,
                    row_len,
                    scale,
                    b,
                    residual,
                    params,
                    mean,
                    inv_std_dev,
                );
            }
        }
    };
}

feature_build!(avx2, "avx2,f16c");
feature_build!(avx512, "avx512f,avx512bw,avx512vl,avx2,f16c");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Variant;
    use half::f16;

    fn data(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 5.0 + if i % 97 == 0 { 1e4 } else { 0.0 })
            .collect()
    }

    /// The dispatched kernel gives bit-identical results to the baseline one.
    #[test]
    fn dispatch_matches_the_baseline_kernel_exactly() {
        let params =
            Params::from_attributes(Variant::AdaNorm { c: 1.5, k: 0.2 }, 1e-5, 1, 0).unwrap();
        let (rows, row_len) = (5, 1000);
        let x = data(rows * row_len);
        let scale: Vec<f32> = data(row_len).iter().map(|v| v * 0.1).collect();
        let (mut y_base, mut y_fast) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        let (mut m_base, mut m_fast) = (vec![0f32; rows], vec![0f32; rows]);
        normalize_rows(
            &x,
            &mut y_base,
            row_len,
            Some(&scale),
            None,
            &params,
            Some(&mut m_base),
            None,
        );
        out_of_place(
            &x,
            &mut y_fast,
            row_len,
            Some(&scale),
            None,
            &params,
            Some(&mut m_fast),
            None,
        );
        assert_eq!(y_base, y_fast);
        assert_eq!(m_base, m_fast);

        // Every build this CPU can run, not only the widest.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut y_avx2 = vec![0f32; x.len()];
            // SAFETY: AVX2 is present, checked just above.
            unsafe {
                avx2::out_of_place(
                    &x,
                    &mut y_avx2,
                    row_len,
                    Some(&scale),
                    None,
                    &params,
                    None,
                    None,
                )
            };
            assert_eq!(y_base, y_avx2);
        }

        let mut xy = x.clone();
        in_place(&mut xy, row_len, Some(&scale), None, &params, None, None);
        assert_eq!(xy, y_base);

        let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let (mut h_base, mut h_fast) = (h.clone(), h.clone());
        normalize_rows_in_place(&mut h_base, row_len, None, None, &params, None, None);
        in_place(&mut h_fast, row_len, None, None, &params, None, None);
        assert_eq!(h_base, h_fast);
    }
}
