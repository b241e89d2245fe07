//! Data-plane auth through the real binary: JWTs signed by an independent implementation (PyJWT, see
//! `tests/reference/jwt_fixtures.py`), static bearer tokens, `jwt:sub` as the sticky key.

use std::collections::HashMap;

use serde_json::Value;

use crate::harness::*;

const ISS: &str = "https://id.example.test";
const AUD: &str = "switchyard-api";

fn fixture(name: &str) -> String {
    repo(&format!(".cache/reference/jwt/{name}"))
}

fn tokens() -> HashMap<String, String> {
    serde_json::from_str(&std::fs::read_to_string(fixture("tokens.json")).unwrap()).unwrap()
}

/// One upstream slot behind `/api` with the given auth lines.
fn auth_config(up: &Upstream, auth: &str, sticky: &str) -> String {
    format!(
        r#"{listeners}
[[slot]]
name = "v1"
kind = "upstream"
url = "{u}"

[[route]]
name = "api"
path = "/api"
stable = "v1"
sticky = [{sticky}]
{auth}
"#,
        listeners = listeners(""),
        u = up.url(),
    )
}

/// A gateway whose `/api` route takes HS256 JWTs signed with the fixtures' secret (from the
/// environment) for the fixtures' issuer and audience, plus `extra` lines in the route.
fn hs256_gateway(up: &Upstream, extra: &str) -> Gateway {
    let secret = std::fs::read_to_string(fixture("secret.txt")).unwrap();
    let cfg = auth_config(
        up,
        &format!(
            "auth = \"jwt\"\n[route.jwt]\nsecret_env = \"TEST_JWT_SECRET\"\nissuer = \"{ISS}\"\naudience = [\"{AUD}\"]\n{extra}"
        ),
        "\"ip\"",
    );
    Gateway::start_with_env(&cfg, &[("TEST_JWT_SECRET", &secret)])
}

/// Status, error code and `WWW-Authenticate` of a GET with `Authorization: <auth>`.
async fn call(c: &reqwest::Client, url: &str, auth: Option<&str>) -> (u16, String, String, Value) {
    let mut rb = c.get(url);
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code, challenge, body)
}

#[tokio::test]
async fn jwt_hs256_checks_signature_expiry_issuer_and_audience_and_refuses_alg_none() {
    let up = Upstream::start("v1").await;
    let gw = hs256_gateway(&up, "");
    let c = client();
    let url = gw.url("/api/x");
    let t = tokens();
    let bearer = |name: &str| format!("Bearer {}", t[name]);

    let (status, _, _, body) = call(&c, &url, Some(&bearer("hs_valid"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["upstream"], "v1");
    // The token is passed on to the upstream (it may want the identity too).
    assert_eq!(
        body["headers"]["authorization"],
        bearer("hs_valid").as_str()
    );

    let (status, code, challenge, _) = call(&c, &url, None).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");

    for (name, want_status, want_code) in [
        ("hs_expired", 401, "token_expired"),
        ("hs_wrong_key", 401, "invalid_token"),
        ("hs_no_exp", 401, "invalid_token"),
        ("hs_not_yet", 401, "invalid_token"),
        ("none_alg", 401, "invalid_token"),
        ("rs_valid", 401, "invalid_token"),
        ("hs_wrong_aud", 403, "forbidden"),
        ("hs_wrong_iss", 403, "forbidden"),
    ] {
        let (status, code, challenge, body) = call(&c, &url, Some(&bearer(name))).await;
        assert_eq!(
            (status, code.as_str()),
            (want_status, want_code),
            "{name}: {body}"
        );
        assert!(challenge.contains("error="), "{name}: {challenge}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, code, _, _) = call(&c, &url, Some("Basic YWxpY2U6cHc=")).await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    let (status, _, _, _) = call(&c, &url, Some(&t["hs_valid"])).await;
    assert_eq!(status, 401, "a token without the Bearer scheme");

    let m = metrics_text(&c, &gw).await;
    assert!(
        m.contains(r#"switchyard_auth_denied_total{route="api",code="forbidden"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn jwt_rs256_and_es256_from_a_jwks_file_and_a_pem_key() {
    let up = Upstream::start("v1").await;
    let t = tokens();
    let bearer = |name: &str| format!("Bearer {}", t[name]);
    let c = client();

    let jwks = auth_config(
        &up,
        &format!(
            "auth = \"jwt\"\n[route.jwt]\njwks = \"{}\"\naudience = [\"{AUD}\"]\n",
            fixture("jwks.json")
        ),
        "\"ip\"",
    );
    let gw = Gateway::start(&jwks);
    let url = gw.url("/api/x");
    for (name, want) in [
        ("rs_valid", 200),
        ("es_valid", 200),
        ("rs_wrong_key", 401),
        ("rs_expired", 401),
        // HS256 "signed" with the RSA public key: the classic algorithm confusion.
        ("hs_with_rsa_pem", 401),
        ("hs_valid", 401),
        ("none_alg", 401),
    ] {
        let (status, _, _, body) = call(&c, &url, Some(&bearer(name))).await;
        assert_eq!(status, want, "{name}: {body}");
    }
    drop(gw);

    let pem = auth_config(
        &up,
        &format!(
            "auth = \"jwt\"\n[route.jwt]\npublic_key = \"{}\"\n",
            fixture("ec_pub.pem")
        ),
        "\"ip\"",
    );
    let gw = Gateway::start(&pem);
    let url = gw.url("/api/x");
    for (name, want) in [("es_pem_valid", 200), ("es_valid", 200), ("rs_valid", 401)] {
        let (status, _, _, body) = call(&c, &url, Some(&bearer(name))).await;
        assert_eq!(status, want, "{name}: {body}");
    }
}

#[tokio::test]
async fn the_jwt_subject_is_the_sticky_key_and_every_replica_agrees() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let secret = std::fs::read_to_string(fixture("secret.txt")).unwrap();
    let cfg = format!(
        r#"{listeners}
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
canary_weight = 30
sticky = ["jwt:sub", "ip"]
auth = "jwt"

[route.jwt]
secret_env = "TEST_JWT_SECRET"
audience = ["{AUD}"]
"#,
        listeners = listeners(""),
        u1 = v1.url(),
        u2 = v2.url(),
    );
    let env = [("TEST_JWT_SECRET", secret.as_str())];
    let a = Gateway::start_with_env(&cfg, &env);
    let b = Gateway::start_with_env(&cfg, &env);
    let c = client();
    let t = tokens();
    let mut canary = 0;
    for i in 0..200 {
        let auth = format!("Bearer {}", t[&format!("user{i}")]);
        let mut seen = Vec::new();
        for gw in [&a, &b, &a] {
            let (status, slot, body) =
                get(&c, &gw.url("/api/x"), &[("authorization", &auth)]).await;
            assert_eq!(status, 200, "{body}");
            seen.push(slot);
        }
        assert!(
            seen.iter().all(|s| *s == seen[0]),
            "user-{i} moved between slots: {seen:?}"
        );
        canary += usize::from(seen[0] == "v2");
    }
    // All 200 users share one client IP: only the subject can spread them.
    assert!(
        (35..=85).contains(&canary),
        "{canary} of 200 subjects on the 30 % canary"
    );
}

#[tokio::test]
async fn bearer_tokens_from_a_file_and_the_environment() {
    let up = Upstream::start("v1").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.txt");
    std::fs::write(&file, "# API clients\nfile-token-1\n\nfile-token-2\n").unwrap();
    let cfg = auth_config(
        &up,
        &format!(
            "auth = \"bearer\"\n[route.bearer]\ntokens_file = \"{}\"\ntokens_env = \"TEST_API_TOKENS\"\n",
            file.display()
        ),
        "\"ip\"",
    );
    let gw = Gateway::start_with_env(&cfg, &[("TEST_API_TOKENS", "env-a, env-b")]);
    let c = client();
    let url = gw.url("/api/x");
    for (token, want) in [
        ("file-token-1", 200),
        ("file-token-2", 200),
        ("env-b", 200),
        ("file-token-3", 401),
        ("# API clients", 401),
        ("env-a, env-b", 401),
    ] {
        let (status, _, _, body) = call(&c, &url, Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, want, "{token}: {body}");
    }
    let (status, code, _, _) = call(&c, &url, None).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
}

/// Browsers cannot set `Authorization` on a WebSocket: an upgrade may carry the token as the
/// `access_token` query parameter (RFC 6750 §2.3); ordinary requests may not.
#[tokio::test]
async fn websocket_upgrades_may_carry_the_token_in_the_query_and_nothing_else_may() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    let ws = WsEcho::start().await;
    let cfg = ws.config("auth = \"bearer\"\n[route.bearer]\ntokens = [\"stream-token\"]\n");
    let gw = Gateway::start(&cfg);
    let base = format!("ws://{}/ws/echo", gw.data);

    let (mut sock, _) =
        tokio_tungstenite::connect_async(format!("{base}?access_token=stream-token"))
            .await
            .expect("a WebSocket with the right query token is let through");
    sock.send(Message::text("hello")).await.unwrap();
    let echoed = sock.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "hello");

    for query in ["", "?access_token=wrong", "?access_token="] {
        match tokio_tungstenite::connect_async(format!("{base}{query}")).await {
            Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 401, "{query:?}"),
            other => panic!(
                "{query:?}: expected 401, got {:?}",
                other.map(|(_, r)| r.status())
            ),
        }
    }

    // A plain request with the token in the URL is refused (tokens in URLs end up in logs).
    let c = client();
    let (status, code, _, _) = call(&c, &gw.url("/ws/echo?access_token=stream-token"), None).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    // The header still works, and wins over the query.
    let r = c
        .get(gw.url("/ws/echo?access_token=wrong"))
        .header("authorization", "Bearer stream-token")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 101);
}

/// On an authenticated route the result cache is per caller unless `scope = "shared"`: a hit must
/// not tell one caller that somebody else already sent the same input.
#[tokio::test]
async fn the_result_cache_is_per_caller_on_authenticated_routes_unless_shared() {
    let up = Upstream::start("v1").await;
    let c = client();
    for (scope, other_caller_hits) in [("", false), ("scope = \"shared\"\n", true)] {
        let cfg = auth_config(
            &up,
            &format!(
                "auth = \"bearer\"\n[route.bearer]\ntokens = [\"alice-token\", \"bob-token\"]\n[route.cache]\n{scope}"
            ),
            "\"ip\"",
        );
        let gw = Gateway::start(&cfg);
        let url = gw.url("/api/photo?style=blur");
        let cache = |token: &'static str| {
            let (c, url) = (c.clone(), url.clone());
            async move {
                let r = c
                    .get(&url)
                    .header("authorization", format!("Bearer {token}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.headers()["x-switchyard-cache"]
                    .to_str()
                    .unwrap()
                    .to_string()
            }
        };
        assert_eq!(cache("alice-token").await, "miss", "{scope}");
        assert_eq!(cache("alice-token").await, "hit", "{scope}");
        let want = if other_caller_hits { "hit" } else { "miss" };
        assert_eq!(cache("bob-token").await, want, "{scope}");
        assert_eq!(cache("bob-token").await, "hit", "{scope}");
    }

    // With JWTs the caller is the issuer + subject: a renewed token of the same user hits, another
    // user misses.
    let gw = hs256_gateway(&up, "[route.cache]\n");
    let t = tokens();
    assert_ne!(t["hs_valid"], t["hs_valid_renewed"]);
    for (token, want) in [
        ("hs_valid", "miss"),
        ("hs_valid_renewed", "hit"),
        ("user0", "miss"),
        ("user0", "hit"),
    ] {
        let r = c
            .get(gw.url("/api/photo?style=blur"))
            .header("authorization", format!("Bearer {}", t[token]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{token}");
        assert_eq!(r.headers()["x-switchyard-cache"], want, "{token}");
    }
}

#[test]
fn check_rejects_incomplete_auth_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = r#"
[[slot]]
name = "v1"
kind = "static"
body = "hi"

[[route]]
name = "a"
path = "/a"
stable = "v1"
sticky = ["jwt:sub"]

[[route]]
name = "b"
path = "/b"
stable = "v1"
auth = "jwt"

[route.jwt]
secret = "short"
public_key = "/nonexistent.pem"
"#;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    for want in [
        "needs `auth = \"jwt\"`",
        "set exactly one of",
        "at least 32 bytes",
        "does not exist",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}
