//! The virtual IP in a network-namespace test bed: real agents on a primary
//! and a secondary, an observer standing for a managed device.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns;

use netns::{until, Bed, MAC, O, P, S, V4, VIP4, VIP6};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

const KEY: &str = "Bed-Key-2026";
const SECS: fn(u64) -> Duration = Duration::from_secs;

fn hamon() -> &'static str {
    env!("CARGO_BIN_EXE_hamon")
}

/// A pair of agents in the bed.
struct Ha {
    bed: Bed,
    pids: [Option<u32>; 2],
}

impl Ha {
    fn new(tag: &str) -> Option<Ha> {
        Ha::with_refresh(tag, 0)
    }

    fn with_refresh(tag: &str, refresh_ms: u64) -> Option<Ha> {
        if !netns::available() {
            return None;
        }
        let bed = Bed::new(tag);
        for (i, role) in ["primary", "secondary"].iter().enumerate() {
            let d = bed.dir.join(role);
            let cfg = format!(
                "[node]\nname = \"{role}\"\nrole = \"{role}\"\naddress = \"{addr}\"\n\
                 interface = \"eth0\"\nstate_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\n\
                 [heartbeat]\ninterval_ms = 100\nmissed = 3\ngrace_ms = 300\nprobe_timeout_ms = 300\n\
                 [health_monitor]\ntls = false\n[vip]\nburst_count = 3\nburst_gap_ms = 100\nrefresh_ms = {refresh_ms}\n\
                 [log]\nlevel = \"trace\"\n",
                addr = V4[i],
                d = d.display()
            );
            std::fs::write(bed.dir.join(format!("{role}.toml")), cfg).unwrap();
        }
        let ha = Ha {
            bed,
            pids: [None, None],
        };
        assert!(ha
            .cli_stdin(S, &["ha", "authkey"], &format!("{KEY}\n"))
            .status
            .success());
        Some(ha)
    }

    fn config(&self, host: usize) -> PathBuf {
        self.bed.dir.join(["primary.toml", "secondary.toml"][host])
    }

    /// The CLI, run inside the host's namespace.
    fn cli(&self, host: usize, args: &[&str]) -> Output {
        self.cli_stdin(host, args, "")
    }

    fn cli_stdin(&self, host: usize, args: &[&str], input: &str) -> Output {
        self.bed.hamon(host, &self.config(host), args, input)
    }

    fn start(&mut self, host: usize) {
        let cfg = self.config(host);
        let log = self.bed.dir.join(format!("agent-{host}.log"));
        let pid = self.bed.spawn(
            host,
            &[hamon(), "agent", "--config", cfg.to_str().unwrap()],
            &log,
        );
        self.pids[host] = Some(pid);
        let up = until(SECS(10), || {
            self.cli(host, &["ha", "status"]).status.success()
        });
        assert!(up, "agent {host} did not start:\n{}", self.log(host));
    }

    fn signal(&mut self, host: usize, sig: i32) {
        if let Some(pid) = self.pids[host].take() {
            self.bed.signal(pid, sig);
        }
    }

    fn log(&self, host: usize) -> String {
        std::fs::read_to_string(self.bed.dir.join(format!("agent-{host}.log"))).unwrap_or_default()
    }

    fn status(&self, host: usize) -> String {
        String::from_utf8_lossy(&self.cli(host, &["ha", "status"]).stdout)
            .trim()
            .to_string()
    }

    fn wait_state(&self, host: usize, state: &str, within: Duration) {
        let ok = until(within, || {
            self.status(host).contains(&format!("[State] {state}"))
        });
        assert!(
            ok,
            "host {host} not {state}: {:?}\n{}",
            self.status(host),
            self.log(host)
        );
    }

    fn register(&self, failover_type: &str, vips: &[&str]) -> Output {
        let mut args = vec![
            "ha",
            "register",
            "--secondary",
            V4[S],
            "--failover-type",
            failover_type,
        ];
        for v in vips {
            args.extend(["--vip", v]);
        }
        self.cli_stdin(P, &args, &format!("{KEY}\n"))
    }

    fn registered(tag: &str, failover_type: &str) -> Option<Ha> {
        Ha::registered_with(Ha::new(tag)?, failover_type)
    }

    fn registered_with(mut ha: Ha, failover_type: &str) -> Option<Ha> {
        ha.start(P);
        ha.start(S);
        let out = ha.register(failover_type, &["192.0.2.10/24", "2001:db8::10/64"]);
        assert!(out.status.success(), "register: {out:?}\n{}", ha.log(P));
        ha.wait_state(P, "Primary Active", SECS(5));
        ha.wait_state(S, "Secondary Syncing", SECS(5));
        Some(ha)
    }

    fn has_vip6(&self, host: usize) -> bool {
        self.bed
            .addresses(host)
            .iter()
            .any(|a| a.starts_with(&format!("{VIP6}/")))
    }
}

#[test]
fn the_vip_follows_the_active_server_over_ipv4_and_ipv6() {
    let Some(mut ha) = Ha::registered("fo", "automatic") else {
        return;
    };
    let bed = &ha.bed;
    assert!(
        until(SECS(3), || bed.has_vip(P) && ha.has_vip6(P)),
        "{:?}",
        bed.addresses(P)
    );
    assert!(!bed.has_vip(S) && !ha.has_vip6(S), "{:?}", bed.addresses(S));
    // The observer talks to the VIP: its neighbour entries point at the primary.
    assert!(bed.ping(O, VIP4) && bed.ping(O, VIP6));
    assert_eq!(bed.neighbour(VIP4).as_deref(), Some(MAC[P]));
    assert_eq!(bed.neighbour(VIP6).as_deref(), Some(MAC[P]));

    ha.signal(P, libc::SIGKILL);
    ha.wait_state(S, "Secondary Active", SECS(3));
    let bed = &ha.bed;
    assert!(
        until(SECS(2), || bed.neighbour(VIP4).as_deref() == Some(MAC[S])),
        "{:?}",
        bed.neighbour(VIP4)
    );
    assert!(
        until(SECS(2), || bed.neighbour(VIP6).as_deref() == Some(MAC[S])),
        "{:?}",
        bed.neighbour(VIP6)
    );
    assert!(
        bed.ping(O, VIP4) && bed.ping(O, VIP6),
        "the VIP answers from the secondary"
    );
    assert!(bed.has_vip(S) && ha.has_vip6(S));

    // The primary comes back standby; failback moves the VIP home.
    // (A SIGKILLed agent leaves its addresses behind; systemd's ExecStopPost
    // runs `hamon vip release`; here the restart's own clean-up removes them.)
    ha.start(P);
    ha.wait_state(P, "Primary Syncing", SECS(10));
    assert!(
        !ha.bed.has_vip(P),
        "a standby primary holds no VIP: {:?}",
        ha.bed.addresses(P)
    );
    let out = ha.cli(S, &["ha", "failback"]);
    assert!(out.status.success(), "{out:?}");
    ha.wait_state(P, "Primary Active", SECS(5));
    let bed = &ha.bed;
    assert!(until(SECS(2), || bed.has_vip(P) && !bed.has_vip(S)));
    assert!(until(SECS(2), || bed.neighbour(VIP4).as_deref() == Some(MAC[P])));
    assert!(until(SECS(2), || bed.neighbour(VIP6).as_deref() == Some(MAC[P])));
    assert!(bed.ping(O, VIP4));
}

#[test]
fn a_stale_vip_on_a_standby_is_removed_at_start() {
    let Some(mut ha) = Ha::registered("st", "manual") else {
        return;
    };
    ha.signal(S, libc::SIGKILL);
    let out = ha
        .bed
        .exec(S, &["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    assert!(out.status.success());
    assert!(ha.bed.has_vip(S));
    ha.start(S);
    ha.wait_state(S, "Secondary Syncing", SECS(5));
    assert!(
        until(SECS(2), || !ha.bed.has_vip(S)),
        "{:?}",
        ha.bed.addresses(S)
    );
    assert!(ha.bed.has_vip(P));
}

#[test]
fn a_vip_outside_the_subnet_is_refused() {
    let Some(mut ha) = Ha::new("sn") else { return };
    ha.start(P);
    ha.start(S);
    let out = ha.register("manual", &["198.51.100.10/24"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not in the subnet"), "{err}");
    assert!(ha.status(P).contains("Stand Alone"));
    assert!(ha.status(S).contains("Stand Alone"));
}

#[test]
fn sigterm_on_the_active_releases_the_vip() {
    let Some(mut ha) = Ha::registered("tm", "automatic") else {
        return;
    };
    assert!(until(SECS(2), || ha.bed.has_vip(P)));
    ha.signal(P, libc::SIGTERM);
    assert!(
        !ha.bed.has_vip(P) && !ha.has_vip6(P),
        "released on exit: {:?}",
        ha.bed.addresses(P)
    );
    ha.wait_state(S, "Secondary Active", SECS(2));
    assert!(until(SECS(2), || ha.bed.has_vip(S)));
}

#[test]
fn vip_release_cleans_up_after_a_sigkill() {
    // What systemd's ExecStopPost=hamon vip release does after any exit.
    let Some(mut ha) = Ha::registered("kr", "manual") else {
        return;
    };
    assert!(until(SECS(2), || ha.bed.has_vip(P)));
    ha.signal(P, libc::SIGKILL);
    assert!(ha.bed.has_vip(P), "a killed agent cannot release anything");
    let out = ha.cli(P, &["vip", "release"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("192.0.2.10/24"));
    assert!(
        !ha.bed.has_vip(P) && !ha.has_vip6(P),
        "{:?}",
        ha.bed.addresses(P)
    );
    // Idempotent: nothing left to remove is not an error.
    assert!(ha.cli(P, &["vip", "release"]).status.success());
}

#[test]
fn split_brain_resolution_releases_the_primarys_vip() {
    let Some(mut ha) = Ha::registered("sb", "automatic") else {
        return;
    };
    ha.bed.link(P, false);
    ha.wait_state(S, "Secondary Active", SECS(3));
    assert!(
        ha.bed.has_vip(P) && ha.bed.has_vip(S),
        "both hold it while cut off"
    );
    ha.bed.link(P, true);
    ha.wait_state(P, "Primary Failover", SECS(3));
    assert!(
        until(SECS(2), || !ha.bed.has_vip(P)),
        "{:?}",
        ha.bed.addresses(P)
    );
    assert!(ha.bed.has_vip(S));
    ha.signal(P, libc::SIGKILL);
}

#[test]
fn a_capture_on_the_observer_shows_the_takeover_burst() {
    let Some(mut ha) = Ha::registered("cp", "automatic") else {
        return;
    };
    let cap = ha.bed.dir.join("capture.txt");
    let tcpdump = ha.bed.spawn(
        O,
        &[
            "tcpdump",
            "-i",
            "eth0",
            "-e",
            "-n",
            "-l",
            "-U",
            "arp or icmp6",
        ],
        &cap,
    );
    std::thread::sleep(Duration::from_millis(500));
    ha.signal(P, libc::SIGKILL);
    ha.wait_state(S, "Secondary Active", SECS(3));
    std::thread::sleep(Duration::from_millis(800)); // 3 rounds, 100 ms apart
    ha.bed.signal(tcpdump, libc::SIGTERM);
    let text = std::fs::read_to_string(&cap).unwrap_or_default();
    let from_s: Vec<&str> = text.lines().filter(|l| l.contains(MAC[S])).collect();
    let requests = from_s
        .iter()
        .filter(|l| l.contains(&format!("Request who-has {VIP4} tell {VIP4}")))
        .count();
    let replies = from_s
        .iter()
        .filter(|l| l.contains(&format!("Reply {VIP4} is-at {}", MAC[S])))
        .count();
    let nas = from_s
        .iter()
        .filter(|l| {
            l.contains("neighbor advertisement")
                && l.contains(&format!("tgt is {VIP6}"))
                && l.contains("ff02::1")
        })
        .count();
    assert!(
        requests >= 3 && replies >= 3 && nas >= 3,
        "req {requests} rep {replies} na {nas}\n{text}"
    );
}

#[test]
fn the_active_server_re_announces_the_vip_periodically_when_asked() {
    let Some(ha) = Ha::with_refresh("rf", 200) else {
        return;
    };
    let Some(mut ha) = Ha::registered_with(ha, "manual") else {
        return;
    };
    assert!(until(SECS(2), || ha.bed.has_vip(P)));
    std::thread::sleep(Duration::from_millis(600)); // the takeover burst is over
    let cap = ha.bed.dir.join("refresh.txt");
    let tcpdump = ha.bed.spawn(
        O,
        &["tcpdump", "-i", "eth0", "-e", "-n", "-l", "-U", "arp"],
        &cap,
    );
    std::thread::sleep(Duration::from_millis(1_500));
    ha.bed.signal(tcpdump, libc::SIGTERM);
    let text = std::fs::read_to_string(&cap).unwrap_or_default();
    let from_p = text
        .lines()
        .filter(|l| {
            l.contains(MAC[P]) && l.contains(&format!("Request who-has {VIP4} tell {VIP4}"))
        })
        .count();
    // One round every 200 ms for 1.5 s (minus tcpdump's start-up).
    assert!(from_p >= 4, "{from_p} refreshes\n{text}");
    ha.signal(S, libc::SIGKILL);
}

#[test]
fn lost_heartbeats_with_an_answering_peer_are_not_a_failure() {
    let Some(mut ha) = Ha::registered("hb", "automatic") else {
        return;
    };
    // Every heartbeat to the secondary is lost; HTTP to the primary still works.
    ha.bed.drop_incoming(S, "udp dport 8083", 100);
    std::thread::sleep(SECS(3));
    assert!(
        ha.status(S).contains("Secondary Syncing"),
        "{}",
        ha.status(S)
    );
    assert!(ha.bed.has_vip(P) && !ha.bed.has_vip(S));
    let events = String::from_utf8_lossy(&ha.cli(S, &["ha", "events"]).stdout).to_string();
    assert!(events.contains("heartbeat path is broken"), "{events}");
    // Heartbeats resume: the pair is whole again.
    ha.bed.clear_drops(S);
    let healed = until(SECS(3), || {
        String::from_utf8_lossy(&ha.cli(S, &["ha", "events"]).stdout).contains("heartbeats from")
    });
    assert!(healed, "peer_found journaled");
    // Half the heartbeats lost: three in a row go missing now and then, the
    // probe answers, and still nothing moves.
    ha.bed.drop_incoming(S, "udp dport 8083", 50);
    std::thread::sleep(SECS(3));
    assert!(
        ha.status(S).contains("Secondary Syncing"),
        "{}",
        ha.status(S)
    );
    ha.bed.clear_drops(S);
    // A cut cable is a failure: with the primary cut off, the secondary takes over.
    ha.bed.link(P, false);
    ha.wait_state(S, "Secondary Active", SECS(3));
    ha.signal(P, libc::SIGKILL);
}

#[test]
fn the_vip_interface_going_down_fails_the_pair_over() {
    let Some(mut ha) = Ha::registered("nd", "automatic") else {
        return;
    };
    assert!(until(SECS(2), || ha.bed.has_vip(P)));
    let out = ha.bed.exec(P, &["ip", "link", "set", "eth0", "down"]);
    assert!(out.status.success());
    // Held 2 s (the default) before it counts, then the detection budget.
    ha.wait_state(P, "Primary Failover", SECS(5));
    ha.wait_state(S, "Secondary Active", SECS(5));
    assert!(
        until(SECS(2), || ha.bed.has_vip(S)),
        "{:?}",
        ha.bed.addresses(S)
    );
    assert!(
        !ha.bed.has_vip(P),
        "the failed primary let the VIP go: {:?}",
        ha.bed.addresses(P)
    );
    let events = String::from_utf8_lossy(&ha.cli(P, &["ha", "events"]).stdout).to_string();
    assert!(events.contains("eth0: link down"), "{events}");
    ha.signal(P, libc::SIGKILL);
}

#[test]
fn the_secondary_refuses_a_vip_outside_its_own_subnet() {
    let Some(mut ha) = Ha::new("ss") else { return };
    // The primary has an address in 198.51.100.0/24, the secondary does not.
    let out = ha
        .bed
        .exec(P, &["ip", "addr", "add", "198.51.100.11/24", "dev", "eth0"]);
    assert!(out.status.success());
    ha.start(P);
    ha.start(S);
    let out = ha.register("manual", &["198.51.100.10/24"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused by the peer") && err.contains("not in the subnet"),
        "{err}"
    );
    assert!(ha.status(P).contains("Stand Alone"));
    assert!(ha.status(S).contains("Stand Alone"));
}
