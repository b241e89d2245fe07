//! Paths of the real models and photos fetched by `make setup`.

#![allow(dead_code)]

use std::path::PathBuf;

use switchyard_infer::{EngineChoice, LoadOptions};
use switchyard_vision::{DetectorKind, DetectorParams, FaceDetector};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn existing(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(p.exists(), "{} is missing: run `make setup`", p.display());
    p
}

/// The codec reference written by `tests/reference/image_codec.py` (Pillow, libjpeg-turbo, libwebp).
pub fn codec_reference() -> serde_json::Value {
    let text =
        std::fs::read_to_string(existing(".cache/reference/image_codec.json")).expect("reference");
    serde_json::from_str(&text).expect("json")
}

pub fn model_file(kind: DetectorKind) -> PathBuf {
    existing(kind.default_model())
}

pub fn detector(kind: DetectorKind, engine: EngineChoice, params: DetectorParams) -> FaceDetector {
    let opts = LoadOptions {
        engine,
        threads: 2,
        ..Default::default()
    };
    FaceDetector::load(kind, &model_file(kind), params, opts).expect("load detector")
}

pub fn photo(name: &str) -> image::RgbImage {
    let bytes = std::fs::read(existing(&format!(".cache/testdata/{name}"))).unwrap();
    switchyard_vision::imageio::decode(&bytes, 100_000_000)
        .unwrap()
        .image
}
