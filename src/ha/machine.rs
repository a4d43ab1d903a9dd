//! The pure core: `step(&mut Node, Event, now) -> Vec<Action>`.
//!
//! No I/O, no clock, no randomness. Every decision the pair makes is made
//! here, so it can be replayed and simulated (`ha::sim`). The rules and the
//! places where we chose between readings of the vendor guide are written up
//! in `docs/states.md`.

use super::action::{Action, JournalEntry, PeerTarget, Persisted, Reply, Severity, StatusView};
use super::event::{Beacon, CopyKind, Event, Millis};
use super::ops::Op;
use super::state::{ConfigMode, Duty, HaState, HealthSummary, Registration, Role};
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
    /// Time without a heartbeat after which the peer counts as silent, on a clean path
    /// (`Node::silent_after` stretches it on a lossy one).
    pub fn silent_after(&self) -> Millis {
        self.interval.saturating_mul(u64::from(self.missed))
    }

    /// The gap between the heartbeats that ask for an answer while the peer is
    /// suspected: about eight asks over the grace and the probe, never more often than
    /// the peer answers (`PROMPT_GAP`), never less often than the interval.
    pub fn ask_gap(&self) -> Millis {
        (self.grace.saturating_add(self.probe_timeout) / ASKS)
            .max(super::liveness::PROMPT_GAP)
            .min(self.interval)
            .max(1)
    }
}

/// How many heartbeats ask for an answer between silence and the verdict.
const ASKS: Millis = 8;

/// This server's fixed identity and timing (from the validated config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub hm_port: u16,
    pub hb_port: u16,
    /// This server's Health Monitor certificate fingerprint (`None` without TLS).
    pub fingerprint: Option<String>,
    pub timers: Timers,
    /// A witness is configured (`[witness]`): its reachability (`Event::Witness`) decides
    /// whether a secondary may take over and whether a cut-off primary fences itself.
    pub witness: bool,
    /// Whether a takeover first fences the peer (`[fencing]`), and what a failed fencing
    /// means.
    pub fence: FencePolicy,
    /// An arbiter is configured (`[arbiter]`): no active duty without its lease, and what
    /// a holder does when it cannot renew it in time.
    pub arbiter: Option<ArbiterLoss>,
}

/// `[arbiter] on_arbiter_loss`: what the active server does when it cannot renew the
/// lease in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArbiterLoss {
    /// Release the active duty before the lease can expire.
    Demote,
    /// Keep it (no one else can win the lease until it expires).
    Hold,
}

/// `[fencing]`: the peer is fenced (powered off through its BMC, say) before this server
/// takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FencePolicy {
    /// No fencing.
    #[default]
    Off,
    /// A failed fencing withholds the takeover (retried with backoff).
    Withhold,
    /// A failed fencing is journaled, and the takeover goes ahead.
    Proceed,
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
pub(super) const STAMP_EVERY: Millis = 60_000;

/// The first wait after a failed takeover; each further failure doubles it,
/// up to `TAKEOVER_BACKOFF_MAX`.
const TAKEOVER_BACKOFF: Millis = 1_000;
const TAKEOVER_BACKOFF_MAX: Millis = 60_000;

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
    /// The peer is known to have committed the registration too (its heartbeat named it,
    /// or it was restored from disk). Until then a secondary's commit may still be undone
    /// by the primary's abort: the commit's answer may have been lost.
    pub(super) reg_confirmed: bool,
    /// Commit calls a primary has sent for the registration in progress.
    pub(super) commit_tries: u32,
    /// Last duty requested, and last duty the executors confirmed.
    pub(super) duty: Duty,
    /// The duty the state asks for; `duty` is what may be held (`Step::gated`).
    pub(super) asked: Duty,
    /// The arbiter's lease as this server last heard of it (`arbiter.rs`).
    pub(super) lease: super::arbiter::Lease,
    /// The lease is wanted (the last `Action::Lease` said hold), under generation
    /// `lease_gen`.
    pub(super) lease_wanted: bool,
    pub(super) lease_gen: u64,
    /// The pair the arbiter thread was last told about.
    pub(super) lease_pair: Option<u64>,
    /// A takeover waits for the lease, for this reason.
    pub(super) lease_takeover: Option<String>,
    pub(super) duty_applied: Option<Duty>,
    pub(super) health: HealthSummary,
    /// The HA interface is down right now (`Event::HaLink`, not debounced).
    pub(super) ha_link_down: bool,
    /// The witness's last verdict (`None`: none yet, or no witness).
    pub(super) witness: Option<bool>,
    /// This primary released its active duty because it could reach neither its peer
    /// nor the witness (self-fencing); its state is left as it was.
    pub(super) fenced: bool,
    /// A probe was sent to decide whether the fence may be lifted.
    pub(super) fence_probe: bool,
    /// Probes in a row that the peer's Health Monitor answered while fenced.
    pub(super) fence_answers: u32,
    /// A fencing of the peer is under way, for a takeover with this reason.
    pub(super) fencing_peer: Option<String>,
    /// The peer was fenced (or fencing failed under `Proceed`) in this incident.
    pub(super) peer_fenced: bool,
    pub(super) link: Link,
    pub(super) heard_at: Millis,
    /// When the peer's last heartbeats arrived: how lossy the path has been lately.
    pub(super) history: super::liveness::History,
    pub(super) peer: Option<Beacon>,
    pub(super) probing: bool,
    /// The outstanding probe was sent before the HA link came back: ignore its verdict.
    pub(super) stale_probe: bool,
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
    /// Takeovers that failed in a row (the VIP or the database could not
    /// be made active), and when an automatic one may be tried again.
    pub(super) takeover_failures: u32,
    pub(super) takeover_retry_at: Option<Millis>,
    /// When a restarted peer was last answered early (`on_peer_booted`).
    pub(super) prompted_at: Option<Millis>,
    pub(super) op: Option<Op>,
    pub(super) next_call: u64,
    /// The outstanding call that tells the peer our new certificate, and when it may be
    /// sent again (see `Step::repin`).
    pub(super) identity_call: Option<u64>,
    pub(super) identity_retry_at: Millis,
    /// A settings change of ours the peer never confirmed (persisted), the outstanding
    /// call that resolves it, and when it is asked again (`ha::settings`).
    pub(super) settings_pending: Option<super::action::SettingsChange>,
    pub(super) settings_call: Option<u64>,
    pub(super) settings_retry_at: Millis,
    /// The last settings change the peer made here, so that a repeat is answered alike.
    pub(super) settings_applied: Option<super::settings::Applied>,
    /// Since when the peer's heartbeats show another failover type than ours.
    pub(super) differ_since: Option<Millis>,
    pub(super) blocked: Option<String>,
    /// Why the database standby is too far behind to be promoted on its own
    /// (`None`: within the configured bound, or no database driver).
    pub(super) lagging: Option<String>,
    /// This server's file-sync lag, for its heartbeats.
    pub(super) sync_lag: Option<super::event::SyncBeat>,
    pub(super) shutting_down: bool,
    /// Once-per-episode notes, so a condition is journaled once.
    pub(super) noted: Noted,
    pub(super) last_persisted: Option<Persisted>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Noted {
    pub withheld: bool,
    pub foreign_peer: bool,
    /// The peer was last said not to hear us (a one-way path).
    pub one_way: bool,
    /// The peer's failover type was said to differ from ours.
    pub settings_differ: bool,
}

impl Node {
    /// A server as it comes up: `restored` is what it persisted last time.
    pub fn new(cfg: NodeConfig, restored: Option<Persisted>) -> Node {
        let (reg, state, prior, settings_pending) = match restored {
            Some(p) => (p.registration, p.state, p.prior, p.settings_pending),
            None => (None, StandAlone, None, None),
        };
        let settings_pending = settings_pending.filter(|_| reg.is_some());
        Node {
            cfg,
            state: if reg.is_some() { state } else { StandAlone },
            prior,
            reg_committed: reg.is_some(),
            reg,
            joining: false,
            reg_confirmed: true,
            commit_tries: 0,
            duty: Duty::Halted,
            asked: Duty::Halted,
            lease: super::arbiter::Lease::Released,
            lease_wanted: false,
            lease_gen: 0,
            lease_pair: None,
            lease_takeover: None,
            duty_applied: Some(Duty::Halted),
            health: HealthSummary::default(),
            ha_link_down: false,
            witness: None,
            fenced: false,
            fence_probe: false,
            fence_answers: 0,
            fencing_peer: None,
            peer_fenced: false,
            link: Link::Silent { since: 0 },
            heard_at: 0,
            history: super::liveness::History::default(),
            peer: None,
            probing: false,
            stale_probe: false,
            boot_probe: false,
            next_probe_at: 0,
            next_hb_at: 0,
            next_stamp_at: 0,
            boot_from: None,
            synced: false,
            data_gap: false,
            copying: false,
            copy_retry_at: None,
            takeover_failures: 0,
            takeover_retry_at: None,
            prompted_at: None,
            op: None,
            next_call: 1,
            identity_call: None,
            identity_retry_at: 0,
            settings_pending,
            settings_call: None,
            settings_retry_at: 0,
            settings_applied: None,
            differ_since: None,
            blocked: None,
            shutting_down: false,
            noted: Noted::default(),
            lagging: None,
            sync_lag: None,
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
            asks: false,
            was_active: self
                .boot_from
                .is_some_and(|f| held_active(f, self.cfg.role, self.prior)),
            health: self.health,
            hm_port: self.cfg.hm_port,
            sync: self.sync_lag,
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
            peer_sync: self.peer.as_ref().and_then(|b| b.sync),
            data_gap: self.data_gap,
            registration: self.registration().cloned(),
            blocked: self.blocked.clone(),
            witness: self.witness.filter(|_| self.cfg.witness),
            fenced: self.fenced,
            fencing_peer: self.fencing_peer.is_some(),
            lease: self.cfg.arbiter.map(|_| self.lease),
            fencing: match self.cfg.fence {
                FencePolicy::Off => None,
                FencePolicy::Withhold => Some("withhold".into()),
                FencePolicy::Proceed => Some("proceed".into()),
            },
            arbiter: None,
            mail_unsent: None,
            version: None,
            peer_version: None,
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
                    Link::Up => {
                        at(self.heard_at.saturating_add(self.silent_after()));
                        // A primary that may have to fence looks at the plain silence.
                        if self.cfg.witness && self.witness == Some(false) && !self.fenced {
                            at(self.heard_at.saturating_add(t.silent_after()));
                        }
                    }
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
        if let Some(t) = self.takeover_retry_at {
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

    /// The peer's Health Monitor, as soon as a registration is under way.
    pub fn peer_target(&self) -> Option<PeerTarget> {
        self.reg.as_ref().map(|r| {
            let m = r.member(self.cfg.role.other());
            PeerTarget {
                address: m.address.clone(),
                hm_port: m.hm_port,
                pin: m.tls_fingerprint.clone(),
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
            settings_pending: self.settings_pending.clone().filter(|_| committed),
        }
    }
}

/// States in which this server's data is current (stamped for the data-gap
/// rule).
pub(super) fn in_sync(s: HaState) -> bool {
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

/// The duty a state implies for a server of `role`; `None` keeps the
/// current one.
pub(super) fn duty_for(s: HaState, role: Role) -> Option<Duty> {
    Some(match s {
        // An unpaired primary serves on its own. A server installed as the
        // secondary is the spare: until it is registered it runs only its
        // `run_on = "both"` services, holds no VIP and never promotes its
        // database (docs/states.md).
        StandAlone if role == Role::Secondary => Duty::Standby,
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
pub(super) fn secondary_serving(b: &Beacon) -> bool {
    b.active
        || matches!(
            b.state,
            SecondaryActive | SecondaryFailover | SecondaryFailback
        )
}

/// A state from which the secondary's data is the newer copy: the secondary
/// had the active role when it stopped.
pub(super) fn secondary_was_active(s: HaState, prior: Option<HaState>) -> bool {
    matches!(
        s,
        SecondaryActive | SecondaryFailover | SecondaryFailback | SecondaryPostFailback
    ) || (s == SecondaryUncertain && prior == Some(SecondaryActive))
}

/// A state (saved when the server stopped) in which a server of `role` held the active
/// role.
pub(super) fn held_active(s: HaState, role: Role, prior: Option<HaState>) -> bool {
    match role {
        Role::Secondary => secondary_was_active(s, prior),
        Role::Primary => {
            matches!(s, PrimaryActive | PrimaryLostSecondary)
                || (s == PrimaryUncertain && prior != Some(PrimaryFailover))
        }
    }
}

/// Primary states that mean "the secondary held the active role".
pub(super) fn primary_was_standby(s: HaState) -> bool {
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
            Event::Heartbeat { from, beacon, seq } => self.on_heartbeat(&from, beacon, seq),
            Event::PeerBooted { from } => self.on_peer_booted(&from),
            Event::PeerHearsUs { hears } => self.on_peer_hears_us(hears),
            Event::ProbeDone { ok, detail } => self.on_probe(ok, &detail),
            Event::Command { token, command } => self.on_command(token, command),
            Event::PeerRequest { token, request } => self.on_peer_request(token, request),
            Event::PeerReply { id, result } => self.on_peer_reply(id, result),
            Event::DutyApplied { duty, result } => self.on_duty_applied(duty, result),
            Event::CopyDone { kind, result } => self.on_copy_done(kind, result),
            Event::Health { health } => self.on_health(health),
            Event::HaLink { up } => {
                let was_down = std::mem::replace(&mut self.n.ha_link_down, !up);
                if was_down && up && self.n.link != Link::Up && self.n.sends_heartbeats() {
                    // What was seen while cut off says nothing about the peer: watch it
                    // afresh (a full silence and a probe) before any takeover. A probe
                    // still out was sent while cut off: its verdict does not count.
                    self.n.history.clear();
                    let since = self.now.saturating_add(self.n.silent_after());
                    self.n.link = Link::Silent { since };
                    self.n.heard_at = self.now;
                    self.n.stale_probe = self.n.probing;
                }
            }
            Event::Witness { reachable } => self.on_witness(reachable),
            Event::FenceDone { ok, detail } => self.on_fence_done(ok, &detail),
            Event::Lease { gen, held, detail } => self.on_lease(gen, held, &detail),
            Event::SyncBeat { lag } => self.n.sync_lag = lag,
            Event::ReplicaLag { behind } => {
                self.n.lagging = behind;
                self.maybe_auto_failover();
            }
            Event::Observation {
                kind,
                severity,
                text,
            } => self.journal(&kind, severity, text),
            Event::Shutdown => self.on_shutdown(),
        }
    }

    fn finish(&mut self, before: HaState) {
        self.check_fence();
        self.check_lease();
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
        if matches!(to, SecondarySyncing | PrimarySyncing | StandAlone) {
            // The pair is whole again (or gone): a later takeover is a new
            // incident, journaled and tried at once.
            self.n.takeover_failures = 0;
            self.n.takeover_retry_at = None;
            self.n.peer_fenced = false;
        }
        self.journal(
            "state_changed",
            Severity::Info,
            format!("{from} -> {to}: {why}"),
        );
        if let Some(d) = duty_for(to, self.n.cfg.role) {
            self.set_duty(d);
        }
    }

    /// One more failed takeover: the next automatic one waits 1 s, doubling to a minute.
    /// Returns the wait.
    pub(super) fn back_off(&mut self) -> Millis {
        self.n.takeover_failures = self.n.takeover_failures.saturating_add(1);
        let wait = TAKEOVER_BACKOFF
            .saturating_mul(1 << self.n.takeover_failures.min(7).saturating_sub(1))
            .min(TAKEOVER_BACKOFF_MAX);
        self.n.takeover_retry_at = Some(self.now.saturating_add(wait));
        wait
    }

    pub fn set_duty(&mut self, asked: Duty) {
        // A fenced primary holds nothing until the fence is lifted (`Step::check_fence`),
        // and with an arbiter no server is active without its lease (`Step::gated`).
        self.n.asked = asked;
        let d = self.gated(asked);
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

    /// Sends a heartbeat now. While the peer is suspected (silent, before the verdict) it
    /// asks for an answer, and the next one follows after the shorter `ask_gap`.
    pub(super) fn send_heartbeat(&mut self) {
        let asks = self.n.suspects();
        if let Some(r) = &self.n.reg {
            let m = r.member(self.n.cfg.role.other());
            self.out.push(Action::SendHeartbeat {
                address: m.address.clone(),
                port: m.hb_port,
                beacon: Beacon {
                    asks,
                    ..self.n.beacon()
                },
            });
        }
        let t = self.n.cfg.timers;
        self.n.next_hb_at = if asks {
            self.now.saturating_add(t.ask_gap())
        } else if self.now >= self.n.next_hb_at
            && self.now < self.n.next_hb_at.saturating_add(t.interval)
        {
            // On schedule (a tick a little late): keep the cadence, so that the beats
            // do not drift later by the tick's lateness each time.
            self.n.next_hb_at.saturating_add(t.interval)
        } else {
            self.now.saturating_add(t.interval)
        };
    }

    pub(super) fn probe(&mut self) {
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
        self.n.history.clear();
        self.n.next_hb_at = self.now;
    }

    // ----- executor results -----------------------------------------------------

    fn on_duty_applied(&mut self, duty: Duty, result: Result<(), String>) {
        if duty != self.n.duty {
            return; // superseded by a newer duty
        }
        if let Err(e) = result {
            if duty == Duty::Active && !self.n.shutting_down {
                // Once a takeover failed, automatic ones back off (1 s,
                // doubling to a minute) and only the first is journaled:
                // a VIP that cannot be claimed must not flap the state.
                let wait = self.back_off();
                if self.n.takeover_failures == 1 {
                    self.journal(
                        "duty_failed",
                        Severity::Error,
                        format!(
                            "could not apply duty {duty:?}: {e}; automatic takeovers are \
                             retried with backoff (first in {wait} ms)"
                        ),
                    );
                }
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
            self.journal(
                "duty_failed",
                Severity::Error,
                format!("could not apply duty {duty:?}: {e}"),
            );
        }
        if duty == Duty::Active {
            // Held at last: the failover's own completion is journaled.
            self.n.takeover_failures = 0;
            self.n.takeover_retry_at = None;
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
