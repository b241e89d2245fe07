//! Requests that may run on two slots: a canary request with per-request fallback (and hedging) to
//! stable, and a stable request copied to the canary as a shadow.
//!
//! Both need the body twice, so it is buffered first (up to `replay_max_bytes` or the shadow's
//! `max_body_bytes`; a larger body goes through once, without fallback or shadow). Model slots read
//! their whole upload anyway, so buffering costs them nothing; the client never uploads twice.

use std::hash::Hasher;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use crate::autopilot::{Comparison, ModelOutput, RouteControl, compare};
use crate::body::client_body_error;
use crate::error::ApiError;
use crate::slot::RequestContext;
use crate::state::SlotHandle;

/// Response header saying that stable answered for a failed or slow canary: `error`, `timeout`,
/// `hedge`.
pub const X_SWITCHYARD_FALLBACK: http::HeaderName =
    http::HeaderName::from_static("x-switchyard-fallback");
/// Request header marking a shadow copy (slots and upstreams may ignore it).
pub const X_SWITCHYARD_SHADOW: http::HeaderName =
    http::HeaderName::from_static("x-switchyard-shadow");

/// A request body read up to a limit.
pub enum Buffered {
    /// The whole body.
    Whole(Bytes),
    /// Over the limit: what was read, followed by the rest, as one body.
    TooLarge(Body),
}

/// Reads `body` up to `max` bytes.
pub async fn buffer(mut body: Body, max: u64, limit: u64) -> Result<Buffered, ApiError> {
    let mut buf = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Ok(Buffered::Whole(buf.freeze())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
                if buf.len() as u64 > max {
                    let head = futures_util::stream::once(async move {
                        Ok::<_, axum::Error>(Frame::data(buf.freeze()))
                    });
                    let rest = http_body_util::BodyStream::new(body);
                    use futures_util::StreamExt;
                    let stream = head.chain(rest);
                    return Ok(Buffered::TooLarge(Body::new(
                        http_body_util::StreamBody::new(stream),
                    )));
                }
            }
            Some(Err(e)) => {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                return Err(client_body_error(&*e, limit).unwrap_or_else(|| {
                    ApiError::new(
                        http::StatusCode::BAD_REQUEST,
                        "bad_body",
                        format!("cannot read the body: {e}"),
                    )
                }));
            }
        }
    }
}

/// The request head, kept to build the request again.
#[derive(Clone)]
pub struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Head {
    /// Takes what can be replayed from `parts`.
    pub fn of(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        }
    }

    /// A new request with this head and `body`.
    pub fn request(&self, body: Bytes) -> Request<Body> {
        let mut r = Request::new(Body::from(body));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// Why a canary answer was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 5xx or failure.
    Error,
    /// No answer within `timeout_ms`.
    Timeout,
    /// Stable answered first after `hedge_after_ms`.
    Hedge,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Error => "error",
            Reason::Timeout => "timeout",
            Reason::Hedge => "hedge",
        }
    }
}

type Answer = Result<Response<Body>, ApiError>;

/// A client error (4xx) is the client's fault: it is answered as is, never retried on stable.
fn classify(answer: Option<Answer>) -> Result<Answer, Reason> {
    match answer {
        None => Err(Reason::Timeout),
        Some(Ok(r)) if r.status().is_server_error() => Err(Reason::Error),
        Some(Err(e)) if e.status.is_server_error() => Err(Reason::Error),
        Some(a) => Ok(a),
    }
}

async fn within<F: std::future::Future<Output = Answer>>(f: F, ms: u64) -> Option<Answer> {
    if ms == 0 {
        Some(f.await)
    } else {
        tokio::time::timeout(Duration::from_millis(ms), f)
            .await
            .ok()
    }
}

/// The outcome of a canary request with fallback.
pub struct Outcome {
    /// The answer to send.
    pub answer: Answer,
    /// Set when stable answered instead of the canary.
    pub fell_back: Option<Reason>,
}

/// Serves a canary-bound request with fallback to stable; records the canary's outcome.
pub async fn canary_with_fallback(
    control: &Arc<RouteControl>,
    canary: &SlotHandle,
    stable: &SlotHandle,
    req: Request<Body>,
    ctx: &RequestContext,
    probe: bool,
) -> Outcome {
    let Some(fb) = control.fallback.clone() else {
        return Outcome {
            answer: timed_canary(control, canary, req, ctx, probe).await,
            fell_back: None,
        };
    };
    let (parts, body) = req.into_parts();
    let bytes = match buffer(body, fb.replay_max_bytes, ctx.max_body_bytes).await {
        Ok(Buffered::Whole(b)) => b,
        Ok(Buffered::TooLarge(body)) => {
            // Too large to replay: the canary answers alone.
            let req = Request::from_parts(parts, body);
            return Outcome {
                answer: timed_canary(control, canary, req, ctx, probe).await,
                fell_back: None,
            };
        }
        Err(e) => {
            return Outcome {
                answer: Err(e),
                fell_back: None,
            };
        }
    };
    let head = Head::of(&parts);
    let started = Instant::now();
    let canary_call = within(
        canary.slot.call(head.request(bytes.clone()), ctx),
        fb.timeout_ms,
    );

    let result: Result<Answer, (Reason, Option<Answer>)> = if fb.hedge_after_ms > 0 {
        let hedge_started = AtomicBool::new(false);
        let hedge = async {
            tokio::time::sleep(Duration::from_millis(fb.hedge_after_ms)).await;
            hedge_started.store(true, Ordering::Release);
            stable.slot.call(head.request(bytes.clone()), ctx).await
        };
        tokio::pin!(canary_call, hedge);
        tokio::select! {
            c = &mut canary_call => match classify(c) {
                Ok(a) => Ok(a),
                // Stable already running: wait for it; else call it now.
                Err(reason) if hedge_started.load(Ordering::Acquire) => Err((reason, Some(hedge.await))),
                Err(reason) => Err((reason, None)),
            },
            s = &mut hedge => Err((Reason::Hedge, Some(s))),
        }
    } else {
        classify(canary_call.await).map_err(|r| (r, None))
    };
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok(answer) => {
            control.record_canary(elapsed, true, probe);
            Outcome {
                answer,
                fell_back: None,
            }
        }
        Err((reason, stable_answer)) => {
            // A hedge win says nothing about the canary's health but its latency. The client's
            // answer is stable's (and counted there); the canary's attempt is counted here.
            let ok = reason == Reason::Hedge;
            control.record_canary(elapsed, ok, probe);
            canary.stats.record(Instant::now(), elapsed, !ok);
            metrics::counter!("switchyard_fallbacks_total",
                "route" => control.route.to_string(), "from" => canary.name.to_string(),
                "to" => stable.name.to_string(), "reason" => reason.as_str())
            .increment(1);
            control
                .fallbacks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(route = %control.route, canary = %canary.name, reason = reason.as_str(), "fallback to stable");
            let answer = match stable_answer {
                Some(a) => a,
                None => stable.slot.call(head.request(bytes), ctx).await,
            };
            Outcome {
                answer,
                fell_back: Some(reason),
            }
        }
    }
}

/// Calls the canary once (no replay possible) and records its outcome.
async fn timed_canary(
    control: &Arc<RouteControl>,
    canary: &SlotHandle,
    req: Request<Body>,
    ctx: &RequestContext,
    probe: bool,
) -> Answer {
    let started = Instant::now();
    let answer = canary.slot.call(req, ctx).await;
    let ok = match &answer {
        Ok(r) => !r.status().is_server_error(),
        Err(e) => !e.status.is_server_error(),
    };
    control.record_canary(started.elapsed().as_secs_f64(), ok, probe);
    answer
}

/// Records a canary outcome for a request that went straight to the canary.
pub fn record_plain(control: &RouteControl, answer: &Answer, elapsed_s: f64, probe: bool) {
    let ok = match answer {
        Ok(r) => !r.status().is_server_error(),
        Err(e) => !e.status.is_server_error(),
    };
    control.record_canary(elapsed_s, ok, probe);
}

/// Adds `X-Switchyard-Fallback` to an answer.
pub fn mark(resp: &mut Response<Body>, reason: Reason) {
    resp.headers_mut().insert(
        X_SWITCHYARD_FALLBACK,
        HeaderValue::from_static(reason.as_str()),
    );
}

/// A response body that hashes what it streams and reports the hash when it ends.
struct HashTee {
    inner: Body,
    hasher: std::collections::hash_map::DefaultHasher,
    done: Option<oneshot::Sender<u64>>,
}

impl HttpBody for HashTee {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.hasher.write(d);
                }
                // hyper stops polling once the body says it has ended.
                this.inner.is_end_stream()
            }
            Poll::Ready(None) => true,
            _ => false,
        };
        if ended && let Some(tx) = this.done.take() {
            let _ = tx.send(this.hasher.finish());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn hash_body(resp: Response<Body>, max: usize) -> Option<(u16, u64)> {
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if let Some(d) = frame.data_ref() {
            seen += d.len();
            if seen > max {
                return None;
            }
            hasher.write(d);
        }
    }
    Some((status, hasher.finish()))
}

/// Serves a stable request whose copy also runs on the canary (when the body is small enough and
/// the shadow has room), off the response path.
pub async fn stable_with_shadow(
    control: &Arc<RouteControl>,
    stable: &SlotHandle,
    canary: &SlotHandle,
    req: Request<Body>,
    ctx: &RequestContext,
) -> Answer {
    let Some(shadow) = control.shadow.as_ref() else {
        return stable.slot.call(req, ctx).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match buffer(body, shadow.spec.max_body_bytes, ctx.max_body_bytes).await? {
        Buffered::Whole(b) => b,
        Buffered::TooLarge(body) => {
            return stable
                .slot
                .call(Request::from_parts(parts, body), ctx)
                .await;
        }
    };
    let head = Head::of(&parts);
    let answer = stable.slot.call(head.request(bytes.clone()), ctx).await;
    let Ok(resp) = answer else { return answer };
    if !resp.status().is_success() {
        return Ok(resp);
    }
    let Some(permit) = control.shadow_permit() else {
        return Ok(resp);
    };
    let stable_output = resp.extensions().get::<ModelOutput>().cloned();
    let stable_status = resp.status().as_u16();
    let (resp, stable_hash) = if stable_output.is_none() {
        let (tx, rx) = oneshot::channel();
        let resp = resp.map(|b| {
            Body::new(HashTee {
                inner: b,
                hasher: Default::default(),
                done: Some(tx),
            })
        });
        (resp, Some(rx))
    } else {
        (resp, None)
    };
    let mut shadow_head = head;
    shadow_head
        .headers
        .insert(X_SWITCHYARD_SHADOW, HeaderValue::from_static("1"));
    let (control, slot, ctx) = (control.clone(), canary.slot.clone(), ctx.clone());
    let canary_name = canary.name.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let answer = slot.call(shadow_head.request(bytes), &ctx).await;
        let result = match answer {
            Ok(r) if r.status().is_success() => match (&stable_output, stable_hash) {
                (Some(a), _) => r
                    .extensions()
                    .get::<ModelOutput>()
                    .and_then(|b| compare(a, b)),
                (None, Some(rx)) => {
                    let canary = hash_body(r, 64 << 20).await;
                    match (rx.await, canary) {
                        (Ok(h), Some((s, c))) => {
                            Some(Comparison::Http(s == stable_status && c == h))
                        }
                        // The client went away before stable's body ended: nothing to compare.
                        (Err(_), _) => return,
                        (Ok(_), None) => None,
                    }
                }
                (None, None) => None,
            },
            Ok(r) if !r.status().is_server_error() => {
                let same = r.status().as_u16() == stable_status;
                Some(Comparison::Http(same))
            }
            _ => None,
        };
        if let Some(shadow) = &control.shadow {
            shadow.record(&control.route, result.clone(), || {
                format!(
                    "canary `{canary_name}` vs stable: {result:?}; stable output {stable_output:?}"
                )
            });
        }
    });
    Ok(resp)
}
