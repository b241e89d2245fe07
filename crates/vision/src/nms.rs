//! Non-maximum suppression: greedy (CenterFace) and weighted "blending" (MediaPipe BlazeFace).

use crate::Face;

/// Intersection over union of two `[x1, y1, x2, y2]` boxes (0 when either is empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Share of `inner`'s area that lies inside `outer` (0 when `inner` is empty): intersection over the
/// smaller box when `inner` is the smaller one, the "IOS" match metric of tiled detectors (SAHI).
pub fn covered(inner: &[f32; 4], outer: &[f32; 4]) -> f32 {
    let iw = (inner[2].min(outer[2]) - inner[0].max(outer[0])).max(0.0);
    let ih = (inner[3].min(outer[3]) - inner[1].max(outer[1])).max(0.0);
    let area = (inner[2] - inner[0]).max(0.0) * (inner[3] - inner[1]).max(0.0);
    if area <= 0.0 { 0.0 } else { iw * ih / area }
}

fn by_score_desc(faces: &mut [Face]) {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
}

/// Greedy NMS: keep the best box, drop every other box overlapping it by more than `threshold`.
pub fn greedy(mut faces: Vec<Face>, threshold: f32) -> Vec<Face> {
    by_score_desc(&mut faces);
    let mut kept: Vec<Face> = Vec::new();
    for f in faces {
        if kept.iter().all(|k| iou(&k.bbox, &f.bbox) <= threshold) {
            kept.push(f);
        }
    }
    kept
}

/// Weighted NMS: the best box and every box overlapping it by more than `threshold` are replaced by
/// their score-weighted average (box and landmarks), with the best box's score.
pub fn weighted(faces: Vec<Face>, threshold: f32) -> Vec<Face> {
    let tagged = faces.into_iter().map(|f| (f, ())).collect();
    weighted_tagged(tagged, threshold)
        .into_iter()
        .map(|(f, _)| f)
        .collect()
}

/// [`weighted`] over detections that carry a tag (where each was found), giving with each merged
/// face the tags of the detections merged into it.
pub fn weighted_tagged<T>(mut faces: Vec<(Face, T)>, threshold: f32) -> Vec<(Face, Vec<T>)> {
    faces.sort_by(|a, b| b.0.score.total_cmp(&a.0.score));
    let mut out = Vec::new();
    while !faces.is_empty() {
        let top = faces[0].0.bbox;
        let (cluster, rest): (Vec<_>, Vec<_>) = faces
            .into_iter()
            .partition(|(f, _)| iou(&top, &f.bbox) > threshold || f.bbox == top);
        faces = rest;
        let total: f32 = cluster.iter().map(|(f, _)| f.score).sum();
        let mut merged = cluster[0].0.clone();
        if total > 0.0 && cluster.len() > 1 {
            let mut bbox = [0.0f32; 4];
            let mut lms = vec![[0.0f32; 2]; merged.landmarks.len()];
            for (f, _) in &cluster {
                let w = f.score / total;
                for (b, v) in bbox.iter_mut().zip(f.bbox) {
                    *b += v * w;
                }
                for (l, v) in lms.iter_mut().zip(&f.landmarks) {
                    l[0] += v[0] * w;
                    l[1] += v[1] * w;
                }
            }
            merged.bbox = bbox;
            if cluster.iter().all(|(f, _)| f.landmarks.len() == lms.len()) {
                merged.landmarks = lms;
            }
        }
        out.push((merged, cluster.into_iter().map(|(_, t)| t).collect()));
    }
    out
}

/// Folds partial detections into the face they are part of: a box of which more than `min_cover` of
/// the area lies inside a better-scoring (or, at equal scores, larger) box is merged into that box,
/// which grows to the union of the two so that nothing either box covered is left out. A tile whose
/// edge cuts through a face sees half a face and reports it as a small face of its own; IoU cannot
/// tell that from a second face (a small box inside a large one has a low IoU), coverage can.
pub fn fold_nested(faces: Vec<Face>, min_cover: f32) -> Vec<Face> {
    let tagged = faces.into_iter().map(|f| (f, Vec::<()>::new())).collect();
    fold_nested_tagged(tagged, min_cover)
        .into_iter()
        .map(|(f, _)| f)
        .collect()
}

/// [`fold_nested`] over faces with tags (see [`weighted_tagged`]): a folded face's tags join those of
/// the face it is folded into.
pub fn fold_nested_tagged<T>(
    mut faces: Vec<(Face, Vec<T>)>,
    min_cover: f32,
) -> Vec<(Face, Vec<T>)> {
    let area = |f: &Face| (f.bbox[2] - f.bbox[0]).max(0.0) * (f.bbox[3] - f.bbox[1]).max(0.0);
    faces.sort_by(|(a, _), (b, _)| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| area(b).total_cmp(&area(a)))
    });
    let mut kept: Vec<(Face, Vec<T>)> = Vec::with_capacity(faces.len());
    for (f, tags) in faces {
        match kept
            .iter_mut()
            .find(|(k, _)| covered(&f.bbox, &k.bbox) > min_cover)
        {
            Some((k, k_tags)) => {
                k.bbox = [
                    k.bbox[0].min(f.bbox[0]),
                    k.bbox[1].min(f.bbox[1]),
                    k.bbox[2].max(f.bbox[2]),
                    k.bbox[3].max(f.bbox[3]),
                ];
                k_tags.extend(tags);
            }
            None => kept.push((f, tags)),
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(b: [f32; 4], s: f32) -> Face {
        Face {
            bbox: b,
            score: s,
            landmarks: vec![[b[0], b[1]]],
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert!(
            (iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 50.0 / 150.0).abs() < 1e-6
        );
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn greedy_keeps_best_of_overlapping_and_all_separate() {
        let out = greedy(
            vec![
                face([0.0, 0.0, 10.0, 10.0], 0.6),
                face([1.0, 0.0, 11.0, 10.0], 0.9),
                face([50.0, 50.0, 60.0, 60.0], 0.5),
            ],
            0.3,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        assert_eq!(out[0].bbox, [1.0, 0.0, 11.0, 10.0]);
    }

    #[test]
    fn a_partial_face_inside_a_face_is_folded_into_it() {
        let out = fold_nested(
            vec![
                // Lower half of the face below, cut by a tile edge: 77 % of it inside the face.
                face([933.0, 150.0, 994.0, 212.0], 0.52),
                face([904.0, 80.0, 1021.0, 198.0], 0.95),
                // A second face overlapping the first by a third of its area stays a face.
                face([990.0, 60.0, 1090.0, 160.0], 0.9),
                face([0.0, 0.0, 10.0, 10.0], 0.6),
            ],
            0.6,
        );
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0].score, 0.95);
        assert_eq!(out[0].bbox, [904.0, 80.0, 1021.0, 212.0]);
        assert_eq!(out[1].bbox, [990.0, 60.0, 1090.0, 160.0]);
        assert!((covered(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 100.0, 100.0]) - 0.5).abs() < 1e-6);
        assert_eq!(covered(&[1.0, 1.0, 1.0, 1.0], &[0.0, 0.0, 9.0, 9.0]), 0.0);
    }

    #[test]
    fn tags_follow_the_detections_into_the_faces_they_merge_into() {
        let merged = weighted_tagged(
            vec![
                (face([0.0, 0.0, 100.0, 100.0], 0.9), 256),
                (face([2.0, 0.0, 102.0, 100.0], 0.7), 512),
                (face([300.0, 300.0, 340.0, 340.0], 0.6), 256),
                // The lower part of the first face, as a tile edge cuts it (IoU 0.23, 80 % inside).
                (face([20.0, 60.0, 80.0, 110.0], 0.55), 1024),
            ],
            0.3,
        );
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].1, [256, 512]);
        let folded = fold_nested_tagged(merged, 0.6);
        assert_eq!(folded.len(), 2);
        assert_eq!(folded[0].1, [256, 512, 1024]);
        assert_eq!(folded[1].1, [256]);
    }

    #[test]
    fn weighted_averages_by_score() {
        let out = weighted(
            vec![
                face([0.0, 0.0, 10.0, 10.0], 0.75),
                face([2.0, 0.0, 12.0, 10.0], 0.25),
            ],
            0.3,
        );
        assert_eq!(out.len(), 1);
        assert!((out[0].bbox[0] - 0.5).abs() < 1e-6);
        assert!((out[0].bbox[2] - 10.5).abs() < 1e-6);
        assert_eq!(out[0].score, 0.75);
        assert!((out[0].landmarks[0][0] - 0.5).abs() < 1e-6);
    }
}
