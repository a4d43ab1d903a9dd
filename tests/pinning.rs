//! Peer HTTPS is pinned to the certificate each server gave inside the
//! authenticated registration. A proxy with a certificate of its own, put
//! between the peers with a DNAT rule, gets no file through; once it is gone,
//! sync resumes. A server whose certificate is replaced hands the new one to
//! its peer through the authenticated channel, and the peer pins it.
//!
//! Runs in a private network namespace (the DNAT rule lives there only).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{netns_and_nft, private_netns, sh, wait, Pair, SYNC};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const N: u8 = 70;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn arrives(path: &Path, text: &str, within: Duration) -> bool {
    wait(within, || {
        fs::read_to_string(path).ok().as_deref() == Some(text)
    })
    .is_some()
}

/// A TLS proxy with its own self-signed certificate, counting the handshakes tried
/// and the ones a client finished (accepting the proxy's certificate).
struct Proxy {
    tried: Arc<AtomicU64>,
    finished: Arc<AtomicU64>,
}

fn start_proxy(listen: SocketAddr) -> Proxy {
    let cert = rcgen::generate_simple_self_signed(vec!["mitm.example".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap(),
    );
    let listener = TcpListener::bind(listen).unwrap();
    let (tried, finished) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let proxy = Proxy {
        tried: tried.clone(),
        finished: finished.clone(),
    };
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            tried.fetch_add(1, Ordering::Relaxed);
            let mut conn = rustls::ServerConnection::new(server.clone()).unwrap();
            let mut sock = sock;
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            if conn.complete_io(&mut sock).is_err() || conn.is_handshaking() {
                continue; // the client refused our certificate
            }
            finished.fetch_add(1, Ordering::Relaxed);
            // A client that took our certificate would now send its request in the
            // clear to us: that is what pinning prevents. Turn it away.
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut buf = [0u8; 4096];
            let _ = tls.read(&mut buf);
            let _ = tls.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        }
    });
    proxy
}

fn fingerprint(p: &Pair, i: usize) -> String {
    match hamon::control::call(
        &p.socket(i),
        &hamon::control::Request::Status,
        Some(Duration::from_secs(2)),
    ) {
        Ok(hamon::control::Reply::Status {
            tls_fingerprint, ..
        }) => tls_fingerprint.unwrap(),
        other => panic!("status: {other:?}"),
    }
}

/// The fingerprint that server `i`'s persisted registration pins for server `of`.
fn pinned(p: &Pair, i: usize, of: usize) -> Option<String> {
    let state = hamon::store::Store::at(&p.state_dir(i))
        .load_state()
        .unwrap();
    let v = serde_json::to_value(state).unwrap();
    v["registration"][["primary", "secondary"][of]]["tls_fingerprint"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn peer_https_refuses_a_proxy_and_follows_a_replaced_certificate() {
    if !netns_and_nft("the pinning test") {
        return;
    }
    private_netns();
    let p = Pair::with_extra(N, SYNC);
    p.edit_configs(|c| c.replace("tls = false", "tls = true"));
    write(&p.data(0).join("app.conf"), "one\n");
    let mut p = Pair::registered_with(p, "automatic");
    assert_eq!(
        fs::read_to_string(p.data(1).join("app.conf")).unwrap(),
        "one\n"
    );
    // Each server pins the other's certificate, as given in the registration.
    for (i, of) in [(0, 1), (1, 0)] {
        assert_eq!(pinned(&p, i, of), Some(fingerprint(&p, of)), "server {i}");
    }

    // The proxy sits between the secondary and the primary's Health Monitor.
    let proxy_at: SocketAddr = format!("127.0.{N}.4:18443").parse().unwrap();
    let proxy = start_proxy(proxy_at);
    sh(
        "nft -f -",
        &format!(
            "table ip mitm {{\n chain out {{\n  type nat hook output priority -100; policy accept;\n  \
             ip saddr {} ip daddr {} tcp dport 18082 dnat to {proxy_at}\n }}\n}}\n",
            p.addrs[1], p.addrs[0]
        ),
    );
    std::thread::sleep(Duration::from_secs(6)); // kept-alive sync connections close
    write(&p.data(0).join("app.conf"), "two\n");
    assert!(
        wait(Duration::from_secs(10), || proxy
            .tried
            .load(Ordering::Relaxed)
            > 0)
        .is_some(),
        "the secondary never called through the proxy"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        fs::read_to_string(p.data(1).join("app.conf")).unwrap(),
        "one\n",
        "a file came through the proxy"
    );
    assert_eq!(
        proxy.finished.load(Ordering::Relaxed),
        0,
        "a handshake with the proxy finished"
    );
    let log = p.log(1);
    assert!(
        log.contains("pinned"),
        "no pin error in the secondary's log:\n{log}"
    );

    // The proxy goes: sync resumes.
    sh("nft delete table ip mitm", "");
    write(&p.data(0).join("app.conf"), "three\n");
    assert!(arrives(
        &p.data(1).join("app.conf"),
        "three\n",
        Duration::from_secs(20)
    ));

    // The secondary gets a new certificate: it hands it to the primary, which pins it.
    let old = fingerprint(&p, 1);
    p.stop(1);
    fs::remove_dir_all(p.state_dir(1).join("tls")).unwrap();
    p.start(1);
    let new = fingerprint(&p, 1);
    assert_ne!(new, old);
    assert!(
        wait(Duration::from_secs(15), || pinned(&p, 0, 1).as_deref()
            == Some(new.as_str())
            && pinned(&p, 1, 1).as_deref() == Some(new.as_str()))
        .is_some(),
        "the new certificate was not pinned: {:?} {:?}",
        pinned(&p, 0, 1),
        pinned(&p, 1, 1)
    );
    assert!(p.journaled(0, "peer_certificate_pinned"));
    assert!(p.journaled(1, "peer_certificate_pinned"));
    // Hints from the primary reach the secondary's new certificate.
    p.wait_state(1, "Secondary Syncing", Duration::from_secs(10));
    write(&p.data(0).join("app.conf"), "four\n");
    assert!(arrives(
        &p.data(1).join("app.conf"),
        "four\n",
        Duration::from_secs(20)
    ));
}
