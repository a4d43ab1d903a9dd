//! The PostgreSQL driver's building blocks: running its programs, talking
//! to the peer, starting and stopping the server, and editing the data
//! directory.

use std::fs;
use std::os::unix::fs::{chown, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::conf::{conninfo_get, conninfo_value, set_parameters, sh_quote};
use super::Postgres;
use crate::db::exec::{self, Output};
use crate::db::{Database, DbRole, PeerDb};

impl Postgres {
    /// A command for one of PostgreSQL's programs, with PGPASSFILE set.
    pub(super) fn tool(&self, name: &str) -> Command {
        let mut cmd = exec::command(&self.cfg.bin_dir.join(name), self.account.as_ref());
        cmd.env("PGPASSFILE", &self.cfg.passfile);
        cmd
    }

    /// Seconds for libpq's connect_timeout and pg_ctl's -t: at least 2
    /// (libpq treats 1 as 2 anyway).
    /// libpq's connect_timeout: three quarters of `timeout` (at least 2 s,
    /// libpq's minimum), so that libpq's own message, not our kill, ends a
    /// hanging connection attempt.
    pub(super) fn connect_secs(&self) -> u64 {
        (self.cfg.timeout.as_secs_f64() * 0.75).floor().max(2.0) as u64
    }

    pub(super) fn secs(d: Duration) -> u64 {
        d.as_secs_f64().ceil().max(2.0) as u64
    }

    pub(super) fn run(&self, mut cmd: Command, timeout: Duration) -> Result<Output, String> {
        exec::run(&mut cmd, timeout)
    }

    /// psql for a local query (unix socket, -X -A -t).
    pub(super) fn psql_local(&self, sql: &str) -> Command {
        let mut cmd = self.tool("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.cfg.socket_dir)
            .arg("-p")
            .arg(self.cfg.port.to_string())
            .arg("-U")
            .arg(&self.cfg.superuser)
            .arg("-d")
            .arg(&self.cfg.dbname)
            .arg("-c")
            .arg(sql)
            .env("PGCONNECT_TIMEOUT", self.connect_secs().to_string());
        cmd
    }

    /// One local query: its output, trimmed (`-A -t`: fields split by `|`).
    pub fn query(&self, sql: &str) -> Result<String, String> {
        let out = self.run(self.psql_local(sql), self.cfg.timeout)?;
        Ok(out.into_stdout("psql")?.trim().to_string())
    }

    /// A connection string for the peer: replication (`dbname` None) or a
    /// normal connection to `dbname`. The password comes from `passfile=`.
    pub(super) fn peer_conninfo(&self, peer: &PeerDb, dbname: Option<&str>) -> String {
        let mut info = format!(
            "host={} port={} user={} passfile={} connect_timeout={} application_name={}",
            conninfo_value(&peer.host),
            peer.port,
            conninfo_value(&self.cfg.replication_user),
            conninfo_value(&self.cfg.passfile.to_string_lossy()),
            self.connect_secs(),
            conninfo_value(&self.cfg.slot),
        );
        if self.cfg.tls {
            info.push_str(" sslmode=require channel_binding=require");
        }
        match dbname {
            Some(db) => info.push_str(&format!(" dbname={}", conninfo_value(db))),
            None => info.push_str(" replication=true"),
        }
        info
    }

    /// Writes the certificate and key for the server into `<data_dir>.tls/` (owned by
    /// `os_user`; the key mode 0600): the paths `server_options` and `ensure_tls` name.
    pub(super) fn write_tls_files(&self) -> Result<(PathBuf, PathBuf), String> {
        let Some((cert, key)) = &self.cfg.tls_identity else {
            return Err("no certificate for the database server".into());
        };
        let dir = self.cfg.tls_dir();
        self.own_dir(&dir, 0o700)?;
        let (crt, k) = (dir.join("server.crt"), dir.join("server.key"));
        for (path, text) in [(&crt, cert), (&k, key)] {
            crate::store::write_atomic(path, text.as_bytes(), 0o600)
                .map_err(|e| format!("cannot write {}: {}", path.display(), exec::io_text(&e)))?;
            self.give(path)?;
        }
        Ok((crt, k))
    }

    /// Turns TLS on in a running server that was started without it: the settings go to
    /// postgresql.auto.conf (`ALTER SYSTEM`) and take effect on reload.
    pub(super) fn ensure_tls(&self) -> Result<(), String> {
        if self.query("SHOW ssl")? == "on" {
            return Ok(());
        }
        let (crt, key) = self.write_tls_files()?;
        for (name, value) in [
            ("ssl_cert_file", crt.display().to_string()),
            ("ssl_key_file", key.display().to_string()),
            ("ssl", "on".to_string()),
        ] {
            self.query(&format!(
                "ALTER SYSTEM SET {name} = '{}'",
                value.replace('\'', "''")
            ))?;
        }
        self.query("SELECT pg_reload_conf()")?;
        // The reload is asynchronous: wait until the server says so.
        for _ in 0..50 {
            if self.query("SHOW ssl")? == "on" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("the server did not turn TLS on after a reload (see its log)".into())
    }

    /// With `synchronous`, on the primary: commits wait for the peer's standby while it
    /// streams, and for nothing while it does not. Run with every health check, so a
    /// standby that goes away holds commits up for at most one check (plus PostgreSQL's
    /// `wal_sender_timeout` when the connection is cut without a reset).
    pub(super) fn keep_synchronous(&self) -> Result<(), String> {
        if self.query("SELECT pg_is_in_recovery()")? != "f" {
            return Ok(());
        }
        // The standby names itself after the slot (`application_name`, `peer_conninfo`);
        // the slot name is lowercase letters, digits and `_` (checked in the config).
        let name = &self.cfg.slot;
        let streaming = self.query(&format!(
            "SELECT count(*) FROM pg_stat_replication \
             WHERE application_name = '{name}' AND state = 'streaming'"
        ))? != "0";
        self.set_synchronous_standby(if streaming { name } else { "" })
    }

    /// Sets `synchronous_standby_names` (postgresql.auto.conf) when it differs, and
    /// reloads. Works on a standby too (the setting then waits for its promotion).
    pub(super) fn set_synchronous_standby(&self, name: &str) -> Result<(), String> {
        if self.query("SHOW synchronous_standby_names")? == name {
            return Ok(());
        }
        self.query(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{}'",
            name.replace('\'', "''")
        ))?;
        self.query("SELECT pg_reload_conf()").map(drop)
    }

    /// A replication command on the peer ("IDENTIFY_SYSTEM"). Errors carry
    /// the SQLSTATE ("ERROR:  42710") instead of the message text.
    pub(super) fn peer_command(&self, peer: &PeerDb, command: &str) -> Result<Output, String> {
        let mut cmd = self.tool("psql");
        cmd.args(["-X", "-A", "-t", "-w", "-v", "VERBOSITY=sqlstate", "-d"])
            .arg(self.peer_conninfo(peer, None))
            .arg("-c")
            .arg(command);
        self.run(cmd, self.cfg.timeout)
    }

    /// The peer answers replication connections.
    pub(super) fn probe_peer(&self, peer: &PeerDb) -> Result<(), String> {
        let mut cmd = self.tool("psql");
        cmd.args(["-X", "-A", "-t", "-w", "-d"])
            .arg(self.peer_conninfo(peer, None))
            .args(["-c", "IDENTIFY_SYSTEM"]);
        self.run(cmd, self.cfg.timeout)
            .and_then(|out| out.into_stdout("psql"))
            .map(drop)
            .map_err(|e| format!("cannot reach the peer database at {peer}: {e}"))
    }

    /// Create our slot on the peer unless it exists.
    pub(super) fn ensure_peer_slot(&self, peer: &PeerDb) -> Result<(), String> {
        let c = format!(
            "CREATE_REPLICATION_SLOT {} PHYSICAL RESERVE_WAL",
            self.cfg.slot
        );
        let out = self.peer_command(peer, &c)?;
        if out.success() || out.stderr.contains("42710") {
            return Ok(());
        }
        Err(format!(
            "cannot create slot {} on {peer}: {}",
            self.cfg.slot,
            out.failure("psql")
        ))
    }

    /// Drop our slot on the peer (waiting until no one uses it) if it exists.
    pub(super) fn drop_peer_slot(&self, peer: &PeerDb) -> Result<(), String> {
        let out = self.peer_command(
            peer,
            &format!("DROP_REPLICATION_SLOT {} WAIT", self.cfg.slot),
        )?;
        if out.success() || out.stderr.contains("42704") {
            return Ok(());
        }
        Err(format!(
            "cannot drop slot {} on {peer}: {}",
            self.cfg.slot,
            out.failure("psql")
        ))
    }

    /// Drop a local slot of our name left from an earlier time as primary.
    pub(super) fn drop_local_stale_slot(&self) -> Result<(), String> {
        self.query(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = '{}' AND NOT active",
            self.cfg.slot
        ))
        .map(drop)
    }

    pub(super) fn pg_ctl(&self, action: &str) -> Command {
        let mut cmd = self.tool("pg_ctl");
        cmd.arg(action).arg("-D").arg(&self.cfg.data_dir);
        cmd
    }

    /// Is a server running on the data directory (pg_ctl status)?
    pub fn running(&self) -> Result<bool, String> {
        let out = self.run(self.pg_ctl("status"), self.cfg.timeout)?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(3) | Some(4) => Ok(false),
            _ => Err(out.failure("pg_ctl status")),
        }
    }

    /// Make sure `path` is a directory owned by `os_user` (creating it
    /// with `mode` when missing).
    pub(super) fn own_dir(&self, path: &Path, mode: u32) -> Result<(), String> {
        if !path.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(path)
                .map_err(|e| format!("cannot create {}: {}", path.display(), exec::io_text(&e)))?;
        }
        self.give(path)
    }

    /// Hand a file we (root) wrote to `os_user`.
    pub(super) fn give(&self, path: &Path) -> Result<(), String> {
        match &self.account {
            Some(a) => chown(path, Some(a.uid), Some(a.gid))
                .map_err(|e| format!("cannot chown {}: {}", path.display(), exec::io_text(&e))),
            None => Ok(()),
        }
    }

    /// The `pg_ctl start -o` options: where to listen, whatever the config
    /// files (perhaps copied from the peer) say.
    pub(super) fn server_options(&self) -> String {
        let mut opts = vec![
            format!("port={}", self.cfg.port),
            format!("listen_addresses={}", self.cfg.listen),
            format!("unix_socket_directories={}", self.cfg.socket_dir.display()),
        ];
        if let Some(conf) = &self.cfg.config_file {
            opts.push(format!("config_file={}", conf.display()));
        }
        if self.cfg.tls {
            let dir = self.cfg.tls_dir();
            opts.push("ssl=on".to_string());
            opts.push(format!(
                "ssl_cert_file={}",
                dir.join("server.crt").display()
            ));
            opts.push(format!("ssl_key_file={}", dir.join("server.key").display()));
        }
        opts.iter()
            .map(|o| format!("-c {}", sh_quote(o)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Start the server (no-op when running) and wait until it accepts
    /// connections.
    pub fn start(&self) -> Result<(), String> {
        if self.running()? {
            return Ok(());
        }
        self.own_dir(&self.cfg.socket_dir, 0o755)?;
        if !self.cfg.log_file.exists() {
            fs::write(&self.cfg.log_file, "").map_err(|e| {
                format!(
                    "cannot create {}: {}",
                    self.cfg.log_file.display(),
                    exec::io_text(&e)
                )
            })?;
            self.give(&self.cfg.log_file)?;
        }
        if self.cfg.tls {
            self.write_tls_files()?;
        }
        let mut cmd = self.pg_ctl("start");
        cmd.args([
            "-w",
            "-t",
            &Self::secs(self.cfg.start_timeout).to_string(),
            "-l",
        ])
        .arg(&self.cfg.log_file)
        .arg("-o")
        .arg(self.server_options());
        let out = self.run(cmd, self.cfg.start_timeout + Duration::from_secs(5))?;
        if out.success() {
            return Ok(());
        }
        let log = fs::read_to_string(&self.cfg.log_file).unwrap_or_default();
        let log = exec::tail(&log).unwrap_or_default();
        Err(format!("{} (log: {log})", out.failure("pg_ctl start")))
    }

    /// Stop with `mode` ("fast", "immediate"); no-op when not running.
    pub(super) fn shutdown(&self, mode: &str) -> Result<(), String> {
        if !self.running()? {
            return Ok(());
        }
        let mut cmd = self.pg_ctl("stop");
        cmd.args([
            "-m",
            mode,
            "-w",
            "-t",
            &Self::secs(self.cfg.timeout).to_string(),
        ]);
        self.run(cmd, self.cfg.timeout + Duration::from_secs(5))?
            .into_stdout("pg_ctl stop")
            .map(drop)
    }

    /// pg_controldata's "Database cluster state" and "Latest checkpoint
    /// location".
    pub(super) fn control_data(&self) -> Result<(String, String), String> {
        let mut cmd = self.tool("pg_controldata");
        cmd.arg("-D").arg(&self.cfg.data_dir);
        let text = self
            .run(cmd, self.cfg.timeout)?
            .into_stdout("pg_controldata")?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.strip_prefix(':'))
                .map(|v| v.trim().to_string())
                .ok_or_else(|| format!("pg_controldata shows no {name:?}"))
        };
        Ok((
            field("Database cluster state")?,
            field("Latest checkpoint location")?,
        ))
    }

    /// Does the data directory hold a cluster?
    pub(super) fn has_cluster(&self) -> bool {
        self.cfg.data_dir.join("PG_VERSION").is_file()
    }

    /// Remove everything inside the data directory (keeping the directory,
    /// which may be a mount point), creating it when missing. Refuses a
    /// non-empty directory that does not look like a PostgreSQL one.
    pub(super) fn wipe_data_dir(&self) -> Result<(), String> {
        let dir = &self.cfg.data_dir;
        let shown = dir.display();
        self.own_dir(dir, 0o700)?;
        let entries: Vec<_> = fs::read_dir(dir)
            .map_err(|e| format!("cannot read {shown}: {}", exec::io_text(&e)))?
            .filter_map(Result::ok)
            .collect();
        let looks_pg = ["PG_VERSION", "global", "base", "pg_wal", "backup_label"]
            .iter()
            .any(|n| dir.join(n).exists());
        if !entries.is_empty() && !looks_pg {
            return Err(format!(
                "refusing to empty {shown}: it does not look like a data directory"
            ));
        }
        for entry in entries {
            let path = entry.path();
            let gone = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            gone.map_err(|e| format!("cannot remove {}: {}", path.display(), exec::io_text(&e)))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot chmod {shown}: {}", exec::io_text(&e)))
    }

    /// Configure the (stopped) local cluster as a standby of `peer`:
    /// primary_conninfo and primary_slot_name in postgresql.auto.conf, and
    /// standby.signal.
    pub(super) fn write_standby_config(&self, peer: &PeerDb) -> Result<(), String> {
        let auto = self.cfg.data_dir.join("postgresql.auto.conf");
        let old = match fs::read_to_string(&auto) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(format!(
                    "cannot read {}: {}",
                    auto.display(),
                    exec::io_text(&e)
                ))
            }
        };
        let new = set_parameters(
            &old,
            &[
                (
                    "primary_conninfo",
                    self.peer_conninfo(peer, None)
                        .replace(" replication=true", ""),
                ),
                ("primary_slot_name", self.cfg.slot.clone()),
            ],
        );
        let signal = self.cfg.data_dir.join("standby.signal");
        for (path, text) in [(&auto, new.as_str()), (&signal, "")] {
            fs::write(path, text)
                .map_err(|e| format!("cannot write {}: {}", path.display(), exec::io_text(&e)))?;
            self.give(path)?;
        }
        Ok(())
    }

    /// The upstream (host, port) the running standby is configured for.
    pub(super) fn upstream(&self) -> Result<(Option<String>, Option<String>), String> {
        let info = self.query("SHOW primary_conninfo")?;
        Ok((conninfo_get(&info, "host"), conninfo_get(&info, "port")))
    }

    /// Start as a standby of `peer` and tidy up; the config is written.
    pub(super) fn start_standby(&self) -> Result<(), String> {
        self.start()?;
        match self.role()? {
            DbRole::Standby => {}
            other => return Err(format!("started as {other}, not as a standby")),
        }
        // Best effort: a stale slot only costs disk space.
        let _ = self.drop_local_stale_slot();
        Ok(())
    }

    pub(super) fn rewind(&self, peer: &PeerDb) -> Result<(), String> {
        let mut cmd = self.tool("pg_rewind");
        cmd.arg("--target-pgdata")
            .arg(&self.cfg.data_dir)
            .arg(format!(
                "--source-server={}",
                self.peer_conninfo(peer, Some(&self.cfg.rewind_dbname))
            ));
        if let Some(conf) = &self.cfg.config_file {
            cmd.arg(format!("--config-file={}", conf.display()));
        }
        self.run(cmd, self.cfg.copy_timeout)?
            .into_stdout("pg_rewind")
            .map(drop)
    }

    pub(super) fn base_backup(&self, peer: &PeerDb) -> Result<(), String> {
        let mut cmd = self.tool("pg_basebackup");
        cmd.arg("-D")
            .arg(&self.cfg.data_dir)
            .args([
                "-X",
                "stream",
                "-c",
                "fast",
                "-w",
                "-C",
                "-S",
                &self.cfg.slot,
                "-d",
            ])
            .arg(self.peer_conninfo(peer, None));
        self.run(cmd, self.cfg.copy_timeout)?
            .into_stdout("pg_basebackup")
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::super::PgConfig;
    use super::*;
    use std::path::PathBuf;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hamon-pgops-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn driver(data: &Path) -> Postgres {
        let mut cfg = PgConfig::new(data, 25432);
        cfg.passfile = "/etc/hamon/pgpass".into();
        cfg.replication_user = "repl".into();
        cfg.tls = false;
        Postgres::new(cfg).unwrap()
    }

    #[test]
    fn standby_config_names_the_passfile_and_replaces_old_settings() {
        let root = scratch("standby");
        let data = root.join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(
            data.join("postgresql.auto.conf"),
            "work_mem = '8MB'\nprimary_conninfo = 'host=old password=x'\n",
        )
        .unwrap();
        let db = driver(&data);
        let peer = PeerDb {
            host: "127.0.0.3".into(),
            port: 5433,
        };
        db.write_standby_config(&peer).unwrap();
        let auto = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
        assert_eq!(
            auto,
            "work_mem = '8MB'\n\
             primary_conninfo = 'host=''127.0.0.3'' port=5433 user=''repl'' \
             passfile=''/etc/hamon/pgpass'' connect_timeout=7 \
             application_name=''hamon_peer'''\n\
             primary_slot_name = 'hamon_peer'\n"
        );
        assert!(data.join("standby.signal").is_file());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn wiping_refuses_what_is_not_a_data_directory() {
        let root = scratch("wipe");
        let data = root.join("data");
        fs::create_dir_all(data.join("precious")).unwrap();
        fs::write(data.join("notes.txt"), "keep me").unwrap();
        let db = driver(&data);
        let err = db.wipe_data_dir().unwrap_err();
        assert!(err.contains("does not look like a data directory"), "{err}");
        assert!(data.join("notes.txt").is_file());

        fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        db.wipe_data_dir().unwrap();
        assert_eq!(fs::read_dir(&data).unwrap().count(), 0);
        // A missing directory is created.
        fs::remove_dir_all(&data).unwrap();
        db.wipe_data_dir().unwrap();
        assert!(data.is_dir());
        fs::remove_dir_all(&root).unwrap();
    }
}
