//! Limits: body size (413), header size (431), slow requests (408), idle and slow-loris connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

fn raw_response(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn json_body(raw: &str) -> Value {
    serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null)
}

#[tokio::test]
async fn oversized_bodies_get_413_declared_or_streamed() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, "max_body_bytes = 1048576"));
    let c = client();
    // Declared too large: refused before any byte is forwarded.
    let resp = c
        .post(gw.url("/api/upload"))
        .body(vec![0u8; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");
    // Chunked, no length: cut off when the limit is crossed.
    let chunk = bytes::Bytes::from(vec![1u8; 64 * 1024]);
    let stream =
        futures_util::stream::iter((0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = c
        .post(gw.url("/api/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 413);
    } // else: the gateway closed the connection mid-upload, which is also a refusal.
    // Within the limit passes.
    let resp = c
        .post(gw.url("/api/upload"))
        .body(vec![0u8; 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["received"], 1024 * 1024);
}

#[tokio::test]
async fn oversized_headers_get_431_json() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, "max_header_bytes = 4096"));
    let c = client();
    let resp = c
        .get(gw.url("/api"))
        .header("x-big", "a".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "headers_too_large");
    let resp = c
        .get(gw.url("/api"))
        .header("x-big", "a".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn slow_body_gets_408_and_idle_connections_are_closed() {
    slow_body_and_idle_connections("").await;
}

/// The same with every connection on hyper (the fast path off).
#[tokio::test]
async fn slow_body_gets_408_and_idle_connections_are_closed_on_hyper_alone() {
    slow_body_and_idle_connections("http1_fast_path = false").await;
}

async fn slow_body_and_idle_connections(extra: &str) {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start(&canary_config(
        &v1,
        &v2,
        0.0,
        &format!(
            "request_timeout_ms = 600\nidle_timeout_ms = 700\nheader_read_timeout_ms = 800\n{extra}"
        ),
    ));
    let addr = gw.data;
    tokio::task::spawn_blocking(move || {
        // A body that never finishes.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /api/upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nonly a part",
        )
        .unwrap();
        let started = Instant::now();
        let raw = raw_response(&mut s);
        assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
        assert_eq!(json_body(&raw)["error"]["code"], "request_timeout");
        assert!(started.elapsed() < Duration::from_secs(5));

        // A keep-alive connection left idle is closed by the gateway.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /api/x HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let raw = raw_response(&mut s);
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "expected the idle connection to be closed");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
            "closed after {waited:?}"
        );

        // Slow loris: headers that never finish are cut off.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /api/x HTTP/1.1\r\nhost: x\r\nx-drip: ")
            .unwrap();
        let started = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "slow-loris connection kept for {:?}",
            started.elapsed()
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn per_client_rate_limits_answer_429_with_retry_after() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let cfg = canary_config(&v1, &v2, 0.0, "")
        + "\n[route.rate_limit]\nrequests_per_s = 0.5\nburst = 3\nkey = \"sticky\"\n";
    let gw = Gateway::start(&cfg);
    let c = client();
    let url = gw.url("/api/x");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = c
            .get(&url)
            .header("x-user-id", "alice")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 429 {
            // One token every 2 s: the wait is 1–2 s, rounded up.
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry), "{retry}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "rate_limited");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        vec![200, 200, 200, 429, 429],
        "a burst of 3, then limited"
    );
    // Another client has its own bucket.
    let r = c.get(&url).header("x-user-id", "bob").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Refill: one token every 2 s.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = c
        .get(&url)
        .header("x-user-id", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = metrics_text(&c, &gw).await;
    assert!(m.contains("switchyard_rate_limited_total{route=\"api\"} 2"));
}
