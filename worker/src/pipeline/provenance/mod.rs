//! Provenance: invisible watermark and signed manifest. (Scaffold, replaced by the pipeline work.)

pub mod watermark;
