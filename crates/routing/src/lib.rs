//! Pure routing logic for Switchyard, independent of HTTP:
//!
//! * [`RouteTable`]: longest-prefix path matching (segment-aware) with optional host match;
//! * [`Splitter`]: override rules and sticky percentage bucketing that pick a slot for a request;
//! * [`SlidingWindow`]: per-slot request/error counts and latency quantiles over the last minute;
//! * [`RateLimiter`]: per-client token buckets.
//!
//! Everything here is deterministic and shared-nothing, so every replica of the gateway decides the
//! same way for the same request.

mod limit;
mod split;
mod table;
mod window;

pub use limit::RateLimiter;
pub use split::{
    BUCKETS, Choice, KeySource, MatchKey, OverrideRule, RequestView, Splitter, StickyKey,
    bucket_of, route_seed,
};
pub use table::{RouteTable, strip_route_prefix};
pub use window::{SlidingWindow, WindowSnapshot};
