//! The simulators' read API (what reconciliation reads through the connectors) and the
//! test hooks that change records behind o2c's back — what a user editing the PSA, the
//! ERP or the CRM directly does (or a clerk keying or voiding an invoice in the ERP), and
//! reconciliation must find.

use o2c_app::O2cError;
use o2c_app::ports::{ConnectorError, ObjectStatus, System};
use o2c_domain::engagement::CrmOpportunityUpdate;
use o2c_domain::invoicing::InvoiceDoc;
use o2c_domain::model::BillingSchedule;
use o2c_domain::reconciliation::{ErpInvoiceRecord, ProjectRecord};
use rusqlite::{OptionalExtension, params};

use super::Simulators;
use crate::db::{Cached, db_err, row_err};

/// A record to change behind o2c's back (simulators only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A project by system and external key.
    Project(System, String),
    /// A billing schedule by its id (external key).
    Schedule(String),
    /// A posted invoice by number.
    Invoice(String),
    /// A CRM opportunity's o2c fields.
    Opportunity(String),
}

impl Simulators {
    /// The project under `external_key` in `system`.
    pub(super) async fn read_project(&self, system: System, external_key: &str) -> Result<Option<ProjectRecord>, ConnectorError> {
        let key = external_key.to_owned();
        self.operate(system, "get_project", key.clone(), move |tx, _| {
            let row: Option<(String, String, String)> = tx
                .row(
                    "SELECT project_id, status, spec FROM sim_projects WHERE system = ?1 AND external_key = ?2",
                    params![system.as_str(), key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db_err)?;
            let Some((project_id, status, spec)) = row else { return Ok(Ok((None, "not found"))) };
            let status = if status == "active" { ObjectStatus::Active } else { ObjectStatus::Cancelled };
            Ok(Ok((Some(ProjectRecord { project_id, status, spec: serde_json::from_str(&spec).map_err(row_err)? }), "read")))
        })
        .await
    }

    /// The billing schedule `schedule_id` on ERP project `erp_project_id`.
    pub(super) async fn read_schedule(&self, erp_project_id: &str, schedule_id: &str) -> Result<Option<BillingSchedule>, ConnectorError> {
        let (project, key) = (erp_project_id.to_owned(), schedule_id.to_owned());
        self.operate(System::Erp, "get_billing_schedule", key.clone(), move |tx, _| {
            let row: Option<String> = tx
                .row(
                    "SELECT schedule FROM sim_billing_schedules WHERE external_key = ?1 AND erp_project_id = ?2",
                    params![key, project],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            Ok(Ok(match row {
                Some(s) => (Some(serde_json::from_str(&s).map_err(row_err)?), "read"),
                None => (None, "not found"),
            }))
        })
        .await
    }

    /// The invoice posted under `number`.
    pub(super) async fn read_invoice(&self, number: &str) -> Result<Option<ErpInvoiceRecord>, ConnectorError> {
        let n = number.to_owned();
        self.operate(System::Erp, "get_invoice", n.clone(), move |tx, _| {
            let row: Option<(String, String)> = tx
                .row("SELECT erp_invoice_id, body FROM sim_invoices WHERE number = ?1", params![n], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db_err)?;
            let Some((erp_invoice_id, body)) = row else { return Ok(Ok((None, "not found"))) };
            let doc: InvoiceDoc = serde_json::from_str(&body).map_err(row_err)?;
            let record = ErpInvoiceRecord {
                number: n,
                erp_invoice_id,
                invoice_id: doc.invoice_id,
                customer_id: doc.erp_customer_id,
                total: doc.total,
                tax_total: doc.tax_total,
                due_date: doc.due_date,
            };
            Ok(Ok((Some(record), "read")))
        })
        .await
    }

    /// The o2c fields of opportunity `opportunity_id`.
    pub(super) async fn read_opportunity(&self, opportunity_id: &str) -> Result<Option<CrmOpportunityUpdate>, ConnectorError> {
        let id = opportunity_id.to_owned();
        self.operate(System::Crm, "get_opportunity", id.clone(), move |tx, _| {
            let row: Option<String> = tx
                .row("SELECT fields FROM sim_crm_opportunities WHERE opportunity_id = ?1", params![id], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            Ok(Ok(match row {
                Some(f) => (Some(serde_json::from_str(&f).map_err(row_err)?), "read"),
                None => (None, "not found"),
            }))
        })
        .await
    }

    /// Every CRM opportunity's o2c fields, by id.
    pub async fn opportunities(&self) -> Result<Vec<CrmOpportunityUpdate>, O2cError> {
        self.db
            .call(|c| {
                let mut s = c.prepare_cached("SELECT fields FROM sim_crm_opportunities ORDER BY opportunity_id").map_err(db_err)?;
                let rows = s.query_map([], |r| r.get::<_, String>(0)).map_err(db_err)?;
                rows.map(|r| serde_json::from_str(&r.map_err(db_err)?).map_err(row_err)).collect()
            })
            .await
    }

    /// Changes `record` as a user of that system would, behind o2c's back: `edit` gets its
    /// stored JSON (a project's spec, a schedule, an invoice document, an opportunity's
    /// fields); a project's status is `{"status": …}` merged in. `false` when there is no
    /// such record. Not logged as a call: o2c did not make it.
    pub async fn tamper(&self, record: Record, edit: impl FnOnce(&mut serde_json::Value) + Send + 'static) -> Result<bool, O2cError> {
        self.db
            .call(move |c| {
                let (select, update, key): (&str, &str, Vec<String>) = match &record {
                    Record::Project(system, k) => (
                        "SELECT json_set(spec, '$.status', status) FROM sim_projects WHERE system = ?1 AND external_key = ?2",
                        "UPDATE sim_projects SET spec = json_remove(?3, '$.status'), status = json_extract(?3, '$.status') WHERE system = ?1 AND external_key = ?2",
                        vec![system.as_str().to_owned(), k.clone()],
                    ),
                    Record::Schedule(k) => (
                        "SELECT schedule FROM sim_billing_schedules WHERE ?1 = ?1 AND external_key = ?2",
                        "UPDATE sim_billing_schedules SET schedule = ?3 WHERE ?1 = ?1 AND external_key = ?2",
                        vec![String::new(), k.clone()],
                    ),
                    Record::Invoice(n) => (
                        "SELECT body FROM sim_invoices WHERE ?1 = ?1 AND number = ?2",
                        "UPDATE sim_invoices SET body = ?3, total = json_extract(?3, '$.total.amount') WHERE ?1 = ?1 AND number = ?2",
                        vec![String::new(), n.clone()],
                    ),
                    Record::Opportunity(id) => (
                        "SELECT fields FROM sim_crm_opportunities WHERE ?1 = ?1 AND opportunity_id = ?2",
                        "UPDATE sim_crm_opportunities SET fields = ?3 WHERE ?1 = ?1 AND opportunity_id = ?2",
                        vec![String::new(), id.clone()],
                    ),
                };
                let tx = crate::db::atomic(c)?;
                let current: Option<String> =
                    tx.row(select, params![key[0], key[1]], |r| r.get(0)).optional().map_err(db_err)?;
                let Some(current) = current else { return Ok(false) };
                let mut v: serde_json::Value = serde_json::from_str(&current).map_err(row_err)?;
                edit(&mut v);
                tx.exec(update, params![key[0], key[1], v.to_string()]).map_err(db_err)?;
                tx.commit()?;
                Ok(true)
            })
            .await
    }

    /// An invoice keyed in the ERP by hand under `erp_invoice_id` (not through o2c): what a
    /// billing clerk does, and reconciliation must find. Not logged as a call; `false` when
    /// its number is taken.
    pub async fn key_in_invoice(&self, erp_invoice_id: &str, invoice: &InvoiceDoc) -> Result<bool, O2cError> {
        let (id, inv, at) = (erp_invoice_id.to_owned(), invoice.clone(), self.db.clock().now().to_rfc3339());
        self.db
            .call(move |c| {
                let tx = crate::db::atomic(c)?;
                let number = inv.number.clone().unwrap_or_default();
                let taken: Option<String> = tx
                    .row("SELECT number FROM sim_invoices WHERE number = ?1", params![number], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?;
                if taken.is_some() {
                    return Ok(false);
                }
                super::insert_invoice(&tx, &number, &id, &inv, &at)?;
                tx.commit()?;
                Ok(true)
            })
            .await
    }

    /// The ERP voids invoice `number`: it holds it no longer as an invoice (reads find
    /// nothing). Not logged as a call; `false` when there is no such invoice.
    pub async fn void_invoice(&self, number: &str) -> Result<bool, O2cError> {
        let n = number.to_owned();
        self.db
            .call(move |c| {
                let tx = crate::db::atomic(c)?;
                let gone = tx.exec("DELETE FROM sim_invoices WHERE number = ?1", params![n]).map_err(db_err)?;
                tx.commit()?;
                Ok(gone == 1)
            })
            .await
    }
}
