//! The poster image: one frame of the clip as a PNG (`png` crate, pure Rust, deterministic:
//! no time chunk is written).

use crate::pipeline::{Frame, PipelineError};

/// Encodes an RGB8 frame as an 8-bit RGB PNG.
pub fn encode_png(frame: &Frame) -> Result<Vec<u8>, PipelineError> {
    let err = |e: png::EncodingError| PipelineError::Media(format!("png: {e}"));
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, frame.width, frame.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(&frame.rgb).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poster_decodes_to_the_same_pixels() {
        let mut frame = Frame::new(8, 4);
        for (i, b) in frame.rgb.iter_mut().enumerate() {
            *b = (i * 7 % 256) as u8;
        }
        let bytes = encode_png(&frame).expect("encode");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut buf).expect("png data");
        assert_eq!((info.width, info.height), (8, 4));
        assert_eq!(&buf[..info.buffer_size()], &frame.rgb[..]);
    }
}
