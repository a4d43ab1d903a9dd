//! Everything hamon keeps on disk under `state_dir`, written durably:
//! temp file, fsync, rename over the old file, fsync of the directory.
//!
//! - `ha.json`: the persisted HA state (registration, state)
//! - `authkey`: the HA authentication key (mode 0600)
//! - `in-sync`: Unix time this server last recorded being in sync
//! - `events.jsonl`: the event journal (appended; the newest lines are read back)

use crate::ha::{JournalEntry, Persisted};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A journal entry with its wall-clock time, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped {
    /// Unix seconds.
    pub time: u64,
    #[serde(flatten)]
    pub entry: JournalEntry,
}

/// Write `bytes` to `path` atomically and durably, with file mode `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The state directory and the files in it.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Open (creating, mode 0700) the state directory.
    pub fn open(dir: &Path) -> io::Result<Store> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// A store over an existing directory, without touching it (CLI reads).
    pub fn at(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_optional(&self, name: &str) -> io::Result<Option<String>> {
        match fs::read_to_string(self.dir.join(name)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn load_state(&self) -> io::Result<Option<Persisted>> {
        let Some(text) = self.read_optional("ha.json")? else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", self.dir.join("ha.json").display()),
            )
        })
    }

    pub fn save_state(&self, p: &Persisted) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(p).map_err(io::Error::other)?;
        write_atomic(&self.dir.join("ha.json"), &json, 0o600)
    }

    pub fn load_authkey(&self) -> io::Result<Option<String>> {
        Ok(self
            .read_optional("authkey")?
            .map(|s| s.trim_end_matches('\n').to_string()))
    }

    pub fn save_authkey(&self, key: &str) -> io::Result<()> {
        write_atomic(
            &self.dir.join("authkey"),
            format!("{key}\n").as_bytes(),
            0o600,
        )
    }

    /// The pair secret (`secret`, mode 0600); `None` if there is none yet.
    pub fn load_secret(&self) -> io::Result<Option<crate::peer::pair::PairSecret>> {
        match self.read_optional("secret")? {
            None => Ok(None),
            Some(text) => crate::peer::pair::PairSecret::from_text(&text)
                .map(Some)
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", self.dir.join("secret").display()),
                    )
                }),
        }
    }

    /// Replaces the pair secret, durably (temporary file, fsync, rename, directory fsync).
    pub fn save_secret(&self, secret: &crate::peer::pair::PairSecret) -> io::Result<()> {
        write_atomic(&self.dir.join("secret"), secret.to_text().as_bytes(), 0o600)
    }

    /// Writes `secret` beside the current one (`secret.new`, fsynced), ready to replace it
    /// by [`Store::commit_secret`]: what can fail for a full disk fails here, before
    /// anything depends on it.
    pub fn stage_secret(&self, secret: &crate::peer::pair::PairSecret) -> io::Result<()> {
        write_atomic(
            &self.dir.join("secret.new"),
            secret.to_text().as_bytes(),
            0o600,
        )
    }

    /// The staged secret, if there is one.
    pub fn staged_secret(&self) -> io::Result<Option<crate::peer::pair::PairSecret>> {
        match self.read_optional("secret.new")? {
            None => Ok(None),
            Some(text) => crate::peer::pair::PairSecret::from_text(&text)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    /// Puts the staged secret in place: a rename and a directory fsync, nothing to allocate.
    pub fn commit_secret(&self) -> io::Result<()> {
        self.commit("secret")
    }

    /// Drops a staged secret that will not be used.
    pub fn discard_staged_secret(&self) {
        let _ = fs::remove_file(self.dir.join("secret.new"));
    }

    /// As [`Store::stage_secret`], for the operator's key (`authkey.new`).
    pub fn stage_authkey(&self, key: &str) -> io::Result<()> {
        write_atomic(
            &self.dir.join("authkey.new"),
            format!("{key}\n").as_bytes(),
            0o600,
        )
    }

    /// Puts a staged key in place (nothing if none is staged).
    pub fn commit_authkey(&self) -> io::Result<()> {
        match self.commit("authkey") {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Drops a staged key.
    pub fn discard_staged_authkey(&self) {
        let _ = fs::remove_file(self.dir.join("authkey.new"));
    }

    fn commit(&self, name: &str) -> io::Result<()> {
        fs::rename(self.dir.join(format!("{name}.new")), self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()
    }

    /// The working keys: the pair secret's. A server with a key but no secret gets one: a
    /// random secret of its own when it is not registered (and `create`), or, when it is
    /// registered (a pair from before pair secrets), the keys derived from the key itself
    /// as before, so that servers upgraded one at a time keep hearing each other. `None`
    /// without a key.
    pub fn working_keys(
        &self,
        registered: bool,
        create: bool,
    ) -> io::Result<Option<crate::peer::auth::Keys>> {
        if let Some(secret) = self.load_secret()? {
            return Ok(Some(secret.keys()));
        }
        let Some(key) = self.load_authkey()? else {
            return Ok(None);
        };
        if registered {
            return Ok(Some(crate::peer::auth::Keys::legacy(&key)));
        }
        if !create {
            return Ok(None);
        }
        let secret = crate::peer::pair::PairSecret::random();
        self.save_secret(&secret)?;
        Ok(Some(secret.keys()))
    }

    pub fn load_in_sync(&self) -> io::Result<Option<u64>> {
        Ok(self
            .read_optional("in-sync")?
            .and_then(|s| s.trim().parse().ok()))
    }

    pub fn save_in_sync(&self, unix_secs: u64) -> io::Result<()> {
        write_atomic(
            &self.dir.join("in-sync"),
            format!("{unix_secs}\n").as_bytes(),
            0o600,
        )
    }

    /// Append one journal entry (one JSON line, flushed to disk).
    pub fn append_journal(&self, e: &Stamped) -> io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(self.dir.join("events.jsonl"))?;
        f.write_all(&line)?;
        f.sync_data()
    }

    /// The newest `limit` journal entries, oldest first. Unreadable lines
    /// (a torn last write) are skipped.
    pub fn read_journal(&self, limit: usize) -> io::Result<Vec<Stamped>> {
        let f = match File::open(self.dir.join("events.jsonl")) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = std::collections::VecDeque::with_capacity(limit.min(4096));
        for line in io::BufReader::new(f).lines() {
            if let Ok(e) = serde_json::from_str::<Stamped>(&line?) {
                if out.len() == limit {
                    out.pop_front();
                }
                out.push_back(e);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Remove replicated HA data (`ha remove` answered "yes" to purging).
    pub fn purge_data(&self) -> io::Result<()> {
        match fs::remove_dir_all(self.dir.join("data")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::{HaState, Severity};

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hamon-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn state_round_trips_and_files_are_private() -> io::Result<()> {
        let d = tempdir("state");
        let s = Store::open(&d)?;
        assert_eq!(s.load_state()?, None);
        let p = Persisted {
            registration: None,
            state: HaState::PrimaryActive,
            prior: None,
        };
        s.save_state(&p)?;
        assert_eq!(s.load_state()?, Some(p));
        s.save_authkey("Abcdefg1")?;
        assert_eq!(s.load_authkey()?.as_deref(), Some("Abcdefg1"));
        let mode = fs::metadata(d.join("authkey"))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::metadata(&d)?.permissions().mode() & 0o777, 0o700);
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(&d)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().contains(".tmp.")),
            "{names:?}"
        );
        fs::remove_dir_all(&d)
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_reset() -> io::Result<()> {
        let d = tempdir("corrupt");
        let s = Store::open(&d)?;
        fs::write(d.join("ha.json"), b"{not json")?;
        let err = s
            .load_state()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("ha.json"), "{err}");
        fs::remove_dir_all(&d)
    }

    #[test]
    fn journal_keeps_the_newest_and_skips_torn_lines() -> io::Result<()> {
        let d = tempdir("journal");
        let s = Store::open(&d)?;
        for i in 0..10 {
            let entry = JournalEntry {
                kind: "state_changed".into(),
                severity: Severity::Info,
                state: HaState::StandAlone,
                text: format!("entry {i}"),
            };
            s.append_journal(&Stamped {
                time: 100 + i,
                entry,
            })?;
        }
        OpenOptions::new()
            .append(true)
            .open(d.join("events.jsonl"))?
            .write_all(b"{\"time\":1,")?;
        let tail = s.read_journal(3)?;
        let texts: Vec<_> = tail.iter().map(|e| e.entry.text.as_str()).collect();
        assert_eq!(texts, ["entry 7", "entry 8", "entry 9"]);
        fs::remove_dir_all(&d)
    }
}
