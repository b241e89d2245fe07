//! HTTP/2 (h2c and over TLS with ALPN) and TLS with a test CA.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, ""));
    init_crypto();
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = c
        .get(gw.url("/api/h2"))
        .header("x-gray-enable", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.headers()["x-switchyard-slot"], "v2");
    let body: Value = resp.json().await.unwrap();
    // The upstream is spoken to over HTTP/1.1, with the client's authority as X-Forwarded-Host.
    assert_eq!(body["headers"]["x-forwarded-host"], gw.data.to_string());
}

#[tokio::test]
async fn tls_with_alpn_h2_and_http1() {
    init_crypto();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Switchyard test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();

    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let tls = format!(
        "\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, &tls));
    let root = reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
    let url = format!("https://localhost:{}/api/tls", gw.data.port());

    let h2 = reqwest::Client::builder()
        .tls_certs_only([root.clone()])
        .build()
        .unwrap();
    let resp = h2.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "ALPN should pick h2"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");

    let h1 = reqwest::Client::builder()
        .tls_certs_only([root])
        .http1_only()
        .build()
        .unwrap();
    let resp = h1.get(&url).send().await.unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, reqwest::Version::HTTP_11)
    );

    // A client that does not trust the CA fails the handshake; plain HTTP on the TLS port fails too.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap();
    assert!(untrusting.get(&url).send().await.is_err());
    assert!(client().get(gw.url("/api")).send().await.is_err());
}
