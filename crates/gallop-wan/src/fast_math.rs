//! Elementwise math that vectorises: loops over these compile to SIMD, where libm's functions
//! are a call per element.

/// exp(x) within 2 ulp over the f32 range (Cephes' reduction and polynomial), branch-free so
/// loops over it vectorise, where libm's expf is a call per element. Inputs beyond the range
/// saturate: below -87.3 to about 1e-38 instead of a subnormal, which no softmax, GELU or SiLU
/// can tell apart.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so n * LN2_HI is exact for |n| < 2^10.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5 * 2^23 rounds to the nearest integer in f32.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Run `f` inside a function compiled for AVX-512 when the CPU has it, so the loops `f` inlines
/// vectorise 16 wide instead of the 4 of the baseline x86-64 target; elsewhere `f` runs as is.
/// Pass a closure whose loops call `#[inline(always)]` helpers (like [`fast_exp`]).
#[inline(always)]
pub fn with_widest_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { avx512(f) };
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_two_ulp_of_exp() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (fast, exact) = (fast_exp(x) as f64, (x as f64).exp());
            let ulp = (exact as f32).abs() as f64 * f32::EPSILON as f64;
            worst = worst.max((fast - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert!(fast_exp(-1000.0) < 1e-37 && fast_exp(1000.0).is_finite());
    }
}
