//! Invisible watermark keyed by the farm secret. (Scaffold, replaced by the pipeline work.)

use crate::pipeline::Frame;

pub fn embed(_frame: &mut Frame, _job_id: &str, _farm_secret: &[u8], _frame_index: u32) {}
