//! Golden scenario tests: the guide's failover/failback scenarios replayed on
//! two simulated servers, checking the exact state sequence of each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hamon::ha::sim::{dedup, fast_timers, register_command, Sim, KEY, P, S};
use hamon::ha::{Command, CopyKind, Duty, FailoverType, HaState, HealthSummary, Level, Reply};
use HaState::*;

fn pair(t: FailoverType) -> Sim {
    let mut sim = Sim::registered(fast_timers(), 1, t);
    assert_eq!(sim.state(P), Some(PrimaryActive));
    assert_eq!(sim.state(S), Some(SecondarySyncing));
    sim.clear_history();
    sim
}

fn expect(sim: &Sim, i: usize, want: &[HaState]) {
    let got = dedup(sim.history(i));
    let who = if i == P { "primary" } else { "secondary" };
    assert_eq!(got, want, "{who} went through {got:?}");
}

fn done(sim: &Sim, t: hamon::ha::Token) -> String {
    match sim.reply(t) {
        Some(Reply::Done { message }) => message.clone(),
        other => panic!("expected Done, got {other:?}"),
    }
}

fn refused(sim: &Sim, t: hamon::ha::Token) -> String {
    match sim.reply(t) {
        Some(Reply::Refused { message }) => message.clone(),
        other => panic!("expected Refused, got {other:?}"),
    }
}

fn failed_processes() -> HealthSummary {
    HealthSummary {
        processes: Level::Failed,
        ..Default::default()
    }
}

fn failback(sim: &mut Sim) -> String {
    let t = sim.command(S, Command::Failback);
    sim.run_for(1_000);
    done(sim, t)
}

// ----- registration -----------------------------------------------------------

#[test]
fn registration_success() {
    let mut sim = Sim::new(fast_timers(), 1);
    let t = sim.command(P, register_command(FailoverType::Manual, KEY));
    sim.run_for(2_000);
    assert!(done(&sim, t).contains("registration complete"));
    expect(&sim, P, &[StandAlone, HaInitializing, PrimaryActive]);
    expect(&sim, S, &[StandAlone, HaInitializing, SecondarySyncing]);
    assert!(sim.is_active(P) && !sim.is_active(S));
    let reg = sim.node(S).and_then(|n| n.registration()).cloned();
    assert_eq!(
        reg.as_ref().map(|r| r.secondary.name.as_str()),
        Some("ha-b")
    );
    assert_eq!(reg.as_ref().map(|r| r.primary.name.as_str()), Some("ha-a"));
}

#[test]
fn before_registration_only_the_primary_serves() {
    // A server installed as the secondary is the spare even before it is
    // paired: no active duty (no VIP, no `run_on = "active"` services, no
    // database promotion), at start and after a failed registration.
    let mut sim = Sim::new(fast_timers(), 1);
    sim.run_for(1_000);
    assert_eq!(sim.state(S), Some(StandAlone));
    assert_eq!(sim.node(P).map(|n| n.duty()), Some(Duty::Standalone));
    assert_eq!(sim.node(S).map(|n| n.duty()), Some(Duty::Standby));
    let t = sim.command(P, register_command(FailoverType::Manual, "Wrong-Key-1"));
    sim.run_for(2_000);
    refused(&sim, t);
    assert_eq!(sim.state(S), Some(StandAlone));
    assert_eq!(sim.node(S).map(|n| n.duty()), Some(Duty::Standby));
    // Registered, it stays standby: the duty never passes through Standalone.
    let t = sim.command(P, register_command(FailoverType::Manual, KEY));
    sim.run_for(2_000);
    done(&sim, t);
    assert_eq!(sim.state(S), Some(SecondarySyncing));
    assert_eq!(sim.node(S).map(|n| n.duty()), Some(Duty::Standby));
    assert!(sim.is_active(P));
}

#[test]
fn registration_with_wrong_key_fails_and_both_stay_stand_alone() {
    let mut sim = Sim::new(fast_timers(), 1);
    let t = sim.command(P, register_command(FailoverType::Manual, "Wrong-Key-1"));
    sim.run_for(2_000);
    assert!(
        refused(&sim, t).contains("authentication"),
        "{:?}",
        sim.reply(t)
    );
    expect(&sim, P, &[StandAlone, HaInitializing, StandAlone]);
    expect(&sim, S, &[StandAlone]);
}

#[test]
fn registration_with_unreachable_secondary_fails() {
    let mut sim = Sim::new(fast_timers(), 1);
    sim.net.partitioned = true;
    let t = sim.command(P, register_command(FailoverType::Automatic, KEY));
    sim.run_for(2_000);
    assert!(refused(&sim, t).contains("registration failed"));
    expect(&sim, P, &[StandAlone, HaInitializing, StandAlone]);
    expect(&sim, S, &[StandAlone]);
}

#[test]
fn registration_whose_initial_copy_fails_returns_both_to_stand_alone() {
    let mut sim = Sim::new(fast_timers(), 1);
    sim.failing_copies.insert((P, CopyKind::Initial));
    let t = sim.command(P, register_command(FailoverType::Manual, KEY));
    sim.run_for(2_000);
    assert!(refused(&sim, t).contains("initial copy"));
    expect(&sim, P, &[StandAlone, HaInitializing, StandAlone]);
    expect(&sim, S, &[StandAlone, HaInitializing, StandAlone]);
}

#[test]
fn registration_is_refused_on_the_secondary_and_when_already_registered() {
    let mut sim = pair(FailoverType::Manual);
    let t = sim.command(S, register_command(FailoverType::Manual, KEY));
    assert!(refused(&sim, t).contains("primary server"));
    let t = sim.command(P, register_command(FailoverType::Manual, KEY));
    assert!(refused(&sim, t).contains("ha remove"));
}

// ----- Network is down ----------------------------------------------------------

#[test]
fn network_down_automatic_then_restart_primary_and_fail_back() {
    let mut sim = pair(FailoverType::Automatic);
    sim.net.partitioned = true;
    sim.run_for(2_000);
    expect(&sim, P, &[PrimaryActive, PrimaryLostSecondary]);
    expect(
        &sim,
        S,
        &[
            SecondarySyncing,
            SecondaryLostPrimary,
            SecondaryFailover,
            SecondaryActive,
        ],
    );
    // Network restored: both were active, the primary stands down.
    sim.net.partitioned = false;
    sim.run_for(1_000);
    assert_eq!(sim.state(P), Some(PrimaryFailover));
    assert!(sim.is_active(S) && !sim.is_active(P));
    // The guide's recovery: restart the primary, then fail back.
    sim.crash(P);
    sim.start(P);
    sim.run_for(1_000);
    assert_eq!(sim.state(P), Some(PrimarySyncing));
    sim.clear_history();
    failback(&mut sim);
    expect(&sim, P, &[PrimarySyncing, PrimaryFailback, PrimaryActive]);
    expect(
        &sim,
        S,
        &[
            SecondaryActive,
            SecondaryFailback,
            SecondaryPostFailback,
            SecondarySyncing,
        ],
    );
}

#[test]
fn automatic_failover_waits_while_the_database_standby_is_too_far_behind() {
    let mut sim = pair(FailoverType::Automatic);
    sim.replica_lag(S, Some("64 MiB behind, bound 16 MiB"));
    sim.crash(P);
    sim.run_for(2_000);
    expect(&sim, S, &[SecondarySyncing, SecondaryLostPrimary]);
    assert!(!sim.is_active(S));
    assert!(sim
        .journal_kinds(S)
        .contains(&"failover_withheld".to_string()));
    // Replay catches up: the bound is met and the takeover goes ahead.
    sim.replica_lag(S, None);
    sim.run_for(1_000);
    expect(
        &sim,
        S,
        &[
            SecondarySyncing,
            SecondaryLostPrimary,
            SecondaryFailover,
            SecondaryActive,
        ],
    );
}

#[test]
fn network_down_manual_waits_for_the_operator() {
    let mut sim = pair(FailoverType::Manual);
    sim.net.partitioned = true;
    sim.run_for(5_000);
    expect(&sim, P, &[PrimaryActive, PrimaryLostSecondary]);
    expect(&sim, S, &[SecondarySyncing, SecondaryLostPrimary]);
    assert!(!sim.is_active(S));
    // Connectivity restored before anyone acts: the pair simply heals.
    sim.net.partitioned = false;
    sim.run_for(1_000);
    expect(
        &sim,
        P,
        &[PrimaryActive, PrimaryLostSecondary, PrimaryActive],
    );
    expect(
        &sim,
        S,
        &[SecondarySyncing, SecondaryLostPrimary, SecondarySyncing],
    );
}

#[test]
fn network_down_manual_operator_fails_over_then_fails_back() {
    let mut sim = pair(FailoverType::Manual);
    sim.net.partitioned = true;
    sim.run_for(2_000);
    let t = sim.command(S, Command::Failover);
    sim.run_for(200);
    assert!(done(&sim, t).contains("Completed failover"));
    sim.net.partitioned = false;
    sim.run_for(1_000);
    assert_eq!(sim.state(P), Some(PrimaryFailover));
    failback(&mut sim);
    assert_eq!(sim.state(P), Some(PrimaryActive));
    assert_eq!(sim.state(S), Some(SecondarySyncing));
}

// ----- Process restart fails -------------------------------------------------------

#[test]
fn process_restart_fails_automatic() {
    let mut sim = pair(FailoverType::Automatic);
    sim.health(P, failed_processes());
    sim.run_for(1_000);
    expect(&sim, P, &[PrimaryActive, PrimaryFailover]);
    expect(
        &sim,
        S,
        &[
            SecondarySyncing,
            SecondaryLostPrimary,
            SecondaryFailover,
            SecondaryActive,
        ],
    );
    // The secondary acted on the primary's own report, without the grace wait.
    let active_at = sim
        .journal
        .iter()
        .find(|(_, i, e)| *i == S && e.kind == "failover_complete")
        .map(|(t, _, _)| *t);
    assert!(
        active_at.is_some_and(|t| t < 2_000 + 100 + 50),
        "{active_at:?}"
    );
    sim.crash(P);
    sim.start(P);
    sim.run_for(1_000);
    expect(
        &sim,
        P,
        &[
            PrimaryActive,
            PrimaryFailover,
            HaInitializing,
            PrimaryPreparingForFailback,
            PrimarySyncing,
        ],
    );
    failback(&mut sim);
    assert_eq!(sim.state(P), Some(PrimaryActive));
}

#[test]
fn process_restart_fails_manual() {
    let mut sim = pair(FailoverType::Manual);
    sim.health(P, failed_processes());
    sim.run_for(2_000);
    expect(&sim, S, &[SecondarySyncing, SecondaryLostPrimary]);
    assert!(!sim.is_active(P) && !sim.is_active(S));
    let t = sim.command(S, Command::Failover);
    sim.run_for(200);
    done(&sim, t);
    sim.crash(P);
    sim.start(P);
    sim.run_for(1_000);
    assert_eq!(sim.state(P), Some(PrimarySyncing));
    failback(&mut sim);
    expect(
        &sim,
        S,
        &[
            SecondarySyncing,
            SecondaryLostPrimary,
            SecondaryFailover,
            SecondaryActive,
            SecondaryFailback,
            SecondaryPostFailback,
            SecondarySyncing,
        ],
    );
}

// ----- Restarts during synchronisation ------------------------------------------------

#[test]
fn primary_restarts_during_sync_manual_needs_no_operator() {
    let mut sim = pair(FailoverType::Manual);
    sim.crash(P);
    sim.run_for(1_500);
    sim.start(P);
    sim.run_for(1_000);
    expect(&sim, P, &[PrimaryActive, HaInitializing, PrimaryActive]);
    expect(
        &sim,
        S,
        &[SecondarySyncing, SecondaryLostPrimary, SecondarySyncing],
    );
}

#[test]
fn primary_restarts_during_sync_automatic_needs_a_failback() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.run_for(1_500);
    sim.start(P);
    sim.run_for(1_000);
    expect(
        &sim,
        P,
        &[
            PrimaryActive,
            HaInitializing,
            PrimaryPreparingForFailback,
            PrimarySyncing,
        ],
    );
    expect(
        &sim,
        S,
        &[
            SecondarySyncing,
            SecondaryLostPrimary,
            SecondaryFailover,
            SecondaryActive,
        ],
    );
    failback(&mut sim);
    assert_eq!(
        (sim.state(P), sim.state(S)),
        (Some(PrimaryActive), Some(SecondarySyncing))
    );
}

#[test]
fn quick_primary_restart_is_not_a_failover() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.run_for(100);
    sim.start(P);
    sim.run_for(2_000);
    expect(&sim, P, &[PrimaryActive, HaInitializing, PrimaryActive]);
    expect(&sim, S, &[SecondarySyncing]);
}

#[test]
fn secondary_restarts_during_sync_same_for_both_types() {
    for t in [FailoverType::Manual, FailoverType::Automatic] {
        let mut sim = pair(t);
        sim.crash(S);
        sim.run_for(1_500);
        sim.start(S);
        sim.run_for(1_000);
        expect(
            &sim,
            P,
            &[PrimaryActive, PrimaryLostSecondary, PrimaryActive],
        );
        expect(
            &sim,
            S,
            &[SecondarySyncing, HaInitializing, SecondarySyncing],
        );
    }
}

// ----- Split brain -----------------------------------------------------------------------

fn split_brain() -> Sim {
    let mut sim = pair(FailoverType::Automatic);
    sim.net.partitioned = true;
    sim.run_for(2_000);
    assert!(sim.is_active(P) && sim.is_active(S));
    sim.net.partitioned = false;
    sim.run_for(1_000);
    assert_eq!(sim.state(P), Some(PrimaryFailover));
    assert!(sim.journal_kinds(P).contains(&"split_brain".to_string()));
    sim
}

#[test]
fn split_brain_keep_the_primarys_data() {
    let mut sim = split_brain();
    sim.clear_history();
    // Remove HA on the primary (answering "no" to purging data), register again.
    let t = sim.command(P, Command::Remove { purge: false });
    sim.run_for(500);
    assert!(done(&sim, t).contains("both servers"));
    let t = sim.command(P, register_command(FailoverType::Automatic, KEY));
    sim.run_for(2_000);
    done(&sim, t);
    expect(
        &sim,
        P,
        &[PrimaryFailover, StandAlone, HaInitializing, PrimaryActive],
    );
    expect(
        &sim,
        S,
        &[
            SecondaryActive,
            StandAlone,
            HaInitializing,
            SecondarySyncing,
        ],
    );
}

#[test]
fn split_brain_keep_the_secondarys_data() {
    let mut sim = split_brain();
    sim.clear_history();
    failback(&mut sim);
    expect(&sim, P, &[PrimaryFailover, PrimaryFailback, PrimaryActive]);
    expect(
        &sim,
        S,
        &[
            SecondaryActive,
            SecondaryFailback,
            SecondaryPostFailback,
            SecondarySyncing,
        ],
    );
}

// ----- Both servers down ---------------------------------------------------------------

#[test]
fn both_powered_down_secondary_first_then_primary() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.crash(S);
    sim.run_for(1_000);
    sim.start(S);
    sim.run_for(3_000);
    // The secondary never takes over on its own after a cold start.
    expect(
        &sim,
        S,
        &[
            SecondarySyncing,
            HaInitializing,
            SecondaryAlone,
            SecondaryLostPrimary,
        ],
    );
    assert!(!sim.is_active(S));
    sim.start(P);
    sim.run_for(1_000);
    expect(&sim, P, &[PrimaryActive, HaInitializing, PrimaryActive]);
    expect(
        &sim,
        S,
        &[
            SecondarySyncing,
            HaInitializing,
            SecondaryAlone,
            SecondaryLostPrimary,
            SecondarySyncing,
        ],
    );
}

#[test]
fn both_down_and_secondary_will_not_restart() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.crash(S);
    sim.start(P);
    sim.run_for(10_000);
    expect(&sim, P, &[PrimaryActive, HaInitializing, PrimaryAlone]);
    assert!(
        !sim.is_active(P),
        "Primary Alone runs only the Health Monitor"
    );
    assert!(sim.journal_kinds(P).contains(&"primary_alone".to_string()));
    let t = sim.command(P, Command::Remove { purge: false });
    sim.run_for(1_000);
    assert!(done(&sim, t).contains("run `hamon ha remove` there too"));
    assert_eq!(sim.state(P), Some(StandAlone));
    assert_eq!(sim.node(P).map(|n| n.duty()), Some(Duty::Standalone));
}

// ----- Replace the primary, secondary goes down ---------------------------------------------

#[test]
fn replace_the_primary_server() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.run_for(1_500);
    assert_eq!(sim.state(S), Some(SecondaryActive));
    // New hardware: nothing on disk, same identity, the secondary's key set.
    sim.reinstall(P);
    sim.set_key(P, KEY);
    sim.start(P);
    sim.run_for(500);
    assert_eq!(sim.state(P), Some(StandAlone));
    sim.clear_history();
    failback(&mut sim);
    expect(&sim, P, &[StandAlone, PrimaryFailback, PrimaryActive]);
    expect(
        &sim,
        S,
        &[
            SecondaryActive,
            SecondaryFailback,
            SecondaryPostFailback,
            SecondarySyncing,
        ],
    );
    sim.run_for(2_000);
    assert_eq!(
        (sim.state(P), sim.state(S)),
        (Some(PrimaryActive), Some(SecondarySyncing))
    );
}

#[test]
fn secondary_goes_down_and_comes_back() {
    let mut sim = pair(FailoverType::Manual);
    sim.crash(S);
    sim.run_for(2_000);
    expect(&sim, P, &[PrimaryActive, PrimaryLostSecondary]);
    sim.start(S);
    sim.run_for(1_000);
    expect(
        &sim,
        P,
        &[PrimaryActive, PrimaryLostSecondary, PrimaryActive],
    );
    expect(
        &sim,
        S,
        &[SecondarySyncing, HaInitializing, SecondarySyncing],
    );
}

// ----- Operator commands -----------------------------------------------------------------

#[test]
fn failover_is_refused_while_the_primary_is_healthy() {
    let mut sim = pair(FailoverType::Manual);
    let t = sim.command(S, Command::Failover);
    assert!(refused(&sim, t).contains("healthy"));
    let t = sim.command(P, Command::Failover);
    assert!(refused(&sim, t).contains("secondary server"));
    let t = sim.command(S, Command::Failback);
    assert!(refused(&sim, t).contains("Secondary Active"));
    expect(&sim, S, &[SecondarySyncing]);
}

#[test]
fn failback_is_refused_while_the_primary_is_down() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.run_for(1_500);
    let t = sim.command(S, Command::Failback);
    sim.run_for(1_000);
    assert!(refused(&sim, t).contains("failback failed"));
    assert_eq!(sim.state(S), Some(SecondaryActive));
    assert!(sim.is_active(S));
}

#[test]
fn graceful_stop_of_the_active_primary_is_a_failure_to_the_secondary() {
    let mut sim = pair(FailoverType::Automatic);
    sim.stop(P);
    sim.run_for(100);
    assert!(!sim.is_up(P));
    assert_eq!(
        sim.state(S),
        Some(SecondaryActive),
        "taken over without the detection wait"
    );
}

// ----- Data gap -----------------------------------------------------------------------------

#[test]
fn data_gap_forces_a_full_copy_before_failback() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.run_for(1_500);
    sim.jump_wall(25 * 3600);
    sim.start(P);
    sim.run_for(1_000);
    expect(
        &sim,
        P,
        &[
            PrimaryActive,
            HaInitializing,
            PrimaryPreparingForFailback,
            PrimarySyncing,
        ],
    );
    assert!(sim.journal_kinds(P).contains(&"data_gap".to_string()));
    failback(&mut sim);
}

#[test]
fn failed_data_gap_copy_blocks_failback_until_a_retry_succeeds() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.run_for(1_500);
    sim.jump_wall(30 * 3600);
    sim.failing_copies.insert((P, CopyKind::DataGap));
    sim.start(P);
    sim.run_for(1_000);
    assert_eq!(sim.state(P), Some(PrimaryDatabaseCopyFailed));
    let t = sim.command(S, Command::Failback);
    sim.run_for(500);
    assert!(refused(&sim, t).contains("blocked"));
    assert_eq!(sim.state(S), Some(SecondaryActive));
    sim.failing_copies.clear();
    sim.run_for(3_000); // the retry runs every 2 s in the fast profile
    assert_eq!(sim.state(P), Some(PrimarySyncing));
    failback(&mut sim);
    assert_eq!(sim.state(P), Some(PrimaryActive));
}

#[test]
fn short_outage_has_no_data_gap() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.run_for(1_500);
    sim.jump_wall(3600);
    sim.failing_copies.insert((P, CopyKind::DataGap)); // would fail if attempted
    sim.start(P);
    sim.run_for(1_000);
    assert_eq!(sim.state(P), Some(PrimarySyncing));
}

// ----- Database health (Uncertain) ------------------------------------------------------------

#[test]
fn uncertain_primary_fails_over_automatically() {
    let mut sim = pair(FailoverType::Automatic);
    sim.health(
        P,
        HealthSummary {
            database: Level::Failed,
            ..Default::default()
        },
    );
    sim.run_for(1_000);
    expect(&sim, P, &[PrimaryActive, PrimaryUncertain, PrimaryFailover]);
    expect(
        &sim,
        S,
        &[
            SecondarySyncing,
            SecondaryLostPrimary,
            SecondaryFailover,
            SecondaryActive,
        ],
    );
}

#[test]
fn uncertain_primary_recovers_with_manual_failover() {
    let mut sim = pair(FailoverType::Manual);
    sim.health(
        P,
        HealthSummary {
            database: Level::Failed,
            ..Default::default()
        },
    );
    sim.run_for(1_000);
    sim.health(
        P,
        HealthSummary {
            database: Level::Ok,
            ..Default::default()
        },
    );
    sim.run_for(1_000);
    expect(&sim, P, &[PrimaryActive, PrimaryUncertain, PrimaryActive]);
    expect(
        &sim,
        S,
        &[SecondarySyncing, SecondaryLostPrimary, SecondarySyncing],
    );
}

#[test]
fn uncertain_secondary_does_not_take_over() {
    let mut sim = pair(FailoverType::Automatic);
    sim.health(
        S,
        HealthSummary {
            database: Level::Failed,
            ..Default::default()
        },
    );
    sim.run_for(500);
    assert_eq!(sim.state(S), Some(SecondaryUncertain));
    sim.crash(P);
    sim.run_for(2_000);
    assert_eq!(sim.state(S), Some(SecondaryLostPrimary));
    assert!(!sim.is_active(S));
    sim.health(
        S,
        HealthSummary {
            database: Level::Ok,
            ..Default::default()
        },
    );
    sim.run_for(500);
    assert_eq!(
        sim.state(S),
        Some(SecondaryActive),
        "takes over once healthy"
    );
}

// ----- Persistence ------------------------------------------------------------------------------

#[test]
fn registration_and_role_survive_restarts_of_both() {
    let mut sim = pair(FailoverType::Manual);
    sim.crash(P);
    sim.crash(S);
    sim.start(P);
    sim.start(S);
    sim.run_for(2_000);
    assert_eq!(
        (sim.state(P), sim.state(S)),
        (Some(PrimaryActive), Some(SecondarySyncing))
    );
    let ft = sim
        .node(S)
        .and_then(|n| n.registration())
        .map(|r| r.failover_type);
    assert_eq!(ft, Some(FailoverType::Manual));
}

#[test]
fn a_secondary_that_was_active_resumes_when_both_restart() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.run_for(1_500);
    sim.start(P);
    sim.run_for(1_000);
    assert_eq!(sim.state(P), Some(PrimarySyncing));
    sim.crash(P);
    sim.crash(S);
    sim.start(P);
    sim.start(S);
    sim.run_for(2_000);
    assert_eq!(
        (sim.state(P), sim.state(S)),
        (Some(PrimarySyncing), Some(SecondaryActive))
    );
}

// ----- Regressions found in review ------------------------------------------------------------

#[test]
fn a_secondary_stopped_while_active_and_uncertain_resumes_active() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.run_for(1_500);
    sim.health(
        S,
        HealthSummary {
            database: Level::Failed,
            ..Default::default()
        },
    );
    sim.run_for(100);
    assert_eq!(sim.state(S), Some(SecondaryUncertain));
    sim.crash(S);
    sim.start(S);
    sim.run_for(1_000);
    assert_eq!(
        sim.state(S),
        Some(SecondaryActive),
        "{:?}",
        dedup(sim.history(S))
    );
    assert!(sim.is_active(S));
}

#[test]
fn a_peer_that_answers_probes_but_sends_no_heartbeats_is_not_probed_in_a_loop() {
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(S);
    sim.set_key(S, "Other-Key-1"); // heartbeats no longer authenticate
    sim.start(S);
    let before = sim.probes[S];
    sim.run_for(10_000);
    let probes = sim.probes[S] - before;
    // One at start-up, then one per max(grace, missed heartbeats) = 300 ms.
    assert!(probes <= 10_000 / 300 + 2, "{probes} probes in 10 s");
    assert_eq!(
        sim.state(S),
        Some(HaInitializing),
        "no decision without the peer's state"
    );
    let broken = sim
        .journal_kinds(S)
        .iter()
        .filter(|k| *k == "heartbeat_path_broken")
        .count();
    assert_eq!(broken, 1);
    assert!(!sim.is_active(S));
}

#[test]
fn a_failed_takeover_is_reported_as_failed() {
    let mut sim = pair(FailoverType::Manual);
    sim.crash(P);
    sim.run_for(1_500);
    sim.failing_duties.insert((S, hamon::ha::Duty::Active));
    let t = sim.command(S, Command::Failover);
    sim.run_for(200);
    assert!(refused(&sim, t).contains("could not take the active role"));
    assert_eq!(sim.state(S), Some(SecondaryLostPrimary));
    assert!(!sim
        .journal_kinds(S)
        .contains(&"failover_complete".to_string()));
}

#[test]
fn a_takeover_that_keeps_failing_backs_off_and_is_journaled_once() {
    // The primary reports a failure (its heartbeats keep coming), and the
    // secondary cannot claim the VIP: automatic takeovers are retried after
    // 1, 2, 4, ... s, not at every heartbeat, and journaled once.
    let mut sim = pair(FailoverType::Automatic);
    sim.failing_duties.insert((S, hamon::ha::Duty::Active));
    sim.health(P, failed_processes());
    sim.run_for(10_000);
    let attempts = dedup(sim.history(S))
        .iter()
        .filter(|s| **s == SecondaryFailover)
        .count();
    // Attempts at about 0, 1, 3 and 7 s: four, where one per heartbeat
    // (100 ms) would be a hundred.
    assert!((3..=5).contains(&attempts), "{attempts} attempts");
    let failed = sim
        .journal_kinds(S)
        .iter()
        .filter(|k| *k == "duty_failed")
        .count();
    assert_eq!(failed, 1);
    assert_eq!(sim.state(S), Some(SecondaryLostPrimary));
    // Once the VIP can be claimed, the next retry takes over.
    sim.failing_duties.clear();
    sim.run_for(20_000);
    assert_eq!(sim.state(S), Some(SecondaryActive));
    assert!(sim.is_active(S));
}

#[test]
fn after_the_pair_heals_a_new_incident_is_tried_at_once_and_journaled_again() {
    let mut sim = pair(FailoverType::Automatic);
    sim.failing_duties.insert((S, hamon::ha::Duty::Active));
    sim.crash(P);
    // Attempts at about 0, 1, 3 and 7 s after detection: the backoff is
    // now 8 s.
    sim.run_for(9_000);
    assert_eq!(sim.state(S), Some(SecondaryLostPrimary));
    // The primary comes back: the pair is whole again.
    sim.start(P);
    sim.run_for(1_000);
    assert_eq!(sim.state(P), Some(PrimaryActive));
    assert_eq!(sim.state(S), Some(SecondarySyncing));
    sim.clear_history();
    // A new incident: tried as soon as it is detected (not after the old
    // backoff), and its failure journaled again.
    sim.crash(P);
    sim.run_for(sim.detection() + 200);
    assert!(
        sim.history(S).contains(&SecondaryFailover),
        "{:?}",
        sim.history(S)
    );
    let failed = sim
        .journal_kinds(S)
        .iter()
        .filter(|k| *k == "duty_failed")
        .count();
    assert_eq!(failed, 2);
}

#[test]
fn a_secondary_that_starts_up_straight_into_lost_primary_runs_its_standby_services() {
    let mut sim = pair(FailoverType::Manual);
    sim.health(P, failed_processes());
    sim.run_for(1_000);
    assert_eq!(sim.state(P), Some(PrimaryFailover));
    sim.crash(S);
    sim.start(S);
    sim.run_for(1_000);
    expect(
        &sim,
        S,
        &[
            SecondarySyncing,
            SecondaryLostPrimary,
            HaInitializing,
            SecondaryLostPrimary,
        ],
    );
    assert_eq!(
        sim.node(S).map(|n| n.duty()),
        Some(hamon::ha::Duty::Standby)
    );
}

// ----- Watchers --------------------------------------------------------------------------------

#[test]
fn a_secondary_whose_own_ha_interface_is_down_does_not_take_over() {
    let mut sim = pair(FailoverType::Automatic);
    // Its link drops: heartbeats stop at once, long before the NIC watcher's debounced
    // verdict would call this server unhealthy.
    sim.ha_link(S, false);
    sim.run_for(5_000);
    assert!(!sim.is_active(S), "{:?}", sim.history(S));
    assert_eq!(sim.state(S), Some(SecondaryLostPrimary));
    assert!(sim
        .journal_kinds(S)
        .contains(&"failover_withheld".to_string()));
    // Back up: the primary is heard again and nothing moved.
    sim.ha_link(S, true);
    sim.run_for(2_000);
    assert_eq!(sim.state(S), Some(SecondarySyncing));
    assert_eq!(sim.state(P), Some(PrimaryActive));
}

#[test]
fn a_probe_sent_while_the_secondarys_link_was_down_does_not_decide_after_it_returns() {
    let mut sim = pair(FailoverType::Automatic);
    // A slow path: the first heartbeat after the link returns comes after the probe's
    // verdict.
    sim.net.delay = 150;
    sim.run_for(2_000);
    sim.ha_link(S, false);
    // Until the secondary probes, cut off; its link returns while that probe is out.
    let probes = sim.probes[S];
    while sim.probes[S] == probes {
        sim.run_for(5);
    }
    sim.ha_link(S, true);
    sim.run_for(3_000);
    assert!(
        !sim.duties
            .iter()
            .any(|(_, i, d)| *i == S && *d == Duty::Active),
        "{:?}",
        sim.history(S)
    );
    assert_eq!(sim.state(S), Some(SecondarySyncing));
}

#[test]
fn a_secondary_whose_link_returns_while_the_primary_is_gone_takes_over() {
    let mut sim = pair(FailoverType::Automatic);
    sim.ha_link(S, false);
    sim.run_for(3_000);
    sim.crash(P);
    sim.ha_link(S, true);
    sim.run_for(sim.detection() + 2_000);
    assert!(sim.is_active(S), "{:?}", sim.history(S));
}

#[test]
fn losing_the_ha_interface_on_the_active_primary_is_a_failure() {
    let mut sim = pair(FailoverType::Automatic);
    sim.health(
        P,
        HealthSummary {
            nic: Level::Failed,
            ..Default::default()
        },
    );
    sim.net.partitioned = true; // the interface is gone: nothing gets through
    sim.run_for(2_000);
    expect(&sim, P, &[PrimaryActive, PrimaryFailover]);
    expect(
        &sim,
        S,
        &[
            SecondarySyncing,
            SecondaryLostPrimary,
            SecondaryFailover,
            SecondaryActive,
        ],
    );
    sim.net.partitioned = false;
    sim.run_for(1_000);
    assert!(
        !sim.is_active(P) && sim.is_active(S),
        "no split brain when the link returns"
    );
}

#[test]
fn a_secondary_without_its_interface_does_not_take_over() {
    let mut sim = pair(FailoverType::Automatic);
    sim.health(
        S,
        HealthSummary {
            nic: Level::Failed,
            ..Default::default()
        },
    );
    sim.crash(P);
    sim.run_for(2_000);
    assert_eq!(sim.state(S), Some(SecondaryLostPrimary));
    assert!(sim
        .journal_kinds(S)
        .contains(&"failover_withheld".to_string()));
}

// ----- restarts answered at once ------------------------------------------------------------

#[test]
fn a_restarted_peer_is_answered_at_once_and_only_from_its_address() {
    use hamon::ha::{step, Action, Event};
    let sim = pair(FailoverType::Automatic);
    let mut node = sim.node(S).unwrap().clone();
    let heartbeats = |actions: &[Action]| {
        actions
            .iter()
            .filter(
                |a| matches!(a, Action::SendHeartbeat { address, .. } if address == "192.0.2.11"),
            )
            .count()
    };
    let booted = |from: &str| Event::PeerBooted { from: from.into() };
    // A spoofed source is not answered.
    let now = node.next_deadline().unwrap().max(sim.now);
    assert_eq!(heartbeats(&step(&mut node, booted("192.0.2.99"), now)), 0);
    // The registered peer is answered at once (not at the next interval),
    // even right after a regular heartbeat, which did not echo the new boot...
    assert_eq!(heartbeats(&step(&mut node, Event::Tick, now)), 1);
    assert_eq!(heartbeats(&step(&mut node, booted("192.0.2.11"), now)), 1);
    // ...but not again within the prompt gap: a flood costs one heartbeat
    // per 50 ms.
    for dt in 1..50 {
        assert_eq!(
            heartbeats(&step(&mut node, booted("192.0.2.11"), now + dt)),
            0
        );
    }
    assert_eq!(
        heartbeats(&step(&mut node, booted("192.0.2.11"), now + 50)),
        1
    );
    assert_eq!(node.state(), SecondarySyncing);
}

/// Ticks that come a little late (a busy machine, a coarse timer) do not push each
/// heartbeat later than the last: the schedule keeps its cadence, so that the peer never
/// sees a slow sender as a lossy path and stretches its failure detector.
#[test]
fn late_ticks_keep_the_heartbeat_cadence() {
    use hamon::ha::{step, Action, Event};
    let sim = pair(FailoverType::Automatic);
    let mut nodes = [sim.node(P).unwrap().clone(), sim.node(S).unwrap().clone()];
    let from = ["192.0.2.11", "192.0.2.12"];
    let mut sent: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut now = sim.now;
    while sent[S].len() < 20 {
        // The next tick 7 ms after the earlier deadline of the two (the interval is
        // 100 ms); each server's heartbeats reach the other at once.
        let due = nodes
            .iter()
            .filter_map(|n| n.next_deadline())
            .min()
            .unwrap();
        now = due.max(now) + 7;
        for i in [P, S] {
            for a in step(&mut nodes[i], Event::Tick, now) {
                if let Action::SendHeartbeat { beacon, .. } = a {
                    sent[i].push(now);
                    let heard = Event::Heartbeat {
                        from: from[i].into(),
                        beacon,
                        seq: sent[i].len() as u64,
                    };
                    step(&mut nodes[1 - i], heard, now);
                }
            }
        }
    }
    // Twenty beats over nineteen intervals: late by the one tick's 7 ms, not by 19 of them.
    assert_eq!(sent[S][19] - sent[S][0], 19 * 100, "{:?}", sent[S]);
    assert_eq!(nodes[S].state(), SecondarySyncing);
}

// ----- Saves that fail ------------------------------------------------------------------------

/// A secondary took over but could not save it (its disk is full); it restarts believing
/// the stale Secondary Syncing, and finds the primary standing by behind it.
fn stale_secondary_restart() -> Sim {
    let mut sim = pair(FailoverType::Automatic);
    sim.unsaved[S] = true;
    sim.crash(P);
    sim.run_for(sim.detection() + 2_000);
    assert!(sim.is_active(S));
    sim.start(P);
    sim.run_for(3_000);
    assert_eq!(sim.state(P), Some(PrimarySyncing));
    sim.crash(S);
    sim.start(S);
    sim
}

#[test]
fn a_secondary_whose_takeover_was_not_saved_resumes_it_from_the_primarys_view() {
    let mut sim = stale_secondary_restart();
    sim.run_for(5_000);
    // The primary says it stands by behind an active secondary: that is this server.
    assert!(
        sim.is_active(S),
        "{:?} / {:?}",
        sim.history(S),
        sim.state(P)
    );
    assert!(!sim.is_active(P));
}

// ----- The witness ----------------------------------------------------------------------------

/// A registered automatic pair with a witness both servers reach.
fn witnessed_pair() -> Sim {
    let mut sim = pair(FailoverType::Automatic);
    sim.configure_witness();
    sim.witness(P, true);
    sim.witness(S, true);
    sim.run_for(500);
    sim
}

/// The time node `i` was last told to take `duty`, if ever.
fn duty_at(sim: &Sim, i: usize, duty: Duty) -> Option<u64> {
    sim.duties
        .iter()
        .rev()
        .find(|(_, n, d)| *n == i && *d == duty)
        .map(|(t, _, _)| *t)
}

#[test]
fn a_primary_cut_off_from_its_peer_and_the_witness_fences_itself_before_the_takeover() {
    let mut sim = witnessed_pair();
    sim.clear_history();
    // The primary's switch port dies: it reaches neither the secondary nor the witness;
    // the secondary still reaches the witness.
    sim.net.partitioned = true;
    sim.witness(P, false);
    sim.run_for(sim.detection() + 2_000);
    let fenced = duty_at(&sim, P, Duty::Halted).expect("the primary never stood down");
    let taken = duty_at(&sim, S, Duty::Active).expect("the secondary never took over");
    assert!(
        fenced < taken,
        "fenced at {fenced} ms, taken over at {taken} ms"
    );
    assert!(sim.journal_kinds(P).contains(&"self_fenced".to_string()));
    // The primary's state is left as it was; only its duty changed (Halted: the VIP and
    // every service go, the database stays as it is).
    assert_eq!(sim.node(P).map(|n| n.duty()), Some(Duty::Halted));
    // Healed: the primary finds the secondary active and stands by; no split brain.
    sim.net.partitioned = false;
    sim.witness(P, true);
    sim.run_for(2_000);
    assert_eq!(sim.state(S), Some(SecondaryActive));
    assert!(sim.is_active(S) && !sim.is_active(P));
    assert_eq!(sim.state(P), Some(PrimaryFailover));
    assert!(!sim.journal_kinds(P).contains(&"split_brain".to_string()));
}

#[test]
fn a_secondary_that_cannot_reach_the_witness_does_not_take_over() {
    let mut sim = witnessed_pair();
    // The secondary is the one cut off: from the primary and from the witness.
    sim.net.partitioned = true;
    sim.witness(S, false);
    sim.run_for(sim.detection() + 3_000);
    assert!(!sim.is_active(S), "{:?}", sim.history(S));
    assert!(sim
        .journal_kinds(S)
        .contains(&"failover_withheld".to_string()));
    // The primary reaches the witness: it keeps the role.
    assert!(sim.is_active(P));
    assert!(!sim.journal_kinds(P).contains(&"self_fenced".to_string()));
}

#[test]
fn a_fenced_primary_takes_the_role_back_when_the_secondary_did_not_take_it() {
    let mut sim = witnessed_pair();
    // Both are cut off from the witness (the witness itself is down), and the pair's link
    // breaks: the secondary does not take over, so the primary must not stay fenced.
    sim.witness(S, false);
    sim.net.partitioned = true;
    sim.witness(P, false);
    sim.run_for(sim.detection() + 1_000);
    assert!(!sim.is_active(P) && !sim.is_active(S));
    // The witness answers the primary again: it takes the role back.
    sim.witness(P, true);
    sim.run_for(500);
    assert!(sim.is_active(P), "{:?}", sim.history(P));
    assert!(sim
        .journal_kinds(P)
        .contains(&"self_fence_lifted".to_string()));
    assert!(!sim.is_active(S));
}

#[test]
fn a_manual_pair_never_fences() {
    let mut sim = pair(FailoverType::Manual);
    sim.configure_witness();
    sim.witness(P, false);
    sim.witness(S, true);
    sim.net.partitioned = true;
    sim.run_for(sim.detection() + 2_000);
    // Nobody would take over: the primary keeps serving.
    assert!(sim.is_active(P));
    assert!(!sim.journal_kinds(P).contains(&"self_fenced".to_string()));
}

// ----- Fencing ------------------------------------------------------------------------------

#[test]
fn a_takeover_fences_the_peer_first() {
    let mut sim = pair(FailoverType::Automatic);
    sim.configure_fencing(hamon::ha::FencePolicy::Withhold);
    // A partition: the primary is alive and would keep its VIP.
    sim.net.partitioned = true;
    sim.run_for(sim.detection() + 2_000);
    let kinds = sim.journal_kinds(S);
    let started = kinds.iter().position(|k| k == "fencing_started");
    let done = kinds.iter().position(|k| k == "fencing_done");
    assert!(started.is_some() && done > started, "{kinds:?}");
    // The simulated BMC powered the primary off before the secondary became active.
    assert!(!sim.is_up(P));
    assert!(sim.is_active(S));
    let powered_off_at = duty_at(&sim, S, Duty::Active).unwrap();
    assert!(
        sim.duties
            .iter()
            .all(|(t, i, d)| !(*i == P && *d == Duty::Active && *t > powered_off_at)),
        "{:?}",
        sim.duties
    );
}

#[test]
fn a_failed_fencing_withholds_the_takeover_and_tries_again() {
    let mut sim = pair(FailoverType::Automatic);
    sim.configure_fencing(hamon::ha::FencePolicy::Withhold);
    sim.fence_works = false;
    sim.net.partitioned = true;
    sim.run_for(sim.detection() + 2_500);
    assert!(!sim.is_active(S), "{:?}", sim.history(S));
    let tries = |sim: &Sim| {
        sim.journal_kinds(S)
            .iter()
            .filter(|k| *k == "fencing_failed")
            .count()
    };
    assert!(
        tries(&sim) >= 2,
        "retried with backoff: {:?}",
        sim.journal_kinds(S)
    );
    // The BMC answers again: the next try fences and takes over.
    sim.fence_works = true;
    sim.run_for(5_000);
    assert!(sim.is_active(S));
    assert!(!sim.is_up(P));
}

#[test]
fn a_failed_fencing_under_proceed_takes_over_all_the_same() {
    let mut sim = pair(FailoverType::Automatic);
    sim.configure_fencing(hamon::ha::FencePolicy::Proceed);
    sim.fence_works = false;
    sim.crash(P);
    sim.run_for(sim.detection() + 1_000);
    assert!(sim.is_active(S));
    assert!(sim.journal_kinds(S).contains(&"fencing_failed".to_string()));
}

#[test]
fn a_manual_failover_whose_fencing_fails_is_refused_with_the_reason() {
    let mut sim = pair(FailoverType::Manual);
    sim.configure_fencing(hamon::ha::FencePolicy::Withhold);
    sim.fence_works = false;
    sim.health(P, failed_processes());
    sim.run_for(1_000);
    let t = sim.command(S, Command::Failover);
    sim.run_for(500);
    let why = refused(&sim, t);
    assert!(why.contains("fencing"), "{why}");
    assert!(!sim.is_active(S));
}

// ----- Found by the model checker (tests/model_check.rs) ------------------------------------

#[test]
fn both_restarted_after_a_takeover_keep_the_secondary_active() {
    // The primary dies, the secondary takes over; then both restart at once (a power cut
    // of the site). The secondary's data is the newer: it must keep the role, and the
    // primary must not take it back without `ha failback`.
    let mut sim = pair(FailoverType::Automatic);
    sim.crash(P);
    sim.run_for(sim.detection() + 1_000);
    assert_eq!(sim.state(S), Some(SecondaryActive));
    sim.crash(S);
    sim.start(P);
    sim.start(S);
    sim.clear_history();
    sim.run_for(5_000);
    assert!(
        sim.is_active(S),
        "{:?} / {:?}",
        sim.history(P),
        sim.history(S)
    );
    assert!(!sim.is_active(P));
    assert!(
        !sim.history(P).contains(&PrimaryActive),
        "the primary took the role back: {:?}",
        sim.history(P)
    );
    assert_eq!(sim.state(S), Some(SecondaryActive));
}
