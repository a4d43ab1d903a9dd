//! The CLI's line to the local agent: a Unix socket in `run_dir`, mode 0600,
//! that only root (or the agent's own user) may use. One JSON request line,
//! one JSON reply line.

use crate::ha::{FailoverType, Secret, Settings, StatusView};
use crate::store::Stamped;
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest request line accepted.
const MAX_LINE: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Register {
        secondary_address: String,
        secondary_hm_port: u16,
        failover_type: FailoverType,
        vips: Vec<String>,
        emails: Vec<String>,
        key: Secret,
    },
    Failover,
    Failback,
    Remove {
        purge: bool,
    },
    Events {
        limit: usize,
    },
    AuthKey {
        key: Secret,
    },
    /// `hamon ha set`: change the registration's settings on both servers.
    Settings {
        edit: SettingsEdit,
    },
    /// udev saw a NIC come or go: re-read the watched interfaces.
    NicEvent {
        action: String,
        interface: String,
    },
    /// `hamon notify test`: a test notification through `channel` (`mail`, `snmp`,
    /// `syslog`), or through every configured channel.
    NotifyTest {
        channel: Option<String>,
    },
}

/// A change of the registration's settings as the operator gives it (`hamon ha set`,
/// and the body of `POST /api/v1/settings`): each field that is absent stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsEdit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_type: Option<FailoverType>,
    /// The whole new list (empty: no mail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emails: Option<Vec<String>>,
    /// The whole new VIP list; not with `add_vips`/`remove_vips`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vips: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_vips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_vips: Vec<String>,
}

impl SettingsEdit {
    /// True when it asks for no change at all.
    pub fn is_empty(&self) -> bool {
        self.failover_type.is_none()
            && self.emails.is_none()
            && self.vips.is_none()
            && self.add_vips.is_empty()
            && self.remove_vips.is_empty()
    }

    /// The settings after this edit of `current`, validated as registration validates
    /// them (`vip::checked` on `interface`, `mail::checked_recipients`). The VIP list comes
    /// back normalised, the way the registration stores it.
    pub fn apply(&self, current: &Settings, interface: Option<&str>) -> Result<Settings, String> {
        use crate::net::vip::{self, Vip};
        if self.is_empty() {
            return Err(
                "nothing to change: give a failover type, e-mail addresses or virtual IPs".into(),
            );
        }
        if self.vips.is_some() && !(self.add_vips.is_empty() && self.remove_vips.is_empty()) {
            return Err(
                "a new VIP list (--vip) replaces the whole list and cannot be combined with \
                 --add-vip or --remove-vip"
                    .into(),
            );
        }
        let vips = match &self.vips {
            Some(list) => list.clone(),
            None => {
                let mut list: Vec<Vip> = vip::parse_vips(&current.vips)?;
                for r in &self.remove_vips {
                    let gone: Vip = r.parse()?;
                    if !list.contains(&gone) {
                        return Err(format!(
                            "virtual IP {gone} is not in the list ({}); nothing was changed",
                            if current.vips.is_empty() {
                                "no virtual IP".to_string()
                            } else {
                                current.vips.join(", ")
                            }
                        ));
                    }
                    list.retain(|v| *v != gone);
                }
                for a in &self.add_vips {
                    let new: Vip = a.parse()?;
                    if !list.contains(&new) {
                        list.push(new);
                    }
                }
                list.iter().map(|v| v.to_string()).collect()
            }
        };
        // Checked only when asked to change: the list in force passed at registration.
        let touched =
            self.vips.is_some() || !self.add_vips.is_empty() || !self.remove_vips.is_empty();
        let vips = if touched {
            vip::checked(&vips, interface)?
        } else {
            current.vips.clone()
        };
        let emails = match &self.emails {
            Some(list) => {
                let list: Vec<String> = list
                    .iter()
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect();
                crate::notify::mail::checked_recipients(&list)?;
                list
            }
            None => current.emails.clone(),
        };
        Ok(Settings {
            failover_type: self.failover_type.unwrap_or(current.failover_type),
            vips,
            emails,
        })
    }
}

/// Heartbeat counters, reported with the status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatCounts {
    pub sent: u64,
    pub accepted: u64,
    pub rejected_bad: u64,
    pub rejected_replay: u64,
    /// From another address than the registered peer's, or one of our own
    /// frames sent back to us.
    #[serde(default)]
    pub rejected_sender: u64,
    /// Copies of an admitted frame (another heartbeat path, or a replay of the latest
    /// frame).
    #[serde(default)]
    pub duplicates: u64,
    /// With redundant heartbeat paths: each way the peer is heard (its node address, then
    /// its address on each path) and how many ms ago it was last heard that way.
    #[serde(default)]
    pub paths: Vec<PathHeard>,
}

/// One way the peer's heartbeats come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathHeard {
    pub peer: String,
    /// Ms since an authentic frame last came this way (`None`: never).
    pub heard_ms_ago: Option<u64>,
    /// Not heard this way for the detector's window (`interval x missed`).
    #[serde(default)]
    pub silent: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Done {
        message: String,
    },
    Refused {
        message: String,
    },
    Status {
        /// SHA-256 of the Health Monitor's certificate (TLS only).
        #[serde(default)]
        tls_fingerprint: Option<String>,
        /// One line per supervised service, as `hamon status` prints them.
        #[serde(default)]
        services: Vec<String>,
        /// Load, memory and uptime (information only).
        #[serde(default)]
        system: Option<String>,
        /// File sync and full copies.
        #[serde(default)]
        sync: Option<Box<crate::sync::progress::Progress>>,
        /// The database driver's role and lag.
        #[serde(default)]
        database: Option<String>,
        /// Why the last save of the HA state failed, while it does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state_unsaved: Option<String>,
        /// What the notification channels have sent.
        #[serde(default)]
        notify: Option<Box<crate::notify::dispatch::DispatchStats>>,
        status: Box<StatusView>,
        heartbeats: Box<HeartbeatCounts>,
        /// The agent's log level now (`error`, `info`, `trace`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_level: Option<String>,
    },
    Events {
        events: Vec<Stamped>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the hamon agent is not running (no control socket at {0})")]
    NotRunning(PathBuf),
    #[error("permission denied on {0}: run as root")]
    Denied(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("control socket {path}: malformed reply: {detail}")]
    Malformed { path: PathBuf, detail: String },
}

/// Send one request to the agent and wait for its reply.
pub fn call(path: &Path, req: &Request, timeout: Option<Duration>) -> Result<Reply, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning(path.to_path_buf())
        }
        io::ErrorKind::PermissionDenied => ControlError::Denied(path.to_path_buf()),
        _ => io_err(e),
    })?;
    s.set_read_timeout(timeout).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(|e| io_err(io::Error::other(e)))?;
    line.push(b'\n');
    s.write_all(&line).map_err(io_err)?;
    let mut reply = String::new();
    BufReader::new(s)
        .take(16 * 1024 * 1024)
        .read_line(&mut reply)
        .map_err(io_err)?;
    serde_json::from_str(&reply).map_err(|e| ControlError::Malformed {
        path: path.to_path_buf(),
        detail: if reply.is_empty() {
            "connection closed".into()
        } else {
            e.to_string()
        },
    })
}

/// The uid of the process at the other end of a Unix socket.
fn peer_uid(s: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and sized for SO_PEERCRED's
    // `struct ucred`; the fd is owned by `s` for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cred.uid)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The listening control socket.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Bind the socket (replacing a stale one) and serve each connection on
    /// its own thread with `handle`, which is given the request and the caller's uid
    /// (from `SO_PEERCRED`).
    pub fn start<F>(path: &Path, handle: F) -> io::Result<Server>
    where
        F: Fn(Request, u32) -> Reply + Send + Sync + 'static,
    {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another hamon agent is running ({})", path.display()),
            ));
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let my_uid = nix_euid();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                // A blocking accept: an idle agent does not wake up for its socket (it
                // polled every 20 ms, most of an idle agent's CPU time). `Drop` wakes it
                // with a connection of its own.
                loop {
                    let accepted = listener.accept();
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    match accepted {
                        Ok((s, _)) => {
                            let handle = handle.clone();
                            let _ = std::thread::Builder::new()
                                .name("control-conn".into())
                                .spawn(move || serve_one(s, my_uid, &*handle));
                        }
                        // Out of descriptors, say: try again a little later.
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })?;
        Ok(Server {
            path: path.to_path_buf(),
            stop,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accepting thread, which then sees `stop`.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn nix_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn serve_one(s: UnixStream, my_uid: u32, handle: &dyn Fn(Request, u32) -> Reply) {
    let reply = (|| {
        let _ = s.set_nonblocking(false);
        let uid = peer_uid(&s).ok()?;
        if uid != 0 && uid != my_uid {
            return Some(Reply::Refused {
                message: "permission denied: run as root".into(),
            });
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        BufReader::new(&s)
            .take(MAX_LINE)
            .read_line(&mut line)
            .ok()?;
        Some(match serde_json::from_str::<Request>(&line) {
            Ok(req) => handle(req, uid),
            Err(e) => Reply::Refused {
                message: format!("malformed request: {e}"),
            },
        })
    })();
    if let Some(reply) = reply {
        if let Ok(mut line) = serde_json::to_vec(&reply) {
            line.push(b'\n');
            let _ = (&s).write_all(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_reply_round_trip_and_not_running() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("hamon-ctl-{}", std::process::id()));
        let path = dir.join("hamon.sock");
        let missing = call(&path, &Request::Failover, None);
        assert!(
            matches!(missing, Err(ControlError::NotRunning(_))),
            "{missing:?}"
        );
        let server = Server::start(&path, |req, _uid| match req {
            Request::Events { limit } => Reply::Done {
                message: format!("limit {limit}"),
            },
            _ => Reply::Refused {
                message: "no".into(),
            },
        })?;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let r = call(
            &path,
            &Request::Events { limit: 7 },
            Some(Duration::from_secs(5)),
        )?;
        assert_eq!(
            r,
            Reply::Done {
                message: "limit 7".into()
            }
        );
        // A second agent on the same socket is refused.
        assert!(Server::start(&path, |_, _| Reply::Done {
            message: String::new()
        })
        .is_err());
        // Garbage gets a clear refusal.
        let mut s = UnixStream::connect(&path)?;
        s.write_all(b"{\"cmd\":\"explode\"}\n")?;
        let mut out = String::new();
        BufReader::new(s).read_line(&mut out)?;
        assert!(out.contains("malformed request"), "{out}");
        drop(server);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_settings_edit_is_checked_as_registration_checks() {
        let current = Settings {
            failover_type: FailoverType::Manual,
            vips: vec!["192.0.2.10/24".into()],
            emails: vec!["ops@example.com".into()],
        };
        let edit = |f: &dyn Fn(&mut SettingsEdit)| {
            let mut e = SettingsEdit::default();
            f(&mut e);
            e.apply(&current, None)
        };
        // Unchanged fields stay; the last VIP can go without an interface to check.
        let r = edit(&|e| {
            e.failover_type = Some(FailoverType::Automatic);
            e.remove_vips = vec!["192.0.2.10/24".into()];
            e.emails = Some(vec![" a@example.com ".into(), "".into()]);
        });
        assert_eq!(
            r,
            Ok(Settings {
                failover_type: FailoverType::Automatic,
                vips: vec![],
                emails: vec!["a@example.com".into()],
            })
        );
        for (why, result) in [
            ("nothing to change", edit(&|_| {})),
            (
                "cannot be combined",
                edit(&|e| {
                    e.vips = Some(vec![]);
                    e.add_vips = vec!["192.0.2.20/24".into()];
                }),
            ),
            (
                "not in the list",
                edit(&|e| e.remove_vips = vec!["192.0.2.99/24".into()]),
            ),
            (
                "at most one IPv4",
                edit(&|e| e.add_vips = vec!["192.0.2.20/24".into()]),
            ),
            (
                "needs `interface`",
                edit(&|e| e.add_vips = vec!["2001:db8::10/64".into()]),
            ),
            (
                "not an e-mail address",
                edit(&|e| e.emails = Some(vec!["nobody".into()])),
            ),
            (
                "unicast",
                edit(&|e| e.vips = Some(vec!["127.0.0.9/8".into()])),
            ),
        ] {
            match result {
                Err(e) => assert!(e.contains(why), "{why}: {e}"),
                Ok(s) => panic!("{why}: accepted as {s:?}"),
            }
        }
        // The API's body: unknown keys are refused, not ignored.
        assert!(serde_json::from_str::<SettingsEdit>(r#"{"vip": ["192.0.2.1/24"]}"#).is_err());
        let body = r#"{"failover_type": "automatic", "add_vips": ["2001:db8::1/64"]}"#;
        assert!(serde_json::from_str::<SettingsEdit>(body).is_ok());
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let r = Request::AuthKey {
            key: Secret::new("Sup3rSecret"),
        };
        assert!(!format!("{r:?}").contains("Sup3rSecret"));
    }
}
