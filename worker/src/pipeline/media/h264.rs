//! H.264 coding of frames with OpenH264 (built from source by `openh264-sys2`, so no system
//! library is needed, only a C++ compiler at build time).
//!
//! A segment chunk is a plain Annex B elementary stream (`ffprobe -f h264` reads it):
//! every access unit starts with an access unit delimiter (AUD, NAL type 9), the first one
//! carries SPS + PPS + IDR. Every segment is encoded by a fresh encoder with the same
//! parameters ([`encoder_config`]: fixed QP, no rate control, no frame skipping, no periodic
//! or scene-change intra frames), so all segments share the same SPS/PPS and each is
//! independently decodable: ASSEMBLE can concatenate them without re-encoding.

use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::encoder::{
    Complexity, Encoder, EncoderConfig, FrameType, IntraFramePeriod, QpRange, RateControlMode,
    SpsPpsStrategy, UsageType,
};
use openh264::formats::{RgbSliceU8, YUVBuffer, YUVSource};
use openh264::OpenH264API;

use crate::pipeline::{Frame, PipelineError};

/// The quantizer of every frame. 24 is visually transparent for our generated content at
/// 1080p and keeps segments small; it is fixed (min = max) so that every worker encodes
/// the same frame to the same bytes and segments are interchangeable.
pub const FIXED_QP: u8 = 24;

/// An access unit delimiter NAL (type 9, `primary_pic_type` = 7: any slice type), with its
/// 4-byte start code. It marks where each frame begins inside a chunk.
pub const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];

/// The encoder configuration shared by every segment of every job.
fn encoder_config() -> EncoderConfig {
    EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .rate_control_mode(RateControlMode::Off)
        .qp(QpRange::new(FIXED_QP, FIXED_QP))
        .skip_frames(false)
        .scene_change_detect(false)
        .adaptive_quantization(false)
        .background_detection(false)
        .complexity(Complexity::Medium)
        .sps_pps_strategy(SpsPpsStrategy::ConstantId)
        // 0 disables periodic IDRs: each segment has exactly one, at its start.
        .intra_frame_period(IntraFramePeriod::from_num_frames(0))
        // One thread: the output must not depend on scheduling.
        .num_threads(1)
}

fn media_err(what: &str, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Media(format!("h264 {what}: {e}"))
}

/// Encodes `frames` (all of one size, even width and height) into one Annex B chunk that
/// starts with SPS, PPS and an IDR frame.
pub fn encode_frames(frames: &[Frame]) -> Result<Vec<u8>, PipelineError> {
    let Some(first) = frames.first() else {
        return Err(PipelineError::InvalidInput("no frames to encode".into()));
    };
    let (width, height) = (first.width, first.height);
    if width == 0 || height == 0 || width % 2 != 0 || height % 2 != 0 {
        return Err(PipelineError::InvalidInput(format!(
            "frame size {width}x{height} must be non-zero and even for 4:2:0 H.264"
        )));
    }
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), encoder_config())
        .map_err(|e| media_err("encoder", e))?;
    let mut out = Vec::new();
    for (index, frame) in frames.iter().enumerate() {
        if frame.width != width
            || frame.height != height
            || frame.rgb.len() != width as usize * height as usize * 3
        {
            return Err(PipelineError::InvalidInput(format!(
                "frame {index} is {}x{} ({} bytes), expected {width}x{height}",
                frame.width,
                frame.height,
                frame.rgb.len()
            )));
        }
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(
            &frame.rgb,
            (width as usize, height as usize),
        ));
        let bitstream = encoder.encode(&yuv).map_err(|e| media_err("encode", e))?;
        let frame_type = bitstream.frame_type();
        if index == 0 && frame_type != FrameType::IDR {
            return Err(PipelineError::Media(format!(
                "first frame of a segment encoded as {frame_type:?}, not IDR"
            )));
        }
        if frame_type == FrameType::Skip || frame_type == FrameType::Invalid {
            return Err(PipelineError::Media(format!(
                "frame {index} was not encoded ({frame_type:?})"
            )));
        }
        out.extend_from_slice(&AUD);
        bitstream.write_vec(&mut out);
    }
    Ok(out)
}

/// One NAL unit of an Annex B stream: its type and its bytes without the start code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nal<'a> {
    pub nal_type: u8,
    pub payload: &'a [u8],
}

/// Splits an Annex B stream into NAL units (3- or 4-byte start codes).
pub fn nal_units(stream: &[u8]) -> Vec<Nal<'_>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(stream.len(), |&next| next - 3);
        // Trailing zero bytes belong to the next start code (4-byte form) or are padding.
        while end > start && stream[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            nals.push(Nal {
                nal_type: stream[start] & 0x1F,
                payload: &stream[start..end],
            });
        }
    }
    nals
}

/// One frame of a chunk: its Annex B bytes (AUD included) and whether it is an IDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessUnit<'a> {
    pub bytes: &'a [u8],
    pub is_idr: bool,
}

/// Splits a chunk made by [`encode_frames`] into its access units (one per frame), at the
/// AUD that starts each one.
pub fn access_units(chunk: &[u8]) -> Result<Vec<AccessUnit<'_>>, PipelineError> {
    if !chunk.starts_with(&AUD) {
        return Err(PipelineError::InvalidInput(
            "segment chunk does not start with an access unit delimiter".into(),
        ));
    }
    let mut bounds = Vec::new();
    let mut i = 0;
    while let Some(pos) = find(&chunk[i..], &AUD) {
        bounds.push(i + pos);
        i += pos + AUD.len();
    }
    bounds.push(chunk.len());
    let mut units = Vec::with_capacity(bounds.len() - 1);
    for pair in bounds.windows(2) {
        let bytes = &chunk[pair[0]..pair[1]];
        let is_idr = nal_units(bytes).iter().any(|n| n.nal_type == 5);
        units.push(AccessUnit { bytes, is_idr });
    }
    Ok(units)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Name of the in-process decoder, reported by `provenance::verify`.
pub const DECODER: &str = "openh264 (in-process)";

/// Decodes H.264 access units (Annex B, in decode order) to RGB frames in display order.
/// Units the decoder rejects are skipped (a verifier must read damaged or foreign streams as
/// far as it can); fails only when nothing decodes.
///
/// OpenH264 decodes Baseline, Main and High profile 4:2:0 8-bit streams, B-frames and CABAC
/// included (what x264 writes by default); it rejects 4:2:2, 4:4:4 and high bit depths.
/// B-frames need its reorder buffer: a picture is held back until the frames displayed
/// before it have been decoded. The `openh264` crate's default (`Flush::Flush`) forces a
/// held picture out after every call that returned none, which breaks that reordering:
/// on an x264 `crf 28` re-encode only 7 of 36 frames came out. So we never flush during
/// the stream, only once at its end.
pub fn decode_annex_b<'a>(
    units: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Frame>, PipelineError> {
    let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    let mut decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| media_err("decoder", e))?;
    let mut frames = Vec::new();
    let mut first_error = None;
    for unit in units {
        match decoder.decode(unit) {
            Ok(Some(image)) => frames.push(to_frame(&image)),
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    match decoder.flush_remaining() {
        Ok(images) => frames.extend(images.iter().map(to_frame)),
        Err(e) => {
            first_error.get_or_insert_with(|| e.to_string());
        }
    }
    match (frames.is_empty(), first_error) {
        (true, Some(e)) => Err(media_err("decode", e)),
        _ => Ok(frames),
    }
}

fn to_frame(image: &impl YUVSource) -> Frame {
    let (w, h) = image.dimensions();
    let mut frame = Frame::new(w as u32, h as u32);
    // `write_rgb8` lives on DecodedYUV; go through YUVSource for any source.
    yuv_to_rgb(image, &mut frame.rgb);
    frame
}

/// BT.601 limited-range YUV 4:2:0 → RGB, the inverse of OpenH264's own RGB → YUV.
fn yuv_to_rgb(image: &impl YUVSource, rgb: &mut [u8]) {
    let (w, h) = image.dimensions();
    let (sy, su, sv) = image.strides();
    let (y, u, v) = (image.y(), image.u(), image.v());
    for row in 0..h {
        for col in 0..w {
            let yy = f32::from(y[row * sy + col]) - 16.0;
            let uu = f32::from(u[(row / 2) * su + col / 2]) - 128.0;
            let vv = f32::from(v[(row / 2) * sv + col / 2]) - 128.0;
            let r = 1.164 * yy + 1.596 * vv;
            let g = 1.164 * yy - 0.392 * uu - 0.813 * vv;
            let b = 1.164 * yy + 2.017 * uu;
            let o = (row * w + col) * 3;
            rgb[o] = r.round().clamp(0.0, 255.0) as u8;
            rgb[o + 1] = g.round().clamp(0.0, 255.0) as u8;
            rgb[o + 2] = b.round().clamp(0.0, 255.0) as u8;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A grey background with a bright disc that moves right by 3 px a frame.
    pub(crate) fn moving_disc(width: u32, height: u32, count: u32, start: u32) -> Vec<Frame> {
        (start..start + count)
            .map(|i| {
                let mut f = Frame::new(width, height);
                let (cx, cy, r) = (
                    (10 + 3 * i) as f32 % width as f32,
                    height as f32 / 2.0,
                    height as f32 / 5.0,
                );
                for y in 0..height {
                    for x in 0..width {
                        let o = ((y * width + x) * 3) as usize;
                        let inside = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < r * r;
                        let shade = (60 + (x * 40 / width) + (y * 30 / height)) as u8;
                        let px = if inside {
                            [220, 40, 30]
                        } else {
                            [shade, shade, shade + 10]
                        };
                        f.rgb[o..o + 3].copy_from_slice(&px);
                    }
                }
                f
            })
            .collect()
    }

    #[test]
    fn chunk_starts_with_idr_and_has_one_access_unit_per_frame() {
        let frames = moving_disc(64, 48, 5, 0);
        let chunk = encode_frames(&frames).expect("encode");
        let units = access_units(&chunk).expect("split");
        assert_eq!(units.len(), 5, "one access unit per frame");
        assert!(units[0].is_idr, "segment must start on an IDR");
        assert!(
            units[1..].iter().all(|u| !u.is_idr),
            "only the first frame is an IDR"
        );
        let types: Vec<u8> = nal_units(units[0].bytes)
            .iter()
            .map(|n| n.nal_type)
            .collect();
        assert_eq!(
            &types[..3],
            &[9, 7, 8],
            "AUD, SPS, PPS lead the first access unit"
        );
    }

    #[test]
    fn encoding_is_deterministic_and_decodes_close_to_the_source() {
        let frames = moving_disc(64, 48, 3, 7);
        let a = encode_frames(&frames).expect("encode");
        let b = encode_frames(&frames).expect("encode");
        assert_eq!(a, b, "same frames must give the same bytes");
        let units = access_units(&a).expect("split");
        let decoded = decode_annex_b(units.iter().map(|u| u.bytes)).expect("decode");
        assert_eq!(decoded.len(), 3);
        let mse: f64 = decoded[1]
            .rgb
            .iter()
            .zip(&frames[1].rgb)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum::<f64>()
            / frames[1].rgb.len() as f64;
        assert!(
            mse < 100.0, // PSNR > 28 dB: QP 24 is near-lossless on luma; the error is mostly 4:2:0 chroma at the red disc edge
            "decoded frame should be close to the source, mse {mse}"
        );
    }

    #[test]
    fn odd_frame_size_is_rejected() {
        let frames = vec![Frame::new(63, 48)];
        assert!(matches!(
            encode_frames(&frames),
            Err(PipelineError::InvalidInput(_))
        ));
    }
}
