//! Guide render (in progress).
pub mod camera;
pub mod geometry;
