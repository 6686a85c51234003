//! # o2c-connectors
//!
//! HTTP adapters for the connector ports (`Psa`, `Erp`, `Crm`) speaking the o2c connector
//! contract: the process layer (o2c) calls one small *system API* per system, which maps
//! to the vendor's own API (Salesforce, NetSuite, D365, …). The contract makes every
//! create idempotent by an external key in the URL:
//!
//! | call | request | success |
//! |------|---------|---------|
//! | `PUT  {psa}/v1/projects/{external_key}` | `ProjectSpec` | `201` created / `200` existing: `{"id", "created", "status"}` |
//! | `POST {psa}/v1/projects/{id}/cancel` | `{"reason"}` | `200` (also when already cancelled) |
//! | `PUT  {erp}/v1/projects/{external_key}` | `ProjectSpec` | `201` / `200`: `{"id", "created", "status"}` |
//! | `PUT  {erp}/v1/projects/{id}/billing-schedules/{schedule_id}` | `BillingSchedule` | `201` / `200`: `{"id", "created", "status"}` |
//! | `PATCH {crm}/v1/opportunities/{id}/o2c-sync` | `CrmOpportunityUpdate` | `200`: `{"result": "applied" \| "stale"}` |
//! | `PUT  {erp}/v1/invoices/{number}` | `InvoiceDoc` (numbered, taxed) | `201` posted / `200` already posted: `{"id", "created", "status"}` |
//! | `POST {tax}/v1/quotes` | `TaxRequest` | `200`: `TaxQuote` (one answer per line, tax rounded per line) |
//! | `GET  {psa,erp}/v1/projects/{external_key}` | — | `200`: `ProjectRecord` (id, status, spec) / `404 NOT_FOUND` |
//! | `GET  {erp}/v1/projects/{id}/billing-schedules/{schedule_id}` | — | `200`: `BillingSchedule` / `404 NOT_FOUND` |
//! | `GET  {erp}/v1/invoices/{number}` | — | `200`: `ErpInvoiceRecord` / `404 NOT_FOUND` |
//! | `GET  {crm}/v1/opportunities/{id}/o2c-sync` | — | `200`: `CrmOpportunityUpdate` / `404 NOT_FOUND` |
//!
//! `status` is `active` or `cancelled`: an existing object found under the key is returned
//! whatever its state, and o2c never reuses a cancelled one as live.
//!
//! Errors: `4xx` with `{"code", "message"}` is permanent, except `408` and `429` (with
//! `Retry-After`); `5xx`, timeouts and connection failures are transient. The layout:
//! [`HttpConnector`] (one reqwest client per process, explicit timeouts) and the port
//! implementations [`HttpPsa`], [`HttpErp`], [`HttpCrm`], [`HttpTax`].

use std::time::Duration;

use o2c_app::ports::{ConnectorError, Crm, CrmWrite, Erp, ExternalObject, ObjectStatus, Psa, System, TaxEngine};
use o2c_domain::engagement::CrmOpportunityUpdate;
use o2c_domain::invoicing::InvoiceDoc;
use o2c_domain::model::{BillingSchedule, ProjectSpec};
use o2c_domain::receivables::{CashReceipt, CrmInvoice};
use o2c_domain::reconciliation::{ErpInvoiceRecord, ProjectRecord};
use o2c_domain::revenue::RevenueJournal;
use o2c_domain::tax::{TaxQuote, TaxRequest};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};

/// `{"id", "created", "status"}` answer of a create-or-get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedRef {
    /// System id.
    pub id: String,
    /// `false` when the external key already existed.
    pub created: bool,
    /// `active` or `cancelled` (required: a system API that cannot tell must not claim live).
    pub status: ObjectStatus,
}

impl From<CreatedRef> for ExternalObject {
    fn from(r: CreatedRef) -> Self {
        ExternalObject { id: r.id, created: r.created, status: r.status }
    }
}

/// `{"code", "message"}` error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// System error code.
    pub code: String,
    /// Message.
    pub message: String,
}

/// `{"reason"}` cancel body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// Why.
    pub reason: String,
}

/// `{"result"}` of a CRM sync write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmResult {
    /// `applied` or `stale`.
    pub result: String,
}

/// Timeouts of the connector HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP/TLS connect.
    pub connect: Duration,
    /// Whole request.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(2), request: Duration::from_secs(10) }
    }
}

/// One system API endpoint.
#[derive(Debug, Clone)]
pub struct HttpConnector {
    client: reqwest::Client,
    base: Url,
    system: System,
    token: Option<String>,
}

/// A connector that cannot be configured (bad URL, TLS setup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The HTTP client the connectors of one process share: one connection pool and one TLS
/// configuration (building a client loads the trust roots, a cost paid once at cold start).
pub fn http_client(timeouts: Timeouts) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .user_agent(concat!("o2c/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError(format!("HTTP client: {e}")))
}

impl HttpConnector {
    /// A connector for `system` at `base_url` with a client of its own.
    pub fn new(system: System, base_url: &str, token: Option<String>, timeouts: Timeouts) -> Result<Self, ConfigError> {
        Self::with_client(http_client(timeouts)?, system, base_url, token)
    }

    /// A connector for `system` at `base_url` over a shared client (see [`http_client`]).
    pub fn with_client(client: reqwest::Client, system: System, base_url: &str, token: Option<String>) -> Result<Self, ConfigError> {
        let mut base = Url::parse(base_url).map_err(|e| ConfigError(format!("{} base URL `{base_url}`: {e}", system.as_str())))?;
        if base.cannot_be_a_base() {
            return Err(ConfigError(format!("{} base URL `{base_url}` cannot be a base", system.as_str())));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Ok(Self { client, base, system, token: token.filter(|t| !t.is_empty()) })
    }

    fn url(&self, segments: &[&str]) -> Result<Url, ConnectorError> {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|_| self.permanent(0, "BAD_URL", "base URL cannot take a path".into()))?;
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        Ok(url)
    }

    fn permanent(&self, status: u16, code: &str, message: String) -> ConnectorError {
        ConnectorError::Permanent { system: self.system, status, code: code.into(), message }
    }

    fn transient(&self, status: u16, message: String, retry_after: Option<Duration>) -> ConnectorError {
        ConnectorError::Transient { system: self.system, status, message, retry_after }
    }

    /// A request to `segments`, authenticated, with its idempotency key.
    fn request(&self, method: Method, segments: &[&str], idempotency_key: Option<&str>) -> Result<reqwest::RequestBuilder, ConnectorError> {
        let mut req = self.client.request(method, self.url(segments)?);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        Ok(req)
    }

    /// Sends a JSON request and classifies the answer.
    async fn call<B: Serialize, R: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        segments: &[&str],
        idempotency_key: Option<&str>,
        body: &B,
    ) -> Result<(StatusCode, R), ConnectorError> {
        // Through `Value`, like every mapping of a domain type in a function: its serde code is
        // compiled once, for `Value`, not once more per (de)serializer (bootstrap size).
        let body = serde_json::to_value(body).map_err(|e| self.permanent(0, "UNSERIALIZABLE_BODY", format!("request body: {e}")))?;
        self.send(self.request(method, segments, idempotency_key)?.json(&body)).await
    }

    /// Reads a record: `None` when the system answers `404 NOT_FOUND` (any other 404 — an
    /// endpoint the system does not have — is an error, never "absent").
    async fn get<R: for<'de> Deserialize<'de>>(&self, segments: &[&str]) -> Result<Option<R>, ConnectorError> {
        match self.send(self.request(Method::GET, segments, None)?).await {
            Ok((_, r)) => Ok(Some(r)),
            Err(ConnectorError::Permanent { status: 404, code, .. }) if code == "NOT_FOUND" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends `req` and classifies the answer: 2xx parsed, 429 / 408 / 5xx / no answer
    /// transient (with `Retry-After`), any other status permanent.
    async fn send<R: for<'de> Deserialize<'de>>(&self, req: reqwest::RequestBuilder) -> Result<(StatusCode, R), ConnectorError> {
        let resp = req.send().await.map_err(|e| {
            let status = if e.is_timeout() { 0 } else { 503 };
            self.transient(status, format!("request failed: {e}"), None)
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            // Delta-seconds only (an HTTP-date is ignored); capped at 12 h, SQS's longest
            // visibility timeout — a larger value is the server's defect.
            .map(|secs| Duration::from_secs(secs.min(12 * 3600)));
        let bytes = resp.bytes().await.map_err(|e| self.transient(status.as_u16(), format!("reading the response failed: {e}"), None))?;
        if status.is_success() {
            let parsed = serde_json::from_slice::<serde_json::Value>(&bytes)
                .and_then(|v| R::deserialize(&v))
                .map_err(|e| self.permanent(status.as_u16(), "BAD_RESPONSE", format!("unexpected response body: {e}")))?;
            return Ok((status, parsed));
        }
        let err: ApiError = serde_json::from_slice(&bytes).unwrap_or_else(|_| ApiError {
            code: status.as_str().into(),
            message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        });
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
            return Err(self.transient(status.as_u16(), format!("{}: {}", err.code, err.message), retry_after));
        }
        Err(self.permanent(status.as_u16(), &err.code, err.message))
    }
}

/// PSA over HTTP.
#[derive(Debug, Clone)]
pub struct HttpPsa(pub HttpConnector);
/// ERP over HTTP.
#[derive(Debug, Clone)]
pub struct HttpErp(pub HttpConnector);
/// CRM over HTTP.
#[derive(Debug, Clone)]
pub struct HttpCrm(pub HttpConnector);
/// Tax engine over HTTP.
#[derive(Debug, Clone)]
pub struct HttpTax(pub HttpConnector);

impl Psa for HttpPsa {
    async fn create_or_get_project(&self, spec: &ProjectSpec) -> Result<ExternalObject, ConnectorError> {
        let (_, r): (_, CreatedRef) =
            self.0.call(Method::PUT, &["v1", "projects", &spec.external_key], Some(&spec.external_key), spec).await?;
        Ok(r.into())
    }

    async fn cancel_project(&self, project_id: &str, reason: &str) -> Result<(), ConnectorError> {
        let _: (_, serde_json::Value) =
            self.0.call(Method::POST, &["v1", "projects", project_id, "cancel"], None, &CancelRequest { reason: reason.into() }).await?;
        Ok(())
    }

    async fn get_project(&self, external_key: &str) -> Result<Option<ProjectRecord>, ConnectorError> {
        self.0.get(&["v1", "projects", external_key]).await
    }
}

impl Erp for HttpErp {
    async fn create_or_get_project(&self, spec: &ProjectSpec) -> Result<ExternalObject, ConnectorError> {
        let (_, r): (_, CreatedRef) =
            self.0.call(Method::PUT, &["v1", "projects", &spec.external_key], Some(&spec.external_key), spec).await?;
        Ok(r.into())
    }

    async fn create_or_get_billing_schedule(
        &self,
        erp_project_id: &str,
        schedule: &BillingSchedule,
    ) -> Result<ExternalObject, ConnectorError> {
        let (_, r): (_, CreatedRef) = self
            .0
            .call(
                Method::PUT,
                &["v1", "projects", erp_project_id, "billing-schedules", &schedule.schedule_id],
                Some(&schedule.schedule_id),
                schedule,
            )
            .await?;
        Ok(r.into())
    }

    async fn create_or_get_invoice(&self, invoice: &InvoiceDoc) -> Result<ExternalObject, ConnectorError> {
        let Some(number) = invoice.number.as_deref() else {
            return Err(self.0.permanent(0, "NO_NUMBER", format!("invoice {} has no number: it cannot be posted", invoice.invoice_id)));
        };
        let (_, r): (_, CreatedRef) = self.0.call(Method::PUT, &["v1", "invoices", number], Some(number), invoice).await?;
        Ok(r.into())
    }

    async fn book_receipt(&self, receipt: &CashReceipt) -> Result<ExternalObject, ConnectorError> {
        let id = &receipt.payment_id;
        let (_, r): (_, CreatedRef) = self.0.call(Method::PUT, &["v1", "receipts", id], Some(id), receipt).await?;
        Ok(r.into())
    }

    async fn post_journal(&self, journal: &RevenueJournal) -> Result<ExternalObject, ConnectorError> {
        let id = &journal.journal_id;
        let (_, r): (_, CreatedRef) = self.0.call(Method::PUT, &["v1", "journals", id], Some(id), journal).await?;
        Ok(r.into())
    }

    async fn get_project(&self, external_key: &str) -> Result<Option<ProjectRecord>, ConnectorError> {
        self.0.get(&["v1", "projects", external_key]).await
    }

    async fn get_billing_schedule(&self, erp_project_id: &str, schedule_id: &str) -> Result<Option<BillingSchedule>, ConnectorError> {
        self.0.get(&["v1", "projects", erp_project_id, "billing-schedules", schedule_id]).await
    }

    async fn get_invoice(&self, number: &str) -> Result<Option<ErpInvoiceRecord>, ConnectorError> {
        self.0.get(&["v1", "invoices", number]).await
    }
}

impl TaxEngine for HttpTax {
    async fn calculate(&self, request: &TaxRequest) -> Result<TaxQuote, ConnectorError> {
        let (_, q): (_, TaxQuote) = self.0.call(Method::POST, &["v1", "quotes"], Some(&request.document_id), request).await?;
        Ok(q)
    }
}

impl HttpCrm {
    fn write(&self, r: CrmResult) -> Result<CrmWrite, ConnectorError> {
        match r.result.as_str() {
            "applied" => Ok(CrmWrite::Applied),
            "stale" => Ok(CrmWrite::Stale),
            other => Err(self.0.permanent(200, "BAD_RESPONSE", format!("unknown result `{other}`"))),
        }
    }
}

impl Crm for HttpCrm {
    async fn update_opportunity(&self, update: &CrmOpportunityUpdate) -> Result<CrmWrite, ConnectorError> {
        let (_, r): (_, CrmResult) =
            self.0.call(Method::PATCH, &["v1", "opportunities", &update.opportunity_id, "o2c-sync"], None, update).await?;
        self.write(r)
    }

    async fn upsert_invoice(&self, invoice: &CrmInvoice) -> Result<CrmWrite, ConnectorError> {
        let (_, r): (_, CrmResult) = self.0.call(Method::PUT, &["v1", "invoices", &invoice.number], None, invoice).await?;
        self.write(r)
    }

    async fn get_opportunity(&self, opportunity_id: &str) -> Result<Option<CrmOpportunityUpdate>, ConnectorError> {
        self.0.get(&["v1", "opportunities", opportunity_id, "o2c-sync"]).await
    }
}
