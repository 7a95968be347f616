//! Eight f32 lanes for batch norm's per-channel sums (`fastbn.rs`), with the few operations they
//! need written once, generic over [`Arith`], for the eight lanes ([`Array8`]) and for one value
//! (`f32`, the tail of a plane).
//!
//! Why: batch norm sums each channel in eight f32 lanes (a fixed order, the same bits at any
//! thread count). Written as one loop that added both sums lane by lane (`u[l] += f(..)`,
//! `v[l] += g(..)`), the compiler vectorised the plain sums but not the backward pass's masked
//! ones (batch norm + ReLU): it paired each lane's two sums and ran the lanes one or two at a
//! time, 11% of Conv-4's step on an AVX2 host (docs/performance.md). Here every operation is a
//! whole-array map of one IEEE operation per lane (no fused multiply-add), which the compiler
//! turns into vector instructions, and a masked value is `g` where the test is greater than zero
//! and `0` otherwise (NaN: `0`), as the scalar code decided it: the same bits, lane for lane,
//! which the tests check against that scalar loop. The array form alone was not enough: after
//! inlining, the compiler paired the two sums' lanes again in some callers (the statistics' sum
//! of squares), so on x86-64 the lanes are two SSE registers ([`L8`], explicit instructions; SSE
//! is in every x86-64 build, so nothing is detected at run time), the array elsewhere. Both
//! forms are tested against the scalar loop, bit for bit.

/// The operations the sums are written in: each rounded once per lane, as `f32` arithmetic is.
pub(crate) trait Arith: Copy {
    fn splat(v: f32) -> Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// `g` where `self > 0`, `0` elsewhere (also where `self` is NaN).
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
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse", not(test)), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Array8(pub [f32; 8]);

impl Array8 {
    #[inline(always)]
    fn map2(self, o: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Array8(std::array::from_fn(|l| f(self.0[l], o.0[l])))
    }
}

impl Arith for Array8 {
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Array8([v; 8])
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.map2(o, f32::add)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.map2(o, f32::sub)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self.map2(o, f32::mul)
    }
    #[inline(always)]
    fn pass_if_positive(self, g: Self) -> Self {
        self.map2(g, f32::pass_if_positive)
    }
}

/// The eight lanes as this build sums them: two SSE registers on x86-64 ([`sse::Sse8`]), the
/// array elsewhere.
pub(crate) trait Lanes: Arith {
    fn load(v: &[f32; 8]) -> Self;
    fn to_array(self) -> [f32; 8];
}

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
pub(crate) trait PairSum: Sync {
    fn f<T: Arith>(&self, a: T, b: T) -> T;
    fn g<T: Arith>(&self, a: T, b: T) -> T;
}

/// `(sum of f(a, b), sum of g(a, b))` over two equally long slices: eight f32 lanes each, lane
/// `l` taking values `l, l + 8, ...` in order, the lanes then summed in f64 in lane order and the
/// tail (fewer than 8 values) added one by one. A fixed order: the same bits every time.
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
        u = u.add(op.f(x, y));
        v = v.add(op.g(x, y));
    }
    let (u, v) = (u.to_array(), v.to_array());
    let (mut su, mut sv) = (u.iter().map(|&t| t as f64).sum::<f64>(), v.iter().map(|&t| t as f64).sum::<f64>());
    for (&x, &y) in ca.1.iter().zip(cb.1) {
        su += op.f(x, y) as f64;
        sv += op.g(x, y) as f64;
    }
    (su, sv)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sums as `fastbn` wrote them before: `[f32; 8]` lanes, both sums lane by lane.
    fn scalar(a: &[f32], b: &[f32], op: &impl PairSum) -> (f64, f64) {
        let (mut u, mut v) = ([0f32; 8], [0f32; 8]);
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for l in 0..8 {
                u[l] += op.f(x[l], y[l]);
                v[l] += op.g(x[l], y[l]);
            }
        }
        let (mut su, mut sv) = (u.iter().map(|&t| t as f64).sum::<f64>(), v.iter().map(|&t| t as f64).sum::<f64>());
        for (&x, &y) in ra.iter().zip(rb) {
            su += op.f(x, y) as f64;
            sv += op.g(x, y) as f64;
        }
        (su, sv)
    }

    /// Batch norm + ReLU's backward sums: the masked gradient and its product with `x - m`.
    struct Masked {
        a: f32,
        b: f32,
        m: f32,
    }
    impl PairSum for Masked {
        fn f<T: Arith>(&self, g: T, x: T) -> T {
            x.mul(T::splat(self.a)).add(T::splat(self.b)).pass_if_positive(g)
        }
        fn g<T: Arith>(&self, g: T, x: T) -> T {
            self.f(g, x).mul(x.sub(T::splat(self.m)))
        }
    }

    fn noise(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn the_lanes_give_the_scalar_loops_bits() {
        for (len, seed) in [(0, 1), (5, 2), (8, 3), (13, 4), (1024, 5), (1031, 6), (4096, 7)] {
            let (mut g, mut x) = (noise(len, seed), noise(len, seed + 100));
            // Values at the mask's edge: an input whose affine map is exactly 0 (masked out)
            // and negative zeros (NaN is the mask test's below: it makes these sums NaN).
            if len >= 8 {
                x[3] = 0.25; // 0.25 * 4 - 1 = 0 exactly
                x[5] = -0.0;
                g[2] = -0.0;
            }
            let op = Masked { a: 4.0, b: -1.0, m: 0.125 };
            let want = scalar(&g, &x, &op);
            for (name, got) in [("Array8", sums2_in::<Array8>(&g, &x, &op)), ("L8", sums2(&g, &x, &op))] {
                assert!(
                    got.0.to_bits() == want.0.to_bits() && got.1.to_bits() == want.1.to_bits(),
                    "{name}, {len} values: {got:?} against the scalar code's {want:?}"
                );
            }
        }
    }

    #[test]
    fn the_mask_keeps_values_only_where_the_test_is_positive() {
        let t = Array8([1.0, 0.0, -0.0, -1.0, f32::NAN, f32::INFINITY, f32::MIN_POSITIVE, -f32::MIN_POSITIVE]);
        let g = Array8([2.0; 8]);
        let want = [2.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 0.0];
        assert_eq!(t.pass_if_positive(g).0, want);
        for (l, &w) in want.iter().enumerate() {
            assert_eq!(t.0[l].pass_if_positive(g.0[l]), w, "lane {l}");
        }
        assert_eq!(L8::load(&t.0).pass_if_positive(L8::load(&g.0)).to_array(), want);
    }
}
