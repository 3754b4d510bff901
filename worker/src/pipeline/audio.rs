//! Audio synthesis from contact events. (Scaffold, replaced by the pipeline work.)

use super::{plan::Plan, ClipSpec, PipelineError, Progress};

/// Mono or stereo PCM at 48 kHz.
pub struct AudioTrack {
    pub sample_rate: u32,
    pub channels: u16,
    /// Interleaved samples in -1..1.
    pub samples: Vec<f32>,
}

pub fn synthesize(
    spec: &ClipSpec,
    _plan: &Plan,
    progress: Progress<'_>,
) -> Result<AudioTrack, PipelineError> {
    progress(1, 1);
    Ok(AudioTrack {
        sample_rate: 48_000,
        channels: 1,
        samples: vec![0.0; (spec.duration_seconds * 48_000.0) as usize],
    })
}
