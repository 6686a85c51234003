//! Who may call `o2c serve`: one API key per source system or operator, created and
//! revoked by `o2c sources`, and the requests `serve` refused.
//!
//! - A key reads `o2c_<key id>_<secret>`: the id (48 random bits, hex) finds its row, the
//!   secret (256 random bits from the operating system's generator) proves it. Only the
//!   key's SHA-256 is stored: a key is as strong as 256 random bits, so a slow password
//!   hash would add nothing but latency to every request; the hash is compared in constant
//!   time. The key is shown once, when it is created.
//! - Grants are data: the `source` values and detail-types a key may publish (`*` for
//!   any), whether it may read and act as an operator, its largest request body and its
//!   request rate. A system that sends CRM events gets `o2c.crm` and its detail-types —
//!   it cannot post `PaymentReceived` or speak as `o2c.intake`.
//! - An operator action posted with a key (`ExceptionActionRequested`) must name the key's
//!   own name as its actor: the audit trail's identity is the credential's, not a claim.
//! - Revoking takes effect on the next request (keys are looked up per request, one
//!   primary-key read). Several active keys may share a name (rotation: add the new one,
//!   switch the system over, revoke the old one by its id).
//! - Every refusal (401, 403, 408, 413, 429) is recorded with its reason, the key's id and
//!   name when known, the client's address, the method and the path — never the body or the
//!   presented secret. The latest [`REFUSALS_KEPT`] are kept, so a flood of bad requests
//!   cannot grow the file without bound; the count covers all of them.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::db::{Cached, Db, atomic, db_err, row_err};
use o2c_app::O2cError;
use o2c_domain::events::Issue;

/// Every key starts with this, so a leaked one is recognisable (secret scanners).
pub const KEY_PREFIX: &str = "o2c_";

/// How many refusals are kept (the oldest beyond go).
pub const REFUSALS_KEPT: i64 = 10_000;

/// Grants: what a key may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// `source` values it may publish (`*`: any); empty: it publishes nothing.
    pub sources: Vec<String>,
    /// Detail-types it may publish (`*`: any).
    pub detail_types: Vec<String>,
    /// Reads the API and acts on exceptions as itself.
    pub operator: bool,
    /// Largest request body in bytes (below `serve --max-body`); `None`: serve's.
    pub max_body: Option<u64>,
    /// Requests per second (burst: one second's worth); `None`: serve's `--rate-limit`.
    pub rate_per_second: Option<u32>,
    /// The vendor whose signed webhooks authenticate as this key (`stripe`, `docusign`);
    /// the signing secret is kept apart and never listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// One key's record (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The id in the key, `o2c_<key_id>_…`.
    pub key_id: String,
    /// The system or person it belongs to (an operator action's actor).
    pub name: String,
    /// What it may do.
    pub grants: Grants,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a presented key was not accepted (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No key with the request.
    #[error("no credential: send `Authorization: Bearer <key>` or `X-Api-Key: <key>` (keys come from `o2c sources add`)")]
    Missing,
    /// Not an o2c key, an unknown id, or the wrong secret (not told apart: no oracle).
    #[error("the key is not valid")]
    Invalid {
        /// The id it claimed, when it had the key's shape.
        key_id: Option<String>,
    },
    /// A valid key that was revoked.
    #[error("the key was revoked at {at}")]
    Revoked {
        /// Its record.
        credential: Box<Credential>,
        /// When.
        at: DateTime<Utc>,
    },
}

impl Denied {
    /// The stable error code answered with it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "MissingAuthenticationToken",
            Self::Invalid { .. } => "InvalidApiKey",
            Self::Revoked { .. } => "RevokedApiKey",
        }
    }
}

/// Grants a value: listed exactly, or `*`.
fn granted(list: &[String], value: &str) -> bool {
    list.iter().any(|g| g == "*" || g == value)
}

/// What operators post, and the payload field that names who acts: an operator key may
/// publish these without a grant, and any key that posts one must be the one it names —
/// the audit trail's identity is the credential's, not a claim.
pub const OPERATOR_EVENTS: [(&str, &str, Option<&str>); 7] = [
    ("o2c.operator", "ExceptionActionRequested", Some("actor")),
    ("o2c.approvals", "InvoiceApproved", Some("approver_id")),
    ("o2c.approvals", "InvoiceRejected", Some("approver_id")),
    ("o2c.scheduler", "InvoiceRunRequested", Some("requested_by")),
    ("o2c.scheduler", "RevenueRunRequested", Some("requested_by")),
    ("o2c.scheduler", "ReconciliationRequested", Some("requested_by")),
    // `o2c invoice repost`: the invoice is released again, no one named.
    ("o2c.invoicing", "InvoiceReleased", None),
];

/// At most this many characters of a caller's text in a reason or a refusal.
const SHOWN: usize = 64;

/// A caller's text, safe to store and print: control characters replaced, at most `max`
/// characters.
pub fn shown(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

impl Credential {
    /// Whether this key may publish an entry `(source, detail_type)` whose detail is
    /// `detail`; the reason when not.
    pub fn may_publish(&self, source: &str, detail_type: &str, detail: &serde_json::Value) -> Result<(), String> {
        let operator_event = OPERATOR_EVENTS.iter().find(|(s, t, _)| *s == source && *t == detail_type);
        let granted_here = granted(&self.grants.sources, source) && granted(&self.grants.detail_types, detail_type);
        if !(granted_here || (self.grants.operator && operator_event.is_some())) {
            let (source, detail_type) = (shown(source, SHOWN), shown(detail_type, SHOWN));
            if !granted(&self.grants.sources, &source) {
                return Err(format!("{} may not publish as source `{source}` (granted: {})", self.name, names(&self.grants.sources)));
            }
            return Err(format!("{} may not publish `{detail_type}` (granted: {})", self.name, names(&self.grants.detail_types)));
        }
        if let Some((_, _, Some(field))) = operator_event {
            let who = detail.pointer(&format!("/payload/{field}")).and_then(|a| a.as_str()).unwrap_or_default();
            if who != self.name {
                return Err(format!(
                    "a {detail_type} by `{}` cannot be posted with {}'s key (its {field} is the key's name)",
                    shown(who, SHOWN),
                    self.name
                ));
            }
        }
        Ok(())
    }
}

fn names(v: &[String]) -> String {
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

/// What `o2c sources add` asks for.
#[derive(Debug, Clone)]
pub struct NewCredential {
    /// The system or person.
    pub name: String,
    /// What it may do.
    pub grants: Grants,
    /// The vendor's webhook signing secret, with `grants.webhook`.
    pub webhook_secret: Option<String>,
}

fn issue(field: &str, message: impl Into<String>) -> Issue {
    Issue::new(field, "invalid", message.into())
}

impl NewCredential {
    /// Every reason it cannot be created.
    pub fn check(&self) -> Vec<Issue> {
        let mut out = Vec::new();
        let ok_name =
            |s: &str| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
        if !ok_name(&self.name) {
            out.push(issue("name", "1 to 64 of A-Z a-z 0-9 . - _ @"));
        }
        let g = &self.grants;
        if g.sources.is_empty() != g.detail_types.is_empty() {
            out.push(issue("grants", "a publishing key needs both sources and detail-types"));
        }
        if g.sources.is_empty() && !g.operator {
            out.push(issue("grants", "the key may do nothing: give it --source and --detail-type, or --operator"));
        }
        for s in g.sources.iter().chain(&g.detail_types) {
            if s != "*" && (s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_whitespace() || c.is_control())) {
                out.push(issue("grants", format!("`{s}` is not a source or detail-type")));
            }
        }
        if g.max_body == Some(0) {
            out.push(issue("max_body", "must be above 0"));
        }
        match (&g.webhook, &self.webhook_secret) {
            (Some(v), Some(secret)) => {
                if !crate::webhooks::SCHEMES.contains(&v.as_str()) {
                    out.push(issue("webhook", format!("`{v}` is not a known scheme ({})", crate::webhooks::SCHEMES.join(", "))));
                }
                if secret.trim().len() < 16 {
                    out.push(issue("webhook_secret", "at least 16 characters"));
                }
                if g.sources.is_empty() {
                    out.push(issue("webhook", "a webhook source publishes: give it --source and --detail-type"));
                }
            }
            (None, None) => {}
            _ => out.push(issue("webhook", "--webhook and its secret go together")),
        }
        if g.rate_per_second == Some(0) {
            out.push(issue("rate_per_second", "must be above 0 (revoke the key to stop it)"));
        }
        out
    }
}

fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn random_hex(bytes: usize) -> Result<String, O2cError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| O2cError::dependency("os-random", e.to_string()))?;
    Ok(hex::encode(buf))
}

/// The key id in a presented key, if it has the key's shape.
fn key_id_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, 12) && hex_of(secret, 64)).then_some(id)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, O2cError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| O2cError::Bug(format!("stored time {s:?}: {e}")))
}

fn credential(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, String, Option<String>)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_credential((key_id, name, body, created, revoked): (String, String, String, String, Option<String>)) -> Result<Credential, O2cError> {
    Ok(Credential {
        key_id,
        name,
        grants: serde_json::from_str(&body).map_err(row_err)?,
        created_at: parse_time(&created)?,
        revoked_at: revoked.as_deref().map(parse_time).transpose()?,
    })
}

/// Creates a key; returns its record and the key itself (shown once, stored nowhere).
pub async fn add(db: &Db, new: NewCredential) -> Result<(Credential, String), O2cError> {
    let issues = new.check();
    if !issues.is_empty() {
        return Err(O2cError::Validation(issues));
    }
    let key_id = random_hex(6)?;
    let key = format!("{KEY_PREFIX}{key_id}_{}", random_hex(32)?);
    let cred = Credential { key_id, name: new.name, grants: new.grants, created_at: db.clock().now(), revoked_at: None };
    let (c, hash, secret) = (cred.clone(), sha256_hex(&key), new.webhook_secret);
    db.call(move |conn| {
        let tx = atomic(conn)?;
        let body = serde_json::to_string(&c.grants).map_err(row_err)?;
        tx.exec(
            "INSERT INTO access_keys (key_id, name, key_sha256, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.key_id, c.name, hash, body, c.created_at.to_rfc3339()],
        )
        .map_err(db_err)?;
        if let (Some(vendor), Some(secret)) = (&c.grants.webhook, secret) {
            tx.exec("INSERT INTO access_webhooks (key_id, vendor, secret) VALUES (?1, ?2, ?3)", params![c.key_id, vendor, secret.trim()])
                .map_err(db_err)?;
        }
        tx.commit()
    })
    .await?;
    db.commit()?;
    Ok((cred, key))
}

/// Every key's record, by name then creation.
pub async fn list(db: &Db) -> Result<Vec<Credential>, O2cError> {
    db.call(|c| {
        let mut stmt = c
            .prepare_cached("SELECT key_id, name, body, created_at, revoked_at FROM access_keys ORDER BY name, created_at")
            .map_err(db_err)?;
        let rows = stmt.query_map([], credential).map_err(db_err)?.collect::<Result<Vec<_>, _>>().map_err(db_err)?;
        rows.into_iter().map(to_credential).collect()
    })
    .await
}

/// Revokes the active keys named `name` (only the one with `key_id` when given); returns
/// the records revoked. Revoking is final: a revoked key never works again.
pub async fn revoke(db: &Db, name: &str, key_id: Option<&str>) -> Result<Vec<Credential>, O2cError> {
    let (name, key_id, at) = (name.to_owned(), key_id.map(str::to_owned), db.clock().now());
    let revoked = db
        .call(move |c| {
            let tx = atomic(c)?;
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE access_keys SET revoked_at = ?3 WHERE name = ?1 AND (?2 IS NULL OR key_id = ?2) AND revoked_at IS NULL \
                     RETURNING key_id, name, body, created_at, revoked_at",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![name, key_id, at.to_rfc3339()], credential)
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            drop(stmt);
            tx.commit()?;
            rows.into_iter().map(to_credential).collect::<Result<Vec<_>, _>>()
        })
        .await?;
    db.commit()?;
    Ok(revoked)
}

/// Checks a presented key: its record when it is valid and not revoked.
pub async fn authenticate(db: &Db, presented: Option<&str>) -> Result<Result<Credential, Denied>, O2cError> {
    let Some(presented) = presented.map(str::trim).filter(|k| !k.is_empty()) else { return Ok(Err(Denied::Missing)) };
    let Some(key_id) = key_id_of(presented).map(str::to_owned) else { return Ok(Err(Denied::Invalid { key_id: None })) };
    let hash = sha256_hex(presented);
    let id = key_id.clone();
    let found = db
        .call(move |c| {
            c.prepare_cached("SELECT key_id, name, body, created_at, revoked_at, key_sha256 FROM access_keys WHERE key_id = ?1")
                .map_err(db_err)?
                .query_row(params![id], |r| Ok((credential(r)?, r.get::<_, String>(5)?)))
                .optional()
                .map_err(db_err)
        })
        .await?;
    let Some((row, stored)) = found else { return Ok(Err(Denied::Invalid { key_id: Some(key_id) })) };
    if !bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
        return Ok(Err(Denied::Invalid { key_id: Some(key_id) }));
    }
    let cred = to_credential(row)?;
    Ok(match cred.revoked_at {
        Some(at) => Err(Denied::Revoked { credential: Box::new(cred), at }),
        None => Ok(cred),
    })
}

/// The active keys whose webhooks come from `vendor`, with their signing secrets.
pub async fn webhook_keys(db: &Db, vendor: &str) -> Result<Vec<(Credential, String)>, O2cError> {
    let vendor = vendor.to_owned();
    db.call(move |c| {
        let mut stmt = c
            .prepare_cached(
                "SELECT k.key_id, k.name, k.body, k.created_at, k.revoked_at, w.secret FROM access_webhooks w \
                 JOIN access_keys k ON k.key_id = w.key_id WHERE w.vendor = ?1 AND k.revoked_at IS NULL",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![vendor], |r| Ok((credential(r)?, r.get::<_, String>(5)?)))
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        rows.into_iter().map(|(row, secret)| Ok((to_credential(row)?, secret))).collect()
    })
    .await
}

/// One refused request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// When.
    pub at: DateTime<Utc>,
    /// The HTTP status answered.
    pub status: u16,
    /// The error code answered.
    pub code: String,
    /// The reason answered.
    pub reason: String,
    /// The key's id, when the request carried something shaped like a key.
    pub key_id: Option<String>,
    /// The key's name, when the key was found.
    pub name: Option<String>,
    /// The client's address.
    pub remote: Option<String>,
    /// `POST`, `GET`, …
    pub method: String,
    /// The request path (without its query).
    pub path: String,
}

/// Records a refusal (and forgets those beyond the latest [`REFUSALS_KEPT`]).
pub async fn record_refusal(db: &Db, mut r: Refusal) -> Result<(), O2cError> {
    // What the caller chose is cut short and made printable: a row is at most a few KB
    // (10,000 rows stay in the tens of MB), and listing it cannot drive a terminal.
    r.method = shown(&r.method, 16);
    r.path = shown(&r.path, 256);
    r.reason = shown(&r.reason, 1024);
    r.key_id = r.key_id.map(|k| shown(&k, 16));
    db.call(move |c| {
        let body = serde_json::to_string(&r).map_err(row_err)?;
        c.exec("INSERT INTO access_refusals (at, body) VALUES (?1, ?2)", params![r.at.to_rfc3339(), body]).map_err(db_err)?;
        let seq = c.last_insert_rowid();
        // One indexed range delete: the rows before the window (at most one each time).
        c.exec("DELETE FROM access_refusals WHERE seq <= ?1", params![seq - REFUSALS_KEPT]).map_err(db_err)?;
        Ok(())
    })
    .await
}

/// Refusals: how many there have been and the latest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusals {
    /// Since the database began (the sequence, not the rows kept).
    pub total: u64,
    /// The latest, newest first.
    pub latest: Vec<Refusal>,
}

/// The latest `limit` refusals and their total.
pub async fn refusals(db: &Db, limit: usize) -> Result<Refusals, O2cError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    db.call(move |c| {
        let total: i64 = c
            .row("SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'access_refusals'), 0)", [], |r| r.get(0))
            .map_err(db_err)?;
        let mut stmt = c.prepare_cached("SELECT body FROM access_refusals ORDER BY seq DESC LIMIT ?1").map_err(db_err)?;
        let bodies =
            stmt.query_map(params![limit], |r| r.get::<_, String>(0)).map_err(db_err)?.collect::<Result<Vec<_>, _>>().map_err(db_err)?;
        let latest = bodies.iter().map(|b| serde_json::from_str(b).map_err(row_err)).collect::<Result<Vec<_>, _>>()?;
        Ok(Refusals { total: u64::try_from(total).unwrap_or(0), latest })
    })
    .await
}

pub use o2c_app::ports::OperatorAction;

/// How many operator actions are kept (the oldest beyond go; the count covers all).
pub const ACTIONS_KEPT: i64 = 100_000;

/// Records an operator action.
pub async fn record_action(db: &Db, mut a: OperatorAction) -> Result<(), O2cError> {
    a.action = shown(&a.action, 64);
    a.object = a.object.map(|o| shown(&o, 128));
    a.outcome = shown(&a.outcome, 1024);
    db.call(move |c| {
        let body = serde_json::to_string(&a).map_err(row_err)?;
        c.exec("INSERT INTO access_actions (at, body) VALUES (?1, ?2)", params![a.at.to_rfc3339(), body]).map_err(db_err)?;
        let seq = c.last_insert_rowid();
        c.exec("DELETE FROM access_actions WHERE seq <= ?1", params![seq - ACTIONS_KEPT]).map_err(db_err)?;
        Ok(())
    })
    .await
}

/// The latest `limit` operator actions, newest first.
pub async fn actions(db: &Db, limit: usize) -> Result<Vec<OperatorAction>, O2cError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    db.call(move |c| {
        let mut stmt = c.prepare_cached("SELECT body FROM access_actions ORDER BY seq DESC LIMIT ?1").map_err(db_err)?;
        let bodies =
            stmt.query_map(params![limit], |r| r.get::<_, String>(0)).map_err(db_err)?.collect::<Result<Vec<_>, _>>().map_err(db_err)?;
        bodies.iter().map(|b| serde_json::from_str(b).map_err(row_err)).collect()
    })
    .await
}

impl o2c_app::ports::OperatorLog for crate::store::SqliteStore {
    async fn record_action(&self, action: &OperatorAction) -> Result<(), O2cError> {
        record_action(self.db(), action.clone()).await
    }

    async fn operator_actions(&self, limit: usize) -> Result<Vec<OperatorAction>, O2cError> {
        actions(self.db(), limit).await
    }
}

/// How many keys are active (`serve` warns at start when none is).
pub async fn active_keys(db: &Db) -> Result<u64, O2cError> {
    db.call(|c| {
        let n: i64 = c.row("SELECT COUNT(*) FROM access_keys WHERE revoked_at IS NULL", [], |r| r.get(0)).map_err(db_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn grants(sources: &[&str], types: &[&str], operator: bool) -> Grants {
        Grants {
            sources: sources.iter().map(|s| s.to_string()).collect(),
            detail_types: types.iter().map(|s| s.to_string()).collect(),
            operator,
            max_body: None,
            rate_per_second: None,
            webhook: None,
        }
    }

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("a.db")).unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn when_a_key_is_added_should_authenticate_only_that_key_and_store_only_its_hash() {
        let (_d, db) = db().await;
        let (cred, key) = add(
            &db,
            NewCredential { name: "crm".into(), grants: grants(&["o2c.crm"], &["OpportunityClosedWon"], false), webhook_secret: None },
        )
        .await
        .unwrap();
        assert!(key.starts_with("o2c_") && key.len() == 4 + 12 + 1 + 64, "{key}");
        assert_eq!(authenticate(&db, Some(&key)).await.unwrap().unwrap(), cred);
        // Same id, another secret; a truncated key; garbage; nothing.
        let forged = format!("{}{}", &key[..key.len() - 1], if key.ends_with('0') { '1' } else { '0' });
        assert_eq!(authenticate(&db, Some(&forged)).await.unwrap(), Err(Denied::Invalid { key_id: Some(cred.key_id.clone()) }));
        assert_eq!(authenticate(&db, Some(&key[..20])).await.unwrap(), Err(Denied::Invalid { key_id: None }));
        assert_eq!(authenticate(&db, Some("Bearer x")).await.unwrap(), Err(Denied::Invalid { key_id: None }));
        assert_eq!(authenticate(&db, None).await.unwrap(), Err(Denied::Missing));
        let stored: Vec<String> = db
            .call(|c| {
                let mut s = c.prepare("SELECT key_id || name || key_sha256 || body FROM access_keys").unwrap();
                Ok(s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect())
            })
            .await
            .unwrap();
        let secret = key.rsplit('_').next().unwrap();
        assert!(stored.iter().all(|row| !row.contains(secret)), "the secret is stored: {stored:?}");
    }

    #[tokio::test]
    async fn when_a_key_is_revoked_should_refuse_it_and_leave_the_other_key_of_the_name() {
        let (_d, db) = db().await;
        let g = grants(&["o2c.crm"], &["*"], false);
        let (old, old_key) = add(&db, NewCredential { name: "crm".into(), grants: g.clone(), webhook_secret: None }).await.unwrap();
        let (_, new_key) = add(&db, NewCredential { name: "crm".into(), grants: g, webhook_secret: None }).await.unwrap();
        let revoked = revoke(&db, "crm", Some(&old.key_id)).await.unwrap();
        assert_eq!(revoked.len(), 1);
        assert!(matches!(authenticate(&db, Some(&old_key)).await.unwrap(), Err(Denied::Revoked { .. })));
        assert!(authenticate(&db, Some(&new_key)).await.unwrap().is_ok());
        assert!(revoke(&db, "crm", Some(&old.key_id)).await.unwrap().is_empty(), "revoking twice revokes nothing");
        assert_eq!(revoke(&db, "crm", None).await.unwrap().len(), 1);
        assert_eq!(active_keys(&db).await.unwrap(), 0);
    }

    #[test]
    fn when_a_key_publishes_outside_its_grants_should_say_which_grant_is_missing() {
        let c = Credential {
            key_id: "0".repeat(12),
            name: "crm".into(),
            grants: grants(&["o2c.crm"], &["OpportunityClosedWon"], false),
            created_at: Utc::now(),
            revoked_at: None,
        };
        let d = serde_json::json!({});
        assert!(c.may_publish("o2c.crm", "OpportunityClosedWon", &d).is_ok());
        assert!(c.may_publish("o2c.intake", "OpportunityClosedWon", &d).unwrap_err().contains("source `o2c.intake`"));
        assert!(c.may_publish("o2c.crm", "PaymentReceived", &d).unwrap_err().contains("`PaymentReceived`"));
        // An operator key with no grant posts operator events, as itself only.
        let mut op = c.clone();
        op.name = "alice".into();
        op.grants = grants(&[], &[], true);
        let by = |field: &str, who: &str| serde_json::json!({"payload": {field: who}});
        assert!(op.may_publish("o2c.operator", "ExceptionActionRequested", &by("actor", "alice")).is_ok());
        assert!(op.may_publish("o2c.operator", "ExceptionActionRequested", &by("actor", "bob")).unwrap_err().contains("actor"));
        assert!(op.may_publish("o2c.approvals", "InvoiceApproved", &by("approver_id", "alice")).is_ok());
        assert!(op.may_publish("o2c.approvals", "InvoiceApproved", &by("approver_id", "bob")).unwrap_err().contains("approver_id"));
        assert!(op.may_publish("o2c.scheduler", "InvoiceRunRequested", &by("requested_by", "alice")).is_ok());
        assert!(op.may_publish("o2c.invoicing", "InvoiceReleased", &d).is_ok());
        assert!(op.may_publish("o2c.bank", "PaymentReceived", &d).is_err(), "not a business event");
        // Even a key granted everything cannot approve in someone else's name.
        let mut all = c.clone();
        all.grants = grants(&["*"], &["*"], false);
        assert!(all.may_publish("o2c.approvals", "InvoiceRejected", &by("approver_id", "bob")).unwrap_err().contains("approver_id"));
        assert!(all.may_publish("o2c.bank", "PaymentReceived", &d).is_ok());
        // A caller's text in a reason is cut short and printable.
        let long = format!("\u{1b}[31m{}", "x".repeat(500));
        let reason = c.may_publish(&long, "T", &d).unwrap_err();
        assert!(reason.len() < 200 && !reason.contains('\u{1b}'), "{reason}");
    }

    #[test]
    fn when_a_new_key_is_malformed_should_list_every_reason() {
        let bad = NewCredential { name: "a b".into(), grants: grants(&["o2c crm"], &[], false), webhook_secret: None };
        let fields: Vec<_> = bad.check().into_iter().map(|i| i.field).collect();
        assert!(fields.contains(&"name".to_string()) && fields.iter().filter(|f| *f == "grants").count() >= 2, "{fields:?}");
    }

    #[tokio::test]
    async fn when_refusals_pass_the_cap_should_keep_the_latest_and_count_all() {
        let (_d, db) = db().await;
        let r = |n: u16| Refusal {
            at: Utc::now(),
            status: n,
            code: "InvalidApiKey".into(),
            reason: "the key is not valid".into(),
            key_id: None,
            name: None,
            remote: Some("127.0.0.1:1".into()),
            method: "POST".into(),
            path: "/v1/events".into(),
        };
        // Fill past the cap cheaply: move the sequence on, as if 10,000 had come before.
        db.call(|c| {
            c.execute_batch(&format!(
                "INSERT INTO access_refusals (seq, at, body) VALUES (1, 'x', '{{}}'); \
                 UPDATE sqlite_sequence SET seq = {REFUSALS_KEPT} WHERE name = 'access_refusals';"
            ))
            .unwrap();
            Ok(())
        })
        .await
        .unwrap();
        record_refusal(&db, r(401)).await.unwrap();
        record_refusal(&db, r(403)).await.unwrap();
        let got = refusals(&db, 10).await.unwrap();
        assert_eq!(got.total, u64::try_from(REFUSALS_KEPT).unwrap() + 2);
        assert_eq!(got.latest.iter().map(|r| r.status).collect::<Vec<_>>(), vec![403, 401], "the placeholder row went");
    }
}
