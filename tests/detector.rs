//! The failure detector under loss, on the simulator (the pure core, a virtual clock and
//! a network that drops each packet with a set chance): heavy loss between two healthy
//! servers fails nothing over, and a real failure under loss is still found in a bounded
//! time. Timers are the fault suite's: 200 ms heartbeats, 3 missed, 200 ms grace, 300 ms
//! probe (a 1.1 s budget on a clean path).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hamon::ha::sim::{Sim, P, S};
use hamon::ha::{Duty, FailoverType, HaState, Timers};

fn timers() -> Timers {
    Timers {
        interval: 200,
        missed: 3,
        grace: 200,
        probe_timeout: 300,
        data_gap_secs: 24 * 3600,
        copy_retry: 2_000,
    }
}

/// A settled automatic pair, with `loss` percent loss each way from now on.
fn lossy_pair(seed: u64, loss: u32) -> Sim {
    let mut sim = Sim::registered(timers(), seed, FailoverType::Automatic);
    sim.run_for(5_000);
    assert_eq!(sim.state(P), Some(HaState::PrimaryActive));
    assert_eq!(sim.state(S), Some(HaState::SecondarySyncing));
    sim.net.loss_pct = loss;
    sim
}

/// Times the secondary was told to become active.
fn takeovers(sim: &Sim) -> usize {
    sim.duties
        .iter()
        .filter(|(_, i, d)| *i == S && *d == Duty::Active)
        .count()
}

/// How long after `crash_at` the secondary was told to become active, if it was.
fn taken_over_after(sim: &Sim, crash_at: u64) -> Option<u64> {
    sim.duties
        .iter()
        .find(|(at, i, d)| *at >= crash_at && *i == S && *d == Duty::Active)
        .map(|(at, _, _)| at - crash_at)
}

#[test]
fn thirty_percent_loss_for_ten_minutes_fails_nothing_over() {
    for seed in 1..=5 {
        let mut sim = lossy_pair(seed, 30);
        sim.run_for(600_000);
        assert_eq!(takeovers(&sim), 0, "seed {seed}: {:?}", sim.history(S));
        assert_eq!(sim.state(P), Some(HaState::PrimaryActive), "seed {seed}");
        // The detector did suspect the path now and then: the asks answered it.
        let suspected = sim
            .journal_kinds(S)
            .iter()
            .filter(|k| *k == "heartbeats_missed")
            .count();
        eprintln!("seed {seed}: {suspected} suspicions at 30 % loss, no takeover");
    }
}

#[test]
fn sixty_percent_loss_for_a_minute_rarely_moves_the_vip() {
    let mut moves = 0;
    for seed in 1..=10 {
        let mut sim = lossy_pair(seed, 60);
        sim.run_for(60_000);
        moves += takeovers(&sim);
    }
    eprintln!("60 % loss, 10 runs of 60 s: {moves} takeovers");
    // keepalived moves the VIP several times a minute at this loss (docs/reliability.md).
    assert!(moves <= 3, "{moves} takeovers in 10 minutes at 60 % loss");
}

#[test]
fn a_crash_under_thirty_percent_loss_is_found_within_the_stretched_budget() {
    let t = timers();
    // Silence stretched to at most 4 x missed intervals, then the grace and the probe.
    let bound = 4 * t.silent_after() + t.grace + t.probe_timeout + t.interval;
    let mut worst = 0;
    for seed in 1..=10 {
        let mut sim = lossy_pair(seed, 30);
        sim.run_for(30_000);
        let crash_at = sim.now;
        sim.crash(P);
        sim.run_for(10_000);
        let took = taken_over_after(&sim, crash_at)
            .unwrap_or_else(|| panic!("seed {seed}: never took over: {:?}", sim.history(S)));
        assert!(took <= bound, "seed {seed}: {took} ms > {bound} ms");
        worst = worst.max(took);
    }
    eprintln!("crash under 30 % loss: taken over within {worst} ms (bound {bound} ms)");
}

#[test]
fn a_crash_on_a_clean_path_is_found_within_the_plain_budget() {
    let t = timers();
    let budget = t.silent_after() + t.grace + t.probe_timeout;
    for seed in 1..=5 {
        let mut sim = lossy_pair(seed, 0);
        let crash_at = sim.now;
        sim.crash(P);
        sim.run_for(5_000);
        let took = taken_over_after(&sim, crash_at).expect("took over");
        // The last heartbeat may have come up to one interval before the crash.
        assert!(took <= budget + t.interval, "seed {seed}: {took} ms");
    }
}
