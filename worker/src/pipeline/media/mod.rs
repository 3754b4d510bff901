//! Encoding and muxing: frames → H.264 chunks (VIDEO_SEGMENT), audio track → Opus packets
//! (AUDIO), chunks + packets → one MP4 with a signed manifest, a poster and manifest.json
//! (ASSEMBLE).
//!
//! - [`h264`]: OpenH264 (built from source) with one fixed-QP configuration, so every segment
//!   starts on an IDR with identical SPS/PPS and segments join without re-encoding.
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
mod ffmpeg_tests;
pub mod h264;
pub mod mux;
pub mod opus;
pub mod poster;

use sha2::{Digest, Sha256};

use super::provenance::{manifest, watermark};
use super::{audio::AudioTrack, plan::Plan, Artifact, ClipSpec, Frame, PipelineError, TaskContext};

/// VIDEO_SEGMENT's output: the frames as one H.264 Annex B chunk starting on an IDR.
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
    h264::encode_frames(frames)
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
) -> Result<Vec<Artifact>, PipelineError> {
    let mut units = Vec::new();
    let mut segment_starts = Vec::with_capacity(segments.len());
    let mut parameter_sets: Option<Vec<&[u8]>> = None;
    for (index, chunk) in segments.iter().enumerate() {
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
            model: manifest::MODEL_NAME.into(),
            job_id: ctx.job_id.clone(),
            spec_sha256: manifest::spec_sha256(spec),
            content_sha256: mdat_sha256(&mp4)?,
            width: spec.width,
            height: spec.height,
            fps: spec.fps,
            frames: spec.frame_count(),
            audio: stream.is_some(),
            watermark: watermark::SCHEME.into(),
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
