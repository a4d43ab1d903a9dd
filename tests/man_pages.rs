//! The manual pages and the bash completion, kept in step with the program:
//!
//! - `man/hamon.8` and `man/hamon.toml.5` render with `man -l` and groff
//!   without a single warning (what lintian checks in the .deb);
//! - every command and option of `hamon --help` and `hamon ha --help` is in
//!   `man/hamon.8`;
//! - every key that `src/config/raw.rs` accepts has an entry under its
//!   section in `man/hamon.toml.5`, and shows up in `docs/hamon.example.toml`;
//! - `image/hamon.bash-completion` completes the commands and options of the
//!   help, and the values of the options that take a known set.
//!
//! Needs man-db (man, lexgrog), groff-base (groff) and bash; nothing else,
//! and no privileges.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const PAGES: [&str; 2] = ["man/hamon.8", "man/hamon.toml.5"];

/// Commands documented before `--help` lists them (being added to the CLI):
/// the man page and the completion must already have them.
const UPCOMING: &[(&[&str], &[&str])] = &[(
    &["ha", "set"],
    &[
        "--failover-type",
        "--email",
        "--no-email",
        "--vip",
        "--add-vip",
        "--remove-vip",
    ],
)];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ------------------------------------------------------------- rendering ----

/// `man -l PAGE` as a reader sees it at 80 columns, plain text; asserts it
/// renders without a word on stderr.
fn render(page: &str) -> String {
    let out = run(Command::new("man")
        .arg("-l")
        .arg(repo().join(page))
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .env_remove("MANROFFSEQ")
        .env_remove("MANOPT"));
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "man -l {page}: {}\n{stderr}",
        out.status
    );
    assert!(stderr.is_empty(), "man -l {page} warned:\n{stderr}");
    text(&out.stdout)
}

/// Rendered text on one line: every run of white space one space, and the
/// typographic dashes and quotes a UTF-8 terminal gets as ASCII.
fn flatten(rendered: &str) -> String {
    let ascii: String = rendered
        .chars()
        .map(|c| match c {
            '\u{2010}' | '\u{2011}' | '\u{2212}' => '-',
            '\u{2018}' | '\u{2019}' => '\'',
            '\u{201c}' | '\u{201d}' => '"',
            c => c,
        })
        .collect();
    ascii.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `needle` is in `hay` as whole words: not glued to a letter,
/// digit, '-' or '_' on either side.
fn has_phrase(hay: &str, needle: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

#[test]
fn man_pages_render_cleanly() {
    let mut problems = Vec::new();
    for page in PAGES {
        let path = repo().join(page);
        // The plain rendering (asserts an empty stderr itself).
        let rendered = render(page);
        assert!(rendered.contains("NAME"), "{page}: {rendered}");
        // groff at its most talkative, tables included.
        let out = run(Command::new("groff")
            .args(["-man", "-ww", "-z", "-t"])
            .arg(&path));
        if !out.status.success() || !out.stderr.is_empty() {
            problems.push(format!(
                "groff -man -ww -z -t {page}:\n{}",
                text(&out.stderr)
            ));
        }
        // What lintian runs on a packaged page (manpage-has-errors-from-man).
        let out = run(Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env_remove("MANROFFSEQ"));
        if !out.status.success() || !out.stderr.is_empty() {
            problems.push(format!("man --warnings {page}:\n{}", text(&out.stderr)));
        }
        // The NAME line that mandb and apropos index (lintian: bad-whatis-entry).
        let out = run(Command::new("lexgrog").arg(&path));
        let whatis = text(&out.stdout);
        let name = page
            .trim_start_matches("man/")
            .rsplit_once('.')
            .map_or(page, |(n, _)| n);
        if !out.status.success() || !whatis.contains(&format!("\"{name} - ")) {
            problems.push(format!(
                "lexgrog {page}: no whatis entry for {name}: {whatis}{}",
                text(&out.stderr)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// -------------------------------------------------------------- the help ----

/// One command line of a help text: its command words (`ha register`) and
/// the options of its synopsis.
#[derive(Debug)]
struct Entry {
    words: Vec<String>,
    options: Vec<String>,
}

fn help(args: &[&str]) -> String {
    let out = run(Command::new(env!("CARGO_BIN_EXE_hamon"))
        .args(args)
        .env_remove("HAMON_CONFIG"));
    assert!(out.status.success(), "hamon {args:?}: {}", out.status);
    let help = text(&out.stdout);
    assert!(help.contains("Usage"), "hamon {args:?}:\n{help}");
    help
}

/// Every `--option` in `text`.
fn options_in(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 2 < b.len() {
        let starts = b[i] == b'-'
            && b[i + 1] == b'-'
            && b[i + 2].is_ascii_lowercase()
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-'));
        if !starts {
            i += 1;
            continue;
        }
        let mut end = i + 2;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'-')
        {
            end += 1;
        }
        found.push(text[i..end].trim_end_matches('-').to_string());
        i = end;
    }
    found
}

/// Number of leading spaces.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The synopsis part of a help line: up to the gap before its description.
fn synopsis(line: &str) -> &str {
    let body = line.trim_start();
    body.find("  ").map_or(body, |gap| &body[..gap]).trim_end()
}

/// The entries of a help text. An entry starts on a line indented by two
/// spaces; lines indented less than the description column continue its
/// synopsis; `prefix` is put before its command words (`ha` for `hamon ha
/// --help`).
fn entries(help: &str, prefix: &[&str]) -> Vec<Entry> {
    let column = help
        .lines()
        .filter(|l| indent(l) == 2)
        .find_map(|l| {
            let body = &l[2..];
            let gap = body.find("  ")?;
            let rest = &body[gap..];
            Some(2 + gap + indent(rest))
        })
        .expect("no command line with a description in the help");
    let mut out: Vec<Entry> = Vec::new();
    let mut open = false;
    for line in help.lines() {
        let n = indent(line);
        if line.trim().is_empty() || n == 0 {
            open = false;
        } else if n == 2 {
            let syn = synopsis(line);
            let tokens: Vec<&str> = syn.split_whitespace().collect();
            let tokens = match tokens.first() {
                Some(&"hamon") => &tokens[1..],
                _ => &tokens[..],
            };
            let mut words: Vec<String> = Vec::new();
            for t in tokens {
                let command_word = t.starts_with(|c: char| c.is_ascii_lowercase())
                    && t.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !command_word {
                    break;
                }
                words.push(t.to_string());
            }
            if !words.is_empty() {
                words.splice(0..0, prefix.iter().map(|p| p.to_string()));
            }
            out.push(Entry {
                words,
                options: options_in(syn),
            });
            open = true;
        } else if n < column && open {
            if let Some(last) = out.last_mut() {
                last.options.extend(options_in(synopsis(line)));
            }
        }
    }
    assert!(
        out.len() >= 5,
        "too few commands found in the help:\n{help}"
    );
    out
}

fn all_entries() -> (String, Vec<Entry>) {
    let main = help(&["--help"]);
    let ha = help(&["ha", "--help"]);
    let mut list = entries(&main, &[]);
    list.extend(entries(&ha, &["ha"]));
    (format!("{main}\n{ha}"), list)
}

#[test]
fn hamon_8_documents_every_command_and_option_of_the_help() {
    let (help_text, list) = all_entries();
    let page = flatten(&render("man/hamon.8"));
    let mut missing: BTreeSet<String> = BTreeSet::new();
    let mut commands = 0;
    for e in &list {
        if !e.words.is_empty() {
            commands += 1;
            let phrase = format!("hamon {}", e.words.join(" "));
            if !has_phrase(&page, &phrase) {
                missing.insert(phrase);
            }
        }
    }
    for (words, options) in UPCOMING {
        let phrase = format!("hamon {}", words.join(" "));
        if !has_phrase(&page, &phrase) {
            missing.insert(phrase);
        }
        for o in *options {
            if !has_phrase(&page, o) {
                missing.insert(o.to_string());
            }
        }
    }
    let options: BTreeSet<String> = options_in(&help_text).into_iter().collect();
    for o in &options {
        if !has_phrase(&page, o) {
            missing.insert(o.clone());
        }
    }
    assert!(
        commands >= 15 && options.len() >= 15,
        "the help parsed into {commands} commands and {} options: {list:?}",
        options.len()
    );
    assert!(
        missing.is_empty(),
        "man/hamon.8 does not mention: {}",
        missing.into_iter().collect::<Vec<_>>().join(", ")
    );
}

// ------------------------------------------------------- the config keys ----

/// The fields of every `Raw*` struct of raw.rs: (key as written in TOML, type).
fn raw_structs(src: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut structs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut attrs: Vec<String> = Vec::new();
    for (n, line) in src.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("//") || t.is_empty() {
            continue;
        }
        if t.starts_with("#[") {
            attrs.push(t.to_string());
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub struct ") {
            let name = rest
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .next();
            let name = name.unwrap_or_default().to_string();
            assert!(
                t.ends_with('{'),
                "raw.rs:{}: a struct this test cannot read: {t}",
                n + 1
            );
            assert!(
                !attrs.iter().any(|a| a.contains("rename_all")),
                "raw.rs:{}: rename_all on {name}: teach this test about it",
                n + 1
            );
            structs.insert(name.clone(), Vec::new());
            current = Some(name);
            attrs.clear();
            continue;
        }
        let Some(name) = current.clone() else {
            attrs.clear();
            continue;
        };
        if t == "}" {
            current = None;
            attrs.clear();
            continue;
        }
        let field = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        let (key, ty) = field
            .split_once(':')
            .filter(|(k, _)| k.chars().all(|c| c.is_alphanumeric() || c == '_'))
            .unwrap_or_else(|| panic!("raw.rs:{}: cannot read field: {t}", n + 1));
        assert!(
            ty.trim_end().ends_with(','),
            "raw.rs:{}: a field over several lines: {t}",
            n + 1
        );
        assert!(
            !attrs.iter().any(|a| a.contains("flatten")),
            "raw.rs:{}: serde(flatten): teach this test about it",
            n + 1
        );
        let renamed = attrs.iter().find_map(|a| {
            let at = a.find("rename = \"")? + "rename = \"".len();
            a[at..].split('"').next().map(str::to_string)
        });
        let ty = ty.trim().trim_end_matches(',').to_string();
        structs
            .entry(name)
            .or_default()
            .push((renamed.unwrap_or_else(|| key.to_string()), ty));
        attrs.clear();
    }
    structs
}

/// The `Raw*` struct a field's type holds (`Option<Vec<RawX>>` -> `RawX`).
fn nested<'a>(ty: &str, structs: &'a BTreeMap<String, Vec<(String, String)>>) -> Option<&'a str> {
    ty.split(|c: char| !c.is_alphanumeric() && c != '_')
        .find_map(|word| structs.get_key_value(word).map(|(k, _)| k.as_str()))
}

/// Every (section, key) of the file, from `RawConfig` down: a field holding
/// another `Raw*` struct is a section (`database.postgres`), any other field
/// a key of its section.
fn config_keys() -> Vec<(String, String)> {
    let structs = raw_structs(&read("src/config/raw.rs"));
    assert!(structs.contains_key("RawConfig"), "no RawConfig in raw.rs");
    fn walk(
        structs: &BTreeMap<String, Vec<(String, String)>>,
        name: &str,
        section: &str,
        out: &mut Vec<(String, String)>,
    ) {
        for (key, ty) in &structs[name] {
            match nested(ty, structs) {
                Some(inner) if section.is_empty() => walk(structs, inner, key, out),
                Some(inner) => walk(structs, inner, &format!("{section}.{key}"), out),
                None => {
                    assert!(!section.is_empty(), "RawConfig.{key} is not a section");
                    out.push((section.to_string(), key.clone()));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&structs, "RawConfig", "", &mut out);
    assert!(out.len() > 100, "too few keys read from raw.rs: {out:?}");
    out
}

/// A roff line as plain text: no request name, font changes or quotes, and
/// `\-` a plain '-'.
fn unroff(line: &str) -> String {
    let line = if line.starts_with('.') {
        line.split_once(char::is_whitespace)
            .map_or("", |(_, rest)| rest)
    } else {
        line
    };
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            if c != '"' {
                out.push(c);
            }
            continue;
        }
        match chars.next() {
            Some('f') => match chars.next() {
                Some('(') => {
                    chars.next();
                    chars.next();
                }
                Some('[') => {
                    for d in chars.by_ref() {
                        if d == ']' {
                            break;
                        }
                    }
                }
                _ => {}
            },
            Some('(') => {
                let name: String = [chars.next(), chars.next()].into_iter().flatten().collect();
                out.push(if name == "dq" { '"' } else { '?' });
            }
            Some('-') => out.push('-'),
            Some(' ') | Some('~') => out.push(' '),
            Some('&') | Some('%') => {}
            Some('e') | Some('\\') => out.push('\\'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The keys that man/hamon.toml.5 documents, by section: the first word of
/// every `.TP` tag under a `.SS "[section]"` (or `[[section]]`) heading.
fn documented_keys(src: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut lines = src.lines();
    while let Some(line) = lines.next() {
        if line.starts_with(".SH") {
            section = None;
        } else if line.starts_with(".SS") {
            let heading = unroff(line);
            let first = heading.split_whitespace().next().unwrap_or_default();
            section = first
                .starts_with('[')
                .then(|| first.trim_matches(['[', ']']).to_string());
            if let Some(s) = &section {
                out.entry(s.clone()).or_default();
            }
        } else if line.trim_end() == ".TP" {
            let tag = unroff(lines.next().unwrap_or_default());
            if let (Some(s), Some(key)) = (&section, tag.split_whitespace().next()) {
                out.entry(s.clone()).or_default().insert(key.to_string());
            }
        }
    }
    out
}

/// A line of the example with its comment marks taken off the front.
fn uncomment(line: &str) -> &str {
    let mut t = line.trim();
    while let Some(rest) = t.strip_prefix('#') {
        t = rest.trim();
    }
    t
}

/// The table header a line of the example is, commented or not:
/// `[node]`, `# [[service]]  # ...` -> `node`, `service`.
fn header(line: &str) -> Option<String> {
    let t = uncomment(line);
    let t = t.split('#').next().unwrap_or_default().trim();
    let name = t.strip_prefix('[')?.strip_suffix(']')?;
    let name = name.strip_prefix('[').unwrap_or(name);
    let name = name.strip_suffix(']').unwrap_or(name);
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    ok.then(|| name.to_string())
}

/// Whether `line` assigns `key`, commented or not, also inside an inline
/// table (`paths = [{ local = ..., peer = ... }]`).
fn assigns(line: &str, key: &str) -> bool {
    let t = uncomment(line);
    t.match_indices(key).any(|(i, _)| {
        let before = t[..i].chars().next_back();
        let rest = t[i + key.len()..].trim_start();
        matches!(before, None | Some(' ' | '{' | ',' | '\t'))
            && rest.starts_with('=')
            && !rest.starts_with("==")
    })
}

#[test]
fn every_config_key_is_in_hamon_toml_5_and_the_example() {
    let keys = config_keys();

    let documented = documented_keys(&read("man/hamon.toml.5"));
    let not_in_man: Vec<String> = keys
        .iter()
        .filter(|(s, k)| !documented.get(s).is_some_and(|keys| keys.contains(k)))
        .map(|(s, k)| format!("[{s}] {k}"))
        .collect();

    let example = read("docs/hamon.example.toml");
    let mut regions: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut current = String::new();
    for line in example.lines() {
        if let Some(h) = header(line) {
            regions.entry(h.clone()).or_default();
            current = h;
        } else if !current.is_empty() {
            regions.entry(current.clone()).or_default().push(line);
        }
    }
    let in_example = |section: &str, key: &str| {
        // A table of its own (`[notify.severity]`) counts as the key.
        if regions.contains_key(&format!("{section}.{key}")) {
            return true;
        }
        // The section's own lines, else its closest parent's (an inline table).
        let mut s = section;
        loop {
            if let Some(lines) = regions.get(s) {
                return lines.iter().any(|l| assigns(l, key));
            }
            match s.rsplit_once('.') {
                Some((parent, _)) => s = parent,
                None => return false,
            }
        }
    };
    let not_in_example: Vec<String> = keys
        .iter()
        .filter(|(s, k)| !in_example(s, k))
        .map(|(s, k)| format!("[{s}] {k}"))
        .collect();

    assert!(
        not_in_man.is_empty() && not_in_example.is_empty(),
        "keys of src/config/raw.rs missing from man/hamon.toml.5 (a .TP entry under \
         .SS \"[section]\"): {}\nmissing from docs/hamon.example.toml (commented or not, \
         under its section): {}",
        if not_in_man.is_empty() {
            "none".into()
        } else {
            not_in_man.join(", ")
        },
        if not_in_example.is_empty() {
            "none".into()
        } else {
            not_in_example.join(", ")
        },
    );
}

// ------------------------------------------------------ bash completion ----

/// What `image/hamon.bash-completion` offers for the command line `words`
/// (the last one being completed), run from `dir`.
fn complete_in(dir: &Path, words: &[&str]) -> Vec<String> {
    const SCRIPT: &str = r#"
        source "$1" || exit 10
        shift
        spec=$(complete -p hamon) || exit 11
        fn=${spec##*-F }
        fn=${fn%% *}
        COMP_WORDS=("$@")
        COMP_CWORD=$(($# - 1))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        COMPREPLY=()
        "$fn" hamon "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}" || exit 12
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = run(Command::new("bash")
        .args(["--norc", "--noprofile", "-c", SCRIPT, "bash"])
        .arg(repo().join("image/hamon.bash-completion"))
        .args(words)
        .current_dir(dir));
    assert!(
        out.status.success(),
        "completing {words:?}: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn complete(words: &[&str]) -> Vec<String> {
    complete_in(repo(), words)
}

/// What of `wanted` is not among `got`.
fn lacking<'a>(got: &[String], wanted: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    wanted
        .into_iter()
        .filter(|w| !got.iter().any(|g| g == w))
        .collect()
}

#[test]
fn bash_completes_ha_commands() {
    let got = complete(&["hamon", "ha", ""]);
    let wanted = [
        "status", "register", "set", "failover", "failback", "remove", "events", "token", "authkey",
    ];
    let missing = lacking(&got, wanted);
    assert!(
        missing.is_empty(),
        "hamon ha <TAB> lacks {missing:?}: {got:?}"
    );
}

#[test]
fn bash_completes_option_values_and_files() {
    let mut got = complete(&["hamon", "notify", "test", "--channel", ""]);
    got.sort();
    assert_eq!(got, ["mail", "snmp", "syslog"], "--channel <TAB>");
    let mut got = complete(&["hamon", "ha", "register", "--failover-type", ""]);
    got.sort();
    assert_eq!(got, ["automatic", "manual"], "--failover-type <TAB>");
    let mut got = complete(&["hamon", "ha", "set", "--failover-type", "a"]);
    got.sort();
    assert_eq!(got, ["automatic"], "ha set --failover-type a<TAB>");
    let mut got = complete(&["hamon", "config", ""]);
    got.sort();
    assert_eq!(got, ["check", "dropin", "init"], "config <TAB>");

    let dir = std::env::temp_dir().join(format!("hamon-completion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("seed-a.toml"), "").unwrap();
    std::fs::write(dir.join("other"), "").unwrap();
    let cases: [&[&str]; 4] = [
        &["hamon", "--config", "se"],
        &["hamon", "status", "--config", "se"],
        &["hamon", "config", "init", "--seed", "se"],
        &["hamon", "ha", "register", "--authkey-file", "se"],
    ];
    let results: Vec<_> = cases.iter().map(|c| (c, complete_in(&dir, c))).collect();
    std::fs::remove_dir_all(&dir).unwrap();
    for (case, got) in results {
        assert_eq!(got, ["seed-a.toml"], "{case:?}");
    }
}

#[test]
fn bash_completion_follows_the_help() {
    let (_, list) = all_entries();
    let mut missing = Vec::new();
    // Each command word, offered where it is typed.
    for e in list.iter().filter(|e| !e.words.is_empty()) {
        for depth in 0..e.words.len() {
            let mut line = vec!["hamon"];
            line.extend(e.words[..depth].iter().map(String::as_str));
            line.push("");
            let got = complete(&line);
            if !got.contains(&e.words[depth]) {
                missing.push(format!("{} <TAB>: {}", line.join(" "), e.words[depth]));
            }
        }
    }
    // Each option of a command's synopsis, offered after its words.
    let upcoming = UPCOMING.iter().map(|(w, o)| Entry {
        words: w.iter().map(|s| s.to_string()).collect(),
        options: o.iter().map(|s| s.to_string()).collect(),
    });
    for e in list.into_iter().chain(upcoming) {
        let mut line = vec!["hamon"];
        line.extend(e.words.iter().map(String::as_str));
        line.push("--");
        let got = complete(&line);
        for o in lacking(&got, e.options.iter().map(String::as_str)) {
            missing.push(format!("{} <TAB>: {o}", line.join(" ")));
        }
    }
    assert!(
        missing.is_empty(),
        "image/hamon.bash-completion does not offer:\n{}",
        missing.join("\n")
    );
}
