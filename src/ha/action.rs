//! What the core asks the shell to do. Executors turn these into effects and
//! report results back as events.

use super::event::{Beacon, CopyKind, PeerAnswer, PeerRequest, Secret, Token};
use super::state::{
    ConfigMode, Duty, FailoverType, HaState, HealthSummary, Registration, Role, Settings,
};
use serde::{Deserialize, Serialize};

/// How loud a journal entry is (maps onto syslog and the web page's level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One line of the HA event journal (the shell adds the wall-clock time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Stable id of the kind of event, e.g. `state_changed`, `peer_lost`.
    pub kind: String,
    pub severity: Severity,
    /// The state the server is in once the event is recorded.
    pub state: HaState,
    pub text: String,
}

/// What survives a restart (written atomically by the shell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub registration: Option<Registration>,
    pub state: HaState,
    /// The state to return to when an Uncertain state clears.
    #[serde(default)]
    pub prior: Option<HaState>,
    /// A settings change this server started whose answer from the peer was lost: it is
    /// asked again while the peer is heard, and applied here once the peer confirms it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_pending: Option<SettingsChange>,
}

/// A settings change on its way to the peer (`PeerRequest::Settings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    pub change_id: u64,
    /// The settings before the change, and after it.
    pub old: Settings,
    pub new: Settings,
    pub by: String,
}

/// A snapshot for `ha status`, `hamon status` and the JSON API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub name: String,
    pub role: Role,
    pub state: HaState,
    pub mode: ConfigMode,
    pub duty: Duty,
    pub failover_type: Option<FailoverType>,
    pub peer_name: Option<String>,
    pub peer_address: Option<String>,
    pub peer_state: Option<HaState>,
    pub peer_reachable: bool,
    pub health: HealthSummary,
    pub peer_health: Option<HealthSummary>,
    /// The peer's file-sync lag from its heartbeats (while it pulls from us).
    #[serde(default)]
    pub peer_sync: Option<super::event::SyncBeat>,
    pub data_gap: bool,
    pub registration: Option<Registration>,
    /// Why HA is held back, when it is (e.g. the node's address changed).
    pub blocked: Option<String>,
    /// The witness's last verdict (`None`: no witness, or none yet).
    #[serde(default)]
    pub witness: Option<bool>,
    /// This primary released the active role: it reaches neither its peer nor the
    /// witness (self-fencing).
    #[serde(default)]
    pub fenced: bool,
    /// This secondary is fencing its peer before it takes over (`[fencing]`).
    #[serde(default)]
    pub fencing_peer: bool,
    /// The arbiter's lease as this server holds it (`None`: no arbiter).
    #[serde(default)]
    pub lease: Option<super::arbiter::Lease>,
    /// `[fencing] on_failure` ("withhold" or "proceed"; `None`: no fencing).
    #[serde(default)]
    pub fencing: Option<String>,
    /// The arbiter's etcd side, from the shell (`None`: no arbiter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arbiter: Option<ArbiterView>,
    /// The registration names mail recipients that get no mail, and why (no
    /// `[notify.mail]` section), from the shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_unsent: Option<String>,
    /// This server's release and protocol, from the shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<crate::version::Version>,
    /// The peer's, from its heartbeats (`None`: not heard since it was registered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_version: Option<crate::version::Version>,
}

/// What `hamon status`, the page and the API show of the arbiter's etcd side (filled in
/// by the shell's arbiter thread; the core's side is `StatusView::lease`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArbiterView {
    /// The configured endpoints.
    pub endpoints: Vec<String>,
    /// The endpoint that answered last.
    pub answering: Option<String>,
    /// Whether the last call reached etcd (`None`: none made yet).
    pub reachable: Option<bool>,
    /// Who holds the pair's key, as last read (`None`: nobody, or not read yet).
    pub holder: Option<String>,
    /// This server holds the lease.
    pub held: bool,
    /// The lease's TTL as etcd granted it, in ms.
    pub ttl_ms: u64,
    /// The last error, if the last call failed.
    pub error: Option<String>,
}

impl StatusView {
    /// Both servers' releases, for `hamon status`, `ha status` and the page: this server's,
    /// then the peer's as its heartbeats say (or that it has not been heard), and whether
    /// they differ. `None` before the shell filled in this server's.
    pub fn releases(&self) -> Option<String> {
        let ours = self.version.as_ref()?;
        let mut text = format!("this server {ours}");
        match (&self.peer_version, &self.registration) {
            (Some(p), _) => {
                text.push_str(&format!(", peer {p}"));
                if p.release != ours.release || p.minor != ours.minor {
                    text.push_str(match ours.incompatible_with(p) {
                        Some(_) => ": MISMATCH, INCOMPATIBLE (see the journal)",
                        None => ": MISMATCH (a rolling upgrade: finish it)",
                    });
                }
            }
            (None, Some(_)) => text.push_str(", peer not heard yet"),
            (None, None) => {}
        }
        Some(text)
    }

    /// The third parties that keep the pair from a split brain, one line each, for
    /// `hamon status` and the Health Monitor page: ("Arbiter" | "Witness" | "Fencing",
    /// what it says now). Empty when none is configured.
    pub fn safeguards(&self) -> Vec<(&'static str, String)> {
        use super::arbiter::Lease;
        let mut out = Vec::new();
        if let Some(lease) = self.lease {
            let a = self.arbiter.clone().unwrap_or_default();
            let holder = a
                .holder
                .as_deref()
                .map(|h| format!(", held by {h}"))
                .unwrap_or_default();
            let mut text = match lease {
                Lease::Held => format!("lease held ({} ms TTL)", a.ttl_ms),
                Lease::Seeking => format!("waiting for the lease{holder}"),
                Lease::Lost => "LEASE LOST: not renewed in time".to_string(),
                Lease::Released => format!("lease not wanted here{holder}"),
            };
            match (a.reachable, &a.answering) {
                (Some(false), _) => {
                    text += &format!(
                        "; etcd UNREACHABLE ({})",
                        a.error.as_deref().unwrap_or("no answer")
                    )
                }
                (Some(true), Some(at)) => text += &format!("; etcd answers at {at}"),
                _ => {}
            }
            out.push(("Arbiter", text));
        }
        if let Some(w) = self.witness {
            let mut text = if w { "reachable" } else { "UNREACHABLE" }.to_string();
            if self.fenced {
                text += "; SELF-FENCED: this primary reaches neither its peer nor the \
                         witness, and released the virtual IP and its active services";
            }
            out.push(("Witness", text));
        }
        if let Some(policy) = &self.fencing {
            let mut text = format!("before a takeover, on_failure = {policy}");
            if self.fencing_peer {
                text += "; fencing the peer now";
            }
            out.push(("Fencing", text));
        }
        out
    }
}

/// The answer to an operator command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Done { message: String },
    Refused { message: String },
    Status { status: Box<StatusView> },
}

/// Where a peer call goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTarget {
    pub address: String,
    pub hm_port: u16,
    /// The certificate fingerprint its HTTPS must present (see `Member::tls_fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Hold the arbiter's lease for pair `pair` (win it, then renew it), or release it;
    /// answer with `Event::Lease` under the same `gen`.
    Lease { hold: bool, pair: u64, gen: u64 },
    /// Fence the peer at `peer` (run `[fencing] command`); answer with `Event::FenceDone`.
    FencePeer { peer: String },
    /// Send one heartbeat to the peer.
    SendHeartbeat {
        address: String,
        port: u16,
        beacon: Beacon,
    },
    /// Probe the peer's Health Monitor (`GET /healthz`); answer `ProbeDone`.
    Probe { target: PeerTarget },
    /// A signed request to the peer; answer `PeerReply { id }`. `key`, when
    /// set, signs this call instead of the installed key (registration).
    PeerCall {
        id: u64,
        target: PeerTarget,
        request: PeerRequest,
        key: Option<Secret>,
    },
    /// Answer an operator command.
    Reply { token: Token, reply: Reply },
    /// Answer a peer request.
    Answer { token: Token, answer: PeerAnswer },
    /// Make this duty true (services, VIP); answer `DutyApplied`.
    SetDuty(Duty),
    /// The registration's virtual IPs changed from `from` to `to`: an active server
    /// removes the old ones from its interface and claims and announces the new ones at
    /// once; any other leaves its interface alone. No answer (a failure is journaled by
    /// the shell).
    MoveVips { from: Vec<String>, to: Vec<String> },
    /// Start a data copy; answer `CopyDone`.
    StartCopy(CopyKind),
    /// Write the persistent state.
    Persist(Persisted),
    /// Record "in sync now" with the wall clock (for the data-gap rule).
    StampInSync,
    /// Install (and persist) a new authentication key.
    InstallKey(Secret),
    /// Remove replicated HA data from this server (`ha remove`, purge = yes).
    PurgeData,
    /// Record an event in the journal (and notify).
    Journal(JournalEntry),
    /// Everything is released; the agent may exit.
    Exit,
}
