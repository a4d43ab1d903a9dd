//! Validation of `[notify]`: severity overrides, per-channel routing, and
//! the mail, syslog and SNMP receivers.

use super::raw::{RawMail, RawNotify, RawSnmp, RawSnmpTarget, RawSyslog};
use super::{ConfigError, Validator};
use crate::notify::catalogue::{self, RawFilter, RawRouting, Routing};
use crate::notify::mail::{
    MailConfig, MailTransport, RetryPolicy, SmtpAuth, SmtpConfig, SmtpSecurity,
};
use crate::notify::snmp::{AuthProto, PrivProto, Secret, Target, V3User, Version};
use crate::notify::syslog::{SyslogConfig, SyslogProto};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

/// `[notify.snmp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snmp {
    pub targets: Vec<Target>,
    /// Send SNMPv2-MIB's coldStart when the agent starts.
    pub cold_start: bool,
}

/// `[notify]`: where HA events go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notify {
    pub routing: Routing,
    /// `None`: no mail (the section is absent).
    pub mail: Option<MailConfig>,
    pub syslog: Option<SyslogConfig>,
    pub snmp: Option<Snmp>,
}

fn filter(
    min_severity: Option<String>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
) -> RawFilter {
    RawFilter {
        min_severity,
        include,
        exclude,
    }
}

impl Validator<'_> {
    pub(super) fn notify(&self, raw: RawNotify) -> Result<Notify, ConfigError> {
        let RawNotify {
            severity,
            mail,
            syslog,
            snmp,
        } = raw;
        let mut routing = RawRouting {
            severity,
            ..RawRouting::default()
        };
        if let Some(m) = &mail {
            routing.mail = filter(m.min_severity.clone(), m.include.clone(), m.exclude.clone());
        }
        if let Some(s) = &syslog {
            routing.syslog = filter(s.min_severity.clone(), s.include.clone(), s.exclude.clone());
        }
        if let Some(s) = &snmp {
            routing.snmp = filter(s.min_severity.clone(), s.include.clone(), s.exclude.clone());
        }
        let routing = catalogue::validate(&routing).map_err(|e| {
            // "notify.x.y: reason": split into the key and the reason.
            match e.split_once(": ") {
                Some((key, reason)) if key.starts_with("notify") => self.invalid(key, reason),
                _ => self.invalid("notify", e),
            }
        })?;
        Ok(Notify {
            routing,
            mail: mail.map(|m| self.mail(m)).transpose()?,
            syslog: syslog.map(|s| self.syslog(s)).transpose()?,
            snmp: snmp.map(|s| self.snmp(s)).transpose()?,
        })
    }

    pub(super) fn secret(
        &self,
        key: &str,
        inline: Option<String>,
        file: Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                Err(self.invalid(key, "give the password or a password file, not both"))
            }
            (Some(p), None) => match self.exposed {
                // A password anyone on the box can read is no secret.
                Some(mode) => Err(self.invalid(
                    key,
                    format!(
                        "is written inline in a file group or others can read (mode {mode:04o}): \
                         run `chmod 600 {}`, or move the value to a file of its own named by \
                         {key}_file",
                        self.path.display()
                    ),
                )),
                None => Ok(Some(p)),
            },
            (None, Some(f)) => {
                if !Path::new(&f).is_absolute() {
                    return Err(self.invalid(key, format!("{f:?} must be an absolute path")));
                }
                std::fs::read_to_string(&f)
                    .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
                    .map_err(|e| self.invalid(key, format!("cannot read {f}: {e}")))
            }
            (None, None) => Ok(None),
        }
    }

    fn mail(&self, r: RawMail) -> Result<MailConfig, ConfigError> {
        let from = self.required("notify.mail.from", r.from)?;
        let transport = match (r.smtp, r.sendmail) {
            (Some(_), Some(_)) => {
                return Err(self.invalid("notify.mail.smtp", "give smtp or sendmail, not both"))
            }
            (None, Some(path)) => {
                if !Path::new(&path).is_absolute() {
                    return Err(self.invalid(
                        "notify.mail.sendmail",
                        format!("must be an absolute path (got {path:?})"),
                    ));
                }
                MailTransport::Sendmail { path: path.into() }
            }
            (smtp, None) => {
                let security = match r.security.as_deref() {
                    None | Some("starttls") => SmtpSecurity::StartTls,
                    Some("tls") => SmtpSecurity::Tls,
                    Some("none") => SmtpSecurity::None,
                    Some(other) => {
                        return Err(self.invalid(
                            "notify.mail.security",
                            format!("must be \"starttls\", \"tls\" or \"none\" (got {other:?})"),
                        ))
                    }
                };
                let smtp = smtp.unwrap_or_else(|| "localhost".into());
                let (host, port) = match smtp.rsplit_once(':') {
                    Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
                        let port = p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                            self.invalid("notify.mail.smtp", format!("bad port in {smtp:?}"))
                        })?;
                        (h.trim_matches(['[', ']']).to_string(), Some(port))
                    }
                    _ => (smtp.clone(), None),
                };
                let mut c = SmtpConfig::new(host, security);
                if let Some(p) = port {
                    c.port = p;
                }
                let password = self.secret("notify.mail.password", r.password, r.password_file)?;
                c.auth = match (r.user, password) {
                    (Some(user), Some(password)) => {
                        if security == SmtpSecurity::None {
                            return Err(self.invalid(
                                "notify.mail.security",
                                "a password is never sent in clear: use starttls or tls",
                            ));
                        }
                        Some(SmtpAuth { user, password })
                    }
                    (None, None) => None,
                    _ => {
                        return Err(self.invalid(
                            "notify.mail.user",
                            "give both user and password (or password_file)",
                        ))
                    }
                };
                c.accept_invalid_certs = r.accept_invalid_certs.unwrap_or(false);
                c.timeout = self.millis(
                    "notify.mail.timeout_ms",
                    r.timeout_ms,
                    10_000,
                    100,
                    Some(300_000),
                )?;
                MailTransport::Smtp(c)
            }
        };
        let mut cfg = MailConfig::new(transport, from, r.to.unwrap_or_default());
        cfg.queue_len =
            self.int("notify.mail.queue_len", r.queue_len, 100, 1, Some(100_000))? as usize;
        cfg.retry = RetryPolicy {
            base: self.millis(
                "notify.mail.retry_ms",
                r.retry_ms,
                5_000,
                10,
                Some(3_600_000),
            )?,
            max: self.millis(
                "notify.mail.retry_max_ms",
                r.retry_max_ms,
                300_000,
                10,
                Some(24 * 3_600_000),
            )?,
            max_attempts: self.count("notify.mail.attempts", r.attempts, 8, 1, 1000)?,
        };
        Ok(cfg)
    }

    fn syslog(&self, r: RawSyslog) -> Result<SyslogConfig, ConfigError> {
        let mut c = SyslogConfig::default();
        if let Some(l) = r.local {
            c.local = l;
        }
        if let Some(p) = r.local_path {
            c.local_path = self.absolute_dir("notify.syslog.local_path", Some(p), "/")?;
        }
        if let Some(f) = r.facility {
            if crate::notify::syslog::parse_facility(&f).is_err() {
                return Err(self.invalid(
                    "notify.syslog.facility",
                    format!("unknown facility {f:?} (e.g. daemon, local0 .. local7)"),
                ));
            }
            c.facility = f;
        }
        if let Some(remote) = r.remote {
            let bad = || {
                self.invalid(
                    "notify.syslog.remote",
                    format!("must be udp://HOST:PORT or tcp://HOST:PORT (got {remote:?})"),
                )
            };
            let (proto, rest) = match remote.split_once("://") {
                Some(("udp", rest)) => (SyslogProto::Udp, rest),
                Some(("tcp", rest)) => (SyslogProto::Tcp, rest),
                _ => return Err(bad()),
            };
            let addr: SocketAddr = rest.parse().map_err(|_| bad())?;
            c.remote = Some((proto, addr));
        }
        Ok(c)
    }

    fn snmp(&self, r: RawSnmp) -> Result<Snmp, ConfigError> {
        let mut targets = Vec::new();
        for (i, t) in r.target.into_iter().enumerate() {
            targets.push(self.snmp_target(i, t)?);
        }
        Ok(Snmp {
            targets,
            cold_start: r.cold_start.unwrap_or(true),
        })
    }

    fn snmp_target(&self, i: usize, t: RawSnmpTarget) -> Result<Target, ConfigError> {
        let key = |k: &str| format!("notify.snmp.target[{i}].{k}");
        let address = self.required(&key("address"), t.address)?;
        let with_port = if address.parse::<SocketAddr>().is_ok() || address.contains("]:") {
            address.clone()
        } else if address.parse::<std::net::IpAddr>().is_ok() {
            SocketAddr::new(
                address
                    .parse()
                    .map_err(|_| self.invalid(&key("address"), "bad"))?,
                162,
            )
            .to_string()
        } else {
            address.clone()
        };
        let addr = with_port
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                self.invalid(
                    &key("address"),
                    format!("must be ADDRESS or ADDRESS:PORT (got {address:?})"),
                )
            })?;
        let version = match t.version.as_deref() {
            None | Some("v2c") => Version::V2c {
                community: t.community.unwrap_or_else(|| "public".into()).into_bytes(),
            },
            Some("v3") => {
                let user = self.required(&key("user"), t.user)?;
                let auth = match t.auth.as_deref() {
                    Some("sha1") | Some("sha") => AuthProto::Sha1,
                    Some("sha224") => AuthProto::Sha224,
                    None | Some("sha256") => AuthProto::Sha256,
                    Some("sha384") => AuthProto::Sha384,
                    Some("sha512") => AuthProto::Sha512,
                    Some(other) => {
                        return Err(self.invalid(
                            &key("auth"),
                            format!(
                                "must be sha1, sha224, sha256, sha384 or sha512 (got {other:?})"
                            ),
                        ))
                    }
                };
                let auth_pw = self
                    .secret(&key("auth_password"), t.auth_password, t.auth_password_file)?
                    .ok_or_else(|| self.invalid(&key("auth_password"), "is required"))?;
                if auth_pw.len() < 8 {
                    return Err(
                        self.invalid(&key("auth_password"), "must be at least 8 characters")
                    );
                }
                let privacy_pw = self.secret(
                    &key("privacy_password"),
                    t.privacy_password,
                    t.privacy_password_file,
                )?;
                let privacy = match (t.privacy.as_deref(), privacy_pw) {
                    (None, None) => None,
                    (None | Some("aes128") | Some("aes"), Some(pw)) => {
                        if pw.len() < 8 {
                            return Err(self.invalid(
                                &key("privacy_password"),
                                "must be at least 8 characters",
                            ));
                        }
                        Some((PrivProto::Aes128, Secret::Password(pw.into_bytes())))
                    }
                    (Some("aes128") | Some("aes"), None) => {
                        return Err(self.invalid(&key("privacy_password"), "is required"))
                    }
                    (Some(other), _) => {
                        return Err(self
                            .invalid(&key("privacy"), format!("must be aes128 (got {other:?})")))
                    }
                };
                Version::V3(V3User {
                    user: user.into_bytes(),
                    auth: (auth, Secret::Password(auth_pw.into_bytes())),
                    privacy,
                })
            }
            Some(other) => {
                return Err(self.invalid(
                    &key("version"),
                    format!("must be \"v2c\" or \"v3\" (got {other:?})"),
                ))
            }
        };
        Ok(Target { addr, version })
    }
}
