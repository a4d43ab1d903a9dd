//! The fault suite's harness: a registered pair (hamon, or keepalived as the baseline) in
//! the namespace test bed, one fault injected, held and healed, and what an outside
//! observer saw, checked against the invariants.
//!
//! - Faults come from nftables in the bridge namespace (loss, partitions, one protocol),
//!   signals to the agents' PIDs, a full tmpfs `state_dir`, libfaketime (one agent's wall
//!   clock, never the host's), the HA interface set down, and a critical service that
//!   crash-loops.
//! - The observer records which server's kernel holds the VIP (`ip monitor address` in
//!   each server namespace) and, from the observer namespace, which MAC answers ARP and
//!   ping for the VIP (`tests/support/observer.py`), each line timed on arrival.
//! - Runs and holds scale by environment, so that `bench/faults` runs the same code for
//!   longer: `HAMON_FAULTS_RUNS` (runs per fault, default 1), `HAMON_FAULTS_HOLD_S` (the
//!   hold of every fault, default per fault), `HAMON_FAULTS_PEER=keepalived` (the baseline;
//!   faults that do not apply to it pass without running), `HAMON_FAULTS_OUT` (a file each
//!   run appends its figures to, one JSON object a line), `HAMON_FAULTS_TAG` (a prefix for
//!   the namespace names, so that two runs can share the machine).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::netns::{until, Bed, MAC, O, P, S, V4, VIP4};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "Fault-Key-2026";
/// The heartbeat port in the bed (the default).
const HB_PORT: u16 = 8083;
/// How long a settled pair must stay settled before a fault or after a heal.
const STEADY: Duration = Duration::from_secs(2);
/// How long the pair may take to converge after a heal.
const CONVERGE: Duration = Duration::from_secs(20);

fn hamon() -> &'static str {
    env!("CARGO_BIN_EXE_hamon")
}

/// The HA daemon under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Hamon,
    Keepalived,
}

impl Peer {
    pub fn from_env() -> Peer {
        match std::env::var("HAMON_FAULTS_PEER").as_deref() {
            Ok("keepalived") => Peer::Keepalived,
            _ => Peer::Hamon,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Peer::Hamon => "hamon",
            Peer::Keepalived => "keepalived",
        }
    }
}

/// One fault: what is done to the pair, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// kill -9 of a host's agent; `release` runs `hamon vip release` after it, as
    /// systemd's `ExecStopPost=` does. Healed by starting the agent again.
    Kill { host: usize, release: bool },
    /// SIGSTOP, healed by SIGCONT.
    Stop { host: usize },
    /// Nothing passes between the two servers; both still reach the observer.
    Partition,
    /// Nothing passes from `from` to `to`.
    OneWay { from: usize, to: usize },
    /// Only the heartbeats (UDP) are dropped, both ways.
    HeartbeatBlock,
    /// Each packet between the servers is dropped with this chance, each way.
    Loss(u32),
    /// Each packet between the servers is held for a random time in `min_ms..max_ms`,
    /// each way: delayed, and reordered where the spread is wider than the gap between
    /// packets (an NFQUEUE delay line, `tests/support/delay_line.py`).
    Delay { min_ms: u64, max_ms: u64 },
    /// This much loss each way, and after half the hold the primary killed (its VIP
    /// released): how long a real failure takes to find under loss.
    KillUnderLoss(u32),
    /// The host's port on the bridge drops everything: it reaches neither its peer nor
    /// the observer (the clients, and the witness when `witness` is set: the observer's
    /// address, as a gateway would be).
    Isolate { host: usize, witness: bool },
    /// SIGSTOP of the primary, with `[fencing]` on the secondary: a simulated BMC whose
    /// "power off" SIGKILLs the primary's agent, flushes its addresses and downs its port
    /// (`works`), or one that fails (`/bin/false`).
    StopFenced { works: bool },
    /// Both agents killed (and their VIPs released) and started again at once.
    RestartBoth,
    /// The host's `state_dir` (a 2 MiB tmpfs) filled to the last byte, then the primary
    /// killed, so that the pair fails over on a full disk; then the full host restarted.
    FullStateDir { host: usize },
    /// The host's wall clock jumps by `secs` (libfaketime).
    ClockJump { host: usize, secs: i64 },
    /// The HA interface set down inside the host.
    LinkDown { host: usize },
    /// The primary's critical service exits as soon as it starts.
    CrashLoop,
    /// After a failover and the primary's return, a failback, with the host's agent
    /// killed `after_ms` into it.
    FailbackKill { host: usize, after_ms: u64 },
    /// The arbiter's etcd killed (SIGKILL) with the pair healthy; healed by starting it
    /// again on its data. Needs `Setup::arbiter`.
    ArbiterDown,
}

/// How the pair is set up besides the fault: an etcd lease arbiter (with its
/// `on_arbiter_loss`), a witness (the observer's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Setup {
    pub arbiter: Option<&'static str>,
    pub witness: bool,
}

impl Setup {
    pub fn arbiter(on_loss: &'static str) -> Setup {
        Setup {
            arbiter: Some(on_loss),
            witness: false,
        }
    }

    fn label(&self) -> String {
        let mut l = String::new();
        if let Some(a) = self.arbiter {
            l += &format!(", arbiter ({a})");
        }
        if self.witness {
            l += ", witness";
        }
        l
    }
}

/// The arbiter's TTL in the bed (etcd's smallest with our election timeout is 1 s; the
/// config's floor is 2 s), and the margin before it.
pub const ARBITER_TTL_MS: u64 = 2_000;
pub const ARBITER_MARGIN_MS: u64 = 500;
/// The issue's detection budget: 3 x 200 ms + 200 ms grace + 300 ms probe.
pub const BUDGET_MS: u64 = 1_100;

impl Fault {
    pub fn label(&self) -> String {
        let h = |i: usize| ["primary", "secondary"][i];
        match *self {
            Fault::Kill { host, release } => format!(
                "kill -9 {}{}",
                h(host),
                if release { " + vip release" } else { "" }
            ),
            Fault::Stop { host } => format!("SIGSTOP {}", h(host)),
            Fault::Partition => "symmetric partition".into(),
            Fault::OneWay { from, to } => format!("one-way {}->{}", h(from), h(to)),
            Fault::HeartbeatBlock => "heartbeats blocked".into(),
            Fault::Loss(p) => format!("{p} % loss"),
            Fault::KillUnderLoss(p) => format!("kill -9 primary under {p} % loss"),
            Fault::Delay { min_ms, max_ms } => format!("delay {min_ms}-{max_ms} ms, reordered"),
            Fault::RestartBoth => "both restarted".into(),
            Fault::StopFenced { works } => format!(
                "SIGSTOP primary, fencing {}",
                if works { "works" } else { "fails" }
            ),
            Fault::Isolate { host, witness } => format!(
                "{} isolated{}",
                h(host),
                if witness { ", with a witness" } else { "" }
            ),
            Fault::FullStateDir { host } => format!("full state_dir on {}", h(host)),
            Fault::ClockJump { host, secs } => format!("{} clock {secs:+} s", h(host)),
            Fault::LinkDown { host } => format!("{} HA interface down", h(host)),
            Fault::CrashLoop => "critical service crash-looping".into(),
            Fault::FailbackKill { host, after_ms } => {
                format!("failback, {} killed at {after_ms} ms", h(host))
            }
            Fault::ArbiterDown => "etcd killed".into(),
        }
    }

    /// Hold time, unless `HAMON_FAULTS_HOLD_S` says otherwise.
    fn hold(&self) -> Duration {
        if let Some(s) = std::env::var("HAMON_FAULTS_HOLD_S")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            return Duration::from_secs_f64(s);
        }
        match self {
            Fault::Loss(_) | Fault::KillUnderLoss(_) => Duration::from_secs(20),
            // Five times the 1.1 s budget.
            Fault::StopFenced { .. } => Duration::from_secs(6),
            Fault::FailbackKill { .. } => Duration::from_secs(2),
            // Ten times the budget.
            Fault::Partition | Fault::Isolate { .. } => Duration::from_secs(11),
            // Past the TTL, so that on_arbiter_loss shows.
            Fault::ArbiterDown => Duration::from_secs(5),
            _ => Duration::from_secs(5),
        }
    }

    /// The primary stays healthy and able to serve through the fault: any takeover by
    /// the secondary is a false failover.
    pub fn primary_healthy(&self) -> bool {
        match *self {
            Fault::Kill { host, .. } | Fault::Stop { host } | Fault::LinkDown { host } => host == S,
            Fault::Partition
            | Fault::OneWay { .. }
            | Fault::HeartbeatBlock
            | Fault::Loss(_)
            | Fault::Delay { .. }
            | Fault::ClockJump { .. }
            | Fault::ArbiterDown => true,
            Fault::RestartBoth
            | Fault::StopFenced { .. }
            | Fault::Isolate { .. }
            | Fault::KillUnderLoss(_)
            | Fault::FullStateDir { .. }
            | Fault::CrashLoop
            | Fault::FailbackKill { .. } => false,
        }
    }

    /// keepalived has no such thing (a state file, a failback, supervised services).
    fn applies_to(&self, peer: Peer) -> bool {
        peer == Peer::Hamon
            || matches!(
                self,
                Fault::Kill { release: false, .. }
                    | Fault::Stop { .. }
                    | Fault::Partition
                    | Fault::OneWay { .. }
                    | Fault::HeartbeatBlock
                    | Fault::Loss(_)
                    | Fault::KillUnderLoss(_)
                    | Fault::Isolate { witness: false, .. }
                    | Fault::Delay { .. }
                    | Fault::RestartBoth
                    | Fault::ClockJump { .. }
                    | Fault::LinkDown { .. }
            )
    }
}

// ----- the observer ---------------------------------------------------------------------

/// What the observer saw, at ms since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// `host`'s kernel gained (`true`) or lost the VIP.
    Vip(usize, bool),
    /// An ARP reply for the VIP, from this host (2: a MAC of neither server).
    Arp(usize),
    /// An echo reply from the VIP, through this host.
    Echo(usize),
}

struct Observer {
    t0: Instant,
    seen: Arc<Mutex<Vec<(u64, Seen)>>>,
    children: Vec<Child>,
}

impl Observer {
    fn start(bed: &Bed) -> Observer {
        let mut obs = Observer {
            t0: Instant::now(),
            seen: Arc::new(Mutex::new(Vec::new())),
            children: Vec::new(),
        };
        for host in [P, S] {
            let child = Command::new("ip")
                .args(["-n", &bed.ns[host], "monitor", "address"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            obs.read(child, move |line| {
                let mine = line.contains(&format!("inet {VIP4}/"));
                mine.then(|| Seen::Vip(host, !line.starts_with("Deleted")))
            });
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/observer.py");
        let child = Command::new("ip")
            .args(["netns", "exec", &bed.ns[O], "python3", "-u"])
            .arg(script)
            .args(["--vip", VIP4, "--src-ip", V4[O], "--every-ms", "50"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        obs.read(child, |line| {
            let (kind, mac) = line.split_once(' ')?;
            let host = MAC.iter().position(|m| *m == mac.trim()).unwrap_or(2);
            match kind {
                "arp" => Some(Seen::Arp(host)),
                "echo" => Some(Seen::Echo(host)),
                _ => None,
            }
        });
        obs
    }

    fn read(&mut self, mut child: Child, parse: impl Fn(&str) -> Option<Seen> + Send + 'static) {
        let out = child.stdout.take().unwrap();
        let (t0, seen) = (self.t0, self.seen.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(s) = parse(&line) {
                    let at = t0.elapsed().as_millis() as u64;
                    seen.lock().unwrap().push((at, s));
                }
            }
        });
        self.children.push(child);
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn seen(&self) -> Vec<(u64, Seen)> {
        self.seen.lock().unwrap().clone()
    }

    /// Who holds the VIP now, in the monitors' view.
    fn holders(&self) -> [bool; 2] {
        let mut held = [false; 2];
        for (_, s) in self.seen() {
            if let Seen::Vip(h, on) = s {
                held[h] = on;
            }
        }
        held
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SAFETY: kill(2) on a child this observer spawned and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

// ----- the pair -------------------------------------------------------------------------

/// A pair in the bed, with its observer.
pub struct Cluster {
    pub bed: Bed,
    pub peer: Peer,
    obs: Observer,
    pids: [Option<u32>; 2],
    /// Extra environment for each host's agent (libfaketime).
    env: [Vec<(String, String)>; 2],
    mounts: Vec<PathBuf>,
    /// Fault helpers (the delay lines).
    helpers: Vec<Child>,
    /// When the fault killed the primary (observer ms).
    killed_at: Option<u64>,
    /// Agents the fault itself kills (through fencing): their exit is expected.
    fenced: [bool; 2],
    /// Exits nobody asked for: (host, status).
    pub exits: Vec<(usize, String)>,
    setup: Setup,
    /// The LAN beyond the pair (etcd, the BMC), when the setup or the fault needs it.
    lan: Option<Lan>,
}

/// Where the arbiter's etcd and the simulated BMC live: a fourth namespace on the bridge,
/// as a site's other machines would be.
const ETCD_IP: &str = "192.0.2.200";
const BMC_IP: &str = "192.0.2.201";
const BMC_PASSWORD: &str = "Bmc-Pass-2026";

struct Lan {
    ns: String,
    /// The port on the bridge (in the bridge's namespace).
    port: String,
    br: String,
    dir: PathBuf,
    etcd: Option<Child>,
    bmc: Option<u32>,
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

impl Lan {
    fn new(bed: &Bed, tag: &str) -> Lan {
        let ns = format!("hm{tag}a");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&["ip", "netns", "add", &ns]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        let br = bed.bridge().to_string();
        sh(&[
            "ip", "-n", &br, "link", "add", "va", "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        sh(&["ip", "-n", &br, "link", "set", "va", "master", "br0", "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        for ip in [ETCD_IP, BMC_IP] {
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
        }
        let dir = bed.dir.join("lan");
        std::fs::create_dir_all(&dir).unwrap();
        Lan {
            ns,
            port: "va".into(),
            br,
            dir,
            etcd: None,
            bmc: None,
        }
    }

    /// Starts etcd (on its data directory, which survives a kill) and waits until it
    /// answers.
    fn start_etcd(&mut self) {
        let url = format!("http://{ETCD_IP}:2379");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "etcd", "--name", "arb"])
            .arg("--data-dir")
            .arg(self.dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "arb=http://127.0.0.1:2380"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.etcd = Some(child);
        let up = until(Duration::from_secs(20), || {
            Command::new("ip")
                .args(["netns", "exec", &self.ns, "etcdctl", "--endpoints", &url])
                .args(["--dial-timeout", "1s", "endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(
            up,
            "etcd did not start:\n{}",
            std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
        );
    }

    fn kill_etcd(&mut self) {
        if let Some(mut c) = self.etcd.take() {
            // SAFETY: kill(2) on the etcd this LAN started and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// Starts the simulated BMC (`tests/support/bmc/start.sh`, openipmi's ipmi_sim), whose
    /// power off runs `script`.
    fn start_bmc(&mut self, script: &Path) {
        let dir = self.dir.join("bmc");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("password"), format!("{BMC_PASSWORD}\n")).unwrap();
        let start = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/bmc/start.sh");
        let out = Command::new("bash")
            .arg(start)
            .args([&self.ns, BMC_IP])
            .arg(&dir)
            .args(["/bin/sh"])
            .arg(script)
            .output()
            .unwrap();
        assert!(out.status.success(), "the BMC did not start: {out:?}");
        let pid = std::fs::read_to_string(dir.join("bmc.pid")).unwrap();
        self.bmc = Some(pid.trim().parse().unwrap());
    }

    /// The fencing command a server runs against this BMC: `ipmitool`'s chassis power off,
    /// with the right password file or a wrong one.
    fn fence_command(&self, works: bool) -> String {
        let file = self.dir.join(if works {
            "bmc/password"
        } else {
            "wrong-password"
        });
        if !works {
            std::fs::write(&file, "not-the-password\n").unwrap();
        }
        format!(
            "\"/usr/bin/ipmitool\", \"-I\", \"lanplus\", \"-C\", \"3\", \"-H\", \"{BMC_IP}\", \
             \"-U\", \"admin\", \"-f\", \"{}\", \"chassis\", \"power\", \"off\"",
            file.display()
        )
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.kill_etcd();
        if let Some(pid) = self.bmc.take() {
            // Only while it is still the ipmi_sim this LAN started (its PID file is ours).
            let ours = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "ipmi_sim");
            if ours {
                // SAFETY: kill(2) on the ipmi_sim start.sh started for this LAN.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        let _ = Command::new("ip")
            .args(["-n", &self.br, "link", "del", &self.port])
            .output();
        if let Err(e) = Command::new("ip").args(["netns", "del", &self.ns]).output() {
            eprintln!("LAN teardown: {e}");
        }
    }
}

impl Cluster {
    fn new(tag: &str, peer: Peer, fault: &Fault, setup: Setup) -> Cluster {
        let bed = Bed::new(tag);
        let obs = Observer::start(&bed);
        let mut lan = (setup.arbiter.is_some() || matches!(fault, Fault::StopFenced { .. }))
            .then(|| Lan::new(&bed, tag));
        if let (Some(lan), Some(_)) = (lan.as_mut(), setup.arbiter) {
            lan.start_etcd();
        }
        let mut c = Cluster {
            bed,
            peer,
            obs,
            pids: [None, None],
            env: [Vec::new(), Vec::new()],
            mounts: Vec::new(),
            helpers: Vec::new(),
            killed_at: None,
            fenced: [false; 2],
            exits: Vec::new(),
            setup,
            lan,
        };
        if let Fault::StopFenced { .. } = fault {
            // The BMC's power off runs the fence script, written when the fault comes
            // (it names the agent's PID).
            let script = c.bed.dir.join("fence.sh");
            std::fs::write(&script, "#!/bin/sh\nexit 1\n").unwrap();
            c.lan.as_mut().unwrap().start_bmc(&script);
        }
        if peer == Peer::Hamon {
            c.write_configs(fault);
        }
        if let Fault::ClockJump { host, .. } = *fault {
            let file = c.bed.dir.join("faketime");
            std::fs::write(&file, "+0\n").unwrap();
            c.env[host] = vec![
                ("LD_PRELOAD".into(), faketime_lib()),
                ("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string()),
                ("FAKETIME_NO_CACHE".into(), "1".into()),
                // A wall-clock jump; the monotonic clock goes on as it does on a server.
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ];
        }
        if let Fault::FullStateDir { host } = *fault {
            let dir = c.state_dir(host);
            std::fs::create_dir_all(&dir).unwrap();
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs"])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "mount tmpfs on {}", dir.display());
            c.mounts.push(dir);
        }
        c
    }

    fn dir(&self, host: usize) -> PathBuf {
        self.bed.dir.join(["primary", "secondary"][host])
    }

    fn state_dir(&self, host: usize) -> PathBuf {
        self.dir(host).join("state")
    }

    fn config(&self, host: usize) -> PathBuf {
        self.bed.dir.join(["primary.toml", "secondary.toml"][host])
    }

    /// The issue's timers: 200 ms heartbeats, 3 missed, 200 ms grace, 300 ms probe.
    fn write_configs(&self, fault: &Fault) {
        for (i, role) in ["primary", "secondary"].iter().enumerate() {
            let d = self.dir(i);
            let mut cfg = format!(
                "[node]\nname = \"{role}\"\nrole = \"{role}\"\naddress = \"{addr}\"\n\
                 interface = \"eth0\"\nstate_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\n\
                 [heartbeat]\ninterval_ms = 200\nmissed = 3\ngrace_ms = 200\n\
                 probe_timeout_ms = 300\n\
                 [health_monitor]\ntls = false\n\
                 [vip]\nburst_count = 3\nburst_gap_ms = 100\n\
                 [log]\nlevel = \"trace\"\n",
                addr = V4[i],
                d = d.display()
            );
            if let Fault::StopFenced { works } = *fault {
                let command = self.lan.as_ref().unwrap().fence_command(works);
                cfg += &format!("[fencing]\ncommand = [{command}]\ntimeout_ms = 3000\n");
            }
            if matches!(fault, Fault::Isolate { witness: true, .. }) || self.setup.witness {
                cfg += &format!("[witness]\naddress = \"{}\"\n", V4[O]);
            }
            if let Some(on_loss) = self.setup.arbiter {
                cfg += &format!(
                    "[arbiter]\nendpoints = [\"http://{ETCD_IP}:2379\"]\nttl_s = {}\n\
                     margin_ms = {ARBITER_MARGIN_MS}\non_arbiter_loss = \"{on_loss}\"\n",
                    ARBITER_TTL_MS / 1000
                );
            }
            if matches!(fault, Fault::FullStateDir { .. }) {
                cfg += "[disk]\ninterval_ms = 500\n";
            }
            if *fault == Fault::CrashLoop {
                // Exits once its flag file exists, at once when restarted (only the
                // primary's flag is ever made).
                let flag = d.join("crash");
                cfg += &format!(
                    "[[service]]\nname = \"app\"\nrun_on = \"active\"\ncritical = true\n\
                     restart_attempts = 2\nrestart_window_secs = 10\nrestart_backoff_ms = 100\n\
                     command = [\"/bin/sh\", \"-c\", \"while ! test -e {f}; do sleep 0.1; done; exit 1\"]\n",
                    f = flag.display()
                );
            }
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(self.config(i), cfg).unwrap();
        }
    }

    /// The hamon CLI inside a host's namespace.
    pub fn cli(&self, host: usize, args: &[&str], input: &str) -> std::process::Output {
        self.bed.hamon(host, &self.config(host), args, input)
    }

    fn log_path(&self, host: usize) -> PathBuf {
        self.bed.dir.join(format!("agent-{host}.log"))
    }

    pub fn log(&self, host: usize) -> String {
        std::fs::read_to_string(self.log_path(host)).unwrap_or_default()
    }

    fn start(&mut self, host: usize) {
        let log = self.log_path(host);
        let pid = match self.peer {
            Peer::Hamon => {
                let cfg = self.config(host).display().to_string();
                let mut args: Vec<String> = vec!["env".into()];
                args.extend(self.env[host].iter().map(|(k, v)| format!("{k}={v}")));
                args.extend([hamon().into(), "agent".into(), "--config".into(), cfg]);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.bed.spawn(host, &args, &log)
            }
            Peer::Keepalived => {
                let conf = self.keepalived_conf(host);
                let d = self.dir(host);
                let pidfile = d.join("k.pid").display().to_string();
                let vrrp = d.join("k.vrrp.pid").display().to_string();
                let env: Vec<String> = self.env[host]
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let mut args: Vec<&str> = vec!["env"];
                args.extend(env.iter().map(String::as_str));
                args.extend([
                    "keepalived",
                    "-n",
                    "-l",
                    "-D",
                    "--vrrp",
                    "-f",
                    conf.as_str(),
                    "-p",
                    pidfile.as_str(),
                    "-r",
                    vrrp.as_str(),
                ]);
                self.bed.spawn(host, &args, &log)
            }
        };
        self.pids[host] = Some(pid);
        if self.peer == Peer::Hamon {
            let up = until(Duration::from_secs(10), || {
                self.cli(host, &["ha", "status"], "").status.success()
            });
            assert!(up, "agent {host} did not start:\n{}", self.log(host));
        }
    }

    fn keepalived_conf(&self, host: usize) -> String {
        let d = self.dir(host);
        std::fs::create_dir_all(&d).unwrap();
        let (state, prio) = if host == P {
            ("MASTER", 150)
        } else {
            ("BACKUP", 100)
        };
        // advert_int 0.3 s: about the same detection budget as hamon's 1.1 s.
        let conf = format!(
            "global_defs {{\n  vrrp_version 3\n  script_user root\n}}\n\
             vrrp_instance VI_1 {{\n  state {state}\n  interface eth0\n  virtual_router_id 51\n\
             \n  priority {prio}\n  advert_int 0.3\n  virtual_ipaddress {{\n    {VIP4}/24\n  }}\n}}\n"
        );
        let path = d.join("keepalived.conf");
        std::fs::write(&path, conf).unwrap();
        path.display().to_string()
    }

    /// kill -9 of a host's daemon (keepalived: its VRRP child first, then the parent).
    fn kill9(&mut self, host: usize) {
        if self.peer == Peer::Keepalived {
            let vrrp = self.dir(host).join("k.vrrp.pid");
            if let Some(pid) = std::fs::read_to_string(&vrrp)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                // Only while it is keepalived's (a stale file's PID may be reused).
                let ours = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "keepalived");
                if ours {
                    // SAFETY: kill(2) on keepalived's VRRP child, which our keepalived
                    // forked (its pid file is in this bed's own directory).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = std::fs::remove_file(&vrrp);
        }
        if let Some(pid) = self.pids[host].take() {
            self.bed.signal(pid, libc::SIGKILL);
        }
    }

    fn release_vip(&self, host: usize) {
        let out = self.cli(host, &["vip", "release"], "");
        assert!(out.status.success(), "vip release: {out:?}");
    }

    /// `hamon ha status` state line, or "" (keepalived: none).
    fn state(&self, host: usize) -> String {
        let out = self.cli(host, &["ha", "status"], "");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let Some((_, rest)) = text.split_once("[State] ") else {
            return String::new();
        };
        rest.split(" [").next().unwrap_or("").trim().to_string()
    }

    fn active_state(&self, host: usize) -> bool {
        matches!(
            self.state(host).as_str(),
            "Primary Active" | "Secondary Active"
        )
    }

    fn register(&mut self) {
        match self.peer {
            Peer::Hamon => {
                let out = self.cli(S, &["ha", "authkey"], &format!("{KEY}\n"));
                assert!(out.status.success(), "{out:?}");
                self.start(P);
                self.start(S);
                let out = self.cli(
                    P,
                    &[
                        "ha",
                        "register",
                        "--secondary",
                        V4[S],
                        "--failover-type",
                        "automatic",
                        "--vip",
                        &format!("{VIP4}/24"),
                    ],
                    &format!("{KEY}\n"),
                );
                assert!(out.status.success(), "register: {out:?}\n{}", self.log(P));
                let settled = until(Duration::from_secs(15), || {
                    self.state(P) == "Primary Active"
                        && self.state(S) == "Secondary Syncing"
                        && self.obs.holders() == [true, false]
                });
                assert!(
                    settled,
                    "the pair did not settle: {:?} {:?} {:?}\n{}\n{}",
                    self.state(P),
                    self.state(S),
                    self.obs.holders(),
                    self.log(P),
                    self.log(S)
                );
            }
            Peer::Keepalived => {
                self.start(P);
                self.start(S);
                let settled = until(Duration::from_secs(15), || {
                    self.obs.holders() == [true, false]
                });
                assert!(settled, "keepalived did not settle:\n{}", self.log(P));
            }
        }
        if self.setup.arbiter.is_some() {
            // `hamon status` shows the lease: held by the primary, and whose it is on the
            // secondary.
            let shown = until(Duration::from_secs(5), || {
                let p = self.cli(P, &["status"], "");
                let s = self.cli(S, &["status"], "");
                String::from_utf8_lossy(&p.stdout).contains("Arbiter: lease held")
                    && String::from_utf8_lossy(&s.stdout).contains(&format!(
                        "Arbiter: lease not wanted here, held by primary primary {}",
                        V4[P]
                    ))
            });
            assert!(
                shown,
                "{}\n{}",
                String::from_utf8_lossy(&self.cli(P, &["status"], "").stdout),
                String::from_utf8_lossy(&self.cli(S, &["status"], "").stdout)
            );
        }
        // The client must reach the VIP before anything is done to the pair.
        let reached = until(Duration::from_secs(10), || {
            self.obs.seen().iter().any(|(_, s)| *s == Seen::Echo(P))
        });
        assert!(reached, "the observer never reached the VIP");
        std::thread::sleep(STEADY);
    }

    // ----- fault tools ---------------------------------------------------------------

    /// Adds nftables rules on the bridge between the two servers' ports.
    fn bridge_rules(&self, rules: &[String]) {
        let mut script = String::from(
            "table bridge hamon_fault {\n chain cut {\n  type filter hook forward priority 0; policy accept;\n",
        );
        for r in rules {
            script += &format!("  {r}\n");
        }
        script += " }\n}\n";
        let mut c = Command::new("ip")
            .args(["netns", "exec", self.bed.bridge(), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success(), "nft:\n{script}");
    }

    fn clear_bridge_rules(&self) {
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.bed.bridge(),
                "nft",
                "delete table bridge hamon_fault",
            ])
            .status();
    }

    fn port(host: usize) -> &'static str {
        ["vp", "vs", "vo"][host]
    }

    fn both_ways(what: &str) -> Vec<String> {
        vec![
            format!(
                "iifname \"{}\" oifname \"{}\" {what}",
                Self::port(P),
                Self::port(S)
            ),
            format!(
                "iifname \"{}\" oifname \"{}\" {what}",
                Self::port(S),
                Self::port(P)
            ),
        ]
    }

    /// Adds (`-A`) or deletes (`-D`) the rule that queues `host`'s packets for its peer to
    /// the delay line (iptables' NFQUEUE target: this kernel has no nftables queue).
    fn delay_rule(&self, host: usize, op: &str) {
        let out = self.bed.exec(
            host,
            &[
                "iptables-legacy",
                op,
                "OUTPUT",
                "-d",
                V4[1 - host],
                "-j",
                "NFQUEUE",
                "--queue-num",
                "7",
                "--queue-bypass",
            ],
        );
        assert!(out.status.success(), "iptables {op}: {out:?}");
    }

    fn stop_helpers(&mut self) {
        for c in &mut self.helpers {
            // SAFETY: kill(2) on a child this cluster spawned and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
            let _ = c.wait();
        }
        self.helpers.clear();
    }

    fn fill_state_dir(&self, host: usize) {
        let mut f = std::fs::File::create(self.state_dir(host).join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = f.sync_all();
        // The last bytes: whatever a 64 KiB write could not take.
        while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        while f.write(&[0u8]).is_ok_and(|n| n > 0) {}
    }

    /// The primary dies (its VIP released, as the unit's ExecStopPost does) and the
    /// secondary takes the VIP.
    fn fail_over(&mut self) {
        self.kill9(P);
        self.release_vip(P);
        let taken = until(Duration::from_secs(10), || self.obs.holders()[S]);
        assert!(taken, "no takeover:\n{}", self.log(S));
    }

    // ----- one run -------------------------------------------------------------------

    fn inject(&mut self, fault: &Fault) {
        match *fault {
            Fault::Kill { host, release } => {
                if host == P {
                    self.killed_at = Some(self.obs.now());
                }
                self.kill9(host);
                if release {
                    self.release_vip(host);
                }
            }
            Fault::Stop { host } => {
                if host == P {
                    self.killed_at = Some(self.obs.now());
                }
                self.bed.send(self.pids[host].unwrap(), libc::SIGSTOP)
            }
            Fault::Partition => self.bridge_rules(&Self::both_ways("drop")),
            Fault::OneWay { from, to } => self.bridge_rules(&[format!(
                "iifname \"{}\" oifname \"{}\" drop",
                Self::port(from),
                Self::port(to)
            )]),
            Fault::HeartbeatBlock => match self.peer {
                Peer::Hamon => {
                    self.bridge_rules(&Self::both_ways(&format!("udp dport {HB_PORT} drop")))
                }
                // VRRP is keepalived's heartbeat.
                Peer::Keepalived => self.bridge_rules(&Self::both_ways("ip protocol vrrp drop")),
            },
            Fault::Loss(pct) => self.bridge_rules(&Self::both_ways(&format!(
                "numgen random mod 100 < {pct} drop"
            ))),
            Fault::StopFenced { works } => {
                let pid = self.pids[P].unwrap();
                if works {
                    // What the simulated BMC's power off does: the agent dies, the
                    // addresses go with the power, and the port goes dark.
                    let script = format!(
                        "#!/bin/sh\nkill -9 {pid}\nip -n {ns} addr flush dev eth0\n\
                         ip -n {br} link set {port} down\n",
                        ns = self.bed.ns[P],
                        br = self.bed.bridge(),
                        port = Self::port(P)
                    );
                    std::fs::write(self.bed.dir.join("fence.sh"), script).unwrap();
                    self.fenced[P] = true;
                }
                self.killed_at = Some(self.obs.now());
                self.bed.send(pid, libc::SIGSTOP);
            }
            Fault::Isolate { host, .. } => {
                if host == P {
                    self.killed_at = Some(self.obs.now());
                }
                let port = Self::port(host);
                self.bridge_rules(&[
                    format!("iifname \"{port}\" drop"),
                    format!("oifname \"{port}\" drop"),
                ]);
            }
            Fault::KillUnderLoss(pct) => {
                self.bridge_rules(&Self::both_ways(&format!(
                    "numgen random mod 100 < {pct} drop"
                )));
                std::thread::sleep(fault.hold() / 2);
                self.killed_at = Some(self.obs.now());
                self.kill9(P);
                if self.peer == Peer::Hamon {
                    self.release_vip(P);
                }
            }
            Fault::Delay { min_ms, max_ms } => {
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/delay_line.py");
                for host in [P, S] {
                    let mut child = Command::new("ip")
                        .args(["netns", "exec", &self.bed.ns[host], "python3", "-u"])
                        .arg(&script)
                        .args(["--queue", "7", "--min-ms", &min_ms.to_string()])
                        .args(["--max-ms", &max_ms.to_string()])
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap();
                    let mut ready = String::new();
                    BufReader::new(child.stdout.take().unwrap())
                        .read_line(&mut ready)
                        .unwrap();
                    assert_eq!(ready.trim(), "ready", "delay line in host {host}");
                    self.helpers.push(child);
                    self.delay_rule(host, "-A");
                }
                // The delay is real: a ping between the servers takes both lines' least.
                let out = self.bed.exec(P, &["ping", "-c", "3", "-i", "0.2", V4[S]]);
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let least = text
                    .split("rtt min/avg/max/mdev = ")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .and_then(|m| m.parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("ping through the delay lines: {text}"));
                assert!(least >= 2.0 * min_ms as f64, "not delayed: {text}");
            }
            Fault::RestartBoth => {
                for host in [P, S] {
                    self.kill9(host);
                    if self.peer == Peer::Hamon {
                        self.release_vip(host);
                    }
                }
                self.start_both();
            }
            Fault::FullStateDir { host } => {
                self.fill_state_dir(host);
                // A failover on the full disk.
                self.fail_over();
                if host == S {
                    // The secondary, active on a full disk, restarts.
                    self.kill9(S);
                    self.release_vip(S);
                    self.start(S);
                }
            }
            Fault::ClockJump { secs, .. } => {
                // Only the faked host's agent reads this file.
                std::fs::write(self.bed.dir.join("faketime"), format!("{secs:+}\n")).unwrap();
            }
            Fault::LinkDown { host } => {
                let out = self.bed.exec(host, &["ip", "link", "set", "eth0", "down"]);
                assert!(out.status.success(), "{out:?}");
            }
            Fault::CrashLoop => {
                std::fs::write(self.dir(P).join("crash"), "").unwrap();
            }
            Fault::ArbiterDown => {
                self.killed_at = Some(self.obs.now());
                self.lan.as_mut().unwrap().kill_etcd();
            }
            Fault::FailbackKill { host, after_ms } => {
                // The operator's failback, run on the active secondary.
                let c = Command::new("ip")
                    .args(["netns", "exec", &self.bed.ns[S], hamon(), "--config"])
                    .arg(self.config(S))
                    .args(["ha", "failback"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(after_ms));
                self.kill9(host);
                self.release_vip(host);
                let mut c = c;
                let _ = c.wait();
            }
        }
    }

    /// Both started at once: spawned back to back, then waited for.
    fn start_both(&mut self) {
        if self.peer == Peer::Keepalived {
            self.start(P);
            self.start(S);
            return;
        }
        for host in [P, S] {
            let cfg = self.config(host).display().to_string();
            let log = self.log_path(host);
            let pid = self
                .bed
                .spawn(host, &[hamon(), "agent", "--config", &cfg], &log);
            self.pids[host] = Some(pid);
        }
        for host in [P, S] {
            let up = until(Duration::from_secs(10), || {
                self.cli(host, &["ha", "status"], "").status.success()
            });
            assert!(up, "agent {host} did not start:\n{}", self.log(host));
        }
    }

    fn heal(&mut self, fault: &Fault) {
        match *fault {
            Fault::Kill { host, .. } => self.start(host),
            Fault::Stop { host } => self.bed.send(self.pids[host].unwrap(), libc::SIGCONT),
            Fault::Partition | Fault::OneWay { .. } | Fault::HeartbeatBlock | Fault::Loss(_) => {
                self.clear_bridge_rules()
            }
            Fault::KillUnderLoss(_) => {
                self.clear_bridge_rules();
                self.start(P);
            }
            Fault::Isolate { .. } => self.clear_bridge_rules(),
            Fault::StopFenced { works: true } => {
                // Powered on again: port up, addresses back, agent started.
                let br = self.bed.bridge().to_string();
                let ok = Command::new("ip")
                    .args(["-n", &br, "link", "set", Self::port(P), "up"])
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "port up");
                for (ip, len) in [(V4[P], 24), (super::netns::V6[P], 64)] {
                    let _ = self.bed.exec(
                        P,
                        &["ip", "addr", "add", &format!("{ip}/{len}"), "dev", "eth0"],
                    );
                }
                self.pids[P] = None;
                self.start(P);
            }
            Fault::StopFenced { works: false } => {
                self.bed.send(self.pids[P].unwrap(), libc::SIGCONT)
            }
            Fault::Delay { .. } => {
                for host in [P, S] {
                    self.delay_rule(host, "-D");
                }
                self.stop_helpers();
            }
            Fault::RestartBoth => {}
            // The primary comes back (on its own full disk when it is the full one).
            Fault::FullStateDir { .. } => self.start(P),
            Fault::ClockJump { .. } => {
                std::fs::write(self.bed.dir.join("faketime"), "+0\n").unwrap();
            }
            Fault::LinkDown { host } => {
                let out = self.bed.exec(host, &["ip", "link", "set", "eth0", "up"]);
                assert!(out.status.success(), "{out:?}");
            }
            Fault::CrashLoop => {
                let _ = std::fs::remove_file(self.dir(P).join("crash"));
            }
            Fault::FailbackKill { host, .. } => self.start(host),
            Fault::ArbiterDown => self.lan.as_mut().unwrap().start_etcd(),
        }
    }

    /// Prepares what the fault needs before it (a failover for a failback).
    fn prepare(&mut self, fault: &Fault) {
        if let Fault::FailbackKill { .. } = fault {
            self.fail_over();
            self.start(P);
            let back = until(Duration::from_secs(20), || {
                self.state(P).starts_with("Primary")
                    && self.state(P) != "Primary Active"
                    && self.state(S) == "Secondary Active"
            });
            assert!(back, "{:?} {:?}", self.state(P), self.state(S));
            std::thread::sleep(STEADY);
        }
    }

    /// Exactly one server holds the VIP (kernel and monitor agree) and, for hamon, it is
    /// the one in an active state.
    fn single_active(&self) -> Option<usize> {
        let holds = [self.bed.has_vip(P), self.bed.has_vip(S)];
        if holds != self.obs.holders() {
            return None;
        }
        let host = match holds {
            [true, false] => P,
            [false, true] => S,
            _ => return None,
        };
        if self.peer == Peer::Hamon && (!self.active_state(host) || self.active_state(1 - host)) {
            return None;
        }
        Some(host)
    }

    fn check_alive(&mut self) {
        for host in [P, S] {
            if let Some(pid) = self.pids[host] {
                if let Some(status) = self.bed.exited(pid) {
                    if !self.fenced[host] {
                        self.exits.push((host, status.to_string()));
                    }
                    self.pids[host] = None;
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for host in [P, S] {
            self.kill9(host);
        }
        self.stop_helpers();
        for dir in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(dir).status();
        }
    }
}

fn faketime_lib() -> String {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        Path::new(lib).exists(),
        "libfaketime is missing (apt-get install libfaketime; .ci/run installs it)"
    );
    lib.into()
}

// ----- figures --------------------------------------------------------------------------

/// What one run of one fault did, as the observer saw it.
#[derive(Debug, Clone)]
pub struct Report {
    pub fault: String,
    pub peer: &'static str,
    pub hold_ms: u64,
    /// Windows where both kernels held the VIP, from the fault on.
    pub dual_windows: usize,
    pub dual_longest_ms: u64,
    /// The longest stretch without an echo reply, from the fault on.
    pub outage_ms: u64,
    /// VIP claims by each server from the fault on.
    pub claims: [usize; 2],
    pub false_failovers: usize,
    /// From the heal until the VIP last changed hands.
    pub converge_ms: u64,
    /// From the fault's kill of the primary until the secondary claimed the VIP.
    pub takeover_ms: Option<u64>,
    /// From the fault's start until the primary's kernel lost the VIP.
    pub demoted_ms: Option<u64>,
    /// The server that ends active (`None`: none, or both).
    pub settled_on: Option<usize>,
    pub exits: Vec<(usize, String)>,
    pub panics: usize,
}

impl Report {
    fn json(&self) -> String {
        format!(
            "{{\"fault\":\"{}\",\"peer\":\"{}\",\"hold_ms\":{},\"dual_windows\":{},\
             \"dual_longest_ms\":{},\"outage_ms\":{},\"claims\":[{},{}],\
             \"false_failovers\":{},\"converge_ms\":{},\"takeover_ms\":{},\"demoted_ms\":{},\
             \"settled\":{},\"exits\":{},\"panics\":{}}}",
            self.fault,
            self.peer,
            self.hold_ms,
            self.dual_windows,
            self.dual_longest_ms,
            self.outage_ms,
            self.claims[0],
            self.claims[1],
            self.false_failovers,
            self.converge_ms,
            self.takeover_ms
                .map_or_else(|| "null".to_string(), |t| t.to_string()),
            self.demoted_ms
                .map_or_else(|| "null".to_string(), |t| t.to_string()),
            self.settled_on.is_some(),
            self.exits.len(),
            self.panics
        )
    }
}

fn analyse(
    seen: &[(u64, Seen)],
    from: u64,
    healed: u64,
    to: u64,
) -> (usize, u64, u64, [usize; 2], u64) {
    let mut held = [false; 2];
    let mut dual_since: Option<u64> = None;
    let (mut windows, mut longest) = (0, 0);
    let mut claims = [0; 2];
    let mut last_change = healed;
    let mut last_echo = from;
    let mut outage = 0;
    for &(at, s) in seen {
        match s {
            Seen::Vip(h, on) => {
                if at >= from && on && !held[h] {
                    claims[h] += 1;
                }
                if at >= healed && held[h] != on {
                    last_change = last_change.max(at);
                }
                held[h] = on;
                match (held == [true, true], dual_since) {
                    (true, None) => dual_since = Some(at),
                    (false, Some(t)) => {
                        if at >= from {
                            windows += 1;
                            longest = longest.max(at - t.max(from));
                        }
                        dual_since = None;
                    }
                    _ => {}
                }
            }
            Seen::Echo(_) if at >= from && at <= to => {
                outage = outage.max(at - last_echo);
                last_echo = at;
            }
            _ => {}
        }
    }
    if let Some(t) = dual_since {
        windows += 1;
        longest = longest.max(to - t.max(from));
    }
    outage = outage.max(to.saturating_sub(last_echo));
    (windows, longest, outage, claims, last_change - healed)
}

/// Runs `fault` `HAMON_FAULTS_RUNS` times (default 1) on a fresh pair each time, checks the
/// invariants after each run, and returns the reports. `tag` keeps namespace names unique.
pub fn run(tag: &str, fault: Fault) -> Vec<Report> {
    run_in(tag, fault, Setup::default())
}

/// As `run`, with an arbiter or a witness set up too (hamon only: keepalived has neither).
pub fn run_in(tag: &str, fault: Fault, setup: Setup) -> Vec<Report> {
    let peer = Peer::from_env();
    if setup != Setup::default() && peer != Peer::Hamon {
        return Vec::new();
    }
    if !super::netns::available() || !fault.applies_to(peer) {
        return Vec::new();
    }
    if matches!(fault, Fault::ClockJump { .. }) {
        faketime_lib();
    }
    let runs = std::env::var("HAMON_FAULTS_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // The baseline gets namespaces of its own, so both can run at once; so does a run
    // with HAMON_FAULTS_TAG (a prefix) beside another.
    let prefix = std::env::var("HAMON_FAULTS_TAG").unwrap_or_default();
    let tag = match peer {
        Peer::Hamon => format!("{prefix}{tag}"),
        Peer::Keepalived => format!("{prefix}k{tag}"),
    };
    (0..runs)
        .map(|_| run_once(&tag, peer, fault, setup))
        .collect()
}

/// The invariants are hamon's to keep: for the baseline they are only reported.
pub fn asserting() -> bool {
    Peer::from_env() == Peer::Hamon
}

fn run_once(tag: &str, peer: Peer, fault: Fault, setup: Setup) -> Report {
    let mut c = Cluster::new(tag, peer, &fault, setup);
    c.register();
    c.prepare(&fault);
    let hold = fault.hold();
    let from = c.obs.now();
    // The hold counts from the start of the fault, injection included.
    let t = Instant::now();
    c.inject(&fault);
    while t.elapsed() < hold {
        std::thread::sleep(Duration::from_millis(100));
        c.check_alive();
    }
    let healed = c.obs.now();
    c.heal(&fault);
    // Settled: one active server, staying so for STEADY.
    let mut settled_on = None;
    let deadline = Instant::now() + CONVERGE;
    while Instant::now() < deadline {
        if let Some(h) = c.single_active() {
            std::thread::sleep(STEADY);
            if c.single_active() == Some(h) {
                settled_on = Some(h);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    c.check_alive();
    let to = c.obs.now();
    let seen = c.obs.seen();
    let (dual_windows, dual_longest_ms, outage_ms, claims, converge_ms) =
        analyse(&seen, from, healed, to);
    let takeover_ms = c.killed_at.and_then(|k| {
        seen.iter()
            .find(|(at, s)| *at >= k && *s == Seen::Vip(S, true))
            .map(|(at, _)| at - k)
    });
    let panics = [P, S]
        .iter()
        .map(|&h| c.log(h).matches("panicked").count())
        .sum();
    let demoted_ms = c.killed_at.and_then(|k| {
        seen.iter()
            .find(|(at, s)| *at >= k && *s == Seen::Vip(P, false))
            .map(|(at, _)| at - k)
    });
    let report = Report {
        fault: format!("{}{}", fault.label(), setup.label()),
        demoted_ms,
        peer: peer.name(),
        hold_ms: hold.as_millis() as u64,
        dual_windows,
        dual_longest_ms,
        outage_ms,
        claims,
        false_failovers: if fault.primary_healthy() {
            claims[S]
        } else {
            0
        },
        converge_ms,
        takeover_ms,
        settled_on,
        exits: c.exits.clone(),
        panics,
    };
    eprintln!("{}", report.json());
    if let Ok(path) = std::env::var("HAMON_FAULTS_OUT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{}", report.json()).unwrap();
    }
    if peer != Peer::Hamon {
        return report;
    }
    // The invariants every run must keep.
    assert!(
        report.settled_on.is_some(),
        "{}: no single active server after the heal ({:?} {:?}, VIP {:?})\n{}\n---\n{}",
        report.fault,
        c.state(P),
        c.state(S),
        c.obs.holders(),
        c.log(P),
        c.log(S)
    );
    assert!(
        report.exits.is_empty(),
        "{}: exits {:?}",
        report.fault,
        report.exits
    );
    assert_eq!(
        report.panics,
        0,
        "{}: a panic\n{}\n{}",
        report.fault,
        c.log(P),
        c.log(S)
    );
    if let Fault::Isolate {
        host,
        witness: true,
    } = fault
    {
        // It fenced itself, and said so.
        let journal =
            std::fs::read_to_string(c.state_dir(host).join("events.jsonl")).unwrap_or_default();
        assert!(
            journal.contains("\"kind\":\"self_fenced\""),
            "{}: no self-fencing:\n{journal}",
            report.fault
        );
    }
    if let Fault::StopFenced { works } = fault {
        let journal =
            std::fs::read_to_string(c.state_dir(S).join("events.jsonl")).unwrap_or_default();
        let kind = if works {
            "fencing_done"
        } else {
            "fencing_failed"
        };
        assert!(
            journal.contains(&format!("\"kind\":\"{kind}\"")),
            "{}: no {kind}:\n{journal}",
            report.fault
        );
    }
    if setup.arbiter.is_some() {
        // The lease never let two servers hold the VIP.
        assert_eq!(
            report.dual_windows,
            0,
            "{}: two active servers under the arbiter: {report:?}\n{}\n---\n{}",
            report.fault,
            c.log(P),
            c.log(S)
        );
    }
    if fault == Fault::ArbiterDown {
        let journal =
            std::fs::read_to_string(c.state_dir(P).join("events.jsonl")).unwrap_or_default();
        assert!(
            journal.contains("\"kind\":\"arbiter_lost\""),
            "{}: the lost lease was not reported:\n{journal}",
            report.fault
        );
        assert!(
            journal.contains("\"kind\":\"arbiter_unreachable\""),
            "{}: the unreachable arbiter was not reported:\n{journal}",
            report.fault
        );
    }
    if let Fault::OneWay { from, .. } = fault {
        // The server whose frames are lost hears its peer, and names the one-way path.
        let journal =
            std::fs::read_to_string(c.state_dir(from).join("events.jsonl")).unwrap_or_default();
        assert!(
            journal.contains("\"kind\":\"heartbeat_one_way\""),
            "{}: the one-way path was not named:\n{journal}",
            report.fault
        );
    }
    if let Fault::FailbackKill { .. } = fault {
        // The kill came during a failback that had begun.
        let journal =
            std::fs::read_to_string(c.state_dir(S).join("events.jsonl")).unwrap_or_default();
        assert!(
            journal.contains("Secondary Failback") || journal.contains("SecondaryFailback"),
            "{}: the failback never began:\n{journal}",
            report.fault
        );
    }
    if let Fault::FullStateDir { host } = fault {
        // The server with the full disk says so.
        let log = c.log(host);
        assert!(
            log.contains("% full") && log.contains("critical"),
            "{}: no full-disk report:\n{log}",
            report.fault
        );
    }
    report
}
