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

fn test_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf_of(ca: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_renewed_certificate_is_picked_up_without_failed_requests() {
    init_crypto();
    let (old_ca, new_ca) = (test_ca("old CA"), test_ca("new CA"));
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let write = |(cert, key): (String, String)| {
        // Written the way a renewal tool does: new files renamed into place, key first.
        for (path, text) in [(&key_path, key), (&cert_path, cert)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    };
    write(leaf_of(&old_ca));
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let tls = format!(
        "\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, &tls));
    let url = format!("https://localhost:{}/api/x", gw.data.port());
    let trust = |cas: &[&CertifiedIssuer<'static, KeyPair>]| {
        reqwest::Client::builder()
            .tls_certs_only(
                cas.iter()
                    .map(|c| reqwest::Certificate::from_pem(c.pem().as_bytes()).unwrap()),
            )
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let only_new = trust(&[&new_ca]);
    assert!(
        only_new.get(&url).send().await.is_err(),
        "the old certificate is served"
    );

    // A client trusting both keeps making new connections through the rotation.
    let both = trust(&[&old_ca, &new_ca]);
    let loop_url = url.clone();
    let busy = tokio::spawn(async move {
        let mut n = 0;
        let until = std::time::Instant::now() + std::time::Duration::from_millis(3000);
        while std::time::Instant::now() < until {
            let r = both
                .get(&loop_url)
                .send()
                .await
                .expect("no failed request during rotation");
            assert_eq!(r.status(), 200);
            n += 1;
        }
        n
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    write(leaf_of(&new_ca));
    gw.wait_log("tls reload", |l| l["message"] == "TLS certificate reloaded");
    assert!(busy.await.unwrap() > 10);
    let r = only_new
        .get(&url)
        .send()
        .await
        .expect("the new certificate is served");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_admin_listener_can_require_client_certificates() {
    init_crypto();
    let (server_ca, client_ca, stranger_ca) = (
        test_ca("server CA"),
        test_ca("admin clients CA"),
        test_ca("someone else"),
    );
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (cert, key) = leaf_of(&server_ca);
    let (cert, key) = (write("cert.pem", cert), write("key.pem", key));
    let ca = write("clients.pem", client_ca.pem());
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let cfg = canary_config(&v1, &v2, 0.0, "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n\n[admin.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n"
        ),
    );
    let gw = Gateway::start(&cfg);
    let url = format!("https://localhost:{}/admin/routes", gw.admin.port());
    let root = reqwest::Certificate::from_pem(server_ca.pem().as_bytes()).unwrap();
    let with_identity = |issuer: Option<&CertifiedIssuer<'static, KeyPair>>| {
        let mut b = reqwest::Client::builder().tls_certs_only([root.clone()]);
        if let Some(issuer) = issuer {
            let (cert, key) = leaf_of(issuer);
            b = b.identity(reqwest::Identity::from_pem((key + &cert).as_bytes()).unwrap());
        }
        b.build().unwrap()
    };

    let admin = with_identity(Some(&client_ca));
    let r = admin.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let routes: Value = r.json().await.unwrap();
    assert_eq!(routes["routes"][0]["name"], "api");
    // The certificate gets a client through the handshake; the token is still required.
    let r = admin.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // No certificate, or one from another CA: the handshake fails, nothing is served.
    for client in [with_identity(None), with_identity(Some(&stranger_ca))] {
        let err = client.get(&url).bearer_auth("s3cret").send().await;
        assert!(err.is_err(), "{err:?}");
    }
    // Plain HTTP on the admin port fails too; the data plane is not affected.
    assert!(
        client()
            .get(gw.admin_url("/admin/routes"))
            .send()
            .await
            .is_err()
    );
    let (status, _, _) = get(&client(), &gw.url("/api/x"), &[]).await;
    assert_eq!(status, 200);
    // The console's operator API on the data plane is no way around the client certificates.
    let (status, _, body) = get(
        &client(),
        &gw.url("/ui/api/admin/routes"),
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "operator_console_disabled");

    // A renewed admin certificate (from another CA) is picked up without a restart.
    let renewed_ca = test_ca("renewed server CA");
    let (cert2, key2) = leaf_of(&renewed_ca);
    for (name, text) in [("key.pem", key2), ("cert.pem", cert2)] {
        let tmp = dir.path().join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.path().join(name)).unwrap();
    }
    let (c2, k2) = leaf_of(&client_ca);
    let renewed = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(renewed_ca.pem().as_bytes()).unwrap()])
        .identity(reqwest::Identity::from_pem((k2 + &c2).as_bytes()).unwrap())
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(r) = renewed.get(&url).bearer_auth("s3cret").send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed admin certificate was not loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
