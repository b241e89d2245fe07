//! Upstream proxying: headers, errors, streaming, WebSocket, graceful shutdown.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn forwarding_headers_are_set_and_hop_by_hop_headers_removed() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, ""));
    let c = client();
    let resp = c
        .get(gw.url("/api/echo?q=1"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-secret")
        .header("x-secret", "drop me")
        .header("x-request-id", "req-abc-123")
        .header("x-app", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-abc-123");
    assert_eq!(resp.headers()["x-switchyard-slot"], "v1");
    assert!(
        resp.headers().get("keep-alive").is_none(),
        "hop-by-hop response header leaked"
    );
    let body: Value = resp.json().await.unwrap();
    let h = &body["headers"];
    assert_eq!(body["path"], "/api/echo");
    assert_eq!(body["query"], "q=1");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.data.to_string());
    assert_eq!(
        h["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{}\"", gw.data)
    );
    assert_eq!(h["x-request-id"], "req-abc-123");
    assert_eq!(
        h["host"],
        v1.addr.to_string(),
        "Host is the upstream's unless preserve_host"
    );
    assert_eq!(h["x-app"], "kept");
    assert!(
        h.get("x-secret").is_none(),
        "header named in Connection was forwarded"
    );

    // Generated request ids are returned and forwarded.
    let resp = c.get(gw.url("/api/echo")).send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["headers"]["x-request-id"], id.as_str());
}

/// Sends `head` on a new connection and reads one response with a `Content-Length` body: its
/// status line, its fields (names lower-cased) and its body.
async fn exchange(gw: &Gateway, head: &str) -> (String, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.data).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    loop {
        let mut buf = [0u8; 8192];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed in the response");
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let text = String::from_utf8(got[..end].to_vec()).unwrap();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap().to_string();
        let fields: Vec<(String, String)> = lines
            .map(|l| l.split_once(": ").unwrap())
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect();
        let len: usize = fields
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .expect("a content-length");
        if got.len() >= end + 4 + len {
            return (status, fields, got[end + 4..end + 4 + len].to_vec());
        }
    }
}

#[tokio::test]
async fn the_raw_lane_and_the_general_path_send_and_answer_the_same() {
    // The same request twice: plain (the data plane's raw lane takes it) and with
    // `Content-Length: 0` (hyper and the general path take it). The upstream must see the same
    // fields, and the client get the same answer, but for the trace's span ids (new per hop) and
    // the length field the second request itself carries.
    let up = Upstream::start("v1").await;
    let gw = Gateway::start(&format!(
        "{}\n[[slot]]\nname = \"v1\"\nkind = \"upstream\"\nurl = \"{}\"\n\
         [[route]]\nname = \"api\"\npath = \"/\"\nstable = \"v1\"\n",
        listeners(""),
        up.url()
    ));
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let head = |extra: &str| {
        format!(
            "GET /echo?q=1 HTTP/1.1\r\nHost: gw.example\r\nX-Forwarded-For: 203.0.113.9\r\n\
             Forwarded: for=203.0.113.9\r\nConnection: x-secret\r\nX-Secret: drop me\r\n\
             X-Forwarded-Host: spoofed\r\nX-Request-Id: req-1\r\ntraceparent: {trace}\r\n\
             Cookie: a=1; b=2\r\nX-App: kept\r\n{extra}\r\n"
        )
    };
    let lane = exchange(&gw, &head("")).await;
    let general = exchange(&gw, &head("Content-Length: 0\r\n")).await;
    // Span ids are new per request; the rest of `traceparent` is the client's trace.
    let span_free = |v: &str| v.rsplitn(3, '-').nth(2).unwrap_or(v).to_string();
    let normal = |(status, fields, body): (String, Vec<(String, String)>, Vec<u8>)| {
        let mut fields: Vec<(String, String)> = fields
            .into_iter()
            .filter(|(n, _)| n != "date" && n != "content-length")
            .map(|(n, v)| {
                let v = if n == "traceparent" { span_free(&v) } else { v };
                (n, v)
            })
            .collect();
        fields.sort();
        let mut seen: Value = serde_json::from_slice(&body).unwrap();
        let h = seen["headers"].as_object_mut().unwrap();
        h.remove("content-length");
        let t = h.remove("traceparent").unwrap();
        h.insert("traceparent".into(), span_free(t.as_str().unwrap()).into());
        (status, fields, seen)
    };
    let (lane, general) = (normal(lane), normal(general));
    assert_eq!(lane.0, "HTTP/1.1 200 OK");
    let sent = &lane.2["headers"];
    assert_eq!(sent["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(sent["x-forwarded-host"], "gw.example");
    assert_eq!(sent["x-request-id"], "req-1");
    assert_eq!(sent["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(sent.get("x-secret").is_none() && sent.get("connection").is_none());
    assert_eq!(lane, general);
}

#[tokio::test]
async fn upstream_down_is_502_and_too_slow_is_504() {
    let v1 = Upstream::start("v1").await;
    // A port with nothing listening: bind, note the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        r#"{}
[[slot]]
name = "dead"
kind = "upstream"
url = "http://{dead}"

[[slot]]
name = "slow"
kind = "upstream"
url = "{}"
timeout_ms = 300

[[route]]
name = "dead"
path = "/dead"
stable = "dead"

[[route]]
name = "slow"
path = "/slow"
stable = "slow"
"#,
        listeners(""),
        v1.url()
    );
    let gw = Gateway::start(&config);
    let c = client();
    let (status, slot, body) = get(&c, &gw.url("/dead/x"), &[]).await;
    assert_eq!((status, slot.as_str()), (502, "dead"));
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert!(body["error"]["message"].as_str().is_some());

    let started = Instant::now();
    let (status, _, body) = get(&c, &gw.url("/slow/slow?ms=3000"), &[]).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "504 came after {:?}",
        started.elapsed()
    );
    let (status, _, _) = get(&c, &gw.url("/slow/slow?ms=10"), &[]).await;
    assert_eq!(status, 200);

    let dead_stats = slot_state(&c, &gw, "dead").await;
    assert_eq!(dead_stats["last_minute"]["errors"], 1);
}

#[tokio::test]
async fn hundred_megabytes_stream_both_ways_in_bounded_memory() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, "max_body_bytes = 209715200"));
    let c = client();
    get(&c, &gw.url("/api/warm"), &[]).await;
    let before = gw.peak_rss();

    // Upload: a streamed (chunked) body of 100 MiB.
    let chunk = bytes::Bytes::from(vec![7u8; 256 * 1024]);
    let stream = futures_util::stream::iter(
        (0..SIZE / chunk.len() as u64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let resp = c
        .post(gw.url("/api/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["received"].as_u64(), Some(SIZE));

    // Download: 100 MiB streamed from the upstream.
    let resp = c
        .get(gw.url(&format!("/api/bytes?n={SIZE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = 0u64;
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        got += chunk.unwrap().len() as u64;
    }
    assert_eq!(got, SIZE);

    let growth = gw.peak_rss().saturating_sub(before);
    assert!(
        growth < 48 * 1024 * 1024,
        "gateway peak memory grew by {} MiB",
        growth / (1024 * 1024)
    );
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through() {
    let ws = WsEcho::start().await;
    let gw = Gateway::start(&ws.config(""));
    let (mut sock, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws/echo", gw.data))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["x-switchyard-slot"], "ws");
    for i in 0..5 {
        let msg = format!("hello {i}");
        sock.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), sock.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), msg);
    }
    let big = vec![42u8; 1 << 20];
    sock.send(tokio_tungstenite::tungstenite::Message::binary(big.clone()))
        .await
        .unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), sock.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo.into_data().as_ref(), big.as_slice());
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let mut gw = Gateway::start(&canary_config(&v1, &v2, 0.0, "drain_timeout_ms = 10000"));
    let c = client();
    let url = gw.url("/api/slow?ms=1500");
    let pending = tokio::spawn({
        let c = c.clone();
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    gw.wait_log("drain start", |l| {
        l["message"] == "shutting down: draining connections"
    });
    let ready = c.get(gw.admin_url("/readyz")).send().await;
    if let Ok(r) = ready {
        assert_eq!(r.status(), 503, "not ready while draining");
    }
    assert_eq!(
        pending.await.unwrap().unwrap(),
        200,
        "in-flight request must finish"
    );
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.child.wait().unwrap();
        (s, gw)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {}", status.0);
    assert!(
        std::net::TcpStream::connect(status.1.data).is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn w3c_trace_context_is_propagated_with_this_hop_as_parent_and_echoed() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, ""));
    let c = client();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = c
        .get(gw.url("/api/trace"))
        .header("traceparent", incoming)
        .send()
        .await
        .unwrap();
    let echoed = r.headers()["traceparent"].to_str().unwrap().to_string();
    let v: serde_json::Value = r.json().await.unwrap();
    let upstream = v["headers"]["traceparent"].as_str().unwrap();
    assert_eq!(upstream, echoed);
    let parts: Vec<&str> = echoed.split('-').collect();
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(parts[2], "00f067aa0ba902b7", "this hop is the new parent");
    assert_eq!(parts[3], "01", "flags kept");
    // None, or an invalid one: a fresh, valid trace.
    for bad in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("junk"),
    ] {
        let mut rb = c.get(gw.url("/api/trace"));
        if let Some(b) = bad {
            rb = rb.header("traceparent", b);
        }
        let r = rb.send().await.unwrap();
        let t = r.headers()["traceparent"].to_str().unwrap().to_string();
        let p: Vec<&str> = t.split('-').collect();
        assert_eq!(p.len(), 4, "{t}");
        assert_eq!(
            (p[0].len(), p[1].len(), p[2].len(), p[3].len()),
            (2, 32, 16, 2),
            "{t}"
        );
        assert!(p[1].bytes().any(|b| b != b'0'));
    }
}

/// What a collector received: (content type, body) of each export.
#[cfg(feature = "otlp")]
type Exports = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A loopback OTLP/HTTP collector: keeps the body of every `POST /v1/traces`.
#[cfg(feature = "otlp")]
async fn otlp_collector() -> (std::net::SocketAddr, Exports, tokio::task::JoinHandle<()>) {
    let got: Exports = Exports::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: http::HeaderMap, body: bytes::Bytes| {
            let sink = sink.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                sink.lock().unwrap().push((ct, body.to_vec()));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, got, task)
}

#[cfg(feature = "otlp")]
#[tokio::test]
async fn request_spans_are_exported_over_otlp_in_the_clients_trace() {
    let (addr, got, task) = otlp_collector().await;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let cfg = canary_config(&v1, &v2, 0.0, "").replace(
        "[admin]",
        &format!("[log]\notlp_endpoint = \"http://{addr}\"\n\n[admin]"),
    );
    let gw = Gateway::start(&cfg);
    let c = client();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r = c
        .get(gw.url("/api/traced"))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echoed = r.headers()["traceparent"].to_str().unwrap().to_string();
    let span_id = &echoed[36..52];
    assert_eq!(&echoed[3..35], trace);
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let exported = got.lock().unwrap().clone();
        if let Some((ct, body)) = exported.iter().find(|(_, b)| contains(b, &hex(trace))) {
            assert_eq!(ct, "application/x-protobuf");
            // The gateway's span: the client's trace, the client's span as parent, the span id the
            // gateway passed on, named after the route.
            assert!(contains(body, &hex(parent)), "parent span id missing");
            assert!(
                contains(body, &hex(span_id)),
                "the echoed span id is not the exported one"
            );
            assert!(contains(body, b"GET api"));
            assert!(contains(body, b"switchyard.slot"));
            assert!(contains(body, b"switchyard"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no span exported: {exported:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    task.abort();
}

/// `[server] idle_poll_us`: after each request a worker keeps polling for a while before it
/// sleeps. Once the requests stop, the workers must sleep: an idle gateway uses no CPU. Here at
/// the largest window, after requests on both HTTP/1.1 paths (the fast path and hyper).
#[tokio::test]
async fn an_idle_gateway_uses_no_cpu_once_its_requests_stop() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start(&canary_config(&v1, &v2, 20.0, "idle_poll_us = 10000"));
    let c = client();
    for i in 0..100 {
        let user = format!("user-{i}");
        let (status, _, _) = get(&c, &gw.url("/api/echo"), &[("x-user-id", &user)]).await;
        assert_eq!(status, 200);
        let resp = c
            .post(gw.url("/api/upload"))
            .body(vec![1u8; 4096])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Past the window (10 ms), with room for a loaded machine.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = gw.cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = gw.cpu_time() - before;
    // A worker that kept polling would use most of a core; an idle gateway measures 0 here.
    assert!(
        used <= Duration::from_millis(50),
        "an idle gateway used {used:?} of CPU in 1 s"
    );
}

/// Unset, `idle_poll_us` is 20 µs while the workers are no more than the cores and 0 (off) when
/// they outnumber them (pollers would take turns on the cores); set, it is what the file says.
#[tokio::test]
async fn idle_polling_is_on_by_default_and_off_when_workers_outnumber_cores() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let cores = std::thread::available_parallelism().unwrap().get();
    let window_of = |extra: &str| {
        let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, extra));
        let listening = gw.wait_log("data listener", |l| {
            l["message"] == "listening" && l["listener"] == "data"
        });
        (
            listening["workers"].as_u64(),
            listening["idle_poll_us"].as_u64(),
        )
    };
    assert_eq!(window_of(""), (Some(cores as u64), Some(20)));
    let more = cores as u64 + 1;
    assert_eq!(
        window_of(&format!("workers = {more}")),
        (Some(more), Some(0))
    );
    assert_eq!(
        window_of(&format!("workers = {more}\nidle_poll_us = 50")),
        (Some(more), Some(50))
    );
}
