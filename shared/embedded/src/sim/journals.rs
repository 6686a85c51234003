//! The ERP simulator's revenue journals: create-or-get by journal id, validated as a general
//! ledger would — a known legal entity, an open period, lines in the journal's currency that
//! sum to its total.

use o2c_app::O2cError;
use o2c_app::ports::{ConnectorError, ExternalObject, ObjectStatus, System};
use o2c_domain::revenue::RevenueJournal;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Simulators, permanent};
use crate::db::{Cached, db_err, row_err};

/// A revenue journal posted in the simulated ERP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimJournal {
    /// ERP journal id.
    pub erp_journal_id: String,
    /// The journal as posted.
    pub journal: RevenueJournal,
}

impl Simulators {
    /// Posts `journal` under its id, or returns the journal already posted under it.
    pub(super) async fn journal(&self, journal: &RevenueJournal) -> Result<ExternalObject, ConnectorError> {
        let j = journal.clone();
        let closed = self.erp_closed_through.get(&j.legal_entity_id).copied();
        self.operate(System::Erp, "post_journal", j.journal_id.clone(), move |tx, at| {
            if let Some((id, body)) = tx
                .row("SELECT erp_journal_id, body FROM sim_journals WHERE journal_id = ?1", params![j.journal_id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .optional()
                .map_err(db_err)?
            {
                let existing: RevenueJournal = serde_json::from_str(&body).map_err(row_err)?;
                if existing.lines != j.lines || existing.period != j.period {
                    return Ok(Err(permanent(System::Erp, 409, "DUP_JOURNAL", format!("Journal {} was posted with other lines", j.journal_id))));
                }
                return Ok(Ok((ExternalObject { id, created: false, status: ObjectStatus::Active }, "existing")));
            }
            let Some(closed) = closed else {
                return Ok(Err(permanent(System::Erp, 400, "INVALID_KEY_OR_REF", format!("Unknown subsidiary for {}", j.legal_entity_id))));
            };
            if closed.is_some_and(|c| j.period <= c) {
                return Ok(Err(permanent(System::Erp, 400, "PERIOD_CLOSED", format!("Accounting period {} is closed", j.period))));
            }
            let sum: rust_decimal::Decimal = j.lines.iter().map(|l| l.amount.amount).sum();
            if j.lines.is_empty() || j.lines.iter().any(|l| l.amount.currency != j.total.currency) || sum != j.total.amount {
                return Ok(Err(permanent(System::Erp, 400, "UNBALANCED", format!("Journal lines sum to {sum}, total says {}", j.total))));
            }
            let id = format!("JE{:07}", super::next_number(tx, "journal")?);
            tx.exec(
                "INSERT INTO sim_journals (journal_id, erp_journal_id, legal_entity_id, period, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![j.journal_id, id, j.legal_entity_id, j.period.to_string(), serde_json::to_string(&j).map_err(row_err)?, at],
            )
            .map_err(db_err)?;
            Ok(Ok((ExternalObject { id, created: true, status: ObjectStatus::Active }, "created")))
        })
        .await
    }

    /// Journals posted in the ERP, oldest first.
    pub async fn journals(&self) -> Result<Vec<SimJournal>, O2cError> {
        self.db
            .call(|c| {
                let mut s = c.prepare_cached("SELECT erp_journal_id, body FROM sim_journals ORDER BY erp_journal_id").map_err(db_err)?;
                let rows = s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(db_err)?;
                rows.map(|r| {
                    let (erp_journal_id, body) = r.map_err(db_err)?;
                    Ok(SimJournal { erp_journal_id, journal: serde_json::from_str(&body).map_err(row_err)? })
                })
                .collect()
            })
            .await
    }
}
