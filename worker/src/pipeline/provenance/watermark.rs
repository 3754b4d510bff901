//! Invisible watermark keyed by the farm secret, carrying the job id, robust to re-encoding.
//!
//! Scheme ([`SCHEME`]): spread spectrum on 4×4 block means of luma. The payload is the job
//! id's 64 bits followed by a CRC-16 (80 bits), convolutionally coded to 172 bits
//! ([`ecc`], soft Viterbi at detection). A keyed pseudo-random layout gives every block a
//! coded bit and a chip (±1); the block's pixels get `±AMPLITUDE` added to R, G
//! and B alike (that is luma only: chroma is unchanged), the sign being chip × bit.
//! Block means (DC) are what a codec keeps best, so the mark survives `crf 28`.
//!
//! The pattern does not change from frame to frame: inter prediction and skipped blocks of
//! a re-encoder then copy it instead of erasing it, and `frame_index` does not need to match
//! at detection (trimmed or re-timed copies still verify). Detection averages the high-passed
//! block means over all frames, correlates with the layout per bit, checks the CRC, and
//! scores the correlation against decoy layouts (other keys) to get a z-score that is ~N(0,1)
//! on unmarked video whatever its content.
//!
//! Presence and payload are decided apart ([`Mark`]): the z-score says whether this farm's
//! mark is there; the job id is reported only when its CRC matches. Small, strongly
//! re-encoded copies (160×96 after `crf 28`: about 5 blocks per coded bit) keep a clear
//! z-score while the payload can fall just past what the code corrects; they are still
//! recognised as ours, without a job id, instead of being missed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::ecc;
use crate::pipeline::Frame;

/// Name of this scheme, written in the manifest.
pub const SCHEME: &str = "reelfarm-ss-luma-dc4-cc-v1";
/// Side of a watermark block, pixels: H.264's 4×4 transform size, whose DC survives strong
/// quantization. Measured at 160×96 after `crf 28`: 4×4 blocks gave z ≈ 8-13 where 8×8 gave
/// 6-9 (more blocks per coded bit outweigh each block's weaker survival).
pub const BLOCK: u32 = 4;
/// Added to each channel, in 8-bit levels. ±2 gives PSNR ≈ 42 dB (MSE ≈ 4) and is below the
/// ~3-level visibility threshold of flat mid-grey areas.
pub const AMPLITUDE: i16 = 2;
/// Payload bits: 64 for the job id, 16 for its CRC.
const PAYLOAD_BITS: usize = 80;
/// Coded bits carried by the blocks (rate-1/2 convolutional code, [`ecc`]).
const CODED_BITS: usize = ecc::encoded_len(PAYLOAD_BITS);
/// Decoy layouts scored to estimate the statistic's distribution on unmarked video.
const DECOYS: u64 = 48;
/// z-score above which the mark is present. On unmarked video z is ~N(0,1) (a t with 47
/// degrees of freedom, from the decoys): z ≥ 5 by chance has p < 1e-5. A job id needs its
/// CRC to match as well (a further 2^-16).
pub const Z_DETECT: f64 = 5.0;
/// z-score reported as confidence 1.0.
const Z_FULL: f64 = 10.0;
/// Per-frame clip of a block's residual, luma levels: 3× the mark's amplitude.
const RESIDUAL_CLIP: f64 = 3.0 * AMPLITUDE as f64;
/// Domain separation for the layout key.
const KEY_CONTEXT: &[u8] = b"reelfarm/provenance/watermark-layout/v1";

/// The payload bits of a job id (16 lowercase hex chars), or `None` if it is not one.
fn payload(job_id: &str) -> Option<[bool; PAYLOAD_BITS]> {
    if job_id.len() != 16
        || !job_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let bytes = hex::decode(job_id).ok()?;
    let crc = crc16(&bytes);
    let mut bits = [false; PAYLOAD_BITS];
    for (i, bit) in bits.iter_mut().enumerate().take(64) {
        *bit = bytes[i / 8] >> (7 - i % 8) & 1 == 1;
    }
    for i in 0..16 {
        bits[64 + i] = crc >> (15 - i) & 1 == 1;
    }
    Some(bits)
}

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF).
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFF_u16;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Per block: which payload bit it carries and its chip.
struct Layout {
    bit: Vec<u8>,
    chip: Vec<f32>,
}

fn layout(farm_secret: &[u8], decoy: u64, cols: usize, rows: usize) -> Layout {
    let mut hasher = Sha256::new();
    hasher.update(KEY_CONTEXT);
    hasher.update(decoy.to_le_bytes());
    hasher.update(farm_secret);
    let mut rng = ChaCha8Rng::from_seed(hasher.finalize().into());
    let n = cols * rows;
    // Coded bits are dealt round-robin over a shuffled block order: each gets n/172 blocks,
    // scattered over the picture.
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut bit = vec![0u8; n];
    for (rank, &block) in order.iter().enumerate() {
        bit[block] = (rank % CODED_BITS) as u8;
    }
    let chip = (0..n)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect();
    Layout { bit, chip }
}

fn grid(frame: &Frame) -> (usize, usize) {
    (
        (frame.width / BLOCK) as usize,
        (frame.height / BLOCK) as usize,
    )
}

/// Marks `frame` with `job_id` under `farm_secret`. A job id that is not 16 lowercase hex
/// characters, or a frame smaller than one block, is left unmarked. `frame_index` is
/// accepted for the pipeline contract; the pattern is the same for every frame (module doc).
pub fn embed(frame: &mut Frame, job_id: &str, farm_secret: &[u8], _frame_index: u32) {
    let Some(bits) = payload(job_id) else {
        return;
    };
    let bits = ecc::encode(&bits);
    let (cols, rows) = grid(frame);
    if cols * rows == 0 || frame.rgb.len() != frame.width as usize * frame.height as usize * 3 {
        return;
    }
    let lay = layout(farm_secret, 0, cols, rows);
    let width = frame.width as usize;
    let block = BLOCK as usize;
    for by in 0..rows {
        for bx in 0..cols {
            let b = by * cols + bx;
            let sign = if bits[usize::from(lay.bit[b])] {
                1.0
            } else {
                -1.0
            };
            let delta = (sign * lay.chip[b]) as i16 * AMPLITUDE;
            for y in by * block..(by + 1) * block {
                let row = (y * width + bx * block) * 3;
                for px in &mut frame.rgb[row..row + block * 3] {
                    *px = (i16::from(*px) + delta).clamp(0, 255) as u8;
                }
            }
        }
    }
}

/// Accumulates frames for detection: high-passed luma block means, averaged over frames.
#[derive(Default)]
pub struct Detector {
    cols: usize,
    rows: usize,
    sum: Vec<f64>,
    frames: u32,
}

impl Detector {
    /// Adds one decoded RGB frame. Frames of another size than the first are ignored.
    pub fn add(&mut self, frame: &Frame) {
        let (cols, rows) = grid(frame);
        if cols < 3
            || rows < 3
            || frame.rgb.len() != frame.width as usize * frame.height as usize * 3
        {
            return;
        }
        if self.frames == 0 {
            *self = Self {
                cols,
                rows,
                sum: vec![0.0; cols * rows],
                frames: 0,
            };
        } else if (cols, rows) != (self.cols, self.rows) {
            return;
        }
        let means = block_luma_means(frame, cols, rows);
        for by in 0..rows {
            for bx in 0..cols {
                // Residual against the mean of the (up to 8) neighbouring blocks: removes the
                // picture's smooth content, keeps the block-to-block watermark.
                let (mut acc, mut n) = (0.0, 0.0);
                for (dx, dy) in [
                    (-1i64, -1i64),
                    (0, -1),
                    (1, -1),
                    (-1, 0),
                    (1, 0),
                    (-1, 1),
                    (0, 1),
                    (1, 1),
                ] {
                    let (x, y) = (bx as i64 + dx, by as i64 + dy);
                    if x >= 0 && y >= 0 && (x as usize) < cols && (y as usize) < rows {
                        acc += means[y as usize * cols + x as usize];
                        n += 1.0;
                    }
                }
                let residual = means[by * cols + bx] - acc / n;
                // Edges of objects give residuals far above the mark's; clipping them keeps
                // one strong edge from outvoting the mark in its bit.
                self.sum[by * cols + bx] += residual.clamp(-RESIDUAL_CLIP, RESIDUAL_CLIP);
            }
        }
        self.frames += 1;
    }

    /// This farm's mark, with the job id when the payload decodes, or `None` when no mark
    /// of this farm is found.
    pub fn detect(&self, farm_secret: &[u8]) -> Option<Mark> {
        if self.frames == 0 {
            return None;
        }
        let z = self.z_score(farm_secret);
        if z < Z_DETECT {
            return None;
        }
        let corr = correlate(&self.sum, &layout(farm_secret, 0, self.cols, self.rows));
        Some(Mark {
            job_id: decode_payload(&corr),
            confidence: (z / Z_FULL).clamp(0.0, 1.0),
        })
    }

    /// How far the key's layout stands out from decoy layouts, in standard deviations
    /// (≈ N(0,1) on unmarked video).
    pub fn z_score(&self, farm_secret: &[u8]) -> f64 {
        if self.frames == 0 {
            return 0.0;
        }
        let stat = statistic(&self.sum, &layout(farm_secret, 0, self.cols, self.rows));
        let decoys: Vec<f64> = (1..=DECOYS)
            .map(|d| statistic(&self.sum, &layout(farm_secret, d, self.cols, self.rows)))
            .collect();
        let mean = decoys.iter().sum::<f64>() / decoys.len() as f64;
        let sd = (decoys.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
            / (decoys.len() - 1) as f64)
            .sqrt();
        if sd > 0.0 {
            (stat - mean) / sd
        } else {
            0.0
        }
    }
}

impl Detector {
    /// Diagnostics: how many payload bits a hard decision gets wrong for `job_id`.
    #[cfg(test)]
    pub(crate) fn bit_errors(&self, farm_secret: &[u8], job_id: &str) -> usize {
        let corr = correlate(&self.sum, &layout(farm_secret, 0, self.cols, self.rows));
        let bits = ecc::encode(&payload(job_id).expect("valid job id"));
        corr.iter()
            .zip(bits)
            .filter(|(c, b)| (**c > 0.0) != *b)
            .count()
    }
}

/// Per payload bit: the correlation of the residuals with that bit's chips.
fn correlate(residual: &[f64], lay: &Layout) -> [f64; CODED_BITS] {
    let mut corr = [0.0f64; CODED_BITS];
    for (b, &r) in residual.iter().enumerate() {
        corr[usize::from(lay.bit[b])] += f64::from(lay.chip[b]) * r;
    }
    corr
}

/// Detection statistic: the sum over bits of |correlation|, normalised by residual energy.
fn statistic(residual: &[f64], lay: &Layout) -> f64 {
    let energy = residual
        .iter()
        .map(|r| r * r)
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    correlate(residual, lay)
        .iter()
        .map(|c| c.abs())
        .sum::<f64>()
        / energy
}

/// Soft Viterbi decoding of the coded bits, then the CRC check. Returns the job id (hex).
fn decode_payload(corr: &[f64; CODED_BITS]) -> Option<String> {
    let bits = ecc::decode(corr, PAYLOAD_BITS);
    let mut bytes = [0u8; 8];
    for (i, &bit) in bits.iter().enumerate().take(64) {
        bytes[i / 8] |= u8::from(bit) << (7 - i % 8);
    }
    let crc = bits[64..]
        .iter()
        .fold(0u16, |acc, &b| (acc << 1) | u16::from(b));
    (crc == crc16(&bytes)).then(|| hex::encode(bytes))
}

fn block_luma_means(frame: &Frame, cols: usize, rows: usize) -> Vec<f64> {
    let width = frame.width as usize;
    let block = BLOCK as usize;
    let mut means = vec![0.0; cols * rows];
    for (b, mean) in means.iter_mut().enumerate() {
        let (bx, by) = (b % cols, b / cols);
        let mut acc = 0.0;
        for y in by * block..(by + 1) * block {
            let row = (y * width + bx * block) * 3;
            for px in frame.rgb[row..row + block * 3].chunks_exact(3) {
                acc +=
                    0.299 * f64::from(px[0]) + 0.587 * f64::from(px[1]) + 0.114 * f64::from(px[2]);
            }
        }
        *mean = acc / (block * block) as f64;
    }
    means
}

/// A mark of this farm found in a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// The embedded job id; `None` when the mark is present but its payload did not
    /// decode (CRC mismatch after heavy re-encoding of a small picture).
    pub job_id: Option<String>,
    /// `z / Z_FULL`, clamped to 0..=1; at least `Z_DETECT / Z_FULL` when found.
    pub confidence: f64,
}

/// Detects the mark in decoded RGB frames.
pub fn detect(frames: &[Frame], farm_secret: &[u8]) -> Option<Mark> {
    let mut detector = Detector::default();
    frames.iter().for_each(|f| detector.add(f));
    detector.detect(farm_secret)
}

/// PSNR (dB) of `marked` against `original`, over all RGB samples.
pub fn psnr(original: &Frame, marked: &Frame) -> f64 {
    let mse = original
        .rgb
        .iter()
        .zip(&marked.rgb)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        / original.rgb.len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::media::h264::tests::moving_disc;

    const SECRET: &[u8] = b"test-farm-secret";

    fn marked(job: &str, count: u32) -> (Vec<Frame>, Vec<Frame>) {
        let original = moving_disc(160, 96, count, 0);
        let mut marked = original.clone();
        for (i, f) in marked.iter_mut().enumerate() {
            embed(f, job, SECRET, i as u32);
        }
        (original, marked)
    }

    #[test]
    fn mark_is_detected_on_clean_frames_with_the_right_job_id() {
        let (_, frames) = marked("0123456789abcdef", 12);
        let mark = detect(&frames, SECRET).expect("mark must be found");
        assert_eq!(mark.job_id.as_deref(), Some("0123456789abcdef"));
        assert!(mark.confidence > 0.5, "confidence {}", mark.confidence);
    }

    #[test]
    fn a_present_mark_whose_payload_does_not_decode_is_found_without_a_job_id() {
        // Two job ids in alternate frames: the layout (presence) is the same, the coded
        // bits disagree, so the CRC cannot match either id.
        let (a, b) = ("0123456789abcdef", "fedcba9876543210");
        let (_, mut frames) = marked(a, 12);
        let (_, other) = marked(b, 12);
        for i in (1..frames.len()).step_by(2) {
            frames[i] = other[i].clone();
        }
        let mark = detect(&frames, SECRET).expect("the farm's layout is present");
        assert_eq!(mark.job_id, None, "no job id from a mixed payload");
        assert!(mark.confidence * Z_FULL >= Z_DETECT);
    }

    #[test]
    fn unmarked_frames_and_other_secrets_detect_nothing() {
        let (original, frames) = marked("fedcba9876543210", 12);
        assert_eq!(detect(&original, SECRET), None, "no mark in the original");
        assert_eq!(
            detect(&frames, b"another farm"),
            None,
            "another farm's key finds nothing"
        );
    }

    #[test]
    fn mark_is_invisible_psnr_above_40_db() {
        let (original, frames) = marked("00ff00ff00ff00ff", 3);
        for (o, m) in original.iter().zip(&frames) {
            let p = psnr(o, m);
            assert!(p > 40.0, "PSNR {p:.2} dB must exceed 40");
        }
    }

    #[test]
    fn invalid_job_id_leaves_the_frame_untouched() {
        let (original, _) = marked("0123456789abcdef", 1);
        let mut frame = original[0].clone();
        embed(&mut frame, "not-a-job-id", SECRET, 0);
        embed(&mut frame, "0123456789ABCDEF", SECRET, 0);
        assert_eq!(frame, original[0]);
    }

    #[test]
    fn crc16_matches_the_ccitt_false_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }
}
