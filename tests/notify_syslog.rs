//! Syslog notifications to real sockets on this machine: a UDP and a TCP
//! collector on 127.0.0.1, and a unix datagram socket standing in for
//! `/dev/log`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hamon::notify::syslog::{SyslogConfig, SyslogProto, SyslogSink};
use hamon::notify::{Notice, NoticeSeverity};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ALL: [(NoticeSeverity, u8); 6] = [
    (NoticeSeverity::Critical, 2),
    (NoticeSeverity::Major, 3),
    (NoticeSeverity::Minor, 4),
    (NoticeSeverity::Warning, 4),
    (NoticeSeverity::Info, 6),
    (NoticeSeverity::Cleared, 5),
];

fn notice(n: u32, severity: NoticeSeverity) -> Notice {
    Notice {
        id: format!("event_{n}"),
        severity,
        node: "alpha".into(),
        role: "primary".into(),
        state: "active".into(),
        previous_state: Some("standby".into()),
        text: format!("test event {n}"),
        time_unix: 1_709_294_400 + u64::from(n),
        peer: None,
        monitor_url: "https://alpha/".into(),
    }
}

fn remote(proto: SyslogProto, addr: SocketAddr, facility: &str) -> SyslogSink {
    SyslogSink::new(SyslogConfig {
        local: false,
        remote: Some((proto, addr)),
        facility: facility.into(),
        timeout: Duration::from_millis(300),
        ..SyslogConfig::default()
    })
    .unwrap()
}

/// The RFC 5424 line expected for `notice(n, sev)` with facility code `fac`.
fn expected(fac: u8, n: u32, sev: NoticeSeverity, sev_code: u8) -> String {
    format!(
        "<{}>1 2024-03-01T12:00:0{n}Z alpha hamon {} event_{n} - [event_{n} {sev}] test event {n}",
        fac * 8 + sev_code,
        std::process::id()
    )
}

#[test]
fn udp_rfc5424() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let sink = remote(SyslogProto::Udp, collector.local_addr().unwrap(), "local3");
    let mut buf = [0u8; 4096];
    for (i, (sev, code)) in ALL.into_iter().enumerate() {
        let n = i as u32;
        sink.send(&notice(n, sev)).unwrap();
        let len = collector.recv(&mut buf).unwrap();
        let line = std::str::from_utf8(&buf[..len]).unwrap();
        assert_eq!(line, expected(19, n, sev, code));
    }
    assert_eq!(sink.stats().sent, 6);
}

#[test]
fn udp_send_does_not_wait_for_anyone() {
    // Nobody listens there: each send is a datagram sent and forgotten.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sink = remote(SyslogProto::Udp, port, "daemon");
    let t0 = Instant::now();
    for n in 0..100 {
        let _ = sink.send(&notice(n % 10, NoticeSeverity::Info));
    }
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}

/// Reads one RFC 6587 octet-counted frame.
fn read_frame(r: &mut impl BufRead) -> String {
    let mut len = Vec::new();
    r.read_until(b' ', &mut len).unwrap();
    let len: usize = std::str::from_utf8(&len[..len.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    let mut msg = vec![0u8; len];
    r.read_exact(&mut msg).unwrap();
    String::from_utf8(msg).unwrap()
}

fn accept(listener: &TcpListener) -> BufReader<TcpStream> {
    let (s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    BufReader::new(s)
}

#[test]
fn tcp_octet_counting_and_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = remote(SyslogProto::Tcp, addr, "daemon");
    for (i, (sev, _)) in ALL.into_iter().enumerate() {
        sink.send(&notice(i as u32, sev)).unwrap();
    }
    let mut conn = accept(&listener);
    for (i, (sev, code)) in ALL.into_iter().enumerate() {
        assert_eq!(read_frame(&mut conn), expected(3, i as u32, sev, code));
    }

    // The collector closes the connection: the next message goes on a new one.
    drop(conn);
    std::thread::sleep(Duration::from_millis(50));
    sink.send(&notice(7, NoticeSeverity::Cleared)).unwrap();
    let mut conn = accept(&listener);
    assert_eq!(
        read_frame(&mut conn),
        expected(3, 7, NoticeSeverity::Cleared, 5)
    );

    // The collector is gone: sends fail at once, and work again once it is back.
    drop(conn);
    drop(listener);
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    assert!(sink.send(&notice(8, NoticeSeverity::Major)).is_err());
    assert!(t0.elapsed() < Duration::from_millis(300));
    let failed = sink.stats().failed;
    assert!(failed >= 1);
    let listener = TcpListener::bind(addr).unwrap();
    sink.send(&notice(9, NoticeSeverity::Major)).unwrap();
    let mut conn = accept(&listener);
    assert_eq!(
        read_frame(&mut conn),
        expected(3, 9, NoticeSeverity::Major, 3)
    );
}

#[test]
fn tcp_to_a_stuck_collector_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink = remote(SyslogProto::Tcp, listener.local_addr().unwrap(), "daemon");
    let mut big = notice(1, NoticeSeverity::Info);
    big.text = "x".repeat(256 * 1024);
    // Accepted by the kernel, never read: the buffers fill up.
    let mut failed = false;
    for _ in 0..400 {
        let t0 = Instant::now();
        let r = sink.send(&big);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        if r.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the writes never timed out");
    drop(listener);
}

struct TempSock(PathBuf);

impl Drop for TempSock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_sock(name: &str) -> (TempSock, UnixDatagram) {
    let path = std::env::temp_dir().join(format!("hamon-syslog-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (TempSock(path), sock)
}

fn local(path: &std::path::Path, facility: &str) -> SyslogSink {
    SyslogSink::new(SyslogConfig {
        local: true,
        local_path: path.to_path_buf(),
        remote: None,
        facility: facility.into(),
        timeout: Duration::from_millis(200),
        ..SyslogConfig::default()
    })
    .unwrap()
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn local_socket() {
    let (path, sock) = temp_sock("local");
    let sink = local(&path.0, "local0");
    let pid = std::process::id();
    for (i, (sev, code)) in ALL.into_iter().enumerate() {
        let n = i as u32;
        sink.send(&notice(n, sev)).unwrap();
        let line = recv(&sock);
        let pri = format!("<{}>", 16 * 8 + code);
        assert!(line.starts_with(&pri), "{line}");
        let tail = format!(" hamon[{pid}]: [event_{n} {sev}] test event {n}");
        assert!(line.ends_with(&tail), "{line}");
    }

    // Syslog restarts (a new socket at the same path): the sink reconnects.
    drop(sock);
    let _ = std::fs::remove_file(&path.0);
    let sock = UnixDatagram::bind(&path.0).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sink.send(&notice(9, NoticeSeverity::Warning)).unwrap();
    assert!(recv(&sock).ends_with("[event_9 warning] test event 9"));

    // Syslog gone: an error, no panic, no wait.
    drop(sock);
    let _ = std::fs::remove_file(&path.0);
    assert!(sink.send(&notice(1, NoticeSeverity::Info)).is_err());
    assert_eq!(sink.stats().failed, 1);
}

#[test]
fn local_socket_nobody_reads() {
    let (path, _sock) = temp_sock("stuck");
    let sink = local(&path.0, "daemon");
    let mut failed = false;
    for n in 0..2000 {
        let t0 = Instant::now();
        let r = sink.send(&notice(n % 10, NoticeSeverity::Info));
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        if r.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the socket never filled up");
}

#[test]
fn local_and_remote_together() {
    let (path, sock) = temp_sock("both");
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let sink = SyslogSink::new(SyslogConfig {
        local: true,
        local_path: path.0.clone(),
        remote: Some((SyslogProto::Udp, collector.local_addr().unwrap())),
        facility: "local7".into(),
        ..SyslogConfig::default()
    })
    .unwrap();
    sink.send(&notice(1, NoticeSeverity::Critical)).unwrap();
    assert!(recv(&sock).starts_with("<186>"));
    let mut buf = [0u8; 4096];
    let n = collector.recv(&mut buf).unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        expected(23, 1, NoticeSeverity::Critical, 2)
    );
    assert_eq!(sink.stats().sent, 2);
}
