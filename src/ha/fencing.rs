//! Fencing before takeover (`[fencing]`). Part of the pure core.
//!
//! A secondary about to take over first fences its peer: the shell runs the configured
//! command (a BMC's "chassis power off", a Redfish call), and only when it succeeds does
//! the takeover go ahead. A failed fencing either withholds the takeover, which is then
//! retried with the takeover backoff (`Withhold`), or is journaled and the takeover goes
//! ahead anyway (`Proceed`). A peer is fenced once per incident: until the pair is whole
//! again, a retried takeover does not fence it twice.

use super::action::{Action, Severity};
use super::machine::{FencePolicy, Step};
use super::state::HaState;
use HaState::*;

impl Step<'_> {
    /// Take the active role (Secondary Failover), fencing the peer first when configured.
    pub(super) fn take_over(&mut self, why: &str) {
        if !self.lease_for_takeover(why) {
            return;
        }
        if self.n.cfg.fence != FencePolicy::Off && !self.n.peer_fenced {
            if self.n.fencing_peer.is_none() {
                self.n.fencing_peer = Some(why.to_string());
                self.journal(
                    "fencing_started",
                    Severity::Warning,
                    format!("fencing {} before taking over ({why})", self.n.peer_label()),
                );
                let peer = self.n.peer_target().map(|t| t.address).unwrap_or_default();
                self.out.push(Action::FencePeer { peer });
            }
            return;
        }
        self.n.boot_from = None;
        self.enter(SecondaryFailover, why);
    }

    pub(super) fn on_fence_done(&mut self, ok: bool, detail: &str) {
        let Some(why) = self.n.fencing_peer.take() else {
            return;
        };
        let peer = self.n.peer_label();
        // Still without its peer? (It may have come back while the command ran; then this
        // incident is over, and nothing of it may carry over to the next.)
        let still = matches!(self.n.state, SecondaryLostPrimary | SecondaryAlone);
        let proceed = self.n.cfg.fence == FencePolicy::Proceed;
        if ok {
            self.journal(
                "fencing_done",
                Severity::Info,
                format!("{peer} is fenced: {detail}"),
            );
        } else if !still || proceed {
            let then = if still {
                "taking over all the same (policy proceed)"
            } else {
                "the peer is back meanwhile"
            };
            self.journal(
                "fencing_failed",
                Severity::Error,
                format!("fencing {peer} failed ({detail}); {then}"),
            );
        } else {
            let wait = self.back_off();
            let msg = format!(
                "fencing {peer} failed ({detail}): the takeover is withheld (policy withhold); \
                 an automatic one is tried again in {wait} ms"
            );
            self.journal("fencing_failed", Severity::Error, msg.clone());
            self.fail_op_failover(format!("failover refused: {msg}"));
            return;
        }
        if !still {
            self.fail_op_failover(format!(
                "failover refused: the peer is back ({})",
                self.n.state
            ));
            return;
        }
        self.n.peer_fenced = true;
        // An operator's failover goes ahead; an automatic one is weighed again (its
        // conditions may have changed while the command ran).
        if matches!(self.n.op, Some(super::ops::Op::Failover { .. })) {
            self.take_over(&why);
        } else {
            self.maybe_auto_failover();
        }
    }
}
