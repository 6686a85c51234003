//! Reconciliation: what each system holds for an engagement, read through its connector,
//! against what o2c says it should hold — field by field, both sides' values kept.
//!
//! | system | object (read by) | compared |
//! |---|---|---|
//! | PSA | project (external key of the current attempt) | exists, id, status live, name, customer, currency, budget, dates, milestone count and sum |
//! | ERP | project (same key) | the same, with the ERP's customer id |
//! | ERP | billing schedule (its external key on the ERP project) | exists, currency, fixed total, cap, each item (by id) with its amount and date |
//! | ERP | each posted invoice (its number) | exists, o2c invoice id, customer, currency, total, tax, due date |
//! | ERP | an invoice the ERP reported (`ErpInvoicePosted`) that o2c did not issue | flagged while the ERP holds it (double billing) |
//! | CRM | opportunity's o2c fields | against what the write-back last sent it: engagement status, sync status, contract, PSA / ERP project and schedule ids |
//!
//! Pure: [`compare`] takes the engagement, its posted invoices, what the CRM was last sent
//! and the observations. A read a system refuses is reported apart (`unreadable`): an
//! expired token is the integration's problem, not each engagement's.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::engagement::{CrmOpportunityUpdate, Engagement};
use crate::ids::EngagementId;
use crate::invoicing::InvoiceDoc;
use crate::model::{BillingItem, BillingSchedule, ProjectSpec};
use crate::money::Money;
use crate::workflow::{ObjectStatus, System};

/// A project as a PSA or ERP holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectRecord {
    /// Its id there.
    pub project_id: String,
    /// Live or cancelled.
    pub status: ObjectStatus,
    /// What it holds (name, customer, dates, budget, milestones).
    pub spec: ProjectSpec,
}

/// A posted invoice as the ERP holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpInvoiceRecord {
    /// Number.
    pub number: String,
    /// The ERP's id.
    pub erp_invoice_id: String,
    /// o2c's invoice id (the ERP's external id).
    pub invoice_id: String,
    /// ERP customer.
    pub customer_id: String,
    /// Total.
    pub total: Money,
    /// Tax.
    pub tax_total: Money,
    /// Due date.
    pub due_date: NaiveDate,
}

/// What one read found.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A project (none: the system has no project under the key).
    Project(Option<ProjectRecord>),
    /// A billing schedule.
    Schedule(Option<BillingSchedule>),
    /// An invoice.
    Invoice(Option<ErpInvoiceRecord>),
    /// The CRM opportunity's o2c fields.
    Opportunity(Option<CrmOpportunityUpdate>),
}

/// Everything read for one engagement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The PSA project, when read.
    pub psa: Option<Option<ProjectRecord>>,
    /// The ERP project, when read.
    pub erp: Option<Option<ProjectRecord>>,
    /// The ERP billing schedule, when read.
    pub schedule: Option<Option<BillingSchedule>>,
    /// The CRM opportunity, when read.
    pub crm: Option<Option<CrmOpportunityUpdate>>,
    /// ERP invoices by number.
    pub invoices: Vec<(String, Option<ErpInvoiceRecord>)>,
}

/// One field that differs: where, and both sides' values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// The system whose record differs.
    pub system: System,
    /// The object (`project a0P…`, `invoice LE-DE-01-000001`, `opportunity 006…`).
    pub object: String,
    /// The field (`budget`, `status`, `exists`, `items[2].amount`).
    pub field: String,
    /// What o2c says it should be.
    pub o2c: String,
    /// What the system holds.
    pub system_value: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}: o2c {} ≠ {} {}",
            self.system.label(),
            self.object,
            self.field,
            self.o2c,
            self.system.as_str(),
            self.system_value
        )
    }
}

/// The latest reconciliation of an engagement (aggregate `ENG#<id>` / `RECON`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconciliationReport {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// The run.
    pub run_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Objects compared (`psa project a0P…`, …).
    pub checked: Vec<String>,
    /// What differs.
    pub mismatches: Vec<Mismatch>,
    /// Reads a system refused (not compared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Mismatch>,
    /// Numbers of invoices the ERP files under the engagement that o2c did not issue, still
    /// there at this run: read again by every later run until the ERP voids them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_invoices: Vec<String>,
}

impl ReconciliationReport {
    /// True when every system answered and agrees.
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty() && self.unreadable.is_empty()
    }
}

/// The reads an engagement needs: (system, what) per object o2c says exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A project by external key.
    Project(System, String),
    /// A billing schedule on an ERP project.
    Schedule {
        /// ERP project id.
        erp_project_id: String,
        /// Schedule id (external key).
        schedule_id: String,
    },
    /// A posted invoice by number.
    Invoice(String),
    /// The CRM opportunity.
    Opportunity(String),
}

/// The numbers among `seen` the ERP holds that o2c did not issue (see
/// [`ReconciliationReport::foreign_invoices`]).
pub fn foreign_invoices(invoices: &[&InvoiceDoc], seen: &Observed) -> Vec<String> {
    seen.invoices.iter().filter(|(n, r)| r.is_some() && !issued_by_o2c(invoices, n)).map(|(n, _)| n.clone()).collect()
}

/// Whether `number` is o2c's invoice, posted or being posted (the number is claimed before
/// the ERP call, and an ERP may report the invoice before o2c records the posting). A number
/// o2c voided, or whose posting failed, is not: the ERP holding it open is a break (an
/// ambiguous call that did post, then rebilled under a new number).
pub fn issued_by_o2c(invoices: &[&InvoiceDoc], number: &str) -> bool {
    use crate::invoicing::InvoiceStatus::{Approved, Posted};
    invoices.iter().any(|i| i.number.as_deref() == Some(number) && matches!(i.status, Posted | Approved))
}

/// The foreign invoice numbers a run keeps: the ones it found the ERP holding or could not
/// read (`kept`), and those a report stored meanwhile (`stored`) names that this run did
/// not read (`read`) — a run that began before the ERP reported them proves nothing about
/// them. Returns the numbers and whether any were carried unread.
pub fn carry_foreign(kept: Vec<String>, stored: &[String], read: &[&str], invoices: &[&InvoiceDoc]) -> (Vec<String>, bool) {
    let mut numbers = kept;
    let mut carried = false;
    for n in stored {
        if !read.contains(&n.as_str()) && !issued_by_o2c(invoices, n) && !numbers.contains(n) {
            numbers.push(n.clone());
            carried = true;
        }
    }
    (numbers, carried)
}

/// What to read for `eng` and its posted `invoices`.
pub fn reads(eng: &Engagement, invoices: &[&InvoiceDoc]) -> Vec<Read> {
    let key = eng.project_external_key().to_string();
    let mut out = Vec::new();
    if eng.psa_project_id.is_some() {
        out.push(Read::Project(System::Psa, key.clone()));
    }
    if eng.erp_project_id.is_some() {
        out.push(Read::Project(System::Erp, key));
    }
    if let (Some(p), Some(s)) = (&eng.erp_project_id, &eng.billing_schedule)
        && eng.erp_billing_schedule_id.is_some()
    {
        out.push(Read::Schedule { erp_project_id: p.clone(), schedule_id: s.schedule_id.clone() });
    }
    out.extend(posted(invoices).filter_map(|i| i.number.clone()).map(Read::Invoice));
    out.push(Read::Opportunity(eng.opportunity_id.clone()));
    out
}

fn posted<'a>(invoices: &'a [&'a InvoiceDoc]) -> impl Iterator<Item = &'a InvoiceDoc> {
    invoices.iter().copied().filter(|i| i.status == crate::invoicing::InvoiceStatus::Posted && i.number.is_some())
}

struct Cmp<'a> {
    system: System,
    object: String,
    out: &'a mut Vec<Mismatch>,
}

impl Cmp<'_> {
    fn eq<T: PartialEq + std::fmt::Display>(&mut self, field: &str, o2c: T, theirs: T) {
        if o2c != theirs {
            self.out.push(Mismatch {
                system: self.system,
                object: self.object.clone(),
                field: field.to_owned(),
                o2c: o2c.to_string(),
                system_value: theirs.to_string(),
            });
        }
    }

    fn missing(&mut self) {
        self.eq("exists", "yes", "no");
    }
}

fn opt(s: &Option<impl std::fmt::Display>) -> String {
    s.as_ref().map(|x| x.to_string()).unwrap_or_else(|| "-".to_owned())
}

/// Compares what each system holds with what o2c says it should: every difference, both
/// values. Returns the objects compared and the mismatches.
pub fn compare(
    eng: &Engagement,
    invoices: &[&InvoiceDoc],
    crm_last_sent: Option<&CrmOpportunityUpdate>,
    seen: &Observed,
) -> (Vec<String>, Vec<Mismatch>) {
    let mut out = Vec::new();
    let mut checked = Vec::new();
    let contract = eng.contract.as_ref();
    for (system, record, expected_id) in [(System::Psa, &seen.psa, &eng.psa_project_id), (System::Erp, &seen.erp, &eng.erp_project_id)] {
        let (Some(record), Some(expected_id)) = (record, expected_id) else { continue };
        let mut c = Cmp { system, object: format!("project {expected_id}"), out: &mut out };
        checked.push(format!("{} project {expected_id}", system.as_str()));
        let Some(p) = record else {
            c.missing();
            continue;
        };
        c.eq("id", expected_id.as_str(), p.project_id.as_str());
        c.eq("status", ObjectStatus::Active.as_str(), p.status.as_str());
        if let Some(k) = contract {
            let customer = if system == System::Psa { &k.customer.id } else { &k.customer.erp_customer_id };
            c.eq("name", k.name.as_str(), p.spec.name.as_str());
            c.eq("customer", customer.as_str(), p.spec.customer_id.as_str());
            c.eq("currency", k.currency.to_string(), p.spec.currency.to_string());
            c.eq("budget", k.total_value.to_string(), p.spec.budget.to_string());
            c.eq("start_date", k.start_date, p.spec.start_date);
            c.eq("end_date", k.end_date, p.spec.end_date);
        }
        c.eq("milestones", eng.milestones.len(), p.spec.milestones.len());
        let sum = |ms: &[crate::model::Milestone]| ms.iter().map(|m| m.amount.amount).sum::<rust_decimal::Decimal>();
        c.eq("milestone_sum", sum(&eng.milestones), sum(&p.spec.milestones));
    }
    if let (Some(record), Some(expected)) = (&seen.schedule, &eng.billing_schedule) {
        let id = eng.erp_billing_schedule_id.clone().unwrap_or_default();
        checked.push(format!("erp billing schedule {id}"));
        let mut c = Cmp { system: System::Erp, object: format!("billing schedule {id}"), out: &mut out };
        match record {
            None => c.missing(),
            Some(s) => {
                c.eq("currency", expected.currency.to_string(), s.currency.to_string());
                c.eq("fixed_total", expected.fixed_total.to_string(), s.fixed_total.to_string());
                c.eq("time_and_materials_cap", expected.time_and_materials_cap.to_string(), s.time_and_materials_cap.to_string());
                c.eq("items", expected.items.len(), s.items.len());
                // By item id: a system may return them in another order.
                for a in &expected.items {
                    let id = item_id(a);
                    match s.items.iter().find(|b| item_id(b) == id) {
                        None => c.eq(&format!("items[{id}]"), "present", "missing"),
                        Some(b) => {
                            let ((ea, ed), (sa, sd)) = (item_terms(a), item_terms(b));
                            c.eq(&format!("items[{id}].amount"), ea, sa);
                            c.eq(&format!("items[{id}].date"), ed, sd);
                        }
                    }
                }
            }
        }
    }
    for (number, record) in &seen.invoices {
        let Some(ours) = posted(invoices).find(|i| i.number.as_deref() == Some(number.as_str())) else {
            // An invoice the ERP files under the engagement that o2c never issued (keyed in
            // by hand, or by another integration): the customer may be billed twice. One o2c
            // is still posting is compared once posted.
            if let Some(r) = record
                && !issued_by_o2c(invoices, number)
            {
                let mut c = Cmp { system: System::Erp, object: format!("invoice {number}"), out: &mut out };
                match invoices.iter().find(|i| i.number.as_deref() == Some(number.as_str())) {
                    // o2c gave up this number (voided, or its posting failed) yet the ERP holds it.
                    Some(i) => {
                        checked.push(format!("erp invoice {number} ({} in o2c)", i.status.as_str()));
                        c.eq("status", i.status.as_str().to_owned(), format!("open (ERP id {}, total {})", r.erp_invoice_id, r.total));
                    }
                    None => {
                        checked.push(format!("erp invoice {number} (not issued by o2c)"));
                        c.eq(
                            "issued_by_o2c",
                            "yes".to_owned(),
                            format!("no (ERP id {}, total {}, due {})", r.erp_invoice_id, r.total, r.due_date),
                        );
                    }
                }
            }
            continue;
        };
        checked.push(format!("erp invoice {number}"));
        let mut c = Cmp { system: System::Erp, object: format!("invoice {number}"), out: &mut out };
        let Some(r) = record else {
            c.missing();
            continue;
        };
        c.eq("invoice_id", ours.invoice_id.as_str(), r.invoice_id.as_str());
        c.eq("customer", ours.erp_customer_id.as_str(), r.customer_id.as_str());
        c.eq("total", ours.total.to_string(), r.total.to_string());
        c.eq("tax_total", ours.tax_total.to_string(), r.tax_total.to_string());
        c.eq("due_date", ours.due_date, r.due_date);
        c.eq("erp_invoice_id", opt(&ours.erp_invoice_id), r.erp_invoice_id.clone());
    }
    if let (Some(record), Some(expected)) = (&seen.crm, crm_last_sent) {
        checked.push(format!("crm opportunity {}", eng.opportunity_id));
        let mut c = Cmp { system: System::Crm, object: format!("opportunity {}", eng.opportunity_id), out: &mut out };
        match record {
            None => c.missing(),
            Some(o) => {
                c.eq("engagement_status", expected.engagement_status.as_str(), o.engagement_status.as_str());
                c.eq("sync_status", expected.sync_status.as_str(), o.sync_status.as_str());
                c.eq("contract_id", opt(&expected.contract_id), opt(&o.contract_id));
                c.eq("psa_project_id", opt(&expected.psa_project_id), opt(&o.psa_project_id));
                c.eq("erp_project_id", opt(&expected.erp_project_id), opt(&o.erp_project_id));
                c.eq("erp_billing_schedule_id", opt(&expected.erp_billing_schedule_id), opt(&o.erp_billing_schedule_id));
            }
        }
    }
    (checked, out)
}

/// An item's id.
fn item_id(i: &BillingItem) -> &str {
    match i {
        BillingItem::Milestone { item_id, .. }
        | BillingItem::Installment { item_id, .. }
        | BillingItem::TimeAndMaterials { item_id, .. } => item_id,
    }
}

/// An item's amount and date (time and materials: its cap and first bill date).
fn item_terms(i: &BillingItem) -> (String, String) {
    match i {
        BillingItem::Milestone { amount, planned_date, .. } => (amount.to_string(), planned_date.to_string()),
        BillingItem::Installment { amount, bill_date, .. } => (amount.to_string(), bill_date.to_string()),
        BillingItem::TimeAndMaterials { not_to_exceed, first_bill_date, .. } => (not_to_exceed.to_string(), first_bill_date.to_string()),
    }
}
