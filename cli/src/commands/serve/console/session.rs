//! Console sessions: an operator signs in once with an operator API key; the browser then
//! holds only an opaque session token (a `HttpOnly`, `SameSite=Strict` cookie scoped to
//! `/console`). The key stays in this process and is checked again on every request by the
//! same gate as the API's (revocation, rate, operator grant), so a revoked key signs its
//! sessions out on their next request.
//!
//! Every form carries the session's CSRF token besides: `SameSite=Strict` keeps other
//! sites' requests cookie-less, the token keeps them out where it is not honoured, and a
//! browser's `Sec-Fetch-Site` / `Origin` must say the form came from this origin
//! ([`same_origin`]). Cookies ignore ports, so each console names its cookie with a random
//! suffix: two consoles on one host (embedded and AWS) keep their sessions apart.
//! Sessions live in memory (a restart signs everyone out) and end after [`SESSION_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// The cookie names' prefix (a random suffix per console follows).
pub const COOKIE_PREFIX: &str = "o2c_console_";

/// How long a session lasts from sign-in (a working day).
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// At most this many live sessions (the oldest go first beyond it).
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Clone)]
pub struct Session {
    /// The opaque token in the cookie.
    pub token: String,
    /// The operator key it signed in with (never sent back to the browser).
    pub key: String,
    /// What every form must carry back.
    pub csrf: String,
    /// When it ends.
    pub expires: Instant,
    /// A message for the next page shown (what an action did), taken once.
    pub flash: Option<Flash>,
}

/// A message for the next page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flash {
    /// An error (else a notice).
    pub error: bool,
    /// The text.
    pub text: String,
}

/// The live sessions of one console.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    cookie: String,
}

impl Default for Sessions {
    fn default() -> Self {
        let suffix = random_token().map_or_else(|| format!("{:x}", std::process::id()), |t| t[..12].to_owned());
        Self { map: Mutex::new(HashMap::new()), cookie: format!("{COOKIE_PREFIX}{suffix}") }
    }
}

/// 256 random bits from the operating system's generator, hex.
pub fn random_token() -> Option<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Sessions {
    /// A new session for `key`; `None` when the generator fails.
    pub fn create(&self, key: String) -> Option<Session> {
        let s = Session { token: random_token()?, key, csrf: random_token()?, expires: Instant::now() + SESSION_TTL, flash: None };
        let mut map = self.map.lock().ok()?;
        let now = Instant::now();
        map.retain(|_, v| v.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.values().min_by_key(|v| v.expires).map(|v| v.token.clone())
        {
            map.remove(&oldest);
        }
        map.insert(s.token.clone(), s.clone());
        Some(s)
    }

    /// The `Set-Cookie` value that hands the browser its session.
    pub fn set_cookie(&self, token: &str) -> String {
        format!("{}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}", self.cookie, SESSION_TTL.as_secs())
    }

    /// The `Set-Cookie` value that removes it.
    pub fn clear_cookie(&self) -> String {
        format!("{}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0", self.cookie)
    }

    /// The live session the request's cookie names.
    pub fn find(&self, headers: &HeaderMap) -> Option<Session> {
        let token = token_of(headers, &self.cookie)?;
        let map = self.map.lock().ok()?;
        // Looked up by the token itself: a map probe does not leak which prefix matched
        // in any way a 256-bit guess could use.
        map.get(token).filter(|s| s.expires > Instant::now()).cloned()
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(token);
        }
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, token: &str, flash: Flash) {
        if let Ok(mut map) = self.map.lock()
            && let Some(s) = map.get_mut(token)
        {
            s.flash = Some(flash);
        }
    }

    /// Takes the session's message, if any.
    pub fn take_flash(&self, token: &str) -> Option<Flash> {
        self.map.lock().ok()?.get_mut(token)?.flash.take()
    }
}

impl Session {
    /// Whether a form's token is this session's (constant time).
    pub fn csrf_ok(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The session token in the request's `Cookie` headers, under `name`.
pub fn token_of<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Whether a browser says the request comes from this origin: `Sec-Fetch-Site` is
/// `same-origin`, else `Origin` names the `Host` it was sent to. A client that sends
/// neither (curl, a script with the cookie) is not a browser another site can drive.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return site.eq_ignore_ascii_case("same-origin");
    }
    match (get("origin"), get("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, h)| h.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn when_a_cookie_header_holds_the_session_among_others_should_find_it() {
        let sessions = Sessions::default();
        let s = sessions.create("o2c_k_secret".into()).expect("session");
        let mut h = HeaderMap::new();
        h.append(axum::http::header::COOKIE, HeaderValue::from_static("theme=dark"));
        h.append(axum::http::header::COOKIE, HeaderValue::from_str(&format!("a=b; {}={}", sessions.cookie, s.token)).expect("header"));
        assert_eq!(sessions.find(&h).map(|f| f.key), Some("o2c_k_secret".to_owned()));
        let other = Sessions::default();
        assert_ne!(other.cookie, sessions.cookie, "two consoles on one host keep their cookies apart");
        assert!(other.find(&h).is_none());
        assert!(s.csrf_ok(&s.csrf) && !s.csrf_ok("forged") && !s.csrf_ok(""));
        sessions.remove(&s.token);
        assert!(sessions.find(&h).is_none(), "a signed-out token must not find its session");
    }

    #[test]
    fn when_a_flash_is_taken_should_be_gone_for_the_next_page() {
        let sessions = Sessions::default();
        let s = sessions.create("k".into()).expect("session");
        sessions.flash(&s.token, Flash { error: true, text: "refused".into() });
        assert_eq!(sessions.take_flash(&s.token).map(|f| f.text), Some("refused".to_owned()));
        assert_eq!(sessions.take_flash(&s.token), None);
    }

    #[test]
    fn when_a_browser_posts_from_another_origin_should_not_count_as_same_origin() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin(&h(&[("sec-fetch-site", "same-origin"), ("host", "127.0.0.1:4010")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "same-site"), ("host", "127.0.0.1:4010")])), "another port of the host");
        assert!(!same_origin(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(same_origin(&h(&[("origin", "http://127.0.0.1:4010"), ("host", "127.0.0.1:4010")])));
        assert!(!same_origin(&h(&[("origin", "http://127.0.0.1:4020"), ("host", "127.0.0.1:4010")])));
        assert!(!same_origin(&h(&[("origin", "null"), ("host", "127.0.0.1:4010")])));
        assert!(same_origin(&h(&[("host", "127.0.0.1:4010")])), "no browser headers: not a browser another site drives");
    }
}
