//! The Health Monitor over HTTPS, against real agents: health endpoints,
//! login, every API endpoint, refusals, and hostile clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hamon::web::client::{self, ClientResponse, Verify};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A registered pair serving HTTPS, sessions living `ttl` seconds.
fn tls_pair(n: u8, failover: &str, ttl: u64) -> Pair {
    let p = Pair::new(n);
    p.edit_configs(|c| {
        c.replace(
            "tls = false",
            &format!("tls = true\nsession_ttl_secs = {ttl}"),
        )
    });
    Pair::registered_with(p, failover)
}

fn hm(p: &Pair, i: usize) -> SocketAddr {
    format!("{}:18082", p.addrs[i]).parse().unwrap()
}

fn https(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> ClientResponse {
    client::request_tls(
        addr,
        "hamon",
        Verify::AnyCertificate,
        method,
        path,
        headers,
        body,
        SECS(10),
        16 << 20,
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Log in; returns the session cookie and the page's CSRF token.
fn login(addr: SocketAddr) -> (String, String) {
    let r = https(
        addr,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("key={KEY}").as_bytes(),
    );
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let set = r.header("set-cookie").unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(set.contains(attr), "cookie lacks {attr}: {set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = https(addr, "GET", "/", &[("cookie", &cookie)], b"");
    let html = String::from_utf8_lossy(&page.body).to_string();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no csrf field in the page"))
        .to_string();
    (cookie, csrf)
}

fn json(r: &ClientResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
}

#[test]
fn health_endpoints_need_no_login() {
    let p = tls_pair(50, "manual", 900);
    let r = https(hm(&p, 0), "GET", "/healthz", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["state"], "PrimaryActive");
    assert_eq!(https(hm(&p, 0), "GET", "/active", &[], b"").status, 200);
    assert_eq!(https(hm(&p, 0), "GET", "/standby", &[], b"").status, 503);
    assert_eq!(https(hm(&p, 1), "GET", "/active", &[], b"").status, 503);
    assert_eq!(https(hm(&p, 1), "GET", "/standby", &[], b"").status, 200);
    // `hamon status` shows the certificate's fingerprint.
    let out = String::from_utf8_lossy(&p.run(0, &["status"]).stdout).to_string();
    assert!(out.contains("certificate SHA-256 fingerprint: "), "{out}");
}

#[test]
fn every_page_and_api_endpoint_works_for_a_logged_in_operator() {
    let p = tls_pair(51, "manual", 900);
    let (s, p_addr) = (hm(&p, 1), hm(&p, 0));
    let (cookie, csrf) = login(s);
    let auth = |extra: &[(&'static str, String)]| {
        let mut h = vec![
            ("cookie".to_string(), cookie.clone()),
            ("x-csrf-token".to_string(), csrf.clone()),
        ];
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        h
    };
    let call = |method: &str, path: &str, body: &str| {
        let h = auth(&[("content-type", "application/json".into())]);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        https(s, method, path, &h, body.as_bytes())
    };
    // The page.
    let page = String::from_utf8_lossy(&https(s, "GET", "/", &[("cookie", &cookie)], b"").body)
        .to_string();
    assert!(
        page.contains("Secondary Syncing") && page.contains("Primary IP Address"),
        "{page}"
    );
    // status, events, log level.
    let st = call("GET", "/api/v1/status", "");
    assert_eq!(st.status, 200);
    assert_eq!(json(&st)["status"]["state"], "SecondarySyncing");
    // File sync progress: this standby pulls from the active primary.
    assert_eq!(json(&st)["sync"]["direction"], "pulling", "{:?}", json(&st));
    assert!(json(&st)["sync"]["frequent"]["sets"].is_u64());
    assert!(json(&st)["tls_fingerprint"]
        .as_str()
        .is_some_and(|f| f.len() == 95));
    let ev = call("GET", "/api/v1/events?page=1", "");
    assert!(json(&ev)["events"]
        .as_array()
        .is_some_and(|e| !e.is_empty()));
    let lv = call("PUT", "/api/v1/log-level", r#"{"level":"error"}"#);
    assert_eq!(lv.status, 200, "{}", String::from_utf8_lossy(&lv.body));
    assert_eq!(
        json(&call("GET", "/api/v1/log-level", ""))["level"],
        "error"
    );
    let saved = std::fs::read_to_string(p.state_dir(1).join("log-level")).unwrap();
    assert_eq!(saved.trim(), "error", "the level survives restarts");
    // Page forms: log level with the CSRF token.
    let form = format!("csrf={csrf}&level=trace");
    let r = https(
        s,
        "POST",
        "/log-level",
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    );
    assert_eq!(r.status, 303);
    assert_eq!(
        json(&call("GET", "/api/v1/log-level", ""))["level"],
        "trace"
    );
    // failover and failback are refused with the reason in this state.
    let fo = call("POST", "/api/v1/failover", "");
    assert_eq!(fo.status, 409);
    assert!(json(&fo)["message"]
        .as_str()
        .unwrap_or_default()
        .contains("healthy"));
    let fb = call("POST", "/api/v1/failback", "");
    assert_eq!(fb.status, 409);
    // logs.zip holds the journal and the agent's log.
    let z = call("GET", "/api/v1/logs.zip", "");
    assert_eq!(z.status, 200);
    assert!(z.body.starts_with(b"PK\x03\x04"));
    let text = String::from_utf8_lossy(&z.body);
    assert!(
        text.contains("events.jsonl") && text.contains("hamon.log") && text.contains("status.json")
    );
    assert_eq!(
        https(s, "GET", "/logs.zip", &[("cookie", &cookie)], b"").status,
        200
    );
    // remove and register again, with the bearer token of the primary.
    let token = String::from_utf8_lossy(&p.run(0, &["ha", "token"]).stdout)
        .trim()
        .to_string();
    let bearer = format!("Bearer {token}");
    let h = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let r = https(p_addr, "POST", "/api/v1/remove", &h, br#"{"purge":false}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    p.wait_state(1, "Stand Alone", SECS(3));
    let body =
        serde_json::json!({ "secondary": p.addrs[1], "failover_type": "automatic", "key": KEY })
            .to_string();
    let r = https(p_addr, "POST", "/api/v1/register", &h, body.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    p.wait_state(1, "Secondary Syncing", SECS(5));
    assert!(p.ha_status(1).contains("Automatic"));
    // Logout ends the session.
    let r = https(
        s,
        "POST",
        "/logout",
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        format!("csrf={csrf}").as_bytes(),
    );
    assert_eq!(r.status, 303);
    assert_eq!(call("GET", "/api/v1/status", "").status, 401);
}

#[test]
fn unauthenticated_or_csrf_less_changes_are_refused() {
    let p = tls_pair(52, "manual", 900);
    let s = hm(&p, 1);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(https(s, "POST", "/api/v1/failover", &[], b"").status, 401);
    assert_eq!(https(s, "GET", "/api/v1/status", &[], b"").status, 401);
    assert_eq!(
        https(s, "POST", "/action/failover", &form, b"csrf=x").status,
        401
    );
    assert_eq!(
        https(
            s,
            "POST",
            "/api/v1/remove",
            &[("authorization", "Bearer 00ff")],
            b""
        )
        .status,
        401
    );
    let (cookie, _) = login(s);
    let with_cookie = [
        ("cookie", cookie.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    assert_eq!(
        https(s, "POST", "/api/v1/remove", &with_cookie[..1], b"{}").status,
        403
    );
    assert_eq!(
        https(s, "POST", "/remove", &with_cookie, b"csrf=wrong").status,
        403
    );
    assert_eq!(https(s, "POST", "/remove", &with_cookie, b"").status, 403);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        p.ha_status(1).contains("Secondary Syncing"),
        "nothing changed"
    );
}

#[test]
fn a_wrong_key_is_refused_and_slowed() {
    let p = tls_pair(53, "manual", 900);
    let s = hm(&p, 1);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = https(s, "POST", "/login", &form, b"key=Wrong-Key-1");
    assert_eq!(r.status, 401);
    // Even the right key must now wait.
    let r = https(s, "POST", "/login", &form, format!("key={KEY}").as_bytes());
    assert_eq!(r.status, 429);
    let wait: u64 = r
        .header("retry-after")
        .and_then(|w| w.parse().ok())
        .unwrap();
    assert!(wait >= 1);
    std::thread::sleep(SECS(wait + 1));
    let r = https(s, "POST", "/login", &form, format!("key={KEY}").as_bytes());
    assert_eq!(r.status, 303);
}

#[test]
fn an_expired_session_is_refused() {
    let p = tls_pair(54, "manual", 1);
    let s = hm(&p, 1);
    let (cookie, _) = login(s);
    assert_eq!(
        https(s, "GET", "/api/v1/status", &[("cookie", &cookie)], b"").status,
        200
    );
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        https(s, "GET", "/api/v1/status", &[("cookie", &cookie)], b"").status,
        401
    );
}

/// Raw bytes to a port; what comes back before the server closes.
fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    let _ = c.write_all(bytes);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    out
}

#[test]
fn hostile_clients_get_a_clean_error_and_others_are_still_served() {
    let p = tls_pair(55, "manual", 900);
    let s = hm(&p, 1);
    let still_serving = || assert_eq!(https(s, "GET", "/healthz", &[], b"").status, 200);
    // Oversized header and body.
    let big = "x".repeat(16 * 1024);
    let r = client::request_tls(
        s,
        "h",
        Verify::AnyCertificate,
        "GET",
        "/healthz",
        &[("x-big", &big)],
        b"",
        SECS(5),
        1 << 20,
    );
    assert_eq!(r.map(|r| r.status).unwrap_or(0), 431);
    still_serving();
    let body = vec![b'a'; 2 * 1024 * 1024];
    let r = client::request_tls(
        s,
        "h",
        Verify::AnyCertificate,
        "POST",
        "/login",
        &[],
        &body,
        SECS(10),
        1 << 20,
    );
    assert!(
        matches!(r.as_ref().map(|r| r.status), Ok(413) | Err(_)),
        "{:?}",
        r.map(|r| r.status)
    );
    still_serving();
    // Plain HTTP spoken to the TLS port: a clear 400, then close.
    let out = raw(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", SECS(5));
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    // Garbage: closed without harm.
    let _ = raw(s, b"\x16\x03\x01\x00\x05garbage-garbage", SECS(5));
    still_serving();
    // Slowloris: a handshake that never finishes does not block anyone.
    let mut slow = TcpStream::connect(s).unwrap();
    slow.write_all(b"\x16\x03\x01").unwrap();
    let t = Instant::now();
    still_serving();
    assert!(t.elapsed() < SECS(2));
    slow.set_read_timeout(Some(SECS(15))).unwrap();
    let mut buf = [0u8; 64];
    let closed_at = Instant::now();
    let n = slow.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server closes the stalled connection");
    assert!(closed_at.elapsed() < SECS(12));
    still_serving();
}

#[test]
fn tls_spoken_to_a_plain_port_is_refused_cleanly() {
    let p = Pair::registered(56, "manual"); // tls = false
    let s = hm(&p, 1);
    let r = client::request_tls(
        s,
        "h",
        Verify::AnyCertificate,
        "GET",
        "/healthz",
        &[],
        b"",
        SECS(5),
        1 << 20,
    );
    assert!(r.is_err(), "no TLS on a plain port");
    let r = client::request(s, "GET", "/healthz", &[], b"", SECS(5), 1 << 20).unwrap();
    assert_eq!(r.status, 200, "and plain clients are still served");
}

#[test]
fn a_pair_over_tls_fails_over_and_back() {
    let mut p = tls_pair(57, "automatic", 900);
    p.kill9(0);
    p.wait_state(1, "Secondary Active", SECS(5));
    p.start(0);
    p.wait_state(0, "Primary Syncing", SECS(10));
    let out = p.run(1, &["ha", "failback"]);
    assert!(out.status.success(), "{out:?}");
    p.wait_state(0, "Primary Active", SECS(5));
}

#[test]
fn the_primarys_configuration_form_registers_and_removes() {
    let mut p = Pair::new(58);
    p.edit_configs(|c| c.replace("tls = false", "tls = true"));
    for i in [1, 0] {
        // The primary's too, to log in there.
        let out = p.run_with_stdin(i, &["ha", "authkey"], &format!("{KEY}\n"));
        assert!(out.status.success(), "{out:?}");
    }
    p.start(0);
    p.start(1);
    let a = hm(&p, 0);
    let (cookie, csrf) = login(a);
    let page = |c: &str| {
        String::from_utf8_lossy(&https(a, "GET", "/", &[("cookie", c)], b"").body).to_string()
    };
    assert!(
        page(&cookie).contains("name=\"secondary\""),
        "an unregistered primary shows the form"
    );
    let post = |path: &str, body: String| {
        let h = [
            ("cookie", cookie.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        https(a, "POST", path, &h, body.as_bytes())
    };
    let body = format!(
        "csrf={csrf}&secondary={}&failover_type=manual&emails=ops%40example.com&key={KEY}",
        p.addrs[1]
    );
    assert_eq!(post("/register", body).status, 303);
    p.wait_state(0, "Primary Active", SECS(5));
    p.wait_state(1, "Secondary Syncing", SECS(5));
    let shown = page(&cookie);
    assert!(
        shown.contains("registration complete"),
        "the outcome is shown: {shown}"
    );
    assert!(
        !shown.contains("name=\"secondary\""),
        "the form gives way to Remove"
    );
    // The key changes from the page, on both servers of the pair.
    let mismatch = format!("csrf={csrf}&new_key=Paged-Key-77&confirm_key=Paged-Key-78");
    assert_eq!(post("/authkey", mismatch).status, 303);
    assert!(page(&cookie).contains("the two keys differ"));
    let body = format!("csrf={csrf}&new_key=Paged-Key-77&confirm_key=Paged-Key-77");
    assert_eq!(post("/authkey", body).status, 303);
    let key_of = |i: usize| std::fs::read_to_string(p.state_dir(i).join("authkey")).unwrap();
    wait(SECS(10), || {
        key_of(0) == "Paged-Key-77\n" && key_of(1) == "Paged-Key-77\n"
    })
    .unwrap_or_else(|| panic!("the key did not change on both: {}", page(&cookie)));
    assert!(
        wait(SECS(5), || page(&cookie)
            .contains("changed on both servers"))
        .is_some(),
        "{}",
        page(&cookie)
    );
    assert_eq!(post("/remove", format!("csrf={csrf}")).status, 303);
    p.wait_state(0, "Stand Alone", SECS(5));
    p.wait_state(1, "Stand Alone", SECS(5));
}

/// POST /login over plain HTTP from the local address `src`; the status.
fn login_from(src: &str, to: SocketAddr, key: &str) -> u16 {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{src}:0").parse().unwrap();
    sock.bind(&from.into()).unwrap();
    sock.connect(&to.into()).unwrap();
    let mut c: TcpStream = sock.into();
    c.set_read_timeout(Some(SECS(5))).unwrap();
    let body = format!("key={key}");
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: hamon\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(body.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn failed_logins_from_many_addresses_meet_a_global_budget() {
    // Twenty addresses, one wrong key each: each is within its own per-address
    // allowance, but together they use up the budget for all addresses.
    let p = Pair::registered(59, "manual");
    let s = hm(&p, 1);
    for n in 0..20 {
        assert_eq!(
            login_from(&format!("127.0.59.{}", 100 + n), s, "Wrong-Key-1"),
            401
        );
    }
    // Now even a new address with the right key waits (the CLI and the API
    // token are not affected), and the journal says why.
    assert_eq!(login_from("127.0.59.200", s, KEY), 429);
    let journal = || std::fs::read_to_string(p.state_dir(1).join("events.jsonl")).unwrap();
    wait(SECS(5), || {
        journal().contains("\"kind\":\"login_failures\"")
    })
    .unwrap_or_else(|| panic!("no login_failures event:\n{}", journal()));
    assert!(p.run(1, &["ha", "status"]).status.success());
}

/// The keys of a JSON object, sorted.
fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// Issue 15: `--json` on `ha status`, `status` and `ha events` has the HTTP API's fields;
/// `ha events` prints local ISO 8601 time; with the agent down, `ha status` prints the
/// state it last saved, says so, and exits 3.
#[test]
fn the_clis_json_matches_the_api_and_ha_status_works_with_the_agent_down() {
    let mut p = tls_pair(52, "manual", 900);
    let s = hm(&p, 1);
    let (cookie, _) = login(s);
    let api = |path: &str| json(&https(s, "GET", path, &[("cookie", &cookie)], b""));
    let cli = |args: &[&str]| {
        let out = p.run(1, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out:?}"))
    };

    let from_api = api("/api/v1/status");
    let ha_status = cli(&["ha", "status", "--json"]);
    assert_eq!(keys(&ha_status), keys(&from_api));
    assert_eq!(keys(&ha_status["status"]), keys(&from_api["status"]));
    for k in ["version", "log_level", "tls_fingerprint"] {
        assert_eq!(ha_status[k], from_api[k], "{k}");
    }
    for k in ["name", "role", "state", "failover_type", "registration"] {
        assert_eq!(ha_status["status"][k], from_api["status"][k], "status.{k}");
    }
    assert_eq!(ha_status["status"]["state"], "SecondarySyncing");
    // `status --json`: the API's fields, and what only the CLI shows.
    let status = cli(&["status", "--json"]);
    for k in keys(&from_api) {
        assert!(
            status.get(&k).is_some(),
            "status --json lacks {k}: {status}"
        );
    }
    assert!(status["heartbeats"]["accepted"]
        .as_u64()
        .is_some_and(|n| n > 0));

    let events = cli(&["ha", "events", "--json", "--limit", "5"]);
    let list = events["events"].as_array().unwrap();
    assert!(!list.is_empty() && list.len() <= 5, "{events}");
    let from_api = api("/api/v1/events?page=1");
    assert_eq!(keys(&list[0]), keys(&from_api["events"][0]));
    assert_eq!(list[0]["time"], from_api["events"][0]["time"]);

    // People get local time, with the zone's offset (POSIX TZ "UTC+3" is 3 h west).
    let human = |tz: &str| {
        let out = std::process::Command::new(hamon())
            .arg("--config")
            .arg(p.config(1))
            .args(["ha", "events", "--limit", "3"])
            .env("TZ", tz)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let west = human("UTC+3");
    let first = west.lines().next().unwrap_or_default();
    let stamp = first.split_whitespace().next().unwrap_or_default();
    assert!(
        stamp.len() == 25 && stamp.ends_with("-03:00") && stamp.as_bytes()[10] == b'T',
        "{west}"
    );
    // The same instant in UTC is three hours later on the clock.
    let utc = human("UTC");
    let utc_stamp = utc.split_whitespace().next().unwrap_or_default();
    assert!(utc_stamp.len() == 20 && utc_stamp.ends_with('Z'), "{utc}");
    let hour = |t: &str| t[11..13].parse::<u32>().unwrap();
    assert_eq!((hour(stamp) + 3) % 24, hour(utc_stamp), "{west}\n{utc}");

    // The agent down: the saved state, said to be that, and exit 3.
    p.kill9(1);
    let out = p.run(1, &["ha", "status"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("Last saved (agent NOT running): [State] Secondary Syncing")
            && said.contains("[Failover Type] Manual"),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not running"),
        "{out:?}"
    );
    let out = p.run(1, &["ha", "status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let down: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(down["agent_running"], false);
    assert_eq!(down["persisted"]["state"], "SecondarySyncing");
    // `hamon status` too: the guide's "not running" line, then the saved state.
    let out = p.run(1, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.starts_with("Health Monitor Server is NOT running.")
            && said.contains("Last saved (agent NOT running): [State] Secondary Syncing"),
        "{out:?}"
    );
    let out = p.run(1, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let down: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(down["agent_running"], false);
    assert_eq!(down["persisted"]["state"], "SecondarySyncing");
}
