//! Audio synthesis from the plan's contact events: what AUDIO runs before Opus encoding.
//!
//! Each [`ContactEvent`] becomes one modal impact ([`modal`]): the struck body's material sets
//! the modes (frequency, decay), what it hit adds its own, quieter ring, and the impulse sets
//! the loudness. Onsets land on sample `round(time_s * 48000)` exactly, so sound and picture
//! agree by construction. Under everything lies a quiet ambience bed ([`ambience`]),
//! deterministic from the seed. The mix is then peak-limited so no sample exceeds
//! [`PEAK_LIMIT`].

pub(crate) mod ambience;
pub(crate) mod modal;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::plan::{ContactEvent, Plan};
use super::{ClipSpec, PipelineError, Progress};

/// Output rate: Opus's native rate.
pub(crate) const SAMPLE_RATE: u32 = 48_000;
/// Highest allowed |sample|: 1 dB below full scale, headroom for the codec's overshoot.
pub(crate) const PEAK_LIMIT: f32 = 0.89;
/// Impulse (N·s) that plays at unit gain: a 60 g ball dropped from about 1 m
/// (m·Δv ≈ 0.06 kg × 2 × 4.4 m/s ≈ 0.5 N·s).
const REFERENCE_IMPULSE: f64 = 0.5;
/// Loudness grows with impulse as impulse^0.6: perceived loudness is compressive, and a raw
/// linear law makes small bounces inaudible next to the first hit.
const LOUDNESS_EXPONENT: f64 = 0.6;
/// Gain of the impact at unit impulse, before limiting.
const IMPACT_GAIN: f32 = 0.5;
/// Relative level of the surface's own ring (the floor, the other body).
const OTHER_BODY_GAIN: f32 = 0.35;
/// Stream of the seed's RNG used for the impact clicks.
const CLICK_RNG_STREAM: u64 = 0xC11C;

/// Mono or stereo PCM at 48 kHz.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioTrack {
    pub sample_rate: u32,
    pub channels: u16,
    /// Interleaved samples in -1..1.
    pub samples: Vec<f32>,
    /// Sample index at which each contact's impact starts, in the plan's order (events
    /// outside the clip are left out).
    pub onsets: Vec<usize>,
}

/// The sample at which an event starting at `time_s` begins.
pub(crate) fn onset_sample(time_s: f64) -> usize {
    (time_s * f64::from(SAMPLE_RATE)).round() as usize
}

/// Gain of an impact of `impulse` N·s.
fn impulse_gain(impulse: f64) -> f32 {
    (impulse.max(0.0) / REFERENCE_IMPULSE).powf(LOUDNESS_EXPONENT) as f32 * IMPACT_GAIN
}

/// Synthesizes the clip's soundtrack (mono, 48 kHz, `round(duration * 48000)` samples).
/// Progress is reported in events.
pub(crate) fn synthesize(
    spec: &ClipSpec,
    plan: &Plan,
    progress: Progress<'_>,
) -> Result<AudioTrack, PipelineError> {
    if !(spec.duration_seconds.is_finite() && spec.duration_seconds > 0.0) {
        return Err(PipelineError::InvalidInput(format!(
            "duration {} s",
            spec.duration_seconds
        )));
    }
    let len = onset_sample(spec.duration_seconds);
    let rate = SAMPLE_RATE as f32;
    let mut samples = ambience::ambience(spec.seed, len, rate);
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    rng.set_stream(CLICK_RNG_STREAM);
    let mut noise = move || rng.random_range(-1.0f32..1.0);
    let total = plan.contacts.len() as u64;
    let mut onsets = Vec::with_capacity(plan.contacts.len());
    for (done, event) in plan.contacts.iter().enumerate() {
        if let Some(onset) = render_event(&mut samples, event, rate, &mut noise)? {
            onsets.push(onset);
        }
        progress(done as u64 + 1, total.max(1));
    }
    if total == 0 {
        progress(1, 1);
    }
    limit_peak(&mut samples);
    Ok(AudioTrack {
        sample_rate: SAMPLE_RATE,
        channels: 1,
        samples,
        onsets,
    })
}

fn render_event(
    out: &mut [f32],
    event: &ContactEvent,
    rate: f32,
    noise: &mut dyn FnMut() -> f32,
) -> Result<Option<usize>, PipelineError> {
    if !event.time_s.is_finite() || event.time_s < 0.0 || !event.impulse.is_finite() {
        return Err(PipelineError::InvalidInput(format!(
            "contact at {} s with impulse {}",
            event.time_s, event.impulse
        )));
    }
    let onset = onset_sample(event.time_s);
    if onset >= out.len() {
        return Ok(None);
    }
    let gain = impulse_gain(event.impulse);
    modal::add_impact(
        out,
        onset,
        &modal::material_sound(event.material),
        gain,
        rate,
        noise,
    );
    modal::add_impact(
        out,
        onset,
        &modal::material_sound(event.other_material),
        gain * OTHER_BODY_GAIN,
        rate,
        noise,
    );
    Ok(Some(onset))
}

/// Scales the whole track down if its peak exceeds [`PEAK_LIMIT`] (one gain for the whole
/// track: no pumping, and relative loudness between impacts is kept).
fn limit_peak(samples: &mut [f32]) {
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    if peak > PEAK_LIMIT {
        let k = PEAK_LIMIT / peak;
        samples.iter_mut().for_each(|s| *s *= k);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pipeline::scene::Material;
    use crate::pipeline::Sampler;

    pub(crate) fn spec(duration: f64, audio: bool) -> ClipSpec {
        ClipSpec {
            prompt: "a red rubber ball bouncing on a wooden floor".into(),
            duration_seconds: duration,
            fps: 24,
            width: 160,
            height: 96,
            seed: 42,
            steps: 4,
            sampler: Sampler::Ddim,
            audio,
        }
    }

    pub(crate) fn contact(time_s: f64, impulse: f64, material: Material) -> ContactEvent {
        ContactEvent {
            time_s,
            body_a: 0,
            body_b: None,
            impulse,
            material,
            other_material: Material::Wood,
        }
    }

    /// A real plan of `spec` whose contact events are replaced by `contacts`.
    pub(crate) fn plan(spec: &ClipSpec, contacts: Vec<ContactEvent>) -> Plan {
        let mut plan = crate::pipeline::plan::make_plan(spec).expect("plan of a valid spec");
        plan.contacts = contacts;
        plan
    }

    #[test]
    fn impacts_start_on_their_contact_samples() {
        let s = spec(1.0, true);
        let p = plan(
            &s,
            vec![
                contact(0.25, 0.5, Material::Rubber),
                contact(0.6104, 0.2, Material::Metal),
            ],
        );
        let track = synthesize(&s, &p, &mut |_, _| {}).expect("synthesize");
        assert_eq!(
            track.onsets,
            vec![12_000, 29_299],
            "onset = round(time * 48000)"
        );
        let quiet = synthesize(&s, &plan(&s, vec![]), &mut |_, _| {}).expect("synthesize");
        // Before the first onset only the (scaled) ambience plays; at it, the impact starts.
        let k = track.samples[100] / quiet.samples[100];
        assert!(
            (track.samples[11_999] - k * quiet.samples[11_999]).abs() < 1e-6,
            "silent before the onset"
        );
        assert!(
            (track.samples[12_000] - k * quiet.samples[12_000]).abs() > 1e-3,
            "sounding at the onset"
        );
    }

    #[test]
    fn loud_impacts_are_limited_below_full_scale() {
        let s = spec(1.0, true);
        let p = plan(
            &s,
            (0..5)
                .map(|i| contact(0.1 + 0.01 * f64::from(i), 50.0, Material::Metal))
                .collect(),
        );
        let track = synthesize(&s, &p, &mut |_, _| {}).expect("synthesize");
        let peak = track.samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak <= PEAK_LIMIT + 1e-6, "peak {peak} must not clip");
    }

    #[test]
    fn louder_impulse_gives_louder_impact() {
        assert!(impulse_gain(2.0) > impulse_gain(0.5) && impulse_gain(0.5) > impulse_gain(0.1));
        assert_eq!(
            impulse_gain(-1.0),
            0.0,
            "a negative impulse is silent, not inverted"
        );
    }

    #[test]
    fn synthesis_is_deterministic_and_reports_progress() {
        let s = spec(0.5, true);
        let p = plan(
            &s,
            vec![
                contact(0.1, 0.4, Material::Glass),
                contact(0.3, 0.4, Material::Wood),
                contact(9.0, 1.0, Material::Wood),
            ],
        );
        let mut calls = Vec::new();
        let a = synthesize(&s, &p, &mut |d, t| calls.push((d, t))).expect("synthesize");
        let b = synthesize(&s, &p, &mut |_, _| {}).expect("synthesize");
        assert_eq!(a, b);
        assert_eq!(calls, vec![(1, 3), (2, 3), (3, 3)]);
        assert_eq!(a.onsets.len(), 2, "the event after the end is dropped");
    }

    #[test]
    fn non_finite_contact_is_rejected() {
        let s = spec(0.5, true);
        let p = plan(&s, vec![contact(f64::NAN, 0.4, Material::Glass)]);
        assert!(matches!(
            synthesize(&s, &p, &mut |_, _| {}),
            Err(PipelineError::InvalidInput(_))
        ));
    }
}
