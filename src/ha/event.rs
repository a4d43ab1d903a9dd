//! Everything that can happen to a server, as the core sees it.
//!
//! Adapters (heartbeat receiver, HTTP server, control socket, watchers,
//! executors) turn the world into these values. Time is never read by the
//! core: each event is stepped with a monotonic `now` in milliseconds.

use super::state::{FailoverType, HaState, HealthSummary, Member, Registration, Role, Settings};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Monotonic milliseconds (the shell's clock; the simulator's virtual clock).
pub type Millis = u64;

/// Routes a reply back to whoever asked (a CLI connection, an HTTP worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// A secret string (the HA authentication key). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a server announces about itself in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beacon {
    pub name: String,
    pub role: Role,
    pub state: HaState,
    /// Holds the active duty (services and VIP).
    pub active: bool,
    /// The registration this server belongs to: (id, failover type).
    pub registered: Option<(u64, FailoverType)>,
    /// Sent once by an agent that is stopping on purpose.
    pub shutting_down: bool,
    /// The sender has missed our heartbeats and asks for one now (sent only while it
    /// suspects the link, so that one lost frame is never taken for a dead peer).
    pub asks: bool,
    /// The sender is starting up (HA Initializing) and held the active role when it
    /// stopped: a peer starting at the same time must not take the role from it.
    pub was_active: bool,
    pub health: HealthSummary,
    pub hm_port: u16,
    /// How stale the sender's file replica is, while it pulls.
    pub sync: Option<SyncBeat>,
}

/// A pulling server's file-sync progress, per class, as its heartbeats carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct SyncBeat {
    pub frequent: ClassBeat,
    pub batch: ClassBeat,
}

/// One class: seconds since its last complete pass (`None`: not yet), and
/// the files and bytes that pass copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ClassBeat {
    pub lag: Option<u32>,
    pub files: u32,
    pub bytes: u64,
}

/// The full data copies the pair makes (run by `replication::run_copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyKind {
    /// Registration: primary -> secondary, full.
    Initial,
    /// Failback: active secondary -> primary.
    Failback,
    /// A primary that was out of sync too long: full copy from the secondary.
    DataGap,
}

/// An operator's request (CLI or Health Monitor).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Status,
    Register {
        /// A fresh random registration id (the core draws no randomness).
        id: u64,
        secondary_address: String,
        secondary_hm_port: u16,
        failover_type: FailoverType,
        vips: Vec<String>,
        emails: Vec<String>,
        key: Secret,
    },
    Failover,
    Failback,
    Remove {
        purge: bool,
    },
    /// `hamon ha set`: change the registration's settings on both servers or neither.
    /// The shell validates `new` (as registration does) against the settings it read,
    /// `expected`; the core refuses if they changed meanwhile.
    Settings {
        /// A fresh random id for this change: the peer applies a repeat of it once.
        change_id: u64,
        expected: Settings,
        new: Settings,
        /// Who asked, for the journal ("root on the control socket", "the API (bearer
        /// token) from 192.0.2.50").
        by: String,
    },
}

/// A request from the peer server, already authenticated by the shell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PeerRequest {
    /// Primary -> secondary: join this registration (secondary fills in its
    /// own member entry and answers with the completed registration).
    Register { registration: Registration },
    /// Primary -> secondary: the initial copy is done; registration holds.
    RegisterCommit { id: u64 },
    /// Primary -> secondary: registration failed; go back to Stand Alone.
    RegisterAbort { id: u64, reason: String },
    /// Secondary -> primary: prepare to take the active role back.
    FailbackBegin { registration: Registration },
    /// Secondary -> primary: data is copied and the secondary has stood down.
    FailbackCommit { id: u64 },
    /// Secondary -> primary: the failback is off; stay standby.
    FailbackAbort { id: u64, reason: String },
    /// Either -> either: HA configuration removed.
    Remove { id: u64, purge: bool },
    /// Either -> either: my Health Monitor certificate changed; pin this one. Sent over
    /// the caller's still valid pin of the receiver, signed like every peer request.
    Identity { id: u64, member: Member },
    /// Either -> either: take these settings (failover type, VIPs, e-mail) from
    /// `registration`, the sender's with the change made. Applied once per `change_id`;
    /// a repeat is answered as the first was. The sender applies the change only once
    /// this is accepted.
    Settings {
        id: u64,
        change_id: u64,
        registration: Registration,
        /// Who asked on the sender, for the receiver's journal.
        #[serde(default)]
        by: String,
    },
    /// Either -> either: the sender could not confirm settings change `change_id` (every
    /// answer was lost) and did not apply it; if the receiver did, and still has `new`, it
    /// goes back to `old`. Always accepted.
    SettingsUndo {
        id: u64,
        change_id: u64,
        old: Settings,
        new: Settings,
    },
}

impl PeerRequest {
    /// Short name used in URLs and messages.
    pub fn op(&self) -> &'static str {
        match self {
            PeerRequest::Register { .. } => "register",
            PeerRequest::RegisterCommit { .. } => "register_commit",
            PeerRequest::RegisterAbort { .. } => "register_abort",
            PeerRequest::FailbackBegin { .. } => "failback_begin",
            PeerRequest::FailbackCommit { .. } => "failback_commit",
            PeerRequest::FailbackAbort { .. } => "failback_abort",
            PeerRequest::Remove { .. } => "remove",
            PeerRequest::Identity { .. } => "identity",
            PeerRequest::Settings { .. } => "settings",
            PeerRequest::SettingsUndo { .. } => "settings_undo",
        }
    }
}

/// The peer's answer to a `PeerRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PeerAnswer {
    Accepted {
        state: HaState,
        #[serde(default)]
        registration: Option<Box<Registration>>,
    },
    Refused {
        reason: String,
    },
}

/// Everything the core reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The agent started. `since_in_sync_secs` is how long ago (wall clock)
    /// this server last recorded being in sync, if it ever did.
    Start { since_in_sync_secs: Option<u64> },
    /// Time passed; the shell sends one at `Node::next_deadline`.
    Tick,
    /// An authentic, fresh heartbeat from `from` (an IP literal). `seq` is the frame's
    /// number within the sender's boot, one more for every frame it sends: the numbers
    /// that never arrive are the frames lost on the way.
    Heartbeat {
        from: String,
        beacon: Beacon,
        seq: u64,
    },
    /// An authentic heartbeat from `from` that started a new boot of the
    /// peer (an agent restart) and cannot be admitted until one of our
    /// frames is echoed. Answered at once with a heartbeat, so that a
    /// restarted peer hears us in one round trip, not one interval.
    PeerBooted { from: String },
    /// Whether the peer hears us, from the echoes in its heartbeats: `false` when several
    /// of its frames in a row echo none of the frames we sent meanwhile (the path from
    /// here to the peer is broken one way), `true` when its echoes move again.
    PeerHearsUs { hears: bool },
    /// A result of `Action::Probe`.
    ProbeDone { ok: bool, detail: String },
    /// An operator request; answer with `Action::Reply` carrying `token`.
    Command { token: Token, command: Command },
    /// A request from the peer; answer with `Action::Answer` carrying `token`.
    PeerRequest { token: Token, request: PeerRequest },
    /// The outcome of `Action::PeerCall { id, .. }`.
    PeerReply {
        id: u64,
        result: Result<PeerAnswer, String>,
    },
    /// The executors applied (or failed to apply) a duty.
    DutyApplied {
        duty: super::state::Duty,
        result: Result<(), String>,
    },
    /// A data copy finished.
    CopyDone {
        kind: CopyKind,
        result: Result<(), String>,
    },
    /// The watchers' current verdict on this server.
    Health { health: HealthSummary },
    /// The HA interface as the kernel shows it right now, before the NIC watcher's
    /// debounce: a secondary whose own link is down does not take over (it is the one
    /// cut off), however quickly its detector calls the primary lost.
    HaLink { up: bool },
    /// The witness's verdict, when it changes: it answered within its last `missed`
    /// checks (`true`), or it did not.
    Witness { reachable: bool },
    /// The arbiter thread on the lease of `Action::Lease { gen }`: won or renewed in time
    /// (`held`), or, once held, not renewed before its safety margin (`!held`).
    Lease {
        gen: u64,
        held: bool,
        detail: String,
    },
    /// The result of `Action::FencePeer`: the fencing command succeeded (`ok`), or why not.
    FenceDone { ok: bool, detail: String },
    /// The database standby's replication lag against the failover bound:
    /// `Some(why)` when it is beyond it, `None` when within.
    ReplicaLag { behind: Option<String> },
    /// This server's file-sync lag, carried in its heartbeats (`None`: not pulling).
    SyncBeat { lag: Option<SyncBeat> },
    /// Something a watcher saw, for the journal (a disk threshold crossed,
    /// a service restarted); decisions rest on `Health` alone.
    Observation {
        kind: String,
        severity: super::action::Severity,
        text: String,
    },
    /// SIGTERM: stop cleanly.
    Shutdown,
}
