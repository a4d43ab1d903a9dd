//! The arbiter's lease in the simulator: the core's side of `[arbiter]` (`ha/arbiter.rs`)
//! against a simulated etcd whose lease expires on its own clock. The real etcd runs in
//! `tests/arbiter.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hamon::ha::sim::{fast_timers, Sim, P, S};
use hamon::ha::{ArbiterLoss, Command, FailoverType, HaState, HealthSummary, Lease, Level, Reply};

const TTL: u64 = 1_000;
const MARGIN: u64 = 250;

fn pair(on_loss: ArbiterLoss) -> Sim {
    pair_of(on_loss, FailoverType::Automatic)
}

fn pair_of(on_loss: ArbiterLoss, failover_type: FailoverType) -> Sim {
    let mut sim = Sim::registered(fast_timers(), 7, failover_type);
    sim.configure_arbiter(on_loss, TTL, MARGIN);
    // The primary was active before the arbiter was configured: it wins the lease on its
    // next duty change; make one (its state asks for the active duty again).
    sim.crash(P);
    sim.start(P);
    sim.run_for(2_000);
    assert!(sim.is_active(P), "{:?}", sim.history(P));
    assert_eq!(holder(&sim), Some(P));
    sim
}

fn holder(sim: &Sim) -> Option<usize> {
    sim.arbiter.as_ref().and_then(|a| a.holder_at(sim.now))
}

fn lease(sim: &Sim, i: usize) -> Option<Lease> {
    sim.node(i).and_then(|n| n.status().lease)
}

/// Runs `ms` in 1 ms steps, asserting at every one that at most one server is active and
/// that an active server holds the lease. Returns how long each server was active.
fn run_checked(sim: &mut Sim, ms: u64) -> [u64; 2] {
    let mut active = [0; 2];
    for _ in 0..ms {
        sim.run_for(1);
        assert!(
            !(sim.is_active(P) && sim.is_active(S)),
            "both active at {}: {:?} / {:?}",
            sim.now,
            sim.history(P),
            sim.history(S)
        );
        for (i, a) in active.iter_mut().enumerate() {
            if sim.is_active(i) {
                *a += 1;
            }
        }
    }
    active
}

#[test]
fn a_partition_with_both_reaching_the_arbiter_changes_nothing() {
    let mut sim = pair(ArbiterLoss::Demote);
    sim.net.partitioned = true;
    let hold = 10 * sim.detection();
    let active = run_checked(&mut sim, hold);
    assert_eq!(active[S], 0, "the secondary never wins the lease");
    assert_eq!(active[P], hold, "the primary never lets go");
    assert!(sim
        .journal_kinds(S)
        .contains(&"arbiter_waiting".to_string()));
    assert_eq!(lease(&sim, S), Some(Lease::Seeking));
    // Healed: the secondary stops seeking and syncs again.
    sim.net.partitioned = false;
    sim.run_for(2_000);
    assert_eq!(sim.state(S), Some(HaState::SecondarySyncing));
    assert_eq!(lease(&sim, S), Some(Lease::Released));
    assert!(sim.is_active(P));
}

#[test]
fn a_primary_cut_off_from_peer_and_arbiter_demotes_before_the_secondary_wins() {
    let mut sim = pair(ArbiterLoss::Demote);
    let cut = sim.now;
    sim.net.partitioned = true;
    sim.arbiter.as_mut().unwrap().reaches[P] = false;
    run_checked(&mut sim, 4 * TTL);
    assert!(sim.is_active(S), "{:?}", sim.history(S));
    assert!(!sim.is_active(P));
    assert_eq!(lease(&sim, P), Some(Lease::Lost));
    assert!(sim.journal_kinds(P).contains(&"arbiter_lost".to_string()));
    // The secondary waited for the lease, no longer than its TTL after the primary's
    // last renewal (a poll, ttl / 10, apart), plus the takeover.
    let took = sim
        .duties
        .iter()
        .find(|(_, i, d)| *i == S && *d == hamon::ha::Duty::Active)
        .map(|(t, _, _)| t - cut)
        .unwrap();
    assert!(took >= TTL - TTL / 10, "took over after {took} ms");
    assert!(took <= TTL + sim.detection(), "took over after {took} ms");
}

#[test]
fn the_arbiter_lost_by_both_demotes_the_active_only_after_the_margin() {
    let mut sim = pair(ArbiterLoss::Demote);
    let a = sim.arbiter.as_mut().unwrap();
    a.reaches = [false, false];
    let active = run_checked(&mut sim, TTL - MARGIN - TTL / 10);
    assert_eq!(
        active[P],
        TTL - MARGIN - TTL / 10,
        "no demotion within the TTL"
    );
    run_checked(&mut sim, TTL);
    assert!(!sim.is_active(P) && !sim.is_active(S));
    assert_eq!(sim.state(P), Some(HaState::PrimaryActive), "state kept");
    assert_eq!(sim.state(S), Some(HaState::SecondarySyncing), "no failover");
    // The arbiter is back: the primary wins its lease again and serves.
    sim.arbiter.as_mut().unwrap().reaches = [true, true];
    run_checked(&mut sim, TTL);
    assert!(sim.is_active(P));
    assert_eq!(lease(&sim, P), Some(Lease::Held));
}

#[test]
fn the_arbiter_lost_by_both_under_hold_keeps_the_active() {
    let mut sim = pair(ArbiterLoss::Hold);
    sim.arbiter.as_mut().unwrap().reaches = [false, false];
    let active = run_checked(&mut sim, 5 * TTL);
    assert_eq!(active[P], 5 * TTL);
    assert_eq!(lease(&sim, P), Some(Lease::Lost));
    assert!(sim.journal_kinds(P).contains(&"arbiter_lost".to_string()));
}

#[test]
fn a_failover_by_command_hands_the_lease_over_without_waiting_for_the_ttl() {
    let mut sim = pair_of(ArbiterLoss::Demote, FailoverType::Manual);
    // An operator's failover is for a failed primary.
    let failed = HealthSummary {
        processes: Level::Failed,
        ..HealthSummary::default()
    };
    sim.health(P, failed);
    sim.run_for(500);
    let t0 = sim.now;
    let t = sim.command(S, Command::Failover);
    run_checked(&mut sim, TTL / 2);
    assert!(
        matches!(sim.reply(t), Some(Reply::Done { .. })),
        "{:?}",
        sim.reply(t)
    );
    assert!(sim.is_active(S));
    assert_eq!(holder(&sim), Some(S));
    assert!(sim.now - t0 <= TTL / 2);
}

#[test]
fn a_killed_primary_is_replaced_once_its_lease_expires() {
    let mut sim = pair(ArbiterLoss::Demote);
    sim.crash(P);
    let hold = TTL + 2 * sim.detection();
    run_checked(&mut sim, hold);
    assert!(sim.is_active(S));
    assert_eq!(holder(&sim), Some(S));
    // It comes back: it does not take the role (or the lease) from the secondary.
    sim.start(P);
    run_checked(&mut sim, 3 * TTL);
    assert!(sim.is_active(S));
    assert!(!sim.is_active(P));
}

#[test]
fn random_faults_never_make_two_active_servers() {
    for seed in 0..20 {
        let mut sim = pair(ArbiterLoss::Demote);
        for _ in 0..30 {
            match sim.random_below(6) {
                0 => sim.net.partitioned = !sim.net.partitioned,
                1 => {
                    let i = sim.random_below(2) as usize;
                    let a = sim.arbiter.as_mut().unwrap();
                    a.reaches[i] = !a.reaches[i];
                }
                2 => {
                    let i = sim.random_below(2) as usize;
                    if sim.is_up(i) {
                        sim.crash(i);
                    } else {
                        sim.start(i);
                    }
                }
                3 => sim.net.loss_pct = [0, 30, 60][sim.random_below(3) as usize],
                4 => {
                    let i = sim.random_below(2) as usize;
                    sim.command(i, Command::Failover);
                }
                _ => {}
            }
            let hold = 50 + sim.random_below(2 * TTL);
            run_checked(&mut sim, hold);
        }
        // Healed, both up, the arbiter reachable: one active server again.
        sim.net = hamon::ha::sim::Net {
            partitioned: false,
            loss_pct: 0,
            delay: 2,
        };
        sim.arbiter.as_mut().unwrap().reaches = [true, true];
        for i in [P, S] {
            if !sim.is_up(i) {
                sim.start(i);
            }
        }
        run_checked(&mut sim, 10 * TTL);
        assert!(
            sim.is_active(P) ^ sim.is_active(S),
            "seed {seed}: {:?} / {:?}",
            sim.history(P),
            sim.history(S)
        );
    }
}
