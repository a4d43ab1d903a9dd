//! The control socket's handler: operator commands over the core's channel,
//! and the answers read without it (events, status lines, the key).

use super::*;

/// What the control socket's handler needs besides the core's channel.
pub(super) struct ControlParts {
    pub(super) store: Store,
    pub(super) keys: Arc<RwLock<Option<Keys>>>,
    pub(super) hb: Arc<Heartbeats>,
    pub(super) fingerprint: Option<String>,
    pub(super) services: Arc<RwLock<Vec<ServiceStatus>>>,
    pub(super) rescan: Sender<()>,
    pub(super) sync: Arc<SyncService>,
    pub(super) notifier: Arc<crate::notify::dispatch::Dispatcher>,
    pub(super) database: Arc<RwLock<Option<crate::replication::DbSeen>>>,
    /// What the core published last: the registration, for a key change.
    pub(super) published: Arc<crate::web::app::Published>,
    /// Why the last save of the HA state failed, while it does.
    pub(super) state_unsaved: Arc<RwLock<Option<String>>>,
}

pub(super) fn start_control(
    cfg: &Config,
    tx: Sender<Input>,
    parts: ControlParts,
) -> Result<control::Server, AgentError> {
    let ControlParts {
        store,
        keys,
        hb,
        fingerprint,
        services,
        rescan,
        sync,
        notifier,
        database,
        published,
        state_unsaved,
    } = parts;
    let path = cfg.socket_path();
    let link = crate::peer::client::Link {
        from: Some(cfg.node.address),
        tls: cfg.health_monitor.tls,
    };
    let interface = cfg.node.interface.clone();
    let mail_configured = cfg.notify.mail.is_some();
    // A way the peer is not heard for the detector's window is silent.
    let silent_after = cfg.heartbeat.interval.as_millis() as u64 * u64::from(cfg.heartbeat.missed);
    control::Server::start(&path, move |req, uid| {
        let ask = |command: Command, wait: Duration| -> control::Reply {
            let (rtx, rrx) = bounded(1);
            if tx.send(Input::Command(command, rtx)).is_err() {
                return control::Reply::Refused {
                    message: "agent stopping".into(),
                };
            }
            match rrx.recv_timeout(wait) {
                Ok(ha::Reply::Done { message }) => control::Reply::Done { message },
                Ok(ha::Reply::Refused { message }) => control::Reply::Refused { message },
                Ok(ha::Reply::Status { status }) => {
                    let progress = sync.progress(Some(&status));
                    let heartbeats = HeartbeatCounts {
                        paths: if hb.path_count() == 0 {
                            Vec::new()
                        } else {
                            hb.paths_heard()
                                .into_iter()
                                .map(|(ip, ago)| control::PathHeard {
                                    peer: ip.to_string(),
                                    heard_ms_ago: ago,
                                    silent: ago.is_none_or(|ms| ms > silent_after),
                                })
                                .collect()
                        },
                        ..hb.stats.counts()
                    };
                    let services = services
                        .read()
                        .map(|list| list.iter().map(service_line).collect())
                        .unwrap_or_default();
                    control::Reply::Status {
                        status,
                        heartbeats: Box::new(heartbeats),
                        tls_fingerprint: fingerprint.clone(),
                        services,
                        system: system_line(),
                        sync: Some(Box::new(progress)),
                        notify: Some(Box::new(notifier.stats())),
                        database: database
                            .read()
                            .ok()
                            .and_then(|d| d.as_ref().map(|d| d.line())),
                        state_unsaved: state_unsaved.read().ok().and_then(|s| s.clone()),
                        log_level: crate::web::app::LEVELS
                            .get(published.log_level.load(Ordering::Relaxed) as usize)
                            .map(|l| l.to_string()),
                    }
                }
                Err(_) => control::Reply::Refused {
                    message: "no answer from the agent in time".into(),
                },
            }
        };
        let long = Duration::from_secs(24 * 3600);
        match req {
            control::Request::Status => ask(Command::Status, Duration::from_secs(10)),
            control::Request::Register {
                secondary_address,
                secondary_hm_port,
                failover_type,
                vips,
                emails,
                key,
            } => {
                let vips = match vip::checked(&vips, interface.as_deref()) {
                    Ok(v) => v,
                    Err(message) => return control::Reply::Refused { message },
                };
                if let Err(message) = crate::notify::mail::checked_recipients(&emails) {
                    return control::Reply::Refused { message };
                }
                let unsent = (!emails.is_empty() && !mail_configured).then(|| {
                    format!(
                        "\nWARNING: no mail will be sent to {}: this server's configuration \
                         has no [notify.mail] section",
                        emails.join(", ")
                    )
                });
                let id = crate::peer::auth::random_id();
                let command = Command::Register {
                    id,
                    secondary_address,
                    secondary_hm_port,
                    failover_type,
                    vips,
                    emails,
                    key,
                };
                match (ask(command, long), unsent) {
                    (control::Reply::Done { message }, Some(warning)) => control::Reply::Done {
                        message: message + &warning,
                    },
                    (reply, _) => reply,
                }
            }
            control::Request::Settings { edit } => {
                let registration = published
                    .status
                    .read()
                    .ok()
                    .and_then(|s| s.registration.clone());
                let Some(registration) = registration else {
                    return control::Reply::Refused {
                        message: "HA is not configured on this server: the settings are given \
                                  at registration (`hamon ha register`)"
                            .into(),
                    };
                };
                let expected = registration.settings();
                let new = match edit.apply(&expected, interface.as_deref()) {
                    Ok(n) => n,
                    Err(message) => return control::Reply::Refused { message },
                };
                let unsent =
                    (new.emails != expected.emails && !new.emails.is_empty() && !mail_configured)
                        .then(|| {
                            format!(
                            "\nWARNING: no mail will be sent to {}: this server's configuration \
                             has no [notify.mail] section",
                            new.emails.join(", ")
                        )
                        });
                let command = Command::Settings {
                    change_id: crate::peer::auth::random_id(),
                    expected,
                    new,
                    by: format!("user {} with the CLI", user_name(uid)),
                };
                match (ask(command, long), unsent) {
                    (control::Reply::Done { message }, Some(warning)) => control::Reply::Done {
                        message: message + &warning,
                    },
                    (reply, _) => reply,
                }
            }
            control::Request::Failover => ask(Command::Failover, long),
            control::Request::Failback => ask(Command::Failback, long),
            control::Request::Remove { purge } => ask(Command::Remove { purge }, long),
            control::Request::Events { limit } => match store.read_journal(limit) {
                Ok(mut events) => {
                    events.reverse();
                    control::Reply::Events { events }
                }
                Err(e) => control::Reply::Refused {
                    message: format!("event journal: {e}"),
                },
            },
            control::Request::NotifyTest { channel } => {
                let only = match channel.as_deref() {
                    None => None,
                    Some(c) => match crate::notify::catalogue::Channel::ALL
                        .into_iter()
                        .find(|x| x.as_str() == c)
                    {
                        Some(x) => Some(x),
                        None => {
                            return control::Reply::Refused {
                                message: format!("no channel {c:?}: mail, snmp or syslog"),
                            }
                        }
                    },
                };
                let Some(s) = published.status.read().ok().map(|s| s.clone()) else {
                    return control::Reply::Refused {
                        message: "no status yet".into(),
                    };
                };
                // Not journaled: it is a test of the channels, not an event of the pair.
                let (kind, severity) = ("notify_test", Severity::Info);
                let from = crate::notify::dispatch::Happened {
                    entry: ha::JournalEntry {
                        kind: kind.into(),
                        severity,
                        state: s.state,
                        text: format!(
                            "a test from {} ({}), asked by the operator",
                            s.name, s.state
                        ),
                    },
                    time_unix: crate::peer::client::unix_ms() / 1000,
                    node: s.name.clone(),
                    role: s.role,
                    peer_address: s.peer_address.clone(),
                    emails: s.registration.map(|r| r.emails).unwrap_or_default(),
                };
                match notifier.test(only, from, Duration::from_secs(60)) {
                    Ok(outcomes) => {
                        let lines: Vec<String> = outcomes.iter().map(|o| o.to_string()).collect();
                        let message = lines.join("\n");
                        if outcomes.iter().all(|o| o.result.is_ok()) {
                            control::Reply::Done { message }
                        } else {
                            control::Reply::Refused { message }
                        }
                    }
                    Err(message) => control::Reply::Refused { message },
                }
            }
            control::Request::NicEvent { action, interface } => {
                let _ = rescan.send(());
                control::Reply::Done {
                    message: format!("{interface} {action}: re-reading the watched interfaces"),
                }
            }
            control::Request::AuthKey { key } => {
                if let Err(rule) = crate::peer::auth::check_password_standard(key.expose()) {
                    return control::Reply::Refused { message: rule };
                }
                let ring = crate::peer::rekey::Keyring {
                    store: store.clone(),
                    keys: keys.clone(),
                };
                let status = published.status.read().ok().map(|s| s.clone());
                let peer = status.as_ref().and_then(crate::sync::direction::peer_of);
                let peer = peer.as_ref().map(|t| (t, link));
                match crate::peer::rekey::change_key(&ring, key.expose(), peer) {
                    Ok(message) => control::Reply::Done { message },
                    Err(message) => control::Reply::Refused { message },
                }
            }
        }
    })
    .map_err(io_err(format!(
        "control socket {}",
        cfg.socket_path().display()
    )))
}

/// The name of the Unix user `uid` (for the journal: who changed what), or `uid N`
/// when it has none.
pub(super) fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

/// `<Name> is running`, with the restart count once it has been restarted.
pub(super) fn service_line(s: &ServiceStatus) -> String {
    match s.restarts {
        0 => s.line(),
        1 => format!("{} (restarted once)", s.line()),
        n => format!("{} (restarted {n} times)", s.line()),
    }
}

/// Load, memory and uptime (information only).
pub(super) fn system_line() -> Option<String> {
    Some(crate::watch::system::read().line())
}
