//! OpenTelemetry export (feature `otlp`): one server span per data-plane request, sent in batches over
//! OTLP/HTTP (protobuf) to `[log] otlp_endpoint`.
//!
//! The span continues the client's W3C trace (its `traceparent` is the span's parent), and the
//! `traceparent` the gateway passes on and echoes carries the span's own id, so the collector sees
//! client → gateway → upstream as one trace. Sampling follows the parent's `sampled` flag.

use std::sync::OnceLock;
use std::time::Duration;

use http::HeaderValue;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use switchyard_config::LogConfig;

static PROVIDER: OnceLock<(SdkTracerProvider, opentelemetry_sdk::trace::SdkTracer)> =
    OnceLock::new();

/// Starts the exporter when `otlp_endpoint` is set. Call once, before serving.
pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let Some(endpoint) = &cfg.otlp_endpoint else {
        return Ok(());
    };
    let url = if endpoint.ends_with("/v1/traces") {
        endpoint.clone()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    };
    // Where feature unification gives the HTTP client rustls, it needs a process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| anyhow::anyhow!("log.otlp_endpoint: {e}"))?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_secs(1))
                .with_max_queue_size(8192)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(cfg.otlp_service_name.clone())
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build();
    let tracer = provider.tracer("switchyard");
    if PROVIDER.set((provider, tracer)).is_err() {
        anyhow::bail!("the OTLP exporter is already running");
    }
    tracing::info!(endpoint = %url, "exporting request spans over OTLP/HTTP");
    Ok(())
}

/// Sends what is queued and stops the exporter (at shutdown).
pub fn shutdown() {
    if let Some((provider, _)) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        tracing::warn!(error = %e, "OTLP exporter did not shut down cleanly");
    }
}

/// The span of one request.
pub struct RequestSpan {
    span: opentelemetry_sdk::trace::Span,
    method: http::Method,
}

/// Starts the span of a request whose valid incoming `traceparent` was `(trace, parent, flags)`;
/// returns it with the `traceparent` to pass on. `None` when export is off.
pub fn start(
    incoming: Option<(&str, &str, &str)>,
    method: &http::Method,
    path: &str,
) -> Option<(RequestSpan, HeaderValue)> {
    let (_, tracer) = PROVIDER.get()?;
    let parent = incoming
        .and_then(|(trace, parent, flags)| {
            let flags = u8::from_str_radix(flags, 16).ok()?;
            Some(SpanContext::new(
                TraceId::from_hex(trace).ok()?,
                SpanId::from_hex(parent).ok()?,
                TraceFlags::new(flags),
                true,
                TraceState::default(),
            ))
        })
        .map(|sc| Context::new().with_remote_span_context(sc))
        .unwrap_or_default();
    let span = tracer
        .span_builder(format!("{method}"))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("url.path", path.to_string()),
        ])
        .start_with_context(tracer, &parent);
    let sc = span.span_context();
    let header = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    let header = HeaderValue::from_str(&header).ok()?;
    Some((
        RequestSpan {
            span,
            method: method.clone(),
        },
        header,
    ))
}

impl RequestSpan {
    /// Ends the span with what the request came to.
    pub fn finish(
        mut self,
        route: Option<&str>,
        slot: Option<&str>,
        status: u16,
        code: Option<&str>,
        request_id: &str,
    ) {
        if let Some(route) = route {
            let name = format!("{} {route}", self.method);
            self.span.update_name(name);
            self.span
                .set_attribute(KeyValue::new("switchyard.route", route.to_string()));
        }
        if let Some(slot) = slot {
            self.span
                .set_attribute(KeyValue::new("switchyard.slot", slot.to_string()));
        }
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        self.span.set_attribute(KeyValue::new(
            "switchyard.request_id",
            request_id.to_string(),
        ));
        if let Some(code) = code {
            self.span
                .set_attribute(KeyValue::new("error.type", code.to_string()));
        }
        if status >= 500 {
            self.span
                .set_status(Status::error(code.unwrap_or("server error").to_string()));
        }
        self.span.end();
    }
}
