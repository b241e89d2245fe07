//! `switchyard serve`: start listeners, handle signals (SIGHUP reloads, SIGTERM/SIGINT drain), exit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchyard_config::{Config, DEFAULT_CONFIG};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState, ReloadError};
use crate::server::{self, ConnLimits, TlsSlot};
use crate::state::Gateway;
use crate::telemetry;

/// Loads the configuration from `path`, or the embedded default.
pub fn load_config(path: Option<&Path>) -> Result<Config, switchyard_config::Problems> {
    match path {
        Some(p) => switchyard_config::load_file(p),
        None => switchyard_config::load_named(DEFAULT_CONFIG, "<embedded default>", None),
    }
}

fn limits(cfg: &Config) -> ConnLimits {
    ConnLimits {
        header_read_timeout: Duration::from_millis(cfg.server.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(cfg.server.idle_timeout_ms),
        // hyper refuses (bare 431/400) only far over the configured limit; the data plane answers
        // the configured limit itself with a JSON 431.
        max_header_buffer: (cfg.server.max_header_bytes * 2).max(16 * 1024),
        fast_path: cfg.server.http1_fast_path,
    }
}

fn resolve(base: Option<&Path>, file: &str) -> PathBuf {
    let p = Path::new(file);
    match base {
        Some(dir) if p.is_relative() && !p.exists() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// Which listener a TLS configuration belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// `[server.tls]`.
    Data,
    /// `[admin.tls]` (optionally with client certificates).
    Admin,
}

/// The certificate, key and client CA files of `which` listener, resolved.
fn tls_files(
    cfg: &Config,
    config_path: Option<&Path>,
    which: Listener,
) -> Option<Vec<std::path::PathBuf>> {
    let base = config_path.and_then(Path::parent);
    let files: Vec<&String> = match which {
        Listener::Data => {
            let t = cfg.server.tls.as_ref()?;
            vec![&t.cert, &t.key]
        }
        Listener::Admin => {
            let t = cfg.admin.tls.as_ref()?;
            [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
                .into_iter()
                .flatten()
                .collect()
        }
    };
    Some(files.into_iter().map(|f| resolve(base, f)).collect())
}

fn build_tls(
    cfg: &Config,
    config_path: Option<&Path>,
    which: Listener,
) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let Some(files) = tls_files(cfg, config_path, which) else {
        return Ok(None);
    };
    let text: Vec<String> = files
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    let acceptor = server::tls_acceptor(&text[0], &text[1], text.get(2).map(String::as_str));
    match which {
        Listener::Data => acceptor.map(Some),
        Listener::Admin => acceptor
            .map(Some)
            .map_err(|e| anyhow::anyhow!("admin.tls: {e:#}")),
    }
}

/// Re-reads the file and applies it; on any problem nothing changes.
fn reload(gw: &Gateway, tls: &TlsSlot) -> Result<serde_json::Value, ReloadError> {
    let path = gw.config_path.as_deref();
    let result = load_config(path)
        .map_err(|p| ReloadError {
            problems: p.to_string().lines().map(String::from).collect(),
        })
        .and_then(|cfg| {
            let acceptor = build_tls(&cfg, path, Listener::Data).map_err(|e| ReloadError {
                problems: vec![format!("{e:#}")],
            })?;
            let old = gw.snapshot();
            if old.config.server.listen != cfg.server.listen
                || old.config.admin.listen != cfg.admin.listen
                || old.config.admin.tls != cfg.admin.tls
            {
                tracing::warn!(
                    "listen addresses or admin TLS changed in the file; they take effect on restart"
                );
            }
            if limits(&old.config) != limits(&cfg)
                || old.config.server.workers != cfg.server.workers
                || old.config.server.idle_poll_us != cfg.server.idle_poll_us
            {
                tracing::warn!(
                    "connection settings changed in the file (header_read_timeout_ms, \
                     idle_timeout_ms, max_header_bytes, http1_fast_path, idle_poll_us, workers): the listeners keep \
                     the old ones until restart"
                );
            }
            if old.config.server.tls.is_some() != cfg.server.tls.is_some() {
                tracing::warn!(
                    "TLS was turned on or off in the file; that takes effect on restart"
                );
            }
            let summary = serde_json::json!({
                "reloaded": true,
                "slots": cfg.slots.len(),
                "routes": cfg.routes.len(),
            });
            gw.apply_config(cfg).map_err(|e| ReloadError {
                problems: vec![format!("{e:#}")],
            })?;
            if let Some(a) = acceptor {
                tls.store(Some(Arc::new(a)));
            }
            Ok(summary)
        });
    telemetry::count_reload(result.is_ok());
    match &result {
        Ok(_) => tracing::info!(file = ?path, "configuration reloaded"),
        Err(e) => {
            tracing::error!(file = ?path, problems = ?e.problems, "configuration reload failed; keeping the previous one")
        }
    }
    result
}

/// Size and modification time of the TLS files, to notice a renewed certificate.
fn tls_stamp(
    cfg: &Config,
    config_path: Option<&Path>,
    which: Listener,
) -> Option<Vec<(u64, std::time::SystemTime)>> {
    tls_files(cfg, config_path, which)?
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.len(), m.modified().ok()?))
        })
        .collect()
}

/// Re-reads the certificate and key when their files change (a renewal by certbot or a mounted
/// Kubernetes secret), without a restart or SIGHUP. Handshakes after the swap use the new
/// certificate; established connections are not touched. A pair that does not load (say, the key
/// written but not yet the certificate) is retried at the next check, the old one serving meanwhile.
async fn watch_tls(gw: Arc<Gateway>, tls: TlsSlot, which: Listener) {
    let path = gw.config_path.clone();
    let mut loaded = tls_stamp(&gw.snapshot().config, path.as_deref(), which);
    let mut failed: Option<Vec<(u64, std::time::SystemTime)>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let cfg = gw.snapshot().config.clone();
        let stamp = tls_stamp(&cfg, path.as_deref(), which);
        if stamp.is_none() || stamp == loaded {
            continue;
        }
        match build_tls(&cfg, path.as_deref(), which) {
            Ok(Some(acceptor)) => {
                tls.store(Some(Arc::new(acceptor)));
                tracing::info!(listener = ?which, "TLS certificate reloaded");
                loaded = stamp;
                failed = None;
            }
            Ok(None) => {}
            Err(e) => {
                if failed != stamp {
                    tracing::warn!(error = %format!("{e:#}"), "TLS files changed but do not load; keeping the current certificate");
                    failed = stamp;
                }
            }
        }
    }
}

/// With `server.watch_config`, reloads the configuration when its file changes (checked every 2 s,
/// following symlinks, as a Kubernetes ConfigMap mount swaps them). Like SIGHUP: a file with a problem
/// changes nothing.
async fn watch_config(
    gw: Arc<Gateway>,
    reload: Arc<dyn Fn() -> Result<serde_json::Value, ReloadError> + Send + Sync>,
) {
    let Some(path) = gw.config_path.clone() else {
        return;
    };
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    };
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now.is_none() || now == seen {
            continue;
        }
        seen = now;
        if !gw.snapshot().config.server.watch_config {
            continue;
        }
        tracing::info!(file = %path.display(), "configuration file changed: reloading");
        let f = reload.clone();
        let _ = tokio::task::spawn_blocking(move || f()).await;
    }
}

/// CPU cores this process may use (the cgroup's CPU quota counts: a container with a CPU limit
/// sees that many).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Number of data-plane workers: `server.workers`, or one per CPU core.
pub fn worker_count(cfg: &Config) -> usize {
    if cfg.server.workers > 0 {
        cfg.server.workers
    } else {
        cores()
    }
}

/// Runs the gateway until SIGTERM/SIGINT. Call on the control runtime.
///
/// Threads: this (control) runtime serves the admin listener, signals and reloads; `workers`
/// data-plane threads each run a single-threaded runtime with their own `SO_REUSEPORT` listener and
/// their own upstream connection pools, so a request is served start to finish on one thread.
pub async fn serve(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics()?;
    let tls: TlsSlot = Arc::new(arc_swap::ArcSwapOption::from(
        build_tls(&config, config_path.as_deref(), Listener::Data)?.map(Arc::new),
    ));
    let limits = limits(&config);
    let workers = worker_count(&config);
    let admin_tls: Option<TlsSlot> = build_tls(&config, config_path.as_deref(), Listener::Admin)?
        .map(|a| Arc::new(arc_swap::ArcSwapOption::from_pointee(a)));
    let admin_mtls = config
        .admin
        .tls
        .as_ref()
        .is_some_and(|t| t.client_ca.is_some());
    let admin_tls_on = admin_tls.is_some();
    let (data_addr, admin_addr) = (config.server.listen.clone(), config.admin.listen.clone());
    let drain = Duration::from_millis(config.server.drain_timeout_ms);
    let idle_poll = crate::idle_poll::window(config.server.idle_poll_us, workers, cores());
    let gw = Arc::new(Gateway::new(config, config_path)?);

    let (data_listeners, data_local) = server::bind_workers(&data_addr, workers, "server.listen")?;
    let (admin_listener, admin_local) = server::bind(&admin_addr, "admin.listen").await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (released_tx, released_rx) = watch::channel(false);
    let tracker = TaskTracker::new();

    let reload_fn = {
        let (gw, tls) = (gw.clone(), tls.clone());
        Arc::new(move || reload(&gw, &tls))
    };
    let admin_router = admin::router(AdminState {
        gw: gw.clone(),
        metrics,
        reload: reload_fn.clone(),
    });
    let console = Arc::new(crate::console::Console::new(admin_router.clone()));

    let mut threads = Vec::with_capacity(workers);
    for (i, std_listener) in data_listeners.into_iter().enumerate() {
        let (tls, tracker) = (tls.clone(), tracker.clone());
        let worker = Arc::new(crate::console::Worker {
            gw: gw.clone(),
            console: console.clone(),
        });
        let lane_gw = gw.clone();
        let (shutdown_rx, mut released_rx) = (shutdown_rx.clone(), released_rx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("data-{i}"))
            .spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    if !idle_poll.is_zero() {
                        tokio::spawn(crate::idle_poll::run(idle_poll));
                    }
                    let listener = tokio::net::TcpListener::from_std(std_listener)?;
                    let tls = tls.load().is_some().then_some(tls);
                    server::serve(
                        "data",
                        listener,
                        tls,
                        limits,
                        move |conn, req| crate::console::handle(worker.clone(), conn, req),
                        crate::dataplane::RawLane(lane_gw),
                        shutdown_rx,
                        tracker,
                    )
                    .await;
                    // Keep driving this worker's connections until the control thread says the drain is over.
                    let _ = released_rx.wait_for(|done| *done).await;
                    Ok(())
                })
            })?;
        threads.push(handle);
    }
    let autopilot = tokio::spawn(crate::autopilot::run(gw.clone()));
    let tls_watch = tokio::spawn(watch_tls(gw.clone(), tls.clone(), Listener::Data));
    let admin_tls_watch = admin_tls
        .clone()
        .map(|t| tokio::spawn(watch_tls(gw.clone(), t, Listener::Admin)));
    let config_watch = tokio::spawn(watch_config(gw.clone(), reload_fn.clone()));
    let admin = tokio::spawn(server::serve(
        "admin",
        admin_listener,
        admin_tls,
        limits,
        move |_conn, req| {
            let router = admin_router.clone();
            async move {
                use tower::ServiceExt;
                match router.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        },
        server::NoLane,
        shutdown_rx.clone(),
        tracker.clone(),
    ));
    tracing::info!(listener = "data", addr = %data_local, tls = tls.load().is_some(), workers,
        idle_poll_us = idle_poll.as_micros() as u64, "listening");
    tracing::info!(listener = "admin", addr = %admin_local, tls = admin_tls_on,
        client_certificates = admin_mtls, "listening");

    wait_for_signals(reload_fn).await;
    tracing::info!(
        drain_timeout_ms = drain.as_millis() as u64,
        "shutting down: draining connections"
    );
    gw.draining.store(true, Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    autopilot.abort();
    tls_watch.abort();
    if let Some(w) = admin_tls_watch {
        w.abort();
    }
    config_watch.abort();
    let _ = admin.await;
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!("drain timeout reached; closing the remaining connections");
    }
    let _ = released_tx.send(true);
    for t in threads {
        match t.join() {
            Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "data-plane worker failed"),
            Err(_) => tracing::error!("data-plane worker panicked"),
            Ok(Ok(())) => {}
        }
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signals(
    reload_fn: Arc<dyn Fn() -> Result<serde_json::Value, ReloadError> + Send + Sync>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
            return;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); return; }
            _ = int.recv() => { tracing::info!("SIGINT received"); return; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP received: reloading the configuration");
                let f = reload_fn.clone();
                let _ = tokio::task::spawn_blocking(move || f()).await;
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(
    _reload_fn: Arc<dyn Fn() -> Result<serde_json::Value, ReloadError> + Send + Sync>,
) {
    let _ = tokio::signal::ctrl_c().await;
}
