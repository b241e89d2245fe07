//! Request-body wrappers: a deadline for receiving the whole body, and helpers to recognise why a
//! streamed body failed (too large, too slow) once the error surfaces through hyper.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;

/// Boxed error type of request bodies.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The client did not finish sending the body before the request deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received before the deadline")]
pub struct BodyDeadline;

/// A body that fails with [`BodyDeadline`] if it is not complete by `deadline`.
pub struct DeadlineBody<B> {
    inner: B,
    sleep: Pin<Box<Sleep>>,
}

impl<B> DeadlineBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, deadline: Instant) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyDeadline)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Maps a failure somewhere in a request body's error chain to the client error it stands for:
/// 413 for a body over the limit, 408 for a body too slow. `None` for anything else.
pub fn client_body_error(err: &(dyn StdError + 'static), limit: u64) -> Option<ApiError> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<http_body_util::LengthLimitError>() {
            return Some(ApiError::body_too_large(limit));
        }
        if e.is::<BodyDeadline>() {
            return Some(ApiError::request_timeout());
        }
        cur = e.source();
    }
    None
}

/// Reads and discards up to `max_bytes` of a refused request body for at most `max_time`, so that a
/// client still sending it reads the error response instead of a reset (a bounded "lingering close").
pub async fn discard<B>(body: B, max_bytes: u64, max_time: std::time::Duration)
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0u64;
    let _ = tokio::time::timeout(max_time, async {
        while seen < max_bytes {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => break,
            }
        }
    })
    .await;
}
