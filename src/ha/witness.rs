//! The witness: a third party both servers can reach, such as the gateway, checked by
//! ICMP echo (`[witness]`). Part of the pure core.
//!
//! - A secondary that cannot reach the witness does not take over: it is the one cut
//!   off (`maybe_auto_failover`).
//! - A primary of an automatic pair that can reach neither its peer nor the witness
//!   releases its active duty (self-fencing) as soon as the peer counts as silent, which
//!   is a grace and a probe before the secondary may take over. Its state is left as it
//!   was; it takes the duty back when the peer or the witness answers again, unless the
//!   secondary has taken over meanwhile.
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
                // may have taken over. Probe it first; the fence is lifted only if it
                // does not answer (it is down), else its heartbeat decides.
                self.n.fence_probe = true;
                if !self.n.probing {
                    self.probe();
                }
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
        if std::mem::take(&mut self.n.fence_probe) && !ok && self.n.fenced {
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
        let cut_off = matches!(n.link, Link::Silent { .. } | Link::Lost);
        let fence = if n.fenced {
            // A peer whose Health Monitor answers may be active: only its heartbeat,
            // through the pair rules, lifts the fence then.
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
            self.set_duty(Duty::Standby);
        } else {
            self.journal(
                "self_fence_lifted",
                Severity::Info,
                "the peer is heard again, or found down once the witness answered: the fence \
                 is lifted",
            );
            if let Some(d) = duty_for(self.n.state, self.n.cfg.role) {
                self.set_duty(d);
            }
        }
    }
}
