//! Talking to the other server: heartbeats (UDP) and signed peer calls (HTTP).

pub mod auth;
pub mod client;
pub mod heartbeat;
pub mod pair;
pub mod rekey;
pub mod wire;
