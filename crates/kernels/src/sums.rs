//! The statistics' sums over float32 rows with explicit AVX-512 or AVX2 vectors.
//!
//! `rows::sum_map` states the summation order: [`LANES`] accumulators, lane `j` taking elements
//! `j, j + LANES, …` of a [`BLOCK`], the lanes reduced by `rows::reduce`, the tail added one by
//! one. Compiled from that generic code, the accumulators stay in a stack array (the compiler
//! vectorises the lane loop but does not promote the array to registers), so every chunk stores
//! and reloads them and the two centred sums ran at a third of the speed of the loads. These
//! loops keep the same lanes in registers: lane `j` is element `j % W` of vector `j / W`, so the
//! adds, and therefore the results, are exactly those of the generic code (tested below).

#![allow(unsafe_code)]

use crate::rows::{reduce, sum_map, BLOCK, LANES};

/// `sum(x)` in the order of `rows::sum_map`.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512::sum(x) };
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX, checked just above.
            return unsafe { avx::sum(x) };
        }
    }
    sum_map(x, |v| v)
}

/// `(sum(x - shift), sum((x - shift)²))` in the order of `rows::sum_map`.
#[inline(always)]
pub fn centered(x: &[f32], shift: f32) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512::centered(x, shift) };
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX, checked just above.
            return unsafe { (avx::sum_map(x, shift, false), avx::sum_map(x, shift, true)) };
        }
    }
    (
        sum_map(x, |v| v - shift),
        sum_map(x, |v| (v - shift) * (v - shift)),
    )
}

/// The tail of a block (the elements after its last whole chunk), added one by one.
#[inline(always)]
fn tail_sum(tail: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    tail.iter().fold(0.0, |s, &v| s + f(v))
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps, _mm512_sub_ps,
    };

    use super::{reduce, tail_sum, BLOCK, LANES};

    const W: usize = 16;
    const _: () = assert!(LANES == 4 * W);

    /// The four vectors of one block's lanes, in lane order.
    #[inline(always)]
    fn lanes(v: [__m512; 4]) -> [f32; LANES] {
        let mut out = [0f32; LANES];
        for (r, v) in v.into_iter().enumerate() {
            // SAFETY: `out` holds `4 * W` floats; an unaligned store.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(r * W), v) };
        }
        out
    }

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum(x: &[f32]) -> f32 {
        let mut total = 0f32;
        for block in x.chunks(BLOCK) {
            let full = block.len() / LANES * LANES;
            let p = block.as_ptr();
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
            );
            for i in (0..full).step_by(LANES) {
                // SAFETY: `i + LANES <= full <= block.len()`; unaligned loads.
                unsafe {
                    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p.add(i)));
                    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p.add(i + W)));
                    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p.add(i + 2 * W)));
                    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p.add(i + 3 * W)));
                }
            }
            total += reduce(lanes([a0, a1, a2, a3])) + tail_sum(&block[full..], |v| v);
        }
        total
    }

    /// Both centred sums in one sweep (eight accumulators of AVX-512's 32 registers).
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn centered(x: &[f32], shift: f32) -> (f32, f32) {
        let (mut t1, mut t2) = (0f32, 0f32);
        let m = _mm512_set1_ps(shift);
        for block in x.chunks(BLOCK) {
            let full = block.len() / LANES * LANES;
            let p = block.as_ptr();
            let mut d1 = [_mm512_setzero_ps(); 4];
            let mut d2 = [_mm512_setzero_ps(); 4];
            for i in (0..full).step_by(LANES) {
                // SAFETY: `i + LANES <= full <= block.len()`; unaligned loads.
                let d = unsafe {
                    [
                        _mm512_sub_ps(_mm512_loadu_ps(p.add(i)), m),
                        _mm512_sub_ps(_mm512_loadu_ps(p.add(i + W)), m),
                        _mm512_sub_ps(_mm512_loadu_ps(p.add(i + 2 * W)), m),
                        _mm512_sub_ps(_mm512_loadu_ps(p.add(i + 3 * W)), m),
                    ]
                };
                d1 = [
                    _mm512_add_ps(d1[0], d[0]),
                    _mm512_add_ps(d1[1], d[1]),
                    _mm512_add_ps(d1[2], d[2]),
                    _mm512_add_ps(d1[3], d[3]),
                ];
                d2 = [
                    _mm512_add_ps(d2[0], _mm512_mul_ps(d[0], d[0])),
                    _mm512_add_ps(d2[1], _mm512_mul_ps(d[1], d[1])),
                    _mm512_add_ps(d2[2], _mm512_mul_ps(d[2], d[2])),
                    _mm512_add_ps(d2[3], _mm512_mul_ps(d[3], d[3])),
                ];
            }
            let tail = &block[full..];
            t1 += reduce(lanes(d1)) + tail_sum(tail, |v| v - shift);
            t2 += reduce(lanes(d2)) + tail_sum(tail, |v| (v - shift) * (v - shift));
        }
        (t1, t2)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps, _mm256_sub_ps,
    };

    use super::{reduce, tail_sum, BLOCK, LANES};

    const W: usize = 8;
    const _: () = assert!(LANES == 8 * W);

    /// One element of the sum: `v`, `v - shift` or `(v - shift)²`.
    #[target_feature(enable = "avx")]
    #[inline]
    fn term(v: __m256, shift: Option<__m256>, square: bool) -> __m256 {
        match shift {
            None => v,
            Some(m) => {
                let d = _mm256_sub_ps(v, m);
                if square {
                    _mm256_mul_ps(d, d)
                } else {
                    d
                }
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX.
    #[target_feature(enable = "avx")]
    #[inline]
    unsafe fn sweep(x: &[f32], shift: Option<f32>, square: bool) -> f32 {
        let mut total = 0f32;
        let m = shift.map(|s| _mm256_set1_ps(s));
        for block in x.chunks(BLOCK) {
            let full = block.len() / LANES * LANES;
            let p = block.as_ptr();
            let mut a = [_mm256_setzero_ps(); 8];
            for i in (0..full).step_by(LANES) {
                // SAFETY: `i + LANES <= full <= block.len()`; unaligned loads.
                let v = unsafe {
                    [
                        _mm256_loadu_ps(p.add(i)),
                        _mm256_loadu_ps(p.add(i + W)),
                        _mm256_loadu_ps(p.add(i + 2 * W)),
                        _mm256_loadu_ps(p.add(i + 3 * W)),
                        _mm256_loadu_ps(p.add(i + 4 * W)),
                        _mm256_loadu_ps(p.add(i + 5 * W)),
                        _mm256_loadu_ps(p.add(i + 6 * W)),
                        _mm256_loadu_ps(p.add(i + 7 * W)),
                    ]
                };
                a = [
                    _mm256_add_ps(a[0], term(v[0], m, square)),
                    _mm256_add_ps(a[1], term(v[1], m, square)),
                    _mm256_add_ps(a[2], term(v[2], m, square)),
                    _mm256_add_ps(a[3], term(v[3], m, square)),
                    _mm256_add_ps(a[4], term(v[4], m, square)),
                    _mm256_add_ps(a[5], term(v[5], m, square)),
                    _mm256_add_ps(a[6], term(v[6], m, square)),
                    _mm256_add_ps(a[7], term(v[7], m, square)),
                ];
            }
            let mut lanes = [0f32; LANES];
            for (r, v) in a.into_iter().enumerate() {
                // SAFETY: `lanes` holds `8 * W` floats; an unaligned store.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr().add(r * W), v) };
            }
            let tail = &block[full..];
            total += reduce(lanes)
                + match shift {
                    None => tail_sum(tail, |v| v),
                    Some(s) if square => tail_sum(tail, |v| (v - s) * (v - s)),
                    Some(s) => tail_sum(tail, |v| v - s),
                };
        }
        total
    }

    /// # Safety
    /// The CPU must have AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn sum(x: &[f32]) -> f32 {
        // SAFETY: as this function's contract.
        unsafe { sweep(x, None, false) }
    }

    /// `sum(x - shift)`, or `sum((x - shift)²)` when `square`.
    ///
    /// # Safety
    /// The CPU must have AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn sum_map(x: &[f32], shift: f32, square: bool) -> f32 {
        // SAFETY: as this function's contract.
        unsafe { sweep(x, Some(shift), square) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the chunk and block sizes, with values whose sums round.
    #[test]
    fn vector_sums_equal_the_generic_order_bit_for_bit() {
        let data: Vec<f32> = (0..3 * BLOCK + 77)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 180.0 + (i % 5) as f32 * 1e-3)
            .collect();
        let lens = [
            0,
            1,
            63,
            64,
            65,
            127,
            768,
            1000,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            data.len(),
        ];
        for &n in &lens {
            let x = &data[..n];
            assert_eq!(
                sum(x).to_bits(),
                sum_map(x, |v| v).to_bits(),
                "sum, n = {n}"
            );
            let shift = 3.25f32;
            let (d1, d2) = centered(x, shift);
            assert_eq!(
                d1.to_bits(),
                sum_map(x, |v| v - shift).to_bits(),
                "d, n = {n}"
            );
            let want = sum_map(x, |v| (v - shift) * (v - shift));
            assert_eq!(d2.to_bits(), want.to_bits(), "d², n = {n}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx") {
                // SAFETY: AVX is present, checked just above.
                let (s, a, b) = unsafe {
                    (
                        avx::sum(x),
                        avx::sum_map(x, shift, false),
                        avx::sum_map(x, shift, true),
                    )
                };
                assert_eq!(s.to_bits(), sum_map(x, |v| v).to_bits(), "AVX sum, n = {n}");
                assert_eq!((a.to_bits(), b.to_bits()), (d1.to_bits(), want.to_bits()));
            }
        }
    }
}
