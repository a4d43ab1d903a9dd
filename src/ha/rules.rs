//! The pair rules: how a server reacts to its peer's heartbeats, to losing
//! its peer, and to its own health. Part of the pure core (`machine.rs`
//! holds the node, the stepping and the timers).

use super::action::Severity;
use super::event::Beacon;
use super::machine::{primary_was_standby, secondary_serving, secondary_was_active, Step};
use super::state::{FailoverType, HaState, HealthSummary, Level, Role};
use HaState::*;

impl Step<'_> {
    // ----- the pair rules ---------------------------------------------------

    /// The primary's reaction to the secondary's latest heartbeat.
    pub(super) fn reconcile_primary(&mut self, b: &Beacon) {
        let serving = secondary_serving(b);
        if let Some(from) = self.n.boot_from {
            if !matches!(self.n.state, HaInitializing | PrimaryAlone) {
                return;
            }
            let booting = b.state == HaInitializing;
            // A secondary starting up that held the active role when it stopped took over
            // after this primary last knew (both restarted, a power cut of the site, say):
            // its data is the newer, as if it were serving.
            let defer = primary_was_standby(from)
                || (booting && from == PrimaryFailover)
                || (booting && b.was_active);
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
        if self.n.fenced {
            // Never both active: this primary had released the role before the
            // secondary took it.
            self.enter(
                PrimaryFailover,
                "the secondary took over while this primary was fenced",
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
    pub(super) fn reconcile_secondary(&mut self, b: &Beacon) {
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
                } else if standby && !b.active && from == SecondarySyncing {
                    // This secondary stopped in sync, and the primary now stands by
                    // behind it: a takeover whose save failed (a full disk), or one that
                    // never came. Either way no server is active; being in sync when it
                    // stopped is proof enough to take over, as it would have without the
                    // restart (the health and lag checks still apply).
                    self.n.synced = true;
                    self.enter(
                        SecondaryLostPrimary,
                        &format!(
                            "the primary is {} and this secondary stopped in sync",
                            b.state
                        ),
                    );
                    self.maybe_auto_failover();
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
    pub(super) fn peer_lost(&mut self, why: &str) {
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
            // Lost again after a fresh look (the HA link came back): try again.
            SecondaryLostPrimary => self.maybe_auto_failover(),
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
        if n.takeover_retry_at.is_some_and(|t| self.now < t) {
            return; // backing off after a failed takeover
        }
        let withheld = if !n.synced {
            Some(
                "this secondary has not been in sync with an active primary since it started"
                    .to_string(),
            )
        } else if unhealthy {
            Some("this secondary is unhealthy itself".to_string())
        } else if n.ha_link_down {
            Some("this secondary's own HA interface is down".to_string())
        } else if n.cfg.witness && n.witness != Some(true) {
            Some("this secondary cannot reach the witness: it may be the one cut off".to_string())
        } else {
            n.lagging
                .as_ref()
                .map(|l| format!("the database standby is too far behind ({l})"))
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
            None => self.take_over("automatic failover"),
        }
    }

    pub(super) fn on_health(&mut self, h: HealthSummary) {
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
}
