//! The PostgreSQL driver: a local cluster in streaming replication with the
//! peer's, run through PostgreSQL's own programs (`psql`, `pg_ctl`,
//! `pg_basebackup`, `pg_rewind`, `pg_controldata`). No client library.
//!
//! Every program runs as [`PgConfig::os_user`] when hamon is root, with a
//! clean environment, in a process group of its own that is killed at its
//! deadline. Local queries go over the unix socket as
//! [`PgConfig::superuser`] (the local pg_hba.conf must let that OS user in,
//! e.g. `local all postgres peer`). Connections to the peer use
//! [`PgConfig::replication_user`] and take the password from
//! [`PgConfig::passfile`] (libpq's .pgpass format, owned by `os_user`, mode
//! 0600): no password is ever on a command line, in an environment
//! variable, or in postgresql.auto.conf (the standby's `primary_conninfo`
//! says `passfile=` too).
//!
//! What the peer must allow the replication user (both nodes, since roles
//! swap): `host replication <user> <addr> scram-sha-256` for streaming,
//! slots and `pg_basebackup`, and, for `pg_rewind`, `host <rewind_dbname>
//! <user> <addr> scram-sha-256` plus
//! ```sql
//! GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO <user>;
//! GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO <user>;
//! GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO <user>;
//! GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO <user>;
//! ```
//! `pg_rewind` also needs `wal_log_hints = on` or data checksums.
//!
//! The server is always started with `port`, `listen_addresses` and
//! `unix_socket_directories` on its command line, so the postgresql.conf
//! that `pg_basebackup`/`pg_rewind` copy from the peer (when it lives in the
//! data directory) cannot make it listen where the peer does.
//!
//! Replication slot: each side's primary keeps a physical slot named
//! [`PgConfig::slot`] for the other. `initial_copy` drops the peer's old
//! slot (waiting until it is unused) and lets `pg_basebackup -C` create it
//! anew; `follow` creates it on the peer when missing (before rewinding, so
//! the WAL the standby will need from then on is kept). A stale slot of the
//! same name left on the local side (from when it was primary) is dropped
//! once it runs as a standby, so it does not pin WAL there.
//!
//! Promotion is `pg_promote(wait => true)` followed by a `CHECKPOINT`:
//! PostgreSQL 15 writes the new timeline to pg_control only at a
//! checkpoint, and `pg_rewind` against a source not yet checkpointed says
//! "no rewind required" and leaves the target diverged.
//!
//! Lag ([`Database::lag`]), on a standby: `bytes` = WAL that the standby
//! knows exists upstream but has not replayed yet, i.e.
//! `greatest(pg_last_wal_receive_lsn(), pg_stat_wal_receiver.latest_end_lsn)
//! - pg_last_wal_replay_lsn()` (latest_end_lsn is the upstream's end of WAL
//! as of its last message to us, so this includes WAL not yet received, as
//! far as we know of it; it does not see what the upstream wrote after its
//! last message, nor anything while disconnected). `seconds` = 0 when
//! `bytes` is 0 (nothing pending, however old the last change), else
//! `now() - pg_last_xact_replay_timestamp()` (age of the commit of the
//! newest replayed transaction, clock skew between the hosts included);
//! `None` when no transaction has been replayed since the standby started.

mod conf;
mod ops;

use std::path::PathBuf;
use std::time::Duration;

use super::exec::Account;
use super::{parse_lsn, Database, DbRole, Lag, PeerDb};

/// How to reach and run the local PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct PgConfig {
    /// Where pg_ctl, psql, ... are.
    pub bin_dir: PathBuf,
    /// The cluster's data directory (PGDATA).
    pub data_dir: PathBuf,
    /// postgresql.conf when it is not in the data directory (Debian keeps
    /// it in /etc/postgresql/...); passed as `-c config_file=`.
    pub config_file: Option<PathBuf>,
    /// The server's log (`pg_ctl -l`); created and given to `os_user` when
    /// missing.
    pub log_file: PathBuf,
    pub port: u16,
    /// `listen_addresses` (comma-separated, as PostgreSQL takes it).
    pub listen: String,
    /// `unix_socket_directories` (one directory) and where psql connects.
    pub socket_dir: PathBuf,
    /// The OS account the tools run as when hamon runs as root.
    pub os_user: String,
    /// Database role for local queries.
    pub superuser: String,
    /// Database for local queries.
    pub dbname: String,
    /// Role that connects to the peer (streaming, base backups, rewind).
    pub replication_user: String,
    /// Database `pg_rewind` connects to on the peer.
    pub rewind_dbname: String,
    /// libpq password file with the replication user's password.
    pub passfile: PathBuf,
    /// Physical replication slot name (lowercase letters, digits, `_`).
    pub slot: String,
    /// Limit for each short tool run (queries, stops, slot commands).
    pub timeout: Duration,
    /// Limit for starting the server (and for promotion).
    pub start_timeout: Duration,
    /// Limit for `pg_basebackup` and `pg_rewind`.
    pub copy_timeout: Duration,
    /// TLS between the clusters (default on): the server serves hamon's certificate, and
    /// every connection to the peer demands TLS and SCRAM channel binding
    /// (`sslmode=require channel_binding=require`), so that someone in the middle can
    /// neither read the replication stream nor relay the login. Needs `scram-sha-256` in
    /// the peer's pg_hba.conf.
    pub tls: bool,
    /// The certificate and key (PEM) the server serves: hamon's Health Monitor identity,
    /// written to `<data_dir>.tls/` for the server.
    pub tls_identity: Option<(String, String)>,
    /// Synchronous replication while the peer's standby streams (default off): a commit
    /// on the active server is acknowledged only once the standby has it on disk, so a
    /// failover loses no acknowledged write. While no standby streams, commits do not
    /// wait (the active keeps taking writes alone, as Patroni's non-strict mode does).
    pub synchronous: bool,
}

impl PgConfig {
    /// Defaults around `data_dir` and `port`: PostgreSQL 15's Debian
    /// binaries, listen on localhost, sockets in /var/run/postgresql, user
    /// and superuser "postgres", replication user "replicator", slot
    /// "hamon_peer", log next to the data directory (`<data_dir>.log`).
    pub fn new(data_dir: impl Into<PathBuf>, port: u16) -> PgConfig {
        let data_dir = data_dir.into();
        let mut log = data_dir.clone().into_os_string();
        log.push(".log");
        PgConfig {
            bin_dir: PathBuf::from("/usr/lib/postgresql/15/bin"),
            passfile: PathBuf::from("/var/lib/postgresql/.pgpass"),
            log_file: PathBuf::from(log),
            data_dir,
            config_file: None,
            port,
            listen: "localhost".into(),
            socket_dir: PathBuf::from("/var/run/postgresql"),
            os_user: "postgres".into(),
            superuser: "postgres".into(),
            dbname: "postgres".into(),
            replication_user: "replicator".into(),
            rewind_dbname: "postgres".into(),
            slot: "hamon_peer".into(),
            timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(60),
            copy_timeout: Duration::from_secs(3600),
            tls: true,
            tls_identity: None,
            synchronous: false,
        }
    }

    /// Where the server's certificate and key are written: `<data_dir>.tls`, beside the
    /// data directory (which a base backup replaces).
    pub fn tls_dir(&self) -> PathBuf {
        let mut dir = self.data_dir.clone().into_os_string();
        dir.push(".tls");
        PathBuf::from(dir)
    }
}

/// The PostgreSQL driver. See the module documentation.
#[derive(Debug)]
pub struct Postgres {
    cfg: PgConfig,
    account: Option<Account>,
    /// The running server was seen serving TLS.
    tls_on: std::sync::atomic::AtomicBool,
}

impl Postgres {
    /// Checks the configuration (absolute paths, slot name) and, when
    /// running as root, looks up `os_user`.
    pub fn new(cfg: PgConfig) -> Result<Postgres, String> {
        for (what, p) in [
            ("bin_dir", &cfg.bin_dir),
            ("data_dir", &cfg.data_dir),
            ("log_file", &cfg.log_file),
            ("socket_dir", &cfg.socket_dir),
            ("passfile", &cfg.passfile),
        ] {
            if !p.is_absolute() || p.parent().is_none() {
                return Err(format!("postgres {what} must be an absolute path below /"));
            }
        }
        let slot_ok = cfg.slot.len() <= 63
            && !cfg.slot.is_empty()
            && cfg
                .slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !slot_ok {
            return Err(format!(
                "bad postgres slot name {:?} (1-63 of a-z, 0-9, _)",
                cfg.slot
            ));
        }
        if cfg.tls && cfg.tls_identity.is_none() {
            return Err("postgres tls needs the Health Monitor's certificate: set \
                        [health_monitor] tls = true, or [database.postgres] tls = false"
                .into());
        }
        let account = Account::for_tools(&cfg.os_user)?;
        Ok(Postgres {
            cfg,
            account,
            tls_on: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &PgConfig {
        &self.cfg
    }
}

impl Database for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn health(&self) -> Result<(), String> {
        match self.query("SELECT 1")?.as_str() {
            "1" => {}
            other => return Err(format!("unexpected answer to SELECT 1: {other:?}")),
        }
        // A server started by someone else (its own unit, an image tool) learns TLS on
        // its first health check: the peer's connections demand it.
        if self.cfg.tls && !self.tls_on.load(std::sync::atomic::Ordering::Relaxed) {
            self.ensure_tls()?;
            self.tls_on
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if self.cfg.synchronous {
            self.keep_synchronous()?;
        }
        Ok(())
    }

    fn role(&self) -> Result<DbRole, String> {
        match self.query("SELECT pg_is_in_recovery()") {
            Ok(t) if t == "t" => Ok(DbRole::Standby),
            Ok(t) if t == "f" => Ok(DbRole::Primary),
            Ok(t) => Err(format!("unexpected answer to pg_is_in_recovery(): {t:?}")),
            Err(e) => match self.running() {
                Ok(false) => Ok(DbRole::Down),
                _ => Err(e),
            },
        }
    }

    fn lag(&self) -> Result<Option<Lag>, String> {
        let row = self.query(
            "SELECT r, b, CASE WHEN ts IS NULL THEN '' WHEN b = 0 THEN '0' \
             ELSE greatest(0, extract(epoch FROM now() - ts))::text END \
             FROM (SELECT pg_is_in_recovery() r, pg_last_xact_replay_timestamp() ts, \
             greatest(0, coalesce(pg_wal_lsn_diff(greatest(pg_last_wal_receive_lsn(), \
             (SELECT latest_end_lsn FROM pg_stat_wal_receiver)), pg_last_wal_replay_lsn()), \
             0))::bigint b) s",
        )?;
        let fields: Vec<&str> = row.split('|').collect();
        let bad = || format!("unexpected lag row {row:?}");
        let [standby, bytes, seconds] = fields[..] else {
            return Err(bad());
        };
        if standby != "t" {
            return Ok(None);
        }
        let bytes = bytes.parse().map_err(|_| bad())?;
        let seconds = match seconds {
            "" => None,
            s => Some(s.parse().map_err(|_| bad())?),
        };
        Ok(Some(Lag { bytes, seconds }))
    }

    fn initial_copy(&self, from: &PeerDb) -> Result<(), String> {
        // Nothing is touched unless the peer answers.
        self.probe_peer(from)?;
        if self.shutdown("fast").is_err() {
            self.shutdown("immediate")?;
        }
        self.drop_peer_slot(from)?;
        self.wipe_data_dir()?;
        self.base_backup(from)
            .map_err(|e| format!("copy from {from} failed: {e}"))?;
        self.write_standby_config(from)?;
        self.start_standby()
    }

    fn follow(&self, from: &PeerDb) -> Result<(), String> {
        let role = self.role()?;
        if role == DbRole::Standby {
            let (host, port) = self.upstream()?;
            if host.as_deref() == Some(from.host.as_str())
                && port.as_deref() == Some(from.port.to_string().as_str())
            {
                return Ok(());
            }
        }
        // The peer must answer (and keep WAL for us) before we stop anything.
        self.ensure_peer_slot(from)?;
        if !self.has_cluster() {
            return self.initial_copy(from);
        }
        self.shutdown("fast")?;
        if role != DbRole::Standby {
            if let Err(rewind) = self.rewind(from) {
                return self.initial_copy(from).map_err(|copy| {
                    format!("rewind from {from} failed ({rewind}), and so did the copy: {copy}")
                });
            }
        }
        self.write_standby_config(from)?;
        self.start_standby()
    }

    fn promote(&self) -> Result<(), String> {
        let mut role = self.role()?;
        if role == DbRole::Down {
            self.start()?;
            role = self.role()?;
        }
        match role {
            DbRole::Primary => Ok(()),
            DbRole::Down => Err("the server is not running".into()),
            DbRole::Standby => {
                // Promoted, it has no standby yet: commits must not wait for one (a base
                // backup brings the old primary's setting along). The health check
                // turns synchronous replication on once the peer streams.
                if self.cfg.synchronous {
                    self.set_synchronous_standby("")?;
                }
                let wait = Self::secs(self.cfg.start_timeout);
                let cmd = self.psql_local(&format!("SELECT pg_promote(true, {wait})"));
                let out = self.run(cmd, self.cfg.start_timeout + self.cfg.timeout)?;
                if out.into_stdout("psql")?.trim() != "t" {
                    return Err(format!("promotion did not finish within {wait}s"));
                }
                // PostgreSQL 15 records the new timeline in pg_control only
                // at the next checkpoint, and pg_rewind, reading pg_control,
                // would take a just-promoted source for still being on the
                // old timeline ("no rewind required"). So checkpoint now.
                let cmd = self.psql_local("CHECKPOINT");
                self.run(cmd, self.cfg.copy_timeout)?
                    .into_stdout("psql")
                    .map(drop)
                    .map_err(|e| format!("promoted, but the checkpoint after it failed: {e}"))
            }
        }
    }

    fn stop_writes(&self) -> Result<String, String> {
        if self.role()? == DbRole::Standby {
            return Err("this database is a standby: it takes no writes to stop".into());
        }
        // Fast, never immediate: a clean shutdown sends all WAL, up to the
        // shutdown checkpoint, to connected standbys before it completes.
        self.shutdown("fast")?;
        let (state, lsn) = self.control_data()?;
        if state != "shut down" {
            return Err(format!(
                "the database was not shut down cleanly (state: {state})"
            ));
        }
        Ok(lsn)
    }

    fn received(&self) -> Result<Option<String>, String> {
        let row = self.query(
            "SELECT pg_is_in_recovery(), \
             coalesce(greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text, '')",
        )?;
        match row.split_once('|') {
            Some(("f", _)) => Ok(None),
            Some(("t", "")) => Err("the standby has not received or replayed any WAL".into()),
            Some(("t", lsn)) => Ok(Some(lsn.to_string())),
            _ => Err(format!("unexpected row {row:?}")),
        }
    }

    fn caught_up(&self, lsn: &str) -> Result<bool, String> {
        if parse_lsn(lsn).is_none() {
            return Err(format!("not a WAL position: {lsn:?}"));
        }
        let row = self.query(&format!(
            "SELECT pg_is_in_recovery(), \
             coalesce(pg_last_wal_replay_lsn() >= '{}'::pg_lsn, false)",
            lsn.trim()
        ))?;
        match row.as_str() {
            "t|t" => Ok(true),
            "t|f" => Ok(false),
            _ if row.starts_with("f|") => Err("this database is not a standby".into()),
            _ => Err(format!("unexpected row {row:?}")),
        }
    }

    fn stop(&self) -> Result<(), String> {
        match self.shutdown("fast") {
            Ok(()) => Ok(()),
            Err(fast) => self
                .shutdown("immediate")
                .map_err(|e| format!("{fast}; immediate shutdown failed too: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn driver() -> Postgres {
        let mut cfg = PgConfig::new("/srv/pg data/main", 5433);
        cfg.passfile = PathBuf::from("/etc/hamon/pg pass");
        cfg.tls_identity = Some(("cert".into(), "key".into()));
        Postgres::new(cfg).unwrap()
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn config_is_checked() {
        let mut cfg = PgConfig::new("/d", 1);
        cfg.data_dir = "relative".into();
        assert!(Postgres::new(cfg.clone()).unwrap_err().contains("data_dir"));
        cfg.data_dir = "/d".into();
        cfg.slot = "Bad-Slot".into();
        assert!(Postgres::new(cfg).unwrap_err().contains("slot"));
    }

    #[test]
    fn peer_connections_use_the_passfile_and_never_a_password() {
        let db = driver();
        let peer = PeerDb {
            host: "10.0.0.2".into(),
            port: 5432,
        };
        let info = db.peer_conninfo(&peer, None);
        assert_eq!(
            info,
            "host='10.0.0.2' port=5432 user='replicator' passfile='/etc/hamon/pg pass' \
             connect_timeout=7 application_name='hamon_peer' sslmode=require \
             channel_binding=require replication=true"
        );
        let cmds = [
            db.psql_local("SELECT 1"),
            db.tool("pg_basebackup"),
            db.pg_ctl("start"),
        ];
        for cmd in &cmds {
            for arg in args(cmd) {
                assert!(!arg.to_lowercase().contains("password"), "{arg}");
            }
            let envs: Vec<_> = cmd
                .get_envs()
                .map(|(k, _)| k.to_string_lossy().into_owned())
                .collect();
            assert!(envs.contains(&"PGPASSFILE".to_string()), "{envs:?}");
            assert!(!envs.contains(&"PGPASSWORD".to_string()), "{envs:?}");
        }
        assert!(!db
            .peer_conninfo(&peer, Some("postgres"))
            .contains("password="));
    }

    #[test]
    fn server_options_pin_where_it_listens() {
        let mut cfg = PgConfig::new("/d", 25432);
        cfg.socket_dir = "/tmp/it's".into();
        cfg.listen = "127.0.0.2".into();
        cfg.tls = false;
        let db = Postgres::new(cfg.clone()).unwrap();
        assert_eq!(
            db.server_options(),
            "-c 'port=25432' -c 'listen_addresses=127.0.0.2' \
             -c 'unix_socket_directories=/tmp/it'\\''s'"
        );
        // With TLS (the default) it serves the certificate written beside the data.
        cfg.tls = true;
        assert!(Postgres::new(cfg.clone()).unwrap_err().contains("tls"));
        cfg.tls_identity = Some(("cert".into(), "key".into()));
        let db = Postgres::new(cfg).unwrap();
        assert!(db.server_options().ends_with(
            " -c 'ssl=on' -c 'ssl_cert_file=/d.tls/server.crt' \
             -c 'ssl_key_file=/d.tls/server.key'"
        ));
        let plain = db.peer_conninfo(
            &PeerDb {
                host: "h".into(),
                port: 1,
            },
            Some("postgres"),
        );
        assert!(
            plain.contains(" sslmode=require channel_binding=require "),
            "{plain}"
        );
    }

    #[test]
    fn caught_up_rejects_what_is_not_an_lsn() {
        let db = driver();
        let err = db.caught_up("0/1'::pg_lsn; DROP TABLE x; --").unwrap_err();
        assert!(err.starts_with("not a WAL position"), "{err}");
    }
}
