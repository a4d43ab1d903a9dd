//! The arbiter: a lease in etcd that only the active server holds (`[arbiter]`). Part of
//! the pure core.
//!
//! - No active duty without the lease. `set_duty` passes `Duty::Active` through
//!   `Step::gated`: without the lease a server that asks for it keeps what it had (a
//!   standby stays standby, anything else is halted) and wants the lease
//!   (`Action::Lease`), which the shell's arbiter thread wins by an etcd transaction that
//!   creates the pair's key only when it is absent, that is once the old holder's lease
//!   has expired on etcd's clock.
//! - A secondary's takeover waits for the lease before it enters Secondary Failover
//!   (`take_over`), and no longer: once the lease is won it goes ahead.
//! - A holder that cannot renew in time is told so by its arbiter thread before the lease
//!   can expire on etcd (the thread's margin, `docs/states.md`): with
//!   `on_arbiter_loss = "demote"` it releases the active duty (halted, like a fenced
//!   primary: the database is left as it is); with `"hold"` it keeps it, and no one else
//!   can win the lease until it expires.
//! - The lease is released as soon as no active duty is asked for: a handover by command
//!   does not wait for the TTL.
//!
//! Every want carries a generation; a report of an older one is stale and ignored, so a
//! "held" from before a release can never pass for the current lease.

use super::action::{Action, Severity};
use super::machine::{ArbiterLoss, Step};
use super::state::{Duty, HaState};
use serde::{Deserialize, Serialize};
use HaState::*;

/// Where this server stands with the arbiter's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lease {
    /// Not wanted (no active duty asked for), or no arbiter.
    #[default]
    Released,
    /// Wanted, not held yet: another server holds it, or etcd does not answer.
    Seeking,
    /// Held, renewed in time.
    Held,
    /// Was held and could not be renewed in time; still wanted.
    Lost,
}

impl Step<'_> {
    /// An arbiter is configured and there is a pair to arbitrate.
    pub(super) fn arbitrated(&self) -> bool {
        self.n.cfg.arbiter.is_some() && self.n.reg_committed && self.n.reg.is_some()
    }

    /// The duty this server may hold now, for the duty its state asks for: an active duty
    /// needs no fence (`witness.rs`) and, with an arbiter, the lease.
    pub(super) fn gated(&self, asked: Duty) -> Duty {
        if asked != Duty::Active {
            return asked;
        }
        if self.n.fenced {
            return Duty::Halted;
        }
        let lease = self.n.lease;
        let holds = lease == Lease::Held
            || (lease == Lease::Lost
                && self.n.cfg.arbiter == Some(ArbiterLoss::Hold)
                && self.n.duty == Duty::Active);
        if !self.arbitrated() || holds {
            return Duty::Active;
        }
        if self.n.duty == Duty::Standby {
            Duty::Standby
        } else {
            Duty::Halted
        }
    }

    /// A secondary about to take over waits for the lease first. Returns whether it may go
    /// ahead now.
    pub(super) fn lease_for_takeover(&mut self, why: &str) -> bool {
        if !self.arbitrated() || self.n.lease == Lease::Held {
            return true;
        }
        if self.n.lease_takeover.is_none() {
            self.n.lease_takeover = Some(why.to_string());
            self.journal(
                "arbiter_waiting",
                Severity::Warning,
                format!(
                    "{why}: waiting for the arbiter's lease, which {} holds until it expires \
                     unless it renews it",
                    self.n.peer_label()
                ),
            );
        }
        false
    }

    /// Wants the lease, or releases it, for what is asked now. Run after every event.
    pub(super) fn check_lease(&mut self) {
        if self.n.lease_takeover.is_some()
            && !matches!(self.n.state, SecondaryLostPrimary | SecondaryAlone)
        {
            // The takeover that waited is no longer wanted (the peer is back, say).
            self.n.lease_takeover = None;
        }
        let want = self.arbitrated()
            && !self.n.shutting_down
            && (self.n.asked == Duty::Active
                || self.n.lease_takeover.is_some()
                || self.n.fencing_peer.is_some());
        let pair = self
            .n
            .reg
            .as_ref()
            .filter(|_| self.arbitrated())
            .map(|r| r.id);
        // Also told once per pair while not wanted, so that the thread can show who
        // holds the lease.
        if want == self.n.lease_wanted && pair == self.n.lease_pair {
            return;
        }
        self.n.lease_pair = pair;
        let pair = pair.unwrap_or_default();
        self.n.lease_wanted = want;
        self.n.lease_gen = self.n.lease_gen.wrapping_add(1);
        if want {
            self.n.lease = Lease::Seeking;
        } else {
            if self.n.lease == Lease::Held || self.n.lease == Lease::Lost {
                self.journal(
                    "arbiter_lease_released",
                    Severity::Info,
                    "this server releases the arbiter's lease: it no longer takes the active \
                     role",
                );
            }
            self.n.lease = Lease::Released;
        }
        self.out.push(Action::Lease {
            hold: want,
            pair,
            gen: self.n.lease_gen,
        });
    }

    /// The arbiter thread's report on the lease of generation `gen`.
    pub(super) fn on_lease(&mut self, gen: u64, held: bool, detail: &str) {
        if gen != self.n.lease_gen || !self.n.lease_wanted {
            return; // about a lease since released
        }
        let was = self.n.lease;
        if held {
            if was == Lease::Held {
                return;
            }
            self.n.lease = Lease::Held;
            let again = if was == Lease::Lost { " again" } else { "" };
            self.journal(
                "arbiter_lease_held",
                Severity::Info,
                format!("this server holds the arbiter's lease{again} ({detail})"),
            );
            if let Some(why) = self.n.lease_takeover.take() {
                // The takeover that waited for it goes ahead if it is still wanted: an
                // operator's at once, an automatic one weighed again.
                if matches!(self.n.op, Some(super::ops::Op::Failover { .. })) {
                    self.take_over(&why);
                } else {
                    self.maybe_auto_failover();
                }
            }
            let asked = self.n.asked;
            self.set_duty(asked);
            return;
        }
        if was != Lease::Held {
            return; // still seeking: nothing changes
        }
        self.n.lease = Lease::Lost;
        let text = match self.n.cfg.arbiter {
            Some(ArbiterLoss::Hold) if self.n.duty == Duty::Active => format!(
                "the arbiter's lease could not be renewed in time ({detail}); this server \
                 keeps the active role (on_arbiter_loss = hold): no failover can happen \
                 while it holds, and if its peer reaches the arbiter when it does not, both \
                 may serve once the lease expires"
            ),
            _ => format!(
                "the arbiter's lease could not be renewed in time ({detail}); this server \
                 released the virtual IP and its active services before the lease can \
                 expire (on_arbiter_loss = demote), and takes them back once it wins the \
                 lease again"
            ),
        };
        self.journal("arbiter_lost", Severity::Error, text);
        let asked = self.n.asked;
        self.set_duty(asked);
    }
}
