//! MP4 muxing of the joined H.264 access units and the Opus packets, with `muxide` (pure
//! Rust, no dependencies beyond serde/thiserror with its `cli` feature off; it supports
//! H.264 Annex B input and Opus in MP4 with a `dOps` box, which is what we need).
//!
//! The H.264 access units go in unchanged: muxide only swaps each Annex B start code for a
//! 4-byte length (the `avc1` sample format), so the coded slices are the segments' bytes.
//! Provenance goes in a top-level `uuid` box appended after the muxer's output
//! ([`append_uuid_box`]); players ignore unknown top-level boxes.

use muxide::api::{AudioCodec, MuxerBuilder, VideoCodec};

use super::opus::{OpusStream, FRAME_SAMPLES, SAMPLE_RATE};
use crate::pipeline::PipelineError;

/// The pre-skip muxide writes in `dOps` (it is not configurable); our encoder's lookahead
/// must match it, which libopus's 312 samples at 48 kHz does.
pub const MUXIDE_PRE_SKIP: u16 = 312;

/// What goes into one MP4.
pub struct MuxInput<'a> {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Annex B access units in decode order; the first must be an IDR with SPS/PPS.
    pub video: Vec<(&'a [u8], bool)>,
    pub audio: Option<&'a OpusStream>,
}

fn mux_err(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Media(format!("mp4 mux: {e}"))
}

/// Writes the MP4 (moov first, "fast start").
pub fn mux(input: &MuxInput<'_>) -> Result<Vec<u8>, PipelineError> {
    let mut builder = MuxerBuilder::new(Vec::new())
        .video(
            VideoCodec::H264,
            input.width,
            input.height,
            f64::from(input.fps),
        )
        .with_fast_start(true);
    if let Some(audio) = input.audio {
        if audio.pre_skip != MUXIDE_PRE_SKIP {
            return Err(PipelineError::Media(format!(
                "opus pre-skip {} differs from the muxer's fixed {MUXIDE_PRE_SKIP}",
                audio.pre_skip
            )));
        }
        builder = builder.audio(AudioCodec::Opus, SAMPLE_RATE, audio.channels);
    }
    let mut muxer = builder.build().map_err(mux_err)?;
    for (index, (unit, is_idr)) in input.video.iter().enumerate() {
        let pts = index as f64 / f64::from(input.fps);
        muxer.write_video(pts, unit, *is_idr).map_err(mux_err)?;
    }
    if let Some(audio) = input.audio {
        for (index, packet) in audio.packets.iter().enumerate() {
            let pts = (index * FRAME_SAMPLES) as f64 / f64::from(SAMPLE_RATE);
            muxer.write_audio(pts, packet).map_err(mux_err)?;
        }
    }
    muxer.finish_in_place().map_err(mux_err)?;
    Ok(muxer.into_writer())
}

/// Appends a top-level `uuid` box (ISO/IEC 14496-12 §4.2) holding `payload`.
pub fn append_uuid_box(
    mp4: &mut Vec<u8>,
    uuid: &[u8; 16],
    payload: &[u8],
) -> Result<(), PipelineError> {
    let size = u32::try_from(8 + 16 + payload.len())
        .map_err(|_| PipelineError::Media("uuid box too large".into()))?;
    mp4.extend_from_slice(&size.to_be_bytes());
    mp4.extend_from_slice(b"uuid");
    mp4.extend_from_slice(uuid);
    mp4.extend_from_slice(payload);
    Ok(())
}
