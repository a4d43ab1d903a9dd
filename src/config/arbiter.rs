//! Validation of `[arbiter]`: the etcd cluster whose lease decides which server may be
//! active.

use super::raw::RawArbiter;
use super::{ConfigError, Validator};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[arbiter]`: a lease in etcd that only the active server holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arbiter {
    /// etcd client URLs, tried in order: `http://` or `https://`, an IP address or a host
    /// name, and a port (default 2379).
    pub endpoints: Vec<Endpoint>,
    /// The lease's TTL. etcd counts it in whole seconds: 2 to 300 (default 5).
    pub ttl: Duration,
    /// How long before the lease could expire an active server that could not renew it
    /// gives the role up: 100 ms to half the TTL (default a quarter of the TTL).
    pub margin: Duration,
    /// What an active server does once it could not renew in time.
    pub on_loss: crate::ha::ArbiterLoss,
    /// Keys live under `<prefix>/<pair id>/active` (default `/hamon`).
    pub prefix: String,
    /// The CA that signs etcd's certificates, PEM (required with `https://` endpoints).
    pub ca_file: Option<PathBuf>,
    /// This server's client certificate and key, PEM (etcd's `--client-cert-auth`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// etcd user and password (etcd's auth), if enabled there.
    pub auth: Option<(String, String)>,
}

/// One etcd client URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Parses `http://host:port` or `https://[v6]:port` (no path, no user info).
pub fn endpoint(url: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("{url:?} must start with http:// or https://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '@', '?', '#']) || rest.contains(char::is_whitespace)
    {
        return Err(format!(
            "{url:?} must be scheme://host[:port], nothing more"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed [ in the address"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p)),
            Some(_) => return Err(format!("{url:?}: write an IPv6 address in [brackets]")),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        None => 2379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{url:?}: the port must be 1 to 65535"))?,
    };
    Ok(Endpoint { tls, host, port })
}

impl Validator<'_> {
    pub(super) fn arbiter(&self, raw: RawArbiter) -> Result<Arbiter, ConfigError> {
        let urls = raw
            .endpoints
            .ok_or_else(|| self.invalid("arbiter.endpoints", "is required"))?;
        if urls.is_empty() || urls.len() > 7 {
            return Err(self.invalid(
                "arbiter.endpoints",
                format!("give 1 to 7 etcd client URLs (got {})", urls.len()),
            ));
        }
        let endpoints = urls
            .iter()
            .map(|u| endpoint(u).map_err(|e| self.invalid("arbiter.endpoints", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let ttl_s = self.int("arbiter.ttl_s", raw.ttl_s, 5, 2, Some(300))?;
        let ttl = Duration::from_secs(ttl_s);
        let margin = match raw.margin_ms {
            None => ttl / 4,
            some => self.millis(
                "arbiter.margin_ms",
                some,
                0,
                100,
                Some(ttl_s.saturating_mul(500)),
            )?,
        };
        let on_loss = match raw.on_arbiter_loss.as_deref() {
            None | Some("demote") => crate::ha::ArbiterLoss::Demote,
            Some("hold") => crate::ha::ArbiterLoss::Hold,
            Some(other) => {
                return Err(self.invalid(
                    "arbiter.on_arbiter_loss",
                    format!("must be \"demote\" or \"hold\" (got {other:?})"),
                ))
            }
        };
        let prefix = raw.prefix.unwrap_or_else(|| "/hamon".into());
        if !prefix.starts_with('/')
            || prefix.len() > 200
            || prefix.ends_with('/')
            || prefix.contains(|c: char| c.is_control())
        {
            return Err(self.invalid(
                "arbiter.prefix",
                format!("must start with / and not end with one (got {prefix:?})"),
            ));
        }
        let file = |key: &str, v: Option<String>| -> Result<Option<PathBuf>, ConfigError> {
            match v {
                None => Ok(None),
                Some(p) if Path::new(&p).is_absolute() => Ok(Some(PathBuf::from(p))),
                Some(p) => Err(self.invalid(key, format!("{p:?} must be an absolute path"))),
            }
        };
        let ca_file = file("arbiter.ca_file", raw.ca_file)?;
        let client_cert = match (
            file("arbiter.cert_file", raw.cert_file)?,
            file("arbiter.key_file", raw.key_file)?,
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(self.invalid(
                    "arbiter.cert_file",
                    "give both cert_file and key_file, or neither",
                ))
            }
        };
        let tls = endpoints.iter().any(|e| e.tls);
        if tls && ca_file.is_none() {
            return Err(self.invalid(
                "arbiter.ca_file",
                "is required with https:// endpoints: the CA that signs etcd's certificates",
            ));
        }
        if (ca_file.is_some() || client_cert.is_some()) && !tls {
            return Err(self.invalid(
                "arbiter.endpoints",
                "ca_file and cert_file are for https:// endpoints; these are all http://",
            ));
        }
        let password = self.secret("arbiter.password", raw.password, raw.password_file)?;
        let auth = match (raw.user, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => {
                return Err(self.invalid(
                    "arbiter.user",
                    "give both user and password (or password_file), or neither",
                ))
            }
        };
        Ok(Arbiter {
            endpoints,
            ttl,
            margin,
            on_loss,
            prefix,
            ca_file,
            client_cert,
            auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoints_parse() {
        let e = endpoint("http://198.51.100.7:2379").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (false, "198.51.100.7", 2379)
        );
        let e = endpoint("https://[2001:db8::7]:12379/").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (true, "2001:db8::7", 12379)
        );
        assert_eq!(e.to_string(), "https://[2001:db8::7]:12379");
        assert_eq!(endpoint("http://etcd.example").unwrap().port, 2379);
        for bad in [
            "198.51.100.7:2379",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://h/v3",
            "http://u@h",
            "http://2001:db8::7",
            "http://[2001:db8::7",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }
}
