//! `hamon ha set`: changing the registration's settings (failover type, virtual IPs,
//! e-mail) on a registered pair, on both servers or on neither.
//!
//! The server where the operator runs it sends the new settings to its peer
//! (`PeerRequest::Settings`) and applies them itself only once the peer's answer says
//! it applied them. A lost answer is asked again with the identical request (the peer
//! answers a repeat as the first); a change that still cannot be confirmed is refused,
//! not applied here, and kept as pending: while the peer is heard it is told to undo the
//! change if it got it (`PeerRequest::SettingsUndo`), so the pair ends with the old
//! settings on both servers (`docs/states.md`, departure ad).

use super::action::{Action, Reply, SettingsChange, Severity};
use super::event::{Beacon, PeerAnswer, PeerRequest, Token};
use super::machine::{Link, Step};
use super::ops::Op;
use super::state::{HaState, Registration, Settings};
use super::Millis;
use HaState::*;

/// How many times the change is sent before it counts as unconfirmed.
pub(super) const SETTINGS_TRIES: u32 = 3;

/// How often a pending (unconfirmed) change is resolved with the peer while it is heard.
pub(super) const UNDO_RETRY: Millis = 5_000;

/// The change a peer applied last, so that a repeat of it is answered as the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Applied {
    pub change_id: u64,
    pub new: Settings,
}

fn refused(message: impl Into<String>) -> Reply {
    Reply::Refused {
        message: message.into(),
    }
}

impl Step<'_> {
    /// Why no settings change may start or be taken now (an operation or a copy runs).
    fn settings_busy(&self) -> Option<String> {
        if self.n.op.is_some() {
            return Some("another HA operation is in progress".into());
        }
        if self.n.copying {
            return Some("a data copy is running".into());
        }
        if self.n.joining || !self.n.reg_committed {
            return Some("a registration is in progress".into());
        }
        match self.n.state {
            HaInitializing => Some("HA is initializing".into()),
            PrimaryFailback | SecondaryFailback | SecondaryPostFailback => {
                Some("a failback is in progress".into())
            }
            _ => None,
        }
    }

    /// The committed registration, if this server has one.
    fn committed(&self) -> Option<Registration> {
        self.n.reg.clone().filter(|_| self.n.reg_committed)
    }

    /// The operator's `hamon ha set` (the shell validated `new` as registration would).
    pub(super) fn command_settings(
        &mut self,
        token: Token,
        change_id: u64,
        expected: Settings,
        new: Settings,
        by: String,
    ) {
        let Some(reg) = self.committed() else {
            return self.reply(
                token,
                refused(
                    "HA is not configured on this server: the settings are given at \
                     registration (`hamon ha register`)",
                ),
            );
        };
        if let Some(why) = self.settings_busy() {
            return self.reply(
                token,
                refused(format!("settings not changed: {why}; try again shortly")),
            );
        }
        if let Some(p) = &self.n.settings_pending {
            let msg = format!(
                "settings not changed: an earlier change ({}) was never confirmed by {}; this \
                 server is making sure the peer does not keep it, which needs the peer to be \
                 heard again",
                p.new.changes_from(&p.old),
                self.n.peer_label()
            );
            return self.reply(token, refused(msg));
        }
        let current = reg.settings();
        if current != expected {
            return self.reply(
                token,
                refused("settings not changed: they changed meanwhile; run the command again"),
            );
        }
        // The peer's last heartbeat may predate a change it just made: only a difference
        // that lasted (and was journaled) makes an unchanged setting worth sending.
        if new == current && !self.n.noted.settings_differ {
            return self.reply(
                token,
                Reply::Done {
                    message: "nothing to change: the settings are already these".into(),
                },
            );
        }
        let change = SettingsChange {
            change_id,
            old: current,
            new,
            by,
        };
        let call = self.send_settings(&reg, &change);
        self.n.op = Some(Op::Settings {
            token,
            call,
            change,
            tries: 1,
        });
    }

    fn send_settings(&mut self, reg: &Registration, change: &SettingsChange) -> u64 {
        self.call(PeerRequest::Settings {
            id: reg.id,
            change_id: change.change_id,
            registration: reg.with_settings(&change.new),
            by: change.by.clone(),
        })
    }

    /// The peer's answer to our `Settings` request.
    pub(super) fn settings_reply(
        &mut self,
        token: Token,
        change: SettingsChange,
        tries: u32,
        result: Result<(), String>,
    ) {
        let peer = self.n.peer_label();
        match result {
            Ok(()) => {
                self.n.op = None;
                let what = change.new.changes_from(&change.old);
                self.apply_settings(&change.new, &format!("by {}", change.by));
                let msg = if what.is_empty() {
                    format!("the settings of {peer} now agree with this server's")
                } else {
                    format!("settings changed on both servers: {what}")
                };
                self.reply(token, Reply::Done { message: msg });
            }
            Err(e) if e.starts_with("refused by the peer") => {
                self.n.op = None;
                let msg = format!("settings not changed on either server: {e}");
                self.reply(token, refused(msg));
            }
            Err(_) if tries < SETTINGS_TRIES => {
                // The request or its answer was lost: the peer may have applied it. The
                // identical request is safe to repeat; the peer answers it as the first.
                let Some(reg) = self.committed() else { return };
                let call = self.send_settings(&reg, &change);
                self.n.op = Some(Op::Settings {
                    token,
                    call,
                    change,
                    tries: tries + 1,
                });
            }
            Err(e) => {
                self.n.op = None;
                let what = change.new.changes_from(&change.old);
                let text = format!(
                    "settings change ({what}) asked by {} NOT CONFIRMED by {peer} after {tries} \
                     tries ({e}); it is not applied on this server, and if {peer} applied it, \
                     it is told to undo it as soon as it is heard again",
                    change.by
                );
                self.journal("settings_unconfirmed", Severity::Warning, text);
                self.n.settings_pending = Some(change);
                self.n.settings_retry_at = self.now;
                let msg = format!(
                    "settings not changed: {peer} could not be reached or did not answer \
                     ({e}). This server keeps its settings; if {peer} got the change, it is \
                     undone there as soon as it is heard again (see `hamon ha events`)"
                );
                self.reply(token, refused(msg));
            }
        }
    }

    /// Take `new` as this server's settings: journal what changed, and move the virtual
    /// IPs if they changed (the shell moves them only on an active server).
    fn apply_settings(&mut self, new: &Settings, why: &str) {
        let Some(reg) = self.n.reg.as_mut() else {
            return;
        };
        let old = reg.settings();
        if old == *new {
            return;
        }
        *reg = reg.with_settings(new);
        self.n.noted.settings_differ = false;
        self.n.differ_since = None;
        if old.vips != new.vips {
            self.out.push(Action::MoveVips {
                from: old.vips.clone(),
                to: new.vips.clone(),
            });
        }
        let text = format!("{} ({why})", new.changes_from(&old));
        self.journal("settings_changed", Severity::Info, text);
    }

    /// On every tick: while a change is pending (unconfirmed) and the peer is heard, tell
    /// the peer to undo it if it got it, every `UNDO_RETRY` until it answers.
    pub(super) fn resolve_settings(&mut self) {
        let Some(change) = self.n.settings_pending.clone() else {
            return;
        };
        if self.n.link != Link::Up || self.now < self.n.settings_retry_at {
            return;
        }
        let Some(id) = self.n.reg.as_ref().map(|r| r.id) else {
            return;
        };
        let call = self.call(PeerRequest::SettingsUndo {
            id,
            change_id: change.change_id,
            old: change.old,
            new: change.new,
        });
        self.n.settings_call = Some(call);
        self.n.settings_retry_at = self.now.saturating_add(UNDO_RETRY);
    }

    /// The peer's answer to a `SettingsUndo`.
    pub(super) fn settings_undo_reply(&mut self, result: Result<(), String>) {
        self.n.settings_call = None;
        if result.is_err() {
            return; // asked again at the next retry while the peer is heard
        }
        if let Some(change) = self.n.settings_pending.take() {
            let text = format!(
                "the unconfirmed settings change ({}) is resolved: {} does not keep it either; \
                 both servers have {}",
                change.new.changes_from(&change.old),
                self.n.peer_label(),
                describe(&change.old)
            );
            self.journal("settings_unconfirmed", Severity::Warning, text);
        }
    }

    /// The receiver's side of `PeerRequest::Settings`.
    pub(super) fn peer_settings(
        &mut self,
        id: u64,
        change_id: u64,
        registration: Registration,
        by: String,
    ) -> PeerAnswer {
        let refuse = |reason: String| PeerAnswer::Refused { reason };
        let Some(reg) = self.committed().filter(|r| r.id == id) else {
            return refuse("not part of that registration".into());
        };
        if (&reg.primary.address, &reg.secondary.address)
            != (
                &registration.primary.address,
                &registration.secondary.address,
            )
        {
            return refuse("the request names other servers than this registration".into());
        }
        let new = registration.settings();
        if reg.settings() == new {
            // A repeat of a change applied already (its answer was lost), or settings
            // this server has anyway: the answer is the same.
            return self.accepted_now();
        }
        if let Some(why) = self.settings_busy() {
            return refuse(format!("{why} on {}", self.n.cfg.name));
        }
        if self.n.settings_pending.is_some() {
            return refuse(format!(
                "{} is resolving an unconfirmed settings change of its own",
                self.n.cfg.name
            ));
        }
        let why = format!("asked by its peer {}, by {by}", self.n.peer_label());
        self.apply_settings(&new, &why);
        self.n.settings_applied = Some(Applied { change_id, new });
        self.accepted_now()
    }

    /// The receiver's side of `PeerRequest::SettingsUndo`.
    pub(super) fn peer_settings_undo(
        &mut self,
        id: u64,
        change_id: u64,
        old: Settings,
        new: Settings,
    ) -> PeerAnswer {
        let Some(reg) = self.committed().filter(|r| r.id == id) else {
            return PeerAnswer::Refused {
                reason: "not part of that registration".into(),
            };
        };
        // Undo only the change named, and only while nothing replaced it. After a restart
        // the memory of it is gone; holding exactly its settings is then taken as having
        // applied it (no other change can have been made meanwhile: the sender refuses
        // every change while this one is unresolved).
        let ours = self
            .n
            .settings_applied
            .as_ref()
            .is_none_or(|a| a.change_id == change_id);
        if ours && reg.settings() == new {
            self.n.settings_applied = None;
            let why = format!(
                "undone: {} could not confirm the change and did not make it",
                self.n.peer_label()
            );
            self.apply_settings(&old, &why);
        }
        self.accepted_now()
    }

    fn accepted_now(&self) -> PeerAnswer {
        PeerAnswer::Accepted {
            state: self.n.state,
            registration: None,
        }
    }

    /// On each of the peer's heartbeats: its failover type should be ours. If it stays
    /// different for a full detection window while no change is under way (a change
    /// whose outcome was lost with a server's state, say), say so once.
    pub(super) fn check_peer_settings(&mut self, b: &Beacon) {
        let Some(ours) = self.n.reg.as_ref().map(|r| r.failover_type) else {
            return;
        };
        let theirs = b.registered.map(|(_, t)| t);
        let changing =
            matches!(self.n.op, Some(Op::Settings { .. })) || self.n.settings_pending.is_some();
        if theirs.is_none_or(|t| t == ours) || changing {
            self.n.differ_since = None;
            self.n.noted.settings_differ = false;
            return;
        }
        let since = *self.n.differ_since.get_or_insert(self.now);
        let window = self.n.cfg.timers.silent_after();
        if self.now.saturating_sub(since) >= window && !self.n.noted.settings_differ {
            self.n.noted.settings_differ = true;
            let text = format!(
                "{} reports failover type {} and this server has {}: the two servers' \
                 settings disagree; run `hamon ha set` with the settings wanted to make them \
                 agree",
                self.n.peer_label(),
                theirs.map(|t| t.label()).unwrap_or_default(),
                ours
            );
            self.journal("settings_unconfirmed", Severity::Warning, text);
        }
    }
}

fn describe(s: &Settings) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "failover type {}, virtual IPs {}, e-mail {}",
        s.failover_type,
        list(&s.vips),
        list(&s.emails)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::event::{Command, Event};
    use crate::ha::machine::step;
    use crate::ha::sim::{fast_timers, register_command, Sim, KEY, P, S};
    use crate::ha::state::FailoverType;

    fn registered() -> Sim {
        Sim::registered(fast_timers(), 7, FailoverType::Manual)
    }

    fn settings(sim: &Sim, i: usize) -> Settings {
        match sim.node(i).and_then(|n| n.registration()) {
            Some(r) => r.settings(),
            None => panic!("node {i} is not registered"),
        }
    }

    fn set(sim: &mut Sim, i: usize, new: Settings) -> Token {
        let expected = settings(sim, i);
        sim.command(
            i,
            Command::Settings {
                change_id: 0xC0FFEE,
                expected,
                new,
                by: "user root with the CLI".into(),
            },
        )
    }

    fn changed() -> Settings {
        Settings {
            failover_type: FailoverType::Automatic,
            vips: vec!["192.0.2.20/24".into(), "2001:db8::20/64".into()],
            emails: vec!["noc@example.com".into()],
        }
    }

    fn count(sim: &Sim, i: usize, kind: &str) -> usize {
        sim.journal_kinds(i).iter().filter(|k| *k == kind).count()
    }

    fn texts(sim: &Sim, i: usize, kind: &str) -> Vec<String> {
        sim.journal
            .iter()
            .filter(|(_, n, e)| *n == i && e.kind == kind)
            .map(|(_, _, e)| e.text.clone())
            .collect()
    }

    fn done(sim: &Sim, t: Token) -> String {
        match sim.reply(t) {
            Some(Reply::Done { message }) => message.clone(),
            other => panic!("expected done, got {other:?}"),
        }
    }

    fn refused(sim: &Sim, t: Token) -> String {
        match sim.reply(t) {
            Some(Reply::Refused { message }) => message.clone(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_change_from_either_server_lands_on_both_without_a_copy() {
        for (from, other) in [(P, S), (S, P)] {
            let mut sim = registered();
            let before = settings(&sim, P);
            let t = set(&mut sim, from, changed());
            sim.run_for(1_000);
            let msg = done(&sim, t);
            assert!(msg.contains("both servers"), "{msg}");
            assert_eq!(settings(&sim, P), changed());
            assert_eq!(settings(&sim, S), changed());
            // Journaled on both, with who asked, old -> new; the peer says it came from
            // its peer.
            let mine = texts(&sim, from, "settings_changed");
            assert_eq!(mine.len(), 1, "{mine:?}");
            assert!(
                mine[0].contains("failover type Manual -> Automatic"),
                "{mine:?}"
            );
            assert!(mine[0].contains("user root with the CLI"), "{mine:?}");
            let theirs = texts(&sim, other, "settings_changed");
            assert_eq!(theirs.len(), 1, "{theirs:?}");
            assert!(theirs[0].contains("asked by its peer"), "{theirs:?}");
            assert!(
                theirs[0].contains(&format!("virtual IPs {}", before.vips.join(", "))),
                "{theirs:?}"
            );
            // No copy: the registration's one initial copy is all there is, and the
            // pair stays as it was.
            assert_eq!(count(&sim, P, "initial_copy"), 1);
            assert_eq!(sim.state(P), Some(HaState::PrimaryActive));
            assert_eq!(sim.state(S), Some(HaState::SecondarySyncing));
            // Both move their VIPs (the shell moves them only where active).
            let moved: Vec<usize> = sim.vips_moved.iter().map(|(_, n, _)| *n).collect();
            assert_eq!(moved.len(), 2, "{moved:?}");
            assert!(sim.vips_moved.iter().all(|(_, _, v)| *v == changed().vips));
            // The next heartbeat carries the new failover type, and no warning follows.
            sim.run_for(2_000);
            assert_eq!(count(&sim, P, "settings_unconfirmed"), 0);
            assert_eq!(count(&sim, S, "settings_unconfirmed"), 0);
        }
    }

    #[test]
    fn with_the_peer_unreachable_neither_server_changes() {
        let mut sim = registered();
        let before = settings(&sim, P);
        sim.crash(S);
        let t = set(&mut sim, P, changed());
        sim.run_for(2_000);
        let msg = refused(&sim, t);
        assert!(msg.contains("settings not changed"), "{msg}");
        assert_eq!(settings(&sim, P), before);
        assert_eq!(count(&sim, P, "settings_changed"), 0);
        assert_eq!(count(&sim, P, "settings_unconfirmed"), 1);
        // While that is unresolved, no other change starts.
        let t = set(&mut sim, P, changed());
        assert!(refused(&sim, t).contains("never confirmed"));
        // The secondary comes back; it never had the change, and the pending one is
        // resolved once it is heard.
        sim.start(S);
        sim.run_for(8_000);
        assert_eq!(settings(&sim, S), before);
        assert_eq!(settings(&sim, P), before);
        assert_eq!(count(&sim, P, "settings_unconfirmed"), 2);
        assert_eq!(count(&sim, S, "settings_changed"), 0);
        // And a change works again.
        let t = set(&mut sim, P, changed());
        sim.run_for(1_000);
        done(&sim, t);
        assert_eq!(settings(&sim, S), changed());
    }

    #[test]
    fn a_refusal_by_the_peer_changes_nothing() {
        let mut sim = registered();
        let before = settings(&sim, P);
        // The secondary holds an unconfirmed change of its own (made while cut off), so
        // it refuses the primary's until that is resolved.
        sim.net.partitioned = true;
        let t = set(&mut sim, S, changed());
        sim.run_for(1_000);
        refused(&sim, t);
        sim.net.partitioned = false;
        // Before the secondary resolves its own pending change, the primary's is refused.
        let other = Settings {
            failover_type: FailoverType::Automatic,
            ..before.clone()
        };
        let t = set(&mut sim, P, other);
        sim.run_for(50);
        let msg = refused(&sim, t);
        assert!(msg.contains("refused by the peer"), "{msg}");
        assert_eq!(settings(&sim, P), before);
        assert_eq!(settings(&sim, S), before);
    }

    #[test]
    fn a_lost_answer_is_asked_again_and_applied_once() {
        let mut sim = registered();
        sim.lose_answers = 1;
        let t = set(&mut sim, P, changed());
        sim.run_for(2_000);
        done(&sim, t);
        assert_eq!(settings(&sim, P), changed());
        assert_eq!(settings(&sim, S), changed());
        assert_eq!(count(&sim, S, "settings_changed"), 1);
        assert_eq!(count(&sim, P, "settings_changed"), 1);
        assert_eq!(count(&sim, P, "settings_unconfirmed"), 0);
    }

    #[test]
    fn a_change_never_confirmed_is_undone_on_the_peer_that_made_it() {
        let mut sim = registered();
        let before = settings(&sim, P);
        sim.lose_answers = SETTINGS_TRIES;
        let t = set(&mut sim, P, changed());
        sim.run_for(1_000);
        let msg = refused(&sim, t);
        assert!(
            msg.contains("could not be reached or did not answer"),
            "{msg}"
        );
        // Said plainly in the journal too.
        let warn = texts(&sim, P, "settings_unconfirmed");
        assert!(warn[0].contains("NOT CONFIRMED"), "{warn:?}");
        // The primary did not apply it. The secondary did, and is told to undo it while
        // it is heard: the pair converges on the old settings.
        assert_eq!(settings(&sim, P), before);
        sim.run_for(UNDO_RETRY + 1_000);
        assert_eq!(settings(&sim, S), before);
        assert_eq!(settings(&sim, P), before);
        let theirs = texts(&sim, S, "settings_changed");
        assert_eq!(theirs.len(), 2, "{theirs:?}");
        assert!(theirs[1].contains("undone"), "{theirs:?}");
        assert_eq!(count(&sim, P, "settings_unconfirmed"), 2);
        // Resolved: nothing is pending any more.
        assert!(sim.node(P).is_some_and(|n| n.settings_pending.is_none()));
    }

    #[test]
    fn an_unresolved_change_is_persisted() {
        let mut sim = registered();
        sim.crash(S);
        let t = set(&mut sim, P, changed());
        sim.run_for(2_000);
        refused(&sim, t);
        sim.crash(P);
        sim.start(P);
        assert!(sim.node(P).is_some_and(|n| n.settings_pending.is_some()));
    }

    #[test]
    fn the_peer_applies_a_repeat_once_and_answers_it_alike() {
        let sim = registered();
        let Some(mut node) = sim.node(S).cloned() else {
            panic!("no secondary")
        };
        let Some(reg) = node.registration().cloned() else {
            panic!("not registered")
        };
        let request = PeerRequest::Settings {
            id: reg.id,
            change_id: 42,
            registration: reg.with_settings(&changed()),
            by: "user root with the CLI".into(),
        };
        let mut answers = Vec::new();
        let mut journaled = 0;
        for t in 0..2 {
            let ev = Event::PeerRequest {
                token: Token(100 + t),
                request: request.clone(),
            };
            for a in step(&mut node, ev, sim.now + t) {
                match a {
                    Action::Answer { answer, .. } => answers.push(answer),
                    Action::Journal(e) if e.kind == "settings_changed" => journaled += 1,
                    _ => {}
                }
            }
        }
        assert_eq!(answers.len(), 2);
        assert!(answers.iter().all(|a| a.is_accepted()), "{answers:?}");
        assert_eq!(answers[0], answers[1]);
        assert_eq!(journaled, 1);
        assert_eq!(node.registration().map(|r| r.settings()), Some(changed()));
        // Another registration's request is refused.
        let foreign = PeerRequest::Settings {
            id: reg.id + 1,
            change_id: 43,
            registration: reg.clone(),
            by: String::new(),
        };
        let out = step(
            &mut node,
            Event::PeerRequest {
                token: Token(200),
                request: foreign,
            },
            sim.now + 5,
        );
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Answer {
                answer: PeerAnswer::Refused { .. },
                ..
            }
        )));
    }

    #[test]
    fn refused_while_another_operation_runs() {
        let mut sim = Sim::new(fast_timers(), 3);
        let reg = sim.command(P, register_command(FailoverType::Manual, KEY));
        // Mid-registration: nothing is registered yet.
        let t = sim.command(
            P,
            Command::Settings {
                change_id: 1,
                expected: changed(),
                new: changed(),
                by: "user root with the CLI".into(),
            },
        );
        let msg = refused(&sim, t);
        assert!(msg.contains("another HA operation"), "{msg}");
        sim.run_for(2_000);
        done(&sim, reg);
        // A failback in progress (the secondary took over, then fails back).
        sim.crash(P);
        sim.run_for(1_000);
        sim.command(S, Command::Failover);
        sim.run_for(1_000);
        sim.start(P);
        sim.run_for(1_000);
        sim.copy_delay = 2_000;
        let fb = sim.command(S, Command::Failback);
        sim.run_for(300);
        let t = set(&mut sim, S, changed());
        assert!(refused(&sim, t).contains("another HA operation"));
        let t = set(&mut sim, P, changed());
        sim.run_for(50);
        let msg = refused(&sim, t);
        assert!(msg.contains("failback is in progress"), "{msg}");
        sim.run_for(5_000);
        done(&sim, fb);
        assert_ne!(settings(&sim, P), changed());
        assert_ne!(settings(&sim, S), changed());
    }

    #[test]
    fn nothing_to_change_needs_no_peer() {
        let mut sim = registered();
        let same = settings(&sim, P);
        let t = set(&mut sim, P, same.clone());
        // Answered within the step, before any message could reach the peer.
        let msg = done(&sim, t);
        assert!(msg.contains("nothing to change"), "{msg}");
        sim.run_for(1_000);
        assert_eq!(count(&sim, P, "settings_changed"), 0);
        assert_eq!(count(&sim, S, "settings_changed"), 0);
        // Settings read before another change landed are refused, not applied.
        let stale = Command::Settings {
            change_id: 9,
            expected: changed(),
            new: same,
            by: "user root with the CLI".into(),
        };
        let t = sim.command(P, stale);
        assert!(refused(&sim, t).contains("changed meanwhile"));
    }

    #[test]
    fn a_peer_whose_failover_type_differs_is_reported_and_can_be_made_to_agree() {
        let mut sim = registered();
        // The primary's disk loses its writes: the pending change does not survive its
        // restart, and the secondary keeps a change the primary never made.
        sim.unsaved[P] = true;
        sim.lose_answers = SETTINGS_TRIES;
        let only_type = Settings {
            failover_type: FailoverType::Automatic,
            ..settings(&sim, P)
        };
        let t = set(&mut sim, P, only_type.clone());
        while sim.reply(t).is_none() {
            sim.run_for(1);
        }
        refused(&sim, t);
        sim.crash(P);
        sim.unsaved[P] = false;
        sim.start(P);
        sim.run_for(3_000);
        assert_eq!(settings(&sim, S), only_type);
        assert_eq!(settings(&sim, P).failover_type, FailoverType::Manual);
        // Both say so, once each, and not at every heartbeat.
        let p = texts(&sim, P, "settings_unconfirmed");
        assert!(p.last().is_some_and(|t| t.contains("disagree")), "{p:?}");
        let s = texts(&sim, S, "settings_unconfirmed");
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s[0].contains("reports failover type Manual"), "{s:?}");
        // `ha set` on the secondary with what it has already is not "nothing to change"
        // while the peer differs: it makes the two agree.
        let t = set(&mut sim, S, only_type.clone());
        sim.run_for(500);
        let msg = done(&sim, t);
        assert!(msg.contains("now agree"), "{msg}");
        assert_eq!(settings(&sim, P), only_type);
        sim.run_for(2_000);
        assert_eq!(texts(&sim, S, "settings_unconfirmed").len(), 1);
    }
}
