//! The fast path against real sockets: a real listener (`server::serve`, so hand-overs reach the
//! real hyper), raw bytes written by the test as a client would, responses parsed with `httparse`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use bytes::BytesMut;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::{Parsed, parse};
use crate::dataplane::ConnInfo;
use crate::server::{ConnLimits, NoLane, Rewind, serve};

const LIMITS: ConnLimits = ConnLimits {
    header_read_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(5),
    max_header_buffer: 16 * 1024,
    fast_path: true,
};

/// Sets its flag when dropped: shows a handler's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A server on loopback whose handler answers by path; stopped when dropped.
struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tracker: TaskTracker,
    dropped: Arc<AtomicBool>,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(LIMITS).await
    }

    async fn start_with(limits: ConnLimits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let tracker = TaskTracker::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let handler = move |_conn: Arc<ConnInfo>, req: Request<Body>| {
            let flag = flag.clone();
            async move { answer(req, flag).await }
        };
        tokio::spawn(serve(
            "test",
            listener,
            None,
            limits,
            handler,
            NoLane,
            rx,
            tracker.clone(),
        ));
        Self {
            addr,
            stop,
            tracker,
            dropped,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// A new connection with `raw` written on it, and an empty buffer to read answers into.
    async fn send(&self, raw: &[u8]) -> (TcpStream, BytesMut) {
        let mut s = self.connect().await;
        s.write_all(raw).await.unwrap();
        (s, BytesMut::new())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.tracker.close();
    }
}

async fn answer(req: Request<Body>, flag: Arc<AtomicBool>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let text = |s: String| Response::new(Body::from(s));
    match path.as_str() {
        "/chunked" => {
            let chunks =
                ["first,", "second"].map(|c| Ok::<_, std::io::Error>(bytes::Bytes::from(c)));
            Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
        }
        "/nocontent" => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        "/close" => {
            let mut r = text("bye".into());
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            r
        }
        "/short" => {
            let mut r = text("abc".into());
            r.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from_static("10"),
            );
            r
        }
        "/wait" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            text("waited".into())
        }
        "/hang" => {
            let _guard = DropFlag(flag);
            std::future::pending::<()>().await;
            unreachable!()
        }
        _ => {
            let got = body.collect().await.map(|b| b.to_bytes().len());
            let a = parts
                .headers
                .get("x-a")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            text(format!(
                "{} {} {:?} a={a} body={}",
                parts.method,
                parts.uri,
                parts.version,
                got.map_or(-1, |n| n as i64)
            ))
        }
    }
}

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `s` (buffered bytes in `buf` first); `head` for a response to `HEAD`.
/// `None` when the connection ends first.
async fn read_response(s: &mut TcpStream, buf: &mut BytesMut, head: bool) -> Option<Resp> {
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        if let httparse::Status::Complete(n) = r.parse(buf).unwrap() {
            let status = r.code.unwrap();
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let _ = buf.split_to(n);
            let mut resp = Resp {
                status,
                headers,
                body: Vec::new(),
            };
            if head || status == 204 || status == 304 {
                return Some(resp);
            }
            if resp.header("transfer-encoding") == Some("chunked") {
                loop {
                    while !buf.windows(2).any(|w| w == b"\r\n") {
                        read_more(s, buf).await?;
                    }
                    let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap();
                    let size = usize::from_str_radix(
                        std::str::from_utf8(&buf[..line_end]).unwrap().trim(),
                        16,
                    )
                    .unwrap();
                    while buf.len() < line_end + 2 + size + 2 {
                        read_more(s, buf).await?;
                    }
                    resp.body
                        .extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
                    let _ = buf.split_to(line_end + 2 + size + 2);
                    if size == 0 {
                        return Some(resp);
                    }
                }
            }
            let len: usize = resp.header("content-length").unwrap().parse().unwrap();
            while buf.len() < len {
                read_more(s, buf).await?;
            }
            resp.body = buf.split_to(len).to_vec();
            return Some(resp);
        }
        read_more(s, buf).await?;
    }
}

async fn read_more(s: &mut TcpStream, buf: &mut BytesMut) -> Option<()> {
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(buf))
        .await
        .expect("no answer within 10 s")
        .ok()?;
    (n > 0).then_some(())
}

/// Whether the server closes `s` (end of stream) within 5 s, with nothing more sent.
async fn closed(s: &mut TcpStream, buf: &mut BytesMut) -> bool {
    let before = buf.len();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_buf(buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    ) && buf.len() == before
}

#[tokio::test]
async fn pipelined_simple_requests_are_answered_in_order_with_length_and_date() {
    let server = Server::start().await;
    let (mut s, mut buf) = server.send(b"GET /a?q=1 HTTP/1.1\r\nhost: x\r\nx-a: one\r\n\r\nDELETE /b HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let first = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "GET /a?q=1 HTTP/1.1 a=one body=0");
    assert_eq!(first.header("content-length"), Some("32"));
    let date = first.header("date").expect("a Date header");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert_eq!(first.header("connection"), None);
    let second = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(second.text(), "DELETE /b HTTP/1.1 a=- body=0");
    // Still open for more.
    s.write_all(b"GET /c HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let third = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(third.text(), "GET /c HTTP/1.1 a=- body=0");
}

#[tokio::test]
async fn a_request_with_a_body_hands_the_connection_to_hyper_with_nothing_lost() {
    let server = Server::start().await;
    let mut s = server.connect().await;
    // A simple request, then one with a body, then a simple one again, all in one write.
    s.write_all(
        b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n\
          POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
          GET /c HTTP/1.1\r\nhost: x\r\nx-a: 3\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(read_response(&mut s, &mut buf, false).await.unwrap().text());
    }
    assert_eq!(
        got,
        [
            "GET /a HTTP/1.1 a=- body=0",
            "POST /b HTTP/1.1 a=- body=5",
            "GET /c HTTP/1.1 a=3 body=0"
        ]
    );
    // Chunked request bodies too (on a new connection, as its first request).
    let (mut s, mut buf) = server.send(b"PUT /d HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").await;
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.text(), "PUT /d HTTP/1.1 a=- body=3");
}

#[tokio::test]
async fn head_http10_and_malformed_requests_get_hypers_answers() {
    let server = Server::start().await;
    // HEAD: hyper's head, no body, and the connection goes on.
    let (mut s, mut buf) = server
        .send(b"HEAD /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let head = read_response(&mut s, &mut buf, true).await.unwrap();
    assert_eq!(head.status, 200);
    let next = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(next.text(), "GET /b HTTP/1.1 a=- body=0");
    // HTTP/1.0.
    let (mut s, mut buf) = server.send(b"GET /e HTTP/1.0\r\n\r\n").await;
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.text(), "GET /e HTTP/1.0 a=- body=0");
    // A malformed header line: hyper's 400.
    let (mut s, mut buf) = server
        .send(b"GET /a HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n")
        .await;
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.status, 400);
    // A head over the header buffer: hyper's 431.
    let big = format!(
        "GET /a HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (mut s, mut buf) = server.send(big.as_bytes()).await;
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.status, 431);
}

#[tokio::test]
async fn unknown_length_is_chunked_and_204_has_no_body() {
    let server = Server::start().await;
    let (mut s, mut buf) = server.send(b"GET /chunked HTTP/1.1\r\nhost: x\r\n\r\nGET /nocontent HTTP/1.1\r\nhost: x\r\n\r\nGET /z HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let chunked = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert_eq!(chunked.header("content-length"), None);
    assert_eq!(chunked.text(), "first,second");
    let empty = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(empty.status, 204);
    assert_eq!(empty.header("content-length"), None);
    assert_eq!(empty.header("transfer-encoding"), None);
    // The next response starts right after the 204's head.
    let last = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(last.text(), "GET /z HTTP/1.1 a=- body=0");
}

#[tokio::test]
async fn connection_close_from_either_side_ends_the_connection() {
    let server = Server::start().await;
    let (mut s, mut buf) = server
        .send(b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
        .await;
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        closed(&mut s, &mut buf).await,
        "the request after `close` was served"
    );

    let (mut s, mut buf) = server.send(b"GET /close HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.text(), "bye");
    assert!(closed(&mut s, &mut buf).await);
}

#[tokio::test]
async fn a_body_shorter_than_its_length_closes_the_connection() {
    let server = Server::start().await;
    let (mut s, mut buf) = server.send(b"GET /short HTTP/1.1\r\nhost: x\r\n\r\n").await;
    // The head says 10 bytes; 3 come, then the end of the connection.
    assert!(read_response(&mut s, &mut buf, false).await.is_none());
    assert!(buf.ends_with(b"abc"), "{buf:?}");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_ends_busy_ones_after_their_response() {
    let server = Server::start().await;
    let (mut idle, mut idle_buf) = server.send(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await;
    read_response(&mut idle, &mut idle_buf, false)
        .await
        .unwrap();
    let (mut busy, mut buf) = server.send(b"GET /wait HTTP/1.1\r\nhost: x\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop.send(true).unwrap();
    // The idle one is closed at once; the busy one gets its answer, marked as the last.
    assert!(closed(&mut idle, &mut idle_buf).await);
    let r = read_response(&mut busy, &mut buf, false).await.unwrap();
    assert_eq!(r.text(), "waited");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed(&mut busy, &mut buf).await);
}

/// The fast path answers as hyper does: the same requests to a server with it and one without
/// (hyper alone) get the same status, fields (but `Date`), body and connection ending.
#[tokio::test]
async fn the_fast_path_answers_as_hyper_does() {
    let fast = Server::start().await;
    let hyper = Server::start_with(ConnLimits {
        fast_path: false,
        ..LIMITS
    })
    .await;
    let methods = ["GET", "DELETE", "OPTIONS", "POST"];
    let targets = [
        "/a",
        "/a/b?x=1&y=%20",
        "/chunked",
        "/nocontent",
        "/close",
        "*",
    ];
    let extras: [&[&str]; 4] = [
        &[],
        &["x-a: one"],
        &["connection: keep-alive", "cookie: k=v; j=w"],
        &["Connection: close", "X-A: two", "x-a: three"],
    ];
    let mut compared = 0;
    for method in methods {
        for target in targets {
            for extra in extras {
                let mut raw = format!("{method} {target} HTTP/1.1\r\nhost: x\r\n");
                for line in extra {
                    raw.push_str(line);
                    raw.push_str("\r\n");
                }
                raw.push_str("\r\n");
                // A second request behind it shows whether the connection stayed open.
                let probe = "GET /next HTTP/1.1\r\nhost: x\r\n\r\n";
                let mut answers = Vec::new();
                for server in [&fast, &hyper] {
                    let (mut s, mut buf) = server.send(format!("{raw}{probe}").as_bytes()).await;
                    let Some(mut r) = read_response(&mut s, &mut buf, false).await else {
                        panic!(
                            "{raw:?}: no answer from the server with fast_path = {}",
                            std::ptr::eq(server, &fast)
                        );
                    };
                    r.headers.retain(|(n, _)| n != "date");
                    r.headers.sort();
                    let next = read_response(&mut s, &mut buf, false)
                        .await
                        .map(|r| r.text());
                    let text = r.text();
                    answers.push((r.status, r.headers, text, next));
                }
                assert_eq!(answers[0], answers[1], "{raw:?}: fast path, then hyper");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 96);
}

#[tokio::test]
async fn a_client_that_goes_away_drops_its_request() {
    let server = Server::start().await;
    let mut s = server.connect().await;
    s.write_all(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!server.dropped.load(Ordering::SeqCst));
    drop(s);
    let mut waited = Duration::ZERO;
    while !server.dropped.load(Ordering::SeqCst) && waited < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert!(
        server.dropped.load(Ordering::SeqCst),
        "request kept after the client left"
    );
}

#[test]
fn parse_takes_only_plain_bodiless_http11_requests() {
    let other = |raw: &[u8]| {
        let mut buf = BytesMut::from(raw);
        let r = parse(&mut buf, 8192);
        assert!(
            matches!(r, Parsed::Other),
            "{:?}: {r:?}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(&buf[..], raw, "the buffer must be left as it was");
    };
    other(b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    other(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    other(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n");
    other(b"POST / HTTP/1.1\r\nexpect: 100-continue\r\n\r\n");
    other(b"GET /ws HTTP/1.1\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n");
    other(b"GET / HTTP/1.1\r\nconnection: keep-alive, upgrade\r\n\r\n");
    other(b"HEAD / HTTP/1.1\r\n\r\n");
    other(b"GET / HTTP/1.1\r\nte: gzip, Trailers\r\n\r\n");
    other(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n");
    other(b"GET / HTTP/1.0\r\n\r\n");
    other(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    other(b"GET / HTTP/1.1\r\nx: a\r\n b\r\n\r\n"); // obsolete line folding
    other(b"GET / HTTP/1.1\r\nbad name: 1\r\n\r\n");
    other(b"GET http://[::1 HTTP/1.1\r\n\r\n"); // not a URI
    // Incomplete: wait for more; incomplete and already at the limit: hyper's (431).
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nhost: x\r\n"[..]);
    assert!(matches!(parse(&mut buf, 8192), Parsed::Partial));
    assert!(matches!(parse(&mut buf, 20), Parsed::Other));
    // 101 header fields: more than hyper takes.
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..101 {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    other(&many);
}

#[test]
fn parse_returns_the_request_and_leaves_the_next_bytes() {
    let mut buf = BytesMut::from(
        &b"GET /p/a%20b?x=1&y HTTP/1.1\r\nHost: h.example\r\nX-Two: 1\r\nx-two: 2\r\nConnection: keep-alive, Close\r\n\r\nGET /next"[..],
    );
    let Parsed::Simple { req, close } = parse(&mut buf, 8192) else {
        panic!("not simple")
    };
    assert!(close);
    // Read raw (the data plane's lane): first values, any case, text only.
    assert_eq!(req.text("HOST"), Some("h.example"));
    assert_eq!(req.texts("x-two").collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(req.text("x-none"), None);
    assert_eq!(req.fields().count(), 4);
    assert_eq!(
        req.header_bytes(),
        "/p/a%20b?x=1&y".len() + (4 + 9 + 4) + 2 * (5 + 1 + 4) + (10 + 17 + 4)
    );
    let req = req.into_request().expect("a request");
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(req.uri().path(), "/p/a%20b");
    assert_eq!(req.uri().query(), Some("x=1&y"));
    assert_eq!(req.version(), http::Version::HTTP_11);
    assert_eq!(req.headers()["host"], "h.example");
    let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
    assert_eq!(twos, ["1", "2"]);
    assert_eq!(&buf[..], b"GET /next");
    // Absolute form: the authority is the URI's.
    let mut buf = BytesMut::from(&b"OPTIONS http://h.example:8080/x HTTP/1.1\r\n\r\n"[..]);
    let Parsed::Simple { req, close } = parse(&mut buf, 8192) else {
        panic!("not simple")
    };
    assert!(!close);
    assert_eq!(req.uri().authority().unwrap().as_str(), "h.example:8080");
    assert!(buf.is_empty());
}

#[tokio::test]
async fn rewind_replays_its_bytes_before_the_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b" world").await.unwrap();
    });
    let (s, _) = listener.accept().await.unwrap();
    client.await.unwrap();
    let mut r = Rewind::new(bytes::Bytes::from_static(b"hello"), s);
    let mut all = Vec::new();
    r.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"hello world");
}

proptest::proptest! {
    /// Any bytes: no panic; a request taken is a prefix of the input with no body framing, and
    /// what is left is exactly the rest of the input.
    #[test]
    fn parse_never_panics_and_takes_only_whole_plain_heads(
        head in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        lines in proptest::collection::vec(
            proptest::sample::select(vec![
                "host: x", "content-length: 3", "Transfer-Encoding: chunked", "x-a: b",
                "connection: close", "expect: 100-continue", "upgrade: h2c", " folded",
                "bad name: 1", "x-u: \u{e9}",
            ]),
            0..6,
        ),
        method in proptest::sample::select(vec!["GET", "POST", "HEAD", "PRI", "get", ""]),
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
    ) {
        for input in [
            head.clone(),
            format!("{method} /p HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n"))
                .into_bytes()
                .into_iter()
                .chain(tail.iter().copied())
                .collect::<Vec<u8>>(),
        ] {
            let mut buf = BytesMut::from(&input[..]);
            match parse(&mut buf, 8192) {
                Parsed::Simple { req, .. } => {
                    proptest::prop_assert!(input.ends_with(&buf));
                    // What `httparse` takes, the header map takes.
                    let req = req.into_request();
                    proptest::prop_assert!(req.is_some());
                    let Some(req) = req else { continue };
                    for name in ["content-length", "transfer-encoding", "expect", "upgrade"] {
                        proptest::prop_assert!(!req.headers().contains_key(name));
                    }
                    proptest::prop_assert!(req.method() != http::Method::HEAD);
                }
                Parsed::Partial | Parsed::Other => proptest::prop_assert_eq!(&buf[..], &input[..]),
            }
        }
    }
}
