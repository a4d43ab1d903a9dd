//! The built-in HTTP server (Health Monitor, peer API) and a small client.

pub mod client;
pub mod server;
