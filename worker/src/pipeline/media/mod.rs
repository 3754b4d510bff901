//! Encoding and muxing: frames → H.264 chunks (VIDEO_SEGMENT), audio track → Opus packets
//! (AUDIO), chunks + packets → one MP4 with a signed manifest, a poster and manifest.json
//! (ASSEMBLE).
//!
//! - [`h264`]: OpenH264 (built from source) with one fixed-QP configuration, so every GOP
//!   ([`GOP_FRAMES`]) starts on an IDR with identical SPS/PPS and segments join without
//!   re-encoding, byte for byte the same whatever the segmentation.
//! - [`opus`]: Opus via `unsafe-libopus` (libopus transpiled to Rust: no C library, no cmake;
//!   see its module doc for why), and the AUDIO output format.
//! - [`mux`]: MP4 writing with `muxide` (pure Rust, H.264 + Opus), plus our `uuid` box.
//! - [`demux`]: a minimal MP4 reader for verification.
//! - [`poster`]: the PNG poster.
//!
//! Build needs: a C++ compiler (`g++`, for OpenH264's sources; `nasm` is used when present
//! but optional). No system media library. Tests also need the `ffmpeg`/`ffprobe` binaries.

pub mod demux;
#[cfg(test)]
pub(crate) mod ffmpeg_tests;
pub mod h264;
pub mod mux;
pub mod opus;
pub mod poster;

use std::ops::Range;

use sha2::{Digest, Sha256};

use super::provenance::{manifest, watermark};
use super::{audio::AudioTrack, plan::Plan, Artifact, ClipSpec, Frame, PipelineError, TaskContext};

/// Frames per GOP. An IDR starts every clip frame whose index is a multiple of
/// `GOP_FRAMES`, and each GOP is coded by a fresh encoder, so a GOP's bytes depend on its
/// frames only, never on how the clip was split into segments (shard invariance of the
/// video file itself, not just of its pictures). 12 is the coordinator planner's default
/// segment length (`PlannerConfig::segment_frames`), so GOPs and segments coincide in the
/// usual case; an IDR every 0.5 s at 24 fps also keeps seeking cheap.
pub const GOP_FRAMES: u32 = 12;

/// The frames a VIDEO_SEGMENT task asked for `frames` renders and encodes: the GOPs that
/// start inside `frames`. Over the segments of a clip (consecutive ranges covering
/// `0..clip_frames`) these are again consecutive and cover every frame exactly once; a
/// segment in which no GOP starts owns nothing and yields an empty chunk.
pub fn owned_frames(frames: Range<u32>, clip_frames: u32) -> Range<u32> {
    let gop_start_at_or_after = |f: u32| (f.div_ceil(GOP_FRAMES) * GOP_FRAMES).min(clip_frames);
    gop_start_at_or_after(frames.start)..gop_start_at_or_after(frames.end)
}

/// VIDEO_SEGMENT's output: the frames as one H.264 Annex B chunk, one IDR-led GOP per
/// [`GOP_FRAMES`] frames. `frames` must start on a GOP boundary of the clip (see
/// [`owned_frames`]) for the chunk to equal the same frames of a one-segment render.
pub fn encode_segment(spec: &ClipSpec, frames: &[Frame]) -> Result<Vec<u8>, PipelineError> {
    if let Some(f) = frames
        .iter()
        .find(|f| f.width != spec.width || f.height != spec.height)
    {
        return Err(PipelineError::InvalidInput(format!(
            "frame is {}x{}, spec says {}x{}",
            f.width, f.height, spec.width, spec.height
        )));
    }
    let mut chunk = Vec::new();
    for gop in frames.chunks(GOP_FRAMES as usize) {
        chunk.extend(h264::encode_frames(gop)?);
    }
    Ok(chunk)
}

/// AUDIO's output: the track encoded as Opus packets ([`opus::OpusStream`] bytes).
pub fn encode_audio(_spec: &ClipSpec, track: &AudioTrack) -> Result<Vec<u8>, PipelineError> {
    Ok(opus::encode(track)?.to_bytes())
}

/// ASSEMBLE: joins the segment chunks (no re-encoding) and the audio into video.mp4 with an
/// embedded signed manifest, plus poster.png (the middle frame) and manifest.json.
pub fn assemble(
    spec: &ClipSpec,
    ctx: &TaskContext,
    _plan: &Plan,
    segments: &[Vec<u8>],
    audio: Option<&[u8]>,
    open_model: Option<&manifest::ModelProvenance>,
) -> Result<Vec<Artifact>, PipelineError> {
    let mut units = Vec::new();
    let mut segment_starts = Vec::with_capacity(segments.len());
    let mut parameter_sets: Option<Vec<&[u8]>> = None;
    for (index, chunk) in segments.iter().enumerate() {
        if chunk.is_empty() {
            continue; // a segment that owned no GOP (see `owned_frames`)
        }
        let chunk_units = h264::access_units(chunk)
            .map_err(|e| PipelineError::InvalidInput(format!("segment {index}: {e}")))?;
        if !chunk_units.first().is_some_and(|u| u.is_idr) {
            return Err(PipelineError::InvalidInput(format!(
                "segment {index} does not start on an IDR"
            )));
        }
        let sets: Vec<&[u8]> = h264::nal_units(chunk_units[0].bytes)
            .into_iter()
            .filter(|n| n.nal_type == 7 || n.nal_type == 8)
            .map(|n| n.payload)
            .collect();
        match &parameter_sets {
            None => parameter_sets = Some(sets),
            Some(first) if *first != sets => {
                return Err(PipelineError::InvalidInput(format!(
                    "segment {index} was encoded with other parameters (SPS/PPS differ)"
                )))
            }
            Some(_) => {}
        }
        segment_starts.push(units.len());
        units.extend(chunk_units.into_iter().map(|u| (u.bytes, u.is_idr)));
    }
    if units.len() != spec.frame_count() as usize {
        return Err(PipelineError::InvalidInput(format!(
            "segments hold {} frames, the clip has {}",
            units.len(),
            spec.frame_count()
        )));
    }
    let stream = match (spec.audio, audio) {
        (true, Some(bytes)) => Some(opus::OpusStream::from_bytes(bytes)?),
        (true, None) => {
            return Err(PipelineError::InvalidInput(
                "spec asks for audio but no track was given".into(),
            ))
        }
        (false, _) => None,
    };

    let mut mp4 = mux::mux(&mux::MuxInput {
        width: spec.width,
        height: spec.height,
        fps: spec.fps,
        video: units.clone(),
        audio: stream.as_ref(),
    })?;
    let signed = manifest::sign(
        manifest::Manifest {
            format: manifest::FORMAT.into(),
            ai_generated: true,
            generator: manifest::GENERATOR.into(),
            model: open_model.map_or(manifest::MODEL_NAME.into(), |m| m.name.clone()),
            job_id: ctx.job_id.clone(),
            spec_sha256: manifest::spec_sha256(spec),
            content_sha256: mdat_sha256(&mp4)?,
            width: spec.width,
            height: spec.height,
            fps: spec.fps,
            frames: spec.frame_count(),
            audio: stream.is_some(),
            watermark: watermark::SCHEME.into(),
            open_model: open_model.cloned(),
        },
        &ctx.farm_secret,
    );
    mux::append_uuid_box(&mut mp4, &manifest::MANIFEST_UUID, &signed.to_json())?;

    let poster = middle_frame(&units, &segment_starts)?;
    let manifest_json = serde_json::to_vec_pretty(&signed).expect("SignedManifest is plain data");
    Ok(vec![
        Artifact {
            kind: "video",
            file_name: "video.mp4".into(),
            bytes: mp4,
        },
        Artifact {
            kind: "poster",
            file_name: "poster.png".into(),
            bytes: poster::encode_png(&poster)?,
        },
        Artifact {
            kind: "manifest",
            file_name: "manifest.json".into(),
            bytes: manifest_json,
        },
    ])
}

/// SHA-256 (hex) of the payload of the file's `mdat` box(es), in file order.
pub fn mdat_sha256(mp4: &[u8]) -> Result<String, PipelineError> {
    let mut hasher = Sha256::new();
    let mut found = false;
    for b in demux::boxes(mp4)?
        .into_iter()
        .filter(|b| &b.kind == b"mdat")
    {
        hasher.update(&mp4[b.start..b.end]);
        found = true;
    }
    if !found {
        return Err(PipelineError::Media("mp4 has no mdat".into()));
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Decodes the clip's middle frame: from the IDR that starts its segment up to it.
fn middle_frame(units: &[(&[u8], bool)], segment_starts: &[usize]) -> Result<Frame, PipelineError> {
    let middle = units.len() / 2;
    let start = segment_starts
        .iter()
        .copied()
        .filter(|&s| s <= middle)
        .max()
        .unwrap_or(0);
    let frames = h264::decode_annex_b(units[start..=middle].iter().map(|u| u.0))?;
    frames
        .into_iter()
        .last()
        .ok_or_else(|| PipelineError::Media("poster frame did not decode".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn owned_frames_of_any_segmentation_cover_every_frame_exactly_once(
            clip_frames in 1u32..200,
            cuts in proptest::collection::btree_set(1u32..200, 0..12),
        ) {
            let mut bounds: Vec<u32> = std::iter::once(0)
                .chain(cuts.into_iter().filter(|&c| c < clip_frames))
                .collect();
            bounds.push(clip_frames);
            let mut next = 0;
            for w in bounds.windows(2) {
                let owned = owned_frames(w[0]..w[1], clip_frames);
                prop_assert_eq!(owned.start, next, "segment {:?} starts where the last ended", w);
                prop_assert!(owned.start.is_multiple_of(GOP_FRAMES) || owned.is_empty(), "{:?} starts on a GOP", owned);
                next = owned.end;
            }
            prop_assert_eq!(next, clip_frames, "the last segment ends the clip");
        }
    }
}
