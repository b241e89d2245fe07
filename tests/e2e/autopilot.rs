//! The canary autopilot through the real binary, with faults injected into real upstream servers and
//! real models: per-request fallback and hedging, the circuit breaker, the gated ramp, shadow
//! comparison of model outputs, blue-green switches.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

struct Answer {
    status: u16,
    slot: String,
    fallback: Option<String>,
    body: Value,
}

async fn call(c: &reqwest::Client, url: &str, user: &str) -> Answer {
    let r = c.get(url).header("x-user-id", user).send().await.unwrap();
    let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let slot = header("x-switchyard-slot").unwrap_or_default();
    let fallback = header("x-switchyard-fallback");
    let status = r.status().as_u16();
    Answer {
        status,
        slot,
        fallback,
        body: r.json().await.unwrap_or(Value::Null),
    }
}

/// Sends `n` requests (distinct users), 4 at a time; returns all answers.
async fn load(c: &reqwest::Client, url: &str, n: usize, tag: &str) -> Vec<Answer> {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .map(|i| {
            let (c, url) = (c.clone(), url.to_string());
            let user = format!("{tag}-{i}");
            async move { call(&c, &url, &user).await }
        })
        .buffer_unordered(4)
        .collect()
        .await
}

async fn route_state(c: &reqwest::Client, gw: &Gateway) -> Value {
    admin_json(c, gw, "/admin/routes/api").await
}

#[tokio::test]
async fn fallback_hides_a_failing_hanging_or_slow_canary() {
    let v1 = Upstream::start("v1").await;
    let (v2, fault) = Upstream::start_faulty("v2", Fault::Fail).await;
    let cfg = canary_config(&v1, &v2, 100.0, "")
        + "\n[route.fallback]\ntimeout_ms = 400\nhedge_after_ms = 150\nreplay_max_bytes = 100000\n";
    let gw = Gateway::start(&cfg);
    let c = client();
    let url = gw.url("/api/hello");

    // A canary answering 500: every client gets stable's 200, marked.
    for a in load(&c, &url, 20, "fail").await {
        assert_eq!(a.status, 200);
        assert_eq!(a.slot, "v1");
        assert_eq!(a.body["upstream"], "v1");
        assert_eq!(a.fallback.as_deref(), Some("error"));
    }
    // The body is replayed to stable.
    let r = c
        .post(gw.url("/api/upload"))
        .body(vec![7u8; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-switchyard-fallback"], "error");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["upstream"], "v1");
    assert_eq!(v["received"], 5000);
    // Too large to replay: the canary's own answer comes back.
    let r = c
        .post(gw.url("/api/upload"))
        .body(vec![7u8; 200_000])
        .send()
        .await
        .unwrap();
    // (500, or 502 when the upstream answers before reading the body and closes the connection.)
    assert!(r.status().is_server_error(), "{}", r.status());
    assert!(r.headers().get("x-switchyard-fallback").is_none());

    // A canary slower than hedge_after_ms: stable is started too and wins.
    *fault.lock().unwrap() = Fault::Delay(1000);
    let t = Instant::now();
    let a = call(&c, &url, "slow").await;
    assert_eq!((a.status, a.slot.as_str()), (200, "v1"));
    assert_eq!(a.fallback.as_deref(), Some("hedge"));
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    // A hanging canary, no hedge: the timeout (400 ms) sends it to stable.
    let cfg = canary_config(&v1, &v2, 100.0, "") + "\n[route.fallback]\ntimeout_ms = 400\n";
    gw.write_config(&cfg);
    gw.signal("HUP");
    gw.wait_log("reload", |l| l["message"] == "configuration reloaded");
    *fault.lock().unwrap() = Fault::Hang;
    let t = Instant::now();
    let a = call(&c, &url, "hang").await;
    assert_eq!((a.status, a.slot.as_str()), (200, "v1"));
    assert_eq!(a.fallback.as_deref(), Some("timeout"));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    // A healthy canary answers itself.
    *fault.lock().unwrap() = Fault::Healthy;
    let a = call(&c, &url, "ok").await;
    assert_eq!((a.status, a.slot.as_str(), a.fallback), (200, "v2", None));

    let m = metrics_text(&c, &gw).await;
    for reason in ["error", "hedge", "timeout"] {
        let line = format!(
            "switchyard_fallbacks_total{{route=\"api\",from=\"v2\",to=\"v1\",reason=\"{reason}\"}}"
        );
        assert!(m.contains(&line), "{line} missing");
    }
}

#[tokio::test]
async fn breaker_opens_within_its_window_and_recovers_through_probes() {
    let v1 = Upstream::start("v1").await;
    let (v2, fault) = Upstream::start_faulty("v2", Fault::Fail).await;
    let cfg = canary_config(&v1, &v2, 50.0, "")
        + "\n[route.fallback]\ntimeout_ms = 1000\n\
           [route.breaker]\nwindow_s = 5\nmin_requests = 10\nmax_error_rate = 0.2\n\
           cooldown_s = 1\nprobe_percent = 100\nprobe_successes = 3\n";
    let gw = Gateway::start(&cfg);
    let c = client();
    let url = gw.url("/api/hello");

    // Half the users land on the failing canary; fallback hides it, and the breaker opens after
    // ten or so failures.
    let answers = load(&c, &url, 120, "a").await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "no client-visible errors"
    );
    let fell_back = answers.iter().filter(|a| a.fallback.is_some()).count();
    assert!(
        (10..=30).contains(&fell_back),
        "{fell_back} canary requests before the breaker opened"
    );
    let st = route_state(&c, &gw).await;
    assert_eq!(st["autopilot"]["breaker"]["state"], "open", "{st}");
    assert!(
        st["autopilot"]["breaker"]["reason"]
            .as_str()
            .unwrap()
            .contains("error rate")
    );
    assert!(
        metrics_text(&c, &gw)
            .await
            .contains("switchyard_breaker_state{route=\"api\",slot=\"v2\"} 1")
    );
    // Open: canary users go straight to stable, no attempt on the canary.
    for a in load(&c, &url, 40, "b").await {
        assert_eq!(
            (a.status, a.slot.as_str(), a.fallback.as_deref()),
            (200, "v1", None)
        );
    }

    // The canary heals; after the cooldown, probes close the breaker and it gets traffic again.
    *fault.lock().unwrap() = Fault::Healthy;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answers = load(&c, &url, 60, "c").await;
    assert!(answers.iter().all(|a| a.status == 200));
    let st = route_state(&c, &gw).await;
    assert_eq!(st["autopilot"]["breaker"]["state"], "closed", "{st}");
    assert!(answers.iter().any(|a| a.slot == "v2"));
}

/// POSTs `body` as user `user` (`x-user-id`); returns (status, answering slot, JSON body).
async fn post_as(
    c: &reqwest::Client,
    url: &str,
    user: String,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String, Value) {
    let r = c
        .post(url)
        .header("x-user-id", user)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    answer(r).await
}

async fn wait_route(
    c: &reqwest::Client,
    gw: &Gateway,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = route_state(c, gw).await;
        if pred(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "route never reached the state: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keeps a steady trickle of requests from many users until dropped.
fn background_load(url: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = client();
        let mut i = 0u64;
        loop {
            let _ = call(&c, &url, &format!("bg-{i}")).await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

#[tokio::test]
async fn ramp_promotes_a_healthy_canary_and_rolls_back_a_failing_one() {
    let v1 = Upstream::start("v1").await;
    let (v2, fault) = Upstream::start_faulty("v2", Fault::Healthy).await;
    let ramp = "\n[route.fallback]\ntimeout_ms = 1000\n\
                [route.ramp]\nsteps = [10, 50, 100]\ninterval_s = 1\nmin_requests = 5\nmax_error_rate = 0.05\n";
    let gw = Gateway::start(&(canary_config(&v1, &v2, 0.0, "") + ramp));
    let c = client();
    let bg = background_load(gw.url("/api/hello"));
    let r = c
        .post(gw.admin_url("/admin/routes/api/ramp/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let st = wait_route(&c, &gw, 20, |s| {
        s["autopilot"]["ramp"]["phase"]["state"] == "promoted"
    })
    .await;
    assert_eq!(st["stable"], "v2");
    assert_eq!(st["canary"], Value::Null);
    let decisions = st["autopilot"]["ramp"]["decisions"].as_array().unwrap();
    let weights: Vec<f64> = decisions
        .iter()
        .map(|d| d["to"].as_f64().unwrap())
        .collect();
    assert_eq!(weights, vec![10.0, 50.0, 100.0, 100.0], "{decisions:?}");
    bg.abort();

    // The same ramp with a canary that starts failing at 10 %: rolled back, with the reason.
    let gw = Gateway::start(&(canary_config(&v1, &v2, 0.0, "") + ramp));
    let bg = background_load(gw.url("/api/hello"));
    *fault.lock().unwrap() = Fault::Fail;
    c.post(gw.admin_url("/admin/routes/api/ramp/start"))
        .send()
        .await
        .unwrap();
    let st = wait_route(&c, &gw, 20, |s| {
        s["autopilot"]["ramp"]["phase"]["state"] == "rolled_back"
    })
    .await;
    bg.abort();
    assert_eq!(st["canary_weight"], 0.0);
    assert_eq!(st["stable"], "v1");
    let reason = st["autopilot"]["ramp"]["phase"]["reason"].as_str().unwrap();
    assert!(reason.contains("error rate"), "{reason}");
    // Operator commands on a finished ramp are refused clearly.
    let r = c
        .post(gw.admin_url("/admin/routes/api/ramp/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

/// Two slots (`slots`, TOML) behind route `api` on `path`, stable `stable`, canary `canary` at 0 %, with
/// every request shadowed to the canary (one at a time) and a ramp that the shadow `gate` (a
/// `[route.ramp]` line) decides after 3 shadow samples; `route_extra` goes into the route.
fn shadow_gate_config(
    slots: &str,
    path: &str,
    (stable, canary): (&str, &str),
    route_extra: &str,
    gate: &str,
) -> String {
    format!(
        r#"{listeners}
{slots}
[[route]]
name = "api"
path = "{path}"
stable = "{stable}"
canary = "{canary}"
canary_weight = 0
{route_extra}
[route.shadow]
percent = 100
max_concurrency = 1

[route.ramp]
steps = [50, 100]
interval_s = 30
min_requests = 1000
{gate}
min_shadow_samples = 3
"#,
        listeners = listeners(""),
    )
}

/// Waits up to `within_s` for route `api`'s ramp to roll back, and checks that the reason names
/// `reason`, the canary is back at 0 % and the shadow metric `gauge` is exported. Returns the state.
async fn expect_shadow_rollback(
    c: &reqwest::Client,
    gw: &Gateway,
    within_s: u64,
    reason: &str,
    gauge: &str,
) -> Value {
    let st = wait_route(c, gw, within_s, |s| {
        s["autopilot"]["ramp"]["phase"]["state"] == "rolled_back"
    })
    .await;
    let why = st["autopilot"]["ramp"]["phase"]["reason"].as_str().unwrap();
    assert!(why.contains(reason), "{why}");
    assert_eq!(st["canary_weight"], 0.0);
    assert!(
        metrics_text(c, gw)
            .await
            .contains(&format!("{gauge}{{route=\"api\"}}")),
        "{gauge} missing"
    );
    st
}

#[tokio::test]
async fn shadow_rolls_back_a_worse_face_model_without_touching_responses() {
    let photo = std::fs::read(repo(".cache/testdata/t1.jpg")).unwrap();
    // Stable CenterFace finds the 6 faces of the group photo; the canary, BlazeFace's selfie model,
    // finds none at this distance: fast, error-free, and worse at its job.
    let slots = format!(
        "[[slot]]\nname = \"center\"\nkind = \"face\"\ndetector = \"centerface\"\nmodel = \"{}\"\n\n\
         [[slot]]\nname = \"front\"\nkind = \"face\"\ndetector = \"blazeface-front\"\nmodel = \"{}\"\n",
        repo("models/centerface/centerface.onnx"),
        repo("models/blazeface/face_detection_front_128x128.onnx"),
    );
    let cfg = shadow_gate_config(
        &slots,
        "/v1/face",
        ("center", "front"),
        "",
        "min_face_f1 = 0.8",
    );
    let gw = Gateway::start(&cfg);
    let c = client();
    let url = gw.url("/v1/face/detect");
    let detect = |user: String| post_as(&c, &url, user, "image/jpeg", photo.clone());
    // Shadowed stable answers are exactly the unshadowed ones.
    let (s, slot, plain) = detect("u0".into()).await;
    assert_eq!((s, slot.as_str()), (200, "center"));
    assert_eq!(plain["faces"].as_array().unwrap().len(), 6);
    c.post(gw.admin_url("/admin/routes/api/ramp/start"))
        .send()
        .await
        .unwrap();
    let mut stable_answers = Vec::new();
    for i in 1..12 {
        let (s, slot, v) = detect(format!("u{i}")).await;
        assert_eq!(s, 200);
        if slot == "center" {
            stable_answers.push(v);
        }
    }
    for v in &stable_answers {
        assert_eq!(v["faces"], plain["faces"]);
    }
    let st =
        expect_shadow_rollback(&c, &gw, 20, "shadow face F1", "switchyard_shadow_face_f1").await;
    let shadow = &st["autopilot"]["shadow"];
    assert!(shadow["peak_running"].as_u64().unwrap() <= 1, "{shadow}");
}

#[tokio::test]
async fn blue_green_switch_under_load_fails_no_request() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let cfg = format!(
        r#"{}
[[slot]]
name = "b"
kind = "upstream"
url = "{}"

[[slot]]
name = "g"
kind = "upstream"
url = "{}"

[[route]]
name = "api"
path = "/api"
blue = "b"
green = "g"
active = "blue"
"#,
        listeners(""),
        blue.url(),
        green.url()
    );
    let gw = Gateway::start(&cfg);
    let c = client();
    let url = gw.url("/api/x");
    let clients: Vec<_> = (0..3)
        .map(|k| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let until = Instant::now() + Duration::from_millis(1500);
                let mut i = 0;
                while Instant::now() < until {
                    let a = call(&c, &url, &format!("{k}-{i}")).await;
                    assert_eq!(a.status, 200, "a request failed during the switch");
                    seen.push(a.slot);
                    i += 1;
                }
                seen
            })
        })
        .collect();
    for expect in ["green", "blue", "green"] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = c
            .post(gw.admin_url("/admin/routes/api/switch"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["blue_green"]["active"], expect);
    }
    let mut seen = Vec::new();
    for t in clients {
        seen.extend(t.await.unwrap());
    }
    assert!(seen.iter().any(|s| s == "b") && seen.iter().any(|s| s == "g"));
    let a = call(&c, &url, "after").await;
    assert_eq!(a.slot, "g");
}

#[tokio::test]
async fn a_model_canary_failing_at_inference_is_hidden_by_fallback_and_cut_off_by_the_breaker() {
    // `broken_centerface.onnx` (tests/reference/broken_model.py) is CenterFace that works up to 736 px
    // high, so it loads, passes the probe and the warm-up (1280×736), then fails on this photo
    // (1280×886, run at 1280×896).
    let photo = std::fs::read(repo(".cache/testdata/t1.jpg")).unwrap();
    let cfg = format!(
        r#"{}
[[slot]]
name = "center"
kind = "face"
detector = "centerface"
model = "{}"

[[slot]]
name = "broken"
kind = "face"
detector = "centerface"
model = "{}"

[[route]]
name = "api"
path = "/v1/face"
stable = "center"
canary = "broken"
canary_weight = 100

[route.fallback]
timeout_ms = 5000

[route.breaker]
window_s = 10
min_requests = 5
max_error_rate = 0.2
cooldown_s = 60
"#,
        listeners(""),
        repo("models/centerface/centerface.onnx"),
        repo(".cache/reference/broken_centerface.onnx"),
    );
    let gw = Gateway::start(&cfg);
    let c = client();
    let mut fell_back = 0;
    for i in 0..15 {
        let r = c
            .post(gw.url("/v1/face/detect"))
            .header("x-user-id", format!("u{i}"))
            .header("content-type", "image/jpeg")
            .body(photo.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "no client-visible error");
        assert_eq!(r.headers()["x-switchyard-slot"], "center");
        fell_back += usize::from(r.headers().get("x-switchyard-fallback").is_some());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["faces"].as_array().unwrap().len(), 6);
    }
    // The breaker opened after 5 failures: later requests never touched the broken model.
    assert_eq!(fell_back, 5);
    let st = route_state(&c, &gw).await;
    assert_eq!(st["autopilot"]["breaker"]["state"], "open");
}

#[tokio::test]
async fn shadow_scores_asr_and_upstream_canaries() {
    // ASR: the same model on tract as the canary; its text is scored against stable's (ORT).
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let cfg = format!(
        r#"{}
[[slot]]
name = "asr-ort"
kind = "asr"
model_dir = "{model}"
engine = "ort"

[[slot]]
name = "asr-tract"
kind = "asr"
model_dir = "{model}"
engine = "tract"

[[route]]
name = "asr"
path = "/v1/asr"
stable = "asr-ort"
canary = "asr-tract"

[route.shadow]
percent = 100
max_concurrency = 1

[[slot]]
name = "v1"
kind = "upstream"
url = "{u1}"

[[slot]]
name = "v2"
kind = "upstream"
url = "{u2}"

[[route]]
name = "api"
path = "/api"
stable = "v1"
canary = "v2"

[route.shadow]
percent = 100
"#,
        listeners(""),
        model = repo("models/asr/zipformer-en-3m"),
        u1 = v1.url(),
        u2 = v2.url(),
    );
    let gw = Gateway::start(&cfg);
    let c = client();
    let wav = std::fs::read(repo(".cache/testdata/asr/0.wav")).unwrap();
    for _ in 0..3 {
        let r = c
            .post(gw.url("/v1/asr/transcribe"))
            .header("content-type", "audio/wav")
            .body(wav.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-switchyard-slot"], "asr-ort");
        // Let the shadow finish (tract, on a loaded machine: seconds), so that the next copy is not
        // skipped by the cap of 1.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let asr = admin_json(&c, &gw, "/admin/routes/asr").await;
            if asr["autopilot"]["shadow"]["running"].as_u64() == Some(0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the shadow never finished: {asr}"
            );
        }
    }
    // Upstream: v2 answers differently from v1 (its name is in the body), so nothing matches.
    for i in 0..5 {
        let a = call(&c, &gw.url("/api/x"), &format!("u{i}")).await;
        assert_eq!(
            a.body["upstream"], "v1",
            "the client always gets stable's answer"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let asr = admin_json(&c, &gw, "/admin/routes/asr").await;
        let api = route_state(&c, &gw).await;
        let (a, b) = (&asr["autopilot"]["shadow"], &api["autopilot"]["shadow"]);
        if a["asr_samples"].as_u64() >= Some(2) && b["http_samples"].as_u64() >= Some(5) {
            // tract and ONNX Runtime agree word for word on this clip.
            assert_eq!(a["wer"].as_f64(), Some(0.0), "{a}");
            assert_eq!(b["match_rate"].as_f64(), Some(0.0), "{b}");
            break;
        }
        assert!(Instant::now() < deadline, "shadow results missing: {a} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = metrics_text(&c, &gw).await;
    assert!(m.contains("switchyard_shadow_wer{route=\"asr\"} 0"));
    assert!(m.contains("switchyard_shadow_match_ratio{route=\"api\"} 0"));
}

#[tokio::test]
async fn a_slow_model_canary_falls_back_on_timeout_and_its_ramp_rolls_back_on_latency() {
    let photo = std::fs::read(repo(".cache/testdata/astronaut.png")).unwrap();
    // The same detector twice; the canary is made slow (700 ms) with the testing knob.
    let cfg = |fallback_ms: u64| {
        format!(
            r#"{}
[[slot]]
name = "fast"
kind = "face"
detector = "blazeface-back"
model = "{model}"

[[slot]]
name = "slow"
kind = "face"
detector = "blazeface-back"
model = "{model}"
inject_latency_ms = 700

[[route]]
name = "api"
path = "/v1/face"
stable = "fast"
canary = "slow"
canary_weight = 100
sticky = ["header:x-user-id"]

[route.fallback]
timeout_ms = {fallback_ms}

[route.ramp]
steps = [50, 100]
interval_s = 30
min_requests = 3
max_p95_ms = 300
"#,
            listeners(""),
            model = repo("models/blazeface/face_detection_back_256x256.onnx"),
        )
    };
    let c = client();
    let detect = |gw: &Gateway, i: usize| {
        let req = c
            .post(gw.url("/v1/face/detect"))
            .header("x-user-id", format!("u{i}"))
            .header("content-type", "image/png")
            .body(photo.clone());
        async move {
            let r = req.send().await.unwrap();
            let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
            (
                r.status().as_u16(),
                h("x-switchyard-slot"),
                h("x-switchyard-fallback"),
            )
        }
    };

    // "Gray slower than 400 ms → serve stable": every request is answered by the fast slot.
    let gw = Gateway::start(&cfg(400));
    for i in 0..3 {
        let (s, slot, fb) = detect(&gw, i).await;
        assert_eq!(
            (s, slot.as_deref(), fb.as_deref()),
            (200, Some("fast"), Some("timeout"))
        );
    }
    drop(gw);

    // Without that timeout the slow canary answers, and its ramp rolls back on the p95 gate.
    let gw = Gateway::start(&cfg(5000));
    c.post(gw.admin_url("/admin/routes/api/ramp/start"))
        .send()
        .await
        .unwrap();
    for i in 0..10 {
        let (s, _, fb) = detect(&gw, i).await;
        assert_eq!((s, fb), (200, None));
    }
    let st = wait_route(&c, &gw, 10, |s| {
        s["autopilot"]["ramp"]["phase"]["state"] == "rolled_back"
    })
    .await;
    let reason = st["autopilot"]["ramp"]["phase"]["reason"].as_str().unwrap();
    assert!(reason.contains("p95 latency"), "{reason}");
}

#[tokio::test]
async fn a_worse_speech_model_is_rolled_back_by_the_shadow_wer_gate() {
    // The canary is the reference model with a noisy joiner (tests/reference/worse_asr.py): it answers
    // fast and without errors, but gets words wrong.
    let slots = format!(
        "[[slot]]\nname = \"asr-good\"\nkind = \"asr\"\nfamily = \"transducer\"\nmodel_dir = \"{}\"\nversion = \"1.0\"\n\n\
         [[slot]]\nname = \"asr-worse\"\nkind = \"asr\"\nfamily = \"transducer\"\nmodel_dir = \"{}\"\nversion = \"1.1-noisy\"\n",
        repo("models/asr/zipformer-en-3m"),
        repo(".cache/reference/asr-worse"),
    );
    let cfg = shadow_gate_config(
        &slots,
        "/v1/asr",
        ("asr-good", "asr-worse"),
        "sticky = [\"header:x-user-id\"]",
        "max_wer = 0.15",
    );
    let gw = Gateway::start(&cfg);
    let c = client();
    let clip = std::fs::read(repo(".cache/testdata/asr/0.wav")).unwrap();
    let url = gw.url("/v1/asr/transcribe");
    let transcribe = |user: String| post_as(&c, &url, user, "audio/wav", clip.clone());
    let (s, slot, plain) = transcribe("u0".into()).await;
    assert_eq!((s, slot.as_str()), (200, "asr-good"));
    assert!(
        plain["text"]
            .as_str()
            .is_some_and(|t| t.contains("NIGHTFALL")),
        "{plain}"
    );
    c.post(gw.admin_url("/admin/routes/api/ramp/start"))
        .send()
        .await
        .unwrap();
    let mut stable = 0;
    for i in 1..14 {
        let (s, slot, v) = transcribe(format!("u{i}")).await;
        assert_eq!(s, 200);
        if slot == "asr-good" {
            // Shadowing never changes the client's answer.
            assert_eq!(v["text"], plain["text"]);
            stable += 1;
        }
    }
    assert!(stable >= 3, "only {stable} requests stayed on stable");
    let st = expect_shadow_rollback(&c, &gw, 30, "shadow WER", "switchyard_shadow_wer").await;
    let wer = st["autopilot"]["shadow"]["wer"].as_f64().unwrap();
    assert!(wer > 0.15, "shadow WER {wer}");
}
