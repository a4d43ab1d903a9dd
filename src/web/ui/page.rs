//! The Health Monitor's HTML: the login page and the main page.
//!
//! Pure rendering from a `PageModel`. Every form works without JavaScript;
//! a small inline script only reloads the page every 5 s (not while the
//! operator is filling in a form) and `confirm()` asks before drastic actions.
//! Styles are inline too, so the page needs nothing but itself. Every dynamic
//! string goes through `escape`.

use super::utc;
use crate::ha::{
    ConfigMode, FailoverType, HaState, HealthSummary, Level, Registration, Role, Severity,
    StatusView,
};
use crate::store::Stamped;
use sha2::{Digest, Sha256};
use std::fmt;

/// What the main page shows.
pub struct PageModel<'a> {
    pub status: &'a StatusView,
    pub version: &'a str,
    /// The session's CSRF token, put into every form.
    pub csrf: &'a str,
    /// The current message level: "error", "info" or "trace".
    pub log_level: &'a str,
    /// One page of events, newest first.
    pub events: &'a [Stamped],
    /// The page shown, counted from 1 (newest events).
    pub page: usize,
    pub pages: usize,
    /// A line about the last action (its outcome, or "working...").
    pub message: Option<&'a str>,
    /// SHA-256 fingerprint of the TLS certificate, when serving HTTPS.
    pub tls_fingerprint: Option<&'a str>,
}

impl fmt::Debug for PageModel<'_> {
    // Leaves out the CSRF token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageModel")
            .field("status", &self.status)
            .field("version", &self.version)
            .field("log_level", &self.log_level)
            .field("events", &self.events.len())
            .field("page", &self.page)
            .field("pages", &self.pages)
            .field("message", &self.message)
            .field("tls_fingerprint", &self.tls_fingerprint)
            .finish()
    }
}

/// `s` made safe for HTML text and (quoted) attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{margin:0;font:14px/1.4 system-ui,sans-serif;color:#222;background:#f4f5f7}\
header{display:flex;flex-wrap:wrap;align-items:center;gap:.8em;padding:.6em 1em;background:#1f3a5a;color:#fff}\
header .title{font-size:1.2em;font-weight:bold}\
header .role{padding:.1em .6em;border-radius:3px;background:#fff;color:#1f3a5a;font-weight:bold}\
header nav{margin-left:auto;display:flex;gap:.8em;align-items:center}\
header a{color:#fff}\
main{max-width:60em;margin:0 auto;padding:.5em 1em 2em}\
section{background:#fff;border:1px solid #d8dce1;border-radius:4px;margin:1em 0;padding:.4em 1em .8em}\
h2{font-size:1.05em;margin:.4em 0}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.3em .5em;border-bottom:1px solid #eceef1;vertical-align:top}\
th{width:14em;font-weight:600}\
table.list th{width:auto;background:#f0f2f5}\
td.time{white-space:nowrap;font-family:monospace}\
form.inline{display:inline;margin:0 .4em 0 0}\
.ok{color:#187a2f;font-weight:bold}\
.bad{color:#b3261e;font-weight:bold}\
.lvl-ok{color:#187a2f}.lvl-warning{color:#9a6700}.lvl-failed{color:#b3261e;font-weight:bold}.lvl-unknown{color:#777}\
tr.sev-error td{color:#b3261e}tr.sev-warning td{color:#9a6700}\
.flash{background:#fff8d6;border:1px solid #e6d68a;padding:.5em 1em;border-radius:4px}\
.error{color:#b3261e}\
.pages{margin-top:.5em;display:flex;gap:.6em}\
label{margin-right:.4em}\
.field{margin:.4em 0}\
code{font-size:.9em;word-break:break-all}\
";

/// Reloads the page every 5 s unless a form field has focus or was edited,
/// or the tab is hidden; only ever does a GET of `/` (keeping `?page=`).
const SCRIPT: &str = "(function(){var d=false;\
document.addEventListener('input',function(){d=true;});\
document.addEventListener('change',function(){d=true;});\
setInterval(function(){var a=document.activeElement;\
if(d||document.hidden||(a&&/^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName)))return;\
location.replace('/'+(location.pathname==='/'?location.search:''));},5000);})();";

const FAILOVER_CONFIRM: &str =
    "return confirm('Start a failover? This secondary server becomes the active server.')";
const FAILBACK_CONFIRM: &str =
    "return confirm('Start a failback? The primary server becomes the active server again.')";
const REMOVE_CONFIRM: &str = "return confirm('Remove the HA registration from both servers?')";

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn csp_hash(text: &str) -> String {
    format!("'sha256-{}'", base64(&Sha256::digest(text.as_bytes())))
}

/// A `Content-Security-Policy` that allows exactly this module's inline
/// style, script and `onsubmit` handlers and nothing else (no
/// `'unsafe-inline'`). Browsers without `'unsafe-hashes'` skip the
/// confirmations; the forms still work.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; style-src {}; script-src {} 'unsafe-hashes' {} {} {}; \
         img-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        csp_hash(STYLE),
        csp_hash(SCRIPT),
        csp_hash(FAILOVER_CONFIRM),
        csp_hash(FAILBACK_CONFIRM),
        csp_hash(REMOVE_CONFIRM),
    )
}

fn head(out: &mut String, title: &str, extra: &str) {
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str("<meta name=\"referrer\" content=\"no-referrer\">");
    out.push_str(extra);
    out.push_str(&format!("<title>{}</title>", escape(title)));
    out.push_str(&format!("<style>{STYLE}</style></head>\n"));
}

/// The login page: one password field, `key`, posted to `/login`. `error`
/// is shown above the form; `wait_secs > 0` (throttled) disables the button
/// and sends the browser back to `/` once the wait is over.
pub fn login_page(error: Option<&str>, wait_secs: u64) -> String {
    let mut out = String::with_capacity(3_000);
    let refresh = if wait_secs > 0 {
        format!("<meta http-equiv=\"refresh\" content=\"{wait_secs};url=/\">")
    } else {
        String::new()
    };
    head(&mut out, "hamon Health Monitor: log in", &refresh);
    out.push_str(
        "<body><header><span class=\"title\">hamon Health Monitor</span></header>\n<main>",
    );
    out.push_str("<section><h2>Log in</h2>");
    if let Some(e) = error {
        out.push_str(&format!(
            "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>",
            escape(e)
        ));
    }
    if wait_secs > 0 {
        out.push_str(&format!(
            "<p id=\"wait\">Too many failed attempts: try again in {wait_secs} s \
             (<a href=\"/\">reload</a>).</p>"
        ));
    }
    out.push_str(
        "<form method=\"post\" action=\"/login\">\
         <div class=\"field\"><label for=\"key\">Authentication key</label>\
         <input type=\"password\" id=\"key\" name=\"key\" required autofocus \
         autocomplete=\"current-password\"></div>",
    );
    let disabled = if wait_secs > 0 { " disabled" } else { "" };
    out.push_str(&format!(
        "<button type=\"submit\"{disabled}>Log in</button></form></section></main></body></html>\n"
    ));
    out
}

/// Whether the pair is healthy as seen from this server, and if not, why.
/// Healthy: HA Enabled, not blocked, and none of this server's health items
/// Failed (warnings do not count).
pub fn status_reasons(s: &StatusView) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(b) = &s.blocked {
        why.push(format!("HA blocked: {b}"));
    }
    match s.mode {
        ConfigMode::Enabled => {}
        ConfigMode::NotConfigured => why.push("HA not configured".into()),
        ConfigMode::Initializing => why.push("HA initializing".into()),
        ConfigMode::Alone if !s.peer_reachable => why.push("peer unreachable (HA Alone)".into()),
        ConfigMode::Alone => why.push("running without the peer (HA Alone)".into()),
    }
    for (item, level) in health_items(&s.health) {
        if level == Level::Failed {
            why.push(format!("{item} failed"));
        }
    }
    if s.witness == Some(false) {
        why.push("witness unreachable".into());
    }
    if s.fenced {
        why.push("self-fenced: reaches neither the peer nor the witness".into());
    }
    if s.fencing_peer {
        why.push("fencing the peer before taking over".into());
    }
    if s.lease == Some(crate::ha::Lease::Lost) {
        why.push("arbiter lease lost".into());
    }
    if s.arbiter.as_ref().and_then(|a| a.reachable) == Some(false) {
        why.push("arbiter unreachable".into());
    }
    why
}

fn health_items(h: &HealthSummary) -> [(&'static str, Level); 4] {
    [
        ("Processes", h.processes),
        ("Database", h.database),
        ("Disk", h.disk),
        ("NIC", h.nic),
    ]
}

fn level_label(l: Level) -> &'static str {
    match l {
        Level::Unknown => "unknown",
        Level::Ok => "ok",
        Level::Warning => "warning",
        Level::Failed => "failed",
    }
}

/// The label of the row showing the other server's address.
pub fn peer_label(role: Role) -> &'static str {
    match role {
        Role::Primary => "Secondary IP Address",
        Role::Secondary => "Primary IP Address",
    }
}

/// Failover: a secondary that lost the primary, or runs alone.
pub fn can_failover(s: &StatusView) -> bool {
    s.role == Role::Secondary
        && matches!(
            s.state,
            HaState::SecondaryLostPrimary | HaState::SecondaryAlone
        )
}

/// Failback: a secondary that is active.
pub fn can_failback(s: &StatusView) -> bool {
    s.role == Role::Secondary && s.state == HaState::SecondaryActive
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    )
}

fn peer_text(s: &StatusView) -> Option<String> {
    let member = s.registration.as_ref().map(|r| r.member(s.role.other()));
    let name = s
        .peer_name
        .clone()
        .or_else(|| member.map(|m| m.name.clone()));
    let address = s
        .peer_address
        .clone()
        .or_else(|| member.map(|m| m.address.clone()));
    match (name.filter(|n| !n.is_empty()), address) {
        (Some(n), Some(a)) if n != a => Some(format!("{n} ({a})")),
        (_, Some(a)) => Some(a),
        (Some(n), None) => Some(n),
        (None, None) => None,
    }
}

fn title_bar(out: &mut String, m: &PageModel) {
    let s = m.status;
    out.push_str(&format!(
        "<body><header><span class=\"title\">hamon Health Monitor</span>\
         <span class=\"role\" id=\"role\">{}</span><span id=\"server\">{}</span>\
         <nav><a href=\"/\" id=\"refresh\">Refresh</a>\
         <form class=\"inline\" method=\"post\" action=\"/logout\">{}\
         <button type=\"submit\" id=\"logout\">Logout</button></form></nav></header>\n<main>",
        s.role.label(),
        escape(&s.name),
        csrf_field(m.csrf)
    ));
    if let Some(msg) = m.message {
        out.push_str(&format!(
            "<p class=\"flash\" id=\"message\" role=\"status\">{}</p>\n",
            escape(msg)
        ));
    }
}

fn details(out: &mut String, m: &PageModel) {
    out.push_str("<section><h2>Health Monitor Details</h2>");
    out.push_str(&format!(
        "<p>Version: <span id=\"version\">{}</span></p>",
        escape(m.version)
    ));
    if let Some(fp) = m.tls_fingerprint {
        out.push_str(&format!(
            "<p>TLS certificate SHA-256: <code id=\"tls-fingerprint\">{}</code></p>",
            escape(fp)
        ));
    }
    out.push_str("</section>\n");
}

fn action_form(id: &str, label: &str, confirm: &str, csrf: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" action=\"/action/{id}\" id=\"{id}\" \
         onsubmit=\"{confirm}\">{}<button type=\"submit\">{label}</button></form>",
        csrf_field(csrf)
    )
}

fn settings(out: &mut String, m: &PageModel) {
    let s = m.status;
    out.push_str("<section><h2>Settings</h2><table>");
    let why = status_reasons(s);
    let status = if why.is_empty() {
        "<span class=\"ok\">\u{2714}</span> HA enabled and healthy".to_string()
    } else {
        format!(
            "<span class=\"bad\">\u{2718}</span> {}",
            escape(&why.join("; "))
        )
    };
    out.push_str(&format!(
        "<tr><th>Status</th><td id=\"status\">{status}</td></tr>"
    ));
    let peer = peer_text(s).unwrap_or_else(|| "not registered".into());
    out.push_str(&format!(
        "<tr><th>{}</th><td id=\"peer-address\">{}</td></tr>",
        peer_label(s.role),
        escape(&peer)
    ));
    out.push_str(&format!(
        "<tr><th>State</th><td id=\"state\">{}</td></tr>",
        s.state.label()
    ));
    let failover_type = s
        .failover_type
        .or_else(|| s.registration.as_ref().map(|r| r.failover_type))
        .map_or("not configured", |t| t.label());
    out.push_str(&format!(
        "<tr><th>Failover Type</th><td id=\"failover-type\">{failover_type}</td></tr>"
    ));
    out.push_str(&format!(
        "<tr><th>Configuration Mode</th><td id=\"mode\">{}</td></tr>",
        s.mode.label()
    ));
    if let Some(r) = s.releases() {
        let class = if r.contains("MISMATCH") {
            " class=\"bad\""
        } else {
            ""
        };
        out.push_str(&format!(
            "<tr><th>Release</th><td id=\"release\"{class}>{}</td></tr>",
            escape(&r)
        ));
    }
    for (what, text) in s.safeguards() {
        out.push_str(&format!(
            "<tr><th>{what}</th><td id=\"{}\">{}</td></tr>",
            what.to_ascii_lowercase(),
            escape(&text)
        ));
    }
    if let Some(why) = &s.mail_unsent {
        out.push_str(&format!(
            "<tr><th>E-mail</th><td id=\"mail-unsent\" class=\"bad\">{}</td></tr>",
            escape(why)
        ));
    }
    let mut actions = String::new();
    if can_failover(s) {
        actions.push_str(&action_form(
            "failover",
            "Failover",
            FAILOVER_CONFIRM,
            m.csrf,
        ));
    }
    if can_failback(s) {
        actions.push_str(&action_form(
            "failback",
            "Failback",
            FAILBACK_CONFIRM,
            m.csrf,
        ));
    }
    if actions.is_empty() {
        actions.push_str("none available");
    }
    out.push_str(&format!(
        "<tr><th>Action</th><td id=\"actions\">{actions}</td></tr></table></section>\n"
    ));
}

fn logging(out: &mut String, m: &PageModel) {
    out.push_str(
        "<section><h2>Logging</h2><form method=\"post\" action=\"/log-level\" id=\"logging\">",
    );
    out.push_str(&csrf_field(m.csrf));
    out.push_str("<label for=\"level\">Message Level</label><select id=\"level\" name=\"level\">");
    for (value, label) in [
        ("error", "Error"),
        ("info", "Information"),
        ("trace", "Trace"),
    ] {
        let selected = if m.log_level == value {
            " selected"
        } else {
            ""
        };
        out.push_str(&format!(
            "<option value=\"{value}\"{selected}>{label}</option>"
        ));
    }
    out.push_str(
        "</select> <button type=\"submit\">Save</button></form>\
         <p><a href=\"/logs.zip\" id=\"download\" download>Download Health Monitor log files</a></p>\
         </section>\n",
    );
}

fn severity_class(s: Severity) -> &'static str {
    match s {
        Severity::Info => "sev-info",
        Severity::Warning => "sev-warning",
        Severity::Error => "sev-error",
    }
}

/// Links to the other event pages: newer/older, the first and last page and
/// up to two either side of the current one.
fn page_links(page: usize, pages: usize) -> String {
    let link = |n: usize, text: &str| format!("<a href=\"/?page={n}\">{text}</a>");
    let mut out = String::from("<nav class=\"pages\" id=\"event-pages\">");
    if page > 1 {
        out.push_str(&link(page - 1, "&laquo; Newer"));
    }
    let mut last_shown = 0;
    for n in 1..=pages {
        let near = n + 2 >= page && n <= page + 2;
        if n != 1 && n != pages && !near {
            continue;
        }
        if n > last_shown + 1 {
            out.push_str("<span>&hellip;</span>");
        }
        if n == page {
            out.push_str(&format!("<strong aria-current=\"page\">{n}</strong>"));
        } else {
            out.push_str(&link(n, &n.to_string()));
        }
        last_shown = n;
    }
    if page < pages {
        out.push_str(&link(page + 1, "Older &raquo;"));
    }
    out.push_str("</nav>");
    out
}

fn events(out: &mut String, m: &PageModel) {
    out.push_str(
        "<section><h2>Events</h2><table class=\"list\" id=\"events\">\
         <thead><tr><th>Time (UTC)</th><th>State</th><th>Description</th></tr></thead><tbody>",
    );
    if m.events.is_empty() {
        out.push_str("<tr><td colspan=\"3\">No events</td></tr>");
    }
    for e in m.events {
        out.push_str(&format!(
            "<tr class=\"{}\"><td class=\"time\">{}</td><td>{}</td><td>{}</td></tr>",
            severity_class(e.entry.severity),
            utc(e.time),
            e.entry.state.label(),
            escape(&e.entry.text)
        ));
    }
    out.push_str("</tbody></table>");
    if m.pages > 1 {
        let page = m.page.clamp(1, m.pages);
        out.push_str(&page_links(page, m.pages));
    }
    out.push_str("</section>\n");
}

fn level_cell(id: &str, level: Option<Level>) -> String {
    let l = level_label(level.unwrap_or(Level::Unknown));
    format!("<td id=\"{id}\" class=\"lvl-{l}\">{l}</td>")
}

fn health(out: &mut String, m: &PageModel) {
    let s = m.status;
    let peer_name = s
        .peer_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(s.role.other().label());
    let reach = if s.registration.is_some() && !s.peer_reachable {
        " (unreachable)"
    } else {
        ""
    };
    out.push_str(&format!(
        "<section><h2>Health</h2><table class=\"list\" id=\"health\"><thead><tr><th>Item</th>\
         <th>This server ({})</th><th>Peer ({}){reach}</th></tr></thead><tbody>",
        escape(&s.name),
        escape(peer_name)
    ));
    out.push_str(&format!(
        "<tr><td>HA State</td><td>{}</td><td id=\"peer-state\">{}</td></tr>",
        s.state.label(),
        s.peer_state.map_or("unknown", |p| p.label())
    ));
    let peer = s.peer_health.as_ref().map(health_items);
    for (i, (item, level)) in health_items(&s.health).into_iter().enumerate() {
        let key = item.to_ascii_lowercase();
        let theirs = peer.as_ref().and_then(|p| p.get(i)).map(|(_, l)| *l);
        out.push_str(&format!(
            "<tr><td>{item}</td>{}{}</tr>",
            level_cell(&format!("health-{key}"), Some(level)),
            level_cell(&format!("peer-health-{key}"), theirs)
        ));
    }
    out.push_str("</tbody></table></section>\n");
}

fn registration_form(csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/register\" id=\"register\">{}\
         <div class=\"field\"><label for=\"secondary\">Secondary server</label>\
         <input type=\"text\" id=\"secondary\" name=\"secondary\" required \
         placeholder=\"address or name[:port]\"></div>\
         <div class=\"field\"><label for=\"reg-key\">Authentication key</label>\
         <input type=\"password\" id=\"reg-key\" name=\"key\" required autocomplete=\"off\"></div>\
         <div class=\"field\"><label for=\"failover_type\">Failover type</label>\
         <select id=\"failover_type\" name=\"failover_type\">\
         <option value=\"manual\" selected>Manual</option>\
         <option value=\"automatic\">Automatic</option></select></div>\
         <div class=\"field\"><label for=\"emails\">E-mail addresses</label>\
         <input type=\"text\" id=\"emails\" name=\"emails\" size=\"40\" \
         placeholder=\"ops@example.com, oncall@example.com\"></div>\
         <div class=\"field\"><input type=\"checkbox\" id=\"vip\" name=\"vip\" value=\"on\">\
         <label for=\"vip\">Virtual IP</label>\
         <label for=\"vip4\">IPv4</label><input type=\"text\" id=\"vip4\" name=\"vip4\" \
         placeholder=\"192.0.2.10/24\">\
         <label for=\"vip6\">IPv6</label><input type=\"text\" id=\"vip6\" name=\"vip6\" \
         placeholder=\"2001:db8::10/64\"></div>\
         <button type=\"submit\">Register</button></form>",
        csrf_field(csrf)
    )
}

/// Changing the registration's settings (`hamon ha set`): the form holds the settings in
/// force, and what is submitted replaces them on both servers, or on neither.
fn settings_form(r: &Registration, csrf: &str) -> String {
    let selected = |t: FailoverType| {
        if r.failover_type == t {
            " selected"
        } else {
            ""
        }
    };
    let vip = |v4: bool| {
        r.vips
            .iter()
            .find(|v| v.contains('.') == v4)
            .map(|v| escape(v))
            .unwrap_or_default()
    };
    format!(
        "<form method=\"post\" action=\"/settings\" id=\"ha-settings\">{}\
         <p>Changes the settings on both servers (the peer must be reachable); an active \
         server moves its virtual IP at once. Nothing is copied.</p>\
         <div class=\"field\"><label for=\"set-failover-type\">Failover type</label>\
         <select id=\"set-failover-type\" name=\"failover_type\">\
         <option value=\"manual\"{}>Manual</option>\
         <option value=\"automatic\"{}>Automatic</option></select></div>\
         <div class=\"field\"><label for=\"set-emails\">E-mail addresses</label>\
         <input type=\"text\" id=\"set-emails\" name=\"emails\" size=\"40\" value=\"{}\" \
         placeholder=\"none\"></div>\
         <div class=\"field\"><label for=\"set-vip4\">Virtual IP (IPv4)</label>\
         <input type=\"text\" id=\"set-vip4\" name=\"vip4\" value=\"{}\" placeholder=\"none\">\
         <label for=\"set-vip6\">IPv6</label><input type=\"text\" id=\"set-vip6\" name=\"vip6\" \
         value=\"{}\" placeholder=\"none\"></div>\
         <button type=\"submit\">Change settings</button></form>",
        csrf_field(csrf),
        selected(FailoverType::Manual),
        selected(FailoverType::Automatic),
        escape(&r.emails.join(", ")),
        vip(true),
        vip(false),
    )
}

fn ha_configuration(out: &mut String, m: &PageModel) {
    let s = m.status;
    out.push_str("<section id=\"ha-configuration\"><h2>HA Configuration</h2>");
    match &s.registration {
        None if s.mode == ConfigMode::Initializing => {
            out.push_str("<p>Registration in progress.</p>");
        }
        None => out.push_str(&registration_form(m.csrf)),
        Some(r) => {
            let sec = r.member(s.role.other());
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    escape(&v.join(", "))
                }
            };
            out.push_str(&format!(
                "<table id=\"registration\"><tr><th>{}</th><td>{} ({}:{})</td></tr>\
                 <tr><th>Virtual IPs</th><td>{}</td></tr>\
                 <tr><th>E-mail addresses</th><td>{}</td></tr></table>",
                match s.role {
                    Role::Primary => "Secondary server",
                    Role::Secondary => "Primary server",
                },
                escape(&sec.name),
                escape(&sec.address),
                sec.hm_port,
                list(&r.vips),
                list(&r.emails)
            ));
            out.push_str(&settings_form(r, m.csrf));
            if s.role != Role::Primary {
                out.push_str("</section>\n");
                return;
            }
            out.push_str(&format!(
                "<form method=\"post\" action=\"/remove\" id=\"remove\" onsubmit=\"{REMOVE_CONFIRM}\">{}\
                 <div class=\"field\"><input type=\"checkbox\" id=\"purge\" name=\"purge\" value=\"yes\">\
                 <label for=\"purge\">also remove HA data from both servers</label></div>\
                 <button type=\"submit\">Remove HA</button></form>",
                csrf_field(m.csrf)
            ));
        }
    }
    out.push_str("</section>\n");
}

/// Changing the authentication key: on a registered pair it changes on both servers.
fn authentication_key(out: &mut String, m: &PageModel) {
    let scope = if m.status.registration.is_some() {
        "on both servers of the pair (the peer must be reachable)"
    } else {
        "on this server"
    };
    out.push_str(&format!(
        "<section><h2>Authentication Key</h2><form method=\"post\" action=\"/authkey\" \
         id=\"authkey\">{}<p>Changes the key {scope}.</p>\
         <div class=\"field\"><label for=\"new_key\">New key</label>\
         <input type=\"password\" id=\"new_key\" name=\"new_key\" autocomplete=\"new-password\" \
         required minlength=\"8\"></div>\
         <div class=\"field\"><label for=\"confirm_key\">Confirm</label>\
         <input type=\"password\" id=\"confirm_key\" name=\"confirm_key\" \
         autocomplete=\"new-password\" required minlength=\"8\"></div>\
         <button type=\"submit\">Change key</button></form></section>\n",
        csrf_field(m.csrf)
    ));
}

/// The main page (for a logged-in session).
pub fn main_page(m: &PageModel) -> String {
    let s = m.status;
    let mut out = String::with_capacity(16_000 + m.events.len() * 200);
    head(
        &mut out,
        &format!("hamon Health Monitor: {} {}", s.role.label(), s.name),
        "",
    );
    title_bar(&mut out, m);
    details(&mut out, m);
    settings(&mut out, m);
    logging(&mut out, m);
    authentication_key(&mut out, m);
    // The primary registers; either server changes the settings of a registered pair.
    if s.role == Role::Primary || s.registration.is_some() {
        ha_configuration(&mut out, m);
    }
    health(&mut out, m);
    events(&mut out, m);
    out.push_str(&format!("</main><script>{SCRIPT}</script></body></html>\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::{Duty, FailoverType, JournalEntry, Member, Registration};

    fn member(name: &str, address: &str) -> Member {
        Member {
            name: name.into(),
            address: address.into(),
            hm_port: 8082,
            hb_port: 8083,
            tls_fingerprint: None,
        }
    }

    fn registration() -> Registration {
        Registration {
            id: 7,
            failover_type: FailoverType::Manual,
            primary: member("ha1", "192.0.2.123"),
            secondary: member("ha2", "192.0.2.122"),
            vips: vec!["192.0.2.10/24".into()],
            emails: vec!["ops@example.com".into()],
        }
    }

    fn ok_health() -> HealthSummary {
        HealthSummary {
            processes: Level::Ok,
            database: Level::Ok,
            disk: Level::Ok,
            nic: Level::Ok,
        }
    }

    fn view(role: Role, state: HaState) -> StatusView {
        let (name, peer, peer_addr) = match role {
            Role::Primary => ("ha1", "ha2", "192.0.2.122"),
            Role::Secondary => ("ha2", "ha1", "192.0.2.123"),
        };
        StatusView {
            name: name.into(),
            role,
            state,
            mode: ConfigMode::Enabled,
            duty: Duty::Standby,
            failover_type: Some(FailoverType::Manual),
            peer_name: Some(peer.into()),
            peer_address: Some(peer_addr.into()),
            peer_state: None,
            peer_reachable: true,
            peer_sync: None,
            health: ok_health(),
            peer_health: Some(ok_health()),
            data_gap: false,
            registration: Some(registration()),
            blocked: None,
            witness: None,
            fenced: false,
            fencing_peer: false,
            lease: None,
            fencing: None,
            arbiter: None,
            mail_unsent: None,
            version: None,
            peer_version: None,
        }
    }

    #[test]
    fn the_witness_and_the_fence_are_reasons() {
        let mut s = view(Role::Primary, HaState::PrimaryLostSecondary);
        assert!(status_reasons(&s).is_empty());
        s.witness = Some(false);
        s.fenced = true;
        let why = status_reasons(&s);
        assert!(why.iter().any(|w| w == "witness unreachable"), "{why:?}");
        assert!(why.iter().any(|w| w.starts_with("self-fenced")), "{why:?}");
    }

    #[test]
    fn the_arbiter_witness_and_fencing_have_rows() {
        let mut s = view(Role::Primary, HaState::PrimaryActive);
        assert!(!render(&s).contains("id=\"arbiter\""));
        s.lease = Some(crate::ha::Lease::Lost);
        s.arbiter = Some(crate::ha::ArbiterView {
            reachable: Some(false),
            error: Some("no etcd endpoint answers: <timeout>".into()),
            ..Default::default()
        });
        s.witness = Some(true);
        s.fencing = Some("withhold".into());
        let html = render(&s);
        assert!(
            html.contains("<th>Arbiter</th><td id=\"arbiter\">LEASE LOST: not renewed in time; etcd UNREACHABLE (no etcd endpoint answers: &lt;timeout&gt;)</td>"),
            "{html}"
        );
        assert!(html.contains("<td id=\"witness\">reachable</td>"), "{html}");
        assert!(
            html.contains("<td id=\"fencing\">before a takeover, on_failure = withhold</td>"),
            "{html}"
        );
        let why = status_reasons(&s);
        assert!(why.iter().any(|w| w == "arbiter lease lost"), "{why:?}");
        assert!(why.iter().any(|w| w == "arbiter unreachable"), "{why:?}");
        s.lease = Some(crate::ha::Lease::Seeking);
        s.arbiter = Some(crate::ha::ArbiterView {
            reachable: Some(true),
            answering: Some("http://198.51.100.7:2379".into()),
            holder: Some("primary a 192.0.2.11".into()),
            ..Default::default()
        });
        assert!(render(&s).contains(
            "waiting for the lease, held by primary a 192.0.2.11; etcd answers at http://198.51.100.7:2379"
        ));
    }

    #[test]
    fn mail_that_goes_nowhere_has_a_row() {
        let mut s = view(Role::Primary, HaState::PrimaryActive);
        assert!(!render(&s).contains("mail-unsent"));
        s.mail_unsent = Some("NO MAIL IS SENT to <ops@example.com>".into());
        let html = render(&s);
        assert!(
            html.contains(
                "<th>E-mail</th><td id=\"mail-unsent\" class=\"bad\">NO MAIL IS SENT to \
                 &lt;ops@example.com&gt;</td>"
            ),
            "{html}"
        );
    }

    #[test]
    fn both_releases_have_a_row_that_says_mismatch() {
        let v = |release: &str, minor| crate::version::Version {
            release: release.into(),
            major: 1,
            minor,
        };
        let mut s = view(Role::Primary, HaState::PrimaryActive);
        assert!(!render(&s).contains("id=\"release\""));
        s.version = Some(v("0.2.0", 1));
        s.peer_version = Some(v("0.2.0", 1));
        assert!(render(&s).contains(
            "<td id=\"release\">this server 0.2.0 (protocol 1.1), peer 0.2.0 (protocol 1.1)</td>"
        ));
        s.peer_version = Some(v("0.3.0", 2));
        assert!(render(&s).contains(
            "class=\"bad\">this server 0.2.0 (protocol 1.1), peer 0.3.0 (protocol 1.2): \
             MISMATCH (a rolling upgrade: finish it)</td>"
        ));
        s.peer_version = Some(v("0.4.0", 3));
        assert!(render(&s).contains("MISMATCH, INCOMPATIBLE"));
    }

    fn unregistered_primary() -> StatusView {
        StatusView {
            state: HaState::StandAlone,
            mode: ConfigMode::NotConfigured,
            failover_type: None,
            peer_name: None,
            peer_address: None,
            peer_reachable: false,
            peer_health: None,
            registration: None,
            ..view(Role::Primary, HaState::StandAlone)
        }
    }

    fn event(time: u64, state: HaState, text: &str) -> Stamped {
        Stamped {
            time,
            entry: JournalEntry {
                kind: "state_changed".into(),
                severity: Severity::Info,
                state,
                text: text.into(),
            },
        }
    }

    fn render_with(s: &StatusView, events: &[Stamped], page: usize, pages: usize) -> String {
        main_page(&PageModel {
            status: s,
            version: "0.1.0",
            csrf: "tok3n",
            log_level: "info",
            events,
            page,
            pages,
            message: None,
            tls_fingerprint: None,
        })
    }

    fn render(s: &StatusView) -> String {
        render_with(s, &[], 1, 1)
    }

    /// The text of the element with `id` (up to its first closing tag).
    fn element<'a>(html: &'a str, id: &str) -> &'a str {
        let marker = format!("id=\"{id}\"");
        let at = html
            .find(&marker)
            .unwrap_or_else(|| panic!("no #{id} in page"));
        let rest = &html[at..];
        let start = rest.find('>').map_or(0, |i| i + 1);
        let end = rest.find("</").unwrap_or(rest.len());
        &rest[start..end.max(start)]
    }

    fn cell<'a>(html: &'a str, id: &str) -> &'a str {
        let marker = format!("id=\"{id}\"");
        let at = html
            .find(&marker)
            .unwrap_or_else(|| panic!("no #{id} in page"));
        let rest = &html[at..];
        let start = rest.find('>').map_or(0, |i| i + 1);
        let end = rest.find("</td>").unwrap_or(rest.len());
        &rest[start..end]
    }

    #[test]
    fn escape_covers_the_five_characters() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain ✔ text"), "plain ✔ text");
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn dynamic_strings_are_escaped_everywhere() {
        let evil = "<script>alert('x')</script>\"&";
        let mut s = view(Role::Primary, HaState::PrimaryActive);
        s.name = evil.into();
        s.peer_name = Some(evil.into());
        s.peer_address = Some(evil.into());
        s.blocked = Some(evil.into());
        if let Some(r) = s.registration.as_mut() {
            r.emails = vec![evil.into()];
            r.secondary.name = evil.into();
        }
        let events = [event(1, HaState::PrimaryActive, evil)];
        let html = main_page(&PageModel {
            status: &s,
            version: evil,
            csrf: evil,
            log_level: evil,
            events: &events,
            page: 1,
            pages: 1,
            message: Some(evil),
            tls_fingerprint: Some(evil),
        });
        assert!(!html.contains("<script>alert"), "unescaped markup");
        assert!(!html.contains("\"&\""));
        // Exactly one script element: the page's own.
        assert_eq!(html.matches("<script>").count(), 1);
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"));
        let login = login_page(Some(evil), 0);
        assert!(!login.contains("<script>alert"));
    }

    #[test]
    fn title_bar_has_role_refresh_and_logout() {
        let html = render(&view(Role::Secondary, HaState::SecondarySyncing));
        assert!(html.contains("hamon Health Monitor"));
        assert_eq!(element(&html, "role"), "Secondary");
        assert!(html.contains("<a href=\"/\" id=\"refresh\">Refresh</a>"));
        assert!(html.contains("action=\"/logout\""));
        assert!(html.contains("<input type=\"hidden\" name=\"csrf\" value=\"tok3n\">"));
        assert_eq!(element(&html, "version"), "0.1.0");
        assert_eq!(
            element(
                &render(&view(Role::Primary, HaState::PrimaryActive)),
                "role"
            ),
            "Primary"
        );
    }

    #[test]
    fn failover_only_for_a_secondary_that_lost_the_primary_or_is_alone() {
        for &state in HaState::ALL {
            for role in [Role::Primary, Role::Secondary] {
                let html = render(&view(role, state));
                let failover = html.contains("id=\"failover\"");
                let failback = html.contains("id=\"failback\"");
                let want_failover = role == Role::Secondary
                    && matches!(
                        state,
                        HaState::SecondaryLostPrimary | HaState::SecondaryAlone
                    );
                let want_failback = role == Role::Secondary && state == HaState::SecondaryActive;
                assert_eq!(failover, want_failover, "{role:?} {state:?}");
                assert_eq!(failback, want_failback, "{role:?} {state:?}");
                if !want_failover && !want_failback {
                    assert_eq!(cell(&html, "actions"), "none available");
                }
            }
        }
    }

    #[test]
    fn action_forms_post_with_csrf_and_confirm() {
        let html = render(&view(Role::Secondary, HaState::SecondaryLostPrimary));
        let at = html.find("id=\"failover\"").unwrap_or(0);
        let form_start = html[..at].rfind("<form").unwrap_or(0);
        let form_end = at + html[at..].find("</form>").unwrap_or(0);
        let form = &html[form_start..form_end];
        assert!(form.contains("method=\"post\""), "{form}");
        assert!(form.contains("action=\"/action/failover\""), "{form}");
        assert!(form.contains("onsubmit=\"return confirm('"), "{form}");
        assert!(form.contains("name=\"csrf\" value=\"tok3n\""), "{form}");
        let html = render(&view(Role::Secondary, HaState::SecondaryActive));
        assert!(html.contains("action=\"/action/failback\""));
        assert!(!html.contains("action=\"/action/failover\""));
    }

    #[test]
    fn peer_row_is_labelled_by_role() {
        let html = render(&view(Role::Secondary, HaState::SecondaryActive));
        assert!(html
            .contains("<th>Primary IP Address</th><td id=\"peer-address\">ha1 (192.0.2.123)</td>"));
        assert!(!html.contains("Secondary IP Address"));
        let html = render(&view(Role::Primary, HaState::PrimaryActive));
        assert!(html.contains(
            "<th>Secondary IP Address</th><td id=\"peer-address\">ha2 (192.0.2.122)</td>"
        ));
        assert!(!html.contains("Primary IP Address"));
        // No peer fields: the registration answers; no registration at all: say so.
        let mut s = view(Role::Primary, HaState::PrimaryActive);
        s.peer_name = None;
        s.peer_address = None;
        assert_eq!(cell(&render(&s), "peer-address"), "ha2 (192.0.2.122)");
        assert_eq!(
            cell(&render(&unregistered_primary()), "peer-address"),
            "not registered"
        );
    }

    #[test]
    fn settings_show_state_type_and_mode() {
        let html = render(&view(Role::Secondary, HaState::SecondaryLostPrimary));
        assert_eq!(cell(&html, "state"), "Secondary Lost Primary");
        assert_eq!(cell(&html, "failover-type"), "Manual");
        assert_eq!(cell(&html, "mode"), "HA Enabled");
        let html = render(&unregistered_primary());
        assert_eq!(cell(&html, "state"), "Stand Alone");
        assert_eq!(cell(&html, "failover-type"), "not configured");
        assert_eq!(cell(&html, "mode"), "HA Not Configured");
    }

    #[test]
    fn status_is_a_check_when_enabled_and_healthy_else_a_cross_with_the_reason() {
        let healthy = view(Role::Primary, HaState::PrimaryActive);
        let html = render(&healthy);
        let status = cell(&html, "status");
        assert!(status.contains("class=\"ok\">\u{2714}"), "{status}");
        assert!(status.contains("HA enabled and healthy"));
        // A warning is not a failure.
        let mut warn = healthy.clone();
        warn.health.disk = Level::Warning;
        assert!(cell(&render(&warn), "status").contains('\u{2714}'));

        let cases: Vec<(StatusView, &str)> = vec![
            (unregistered_primary(), "HA not configured"),
            (
                StatusView {
                    mode: ConfigMode::Initializing,
                    ..healthy.clone()
                },
                "HA initializing",
            ),
            (
                StatusView {
                    mode: ConfigMode::Alone,
                    peer_reachable: false,
                    ..healthy.clone()
                },
                "peer unreachable (HA Alone)",
            ),
            (
                StatusView {
                    blocked: Some("the address of ha1 changed".into()),
                    ..healthy.clone()
                },
                "HA blocked: the address of ha1 changed",
            ),
            (
                StatusView {
                    health: HealthSummary {
                        database: Level::Failed,
                        ..ok_health()
                    },
                    ..healthy.clone()
                },
                "Database failed",
            ),
        ];
        for (s, reason) in cases {
            let status = cell(&render(&s), "status").to_string();
            assert!(status.contains("class=\"bad\">\u{2718}"), "{status}");
            assert!(status.contains(reason), "{status} lacks {reason}");
            assert!(!status.contains('\u{2714}'));
        }
        // Several reasons are all given.
        let s = StatusView {
            mode: ConfigMode::Alone,
            peer_reachable: false,
            health: HealthSummary {
                processes: Level::Failed,
                ..ok_health()
            },
            ..healthy
        };
        assert_eq!(
            status_reasons(&s),
            ["peer unreachable (HA Alone)", "Processes failed"]
        );
    }

    #[test]
    fn logging_select_marks_the_current_level() {
        let s = view(Role::Primary, HaState::PrimaryActive);
        for (level, label) in [
            ("error", "Error"),
            ("info", "Information"),
            ("trace", "Trace"),
        ] {
            let html = main_page(&PageModel {
                status: &s,
                version: "1",
                csrf: "c",
                log_level: level,
                events: &[],
                page: 1,
                pages: 1,
                message: None,
                tls_fingerprint: None,
            });
            assert!(html.contains(&format!(
                "<option value=\"{level}\" selected>{label}</option>"
            )));
            // One level selected in the logging form (the settings form has a select too).
            let form = html
                .split("action=\"/log-level\"")
                .nth(1)
                .and_then(|f| f.split("</form>").next())
                .unwrap_or_default();
            assert_eq!(form.matches(" selected>").count(), 1, "{level}");
        }
        let html = render(&s);
        assert!(html.contains("action=\"/log-level\""));
        assert!(html.contains("name=\"level\""));
        assert!(html.contains("<button type=\"submit\">Save</button>"));
        assert!(html.contains("href=\"/logs.zip\""));
        assert!(html.contains("Download Health Monitor log files"));
    }

    #[test]
    fn events_are_listed_in_the_given_order_with_utc_times() {
        let events = [
            event(
                1_800_000_000,
                HaState::SecondaryActive,
                "Completed failover",
            ),
            event(
                951_782_400,
                HaState::SecondaryLostPrimary,
                "Lost the primary",
            ),
            event(0, HaState::SecondarySyncing, "Syncing"),
        ];
        let html = render_with(
            &view(Role::Secondary, HaState::SecondaryActive),
            &events,
            1,
            1,
        );
        let table = &html[html.find("id=\"events\"").unwrap_or(0)..];
        let rows: Vec<&str> = table.split("<tr class=").skip(1).collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].contains("<td class=\"time\">2027-01-15 08:00:00</td><td>Secondary Active</td><td>Completed failover</td>"));
        assert!(rows[1].contains(
            "2000-02-29 00:00:00</td><td>Secondary Lost Primary</td><td>Lost the primary"
        ));
        assert!(rows[2].contains("1970-01-01 00:00:00</td><td>Secondary Syncing</td><td>Syncing"));
        assert!(!html.contains("?page="), "one page: no links");
        let empty = render(&view(Role::Secondary, HaState::SecondaryActive));
        assert!(empty.contains("No events"));
    }

    #[test]
    fn event_pages_are_linked() {
        let s = view(Role::Secondary, HaState::SecondaryActive);
        let events = [event(5, HaState::SecondaryActive, "x")];
        let html = render_with(&s, &events, 1, 3);
        assert!(html.contains("<strong aria-current=\"page\">1</strong>"));
        assert!(html.contains("<a href=\"/?page=2\">2</a>"));
        assert!(html.contains("<a href=\"/?page=3\">3</a>"));
        assert!(html.contains("<a href=\"/?page=2\">Older &raquo;</a>"));
        assert!(!html.contains("Newer"));
        let html = render_with(&s, &events, 3, 3);
        assert!(html.contains("<a href=\"/?page=2\">&laquo; Newer</a>"));
        assert!(!html.contains("Older"));
        // Many pages: a window around the current one, plus first and last.
        let html = render_with(&s, &events, 10, 40);
        for n in [1, 8, 9, 11, 12, 40] {
            assert!(
                html.contains(&format!("<a href=\"/?page={n}\">{n}</a>")),
                "page {n}"
            );
        }
        for n in [2, 7, 13, 39] {
            assert!(
                !html.contains(&format!("<a href=\"/?page={n}\">{n}</a>")),
                "page {n}"
            );
        }
        assert_eq!(html.matches("&hellip;").count(), 2);
        // Out-of-range page numbers are clamped.
        let html = render_with(&s, &events, 0, 2);
        assert!(html.contains("<strong aria-current=\"page\">1</strong>"));
    }

    #[test]
    fn health_table_shows_own_and_peer_levels() {
        let mut s = view(Role::Secondary, HaState::SecondaryActive);
        s.health.disk = Level::Warning;
        s.health.nic = Level::Unknown;
        s.peer_health = Some(HealthSummary {
            database: Level::Failed,
            ..ok_health()
        });
        s.peer_state = Some(HaState::PrimaryFailover);
        let html = render(&s);
        assert_eq!(cell(&html, "health-processes"), "ok");
        assert_eq!(cell(&html, "health-disk"), "warning");
        assert_eq!(cell(&html, "health-nic"), "unknown");
        assert_eq!(cell(&html, "peer-health-database"), "failed");
        assert_eq!(cell(&html, "peer-state"), "Primary Failover");
        s.peer_health = None;
        s.peer_state = None;
        let html = render(&s);
        for item in ["processes", "database", "disk", "nic"] {
            assert_eq!(cell(&html, &format!("peer-health-{item}")), "unknown");
        }
        assert_eq!(cell(&html, "peer-state"), "unknown");
    }

    #[test]
    fn registration_form_only_on_an_unregistered_primary() {
        let html = render(&unregistered_primary());
        assert!(html.contains("HA Configuration"));
        assert!(html.contains("action=\"/register\""));
        for field in [
            "name=\"key\"",
            "type=\"password\"",
            "name=\"emails\"",
            "name=\"failover_type\"",
            "<option value=\"manual\"",
            "<option value=\"automatic\"",
            "name=\"secondary\"",
            "type=\"checkbox\" id=\"vip\" name=\"vip\"",
            "name=\"vip4\"",
            "name=\"vip6\"",
        ] {
            assert!(html.contains(field), "{field}");
        }
        assert!(!html.contains("action=\"/remove\""));

        // Registered primary: the remove form instead.
        let html = render(&view(Role::Primary, HaState::PrimaryActive));
        assert!(!html.contains("action=\"/register\""));
        assert!(html.contains("action=\"/remove\""));
        assert!(html.contains("name=\"purge\""));
        assert!(html.contains("also remove HA data from both servers"));
        assert!(html.contains(&format!("onsubmit=\"{REMOVE_CONFIRM}\"")));

        // Registration under way: neither.
        let mut s = unregistered_primary();
        s.mode = ConfigMode::Initializing;
        let html = render(&s);
        assert!(!html.contains("action=\"/register\"") && !html.contains("action=\"/remove\""));

        // A secondary never shows the section.
        let mut s = unregistered_primary();
        s.role = Role::Secondary;
        let html = render(&s);
        assert!(!html.contains("HA Configuration"));
        assert!(!html.contains("action=\"/register\""));
        let html = render(&view(Role::Secondary, HaState::SecondaryActive));
        assert!(!html.contains("action=\"/remove\""));
    }

    #[test]
    fn every_form_posts_and_carries_the_csrf_token() {
        let pages = [
            render(&unregistered_primary()),
            render(&view(Role::Primary, HaState::PrimaryActive)),
            render(&view(Role::Secondary, HaState::SecondaryAlone)),
            render(&view(Role::Secondary, HaState::SecondaryActive)),
        ];
        for html in &pages {
            let forms: Vec<&str> = html.split("<form").skip(1).collect();
            assert!(forms.len() >= 3);
            for f in forms {
                let f = &f[..f.find("</form>").unwrap_or(f.len())];
                assert!(f.contains("method=\"post\""), "{f}");
                assert!(f.contains("name=\"csrf\" value=\"tok3n\""), "{f}");
            }
        }
    }

    #[test]
    fn page_is_self_contained() {
        let html = render(&view(Role::Primary, HaState::PrimaryActive));
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<meta charset=\"utf-8\">"));
        assert!(!html.contains("src="), "no external scripts or images");
        assert!(!html.contains("<link"), "no external stylesheets");
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(html.contains("setInterval"), "auto-refresh script");
        assert!(!html.contains("id=\"message\""));
        let with_msg = main_page(&PageModel {
            status: &view(Role::Primary, HaState::PrimaryActive),
            version: "1",
            csrf: "c",
            log_level: "info",
            events: &[],
            page: 1,
            pages: 1,
            message: Some("failover started"),
            tls_fingerprint: Some("AB:CD"),
        });
        assert_eq!(element(&with_msg, "message"), "failover started");
        assert_eq!(element(&with_msg, "tls-fingerprint"), "AB:CD");
    }

    #[test]
    fn login_page_posts_the_key_and_shows_errors_and_waits() {
        let html = login_page(None, 0);
        assert!(html.contains("<form method=\"post\" action=\"/login\">"));
        assert!(html.contains("type=\"password\" id=\"key\" name=\"key\""));
        assert!(!html.contains("id=\"error\""));
        assert!(!html.contains("disabled"));
        assert!(!html.contains("http-equiv"));
        let html = login_page(Some("wrong authentication key"), 4);
        assert_eq!(element(&html, "error"), "wrong authentication key");
        assert!(element(&html, "wait").contains("try again in 4 s"));
        assert!(html.contains("<button type=\"submit\" disabled>"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"4;url=/\">"));
    }

    #[test]
    fn base64_matches_known_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn both_servers_of_a_pair_show_the_settings_form_holding_the_settings() {
        let mut s = view(Role::Secondary, HaState::SecondarySyncing);
        s.registration = Some(Registration {
            failover_type: FailoverType::Automatic,
            vips: vec!["192.0.2.10/24".into(), "2001:db8::10/64".into()],
            emails: vec!["ops@example.com".into()],
            ..registration()
        });
        let html = render(&s);
        let form = html
            .split("id=\"ha-settings\">")
            .nth(1)
            .and_then(|f| f.split("</form>").next())
            .unwrap_or_else(|| panic!("no settings form on the secondary: {html}"));
        assert!(form.contains("name=\"csrf\" value=\"tok3n\""), "{form}");
        assert!(
            form.contains("<option value=\"automatic\" selected>"),
            "{form}"
        );
        assert!(
            form.contains("name=\"vip4\" value=\"192.0.2.10/24\""),
            "{form}"
        );
        assert!(
            form.contains("name=\"vip6\" value=\"2001:db8::10/64\""),
            "{form}"
        );
        assert!(form.contains("value=\"ops@example.com\""), "{form}");
        // Removal stays with the primary's page; registration with an unregistered one.
        assert!(!html.contains("action=\"/remove\""));
        assert!(!render(&unregistered_primary()).contains("ha-settings"));
    }

    #[test]
    fn csp_hashes_match_the_inline_code_on_the_page() {
        let csp = content_security_policy();
        assert!(!csp.contains("unsafe-inline"));
        let primary = render(&view(Role::Primary, HaState::PrimaryActive));
        let secondary = render(&view(Role::Secondary, HaState::SecondaryAlone));
        let between = |html: &str, open: &str, close: &str| {
            let a = html.find(open).map_or(0, |i| i + open.len());
            let b = a + html[a..].find(close).unwrap_or(0);
            html[a..b].to_string()
        };
        let style = between(&primary, "<style>", "</style>");
        let script = between(&primary, "<script>", "</script>");
        let remove = between(&primary, "id=\"remove\" onsubmit=\"", "\"");
        let failover = between(&secondary, "id=\"failover\" onsubmit=\"", "\"");
        for inline in [style, script, remove, failover] {
            assert!(!inline.is_empty());
            assert!(csp.contains(&csp_hash(&inline)), "{inline}");
        }
    }
}
