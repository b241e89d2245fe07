//! The web console in a real browser: `web/tests/console.test.mjs` (Node's test runner, playwright-core
//! driving Debian's Chromium) against this gateway with real models. Screenshots are kept under
//! `target/tmp/console-artifacts/`.

use std::process::Command;

use crate::harness::*;

fn console_config(history: &std::path::Path) -> String {
    format!(
        r#"{listeners}
token = "console-test-token"

[[slot]]
name = "faces-v1"
kind = "face"
detector = "centerface"
model = "{center}"
version = "1.0"

[[slot]]
name = "faces-v2"
kind = "face"
detector = "blazeface-back"
model = "{blaze}"
version = "2.0"

[[route]]
name = "faces"
path = "/v1/face"
stable = "faces-v1"
canary = "faces-v2"
sticky = ["header:x-user-id", "ip"]

[[route.match]]
cookie = "ABTEST_FaceV2"
slot = "faces-v2"

[route.ramp]
steps = [5, 20, 50, 100]
interval_s = 600

[[slot]]
name = "asr-v1"
kind = "asr"
family = "transducer"
model_dir = "{asr}"
version = "1.0"

[[route]]
name = "asr"
path = "/v1/asr"
stable = "asr-v1"
auth = "bearer"
[route.bearer]
tokens = ["speech-test-token"]

[history]
path = "{history}"
"#,
        listeners = listeners("max_body_bytes = 20000000"),
        center = repo("models/centerface/centerface.onnx"),
        blaze = repo("models/blazeface/face_detection_back_256x256.onnx"),
        asr = repo("models/asr/zipformer-en-3m"),
        history = history.join("history.db").display(),
    )
}

#[test]
fn the_web_console_works_in_a_real_browser() {
    let web = repo("web");
    assert!(
        std::path::Path::new(&web)
            .join("node_modules/playwright-core")
            .exists(),
        "web/node_modules is missing: run `make setup`"
    );
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&console_config(dir.path()));
    // The reference pipeline's transcript of the clip (../shared golden, expected.json); the slot runs
    // without VAD so that, like the reference, it decodes the file in one pass.
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo(".cache/testdata/asr/expected.json")).unwrap(),
    )
    .unwrap();
    let clip = expected
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == "1.wav")
        .unwrap();
    // The reference pipeline's text of each channel of the two-speaker call.
    let call = call_reference();
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-artifacts");
    let out = Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "tests/",
        ])
        .current_dir(&web)
        .env("CONSOLE_URL", format!("http://{}", gw.data))
        .env("ADMIN_URL", format!("http://{}", gw.admin))
        .env("ADMIN_TOKEN", "console-test-token")
        .env("SPEECH_TOKEN", "speech-test-token")
        .env("PHOTO", repo(".cache/testdata/t1.jpg"))
        .env("SPEECH_FILE", repo(".cache/testdata/asr/1.wav"))
        .env("SPEECH_TEXT", clip["hyp"].as_str().unwrap())
        .env("MIC_WAV", repo(".cache/testdata/asr/0.wav"))
        .env("CALL_FILE", &call.path)
        .env(
            "CALL_TEXTS",
            serde_json::json!(call.channel_texts).to_string(),
        )
        .env("NEW_FACE_MODEL", repo("models/centerface/centerface.onnx"))
        .env("ARTIFACTS", &artifacts)
        .output()
        .expect("run node (make setup installs the console's npm packages)");
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{report}\nscreenshots: {}", artifacts.display());
    assert!(out.status.success(), "browser tests failed:\n{report}");
    for page in [
        "face",
        "face-canary",
        "speech",
        "speech-live",
        "speech-call",
        "operator",
        "phone-face",
    ] {
        assert!(
            artifacts.join(format!("{page}.png")).is_file(),
            "no screenshot of {page}"
        );
    }
}
