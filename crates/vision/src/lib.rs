//! Face privacy: find faces in photos and make them unrecognisable.
//!
//! * [`imageio`]: decoding with pixel limits and EXIF orientation, encoding without metadata;
//! * [`FaceDetector`]: BlazeFace (full frame plus overlapping tiles, so small far faces are found) and
//!   CenterFace (at a resolution derived from the image), on either inference engine;
//! * [`anonymize()`]: blur, pixelate or mask each face, with strength scaled to the face's size;
//! * [`splice`]: JPEG output that keeps the input's own compressed data away from the faces.
//!
//! This crate knows nothing of HTTP, routes or slots.

pub mod anonymize;
mod blazeface;
pub mod centerface;
mod detector;
pub mod imageio;
pub mod nms;
pub mod pipeline;
pub mod splice;
pub mod stripped;
pub mod webp;
pub mod ycbcr;

pub use anonymize::{Style, anonymize};
pub use detector::{
    DetectorKind, DetectorParams, FaceDetector, GPU_TILE_BATCH, spare_resizer_bytes,
};

/// A detected face in original-image pixel coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Detector confidence, 0–1.
    pub score: f32,
    /// Key points (eyes, nose, mouth, ears…), `[x, y]`.
    pub landmarks: Vec<[f32; 2]>,
}

impl Face {
    /// Width and height of the box.
    pub fn size(&self) -> (f32, f32) {
        (self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1])
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not an image this build can read, or are damaged.
    #[error("{0}")]
    BadImage(String),
    /// The format is recognised but not supported.
    #[error("{0}")]
    Unsupported(String),
    /// The image has more pixels than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// Inference failed.
    #[error(transparent)]
    Infer(#[from] switchyard_infer::Error),
    /// Encoding the output failed.
    #[error("encoding: {0}")]
    Encode(String),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;
