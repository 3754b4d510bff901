//! Encoding and muxing. (Scaffold, replaced by the pipeline work.)

use super::{audio::AudioTrack, plan::Plan, Artifact, ClipSpec, Frame, PipelineError, TaskContext};

pub fn encode_segment(_spec: &ClipSpec, frames: &[Frame]) -> Result<Vec<u8>, PipelineError> {
    Ok(frames.iter().flat_map(|f| f.rgb.iter().copied()).collect())
}

pub fn encode_audio(_spec: &ClipSpec, track: &AudioTrack) -> Result<Vec<u8>, PipelineError> {
    Ok(track.samples.iter().flat_map(|s| s.to_le_bytes()).collect())
}

pub fn assemble(
    _spec: &ClipSpec,
    _ctx: &TaskContext,
    _plan: &Plan,
    segments: &[Vec<u8>],
    _audio: Option<&[u8]>,
) -> Result<Vec<Artifact>, PipelineError> {
    Ok(vec![Artifact {
        kind: "video",
        file_name: "video.raw".into(),
        bytes: segments.concat(),
    }])
}
