//! Face slots through the real binary: routing between detectors, blur correctness, bad input, hot swap.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn blaze() -> String {
    repo("models/blazeface/face_detection_back_256x256.onnx")
}

fn center() -> String {
    repo("models/centerface/centerface.onnx")
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(repo(&format!(".cache/testdata/{name}"))).unwrap()
}

/// `/v1/face`: stable BlazeFace (v1), canary CenterFace (v2), gray users by header or cookie.
fn face_config(weight: f64) -> String {
    format!(
        r#"{}
[[slot]]
name = "faces-v1"
kind = "face"
detector = "blazeface-back"
model = "{}"
version = "1.0"
max_concurrency = 2

[[slot]]
name = "faces-v2"
kind = "face"
detector = "centerface"
model = "{}"
version = "2.0"
max_pixels = 20000000

[[route]]
name = "faces"
path = "/v1/face"
stable = "faces-v1"
canary = "faces-v2"
canary_weight = {weight}
sticky = ["header:x-user-id", "ip"]

[[route.match]]
header = "x-gray-enable"
equals = "true"
slot = "faces-v2"

[[route.match]]
cookie = "ABTEST_FaceV2"
slot = "faces-v2"
"#,
        listeners("max_body_bytes = 20000000"),
        blaze(),
        center()
    )
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    ct: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut rb = c.post(url).header("content-type", ct).body(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn detect_routes_between_blazeface_and_centerface_slots() {
    let gw = Gateway::start(&face_config(0.0));
    let c = client();
    let url = gw.url("/v1/face/detect");

    let r = post(&c, &url, photo("t1.jpg"), "image/jpeg", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-slot"], "faces-v1");
    let v1: Value = r.json().await.unwrap();
    assert_eq!(
        (v1["slot"].as_str(), v1["version"].as_str()),
        (Some("faces-v1"), Some("1.0"))
    );
    assert_eq!(
        (v1["width"].as_u64(), v1["height"].as_u64()),
        (Some(1280), Some(886))
    );
    assert!(v1["faces"].as_array().unwrap().len() >= 5, "{v1}");
    assert!(v1["timings_ms"]["infer"].as_f64().unwrap() > 0.0);

    for headers in [
        &[("x-gray-enable", "true")][..],
        &[("cookie", "ABTEST_FaceV2=1")][..],
    ] {
        let r = post(&c, &url, photo("t1.jpg"), "image/jpeg", headers).await;
        assert_eq!(r.headers()["x-switchyard-slot"], "faces-v2");
        let v2: Value = r.json().await.unwrap();
        assert_eq!(
            v2["faces"].as_array().unwrap().len(),
            6,
            "CenterFace finds all six: {v2}"
        );
        let f = &v2["faces"][0];
        assert_eq!(f["landmarks"].as_array().unwrap().len(), 5);
        assert!(f["score"].as_f64().unwrap() > 0.5);
    }

    // Sticky split at 50 %: each user stays on one detector.
    c.put(gw.admin_url("/admin/routes/faces/weight"))
        .json(&json!({"canary_weight": 50}))
        .send()
        .await
        .unwrap();
    let small = photo("astronaut.png");
    let mut seen = std::collections::HashSet::new();
    for user in ["ana", "bo", "cy", "di", "ed", "fay"] {
        let first = post(&c, &url, small.clone(), "image/png", &[("x-user-id", user)]).await;
        let slot = first.headers()["x-switchyard-slot"]
            .to_str()
            .unwrap()
            .to_string();
        let again = post(&c, &url, small.clone(), "image/png", &[("x-user-id", user)]).await;
        assert_eq!(again.headers()["x-switchyard-slot"].to_str().unwrap(), slot);
        seen.insert(slot);
    }
    assert_eq!(
        seen.len(),
        2,
        "six users at 50 % all landed on one side: {seen:?}"
    );

    let metrics = metrics_text(&c, &gw).await;
    for want in [
        "switchyard_inference_seconds_bucket{slot=\"faces-v2\",stage=\"infer\"",
        "switchyard_inference_seconds_count{slot=\"faces-v1\",stage=\"decode\"}",
        "switchyard_faces_detected_total{slot=\"faces-v2\"}",
        "switchyard_slot_info{slot=\"faces-v1\",kind=\"face\",version=\"1.0\"} 1",
    ] {
        assert!(metrics.contains(want), "missing {want}");
    }
    // Tiled BlazeFace on the CPU: one tile per run (batches are for GPUs); CenterFace has no tiles.
    let v1 = slot_state(&c, &gw, "faces-v1").await;
    assert_eq!(v1["details"]["tile_batch"], 1, "{v1}");
    let v2 = slot_state(&c, &gw, "faces-v2").await;
    assert!(v2["details"]["tile_batch"].is_null(), "{v2}");
    assert_eq!(v2["details"]["detector"], "centerface");
    assert_eq!(v2["details"]["engine"], "ort");
    assert_eq!(v2["details"]["device"], "cpu");
    assert!(
        v2["details"]["model"]
            .as_str()
            .unwrap()
            .ends_with("centerface.onnx")
    );
}

fn decode_png(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8()
}

#[tokio::test]
async fn blur_changes_faces_only_and_accepts_multipart() {
    let gw = Gateway::start(&face_config(0.0));
    let c = client();
    let input = photo("t1.jpg");
    let original = image::load_from_memory(&input).unwrap().to_rgb8();
    let faces: Value = post(
        &c,
        &gw.url("/v1/face/detect"),
        input.clone(),
        "image/jpeg",
        &[("x-gray-enable", "true")],
    )
    .await
    .json()
    .await
    .unwrap();
    let boxes: Vec<[f32; 4]> = faces["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let b = f["box"].as_array().unwrap();
            [0, 1, 2, 3].map(|i| b[i].as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(boxes.len(), 6);

    let r = post(
        &c,
        &gw.url("/v1/face/blur?format=png&style=pixelate"),
        input.clone(),
        "image/jpeg",
        &[("x-gray-enable", "true")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["x-faces"], "6");
    let out = decode_png(&r.bytes().await.unwrap());
    assert_eq!(out.dimensions(), original.dimensions());
    for b in &boxes {
        let (cx, cy) = (((b[0] + b[2]) / 2.0) as u32, ((b[1] + b[3]) / 2.0) as u32);
        let changed = (0..10)
            .flat_map(|dy| (0..10).map(move |dx| (cx - 5 + dx, cy - 5 + dy)))
            .filter(|&(x, y)| out.get_pixel(x, y) != original.get_pixel(x, y))
            .count();
        assert!(changed >= 80, "face at {b:?}: {changed}/100 pixels changed");
    }
    let far = |x: u32, y: u32| {
        boxes.iter().all(|b| {
            let (w, h) = (b[2] - b[0], b[3] - b[1]);
            (x as f32) < b[0] - w
                || (x as f32) > b[2] + w
                || (y as f32) < b[1] - h
                || (y as f32) > b[3] + h
        })
    };
    for y in (0..original.height()).step_by(9) {
        for x in (0..original.width()).step_by(9) {
            if far(x, y) {
                assert_eq!(
                    out.get_pixel(x, y),
                    original.get_pixel(x, y),
                    "pixel {x},{y} far from faces changed"
                );
            }
        }
    }

    // The same through a multipart form, JPEG in and out.
    let form = reqwest::multipart::Form::new()
        .text("note", "ignored")
        .part(
            "image",
            reqwest::multipart::Part::bytes(input)
                .file_name("t1.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        );
    let r = c
        .post(gw.url("/v1/face/blur"))
        .header("x-gray-enable", "true")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        (
            r.headers()["content-type"].to_str().unwrap(),
            r.headers()["x-faces"].to_str().unwrap()
        ),
        ("image/jpeg", "6")
    );
    // t1.jpg is a quality-70 JPEG: the output keeps its quantization tables (quality=auto, the
    // default) and so its size, where quality 90 would make it half as large again.
    use switchyard_vision::imageio::jpeg_tables;
    let tables = jpeg_tables(&photo("t1.jpg")).expect("t1.jpg tables");
    let auto = r.bytes().await.unwrap();
    assert_eq!(jpeg_tables(&auto).as_ref(), Some(&tables));
    let size = photo("t1.jpg").len() as f64;
    assert!(
        auto.len() as f64 <= size * 1.05,
        "{} bytes from {size}",
        auto.len()
    );
    let blur = |q: &'static str| {
        let (c, url) = (c.clone(), gw.url(&format!("/v1/face/blur?quality={q}")));
        async move {
            let headers = [("x-gray-enable", "true")];
            post(&c, &url, photo("t1.jpg"), "image/jpeg", &headers).await
        }
    };
    let r = blur("auto").await;
    assert_eq!(r.bytes().await.unwrap(), auto);
    let r = blur("90").await;
    assert_eq!(r.status(), 200);
    let q90 = r.bytes().await.unwrap();
    assert_ne!(jpeg_tables(&q90).as_ref(), Some(&tables));
    assert!(q90.len() as f64 > size * 1.3, "q90: {} bytes", q90.len());
    for bad in ["0", "best"] {
        let r = blur(bad).await;
        assert_eq!(r.status(), 400, "quality={bad}");
    }
    // How each output was made: the PNG and quality 90 encoded in full; the two JPEGs at the
    // input's quality keep its data away from the six faces; the refused requests made none.
    let metrics = metrics_text(&c, &gw).await;
    for (output, n) in [("kept", 0), ("spliced", 2), ("encoded", 2)] {
        assert_eq!(face_outputs(&metrics, "faces-v2", output), n, "{output}");
    }
}

/// `switchyard_face_outputs_total{slot,output}` in a `/metrics` text (0 when absent).
fn face_outputs(metrics: &str, slot: &str, output: &str) -> u64 {
    let (slot, output) = (format!("slot=\"{slot}\""), format!("output=\"{output}\""));
    metrics
        .lines()
        .find(|l| {
            l.starts_with("switchyard_face_outputs_total{")
                && l.contains(&slot)
                && l.contains(&output)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// A JPEG with an EXIF block saying "rotate 90° clockwise" (orientation 6).
fn jpeg_with_exif_orientation_6() -> Vec<u8> {
    let img = image::load_from_memory(&photo("astronaut.png"))
        .unwrap()
        .to_rgb8();
    let small = image::imageops::crop_imm(&img, 0, 0, 512, 384).to_image();
    let mut jpeg = Vec::new();
    small
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let mut exif = vec![0xFF, 0xE1, 0x00, 34];
    exif.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08");
    exif.extend_from_slice(&[
        0x00, 0x01, 0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00,
    ]);
    exif.extend_from_slice(&[0, 0, 0, 0]);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[tokio::test]
async fn exif_orientation_is_applied_and_metadata_is_stripped() {
    let gw = Gateway::start(&face_config(0.0));
    let c = client();
    let input = jpeg_with_exif_orientation_6();
    assert!(input.windows(4).any(|w| w == b"Exif"));
    let d: Value = post(
        &c,
        &gw.url("/v1/face/detect"),
        input.clone(),
        "image/jpeg",
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        (d["width"].as_u64(), d["height"].as_u64()),
        (Some(384), Some(512)),
        "rotated upright"
    );
    let r = post(&c, &gw.url("/v1/face/blur"), input, "image/jpeg", &[]).await;
    assert_eq!(r.status(), 200);
    let out = r.bytes().await.unwrap();
    assert!(
        !out.windows(4).any(|w| w == b"Exif"),
        "EXIF leaked into the output"
    );
    let decoded = image::load_from_memory(&out).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (384, 512));
}

/// A photo with no face comes back as its own compressed data without its metadata (no second JPEG
/// generation, no encoding cost); anything asked of the output that its data does not give (another
/// quality, another format) is encoded as before.
#[tokio::test]
async fn a_photo_without_faces_comes_back_as_it_was_without_its_metadata() {
    let gw = Gateway::start(&face_config(0.0));
    let c = client();
    // rocket.jpg: no face, an ICC profile (Adobe RGB) and a comment; add EXIF with GPS and a
    // trailer (a motion photo's video) as a phone would.
    let clean = photo("rocket.jpg");
    let mut input = clean[..2].to_vec();
    let gps = b"Exif\0\0MM\0\x2a\0\0\0\x08GPS 51.5N 0.12W";
    input.extend_from_slice(&[0xFF, 0xE1]);
    input.extend_from_slice(&(gps.len() as u16 + 2).to_be_bytes());
    input.extend_from_slice(gps);
    input.extend_from_slice(&clean[2..]);
    input.extend_from_slice(b"ftypmp42 MOTION PHOTO VIDEO");
    // CenterFace (the canary) finds no face on it; tiled BlazeFace takes two textures for faces.
    {
        let slot = "faces-v2";
        let r = post(
            &c,
            &gw.url("/v1/face/blur"),
            input.clone(),
            "image/jpeg",
            &[("x-gray-enable", "true")],
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-switchyard-slot"], slot);
        assert_eq!(r.headers()["x-faces"], "0");
        assert_eq!(r.headers()["content-type"], "image/jpeg");
        let out = r.bytes().await.unwrap().to_vec();
        for secret in [&b"Exif"[..], b"GPS", b"MOTION", b"cmp3.1"] {
            assert!(
                !out.windows(secret.len()).any(|w| w == secret),
                "{slot}: {secret:?} leaked"
            );
        }
        assert!(
            out.windows(12).any(|w| w == b"ICC_PROFILE\0"),
            "{slot}: the profile is kept"
        );
        // The input's own scan, byte for byte, so the same pixels.
        let scan = |b: &[u8]| {
            let sos = b.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
            let eoi = b.windows(2).rposition(|w| w == [0xFF, 0xD9]).unwrap();
            b[sos..eoi].to_vec()
        };
        assert!(
            scan(&out) == scan(&clean),
            "{slot}: not the input's own scan"
        );
        assert!(out.len() < clean.len(), "{slot}: the comment is gone too");
        let pixels = |b: &[u8]| image::load_from_memory(b).unwrap().to_rgb8().into_raw();
        assert!(pixels(&out) == pixels(&clean), "{slot}: other pixels");
    }
    // Asked for another quality or format: encoded, still without metadata.
    for (query, ct) in [("?quality=60", "image/jpeg"), ("?format=png", "image/png")] {
        let r = post(
            &c,
            &gw.url(&format!("/v1/face/blur{query}")),
            input.clone(),
            "image/jpeg",
            &[("x-gray-enable", "true")],
        )
        .await;
        assert_eq!(r.status(), 200, "{query}");
        assert_eq!(r.headers()["content-type"], ct, "{query}");
        let out = r.bytes().await.unwrap();
        assert!(!out.windows(3).any(|w| w == b"GPS"), "{query}");
        if query == "?quality=60" {
            assert!(out.len() < clean.len() * 3 / 4, "{query}: re-encoded at 60");
        }
    }
    let metrics = metrics_text(&c, &gw).await;
    for (output, n) in [("kept", 1), ("spliced", 0), ("encoded", 2)] {
        assert_eq!(face_outputs(&metrics, "faces-v2", output), n, "{output}");
    }
}

/// A lossy WebP with no face, written by libwebp (Pillow) with an ICC profile, EXIF (GPS) and XMP,
/// comes back as its own lossy bitstream without the metadata, where encoding would have made it a
/// lossless file several times larger.
#[tokio::test]
async fn a_lossy_webp_without_faces_keeps_its_bitstream_and_loses_its_metadata() {
    let gw = Gateway::start(&face_config(0.0));
    let c = client();
    let input = std::fs::read(repo(".cache/reference/jpeg/rocket_lossy.webp")).unwrap();
    let codec: Value = serde_json::from_str(
        &std::fs::read_to_string(repo(".cache/reference/image_codec.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        codec["webp_inputs"]["rocket_lossy.webp"]["chunks"],
        json!(["VP8X", "ICCP", "VP8 ", "EXIF", "XMP "]),
        "the input is not the extended format this test is about"
    );
    // RIFF chunks of a WebP: (kind, payload).
    let chunks = |b: &[u8]| {
        let (mut out, mut pos) = (Vec::new(), 12);
        while pos + 8 <= b.len() {
            let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
            out.push((b[pos..pos + 4].to_vec(), b[pos + 8..pos + 8 + len].to_vec()));
            pos += 8 + len + (len & 1);
        }
        out
    };
    let r = post(
        &c,
        &gw.url("/v1/face/blur"),
        input.clone(),
        "image/webp",
        &[("x-gray-enable", "true")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-faces"], "0");
    assert_eq!(r.headers()["content-type"], "image/webp");
    let out = r.bytes().await.unwrap().to_vec();
    for secret in [
        &b"EXIF"[..],
        b"XMP ",
        b"CREATOR-NAME",
        b"Switchyard test camera",
    ] {
        assert!(
            !out.windows(secret.len()).any(|w| w == secret),
            "{secret:?} leaked"
        );
    }
    let (kept, given) = (chunks(&out), chunks(&input));
    let kinds: Vec<&[u8]> = kept.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(kinds, [&b"VP8X"[..], b"ICCP", b"VP8 "]);
    // The same profile and lossy bitstream, byte for byte; the header announces no EXIF or XMP.
    assert_eq!(kept[1], given[1]);
    assert!(kept[2] == given[2], "not the input's own bitstream");
    assert_eq!(kept[0].1[0] & 0x0C, 0);
    assert_eq!(kept[0].1[1..], given[0].1[1..]);
    let pixels = |b: &[u8]| image::load_from_memory(b).unwrap().to_rgb8().into_raw();
    assert!(pixels(&out) == pixels(&input), "other pixels");
}

/// The start of a PNG claiming `w`×`h` pixels: header and the first bytes of pixel data.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x0a, 0x00, 0xf5, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x0a,
            0x00, 0x01,
        ],
    );
    out
}

#[tokio::test]
async fn bad_images_get_clear_client_errors_and_nothing_breaks() {
    let gw = Gateway::start(&face_config(0.0));
    let c = client();
    let url = gw.url("/v1/face/blur");
    let jpeg = photo("t1.jpg");
    let bomb = png_bomb(100_000, 100_000);
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "text body",
            b"hello".to_vec(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "garbage",
            b"definitely not an image".to_vec(),
            "image/jpeg",
            400,
            "bad_image",
        ),
        ("empty", Vec::new(), "image/jpeg", 400, "bad_image"),
        (
            "truncated",
            jpeg[..jpeg.len() / 3].to_vec(),
            "image/jpeg",
            400,
            "bad_image",
        ),
        (
            "gif",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
            "image/gif",
            415,
            "unsupported_image",
        ),
        (
            "decompression bomb",
            bomb,
            "image/png",
            413,
            "image_too_large",
        ),
        (
            "bad multipart",
            b"--x\r\n\r\n".to_vec(),
            "multipart/form-data; boundary=x",
            400,
            "bad_multipart",
        ),
    ];
    for (what, body, ct, status, code) in cases {
        let r = post(&c, &url, body, ct, &[]).await;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
    }
    let r = post(
        &c,
        &gw.url("/v1/face/blur?style=swirl"),
        jpeg.clone(),
        "image/jpeg",
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = c.get(gw.url("/v1/face/blur")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Over the body limit: 413 before decoding (or, as the gateway reads at most 8 MiB of a refused
    // body, a reset while this client is still sending the rest).
    let r = c
        .post(&url)
        .header("content-type", "image/jpeg")
        .body(vec![0xFF; 21_000_000])
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    // Still healthy.
    let r = post(&c, &url, jpeg, "image/jpeg", &[]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn hot_swap_under_load_drops_nothing_and_failed_loads_change_nothing() {
    let gw = Gateway::start(&face_config(0.0));
    let c = client();
    let url = gw.url("/v1/face/detect");
    let image = photo("astronaut.png");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (c, url, image, stop) = (c.clone(), url.clone(), image.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = post(&c, &url, image.clone(), "image/png", &[]).await;
                assert_eq!(r.status(), 200, "request failed during a swap");
                let version = r.headers()["x-switchyard-version"]
                    .to_str()
                    .unwrap()
                    .to_string();
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["version"], version.as_str());
                assert_eq!(v["faces"].as_array().unwrap().len(), 1);
                versions.push(version);
            }
            versions
        }));
    }
    let load = |body: Value| {
        let c = c.clone();
        let url = gw.admin_url("/admin/slots/faces-v1/load");
        async move {
            let r = c.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let mut valid = vec!["1.0".to_string()];
    for i in 0..5 {
        let (detector, model) = if i % 2 == 0 {
            ("centerface", center())
        } else {
            ("blazeface-back", blaze())
        };
        let version = format!("1.{}", i + 1);
        let (status, body) =
            load(json!({"model": model, "detector": detector, "version": version})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["details"]["version"], version.as_str());
        valid.push(version);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Failed loads: missing file, a file that is not that detector's model, garbage. The slot keeps
    // serving 1.5.
    let junk = std::env::temp_dir().join(format!("junk-{}.onnx", std::process::id()));
    std::fs::write(&junk, b"not a model").unwrap();
    for body in [
        json!({"model": "/nonexistent/model.onnx", "version": "9"}),
        json!({"model": center(), "detector": "blazeface-back", "version": "9"}),
        json!({"model": junk.display().to_string(), "version": "9"}),
    ] {
        let (status, v) = load(body.clone()).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (422, Some("model_load_failed")),
            "{body}: {v}"
        );
    }
    let (status, v) = load(json!({"modle": "x"})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_body"))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = std::collections::HashSet::new();
    for h in clients {
        for v in h.await.unwrap() {
            assert!(valid.contains(&v), "response named version {v}");
            seen.insert(v);
        }
    }
    assert!(seen.len() >= 3, "the clients saw only {seen:?}");
    let s = slot_state(&c, &gw, "faces-v1").await;
    assert_eq!(
        (s["version"].as_str(), s["details"]["detector"].as_str()),
        (Some("1.5"), Some("centerface"))
    );
    let r = c
        .post(gw.admin_url("/admin/slots/nope/load"))
        .json(&json!({"model": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_flooded_model_slot_refuses_with_503_and_retry_after_and_recovers() {
    let cfg = format!(
        r#"{}
[[slot]]
name = "faces"
kind = "face"
detector = "blazeface-back"
model = "{}"
max_concurrency = 1
queue_depth = 1
inject_latency_ms = 400

[[route]]
name = "faces"
path = "/v1/face"
stable = "faces"
"#,
        listeners(""),
        blaze()
    );
    let gw = Gateway::start(&cfg);
    let c = client();
    let photo = photo("astronaut.png");
    let send = |c: reqwest::Client, url: String, body: Vec<u8>| async move {
        let r = c
            .post(url)
            .header("content-type", "image/png")
            .body(body)
            .send()
            .await
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        (status, retry, v)
    };
    let jobs: Vec<_> = (0..6)
        .map(|_| tokio::spawn(send(c.clone(), gw.url("/v1/face/detect"), photo.clone())))
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for j in jobs {
        let (status, retry, v) = j.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                refused += 1;
                assert_eq!(retry.as_deref(), Some("1"));
                assert_eq!(v["error"]["code"], "overloaded");
            }
            s => panic!("unexpected {s}: {v}"),
        }
    }
    // One runs, one waits: the other four are refused at once.
    assert!(ok >= 2 && refused >= 3, "{ok} ok, {refused} refused");
    let (status, _, _) = send(c.clone(), gw.url("/v1/face/detect"), photo.clone()).await;
    assert_eq!(status, 200, "recovers as soon as the queue drains");
    let m = metrics_text(&c, &gw).await;
    assert!(m.contains("switchyard_admission_rejected_total{slot=\"faces\"}"));
}

#[tokio::test]
async fn the_result_cache_hits_on_the_same_photo_and_misses_on_other_options_or_versions() {
    let cfg = face_config(0.0)
        + "\n[route.cache]\nmax_bytes = 50000000\nmax_entry_bytes = 10000000\nttl_s = 600\n";
    let gw = Gateway::start(&cfg);
    let c = client();
    let image = photo("t1.jpg");
    let blur = |query: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let (c, url, image) = (
            c.clone(),
            gw.url(&format!("/v1/face/blur?{query}")),
            image.clone(),
        );
        async move {
            let r = post(&c, &url, image, "image/jpeg", headers).await;
            assert_eq!(r.status(), 200);
            let cache = r.headers()["x-switchyard-cache"]
                .to_str()
                .unwrap()
                .to_string();
            let slot = r.headers()["x-switchyard-slot"]
                .to_str()
                .unwrap()
                .to_string();
            (cache, slot, r.bytes().await.unwrap())
        }
    };
    let (first, slot, body1) = blur("style=pixelate", &[]).await;
    assert_eq!((first.as_str(), slot.as_str()), ("miss", "faces-v1"));
    let (second, slot, body2) = blur("style=pixelate", &[]).await;
    assert_eq!((second.as_str(), slot.as_str()), ("hit", "faces-v1"));
    assert_eq!(body1, body2, "a hit returns the stored answer");
    // Other options, another slot: other results.
    let (other, _, body3) = blur("style=mask", &[]).await;
    assert_eq!(other, "miss");
    assert_ne!(body1, body3);
    let (canary, slot, _) = blur("style=pixelate", &[("x-gray-enable", "true")]).await;
    assert_eq!((canary.as_str(), slot.as_str()), ("miss", "faces-v2"));
    // A new model version in the slot: the old results are not served.
    let r = c
        .post(gw.admin_url("/admin/slots/faces-v1/load"))
        .json(&json!({"model": center(), "detector": "centerface", "version": "1.1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (after_swap, _, body4) = blur("style=pixelate", &[]).await;
    assert_eq!(after_swap, "miss");
    assert_ne!(body1, body4, "CenterFace blurs other boxes than BlazeFace");
    let (again, _, body5) = blur("style=pixelate", &[]).await;
    assert_eq!(again, "hit");
    assert_eq!(body4, body5);
    // A bad request is answered (400) and not cached.
    for _ in 0..2 {
        let r = post(
            &c,
            &gw.url("/v1/face/blur"),
            b"not an image".to_vec(),
            "image/jpeg",
            &[],
        )
        .await;
        assert_eq!(r.status(), 400);
        assert_ne!(
            r.headers().get("x-switchyard-cache").map(|v| v.as_bytes()),
            Some(&b"hit"[..])
        );
    }
    let m = metrics_text(&c, &gw).await;
    assert!(
        m.contains(r#"switchyard_cache_requests_total{route="faces",result="hit"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"switchyard_cache_stored_total{route="faces"} 4"#),
        "{m}"
    );
    let bytes: f64 = m
        .lines()
        .find(|l| l.starts_with("switchyard_cache_bytes{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        bytes > 4.0 * 50_000.0,
        "{bytes} bytes for four blurred photos"
    );
    // The model's memory, as ONNX Runtime's arena reports it, in the admin API and the metrics.
    let state = slot_state(&c, &gw, "faces-v1").await;
    let mem = &state["details"]["memory"];
    assert_eq!(mem["device"], "cpu", "{state}");
    assert_eq!(state["details"]["memory_devices"], json!([mem]), "{state}");
    // ONNX Runtime sessions: `max_concurrency` (2), at most one per core; on the CPU, the image's
    // own size for CenterFace (no fixed shape) and none for BlazeFace.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert_eq!(state["details"]["sessions"], 2.min(cores), "{state}");
    assert_eq!(state["details"]["fixed_shape"], false, "{state}");
    let reserved = mem["reserved_bytes"].as_u64().unwrap();
    assert!(reserved > 1_000_000, "{mem}");
    assert!(mem["peak_bytes"].as_u64().unwrap() >= mem["in_use_bytes"].as_u64().unwrap());
    let m = metrics_text(&c, &gw).await;
    assert!(
        m.contains(&format!(
            r#"switchyard_model_memory_bytes{{slot="faces-v1",device="cpu",state="reserved"}} {reserved}"#
        )),
        "{m}"
    );
    // The decoded photos' buffers kept for the next request (t1.jpg decodes to 3 MB of pixels).
    let spare: f64 = m
        .lines()
        .find(|l| l.starts_with(r#"switchyard_spare_buffer_bytes{pool="pixels"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no pixel spares in {m}"));
    assert!(
        (1_000_000.0..=64.0 * 1024.0 * 1024.0).contains(&spare),
        "{spare}"
    );
    assert!(
        m.contains(r#"switchyard_spare_buffer_bytes{pool="floats"}"#),
        "{m}"
    );
    // Resizers that made the detectors' inputs, kept with their intermediate images.
    assert!(
        m.lines().any(|l| l
            .strip_prefix(r#"switchyard_spare_buffer_bytes{pool="resizers"} "#)
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)),
        "{m}"
    );
}

#[test]
fn the_blur_cli_processes_many_photos_in_parallel_and_reports_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, &photo("t1.jpg")[..5000]).unwrap();
    let out = dir.path().join("out");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "blur",
            "--detector",
            "centerface",
            "--model",
            &center(),
            "-o",
        ])
        .arg(&out)
        .arg(repo(".cache/testdata/t1.jpg"))
        .arg(repo(".cache/testdata/astronaut.png"))
        .arg(repo(".cache/testdata/rocket.jpg"))
        .arg(&broken)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "one input is broken: {err}");
    assert!(err.contains("broken.jpg"), "{err}");
    assert!(err.contains("4 images, 7 faces blurred, 1 failed"), "{err}");
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["astronaut.png", "rocket.jpg", "t1.jpg"]);
    let blurred = image::open(out.join("t1.jpg")).unwrap().to_rgb8();
    let original = image::open(repo(".cache/testdata/t1.jpg"))
        .unwrap()
        .to_rgb8();
    assert_eq!(blurred.dimensions(), original.dimensions());
    // Inside the first reference face (CenterFace box ≈ 745,345–844,481) the pixels changed a lot.
    let diff: f64 = (360..470)
        .flat_map(|y| (760..830).map(move |x| (x, y)))
        .map(|(x, y)| {
            let (a, b) = (blurred.get_pixel(x, y), original.get_pixel(x, y));
            (0..3)
                .map(|c| (a[c] as f64 - b[c] as f64).abs())
                .sum::<f64>()
                / 3.0
        })
        .sum::<f64>()
        / (110.0 * 70.0);
    assert!(diff > 10.0, "mean change inside the face {diff}");

    // JPEG quality as on `/blur`: the input's tables by default, libjpeg's at `--quality N`.
    use switchyard_vision::imageio::jpeg_tables;
    let t1 = jpeg_tables(&photo("t1.jpg"));
    let written = std::fs::read(out.join("t1.jpg")).unwrap();
    assert!(t1.is_some() && jpeg_tables(&written) == t1);
    let blur_at = |quality: &str| {
        let out = dir.path().join(format!("q{quality}"));
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["blur", "--detector", "centerface", "--model", &center()])
            .args(["--quality", quality, "-o"])
            .arg(&out)
            .arg(repo(".cache/testdata/t1.jpg"))
            .output()
            .unwrap();
        (run.status.success(), std::fs::read(out.join("t1.jpg")).ok())
    };
    let (ok, q90) = blur_at("90");
    assert!(ok);
    let q90 = q90.unwrap();
    assert!(jpeg_tables(&q90) != t1 && q90.len() > written.len());
    assert_eq!(blur_at("0"), (false, None));
}

/// A slot's own `device` wins over `[engine] device`: with the engine on a GPU (which this machine
/// does not have, and no `device_fallback`), a slot pinned to the CPU loads, serves and says so.
/// Without the override the slot would not load and the gateway would not start.
#[tokio::test]
async fn a_slot_device_overrides_the_engine_device() {
    let config = format!(
        r#"{}
[engine]
device = "cuda:0"

[[slot]]
name = "faces-cpu"
kind = "face"
detector = "blazeface-front"
model = "{}"
device = "cpu"

[[route]]
name = "faces"
path = "/v1/face"
stable = "faces-cpu"
"#,
        listeners(""),
        repo("models/blazeface/face_detection_front_128x128.onnx")
    );
    let gw = Gateway::start(&config);
    let c = client();
    let r = post(
        &c,
        &gw.url("/v1/face/detect"),
        photo("astronaut.png"),
        "image/png",
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["faces"].as_array().map(Vec::len), Some(1), "{v}");
    let state = slot_state(&c, &gw, "faces-cpu").await;
    assert_eq!(state["details"]["device"], "cpu", "{state}");
}

#[tokio::test]
async fn the_first_photo_after_a_load_or_a_swap_finds_the_model_warm() {
    // CenterFace on the CPU runs each photo at its own input shape; the slot's load and every hot
    // swap run it once at a 16:9 photo's shape (1280×736) on each of its sessions, so that the
    // first 1080p photos, alone or two at once, do not grow ONNX Runtime's arenas (and pay their
    // page faults): the reserved memory stays as it was.
    let gw = Gateway::start(&face_config(0.0));
    let c = client();
    let img = image::load_from_memory(&photo("t1.jpg")).unwrap();
    let img = img.resize_exact(1920, 1080, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    img.to_rgb8()
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let reserved = |s: Value| s["details"]["memory"]["reserved_bytes"].as_u64().unwrap();
    for version in ["2.0", "2.1"] {
        if version != "2.0" {
            let r = c
                .post(gw.admin_url("/admin/slots/faces-v2/load"))
                .json(&json!({"model": center(), "detector": "centerface", "version": version}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let before = reserved(slot_state(&c, &gw, "faces-v2").await);
        let url = gw.url("/v1/face/detect");
        let r = post(
            &c,
            &url,
            jpeg.clone(),
            "image/jpeg",
            &[("x-gray-enable", "true")],
        )
        .await;
        assert_eq!(r.headers()["x-switchyard-version"], version);
        let v: Value = r.json().await.unwrap();
        assert!(!v["faces"].as_array().unwrap().is_empty(), "{v}");
        let after = reserved(slot_state(&c, &gw, "faces-v2").await);
        assert_eq!(
            after, before,
            "version {version}: the first photo grew the arena"
        );
        // Two at once take the pool's one-core sessions, warmed as well.
        let overlapping = || {
            post(
                &c,
                &url,
                jpeg.clone(),
                "image/jpeg",
                &[("x-gray-enable", "true")],
            )
        };
        let (a, b) = tokio::join!(overlapping(), overlapping());
        assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
        let after = reserved(slot_state(&c, &gw, "faces-v2").await);
        assert_eq!(
            after, before,
            "version {version}: overlapping photos grew the pool's arenas"
        );
    }
}
