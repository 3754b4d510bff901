//! The ambience bed: quiet, low-passed noise ("room tone"), deterministic from the seed, so
//! the track is never digital silence between impacts.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// RMS level of the bed: about -46 dBFS, audible in quiet passages, far below an impact.
pub const AMBIENCE_RMS: f32 = 0.005;
/// Cut-off of the one-pole low-pass, Hz: a soft, dark room tone rather than hiss.
const CUTOFF_HZ: f32 = 800.0;
/// Stream of the seed's RNG reserved for the ambience (others may use other streams).
const RNG_STREAM: u64 = 0xA4B1;

/// `len` samples of ambience at `sample_rate`, the same for the same seed.
pub fn ambience(seed: u64, len: usize, sample_rate: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(RNG_STREAM);
    let alpha = 1.0 - (-std::f32::consts::TAU * CUTOFF_HZ / sample_rate).exp();
    let mut state = 0.0f32;
    let mut out: Vec<f32> = (0..len)
        .map(|_| {
            let white: f32 = rng.random_range(-1.0..1.0);
            state += alpha * (white - state);
            state
        })
        .collect();
    let rms = (out.iter().map(|s| s * s).sum::<f32>() / len.max(1) as f32).sqrt();
    if rms > 0.0 {
        let k = AMBIENCE_RMS / rms;
        out.iter_mut().for_each(|s| *s *= k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambience_is_quiet_and_deterministic_per_seed() {
        let a = ambience(7, 48_000, 48_000.0);
        assert_eq!(a, ambience(7, 48_000, 48_000.0), "same seed, same bed");
        assert_ne!(
            a,
            ambience(8, 48_000, 48_000.0),
            "another seed, another bed"
        );
        let rms = (a.iter().map(|s| s * s).sum::<f32>() / a.len() as f32).sqrt();
        assert!((rms - AMBIENCE_RMS).abs() < 1e-4, "rms {rms}");
    }
}
