//! Events the bus accepted that matched no rule: archived (so a replay still sees them)
//! but delivered nowhere. EventBridge keeps no list of them either — only its
//! `MatchedEvents` metric falls short of `Invocations` — so o2c counts and lists them here,
//! for `o2c unrouted` and `GET /v1/unrouted`: an event a source sent under a wrong name or
//! an unsubscribed detail-type is visible, never silently kept out of sight.

use rusqlite::params;
use serde::Serialize;

use crate::db::{Cached, Db, db_err};
use o2c_app::O2cError;

/// One event that matched no rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnroutedEvent {
    /// The id `PutEvents` answered with.
    pub event_id: String,
    /// When the bus received it (milliseconds since the epoch).
    pub received_at: i64,
    /// Its `source`.
    pub source: String,
    /// Its `detail-type`.
    pub detail_type: String,
}

/// How many events matched no rule, and the latest of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unrouted {
    /// All of them since the archive began.
    pub total: u64,
    /// The latest, newest first.
    pub latest: Vec<UnroutedEvent>,
}

/// Counts the events that matched no rule and lists the latest `limit` (a partial index
/// holds only them: the cost follows their number, not the archive's).
pub async fn unrouted(db: &Db, limit: usize) -> Result<Unrouted, O2cError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    db.call(move |c| {
        let total: i64 = c.row("SELECT COUNT(*) FROM bus_events WHERE matched_rules = '[]'", [], |r| r.get(0)).map_err(db_err)?;
        let mut stmt = c
            .prepare_cached(
                "SELECT event_id, received_at, source, detail_type FROM bus_events WHERE matched_rules = '[]' ORDER BY seq DESC LIMIT ?1",
            )
            .map_err(db_err)?;
        let latest = stmt
            .query_map(params![limit], |r| {
                Ok(UnroutedEvent { event_id: r.get(0)?, received_at: r.get(1)?, source: r.get(2)?, detail_type: r.get(3)? })
            })
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        Ok(Unrouted { total: u64::try_from(total).unwrap_or(0), latest })
    })
    .await
}
