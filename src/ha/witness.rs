//! The witness: a third party both servers can reach, such as the gateway, checked by
//! ICMP echo (`[witness]`). Part of the pure core.
//!
//! - A secondary that cannot reach the witness does not take over: it is the one cut
//!   off (`maybe_auto_failover`).
//! - A primary of an automatic pair that can reach neither its peer nor the witness
//!   releases its duty (self-fencing: the VIP and every service go, the database is left
//!   alone) as soon as the peer has missed `missed` heartbeats, which is a grace and a
//!   probe before the secondary may take over. Its state is left as it was. The fence is
//!   lifted by the peer's heartbeat (the pair rules decide who is active), by a probe sent
//!   after the witness came back that finds the peer down, or by two probes in a row that
//!   find the peer's Health Monitor answering without heartbeats (a broken heartbeat
//!   path, on which the secondary does not take over either).
//!
//! An active secondary is never fenced: the standby primary does not take over on its own
//! (`docs/states.md`, departure g), so fencing it would leave no server active.

use super::action::Severity;
use super::machine::{duty_for, Link, Step};
use super::state::{Duty, FailoverType, HaState, Role};
use HaState::*;

impl Step<'_> {
    pub(super) fn on_witness(&mut self, reachable: bool) {
        if !self.n.cfg.witness || self.n.witness == Some(reachable) {
            return;
        }
        let first = self.n.witness.is_none();
        self.n.witness = Some(reachable);
        if reachable {
            if !first {
                self.journal(
                    "witness_reachable",
                    Severity::Info,
                    "the witness answers again",
                );
            }
            if self.n.fenced && self.n.link != Link::Up {
                // Back in touch with the witness, still not with the peer: the secondary
                // may have taken over. Probe it afresh (a probe still out was sent while
                // cut off, and its verdict does not count); the fence is lifted only if
                // the fresh one finds it down, else its heartbeat decides.
                self.n.fence_probe = true;
                if self.n.probing {
                    self.n.stale_probe = true;
                } else {
                    self.probe();
                }
                self.n.next_probe_at = self.now;
            }
            // A takeover withheld for the witness may go now.
            self.maybe_auto_failover();
        } else {
            self.journal(
                "witness_unreachable",
                Severity::Warning,
                "the witness does not answer: while it does not, this server neither takes \
                 over nor, as an active primary cut off from its peer too, keeps the role",
            );
        }
    }

    /// A probe asked by `on_witness` answered (`ok`) or not: if not, the peer is down and
    /// the fence is lifted.
    pub(super) fn fence_probe_done(&mut self, ok: bool) {
        if !self.n.fenced {
            self.n.fence_probe = false;
            return;
        }
        if ok {
            // The peer's Health Monitor answers while its heartbeats do not: it lives,
            // and may be active. Twice in a row (a probe interval apart, with no
            // heartbeat between) it is a broken heartbeat path, which the secondary sees
            // too and does not take over on: the role comes back here.
            self.n.fence_answers = self.n.fence_answers.saturating_add(1);
            if self.n.fence_answers >= 2 {
                self.set_fence(false);
            }
        } else if std::mem::take(&mut self.n.fence_probe) && self.n.witness == Some(true) {
            self.set_fence(false);
        }
    }

    /// Fences this primary, or lifts the fence, for what is known now. Run after every
    /// event. The fence goes up when the peer is silent or lost and the witness does not
    /// answer; it comes down when the peer is heard again (the pair rules then decide),
    /// when the state leaves the active ones, or when a probe sent once the witness was
    /// back finds the peer down (`fence_probe_done`).
    pub(super) fn check_fence(&mut self) {
        let n = &self.n;
        let active_state = matches!(
            n.state,
            PrimaryActive | PrimaryLostSecondary | PrimaryUncertain
        );
        // Silent by the plain count of missed heartbeats, not the count the loss history
        // may have stretched: the secondary's clock for its takeover may be the plain one.
        let cut_off = match n.link {
            Link::Silent { .. } | Link::Lost => true,
            Link::Up => self.now >= n.heard_at.saturating_add(n.cfg.timers.silent_after()),
            Link::PathBroken => false,
        };
        let fence = if n.fenced {
            // Until a heartbeat (through the pair rules) or a probe lifts it.
            active_state && n.link != Link::Up
        } else {
            n.cfg.witness
                && n.cfg.role == Role::Primary
                && n.witness == Some(false)
                && cut_off
                && active_state
                && n.reg.as_ref().map(|r| r.failover_type) == Some(FailoverType::Automatic)
        };
        if fence != n.fenced {
            self.set_fence(fence);
        }
    }

    fn set_fence(&mut self, fence: bool) {
        let peer = self.n.peer_label();
        self.n.fenced = fence;
        self.n.fence_answers = 0;
        self.n.fence_probe = false;
        if fence {
            self.journal(
                "self_fenced",
                Severity::Error,
                format!(
                    "this primary reaches neither {peer} nor the witness: it released the \
                     virtual IP and its active services (self-fencing), so that the \
                     secondary can take over alone"
                ),
            );
            // Halted, not Standby: the VIP and every service go, and the database is left
            // as it is (a standby's would follow the peer, rewinding what it has not
            // replicated).
            self.set_duty(Duty::Halted);
        } else {
            self.journal(
                "self_fence_lifted",
                Severity::Info,
                "the peer is heard again, or found down once the witness answered: the fence \
                 is lifted",
            );
            // Still in an active state (Uncertain has no duty of its own): active again.
            let d = duty_for(self.n.state, self.n.cfg.role).unwrap_or(Duty::Active);
            self.set_duty(d);
        }
    }
}
