//! Engagements: the list (filter by status, legal entity, customer, age; search by
//! opportunity or engagement id) and one engagement — its contract, its ids in every
//! system, billing schedule, invoices and payments, open exceptions and the audit timeline.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use o2c_app::ports::{EngagementFilter, EngagementStore};
use o2c_domain::aggregate::{AggregateKey, AggregateKind, CrmSyncState};
use o2c_domain::engagement::{AuditEntry, Engagement};
use o2c_domain::exception_case::ExceptionCase;
use o2c_domain::invoicing::InvoiceDoc;
use o2c_domain::receivables::Receivables;
use serde::Deserialize;

use super::layout::{age, at, badge, seg, thead};
use super::session::Session;
use super::source::with_store;
use super::{Console, Viewer, failed, render};
use crate::commands::serve::auth::Caller;

const SECTION: &str = "/console/engagements";

/// The list's filters.
#[derive(Deserialize, Default)]
pub struct ListQuery {
    status: Option<String>,
    legal_entity: Option<String>,
    customer: Option<String>,
    older_than_days: Option<String>,
    exceptions: Option<String>,
    q: Option<String>,
}

fn some(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// How many engagements the list reads at most (newest first) before filtering.
const READ_AT_MOST: usize = 500;

/// `GET /console/engagements`.
pub async fn list(
    State(s): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Response {
    let v = Viewer::from(caller, session);
    let title = "Engagements";
    let older = match some(&q.older_than_days).map(str::parse::<i64>) {
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => return failed(&s, &v, title, SECTION, StatusCode::BAD_REQUEST, "Older than: a whole number of days."),
        None => None,
    };
    let rows = with_store!(s.source, store => load_list(store, &q).await);
    let mut rows = match rows {
        Ok(r) => r,
        Err(e) => return failed(&s, &v, title, SECTION, StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let now = s.source.now();
    let le = some(&q.legal_entity);
    let customer = some(&q.customer);
    rows.retain(|e| {
        let c = e.contract.as_ref();
        le.is_none_or(|le| c.is_some_and(|c| c.legal_entity.id == le))
            && customer.is_none_or(|cu| c.is_some_and(|c| c.customer.id == cu || c.customer.name.contains(cu)))
            && older.is_none_or(|d| (now - e.created_at).num_days() >= d)
            && some(&q.status).is_none_or(|st| e.status.as_str() == st)
    });
    render(&s, &v, title, SECTION, list_view(&q, &rows, now))
}

/// The engagements a search names, or the latest [`READ_AT_MOST`] with the status and
/// open-exception filters the store applies.
async fn load_list<S: EngagementStore>(store: &S, q: &ListQuery) -> Result<Vec<Engagement>, o2c_app::O2cError> {
    let ids: Vec<String> = match some(&q.q) {
        // A search names one engagement: by its id or its opportunity's.
        Some(term) => vec![crate::engagement_id(term)],
        None => {
            let filter = EngagementFilter {
                status: some(&q.status).map(str::to_owned),
                open_exceptions: q.exceptions.is_some(),
                limit: READ_AT_MOST,
                after: None,
            };
            store.list(&filter).await?.into_iter().map(|r| r.engagement_id).collect()
        }
    };
    let mut rows = Vec::new();
    for id in ids {
        if let Some(e) = store.load(&id).await? {
            rows.push(e.value);
        }
    }
    Ok(rows)
}

fn list_view(q: &ListQuery, rows: &[Engagement], now: DateTime<Utc>) -> Markup {
    const STATUSES: [&str; 9] = [
        "awaiting_contract",
        "rejected",
        "contract_created",
        "awaiting_approval",
        "provisioning",
        "provisioned",
        "active",
        "provisioning_failed",
        "billing_setup_failed",
    ];
    html! {
        form.filters method="get" action=(SECTION) role="search" aria-label="Find engagements" {
            label { "Opportunity or engagement id" input type="search" name="q" value=[q.q.as_deref()] size="22"; }
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for st in STATUSES { option value=(st) selected[q.status.as_deref() == Some(st)] { (st) } }
                }
            }
            label { "Legal entity" input name="legal_entity" value=[q.legal_entity.as_deref()] size="10"; }
            label { "Customer" input name="customer" value=[q.customer.as_deref()] size="14"; }
            label { "Older than (days)" input name="older_than_days" inputmode="numeric" value=[q.older_than_days.as_deref()] size="4"; }
            label { "Open exception" input type="checkbox" name="exceptions" value="true" checked[q.exceptions.is_some()]; }
            button type="submit" { "Find" }
        }
        @if rows.is_empty() {
            p #empty { "No engagement matches." }
        } @else {
            table #engagements {
                caption { (rows.len()) " engagement(s), most recently changed first" }
                (thead(&["Engagement", "Opportunity", "Customer", "Legal entity", "Status", "Contract value#", "Open exceptions", "Age", "Last change"]))
                tbody {
                    @for e in rows {
                        @let c = e.contract.as_ref();
                        tr {
                            td { a href={ (SECTION) "/" (seg(e.engagement_id.as_str())) } { (e.engagement_id.as_str()) } }
                            td { (e.opportunity_id) }
                            td { (c.map_or("—", |c| c.customer.name.as_str())) }
                            td { (c.map_or("—", |c| c.legal_entity.id.as_str())) }
                            td { (badge(e.status.as_str())) }
                            td.num { @if let Some(c) = c { (c.total_value) } @else { "—" } }
                            td { (e.exceptions.iter().filter(|x| x.open).count()) }
                            td { (age(e.created_at, now)) }
                            td { (at(e.updated_at)) }
                        }
                    }
                }
            }
        }
    }
}

/// Everything one engagement's page shows.
struct Detail {
    engagement: Engagement,
    version: u64,
    crm: Option<CrmSyncState>,
    invoices: Vec<InvoiceDoc>,
    receivables: Vec<Receivables>,
    cases: Vec<ExceptionCase>,
    timeline: Vec<AuditEntry>,
}

async fn detail<S: EngagementStore>(store: &S, id: &str) -> Result<Option<Detail>, o2c_app::O2cError> {
    let Some(state) = store.load(id).await? else { return Ok(None) };
    let timeline = store.audit_trail(id).await?;
    let others = store.load_aggregates(&[AggregateKey::crm_sync(id)]).await?;
    let crm = others.crm_sync(id).cloned();
    let mut invoices = store.load_all(AggregateKind::Invoice, id).await?.invoices().into_iter().cloned().collect::<Vec<_>>();
    invoices.sort_by(|a, b| (a.issue_date, &a.invoice_id).cmp(&(b.issue_date, &b.invoice_id)));
    // Its customers' receivables with what settled out of them (paid invoices, closed payments).
    let mut receivables: Vec<Receivables> = Vec::new();
    for i in &invoices {
        if !receivables.iter().any(|x| x.legal_entity_id == i.legal_entity_id && x.customer_id == i.customer_id) {
            receivables.extend(o2c_app::receivables::history(store, &i.legal_entity_id, Some(&i.customer_id)).await?);
        }
    }
    // The engagement names its exceptions; each case is read by its id.
    let case_keys: Vec<AggregateKey> =
        state.value.exceptions.iter().map(|x| AggregateKey::exception_case(x.exception_id.as_str())).collect();
    let loaded_cases = store.load_aggregates(&case_keys).await?;
    let cases = state.value.exceptions.iter().filter_map(|x| loaded_cases.exception_case(x.exception_id.as_str()).cloned()).collect();
    Ok(Some(Detail { version: state.version, engagement: state.value, crm, invoices, receivables, cases, timeline }))
}

/// `GET /console/engagements/{id}`.
pub async fn one(
    State(s): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let v = Viewer::from(caller, session);
    let id = crate::engagement_id(&id);
    match with_store!(s.source, store => detail(store, &id).await) {
        Ok(Some(d)) => {
            let title = format!("Engagement {}", d.engagement.engagement_id.as_str());
            render(&s, &v, &title, SECTION, detail_view(&d))
        }
        Ok(None) => failed(&s, &v, "Engagement", SECTION, StatusCode::NOT_FOUND, format!("No engagement {id}.")),
        Err(e) => failed(&s, &v, "Engagement", SECTION, StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

fn detail_view(d: &Detail) -> Markup {
    let e = &d.engagement;
    let c = e.contract.as_ref();
    let crm = d.crm.as_ref().map(|c| &c.last);
    html! {
        dl.facts {
            dt { "Status" } dd #status { (badge(e.status.as_str())) }
            dt { "Opportunity" } dd { (e.opportunity_id) }
            dt { "Correlation id" } dd { code { (e.correlation_id) } }
            dt { "Version" } dd { (d.version) }
            @if let Some(c) = c {
                dt { "Contract" } dd { (c.contract_id.as_str()) " revision " (c.revision) ": " (c.name) }
                dt { "Value" } dd { (c.total_value) }
                dt { "Customer" } dd { (c.customer.name) " (" (c.customer.id) ")" }
                dt { "Legal entity" } dd { (c.legal_entity.id) " / ERP subsidiary " (c.legal_entity.erp_subsidiary) }
                dt { "Delivery" } dd { (c.start_date) " → " (c.end_date) " in " (c.delivery_region) }
                dt { "Payment terms" } dd { (c.payment_terms) }
            }
            @if let Some(r) = &e.rejection {
                dt { "Rejected" } dd { ul { @for i in &r.reasons { li { code { (i.field) } " [" (i.code) "] " (i.message) } } } }
            }
        }
        h2 { "In every system" }
        table #systems {
            (thead(&["System", "Object", "Id", "State"]))
            tbody {
                tr { td { "CRM" } td { "Opportunity" } td { (e.opportunity_id) }
                    td #crm { @if let Some(s) = crm { (badge(&s.update.sync_status)) " " (s.update.engagement_status) " (sync v" (s.update.sync_version) ", " (s.result) ")" } @else { "not written yet" } } }
                @if let Some(a) = &e.approval {
                    tr { td { "CLM" } td { "Agreement" } td { (a.clm_agreement_id) } td { "approved by " (a.approver_id) " at " (at(a.approved_at)) } }
                }
                tr { td { "PSA" } td { "Project" } td { (e.psa_project_id.as_deref().unwrap_or("—")) } td { "" } }
                tr { td { "ERP" } td { "Project" } td { (e.erp_project_id.as_deref().unwrap_or("—")) } td { "" } }
                tr { td { "ERP" } td { "Billing schedule" } td { (e.erp_billing_schedule_id.as_deref().unwrap_or("—")) } td { "" } }
            }
        }
        @if let Some(sch) = &e.billing_schedule {
            h2 { "Billing schedule" }
            p { (sch.items.len()) " item(s); fixed " (sch.fixed_total) ", time and materials cap " (sch.time_and_materials_cap) }
            table #schedule {
                (thead(&["Item", "Kind", "Line", "Date", "Amount#"]))
                tbody {
                    @for item in &sch.items {
                        // Read through its serialised form: one row shape for every kind.
                        @let j = serde_json::to_value(item).unwrap_or_default();
                        @let money = |m: &serde_json::Value| format!("{} {}", m["currency"].as_str().unwrap_or(""), m["amount"].as_str().unwrap_or(""));
                        tr {
                            td { (j["item_id"].as_str().unwrap_or("")) }
                            td { (j["kind"].as_str().unwrap_or("").replace('_', " ")) @if let Some(f) = j["frequency"].as_str() { " (" (f) ")" } }
                            td { (j["line_id"].as_str().unwrap_or("")) }
                            td { (j["planned_date"].as_str().or(j["bill_date"].as_str()).or(j["first_bill_date"].as_str()).unwrap_or("")) }
                            td.num {
                                @if j["amount"].is_object() { (money(&j["amount"])) }
                                @else if j["not_to_exceed"].is_object() { "up to " (money(&j["not_to_exceed"])) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Invoices and payments" }
        @if d.invoices.is_empty() {
            p { "No invoice yet." }
        } @else {
            table #invoices {
                (thead(&["Invoice", "Number", "Status", "Issued", "Due", "Total#", "Open#", "Payments"]))
                tbody {
                    @for i in &d.invoices {
                        @let item = d.receivables.iter().find(|r| r.legal_entity_id == i.legal_entity_id && r.customer_id == i.customer_id).and_then(|r| r.invoices.get(&i.invoice_id).map(|it| (r, it)));
                        tr {
                            td { (i.invoice_id) }
                            td { (i.number.as_deref().unwrap_or("—")) }
                            td { (badge(i.status.as_str())) }
                            td { (i.issue_date) }
                            td { (i.due_date) }
                            td.num { (i.total) }
                            td.num { @if let Some((_, it)) = item { (it.open()) } @else { "—" } }
                            td {
                                @if let Some((r, _)) = item {
                                    @for p in r.payments.values() {
                                        @for a in p.applications.iter().filter(|a| a.invoice_id == i.invoice_id) {
                                            (p.payment_id) " " (p.value_date) ": " (a.amount) @if p.reversed_by.is_some() { " (reversed)" } br;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Exceptions" }
        @if e.exceptions.is_empty() {
            p { "None." }
        } @else {
            ul #exceptions {
                @for x in &e.exceptions {
                    @let case = d.cases.iter().find(|c| c.exception_id == x.exception_id);
                    li {
                        @if let Some(c) = case {
                            a href={ "/console/exceptions/" (seg(c.exception_id.as_str())) } { (c.exception_id.as_str()) } " " (c.kind.as_str()) " " (badge(c.status.as_str())) " — " (c.message)
                        } @else {
                            // Recorded on the engagement without a case (yet): its raising is
                            // on its way, or the step that failed raises none.
                            (x.exception_id.as_str()) " " (x.kind.as_str()) " " (badge(if x.open { "open" } else { "closed" })) " — " (x.message) " (no case in the queue)"
                        }
                    }
                }
            }
        }
        h2 { "Timeline" }
        table #timeline {
            caption { "Oldest first; every step's decision with the event and correlation id it came from" }
            (thead(&["At", "Step", "Event", "Action", "Summary", "Correlation id"]))
            tbody {
                @for a in &d.timeline {
                    tr { td { (at(a.at)) } td { (a.step) } td { (a.event_type) } td { (a.action.to_string()) } td { (a.summary) } td { code { (a.correlation_id) } } }
                }
            }
        }
    }
}
