//! Boxes match the independent Python/onnxruntime reference (tests/reference/face_reference.py)
//! within 1 px and 0.01 score, on both engines, for every detector in its single-pass mode.

mod common;

use common::*;
use serde_json::Value;
use switchyard_infer::EngineChoice;
use switchyard_vision::{DetectorKind, DetectorParams, Face};

fn reference() -> Value {
    let text = std::fs::read_to_string(existing(".cache/reference/faces.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Detections whose score is within this of the threshold are "borderline": which low-score
/// candidates join their weighted-NMS cluster depends on sub-pixel resize differences, so their box
/// is allowed 3 px instead of 1 and their score 0.02 instead of 0.01. (One such detection exists in
/// the set: BlazeFace-front on t1.jpg at 0.507; every other detection is held to 1 px / 0.01.)
const BORDERLINE: f32 = 0.02;

fn compare(got: &[Face], want: &Value, threshold: f32, what: &str) {
    let want = want.as_array().unwrap();
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} faces, reference has {}: {got:?}",
        got.len(),
        want.len()
    );
    for w in want {
        let wb: Vec<f32> = w["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let ws = w["score"].as_f64().unwrap() as f32;
        let best = got
            .iter()
            .min_by(|a, b| {
                let d = |f: &Face| {
                    f.bbox
                        .iter()
                        .zip(&wb)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f32::max)
                };
                d(a).total_cmp(&d(b))
            })
            .unwrap();
        let diff = best
            .bbox
            .iter()
            .zip(&wb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        let tolerance = if ws < threshold + BORDERLINE {
            3.0
        } else {
            1.0
        };
        assert!(
            diff <= tolerance,
            "{what}: box {wb:?} off by {diff:.2} px (got {:?})",
            best.bbox
        );
        let score_tolerance = if ws < threshold + BORDERLINE {
            0.02
        } else {
            0.01
        };
        assert!(
            (best.score - ws).abs() <= score_tolerance,
            "{what}: score {} vs reference {ws}",
            best.score
        );
    }
}

/// The detector settings the reference ran with.
fn reference_params(r: &Value) -> DetectorParams {
    DetectorParams {
        score_threshold: r["score_threshold"].as_f64().unwrap() as f32,
        nms_iou: r["nms_iou"].as_f64().unwrap() as f32,
        max_side: r["centerface_max_side"].as_u64().unwrap() as u32,
        ..Default::default()
    }
}

#[test]
fn single_pass_boxes_match_the_python_reference_on_both_engines() {
    let r = reference();
    let params = reference_params(&r);
    let mut checked = 0;
    for engine in [EngineChoice::Ort, EngineChoice::Tract] {
        for kind in [
            DetectorKind::CenterFace,
            DetectorKind::BlazeFaceBack,
            DetectorKind::BlazeFaceFront,
        ] {
            let det = detector(kind, engine, params);
            for (name, want) in r["photos"].as_object().unwrap() {
                let img = photo(name);
                let got = det.detect_single(&img).unwrap();
                compare(
                    &got,
                    &want[kind.as_str()],
                    params.score_threshold,
                    &format!("{engine:?} {} {name}", kind.as_str()),
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 12);
}

#[test]
fn centerface_at_fixed_shape_matches_the_python_reference_on_both_engines() {
    // The gateway's GPU mode, run here on the CPU: the image in the corner of a black square
    // input, against the reference's own implementation of it.
    let r = reference();
    let params = DetectorParams {
        fixed_shape: Some(true),
        ..reference_params(&r)
    };
    let mut checked = 0;
    for engine in [EngineChoice::Ort, EngineChoice::Tract] {
        let det = detector(DetectorKind::CenterFace, engine, params);
        assert!(det.fixed_shape());
        for (name, want) in r["photos"].as_object().unwrap() {
            let got = det.detect_single(&photo(name)).unwrap();
            compare(
                &got,
                &want["centerface-fixed-shape"],
                params.score_threshold,
                &format!("{engine:?} centerface, fixed shape, {name}"),
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
}
