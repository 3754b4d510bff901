//! The rules an open model family puts on a clip's shape. The coordinator adjusts a model
//! job's spec to them at submission (and records each change), the worker refuses an
//! assignment that breaks them: one rule, written once.
//!
//! Wan 2.1 (`wan2.1-t2v`): the VAE compresses time 4× causally (the first frame alone, then
//! groups of 4), so a clip has 4k+1 frames; it compresses space 8× and the transformer
//! patches latents 2×2, so width and height are multiples of 16.

/// Classifier-free guidance scale bounds of a model job, and the default (WanPipeline's);
/// 1 turns guidance off. The coordinator fills the default in; the worker checks again.
pub const GUIDANCE_SCALE_MIN: f64 = 1.0;
pub const GUIDANCE_SCALE_MAX: f64 = 20.0;
pub const GUIDANCE_SCALE_DEFAULT: f64 = 5.0;
/// A physics-guided job's strength when it names none (bounds 0..=1).
pub const GUIDE_STRENGTH_DEFAULT: f64 = 0.7;

/// The family name workers register for Wan 2.1 text-to-video folders.
pub const WAN21_T2V: &str = "wan2.1-t2v";

/// The shape rules of one model family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FamilyRules {
    /// Frame counts are `frame_group * k + 1`.
    pub frame_group: u32,
    /// Widths and heights are multiples of this.
    pub size_multiple: u32,
}

/// The rules of `family`, if it is one the farm knows.
pub fn rules_for(family: &str) -> Option<FamilyRules> {
    match family {
        WAN21_T2V => Some(FamilyRules {
            frame_group: 4,
            size_multiple: 16,
        }),
        _ => None,
    }
}

impl FamilyRules {
    /// The valid frame count nearest to `frames` (ties go up), at least 1.
    pub fn nearest_frames(&self, frames: u32) -> u32 {
        let g = self.frame_group;
        let k = (frames.saturating_sub(1) + g / 2) / g;
        g * k + 1
    }

    /// The valid side length nearest to `side` (ties go up), at least one multiple.
    pub fn nearest_side(&self, side: u32) -> u32 {
        let m = self.size_multiple;
        (((side + m / 2) / m) * m).max(m)
    }

    /// Whether a clip of this shape is valid for the family.
    pub fn accepts(&self, frames: u32, width: u32, height: u32) -> bool {
        frames >= 1
            && (frames - 1).is_multiple_of(self.frame_group)
            && width.is_multiple_of(self.size_multiple)
            && height.is_multiple_of(self.size_multiple)
            && width > 0
            && height > 0
    }

    /// Latent frames of a clip of `frames` frames with a VAE of temporal factor `factor`.
    pub fn latent_frames(frames: u32, factor: u32) -> u32 {
        (frames - 1) / factor + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan_frames_are_4k_plus_1_and_sides_multiples_of_16() {
        let r = rules_for(WAN21_T2V).expect("known family");
        assert_eq!(r.nearest_frames(48), 49);
        assert_eq!(r.nearest_frames(81), 81);
        assert_eq!(r.nearest_frames(83), 85, "a tie goes up");
        assert_eq!(r.nearest_frames(82), 81);
        assert_eq!(r.nearest_frames(1), 1);
        assert_eq!(r.nearest_frames(0), 1);
        assert_eq!(r.nearest_side(180), 176);
        assert_eq!(r.nearest_side(184), 192, "a tie goes up");
        assert_eq!(r.nearest_side(480), 480);
        assert_eq!(r.nearest_side(3), 16, "never zero");
        assert!(r.accepts(49, 320, 176));
        assert!(!r.accepts(48, 320, 176));
        assert!(!r.accepts(49, 320, 180));
        assert!(rules_for("unknown-family").is_none());
    }

    #[test]
    fn every_adjusted_shape_is_accepted() {
        let r = rules_for(WAN21_T2V).expect("known family");
        for n in 0..400 {
            let (f, s) = (r.nearest_frames(n), r.nearest_side(n));
            assert!(r.accepts(f, s, s), "{n} -> {f} frames, {s} px");
            assert!(f.abs_diff(n.max(1)) <= 2 && s.abs_diff(n) <= 8 || n < 8);
        }
    }
}
