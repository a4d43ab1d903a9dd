//! The event catalogue: every kind of journal line the core and the watchers
//! produce, and what it becomes once it leaves this server (a severity, an
//! SNMP notification of HAMON-MIB, a numeric hamonEventId, a mail/syslog
//! message), plus the operator's severity overrides and channel routing.
//!
//! The catalogue is keyed by the journal `kind` string (`failover_complete`,
//! `peer_lost`, ...). Those strings and the numbers below are an interface:
//! NMS rules and mail filters match on them. Never renumber an event and
//! never give a number to a second event; a kind that goes away moves to
//! [`RETIRED`] with its number.
//!
//! Number ranges: 100s state and registration, 200s failover and failback,
//! 300s the peer, 400s supervised processes, 500s disk, 600s NICs, 700s the
//! database and replication, 800s copies and sync, 900s the agent itself.
//!
//! How a journal line becomes a notice: [`Routing::resolve`] with the kind
//! and the severity the core reported gives the notice severity, the
//! notification and the hamonEventId; [`EventKind::message`] renders the
//! text; [`Routing::wants`] tells each channel whether to send it.

use super::NoticeSeverity;
use crate::ha::Severity;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The HAMON-MIB notification an event is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// hamonStateChange. Also the notification for informational events that
    /// change no state: they carry hamonState equal to hamonPreviousState.
    StateChange,
    /// hamonFailover: this server took over service from its peer.
    Failover,
    /// hamonFailback: service moved back to the primary.
    Failback,
    /// hamonRegistration: the pair was registered.
    Registration,
    /// hamonPeerLost: heartbeats from the peer stopped.
    PeerLost,
    /// hamonPeerFound: heartbeats from the peer resumed.
    PeerFound,
    /// hamonAlarm: a condition that needs attention.
    Alarm,
    /// hamonAlarmCleared: the condition of an earlier hamonAlarm ended.
    AlarmCleared,
}

impl Category {
    /// Every category, in MIB order.
    pub const ALL: [Category; 8] = [
        Category::StateChange,
        Category::Failover,
        Category::Failback,
        Category::Registration,
        Category::PeerLost,
        Category::PeerFound,
        Category::Alarm,
        Category::AlarmCleared,
    ];

    /// The MIB descriptor of the notification, e.g. `hamonPeerLost`.
    pub fn notification(self) -> &'static str {
        match self {
            Category::StateChange => "hamonStateChange",
            Category::Failover => "hamonFailover",
            Category::Failback => "hamonFailback",
            Category::Registration => "hamonRegistration",
            Category::PeerLost => "hamonPeerLost",
            Category::PeerFound => "hamonPeerFound",
            Category::Alarm => "hamonAlarm",
            Category::AlarmCleared => "hamonAlarmCleared",
        }
    }

    /// The notification's number under hamonNotifications (`HAMON_OIDS`'
    /// last arc: hamonStateChange is 1, hamonAlarmCleared 8).
    pub fn arc(self) -> u32 {
        match self {
            Category::StateChange => 1,
            Category::Failover => 2,
            Category::Failback => 3,
            Category::Registration => 4,
            Category::PeerLost => 5,
            Category::PeerFound => 6,
            Category::Alarm => 7,
            Category::AlarmCleared => 8,
        }
    }
}

/// What ends the condition an event raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Clear {
    /// The event raises nothing: a state change, a milestone, a clear, or a
    /// warning about something that resolves itself.
    NotAlarm,
    /// Ended by the event with this id (whose severity is `Cleared`).
    By(&'static str),
    /// A level the watcher reports under one kind: the same kind reported at
    /// the core's `Info` level is the clear (severity `Cleared`, sent as
    /// hamonAlarmCleared with the same hamonEventId).
    Itself,
    /// Nothing automatic ends it: the operator acts and acknowledges the
    /// alarm in the NMS (split brain, a changed identity, a duty that failed).
    Operator,
}

/// One kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKind {
    /// Stable id: the journal `kind` string, e.g. `failover_complete`.
    pub id: &'static str,
    /// Stable number, sent as hamonEventId. Never reused.
    pub number: u32,
    /// The SNMP notification it is sent as.
    pub category: Category,
    /// Default severity. For a kind that follows the core's level
    /// ([`EventKind::follows_core`]) this is the severity at the core's
    /// `Error` level.
    pub severity: NoticeSeverity,
    /// What ends the condition it raises.
    pub clear: Clear,
    /// The kind is reported at varying levels (a watcher's level change):
    /// core `Error` gives [`EventKind::severity`], `Warning` gives at most
    /// `Warning`, `Info` gives `Cleared` (or `Info` when the kind does not
    /// clear itself).
    pub follows_core: bool,
    /// Message for mail and syslog; `{text}` stands for the journal text.
    pub template: &'static str,
    /// What it means, in one line (for docs/events.md).
    pub meaning: &'static str,
}

impl EventKind {
    /// The message for a journal line of this kind: the template with
    /// `{text}` replaced by `text` (once; `text` is not scanned again).
    pub fn message(&self, text: &str) -> String {
        self.template.replacen("{text}", text, 1)
    }

    /// Whether the event raises a condition that something (or someone)
    /// must end.
    pub fn raises_alarm(&self) -> bool {
        self.clear != Clear::NotAlarm
    }

    /// The hamonEventId a notice of this kind carries. A hamonAlarmCleared
    /// carries the number of the alarm it ends (HAMON-MIB: "A
    /// hamonAlarmCleared carries the hamonEventId of the hamonAlarm it
    /// clears"); every other event its own number.
    pub fn snmp_event_id(&self) -> u32 {
        if self.category == Category::AlarmCleared {
            if let Some(alarm) = EVENTS.iter().find(|e| e.clear == Clear::By(self.id)) {
                return alarm.number;
            }
        }
        self.number
    }
}

/// Numbers (and ids) of kinds that no longer exist. Their numbers are never
/// given to another kind.
pub const RETIRED: &[(u32, &str)] = &[];

/// Every kind the core and the shell journal.
pub const EVENTS: &[EventKind] = &[
    // ----- 100s: state and registration --------------------------------------
    EventKind {
        id: "state_changed",
        number: 101,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "State changed: {text}",
        meaning: "This server moved from one HA state to another (the text says from, to and why).",
    },
    EventKind {
        id: "registered",
        number: 102,
        category: Category::Registration,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Pair registered: {text}",
        meaning: "The pair was registered, with this server as the active primary.",
    },
    EventKind {
        id: "identity_changed",
        number: 103,
        category: Category::Alarm,
        severity: NoticeSeverity::Critical,
        clear: Clear::Operator,
        follows_core: false,
        template: "Server identity changed, HA halted: {text}",
        meaning: "This server's name or address no longer matches the registration; HA stays \
                  halted until `hamon ha remove` and a new registration.",
    },
    EventKind {
        id: "split_brain",
        number: 104,
        category: Category::Alarm,
        severity: NoticeSeverity::Critical,
        clear: Clear::Operator,
        follows_core: false,
        template: "Split brain: {text}",
        meaning: "Both servers were active; the primary stood down and the operator must choose \
                  whose data to keep.",
    },
    EventKind {
        id: "duty_failed",
        number: 105,
        category: Category::Alarm,
        severity: NoticeSeverity::Major,
        clear: Clear::Operator,
        follows_core: false,
        template: "Duty failed: {text}",
        meaning: "Applying a duty (VIP, database, services, hooks) failed; a server that cannot \
                  take the active role gives it up.",
    },
    EventKind {
        id: "settings_changed",
        number: 106,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Settings changed: {text}",
        meaning: "The registration's failover type, virtual IPs or e-mail list changed \
                  (`hamon ha set`, the page or the API, on either server); the text says old \
                  -> new and who asked.",
    },
    EventKind {
        id: "settings_unconfirmed",
        number: 107,
        category: Category::StateChange,
        severity: NoticeSeverity::Warning,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Settings change not confirmed: {text}",
        meaning: "A settings change got no answer from the peer and was not made here (the \
                  peer is told to undo it if it got it, and this says when that is done), or \
                  the peer's heartbeats show another failover type than this server's.",
    },
    // ----- 200s: failover and failback ---------------------------------------
    EventKind {
        id: "failover_complete",
        number: 201,
        category: Category::Failover,
        severity: NoticeSeverity::Warning,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Failover complete: {text}",
        meaning: "This secondary took over service (automatic or `hamon ha failover`); the pair \
                  runs on the secondary until failback.",
    },
    EventKind {
        id: "failback_complete",
        number: 202,
        category: Category::Failback,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Failback complete: {text}",
        meaning: "Service moved back to the primary.",
    },
    EventKind {
        id: "failover_withheld",
        number: 203,
        category: Category::Alarm,
        severity: NoticeSeverity::Major,
        clear: Clear::Operator,
        follows_core: false,
        template: "Failover withheld: {text}",
        meaning: "The primary is lost but this secondary will not take over on its own (not in \
                  sync, unhealthy, or its database standby lags); `hamon ha failover` forces it.",
    },
    EventKind {
        id: "fencing_started",
        number: 204,
        category: Category::StateChange,
        severity: NoticeSeverity::Warning,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Fencing the peer: {text}",
        meaning: "This secondary is about to take over and first runs the fencing command \
                  against its peer.",
    },
    EventKind {
        id: "fencing_done",
        number: 205,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Peer fenced: {text}",
        meaning: "The fencing command succeeded; the takeover goes ahead.",
    },
    EventKind {
        id: "fencing_failed",
        number: 206,
        category: Category::Alarm,
        severity: NoticeSeverity::Critical,
        clear: Clear::Operator,
        follows_core: false,
        template: "Fencing failed: {text}",
        meaning: "The fencing command failed: the takeover is withheld and retried with backoff \
                  (on_failure = withhold), or goes ahead unfenced (proceed).",
    },
    // ----- 300s: the peer ----------------------------------------------------
    EventKind {
        id: "peer_lost",
        number: 301,
        category: Category::PeerLost,
        severity: NoticeSeverity::Major,
        clear: Clear::By("peer_found"),
        follows_core: false,
        template: "Peer lost: {text}",
        meaning: "The peer stopped answering (no heartbeats and the probe failed) or announced \
                  its shutdown.",
    },
    EventKind {
        id: "peer_found",
        number: 302,
        category: Category::PeerFound,
        severity: NoticeSeverity::Cleared,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Peer found: {text}",
        meaning: "Heartbeats from the peer resumed after it was lost or the heartbeat path was \
                  broken.",
    },
    EventKind {
        id: "heartbeats_missed",
        number: 303,
        category: Category::StateChange,
        severity: NoticeSeverity::Warning,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Heartbeats missed: {text}",
        meaning: "Several heartbeats in a row did not arrive; the peer is probed next (often \
                  followed by peer_lost or heartbeat_path_broken, or by nothing).",
    },
    EventKind {
        id: "heartbeat_path_broken",
        number: 304,
        category: Category::PeerLost,
        severity: NoticeSeverity::Major,
        clear: Clear::By("peer_found"),
        follows_core: false,
        template: "Heartbeat path broken: {text}",
        meaning: "The peer's Health Monitor answers but its heartbeats do not arrive (UDP port or \
                  key); no failover.",
    },
    EventKind {
        id: "peer_not_paired",
        number: 305,
        category: Category::Alarm,
        severity: NoticeSeverity::Major,
        clear: Clear::Operator,
        follows_core: false,
        template: "Peer not paired: {text}",
        meaning: "The server at the peer's address is alive but not part of this registration.",
    },
    EventKind {
        id: "primary_alone",
        number: 306,
        category: Category::Alarm,
        severity: NoticeSeverity::Critical,
        clear: Clear::Operator,
        follows_core: false,
        template: "Primary alone: {text}",
        meaning: "At start-up the primary could not reach its secondary; it serves nothing until \
                  the pair resumes or `hamon ha remove` is run.",
    },
    EventKind {
        id: "heartbeat_one_way",
        number: 309,
        category: Category::StateChange,
        severity: NoticeSeverity::Warning,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Heartbeat path one way: {text}",
        meaning: "This server hears its peer, but the peer's heartbeats show it does not hear \
                  this server: the path from here to the peer is broken one way.",
    },
    EventKind {
        id: "heartbeat_two_way",
        number: 310,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Heartbeat path both ways: {text}",
        meaning: "The peer hears this server's heartbeats again after a one-way break.",
    },
    EventKind {
        id: "witness_unreachable",
        number: 311,
        category: Category::Alarm,
        severity: NoticeSeverity::Major,
        clear: Clear::By("witness_reachable"),
        follows_core: false,
        template: "Witness unreachable: {text}",
        meaning: "The witness does not answer: this server does not take over, and as an active \
                  primary that cannot reach its peer either it releases the role.",
    },
    EventKind {
        id: "witness_reachable",
        number: 312,
        category: Category::AlarmCleared,
        severity: NoticeSeverity::Cleared,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Witness reachable: {text}",
        meaning: "The witness answers again.",
    },
    EventKind {
        id: "self_fenced",
        number: 313,
        category: Category::Alarm,
        severity: NoticeSeverity::Critical,
        clear: Clear::By("self_fence_lifted"),
        follows_core: false,
        template: "Self-fenced: {text}",
        meaning: "This primary could reach neither its peer nor the witness, so it released the \
                  virtual IP and its active services before the secondary could take over.",
    },
    EventKind {
        id: "self_fence_lifted",
        number: 314,
        category: Category::AlarmCleared,
        severity: NoticeSeverity::Cleared,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Self-fence lifted: {text}",
        meaning: "The peer or the witness answers again; the primary holds the role again unless \
                  the secondary took it.",
    },
    EventKind {
        id: "witness_check",
        number: 315,
        category: Category::Alarm,
        severity: NoticeSeverity::Major,
        clear: Clear::Operator,
        follows_core: false,
        template: "Witness check failed: {text}",
        meaning: "The witness cannot be checked at all (its ICMP socket could not be opened); \
                  the witness counts as unreachable.",
    },
    EventKind {
        id: "arbiter_waiting",
        number: 316,
        category: Category::StateChange,
        severity: NoticeSeverity::Warning,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Waiting for the arbiter: {text}",
        meaning: "This secondary would take over, and first waits for the arbiter's lease: it \
                  goes ahead once the lease is won, that is once the other server's lease \
                  expired unrenewed.",
    },
    EventKind {
        id: "arbiter_lease_held",
        number: 317,
        category: Category::AlarmCleared,
        severity: NoticeSeverity::Cleared,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Arbiter lease held: {text}",
        meaning: "This server won the arbiter's lease (or won it back) and may hold the active \
                  role.",
    },
    EventKind {
        id: "arbiter_lost",
        number: 318,
        category: Category::Alarm,
        severity: NoticeSeverity::Critical,
        clear: Clear::By("arbiter_lease_held"),
        follows_core: false,
        template: "Arbiter lease lost: {text}",
        meaning: "The active server could not renew the arbiter's lease in time: it released \
                  the active role before the lease could expire (on_arbiter_loss = demote), or \
                  kept it (hold).",
    },
    EventKind {
        id: "arbiter_lease_released",
        number: 319,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Arbiter lease released: {text}",
        meaning: "This server gave the arbiter's lease up, as it no longer takes the active \
                  role; the peer need not wait for the lease to expire.",
    },
    EventKind {
        id: "arbiter_unreachable",
        number: 320,
        category: Category::Alarm,
        severity: NoticeSeverity::Major,
        clear: Clear::By("arbiter_reachable"),
        follows_core: false,
        template: "Arbiter unreachable: {text}",
        meaning: "No etcd endpoint of the arbiter answers: this server cannot win the lease, \
                  and as the active one it keeps the role only until the lease runs out.",
    },
    EventKind {
        id: "arbiter_reachable",
        number: 321,
        category: Category::AlarmCleared,
        severity: NoticeSeverity::Cleared,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Arbiter reachable: {text}",
        meaning: "An etcd endpoint of the arbiter answers again.",
    },
    EventKind {
        id: "version_mismatch",
        number: 322,
        category: Category::Alarm,
        severity: NoticeSeverity::Warning,
        clear: Clear::By("version_match"),
        follows_core: false,
        template: "Peer runs another release: {text}",
        meaning: "The peer's heartbeats say it runs another release or protocol than this \
                  server: expected during a rolling upgrade; the text says whether the two \
                  work together (protocols one minor apart do).",
    },
    EventKind {
        id: "version_match",
        number: 323,
        category: Category::AlarmCleared,
        severity: NoticeSeverity::Cleared,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Peer runs the same release again: {text}",
        meaning: "Both servers run the same release and protocol again.",
    },
    EventKind {
        id: "peer_certificate_pinned",
        number: 307,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Certificate pinned: {text}",
        meaning: "A server's Health Monitor certificate changed and its peer now pins the new \
                  one; it was handed over through the authenticated peer API.",
    },
    EventKind {
        id: "peer_certificate_pin_failed",
        number: 308,
        category: Category::StateChange,
        severity: NoticeSeverity::Warning,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Certificate not pinned yet: {text}",
        meaning: "This server's certificate changed and the peer did not take the new one yet; \
                  until it does, the peer's API calls and file sync to this server fail. \
                  Retried every 10 s while the peer is heard.",
    },
    // ----- 400s: supervised processes ----------------------------------------
    EventKind {
        id: "service_failed",
        number: 401,
        category: Category::Alarm,
        severity: NoticeSeverity::Major,
        clear: Clear::Operator,
        follows_core: false,
        template: "Service failed: {text}",
        meaning: "A supervised service gave up restarting; a critical one fails the active \
                  primary over.",
    },
    EventKind {
        id: "service_exited",
        number: 402,
        category: Category::StateChange,
        severity: NoticeSeverity::Warning,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Service exited: {text}",
        meaning: "A supervised service exited unexpectedly; it is restarted after its back-off.",
    },
    EventKind {
        id: "service_restarting",
        number: 403,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Service restarting: {text}",
        meaning: "A supervised service is about to be restarted (attempt and delay in the text).",
    },
    EventKind {
        id: "service_started",
        number: 404,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Service started: {text}",
        meaning: "A supervised service started.",
    },
    EventKind {
        id: "service_stopped",
        number: 405,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Service stopped: {text}",
        meaning: "A supervised service was stopped (the duty no longer runs it, or hamon stops).",
    },
    EventKind {
        id: "service_error",
        number: 406,
        category: Category::Alarm,
        severity: NoticeSeverity::Minor,
        clear: Clear::Operator,
        follows_core: false,
        template: "Service error: {text}",
        meaning: "The supervisor could not carry out a start or stop for a duty change.",
    },
    // ----- 500s: disk --------------------------------------------------------
    EventKind {
        id: "disk",
        number: 501,
        category: Category::Alarm,
        severity: NoticeSeverity::Major,
        clear: Clear::Itself,
        follows_core: true,
        template: "Disk: {text}",
        meaning: "A watched path crossed a space threshold (warning level: warning, critical \
                  level: major) or fell back under it (cleared).",
    },
    // ----- 600s: NICs --------------------------------------------------------
    EventKind {
        id: "nic_failed",
        number: 601,
        category: Category::Alarm,
        severity: NoticeSeverity::Critical,
        clear: Clear::By("nic_recovered"),
        follows_core: false,
        template: "HA interface down: {text}",
        meaning: "The HA network interface is unusable (carrier, link or address lost); the \
                  active primary fails over.",
    },
    EventKind {
        id: "nic_recovered",
        number: 602,
        category: Category::AlarmCleared,
        severity: NoticeSeverity::Cleared,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "HA interface back: {text}",
        meaning: "The HA network interface is usable again.",
    },
    EventKind {
        id: "nic",
        number: 603,
        category: Category::Alarm,
        severity: NoticeSeverity::Minor,
        clear: Clear::Itself,
        follows_core: true,
        template: "Network interface: {text}",
        meaning: "The NIC watcher saw one interface (HA or tracked) become unusable or usable \
                  again; the text names it.",
    },
    EventKind {
        id: "nic_watch",
        number: 604,
        category: Category::Alarm,
        severity: NoticeSeverity::Major,
        clear: Clear::Operator,
        follows_core: true,
        template: "NIC watcher: {text}",
        meaning: "The NIC watcher could not start (major) or netlink reported an error (warning).",
    },
    // ----- 700s: database and replication ------------------------------------
    EventKind {
        id: "database_unreachable",
        number: 701,
        category: Category::Alarm,
        severity: NoticeSeverity::Critical,
        clear: Clear::By("database_recovered"),
        follows_core: false,
        template: "Database unreachable: {text}",
        meaning: "The core declared the database failed; an active server becomes Uncertain and \
                  the peer may take over.",
    },
    EventKind {
        id: "database_recovered",
        number: 702,
        category: Category::AlarmCleared,
        severity: NoticeSeverity::Cleared,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Database reachable again: {text}",
        meaning: "The database is reachable again; an Uncertain server returns to its prior state.",
    },
    EventKind {
        id: "database_check",
        number: 703,
        category: Category::Alarm,
        severity: NoticeSeverity::Minor,
        clear: Clear::Itself,
        follows_core: true,
        template: "Database check: {text}",
        meaning: "The database check's own verdict with its error text: failing `failures` times \
                  in a row, or reachable.",
    },
    EventKind {
        id: "replica_lagging",
        number: 704,
        category: Category::Alarm,
        severity: NoticeSeverity::Major,
        clear: Clear::By("replica_caught_up"),
        follows_core: false,
        template: "Database standby behind: {text}",
        meaning: "The standby's unreplayed WAL is over `max_failover_lag_bytes`: an automatic \
                  failover would wait until it is within the bound.",
    },
    EventKind {
        id: "replica_caught_up",
        number: 705,
        category: Category::AlarmCleared,
        severity: NoticeSeverity::Cleared,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Database standby within bound: {text}",
        meaning: "The standby's lag is back within the failover bound.",
    },
    EventKind {
        id: "database_writes_stopped",
        number: 706,
        category: Category::StateChange,
        severity: NoticeSeverity::Warning,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Database writes stopped: {text}",
        meaning: "A server that gave up the active role on its own (arbiter lease lost, or \
                  fenced itself), or a standby that cannot follow its peer, stopped its \
                  database, which was still a writable primary; the next active duty starts it.",
    },
    // ----- 800s: copies and sync ---------------------------------------------
    EventKind {
        id: "initial_copy",
        number: 801,
        category: Category::Registration,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Initial copy: {text}",
        meaning: "Registration is copying this primary's data to the secondary.",
    },
    EventKind {
        id: "failback_copy",
        number: 802,
        category: Category::Failback,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Failback copy: {text}",
        meaning: "Failback is copying data from this secondary to the primary.",
    },
    EventKind {
        id: "copy_retry",
        number: 803,
        category: Category::Failback,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Copy retry: {text}",
        meaning: "The data-gap copy that failed is tried again; failback stays blocked until it \
                  succeeds.",
    },
    EventKind {
        id: "data_gap",
        number: 804,
        category: Category::StateChange,
        severity: NoticeSeverity::Warning,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Data gap: {text}",
        meaning: "This primary was out of sync longer than the data-gap limit; a full copy runs \
                  before failback.",
    },
    EventKind {
        id: "sync_failed",
        number: 805,
        category: Category::Alarm,
        severity: NoticeSeverity::Major,
        clear: Clear::By("sync_recovered"),
        follows_core: false,
        template: "File sync failing: {text}",
        meaning: "Three passes in a row of a sync class failed or left files uncopied; the \
                  standby's copy is getting stale.",
    },
    EventKind {
        id: "sync_recovered",
        number: 806,
        category: Category::AlarmCleared,
        severity: NoticeSeverity::Cleared,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "File sync working again: {text}",
        meaning: "A pass of the failing class completed without error.",
    },
    // ----- 900s: the agent ---------------------------------------------------
    EventKind {
        id: "agent_started",
        number: 901,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Agent started: {text}",
        meaning: "hamon started (the text says the state it was in when it stopped).",
    },
    EventKind {
        id: "agent_stopping",
        number: 902,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Agent stopping: {text}",
        meaning: "hamon is stopping; a paired server tells its peer with a farewell heartbeat.",
    },
    EventKind {
        id: "agent_secret_failed",
        number: 904,
        category: Category::Alarm,
        severity: NoticeSeverity::Critical,
        clear: Clear::Operator,
        follows_core: false,
        template: "Pair secret not stored: {text}",
        meaning: "A new pair secret is in use but could not be written to the state directory; \
                  fix the disk, then run `hamon ha authkey` so both servers store one again.",
    },
    EventKind {
        id: "agent_state_unsaved",
        number: 905,
        category: Category::Alarm,
        severity: NoticeSeverity::Critical,
        clear: Clear::By("agent_state_saved"),
        follows_core: false,
        template: "HA state not saved: {text}",
        meaning: "This server could not write its HA state to the state directory; after a \
                  restart it would come back with an older one. Free space or fix the disk.",
    },
    EventKind {
        id: "agent_state_saved",
        number: 906,
        category: Category::AlarmCleared,
        severity: NoticeSeverity::Cleared,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "HA state saved again: {text}",
        meaning: "The HA state is written to the state directory again.",
    },
    EventKind {
        id: "login_failures",
        number: 903,
        category: Category::StateChange,
        severity: NoticeSeverity::Warning,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Failed logins: {text}",
        meaning: "The Health Monitor's budget of failed logins (all addresses together) ran \
                  out; every login waits until it has room again.",
    },
    EventKind {
        id: "notify_test",
        number: 907,
        category: Category::StateChange,
        severity: NoticeSeverity::Info,
        clear: Clear::NotAlarm,
        follows_core: false,
        template: "Test notification: {text}",
        meaning: "A test sent by `hamon notify test` through each configured channel, \
                  whatever the routing: it says that the channel reaches its receiver.",
    },
];

/// The entry for a kind the catalogue does not know (a newer core, a new
/// watcher not catalogued yet). It follows the core's level: `Error` becomes
/// a minor hamonAlarm, `Warning` a warning hamonAlarm, `Info` an info
/// hamonStateChange; nothing clears it. Minor rather than info so that it
/// still reaches mail and SNMP with the default routing: an event nobody
/// catalogued is worth seeing. Notices keep the original kind string as
/// their id; routing lists and overrides name these events `unknown`.
pub const UNKNOWN: EventKind = EventKind {
    id: "unknown",
    number: 999,
    category: Category::Alarm,
    severity: NoticeSeverity::Minor,
    clear: Clear::Operator,
    follows_core: true,
    template: "{text}",
    meaning: "An event kind this catalogue does not know.",
};

/// The catalogue entry of `kind`, if there is one.
pub fn find(kind: &str) -> Option<&'static EventKind> {
    EVENTS.iter().find(|e| e.id == kind)
}

/// The catalogue entry of `kind`; [`UNKNOWN`] for a kind not in [`EVENTS`].
pub fn lookup(kind: &str) -> &'static EventKind {
    find(kind).unwrap_or(&UNKNOWN)
}

/// The alarms `kind` ends: those cleared [`Clear::By`] it, or itself when it
/// clears itself.
pub fn clears(kind: &str) -> Vec<&'static EventKind> {
    let e = lookup(kind);
    if e.clear == Clear::Itself {
        return vec![e];
    }
    EVENTS
        .iter()
        .filter(|a| a.clear == Clear::By(e.id))
        .collect()
}

/// Order of severities for thresholds: `Info` 1 up to `Critical` 5.
/// `Cleared` is 0: it is not on the scale (see [`Routing::wants`]).
pub fn rank(s: NoticeSeverity) -> u8 {
    match s {
        NoticeSeverity::Cleared => 0,
        NoticeSeverity::Info => 1,
        NoticeSeverity::Warning => 2,
        NoticeSeverity::Minor => 3,
        NoticeSeverity::Major => 4,
        NoticeSeverity::Critical => 5,
    }
}

/// Every severity, most serious first.
pub const SEVERITIES: [NoticeSeverity; 6] = [
    NoticeSeverity::Critical,
    NoticeSeverity::Major,
    NoticeSeverity::Minor,
    NoticeSeverity::Warning,
    NoticeSeverity::Info,
    NoticeSeverity::Cleared,
];

/// A severity from its lower-case name (`critical` ... `cleared`).
pub fn parse_severity(s: &str) -> Option<NoticeSeverity> {
    SEVERITIES.into_iter().find(|v| v.as_str() == s)
}

// ----- routing ----------------------------------------------------------------

/// A notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Mail,
    Syslog,
    Snmp,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Mail, Channel::Syslog, Channel::Snmp];

    /// The channel's name in the configuration (`[notify.mail]` ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Mail => "mail",
            Channel::Syslog => "syslog",
            Channel::Snmp => "snmp",
        }
    }
}

/// Which events one channel sends. `exclude` wins over `include`, which wins
/// over `min_severity`; a clear counts at the severity of the alarm it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Events at least this serious are sent (never `Cleared`).
    pub min_severity: NoticeSeverity,
    /// Kinds sent whatever their severity.
    pub include: BTreeSet<String>,
    /// Kinds never sent.
    pub exclude: BTreeSet<String>,
}

impl Filter {
    fn new(min_severity: NoticeSeverity, include: &[&str], exclude: &[&str]) -> Filter {
        Filter {
            min_severity,
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Mail by default: every warning or worse (and their clears), plus every
/// change of state and the pair's milestones (the appliance guide mails
/// every state change).
pub const MAIL_DEFAULT_INCLUDE: &[&str] = &["state_changed", "registered", "failback_complete"];

/// SNMP by default: everything but informational chatter about services and
/// copies in progress (their outcome arrives as its own event).
pub const SNMP_DEFAULT_EXCLUDE: &[&str] = &[
    "service_started",
    "service_stopped",
    "service_restarting",
    "initial_copy",
    "failback_copy",
    "copy_retry",
];

/// Severity overrides and per-channel filters, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// Kind id (or `unknown`) to the severity used instead of the default.
    pub overrides: HashMap<String, NoticeSeverity>,
    pub mail: Filter,
    pub syslog: Filter,
    pub snmp: Filter,
}

impl Default for Routing {
    fn default() -> Routing {
        Routing {
            overrides: HashMap::new(),
            mail: Filter::new(NoticeSeverity::Warning, MAIL_DEFAULT_INCLUDE, &[]),
            syslog: Filter::new(NoticeSeverity::Info, &[], &[]),
            snmp: Filter::new(NoticeSeverity::Info, &[], SNMP_DEFAULT_EXCLUDE),
        }
    }
}

/// What a journal line becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub kind: &'static EventKind,
    pub severity: NoticeSeverity,
    /// The notification it is sent as (a kind that clears itself is sent as
    /// hamonAlarmCleared at the core's `Info` level).
    pub category: Category,
    /// hamonEventId.
    pub event_id: u32,
}

impl Routing {
    /// The filter of `channel`.
    pub fn filter(&self, channel: Channel) -> &Filter {
        match channel {
            Channel::Mail => &self.mail,
            Channel::Syslog => &self.syslog,
            Channel::Snmp => &self.snmp,
        }
    }

    /// The severity of `kind`: the override, else the catalogue's default.
    /// For a kind that follows the core's level this is its severity at the
    /// core's `Error` level (see [`Routing::resolve`]).
    pub fn severity(&self, kind: &str) -> NoticeSeverity {
        let e = lookup(kind);
        self.overrides.get(e.id).copied().unwrap_or(e.severity)
    }

    /// What a journal line of `kind`, reported by the core at `reported`,
    /// becomes. Kinds with a fixed severity ignore `reported`.
    pub fn resolve(&self, kind: &str, reported: Severity) -> Resolved {
        let e = lookup(kind);
        let base = self.severity(kind);
        let (severity, category) = if !e.follows_core {
            (base, e.category)
        } else {
            match reported {
                Severity::Error => (base, e.category),
                Severity::Warning => {
                    let s = if rank(base) < rank(NoticeSeverity::Warning) {
                        base
                    } else {
                        NoticeSeverity::Warning
                    };
                    (s, e.category)
                }
                Severity::Info if e.clear == Clear::Itself => {
                    (NoticeSeverity::Cleared, Category::AlarmCleared)
                }
                Severity::Info => (NoticeSeverity::Info, Category::StateChange),
            }
        };
        Resolved {
            kind: e,
            severity,
            category,
            event_id: e.snmp_event_id(),
        }
    }

    /// Whether `channel` sends an event of `kind` at `severity` (as given by
    /// [`Routing::resolve`]). An excluded kind never goes, an included one
    /// always; otherwise the severity must reach the channel's
    /// `min_severity`, and a `Cleared` event counts at the severity of the
    /// most serious alarm it ends, so a channel that saw the alarm sees its
    /// end. Kinds outside the catalogue match the lists as `unknown`.
    pub fn wants(&self, channel: Channel, kind: &str, severity: NoticeSeverity) -> bool {
        let f = self.filter(channel);
        let id = lookup(kind).id;
        if f.exclude.contains(id) {
            return false;
        }
        if f.include.contains(id) {
            return true;
        }
        let level = if severity == NoticeSeverity::Cleared {
            clears(kind)
                .iter()
                .map(|a| rank(self.severity(a.id)))
                .max()
                .unwrap_or(rank(NoticeSeverity::Info))
        } else {
            rank(severity)
        };
        level >= rank(f.min_severity)
    }
}

// ----- validation -------------------------------------------------------------

/// One channel's routing settings as written (every key optional; a key
/// left out keeps the default, a key given replaces it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawFilter {
    pub min_severity: Option<String>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
}

/// `[notify]` routing settings as written: `[notify.severity]` overrides
/// and the routing keys of `[notify.mail]`, `[notify.syslog]` and
/// `[notify.snmp]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRouting {
    pub severity: BTreeMap<String, String>,
    pub mail: RawFilter,
    pub syslog: RawFilter,
    pub snmp: RawFilter,
}

/// Check raw routing settings against the catalogue: every kind must exist
/// (or be `unknown`), every severity must be a known name, a clear keeps its
/// `cleared` severity, `cleared` is no threshold, and no kind is both
/// included and excluded. The first problem is returned, naming its key.
pub fn validate(raw: &RawRouting) -> Result<Routing, String> {
    let mut routing = Routing::default();
    for (kind, sev) in &raw.severity {
        let key = format!("notify.severity.{kind}");
        let e = known_kind(&key, kind)?;
        let s = parse_severity(sev).ok_or_else(|| {
            format!(
                "{key}: unknown severity \"{sev}\" (use one of {})",
                severity_names()
            )
        })?;
        if e.severity == NoticeSeverity::Cleared && s != NoticeSeverity::Cleared {
            return Err(format!(
                "{key}: {kind} ends an alarm, so its severity is always \"cleared\"; to stop \
                 sending it, exclude it from a channel"
            ));
        }
        if s == NoticeSeverity::Cleared && e.severity != NoticeSeverity::Cleared {
            return Err(format!(
                "{key}: \"cleared\" is only for events that end an alarm (use one of {})",
                severity_names()
            ));
        }
        routing.overrides.insert(e.id.to_string(), s);
    }
    for channel in Channel::ALL {
        let r = match channel {
            Channel::Mail => &raw.mail,
            Channel::Syslog => &raw.syslog,
            Channel::Snmp => &raw.snmp,
        };
        let prefix = format!("notify.{}", channel.as_str());
        let f = match channel {
            Channel::Mail => &mut routing.mail,
            Channel::Syslog => &mut routing.syslog,
            Channel::Snmp => &mut routing.snmp,
        };
        if let Some(min) = &r.min_severity {
            f.min_severity = match parse_severity(min) {
                Some(NoticeSeverity::Cleared) => {
                    return Err(format!(
                        "{prefix}.min_severity: \"cleared\" is not a threshold (a clear goes \
                         wherever the alarm it ends went); use one of {}",
                        severity_names()
                    ))
                }
                Some(s) => s,
                None => {
                    return Err(format!(
                        "{prefix}.min_severity: unknown severity \"{min}\" (use one of {})",
                        severity_names()
                    ))
                }
            };
        }
        if let Some(list) = &r.include {
            f.include = kind_set(&format!("{prefix}.include"), list)?;
        }
        if let Some(list) = &r.exclude {
            f.exclude = kind_set(&format!("{prefix}.exclude"), list)?;
        }
        if let Some(both) = f.include.intersection(&f.exclude).next() {
            return Err(format!(
                "{prefix}: \"{both}\" is both included and excluded (remember a key you set \
                 replaces the default list)"
            ));
        }
    }
    Ok(routing)
}

fn kind_set(key: &str, list: &[String]) -> Result<BTreeSet<String>, String> {
    list.iter()
        .map(|k| known_kind(key, k).map(|e| e.id.to_string()))
        .collect()
}

fn known_kind(key: &str, kind: &str) -> Result<&'static EventKind, String> {
    if kind == UNKNOWN.id {
        return Ok(&UNKNOWN);
    }
    find(kind).ok_or_else(|| {
        let hint = EVENTS
            .iter()
            .map(|e| (distance(kind, e.id), e.id))
            .min()
            .filter(|(d, _)| *d <= 3)
            .map(|(_, id)| format!(" (did you mean \"{id}\"?)"))
            .unwrap_or_default();
        format!(
            "{key}: unknown event kind \"{kind}\"{hint}; the kinds are listed in docs/events.md"
        )
    })
}

fn severity_names() -> String {
    SEVERITIES
        .iter()
        .filter(|s| **s != NoticeSeverity::Cleared)
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
#[path = "catalogue_tests.rs"]
mod tests;
