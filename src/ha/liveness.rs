//! Liveness: start-up, timers, probes and heartbeats from the peer. Part of
//! the pure core (`machine.rs` holds the node and the stepping, `rules.rs`
//! the reactions to what the peer says).

use super::action::{Action, Severity};
use super::event::{Beacon, CopyKind, Millis};
use super::machine::{duty_for, in_sync, secondary_was_active, Link, Step, STAMP_EVERY};
use super::state::{Duty, HaState, Role};
use HaState::*;

/// The least time between two heartbeats sent early to answer a restarted
/// peer (each new boot is answered once; this bounds a flood of them).
pub(super) const PROMPT_GAP: u64 = 50;

/// How many of the peer's last heartbeat arrivals the detector keeps.
const HISTORY: usize = 16;
/// The chance that a live peer's heartbeats are all lost over one silent stretch, which
/// the detector accepts: on a lossy path it waits until silence is this unlikely.
const FALSE_SILENCE: f64 = 1e-4;
/// The longest silence the history may ask for, in multiples of `missed` (so that a real
/// failure on a lossy path is still found within a bounded time).
const MAX_STRETCH: u64 = 4;

/// The sequence numbers of the peer's last heartbeats that arrived. The peer numbers every
/// frame it sends, one more each time, so the numbers that never arrived are exactly the
/// frames lost on the way: neither a late frame, nor a sender whose timer runs slow, nor
/// an early answer looks like loss (they all did, when loss was read from arrival times).
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    seq: [u64; HISTORY],
    len: usize,
    next: usize,
}

impl History {
    fn newest(&self) -> Option<u64> {
        (self.len > 0).then(|| self.seq[(self.next + HISTORY - 1) % HISTORY])
    }

    /// Records an arrival. A number not above the last is a copy of a frame already
    /// counted or a late one (with redundant paths, two receiver threads can hand frames
    /// over out of order): nothing new. A restarted peer, which numbers from 1 again,
    /// clears the history when its new boot is announced (`Event::PeerBooted`).
    fn push(&mut self, seq: u64) {
        if self.newest().is_some_and(|n| seq <= n) {
            return;
        }
        self.seq[self.next] = seq;
        self.next = (self.next + 1) % HISTORY;
        self.len = (self.len + 1).min(HISTORY);
    }

    /// The fraction of the peer's frames lost over the kept arrivals (`None` until half
    /// of them are in).
    pub(crate) fn loss(&self) -> Option<f64> {
        let newest = self.newest()?;
        if self.len < HISTORY / 2 {
            return None;
        }
        let oldest = self.seq[(self.next + HISTORY - self.len) % HISTORY];
        let sent = newest.saturating_sub(oldest).saturating_add(1) as f64;
        Some((1.0 - self.len as f64 / sent).clamp(0.0, 0.99))
    }

    pub(crate) fn clear(&mut self) {
        *self = History::default();
    }
}

impl super::machine::Node {
    /// How many heartbeat intervals of silence make the peer silent: `missed` on a clean
    /// path; on a lossy one, as many as it takes for all of a live peer's heartbeats to
    /// be lost with a chance below `FALSE_SILENCE`, up to `MAX_STRETCH` times `missed`.
    pub(super) fn silent_windows(&self) -> u64 {
        let t = self.cfg.timers;
        let missed = u64::from(t.missed).max(1);
        let Some(loss) = self.history.loss() else {
            return missed;
        };
        let mut k = missed;
        while k < missed * MAX_STRETCH
            && loss.powi(i32::try_from(k).unwrap_or(i32::MAX)) > FALSE_SILENCE
        {
            k += 1;
        }
        k
    }

    /// Time without a heartbeat after which the peer counts as silent.
    pub(super) fn silent_after(&self) -> Millis {
        self.cfg
            .timers
            .interval
            .saturating_mul(self.silent_windows())
    }

    /// The peer is silent and the verdict is not in: heartbeats ask for an answer.
    pub(super) fn suspects(&self) -> bool {
        matches!(self.link, Link::Silent { .. }) && self.reg_committed
    }
}

impl Step<'_> {
    // ----- start, timers, liveness --------------------------------------------

    pub(super) fn on_start(&mut self, since_in_sync_secs: Option<u64>) {
        let Some(reg) = self.n.reg.clone() else {
            self.n.state = StandAlone;
            self.journal(
                "agent_started",
                Severity::Info,
                "hamon started: HA is not configured",
            );
            if let Some(d) = duty_for(StandAlone, self.n.cfg.role) {
                self.set_duty(d);
            }
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

    pub(super) fn on_tick(&mut self) {
        let now = self.now;
        if self.n.sends_heartbeats() && now >= self.n.next_hb_at {
            self.send_heartbeat();
        }
        if self.n.sends_heartbeats() && !self.n.probing {
            let t = self.n.cfg.timers;
            let silent_at = self.n.heard_at.saturating_add(self.n.silent_after());
            if self.n.link == Link::Up && now >= silent_at {
                self.n.link = Link::Silent { since: silent_at };
                self.journal(
                    "heartbeats_missed",
                    Severity::Warning,
                    format!(
                        "{} consecutive heartbeats from {} missed; asking it for one and \
                         probing it in {} ms",
                        self.n.silent_windows(),
                        self.n.peer_label(),
                        t.grace
                    ),
                );
                // Ask at once: one lost frame is never a verdict.
                self.send_heartbeat();
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
        if self.n.takeover_retry_at.is_some_and(|t| now >= t) {
            self.n.takeover_retry_at = None;
            self.maybe_auto_failover();
        }
        self.repin();
        self.resolve_settings();
        if self.n.copy_retry_at.is_some_and(|t| now >= t) {
            self.n.copy_retry_at = None;
            if self.n.state == PrimaryDatabaseCopyFailed && !self.n.copying {
                self.journal("copy_retry", Severity::Info, "retrying the data-gap copy");
                self.start_copy(CopyKind::DataGap);
            }
        }
    }

    pub(super) fn on_probe(&mut self, ok: bool, detail: &str) {
        self.n.probing = false;
        if std::mem::take(&mut self.n.stale_probe) {
            return; // sent while this server's own HA link was down
        }
        if self.n.link != Link::Up {
            self.fence_probe_done(ok);
        }
        let at_start = std::mem::take(&mut self.n.boot_probe);
        if self.n.link == Link::Up || !self.n.sends_heartbeats() {
            return;
        }
        let t = self.n.cfg.timers;
        if ok {
            self.n.next_probe_at = self.now.saturating_add(t.grace.max(self.n.silent_after()));
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
        self.n.next_probe_at = self
            .now
            .saturating_add(self.n.silent_after().max(t.interval));
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
    pub(super) fn boot_alone(&mut self, detail: &str) {
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

    /// A new boot of the peer asks to be confirmed: answer now rather than
    /// at the next interval. A restarted active agent then learns within a
    /// round trip that its peer is standby, and takes the role back at once.
    /// Only the registered peer's address is answered, at most once every
    /// `PROMPT_GAP` ms, and the answer goes to the registered address
    /// whatever the sender claimed.
    /// The peer's echoes say whether it hears us. Journaled when a one-way path opens
    /// and when it heals; nothing else changes (the peer's own detector sees the silence
    /// and probes, and this side still hears the peer).
    pub(super) fn on_peer_hears_us(&mut self, hears: bool) {
        if self.n.reg.is_none() || hears != self.n.noted.one_way {
            return;
        }
        self.n.noted.one_way = !hears;
        let peer = self.n.peer_label();
        if hears {
            self.journal(
                "heartbeat_two_way",
                Severity::Info,
                format!("{peer} hears this server's heartbeats again"),
            );
        } else {
            self.journal(
                "heartbeat_one_way",
                Severity::Warning,
                format!(
                    "heartbeat path broken one way: this server hears {peer}, but {peer} \
                     has not seen this server's heartbeats for several of its own"
                ),
            );
        }
    }

    pub(super) fn on_peer_booted(&mut self, from: &str) {
        let Some(reg) = &self.n.reg else { return };
        if from != reg.member(self.n.cfg.role.other()).address {
            return;
        }
        // Its frames are numbered from 1 again: the loss history starts over.
        self.n.history.clear();
        if self.n.blocked.is_some() || self.n.shutting_down || !self.n.sends_heartbeats() {
            return;
        }
        self.answer_now();
    }

    /// Sends a heartbeat before its time, at most once every `PROMPT_GAP` ms. Limited from
    /// the last early answer, not from the last heartbeat: a regular one sent just before
    /// the peer's frame arrived does not echo it, so it does not count as an answer.
    fn answer_now(&mut self) {
        if self
            .n
            .prompted_at
            .is_none_or(|t| self.now >= t.saturating_add(PROMPT_GAP))
        {
            self.n.prompted_at = Some(self.now);
            self.send_heartbeat();
        }
    }

    pub(super) fn on_heartbeat(&mut self, from: &str, b: Beacon, seq: u64) {
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
        // The peer's heartbeat names our registration: it committed it too.
        self.n.reg_confirmed = true;
        self.check_peer_settings(&b);
        let was = self.n.link;
        self.n.link = Link::Up;
        self.n.heard_at = self.now;
        if was == Link::Lost {
            // The peer was gone: that gap was no loss on a working path. (After a broken
            // path, whose probe answered, the gap stays: that is what a lossy path is.)
            self.n.history.clear();
        }
        self.n.history.push(seq);
        self.n.peer = Some(b.clone());
        if b.asks {
            // The peer suspects the link: answer now (its regular heartbeats may be lost).
            self.answer_now();
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(seqs: impl IntoIterator<Item = u64>) -> History {
        let mut h = History::default();
        for s in seqs {
            h.push(s);
        }
        h
    }

    #[test]
    fn every_frame_in_is_no_loss_whatever_the_timing() {
        // Arrival times play no part: late, early and bunched frames alike.
        assert_eq!(history(1..=16).loss(), Some(0.0));
        assert_eq!(history(100..=140).loss(), Some(0.0));
    }

    #[test]
    fn missing_numbers_are_the_loss() {
        // 16 arrivals out of 21 frames: 4, 8, 12, 16 and 20 lost.
        let h = history((1..=21).filter(|i| i % 4 != 0));
        let loss = h.loss().unwrap();
        assert!((loss - 5.0 / 21.0).abs() < 1e-9, "{loss}");
    }

    #[test]
    fn late_and_repeated_numbers_change_nothing() {
        let mut h = history(1..=16);
        // Frame 10 again (another path), and frames handed over out of order.
        for s in [10, 16, 3] {
            h.push(s);
        }
        assert_eq!(h.loss(), Some(0.0));
        assert_eq!(h.newest(), Some(16));
        // A lossy stretch, then a restarted peer: the history starts over.
        let mut h = history((1..=40).step_by(2));
        assert!(h.loss().unwrap() > 0.4);
        h.clear();
        for s in 1..=8 {
            h.push(s);
        }
        assert_eq!(h.loss(), Some(0.0));
    }

    #[test]
    fn no_verdict_before_half_the_history() {
        assert_eq!(history([1, 2, 3]).loss(), None);
    }
}
