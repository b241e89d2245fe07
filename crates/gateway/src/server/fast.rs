//! A hand-written HTTP/1.1 server path for the common request: HTTP/1.1 with no body and no
//! upgrade (most `GET`s). It parses the head with `httparse`, serves the request in the
//! connection's own task and writes the response itself, without hyper's dispatcher, and hands
//! everything else to hyper. A request is offered first to the listener's [`Lane`] (the data
//! plane's raw lane, which answers from the head's bytes without a header map on either side);
//! what the lane leaves becomes a [`Request`] for the handler.
//!
//! Whatever is not plainly simple is not interpreted here: a request with `Content-Length`,
//! `Transfer-Encoding`, `Expect` or `Upgrade`, or `TE: trailers`, a `HEAD` or `CONNECT`, HTTP/1.0, the HTTP/2 preface,
//! any parse error, a head over the header buffer or over 100 fields. The connection is then given
//! to hyper with every byte read so far replayed first ([`Rewind`]), and hyper serves it to its end
//! exactly as it would have from the first byte: its framing rules, errors (400, 431…), bodies,
//! upgrades and HTTP/2. So no request body is ever framed by this code (no smuggling surface), and
//! malformed input gets hyper's answers.
//!
//! What this path does itself, as hyper does: keep-alive and pipelining, `Connection: close` from
//! either side, `Date`, `Content-Length` from the body's exact size or else chunked encoding, no
//! body for 1xx/204/304, and dropping the request (the client went away: logged as 499) when the
//! client closes its side while a request is in flight. Its timeouts are the documented ones: a
//! connection waiting for a new request is closed after `idle_timeout`, one whose request head has
//! started but not finished after `header_read_timeout` (slow loris), both checked on one coarse
//! per-connection tick rather than a timer per request.

use std::future::Future;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use super::ConnLimits;
use crate::dataplane::ConnInfo;
use crate::slot::{has_token, is_text, push_field, raw_elements};

/// Most header fields a request may have (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Fields the gateway may add to a request on its way to a slot (`traceparent`, `X-Request-Id`,
/// `X-Forwarded-For`/`-Proto`/`-Host`, `Forwarded`), room kept for them in its header map.
const ADDED_FIELDS: usize = 8;
/// The answer to a request whose head the header map refuses.
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// Read buffer to start with; it grows to the header limit for larger heads.
const INITIAL_BUF: usize = 8 * 1024;
/// Response bytes gathered before a write; larger body chunks are written as they are.
const WRITE_BUF: usize = 16 * 1024;

/// What a buffered request head turned out to be.
#[derive(Debug)]
// Returned and taken apart at once: boxing the request would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Parsed {
    /// A simple request, its head removed from the buffer; `close` when it asked for the
    /// connection to be closed after it.
    Simple { req: RawRequest, close: bool },
    /// Not complete yet.
    Partial,
    /// Anything else: hyper's to serve.
    Other,
}

/// A simple request's head as it came: its bytes, method and target, and where each field lies.
/// [`RawRequest::into_request`] makes it a [`Request`]; the data plane's raw lane reads it as it
/// is (`dataplane::lane`).
pub(crate) struct RawRequest {
    head: Bytes,
    method: Method,
    uri: Uri,
    count: usize,
    /// Where each field's name and value lie in `head`.
    fields: [((u32, u32), (u32, u32)); MAX_HEADERS],
}

impl std::fmt::Debug for RawRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRequest")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("fields", &self.count)
            .finish()
    }
}

impl RawRequest {
    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request target.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The fields in order: names as sent (token characters, any case) and values.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields[..self.count]
            .iter()
            .map(|&((n0, n1), (v0, v1))| {
                (
                    &self.head[n0 as usize..n1 as usize],
                    &self.head[v0 as usize..v1 as usize],
                )
            })
    }

    /// The first value of field `name` (any case) as text, when it is what
    /// `HeaderValue::to_str` accepts (visible ASCII and tabs).
    pub fn text(&self, name: &str) -> Option<&str> {
        let (_, value) = self
            .fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))?;
        std::str::from_utf8(value).ok().filter(|_| is_text(value))
    }

    /// Every value of field `name` (any case) that is text, as [`RawRequest::text`] says.
    pub fn texts<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .filter(|(_, v)| is_text(v))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Bytes of the head as the header limit counts them: each field's name and value plus four,
    /// and the target's path and query (as `dataplane` counts a request's map).
    pub fn header_bytes(&self) -> usize {
        self.fields()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
            + self.uri.path_and_query().map_or(0, |p| p.as_str().len())
    }

    /// The request, its fields in a map (values share the head's bytes); `None` for a field name
    /// or value the map does not take.
    pub fn into_request(self) -> Option<Request<Body>> {
        // Room for the fields the gateway adds on the way (trace context, request id, forwarding
        // fields) without the map growing and rehashing.
        let mut map = HeaderMap::with_capacity(self.count + ADDED_FIELDS);
        for &((n0, n1), (v0, v1)) in &self.fields[..self.count] {
            let name = HeaderName::from_bytes(&self.head[n0 as usize..n1 as usize]).ok()?;
            let value =
                HeaderValue::from_maybe_shared(self.head.slice(v0 as usize..v1 as usize)).ok()?;
            map.append(name, value);
        }
        let mut req = Request::new(Body::empty());
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = map;
        Some(req)
    }
}

/// Parses the request head at the start of `buf`. On [`Parsed::Simple`] the head is taken out of
/// `buf`; otherwise `buf` is left as it was.
pub(super) fn parse(buf: &mut BytesMut, max_head: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max_head && n <= u32::MAX as usize => n,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
        _ => return Parsed::Other,
    };
    if parsed.version != Some(1) {
        return Parsed::Other;
    }
    let Some(Ok(method)) = parsed.method.map(|m| Method::from_bytes(m.as_bytes())) else {
        return Parsed::Other;
    };
    if method == Method::HEAD || method == Method::CONNECT {
        return Parsed::Other;
    }
    let mut close = false;
    // Where each piece lies in the head, so that the values can share the buffer once it is cut.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start as u32, (start + s.len()) as u32)
    };
    let (t0, t1) = span(parsed.path.unwrap_or("").as_bytes());
    let mut req = RawRequest {
        head: Bytes::new(),
        method,
        uri: Uri::default(),
        count: parsed.headers.len(),
        fields: [((0, 0), (0, 0)); MAX_HEADERS],
    };
    for (h, field) in parsed.headers.iter().zip(req.fields.iter_mut()) {
        let name = h.name.as_bytes();
        let is = |other: &HeaderName| name.eq_ignore_ascii_case(other.as_str().as_bytes());
        if is(&header::CONTENT_LENGTH)
            || is(&header::TRANSFER_ENCODING)
            || is(&header::EXPECT)
            || is(&header::UPGRADE)
        {
            return Parsed::Other;
        }
        if is(&header::CONNECTION) {
            if raw_has_token(h.value, b"upgrade") {
                return Parsed::Other;
            }
            close |= raw_has_token(h.value, b"close");
        }
        // A client that takes trailers: hyper sends them, this path does not.
        if is(&header::TE) && raw_has_token(h.value, b"trailers") {
            return Parsed::Other;
        }
        *field = (span(name), span(h.value));
    }
    let head = buf.split_to(head_len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(t0 as usize..t1 as usize)) else {
        buf_restore(buf, head);
        return Parsed::Other;
    };
    req.head = head;
    req.uri = uri;
    Parsed::Simple { req, close }
}

/// A simple request parsed from `head` (tests of the raw lane).
#[cfg(test)]
pub(crate) fn raw_request(head: &[u8]) -> Option<RawRequest> {
    match parse(&mut BytesMut::from(head), 64 * 1024) {
        Parsed::Simple { req, .. } => Some(req),
        _ => None,
    }
}

/// Puts a head taken out of `buf` back in front of it (only on the rare way to [`Parsed::Other`]
/// after the head was cut).
fn buf_restore(buf: &mut BytesMut, head: Bytes) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(&head);
    whole.extend_from_slice(buf);
    *buf = whole;
}

/// How a response body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Writes the status line and header fields of `parts` into `out` and says how the body is framed.
/// `close` adds `Connection: close`; a `Connection: close` already in the response sets `*close`.
pub(super) fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body_hint: Option<u64>,
    close: &mut bool,
) -> Framing {
    let status = parts.status;
    let declared = single_length(&parts.headers);
    let framing = if bodyless(status) {
        Framing::None
    } else if let Some(n) = declared.or(body_hint) {
        Framing::Length(n)
    } else {
        Framing::Chunked
    };
    if has_token(&parts.headers, header::CONNECTION, "close") {
        *close = true;
    }
    push_status_line(out, status);
    let keep_length =
        declared.is_some() && status != StatusCode::NO_CONTENT && !status.is_informational();
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING || (name == header::CONTENT_LENGTH && !keep_length) {
            continue;
        }
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if declared.is_none() {
        push_framing(out, framing);
    }
    if !parts.headers.contains_key(header::DATE) {
        push_date_field(out);
    }
    if *close && !parts.headers.contains_key(header::CONNECTION) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// Whether a response with this status has no body (1xx, 204, 304).
pub(crate) fn bodyless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Appends `HTTP/1.1 <code> <reason>\r\n`.
pub(crate) fn push_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends the field that frames a body: `Content-Length` for a known length, `Transfer-Encoding:
/// chunked` for chunks, nothing for no body.
pub(crate) fn push_framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => push_field(
            out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        ),
        Framing::Chunked => push_field(out, b"transfer-encoding", b"chunked"),
        Framing::None => {}
    }
}

/// Appends a `Date` field with the current time.
pub(crate) fn push_date_field(out: &mut Vec<u8>) {
    out.extend_from_slice(b"date: ");
    date::push(out);
    out.extend_from_slice(b"\r\n");
}

/// The value of the one `Content-Length` field, when there is exactly one and it is a number.
fn single_length(headers: &HeaderMap) -> Option<u64> {
    let mut all = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let s = first.to_str().ok()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether a raw comma-separated field value (as `httparse` gives it) lists `token`.
fn raw_has_token(value: &[u8], token: &[u8]) -> bool {
    raw_elements(value).any(|t| t.eq_ignore_ascii_case(token))
}

/// The `Date` header, formatted once a second per thread (as hyper does).
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }

    /// Appends the current time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
    pub(super) fn push(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHE.with_borrow_mut(|(at, text)| {
            if *at != secs {
                let formatted = httpdate::fmt_http_date(now);
                if formatted.len() == text.len() {
                    text.copy_from_slice(formatted.as_bytes());
                    *at = secs;
                } else {
                    out.extend_from_slice(formatted.as_bytes());
                    return;
                }
            }
            out.extend_from_slice(text);
        });
    }
}

/// An I/O stream that first yields bytes already read from it: how a connection this path
/// declined reaches hyper intact.
pub struct Rewind<I> {
    pre: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    /// `inner`, with `pre` to be read before anything more from it.
    pub fn new(pre: Bytes, inner: I) -> Self {
        Self { pre, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves some simple requests from their raw head, without a [`Request`] being built (the data
/// plane's raw lane, `dataplane::RawLane`); the others go to the listener's handler.
pub(crate) trait Lane: Clone + Send + Sync + 'static {
    /// Serves `req` and returns its answer, or `None`, having done nothing, for the handler to
    /// serve it. An answer's head goes in `out` (empty on the call).
    fn serve<'a>(
        &'a self,
        conn: &'a Arc<ConnInfo>,
        req: &'a RawRequest,
        out: &'a mut Vec<u8>,
    ) -> impl Future<Output = Option<LaneAnswer>> + Send + 'a;
}

/// No raw lane: every request goes to the handler (the admin listener, tests).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoLane;

impl Lane for NoLane {
    fn serve<'a>(
        &'a self,
        _: &'a Arc<ConnInfo>,
        _: &'a RawRequest,
        _: &'a mut Vec<u8>,
    ) -> impl Future<Output = Option<LaneAnswer>> + Send + 'a {
        std::future::ready(None)
    }
}

/// What a [`Lane`] answers.
pub(crate) enum LaneAnswer {
    /// The status line and fields are in `out`, without `Connection` or the blank line that ends
    /// the head; the body follows, framed as said (and as the fields in `out` say).
    Head {
        framing: Framing,
        body: crate::slot::h1::ResponseBody,
    },
    /// A whole response, written as the handler's are.
    Whole(Response<Body>),
}

/// Serves simple requests on `io` until the connection ends (`None`) or a request this path does
/// not take arrives: then the connection, with every byte read so far, is returned for hyper.
pub(super) async fn serve<I, H, F, L>(
    mut io: I,
    info: Arc<ConnInfo>,
    limits: ConnLimits,
    handler: &H,
    lane: &L,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Rewind<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Arc<ConnInfo>, Request<Body>) -> F,
    F: Future<Output = Response<Body>>,
    L: Lane,
{
    if *shutdown.borrow() {
        return None;
    }
    let max_head = limits.max_header_buffer;
    let check =
        (limits.idle_timeout.min(limits.header_read_timeout) / 4).max(Duration::from_millis(50));
    let ticks_for = |d: Duration| d.as_nanos().div_ceil(check.as_nanos()) as u32;
    let (idle_ticks, head_ticks) = (
        ticks_for(limits.idle_timeout),
        ticks_for(limits.header_read_timeout),
    );
    let tick = tokio::time::sleep(check);
    tokio::pin!(tick);
    // A shutdown is seen two ways: `stop` wakes a connection waiting for a request (polled only
    // once the socket has nothing to read: polling a waiting `Notified` takes a lock), and `probe`,
    // an atomic load, is checked after each response on a connection that never waits.
    let probe = shutdown.clone();
    let stop = shutdown.changed();
    tokio::pin!(stop);
    // Ticks since the connection last made progress (a response written, a request head begun).
    let mut ticks = 0u32;
    let mut closing = false;
    let mut buf = BytesMut::with_capacity(INITIAL_BUF);
    // Allocated by the first response: a connection that never sends a request holds no more.
    let mut out: Vec<u8> = Vec::new();
    loop {
        while !buf.is_empty() {
            let (req, asked_close) = match parse(&mut buf, max_head) {
                Parsed::Partial => break,
                Parsed::Other => return Some(Rewind::new(buf.freeze(), io)),
                Parsed::Simple { req, close } => (req, close),
            };
            crate::idle_poll::note_work();
            out.clear();
            let answer = {
                let (info_ref, out_ref) = (&info, &mut out);
                let fut = async move {
                    if let Some(answer) = lane.serve(info_ref, &req, out_ref).await {
                        return Some(answer);
                    }
                    let req = req.into_request()?;
                    Some(LaneAnswer::Whole(handler(info_ref.clone(), req).await))
                };
                tokio::pin!(fut);
                // While the request is served, keep reading: a client that closes its side has
                // gone away (as with hyper, no half-close) and its request is dropped; a
                // pipelined request waits in the buffer.
                loop {
                    tokio::select! {
                        biased;
                        answer = &mut fut => break answer,
                        r = io.read_buf(&mut buf), if buf.len() < max_head => match r {
                            Ok(0) | Err(_) => return None,
                            Ok(_) => {}
                        },
                    }
                }
            };
            closing |= probe.has_changed().unwrap_or(true);
            let mut close = asked_close || closing;
            let written = match answer {
                Some(LaneAnswer::Whole(resp)) => {
                    write_response(&mut io, &mut out, resp, &mut close).await
                }
                Some(LaneAnswer::Head { framing, body }) => {
                    if close {
                        out.extend_from_slice(b"connection: close\r\n");
                    }
                    out.extend_from_slice(b"\r\n");
                    write_body(&mut io, &mut out, framing, body, &mut close).await
                }
                // A field the header map refuses (`httparse` took it): as hyper answers it.
                None => {
                    let _ = io.write_all(BAD_REQUEST).await;
                    return None;
                }
            };
            match written {
                Ok(()) if !close => {}
                _ => return None,
            }
            ticks = 0;
        }
        if closing && buf.is_empty() {
            return None;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(INITIAL_BUF);
        }
        let was_empty = buf.is_empty();
        tokio::select! {
            biased;
            r = io.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return None,
                Ok(_) if was_empty => ticks = 0,
                Ok(_) => {}
            },
            _ = &mut stop, if !closing => {
                closing = true;
            }
            _ = &mut tick => {
                ticks += 1;
                let limit = if buf.is_empty() { idle_ticks } else { head_ticks };
                if ticks > limit {
                    tracing::debug!(peer = %info.peer, partial_head = !buf.is_empty(), "closing a connection: timed out waiting for a request");
                    return None;
                }
                tick.as_mut().reset(tokio::time::Instant::now() + check);
            }
        }
    }
}

/// Writes `resp`: head and body gathered into `out` and written in as few writes as the body
/// allows. An error, or a body that breaks its own length, ends the connection (`Err`, or `close`
/// set).
async fn write_response<I>(
    io: &mut I,
    out: &mut Vec<u8>,
    resp: Response<Body>,
    close: &mut bool,
) -> io::Result<()>
where
    I: AsyncWrite + Unpin,
{
    let (parts, body) = resp.into_parts();
    out.clear();
    let framing = encode_head(out, &parts, body.size_hint().exact(), close);
    drop(parts);
    write_body(io, out, framing, body, close).await
}

/// Writes the head in `out` and then `body`, framed as `framing` says (see [`write_response`]).
async fn write_body<I, B>(
    io: &mut I,
    out: &mut Vec<u8>,
    framing: Framing,
    mut body: B,
    close: &mut bool,
) -> io::Result<()>
where
    I: AsyncWrite + Unpin,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut left = match framing {
        Framing::None => {
            io.write_all(out).await?;
            return io.flush().await;
        }
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
    };
    let mut failed = false;
    loop {
        // Take what the body has ready; write what is gathered before waiting for more.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    io.flush().await?;
                    out.clear();
                }
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed: closing the connection");
                failed = true;
                break;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers are not sent on this path
            },
        };
        if data.is_empty() {
            continue;
        }
        if framing == Framing::Chunked {
            // Writing to a `Vec` cannot fail.
            let _ = write!(out, "{:x}\r\n", data.len());
        } else if data.len() as u64 > left {
            tracing::debug!("response body longer than its Content-Length: closing the connection");
            failed = true;
            break;
        } else {
            left -= data.len() as u64;
        }
        if data.len() >= WRITE_BUF {
            io.write_all(out).await?;
            out.clear();
            io.write_all(&data).await?;
        } else {
            out.extend_from_slice(&data);
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= WRITE_BUF {
            io.write_all(out).await?;
            out.clear();
        }
    }
    // A body that failed or broke its length is cut off: no last chunk, and the connection ends,
    // so the client sees it incomplete rather than a shorter whole.
    match framing {
        _ if failed => *close = true,
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length(n) if left != 0 => {
            tracing::debug!(
                expected = n,
                missing = left,
                "response body shorter than its Content-Length: closing the connection"
            );
            *close = true;
        }
        _ => {}
    }
    if !out.is_empty() {
        io.write_all(out).await?;
    }
    io.flush().await
}

#[cfg(test)]
mod tests;
