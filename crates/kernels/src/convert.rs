//! float16 ⇄ float32 conversion of whole rows with F16C (`vcvtph2ps` / `vcvtps2ph`, 8 lanes per
//! instruction) where the CPU has it, `half`'s conversions otherwise. `half` converts its slices
//! in 8-element calls behind a feature check each, which measured 4× slower than these loops and
//! made conversions the largest cost of the float16 kernels (and of version 2's residual, which
//! rounds the sum to float16 after each `Add`).
//!
//! Both paths round to nearest even, F16C for every lane and `half` for the tail, so results do
//! not depend on the CPU.

#![allow(unsafe_code)]

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Whether this CPU has F16C (and AVX, whose registers it uses); std caches the answer.
#[inline(always)]
pub fn has_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst[i] = src[i]` widened. Panics if the lengths differ.
#[inline(always)]
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "row lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU has the features `f16c::widen` is compiled for (checked above).
        unsafe { f16c::widen(src, dst) };
        return;
    }
    src.convert_to_f32_slice(dst);
}

/// `dst[i] = src[i]` rounded to nearest even. Panics if the lengths differ.
#[inline(always)]
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "row lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: as in `f16_to_f32`.
        unsafe { f16c::narrow(src, dst) };
        return;
    }
    dst.convert_from_f32_slice(src);
}

/// Every value of `row` rounded to float16 and widened again (what storing it as float16 does),
/// in registers; `scratch` holds the float16 values on the fallback path only.
#[inline(always)]
pub fn round_through_f16(row: &mut [f32], scratch: &mut Vec<f16>) {
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: as in `f16_to_f32`.
        unsafe { f16c::round_trip(row) };
        return;
    }
    scratch.resize(row.len(), f16::ZERO);
    scratch.convert_from_f32_slice(row);
    scratch.convert_to_f32_slice(row);
}

/// `dst = src` widened and `sum(dst)`, summed exactly as `rows::sum` sums (the same lanes,
/// blocks and reduction), in one pass. The CPU must have F16C ([`has_f16c`]).
///
/// # Panics
/// Without F16C, or when the lengths differ.
#[inline(always)]
pub fn widen_sum_f16(src: &[f16], dst: &mut [f32]) -> f32 {
    assert_eq!(src.len(), dst.len(), "row lengths differ");
    assert!(has_f16c(), "widen_sum_f16 needs F16C");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has the features (asserted above); the lengths are equal.
    unsafe {
        f16c::widen_sum(src, dst)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// Version 2's residual of one float16 row in one pass: `work = S` with
/// `S = f16(f16(x + bias) + skip)` (each present term only), and `sum = S` when given. The CPU
/// must have F16C ([`has_f16c`]); every slice has `x`'s length.
///
/// # Panics
/// Without F16C, or when the lengths differ.
#[inline(always)]
pub fn residual_f16(
    x: &[f16],
    bias: Option<&[f32]>,
    skip: Option<&[f16]>,
    work: &mut [f32],
    sum: Option<&mut [f16]>,
) {
    let n = x.len();
    assert!(
        work.len() == n
            && bias.is_none_or(|b| b.len() == n)
            && skip.is_none_or(|k| k.len() == n)
            && sum.as_ref().is_none_or(|s| s.len() == n),
        "row lengths differ"
    );
    assert!(has_f16c(), "residual_f16 needs F16C");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has the features (asserted above); the lengths are equal.
    unsafe {
        f16c::residual(x, bias, skip, work, sum)
    };
}

#[cfg(target_arch = "x86_64")]
mod f16c {
    use std::arch::x86_64::{
        __m128i, _mm256_add_ps, _mm256_cvtph_ps, _mm256_cvtps_ph, _mm256_loadu_ps,
        _mm256_setzero_ps, _mm256_storeu_ps, _mm_loadu_si128, _mm_storeu_si128,
        _MM_FROUND_TO_NEAREST_INT,
    };

    use half::f16;

    use crate::rows::{reduce, BLOCK, LANES as LANES_SUM};

    const LANES: usize = 8;

    /// # Safety
    /// The CPU must have AVX and F16C; `src` and `dst` have the same length.
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn widen(src: &[f16], dst: &mut [f32]) {
        let full = src.len() / LANES * LANES;
        for i in (0..full).step_by(LANES) {
            // SAFETY: `i + LANES <= full <= len` for both slices; unaligned loads and stores.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
        }
        for (d, s) in dst[full..].iter_mut().zip(&src[full..]) {
            *d = s.to_f32();
        }
    }

    /// # Safety
    /// As [`widen`].
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn widen_sum(src: &[f16], dst: &mut [f32]) -> f32 {
        const REGS: usize = LANES_SUM / LANES;
        let mut total = 0f32;
        for (s, d) in src.chunks(BLOCK).zip(dst.chunks_mut(BLOCK)) {
            let full = s.len() / LANES_SUM * LANES_SUM;
            let mut acc = [_mm256_setzero_ps(); REGS];
            for i in (0..full).step_by(LANES_SUM) {
                for (r, a) in acc.iter_mut().enumerate() {
                    let at = i + r * LANES;
                    // SAFETY: `at + LANES <= full <= len` for both slices; unaligned access.
                    unsafe {
                        let h = _mm_loadu_si128(s.as_ptr().add(at).cast::<__m128i>());
                        let v = _mm256_cvtph_ps(h);
                        _mm256_storeu_ps(d.as_mut_ptr().add(at), v);
                        *a = _mm256_add_ps(*a, v);
                    }
                }
            }
            let mut lanes = [0f32; LANES_SUM];
            for (r, a) in acc.iter().enumerate() {
                // SAFETY: `lanes` holds REGS * LANES floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr().add(r * LANES), *a) };
            }
            let mut tail = 0f32;
            for (d, v) in d[full..].iter_mut().zip(&s[full..]) {
                *d = v.to_f32();
                tail += *d;
            }
            total += reduce(lanes) + tail;
        }
        total
    }

    /// # Safety
    /// As [`widen`].
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn narrow(src: &[f32], dst: &mut [f16]) {
        let full = src.len() / LANES * LANES;
        for i in (0..full).step_by(LANES) {
            // SAFETY: as in `widen`.
            unsafe {
                let v = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast::<__m128i>(), h);
            }
        }
        for (d, s) in dst[full..].iter_mut().zip(&src[full..]) {
            *d = f16::from_f32(*s);
        }
    }

    /// # Safety
    /// The CPU must have AVX and F16C; every slice has `x`'s length.
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn residual(
        x: &[f16],
        bias: Option<&[f32]>,
        skip: Option<&[f16]>,
        work: &mut [f32],
        mut sum: Option<&mut [f16]>,
    ) {
        let full = x.len() / LANES * LANES;
        for i in (0..full).step_by(LANES) {
            // SAFETY: `i + LANES <= full <= len` for every slice; unaligned loads and stores.
            unsafe {
                let mut h = _mm_loadu_si128(x.as_ptr().add(i).cast::<__m128i>());
                let mut v = _mm256_cvtph_ps(h);
                if let Some(b) = bias {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(b.as_ptr().add(i)));
                    h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                    v = _mm256_cvtph_ps(h);
                }
                if let Some(k) = skip {
                    let k = _mm_loadu_si128(k.as_ptr().add(i).cast::<__m128i>());
                    v = _mm256_add_ps(v, _mm256_cvtph_ps(k));
                    h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                    v = _mm256_cvtph_ps(h);
                }
                if let Some(s) = sum.as_deref_mut() {
                    _mm_storeu_si128(s.as_mut_ptr().add(i).cast::<__m128i>(), h);
                }
                _mm256_storeu_ps(work.as_mut_ptr().add(i), v);
            }
        }
        for i in full..x.len() {
            let mut s = x[i];
            if let Some(b) = bias {
                s = f16::from_f32(s.to_f32() + b[i]);
            }
            if let Some(k) = skip {
                s = f16::from_f32(s.to_f32() + k[i].to_f32());
            }
            if let Some(out) = sum.as_deref_mut() {
                out[i] = s;
            }
            work[i] = s.to_f32();
        }
    }

    /// # Safety
    /// The CPU must have AVX and F16C.
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn round_trip(row: &mut [f32]) {
        let full = row.len() / LANES * LANES;
        for i in (0..full).step_by(LANES) {
            // SAFETY: `i + LANES <= full <= row.len()`; unaligned loads and stores.
            unsafe {
                let p = row.as_mut_ptr().add(i);
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(p));
                _mm256_storeu_ps(p, _mm256_cvtph_ps(h));
            }
        }
        for v in &mut row[full..] {
            *v = f16::from_f32(*v).to_f32();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass widening sum adds in the order of `rows::sum_map` over the widened row, bit
    /// for bit (lengths around the chunk and block sizes), and widens as `half` does.
    #[test]
    fn widen_sum_is_the_generic_sum_of_the_widened_row() {
        if !has_f16c() {
            return;
        }
        use crate::rows::{sum_map, BLOCK};
        let src: Vec<f16> = (0..2 * BLOCK + 77)
            .map(|i| f16::from_f32(((i * 7919) % 1013) as f32 * 0.37 - 180.0))
            .collect();
        for n in [
            0,
            1,
            63,
            64,
            65,
            768,
            1000,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            src.len(),
        ] {
            let mut dst = vec![0f32; n];
            let got = widen_sum_f16(&src[..n], &mut dst);
            let widened: Vec<f32> = src[..n].iter().map(|v| v.to_f32()).collect();
            assert_eq!(dst, widened, "n = {n}");
            assert_eq!(got.to_bits(), sum_map(&widened, |v| v).to_bits(), "n = {n}");
        }
    }

    /// Every float16 bit pattern widens as `half` widens it, and every float32 near each of them
    /// (the value, the midpoints to its neighbours and just off them) narrows as `half` does:
    /// the F16C path and the fallback agree bit for bit, ties to even, subnormals, infinities.
    #[test]
    fn f16c_and_half_agree_on_every_value() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let mut wide = vec![0f32; all.len()];
        f16_to_f32(&all, &mut wide);
        for (h, w) in all.iter().zip(&wide) {
            assert!(
                h.to_f32().to_bits() == w.to_bits() || (h.is_nan() && w.is_nan()),
                "{h:?}"
            );
        }
        let probes: Vec<f32> = wide
            .windows(2)
            .filter(|w| w[0].is_finite() && w[1].is_finite())
            .flat_map(|w| {
                let mid = (w[0] as f64 + w[1] as f64) / 2.0;
                let mid = mid as f32;
                [
                    w[0],
                    mid,
                    f32::from_bits(mid.to_bits() + 1),
                    f32::from_bits(mid.to_bits().saturating_sub(1)),
                    1e6,
                    -7e4,
                ]
            })
            .collect();
        let mut narrow = vec![f16::ZERO; probes.len()];
        f32_to_f16(&probes, &mut narrow);
        let mut rounded = probes.clone();
        round_through_f16(&mut rounded, &mut Vec::new());
        for ((p, n), r) in probes.iter().zip(&narrow).zip(&rounded) {
            let want = f16::from_f32(*p);
            assert_eq!(n.to_bits(), want.to_bits(), "{p:e}");
            assert_eq!(r.to_bits(), want.to_f32().to_bits(), "{p:e}");
        }
    }
}
