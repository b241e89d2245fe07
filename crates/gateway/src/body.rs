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

/// A file received in a request: the body itself, or one field of a `multipart/form-data` form.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The bytes.
    pub bytes: Bytes,
    /// The file name the client gave (multipart), if any.
    pub file_name: Option<String>,
    /// The media type (lower case, parameters dropped; empty when not given).
    pub mime: String,
    /// The full `Content-Type` (with parameters such as `rate=`).
    pub content_type: String,
}

/// What [`read_uploads`] accepts.
pub struct UploadSpec<'a> {
    /// Form field to take (`image`, `audio`); with `many`, every file field is taken.
    pub field: &'a str,
    /// Take all files of a form (batch), not just the first `field`.
    pub many: bool,
    /// Whether a raw body of this media type is acceptable.
    pub mime_ok: fn(&str) -> bool,
    /// What to send, for the 415 message (`an image (image/jpeg, …)`).
    pub what: &'a str,
}

/// Reads the upload(s) of a request: a multipart form's `field` (or all its files with `many`), or
/// the raw body when its media type passes `mime_ok`. 413/408 when the body is too large or too
/// slow, 400 for a broken form, 415 for another media type.
pub async fn read_uploads(
    req: http::Request<axum::body::Body>,
    limit: u64,
    spec: &UploadSpec<'_>,
) -> Result<Vec<Upload>, ApiError> {
    use http::StatusCode;
    use http_body_util::BodyExt;
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "multipart/form-data" {
        let boundary = multer::parse_boundary(&content_type)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.to_string()))?;
        let form_err = |e: multer::Error| {
            client_body_error(&e, limit).unwrap_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.to_string())
            })
        };
        let mut form = multer::Multipart::new(req.into_body().into_data_stream(), boundary);
        let mut out = Vec::new();
        while let Some(field) = form.next_field().await.map_err(form_err)? {
            let wanted = if spec.many {
                field.file_name().is_some() || field.name() == Some(spec.field)
            } else {
                field.name() == Some(spec.field)
            };
            if !wanted {
                continue;
            }
            let file_name = field.file_name().map(str::to_string);
            let ct = field
                .content_type()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let fmime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let bytes = field.bytes().await.map_err(form_err)?;
            out.push(Upload {
                bytes,
                file_name,
                mime: fmime,
                content_type: ct,
            });
            if !spec.many {
                break;
            }
        }
        if out.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_multipart",
                format!("the form has no `{}` field", spec.field),
            ));
        }
        return Ok(out);
    }
    if !(mime.is_empty() || mime == "application/octet-stream" || (spec.mime_ok)(&mime)) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send {} or multipart/form-data, not `{mime}`", spec.what),
        ));
    }
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            let e = e.into_inner();
            client_body_error(&*e, limit).unwrap_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("cannot read the body: {e}"),
                )
            })
        })?;
    Ok(vec![Upload {
        bytes,
        file_name: None,
        mime,
        content_type,
    }])
}
