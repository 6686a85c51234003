//! The simulators behind the o2c connector contract over HTTP (see `o2c-connectors`), so
//! the Lambda binaries and `o2c serve --target aws` can reach a PSA, ERP and CRM without
//! any vendor account: `o2c sim serve` mounts [`router`] at `/psa`, `/erp`, `/crm` and `/tax`.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post, put};
use axum::{Json, Router};
use o2c_app::ports::{ConnectorError, Crm, CrmWrite, Erp, ExternalObject, Psa, TaxEngine};
use o2c_domain::engagement::CrmOpportunityUpdate;
use o2c_domain::invoicing::InvoiceDoc;
use o2c_domain::model::{BillingSchedule, ProjectSpec};
use o2c_domain::receivables::{CashReceipt, CrmInvoice};
use o2c_domain::revenue::RevenueJournal;
use o2c_domain::tax::TaxRequest;
use serde_json::json;

use crate::sim::Simulators;

fn error_response(e: ConnectorError) -> Response {
    match e {
        ConnectorError::Transient { status, message, retry_after, .. } => {
            let code = if status == 0 {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            };
            let mut resp = (code, Json(json!({"code": code.as_str(), "message": message}))).into_response();
            if let Some(ra) = retry_after
                && let Ok(v) = HeaderValue::from_str(&ra.as_secs().max(1).to_string())
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        ConnectorError::Permanent { status, code, message, .. } => {
            (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), Json(json!({"code": code, "message": message})))
                .into_response()
        }
    }
}

fn created(r: Result<ExternalObject, ConnectorError>) -> Response {
    match r {
        Ok(r) => (
            if r.created { StatusCode::CREATED } else { StatusCode::OK },
            Json(json!({"id": r.id, "created": r.created, "status": r.status.as_str()})),
        )
            .into_response(),
        Err(e) => error_response(e),
    }
}

fn key_mismatch(path: &str, body: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"code": "KEY_MISMATCH", "message": format!("path key `{path}` differs from body key `{body}`")})))
        .into_response()
}

async fn psa_project(State(s): State<Simulators>, Path(key): Path<String>, Json(spec): Json<ProjectSpec>) -> Response {
    if spec.external_key != key {
        return key_mismatch(&key, &spec.external_key);
    }
    created(Psa::create_or_get_project(&s, &spec).await)
}

async fn psa_cancel(State(s): State<Simulators>, Path(id): Path<String>, Json(body): Json<serde_json::Value>) -> Response {
    let reason = body.get("reason").and_then(|r| r.as_str()).unwrap_or_default().to_owned();
    match s.cancel_project(&id, &reason).await {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => error_response(e),
    }
}

async fn erp_project(State(s): State<Simulators>, Path(key): Path<String>, Json(spec): Json<ProjectSpec>) -> Response {
    if spec.external_key != key {
        return key_mismatch(&key, &spec.external_key);
    }
    created(Erp::create_or_get_project(&s, &spec).await)
}

async fn erp_schedule(
    State(s): State<Simulators>,
    Path((project, key)): Path<(String, String)>,
    Json(schedule): Json<BillingSchedule>,
) -> Response {
    if key != schedule.schedule_id {
        return key_mismatch(&key, &schedule.schedule_id);
    }
    created(s.create_or_get_billing_schedule(&project, &schedule).await)
}

async fn erp_invoice(State(s): State<Simulators>, Path(number): Path<String>, Json(invoice): Json<InvoiceDoc>) -> Response {
    if invoice.number.as_deref() != Some(number.as_str()) {
        return key_mismatch(&number, invoice.number.as_deref().unwrap_or_default());
    }
    created(s.create_or_get_invoice(&invoice).await)
}

async fn erp_receipt(State(s): State<Simulators>, Path(id): Path<String>, Json(receipt): Json<CashReceipt>) -> Response {
    if id != receipt.payment_id {
        return key_mismatch(&id, &receipt.payment_id);
    }
    created(s.book_receipt(&receipt).await)
}

async fn erp_journal(State(s): State<Simulators>, Path(id): Path<String>, Json(journal): Json<RevenueJournal>) -> Response {
    if id != journal.journal_id {
        return key_mismatch(&id, &journal.journal_id);
    }
    created(s.post_journal(&journal).await)
}

async fn crm_invoice(State(s): State<Simulators>, Path(number): Path<String>, Json(invoice): Json<CrmInvoice>) -> Response {
    if number != invoice.number {
        return key_mismatch(&number, &invoice.number);
    }
    match s.upsert_invoice(&invoice).await {
        Ok(CrmWrite::Applied) => Json(json!({"result": "applied"})).into_response(),
        Ok(CrmWrite::Stale) => Json(json!({"result": "stale"})).into_response(),
        Err(e) => error_response(e),
    }
}

async fn tax_quote(State(s): State<Simulators>, Json(request): Json<TaxRequest>) -> Response {
    match s.calculate(&request).await {
        Ok(q) => Json(q).into_response(),
        Err(e) => error_response(e),
    }
}

async fn crm_sync(State(s): State<Simulators>, Path(id): Path<String>, Json(update): Json<CrmOpportunityUpdate>) -> Response {
    if id != update.opportunity_id {
        return key_mismatch(&id, &update.opportunity_id);
    }
    match s.update_opportunity(&update).await {
        Ok(CrmWrite::Applied) => Json(json!({"result": "applied"})).into_response(),
        Ok(CrmWrite::Stale) => Json(json!({"result": "stale"})).into_response(),
        Err(e) => error_response(e),
    }
}

/// A read: `200` with the record, `404 NOT_FOUND` when there is none.
fn found<T: serde::Serialize>(r: Result<Option<T>, ConnectorError>, what: &str) -> Response {
    match r {
        Ok(Some(t)) => Json(t).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({"code": "NOT_FOUND", "message": format!("no {what}")}))).into_response(),
        Err(e) => error_response(e),
    }
}

async fn psa_project_get(State(s): State<Simulators>, Path(key): Path<String>) -> Response {
    found(Psa::get_project(&s, &key).await, &format!("project {key}"))
}

async fn erp_project_get(State(s): State<Simulators>, Path(key): Path<String>) -> Response {
    found(Erp::get_project(&s, &key).await, &format!("project {key}"))
}

async fn erp_schedule_get(State(s): State<Simulators>, Path((project, key)): Path<(String, String)>) -> Response {
    found(s.get_billing_schedule(&project, &key).await, &format!("billing schedule {key} on {project}"))
}

async fn erp_invoice_get(State(s): State<Simulators>, Path(number): Path<String>) -> Response {
    found(s.get_invoice(&number).await, &format!("invoice {number}"))
}

async fn crm_sync_get(State(s): State<Simulators>, Path(id): Path<String>) -> Response {
    found(s.get_opportunity(&id).await, &format!("opportunity {id}"))
}

/// The simulators' HTTP API: `/psa/v1/…`, `/erp/v1/…`, `/crm/v1/…`, `/tax/v1/…`.
pub fn router(sims: Simulators) -> Router {
    Router::new()
        .route("/psa/v1/projects/{key}", put(psa_project).get(psa_project_get))
        .route("/psa/v1/projects/{id}/cancel", post(psa_cancel))
        .route("/erp/v1/projects/{key}", put(erp_project).get(erp_project_get))
        .route("/erp/v1/projects/{id}/billing-schedules/{key}", put(erp_schedule).get(erp_schedule_get))
        .route("/erp/v1/invoices/{number}", put(erp_invoice).get(erp_invoice_get))
        .route("/erp/v1/receipts/{id}", put(erp_receipt))
        .route("/erp/v1/journals/{id}", put(erp_journal))
        .route("/tax/v1/quotes", post(tax_quote))
        .route("/crm/v1/opportunities/{id}/o2c-sync", patch(crm_sync).get(crm_sync_get))
        .route("/crm/v1/invoices/{number}", put(crm_invoice))
        .with_state(sims)
}
