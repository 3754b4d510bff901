//! Opus coding of the audio track, and the byte format of an AUDIO task's output.
//!
//! Encoder: `unsafe-libopus`, libopus 1.3.1 transpiled to Rust with c2rust. We chose it because
//! the demo must build on a machine with only Rust: the `opus`/`audiopus_sys` and `opusic-sys`
//! crates need a system libopus or cmake, while this one is plain Rust (no C toolchain, no
//! apt package). Its API is libopus's C API, hence the small `unsafe` wrapper below.
//!
//! Output of AUDIO ([`OpusStream`]): `MAGIC`, then little-endian `u32` sample rate, `u16`
//! channels, `u16` pre-skip, `u64` number of PCM frames, `u32` packet count, then each packet
//! as `u16` length + bytes. Every packet holds [`FRAME_SAMPLES`] samples per channel.

use unsafe_libopus::{
    opus_encode_float, opus_encoder_create, opus_encoder_ctl, opus_encoder_destroy, OpusEncoder,
    OPUS_APPLICATION_AUDIO, OPUS_GET_LOOKAHEAD_REQUEST, OPUS_OK, OPUS_SET_BITRATE_REQUEST,
    OPUS_SET_COMPLEXITY_REQUEST, OPUS_SET_VBR_REQUEST,
};

use crate::pipeline::audio::AudioTrack;
use crate::pipeline::PipelineError;

/// Opus works at 48 kHz; it is also our synthesis rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// 20 ms packets: Opus's default frame size, the best quality/overhead trade-off.
pub const FRAME_SAMPLES: usize = 960;
/// 96 kbit/s per channel: transparent for impact sounds (Opus FAQ: 64-128 kbit/s for music).
const BITRATE_PER_CHANNEL: i32 = 96_000;
/// Maximum size of one packet, from the libopus docs (`opus_encode`: 4000 bytes is enough).
const MAX_PACKET: usize = 4000;
/// Highest encoder complexity: the track is short and encoding is not our bottleneck.
const COMPLEXITY: i32 = 10;
/// Identifies our packet-stream format (version 1).
const MAGIC: &[u8; 8] = b"RFOPUS01";

/// An encoded audio track: what AUDIO outputs and ASSEMBLE muxes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusStream {
    pub sample_rate: u32,
    pub channels: u16,
    /// Samples (per channel) the decoder must drop at the start (encoder lookahead).
    pub pre_skip: u16,
    /// PCM frames of the source track (before padding to whole packets).
    pub frames: u64,
    pub packets: Vec<Vec<u8>>,
}

/// Owns a libopus encoder; destroys it on drop.
struct EncoderHandle(*mut OpusEncoder);

impl Drop for EncoderHandle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from opus_encoder_create and is destroyed only here.
        unsafe { opus_encoder_destroy(self.0) }
    }
}

fn opus_err(what: &str, code: i32) -> PipelineError {
    PipelineError::Media(format!("opus {what}: error {code}"))
}

/// Encodes a 48 kHz mono or stereo track. The track is padded with silence to whole packets
/// plus the encoder's lookahead, so its last sample is in the stream.
pub fn encode(track: &AudioTrack) -> Result<OpusStream, PipelineError> {
    if track.sample_rate != SAMPLE_RATE {
        return Err(PipelineError::InvalidInput(format!(
            "audio sample rate {} Hz, Opus needs {SAMPLE_RATE}",
            track.sample_rate
        )));
    }
    let channels = usize::from(track.channels);
    if !(1..=2).contains(&channels) || !track.samples.len().is_multiple_of(channels) {
        return Err(PipelineError::InvalidInput(format!(
            "{} samples in {} channels",
            track.samples.len(),
            track.channels
        )));
    }
    let mut error = 0i32;
    // SAFETY: plain constructor call; the result is checked before use.
    let raw = unsafe {
        opus_encoder_create(
            SAMPLE_RATE as i32,
            channels as i32,
            OPUS_APPLICATION_AUDIO,
            &mut error,
        )
    };
    if raw.is_null() || error != OPUS_OK {
        return Err(opus_err("create", error));
    }
    let encoder = EncoderHandle(raw);
    let mut lookahead = 0i32;
    // SAFETY: valid encoder; each request takes the argument type libopus documents.
    unsafe {
        for (request, value) in [
            (
                OPUS_SET_BITRATE_REQUEST,
                BITRATE_PER_CHANNEL * channels as i32,
            ),
            (OPUS_SET_VBR_REQUEST, 0),
            (OPUS_SET_COMPLEXITY_REQUEST, COMPLEXITY),
        ] {
            let code = opus_encoder_ctl!(encoder.0, request, value);
            if code != OPUS_OK {
                return Err(opus_err("ctl", code));
            }
        }
        let code = opus_encoder_ctl!(encoder.0, OPUS_GET_LOOKAHEAD_REQUEST, &mut lookahead);
        if code != OPUS_OK {
            return Err(opus_err("lookahead", code));
        }
    }
    let frames = track.samples.len() / channels;
    let total = (frames + lookahead as usize).div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES;
    let mut pcm = track.samples.clone();
    pcm.resize(total * channels, 0.0);
    let mut packets = Vec::with_capacity(total / FRAME_SAMPLES);
    let mut buffer = [0u8; MAX_PACKET];
    for block in pcm.chunks_exact(FRAME_SAMPLES * channels) {
        // SAFETY: `block` holds FRAME_SAMPLES frames; `buffer` has MAX_PACKET bytes.
        let len = unsafe {
            opus_encode_float(
                encoder.0,
                block.as_ptr(),
                FRAME_SAMPLES as i32,
                buffer.as_mut_ptr(),
                MAX_PACKET as i32,
            )
        };
        if len <= 0 {
            return Err(opus_err("encode", len));
        }
        packets.push(buffer[..len as usize].to_vec());
    }
    Ok(OpusStream {
        sample_rate: SAMPLE_RATE,
        channels: track.channels,
        pre_skip: lookahead as u16,
        frames: frames as u64,
        packets,
    })
}

impl OpusStream {
    /// Serializes to the AUDIO output format (see the module doc).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(32 + self.packets.iter().map(|p| p.len() + 2).sum::<usize>());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.sample_rate.to_le_bytes());
        out.extend_from_slice(&self.channels.to_le_bytes());
        out.extend_from_slice(&self.pre_skip.to_le_bytes());
        out.extend_from_slice(&self.frames.to_le_bytes());
        out.extend_from_slice(&(self.packets.len() as u32).to_le_bytes());
        for packet in &self.packets {
            out.extend_from_slice(&(packet.len() as u16).to_le_bytes());
            out.extend_from_slice(packet);
        }
        out
    }

    /// Parses the AUDIO output format; fails on anything truncated or foreign.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PipelineError> {
        let bad = |what: &str| PipelineError::InvalidInput(format!("audio track: {what}"));
        let mut r = Reader { bytes, pos: 0 };
        if r.take(MAGIC.len()).map_err(|_| bad("too short"))? != MAGIC {
            return Err(bad("not an Opus packet stream"));
        }
        let header =
            (|| -> Result<_, ()> { Ok((r.u32()?, r.u16()?, r.u16()?, r.u64()?, r.u32()?)) })();
        let (sample_rate, channels, pre_skip, frames, count) =
            header.map_err(|_| bad("truncated header"))?;
        if sample_rate != SAMPLE_RATE || !(1..=2).contains(&channels) {
            return Err(bad("unsupported sample rate or channel count"));
        }
        let mut packets = Vec::with_capacity((count as usize).min(bytes.len() / 3));
        for _ in 0..count {
            let len = r.u16().map_err(|_| bad("truncated packet"))?;
            packets.push(
                r.take(usize::from(len))
                    .map_err(|_| bad("truncated packet"))?
                    .to_vec(),
            );
        }
        Ok(Self {
            sample_rate,
            channels,
            pre_skip,
            frames,
            packets,
        })
    }
}

/// Little-endian cursor over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ()> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(())?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn u16(&mut self) -> Result<u16, ()> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().map_err(|_| ())?,
        ))
    }
    fn u32(&mut self) -> Result<u32, ()> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| ())?,
        ))
    }
    fn u64(&mut self) -> Result<u64, ()> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| ())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f64) -> AudioTrack {
        let n = (seconds * f64::from(SAMPLE_RATE)) as usize;
        AudioTrack {
            sample_rate: SAMPLE_RATE,
            channels: 1,
            samples: (0..n).map(|i| 0.3 * (i as f32 * 0.05).sin()).collect(),
            onsets: Vec::new(),
        }
    }

    #[test]
    fn stream_covers_the_track_plus_lookahead_in_whole_packets() {
        let stream = encode(&tone(1.0)).expect("encode");
        assert_eq!(
            stream.pre_skip, 312,
            "libopus lookahead at 48 kHz (application AUDIO)"
        );
        assert_eq!(stream.frames, 48_000);
        assert_eq!(
            stream.packets.len(),
            (48_000 + 312usize).div_ceil(FRAME_SAMPLES)
        );
    }

    #[test]
    fn stream_bytes_round_trip_and_reject_truncation() {
        let stream = encode(&tone(0.2)).expect("encode");
        let bytes = stream.to_bytes();
        assert_eq!(OpusStream::from_bytes(&bytes).expect("parse"), stream);
        assert!(
            OpusStream::from_bytes(&bytes[..bytes.len() - 1]).is_err(),
            "truncated stream must fail"
        );
        assert!(OpusStream::from_bytes(b"garbage").is_err());
    }

    #[test]
    fn wrong_sample_rate_is_rejected() {
        let mut track = tone(0.1);
        track.sample_rate = 44_100;
        assert!(matches!(
            encode(&track),
            Err(PipelineError::InvalidInput(_))
        ));
    }
}
