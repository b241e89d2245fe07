//! Switchyard: an edge gateway for AI services.
//!
//! The binary (`switchyard`) composes these modules:
//!
//! * [`server`]: TCP/TLS listeners serving HTTP/1.1 and HTTP/2 with connection limits;
//! * [`dataplane`]: the request path (route → splitter → slot) with metrics and access logs;
//! * [`slot`]: backends (`upstream`, `static`; model slots come next);
//! * [`state`]: the live snapshot of slots and routes, swapped atomically on change;
//! * [`admin`]: metrics, health and the JSON admin API;
//! * [`telemetry`]: logging and Prometheus metrics;
//! * `idle_poll`: how a data-plane worker polls for a moment before it sleeps.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod autopilot;
pub mod body;
pub mod cache;
pub mod cli;
pub mod console;
pub mod dataplane;
pub mod error;
pub mod history;
mod idle_poll;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod replay;
pub mod run;
pub mod server;
pub mod slot;
pub mod state;
pub mod telemetry;
