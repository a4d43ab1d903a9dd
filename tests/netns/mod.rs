//! A network-namespace test bed: primary, secondary and an observer (a
//! managed device), each in its own namespace, joined by veth pairs into a
//! bridge that lives in a fourth namespace. Documentation addresses only.
//! Nothing touches the host's own namespace; everything is removed on drop,
//! even after a failed assertion, and teardown keeps going past errors.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const P: usize = 0;
pub const S: usize = 1;
pub const O: usize = 2;

pub const V4: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.100"];
pub const V6: [&str; 3] = ["2001:db8::11", "2001:db8::12", "2001:db8::100"];
pub const MAC: [&str; 3] = [
    "02:00:00:00:00:11",
    "02:00:00:00:00:12",
    "02:00:00:00:00:64",
];
pub const VIP4: &str = "192.0.2.10";
pub const VIP6: &str = "2001:db8::10";

/// Can this process build namespaces? In CI the answer must be yes.
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let ok = root && ip;
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the namespace tests (root: {root}, iproute2: {ip})"
        );
        eprintln!("skipped: namespace tests need root and iproute2");
    }
    ok
}

fn run(args: &[&str]) -> Result<Output, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output();
    let out = out.map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub struct Bed {
    pub ns: [String; 3],
    br: String,
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl Bed {
    /// Build the topology. `tag` (a few letters) keeps names unique per test.
    pub fn new(tag: &str) -> Bed {
        let ns = ["p", "s", "o"].map(|h| format!("hm{tag}{h}"));
        let br = format!("hm{tag}br");
        let dir = std::env::temp_dir().join(format!("hamon-bed-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bed = Bed {
            ns,
            br,
            dir,
            children: Vec::new(),
        };
        bed.build()
            .unwrap_or_else(|e| panic!("building the test bed: {e}"));
        bed
    }

    fn build(&self) -> Result<(), String> {
        for n in self.ns.iter().chain([&self.br]) {
            let _ = run(&["ip", "netns", "del", n]); // leftovers of a killed run
            run(&["ip", "netns", "add", n])?;
            run(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        }
        let br = self.br.as_str();
        run(&[
            "ip",
            "-n",
            br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        run(&["ip", "-n", br, "link", "set", "br0", "up"])?;
        for (i, n) in self.ns.iter().enumerate() {
            let port = format!("v{}", ["p", "s", "o"][i]);
            run(&[
                "ip", "-n", br, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", n,
            ])?;
            run(&["ip", "-n", br, "link", "set", &port, "master", "br0", "up"])?;
            self.sysctl(i, "net.ipv6.conf.all.accept_dad", "0")?;
            self.sysctl(i, "net.ipv6.conf.default.accept_dad", "0")?;
            self.sysctl(i, "net.ipv6.conf.eth0.accept_dad", "0")?;
            run(&["ip", "-n", n, "link", "set", "eth0", "address", MAC[i]])?;
            run(&["ip", "-n", n, "link", "set", "eth0", "up"])?;
            run(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/24", V4[i]),
                "dev",
                "eth0",
            ])?;
            run(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/64", V6[i]),
                "dev",
                "eth0",
                "nodad",
            ])?;
        }
        // The observer learns from unsolicited ARP and NA, as a managed device should.
        for key in [
            "net.ipv4.conf.all.arp_accept",
            "net.ipv4.conf.eth0.arp_accept",
        ] {
            self.sysctl(O, key, "1")?;
        }
        for key in [
            "net.ipv6.conf.all.forwarding",
            "net.ipv6.conf.all.accept_untracked_na",
            "net.ipv6.conf.eth0.accept_untracked_na",
        ] {
            self.sysctl(O, key, "1")?;
        }
        Ok(())
    }

    fn sysctl(&self, host: usize, key: &str, value: &str) -> Result<(), String> {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns[host],
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ])
        .map(drop)
    }

    /// Run a command inside a host's namespace.
    pub fn exec(&self, host: usize, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns[host]])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The hamon CLI with `config`, run inside a host's namespace, `input` on its stdin.
    pub fn hamon(&self, host: usize, config: &Path, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut c = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns[host],
                env!("CARGO_BIN_EXE_hamon"),
                "--config",
            ])
            .arg(config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }

    /// Start a process in a host's namespace (`ip netns exec` execs it, so
    /// the child's PID is the process's own). Killed on drop.
    pub fn spawn(&mut self, host: usize, args: &[&str], log: &Path) -> u32 {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns[host]])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Signal a process this bed started, and reap it.
    pub fn signal(&mut self, pid: u32, sig: i32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            // SAFETY: kill(2) on a child this bed spawned and has not reaped.
            unsafe { libc::kill(pid as libc::pid_t, sig) };
            let mut c = self.children.remove(i);
            let _ = c.wait();
        }
    }

    /// Send a signal to a process this bed started, without reaping it (SIGSTOP, SIGCONT).
    pub fn send(&self, pid: u32, sig: i32) {
        if self.children.iter().any(|c| c.id() == pid) {
            // SAFETY: kill(2) on a child this bed spawned and has not reaped.
            unsafe { libc::kill(pid as libc::pid_t, sig) };
        }
    }

    /// How a process this bed started ended, if it has (`None` while it runs).
    /// An exited child is reaped and forgotten, so nothing signals its PID again.
    pub fn exited(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        let i = self.children.iter().position(|c| c.id() == pid)?;
        let status = self.children[i].try_wait().ok().flatten()?;
        // Already reaped by try_wait; wait returns its status again.
        let _ = self.children.remove(i).wait();
        Some(status)
    }

    /// The bridge namespace's name (faults are injected there).
    pub fn bridge(&self) -> &str {
        &self.br
    }

    /// Cut or restore a host's cable (its port on the bridge).
    pub fn link(&self, host: usize, up: bool) {
        let port = format!("v{}", ["p", "s", "o"][host]);
        run(&[
            "ip",
            "-n",
            &self.br,
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ])
        .unwrap();
    }

    /// Add loss or delay on a host's NIC with tc netem, e.g. `["delay",
    /// "40ms"]`. Needs the kernel's sch_netem; where it is missing, use
    /// `drop_incoming`, which needs only nftables.
    pub fn netem(&self, host: usize, spec: &[&str]) -> Result<(), String> {
        let mut args = vec![
            "ip",
            "netns",
            "exec",
            &self.ns[host],
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "netem",
        ];
        args.extend_from_slice(spec);
        run(&args).map(drop)
    }

    /// Drop `percent` of the packets matching `what` (an nftables match such
    /// as `udp dport 8083`) arriving at a host, chosen at random per packet.
    pub fn drop_incoming(&self, host: usize, what: &str, percent: u32) {
        let ns = &self.ns[host];
        let nft = |rule: &str| run(&["ip", "netns", "exec", ns, "nft", rule]).unwrap();
        nft("add table inet hamon_bed");
        nft("add chain inet hamon_bed input { type filter hook input priority 0 ; }");
        let rule = if percent >= 100 {
            format!("add rule inet hamon_bed input {what} drop")
        } else {
            format!("add rule inet hamon_bed input {what} numgen random mod 100 < {percent} drop")
        };
        nft(&rule);
    }

    /// Remove every rule `drop_incoming` added on a host.
    pub fn clear_drops(&self, host: usize) {
        let _ = run(&[
            "ip",
            "netns",
            "exec",
            &self.ns[host],
            "nft",
            "delete table inet hamon_bed",
        ]);
    }

    /// The observer's neighbour entry for `ip`: its link-layer address.
    pub fn neighbour(&self, ip: &str) -> Option<String> {
        let out = self.exec(O, &["ip", "neigh", "show", "to", ip, "dev", "eth0"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "lladdr" {
                return words.next().map(str::to_string);
            }
        }
        None
    }

    pub fn ping(&self, from: usize, ip: &str) -> bool {
        self.exec(from, &["ping", "-c", "1", "-W", "1", ip])
            .status
            .success()
    }

    /// Addresses on a host's eth0, as `ip -o addr` prints them (ADDR/PREFIX).
    pub fn addresses(&self, host: usize) -> Vec<String> {
        let out = self.exec(host, &["ip", "-o", "addr", "show", "dev", "eth0"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.position(|x| x == "inet" || x == "inet6")?;
                w.next().map(str::to_string)
            })
            .collect()
    }

    pub fn has_vip(&self, host: usize) -> bool {
        self.addresses(host)
            .iter()
            .any(|a| a.starts_with(&format!("{VIP4}/")))
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let mut errors = Vec::new();
        for mut c in self.children.drain(..) {
            // SAFETY: kill(2) on a child this bed spawned and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
            let _ = c.wait();
        }
        for n in self.ns.iter().chain([&self.br]) {
            if let Err(e) = run(&["ip", "netns", "del", n]) {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            eprintln!("test bed teardown: {}", errors.join("; "));
        }
        // HAMON_BED_KEEP keeps the logs of a run that passed, for a look afterwards.
        if !std::thread::panicking() && std::env::var_os("HAMON_BED_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Poll `f` until it holds or `within` passes.
pub fn until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
