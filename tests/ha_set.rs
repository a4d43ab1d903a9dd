//! `hamon ha set` on real pairs of agents: the failover type, the e-mail list and the
//! virtual IPs change on both servers (CLI, JSON API, the page), an active server moves
//! and announces its VIP, nothing is copied again, every change is journaled with who
//! made it, and with the peer down nothing changes at all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod netns;

use common::*;
use hamon::web::client::{self, ClientResponse};
use std::net::SocketAddr;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn status_json(p: &Pair, i: usize) -> serde_json::Value {
    let out = p.run(i, &["ha", "status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (failover type, e-mail list, VIP list) as `ha status --json` shows server `i`.
fn settings(p: &Pair, i: usize) -> (String, Vec<String>, Vec<String>) {
    let v = status_json(p, i);
    let s = &v["status"];
    let strings = |x: &serde_json::Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    (
        s["failover_type"].as_str().unwrap_or("").to_string(),
        strings(&s["registration"]["emails"]),
        strings(&s["registration"]["vips"]),
    )
}

/// The texts of server `i`'s journal entries of `kind`, oldest first.
fn journal_texts(p: &Pair, i: usize, kind: &str) -> Vec<String> {
    p.journal(i)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["entry"]["kind"] == kind || v["kind"] == kind)
        .map(|v| {
            v["entry"]["text"]
                .as_str()
                .or(v["text"].as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn count(p: &Pair, i: usize, kind: &str) -> usize {
    p.journal(i)
        .matches(&format!("\"kind\":\"{kind}\""))
        .count()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_cli_changes_failover_type_and_mail_on_both_servers_without_a_copy() {
    let p = Pair::registered(110, "manual");
    let states = [count(&p, 0, "state_changed"), count(&p, 1, "state_changed")];
    let out = p.run(
        0,
        &[
            "ha",
            "set",
            "--failover-type",
            "automatic",
            "--email",
            "ops@example.com,oncall@example.com",
        ],
    );
    assert!(out.status.success(), "{}\n{}", text(&out), p.log(0));
    assert!(text(&out).contains("both servers"), "{}", text(&out));
    let want = (
        "automatic".to_string(),
        vec!["ops@example.com".to_string(), "oncall@example.com".into()],
        vec![],
    );
    assert_eq!(settings(&p, 0), want);
    assert_eq!(settings(&p, 1), want);
    // `ha status` shows it too, on both.
    assert!(p.ha_status(1).contains("[Failover Type] Automatic"));
    // Journaled on both: what changed, old -> new, and who.
    let a = journal_texts(&p, 0, "settings_changed");
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(a[0].contains("failover type Manual -> Automatic"), "{a:?}");
    assert!(
        a[0].contains("e-mail (none) -> ops@example.com, oncall@example.com"),
        "{a:?}"
    );
    assert!(a[0].contains("with the CLI"), "{a:?}");
    assert!(a[0].contains("by user "), "{a:?}");
    let b = journal_texts(&p, 1, "settings_changed");
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(b[0].contains("asked by its peer ha-a"), "{b:?}");

    // From the secondary this time: no more mail.
    let out = p.run(1, &["ha", "set", "--no-email"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(settings(&p, 0).1, Vec::<String>::new());
    assert_eq!(settings(&p, 1).1, Vec::<String>::new());

    // Nothing to change: said so, nothing journaled.
    let out = p.run(0, &["ha", "set", "--failover-type", "automatic"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to change"), "{}", text(&out));
    assert_eq!(count(&p, 0, "settings_changed"), 2);
    assert_eq!(count(&p, 1, "settings_changed"), 2);

    // Refused as registration would refuse it, before anything is asked of the peer.
    for (args, why) in [
        (
            &["ha", "set", "--email", "nobody"][..],
            "not an e-mail address",
        ),
        (&["ha", "set", "--vip", "192.0.2.10/24"][..], "interface"),
        (&["ha", "set"][..], "nothing to change"),
        (
            &[
                "ha",
                "set",
                "--vip",
                "192.0.2.10/24",
                "--remove-vip",
                "192.0.2.10/24",
            ][..],
            "cannot be combined",
        ),
    ] {
        let out = p.run(0, args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(why), "{args:?}: {}", text(&out));
    }

    // Nothing was copied again: registration's initial copy is the only one, and the
    // pair never left its states.
    assert_eq!(count(&p, 0, "initial_copy"), 1);
    p.assert_undisturbed();
    assert_eq!(
        [count(&p, 0, "state_changed"), count(&p, 1, "state_changed")],
        states
    );
}

fn http(
    p: &Pair,
    i: usize,
    method: &str,
    path: &str,
    h: &[(&str, &str)],
    body: &[u8],
) -> ClientResponse {
    let addr: SocketAddr = format!("{}:18082", p.addrs[i]).parse().unwrap();
    client::request(addr, method, path, h, body, SECS(30), 1 << 20)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Log in to server `i`'s page; the session cookie and the page's CSRF token.
fn login(p: &Pair, i: usize) -> (String, String) {
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = http(
        p,
        i,
        "POST",
        "/login",
        &form,
        format!("key={KEY}").as_bytes(),
    );
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = http(p, i, "GET", "/", &[("cookie", &cookie)], b"");
    let html = String::from_utf8_lossy(&page.body).to_string();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    (cookie, csrf)
}

#[test]
fn the_api_and_the_page_change_the_settings_on_both_servers() {
    let p = Pair::registered(111, "manual");
    // The API, with the bearer token, on the secondary.
    let token = String::from_utf8_lossy(&p.run(1, &["ha", "token"]).stdout)
        .trim()
        .to_string();
    let bearer = format!("Bearer {token}");
    let h = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let body = br#"{"failover_type": "automatic", "emails": ["api@example.com"]}"#;
    let r = http(&p, 1, "POST", "/api/v1/settings", &h, body);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    for i in 0..2 {
        let (t, mail, _) = settings(&p, i);
        assert_eq!(
            (t.as_str(), mail),
            ("automatic", vec!["api@example.com".to_string()])
        );
    }
    let b = journal_texts(&p, 1, "settings_changed");
    assert!(b[0].contains("the API (bearer token) from 127."), "{b:?}");
    assert!(journal_texts(&p, 0, "settings_changed")[0].contains("asked by its peer ha-b"));
    // Invalid input is a 400 and changes nothing; an unchanged setting is no conflict.
    for bad in [
        &br#"{"vip": ["192.0.2.10/24"]}"#[..],
        br#"{"failover_type": "sometimes"}"#,
        br#"{}"#,
        br#"{"emails": ["nobody"]}"#,
        br#"{"vips": [], "add_vips": ["192.0.2.10/24"]}"#,
    ] {
        let r = http(&p, 1, "POST", "/api/v1/settings", &h, bad);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
    }
    let r = http(
        &p,
        1,
        "POST",
        "/api/v1/settings",
        &h,
        br#"{"failover_type": "automatic"}"#,
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((r.status, v["ok"].as_bool()), (200, Some(true)), "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap_or("")
        .contains("nothing to change"));
    // Without a token or session: nothing.
    let r = http(&p, 1, "POST", "/api/v1/settings", &[], body);
    assert_eq!(r.status, 401);

    // The page: the form sits in the HA Configuration area of both servers.
    let (cookie1, _) = login(&p, 1);
    let page = http(&p, 1, "GET", "/", &[("cookie", &cookie1)], b"");
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(html.contains("id=\"ha-settings\""), "{html}");
    assert!(html.contains("value=\"api@example.com\""), "{html}");
    let (cookie, csrf0) = login(&p, 0);
    let form = format!(
        "csrf={csrf0}&failover_type=manual&emails=page%40example.com%2C+night%40example.com&vip4=&vip6="
    );
    let r = http(
        &p,
        0,
        "POST",
        "/settings",
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    );
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let want = vec!["page@example.com".to_string(), "night@example.com".into()];
    wait(SECS(10), || {
        (0..2).all(|i| settings(&p, i) == ("manual".into(), want.clone(), vec![]))
    })
    .unwrap_or_else(|| panic!("{:?} {:?}", settings(&p, 0), settings(&p, 1)));
    let a = journal_texts(&p, 0, "settings_changed");
    assert!(
        a.last()
            .unwrap()
            .contains("the Health Monitor page from 127."),
        "{a:?}"
    );
    // The page says what happened.
    let page = http(&p, 0, "GET", "/", &[("cookie", &cookie)], b"");
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(html.contains("settings changed on both servers"), "{html}");
    // A form without the CSRF token changes nothing.
    let r = http(
        &p,
        0,
        "POST",
        "/settings",
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        b"failover_type=automatic&emails=&vip4=&vip6=",
    );
    assert_eq!(r.status, 403);
    assert_eq!(settings(&p, 0).0, "manual");
    assert_eq!(count(&p, 0, "initial_copy"), 1);
    p.assert_undisturbed();
}

#[test]
fn with_the_peer_stopped_the_change_is_refused_and_nothing_changes() {
    let mut p = Pair::registered(112, "manual");
    let before = settings(&p, 0);
    p.kill9(1);
    let out = p.run(
        0,
        &[
            "ha",
            "set",
            "--failover-type",
            "automatic",
            "--email",
            "x@example.com",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("settings not changed"),
        "{}",
        text(&out)
    );
    assert_eq!(settings(&p, 0), before);
    assert_eq!(count(&p, 0, "settings_changed"), 0);
    let warn = journal_texts(&p, 0, "settings_unconfirmed");
    assert!(warn.iter().any(|t| t.contains("NOT CONFIRMED")), "{warn:?}");
    // While that is unresolved, another change is refused too.
    let out = p.run(0, &["ha", "set", "--failover-type", "automatic"]);
    assert!(!out.status.success(), "{}", text(&out));
    // The secondary comes back with what it had; the primary resolves the pending
    // change with it, and then a change goes through on both.
    p.start(1);
    p.wait_state(1, "Secondary Syncing", SECS(10));
    assert_eq!(settings(&p, 1), before);
    wait(SECS(15), || count(&p, 0, "settings_unconfirmed") >= 2)
        .unwrap_or_else(|| panic!("not resolved:\n{}", p.journal(0)));
    assert_eq!(count(&p, 1, "settings_changed"), 0);
    let out = p.run(0, &["ha", "set", "--failover-type", "automatic"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(settings(&p, 1).0, "automatic");
}

// ----- the virtual IP, in network namespaces -----------------------------------------

use netns::{until, Bed, MAC, O, P, S, V4};

const BED_KEY: &str = "Bed-Key-2026";

struct Ha {
    bed: Bed,
}

impl Ha {
    fn config(&self, host: usize) -> std::path::PathBuf {
        self.bed.dir.join(["primary.toml", "secondary.toml"][host])
    }

    fn cli(&self, host: usize, args: &[&str]) -> std::process::Output {
        self.bed.hamon(host, &self.config(host), args, "")
    }

    fn log(&self, host: usize) -> String {
        std::fs::read_to_string(self.bed.dir.join(format!("agent-{host}.log"))).unwrap_or_default()
    }

    fn state(&self, host: usize) -> String {
        String::from_utf8_lossy(&self.cli(host, &["ha", "status"]).stdout).to_string()
    }

    fn has(&self, host: usize, addr: &str) -> bool {
        self.bed.addresses(host).iter().any(|a| a == addr)
    }

    fn vips(&self, host: usize) -> Vec<String> {
        let out = self.cli(host, &["ha", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["status"]["registration"]["vips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn journal(&self, host: usize) -> String {
        let d = ["primary", "secondary"][host];
        std::fs::read_to_string(self.bed.dir.join(d).join("state/events.jsonl")).unwrap_or_default()
    }
}

#[test]
fn an_active_server_moves_and_announces_a_changed_vip_and_the_standby_does_not() {
    if !netns::available() {
        return;
    }
    let bed = Bed::new("hs");
    for (i, role) in ["primary", "secondary"].iter().enumerate() {
        let d = bed.dir.join(role);
        let cfg = format!(
            "[node]\nname = \"{role}\"\nrole = \"{role}\"\naddress = \"{addr}\"\n\
             interface = \"eth0\"\nstate_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\n\
             [heartbeat]\ninterval_ms = 100\nmissed = 3\ngrace_ms = 300\nprobe_timeout_ms = 300\n\
             [health_monitor]\ntls = false\n[vip]\nburst_count = 3\nburst_gap_ms = 100\n\
             [log]\nlevel = \"trace\"\n",
            addr = V4[i],
            d = d.display()
        );
        std::fs::write(bed.dir.join(format!("{role}.toml")), cfg).unwrap();
    }
    let mut ha = Ha { bed };
    let out = ha.bed.hamon(
        S,
        &ha.config(S),
        &["ha", "authkey"],
        &format!("{BED_KEY}\n"),
    );
    assert!(out.status.success(), "{out:?}");
    for host in [P, S] {
        let cfg = ha.config(host);
        let log = ha.bed.dir.join(format!("agent-{host}.log"));
        let exe = env!("CARGO_BIN_EXE_hamon");
        ha.bed.spawn(
            host,
            &[exe, "agent", "--config", cfg.to_str().unwrap()],
            &log,
        );
        assert!(until(SECS(10), || ha
            .cli(host, &["ha", "status"])
            .status
            .success()));
    }
    let out = ha.bed.hamon(
        P,
        &ha.config(P),
        &[
            "ha",
            "register",
            "--secondary",
            V4[S],
            "--failover-type",
            "manual",
            "--vip",
            "192.0.2.10/24",
        ],
        &format!("{BED_KEY}\n"),
    );
    assert!(out.status.success(), "register: {out:?}\n{}", ha.log(P));
    assert!(until(SECS(5), || ha.state(P).contains("Primary Active")
        && ha.state(S).contains("Secondary Syncing")));
    assert!(
        until(SECS(3), || ha.has(P, "192.0.2.10/24")),
        "{:?}",
        ha.bed.addresses(P)
    );

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
    std::thread::sleep(Duration::from_millis(700));

    // Replace the IPv4 VIP, from the standby: the active primary moves it at once.
    let out = ha.cli(S, &["ha", "set", "--vip", "192.0.2.20/24"]);
    assert!(out.status.success(), "{}\n{}", text(&out), ha.log(S));
    assert!(
        until(SECS(3), || ha.has(P, "192.0.2.20/24")
            && !ha.has(P, "192.0.2.10/24")),
        "{:?}\n{}",
        ha.bed.addresses(P),
        ha.log(P)
    );
    // Add an IPv6 VIP, on the primary.
    let out = ha.cli(P, &["ha", "set", "--add-vip", "2001:db8::20/64"]);
    assert!(out.status.success(), "{}\n{}", text(&out), ha.log(P));
    assert!(
        until(SECS(3), || ha.has(P, "2001:db8::20/64")
            && ha.has(P, "192.0.2.20/24")),
        "{:?}",
        ha.bed.addresses(P)
    );
    for host in [P, S] {
        assert_eq!(ha.vips(host), vec!["192.0.2.20/24", "2001:db8::20/64"]);
    }
    // The observer reaches the new address.
    assert!(until(SECS(3), || ha.bed.ping(O, "192.0.2.20")));
    std::thread::sleep(Duration::from_millis(600)); // the rest of the burst
    ha.bed.signal(tcpdump, libc::SIGTERM);
    let capture = std::fs::read_to_string(&cap).unwrap_or_default();
    let from_p: Vec<&str> = capture.lines().filter(|l| l.contains(MAC[P])).collect();
    let garp = from_p
        .iter()
        .filter(|l| l.contains("Request who-has 192.0.2.20 tell 192.0.2.20"))
        .count();
    let na = from_p
        .iter()
        .filter(|l| l.contains("neighbor advertisement") && l.contains("tgt is 2001:db8::20"))
        .count();
    assert!(garp >= 1 && na >= 1, "garp {garp} na {na}\n{capture}");

    // Remove the IPv6 VIP again: gone from the interface, the IPv4 one stays.
    let out = ha.cli(P, &["ha", "set", "--remove-vip", "2001:db8::20/64"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(until(SECS(3), || !ha.has(P, "2001:db8::20/64")
        && ha.has(P, "192.0.2.20/24")));
    // The standby's interface never held any of them.
    for a in ["192.0.2.10/24", "192.0.2.20/24", "2001:db8::20/64"] {
        assert!(
            !ha.has(S, a),
            "{a} on the standby: {:?}",
            ha.bed.addresses(S)
        );
    }
    assert_eq!(ha.vips(S), vec!["192.0.2.20/24"]);
    // Journaled on both, three times; no copy after registration's.
    for host in [P, S] {
        let j = ha.journal(host);
        assert_eq!(j.matches("\"kind\":\"settings_changed\"").count(), 3, "{j}");
    }
    assert_eq!(
        ha.journal(P).matches("\"kind\":\"initial_copy\"").count(),
        1
    );
    assert!(ha.state(P).contains("Primary Active") && ha.state(S).contains("Secondary Syncing"));
}
