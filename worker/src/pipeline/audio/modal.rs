//! Modal impact synthesis: an object struck rings as a sum of exponentially damped sinusoids
//! (its vibration modes). Frequencies and decay times depend on the material, amplitude on
//! the contact impulse (van den Doel & Pai, "The sounds of physical shapes", 1998).

use crate::pipeline::scene::Material;

/// One vibration mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Mode {
    /// Frequency, Hz.
    pub(crate) freq: f32,
    /// Time for the mode to decay by 60 dB, seconds.
    pub(crate) t60: f32,
    /// Relative amplitude.
    pub(crate) gain: f32,
}

/// How a material sounds when struck.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MaterialSound {
    pub(crate) modes: Vec<Mode>,
    /// Amplitude of the broadband contact click (harder materials click more).
    pub(crate) click: f32,
    /// Decay time constant of the click, seconds.
    pub(crate) click_tau: f32,
}

/// The modes of a material. Values are typical of small struck objects: rubber is low and
/// heavily damped (tens of ms), wood mid and short (~0.1-0.2 s), metal rings for a second or
/// more with inharmonic partials (free bar ratios 1 : 2.76 : 5.40), glass is high and clear.
/// The other materials have no modes of their own: they sound like a dull generic solid.
pub(crate) fn material_sound(material: Material) -> MaterialSound {
    let m = |freq, t60, gain| Mode { freq, t60, gain };
    match material {
        Material::Rubber => MaterialSound {
            modes: vec![
                m(180.0, 0.06, 1.0),
                m(410.0, 0.04, 0.4),
                m(760.0, 0.025, 0.15),
            ],
            click: 0.15,
            click_tau: 0.002,
        },
        Material::Wood => MaterialSound {
            modes: vec![
                m(520.0, 0.18, 1.0),
                m(1_240.0, 0.12, 0.5),
                m(2_300.0, 0.07, 0.25),
            ],
            click: 0.35,
            click_tau: 0.001,
        },
        Material::Metal => MaterialSound {
            modes: vec![
                m(880.0, 1.6, 1.0),
                m(2_429.0, 1.1, 0.6),
                m(4_752.0, 0.7, 0.35),
                m(7_850.0, 0.4, 0.15),
            ],
            click: 0.3,
            click_tau: 0.0005,
        },
        Material::Glass => MaterialSound {
            modes: vec![
                m(1_900.0, 0.9, 1.0),
                m(4_300.0, 0.6, 0.5),
                m(7_100.0, 0.35, 0.25),
            ],
            click: 0.25,
            click_tau: 0.0004,
        },
        Material::Plastic
        | Material::Stone
        | Material::Foam
        | Material::Ice
        | Material::Concrete
        | Material::Grass
        | Material::Sand
        | Material::Carpet
        | Material::Clay => MaterialSound {
            modes: vec![m(300.0, 0.1, 1.0), m(700.0, 0.07, 0.4)],
            click: 0.2,
            click_tau: 0.0015,
        },
    }
}

/// ln(1000): a decay of 60 dB is a factor 1000 in amplitude.
const LN_1000: f32 = 6.907_755;

/// Adds one impact, starting exactly at sample `onset`, to `out` (mono). `gain` scales the
/// whole impact; `noise` gives the click's samples (deterministic, from the caller's RNG).
pub(crate) fn add_impact(
    out: &mut [f32],
    onset: usize,
    sound: &MaterialSound,
    gain: f32,
    sample_rate: f32,
    noise: &mut dyn FnMut() -> f32,
) {
    if onset >= out.len() {
        return;
    }
    let longest = sound
        .modes
        .iter()
        .map(|m| m.t60)
        .fold(sound.click_tau * 7.0, f32::max);
    let len = ((longest * sample_rate) as usize).min(out.len() - onset);
    let norm: f32 = sound.modes.iter().map(|m| m.gain).sum::<f32>().max(1e-6);
    for (i, sample) in out[onset..onset + len].iter_mut().enumerate() {
        let t = i as f32 / sample_rate;
        let mut v = 0.0;
        for mode in &sound.modes {
            let decay = (-LN_1000 * t / mode.t60).exp();
            v += mode.gain / norm * decay * (std::f32::consts::TAU * mode.freq * t).sin();
        }
        v += sound.click * (-t / sound.click_tau).exp() * noise();
        *sample += gain * v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metal_rings_longer_and_glass_higher_than_rubber() {
        let rubber = material_sound(Material::Rubber);
        let metal = material_sound(Material::Metal);
        let glass = material_sound(Material::Glass);
        assert!(
            metal.modes[0].t60 > 10.0 * rubber.modes[0].t60,
            "metal must ring far longer than rubber"
        );
        assert!(
            glass.modes[0].freq > 5.0 * rubber.modes[0].freq,
            "glass must sound far higher than rubber"
        );
        assert_eq!(
            material_sound(Material::Plastic),
            material_sound(Material::Clay),
            "materials without modes of their own share a default"
        );
    }

    #[test]
    fn impact_starts_exactly_at_its_onset_sample() {
        let mut out = vec![0.0f32; 4_800];
        add_impact(
            &mut out,
            1_000,
            &material_sound(Material::Wood),
            0.5,
            48_000.0,
            &mut || 1.0,
        );
        assert!(
            out[..1_000].iter().all(|&s| s == 0.0),
            "nothing before the onset"
        );
        assert!(
            out[1_000] != 0.0,
            "the click sounds on the onset sample itself"
        );
    }
}
