//! In-process simulators of the CRM, PSA, ERP and tax engine, durable in the same SQLite
//! file (the tax engine's rules are in [`crate::sim_tax`]).
//!
//! They behave like the systems o2c integrates with, not like mocks:
//! - create operations are create-or-get by external key (Salesforce upsert on an
//!   external-id field, NetSuite `externalId`), so a retry never duplicates a project;
//! - they validate what the real systems validate (PSA: name length, date integrity,
//!   template; ERP: subsidiary, subsidiary currency, customer record, schedule totals;
//!   CRM: field lengths, stale updates) and answer with the systems' error codes;
//! - faults can be switched on per system and operation, for a number of calls or until
//!   cleared: HTTP 5xx, 429 with `Retry-After`, a timeout before the request lands, a
//!   timeout **after** it was committed (the lost-response case), or a permanent 4xx.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use o2c_app::O2cError;
use o2c_app::ports::{ConnectorError, Crm, CrmWrite, Erp, ExternalObject, ObjectStatus, Psa, TaxEngine};
use o2c_domain::engagement::CrmOpportunityUpdate;
use o2c_domain::invoicing::InvoiceDoc;
use o2c_domain::model::{BillingItem, BillingSchedule, ProjectSpec};
use o2c_domain::reference::{ReferenceData, TaxJurisdiction};
use o2c_domain::tax::{TaxQuote, TaxRequest};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::db::{Cached, Db, db_err, row_err};

mod crm_invoices;
mod journals;
mod reads;
mod receipts;

pub use journals::SimJournal;
pub use reads::Record;
pub use receipts::SimReceipt;

/// A simulated system (the systems o2c talks to).
pub use o2c_domain::workflow::System;

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 5xx before anything is written.
    ServerError {
        /// Status (500, 502, 503, 504).
        status: u16,
    },
    /// The client times out before the request lands.
    Timeout,
    /// The system commits the request, then the response is lost (client timeout).
    TimeoutAfterCommit,
    /// The system commits the request, then the calling process dies before it sees the
    /// answer: the call never returns and [`Simulators::crash_signal`] fires, so a
    /// simulation can drop the process's state and restart it (`o2c sim run --crash-rate`).
    CrashAfterCommit,
    /// The system answers slowly (the call then proceeds normally, or meets the next fault).
    Latency {
        /// Delay, milliseconds.
        ms: u64,
    },
    /// HTTP 429 Too Many Requests.
    RateLimited {
        /// `Retry-After`, milliseconds.
        retry_after_ms: u64,
    },
    /// A permanent 4xx.
    Rejected {
        /// Status (400, 403, 404, 409, 422).
        status: u16,
        /// System error code.
        code: String,
        /// Message.
        message: String,
    },
}

/// A project in the PSA or ERP simulator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimProject {
    /// `psa` | `erp`.
    pub system: String,
    /// External key.
    pub external_key: String,
    /// System id.
    pub project_id: String,
    /// `active` | `cancelled`.
    pub status: String,
    /// What was sent.
    pub spec: ProjectSpec,
}

/// A logged connector call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimCall {
    /// System.
    pub system: String,
    /// Operation.
    pub operation: String,
    /// Key (external key or id).
    pub key: String,
    /// `created`, `existing`, `updated`, `stale`, or the error.
    pub outcome: String,
}

/// An invoice posted in the ERP simulator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimInvoice {
    /// Invoice number (the create-or-get key).
    pub number: String,
    /// o2c invoice id.
    pub invoice_id: String,
    /// ERP document id.
    pub erp_invoice_id: String,
    /// Issuing legal entity.
    pub legal_entity_id: String,
    /// What was posted.
    pub invoice: InvoiceDoc,
}

/// The simulators over one database.
#[derive(Clone)]
pub struct Simulators {
    db: Db,
    tax_jurisdictions: Arc<std::collections::BTreeMap<String, TaxJurisdiction>>,
    psa_templates: Arc<BTreeSet<String>>,
    erp_project_types: Arc<BTreeSet<String>>,
    erp_customers: Arc<BTreeSet<String>>,
    erp_subsidiary_currencies: Arc<Vec<(String, Vec<String>)>>,
    /// CRM account ids (customers).
    crm_accounts: Arc<BTreeSet<String>>,
    /// Per legal entity: the last closed accounting period.
    erp_closed_through: Arc<std::collections::BTreeMap<String, Option<o2c_domain::revenue::Period>>>,
    /// Fired by a [`Fault::CrashAfterCommit`].
    crash: Arc<tokio::sync::Notify>,
}

enum Applied {
    Before(ConnectorError),
    AfterCommit,
    Crash,
    Delayed,
    None,
}

fn transient(system: System, status: u16, message: &str, retry_after: Option<Duration>) -> ConnectorError {
    ConnectorError::Transient { system, status, message: message.into(), retry_after }
}

fn permanent(system: System, status: u16, code: &str, message: String) -> ConnectorError {
    ConnectorError::Permanent { system, status, code: code.into(), message }
}

fn store_err(system: System, e: O2cError) -> ConnectorError {
    transient(system, 503, &format!("simulator storage: {e}"), None)
}

/// The next number (1, 2, …) of a simulator's sequence, drawn in the caller's transaction
/// (undone with it), in O(log n) where a `COUNT(*)` of what exists grew with the history.
pub(crate) fn next_number(c: &Connection, name: &str) -> Result<i64, O2cError> {
    c.row(
        "INSERT INTO sim_sequences (name, value) VALUES (?1, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
        params![name],
        |r| r.get(0),
    )
    .map_err(db_err)
}

fn take_fault(tx: &Connection, system: System, op: &str) -> Result<Applied, O2cError> {
    let row: Option<(i64, String, Option<i64>)> = tx
        .row(
            "SELECT seq, fault, remaining FROM sim_faults WHERE system = ?1 AND (operation = ?2 OR operation = '*') ORDER BY seq LIMIT 1",
            params![system.as_str(), op],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db_err)?;
    let Some((seq, fault, remaining)) = row else {
        return Ok(Applied::None);
    };
    // Parsed before it is taken: a call past its first write must not fail (`checked`).
    let fault: Fault = serde_json::from_str(&fault).map_err(row_err)?;
    match remaining {
        Some(n) if n <= 1 => {
            tx.exec("DELETE FROM sim_faults WHERE seq = ?1", params![seq]).map_err(db_err)?;
        }
        Some(_) => {
            tx.exec("UPDATE sim_faults SET remaining = remaining - 1 WHERE seq = ?1", params![seq]).map_err(db_err)?;
        }
        None => {}
    }
    Ok(match fault {
        Fault::ServerError { status } => Applied::Before(transient(system, status, "service unavailable", None)),
        Fault::Timeout => Applied::Before(transient(system, 0, "request timed out", None)),
        Fault::RateLimited { retry_after_ms } => {
            Applied::Before(transient(system, 429, "too many requests", Some(Duration::from_millis(retry_after_ms))))
        }
        Fault::Rejected { status, code, message } => Applied::Before(permanent(system, status, &code, message)),
        Fault::TimeoutAfterCommit => Applied::AfterCommit,
        Fault::CrashAfterCommit => Applied::Crash,
        Fault::Latency { .. } => Applied::Delayed,
    })
}

/// The delay of the next fault for `op` when it is a latency fault.
fn peek_latency(tx: &Connection, system: System, op: &str) -> Result<Option<Duration>, O2cError> {
    let fault: Option<String> = tx
        .row(
            "SELECT fault FROM sim_faults WHERE system = ?1 AND (operation = ?2 OR operation = '*') ORDER BY seq LIMIT 1",
            params![system.as_str(), op],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    Ok(match fault.map(|f| serde_json::from_str::<Fault>(&f)).transpose().map_err(row_err)? {
        Some(Fault::Latency { ms }) => Some(Duration::from_millis(ms)),
        _ => None,
    })
}

fn log_call(tx: &Connection, system: System, op: &str, key: &str, outcome: &str, at: &str) -> Result<(), O2cError> {
    tx.exec(
        "INSERT INTO sim_calls (system, operation, key, outcome, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![system.as_str(), op, key, outcome, at],
    )
    .map_err(db_err)?;
    Ok(())
}

impl Simulators {
    /// Simulators whose master data (templates, customers, subsidiaries) is `reference`.
    pub fn new(db: Db, reference: &ReferenceData) -> Self {
        Self {
            db,
            tax_jurisdictions: Arc::new(reference.tax_jurisdictions.clone()),
            psa_templates: Arc::new(reference.project_templates.values().map(|t| t.psa_template.clone()).collect()),
            erp_project_types: Arc::new(reference.project_templates.values().map(|t| t.erp_project_type.clone()).collect()),
            erp_customers: Arc::new(reference.customers.values().map(|c| c.erp_customer_id.clone()).collect()),
            erp_subsidiary_currencies: Arc::new(
                reference
                    .legal_entities
                    .values()
                    .map(|l| (l.erp_subsidiary.clone(), l.billing_currencies.iter().map(|c| c.code().to_owned()).collect()))
                    .collect(),
            ),
            crm_accounts: Arc::new(reference.customers.keys().cloned().collect()),
            erp_closed_through: Arc::new(reference.legal_entities.values().map(|l| (l.id.clone(), l.closed_through)).collect()),
            crash: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Notified when a [`Fault::CrashAfterCommit`] has committed a call and hung it.
    pub fn crash_signal(&self) -> Arc<tokio::sync::Notify> {
        self.crash.clone()
    }

    /// Switches a fault on for `times` calls (`None`: until cleared). `operation` `*` matches all.
    pub async fn inject(&self, system: System, operation: &str, fault: Fault, times: Option<u32>) -> Result<(), O2cError> {
        let op = operation.to_owned();
        let fault = serde_json::to_string(&fault).map_err(row_err)?;
        self.db
            .call(move |c| {
                c.exec(
                    "INSERT INTO sim_faults (system, operation, fault, remaining) VALUES (?1, ?2, ?3, ?4)",
                    params![system.as_str(), op, fault, times.map(i64::from)],
                )
                .map_err(db_err)?;
                Ok(())
            })
            .await
    }

    /// Clears every fault.
    pub async fn clear_faults(&self) -> Result<(), O2cError> {
        self.db.call(|c| c.exec("DELETE FROM sim_faults", []).map(|_| ()).map_err(db_err)).await
    }

    /// Projects in a system.
    pub async fn projects(&self, system: System) -> Result<Vec<SimProject>, O2cError> {
        self.db
            .call(move |c| {
                let mut s = c
                    .prepare_cached(
                        "SELECT external_key, project_id, status, spec FROM sim_projects WHERE system = ?1 ORDER BY created_at, project_id",
                    )
                    .map_err(db_err)?;
                let rows = s
                    .query_map(params![system.as_str()], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
                    })
                    .map_err(db_err)?;
                rows.map(|r| {
                    let (k, id, st, spec) = r.map_err(db_err)?;
                    Ok(SimProject {
                        system: system.as_str().into(),
                        external_key: k,
                        project_id: id,
                        status: st,
                        spec: serde_json::from_str(&spec).map_err(row_err)?,
                    })
                })
                .collect()
            })
            .await
    }

    /// Billing schedules in the ERP: `(schedule id, ERP project id, schedule)`.
    pub async fn billing_schedules(&self) -> Result<Vec<(String, String, BillingSchedule)>, O2cError> {
        self.db
            .call(|c| {
                let mut s = c
                    .prepare_cached("SELECT schedule_id, erp_project_id, schedule FROM sim_billing_schedules ORDER BY created_at")
                    .map_err(db_err)?;
                let rows =
                    s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))).map_err(db_err)?;
                rows.map(|r| {
                    let (id, p, sch) = r.map_err(db_err)?;
                    Ok((id, p, serde_json::from_str(&sch).map_err(row_err)?))
                })
                .collect()
            })
            .await
    }

    /// The CRM opportunity's o2c fields and their sync version.
    pub async fn opportunity(&self, opportunity_id: &str) -> Result<Option<(u64, CrmOpportunityUpdate)>, O2cError> {
        let id = opportunity_id.to_owned();
        self.db
            .call(move |c| {
                let row: Option<(i64, String)> = c
                    .row("SELECT sync_version, fields FROM sim_crm_opportunities WHERE opportunity_id = ?1", params![id], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                    .map_err(db_err)?;
                row.map(|(v, f)| Ok((v as u64, serde_json::from_str(&f).map_err(row_err)?))).transpose()
            })
            .await
    }

    /// Every connector call, oldest first.
    pub async fn calls(&self) -> Result<Vec<SimCall>, O2cError> {
        self.db
            .call(|c| {
                let mut s = c.prepare_cached("SELECT system, operation, key, outcome FROM sim_calls ORDER BY seq").map_err(db_err)?;
                let rows = s
                    .query_map([], |r| Ok(SimCall { system: r.get(0)?, operation: r.get(1)?, key: r.get(2)?, outcome: r.get(3)? }))
                    .map_err(db_err)?;
                rows.map(|r| r.map_err(db_err)).collect()
            })
            .await
    }

    /// Invoices posted in the ERP, by number.
    pub async fn invoices(&self) -> Result<Vec<SimInvoice>, O2cError> {
        self.db
            .call(|c| {
                let mut s = c
                    .prepare_cached("SELECT number, invoice_id, erp_invoice_id, legal_entity_id, body FROM sim_invoices ORDER BY number")
                    .map_err(db_err)?;
                let rows = s
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                        ))
                    })
                    .map_err(db_err)?;
                rows.map(|r| {
                    let (number, invoice_id, erp_invoice_id, legal_entity_id, body) = r.map_err(db_err)?;
                    Ok(SimInvoice {
                        number,
                        invoice_id,
                        erp_invoice_id,
                        legal_entity_id,
                        invoice: serde_json::from_str(&body).map_err(row_err)?,
                    })
                })
                .collect()
            })
            .await
    }

    /// Runs one simulated operation: fault handling, then `op` in a transaction. A
    /// latency fault waits (outside the database) and then lets the call proceed.
    async fn operate<T, F>(&self, system: System, op: &'static str, key: String, f: F) -> Result<T, ConnectorError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<Result<(T, &'static str), ConnectorError>, O2cError> + Send + 'static,
    {
        let delay = self
            .db
            .call(move |c| {
                // `checked`: reads, then takes the fault.
                let tx = crate::db::checked(c)?;
                let delay = match peek_latency(&tx, system, op)? {
                    Some(d) => {
                        take_fault(&tx, system, op)?;
                        Some(d)
                    }
                    None => None,
                };
                tx.commit()?;
                Ok(delay)
            })
            .await
            .map_err(|e| store_err(system, e))?;
        if let Some(d) = delay {
            self.db.clock().sleep(d).await;
        }
        let at = self.db.clock().now().to_rfc3339();
        let answer = self
            .db
            .call(move |c| {
                // `checked`: a simulated system's refusal is an answer, logged and kept; past a write
                // only SQLite or a bug can fail.
                let tx = crate::db::checked(c)?;
                let applied = take_fault(&tx, system, op)?;
                if let Applied::Before(err) = applied {
                    log_call(&tx, system, op, &key, &format!("fault: {err}"), &at)?;
                    tx.commit()?;
                    return Ok((Err(err), false));
                }
                let result = f(&tx, &at)?;
                let outcome = match &result {
                    Ok((_, o)) => (*o).to_owned(),
                    Err(e) => format!("error: {e}"),
                };
                log_call(&tx, system, op, &key, &outcome, &at)?;
                tx.commit()?;
                match (applied, result) {
                    (Applied::AfterCommit, Ok(_)) => {
                        Ok((Err(transient(system, 0, "response lost: request timed out after the system committed it", None)), false))
                    }
                    (Applied::Crash, r) => Ok((r.map(|(t, _)| t), true)),
                    (_, r) => Ok((r.map(|(t, _)| t), false)),
                }
            })
            .await
            .map_err(|e| store_err(system, e))?;
        let (answer, crashed) = answer;
        if crashed {
            // The caller's process is dead: it never sees an answer.
            self.crash.notify_one();
            std::future::pending::<()>().await;
        }
        answer
    }

    fn create_project_in(
        &self,
        system: System,
        spec: &ProjectSpec,
    ) -> impl std::future::Future<Output = Result<ExternalObject, ConnectorError>> + Send + 'static {
        let spec = spec.clone();
        let me = self.clone();
        async move {
            let key = spec.external_key.to_string();
            let validation = match system {
                System::Psa => me.validate_psa(&spec),
                _ => me.validate_erp(&spec),
            };
            me.operate(system, "create_project", key, move |tx, at| {
                if let Some((id, status)) = tx
                    .row("SELECT project_id, status FROM sim_projects WHERE system = ?1 AND external_key = ?2", params![system.as_str(), spec.external_key.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                    .optional()
                    .map_err(db_err)?
                {
                    // Create-or-get reports what it found, cancelled included.
                    let status = if status == "active" { ObjectStatus::Active } else { ObjectStatus::Cancelled };
                    return Ok(Ok((ExternalObject { id, created: false, status }, if status == ObjectStatus::Active { "existing" } else { "existing-cancelled" })));
                }
                if let Err(e) = validation {
                    return Ok(Err(e));
                }
                let n = next_number(tx, &format!("project:{}", system.as_str()))?;
                let id = match system {
                    System::Psa => format!("a0P{n:012}"),
                    _ => format!("PRJ{n:06}"),
                };
                tx.exec(
                    "INSERT INTO sim_projects (system, external_key, project_id, status, spec, created_at) VALUES (?1, ?2, ?3, 'active', ?4, ?5)",
                    params![system.as_str(), spec.external_key.as_str(), id, serde_json::to_string(&spec).map_err(row_err)?, at],
                )
                .map_err(db_err)?;
                Ok(Ok((ExternalObject { id, created: true, status: ObjectStatus::Active }, "created")))
            })
            .await
        }
    }

    fn validate_psa(&self, spec: &ProjectSpec) -> Result<(), ConnectorError> {
        let bad = |code: &str, m: String| Err(permanent(System::Psa, 400, code, m));
        if spec.name.chars().count() > 80 {
            return bad("STRING_TOO_LONG", "Project Name: data value too large (max length=80)".into());
        }
        if spec.end_date < spec.start_date {
            return bad("FIELD_INTEGRITY_EXCEPTION", "End Date must be on or after Start Date".into());
        }
        if !self.psa_templates.contains(&spec.template) {
            return bad("INVALID_CROSS_REFERENCE_KEY", format!("Template: id value of incorrect type: {}", spec.template));
        }
        if let Some(m) = spec.milestones.iter().find(|m| m.due_date < spec.start_date || m.due_date > spec.end_date) {
            return bad("FIELD_INTEGRITY_EXCEPTION", format!("Milestone {} due date is outside the project dates", m.milestone_id));
        }
        Ok(())
    }

    fn validate_erp(&self, spec: &ProjectSpec) -> Result<(), ConnectorError> {
        let bad = |code: &str, m: String| Err(permanent(System::Erp, 400, code, m));
        let Some((_, currencies)) = self.erp_subsidiary_currencies.iter().find(|(s, _)| s == &spec.subsidiary) else {
            return bad("INVALID_KEY_OR_REF", format!("Invalid subsidiary reference key {}", spec.subsidiary));
        };
        if !currencies.iter().any(|c| c == spec.currency.code()) {
            return bad("INVALID_CURRENCY", format!("Currency {} is not enabled for subsidiary {}", spec.currency, spec.subsidiary));
        }
        if !self.erp_customers.contains(&spec.customer_id) {
            return bad("INVALID_KEY_OR_REF", format!("Invalid customer reference key {}", spec.customer_id));
        }
        if !self.erp_project_types.contains(&spec.template) {
            return bad("INVALID_KEY_OR_REF", format!("Invalid project type {}", spec.template));
        }
        Ok(())
    }
}

impl Psa for Simulators {
    async fn create_or_get_project(&self, spec: &ProjectSpec) -> Result<ExternalObject, ConnectorError> {
        self.create_project_in(System::Psa, spec).await
    }

    async fn get_project(&self, external_key: &str) -> Result<Option<o2c_domain::reconciliation::ProjectRecord>, ConnectorError> {
        self.read_project(System::Psa, external_key).await
    }

    async fn cancel_project(&self, project_id: &str, reason: &str) -> Result<(), ConnectorError> {
        let id = project_id.to_owned();
        let _ = reason;
        self.operate(System::Psa, "cancel_project", id.clone(), move |tx, _| {
            let n = tx
                .exec("UPDATE sim_projects SET status = 'cancelled' WHERE system = 'psa' AND project_id = ?1", params![id])
                .map_err(db_err)?;
            if n == 0 {
                return Ok(Err(permanent(System::Psa, 404, "NOT_FOUND", format!("project {id} does not exist"))));
            }
            Ok(Ok(((), "cancelled")))
        })
        .await
    }
}

impl Erp for Simulators {
    async fn create_or_get_project(&self, spec: &ProjectSpec) -> Result<ExternalObject, ConnectorError> {
        self.create_project_in(System::Erp, spec).await
    }

    async fn get_project(&self, external_key: &str) -> Result<Option<o2c_domain::reconciliation::ProjectRecord>, ConnectorError> {
        self.read_project(System::Erp, external_key).await
    }

    async fn get_billing_schedule(&self, erp_project_id: &str, schedule_id: &str) -> Result<Option<BillingSchedule>, ConnectorError> {
        self.read_schedule(erp_project_id, schedule_id).await
    }

    async fn get_invoice(&self, number: &str) -> Result<Option<o2c_domain::reconciliation::ErpInvoiceRecord>, ConnectorError> {
        self.read_invoice(number).await
    }

    async fn create_or_get_billing_schedule(
        &self,
        erp_project_id: &str,
        schedule: &BillingSchedule,
    ) -> Result<ExternalObject, ConnectorError> {
        let (project, schedule) = (erp_project_id.to_owned(), schedule.clone());
        self.operate(System::Erp, "create_billing_schedule", schedule.schedule_id.clone(), move |tx, at| {
            if let Some(id) = tx
                .row("SELECT schedule_id FROM sim_billing_schedules WHERE external_key = ?1", params![schedule.schedule_id], |r| r.get::<_, String>(0))
                .optional()
                .map_err(db_err)?
            {
                return Ok(Ok((ExternalObject { id, created: false, status: ObjectStatus::Active }, "existing")));
            }
            let row: Option<(String, String)> = tx
                .row("SELECT status, spec FROM sim_projects WHERE system = 'erp' AND project_id = ?1", params![project], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db_err)?;
            let Some((status, spec)) = row else {
                return Ok(Err(permanent(System::Erp, 404, "RCRD_DSNT_EXIST", format!("Project {project} does not exist"))));
            };
            if status != "active" {
                return Ok(Err(permanent(System::Erp, 400, "INVALID_RCRD_STATE", format!("Project {project} is {status}"))));
            }
            let spec: ProjectSpec = serde_json::from_str(&spec).map_err(row_err)?;
            if spec.currency != schedule.currency {
                return Ok(Err(permanent(System::Erp, 400, "INVALID_CURRENCY", format!("Schedule currency {} differs from project currency {}", schedule.currency, spec.currency))));
            }
            let mut fixed = rust_decimal::Decimal::ZERO;
            for item in &schedule.items {
                if let BillingItem::Milestone { amount, item_id, .. } | BillingItem::Installment { amount, item_id, .. } = item {
                    if !amount.is_positive() || amount.currency != schedule.currency {
                        return Ok(Err(permanent(System::Erp, 400, "INVALID_AMOUNT", format!("Schedule line {item_id} has an invalid amount {amount}"))));
                    }
                    fixed += amount.amount;
                }
            }
            if fixed != schedule.fixed_total.amount {
                return Ok(Err(permanent(System::Erp, 400, "INVALID_AMOUNT", format!("Schedule lines sum to {fixed}, header says {}", schedule.fixed_total.amount))));
            }
            let id = format!("BSCH{:06}", next_number(tx, "billing_schedule")?);
            tx.exec(
                "INSERT INTO sim_billing_schedules (external_key, schedule_id, erp_project_id, schedule, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![schedule.schedule_id, id, project, serde_json::to_string(&schedule).map_err(row_err)?, at],
            )
            .map_err(db_err)?;
            Ok(Ok((ExternalObject { id, created: true, status: ObjectStatus::Active }, "created")))
        })
        .await
    }

    async fn create_or_get_invoice(&self, invoice: &InvoiceDoc) -> Result<ExternalObject, ConnectorError> {
        self.post_invoice(invoice).await
    }

    async fn book_receipt(&self, receipt: &o2c_domain::receivables::CashReceipt) -> Result<ExternalObject, ConnectorError> {
        self.book(receipt).await
    }

    async fn post_journal(&self, journal: &o2c_domain::revenue::RevenueJournal) -> Result<ExternalObject, ConnectorError> {
        self.journal(journal).await
    }
}

/// What the ERP checks on an invoice before posting it.
/// Stores `inv` in the ERP simulator under `number` and ERP document id `id`.
pub(crate) fn insert_invoice(tx: &Connection, number: &str, id: &str, inv: &InvoiceDoc, at: &str) -> Result<(), O2cError> {
    tx.exec(
        "INSERT INTO sim_invoices (number, invoice_id, erp_invoice_id, legal_entity_id, total, currency, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![number, inv.invoice_id, id, inv.legal_entity_id, inv.total.amount.to_string(), inv.currency.code(), serde_json::to_string(inv).map_err(row_err)?, at],
    )
    .map_err(db_err)?;
    Ok(())
}

fn validate_invoice(inv: &InvoiceDoc, customers: &BTreeSet<String>) -> Result<(), ConnectorError> {
    let bad = |code: &str, m: String| Err(permanent(System::Erp, 400, code, m));
    if !customers.contains(&inv.erp_customer_id) {
        return bad("INVALID_KEY_OR_REF", format!("Invalid customer reference key {}", inv.erp_customer_id));
    }
    if inv.lines.is_empty() {
        return bad("USER_ERROR", "An invoice needs at least one line".into());
    }
    let net: rust_decimal::Decimal = inv.lines.iter().map(|l| l.net.amount).sum();
    let tax: rust_decimal::Decimal = inv.lines.iter().filter_map(|l| l.tax.map(|t| t.amount)).sum();
    if inv.lines.iter().any(|l| l.net.currency != inv.currency || l.tax.is_none()) {
        return bad("INVALID_AMOUNT", "Every line needs a tax amount in the invoice currency".into());
    }
    if net != inv.subtotal.amount || tax != inv.tax_total.amount || inv.subtotal.amount + inv.tax_total.amount != inv.total.amount {
        return bad(
            "INVALID_AMOUNT",
            format!(
                "Lines sum to {net} + {tax} tax; header says {} + {} = {}",
                inv.subtotal.amount, inv.tax_total.amount, inv.total.amount
            ),
        );
    }
    Ok(())
}

impl Simulators {
    /// Posts `invoice` under its number, or returns the document already posted under it.
    async fn post_invoice(&self, invoice: &InvoiceDoc) -> Result<ExternalObject, ConnectorError> {
        let inv = invoice.clone();
        let number = inv.number.clone().unwrap_or_default();
        let validation = validate_invoice(&inv, &self.erp_customers);
        self.operate(System::Erp, "post_invoice", number.clone(), move |tx, at| {
            if number.is_empty() {
                return Ok(Err(permanent(System::Erp, 400, "USER_ERROR", format!("Invoice {} has no number", inv.invoice_id))));
            }
            if let Some((id, existing)) = tx
                .row("SELECT erp_invoice_id, invoice_id FROM sim_invoices WHERE number = ?1", params![number], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .optional()
                .map_err(db_err)?
            {
                if existing != inv.invoice_id {
                    return Ok(Err(permanent(
                        System::Erp,
                        409,
                        "DUP_TRAN_ID",
                        format!("Invoice number {number} is already used by {existing}"),
                    )));
                }
                return Ok(Ok((ExternalObject { id, created: false, status: ObjectStatus::Active }, "existing")));
            }
            if let Err(e) = validation {
                return Ok(Err(e));
            }
            let project: Option<String> = tx
                .row("SELECT status FROM sim_projects WHERE system = 'erp' AND project_id = ?1", params![inv.erp_project_id], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            match project.as_deref() {
                Some("active") => {}
                Some(status) => {
                    return Ok(Err(permanent(
                        System::Erp,
                        400,
                        "INVALID_RCRD_STATE",
                        format!("Project {} is {status}", inv.erp_project_id),
                    )));
                }
                None => {
                    return Ok(Err(permanent(
                        System::Erp,
                        404,
                        "RCRD_DSNT_EXIST",
                        format!("Project {} does not exist", inv.erp_project_id),
                    )));
                }
            }
            // The next number not taken: an invoice keyed in by hand may hold one.
            let id = loop {
                let id = format!("INV{:07}", next_number(tx, "invoice")?);
                let taken: Option<String> = tx
                    .row("SELECT number FROM sim_invoices WHERE erp_invoice_id = ?1", params![id], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?;
                if taken.is_none() {
                    break id;
                }
            };
            insert_invoice(tx, &number, &id, &inv, at)?;
            Ok(Ok((ExternalObject { id, created: true, status: ObjectStatus::Active }, "created")))
        })
        .await
    }
}

impl TaxEngine for Simulators {
    async fn calculate(&self, request: &TaxRequest) -> Result<TaxQuote, ConnectorError> {
        let answer = crate::sim_tax::quote(&self.tax_jurisdictions, request);
        self.operate(System::Tax, "calculate_tax", request.document_id.clone(), move |_, _| {
            Ok(match answer {
                Ok(q) => Ok((q, "quoted")),
                Err((status, code, message)) => Err(permanent(System::Tax, status, code, message)),
            })
        })
        .await
    }
}

impl Crm for Simulators {
    async fn get_opportunity(&self, opportunity_id: &str) -> Result<Option<CrmOpportunityUpdate>, ConnectorError> {
        self.read_opportunity(opportunity_id).await
    }

    async fn upsert_invoice(&self, invoice: &o2c_domain::receivables::CrmInvoice) -> Result<CrmWrite, ConnectorError> {
        self.crm_invoice(invoice).await
    }

    async fn update_opportunity(&self, update: &CrmOpportunityUpdate) -> Result<CrmWrite, ConnectorError> {
        let u = update.clone();
        self.operate(System::Crm, "update_opportunity", u.opportunity_id.clone(), move |tx, at| {
            if u.last_error.as_ref().is_some_and(|e| e.chars().count() > 255) {
                return Ok(Err(permanent(System::Crm, 400, "STRING_TOO_LONG", "O2C_Last_Error__c: data value too large (max length=255)".into())));
            }
            let current: Option<i64> = tx
                .row("SELECT sync_version FROM sim_crm_opportunities WHERE opportunity_id = ?1", params![u.opportunity_id], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            if current.is_some_and(|v| v as u64 > u.sync_version) {
                return Ok(Ok((CrmWrite::Stale, "stale")));
            }
            tx.exec(
                "INSERT INTO sim_crm_opportunities (opportunity_id, sync_version, fields, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(opportunity_id) DO UPDATE SET sync_version = excluded.sync_version, fields = excluded.fields, updated_at = excluded.updated_at",
                params![u.opportunity_id, u.sync_version as i64, serde_json::to_string(&u).map_err(row_err)?, at],
            )
            .map_err(db_err)?;
            Ok(Ok((CrmWrite::Applied, "updated")))
        })
        .await
    }
}
