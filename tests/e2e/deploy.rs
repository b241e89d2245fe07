//! Deployment files: the Kubernetes manifests against the Kubernetes schemas (PyPI
//! `kubernetes-validate`, offline), and the ConfigMap's configuration run by the real binary.

use std::process::Command;

use crate::harness::*;

fn validator() -> String {
    repo(".cache/venv/bin/kubernetes-validate")
}

const MANIFESTS: [&str; 6] = [
    "configmap.yaml",
    "deployment.yaml",
    "service.yaml",
    "hpa.yaml",
    "hpa-inflight.yaml",
    "pdb.yaml",
];

#[test]
fn kubernetes_manifests_match_the_kubernetes_schemas() {
    let dir = repo("deploy/kubernetes");
    let out = Command::new(validator())
        .args(["--strict", "-k", "1.33.0"])
        .args(MANIFESTS)
        .current_dir(&dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("passed").count(), 7, "{text}");

    // The validator does catch mistakes.
    let bad = tempfile::tempdir().unwrap();
    let broken = std::fs::read_to_string(format!("{dir}/deployment.yaml"))
        .unwrap()
        .replace("replicas: 3", "replicas: three");
    std::fs::write(bad.path().join("deployment.yaml"), broken).unwrap();
    let out = Command::new(validator())
        .args(["--strict", "-k", "1.33.0", "deployment.yaml"])
        .current_dir(bad.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The TOML inside the ConfigMap, with the image's paths mapped to this checkout.
fn configmap_toml(data_dir: &str) -> String {
    let yaml = std::fs::read_to_string(repo("deploy/kubernetes/configmap.yaml")).unwrap();
    let mut lines = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("switchyard.toml: |"));
    lines.next();
    let toml: String = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let root = repo(".");
    toml.replace("/opt/switchyard/", &format!("{root}/"))
        .replace("/var/lib/switchyard", data_dir)
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("0.0.0.0:9901", "127.0.0.1:0")
}

#[tokio::test]
async fn the_configmap_configuration_runs() {
    let data = tempfile::tempdir().unwrap();
    let cfg = configmap_toml(&data.path().display().to_string());
    assert!(
        cfg.contains("[[route]]") && cfg.contains("watch_config = true"),
        "{cfg}"
    );
    let gw = Gateway::start_with_env(&cfg, &[("SWITCHYARD_ADMIN_TOKEN", "t0ken")]);
    let c = client();
    let r = c.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(gw.admin_url("/admin/routes"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let names: Vec<&str> = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["faces", "asr"]);
}
