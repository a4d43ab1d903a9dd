//! The fault suite, CI subset (issue 13): each fault once, on a fresh registered pair in
//! the namespace test bed, with the timers (200 ms heartbeats, 3 missed, 200 ms
//! grace, 300 ms probe). Every run must end with exactly one active server holding the
//! VIP, no agent may exit or panic, and where the primary stays healthy nothing may fail
//! over. `bench/faults` runs the same faults longer and more often, and keepalived through
//! them as the baseline (`tests/nemesis/mod.rs` has the knobs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod nemesis;
mod netns;

use nemesis::{
    asserting, run, run_in, Fault, Report, Setup, ARBITER_MARGIN_MS, ARBITER_TTL_MS, BUDGET_MS,
};
use netns::{P, S};

/// Requires no false failover in any run (hamon's; the baseline's are only reported).
fn no_false_failover(reports: &[Report]) {
    for r in reports.iter().filter(|_| asserting()) {
        assert_eq!(r.false_failovers, 0, "{}: {r:?}", r.fault);
    }
}

/// Requires one takeover by the secondary after the primary's failure, in every run.
fn taken_over(reports: &[Report]) {
    for r in reports.iter().filter(|_| asserting()) {
        assert_eq!(r.claims[S], 1, "{r:?}");
        assert!(r.takeover_ms.is_some(), "{r:?}");
    }
}

#[test]
fn kill_the_primary() {
    taken_over(&run(
        "fk1",
        Fault::Kill {
            host: P,
            release: false,
        },
    ));
}

#[test]
fn kill_the_primary_and_release_its_vip() {
    for r in run(
        "fk2",
        Fault::Kill {
            host: P,
            release: true,
        },
    ) {
        // systemd's ExecStopPost= release: the VIP was never held twice.
        assert_eq!(r.dual_windows, 0, "{r:?}");
        assert_eq!(r.claims[S], 1, "{r:?}");
    }
}

#[test]
fn kill_the_secondary() {
    no_false_failover(&run(
        "fk3",
        Fault::Kill {
            host: S,
            release: true,
        },
    ));
}

#[test]
fn stop_the_primary() {
    taken_over(&run("fs1", Fault::Stop { host: P }));
}

#[test]
fn stop_the_secondary() {
    no_false_failover(&run("fs2", Fault::Stop { host: S }));
}

#[test]
fn symmetric_partition() {
    // Both stay reachable by clients, so both serve until the heal (issue 14 prevents
    // that with an arbiter); the heal leaves one.
    run("fpa", Fault::Partition);
}

#[test]
fn one_way_secondary_to_primary() {
    no_false_failover(&run("fo1", Fault::OneWay { from: S, to: P }));
}

#[test]
fn one_way_primary_to_secondary() {
    // The secondary hears nothing, not even its probe's answer: without a third party
    // it cannot tell this from a dead primary (issue 14). The heal leaves one.
    run("fo2", Fault::OneWay { from: P, to: S });
}

#[test]
fn heartbeats_blocked() {
    no_false_failover(&run("fhb", Fault::HeartbeatBlock));
}

#[test]
fn thirty_percent_loss() {
    no_false_failover(&run("fl3", Fault::Loss(30)));
}

#[test]
fn sixty_percent_loss() {
    // Reported, not required to be zero (docs/reliability.md has the rate beside
    // keepalived's); the pair must still end with one active server.
    run("fl6", Fault::Loss(60));
}

#[test]
fn kill_under_thirty_percent_loss() {
    for r in run("fkl", Fault::KillUnderLoss(30))
        .iter()
        .filter(|_| asserting())
    {
        // Found and taken over (the figure, against the 1.1 s clean-path budget, goes to
        // docs/reliability.md), and no false failover before the kill.
        assert!(r.takeover_ms.is_some(), "{r:?}");
        assert_eq!(r.claims[S], 1, "{r:?}");
    }
}

#[test]
fn primary_isolated() {
    // Without a third party: the primary keeps its VIP (in its kernel, where no client
    // reaches it) while the secondary takes over; the heal leaves one.
    taken_over(&run(
        "fis",
        Fault::Isolate {
            host: P,
            witness: false,
        },
    ));
}

#[test]
fn primary_isolated_with_a_witness() {
    // Cut off from the peer and the witness, the primary fences itself before the
    // secondary's takeover: never two holders of the VIP.
    let reports = run(
        "fiw",
        Fault::Isolate {
            host: P,
            witness: true,
        },
    );
    taken_over(&reports);
    for r in reports.iter().filter(|_| asserting()) {
        assert_eq!(r.dual_windows, 0, "{r:?}");
        assert_eq!(r.settled_on, Some(S), "{r:?}");
    }
}

#[test]
fn frozen_primary_fenced_before_the_takeover() {
    // Frozen for five budgets: the secondary fences it (ipmitool's chassis power off
    // against a simulated BMC, openipmi's ipmi_sim, which kills the agent, flushes its
    // addresses and downs its port) and only then takes over. Never two holders of the VIP.
    let reports = run("ffw", Fault::StopFenced { works: true });
    taken_over(&reports);
    for r in reports.iter().filter(|_| asserting()) {
        assert_eq!(r.dual_windows, 0, "{r:?}");
        assert_eq!(r.settled_on, Some(S), "{r:?}");
    }
}

#[test]
fn frozen_primary_whose_fencing_fails_is_not_taken_over() {
    // The BMC refuses the password: with on_failure = withhold the secondary does not
    // take over (the journal says why: the harness checks fencing_failed), and the
    // primary, thawed, still holds the VIP.
    for r in run("fff", Fault::StopFenced { works: false })
        .iter()
        .filter(|_| asserting())
    {
        assert_eq!(r.claims[S], 0, "{r:?}");
        assert_eq!(r.settled_on, Some(P), "{r:?}");
    }
}

#[test]
fn delay_and_reordering() {
    // Up to 150 ms each way, spread wider than the 200 ms heartbeat gap's share:
    // heartbeats arrive late and out of order; nothing may fail over.
    no_false_failover(&run(
        "fdl",
        Fault::Delay {
            min_ms: 10,
            max_ms: 150,
        },
    ));
}

#[test]
fn both_restarted_at_once() {
    run("frb", Fault::RestartBoth);
}

/// Requires the secondary to end active: it took over, and nothing handed the role back.
fn ends_on_the_secondary(reports: &[Report]) {
    for r in reports.iter().filter(|_| asserting()) {
        assert_eq!(r.settled_on, Some(S), "{r:?}");
    }
}

#[test]
fn full_state_dir_on_the_primary() {
    ends_on_the_secondary(&run("fd1", Fault::FullStateDir { host: P }));
}

#[test]
fn full_state_dir_on_the_secondary() {
    // Its takeover is saved on the full disk, so it comes back active after its restart.
    ends_on_the_secondary(&run("fd2", Fault::FullStateDir { host: S }));
}

#[test]
fn clock_forward_on_the_secondary() {
    no_false_failover(&run("fc1", Fault::ClockJump { host: S, secs: 120 }));
}

#[test]
fn clock_backward_on_the_primary() {
    no_false_failover(&run(
        "fc2",
        Fault::ClockJump {
            host: P,
            secs: -120,
        },
    ));
}

#[test]
fn ha_interface_down_on_the_primary() {
    for r in run("fi1", Fault::LinkDown { host: P })
        .iter()
        .filter(|_| asserting())
    {
        assert_eq!(r.settled_on, Some(S), "{r:?}");
    }
}

#[test]
fn ha_interface_down_on_the_secondary() {
    no_false_failover(&run("fi2", Fault::LinkDown { host: S }));
}

#[test]
fn critical_service_crash_looping() {
    for r in run("fcl", Fault::CrashLoop) {
        // One failover, and no ping-pong back to the crashing primary.
        assert_eq!((r.claims[P], r.claims[S]), (0, 1), "{r:?}");
        assert_eq!(r.settled_on, Some(S), "{r:?}");
    }
}

#[test]
fn kill_during_failback() {
    for host in [P, S] {
        for after_ms in [100, 300, 600] {
            run(
                &format!("fb{host}{after_ms}"),
                Fault::FailbackKill { host, after_ms },
            );
        }
    }
}

// ----- the arbiter (issue 14): an etcd lease, etcd in a fourth namespace on the bridge --

#[test]
fn partition_with_an_arbiter() {
    // Ten budgets of partition, both servers still reaching etcd: the secondary waits for
    // the lease, which the primary keeps renewing. No second holder, no failover (the
    // harness asserts zero dual-active windows for every arbiter run).
    for r in run_in("fap", Fault::Partition, Setup::arbiter("demote")) {
        assert_eq!(r.claims[S], 0, "{r:?}");
        assert_eq!(r.settled_on, Some(P), "{r:?}");
        assert_eq!(r.demoted_ms, None, "{r:?}");
    }
}

#[test]
fn isolated_primary_with_an_arbiter() {
    // Cut off from the peer and etcd: it cannot renew, demotes itself a margin before the
    // lease can expire, and only then can the secondary win the lease and take over.
    for r in run_in(
        "fai",
        Fault::Isolate {
            host: P,
            witness: false,
        },
        Setup::arbiter("demote"),
    ) {
        let demoted = r.demoted_ms.expect("the primary demoted itself");
        let took = r.takeover_ms.expect("the secondary took over");
        assert!(demoted < took, "{r:?}");
        assert_eq!(r.claims[S], 1, "{r:?}");
        // Outage: at most the TTL and the takeover (the budget, and a second for the
        // lease's poll, etcd's expiry sweep and the announcement).
        assert!(
            r.outage_ms <= ARBITER_TTL_MS + BUDGET_MS + 1_000,
            "outage {} ms: {r:?}",
            r.outage_ms
        );
    }
}

#[test]
fn one_way_loss_with_an_arbiter() {
    // Either way, the healthy primary keeps the role: the secondary that hears nothing
    // cannot win the lease the primary renews.
    for (tag, from, to) in [("fa1", P, S), ("fa2", S, P)] {
        for r in run_in(tag, Fault::OneWay { from, to }, Setup::arbiter("demote")) {
            assert_eq!(r.claims[S], 0, "{r:?}");
            assert_eq!(r.settled_on, Some(P), "{r:?}");
        }
    }
}

#[test]
fn arbiter_killed_demote() {
    // etcd dies under a healthy pair: nothing changes hands; the primary serves while its
    // lease is safe (at least the TTL less the margin and a renewal period after its last
    // renewal), then demotes (on_arbiter_loss = demote) and says so. etcd back: it wins
    // its lease again and serves.
    for r in run_in("fad", Fault::ArbiterDown, Setup::arbiter("demote")) {
        assert_eq!(r.claims[S], 0, "{r:?}");
        let demoted = r.demoted_ms.expect("demoted once the lease ran out");
        let earliest = ARBITER_TTL_MS - ARBITER_MARGIN_MS - ARBITER_TTL_MS / 4;
        assert!(
            (earliest..ARBITER_TTL_MS).contains(&demoted),
            "demoted after {demoted} ms: {r:?}"
        );
        assert_eq!(r.settled_on, Some(P), "{r:?}");
    }
}

#[test]
fn arbiter_killed_hold() {
    // on_arbiter_loss = hold: the primary keeps the VIP throughout (and reports the lost
    // lease); still nothing changes hands.
    for r in run_in("fah", Fault::ArbiterDown, Setup::arbiter("hold")) {
        assert_eq!(r.claims[S], 0, "{r:?}");
        assert_eq!(r.demoted_ms, None, "{r:?}");
        assert_eq!(r.settled_on, Some(P), "{r:?}");
    }
}

#[test]
fn partition_with_a_witness_only() {
    // Both servers reach the witness: each is as entitled as the other, so the pair does
    // what the guide says for a broken link: the secondary takes over, and at the heal the
    // primary yields (docs/states.md, "The witness and self-fencing").
    for r in run_in(
        "fwp",
        Fault::Partition,
        Setup {
            arbiter: None,
            witness: true,
        },
    ) {
        assert_eq!(r.claims[S], 1, "{r:?}");
        assert!(r.dual_windows >= 1, "{r:?}");
        assert!(r.settled_on.is_some(), "{r:?}");
    }
}
