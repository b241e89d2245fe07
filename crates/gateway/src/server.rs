//! Listeners: accept TCP (optionally TLS), serve HTTP/1.1 and HTTP/2 (h2c by preface, or ALPN over
//! TLS), close idle connections, and drain gracefully on shutdown.
//!
//! Each connection starts on `server/fast.rs`, a hand-written HTTP/1.1 path for requests without a body;
//! the first request it does not take (a body, an upgrade, HTTP/2, anything malformed) hands the
//! connection, with the bytes already read, to hyper for the rest of its life.

mod fast;

pub(crate) use fast::Rewind;
#[cfg(test)]
pub(crate) use fast::raw_request;
pub(crate) use fast::{
    Framing, Lane, LaneAnswer, NoLane, RawRequest, bodyless, push_date_field, push_framing,
    push_status_line,
};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::dataplane::ConnInfo;

/// Connection-level limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time to receive request headers (and the TLS handshake).
    pub header_read_timeout: Duration,
    /// Close a connection with no request in flight for this long.
    pub idle_timeout: Duration,
    /// hyper's read buffer / HTTP/2 header list limit; requests over it are refused by hyper itself.
    pub max_header_buffer: usize,
    /// Start connections on the hand-written HTTP/1.1 path (`server/fast.rs`); `false`: hyper only.
    pub fast_path: bool,
}

/// A TLS acceptor that can be replaced while serving (certificate rotation).
pub type TlsSlot = Arc<ArcSwapOption<TlsAcceptor>>;

/// Builds a rustls acceptor (TLS 1.2 and 1.3, ALPN h2 then http/1.1) from PEM files; with
/// `client_ca`, the handshake requires a client certificate signed by one of the CA certificates in
/// that PEM file (mutual TLS).
pub fn tls_acceptor(cert: &str, key: &str, client_ca: Option<&str>) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("reading certificate `{cert}`: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("parsing certificate `{cert}`: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!("`{cert}` holds no PEM certificate");
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("reading key `{key}`: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| anyhow::anyhow!("reading client CA `{ca}`: {e}"))?
            {
                let c = c.map_err(|e| anyhow::anyhow!("parsing client CA `{ca}`: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| anyhow::anyhow!("client CA `{ca}`: {e}"))?;
            }
            if roots.is_empty() {
                anyhow::bail!("`{ca}` holds no PEM certificate");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| anyhow::anyhow!("client CA `{ca}`: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Per-connection activity, for the idle timeout.
struct Activity {
    inflight: AtomicUsize,
    last_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.inflight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        Some(Duration::from_millis(
            now.saturating_sub(self.last_ms.load(Ordering::Relaxed)),
        ))
    }
}

struct InflightGuard(Arc<Activity>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Serves `listener` until `shutdown` turns true, then lets connections finish (tracked by `tracker`).
/// `handler` answers each request `lane` does not take.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<H, F, L>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsSlot>,
    limits: ConnLimits,
    handler: H,
    lane: L,
    mut shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
) where
    H: Fn(Arc<ConnInfo>, Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
    L: Lane,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_buffer)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_buffer as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let handler = handler.clone();
        let lane = lane.clone();
        let shutdown = shutdown.clone();
        let acceptor = tls.as_ref().and_then(|t| t.load_full());
        tracker.spawn(async move {
            match acceptor {
                None => {
                    let info = Arc::new(ConnInfo::new(peer, false));
                    serve_conn(builder, stream, info, limits, handler, lane, shutdown).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let info = Arc::new(ConnInfo::new(peer, true));
                            // HTTP/2 negotiated: straight to hyper.
                            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let limits = ConnLimits { fast_path: limits.fast_path && !h2, ..limits };
                            serve_conn(builder, tls_stream, info, limits, handler, lane, shutdown).await;
                        }
                        Ok(Err(e)) => tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(listener = name, %peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    tracing::info!(listener = name, "stopped accepting connections");
}

/// Serves one connection: simple requests on the fast path, then (if it hands the connection
/// over, or with the fast path off) everything else on hyper: HTTP/1.1 with bodies and upgrades,
/// HTTP/2.
async fn serve_conn<I, H, F, L>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    info: Arc<ConnInfo>,
    limits: ConnLimits,
    handler: H,
    lane: L,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Arc<ConnInfo>, Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
    L: Lane,
{
    let io = if limits.fast_path {
        match fast::serve(io, info.clone(), limits, &handler, &lane, &mut shutdown).await {
            Some(rest) => rest,
            None => return,
        }
    } else {
        Rewind::new(bytes::Bytes::new(), io)
    };
    let activity = Arc::new(Activity {
        inflight: AtomicUsize::new(0),
        last_ms: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        crate::idle_poll::note_work();
        act.inflight.fetch_add(1, Ordering::Relaxed);
        let guard = InflightGuard(act.clone());
        // Boxed once here: the request's future (routing, the slot call) is large, and hyper moves
        // the service future into its dispatcher; a pointer moves instead of the whole state.
        let fut = Box::pin(handler(info.clone(), req.map(Body::new)));
        async move {
            let resp = fut.await;
            drop(guard);
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let check_every = (limits.idle_timeout / 4).max(Duration::from_millis(50));
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(check_every), if !closing => {
                if activity.idle_for().is_some_and(|d| d >= limits.idle_timeout) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Binds a TCP listener with a clear error.
pub async fn bind(addr: &str, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Binds `n` sockets to one address with `SO_REUSEPORT`, one per data-plane worker, so the kernel
/// spreads connections across workers (the Envoy/Pingora model; measured faster here than all
/// workers accepting from one shared socket). With port 0 the first socket picks the port and the
/// others join it.
pub fn bind_workers(
    addr: &str,
    n: usize,
    what: &str,
) -> anyhow::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut target: SocketAddr = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("{what}: `{addr}`: {e}"))?;
    let mut out = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        let socket = Socket::new(
            Domain::for_address(target),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        socket
            .bind(&target.into())
            .map_err(|e| anyhow::anyhow!("cannot listen on {target} ({what}): {e}"))?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        target = listener.local_addr()?;
        out.push(listener);
    }
    Ok((out, target))
}
