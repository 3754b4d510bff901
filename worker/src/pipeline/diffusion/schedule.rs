//! Noise levels and sampler updates: the algorithm half of the diffusion, as scalars.
//!
//! Everything is written in the variance-exploding (EDM, Karras et al. 2022) variable
//! `x = x0 + σ·ε`. A VP process `x_vp = α·x0 + s·ε` is the same process with `x = x_vp / α`,
//! `σ = s / α`, so DDIM and DPM-Solver++ are exactly their published forms.
//!
//! Grids (`steps` denoiser evaluations at `σ_0 > … > σ_{n−1}`, then `σ_n = 0`):
//! * DDIM: uniform in log-SNR, `λ = −ln σ` (the "logSNR" time steps of Lu et al. 2022). A
//!   grid uniform in the VP cosine schedule's time (Nichol & Dhariwal 2021) was tried first:
//!   it is uniform in `atan σ`, i.e. linear in `σ` near 0, and with σ_min = 0.002 its last
//!   steps jump by 17× in σ; the prior's variance then came out 21 % low at 50 steps.
//! * Euler and DPM-Solver++(2M): Karras' ρ = 7 grid
//!   `σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`.
//!
//! Updates, as `x ← a·x + b·D_i + c·D_{i−1}` with `D_i = D(x, σ_i)` the denoiser output:
//! * DDIM (η = 0): `x ← D + (σ_{i+1}/σ_i)(x − D)`. Euler on the probability-flow ODE
//!   `dx/dσ = (x − D)/σ` gives the same formula (Karras 2022, §3), so DDIM and Euler differ
//!   only by their grid.
//! * DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), with `λ = −ln σ`, `h_i = λ_{i+1} − λ_i`,
//!   `r = h_{i−1}/h_i`: `x ← (σ_{i+1}/σ_i)·x + (1 − σ_{i+1}/σ_i)·((1 + 1/2r)·D_i − (1/2r)·D_{i−1})`,
//!   first order on the first step and on the last (to `σ = 0`, where every sampler returns
//!   `D`).

use crate::engine::Update;
use crate::pipeline::Sampler;

/// Largest noise level, data units: EDM's σ_max (Karras et al. 2022, Table 1), 80× the
/// data's spread, so `N(0, σ_max²)` is indistinguishable from the true `N(mean, σ_max² + var)`.
pub const SIGMA_MAX: f64 = 80.0;
/// Smallest non-zero noise level: EDM's σ_min, far below one 8-bit step (2/255 = 0.0078).
pub const SIGMA_MIN: f64 = 0.002;
/// Karras grid exponent ρ (Karras et al. 2022, eq. 5).
pub const RHO: f64 = 7.0;

/// The `steps + 1` noise levels of a sampler, decreasing, the last one 0.
pub fn sigmas(sampler: Sampler, steps: u32) -> Vec<f64> {
    let n = steps.max(1) as usize;
    let frac = |i: usize| {
        if n == 1 {
            0.0
        } else {
            i as f64 / (n - 1) as f64
        }
    };
    let mut out: Vec<f64> = match sampler {
        Sampler::Ddim => {
            let (hi, lo) = (SIGMA_MAX.ln(), SIGMA_MIN.ln());
            (0..n).map(|i| (hi + frac(i) * (lo - hi)).exp()).collect()
        }
        // Flow-matching samplers belong to open models: `agent::executor::decode` refuses a
        // reference task that names one, so they never reach this grid.
        Sampler::Euler | Sampler::DpmSolverPp2m | Sampler::FlowEuler | Sampler::UniPc => {
            let (hi, lo) = (SIGMA_MAX.powf(1.0 / RHO), SIGMA_MIN.powf(1.0 / RHO));
            (0..n)
                .map(|i| (hi + frac(i) * (lo - hi)).powf(RHO))
                .collect()
        }
    };
    out.push(0.0);
    out
}

/// The update after each denoiser evaluation, one per step (`sigmas.len() − 1` of them).
pub fn updates(sampler: Sampler, sigmas: &[f64]) -> Vec<Update> {
    let mut out = Vec::with_capacity(sigmas.len().saturating_sub(1));
    let mut h_prev: Option<f64> = None;
    for w in sigmas.windows(2) {
        let (s, s_next) = (w[0], w[1]);
        let ratio = s_next / s;
        let first_order = Update {
            x_coef: ratio as f32,
            denoised_coef: (1.0 - ratio) as f32,
            previous_coef: 0.0,
        };
        let update = match sampler {
            Sampler::Ddim | Sampler::Euler | Sampler::FlowEuler | Sampler::UniPc => first_order,
            Sampler::DpmSolverPp2m => {
                if s_next == 0.0 {
                    first_order
                } else {
                    let h = (s / s_next).ln();
                    let u = match h_prev {
                        None => first_order,
                        Some(hp) => {
                            let r = hp / h;
                            let k = 1.0 / (2.0 * r);
                            Update {
                                x_coef: ratio as f32,
                                denoised_coef: ((1.0 - ratio) * (1.0 + k)) as f32,
                                previous_coef: (-(1.0 - ratio) * k) as f32,
                            }
                        }
                    };
                    h_prev = Some(h);
                    u
                }
            }
        };
        out.push(update);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_start_at_sigma_max_and_end_at_zero() {
        for sampler in [Sampler::Ddim, Sampler::Euler, Sampler::DpmSolverPp2m] {
            for steps in [1, 2, 20] {
                let s = sigmas(sampler, steps);
                assert_eq!(
                    s.len(),
                    steps as usize + 1,
                    "{sampler:?}/{steps}: one level per step plus 0"
                );
                assert!(
                    (s[0] - SIGMA_MAX).abs() < 1e-9,
                    "{sampler:?}: starts at σ_max"
                );
                assert_eq!(*s.last().expect("non-empty"), 0.0, "{sampler:?}: ends at 0");
                assert!(
                    s.windows(2).all(|w| w[0] > w[1]),
                    "{sampler:?}: strictly decreasing"
                );
                if steps > 1 {
                    assert!(
                        (s[steps as usize - 1] - SIGMA_MIN).abs() < 1e-9,
                        "{sampler:?}: last level σ_min"
                    );
                }
            }
        }
    }

    #[test]
    fn every_update_is_an_affine_combination() {
        // a + b + c = 1 keeps a constant image constant: D = x = const is a fixed point.
        for sampler in [Sampler::Ddim, Sampler::Euler, Sampler::DpmSolverPp2m] {
            for u in updates(sampler, &sigmas(sampler, 10)) {
                let sum = u.x_coef + u.denoised_coef + u.previous_coef;
                assert!(
                    (sum - 1.0).abs() < 1e-5,
                    "{sampler:?}: coefficients sum to 1, got {sum}"
                );
            }
        }
    }
}
