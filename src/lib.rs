//! hamon: a high-availability agent for pairs of appliance servers.
//!
//! A pure core (`ha`) inside an imperative shell of threads (`agent`).
//! See `docs/architecture.md`.

pub mod agent;
pub mod arbiter;
pub mod cli;
pub mod config;
pub mod control;
pub mod db;
pub mod ha;
pub mod net;
pub mod notify;
pub mod peer;
pub mod replication;
pub mod store;
pub mod sync;
pub mod version;
pub mod watch;
pub mod web;
