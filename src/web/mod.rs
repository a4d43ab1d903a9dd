//! The built-in HTTP(S) server, the Health Monitor app on it, and a small
//! client for peer calls and probes.

pub mod app;
pub mod client;
pub mod metrics;
pub mod server;
pub mod tls;
pub mod ui;
