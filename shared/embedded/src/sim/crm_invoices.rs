//! The CRM simulator's invoice records: upserted by invoice number onto the account and
//! opportunity, keeping the newest version (an older write is answered `stale`), with the
//! validation a CRM does (known account, amounts in one currency, open balance within the
//! total).

use o2c_app::O2cError;
use o2c_app::ports::{ConnectorError, CrmWrite, System};
use o2c_domain::receivables::CrmInvoice;
use rusqlite::{OptionalExtension, params};

use super::{Simulators, permanent};
use crate::db::{Cached, db_err, row_err};

impl Simulators {
    /// Upserts `invoice` unless the CRM holds a newer version of it.
    pub(super) async fn crm_invoice(&self, invoice: &CrmInvoice) -> Result<CrmWrite, ConnectorError> {
        let inv = invoice.clone();
        let known = self.crm_accounts.contains(&inv.account_id);
        self.operate(System::Crm, "upsert_invoice", inv.number.clone(), move |tx, at| {
            if !known {
                return Ok(Err(permanent(System::Crm, 400, "INVALID_CROSS_REFERENCE_KEY", format!("Account {} does not exist", inv.account_id))));
            }
            if inv.open_balance.currency != inv.total.currency
                || inv.open_balance.amount.abs() > inv.total.amount.abs()
                || (inv.total.is_positive() && inv.open_balance.amount.is_sign_negative())
            {
                return Ok(Err(permanent(
                    System::Crm,
                    400,
                    "FIELD_INTEGRITY_EXCEPTION",
                    format!("Open balance {} does not fit total {}", inv.open_balance, inv.total),
                )));
            }
            let current: Option<i64> = tx
                .row("SELECT version FROM sim_crm_invoices WHERE number = ?1", params![inv.number], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            if current.is_some_and(|v| v as u64 >= inv.version) {
                return Ok(Ok((CrmWrite::Stale, "stale")));
            }
            tx.exec(
                "INSERT INTO sim_crm_invoices (number, version, account_id, opportunity_id, fields, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(number) DO UPDATE SET version = excluded.version, fields = excluded.fields, updated_at = excluded.updated_at",
                params![inv.number, inv.version as i64, inv.account_id, inv.opportunity_id, serde_json::to_string(&inv).map_err(row_err)?, at],
            )
            .map_err(db_err)?;
            Ok(Ok((CrmWrite::Applied, "upserted")))
        })
        .await
    }

    /// Invoice records in the CRM, by number.
    pub async fn crm_invoices(&self) -> Result<Vec<CrmInvoice>, O2cError> {
        self.db
            .call(|c| {
                let mut s = c.prepare_cached("SELECT fields FROM sim_crm_invoices ORDER BY number").map_err(db_err)?;
                let rows = s.query_map([], |r| r.get::<_, String>(0)).map_err(db_err)?;
                rows.map(|r| serde_json::from_str(&r.map_err(db_err)?).map_err(row_err)).collect()
            })
            .await
    }
}
