//! `verify`: decides whether an MP4 came from this farm, from its signed manifest when it is
//! still there and from the watermark in its pictures in any case (re-encoded or stripped
//! copies lose the manifest but keep the mark).
//!
//! Pictures are decoded in process by OpenH264 ([`h264::DECODER`]): it reads what our
//! farm writes and what ordinary re-encoders write (x264's High profile with B-frames and
//! CABAC, 4:2:0 8-bit). It does not read 4:2:2, 4:4:4 or 10-bit H.264; for those, verify
//! says so in [`Verification::video_error`] instead of quietly answering "not ours", and
//! does not fall back to any other decoder: the caller can convert such a file with
//! ffmpeg (`-pix_fmt yuv420p -c:v libx264`) and verify the result.

use super::{manifest, watermark};
use crate::pipeline::media::{demux, h264, mdat_sha256};

/// The answer of [`verify`].
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    /// True when the watermark or a valid manifest of this farm was found.
    pub ours: bool,
    /// The job id, from the watermark (or from the manifest when the mark is not found).
    pub job_id: Option<String>,
    /// Watermark confidence in 0..=1 (0 when none was found).
    pub watermark_confidence: f64,
    /// True when the file carries a manifest signed by this farm that matches its content.
    pub manifest_valid: bool,
    /// The decoder that read the pictures ([`h264::DECODER`]); there is no fallback.
    pub decoder: &'static str,
    /// Samples in the file's H.264 track (0 when it has none).
    pub frames_in_track: usize,
    /// Pictures the decoder returned; fewer than `frames_in_track` means part of the video
    /// was not read.
    pub frames_decoded: usize,
    /// Why the pictures could not be read (no H.264 track, a profile the in-process decoder
    /// does not support, ...); the watermark could then not be checked.
    pub video_error: Option<String>,
}

/// Checks `data` (an MP4) against `farm_secret`. Never fails: unreadable input is simply
/// not ours.
pub fn verify(data: &[u8], farm_secret: &[u8]) -> Verification {
    let signed = embedded_manifest(data);
    let manifest_valid = signed.as_ref().is_some_and(|m| {
        m.signature_valid(farm_secret)
            && mdat_sha256(data).is_ok_and(|h| h == m.manifest.content_sha256)
    });
    let (frames_in_track, decoded) = match demux::video_track(data) {
        Ok(track) => (
            track.samples.len(),
            h264::decode_annex_b(track.samples.iter().map(Vec::as_slice))
                .map_err(|e| unsupported_profile(&track.samples).unwrap_or(e.to_string())),
        ),
        Err(e) => (0, Err(e.to_string())),
    };
    let frames_decoded = decoded.as_ref().map_or(0, Vec::len);
    let mark = decoded
        .as_ref()
        .ok()
        .and_then(|frames| watermark::detect(frames, farm_secret));
    let manifest_job = || signed.filter(|_| manifest_valid).map(|m| m.manifest.job_id);
    let (job_id, watermark_confidence) = match mark {
        Some(m) => (m.job_id.or_else(manifest_job), m.confidence),
        None => (manifest_job(), 0.0),
    };
    Verification {
        ours: watermark_confidence > 0.0 || manifest_valid,
        job_id,
        watermark_confidence,
        manifest_valid,
        decoder: h264::DECODER,
        frames_in_track,
        frames_decoded,
        video_error: decoded.err(),
    }
}

/// A clear message when the stream's SPS names a profile OpenH264 cannot decode.
fn unsupported_profile(samples: &[Vec<u8>]) -> Option<String> {
    let sps = samples
        .first()
        .map(|s| h264::nal_units(s))?
        .into_iter()
        .find(|n| n.nal_type == 7)?;
    let profile_idc = *sps.payload.get(1)?;
    let name = match profile_idc {
        110 => "High 10",
        122 => "High 4:2:2",
        244 => "High 4:4:4 Predictive",
        44 => "CAVLC 4:4:4 Intra",
        _ => return None,
    };
    Some(format!(
        "H.264 {name} profile (profile_idc {profile_idc}) is not supported by the in-process \
         decoder ({}); convert the file with ffmpeg (-pix_fmt yuv420p -c:v libx264) and verify \
         the copy",
        h264::DECODER
    ))
}

/// The signed manifest in the file's top-level `uuid` box, if any.
pub fn embedded_manifest(data: &[u8]) -> Option<manifest::SignedManifest> {
    let boxes = demux::boxes(data).ok()?;
    boxes
        .iter()
        .filter(|b| &b.kind == b"uuid" && b.end - b.start >= 16)
        .find(|b| data[b.start..b.start + 16] == manifest::MANIFEST_UUID)
        .and_then(|b| manifest::SignedManifest::from_json(&data[b.start + 16..b.end]))
}
