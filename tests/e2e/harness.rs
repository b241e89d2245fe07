//! Test helpers: the real `switchyard` binary in a child process, and real HTTP/WebSocket upstream
//! servers on loopback. Everything started here stops when its handle is dropped.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type TestBody = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    })
}

/// A real HTTP upstream on 127.0.0.1 that reports who it is and what it received.
///
/// * any path: JSON `{"upstream", "method", "path", "query", "headers"}`;
/// * `/slow?ms=N`: the same after N ms;
/// * `/status?code=N`: answers status N;
/// * `/bytes?n=N`: streams N bytes in 64 KiB chunks;
/// * `/upload`: reads the whole body and answers `{"received": bytes}`.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

/// What a faulty upstream does with every request (switchable while it runs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Answers normally.
    Healthy,
    /// Answers 500.
    Fail,
    /// Never answers.
    Hang,
    /// Answers normally after this many milliseconds.
    Delay(u64),
}

impl Upstream {
    pub async fn start(name: &'static str) -> Self {
        Self::start_with(name, Arc::new(Mutex::new(Fault::Healthy))).await
    }

    /// An upstream whose behaviour the test switches through the returned handle.
    pub async fn start_faulty(name: &'static str, fault: Fault) -> (Self, Arc<Mutex<Fault>>) {
        let handle = Arc::new(Mutex::new(fault));
        (Self::start_with(name, handle.clone()).await, handle)
    }

    async fn start_with(name: &'static str, fault: Arc<Mutex<Fault>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let fault = fault.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let mode = *fault.lock().unwrap();
                        async move {
                            match mode {
                                Fault::Healthy => {}
                                Fault::Fail => {
                                    let mut resp = Response::new(full(
                                        json!({ "upstream": name, "fault": "fail" }).to_string(),
                                    ));
                                    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                    return Ok(resp);
                                }
                                Fault::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
                                Fault::Delay(ms) => {
                                    tokio::time::sleep(Duration::from_millis(ms)).await
                                }
                            }
                            handle_upstream(name, req).await
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle_upstream(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path.ends_with("/upload") {
        let mut body = req.into_body();
        let mut received: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => received += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        return Ok(Response::new(full(
            json!({ "upstream": name, "received": received }).to_string(),
        )));
    }
    if path.ends_with("/bytes") {
        let n: u64 = query_param(&req, "n")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = n / chunk.len() as u64;
        let rest = (n % chunk.len() as u64) as usize;
        let stream = futures_util::stream::iter(0..chunks)
            .map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone())))
            .chain(futures_util::stream::iter(
                (rest > 0).then(|| Ok(Frame::data(Bytes::from(vec![b'x'; rest])))),
            ));
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut()
            .insert("x-upstream", name.parse().unwrap());
        return Ok(resp);
    }
    if path.ends_with("/slow") {
        let ms: u64 = query_param(&req, "ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path.ends_with("/status") {
        let code: u16 = query_param(&req, "code")
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        let mut resp = Response::new(full(
            json!({ "upstream": name, "status": code }).to_string(),
        ));
        *resp.status_mut() = StatusCode::from_u16(code).unwrap();
        return Ok(resp);
    }
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    let body = json!({
        "upstream": name,
        "method": req.method().as_str(),
        "path": path,
        "query": req.uri().query(),
        "headers": headers,
    });
    let mut resp = Response::new(full(body.to_string()));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(resp)
}

/// A WebSocket echo server on 127.0.0.1.
pub struct WsEcho {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl WsEcho {
    /// A config with an upstream slot `ws` on this server behind the route `ws` on `/ws`, plus
    /// `route_extra` lines in the route.
    pub fn config(&self, route_extra: &str) -> String {
        format!(
            "{}\n[[slot]]\nname = \"ws\"\nkind = \"upstream\"\nurl = \"http://{}\"\n\n[[route]]\nname = \"ws\"\npath = \"/ws\"\nstable = \"ws\"\n{route_extra}",
            listeners(""),
            self.addr
        )
    }

    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            use futures_util::SinkExt;
                            if ws.send(msg).await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real gateway binary, started on free ports with a config written to a temp dir.
pub struct Gateway {
    pub child: Child,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    pub logs: Arc<Mutex<Vec<Value>>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the gateway with `config` (its `[server] listen`/`[admin] listen` should be port 0).
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("switchyard.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["serve", "--log-format", "json", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start switchyard");
        let stdout = child.stdout.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(v);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut data, mut admin) = (None, None);
        while data.is_none() || admin.is_none() {
            assert!(
                Instant::now() < deadline,
                "gateway did not start: {:?}",
                logs.lock().unwrap()
            );
            if let Ok(Some(status)) = child.try_wait() {
                panic!("gateway exited with {status}: {:?}", logs.lock().unwrap());
            }
            for l in logs.lock().unwrap().iter() {
                if l["message"] == "listening" {
                    let addr: SocketAddr = l["addr"].as_str().unwrap().parse().unwrap();
                    match l["listener"].as_str() {
                        Some("data") => data = Some(addr),
                        Some("admin") => admin = Some(addr),
                        _ => {}
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            data: data.unwrap(),
            admin: admin.unwrap(),
            config_path,
            logs,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.data, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|v| v.parse().unwrap())
            .collect();
        // Clock ticks: 100 per second on Linux (USER_HZ).
        Duration::from_millis((f[0] + f[1]) * 10)
    }

    /// Peak resident memory (VmHWM) in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    /// Waits for a log record satisfying `pred`.
    pub fn wait_log(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_log_count(what, 1, pred)
    }

    /// Waits until `n` log records satisfy `pred`; returns the last of them.
    pub fn wait_log_count(&self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter(|l| pred(l))
                .nth(n - 1)
            {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line for {what}: {:?}",
                self.logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the config file atomically (a reload never sees a half-written file).
    pub fn write_config(&self, text: &str) {
        let tmp = self.config_path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP client (HTTP/1.1, no connection reuse surprises between tests).
pub fn client() -> reqwest::Client {
    init_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Installs the ring crypto provider for rustls (once per process).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `[server]`/`[admin]` on free loopback ports, plus `extra` server keys.
pub fn listeners(extra: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n")
}

/// Two upstream slots `v1`/`v2` and a route `api` on `/api` with overrides and a sticky split.
pub fn canary_config(v1: &Upstream, v2: &Upstream, weight: f64, extra_server: &str) -> String {
    format!(
        r#"{listeners}
[[slot]]
name = "v1"
kind = "upstream"
url = "{u1}"
version = "1.0"

[[slot]]
name = "v2"
kind = "upstream"
url = "{u2}"
version = "2.0"

[[route]]
name = "api"
path = "/api"
stable = "v1"
canary = "v2"
canary_weight = {weight}
sticky = ["header:x-user-id", "cookie:uid", "ip"]

[[route.match]]
header = "x-gray-enable"
equals = "true"
slot = "v2"

[[route.match]]
cookie = "ABTEST_ApiV2"
slot = "v2"

[[route.match]]
query = "canary"
slot = "v2"
"#,
        listeners = listeners(extra_server),
        u1 = v1.url(),
        u2 = v2.url(),
    )
}

/// GETs `url` with headers and returns (status, slot header, JSON body).
pub async fn get(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, String, Value) {
    let mut rb = c.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    answer(rb.send().await.unwrap()).await
}

/// (status, `X-Switchyard-Slot` or "", JSON body or null) of a gateway response.
pub async fn answer(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let slot = resp
        .headers()
        .get("x-switchyard-slot")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, slot, body)
}

/// The JSON an admin `GET` answers (no token).
pub async fn admin_json(c: &reqwest::Client, gw: &Gateway, path: &str) -> Value {
    c.get(gw.admin_url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One slot's entry in `GET /admin/slots`.
pub async fn slot_state(c: &reqwest::Client, gw: &Gateway, name: &str) -> Value {
    let slots = admin_json(c, gw, "/admin/slots").await;
    slots["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no slot `{name}` in {slots}"))
}

/// Absolute path of a file of the repository (models, test data); fails clearly when set-up is missing.
pub fn repo(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    assert!(p.exists(), "{} is missing: run `make setup`", p.display());
    p.canonicalize().unwrap().display().to_string()
}

/// The Prometheus text of the gateway's `/metrics`.
pub async fn metrics_text(c: &reqwest::Client, gw: &Gateway) -> String {
    c.get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The two-speaker call of `tests/reference/asr_channels.py` (one speaker per channel, overlapping)
/// and the reference pipeline's transcripts of it.
pub struct Call {
    /// Path of the stereo WAV.
    pub path: String,
    /// The reference's text of each channel alone.
    pub channel_texts: Vec<String>,
    /// The reference's text of the average of the channels.
    pub mix_text: String,
}

/// See [`Call`].
pub fn call_reference() -> Call {
    let dir = repo(".cache/reference/asr/call");
    let json: Value =
        serde_json::from_slice(&std::fs::read(format!("{dir}/call_stereo.json")).unwrap()).unwrap();
    Call {
        path: format!("{dir}/call_stereo.wav"),
        channel_texts: json["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect(),
        mix_text: json["mix"]["text"].as_str().unwrap().to_string(),
    }
}
