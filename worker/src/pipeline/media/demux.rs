//! A minimal MP4 reader (ISO/IEC 14496-12): top-level boxes, and the H.264 track's samples
//! as Annex B access units. It is what `provenance::verify` decodes, for our own files and
//! for ffmpeg's re-encodes (which may use `co64`, several chunks, B-frames). Our own small
//! reader because all we need is the sample tables of one `avc1` track, and a crate would
//! add more surface than this file.

use crate::pipeline::PipelineError;

/// A box: its type and its payload's byte range in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoxRef {
    pub kind: [u8; 4],
    /// Range of the payload (after the header) in the buffer given to [`boxes`].
    pub start: usize,
    pub end: usize,
}

fn bad(what: &str) -> PipelineError {
    PipelineError::InvalidInput(format!("mp4: {what}"))
}

fn be_u32(data: &[u8], at: usize) -> Result<u32, PipelineError> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| bad("truncated field"))
}

fn be_u64(data: &[u8], at: usize) -> Result<u64, PipelineError> {
    Ok((u64::from(be_u32(data, at)?) << 32) | u64::from(be_u32(data, at + 4)?))
}

/// The boxes directly inside `data[start..end]`.
pub fn boxes_in(data: &[u8], start: usize, end: usize) -> Result<Vec<BoxRef>, PipelineError> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos + 8 <= end {
        let size32 = be_u32(data, pos)?;
        let kind: [u8; 4] = data[pos + 4..pos + 8].try_into().expect("4 bytes");
        let (header, size) = match size32 {
            0 => (8, (end - pos) as u64),
            1 => (16, be_u64(data, pos + 8)?),
            n => (8, u64::from(n)),
        };
        let box_end = pos as u64 + size;
        if size < header as u64 || box_end > end as u64 {
            return Err(bad("box overruns its parent"));
        }
        out.push(BoxRef {
            kind,
            start: pos + header,
            end: box_end as usize,
        });
        pos = box_end as usize;
    }
    Ok(out)
}

/// The top-level boxes of a file.
pub fn boxes(data: &[u8]) -> Result<Vec<BoxRef>, PipelineError> {
    boxes_in(data, 0, data.len())
}

fn child(data: &[u8], parent: BoxRef, kind: &[u8; 4]) -> Result<Option<BoxRef>, PipelineError> {
    Ok(boxes_in(data, parent.start, parent.end)?
        .into_iter()
        .find(|b| &b.kind == kind))
}

fn path(
    data: &[u8],
    mut current: BoxRef,
    kinds: &[&[u8; 4]],
) -> Result<Option<BoxRef>, PipelineError> {
    for kind in kinds {
        match child(data, current, kind)? {
            Some(next) => current = next,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// The H.264 video track of a file: its samples in decode order, as Annex B.
pub struct VideoTrack {
    pub width: u32,
    pub height: u32,
    /// Each sample converted to Annex B; the first one is prefixed with SPS and PPS.
    pub samples: Vec<Vec<u8>>,
}

/// Reads the first `avc1` track. Fails when there is none.
pub fn video_track(data: &[u8]) -> Result<VideoTrack, PipelineError> {
    let top = boxes(data)?;
    let moov = top
        .iter()
        .find(|b| &b.kind == b"moov")
        .ok_or_else(|| bad("no moov box"))?;
    for trak in boxes_in(data, moov.start, moov.end)?
        .into_iter()
        .filter(|b| &b.kind == b"trak")
    {
        let Some(stbl) = path(data, trak, &[b"mdia", b"minf", b"stbl"])? else {
            continue;
        };
        let Some(stsd) = child(data, stbl, b"stsd")? else {
            continue;
        };
        // stsd: version/flags (4), entry count (4), then sample entries.
        let entries = boxes_in(data, stsd.start + 8, stsd.end)?;
        let Some(avc1) = entries.into_iter().find(|b| &b.kind == b"avc1") else {
            continue;
        };
        // VisualSampleEntry: 6 reserved + 2 index + 16 pre-defined, then width/height (u16).
        let width = u32::from(u16::from_be_bytes([
            data[avc1.start + 24],
            data[avc1.start + 25],
        ]));
        let height = u32::from(u16::from_be_bytes([
            data[avc1.start + 26],
            data[avc1.start + 27],
        ]));
        // The fixed part of a VisualSampleEntry is 78 bytes; child boxes follow.
        let avcc = boxes_in(data, avc1.start + 78, avc1.end)?
            .into_iter()
            .find(|b| &b.kind == b"avcC")
            .ok_or_else(|| bad("avc1 without avcC"))?;
        let (length_size, parameter_sets) = parse_avcc(&data[avcc.start..avcc.end])?;
        let ranges = sample_ranges(data, stbl)?;
        let mut samples = Vec::with_capacity(ranges.len());
        for (index, (offset, size)) in ranges.into_iter().enumerate() {
            let sample = data
                .get(offset..offset + size)
                .ok_or_else(|| bad("sample outside the file"))?;
            let mut annex_b = Vec::with_capacity(size + 64);
            if index == 0 {
                for ps in &parameter_sets {
                    annex_b.extend_from_slice(&[0, 0, 0, 1]);
                    annex_b.extend_from_slice(ps);
                }
            }
            let mut pos = 0;
            while pos + length_size <= sample.len() {
                let len = sample[pos..pos + length_size]
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
                pos += length_size;
                let nal = sample
                    .get(pos..pos + len)
                    .ok_or_else(|| bad("NAL overruns its sample"))?;
                annex_b.extend_from_slice(&[0, 0, 0, 1]);
                annex_b.extend_from_slice(nal);
                pos += len;
            }
            samples.push(annex_b);
        }
        return Ok(VideoTrack {
            width,
            height,
            samples,
        });
    }
    Err(bad("no H.264 (avc1) track"))
}

/// NAL length size and SPS/PPS from an AVCDecoderConfigurationRecord (ISO/IEC 14496-15).
fn parse_avcc(rec: &[u8]) -> Result<(usize, Vec<Vec<u8>>), PipelineError> {
    let length_size = usize::from(*rec.get(4).ok_or_else(|| bad("short avcC"))? & 0x03) + 1;
    let mut sets = Vec::new();
    let mut pos = 5;
    for mask in [0x1F_u8, 0xFF] {
        let count = *rec.get(pos).ok_or_else(|| bad("short avcC"))? & mask;
        pos += 1;
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([
                *rec.get(pos).ok_or_else(|| bad("short avcC"))?,
                *rec.get(pos + 1).ok_or_else(|| bad("short avcC"))?,
            ]));
            sets.push(
                rec.get(pos + 2..pos + 2 + len)
                    .ok_or_else(|| bad("short avcC"))?
                    .to_vec(),
            );
            pos += 2 + len;
        }
    }
    Ok((length_size, sets))
}

/// (file offset, size) of every sample of a track, from stsz + stsc + stco/co64.
fn sample_ranges(data: &[u8], stbl: BoxRef) -> Result<Vec<(usize, usize)>, PipelineError> {
    let stsz = child(data, stbl, b"stsz")?.ok_or_else(|| bad("no stsz"))?;
    let uniform = be_u32(data, stsz.start + 4)? as usize;
    let count = be_u32(data, stsz.start + 8)? as usize;
    if count > data.len() {
        return Err(bad("implausible sample count"));
    }
    let sizes: Vec<usize> = if uniform != 0 {
        vec![uniform; count]
    } else {
        (0..count)
            .map(|i| be_u32(data, stsz.start + 12 + 4 * i).map(|v| v as usize))
            .collect::<Result<_, _>>()?
    };
    let offsets: Vec<u64> = if let Some(stco) = child(data, stbl, b"stco")? {
        let n = be_u32(data, stco.start + 4)? as usize;
        (0..n.min(data.len()))
            .map(|i| be_u32(data, stco.start + 8 + 4 * i).map(u64::from))
            .collect::<Result<_, _>>()?
    } else {
        let co64 = child(data, stbl, b"co64")?.ok_or_else(|| bad("no stco/co64"))?;
        let n = be_u32(data, co64.start + 4)? as usize;
        (0..n.min(data.len()))
            .map(|i| be_u64(data, co64.start + 8 + 8 * i))
            .collect::<Result<_, _>>()?
    };
    let stsc = child(data, stbl, b"stsc")?.ok_or_else(|| bad("no stsc"))?;
    let entries = be_u32(data, stsc.start + 4)? as usize;
    let mut runs = Vec::with_capacity(entries.min(data.len()));
    for i in 0..entries.min(data.len()) {
        let at = stsc.start + 8 + 12 * i;
        runs.push((be_u32(data, at)? as usize, be_u32(data, at + 4)? as usize));
    }
    let mut ranges = Vec::with_capacity(count);
    let mut sample = 0;
    for (chunk_index, &chunk_offset) in offsets.iter().enumerate() {
        let chunk_number = chunk_index + 1;
        let per_chunk = runs
            .iter()
            .rev()
            .find(|(first, _)| *first <= chunk_number)
            .map_or(0, |r| r.1);
        let mut pos = chunk_offset as usize;
        for _ in 0..per_chunk {
            if sample >= count {
                break;
            }
            ranges.push((pos, sizes[sample]));
            pos += sizes[sample];
            sample += 1;
        }
    }
    if sample != count {
        return Err(bad("sample tables disagree"));
    }
    Ok(ranges)
}
