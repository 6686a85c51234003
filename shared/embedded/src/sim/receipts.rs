//! The ERP simulator's cash receipts: create-or-get by payment id, validated as an ERP's
//! receivables module would — every application names an invoice posted by the same legal
//! entity in the receipt's currency, no invoice is applied above its total across all live
//! receipts, applications + unapplied = amount, and a reversal names a live receipt.

use std::collections::BTreeMap;

use o2c_app::O2cError;
use o2c_app::ports::{ConnectorError, ExternalObject, ObjectStatus, System};
use o2c_domain::receivables::CashReceipt;
use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Simulators, permanent};
use crate::db::{Cached, db_err, row_err};

/// A cash receipt booked in the simulated ERP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReceipt {
    /// ERP receipt id.
    pub receipt_id: String,
    /// The receipt as booked.
    pub receipt: CashReceipt,
    /// The receipt that reversed it, if any.
    pub reversed_by: Option<String>,
}

impl Simulators {
    /// Books `receipt` under its payment id, or returns the receipt already booked under it.
    pub(super) async fn book(&self, receipt: &CashReceipt) -> Result<ExternalObject, ConnectorError> {
        let r = receipt.clone();
        let customers = self.erp_customers.clone();
        self.operate(System::Erp, "book_receipt", r.payment_id.clone(), move |tx, at| {
            if let Some((id, body)) = tx
                .row("SELECT receipt_id, body FROM sim_receipts WHERE payment_id = ?1", params![r.payment_id], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .optional()
                .map_err(db_err)?
            {
                let existing: CashReceipt = serde_json::from_str(&body).map_err(row_err)?;
                if existing != r {
                    return Ok(Err(permanent(
                        System::Erp,
                        409,
                        "DUP_RECEIPT",
                        format!("Receipt {} was booked with other content", r.payment_id),
                    )));
                }
                return Ok(Ok((ExternalObject { id, created: false, status: ObjectStatus::Active }, "existing")));
            }
            if let Some(c) = &r.erp_customer_id
                && !customers.contains(c)
            {
                return Ok(Err(permanent(System::Erp, 400, "INVALID_KEY_OR_REF", format!("Invalid customer reference key {c}"))));
            }
            if let Err(e) = validate(tx, &r)? {
                return Ok(Err(e));
            }
            if let Some(original) = &r.reverses {
                tx.exec("UPDATE sim_receipts SET reversed_by = ?1 WHERE payment_id = ?2", params![r.payment_id, original])
                    .map_err(db_err)?;
            }
            let id = format!("RCPT{:07}", super::next_number(tx, "receipt")?);
            tx.exec(
                "INSERT INTO sim_receipts (payment_id, receipt_id, legal_entity_id, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r.payment_id, id, r.legal_entity_id, serde_json::to_string(&r).map_err(row_err)?, at],
            )
            .map_err(db_err)?;
            if r.reverses.is_none() {
                for (line, a) in r.applications.iter().enumerate() {
                    tx.exec(
                        "INSERT INTO sim_receipt_applications (payment_id, line, number, amount) VALUES (?1, ?2, ?3, ?4)",
                        params![r.payment_id, line as i64, a.number, a.amount.amount.to_string()],
                    )
                    .map_err(db_err)?;
                }
            }
            Ok(Ok((ExternalObject { id, created: true, status: ObjectStatus::Active }, "created")))
        })
        .await
    }

    /// Receipts booked in the ERP, oldest first.
    pub async fn receipts(&self) -> Result<Vec<SimReceipt>, O2cError> {
        self.db
            .call(|c| {
                let mut s = c
                    .prepare_cached("SELECT receipt_id, body, reversed_by FROM sim_receipts ORDER BY created_at, receipt_id")
                    .map_err(db_err)?;
                let rows = s
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))
                    .map_err(db_err)?;
                rows.map(|r| {
                    let (receipt_id, body, reversed_by) = r.map_err(db_err)?;
                    Ok(SimReceipt { receipt_id, receipt: serde_json::from_str(&body).map_err(row_err)?, reversed_by })
                })
                .collect()
            })
            .await
    }

    /// What the ERP holds as applied per invoice number (live receipts only).
    pub async fn applied_by_number(&self) -> Result<BTreeMap<String, Decimal>, O2cError> {
        let mut out = BTreeMap::new();
        for r in self.receipts().await?.into_iter().filter(|r| r.reversed_by.is_none() && r.receipt.reverses.is_none()) {
            for a in r.receipt.applications {
                *out.entry(a.number).or_default() += a.amount.amount;
            }
        }
        Ok(out)
    }
}

fn validate(tx: &Connection, r: &CashReceipt) -> Result<Result<(), ConnectorError>, O2cError> {
    let bad = |code: &str, m: String| Ok(Err(permanent(System::Erp, 400, code, m)));
    if !r.amount.is_positive() || r.unapplied.currency != r.amount.currency || r.unapplied.amount.is_sign_negative() {
        return bad("INVALID_AMOUNT", format!("Receipt {} has amount {} and unapplied {}", r.payment_id, r.amount, r.unapplied));
    }
    let applied: Decimal = r.applications.iter().map(|a| a.amount.amount).sum();
    if r.applications.iter().any(|a| a.amount.currency != r.amount.currency || !a.amount.is_positive())
        || applied + r.unapplied.amount != r.amount.amount
    {
        return bad("INVALID_AMOUNT", format!("Applications {applied} + unapplied {} differ from amount {}", r.unapplied.amount, r.amount));
    }
    if let Some(original) = &r.reverses {
        let row: Option<(String, Option<String>)> = tx
            .row("SELECT body, reversed_by FROM sim_receipts WHERE payment_id = ?1", params![original], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(db_err)?;
        return match row {
            None => bad("RCRD_DSNT_EXIST", format!("Receipt {original} does not exist")),
            Some((_, Some(by))) => bad("INVALID_RCRD_STATE", format!("Receipt {original} is already reversed by {by}")),
            Some((body, None)) => {
                let orig: CashReceipt = serde_json::from_str(&body).map_err(row_err)?;
                if orig.amount != r.amount || orig.applications != r.applications {
                    return bad("INVALID_AMOUNT", format!("Reversal {} does not match receipt {original}", r.payment_id));
                }
                Ok(Ok(()))
            }
        };
    }
    for a in &r.applications {
        let row: Option<(String, String, String)> = tx
            .row("SELECT legal_entity_id, total, currency FROM sim_invoices WHERE number = ?1", params![a.number], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
            .map_err(db_err)?;
        let Some((le, total, currency)) = row else {
            return bad("RCRD_DSNT_EXIST", format!("Invoice {} does not exist", a.number));
        };
        if le != r.legal_entity_id || currency != a.amount.currency.code() {
            return bad(
                "INVALID_KEY_OR_REF",
                format!("Invoice {} is {le}/{currency}, the receipt {}/{}", a.number, r.legal_entity_id, a.amount.currency),
            );
        }
        let total: Decimal = total.parse().map_err(|e| O2cError::Bug(format!("sim invoice total: {e}")))?;
        let before = applied_to(tx, &a.number)?;
        if before + a.amount.amount > total {
            return bad(
                "AMOUNT_EXCEEDS_OPEN",
                format!("Invoice {} has {} open; the receipt applies {}", a.number, total - before, a.amount.amount),
            );
        }
    }
    Ok(Ok(()))
}

/// Applied to invoice `number` by live receipts (by the invoice's own applications, not a
/// scan of every receipt).
fn applied_to(tx: &Connection, number: &str) -> Result<Decimal, O2cError> {
    let mut s = tx
        .prepare_cached(
            "SELECT a.amount FROM sim_receipt_applications a JOIN sim_receipts r ON r.payment_id = a.payment_id
             WHERE a.number = ?1 AND r.reversed_by IS NULL",
        )
        .map_err(db_err)?;
    let amounts = s.query_map(params![number], |r| r.get::<_, String>(0)).map_err(db_err)?;
    let mut sum = Decimal::ZERO;
    for a in amounts {
        sum += a.map_err(db_err)?.parse::<Decimal>().map_err(|e| O2cError::Bug(format!("sim receipt application: {e}")))?;
    }
    Ok(sum)
}
