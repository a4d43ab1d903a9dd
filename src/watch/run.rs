//! The watcher threads the agent starts: database, disk and NICs. Each
//! reports levels and observations through a `Reporter`; none decides.

use super::database::{DbCheck, DbWatch};
use super::disk::{DiskWatch, Thresholds};
use super::nic::NicWatch;
use super::{Part, Reporter};
use crate::config::Config;
use crate::ha::{Event, Level, Severity};
use crossbeam_channel::Receiver;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn severity(level: Level) -> Severity {
    match level {
        Level::Failed => Severity::Error,
        Level::Warning => Severity::Warning,
        Level::Ok | Level::Unknown => Severity::Info,
    }
}

/// Sleep `d`, waking early when `stop` is set.
fn nap(d: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}

/// Pings the witness every `interval` (each reply may take as long) and tells the core
/// when its verdict changes: reachable on the first reply, unreachable after `missed`
/// requests in a row went unanswered. A witness that cannot be checked at all (no raw
/// socket) counts as unreachable, and says so.
fn watch_witness(w: &crate::config::Witness, r: &Reporter, stop: &AtomicBool) {
    let mut pinger = match crate::net::icmp::Pinger::new(w.address) {
        Ok(p) => p,
        Err(e) => {
            r.observe(
                "witness_check",
                Severity::Error,
                format!("cannot check the witness {}: {e}", w.address),
            );
            r.event(Event::Witness { reachable: false });
            return;
        }
    };
    let (mut misses, mut verdict) = (0u32, None);
    while !stop.load(Ordering::Relaxed) {
        let started = std::time::Instant::now();
        let answered = pinger.ping(w.interval).unwrap_or(false);
        misses = if answered {
            0
        } else {
            misses.saturating_add(1)
        };
        let now = if answered {
            Some(true)
        } else if misses >= w.missed {
            Some(false)
        } else {
            verdict
        };
        if let Some(reachable) = now.filter(|_| now != verdict) {
            verdict = now;
            r.event(Event::Witness { reachable });
        }
        std::thread::sleep(w.interval.saturating_sub(started.elapsed()));
    }
}

/// Start every configured watcher. `rescan` carries udev's NIC add/remove
/// hints to the NIC watcher.
pub fn start(
    cfg: &Config,
    reporter: &Reporter,
    rescan: Receiver<()>,
    stop: Arc<AtomicBool>,
    driver: Option<Arc<dyn crate::db::Database>>,
) -> std::io::Result<()> {
    if let Some(w) = cfg.witness.clone() {
        let (r, stop) = (reporter.clone(), stop.clone());
        std::thread::Builder::new()
            .name("witness".into())
            .spawn(move || watch_witness(&w, &r, &stop))?;
    }
    if let Some(db) = cfg.database.clone() {
        let (r, stop) = (reporter.clone(), stop.clone());
        std::thread::Builder::new()
            .name("watch-db".into())
            .spawn(move || {
                let check = DbCheck {
                    tcp: db.tcp,
                    command: db.command,
                    timeout: db.timeout,
                    failures: db.failures,
                };
                let mut watch = DbWatch::new(db.failures);
                let own_check = check.tcp.is_some() || check.command.is_some();
                let mut reported = false;
                while !stop.load(Ordering::Relaxed) {
                    if driver.as_ref().is_some_and(|d| d.stopped_on_purpose()) {
                        // Stopped by this server's own demotion: down on purpose, not a
                        // failure that would make the core Uncertain (and the peer take
                        // over). The next duty starts it, and the check resumes.
                        nap(db.interval, &stop);
                        continue;
                    }
                    // The driver's own health check, after the configured one.
                    let result = match &driver {
                        Some(d) if own_check => check.probe().and_then(|_| d.health()),
                        Some(d) => d.health(),
                        None => check.probe(),
                    };
                    if let Some((level, text)) = watch.observe(&result) {
                        // The first "reachable" is not news (and would be a
                        // clearing notification with no alarm before it).
                        if level != Level::Ok || reported {
                            r.observe("database_check", severity(level), text);
                        }
                        reported = true;
                        r.set(Part::Database, level);
                    }
                    nap(db.interval, &stop);
                }
            })?;
    }

    let disk = cfg.disk.clone();
    let (r, s) = (reporter.clone(), stop.clone());
    std::thread::Builder::new()
        .name("watch-disk".into())
        .spawn(move || {
            let t = Thresholds {
                warn_used_percent: disk.warn_used_percent,
                critical_used_percent: disk.critical_used_percent,
                warn_free_bytes: disk.warn_free_bytes,
                critical_free_bytes: disk.critical_free_bytes,
            };
            let mut watch = DiskWatch::new(disk.paths.clone(), t);
            while !s.load(Ordering::Relaxed) {
                let (level, changes) = watch.check();
                for c in changes {
                    // The first look at a healthy path is not news.
                    if !(c.from == Level::Unknown && c.to == Level::Ok) {
                        r.observe("disk", severity(c.to), c.text);
                    }
                }
                r.set(Part::Disk, level);
                nap(disk.interval, &s);
            }
        })?;

    let ha_iface = cfg.node.interface.clone();
    let mut interfaces: Vec<String> = ha_iface.iter().cloned().collect();
    interfaces.extend(
        cfg.nic
            .track
            .iter()
            .filter(|t| Some(*t) != ha_iface.as_ref())
            .cloned(),
    );
    if interfaces.is_empty() {
        reporter.set(Part::Nic, Level::Ok);
        return Ok(());
    }
    let addresses: Vec<(String, std::net::IpAddr)> = ha_iface
        .iter()
        .map(|i| (i.clone(), cfg.node.address))
        .collect();
    let hold = cfg.nic.hold;
    let r = reporter.clone();
    std::thread::Builder::new()
        .name("watch-nic".into())
        .spawn(move || {
            let mut watch = match NicWatch::new(interfaces, addresses, hold) {
                Ok(w) => w,
                Err(e) => {
                    r.observe(
                        "nic_watch",
                        Severity::Error,
                        format!("cannot watch the NICs: {e}"),
                    );
                    return;
                }
            };
            // The HA interface decides (Failed); a tracked one only warns.
            let level = |w: &NicWatch| {
                let down: Vec<String> = w
                    .status()
                    .into_iter()
                    .filter(|c| !c.usable)
                    .map(|c| c.interface)
                    .collect();
                if down.iter().any(|i| Some(i) == ha_iface.as_ref()) {
                    Level::Failed
                } else if !down.is_empty() {
                    Level::Warning
                } else {
                    Level::Ok
                }
            };
            for c in watch.status().into_iter().filter(|c| !c.usable) {
                r.observe("nic", Severity::Error, c.text);
            }
            r.set(Part::Nic, level(&watch));
            // The HA interface's raw state, for the takeover decision (undebounced).
            let mut link_up = None;
            while !stop.load(Ordering::Relaxed) {
                if rescan.try_recv().is_ok() {
                    watch.rescan();
                }
                let changes = watch.wait(Duration::from_millis(100));
                let now_up = ha_iface.as_deref().and_then(|i| watch.usable_now(i));
                if let Some(up) = now_up.filter(|up| link_up != Some(*up)) {
                    link_up = Some(up);
                    r.event(Event::HaLink { up });
                }
                for e in watch.take_errors() {
                    r.observe("nic_watch", Severity::Warning, e);
                }
                if changes.is_empty() {
                    continue;
                }
                for c in changes {
                    let sev = if c.usable {
                        Severity::Info
                    } else {
                        Severity::Error
                    };
                    r.observe("nic", sev, c.text);
                }
                r.set(Part::Nic, level(&watch));
            }
        })?;
    Ok(())
}
