//! hamon: a high-availability agent for pairs of appliance servers.
//!
//! The crate is a pure core (`ha`) inside an imperative shell of threads
//! (`agent`). See `docs/architecture.md`.

pub mod ha;
