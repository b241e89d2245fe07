//! End-to-end tests: the real `switchyard` binary between real clients and real upstream servers on
//! loopback.

mod harness;

mod admin;
mod asr;
mod auth;
mod autopilot;
mod console;
mod deploy;
mod face;
mod limits;
mod proxy;
mod routing;
mod tls;
