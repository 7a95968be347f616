//! Eight f32 lanes for batch norm's per-channel sums (`fastbn.rs`), with the few operations they
//! need written once, generic over [`Arith`], for eight lanes ([`L8`]) and for one value (`f32`,
//! the tail of a plane).
//!
//! Batch norm sums each channel in eight f32 lanes, lane `l` taking values `l, l + 8, ...`: a
//! fixed order, the same bits at any thread count. On x86-64 the lanes are two SSE registers
//! (`sse::Sse8`, explicit instructions; SSE is in every x86-64 build, so nothing is detected at
//! run time), elsewhere an array (`Array8`). Every operation is one IEEE operation per lane (no
//! fused multiply-add), and a masked value is the value where the test is greater than zero and
//! +0.0 otherwise (NaN: +0.0), as the scalar code it replaced decided it, so the sums have that
//! code's bits: the tests check fastbn's sums against it on finite values, signed zeros and the
//! mask's edge (for NaN inputs both give NaN; Rust leaves NaN payloads open).
//!
//! Why explicit lanes: the scalar code added both sums lane by lane (`u[l] += f(..)`,
//! `v[l] += g(..)`), and the compiler paired each lane's two sums instead of vectorising across
//! lanes in the backward pass's masked sums (batch norm + ReLU), which then ran one or two lanes
//! at a time (docs/performance.md, "Batch norm's sums in explicit lanes"). The same loop over
//! whole-array operations (`Array8`) was not enough: after inlining, the compiler paired the
//! lanes again in the statistics' sum of squares, so x86-64 builds use SSE instructions. (Two
//! 128-bit registers rather than one 256-bit AVX register: AVX would need detecting at run time,
//! and these passes are bound by memory more than by the width.) The array form is what other
//! CPUs (aarch64) build; it has not been measured there.

/// The operations the sums are written in: each rounded once per lane, as `f32` arithmetic is.
pub(crate) trait Arith: Copy {
    fn splat(v: f32) -> Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// `g` where `self > 0`, +0.0 elsewhere (also where `self` is NaN).
    fn pass_if_positive(self, g: Self) -> Self;
}

impl Arith for f32 {
    #[inline(always)]
    fn splat(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self - o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline(always)]
    fn pass_if_positive(self, g: Self) -> Self {
        if self > 0.0 { g } else { 0.0 }
    }
}

/// Eight lanes as an array: [`L8`] where there is no SSE, and on x86-64 the tests' second form.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse"))))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Array8(pub [f32; 8]);

#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse"))))]
impl Array8 {
    #[inline(always)]
    fn map2(self, o: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Array8(std::array::from_fn(|l| f(self.0[l], o.0[l])))
    }
}

#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse"))))]
impl Arith for Array8 {
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Array8([v; 8])
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.map2(o, Arith::add)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.map2(o, Arith::sub)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self.map2(o, Arith::mul)
    }
    #[inline(always)]
    fn pass_if_positive(self, g: Self) -> Self {
        self.map2(g, Arith::pass_if_positive)
    }
}

/// Eight lanes loaded from and unloaded to an array, lane `l` at index `l`.
pub(crate) trait Lanes: Arith {
    fn load(v: &[f32; 8]) -> Self;
    fn to_array(self) -> [f32; 8];
}

#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse"))))]
impl Lanes for Array8 {
    #[inline(always)]
    fn load(v: &[f32; 8]) -> Self {
        Array8(*v)
    }
    #[inline(always)]
    fn to_array(self) -> [f32; 8] {
        self.0
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
mod sse {
    use std::arch::x86_64::*;

    use super::{Arith, Lanes};

    /// Lanes 0-3 and 4-7 in two SSE registers. SSE is part of the x86-64 baseline, so every
    /// build for it enables it (the `cfg` above checks) and no CPU check is needed at run time.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Sse8(__m128, __m128);

    impl Arith for Sse8 {
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: SSE is enabled in this build (the module's `cfg`); no memory is touched.
            unsafe { Sse8(_mm_set1_ps(v), _mm_set1_ps(v)) }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: SSE is enabled in this build (the module's `cfg`); no memory is touched.
            unsafe { Sse8(_mm_add_ps(self.0, o.0), _mm_add_ps(self.1, o.1)) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            // SAFETY: SSE is enabled in this build (the module's `cfg`); no memory is touched.
            unsafe { Sse8(_mm_sub_ps(self.0, o.0), _mm_sub_ps(self.1, o.1)) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: SSE is enabled in this build (the module's `cfg`); no memory is touched.
            unsafe { Sse8(_mm_mul_ps(self.0, o.0), _mm_mul_ps(self.1, o.1)) }
        }
        #[inline(always)]
        fn pass_if_positive(self, g: Self) -> Self {
            // `cmpgt` is all ones where `self > 0` (an ordered test: false for NaN), so `and`
            // keeps `g` there and gives +0.0 elsewhere, as the scalar form's `0.0`.
            // SAFETY: SSE is enabled in this build (the module's `cfg`); no memory is touched.
            unsafe {
                let z = _mm_setzero_ps();
                Sse8(_mm_and_ps(_mm_cmpgt_ps(self.0, z), g.0), _mm_and_ps(_mm_cmpgt_ps(self.1, z), g.1))
            }
        }
    }

    impl Lanes for Sse8 {
        #[inline(always)]
        fn load(v: &[f32; 8]) -> Self {
            // SAFETY: SSE is enabled in this build (the module's `cfg`); `v` is eight floats,
            // valid for reads at 0..4 and 4..8, and `_mm_loadu_ps` takes any alignment.
            unsafe { Sse8(_mm_loadu_ps(v.as_ptr()), _mm_loadu_ps(v.as_ptr().add(4))) }
        }
        #[inline(always)]
        fn to_array(self) -> [f32; 8] {
            let mut out = [0f32; 8];
            // SAFETY: SSE is enabled in this build (the module's `cfg`); `out` is eight floats,
            // valid for writes at 0..4 and 4..8, and `_mm_storeu_ps` takes any alignment.
            unsafe {
                _mm_storeu_ps(out.as_mut_ptr(), self.0);
                _mm_storeu_ps(out.as_mut_ptr().add(4), self.1);
            }
            out
        }
    }
}

/// The lanes [`sums2`] uses in this build.
#[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
pub(crate) type L8 = sse::Sse8;
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
pub(crate) type L8 = Array8;

/// Two per-lane functions of a pair of values, written once for a vector of lanes and for one
/// value: what [`sums2`] adds up.
pub(crate) trait PairSum {
    fn first<T: Arith>(&self, a: T, b: T) -> T;
    fn second<T: Arith>(&self, a: T, b: T) -> T;
}

/// `(sum of first(a, b), sum of second(a, b))` over two equally long slices: eight f32 lanes
/// each, lane `l` taking values `l, l + 8, ...` in order, the lanes then summed in f64 in lane
/// order and the tail (fewer than 8 values) added one by one. A fixed order: the same bits every
/// time.
///
/// # Panics
///
/// Unless the slices are equally long.
pub(crate) fn sums2(a: &[f32], b: &[f32], op: &impl PairSum) -> (f64, f64) {
    sums2_in::<L8>(a, b, op)
}

/// [`sums2`] in the lanes `T`.
#[inline(always)]
fn sums2_in<T: Lanes>(a: &[f32], b: &[f32], op: &impl PairSum) -> (f64, f64) {
    assert!(a.len() == b.len(), "lanes::sums2: slices of {} and {} values", a.len(), b.len());
    let (mut u, mut v) = (T::splat(0.0), T::splat(0.0));
    let (ca, cb) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    for (x, y) in ca.0.iter().zip(cb.0) {
        let (x, y) = (T::load(x), T::load(y));
        u = u.add(op.first(x, y));
        v = v.add(op.second(x, y));
    }
    let (u, v) = (u.to_array(), v.to_array());
    let (mut su, mut sv) = (u.iter().map(|&t| t as f64).sum::<f64>(), v.iter().map(|&t| t as f64).sum::<f64>());
    for (&x, &y) in ca.1.iter().zip(cb.1) {
        su += op.first(x, y) as f64;
        sv += op.second(x, y) as f64;
    }
    (su, sv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastbn::{GradSums, PlaneSum, SquaredDeviations};
    use crate::fastconv::tests::noise;

    /// `fastbn::sums2` as it was before these lanes, verbatim: `[f32; 8]` lanes, both sums lane
    /// by lane, through scalar closures. The reference the lanes must give the bits of.
    fn old_sums2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32, g: impl Fn(f32, f32) -> f32) -> (f64, f64) {
        let (mut u, mut v) = ([0f32; 8], [0f32; 8]);
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for l in 0..8 {
                u[l] += f(x[l], y[l]);
                v[l] += g(x[l], y[l]);
            }
        }
        let (mut su, mut sv) = (u.iter().map(|&t| t as f64).sum::<f64>(), v.iter().map(|&t| t as f64).sum::<f64>());
        for (&x, &y) in ra.iter().zip(rb) {
            su += f(x, y) as f64;
            sv += g(x, y) as f64;
        }
        (su, sv)
    }

    fn same(what: &str, got: (f64, f64), want: (f64, f64)) {
        assert!(
            got.0.to_bits() == want.0.to_bits() && got.1.to_bits() == want.1.to_bits(),
            "{what}: {got:?} against the old code's {want:?}"
        );
    }

    /// fastbn's own sums (the statistics' two passes, the backward pass's sums with and without
    /// the ReLU's mask) in both lane forms, against the old closures on the same values.
    #[test]
    fn fastbns_sums_give_the_old_codes_bits_in_both_lane_forms() {
        for (len, seed) in [(0, 1), (5, 2), (8, 3), (13, 4), (1024, 5), (1031, 6), (4096, 7)] {
            let (mut dy, mut x) = (noise(len, seed), noise(len, seed + 100));
            if len >= 8 {
                // At the mask's edge with (a, b) = (4, -1): 0.25 * 4 - 1 is exactly 0 (masked
                // out); with (a, b) = (4, 0): -0.0 * 4 + 0 is +0.0 (masked out). Negative zeros
                // in the gradient too.
                x[3] = 0.25;
                x[5] = -0.0;
                dy[2] = -0.0;
            }
            let m = 0.125f32;
            for (a, b) in [(4.0f32, -1.0f32), (4.0, 0.0), (-0.5, 0.25)] {
                let op = GradSums { mean: m, relu: Some((a, b)) };
                let pass = |g: f32, v: f32| if v * a + b > 0.0 { g } else { 0.0 };
                let want = old_sums2(&dy, &x, pass, |g, v| pass(g, v) * (v - m));
                same(&format!("masked ({a}, {b}), Array8, {len}"), sums2_in::<Array8>(&dy, &x, &op), want);
                same(&format!("masked ({a}, {b}), L8, {len}"), sums2(&dy, &x, &op), want);
            }
            let op = GradSums { mean: m, relu: None };
            let want = old_sums2(&dy, &x, |g, _| g, |g, v| g * (v - m));
            same(&format!("plain, Array8, {len}"), sums2_in::<Array8>(&dy, &x, &op), want);
            same(&format!("plain, L8, {len}"), sums2(&dy, &x, &op), want);
            let want = old_sums2(&x, &x, |v, _| v, |_, _| 0.0);
            same(&format!("sum, Array8, {len}"), sums2_in::<Array8>(&x, &x, &PlaneSum), want);
            same(&format!("sum, L8, {len}"), sums2(&x, &x, &PlaneSum), want);
            let dev = SquaredDeviations { mean: m };
            let want = old_sums2(&x, &x, |v, _| (v - m) * (v - m), |_, _| 0.0);
            same(&format!("squares, Array8, {len}"), sums2_in::<Array8>(&x, &x, &dev), want);
            same(&format!("squares, L8, {len}"), sums2(&x, &x, &dev), want);
        }
    }

    /// The mask, lane by lane and bit by bit (a masked value is +0.0), in every form.
    #[test]
    fn the_mask_keeps_values_only_where_the_test_is_positive() {
        let tiny = f32::from_bits(1); // the smallest subnormal
        let t = Array8([1.0, 0.0, -0.0, -1.0, f32::NAN, f32::INFINITY, tiny, -tiny]);
        let g = Array8([2.0, -3.0, 4.0, 5.0, 6.0, -7.0, -0.0, 9.0]);
        let want = [2.0f32, 0.0, 0.0, 0.0, 0.0, -7.0, -0.0, 0.0].map(f32::to_bits);
        assert_eq!(t.pass_if_positive(g).0.map(f32::to_bits), want, "Array8");
        assert_eq!(L8::load(&t.0).pass_if_positive(L8::load(&g.0)).to_array().map(f32::to_bits), want, "L8");
        for (l, &w) in want.iter().enumerate() {
            assert_eq!(t.0[l].pass_if_positive(g.0[l]).to_bits(), w, "f32, lane {l}");
        }
    }
}
