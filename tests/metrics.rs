//! `GET /metrics` on a real pair over HTTPS: promtool's checks, who may read it, and a
//! real Prometheus scraping both servers and answering a query about them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hamon::web::client::{ClientResponse, Endpoint, Verify};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// The address the pair lets read `/metrics` without the token.
const SCRAPER: &str = "127.0.109.9";
/// Where the test's Prometheus listens.
const PROMETHEUS: &str = "127.0.109.9:19090";

fn get(from: &str, to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> ClientResponse {
    Endpoint::new(to)
        .from(from.parse::<IpAddr>().unwrap())
        .tls("hamon", Verify::AnyCertificate)
        .request("GET", path, headers, b"", SECS(10), 4 << 20)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The value of one series (`name{labels}` exactly as exposed).
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_string)
}

/// A tool the test needs: present in CI (`.ci/run` installs it), else the test says so.
fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing; .ci/run installs the prometheus package"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// The test's Prometheus, stopped by PID when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prometheus's HTTP API: the result vector of an instant query.
fn query(q: &str) -> Vec<serde_json::Value> {
    let path = format!(
        "/api/v1/query?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("query", q)
            .finish()
    );
    let r = Endpoint::new(PROMETHEUS.parse().unwrap()).request(
        "GET",
        &path,
        &[],
        b"",
        SECS(5),
        1 << 20,
    );
    let Ok(r) = r else { return Vec::new() };
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[test]
fn metrics_pass_promtool_refuse_strangers_and_a_real_prometheus_scrapes_them() {
    if !tool("promtool") || !tool("prometheus") {
        return;
    }
    let p = Pair::new(109);
    p.edit_configs(|c| {
        c.replace(
            "tls = false",
            &format!("tls = true\nmetrics_scrapers = [\"{SCRAPER}\", \"198.51.100.0/24\"]"),
        )
    });
    let p = Pair::registered_with(p, "automatic");
    let hm = |i: usize| -> SocketAddr { format!("{}:18082", p.addrs[i]).parse().unwrap() };
    let token = String::from_utf8_lossy(&p.run(0, &["ha", "token"]).stdout)
        .trim()
        .to_string();
    let bearer = format!("Bearer {token}");

    // Nobody else: no token, a wrong one, from an address not listed.
    let stranger = "127.0.109.5";
    let r = get(stranger, hm(0), "/metrics", &[]);
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("www-authenticate").is_some());
    let r = get(
        stranger,
        hm(0),
        "/metrics",
        &[("authorization", "Bearer 00000000")],
    );
    assert_eq!(r.status, 401);

    // The token, from anywhere.
    let r = get(stranger, hm(0), "/metrics", &[("authorization", &bearer)]);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    let text = String::from_utf8(r.body).unwrap();
    assert_eq!(
        sample(&text, "hamon_ha_state{state=\"Primary Active\"}").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(sample(&text, "hamon_ha_active").as_deref(), Some("1"));
    let release = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(
            &text,
            &format!("hamon_peer_build_info{{release=\"{release}\",protocol=\"1.1\"}}")
        )
        .as_deref(),
        Some("1"),
        "{text}"
    );
    let accepted: u64 = sample(&text, "hamon_heartbeats_accepted_total")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(accepted > 0, "{text}");

    // promtool: the exposition parses, and its lint has nothing to say.
    let path = p.dir.join("metrics.txt");
    std::fs::write(&path, &text).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", path.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {out:?}"
    );

    // The listed scraper, without the token: the standby's view.
    let r = get(SCRAPER, hm(1), "/metrics", &[]);
    assert_eq!(r.status, 200);
    let standby = String::from_utf8(r.body).unwrap();
    assert_eq!(
        sample(&standby, "hamon_ha_state{state=\"Secondary Syncing\"}").as_deref(),
        Some("1")
    );
    assert_eq!(sample(&standby, "hamon_ha_active").as_deref(), Some("0"));

    // A real Prometheus scrapes both servers over HTTPS with the token, and a query
    // through its own API reads which one is active.
    let token_file = p.dir.join("token");
    std::fs::write(&token_file, &token).unwrap();
    let config = p.dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: hamon\n    scheme: https\n\
             \x20   tls_config:\n      insecure_skip_verify: true\n\
             \x20   authorization:\n      type: Bearer\n      credentials_file: {}\n\
             \x20   static_configs:\n      - targets: ['{}:18082', '{}:18082']\n",
            token_file.display(),
            p.addrs[0],
            p.addrs[1]
        ),
    )
    .unwrap();
    let check = Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let log = std::fs::File::create(p.dir.join("prometheus.log")).unwrap();
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                p.dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let active = |instance: &str| {
        query("hamon_ha_active").iter().find_map(|r| {
            (r["metric"]["instance"] == instance)
                .then(|| r["value"][1].as_str().unwrap_or("").to_string())
        })
    };
    let primary = format!("{}:18082", p.addrs[0]);
    let secondary = format!("{}:18082", p.addrs[1]);
    let seen = wait(SECS(60), || {
        active(&primary).as_deref() == Some("1") && active(&secondary).as_deref() == Some("0")
    });
    assert!(
        seen.is_some(),
        "Prometheus never read hamon_ha_active; targets: {:?}\nlog: {}",
        query("up"),
        std::fs::read_to_string(p.dir.join("prometheus.log")).unwrap_or_default()
    );
    let up = query("up{job=\"hamon\"} == 1");
    assert_eq!(up.len(), 2, "{up:?}");
}
