//! The split-brain safeguards as they ship (issue 14): two appliances booted under
//! systemd (the unit, its sandbox and the generator's drop-in in force) with an etcd
//! arbiter, a witness and fencing through a BMC, all three on the observer's side of the
//! bridge: etcd and the witness at the observer's address, openipmi's simulated BMC
//! beside them. The agents reach etcd over TCP, ping the witness over a raw ICMP socket
//! and run ipmitool from inside the unit.
//!
//! - A partition of the two servers for three detection budgets, both reaching etcd:
//!   the secondary never claims the VIP.
//! - The primary's agent frozen (SIGSTOP): its lease runs out, the secondary wins it,
//!   powers the primary off through the BMC (the power off ends the container and takes
//!   its port and addresses away) and only then claims the VIP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod booted;
mod netns;

use booted::Appliance;
use netns::{Bed, O, P, S, V4, VIP4};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const KEY: &str = "Safeguard-Key-2026";
const BMC_IP: &str = "192.0.2.201";
const BMC_PASSWORD: &str = "Bmc-Pass-2026";

fn config(name: &str, role: &str, me: &str) -> String {
    format!(
        r#"[node]
name = "{name}"
role = "{role}"
address = "{me}"
interface = "eth0"

[heartbeat]
interval_ms = 1000
missed = 3
grace_ms = 1000
probe_timeout_ms = 500

[vip]
burst_count = 3
burst_gap_ms = 100

[witness]
address = "{observer}"

[arbiter]
endpoints = ["http://{observer}:2379"]
ttl_s = 2
margin_ms = 500

[fencing]
command = ["/usr/bin/ipmitool", "-I", "lanplus", "-C", "3", "-H", "{BMC_IP}", "-U", "admin",
           "-f", "/etc/hamon/bmc-pass", "chassis", "power", "off"]
timeout_ms = 10000
"#,
        observer = V4[O],
    )
}

fn wait(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("not within {within:?}: {what}");
}

/// The `ip -ts monitor address` times at which the VIP was added to (or deleted from) a
/// server's kernel, as "HH:MM:SS.ffffff" strings, which sort as times within a day.
fn vip_events(log: &Path, added: bool) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("inet {VIP4}/")))
        .filter(|l| l.contains("Deleted") != added)
        .filter_map(|l| {
            // "[2026-12-07T07:12:13.123456] Deleted 2: eth0 inet ..."
            let ts = l.strip_prefix('[')?.split(']').next()?;
            Some(ts.split('T').nth(1)?.to_string())
        })
        .collect()
}

#[test]
fn the_safeguards_under_systemd() {
    if !netns::available() || !booted::available() {
        return;
    }
    let tree = booted::tree();
    let mut bed = Bed::new("sg");
    let dir = bed.dir.clone();

    // ----- the third parties, on the observer's side -------------------------------
    let url = format!("http://{}:2379", V4[O]);
    let etcd_dir = dir.join("etcd").display().to_string();
    bed.spawn(
        O,
        &[
            "etcd",
            "--name",
            "sg",
            "--data-dir",
            &etcd_dir,
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "sg=http://127.0.0.1:2380",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ],
        &dir.join("etcd.log"),
    );
    wait(Duration::from_secs(20), "etcd answers", || {
        bed.exec(O, &["etcdctl", "--endpoints", &url, "endpoint", "health"])
            .status
            .success()
    });
    let out = bed.exec(
        O,
        &["ip", "addr", "add", &format!("{BMC_IP}/24"), "dev", "eth0"],
    );
    assert!(out.status.success(), "{out:?}");
    let bmc = dir.join("bmc");
    std::fs::create_dir_all(&bmc).unwrap();
    std::fs::write(bmc.join("password"), format!("{BMC_PASSWORD}\n")).unwrap();
    // What the power off does, written once the primary has booted (its PIDs).
    let fence = dir.join("power-off.sh");
    std::fs::write(&fence, "#!/bin/sh\nexit 1\n").unwrap();
    let start = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/bmc/start.sh");
    let out = Command::new("bash")
        .arg(&start)
        .args([&bed.ns[O], BMC_IP])
        .arg(&bmc)
        .arg("/bin/sh")
        .arg(&fence)
        .output()
        .unwrap();
    assert!(out.status.success(), "the BMC did not start: {out:?}");
    let bmc_pid: i32 = std::fs::read_to_string(bmc.join("bmc.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    struct StopBmc(i32);
    impl Drop for StopBmc {
        fn drop(&mut self) {
            let ours = std::fs::read_to_string(format!("/proc/{}/comm", self.0))
                .is_ok_and(|c| c.trim() == "ipmi_sim");
            if ours {
                // SAFETY: kill(2) on the ipmi_sim this test's start.sh started.
                unsafe { libc::kill(self.0, libc::SIGKILL) };
            }
        }
    }
    let _bmc = StopBmc(bmc_pid);

    // ----- two appliances -----------------------------------------------------------
    let mut a = Appliance::new("safeguard-a", &bed.ns[P], &tree, &dir);
    let mut b = Appliance::new("safeguard-b", &bed.ns[S], &tree, &dir);
    for (x, name, role, me) in [
        (&a, "safeguard-a", "primary", V4[P]),
        (&b, "safeguard-b", "secondary", V4[S]),
    ] {
        x.write("etc/hamon/hamon.toml", &config(name, role, me), 0o600);
        x.write("etc/hamon/bmc-pass", &format!("{BMC_PASSWORD}\n"), 0o600);
    }
    let monitors = [P, S].map(|h| {
        let log = dir.join(format!("ip-monitor-{h}.log"));
        bed.spawn(h, &["ip", "-ts", "monitor", "address"], &log);
        log
    });
    a.boot();
    b.boot();
    a.wait_booted();
    b.wait_booted();
    for s in [&a, &b] {
        wait(Duration::from_secs(20), "hamon active", || {
            s.out("systemctl is-active hamon").trim() == "active"
        });
    }
    b.sh_in("hamon ha authkey", &format!("{KEY}\n"));
    let reg = a.sh_in(
        &format!(
            "hamon ha register --secondary {} --failover-type automatic --vip {VIP4}/24",
            V4[S]
        ),
        &format!("{KEY}\n"),
    );
    assert!(reg.status.success(), "register: {reg:?}");
    a.wait_state("Primary Active", Duration::from_secs(30));
    b.wait_state("Secondary Syncing", Duration::from_secs(30));
    wait(Duration::from_secs(10), "the primary holds the VIP", || {
        bed.has_vip(P)
    });

    // The three show in `hamon status`, read under the unit.
    wait(
        Duration::from_secs(10),
        "hamon status shows the safeguards",
        || {
            let sa = a.out("hamon status");
            let sb = b.out("hamon status");
            sa.contains("Arbiter: lease held")
                && sa.contains("Witness: reachable")
                && sa.contains("Fencing: before a takeover, on_failure = withhold")
                && sb.contains(&format!(
                    "Arbiter: lease not wanted here, held by primary safeguard-a {}",
                    V4[P]
                ))
                && sb.contains("Witness: reachable")
        },
    );

    // ----- a partition, both reaching etcd ------------------------------------------
    let br = bed.bridge().to_string();
    let nft = |script: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &br, "nft", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "nft {script}: {out:?}");
    };
    nft("add table bridge sg");
    nft("add chain bridge sg cut { type filter hook forward priority 0; policy accept; }");
    nft("add rule bridge sg cut iifname \"vp\" oifname \"vs\" drop");
    nft("add rule bridge sg cut iifname \"vs\" oifname \"vp\" drop");
    // Three budgets (3 x 1 s + 1 s grace + 0.5 s probe).
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(13_500) {
        assert!(
            !bed.has_vip(S),
            "the secondary claimed the VIP in a partition"
        );
        assert!(bed.has_vip(P), "the primary let the VIP go in a partition");
        std::thread::sleep(Duration::from_millis(100));
    }
    let journal_b = b.out("journalctl -u hamon -o cat --no-pager");
    assert!(journal_b.contains("[arbiter_waiting]"), "{journal_b}");
    nft("delete table bridge sg");
    b.wait_state("Secondary Syncing", Duration::from_secs(30));
    assert!(vip_events(&monitors[S], true).is_empty());

    // ----- the primary frozen: the secondary fences it through the BMC --------------
    let mut script = String::from("#!/bin/sh\n");
    script += &format!("ip -n {br} link set vp down\n");
    for pid in a.pids() {
        script += &format!("kill -9 {pid}\n");
    }
    // A power cut takes the addresses with it.
    script += &format!("ip -n {} addr flush dev eth0\n", bed.ns[P]);
    std::fs::write(&fence, script).unwrap();
    // The main process only (this cgroup v1 host cannot signal the whole unit).
    a.ok("kill -STOP \"$(systemctl show -p MainPID --value hamon)\"");
    b.wait_state("Secondary Active", Duration::from_secs(40));
    wait(
        Duration::from_secs(5),
        "the BMC powered the primary off",
        || std::fs::read_to_string(bmc.join("power.log")).is_ok_and(|p| p.contains("power off")),
    );
    a.powered_off();
    let journal_b = b.out("journalctl -u hamon -o cat --no-pager");
    let at = |kind: &str| {
        journal_b
            .find(&format!("[{kind}]"))
            .unwrap_or_else(|| panic!("no {kind} in:\n{journal_b}"))
    };
    assert!(at("arbiter_lease_held") < at("fencing_done"), "{journal_b}");
    assert!(at("fencing_done") < at("failover_complete"), "{journal_b}");
    let power = std::fs::read_to_string(bmc.join("power.log")).unwrap_or_default();
    assert!(power.contains("power off"), "{power}");
    // Never two holders: the primary's kernel lost the VIP (its power cut) before the
    // secondary's gained it.
    let gone = vip_events(&monitors[P], false);
    let taken = vip_events(&monitors[S], true);
    assert!(
        !gone.is_empty() && !taken.is_empty() && gone[0] < taken[0],
        "primary lost the VIP at {gone:?}, secondary gained it at {taken:?}"
    );
}
