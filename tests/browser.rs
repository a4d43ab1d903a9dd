//! A real browser against a real pair: headless Chromium, driven through
//! ChromeDriver's WebDriver protocol (plain HTTP and JSON, spoken with our
//! own client), logs in, reads the page, clicks Failover and confirms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hamon::web::client;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DRIVER_PORT: u16 = 19515;

struct Driver {
    child: Child,
    addr: SocketAddr,
    session: String,
}

impl Driver {
    fn start() -> Option<Driver> {
        let have = Command::new("chromedriver")
            .arg("--version")
            .output()
            .is_ok()
            && std::path::Path::new("/usr/bin/chromium").exists();
        if !have {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install chromium and chromium-driver"
            );
            eprintln!("skipped: chromium / chromedriver not installed");
            return None;
        }
        let child = Command::new("chromedriver")
            .arg(format!("--port={DRIVER_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{DRIVER_PORT}").parse().unwrap();
        let mut d = Driver {
            child,
            addr,
            session: String::new(),
        };
        wait(Duration::from_secs(10), || {
            d.call("GET", "/status", None).is_ok()
        })
        .expect("chromedriver up");
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--ignore-certificate-errors", "--window-size=1280,1600",
                         format!("--user-data-dir={}", std::env::temp_dir().join(format!("hamon-chrome-{}", std::process::id())).display())]
            }
        }}});
        let v = d.call("POST", "/session", Some(caps)).expect("new session");
        d.session = v["sessionId"].as_str().unwrap_or_default().to_string();
        Some(d)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let r = client::request(
            self.addr,
            method,
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
            Duration::from_secs(30),
            32 * 1024 * 1024,
        )
        .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("{method} {path}: {} {v}", r.status));
        }
        Ok(v["value"].clone())
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })))
            .unwrap();
    }

    fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                "POST",
                &self.s("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .ok()?;
        v.as_object()?.values().next()?.as_str().map(str::to_string)
    }

    fn text(&self, css: &str) -> String {
        self.find(css)
            .and_then(|e| {
                self.call("GET", &self.s(&format!("/element/{e}/text")), None)
                    .ok()
            })
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn click(&self, css: &str) {
        let e = self.find(css).unwrap_or_else(|| panic!("no element {css}"));
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/click")),
            Some(json!({})),
        )
        .unwrap();
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).unwrap_or_else(|| panic!("no element {css}"));
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(json!({ "text": text })),
        )
        .unwrap();
    }

    fn screenshot(&self, path: &std::path::Path) {
        let v = self.call("GET", &self.s("/screenshot"), None).unwrap();
        std::fs::write(path, base64_decode(v.as_str().unwrap_or_default())).unwrap();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &self.s(""), None);
        }
        // SAFETY: signalling the chromedriver this test spawned.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn a_browser_logs_in_reads_the_page_and_fails_over() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let p = Pair::new(40);
    p.edit_configs(|c| c.replace("tls = false", "tls = true"));
    let mut p = Pair::registered_with(p, "manual");
    p.kill9(0);
    p.wait_state(1, "Secondary Lost Primary", Duration::from_secs(5));
    let url = format!("{}://{}:18082/", p.scheme(), p.addrs[1]);
    assert!(
        url.starts_with("https://"),
        "the browser test runs over HTTPS"
    );

    driver.go(&url);
    driver.type_into("input[name=key]", KEY);
    driver.click("form button, form input[type=submit]");
    let t = Instant::now();
    while driver.find("#state").is_none() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(driver.text("#state"), "Secondary Lost Primary");
    assert!(
        driver.text("#peer-address").contains(&p.addrs[0]),
        "{}",
        driver.text("#peer-address")
    );
    assert!(
        driver.find("#failback").is_none(),
        "only valid actions are shown"
    );

    driver.click("#failover button, button#failover, #failover input[type=submit]");
    driver
        .call("POST", &driver.s("/alert/accept"), Some(json!({})))
        .expect("a confirmation dialog");
    let ok = wait(Duration::from_secs(10), || {
        driver.go(&url);
        driver.text("#state") == "Secondary Active"
    });
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("browser-failover.png");
    driver.screenshot(&shot);
    assert!(ok.is_some(), "page shows {:?}", driver.text("#state"));
    assert!(p.ha_status(1).contains("Secondary Active"));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a real screenshot"
    );
}
