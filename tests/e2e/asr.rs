//! ASR slots through the real binary: file, batch and WebSocket recognition of real speech, resampled
//! inputs, history across restarts, hot swap, bad input. Expected texts are the Python/onnxruntime
//! reference pipeline's (`.cache/testdata/asr/expected.json`), never Switchyard's own output.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

fn expected_hyp(file: &str) -> String {
    let v: Value =
        serde_json::from_slice(&std::fs::read(repo(".cache/testdata/asr/expected.json")).unwrap())
            .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == file)
        .unwrap()["hyp"]
        .as_str()
        .unwrap()
        .to_string()
}

fn speech(rel: &str) -> Vec<u8> {
    std::fs::read(repo(rel)).unwrap()
}

/// `/v1/asr`: stable ORT without VAD (v1), canary tract (v2) for gray users; history in `db`.
fn asr_config(db: &str, extra_slot: &str) -> String {
    format!(
        r#"{}
[history]
path = "{db}"

[[slot]]
name = "asr-v1"
kind = "asr"
family = "transducer"
model_dir = "{model}"
version = "1.0"
engine = "ort"
max_audio_seconds = 30
stream_idle_timeout_ms = 1500
{extra_slot}

[[slot]]
name = "asr-v2"
kind = "asr"
model_dir = "{model}"
vad = "{vad}"
version = "2.0"
engine = "tract"

[[route]]
name = "asr"
path = "/v1/asr"
stable = "asr-v1"
canary = "asr-v2"
canary_weight = 0
sticky = ["header:x-user-id", "ip"]

[[route.match]]
header = "x-gray-enable"
equals = "true"
slot = "asr-v2"
"#,
        listeners(""),
        model = repo("models/asr/zipformer-en-3m"),
        vad = repo("models/silero-vad/silero_vad_16k_sequence.onnx"),
    )
}

async fn transcribe(
    c: &reqwest::Client,
    gw: &Gateway,
    body: Vec<u8>,
    ct: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut rb = c
        .post(gw.url("/v1/asr/transcribe"))
        .header("content-type", ct)
        .body(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn files_are_transcribed_like_the_reference_on_both_slots() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&asr_config(
        &dir.path().join("h.db").display().to_string(),
        "",
    ));
    let c = client();
    let want = expected_hyp("0.wav");
    let wav = speech(".cache/testdata/asr/0.wav");

    // Raw body on the stable slot (ORT).
    let (s, v) = transcribe(&c, &gw, wav.clone(), "audio/wav", &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["text"], want);
    assert_eq!(v["slot"], "asr-v1");
    assert_eq!(v["version"], "1.0");
    assert!(
        (v["duration_s"].as_f64().unwrap() - 6.625).abs() < 0.01,
        "{v}"
    );
    assert!(v["rtf"].as_f64().unwrap() > 0.0);
    assert!(v["timings_ms"]["encoder"].as_f64().unwrap() > 0.0);
    let segs = v["segments"].as_array().unwrap();
    assert!(!segs.is_empty());
    assert!(
        segs.iter()
            .all(|s| s["end"].as_f64() >= s["start"].as_f64())
    );

    // Multipart on the canary (tract + VAD): same words, segment times from the VAD.
    let form = reqwest::multipart::Form::new().part(
        "audio",
        reqwest::multipart::Part::bytes(wav.clone()).file_name("0.wav"),
    );
    let r = c
        .post(gw.url("/v1/asr/transcribe"))
        .header("x-gray-enable", "true")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["slot"], "asr-v2");
    assert_eq!(v["text"], want);
    let first = &v["segments"][0];
    assert!(
        first["start"].as_f64().unwrap() > 0.0,
        "VAD skips the leading silence: {v}"
    );

    // Headerless 16-bit PCM (pocketsphinx goforward.raw) as audio/l16.
    let raw = std::fs::read("/usr/share/pocketsphinx/test/data/goforward.raw").unwrap();
    let (s, v) = transcribe(&c, &gw, raw, "audio/l16; rate=16000; channels=1", &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["text"], expected_hyp("goforward.raw"));

    // Other rates, channel counts and sample formats (resampled by numpy, not by Switchyard).
    for (file, exact) in [
        ("0_22050_stereo_s16.wav", true),
        ("0_44100_stereo_s24.wav", true),
        ("0_48000_stereo_f32.wav", true),
        ("0_44100_stereo.flac", true),
        ("0_48000_stereo.ogg", true),
        // Lossy MP3 and Opus, and 8 kHz with no energy above 4 kHz where the model's top mel bins
        // look: one word may change.
        ("0_22050_stereo.mp3", false),
        ("0_48000_stereo.opus", false),
        ("0_48000_mono.webm", false),
        ("0_8000_stereo_s16.wav", false),
        // Telephone audio: 8 kHz G.711 µ-law and A-law WAV.
        ("0_8000_mono_ulaw.wav", false),
        ("0_8000_mono_alaw.wav", false),
    ] {
        let (s, v) = transcribe(
            &c,
            &gw,
            speech(&format!(".cache/reference/asr/{file}")),
            "application/octet-stream",
            &[],
        )
        .await;
        assert_eq!(s, 200, "{file}: {v}");
        let got = v["text"].as_str().unwrap();
        if exact {
            assert_eq!(got, want, "{file}");
        } else {
            let (e, n) = switchyard_speech::word_errors(&want, got);
            assert!(e <= 1 && n == 18, "{file}: {got}");
        }
    }

    // GSM 6.10 WAV, what PBXs record calls in (13 kbit/s): heard as libsndfile's decoding of the
    // same file is (the codec costs this small model several words of the 18).
    let mut texts = Vec::new();
    for file in ["0_8000_mono_gsm610.wav", "0_8000_mono_gsm610.decoded.wav"] {
        let body = speech(&format!(".cache/reference/asr/{file}"));
        let (s, v) = transcribe(&c, &gw, body, "audio/wav", &[]).await;
        assert_eq!(s, 200, "{file}: {v}");
        texts.push(v["text"].as_str().unwrap().to_string());
    }
    assert_eq!(texts[0], texts[1]);
    assert!(texts[0].starts_with("AFTER EARLY"), "{}", texts[0]);

    // Metrics.
    let m = metrics_text(&c, &gw).await;
    for series in [
        "switchyard_asr_audio_seconds_total{slot=\"asr-v1\"}",
        "switchyard_asr_rtf_count{slot=\"asr-v1\"}",
        "switchyard_asr_streams_active{slot=\"asr-v1\"}",
        "switchyard_inference_seconds_count{slot=\"asr-v1\",stage=\"encoder\"}",
    ] {
        assert!(m.contains(series), "{series} missing");
    }
}

#[tokio::test]
async fn bad_audio_gets_clear_4xx_and_the_slot_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&asr_config(
        &dir.path().join("h.db").display().to_string(),
        "",
    ));
    let c = client();
    let wav = speech(".cache/testdata/asr/0.wav");
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "not audio",
            b"hello, world".to_vec(),
            "audio/wav",
            400,
            "bad_audio",
        ),
        (
            "truncated header",
            wav[..30].to_vec(),
            "audio/wav",
            400,
            "bad_audio",
        ),
        (
            "no samples",
            wav[..44].to_vec(),
            "audio/wav",
            400,
            "bad_audio",
        ),
        ("empty", Vec::new(), "audio/wav", 400, "bad_audio"),
        (
            // symphonia's Matroska reader panics on this one; the slot answers 400 all the same.
            "truncated WebM",
            speech(".cache/reference/asr/0_48000_mono.webm")[..15_000].to_vec(),
            "audio/webm",
            400,
            "bad_audio",
        ),
        (
            "wrong type",
            wav.clone(),
            "image/png",
            415,
            "unsupported_media_type",
        ),
        (
            "absurd rate",
            vec![0; 64],
            "audio/l16; rate=1",
            400,
            "bad_audio",
        ),
    ];
    for (what, body, ct, status, code) in cases {
        let (s, v) = transcribe(&c, &gw, body, ct, &[]).await;
        assert_eq!(s, status, "{what}: {v}");
        assert_eq!(v["error"]["code"], code, "{what}");
    }
    // Longer than max_audio_seconds (30 s): five copies of 1.wav's 16.7 s as raw PCM.
    let one = speech(".cache/testdata/asr/1.wav");
    let long: Vec<u8> = std::iter::repeat_n(&one[44..], 2)
        .flatten()
        .copied()
        .collect();
    let (s, v) = transcribe(&c, &gw, long, "audio/l16; rate=16000", &[]).await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["error"]["code"], "audio_too_long");
    // Unknown endpoint, WebSocket endpoint without upgrade.
    let r = c.get(gw.url("/v1/asr/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c.get(gw.url("/v1/asr/stream")).send().await.unwrap();
    assert_eq!(r.status(), 426);
    // Still serving.
    let (s, v) = transcribe(&c, &gw, wav, "audio/wav", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(v["text"], expected_hyp("0.wav"));
}

#[tokio::test]
async fn batch_returns_one_result_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&asr_config(
        &dir.path().join("h.db").display().to_string(),
        "batch_concurrency = 2",
    ));
    let c = client();
    let files = [
        ("0.wav", speech(".cache/testdata/asr/0.wav")),
        ("1.wav", speech(".cache/testdata/asr/1.wav")),
        ("broken.wav", b"RIFF....WAVEjunk".to_vec()),
        (
            "001.wav",
            std::fs::read("/usr/share/pocketsphinx/test/data/cards/001.wav").unwrap(),
        ),
    ];
    let mut form = reqwest::multipart::Form::new();
    for (name, bytes) in &files {
        form = form.part(
            "audio",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string()),
        );
    }
    let r = c
        .post(gw.url("/v1/asr/batch"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for (res, (name, _)) in results.iter().zip(&files) {
        assert_eq!(res["file"], *name);
        if *name == "broken.wav" {
            assert_eq!(res["error"]["code"], "bad_audio", "{res}");
        } else {
            assert_eq!(res["text"], expected_hyp(name), "{name}");
        }
    }
}

#[tokio::test]
async fn a_beam_search_slot_gives_the_reference_beam_text() {
    // `decoding_method = "modified_beam_search"` on the stable slot: 0.wav, where the reference's
    // beam search (tests/reference/asr_beam.py) ends on another word than greedy search.
    let reference: Value =
        serde_json::from_slice(&std::fs::read(repo(".cache/reference/asr_beam.json")).unwrap())
            .unwrap();
    assert_eq!(reference["paths"], 4);
    let want = reference["utterances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["file"] == "0.wav")
        .unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(want, expected_hyp("0.wav"));
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&asr_config(
        &dir.path().join("h.db").display().to_string(),
        "decoding_method = \"modified_beam_search\"\nmax_active_paths = 4",
    ));
    let c = client();
    let (s, v) = transcribe(
        &c,
        &gw,
        speech(".cache/testdata/asr/0.wav"),
        "audio/wav",
        &[],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["slot"], "asr-v1");
    assert_eq!(v["text"], want);
    let s = slot_state(&c, &gw, "asr-v1").await;
    assert_eq!(
        s["details"]["decoding_method"], "modified_beam_search",
        "{s}"
    );
    assert_eq!(s["details"]["max_active_paths"], 4, "{s}");
    assert_eq!(s["details"]["device"], "cpu", "{s}");
}

/// Streams `samples` (16-bit LE PCM at `rate`) in 100 ms messages, paced at `speed`× real time.
async fn stream(
    data: std::net::SocketAddr,
    pcm: &[u8],
    rate: u32,
    speed: f64,
) -> (Vec<Value>, Option<u16>, Option<Duration>) {
    let query = format!("sample_rate={rate}");
    stream_with(data, pcm, &query, (rate as usize / 10) * 2, speed).await
}

/// Streams `pcm` to `/v1/asr/stream?{query}` in messages of `chunk` bytes, one every 100 ms / `speed`.
async fn stream_with(
    data: std::net::SocketAddr,
    pcm: &[u8],
    query: &str,
    chunk: usize,
    speed: f64,
) -> (Vec<Value>, Option<u16>, Option<Duration>) {
    let url = format!("ws://{data}/v1/asr/stream?{query}");
    let (ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), 101);
    let started = Instant::now();
    let mut first_partial = None;
    let mut msgs = Vec::new();
    let (mut tx, mut rx) = ws.split();
    let sender = {
        let pcm = pcm.to_vec();
        tokio::spawn(async move {
            for (i, c) in pcm.chunks(chunk).enumerate() {
                let due = Duration::from_secs_f64(i as f64 * 0.1 / speed);
                tokio::time::sleep_until((started + due).into()).await;
                tx.send(Message::Binary(c.to_vec().into())).await.unwrap();
            }
            tx.send(Message::Text(r#"{"event":"end"}"#.into()))
                .await
                .unwrap();
            tx
        })
    };
    let mut close = None;
    while let Some(m) = rx.next().await {
        match m.unwrap() {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "partial" && first_partial.is_none() {
                    first_partial = Some(started.elapsed());
                }
                msgs.push(v);
            }
            Message::Close(f) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    let _ = sender.await;
    (msgs, close, first_partial)
}

fn finals_text(msgs: &[Value]) -> String {
    msgs.iter()
        .filter(|m| m["type"] == "final")
        .map(|m| m["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn a_websocket_stream_gives_the_file_text_and_bad_streams_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&asr_config(
        &dir.path().join("h.db").display().to_string(),
        "",
    ));
    let c = client();
    let wav = speech(".cache/testdata/asr/1.wav");
    let (_, file) = transcribe(&c, &gw, wav.clone(), "audio/wav", &[]).await;

    // 1.wav at 4× real time: partial results as it goes, and the file endpoint's text at the end.
    let (msgs, close, first_partial) = stream(gw.data, &wav[44..], 16_000, 4.0).await;
    assert_eq!(close, Some(1000));
    let partials = msgs.iter().filter(|m| m["type"] == "partial").count();
    assert!(partials >= 5, "{partials} partials");
    assert!(first_partial.is_some());
    assert_eq!(finals_text(&msgs), file["text"].as_str().unwrap());
    assert_eq!(finals_text(&msgs), expected_hyp("1.wav"));
    for f in msgs.iter().filter(|m| m["type"] == "final") {
        assert!(f["end"].as_f64().unwrap() > f["start"].as_f64().unwrap());
    }

    // A stream that stops sending is closed after the idle timeout (1.5 s) with 4408.
    let url = format!("ws://{}/v1/asr/stream", gw.data);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.clone()).await.unwrap();
    ws.send(Message::Binary(wav[44..16_044].to_vec().into()))
        .await
        .unwrap();
    let t = Instant::now();
    let mut code = None;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        if let Ok(Message::Close(f)) = m {
            code = f.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(4408));
    assert!(t.elapsed() >= Duration::from_millis(1400));

    // A text message that is not the end event: 1003.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.clone()).await.unwrap();
    ws.send(Message::Text("hello".into())).await.unwrap();
    let mut code = None;
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Close(f) = m {
            code = f.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(1003));

    // A bad sample rate is refused before the upgrade.
    let err = tokio_tungstenite::connect_async(format!("{url}?sample_rate=5"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");

    // No stream is left open (the server counts a stream closed once its close handshake ends).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = metrics_text(&c, &gw).await;
        if m.contains("switchyard_asr_streams_active{slot=\"asr-v1\"} 0") {
            break;
        }
        assert!(Instant::now() < deadline, "streams still open: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn history_keeps_every_result_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/history.db").display().to_string();
    let wav = speech(".cache/testdata/asr/0.wav");
    let c = client();
    {
        let gw = Gateway::start(&asr_config(&db, ""));
        // Concurrent requests on both slots.
        let mut jobs = Vec::new();
        for i in 0..6 {
            let (c, url, wav) = (c.clone(), gw.url("/v1/asr/transcribe"), wav.clone());
            jobs.push(tokio::spawn(async move {
                let gray = if i % 2 == 0 { "true" } else { "false" };
                let r = c
                    .post(url)
                    .header("content-type", "audio/wav")
                    .header("x-gray-enable", gray)
                    .body(wav)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }));
        }
        for j in jobs {
            j.await.unwrap();
        }
        let (s, _, v) = get(&c, &gw.url("/v1/asr/history?limit=100"), &[]).await;
        assert_eq!(s, 200);
        assert_eq!(v["items"].as_array().unwrap().len(), 6);
        let (_, _, v) = get(&c, &gw.url("/v1/asr/history?slot=asr-v2"), &[]).await;
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        for it in items {
            assert_eq!(it["version"], "2.0");
            assert_eq!(it["route"], "asr");
            assert_eq!(it["language"], "en");
            assert_eq!(it["text"], expected_hyp("0.wav"));
            assert!((it["duration_s"].as_f64().unwrap() - 6.625).abs() < 0.01);
            assert!(it["latency_ms"].as_f64().unwrap() > 0.0);
        }
        gw.signal("TERM");
    }
    let gw = Gateway::start(&asr_config(&db, ""));
    let (_, _, v) = get(&c, &gw.url("/v1/asr/history?limit=100"), &[]).await;
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        6,
        "rows survive a restart"
    );
    let (_, _, v) = get(&c, &gw.url("/v1/asr/history?since=4102444800"), &[]).await;
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        0,
        "since filters by time"
    );
    let (s, _, v) = get(&c, &gw.url("/v1/asr/history?limit=0"), &[]).await;
    assert_eq!(s, 400, "{v}");
    let r = c.get(gw.url("/v1/asr/history.csv")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    assert_eq!(csv.lines().count(), 7);
    assert!(csv.starts_with("id,time,route,slot,version"));
}

#[tokio::test]
async fn hot_swap_keeps_live_streams_on_their_model_and_refuses_bad_models() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&asr_config(
        &dir.path().join("h.db").display().to_string(),
        "",
    ));
    let c = client();
    let wav = speech(".cache/testdata/asr/1.wav");

    // A live stream at real time is under way while the slot swaps to version 1.1.
    let streaming = {
        let pcm = wav[44..].to_vec();
        let data = gw.data;
        tokio::spawn(async move { stream(data, &pcm, 16_000, 2.0).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c
        .post(gw.admin_url("/admin/slots/asr-v1/load"))
        .json(&json!({ "model_dir": repo("models/asr/zipformer-en-3m"), "version": "1.1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (_, v) = transcribe(&c, &gw, wav.clone(), "audio/wav", &[]).await;
    assert_eq!(v["version"], "1.1");
    let (msgs, close, _) = streaming.await.unwrap();
    assert_eq!(close, Some(1000));
    assert_eq!(finals_text(&msgs), expected_hyp("1.wav"));
    // The stream's history row carries the version it started on.
    let (_, _, h) = get(&c, &gw.url("/v1/asr/history"), &[]).await;
    let row = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["file_name"] == "stream")
        .cloned()
        .unwrap();
    assert_eq!(row["version"], "1.0");

    // A folder that is not a model, and one that does not exist: 422, the slot unchanged.
    let not_model = tempfile::tempdir().unwrap();
    std::fs::write(not_model.path().join("tokens.txt"), "<blk> 0\n").unwrap();
    for dir in [
        not_model.path().display().to_string(),
        "/nonexistent/model".to_string(),
    ] {
        let r = c
            .post(gw.admin_url("/admin/slots/asr-v1/load"))
            .json(&json!({ "model_dir": dir, "version": "9.9" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "model_load_failed");
    }
    let (_, v) = transcribe(&c, &gw, wav, "audio/wav", &[]).await;
    assert_eq!(v["version"], "1.1");
}

/// A call with one speaker per channel: a slot with `channels = "split"` recognises each channel
/// as the reference pipeline does alone and merges them in time order; `?channels=` overrides the
/// slot's choice per request; the CLI does the same with `--channels split`.
#[tokio::test]
async fn a_call_is_recognised_channel_by_channel() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&asr_config(
        &dir.path().join("h.db").display().to_string(),
        r#"channels = "split""#,
    ));
    let c = client();
    // The slot shows its choice.
    let v1 = slot_state(&c, &gw, "asr-v1").await;
    assert_eq!(v1["details"]["channels"], "split", "{v1}");
    let call = call_reference();
    let wav = std::fs::read(&call.path).unwrap();
    let want = &call.channel_texts;
    let post = |query: &'static str, body: Vec<u8>, ct: &'static str| {
        c.post(gw.url(&format!("/v1/asr/transcribe{query}")))
            .header("content-type", ct)
            .body(body)
            .send()
    };

    let r = post("", wav.clone(), "audio/wav").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["slot"], "asr-v1");
    let channels = v["channels"].as_array().expect("channels");
    assert_eq!(channels.len(), 2);
    for (i, ch) in channels.iter().enumerate() {
        assert_eq!(ch["channel"], i);
        assert_eq!(ch["text"], want[i], "channel {i}");
    }
    let segments = v["segments"].as_array().unwrap();
    let order: Vec<u64> = segments
        .iter()
        .map(|s| {
            s["channel"]
                .as_u64()
                .expect("each segment names its channel")
        })
        .collect();
    assert_eq!(order.first(), Some(&0));
    assert_eq!(order.last(), Some(&1));
    let joined: Vec<&str> = segments
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    assert_eq!(v["text"], joined.join(" "));

    // As subtitles: one cue per segment, in the same order, naming the speaker.
    let cues: Vec<(String, String)> = segments
        .iter()
        .map(|s| {
            let t = |k: &str| s[k].as_f64().unwrap();
            let ms = |x: f64| (x * 1000.0).round() as u64;
            let stamp = |x: f64, sep: char| {
                let m = ms(x);
                format!(
                    "{:02}:{:02}:{:02}{sep}{:03}",
                    m / 3_600_000,
                    m / 60_000 % 60,
                    m / 1000 % 60,
                    m % 1000
                )
            };
            let vtt = format!("{} --> {}", stamp(t("start"), '.'), stamp(t("end"), '.'));
            (vtt, s["text"].as_str().unwrap().to_string())
        })
        .collect();
    let r = post("?format=vtt", wav.clone(), "audio/wav").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/vtt; charset=utf-8");
    let vtt = r.text().await.unwrap();
    let mut want_vtt = String::from("WEBVTT\n\n");
    for ((times, text), ch) in cues.iter().zip(&order) {
        want_vtt += &format!("{times}\n<v Channel {}>{text}\n\n", ch + 1);
    }
    assert_eq!(vtt, want_vtt);
    let r = post("?format=srt", wav.clone(), "audio/wav").await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/x-subrip; charset=utf-8"
    );
    let srt = r.text().await.unwrap();
    assert!(srt.starts_with("1\n00:00:00,"), "{srt}");
    assert!(
        srt.contains(&format!("\nChannel 2: {}\n", want[1])),
        "{srt}"
    );
    let r = post("?format=doc", wav.clone(), "audio/wav").await.unwrap();
    assert_eq!(r.status(), 400);

    // The request's choice wins: the average of the channels, as the reference hears it.
    let r = post("?channels=mix", wav.clone(), "audio/wav")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["text"], call.mix_text);
    assert!(v.get("channels").is_none());
    assert!(v["segments"][0].get("channel").is_none());

    let r = post("?channels=stereo", wav.clone(), "audio/wav")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_option");
    // Nine channels of raw PCM: more than are recognised one by one.
    let r = post(
        "",
        vec![0u8; 2 * 9 * 1600],
        "audio/l16; rate=16000; channels=9",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_channels", "{v}");
    // …and the slot keeps serving.
    let r = post("", wav.clone(), "audio/wav").await.unwrap();
    assert_eq!(r.status(), 200);

    // Live: the call as interleaved stereo PCM over the WebSocket, in messages that end inside
    // frames (4,001 bytes): split by the slot's setting, each final names its channel.
    let pcm = &wav[44..];
    let (msgs, close, _) = stream_with(gw.data, pcm, "channels=2", 4_001, 40.0).await;
    assert_eq!(close, Some(1000));
    for (c, text) in want.iter().enumerate() {
        let said: Vec<&str> = msgs
            .iter()
            .filter(|m| m["type"] == "final" && m["channel"] == c)
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        assert_eq!(said.join(" "), *text, "channel {c}");
    }
    assert!(msgs.iter().all(|m| m["channel"].is_u64()), "{msgs:?}");
    // Mixed on request: the average, as the file endpoint hears it.
    let (msgs, close, _) = stream_with(gw.data, pcm, "channels=2&split=false", 4_001, 40.0).await;
    assert_eq!(close, Some(1000));
    assert_eq!(finals_text(&msgs), call.mix_text);
    assert!(msgs.iter().all(|m| m.get("channel").is_none()));
    for bad in ["channels=9", "channels=0", "channels=2&split=maybe"] {
        let err = tokio_tungstenite::connect_async(format!("ws://{}/v1/asr/stream?{bad}", gw.data))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("400"), "{bad}: {err}");
    }

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["transcribe", "--json", "--channels", "split", "--model-dir"])
        .arg(repo("models/asr/zipformer-en-3m"))
        .args(["--subtitles", "vtt", "--output-dir"])
        .arg(dir.path().join("subs"))
        .arg(&call.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["channels"][0]["text"], want[0]);
    assert_eq!(v["channels"][1]["text"], want[1]);
    // The subtitles it wrote are the HTTP endpoint's.
    let written = std::fs::read_to_string(dir.path().join("subs/call_stereo.vtt")).unwrap();
    assert_eq!(written, vtt);
}
