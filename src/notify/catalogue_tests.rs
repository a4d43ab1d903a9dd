use super::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// ----- the kinds the source actually journals ---------------------------------

/// Directories scanned for journal kinds: `$HAMON_EVENT_SOURCES` when set,
/// else this crate's `src/` (and `testdata/src/`, a copy of the agent's
/// sources, while the catalogue lives in a scratch crate).
fn source_roots() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("HAMON_EVENT_SOURCES") {
        return vec![PathBuf::from(dir)];
    }
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    [base.join("src"), base.join("testdata").join("src")]
        .into_iter()
        .filter(|p| p.is_dir())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// How the source reports a kind: `Some("Error")` for a literal
/// `Severity::Error` next to it, `None` when the severity is computed.
type Seen = BTreeMap<String, BTreeSet<Option<String>>>;

fn is_kind(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The severity written right after a kind literal: `, Severity::X`.
fn severity_after(rest: &str) -> Option<String> {
    let rest = rest.trim_start().strip_prefix(',')?.trim_start();
    rest.strip_prefix("Severity::").map(ident_at)
}

/// Kinds in one file's non-test code, found three ways (no regexes):
/// `journal("kind"` and `observe("kind"` (whitespace and newlines allowed
/// after the parenthesis), and `"kind", Severity::X` anywhere, which catches
/// kinds chosen in a `match` and passed on in a variable (the service
/// events in agent.rs).
fn scan(text: &str, seen: &mut Seen) {
    let code = match text.find("mod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    for needle in ["journal(", "observe("] {
        for (i, _) in code.match_indices(needle) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue; // read_journal(, append_journal(
            }
            let Some(rest) = code[i + needle.len()..].trim_start().strip_prefix('"') else {
                continue; // a variable: the `"kind", Severity::` scan sees its source
            };
            let Some(end) = rest.find('"') else { continue };
            let kind = &rest[..end];
            seen.entry(kind.to_string())
                .or_default()
                .insert(severity_after(&rest[end + 1..]));
        }
    }
    for (i, _) in code.match_indices("Severity::") {
        let before = code[..i].trim_end();
        let Some(before) = before.strip_suffix(',') else {
            continue;
        };
        let Some(before) = before.trim_end().strip_suffix('"') else {
            continue;
        };
        let Some(start) = before.rfind('"') else {
            continue;
        };
        let kind = &before[start + 1..];
        if is_kind(kind) {
            let sev = ident_at(&code[i + "Severity::".len()..]);
            seen.entry(kind.to_string()).or_default().insert(Some(sev));
        }
    }
}

fn emitted() -> Seen {
    let roots = source_roots();
    let mut files = Vec::new();
    for r in &roots {
        rust_files(r, &mut files);
    }
    let mut seen = Seen::new();
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("catalogue") || name.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        scan(&text, &mut seen);
    }
    // Guard against scanning the wrong tree: these come from the core, a
    // watcher and the service tuples in agent.rs.
    for k in ["state_changed", "peer_lost", "disk", "service_started"] {
        assert!(
            seen.contains_key(k),
            "{k} not found under {roots:?}: wrong source directory?"
        );
    }
    seen
}

#[test]
fn every_kind_the_source_journals_is_catalogued() {
    let seen = emitted();
    let missing: Vec<&String> = seen.keys().filter(|k| find(k).is_none()).collect();
    assert!(
        missing.is_empty(),
        "journal kinds missing from the catalogue (src/notify/catalogue.rs, docs/events.md): \
         {missing:?}"
    );
    for k in seen.keys() {
        assert!(is_kind(k), "journal kind {k:?} is not snake_case");
    }
}

#[test]
fn every_catalogued_kind_is_still_journaled() {
    let seen = emitted();
    let stale: Vec<&str> = EVENTS
        .iter()
        .map(|e| e.id)
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        stale.is_empty(),
        "catalogued kinds nothing journals any more (move them to RETIRED): {stale:?}"
    );
}

#[test]
fn catalogue_severities_agree_with_the_source() {
    for (kind, levels) in emitted() {
        let e = lookup(&kind);
        if levels.len() > 1 || levels.contains(&None) {
            assert!(
                e.follows_core,
                "{kind} is reported at varying levels: set follows_core"
            );
        }
        if e.follows_core {
            continue;
        }
        for level in levels.iter().flatten() {
            match level.as_str() {
                "Error" => assert!(rank(e.severity) >= 3, "{kind}: core Error, catalogue lower"),
                "Warning" => assert!(
                    rank(e.severity) >= 2,
                    "{kind}: core Warning, catalogue lower"
                ),
                "Info" => {}
                other => panic!("{kind}: unexpected severity {other}"),
            }
        }
    }
}

#[test]
fn the_scanner_finds_each_pattern() {
    let mut seen = Seen::new();
    scan(
        "self.journal(\n    \"a_kind\",\n    Severity::Error,\n    \"text\",\n);\n\
         r.observe(\"b_kind\", sev, text);\n\
         let x = (\"c_kind\", Severity::Info, format!(\"{n}\"));\n\
         self.store.read_journal(\"nope\");\n\
         log.write(Severity::Info, \"not a kind\");\n\
         mod tests {\n r.observe(\"test_only\", Severity::Info, \"\"); }\n",
        &mut seen,
    );
    let kinds: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(kinds, ["a_kind", "b_kind", "c_kind"]);
    assert_eq!(seen["a_kind"], BTreeSet::from([Some("Error".to_string())]));
    assert_eq!(seen["b_kind"], BTreeSet::from([None]));
}

// ----- the catalogue itself ---------------------------------------------------

#[test]
fn ids_and_numbers_are_unique_and_never_reused() {
    let mut ids = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for e in EVENTS.iter().chain([&UNKNOWN]) {
        assert!(is_kind(e.id), "{} is not snake_case", e.id);
        assert!(ids.insert(e.id), "id {} twice", e.id);
        assert!(numbers.insert(e.number), "number {} twice", e.number);
        assert!(
            (100..1000).contains(&e.number),
            "{}: number out of range",
            e.id
        );
    }
    for (n, id) in RETIRED {
        assert!(!numbers.contains(n), "retired number {n} ({id}) reused");
        assert!(!ids.contains(id), "retired kind {id} back in the catalogue");
    }
}

#[test]
fn numbers_sit_in_their_range() {
    let range = |id: &str| -> u32 {
        match id {
            "state_changed" | "registered" | "identity_changed" | "split_brain" | "duty_failed" => {
                1
            }
            id if id.starts_with("settings") => 1,
            id if id.starts_with("failover") || id.starts_with("failback_complete") => 2,
            id if id.starts_with("fencing") => 2,
            id if id.starts_with("peer") || id.starts_with("heartbeat") => 3,
            "primary_alone" => 3,
            id if id.starts_with("witness") || id.starts_with("self_fence") => 3,
            id if id.starts_with("arbiter") => 3,
            id if id.starts_with("version") => 3,
            id if id.starts_with("service") => 4,
            "disk" => 5,
            id if id.starts_with("nic") => 6,
            id if id.starts_with("database") || id.starts_with("replica") => 7,
            id if id.ends_with("copy") || id.starts_with("copy") || id == "data_gap" => 8,
            id if id.starts_with("sync") => 8,
            id if id.starts_with("agent") || id == "login_failures" || id == "notify_test" => 9,
            other => panic!("{other}: which range?"),
        }
    };
    for e in EVENTS {
        assert_eq!(
            e.number / 100,
            range(e.id),
            "{} is numbered {}",
            e.id,
            e.number
        );
    }
}

#[test]
fn templates_hold_the_text_once() {
    for e in EVENTS.iter().chain([&UNKNOWN]) {
        assert_eq!(e.template.matches("{text}").count(), 1, "{}", e.id);
        assert!(
            !e.meaning.is_empty() && !e.meaning.contains('|'),
            "{}",
            e.id
        );
    }
    let e = lookup("failover_complete");
    assert_eq!(
        e.message("Completed failover from a to b {text}"),
        "Failover complete: Completed failover from a to b {text}"
    );
}

#[test]
fn every_alarm_has_a_way_to_end() {
    for e in EVENTS {
        let alarm_like = matches!(e.category, Category::Alarm | Category::PeerLost);
        assert_eq!(
            alarm_like,
            e.raises_alarm(),
            "{}: category and clear disagree",
            e.id
        );
        if e.raises_alarm() {
            assert!(
                rank(e.severity) >= rank(NoticeSeverity::Warning),
                "{}",
                e.id
            );
        }
        match e.clear {
            Clear::By(c) => {
                let c = find(c).unwrap_or_else(|| panic!("{} cleared by unknown {c}", e.id));
                assert_eq!(
                    c.severity,
                    NoticeSeverity::Cleared,
                    "{} clears {}",
                    c.id,
                    e.id
                );
                let expect = match e.category {
                    Category::PeerLost => Category::PeerFound,
                    _ => Category::AlarmCleared,
                };
                assert_eq!(c.category, expect, "{} clears {}", c.id, e.id);
            }
            Clear::Itself => {
                assert!(
                    e.follows_core,
                    "{}: only a levelled kind clears itself",
                    e.id
                );
                let r = Routing::default().resolve(e.id, Severity::Info);
                assert_eq!(r.severity, NoticeSeverity::Cleared);
                assert_eq!(r.category, Category::AlarmCleared);
            }
            Clear::Operator | Clear::NotAlarm => {}
        }
    }
    // Every clear ends something; a hamonAlarmCleared ends exactly one alarm,
    // whose number it carries.
    for e in EVENTS {
        if e.severity == NoticeSeverity::Cleared {
            let ends = clears(e.id);
            assert!(!ends.is_empty(), "{} clears nothing", e.id);
            if e.category == Category::AlarmCleared {
                assert_eq!(ends.len(), 1, "{}", e.id);
                assert_eq!(e.snmp_event_id(), ends[0].number);
            } else {
                assert_eq!(e.snmp_event_id(), e.number);
            }
        }
    }
    // The alarms nothing automatic ends, on purpose.
    let manual: Vec<&str> = EVENTS
        .iter()
        .filter(|e| e.clear == Clear::Operator)
        .map(|e| e.id)
        .collect();
    assert_eq!(
        manual,
        [
            "identity_changed",
            "split_brain",
            "duty_failed",
            "failover_withheld",
            "fencing_failed",
            "peer_not_paired",
            "primary_alone",
            "witness_check",
            "service_failed",
            "service_error",
            "nic_watch",
            "agent_secret_failed",
        ]
    );
}

#[test]
fn clear_pairs() {
    assert_eq!(
        lookup("database_unreachable").clear,
        Clear::By("database_recovered")
    );
    assert_eq!(lookup("nic_failed").clear, Clear::By("nic_recovered"));
    assert_eq!(lookup("peer_lost").clear, Clear::By("peer_found"));
    let ids: Vec<&str> = clears("peer_found").iter().map(|e| e.id).collect();
    assert_eq!(ids, ["peer_lost", "heartbeat_path_broken"]);
    assert_eq!(lookup("database_recovered").snmp_event_id(), 701);
    assert_eq!(lookup("peer_found").snmp_event_id(), 302);
}

#[test]
fn unknown_kinds_get_the_generic_entry() {
    let e = lookup("something_new");
    assert_eq!(e.id, "unknown");
    assert_eq!(e.number, 999);
    assert!(find("something_new").is_none());
    let r = Routing::default();
    let x = r.resolve("something_new", Severity::Error);
    assert_eq!(
        (x.severity, x.category),
        (NoticeSeverity::Minor, Category::Alarm)
    );
    let x = r.resolve("something_new", Severity::Warning);
    assert_eq!(
        (x.severity, x.category),
        (NoticeSeverity::Warning, Category::Alarm)
    );
    let x = r.resolve("something_new", Severity::Info);
    assert_eq!(
        (x.severity, x.category),
        (NoticeSeverity::Info, Category::StateChange)
    );
    assert_eq!(lookup("something_new").message("hello"), "hello");
    // Reaches mail and SNMP by default at error level.
    assert!(r.wants(Channel::Mail, "something_new", NoticeSeverity::Minor));
    assert!(r.wants(Channel::Snmp, "something_new", NoticeSeverity::Minor));
}

#[test]
fn categories_name_the_mib_notifications() {
    let names: Vec<&str> = Category::ALL.iter().map(|c| c.notification()).collect();
    assert_eq!(
        names,
        [
            "hamonStateChange",
            "hamonFailover",
            "hamonFailback",
            "hamonRegistration",
            "hamonPeerLost",
            "hamonPeerFound",
            "hamonAlarm",
            "hamonAlarmCleared"
        ]
    );
    for (i, c) in Category::ALL.iter().enumerate() {
        assert_eq!(c.arc() as usize, i + 1);
    }
}

#[test]
fn severity_names_round_trip() {
    for s in SEVERITIES {
        assert_eq!(parse_severity(s.as_str()), Some(s));
    }
    assert_eq!(parse_severity("Critical"), None);
    assert_eq!(parse_severity("error"), None);
    let mut ranks: Vec<u8> = SEVERITIES.iter().map(|s| rank(*s)).collect();
    ranks.dedup();
    assert_eq!(ranks, [5, 4, 3, 2, 1, 0]);
}

// ----- resolving and routing --------------------------------------------------

#[test]
fn levelled_kinds_follow_the_core() {
    let r = Routing::default();
    let disk = |s| {
        let x = r.resolve("disk", s);
        (x.severity, x.category, x.event_id)
    };
    assert_eq!(
        disk(Severity::Error),
        (NoticeSeverity::Major, Category::Alarm, 501)
    );
    assert_eq!(
        disk(Severity::Warning),
        (NoticeSeverity::Warning, Category::Alarm, 501)
    );
    assert_eq!(
        disk(Severity::Info),
        (NoticeSeverity::Cleared, Category::AlarmCleared, 501)
    );
    // nic_watch does not clear itself: an info line would be plain info.
    let x = r.resolve("nic_watch", Severity::Info);
    assert_eq!(
        (x.severity, x.category),
        (NoticeSeverity::Info, Category::StateChange)
    );
    // Fixed kinds ignore what the core says.
    let x = r.resolve("failover_complete", Severity::Info);
    assert_eq!(
        (x.severity, x.category, x.event_id),
        (NoticeSeverity::Warning, Category::Failover, 201)
    );
    let x = r.resolve("database_recovered", Severity::Info);
    assert_eq!(
        (x.severity, x.category, x.event_id),
        (NoticeSeverity::Cleared, Category::AlarmCleared, 701)
    );
}

#[test]
fn overrides_change_the_severity() {
    let mut raw = RawRouting::default();
    raw.severity.insert("disk".into(), "critical".into());
    raw.severity.insert("service_exited".into(), "info".into());
    let r = validate(&raw).unwrap();
    assert_eq!(r.severity("disk"), NoticeSeverity::Critical);
    assert_eq!(
        r.resolve("disk", Severity::Error).severity,
        NoticeSeverity::Critical
    );
    assert_eq!(
        r.resolve("disk", Severity::Warning).severity,
        NoticeSeverity::Warning
    );
    assert_eq!(r.severity("service_exited"), NoticeSeverity::Info);
    assert!(!r.wants(
        Channel::Mail,
        "service_exited",
        r.severity("service_exited")
    ));
    // Lowering a levelled kind below warning lowers its warning level too,
    // and its clear follows it out of mail.
    let mut raw = RawRouting::default();
    raw.severity.insert("nic".into(), "info".into());
    let r = validate(&raw).unwrap();
    assert_eq!(
        r.resolve("nic", Severity::Warning).severity,
        NoticeSeverity::Info
    );
    assert!(!r.wants(Channel::Mail, "nic", NoticeSeverity::Cleared));
    assert!(r.wants(Channel::Syslog, "nic", NoticeSeverity::Cleared));
    // Unknown kinds can be given a severity as a group.
    let mut raw = RawRouting::default();
    raw.severity.insert("unknown".into(), "major".into());
    let r = validate(&raw).unwrap();
    assert_eq!(
        r.resolve("brand_new", Severity::Error).severity,
        NoticeSeverity::Major
    );
}

#[test]
fn default_routing() {
    let r = Routing::default();
    let sends = |c: Channel, kind: &str| {
        let s = r.resolve(kind, Severity::Error).severity;
        r.wants(c, kind, s)
    };
    // Syslog: everything.
    for e in EVENTS {
        assert!(sends(Channel::Syslog, e.id), "syslog drops {}", e.id);
    }
    // Mail: every state change and milestone, every warning or worse, the
    // clears of those, no service chatter.
    for k in [
        "state_changed",
        "registered",
        "failback_complete",
        "failover_complete",
        "peer_lost",
        "peer_found",
        "database_recovered",
        "heartbeats_missed",
        "service_exited",
        "split_brain",
    ] {
        assert!(sends(Channel::Mail, k), "mail drops {k}");
    }
    assert!(r.wants(Channel::Mail, "disk", NoticeSeverity::Cleared));
    for k in [
        "service_started",
        "service_stopped",
        "agent_started",
        "initial_copy",
    ] {
        assert!(!sends(Channel::Mail, k), "mail sends {k}");
    }
    // SNMP: everything but service and copy chatter.
    for e in EVENTS {
        let chatter = SNMP_DEFAULT_EXCLUDE.contains(&e.id);
        assert_eq!(sends(Channel::Snmp, e.id), !chatter, "snmp and {}", e.id);
    }
}

#[test]
fn exclude_wins_over_include_wins_over_severity() {
    let raw = RawRouting {
        mail: RawFilter {
            min_severity: Some("critical".into()),
            include: Some(vec!["service_started".into()]),
            exclude: Some(vec!["split_brain".into()]),
        },
        ..RawRouting::default()
    };
    let r = validate(&raw).unwrap();
    assert!(r.wants(Channel::Mail, "service_started", NoticeSeverity::Info));
    assert!(!r.wants(Channel::Mail, "split_brain", NoticeSeverity::Critical));
    assert!(r.wants(Channel::Mail, "primary_alone", NoticeSeverity::Critical));
    assert!(!r.wants(Channel::Mail, "peer_lost", NoticeSeverity::Major));
    // A key given replaces its default: state_changed is no longer included.
    assert!(!r.wants(Channel::Mail, "state_changed", NoticeSeverity::Info));
    // peer_found ends a major alarm: below a critical threshold.
    assert!(!r.wants(Channel::Mail, "peer_found", NoticeSeverity::Cleared));
    assert!(r.wants(Channel::Mail, "database_recovered", NoticeSeverity::Cleared));
    // Unknown kinds match the lists as `unknown`.
    let raw = RawRouting {
        snmp: RawFilter {
            exclude: Some(vec!["unknown".into()]),
            ..RawFilter::default()
        },
        ..RawRouting::default()
    };
    let r = validate(&raw).unwrap();
    assert!(!r.wants(Channel::Snmp, "brand_new", NoticeSeverity::Critical));
    assert!(r.wants(Channel::Snmp, "service_started", NoticeSeverity::Info));
}

fn err(raw: RawRouting) -> String {
    validate(&raw).unwrap_err()
}

#[test]
fn validation_names_the_problem() {
    let mut raw = RawRouting::default();
    raw.severity
        .insert("databse_unreachable".into(), "critical".into());
    assert_eq!(
        err(raw),
        "notify.severity.databse_unreachable: unknown event kind \"databse_unreachable\" \
         (did you mean \"database_unreachable\"?); the kinds are listed in docs/events.md"
    );

    let mut raw = RawRouting::default();
    raw.severity.insert("xyzzy".into(), "critical".into());
    assert_eq!(
        err(raw),
        "notify.severity.xyzzy: unknown event kind \"xyzzy\"; the kinds are listed in \
         docs/events.md"
    );

    let mut raw = RawRouting::default();
    raw.severity.insert("disk".into(), "urgent".into());
    assert_eq!(
        err(raw),
        "notify.severity.disk: unknown severity \"urgent\" (use one of critical, major, minor, \
         warning, info)"
    );

    let mut raw = RawRouting::default();
    raw.severity.insert("disk".into(), "cleared".into());
    assert!(err(raw).contains("\"cleared\" is only for events that end an alarm"));

    let mut raw = RawRouting::default();
    raw.severity.insert("peer_found".into(), "info".into());
    assert!(err(raw).starts_with("notify.severity.peer_found: peer_found ends an alarm"));

    let raw = RawRouting {
        snmp: RawFilter {
            min_severity: Some("cleared".into()),
            ..RawFilter::default()
        },
        ..RawRouting::default()
    };
    assert!(err(raw).starts_with("notify.snmp.min_severity: \"cleared\" is not a threshold"));

    let raw = RawRouting {
        syslog: RawFilter {
            min_severity: Some("Warning".into()),
            ..RawFilter::default()
        },
        ..RawRouting::default()
    };
    assert!(err(raw).starts_with("notify.syslog.min_severity: unknown severity \"Warning\""));

    let raw = RawRouting {
        mail: RawFilter {
            include: Some(vec!["peer_lots".into()]),
            ..RawFilter::default()
        },
        ..RawRouting::default()
    };
    assert!(err(raw).starts_with(
        "notify.mail.include: unknown event kind \"peer_lots\" (did you mean \"peer_lost\"?)"
    ));

    // The default include list meets the operator's exclude.
    let raw = RawRouting {
        mail: RawFilter {
            exclude: Some(vec!["state_changed".into()]),
            ..RawFilter::default()
        },
        ..RawRouting::default()
    };
    assert!(err(raw).starts_with("notify.mail: \"state_changed\" is both included and excluded"));

    assert_eq!(
        validate(&RawRouting::default()).unwrap(),
        Routing::default()
    );
}

// ----- docs/events.md ----------------------------------------------------------

fn docs() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join("events.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn clear_cell(e: &EventKind) -> String {
    match e.clear {
        Clear::NotAlarm => "".into(),
        Clear::By(c) => format!("`{c}`"),
        Clear::Itself => "itself (at ok)".into(),
        Clear::Operator => "operator".into(),
    }
}

/// The catalogue as the Markdown table docs/events.md carries.
fn table() -> String {
    let mut t = String::from(
        "| kind | number | SNMP notification | severity | cleared by | meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    for e in EVENTS {
        let sev = if e.follows_core {
            format!("{} (follows level)", e.severity.as_str())
        } else {
            e.severity.as_str().to_string()
        };
        t.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            e.id,
            e.number,
            e.category.notification(),
            sev,
            clear_cell(e),
            e.meaning.split_whitespace().collect::<Vec<_>>().join(" "),
        ));
    }
    t
}

#[test]
fn docs_table_matches_the_catalogue() {
    let t = table();
    assert!(
        docs().contains(&t),
        "docs/events.md is out of date; its table should read:\n\n{t}"
    );
}

fn strings(v: Option<&toml::Value>) -> Option<Vec<String>> {
    v.map(|v| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    })
}

fn raw_from_toml(t: &toml::Table) -> RawRouting {
    let empty = toml::Table::new();
    let notify = t.get("notify").and_then(|v| v.as_table()).unwrap_or(&empty);
    let filter = |name: &str| {
        let f = notify
            .get(name)
            .and_then(|v| v.as_table())
            .unwrap_or(&empty);
        RawFilter {
            min_severity: f
                .get("min_severity")
                .map(|v| v.as_str().unwrap().to_string()),
            include: strings(f.get("include")),
            exclude: strings(f.get("exclude")),
        }
    };
    RawRouting {
        severity: notify
            .get("severity")
            .and_then(|v| v.as_table())
            .unwrap_or(&empty)
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect(),
        mail: filter("mail"),
        syslog: filter("syslog"),
        snmp: filter("snmp"),
    }
}

#[test]
fn docs_examples_validate() {
    let d = docs();
    let mut blocks = 0;
    for part in d.split("```toml\n").skip(1) {
        let block = part.split("```").next().unwrap();
        let t: toml::Table = block.parse().unwrap_or_else(|e| panic!("{e}\n{block}"));
        validate(&raw_from_toml(&t)).unwrap_or_else(|e| panic!("{e}\n{block}"));
        blocks += 1;
    }
    assert!(
        blocks >= 2,
        "docs/events.md should show the defaults and an example"
    );
    // The block that spells out the defaults gives exactly the defaults.
    let defaults = d
        .split("```toml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let t: toml::Table = defaults.parse().unwrap();
    assert_eq!(validate(&raw_from_toml(&t)).unwrap(), Routing::default());
}
