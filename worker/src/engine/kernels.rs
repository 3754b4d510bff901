//! The per-element math every engine implements, as plain scalar functions.
//!
//! [`super::cpu::CpuEngine`] maps these over its buffers; a device engine ports each one to a
//! kernel line for line (integer hashing is exact everywhere; the transcendental functions in
//! [`gaussian`] are where engines may differ, by a few ulps).

/// splitmix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer whose outputs
/// pass BigCrush when fed a counter; used here as a counter-based random number generator.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a sequence of words into one 64-bit value (order matters).
#[inline]
pub fn hash_words(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(0x5EED_0F5C_E4E5_u64, |acc, &w| mix64(acc ^ mix64(w)))
}

/// Bits of each uniform drawn from a hash: 24 bits are exact in an f32 mantissa.
const UNIFORM_BITS: u32 = 24;
/// `2^-24`: scales a 24-bit integer to `[0, 1)`.
const UNIFORM_SCALE: f32 = 1.0 / (1u32 << UNIFORM_BITS) as f32;

/// A standard normal value from one 64-bit hash: Box–Muller on two 24-bit uniforms,
/// `u1 ∈ (0, 1]` (never 0, so the logarithm is finite) and `u2 ∈ [0, 1)`.
#[inline]
pub fn gaussian(h: u64) -> f32 {
    let u1 = (((h >> 40) as u32) + 1) as f32 * UNIFORM_SCALE;
    let u2 = ((h & 0xFF_FFFF) as u32) as f32 * UNIFORM_SCALE;
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Domain separators so the static and per-frame noise streams never share a hash input.
const STATIC_STREAM: u64 = 0x5747_4943;
const FRAME_STREAM: u64 = 0x4652_414D;

/// Initial noise of one element, standard normal: `w·s + sqrt(1−w²)·f`, where `s` is the
/// static field value of the surface point (keyed by `(seed, noise_key, channel)`) and `f`
/// the per-frame value (keyed by `(seed, frame, pixel, channel)`), both standard normal and
/// independent. All keys are global, so the value does not depend on the segment.
#[inline]
pub fn initial_noise(
    seed: u64,
    frame: u32,
    pixel: u32,
    channel: u32,
    noise_key: u64,
    static_weight: f32,
) -> f32 {
    let s = gaussian(hash_words(&[
        STATIC_STREAM,
        seed,
        noise_key,
        channel as u64,
    ]));
    let f = gaussian(hash_words(&[
        FRAME_STREAM,
        seed,
        frame as u64,
        ((pixel as u64) << 2) | channel as u64,
    ]));
    static_weight * s + (1.0 - static_weight * static_weight).max(0.0).sqrt() * f
}

/// The denoiser: exact posterior mean `E[x0 | x]` for the prior `x0 ~ N(mean, var)` observed
/// as `x = x0 + sigma·ε`, `ε ~ N(0, 1)`: `mean + var / (var + sigma²) · (x − mean)`.
#[inline]
pub fn posterior_mean(x: f32, mean: f32, var: f32, sigma: f32) -> f32 {
    mean + var / (var + sigma * sigma) * (x - mean)
}

/// One sampler update of one element: `a·x + b·d + c·d_prev`.
#[inline]
pub fn combine(x: f32, d: f32, d_prev: f32, update: super::Update) -> f32 {
    update.x_coef * x + update.denoised_coef * d + update.previous_coef * d_prev
}

/// Data units (`[-1, 1]`) to an 8-bit channel, clamped, rounded to nearest.
#[inline]
pub fn to_u8(v: f32) -> u8 {
    let unit = ((v + 1.0) * 0.5).clamp(0.0, 1.0);
    (unit * 255.0 + 0.5) as u8
}

/// An 8-bit channel in `[0, 1]` to data units.
#[inline]
pub fn to_data(unit: f32) -> f32 {
    unit * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_from_hashes_has_unit_moments() {
        let n = 200_000u64;
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for i in 0..n {
            let g = gaussian(mix64(i)) as f64;
            s1 += g;
            s2 += g * g;
        }
        let mean = s1 / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(
            mean.abs() < 0.01,
            "mean of hashed normals should be ~0, got {mean}"
        );
        assert!((var - 1.0).abs() < 0.02, "variance should be ~1, got {var}");
    }

    #[test]
    fn initial_noise_depends_only_on_its_keys() {
        let a = initial_noise(7, 3, 11, 2, 99, 0.9);
        let b = initial_noise(7, 3, 11, 2, 99, 0.9);
        let c = initial_noise(7, 4, 11, 2, 99, 0.9);
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "same keys must give the same noise"
        );
        assert_ne!(a, c, "another frame must give another per-frame part");
    }

    #[test]
    fn posterior_mean_limits_are_identity_and_prior_mean() {
        assert!(
            (posterior_mean(0.3, 0.1, 0.01, 0.0) - 0.3).abs() < 1e-6,
            "no noise: D(x) = x"
        );
        assert!(
            (posterior_mean(50.0, 0.1, 0.01, 1e4) - 0.1).abs() < 1e-4,
            "huge noise: D(x) = mean"
        );
    }

    #[test]
    fn to_u8_clamps_and_rounds() {
        assert_eq!(to_u8(-3.0), 0, "below -1 clamps to 0");
        assert_eq!(to_u8(3.0), 255, "above 1 clamps to 255");
        assert_eq!(
            to_u8(to_data(128.0 / 255.0)),
            128,
            "round trip of a mid value"
        );
    }
}
