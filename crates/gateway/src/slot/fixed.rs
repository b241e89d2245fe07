//! `kind = "static"`: a fixed response.

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use switchyard_config::SlotSpec;

use super::{RequestContext, Slot, SlotFuture};

/// Answers every request with the configured status, content type and body.
pub struct StaticSlot {
    status: StatusCode,
    content_type: HeaderValue,
    body: Bytes,
}

impl StaticSlot {
    /// Builds the slot.
    pub fn new(spec: &SlotSpec) -> anyhow::Result<Self> {
        let status = StatusCode::from_u16(spec.status.unwrap_or(200))?;
        let content_type = HeaderValue::from_str(
            spec.content_type
                .as_deref()
                .unwrap_or("text/plain; charset=utf-8"),
        )?;
        let body = Bytes::from(spec.body.clone().unwrap_or_default());
        Ok(Self {
            status,
            content_type,
            body,
        })
    }
}

impl Slot for StaticSlot {
    fn call<'a>(&'a self, _req: Request<Body>, _ctx: &'a RequestContext) -> SlotFuture<'a> {
        Box::pin(async move {
            let mut resp = Response::new(Body::from(self.body.clone()));
            *resp.status_mut() = self.status;
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, self.content_type.clone());
            Ok(resp)
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "status": self.status.as_u16(), "bytes": self.body.len() })
    }
}
