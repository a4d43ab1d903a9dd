//! `hamon ha ...` and `hamon status`: talk to the local agent.

use super::{fail, load};
use crate::control::{self, Reply, Request};
use crate::ha::{FailoverType, Role, Secret, StatusView};
use std::io::{BufRead, IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

pub const HA_USAGE: &str = "\
Usage: hamon ha <command>

  status [--json]             this server's HA role, peer, state and failover type;
                              with the agent down, the state it last saved (exit 3)
  register --secondary HOST[:PORT] --failover-type manual|automatic
           [--vip ADDR/PREFIX]... [--email a@x,b@y] [--authkey-file FILE]
                              register the secondary (run on the primary); the key
                              comes from --authkey-file, stdin, or a prompt
  set [--failover-type manual|automatic] [--email a@x,b@y | --no-email] [--vip ADDR/PREFIX]... [--add-vip ADDR/PREFIX]... [--remove-vip ADDR/PREFIX]...
                              change the registration's settings on both servers of a
                              registered pair, or on neither (run on either server);
                              --vip replaces the VIP list, --add-vip/--remove-vip edit it;
                              an active server moves and announces its VIP at once
  authkey [--file FILE]       set this server's authentication key (from FILE,
                              stdin or a prompt; never from the command line)
  failover                    make the secondary active (run on the secondary)
  failback                    give the active role back to the primary (secondary)
  remove [--yes] [--purge]    remove the HA configuration; --yes skips the questions,
                              --purge also removes HA data from both servers
  events [--limit N] [--json] the HA event journal, newest first, in local time
  token                       the bearer token for the JSON API (derived from the key)
";

fn call(cfg_path: Option<&Path>, req: Request, timeout: Option<Duration>) -> Result<Reply, String> {
    let cfg = load(cfg_path)?;
    control::call(&cfg.socket_path(), &req, timeout).map_err(|e| e.to_string())
}

fn finish(r: Result<Reply, String>) -> i32 {
    match r {
        Ok(Reply::Done { message }) => {
            println!("{message}");
            0
        }
        Ok(Reply::Refused { message }) => fail(&message),
        Ok(other) => fail(&format!("unexpected reply {other:?}")),
        Err(e) => fail(&e),
    }
}

/// The guide's one-line HA status.
pub fn status_line(s: &StatusView) -> String {
    let mut line = format!("[Role] {}", s.role);
    if let (Some(name), Some(addr)) = (&s.peer_name, &s.peer_address) {
        let label = match s.role {
            Role::Primary => "Secondary Server",
            Role::Secondary => "Primary Server",
        };
        line.push_str(&format!(" [{label}] {name}({addr})"));
    }
    line.push_str(&format!(" [State] {}", s.state));
    if let Some(t) = s.failover_type {
        line.push_str(&format!(" [Failover Type] {t}"));
    }
    line
}

/// Exit status of `ha status` and `status` when the agent is not running (as LSB's
/// `status` action: "program is not running").
const NOT_RUNNING: i32 = 3;

/// The HTTP API's `/api/v1/status` object, from a control socket status reply.
fn api_status(reply: &Reply) -> serde_json::Value {
    let Reply::Status {
        status,
        tls_fingerprint,
        sync,
        log_level,
        ..
    } = reply
    else {
        return serde_json::Value::Null;
    };
    serde_json::json!({
        "status": status,
        "log_level": log_level,
        "tls_fingerprint": tls_fingerprint,
        "version": env!("CARGO_PKG_VERSION"),
        "sync": sync,
    })
}

fn print_json(v: &serde_json::Value) -> i32 {
    match serde_json::to_string_pretty(v) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => fail(&format!("cannot print JSON: {e}")),
    }
}

/// `ha status` and `status` with the agent down: what it last saved, said to be that,
/// and exit 3.
fn not_running(cfg_path: Option<&Path>, why: &str, json: bool) -> i32 {
    let saved = load(cfg_path).and_then(|cfg| {
        crate::store::Store::at(&cfg.node.state_dir)
            .load_state()
            .map_err(|e| format!("cannot read the saved state: {e}"))
    });
    if json {
        let (persisted, error) = match &saved {
            Ok(p) => (serde_json::to_value(p).ok(), None),
            Err(e) => (None, Some(e.clone())),
        };
        print_json(&serde_json::json!({
            "agent_running": false,
            "reason": why,
            "persisted": persisted,
            "error": error,
        }));
        return NOT_RUNNING;
    }
    eprintln!("hamon: {why}");
    match saved {
        Ok(Some(p)) => {
            let mut line = format!("Last saved (agent NOT running): [State] {}", p.state);
            if let Some(r) = &p.registration {
                line.push_str(&format!(
                    " [Primary Server] {}({}) [Secondary Server] {}({}) [Failover Type] {}",
                    r.primary.name,
                    r.primary.address,
                    r.secondary.name,
                    r.secondary.address,
                    r.failover_type
                ));
            }
            println!("{line}");
        }
        Ok(None) => println!("Last saved (agent NOT running): nothing saved yet (Stand Alone)"),
        Err(e) => eprintln!("hamon: {e}"),
    }
    NOT_RUNNING
}

/// `ha status [--json]`.
fn ha_status(cfg: Option<&Path>, json: bool) -> i32 {
    let reply = match load(cfg) {
        Ok(c) => control::call(
            &c.socket_path(),
            &Request::Status,
            Some(Duration::from_secs(10)),
        ),
        Err(e) => return fail(&e),
    };
    match reply {
        Ok(r @ Reply::Status { .. }) if json => print_json(&api_status(&r)),
        Ok(Reply::Status { status, .. }) => {
            println!("{}", status_line(&status));
            if let Some(r) = status.releases() {
                println!("[Release] {r}");
            }
            0
        }
        Ok(Reply::Refused { message }) => fail(&message),
        Ok(other) => fail(&format!("unexpected reply {other:?}")),
        Err(e @ control::ControlError::NotRunning(_)) => not_running(cfg, &e.to_string(), json),
        Err(e) => fail(&e.to_string()),
    }
}

/// `hamon status`: the Health Monitor line (the guide's format), then the
/// certificate fingerprint when the Health Monitor speaks HTTPS.
pub fn status(cfg: Option<&Path>, json: bool) -> i32 {
    let reply = match load(cfg) {
        Ok(c) => control::call(
            &c.socket_path(),
            &Request::Status,
            Some(Duration::from_secs(10)),
        ),
        Err(e) => return fail(&e),
    };
    let reply = match reply {
        Err(e @ control::ControlError::NotRunning(_)) => {
            if !json {
                println!("Health Monitor Server is NOT running.");
            }
            return not_running(cfg, &e.to_string(), json);
        }
        other => other.map_err(|e| e.to_string()),
    };
    match reply {
        Ok(r @ Reply::Status { .. }) if json => {
            // The API's fields, then what only the CLI shows.
            let mut v = api_status(&r);
            if let (
                Reply::Status {
                    services,
                    system,
                    database,
                    notify,
                    heartbeats,
                    state_unsaved,
                    ..
                },
                Some(map),
            ) = (&r, v.as_object_mut())
            {
                for (k, x) in [
                    ("services", serde_json::json!(services)),
                    ("system", serde_json::json!(system)),
                    ("database", serde_json::json!(database)),
                    ("notify", serde_json::json!(notify)),
                    ("heartbeats", serde_json::json!(heartbeats)),
                    ("state_unsaved", serde_json::json!(state_unsaved)),
                ] {
                    map.insert(k.into(), x);
                }
            }
            print_json(&v)
        }
        Ok(Reply::Status {
            status,
            tls_fingerprint,
            services,
            system,
            sync,
            notify,
            database,
            heartbeats,
            state_unsaved,
            ..
        }) => {
            println!(
                "Health Monitor Server is running. ( [Role] {} [State] {} )",
                status.role, status.state
            );
            for (what, text) in status.safeguards() {
                println!("{what}: {text}");
            }
            if let Some(why) = &status.mail_unsent {
                println!("E-mail: {why}");
            }
            if let Some(why) = state_unsaved {
                println!(
                    "HA state NOT SAVED: {why} (a restart would come back with an older state)"
                );
            }
            for line in services {
                println!("{line}");
            }
            // After the guide's lines (the Health Monitor's, then one per service).
            if let Some(r) = status.releases() {
                println!("Release: {r}");
            }
            if let Some(f) = tls_fingerprint {
                println!("Health Monitor certificate SHA-256 fingerprint: {f}");
            }
            if let Some(s) = system {
                println!("{s}");
            }
            if let Some(d) = database {
                println!("{d}");
            }
            for line in sync.map(|s| s.lines()).unwrap_or_default() {
                println!("{line}");
            }
            if let Some(n) = notify {
                println!("{}", n.line());
            }
            println!(
                "Heartbeats: {} sent, {} accepted; refused {} not from the peer, {} bad, {} replayed, \
                 {} duplicate",
                heartbeats.sent,
                heartbeats.accepted,
                heartbeats.rejected_sender,
                heartbeats.rejected_bad,
                heartbeats.rejected_replay,
                heartbeats.duplicates
            );
            if !heartbeats.paths.is_empty() {
                let ways: Vec<String> = heartbeats
                    .paths
                    .iter()
                    .map(|p| match p.heard_ms_ago {
                        None => format!("{} NEVER heard", p.peer),
                        Some(ms) if p.silent => format!("{} SILENT for {ms} ms", p.peer),
                        Some(ms) => format!("{} heard {ms} ms ago", p.peer),
                    })
                    .collect();
                println!("Heartbeat paths: {}", ways.join("; "));
            }
            if let Some(beat) = status.peer_sync {
                let show = |c: crate::ha::ClassBeat| match c.lag {
                    Some(s) => format!(
                        "lag {s} s (last pass {} file(s), {} byte(s))",
                        c.files, c.bytes
                    ),
                    None => "not yet synced".into(),
                };
                println!(
                    "Peer's file replica (from its heartbeats): frequent {}, batch {}",
                    show(beat.frequent),
                    show(beat.batch)
                );
            }
            0
        }
        Ok(Reply::Refused { message }) => fail(&message),
        Ok(other) => fail(&format!("unexpected reply {other:?}")),
        Err(e) => fail(&e),
    }
}

pub fn main(cfg: Option<&Path>, args: &[&str]) -> i32 {
    match args {
        [] | ["?"] | ["--help"] | ["-h"] | ["help"] => {
            print!("{HA_USAGE}");
            0
        }
        ["status"] => ha_status(cfg, false),
        ["status", "--json"] => ha_status(cfg, true),
        ["failover"] => finish(call(cfg, Request::Failover, None)),
        ["failback"] => finish(call(cfg, Request::Failback, None)),
        ["events", rest @ ..] => events(cfg, rest),
        ["remove", rest @ ..] => remove(cfg, rest),
        ["authkey", rest @ ..] => authkey(cfg, rest),
        ["register", rest @ ..] => register(cfg, rest),
        ["set", rest @ ..] => set(cfg, rest),
        ["token"] => token(cfg),
        _ => {
            eprint!(
                "hamon: unknown ha command {:?}\n\n{HA_USAGE}",
                args.join(" ")
            );
            2
        }
    }
}

fn events(cfg: Option<&Path>, args: &[&str]) -> i32 {
    let (mut limit, mut json) = (100, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (*a, it.clone().next()) {
            ("--json", _) => json = true,
            ("--limit", Some(n)) => match n.parse() {
                Ok(n) => {
                    limit = n;
                    it.next();
                }
                Err(_) => return fail("--limit takes a number"),
            },
            _ => return fail("usage: hamon ha events [--limit N] [--json]"),
        }
    }
    match call(
        cfg,
        Request::Events { limit },
        Some(Duration::from_secs(10)),
    ) {
        // The API's shape (`/api/v1/events`), without its pages.
        Ok(Reply::Events { events }) if json => {
            print_json(&serde_json::json!({ "events": events }))
        }
        Ok(Reply::Events { events }) => {
            for e in events {
                println!(
                    "{}  {:<30} {}",
                    crate::notify::iso8601_local(e.time),
                    e.entry.state.label(),
                    e.entry.text
                );
            }
            0
        }
        Ok(Reply::Refused { message }) => fail(&message),
        Ok(other) => fail(&format!("unexpected reply {other:?}")),
        Err(e) => fail(&e),
    }
}

/// `hamon notify test [--channel C]`: one line per receiver; non-zero when any failed.
pub fn notify_test(cfg: Option<&Path>, channel: Option<&str>) -> i32 {
    let req = Request::NotifyTest {
        channel: channel.map(str::to_string),
    };
    finish(call(cfg, req, Some(Duration::from_secs(90))))
}

fn ask(question: &str) -> bool {
    print!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn remove(cfg: Option<&Path>, args: &[&str]) -> i32 {
    let yes = args.contains(&"--yes");
    let mut purge = args.contains(&"--purge");
    if let Some(bad) = args.iter().find(|a| !matches!(**a, "--yes" | "--purge")) {
        return fail(&format!("unknown option {bad}"));
    }
    if !yes {
        if !ask("Remove the HA configuration?") {
            println!("Nothing removed.");
            return 1;
        }
        purge = purge || ask("Also remove the HA data from both the primary and the secondary?");
    }
    finish(call(cfg, Request::Remove { purge }, None))
}

/// Read a secret: from `file`, from stdin when it is not a terminal, or from
/// a prompt with echo off.
fn read_secret(file: Option<&str>, prompt: &str) -> Result<String, String> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
        return Ok(text.lines().next().unwrap_or("").to_string());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let key = with_echo_off(|| {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map(|_| line)
    })
    .map_err(|e| e.to_string())?;
    eprintln!();
    Ok(key.trim_end_matches(['\r', '\n']).to_string())
}

fn with_echo_off<T>(f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    // SAFETY: termios is plain data; tcgetattr fills it for fd 0, which is a
    // terminal here (checked by the caller).
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a termios for the duration of the call.
    if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
        return f();
    }
    let saved = t;
    t.c_lflag &= !libc::ECHO;
    // SAFETY: valid pointer to an initialised termios.
    unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
    let r = f();
    // SAFETY: restores the attributes read above.
    unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
    r
}

fn authkey(cfg_path: Option<&Path>, args: &[&str]) -> i32 {
    let file = match args {
        [] => None,
        ["--file", f] => Some(*f),
        [f] if f.starts_with("--file=") => f.strip_prefix("--file="),
        [k] if !k.starts_with('-') => {
            // Whatever was typed is already in the shell's history and was
            // visible in /proc while this ran: say so, and keep nothing.
            return fail(
                "the key is never taken from the command line (it shows in `ps` and in the \
                 shell's history): type it at the prompt, pipe it on stdin, or use --file FILE; \
                 nothing was changed",
            );
        }
        _ => return fail("usage: hamon ha authkey [--file FILE]  (else stdin or a prompt)"),
    };
    let key = match read_secret(file, "New authentication key: ") {
        Ok(k) => k,
        Err(e) => return fail(&e),
    };
    if let Err(rule) = crate::peer::auth::check_password_standard(&key) {
        return fail(&format!("key refused: {rule}"));
    }
    let cfg = match load(cfg_path) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let req = Request::AuthKey {
        key: Secret::new(key.clone()),
    };
    match control::call(&cfg.socket_path(), &req, Some(Duration::from_secs(10))) {
        Err(control::ControlError::NotRunning(_)) => {
            // The agent is not running: write the key where it will find it.
            match crate::store::Store::open(&cfg.node.state_dir).and_then(|s| s.save_authkey(&key))
            {
                Ok(()) => {
                    println!("authentication key set (the agent is not running)");
                    0
                }
                Err(e) => fail(&format!("saving the key: {e}")),
            }
        }
        other => finish(other.map_err(|e| e.to_string())),
    }
}

fn register(cfg: Option<&Path>, args: &[&str]) -> i32 {
    let mut secondary = None;
    let mut failover_type = None;
    let mut vips = Vec::new();
    let mut emails = Vec::new();
    let mut keyfile = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .map(|s| s.to_string())
                .ok_or(format!("{a} needs a value"))
        };
        let r = match *a {
            "--secondary" => value().map(|v| secondary = Some(v)),
            "--failover-type" => value().and_then(|v| {
                FailoverType::parse(&v)
                    .map(|t| failover_type = Some(t))
                    .ok_or(format!("--failover-type is manual or automatic, not {v:?}"))
            }),
            "--vip" => value().map(|v| vips.push(v)),
            "--email" => value().map(|v| {
                emails.extend(
                    v.split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty()),
                )
            }),
            "--authkey-file" => value().map(|v| keyfile = Some(v)),
            other => Err(format!("unknown option {other}")),
        };
        if let Err(e) = r {
            return fail(&e);
        }
    }
    let (Some(secondary), Some(failover_type)) = (secondary, failover_type) else {
        return fail(
            "usage: hamon ha register --secondary HOST[:PORT] --failover-type manual|automatic",
        );
    };
    if vips.len() > 2 {
        return fail("--vip may be given at most twice (one IPv4, one IPv6)");
    }
    let config = match load(cfg) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let default_port = config.health_monitor.port;
    let with_port = if secondary.parse::<std::net::IpAddr>().is_ok() || !secondary.contains(':') {
        format!("{}:{default_port}", bracket(&secondary))
    } else {
        secondary.clone()
    };
    let addr = match with_port.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        _ => return fail(&format!("cannot resolve secondary {secondary:?}")),
    };
    let key = match read_secret(keyfile.as_deref(), "Secondary's authentication key: ") {
        Ok(k) if !k.is_empty() => k,
        Ok(_) => return fail("an authentication key is required"),
        Err(e) => return fail(&e),
    };
    let req = Request::Register {
        secondary_address: addr.ip().to_string(),
        secondary_hm_port: addr.port(),
        failover_type,
        vips,
        emails,
        key: Secret::new(key),
    };
    finish(control::call(&config.socket_path(), &req, None).map_err(|e| e.to_string()))
}

/// `hamon ha set`'s options as a settings edit (checked against the current settings
/// by the agent).
fn set_args(args: &[&str]) -> Result<control::SettingsEdit, String> {
    let mut edit = control::SettingsEdit::default();
    let mut no_email = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .map(|s| s.to_string())
                .ok_or(format!("{a} needs a value"))
        };
        match *a {
            "--failover-type" => {
                let v = value()?;
                let t = FailoverType::parse(&v)
                    .ok_or(format!("--failover-type is manual or automatic, not {v:?}"))?;
                edit.failover_type = Some(t);
            }
            "--email" => {
                let v = value()?;
                edit.emails.get_or_insert_with(Vec::new).extend(
                    v.split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty()),
                );
            }
            "--no-email" => no_email = true,
            "--vip" => edit.vips.get_or_insert_with(Vec::new).push(value()?),
            "--add-vip" => edit.add_vips.push(value()?),
            "--remove-vip" => edit.remove_vips.push(value()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if no_email {
        if edit.emails.is_some() {
            return Err("--email and --no-email cannot be combined".into());
        }
        edit.emails = Some(Vec::new());
    }
    if edit.vips.is_some() && !(edit.add_vips.is_empty() && edit.remove_vips.is_empty()) {
        return Err(
            "--vip replaces the whole VIP list and cannot be combined with --add-vip \
                    or --remove-vip"
                .into(),
        );
    }
    if edit.vips.as_ref().is_some_and(|v| v.len() > 2) {
        return Err("--vip may be given at most twice (one IPv4, one IPv6)".into());
    }
    if edit.is_empty() {
        return Err("nothing to change: usage: hamon ha set [--failover-type \
                    manual|automatic] [--email a@x,b@y | --no-email] [--vip ADDR/PREFIX]... \
                    [--add-vip ADDR/PREFIX]... [--remove-vip ADDR/PREFIX]..."
            .into());
    }
    Ok(edit)
}

/// `hamon ha set`: both servers take the new settings, or neither does.
fn set(cfg: Option<&Path>, args: &[&str]) -> i32 {
    match set_args(args) {
        Ok(edit) => finish(call(cfg, Request::Settings { edit }, None)),
        Err(e) => fail(&e),
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `hamon ha token`: the JSON API's bearer token, derived from this
/// server's pair secret (root-only: it reads the secret).
fn token(cfg_path: Option<&Path>) -> i32 {
    let cfg = match load(cfg_path) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let store = crate::store::Store::at(&cfg.node.state_dir);
    let registered = matches!(store.load_state(), Ok(Some(p)) if p.registration.is_some());
    match store.working_keys(registered, false) {
        Ok(Some(keys)) => {
            println!("{}", crate::web::ui::session::api_token(&keys));
            0
        }
        Ok(None) if store.load_authkey().ok().flatten().is_some() => {
            fail("no token yet: the agent makes this server's secret when it starts")
        }
        Ok(None) => fail("no authentication key is set (hamon ha authkey)"),
        Err(e) => fail(&format!("reading the secret: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_options_become_an_edit() {
        let e = set_args(&[
            "--failover-type",
            "automatic",
            "--email",
            "a@example.com,b@example.com",
            "--add-vip",
            "2001:db8::10/64",
            "--remove-vip",
            "192.0.2.10/24",
        ]);
        let Ok(e) = e else { panic!("{e:?}") };
        assert_eq!(e.failover_type, Some(FailoverType::Automatic));
        assert_eq!(
            e.emails,
            Some(vec!["a@example.com".into(), "b@example.com".into()])
        );
        assert_eq!(e.add_vips, vec!["2001:db8::10/64".to_string()]);
        assert_eq!(e.remove_vips, vec!["192.0.2.10/24".to_string()]);
        assert_eq!(e.vips, None);
        let Ok(none) = set_args(&["--no-email"]) else {
            panic!("--no-email refused")
        };
        assert_eq!(none.emails, Some(vec![]));
    }

    #[test]
    fn set_refuses_what_registration_would_not_take() {
        for (args, why) in [
            (&[][..], "nothing to change"),
            (
                &["--vip", "192.0.2.1/24", "--add-vip", "2001:db8::1/64"][..],
                "cannot be combined",
            ),
            (
                &["--email", "a@example.com", "--no-email"][..],
                "cannot be combined",
            ),
            (&["--failover-type", "sometimes"][..], "manual or automatic"),
            (&["--vip"][..], "needs a value"),
            (&["--frobnicate"][..], "unknown option"),
        ] {
            match set_args(args) {
                Err(e) => assert!(e.contains(why), "{args:?}: {e}"),
                Ok(e) => panic!("{args:?} accepted as {e:?}"),
            }
        }
        assert!(HA_USAGE.contains(
            "set [--failover-type manual|automatic] [--email a@x,b@y | --no-email] \
             [--vip ADDR/PREFIX]... [--add-vip ADDR/PREFIX]... [--remove-vip ADDR/PREFIX]..."
        ));
    }
}
