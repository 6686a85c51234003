//! The page shell every console page shares (navigation, who is signed in, the message an
//! action left), the stylesheet, and small formatting helpers. Pure: data in, HTML out.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::session::{Flash, Session};

/// The sections, in the navigation's order: (path, label).
pub const SECTIONS: [(&str, &str); 7] = [
    ("/console", "Overview"),
    ("/console/engagements", "Engagements"),
    ("/console/exceptions", "Exceptions"),
    ("/console/queues", "Parked & dead letters"),
    ("/console/reconciliation", "Reconciliation"),
    ("/console/receivables", "Receivables"),
    ("/console/log", "Operator log"),
];

/// What the shell needs besides the page's own content.
pub struct Shell<'a> {
    /// The page's title.
    pub title: &'a str,
    /// Which section is current (a path of [`SECTIONS`]).
    pub section: &'a str,
    /// The signed-in operator (the key's name).
    pub operator: &'a str,
    /// The session (its CSRF token for the sign-out form).
    pub session: &'a Session,
    /// What the last action did.
    pub flash: Option<Flash>,
    /// Where the data comes from (`db o2c.db`).
    pub origin: &'a str,
}

/// A page's `head`: its title and the stylesheet (the only resource a page loads).
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · o2c console" }
            link rel="stylesheet" href="/console/style.css";
        }
    }
}

/// A whole page.
pub fn page(shell: Shell<'_>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(shell.title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "o2c" }
                    nav aria-label="Sections" {
                        ul {
                            @for (href, label) in SECTIONS {
                                li {
                                    @if href == shell.section {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form.signout method="post" action="/console/logout" {
                        input type="hidden" name="csrf" value=(shell.session.csrf);
                        span { "Signed in as " strong #operator { (shell.operator) } }
                        " "
                        button type="submit" { "Sign out" }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (shell.title) }
                    @if let Some(f) = &shell.flash {
                        @if f.error {
                            p.flash.error role="alert" #flash { (f.text) }
                        } @else {
                            p.flash.notice role="status" #flash { (f.text) }
                        }
                    }
                    (content)
                }
                footer { "Data: " (shell.origin) ". Times are UTC." }
            }
        }
    }
}

/// A sign-in page: the shell without navigation, an error if any, then `body`.
fn sign_in_page(error: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body {
                main #main.login {
                    h1 { "o2c operator console" }
                    @if let Some(e) = error {
                        p.flash.error role="alert" #flash { (e) }
                    }
                    (body)
                }
            }
        }
    }
}

/// The sign-in page (no session yet).
pub fn login(error: Option<&str>) -> Markup {
    sign_in_page(
        error,
        html! {
            form method="post" action="/console/login" {
                label for="key" { "Operator API key" }
                input #key type="password" name="key" autocomplete="off" required;
                p.hint { "An operator key from " code { "o2c sources add NAME --operator" } ". It stays on the server; the browser gets a session cookie." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// The sign-in page of the AWS console: it opens from the link `serve` printed.
pub fn link_login(error: Option<&str>) -> Markup {
    sign_in_page(
        error,
        html! {
            p { "Open the sign-in link " code { "o2c serve --target aws" } " printed in its terminal. You act as the AWS identity that started it." }
        },
    )
}

/// A table head; a column named with a trailing `#` holds numbers (right-aligned).
pub fn thead(columns: &[&str]) -> Markup {
    html! {
        thead { tr {
            @for c in columns {
                @if let Some(name) = c.strip_suffix('#') { th.num scope="col" { (name) } } @else { th scope="col" { (c) } }
            }
        } }
    }
}

/// The whole stylesheet served at `/console/style.css`.
pub fn stylesheet() -> &'static str {
    static CSS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSS.get_or_init(|| format!("{STYLE}{}\n", super::charts::legend_css()))
}

/// `s` as one URL path segment: everything but RFC 3986's unreserved characters
/// percent-encoded (an id holding `#`, `/` or `?` would otherwise cut the link short).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A timestamp as operators read it.
pub fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// How long ago, short (`3 d`, `5 h`, `12 min`, `40 s`).
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        s if s >= 86_400 => format!("{} d", s / 86_400),
        s if s >= 3_600 => format!("{} h", s / 3_600),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// A status word with a class for its colour (the word itself carries the meaning).
pub fn badge(word: &str) -> Markup {
    let class = match word {
        "active" | "agrees" | "resolved" | "cleared" | "Synced" | "posted" | "paid" => "ok",
        "rejected"
        | "provisioning_failed"
        | "billing_setup_failed"
        | "posting_failed"
        | "open"
        | "break"
        | "refused"
        | "dead-letter"
        | "Error" => "bad",
        "assigned" | "waived" | "awaiting_approval" | "provisioning" => "warn",
        _ => "neutral",
    };
    html! { span class={ "badge " (class) } { (word) } }
}

/// A form's hidden CSRF field.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// The console's stylesheet: system fonts, WCAG AA contrast (text #1a1a1a on white,
/// links #0b4f9c, badges dark on light), a visible focus ring, no scripts; then the
/// charts' legend rules ([`stylesheet`]).
pub const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;background:#fff}
a{color:#0b4f9c}
a:focus,button:focus,input:focus,select:focus,textarea:focus,main:focus{outline:3px solid #f0a500;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#fff;padding:4px;z-index:2}
header.top{display:flex;flex-wrap:wrap;align-items:center;gap:12px;padding:8px 16px;background:#17324d;color:#fff}
header.top a{color:#fff;text-decoration:none;padding:4px 6px;border-radius:3px}
header.top a[aria-current=page]{background:#fff;color:#17324d;font-weight:600}
header.top ul{display:flex;flex-wrap:wrap;gap:4px;list-style:none;margin:0;padding:0}
.brand{font-weight:700;font-size:18px;margin-right:8px}
form.signout{margin-left:auto;display:flex;align-items:center;gap:6px}
form.signout button{background:#fff;color:#17324d}
main{padding:12px 20px;max-width:1400px}
h1{font-size:22px;margin:8px 0 12px}h2{font-size:18px;margin:20px 0 8px}
table{border-collapse:collapse;margin:6px 0 16px;min-width:50%}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{padding:5px 10px;border-bottom:1px solid #d5d9de;text-align:left;vertical-align:top}
th{background:#eef1f4}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:13px;border:1px solid}
.badge.ok{background:#e3f4e6;color:#14532d;border-color:#14532d}
.badge.bad{background:#fde7e7;color:#7f1d1d;border-color:#7f1d1d}
.badge.warn{background:#fff4d6;color:#6b4300;border-color:#6b4300}
.badge.neutral{background:#eef1f4;color:#1f2d3a;border-color:#1f2d3a}
.flash{padding:8px 12px;border-radius:4px;border:1px solid}
.flash.error{background:#fde7e7;border-color:#7f1d1d;color:#7f1d1d}
.flash.notice{background:#e3f4e6;border-color:#14532d;color:#14532d}
form.filters{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-end;margin:6px 0 12px}
form.filters label,form.action label{display:flex;flex-direction:column;font-size:13px;font-weight:600}
input,select,textarea{font:inherit;padding:4px 6px;border:1px solid #6b7785;border-radius:3px}
button{font:inherit;padding:5px 12px;border:1px solid #17324d;border-radius:3px;background:#17324d;color:#fff;cursor:pointer}
.actions{display:flex;flex-wrap:wrap;gap:16px}
form.action{border:1px solid #d5d9de;border-radius:4px;padding:10px;display:flex;flex-direction:column;gap:6px;min-width:220px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px}dl.facts dt{font-weight:600}dl.facts dd{margin:0}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #d5d9de;border-radius:6px;padding:10px 14px;min-width:160px}
.card .n{font-size:26px;font-weight:700}
figure{margin:8px 0 16px}figcaption{font-weight:600;margin-bottom:4px}
.side{display:grid;grid-template-columns:1fr 1fr;gap:4px 16px}
.hint{font-size:13px;color:#3d4a57}
main.login{max-width:420px;margin:60px auto}main.login form{display:flex;flex-direction:column;gap:8px}
footer{padding:8px 20px;color:#3d4a57;font-size:13px}
code{font-size:13px}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_an_id_holds_url_delimiters_should_stay_one_path_segment() {
        assert_eq!(seg("delivery-intake#a5cb"), "delivery-intake%23a5cb");
        assert_eq!(seg("EXC-1:ENG-2:r1/x?y"), "EXC-1%3AENG-2%3Ar1%2Fx%3Fy");
        assert_eq!(seg("ENG-0068d00000GLBX01"), "ENG-0068d00000GLBX01");
        assert_eq!(seg("é"), "%C3%A9");
    }
}
