//! A keyless stranger floods the active server's Health Monitor: 1,000 idle TCP
//! connections from 20 source addresses, plus 200 TLS handshakes that stall
//! halfway (half a ClientHello, or a whole one and never the Finished), held for
//! 30 s and reopened as the server closes them. Meanwhile the peer's `/healthz`
//! probe must answer within 200 ms every time, a logged-in operator's page must
//! load, no heartbeat may be missed, and nothing may fail over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hamon::web::client::{ClientResponse, Endpoint, Verify};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: u8 = 60;
const ATTACKERS: u8 = 20;
const IDLE_PER_ADDRESS: usize = 50;
const STALLED_PER_ADDRESS: usize = 10;
const FLOOD: Duration = Duration::from_secs(30);

/// Lets this process (and the agents it starts) hold the flood's sockets.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or fill the struct passed by reference.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max.min(16384);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(lim.rlim_cur >= 4096, "fd limit too low: {}", lim.rlim_cur);
}

/// A genuine ClientHello (no certificate is ever checked: it is never answered).
fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "hamon.example".try_into().unwrap())
            .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

fn connect_from(from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&SocketAddr::new(from, 0).into()).ok()?;
    sock.connect_timeout(&to.into(), Duration::from_secs(1))
        .ok()?;
    let s: TcpStream = sock.into();
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// True while the server has not closed `s`.
fn open(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// What one attacking address holds: idle connections and stalled handshakes.
struct Held {
    from: IpAddr,
    idle: Vec<Option<TcpStream>>,
    stalled: Vec<Option<TcpStream>>,
}

fn https(
    from: IpAddr,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<ClientResponse, String> {
    Endpoint::new(to)
        .from(from)
        .tls(&to.ip().to_string(), Verify::AnyCertificate)
        .request(method, path, headers, body, Duration::from_secs(5), 1 << 20)
        .map_err(|e| e.to_string())
}

#[test]
fn a_flood_of_idle_connections_and_stalled_handshakes_silences_nothing() {
    raise_fd_limit();
    let p = Pair::new(N);
    p.edit_configs(|c| c.replace("tls = false", "tls = true"));
    let p = Pair::registered_with(p, "automatic");
    let active: SocketAddr = format!("{}:18082", p.addrs[0]).parse().unwrap();
    let peer: IpAddr = p.addrs[1].parse().unwrap();
    let operator = IpAddr::V4(Ipv4Addr::new(127, 0, N, 90));

    // The operator logs in before the flood.
    let form = format!("key={KEY}");
    let login = https(
        operator,
        active,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .unwrap();
    assert_eq!(login.status, 303);
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(500));
    let before = [p.heartbeat_counts(0), p.heartbeat_counts(1)];

    let hello = client_hello();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (stop, opened) = (stop.clone(), opened.clone());
        std::thread::spawn(move || {
            let mut held: Vec<Held> = (0..ATTACKERS)
                .map(|a| Held {
                    from: IpAddr::V4(Ipv4Addr::new(127, 0, N, 10 + a)),
                    idle: (0..IDLE_PER_ADDRESS).map(|_| None).collect(),
                    stalled: (0..STALLED_PER_ADDRESS).map(|_| None).collect(),
                })
                .collect();
            while !stop.load(Ordering::Relaxed) {
                // Reopen whatever the server closed.
                for h in &mut held {
                    for slot in &mut h.idle {
                        if !slot.as_ref().is_some_and(open) {
                            *slot = connect_from(h.from, active);
                            opened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    for (i, slot) in h.stalled.iter_mut().enumerate() {
                        if !slot.as_ref().is_some_and(open) {
                            *slot = connect_from(h.from, active).map(|mut s| {
                                let part = if i % 2 == 0 {
                                    hello.len() / 2
                                } else {
                                    hello.len()
                                };
                                let _ = s.write_all(&hello[..part]);
                                s
                            });
                            opened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2)); // the flood is in place

    let t0 = Instant::now();
    let mut probes = Vec::new();
    let mut pages = 0;
    while t0.elapsed() < FLOOD {
        // The peer's probe, from the peer's address, as its agent sends it.
        let started = Instant::now();
        let r = https(peer, active, "GET", "/healthz", &[], b"");
        let took = started.elapsed();
        assert_eq!(r.as_ref().map(|r| r.status), Ok(200), "probe: {r:?}");
        assert!(
            took < Duration::from_millis(200),
            "the probe took {took:?} under the flood"
        );
        probes.push(took);
        // The operator's page, every second.
        if probes.len() % 4 == 0 {
            let page = https(operator, active, "GET", "/", &[("cookie", &cookie)], b"").unwrap();
            assert_eq!(page.status, 200);
            assert!(String::from_utf8_lossy(&page.body).contains("Primary Active"));
            pages += 1;
        }
        p.assert_undisturbed();
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    let after = [p.heartbeat_counts(0), p.heartbeat_counts(1)];
    let elapsed = t0.elapsed().as_millis() as u64 + 2500;
    probes.sort();
    eprintln!(
        "{} probes: median {:?}, max {:?}; {pages} pages; {} attack connections opened",
        probes.len(),
        probes[probes.len() / 2],
        probes[probes.len() - 1],
        opened.load(Ordering::Relaxed)
    );
    assert!(
        opened.load(Ordering::Relaxed) >= u64::from(ATTACKERS) * 60,
        "the flood never took place"
    );
    for i in 0..2 {
        let other = 1 - i;
        let sent = after[other].sent - before[other].sent;
        let accepted = after[i].accepted - before[i].accepted;
        assert!(
            accepted + 3 >= sent && sent * u64::from(INTERVAL_MS as u32) >= elapsed * 8 / 10,
            "server {i}: accepted {accepted} of the {sent} its peer sent in {elapsed} ms"
        );
    }
    p.assert_never_journaled(&[
        "heartbeat_path_broken",
        "peer_lost",
        "heartbeats_missed",
        "split_brain",
    ]);
}
