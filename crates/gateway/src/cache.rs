//! The per-route result cache: "the same photo processed twice" answered from memory.
//!
//! The key is a 128-bit XXH3 of the method, path, query, the route's `options_headers`, the request
//! body and the name and *live* version of the slot chosen for the request, so a hot-swapped model
//! or different options never see each other's results. The cache is bounded by bytes (bodies plus
//! headers) with a TTL (moka's TinyLFU admission and LRU eviction). Only complete `200` answers of
//! the chosen slot are stored: no fallback answers, no `Set-Cookie`, no `Cache-Control: no-store`,
//! nothing larger than `max_entry_bytes`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use switchyard_config::CacheSpec;

use crate::state::SlotHandle;

/// Response header: `hit` or `miss`.
pub const X_SWITCHYARD_CACHE: HeaderName = HeaderName::from_static("x-switchyard-cache");

/// A stored answer.
struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Entry {
    fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        u32::try_from(self.body.len() + headers + 64).unwrap_or(u32::MAX)
    }
}

/// One route's cache.
pub struct ResultCache {
    /// The configuration it was built from (kept across reloads while unchanged).
    pub spec: CacheSpec,
    entries: moka::sync::Cache<u128, Arc<Entry>>,
    options: Vec<HeaderName>,
    hits: metrics::Counter,
    misses: metrics::Counter,
    stored: metrics::Counter,
    bytes: metrics::Gauge,
}

impl ResultCache {
    /// A cache for `route`.
    pub fn new(route: &str, spec: &CacheSpec) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(spec.max_bytes)
            .weigher(|_k: &u128, v: &Arc<Entry>| v.weight())
            .time_to_live(Duration::from_secs(spec.ttl_s))
            .build();
        let label = route.to_string();
        Self {
            spec: spec.clone(),
            entries,
            options: spec
                .options_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
                .collect(),
            hits: metrics::counter!("switchyard_cache_requests_total", "route" => label.clone(), "result" => "hit"),
            misses: metrics::counter!("switchyard_cache_requests_total", "route" => label.clone(), "result" => "miss"),
            stored: metrics::counter!("switchyard_cache_stored_total", "route" => label.clone()),
            bytes: metrics::gauge!("switchyard_cache_bytes", "route" => label),
        }
    }

    /// Whether requests with this method are looked up at all.
    pub fn cacheable(method: &Method) -> bool {
        method == Method::GET || method == Method::POST
    }

    /// Whether each caller of an authenticated route has their own entries.
    pub fn per_caller(&self) -> bool {
        self.spec.scope == switchyard_config::CacheScope::Caller
    }

    /// The key of a request to `slot`; `caller` is the authenticated identity when entries are
    /// per caller.
    pub fn key(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        slot: &SlotHandle,
        caller: Option<&[u8]>,
    ) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut field = |b: &[u8]| {
            // Length-prefixed, so that no two different field lists hash the same bytes.
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        };
        field(parts.method.as_str().as_bytes());
        field(parts.uri.path().as_bytes());
        field(parts.uri.query().unwrap_or("").as_bytes());
        field(
            parts
                .headers
                .get(header::CONTENT_TYPE)
                .map_or(&b""[..], HeaderValue::as_bytes),
        );
        for name in &self.options {
            field(name.as_str().as_bytes());
            for v in parts.headers.get_all(name) {
                field(v.as_bytes());
            }
        }
        field(slot.name.as_bytes());
        field(slot.live_version().as_bytes());
        field(caller.unwrap_or(b""));
        field(body);
        h.digest128()
    }

    /// The stored answer for `key`, marked as a hit.
    pub fn get(&self, key: u128) -> Option<Response<Body>> {
        let Some(e) = self.entries.get(&key) else {
            self.misses.increment(1);
            return None;
        };
        self.hits.increment(1);
        let mut resp = Response::new(Body::from(e.body.clone()));
        *resp.status_mut() = e.status;
        *resp.headers_mut() = e.headers.clone();
        resp.headers_mut()
            .insert(X_SWITCHYARD_CACHE, HeaderValue::from_static("hit"));
        Some(resp)
    }

    /// Stores `resp` under `key` when it may be cached and returns it (marked as a miss).
    pub async fn store(&self, key: u128, resp: Response<Body>) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        parts
            .headers
            .insert(X_SWITCHYARD_CACHE, HeaderValue::from_static("miss"));
        let no_store = parts
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|d| matches!(d.trim(), "no-store" | "private"))
            });
        let fits = body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= self.spec.max_entry_bytes);
        if parts.status != StatusCode::OK
            || no_store
            || parts.headers.contains_key(header::SET_COOKIE)
            || !fits
        {
            return Response::from_parts(parts, body);
        }
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                // The answer broke while being read: pass the failure on, store nothing.
                let failed = futures_util::stream::once(async move { Err::<Bytes, _>(e) });
                return Response::from_parts(parts, Body::from_stream(failed));
            }
        };
        let mut headers = parts.headers.clone();
        headers.remove(header::DATE);
        self.entries.insert(
            key,
            Arc::new(Entry {
                status: parts.status,
                headers,
                body: bytes.clone(),
            }),
        );
        self.stored.increment(1);
        Response::from_parts(parts, Body::from(bytes))
    }

    /// Publishes `switchyard_cache_bytes` (at scrape time: settling moka's pending work is not for
    /// the request path).
    pub fn publish_size(&self) {
        self.entries.run_pending_tasks();
        self.bytes.set(self.entries.weighted_size() as f64);
    }
}
