//! The pure core: `step(&mut Node, Event, now) -> Vec<Action>`.
//!
//! No I/O, no clock, no randomness. Every decision the pair makes is made
//! here, so it can be replayed and simulated (`ha::sim`). The rules and the
//! places where we chose between readings of the vendor guide are written up
//! in `docs/states.md`.

use super::action::{Action, JournalEntry, PeerTarget, Persisted, Reply, Severity, StatusView};
use super::event::{Beacon, CopyKind, Event, Millis};
use super::ops::Op;
use super::state::{
    ConfigMode, Duty, FailoverType, HaState, HealthSummary, Level, Registration, Role,
};
use HaState::*;

/// Detection and recovery timing, all in milliseconds except `data_gap_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub interval: Millis,
    pub missed: u32,
    pub grace: Millis,
    pub probe_timeout: Millis,
    /// A primary out of sync at least this long needs a full copy first.
    pub data_gap_secs: u64,
    pub copy_retry: Millis,
}

impl Timers {
    /// Time without a heartbeat after which the peer counts as silent.
    pub fn silent_after(&self) -> Millis {
        self.interval.saturating_mul(u64::from(self.missed))
    }
}

/// This server's fixed identity and timing (from the validated config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub hm_port: u16,
    pub hb_port: u16,
    pub timers: Timers,
}

/// How this server currently sees its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Heartbeats are arriving.
    Up,
    /// No heartbeat since `since` (or since start); grace runs until the probe.
    Silent { since: Millis },
    /// Heartbeats are missing but the peer's Health Monitor answers.
    PathBroken,
    /// Heartbeats are missing and the probe failed: the peer is lost.
    Lost,
}

/// How often an "in sync" time stamp is recorded.
const STAMP_EVERY: Millis = 60_000;

/// One server's whole HA state. Only `step` changes it.
#[derive(Debug, Clone)]
pub struct Node {
    pub(super) cfg: NodeConfig,
    pub(super) state: HaState,
    /// The state to return to when Uncertain clears.
    pub(super) prior: Option<HaState>,
    pub(super) reg: Option<Registration>,
    /// False while a registration is being made (nothing persisted yet).
    pub(super) reg_committed: bool,
    /// The secondary's side of a registration in progress.
    pub(super) joining: bool,
    /// Last duty requested, and last duty the executors confirmed.
    pub(super) duty: Duty,
    pub(super) duty_applied: Option<Duty>,
    pub(super) health: HealthSummary,
    pub(super) link: Link,
    pub(super) heard_at: Millis,
    pub(super) peer: Option<Beacon>,
    pub(super) probing: bool,
    /// The one probe sent at start-up is outstanding.
    pub(super) boot_probe: bool,
    pub(super) next_probe_at: Millis,
    pub(super) next_hb_at: Millis,
    pub(super) next_stamp_at: Millis,
    /// Set at start while the start-up decision waits for the peer: the
    /// state this server was in before it stopped.
    pub(super) boot_from: Option<HaState>,
    /// The secondary has seen an active, healthy primary since it started;
    /// only then may it fail over on its own.
    pub(super) synced: bool,
    pub(super) data_gap: bool,
    pub(super) copying: bool,
    pub(super) copy_retry_at: Option<Millis>,
    pub(super) op: Option<Op>,
    pub(super) next_call: u64,
    pub(super) blocked: Option<String>,
    pub(super) shutting_down: bool,
    /// Once-per-episode notes, so a condition is journaled once.
    pub(super) noted: Noted,
    pub(super) last_persisted: Option<Persisted>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Noted {
    pub withheld: bool,
    pub foreign_peer: bool,
}

impl Node {
    /// A server as it comes up: `restored` is what it persisted last time.
    pub fn new(cfg: NodeConfig, restored: Option<Persisted>) -> Node {
        let (reg, state, prior) = match restored {
            Some(p) => (p.registration, p.state, p.prior),
            None => (None, StandAlone, None),
        };
        Node {
            cfg,
            state: if reg.is_some() { state } else { StandAlone },
            prior,
            reg_committed: reg.is_some(),
            reg,
            joining: false,
            duty: Duty::Halted,
            duty_applied: Some(Duty::Halted),
            health: HealthSummary::default(),
            link: Link::Silent { since: 0 },
            heard_at: 0,
            peer: None,
            probing: false,
            boot_probe: false,
            next_probe_at: 0,
            next_hb_at: 0,
            next_stamp_at: 0,
            boot_from: None,
            synced: false,
            data_gap: false,
            copying: false,
            copy_retry_at: None,
            op: None,
            next_call: 1,
            blocked: None,
            shutting_down: false,
            noted: Noted::default(),
            last_persisted: None,
        }
    }

    pub fn state(&self) -> HaState {
        self.state
    }
    pub fn role(&self) -> Role {
        self.cfg.role
    }
    pub fn duty(&self) -> Duty {
        self.duty
    }
    pub fn registration(&self) -> Option<&Registration> {
        self.reg.as_ref().filter(|_| self.reg_committed)
    }
    pub fn link(&self) -> Link {
        self.link
    }

    /// The pair-wide configuration mode as this server sees it.
    pub fn mode(&self) -> ConfigMode {
        match self.state {
            StandAlone => ConfigMode::NotConfigured,
            HaInitializing => ConfigMode::Initializing,
            PrimaryAlone | SecondaryAlone => ConfigMode::Alone,
            _ if self.link == Link::Up => ConfigMode::Enabled,
            _ => ConfigMode::Alone,
        }
    }

    /// What this server announces in its heartbeats.
    pub fn beacon(&self) -> Beacon {
        Beacon {
            name: self.cfg.name.clone(),
            role: self.cfg.role,
            state: self.state,
            active: self.duty == Duty::Active,
            registered: self.reg.as_ref().map(|r| (r.id, r.failover_type)),
            shutting_down: self.shutting_down,
            health: self.health,
            hm_port: self.cfg.hm_port,
        }
    }

    pub fn status(&self) -> StatusView {
        let peer = self.reg.as_ref().map(|r| r.member(self.cfg.role.other()));
        StatusView {
            name: self.cfg.name.clone(),
            role: self.cfg.role,
            state: self.state,
            mode: self.mode(),
            duty: self.duty,
            failover_type: self.reg.as_ref().map(|r| r.failover_type),
            peer_name: peer.map(|m| m.name.clone()),
            peer_address: peer.map(|m| m.address.clone()),
            peer_state: self.peer.as_ref().map(|b| b.state),
            peer_reachable: self.link == Link::Up,
            health: self.health,
            peer_health: self.peer.as_ref().map(|b| b.health),
            data_gap: self.data_gap,
            registration: self.registration().cloned(),
            blocked: self.blocked.clone(),
        }
    }

    /// When the shell must deliver the next `Tick`.
    pub fn next_deadline(&self) -> Option<Millis> {
        let mut d: Option<Millis> = None;
        let mut at = |t: Millis| d = Some(d.map_or(t, |x| x.min(t)));
        if self.sends_heartbeats() {
            at(self.next_hb_at);
            if !self.probing {
                let t = &self.cfg.timers;
                match self.link {
                    Link::Up => at(self.heard_at.saturating_add(t.silent_after())),
                    Link::Silent { since } => at(since.saturating_add(t.grace)),
                    Link::PathBroken | Link::Lost => at(self.next_probe_at),
                }
            }
        }
        if in_sync(self.state) {
            at(self.next_stamp_at);
        }
        if let Some(t) = self.copy_retry_at {
            at(t);
        }
        d
    }

    pub(super) fn sends_heartbeats(&self) -> bool {
        self.reg.is_some()
            && self.blocked.is_none()
            && self.state != StandAlone
            && !self.shutting_down
    }

    pub(super) fn peer_target(&self) -> Option<PeerTarget> {
        self.reg.as_ref().map(|r| {
            let m = r.member(self.cfg.role.other());
            PeerTarget {
                address: m.address.clone(),
                hm_port: m.hm_port,
            }
        })
    }

    pub(super) fn peer_label(&self) -> String {
        match &self.reg {
            Some(r) => {
                let m = r.member(self.cfg.role.other());
                format!("{}({})", m.name, m.address)
            }
            None => "peer".to_string(),
        }
    }

    fn persisted(&self) -> Persisted {
        let committed = self.reg_committed && self.reg.is_some();
        Persisted {
            registration: self.reg.clone().filter(|_| committed),
            // A registration in progress is not persisted: a restart during it
            // comes back Stand Alone, as a failed registration does.
            state: if committed { self.state } else { StandAlone },
            prior: self.prior.filter(|_| committed),
        }
    }
}

/// States in which this server's data is current (stamped for the data-gap
/// rule).
fn in_sync(s: HaState) -> bool {
    matches!(
        s,
        PrimaryActive
            | PrimaryLostSecondary
            | PrimaryUncertain
            | PrimarySyncing
            | PrimaryFailback
            | SecondarySyncing
            | SecondaryActive
            | SecondaryFailback
            | SecondaryUncertain
    )
}

/// The duty a state implies; `None` keeps the current one.
fn duty_for(s: HaState) -> Option<Duty> {
    Some(match s {
        StandAlone => Duty::Standalone,
        PrimaryActive | PrimaryLostSecondary | SecondaryActive | SecondaryFailover => Duty::Active,
        PrimaryAlone | PrimaryFailover => Duty::Halted,
        PrimaryDatabaseCopyFailed
        | PrimaryFailback
        | PrimaryPreparingForFailback
        | PrimarySyncing
        | SecondaryAlone
        | SecondarySyncing
        | SecondaryLostPrimary
        | SecondaryPostFailback => Duty::Standby,
        HaInitializing | PrimaryUncertain | SecondaryFailback | SecondaryUncertain => return None,
    })
}

/// Secondary states in which the secondary serves (or is taking over).
fn secondary_serving(b: &Beacon) -> bool {
    b.active
        || matches!(
            b.state,
            SecondaryActive | SecondaryFailover | SecondaryFailback
        )
}

/// A state from which the secondary's data is the newer copy: the secondary
/// had the active role when it stopped.
fn secondary_was_active(s: HaState, prior: Option<HaState>) -> bool {
    matches!(
        s,
        SecondaryActive | SecondaryFailover | SecondaryFailback | SecondaryPostFailback
    ) || (s == SecondaryUncertain && prior == Some(SecondaryActive))
}

/// Primary states that mean "the secondary held the active role".
fn primary_was_standby(s: HaState) -> bool {
    matches!(
        s,
        PrimarySyncing | PrimaryPreparingForFailback | PrimaryDatabaseCopyFailed | PrimaryFailback
    )
}

/// Advance `node` by one event at monotonic time `now`.
pub fn step(node: &mut Node, event: Event, now: Millis) -> Vec<Action> {
    let before = node.state;
    let mut s = Step {
        n: node,
        now,
        out: Vec::new(),
    };
    s.handle(event);
    s.finish(before);
    s.out
}

/// One step in progress: the node, the time, and the actions decided so far.
pub(super) struct Step<'a> {
    pub n: &'a mut Node,
    pub now: Millis,
    pub out: Vec<Action>,
}

impl Step<'_> {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Start { since_in_sync_secs } => self.on_start(since_in_sync_secs),
            Event::Tick => self.on_tick(),
            Event::Heartbeat { from, beacon } => self.on_heartbeat(&from, beacon),
            Event::ProbeDone { ok, detail } => self.on_probe(ok, &detail),
            Event::Command { token, command } => self.on_command(token, command),
            Event::PeerRequest { token, request } => self.on_peer_request(token, request),
            Event::PeerReply { id, result } => self.on_peer_reply(id, result),
            Event::DutyApplied { duty, result } => self.on_duty_applied(duty, result),
            Event::CopyDone { kind, result } => self.on_copy_done(kind, result),
            Event::Health { health } => self.on_health(health),
            Event::Observation {
                kind,
                severity,
                text,
            } => self.journal(&kind, severity, text),
            Event::Shutdown => self.on_shutdown(),
        }
    }

    fn finish(&mut self, before: HaState) {
        if self.n.state != before && self.n.sends_heartbeats() && !self.n.shutting_down {
            // Tell the peer at once; do not wait for the next interval.
            self.send_heartbeat();
        }
        let p = self.n.persisted();
        if self.n.last_persisted.as_ref() != Some(&p) {
            self.n.last_persisted = Some(p.clone());
            self.out.push(Action::Persist(p));
        }
    }

    // ----- helpers used by every handler -------------------------------------

    pub fn journal(&mut self, kind: &str, severity: Severity, text: impl Into<String>) {
        self.out.push(Action::Journal(JournalEntry {
            kind: kind.to_string(),
            severity,
            state: self.n.state,
            text: text.into(),
        }));
    }

    /// Move to `to`, journal why, and apply the duty the state implies.
    pub fn enter(&mut self, to: HaState, why: &str) {
        if to == self.n.state {
            return;
        }
        let from = self.n.state;
        self.n.state = to;
        self.n.noted.withheld = false;
        if !matches!(to, PrimaryUncertain | SecondaryUncertain) {
            self.n.prior = None;
        }
        self.journal(
            "state_changed",
            Severity::Info,
            format!("{from} -> {to}: {why}"),
        );
        if let Some(d) = duty_for(to) {
            self.set_duty(d);
        }
    }

    pub fn set_duty(&mut self, d: Duty) {
        if d != self.n.duty {
            self.n.duty = d;
            self.n.duty_applied = None;
            self.out.push(Action::SetDuty(d));
        } else if self.n.duty_applied == Some(d) {
            self.duty_settled();
        }
    }

    pub fn call(&mut self, request: super::event::PeerRequest) -> u64 {
        self.call_with_key(request, None)
    }

    pub fn call_with_key(
        &mut self,
        request: super::event::PeerRequest,
        key: Option<super::event::Secret>,
    ) -> u64 {
        let id = self.n.next_call;
        self.n.next_call += 1;
        if let Some(target) = self.n.peer_target() {
            self.out.push(Action::PeerCall {
                id,
                target,
                request,
                key,
            });
        }
        id
    }

    pub fn reply(&mut self, token: super::event::Token, reply: Reply) {
        self.out.push(Action::Reply { token, reply });
    }

    pub fn start_copy(&mut self, kind: CopyKind) {
        self.n.copying = true;
        self.out.push(Action::StartCopy(kind));
    }

    fn send_heartbeat(&mut self) {
        if let Some(r) = &self.n.reg {
            let m = r.member(self.n.cfg.role.other());
            self.out.push(Action::SendHeartbeat {
                address: m.address.clone(),
                port: m.hb_port,
                beacon: self.n.beacon(),
            });
        }
        self.n.next_hb_at = self.now.saturating_add(self.n.cfg.timers.interval);
    }

    fn probe(&mut self) {
        if let Some(target) = self.n.peer_target() {
            self.n.probing = true;
            self.out.push(Action::Probe { target });
        }
    }

    /// Start watching for the peer afresh (start-up, new registration).
    pub fn reset_link(&mut self) {
        // Silence becomes official only after a full missed-heartbeat window.
        let since = self.now.saturating_add(self.n.cfg.timers.silent_after());
        self.n.link = Link::Silent { since };
        self.n.peer = None;
        self.n.next_hb_at = self.now;
    }

    // ----- start, timers, liveness --------------------------------------------

    fn on_start(&mut self, since_in_sync_secs: Option<u64>) {
        let Some(reg) = self.n.reg.clone() else {
            self.n.state = StandAlone;
            self.journal(
                "agent_started",
                Severity::Info,
                "hamon started: HA is not configured",
            );
            self.set_duty(Duty::Standalone);
            return;
        };
        let restored = self.n.state;
        let me = reg.member(self.n.cfg.role);
        if me.name != self.n.cfg.name || me.address != self.n.cfg.address {
            let msg = format!(
                "this server is registered as {}({}) but is now configured as {}({}); \
                 HA stays halted until `hamon ha remove` is run and the pair registered again",
                me.name, me.address, self.n.cfg.name, self.n.cfg.address
            );
            self.n.blocked = Some(msg.clone());
            self.journal("identity_changed", Severity::Error, msg);
            let alone = match self.n.cfg.role {
                Role::Primary => PrimaryAlone,
                Role::Secondary => SecondaryAlone,
            };
            self.n.state = alone;
            self.set_duty(Duty::Halted);
            return;
        }
        let gap = since_in_sync_secs.is_some_and(|s| s >= self.n.cfg.timers.data_gap_secs);
        self.n.data_gap = self.n.cfg.role == Role::Primary && gap;
        // An Uncertain state stands for the state under it (entering HA
        // Initializing below clears `prior`).
        let under = match restored {
            PrimaryUncertain | SecondaryUncertain => self.n.prior.unwrap_or(restored),
            s => s,
        };
        self.n.boot_from = Some(under);
        self.n.state = StandAlone;
        self.journal(
            "agent_started",
            Severity::Info,
            format!("hamon started; was {restored} when it stopped"),
        );
        self.enter(HaInitializing, "start-up: looking for the peer");
        if self.n.data_gap {
            self.journal(
                "data_gap",
                Severity::Warning,
                "this primary was out of sync for longer than the data-gap limit: \
                 a full copy is needed before failback",
            );
        }
        self.reset_link();
        self.probe();
        self.n.boot_probe = self.n.probing;
    }

    fn on_tick(&mut self) {
        let now = self.now;
        if self.n.sends_heartbeats() && now >= self.n.next_hb_at {
            self.send_heartbeat();
        }
        if self.n.sends_heartbeats() && !self.n.probing {
            let t = self.n.cfg.timers;
            let silent_at = self.n.heard_at.saturating_add(t.silent_after());
            if self.n.link == Link::Up && now >= silent_at {
                self.n.link = Link::Silent { since: silent_at };
                self.journal(
                    "heartbeats_missed",
                    Severity::Warning,
                    format!(
                        "{} consecutive heartbeats from {} missed; probing it in {} ms",
                        t.missed,
                        self.n.peer_label(),
                        t.grace
                    ),
                );
            }
            // Checked in sequence: silence that began long enough ago (or a
            // zero grace) probes in this same tick.
            let due = match self.n.link {
                Link::Up => false,
                Link::Silent { since } => now >= since.saturating_add(t.grace),
                Link::PathBroken | Link::Lost => now >= self.n.next_probe_at,
            };
            if due {
                self.probe();
            }
        }
        if in_sync(self.n.state) && now >= self.n.next_stamp_at {
            self.n.next_stamp_at = now.saturating_add(STAMP_EVERY);
            self.out.push(Action::StampInSync);
        }
        if self.n.copy_retry_at.is_some_and(|t| now >= t) {
            self.n.copy_retry_at = None;
            if self.n.state == PrimaryDatabaseCopyFailed && !self.n.copying {
                self.journal("copy_retry", Severity::Info, "retrying the data-gap copy");
                self.start_copy(CopyKind::DataGap);
            }
        }
    }

    fn on_probe(&mut self, ok: bool, detail: &str) {
        self.n.probing = false;
        let at_start = std::mem::take(&mut self.n.boot_probe);
        if self.n.link == Link::Up || !self.n.sends_heartbeats() {
            return;
        }
        let t = self.n.cfg.timers;
        if ok {
            self.n.next_probe_at = self.now.saturating_add(t.grace.max(t.silent_after()));
            if at_start {
                // The peer is there: wait for its first heartbeat. Later
                // probes that answer without heartbeats mean a broken path.
                return;
            }
            if self.n.link != Link::PathBroken {
                self.n.link = Link::PathBroken;
                self.journal(
                    "heartbeat_path_broken",
                    Severity::Error,
                    format!(
                        "no heartbeats from {} but its Health Monitor answers: the heartbeat \
                         path is broken (check UDP port {} and the authentication key); \
                         no failover",
                        self.n.peer_label(),
                        self.n.cfg.hb_port
                    ),
                );
            }
            return;
        }
        self.n.next_probe_at = self.now.saturating_add(t.silent_after().max(t.interval));
        if at_start && self.n.state == HaInitializing {
            // Start-up probe failed: the peer is not there (yet).
            self.boot_alone(detail);
            return;
        }
        if self.n.link != Link::Lost {
            self.n.link = Link::Lost;
            let why = format!("{} did not answer the probe: {detail}", self.n.peer_label());
            self.peer_lost(&why);
        }
    }

    /// Start-up found no peer.
    fn boot_alone(&mut self, detail: &str) {
        let peer = self.n.peer_label();
        match self.n.cfg.role {
            Role::Primary => {
                self.enter(
                    PrimaryAlone,
                    &format!("{peer} is unreachable at start-up ({detail})"),
                );
                self.journal(
                    "primary_alone",
                    Severity::Error,
                    "the primary cannot reach its secondary: only the Health Monitor runs and \
                     this server will not become active on its own. When the secondary returns \
                     the pair resumes; to run this server on its own, run `hamon ha remove`.",
                );
            }
            Role::Secondary => {
                let was = self.n.boot_from.unwrap_or(StandAlone);
                if secondary_was_active(was, self.n.prior) {
                    self.n.boot_from = None;
                    self.enter(
                        SecondaryActive,
                        &format!("this secondary was active and {peer} is unreachable"),
                    );
                } else {
                    self.enter(
                        SecondaryAlone,
                        &format!("{peer} is unreachable at start-up ({detail})"),
                    );
                }
            }
        }
    }

    fn on_heartbeat(&mut self, from: &str, b: Beacon) {
        let Some(reg) = self.n.reg.clone() else {
            return;
        };
        if self.n.blocked.is_some() || self.n.shutting_down {
            return;
        }
        let peer = reg.member(self.n.cfg.role.other());
        if from != peer.address || b.role != self.n.cfg.role.other() {
            return;
        }
        if b.registered.map(|(id, _)| id) != Some(reg.id) {
            // Alive, but not our partner (not configured, or another pairing):
            // it does not count as heard.
            if !self.n.noted.foreign_peer {
                self.n.noted.foreign_peer = true;
                self.journal(
                    "peer_not_paired",
                    Severity::Error,
                    format!(
                        "{} is {} and not part of this registration; run `hamon ha remove` and \
                         register again",
                        self.n.peer_label(),
                        b.state
                    ),
                );
            }
            return;
        }
        self.n.noted.foreign_peer = false;
        let was = self.n.link;
        self.n.link = Link::Up;
        self.n.heard_at = self.now;
        self.n.peer = Some(b.clone());
        if matches!(was, Link::Lost | Link::PathBroken) {
            self.journal(
                "peer_found",
                Severity::Info,
                format!(
                    "heartbeats from {} resumed ({})",
                    self.n.peer_label(),
                    b.state
                ),
            );
        }
        if b.shutting_down {
            self.n.link = Link::Lost;
            self.n.next_probe_at = self.now.saturating_add(self.n.cfg.timers.interval);
            let why = format!("{} stopped (administrative shutdown)", self.n.peer_label());
            self.peer_lost(&why);
            return;
        }
        match self.n.cfg.role {
            Role::Primary => self.reconcile_primary(&b),
            Role::Secondary => self.reconcile_secondary(&b),
        }
    }

    // ----- the pair rules ---------------------------------------------------

    /// The primary's reaction to the secondary's latest heartbeat.
    fn reconcile_primary(&mut self, b: &Beacon) {
        let serving = secondary_serving(b);
        if let Some(from) = self.n.boot_from {
            if !matches!(self.n.state, HaInitializing | PrimaryAlone) {
                return;
            }
            let booting = b.state == HaInitializing;
            let defer = primary_was_standby(from) || (booting && from == PrimaryFailover);
            if serving || (defer && b.state.role() == Some(Role::Secondary)) || (booting && defer) {
                self.n.boot_from = None;
                self.enter(
                    PrimaryPreparingForFailback,
                    "the secondary holds (or held last) the active role",
                );
            } else if booting || b.state.role() == Some(Role::Secondary) {
                self.n.boot_from = None;
                self.enter(PrimaryActive, "the secondary is standby");
            }
            return;
        }
        match self.n.state {
            PrimaryActive | PrimaryLostSecondary | PrimaryUncertain if serving => {
                self.split_brain()
            }
            PrimaryLostSecondary => self.enter(PrimaryActive, "the secondary is back"),
            PrimaryUncertain if self.n.prior == Some(PrimaryLostSecondary) => {
                self.n.prior = Some(PrimaryActive)
            }
            PrimaryFailback if b.state == HaInitializing => self.enter(
                PrimarySyncing,
                "failback abandoned: the secondary restarted",
            ),
            _ => {}
        }
    }

    fn split_brain(&mut self) {
        if self.n.state == PrimaryUncertain {
            self.enter(
                PrimaryFailover,
                "the secondary took over from this uncertain primary",
            );
            return;
        }
        self.enter(PrimaryFailover, "split brain: the secondary is active too");
        self.journal(
            "split_brain",
            Severity::Error,
            "Both servers were active. The primary has stood down (Primary Failover). \
             To keep the primary's data: run `hamon ha remove` on the primary and register \
             the secondary again. To keep the secondary's data: make sure \
             users can work on the secondary, then run `hamon ha failback` on the secondary.",
        );
    }

    /// The secondary's reaction to the primary's latest heartbeat.
    fn reconcile_secondary(&mut self, b: &Beacon) {
        let up = matches!(b.state, PrimaryActive | PrimaryLostSecondary);
        let failed = b.state.is_failed();
        let standby = matches!(
            b.state,
            PrimaryPreparingForFailback | PrimarySyncing | PrimaryDatabaseCopyFailed
        );
        let failing_back = matches!(self.n.state, SecondaryFailback | SecondaryPostFailback);
        if b.state == PrimaryFailback && !failing_back && self.n.op.is_none() {
            // The primary waits for a failback this secondary no longer runs.
            self.call(super::event::PeerRequest::FailbackAbort {
                id: self.n.reg.as_ref().map_or(0, |r| r.id),
                reason: "the secondary is not failing back".into(),
            });
        }
        if let Some(from) = self.n.boot_from {
            if !matches!(
                self.n.state,
                HaInitializing | SecondaryAlone | SecondaryLostPrimary
            ) {
                return;
            }
            if up {
                self.n.boot_from = None;
                self.n.synced = true;
                self.enter(SecondarySyncing, "the primary is active");
            } else if failed || standby {
                self.n.boot_from = None;
                if secondary_was_active(from, self.n.prior) {
                    self.enter(SecondaryActive, "this secondary held the active role");
                } else {
                    self.enter(SecondaryLostPrimary, &format!("the primary is {}", b.state));
                    self.maybe_auto_failover();
                }
            }
            return;
        }
        match self.n.state {
            SecondarySyncing if up => self.n.synced = true,
            SecondarySyncing if failed || standby => {
                self.enter(
                    SecondaryLostPrimary,
                    &format!("the primary reports {}", b.state),
                );
                self.maybe_auto_failover();
            }
            SecondaryUncertain if (failed || standby) && self.n.prior == Some(SecondarySyncing) => {
                self.enter(
                    SecondaryLostPrimary,
                    &format!("the primary reports {}", b.state),
                );
            }
            SecondaryLostPrimary if up => {
                self.n.synced = true;
                self.enter(SecondarySyncing, "the primary is active again");
            }
            SecondaryLostPrimary => self.maybe_auto_failover(),
            _ => {}
        }
    }

    /// Heartbeats stopped and the probe failed (or the peer shut down).
    fn peer_lost(&mut self, why: &str) {
        self.journal("peer_lost", Severity::Error, why.to_string());
        match self.n.state {
            HaInitializing if self.n.boot_from.is_some() => self.boot_alone(why),
            HaInitializing if self.n.joining => {
                self.n.joining = false;
                self.n.reg = None;
                self.enter(StandAlone, &format!("registration failed: {why}"));
            }
            PrimaryActive => self.enter(PrimaryLostSecondary, why),
            PrimaryUncertain => self.n.prior = Some(PrimaryLostSecondary),
            PrimaryFailback => self.enter(PrimarySyncing, &format!("failback abandoned: {why}")),
            SecondarySyncing | SecondaryAlone => {
                self.enter(SecondaryLostPrimary, why);
                self.maybe_auto_failover();
            }
            SecondaryUncertain if self.n.prior == Some(SecondarySyncing) => {
                self.enter(SecondaryLostPrimary, why);
                self.maybe_auto_failover();
            }
            _ => {}
        }
    }

    /// With automatic failover, a secondary that lost its primary takes over,
    /// unless it has not been in sync since it started or is itself unhealthy.
    pub fn maybe_auto_failover(&mut self) {
        let n = &self.n;
        if n.state != SecondaryLostPrimary
            || n.reg.as_ref().map(|r| r.failover_type) != Some(FailoverType::Automatic)
            || n.blocked.is_some()
        {
            return;
        }
        let unhealthy = n.health.database == Level::Failed
            || n.health.processes == Level::Failed
            || n.health.nic == Level::Failed;
        let withheld = if !n.synced {
            Some("this secondary has not been in sync with an active primary since it started")
        } else if unhealthy {
            Some("this secondary is unhealthy itself")
        } else {
            None
        };
        match withheld {
            Some(why) => {
                if !self.n.noted.withheld {
                    self.n.noted.withheld = true;
                    self.journal(
                        "failover_withheld",
                        Severity::Warning,
                        format!(
                            "automatic failover withheld: {why}; run `hamon ha failover` to \
                             take over"
                        ),
                    );
                }
            }
            None => {
                self.n.boot_from = None;
                self.enter(SecondaryFailover, "automatic failover");
            }
        }
    }

    // ----- executor results -----------------------------------------------------

    fn on_duty_applied(&mut self, duty: Duty, result: Result<(), String>) {
        if duty != self.n.duty {
            return; // superseded by a newer duty
        }
        if let Err(e) = result {
            self.journal(
                "duty_failed",
                Severity::Error,
                format!("could not apply duty {duty:?}: {e}"),
            );
            if duty == Duty::Active && !self.n.shutting_down {
                let why = format!("could not take the active role: {e}");
                match self.n.cfg.role {
                    Role::Primary => self.enter(PrimaryFailover, &why),
                    Role::Secondary => {
                        self.enter(SecondaryLostPrimary, &why);
                        self.fail_op_failover(why);
                    }
                }
                return;
            }
        }
        self.n.duty_applied = Some(duty);
        self.duty_settled();
    }

    /// The requested duty is in force: continue whatever waited for it.
    fn duty_settled(&mut self) {
        if self.n.shutting_down {
            if self.n.duty == Duty::Halted {
                self.out.push(Action::Exit);
            }
            return;
        }
        match self.n.state {
            SecondaryFailover if self.n.duty == Duty::Active => {
                let from = self.n.reg.as_ref().map(|r| r.primary.name.clone());
                self.enter(SecondaryActive, "failover complete");
                let msg = format!(
                    "Completed failover from {} to {}",
                    from.unwrap_or_default(),
                    self.n.cfg.name
                );
                self.journal("failover_complete", Severity::Info, msg.clone());
                self.finish_op_failover(msg);
            }
            SecondaryPostFailback if self.n.duty == Duty::Standby => self.failback_commit(),
            PrimaryPreparingForFailback if self.n.duty == Duty::Standby && !self.n.copying => {
                if self.n.data_gap {
                    self.start_copy(CopyKind::DataGap);
                } else {
                    self.enter(PrimarySyncing, "ready for failback");
                }
            }
            _ => {}
        }
    }

    fn on_copy_done(&mut self, kind: CopyKind, result: Result<(), String>) {
        self.n.copying = false;
        match kind {
            CopyKind::Initial => self.initial_copy_done(result),
            CopyKind::Failback => self.failback_copy_done(result),
            CopyKind::DataGap => match result {
                Ok(()) => {
                    self.n.data_gap = false;
                    if matches!(
                        self.n.state,
                        PrimaryPreparingForFailback | PrimaryDatabaseCopyFailed
                    ) {
                        self.enter(PrimarySyncing, "data-gap copy complete");
                    }
                }
                Err(e) => {
                    if matches!(
                        self.n.state,
                        PrimaryPreparingForFailback | PrimaryDatabaseCopyFailed
                    ) {
                        self.enter(
                            PrimaryDatabaseCopyFailed,
                            &format!("data-gap copy failed: {e}; failback is blocked"),
                        );
                        self.n.copy_retry_at =
                            Some(self.now.saturating_add(self.n.cfg.timers.copy_retry));
                    }
                }
            },
        }
    }

    fn on_health(&mut self, h: HealthSummary) {
        let old = self.n.health;
        self.n.health = h;
        if h.database == Level::Failed && old.database != Level::Failed {
            self.journal(
                "database_unreachable",
                Severity::Error,
                "the database is unreachable",
            );
            match self.n.state {
                PrimaryActive | PrimaryLostSecondary => {
                    let prior = self.n.state;
                    self.enter(PrimaryUncertain, "processes cannot reach the database");
                    self.n.prior = Some(prior);
                }
                SecondarySyncing | SecondaryActive => {
                    let prior = self.n.state;
                    self.enter(SecondaryUncertain, "processes cannot reach the database");
                    self.n.prior = Some(prior);
                }
                _ => {}
            }
        } else if h.database != Level::Failed && old.database == Level::Failed {
            self.journal(
                "database_recovered",
                Severity::Info,
                "the database is reachable again",
            );
            if matches!(self.n.state, PrimaryUncertain | SecondaryUncertain) {
                let back = self.n.prior.take().unwrap_or(match self.n.cfg.role {
                    Role::Primary => PrimaryActive,
                    Role::Secondary => SecondarySyncing,
                });
                self.enter(back, "the database is reachable again");
            }
        }
        if h.nic == Level::Failed && old.nic != Level::Failed {
            if matches!(
                self.n.state,
                PrimaryActive | PrimaryLostSecondary | PrimaryUncertain
            ) {
                // Without its interface the primary cannot serve: stand down so
                // the secondary, if healthy, takes over and no split brain
                // follows when the link returns.
                self.enter(PrimaryFailover, "the HA network interface is down");
            } else {
                self.journal(
                    "nic_failed",
                    Severity::Error,
                    "the HA network interface is down",
                );
            }
        } else if h.nic != Level::Failed && old.nic == Level::Failed {
            self.journal(
                "nic_recovered",
                Severity::Info,
                "the HA network interface is back",
            );
        }
        if h.processes == Level::Failed && old.processes != Level::Failed {
            if matches!(
                self.n.state,
                PrimaryActive | PrimaryLostSecondary | PrimaryUncertain
            ) {
                self.enter(PrimaryFailover, "a critical service could not be restarted");
            } else {
                self.journal(
                    "service_failed",
                    Severity::Error,
                    "a critical service could not be restarted (this server is not the active \
                     primary: nothing moves)",
                );
            }
        }
        self.maybe_auto_failover();
    }

    fn on_shutdown(&mut self) {
        let paired = self.n.sends_heartbeats();
        self.n.shutting_down = true;
        self.journal("agent_stopping", Severity::Info, "hamon is stopping");
        if paired {
            // A farewell heartbeat: the peer treats it as a failure at once.
            if let Some(r) = &self.n.reg {
                let m = r.member(self.n.cfg.role.other());
                self.out.push(Action::SendHeartbeat {
                    address: m.address.clone(),
                    port: m.hb_port,
                    beacon: self.n.beacon(),
                });
            }
        }
        self.set_duty(Duty::Halted);
    }
}
