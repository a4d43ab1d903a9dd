//! The duty executor: the VIP, the database, the supervised services and the
//! hooks, applied one duty after another.

use super::*;

/// A duty to apply, with the VIPs it concerns and when it was decided.
pub(super) struct DutyOrder {
    pub(super) duty: Duty,
    pub(super) vips: Vec<Vip>,
    /// The peer's database (a standby follows it).
    pub(super) peer_db: Option<crate::db::PeerDb>,
    /// The server demoted itself: a database still writable must stop taking writes.
    pub(super) stop_writes: bool,
    /// Not a duty: the registration's VIPs changed (`hamon ha set`). An active server
    /// makes its interface hold `vips` now (removing the old, claiming and announcing the
    /// new); any other changes nothing. No `DutyApplied` answers it.
    pub(super) vips_only: bool,
    pub(super) decided: Instant,
}

/// How often supervised services are checked.
pub(super) const SERVICE_POLL: Duration = Duration::from_millis(100);

pub(super) fn service_spec(s: &config::Service) -> ServiceSpec {
    let how = match &s.how {
        config::ServiceHow::Command {
            argv,
            env,
            working_dir,
            user,
        } => How::Command {
            argv: argv.clone(),
            env: env.clone(),
            cwd: working_dir.clone(),
            user: user.clone(),
        },
        config::ServiceHow::Unit(u) => How::Unit(u.clone()),
    };
    ServiceSpec {
        name: s.name.clone(),
        how,
        run_on: if s.active_only {
            RunOn::Active
        } else {
            RunOn::Both
        },
        critical: s.critical,
        restart: RestartPolicy {
            attempts: s.restart_attempts,
            window: s.restart_window,
            backoff: s.restart_backoff,
        },
        after: s.after.clone(),
        stop_timeout: s.stop_timeout,
    }
}

/// Which services a duty runs.
pub(super) fn want_for(duty: Duty) -> Want {
    match duty {
        Duty::Halted => Want::Nothing,
        Duty::Standby => Want::BothOnly,
        Duty::Active | Duty::Standalone => Want::Everything,
    }
}

/// Journal what the supervisor did, publish the service lines, and report
/// the processes level (Failed once a critical service gave up).
pub(super) fn report_services(
    reporter: &Reporter,
    published: &RwLock<Vec<ServiceStatus>>,
    sup: &Supervisor,
    events: Vec<process::Event>,
) {
    for e in events {
        let (kind, sev, text) = match e {
            process::Event::Started { name, pid } => (
                "service_started",
                Severity::Info,
                match pid {
                    Some(p) => format!("{name} started (pid {p})"),
                    None => format!("{name} started"),
                },
            ),
            process::Event::Exited { name, reason } => (
                "service_exited",
                Severity::Warning,
                format!("{name} {reason}"),
            ),
            process::Event::Restarting {
                name,
                attempt,
                after,
            } => (
                "service_restarting",
                Severity::Info,
                format!(
                    "restarting {name} in {} ms (attempt {attempt})",
                    after.as_millis()
                ),
            ),
            process::Event::GaveUp {
                name,
                reason,
                critical,
            } => (
                "service_failed",
                Severity::Error,
                format!(
                    "{name} could not be restarted ({reason}){}",
                    if critical { "; it is critical" } else { "" }
                ),
            ),
            process::Event::Stopped { name } => {
                ("service_stopped", Severity::Info, format!("{name} stopped"))
            }
        };
        reporter.observe(kind, sev, text);
    }
    let status = sup.status();
    let level = if sup.critical_failed() {
        Level::Failed
    } else if status
        .iter()
        .any(|s| matches!(s.state, process::State::Failed(_)))
    {
        Level::Warning
    } else {
        Level::Ok
    };
    if let Ok(mut p) = published.write() {
        *p = status;
    }
    reporter.set(Part::Processes, level);
}

/// Applies duties one after another: the VIP first (fast takeover), then
/// the operator hooks. While active, optionally re-announces the VIP.
pub(super) fn start_duty_executor(
    cfg: &Config,
    tx: Sender<Input>,
    log: Log,
    reporter: Reporter,
    published_services: Arc<RwLock<Vec<ServiceStatus>>>,
    db: Option<Arc<dyn crate::db::Database>>,
) -> Result<Sender<DutyOrder>, AgentError> {
    let (dtx, drx): (Sender<DutyOrder>, Receiver<DutyOrder>) = unbounded();
    let hooks = cfg.hooks.clone();
    let announce = Announce {
        count: cfg.vip.burst_count,
        gap: cfg.vip.burst_gap,
    };
    let refresh = cfg.vip.refresh;
    let mut control = cfg
        .node
        .interface
        .as_deref()
        .map(|i| VipControl::new(i, announce));
    let mut services = if cfg.services.is_empty() {
        None
    } else {
        let specs = cfg.services.iter().map(service_spec).collect();
        Some(Supervisor::new(specs).map_err(|e| io_err("services")(std::io::Error::other(e)))?)
    };
    std::thread::Builder::new()
        .name("duty".into())
        .spawn(move || {
            let mut held: Vec<Vip> = Vec::new();
            // The last duty applied was Active (the VIPs follow a settings change).
            let mut active = false;
            let mut next_refresh: Option<Instant> = None;
            loop {
                // Wake for the services' poll and the VIP refresh only when there is one
                // to do: an idle agent without either sleeps until the next order.
                let now = Instant::now();
                let refreshing = refresh.is_some() && !held.is_empty() && control.is_some();
                let wake = match (services.is_some(), refreshing, next_refresh) {
                    (true, _, _) => Some(SERVICE_POLL),
                    (false, true, Some(t)) => Some(t.saturating_duration_since(now)),
                    (false, true, None) => Some(Duration::ZERO),
                    (false, false, _) => None,
                };
                let order = match wake {
                    Some(w) => match drx.recv_timeout(w) {
                        Ok(o) => Some(o),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    },
                    None => match drx.recv() {
                        Ok(o) => Some(o),
                        Err(_) => break,
                    },
                };
                let now = Instant::now();
                if let Some(sup) = services.as_mut() {
                    let events = sup.poll(now);
                    report_services(&reporter, &published_services, sup, events);
                }
                if let (Some(every), false, Some(c)) = (refresh, held.is_empty(), &control) {
                    if next_refresh.is_none_or(|t| now >= t) {
                        next_refresh = Some(now + every);
                        if let Err(e) = c.refresh(&held) {
                            log.write(Severity::Warning, &format!("VIP refresh: {e}"));
                        }
                    }
                }
                let Some(order) = order else { continue };
                if order.vips_only {
                    if let (true, Some(c)) = (active, control.as_mut()) {
                        move_vips(c, &mut held, &order.vips, &log, &reporter);
                    }
                    continue;
                }
                let duty = order.duty;
                active = duty == Duty::Active;
                let mut errors: Vec<String> = Vec::new();
                if let Some(c) = control.as_mut() {
                    if duty == Duty::Active {
                        // Addresses held that the registration no longer names go first.
                        let stale: Vec<Vip> = held
                            .iter()
                            .filter(|v| !order.vips.contains(v))
                            .copied()
                            .collect();
                        if !stale.is_empty() {
                            if let Err(e) = c.release(&stale) {
                                errors.extend(e);
                            }
                            held.retain(|v| order.vips.contains(v));
                        }
                    }
                    if duty == Duty::Active && !order.vips.is_empty() {
                        let waited = order.decided.elapsed();
                        match c.claim(&order.vips) {
                            Ok(claimed) => log.write(
                                Severity::Info,
                                &format!(
                                    "takeover: virtual IP claimed on {}, first announcement {} us \\
                                     after the decision",
                                    c.interface(),
                                    (waited + claimed.first_frame_after).as_micros()
                                ),
                            ),
                            Err(e) => errors.extend(e),
                        }
                        held = order.vips.clone();
                    } else if duty != Duty::Active {
                        let mut all = held.clone();
                        all.extend(order.vips.iter().filter(|v| !held.contains(v)));
                        if let Err(e) = c.release(&all) {
                            errors.extend(e);
                        }
                        held.clear();
                    }
                }
                // The database before the services that use it: writable on
                // the server that serves, following the peer on a standby.
                if let Some(db) = &db {
                    let started = Instant::now();
                    let applied = if order.stop_writes {
                        repl::stop_writes_on_demotion(db.as_ref()).map(|stopped| {
                            if stopped {
                                reporter.observe(
                                    "database_writes_stopped",
                                    Severity::Warning,
                                    "this server gave up the active role on its own; its \
                                     database was a writable primary"
                                        .to_string(),
                                );
                            }
                        })
                    } else {
                        repl::apply_duty(db.as_ref(), duty, order.peer_db.as_ref())
                    };
                    match applied {
                        Ok(()) => log.trace(&format!(
                            "database ready for duty {duty:?} in {} ms",
                            started.elapsed().as_millis()
                        )),
                        Err(e) => errors.push(e),
                    }
                }
                if let Some(sup) = services.as_mut() {
                    // Service trouble is not a duty failure: a service that
                    // cannot start is restarted, and a critical one that gives
                    // up reaches the core as a health failure.
                    let (events, errs) = sup.apply(want_for(duty), Instant::now());
                    for e in errs {
                        reporter.observe("service_error", Severity::Error, e);
                    }
                    report_services(&reporter, &published_services, sup, events);
                }
                let hook = if duty == Duty::Active {
                    &hooks.activate
                } else {
                    &hooks.deactivate
                };
                let env = [("HAMON_DUTY", format!("{duty:?}").to_lowercase())];
                if let Some(argv) = hook {
                    if let Err(e) = run_hook(argv, hooks.timeout, &env) {
                        errors.push(e);
                    }
                }
                let result = if errors.is_empty() {
                    Ok(())
                } else {
                    Err(errors.join("; "))
                };
                log.trace(&format!("duty {duty:?} applied: {result:?}"));
                if tx
                    .send(Input::Event(Event::DutyApplied { duty, result }))
                    .is_err()
                {
                    break;
                }
            }
        })
        .map_err(io_err("duty thread"))?;
    Ok(dtx)
}

/// A settings change moved the VIPs of an active server: the addresses no longer named
/// leave the interface, the new ones are added and announced at once (gratuitous ARP,
/// unsolicited NA, then the rest of the burst), as a takeover does. A failure is
/// journaled as `duty_failed`; the core's duty stays Active.
fn move_vips(
    c: &mut VipControl,
    held: &mut Vec<Vip>,
    want: &[Vip],
    log: &Log,
    reporter: &Reporter,
) {
    let gone: Vec<Vip> = held.iter().filter(|v| !want.contains(v)).copied().collect();
    let added: Vec<Vip> = want.iter().filter(|v| !held.contains(v)).copied().collect();
    let mut errors = Vec::new();
    if !gone.is_empty() {
        if let Err(e) = c.release(&gone) {
            errors.extend(e);
        }
    }
    if !added.is_empty() {
        if let Err(e) = c.claim(&added) {
            errors.extend(e);
        }
    }
    *held = want.to_vec();
    let names = |v: &[Vip]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if errors.is_empty() {
        log.write(
            Severity::Info,
            &format!(
                "virtual IPs changed on {}: removed {}, claimed and announced {}",
                c.interface(),
                names(&gone),
                names(&added)
            ),
        );
    } else {
        reporter.observe(
            "duty_failed",
            Severity::Error,
            format!(
                "moving the virtual IPs on {} (removing {}, adding {}): {}",
                c.interface(),
                names(&gone),
                names(&added),
                errors.join("; ")
            ),
        );
    }
}
