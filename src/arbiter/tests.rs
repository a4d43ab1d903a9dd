//! The arbiter thread against a real etcd, each test in a private network namespace of
//! its own (root; `.ci/run` installs etcd-server). Two `Arbiter`s stand for the two
//! servers.

use super::*;
use crate::config::{endpoint, Arbiter as ArbiterConfig};
use crate::ha::ArbiterLoss;
use crate::net::testns::in_private_netns;
use crossbeam_channel::Receiver as Rx;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const PAIR: u64 = 0x5EED;

/// etcd on 127.0.0.1 inside the test's namespace, killed on drop.
struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
}

impl Etcd {
    fn start(tag: &str, extra: &[&str]) -> Etcd {
        let dir = std::env::temp_dir().join(format!("hamon-etcd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let scheme = if extra.iter().any(|a| a.starts_with("--cert-file")) {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://127.0.0.1:2379");
        let mut args: Vec<String> = [
            "--name",
            "t",
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "t=http://127.0.0.1:2380",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--data-dir".into());
        args.push(dir.join("data").display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut e = Etcd {
            child: None,
            dir,
            args,
        };
        e.run();
        e
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        self.child = Some(
            Command::new("etcd")
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("etcd (apt-get install etcd-server; .ci/run installs it)"),
        );
        // Up once it listens (TLS or not, a TCP connect tells).
        let up = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::net::TcpStream::connect("127.0.0.1:2379").is_ok()
        });
        assert!(up, "etcd did not start: {}", self.log());
        std::thread::sleep(Duration::from_millis(300)); // its election
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the etcd this test started and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    fn etcdctl(&self, args: &[&str]) {
        let out = Command::new("etcdctl")
            .args(["--endpoints", "http://127.0.0.1:2379"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn lo_up() {
    let ok = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn config(endpoints: &[&str]) -> ArbiterConfig {
    ArbiterConfig {
        endpoints: endpoints.iter().map(|e| endpoint(e).unwrap()).collect(),
        ttl: Duration::from_secs(2),
        margin: Duration::from_millis(500),
        on_loss: ArbiterLoss::Demote,
        prefix: "/hamon-test".into(),
        ca_file: None,
        client_cert: None,
        auth: None,
    }
}

/// An arbiter thread and what it tells the core.
fn server(cfg: &ArbiterConfig, me: &str) -> (Arbiter, Rx<Event>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let send = Arc::new(move |e| {
        let _ = tx.send(e);
    });
    (Arbiter::start(cfg, me.into(), send).unwrap(), rx)
}

/// The next `Event::Lease` within `wait`: (gen, held), skipping observations.
fn lease(rx: &Rx<Event>, wait: Duration) -> Option<(u64, bool)> {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left).ok()? {
            Event::Lease { gen, held, .. } => return Some((gen, held)),
            _ => continue,
        }
    }
}

#[test]
fn one_holder_at_a_time_and_a_release_hands_over_at_once() {
    in_private_netns("arbiter_handover", || {
        lo_up();
        let _etcd = Etcd::start("handover", &[]);
        // The first endpoint refuses connections: the second is used.
        let cfg = config(&["http://127.0.0.1:1", "http://127.0.0.1:2379"]);
        let (a, a_rx) = server(&cfg, "primary a 192.0.2.11");
        let (b, b_rx) = server(&cfg, "secondary b 192.0.2.12");
        a.order(true, PAIR, 1);
        assert_eq!(lease(&a_rx, Duration::from_secs(5)), Some((1, true)));
        assert!(a.view().held);
        b.order(true, PAIR, 1);
        // Held and renewed by a: b waits three TTLs in vain.
        assert_eq!(lease(&b_rx, Duration::from_secs(6)), None);
        assert_eq!(
            lease(&a_rx, Duration::from_millis(10)),
            None,
            "a never lost it"
        );
        assert_eq!(b.view().holder.as_deref(), Some("primary a 192.0.2.11"));
        // a gives it up: b wins it within a poll or two, long before the TTL.
        let t = Instant::now();
        a.order(false, PAIR, 2);
        assert_eq!(lease(&b_rx, Duration::from_secs(5)), Some((1, true)));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        a.finish(Duration::from_secs(2));
        b.finish(Duration::from_secs(2));
    });
}

#[test]
fn a_holder_cut_off_from_etcd_is_told_before_its_lease_can_expire() {
    in_private_netns("arbiter_cut_off", || {
        lo_up();
        let mut etcd = Etcd::start("cutoff", &[]);
        let cfg = config(&["http://127.0.0.1:2379"]);
        let (a, a_rx) = server(&cfg, "primary a 192.0.2.11");
        a.order(true, PAIR, 1);
        assert_eq!(lease(&a_rx, Duration::from_secs(5)), Some((1, true)));
        std::thread::sleep(Duration::from_millis(1_300)); // a few renewals
        let killed = Instant::now();
        etcd.kill();
        assert_eq!(lease(&a_rx, Duration::from_secs(5)), Some((1, false)));
        let after = killed.elapsed();
        // Its last renewal came at most a renewal period (TTL / 4) before the kill: it is
        // told at that renewal + TTL - margin, so between these bounds, and always before
        // etcd (which counts from a later instant) could let the lease go.
        let (ttl, margin) = (cfg.ttl, cfg.margin);
        assert!(
            after <= ttl - margin + Duration::from_millis(100),
            "{after:?}"
        );
        assert!(
            after >= ttl - margin - ttl / 4 - Duration::from_millis(100),
            "{after:?}"
        );
        assert_eq!(a.view().reachable, Some(false));
        // etcd back (its data kept): the lease's key still names a, so a takes it up again
        // if it lives, or wins a new one.
        etcd.run();
        assert_eq!(lease(&a_rx, Duration::from_secs(8)), Some((1, true)));
        a.finish(Duration::from_secs(2));
    });
}

#[test]
fn a_restarted_agent_takes_up_its_own_lease() {
    in_private_netns("arbiter_adopt", || {
        lo_up();
        let _etcd = Etcd::start("adopt", &[]);
        let cfg = config(&["http://127.0.0.1:2379"]);
        let (a, a_rx) = server(&cfg, "primary a 192.0.2.11");
        a.order(true, PAIR, 1);
        assert_eq!(lease(&a_rx, Duration::from_secs(5)), Some((1, true)));
        // A second run of the same server (the first one's key still lives): it renews
        // the key's lease instead of waiting for it to expire.
        let (again, again_rx) = server(&cfg, "primary a 192.0.2.11");
        let t = Instant::now();
        again.order(true, PAIR, 7);
        assert_eq!(lease(&again_rx, Duration::from_secs(5)), Some((7, true)));
        assert!(t.elapsed() < cfg.ttl, "{:?}", t.elapsed());
        // The other server's identity is not taken for ours.
        let (b, b_rx) = server(&cfg, "secondary b 192.0.2.12");
        b.order(true, PAIR, 1);
        assert_eq!(lease(&b_rx, Duration::from_secs(3)), None);
        for s in [a, again, b] {
            s.finish(Duration::from_secs(2));
        }
    });
}

#[test]
fn users_and_passwords_are_used_and_a_wrong_one_never_wins() {
    in_private_netns("arbiter_auth", || {
        lo_up();
        let etcd = Etcd::start("auth", &[]);
        etcd.etcdctl(&["user", "add", "root:Root-Pw-1"]);
        etcd.etcdctl(&["user", "add", "hamon:Hamon-Pw-1"]);
        etcd.etcdctl(&["role", "add", "ha"]);
        etcd.etcdctl(&[
            "role",
            "grant-permission",
            "ha",
            "--prefix=true",
            "readwrite",
            "/hamon-test/",
        ]);
        etcd.etcdctl(&["user", "grant-role", "hamon", "ha"]);
        etcd.etcdctl(&["auth", "enable"]);
        let mut cfg = config(&["http://127.0.0.1:2379"]);
        cfg.auth = Some(("hamon".into(), "Hamon-Pw-1".into()));
        let (a, a_rx) = server(&cfg, "primary a 192.0.2.11");
        a.order(true, PAIR, 1);
        assert_eq!(lease(&a_rx, Duration::from_secs(5)), Some((1, true)));
        cfg.auth = Some(("hamon".into(), "wrong".into()));
        let (b, b_rx) = server(&cfg, "secondary b 192.0.2.12");
        b.order(true, PAIR, 1);
        a.order(false, PAIR, 2);
        assert_eq!(lease(&b_rx, Duration::from_secs(3)), None);
        let error = b.view().error.unwrap_or_default();
        assert!(error.contains("authentication failed"), "{error}");
        a.finish(Duration::from_secs(2));
        b.finish(Duration::from_secs(2));
    });
}

/// A CA, etcd's server certificate for 127.0.0.1, and a client certificate, as PEM files.
fn certificates(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "hamon test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issue = |names: Vec<String>, cn: &str, file: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(names).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}-key.pem")), key.serialize_pem()).unwrap();
    };
    issue(vec!["127.0.0.1".into()], "etcd", "server");
    issue(vec![], "hamon", "client");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
}

#[test]
fn tls_with_client_certificates() {
    in_private_netns("arbiter_tls", || {
        lo_up();
        let dir = std::env::temp_dir().join(format!("hamon-etcd-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        certificates(&dir);
        let f = |n: &str| dir.join(n).display().to_string();
        let (cert, key, ca) = (f("server.pem"), f("server-key.pem"), f("ca.pem"));
        let _etcd = Etcd::start(
            "tls",
            &[
                &format!("--cert-file={cert}"),
                &format!("--key-file={key}"),
                &format!("--trusted-ca-file={ca}"),
                "--client-cert-auth",
            ],
        );
        let mut cfg = config(&["https://127.0.0.1:2379"]);
        cfg.ca_file = Some(dir.join("ca.pem"));
        cfg.client_cert = Some((dir.join("client.pem"), dir.join("client-key.pem")));
        let (a, a_rx) = server(&cfg, "primary a 192.0.2.11");
        a.order(true, PAIR, 1);
        assert_eq!(lease(&a_rx, Duration::from_secs(5)), Some((1, true)));
        // Without a client certificate, etcd refuses the handshake.
        cfg.client_cert = None;
        let (b, b_rx) = server(&cfg, "secondary b 192.0.2.12");
        b.order(true, PAIR, 1);
        a.order(false, PAIR, 2);
        assert_eq!(lease(&b_rx, Duration::from_secs(3)), None);
        assert_eq!(b.view().reachable, Some(false), "{:?}", b.view());
        a.finish(Duration::from_secs(2));
        b.finish(Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&dir);
    });
}
