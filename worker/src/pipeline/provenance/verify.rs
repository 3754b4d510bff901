//! `verify`: decides whether an MP4 came from this farm, from its signed manifest when it is
//! still there and from the watermark in its pictures in any case (re-encoded or stripped
//! copies lose the manifest but keep the mark).

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
}

/// Checks `data` (an MP4) against `farm_secret`. Never fails: unreadable input is simply
/// not ours.
pub fn verify(data: &[u8], farm_secret: &[u8]) -> Verification {
    let signed = embedded_manifest(data);
    let manifest_valid = signed.as_ref().is_some_and(|m| {
        m.signature_valid(farm_secret)
            && mdat_sha256(data).is_ok_and(|h| h == m.manifest.content_sha256)
    });
    let mark = demux::video_track(data)
        .ok()
        .and_then(|track| h264::decode_annex_b(track.samples.iter().map(Vec::as_slice)).ok())
        .and_then(|frames| watermark::detect(&frames, farm_secret));
    let (job_id, watermark_confidence) = match mark {
        Some((job, confidence)) => (Some(job), confidence),
        None => (
            signed.filter(|_| manifest_valid).map(|m| m.manifest.job_id),
            0.0,
        ),
    };
    Verification {
        ours: watermark_confidence > 0.0 || manifest_valid,
        job_id,
        watermark_confidence,
        manifest_valid,
    }
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
