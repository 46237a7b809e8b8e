//! The scalar half of a UniPC update: the step size in log-SNR, the B(h) weights and the order-2
//! corrector solve, computed op by op in the float type diffusers uses for them (float32 for
//! float32 latents, float64 for float64), in diffusers' order, so each coefficient rounds as
//! diffusers' 0-d tensors do.

use std::ops::{Add, Div, Mul, Neg, Sub};

/// The float types the coefficients are computed in.
pub(super) trait Real:
    Copy
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    fn ln(self) -> Self;
    fn exp_m1(self) -> Self;
    fn abs(self) -> Self;
}

impl Real for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    /// Correctly rounded (through f64). torch's float32 log is MKL's vsLn, which is within 0.87
    /// ulp but off by one ulp in ~7% of inputs; no open implementation reproduces it, so this is
    /// where gallop's float32 steps and diffusers' part (by up to ~1e-6 relative).
    fn ln(self) -> Self {
        (self as f64).ln() as f32
    }
    /// Correctly rounded (through f64), as torch's SLEEF expm1 (u10) is in all but ~0.05% of
    /// inputs. Not `f32::exp_m1`: glibc's expm1f is one ulp off in ~10% of inputs.
    fn exp_m1(self) -> Self {
        (self as f64).exp_m1() as f32
    }
    fn abs(self) -> Self {
        f32::abs(self)
    }
}

impl Real for f64 {
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn exp_m1(self) -> Self {
        f64::exp_m1(self)
    }
    fn abs(self) -> Self {
        f64::abs(self)
    }
}

/// What one UniP or UniC update multiplies tensors by (widened to f64, exactly).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Coefficients {
    /// sigma_t / sigma_s0: the weight of the sample the update starts from.
    pub sample_weight: f64,
    /// alpha_t * h phi_1(h): the weight of the newest x0 prediction.
    pub x0_weight: f64,
    /// alpha_t * B(h): the weight of the higher-order residual.
    pub residual_weight: f64,
    /// Order 2: rk, the earlier output's step as a fraction of h; D1 = (m1 - m0) / rk.
    pub rk: Option<f64>,
    /// Residual weights: predictor order 2 [on D1]; corrector order 1 [on D1_t]; corrector
    /// order 2 [on D1, on D1_t]. Empty for an order-1 predictor.
    pub rhos: Vec<f64>,
}

/// Where an update goes: from `sigma_s0` to `sigma_t`, with `sigma_s1` (one step before
/// `sigma_s0`) for order 2.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    pub sigma_t: f32,
    pub sigma_s0: f32,
    pub sigma_s1: Option<f32>,
    /// B(h) = h (bh1) instead of e^h - 1 (bh2).
    pub bh1: bool,
    /// The corrector (UniC) rather than the predictor (UniP).
    pub corrector: bool,
}

/// The coefficients of one update in float type `T`, in the order diffusers' x0-prediction
/// B(h) updates compute them (flow sigmas: alpha = 1 - sigma).
pub(super) fn coefficients<T: Real>(step: Step) -> Coefficients {
    let one = T::from_f32(1.0);
    let half = T::from_f32(0.5);
    let lambda = |sigma: T| (one - sigma).ln() - sigma.ln();
    let (sigma_t, sigma_s0) = (T::from_f32(step.sigma_t), T::from_f32(step.sigma_s0));
    let alpha_t = one - sigma_t;
    let lambda_s0 = lambda(sigma_s0);
    let h = lambda(sigma_t) - lambda_s0;
    let rk = step
        .sigma_s1
        .map(|s| (lambda(T::from_f32(s)) - lambda_s0) / h);
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let b_h = if step.bh1 { hh } else { hh.exp_m1() };
    let rhos: Vec<T> = match (step.corrector, rk) {
        (false, None) => Vec::new(),
        // diffusers fixes the order-2 predictor's weight at 1/2 and the order-1 corrector's.
        (false, Some(_)) | (true, None) => vec![half],
        (true, Some(rk)) => {
            // b_k = h phi_k(h) k! / B(h), with h phi_{k+1} = h phi_k / hh - 1/(k+1)!.
            let h_phi_2 = h_phi_1 / hh - one;
            let b1 = h_phi_2 / b_h;
            let h_phi_3 = h_phi_2 / hh - half;
            let b2 = h_phi_3 * T::from_f32(2.0) / b_h;
            let (rho_0, rho_1) = solve_unic_2x2(rk, b1, b2);
            vec![rho_0, rho_1]
        }
    };
    Coefficients {
        sample_weight: (sigma_t / sigma_s0).to_f64(),
        x0_weight: (alpha_t * h_phi_1).to_f64(),
        residual_weight: (alpha_t * b_h).to_f64(),
        rk: rk.map(T::to_f64),
        rhos: rhos.into_iter().map(T::to_f64).collect(),
    }
}

/// Solve [[1, 1], [rk, 1]] rho = [b1, b2] as LAPACK's getrf + getrs do for one 2x2 system (what
/// torch.linalg.solve runs): LU with partial pivoting, each division by a pivot done as a
/// product with its reciprocal. Bit for bit equal to torch.linalg.solve in float32.
pub(super) fn solve_unic_2x2<T: Real>(rk: T, b1: T, b2: T) -> (T, T) {
    let one = T::from_f32(1.0);
    // The pivot row first: rows are ([a0, a1], rhs).
    let ((p0, p1, py), (q0, q1, qy)) = if rk.abs() > one {
        ((rk, one, b2), (one, one, b1))
    } else {
        ((one, one, b1), (rk, one, b2))
    };
    let l = q0 * (one / p0);
    let u11 = q1 - l * p1;
    let z1 = qy - l * py;
    let x1 = z1 * (one / u11);
    let x0 = (py - p1 * x1) * (one / p0);
    (x0, x1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    #[test]
    fn solve_unic_2x2_equals_torch_linalg_solve_bit_for_bit_in_f32() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/scheduler/solve_2x2.safetensors");
        let fixture = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        let rk: Vec<f32> = fixture["rk"].to_vec1().unwrap();
        let (mut pivoted, mut unpivoted) = (0, 0);
        for (i, &rk) in rk.iter().enumerate() {
            let b: Vec<f32> = fixture["b"].i(i).unwrap().to_vec1().unwrap();
            let expected: Vec<f32> = fixture["rho"].i(i).unwrap().to_vec1().unwrap();
            let (x0, x1) = solve_unic_2x2(rk, b[0], b[1]);
            assert_eq!(
                [x0.to_bits(), x1.to_bits()],
                [expected[0].to_bits(), expected[1].to_bits()],
                "system {i}: rk {rk}, b {b:?}: got [{x0}, {x1}], torch {expected:?}"
            );
            if rk.abs() > 1.0 {
                pivoted += 1
            } else {
                unpivoted += 1
            }
        }
        assert!(
            pivoted > 0 && unpivoted > 0,
            "the fixture covers both pivot orders"
        );
    }

    #[test]
    fn solve_unic_2x2_solves_both_pivot_orders() {
        for rk in [-0.5f64, -2.0, 0.25, 3.0] {
            let (b1, b2) = (0.3, -0.7);
            let (x0, x1) = solve_unic_2x2(rk, b1, b2);
            assert!((x0 + x1 - b1).abs() < 1e-15, "rk {rk}: row 1");
            assert!((rk * x0 + x1 - b2).abs() < 1e-15, "rk {rk}: row 2");
        }
    }
}
