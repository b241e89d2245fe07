//! The floor of the proxy benchmark: a reverse proxy with nothing but the bare transport, built on
//! the same runtime as the gateway (one single-threaded tokio runtime per worker, each with its own
//! `SO_REUSEPORT` listener and its own upstream keep-alive connections, mimalloc).
//!
//! Per request it parses the head with `httparse`, writes it to a pooled upstream connection with
//! `X-Forwarded-For`/`-Proto` added and `Connection` left out, reads the response head and its
//! `Content-Length` body, and writes them back. No routing, request ids, trace context, metrics,
//! timeouts or limits; request bodies and responses without `Content-Length` are not handled (the
//! connection is closed). It is a measuring stick, not a proxy to run.
//!
//! Usage: `proxy-floor LISTEN UPSTREAM [WORKERS]` (addresses as `127.0.0.1:8080`).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MAX_HEADERS: usize = 64;

thread_local! {
    /// Idle upstream connections of this worker, each with its read buffer.
    static POOL: RefCell<Vec<(TcpStream, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || io::Error::other("usage: proxy-floor LISTEN UPSTREAM [WORKERS]");
    let listen: SocketAddr = args.next().and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let upstream: SocketAddr = args.next().and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let workers: usize = args
        .next()
        .map_or(Some(2), |a| a.parse().ok())
        .ok_or_else(usage)?;
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(listen, upstream)))
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("worker panicked"))??;
    }
    Ok(())
}

fn worker(listen: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(listen),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_port(true)?;
        socket.set_reuse_address(true)?;
        socket.bind(&listen.into())?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        let listener = TcpListener::from_std(socket.into())?;
        loop {
            let (client, peer) = listener.accept().await?;
            client.set_nodelay(true)?;
            tokio::spawn(async move {
                // Any error ends the connection, as a proxy would after answering 502.
                let _ = serve(client, peer, upstream).await;
            });
        }
    })
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "closed")
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Appends `name: value\r\n`.
fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

async fn serve(mut client: TcpStream, peer: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    let ip = peer.ip().to_string();
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    loop {
        // The request head, forwarded as it came but for `Connection`.
        let head_len = loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut fields);
            if let httparse::Status::Complete(len) = req
                .parse(&buf[..filled])
                .map_err(|_| unsupported("bad request"))?
            {
                out.clear();
                out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
                out.push(b' ');
                out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
                out.extend_from_slice(b" HTTP/1.1\r\n");
                for f in req.headers.iter() {
                    if f.name.eq_ignore_ascii_case("content-length")
                        || f.name.eq_ignore_ascii_case("transfer-encoding")
                    {
                        return Err(unsupported("request body"));
                    }
                    if !f.name.eq_ignore_ascii_case("connection") {
                        field(&mut out, f.name.as_bytes(), f.value);
                    }
                }
                field(&mut out, b"x-forwarded-for", ip.as_bytes());
                field(&mut out, b"x-forwarded-proto", b"http");
                out.extend_from_slice(b"\r\n");
                break len;
            }
            if filled == buf.len() {
                return Err(unsupported("request head too large"));
            }
            match client.read(&mut buf[filled..]).await? {
                0 => return Ok(()),
                n => filled += n,
            }
        };
        buf.copy_within(head_len..filled, 0);
        filled -= head_len;

        let (mut up, mut ubuf) = match POOL.with_borrow_mut(Vec::pop) {
            Some(idle) => idle,
            None => {
                let up = TcpStream::connect(upstream).await?;
                up.set_nodelay(true)?;
                (up, vec![0u8; 16 * 1024])
            }
        };
        up.write_all(&out).await?;
        // The response head, with `Connection` left out, and its `Content-Length` body.
        let mut got = 0;
        loop {
            if got == ubuf.len() {
                return Err(unsupported("response too large"));
            }
            match up.read(&mut ubuf[got..]).await? {
                0 => return Err(closed()),
                n => got += n,
            }
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut fields);
            let httparse::Status::Complete(len) = resp
                .parse(&ubuf[..got])
                .map_err(|_| unsupported("bad response"))?
            else {
                continue;
            };
            out.clear();
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(resp.code.unwrap_or(502).to_string().as_bytes());
            out.push(b' ');
            out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
            out.extend_from_slice(b"\r\n");
            let mut length = None;
            for f in resp.headers.iter() {
                if f.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(f.value)
                        .ok()
                        .and_then(|v| v.parse().ok());
                }
                if !f.name.eq_ignore_ascii_case("connection") {
                    field(&mut out, f.name.as_bytes(), f.value);
                }
            }
            out.extend_from_slice(b"\r\n");
            let length: usize = length.ok_or_else(|| unsupported("no Content-Length"))?;
            if len + length > ubuf.len() {
                return Err(unsupported("response too large"));
            }
            while got < len + length {
                match up.read(&mut ubuf[got..]).await? {
                    0 => return Err(closed()),
                    n => got += n,
                }
            }
            out.extend_from_slice(&ubuf[len..len + length]);
            break;
        }
        POOL.with_borrow_mut(|pool| pool.push((up, ubuf)));
        client.write_all(&out).await?;
    }
}
