//! The pure core of hamon: every HA decision, no I/O.
//!
//! `step(&mut Node, Event, now) -> Vec<Action>` is the only way state
//! changes. Adapters feed it events; executors carry out its actions.

pub mod action;
mod arbiter;
pub mod event;
mod fencing;
mod liveness;
pub mod machine;
mod ops;
mod rules;
mod settings;
pub mod sim;
pub mod state;
mod witness;

pub use action::{
    Action, ArbiterView, JournalEntry, PeerTarget, Persisted, Reply, SettingsChange, Severity,
    StatusView,
};
pub use arbiter::Lease;
pub use event::{
    Beacon, ClassBeat, Command, CopyKind, Event, Millis, PeerAnswer, PeerRequest, Secret, SyncBeat,
    Token,
};
pub use machine::{step, ArbiterLoss, FencePolicy, Link, Node, NodeConfig, Timers};
pub use state::{
    ConfigMode, Duty, FailoverType, HaState, HealthSummary, Level, Member, Registration, Role,
    Settings,
};
