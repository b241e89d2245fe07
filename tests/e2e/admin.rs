//! Admin API: weights, promote, rollback, reload (API and SIGHUP), token, metrics.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

async fn admin_json(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = c.request(method, url);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// Slots seen by 200 distinct users.
async fn slot_counts(c: &reqwest::Client, gw: &Gateway) -> (usize, usize) {
    let mut v2 = 0;
    for i in 0..200 {
        let (_, slot, _) = get(c, &gw.url("/api"), &[("x-user-id", &format!("u{i}"))]).await;
        v2 += usize::from(slot == "v2");
    }
    (200 - v2, v2)
}

#[tokio::test]
async fn weight_promote_and_rollback_apply_without_restart() {
    use reqwest::Method;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, ""));
    let c = client();
    assert_eq!(slot_counts(&c, &gw).await, (200, 0));

    let (status, route) = admin_json(
        &c,
        Method::PUT,
        &gw.admin_url("/admin/routes/api/weight"),
        Some(json!({"canary_weight": 100})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(route["canary_weight"], 100.0);
    assert_eq!(route["runtime_override"], true);
    assert_eq!(slot_counts(&c, &gw).await, (0, 200));

    let (status, _) = admin_json(
        &c,
        Method::PUT,
        &gw.admin_url("/admin/routes/api/weight"),
        Some(json!({"canary_weight": 50})),
    )
    .await;
    assert_eq!(status, 200);
    let (a, b) = slot_counts(&c, &gw).await;
    assert!((70..=130).contains(&b), "{a}/{b} at 50 %");

    // Bad values and unknown routes are refused with JSON errors.
    let (status, body) = admin_json(
        &c,
        Method::PUT,
        &gw.admin_url("/admin/routes/api/weight"),
        Some(json!({"canary_weight": 150})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid"))
    );
    let (status, body) = admin_json(
        &c,
        Method::PUT,
        &gw.admin_url("/admin/routes/api/weight"),
        Some(json!({"weight": 1})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_body"))
    );
    let (status, body) = admin_json(
        &c,
        Method::PUT,
        &gw.admin_url("/admin/routes/nope/weight"),
        Some(json!({"canary_weight": 1})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_route"))
    );

    let metrics = metrics_text(&c, &gw).await;
    assert!(
        metrics.contains("switchyard_route_canary_weight{route=\"api\"} 50"),
        "{metrics}"
    );

    // Rollback: weight 0 at once, overrides still apply.
    let (status, route) = admin_json(
        &c,
        Method::POST,
        &gw.admin_url("/admin/routes/api/rollback"),
        None,
    )
    .await;
    assert_eq!((status, route["canary_weight"].as_f64()), (200, Some(0.0)));
    assert_eq!(slot_counts(&c, &gw).await, (200, 0));
    let (_, slot, _) = get(&c, &gw.url("/api"), &[("x-gray-enable", "true")]).await;
    assert_eq!(slot, "v2");

    // Promote: the canary becomes stable for everyone.
    let (status, route) = admin_json(
        &c,
        Method::POST,
        &gw.admin_url("/admin/routes/api/promote"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (route["stable"].as_str(), route["canary"].as_str()),
        (Some("v2"), None)
    );
    assert_eq!(slot_counts(&c, &gw).await, (0, 200));
    let (status, body) = admin_json(
        &c,
        Method::POST,
        &gw.admin_url("/admin/routes/api/promote"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );

    // Slot statistics over the last minute.
    let (status, slots) = admin_json(&c, Method::GET, &gw.admin_url("/admin/slots"), None).await;
    assert_eq!(status, 200);
    let v2s = slots["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "v2")
        .unwrap();
    assert!(
        v2s["last_minute"]["requests"].as_u64().unwrap() >= 450,
        "{v2s}"
    );
    assert_eq!(v2s["last_minute"]["errors"], 0);
    assert!(v2s["last_minute"]["p95_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v2s["details"]["url"], v2.url());
    assert_eq!(v2s["version"], "2.0");
}

#[tokio::test]
async fn reload_applies_good_files_and_keeps_serving_on_bad_ones() {
    use reqwest::Method;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let good = canary_config(&v1, &v2, 0.0, "");
    let gw = Gateway::start(&good);
    let c = client();

    // A broken file: reload refused with every problem, traffic unaffected.
    gw.write_config(
        &good
            .replace("stable = \"v1\"", "stable = \"ghost\"")
            .replace("canary_weight = 0", "canary_weight = 101"),
    );
    let (status, body) = admin_json(&c, Method::POST, &gw.admin_url("/admin/reload"), None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_config");
    let problems: Vec<&str> = body["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.iter().any(|p| p.ends_with("unknown slot `ghost`")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("canary_weight 101 is outside 0–100")),
        "{problems:?}"
    );
    let (status, slot, _) = get(&c, &gw.url("/api"), &[]).await;
    assert_eq!((status, slot.as_str()), (200, "v1"));

    // Syntax error via SIGHUP: logged, still serving.
    gw.write_config("[[route]\n");
    gw.signal("HUP");
    gw.wait_log_count("failed reload after SIGHUP", 2, |l| {
        l["message"] == "configuration reload failed; keeping the previous one"
    });
    let (status, _, _) = get(&c, &gw.url("/api"), &[]).await;
    assert_eq!(status, 200);

    // A good file with the weight at 100, via SIGHUP.
    gw.write_config(&good.replace("canary_weight = 0", "canary_weight = 100"));
    gw.signal("HUP");
    gw.wait_log("reload", |l| l["message"] == "configuration reloaded");
    let (_, slot, _) = get(&c, &gw.url("/api"), &[("x-user-id", "anyone")]).await;
    assert_eq!(slot, "v2");

    // An operator change survives a reload of an unchanged file, and a file edit wins.
    admin_json(
        &c,
        Method::PUT,
        &gw.admin_url("/admin/routes/api/weight"),
        Some(json!({"canary_weight": 0})),
    )
    .await;
    let (status, _) = admin_json(&c, Method::POST, &gw.admin_url("/admin/reload"), None).await;
    assert_eq!(status, 200);
    let (_, route) = admin_json(&c, Method::GET, &gw.admin_url("/admin/routes/api"), None).await;
    assert_eq!(route["canary_weight"], 0.0);
    gw.write_config(&good.replace("canary_weight = 0", "canary_weight = 30"));
    let (status, body) = admin_json(&c, Method::POST, &gw.admin_url("/admin/reload"), None).await;
    assert_eq!((status, body["reloaded"].as_bool()), (200, Some(true)));
    let (_, route) = admin_json(&c, Method::GET, &gw.admin_url("/admin/routes/api"), None).await;
    assert_eq!(
        (
            route["canary_weight"].as_f64(),
            route["runtime_override"].as_bool()
        ),
        (Some(30.0), Some(false))
    );

    let metrics = metrics_text(&c, &gw).await;
    assert!(
        metrics.contains("switchyard_config_reloads_total{result=\"error\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_config_reloads_total{result=\"ok\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn admin_token_is_enforced_but_health_and_metrics_stay_open() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let config = canary_config(&v1, &v2, 0.0, "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"SY_TEST_TOKEN\"\n",
    );
    let gw = Gateway::start_with_env(&config, &[("SY_TEST_TOKEN", "s3cret-token")]);
    let c = client();
    let r = c.get(gw.admin_url("/admin/routes")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = c
        .get(gw.admin_url("/admin/routes"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    let r = c
        .put(gw.admin_url("/admin/routes/api/weight"))
        .json(&json!({"canary_weight": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "mutations need the token too");
    let r = c
        .get(gw.admin_url("/admin/routes"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for open in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            c.get(gw.admin_url(open)).send().await.unwrap().status(),
            200,
            "{open}"
        );
    }
}

#[tokio::test]
async fn metrics_have_the_documented_names_and_labels() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, ""));
    let c = client();
    get(&c, &gw.url("/api/a"), &[]).await;
    get(
        &c,
        &gw.url("/api/status?code=503"),
        &[("x-gray-enable", "true")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = metrics_text(&c, &gw).await;
    for want in [
        "# TYPE switchyard_requests_total counter",
        "switchyard_requests_total{route=\"api\",slot=\"v1\",version=\"1.0\",status=\"200\"} 1",
        "switchyard_requests_total{route=\"api\",slot=\"v2\",version=\"2.0\",status=\"503\"} 1",
        "# TYPE switchyard_request_duration_seconds histogram",
        "switchyard_request_duration_seconds_bucket{route=\"api\",slot=\"v1\",le=\"0.005\"}",
        "switchyard_request_duration_seconds_count{route=\"api\",slot=\"v1\"} 1",
        "switchyard_inflight_requests{slot=\"v1\"} 0",
        "switchyard_slot_info{slot=\"v1\",kind=\"upstream\",version=\"1.0\"} 1",
        "switchyard_slot_info{slot=\"v2\",kind=\"upstream\",version=\"2.0\"} 1",
        "switchyard_route_canary_weight{route=\"api\"} 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // A request in flight is counted when scraped (the gauge is set from the slot's count then).
    let slow = tokio::spawn({
        let (c, url) = (c.clone(), gw.url("/api/slow?ms=1500"));
        async move { c.get(url).send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = metrics_text(&c, &gw).await;
    assert!(
        text.contains("switchyard_inflight_requests{slot=\"v1\"} 1"),
        "the slow request is not counted in\n{text}"
    );
    assert_eq!(slow.await.unwrap(), 200);
    let text = metrics_text(&c, &gw).await;
    assert!(text.contains("switchyard_inflight_requests{slot=\"v1\"} 0"));
    let access = gw.wait_log("access log", |l| {
        l["target"] == "access" && l["status"] == 503
    });
    assert_eq!(
        (access["route"].as_str(), access["slot"].as_str()),
        (Some("api"), Some("v2"))
    );
    assert!(
        access["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 32)
    );
    assert!(access["duration_ms"].as_f64().is_some());
}

#[test]
fn check_command_lists_problems_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"nope\"\nbogus = 1\n\n[[route]]\nname = \"r\"\npath = \"/\"\nstable = \"x\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let name = bad.display();
    assert_eq!(
        err.trim_end(),
        format!(
            "{name}:2: `nope` is not an address of the form ip:port\n{name}:3: unknown key `server.bogus`\n{name}:8: unknown slot `x`"
        )
    );
    let good =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/switchyard.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_watched_config_file_is_reloaded_when_it_changes() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, "watch_config = true"));
    let c = client();
    let (_, slot, _) = get(&c, &gw.url("/api/x"), &[("x-user-id", "u1")]).await;
    assert_eq!(slot, "v1");
    // A ConfigMap update: the new weight is picked up with no signal or API call.
    gw.write_config(&canary_config(&v1, &v2, 100.0, "watch_config = true"));
    gw.wait_log("reload", |l| l["message"] == "configuration reloaded");
    let (_, slot, _) = get(&c, &gw.url("/api/x"), &[("x-user-id", "u1")]).await;
    assert_eq!(slot, "v2");
    // A broken file is refused; the last good configuration keeps serving.
    gw.write_config("[[route]]\nname = 1\n");
    gw.wait_log("failed reload", |l| {
        l["message"] == "configuration reload failed; keeping the previous one"
    });
    let (s, slot, _) = get(&c, &gw.url("/api/x"), &[("x-user-id", "u1")]).await;
    assert_eq!((s, slot.as_str()), (200, "v2"));
}
