//! The fan-out of a scheduled run (invoice run, revenue run, reconciliation): a request without an
//! engagement becomes one request per active engagement, page by page (see the steps'
//! `fan_out` in `o2c_domain::workflow` for what is emitted).
//!
//! Nothing is stored: the requests carry deterministic ids and idempotency keys
//! (`invoice-run:<run>:<engagement>`), so a redelivered fan-out re-publishes the same
//! requests and each engagement's run absorbs the duplicate. Whether an engagement's
//! cycle is due is decided by its own run, on its own state.

use o2c_domain::events::BusinessEvent;
use o2c_domain::ids::EngagementId;
use o2c_domain::workflow::StepContext;
use o2c_domain::workflow::invoice_run::{FAN_OUT_PAGE, fan_out};
use o2c_domain::workflow::reconciliation::fan_out as reconciliation_fan_out;
use o2c_domain::workflow::revenue_recognition::fan_out as revenue_fan_out;
use tracing::info;

use crate::error::O2cError;
use crate::ports::{EngagementFilter, EngagementStore, EventPublisher, Platform};
use crate::service::{Handled, StepService};

impl<P: Platform> StepService<P> {
    /// Fans a run request without an engagement out to every active engagement (one page
    /// per invocation, then a continuation request).
    pub async fn fan_out_runs(&self, event: &BusinessEvent, ctx: &StepContext<'_>) -> Result<Handled, O2cError> {
        let (run_id, after, what) = match event {
            BusinessEvent::InvoiceRunRequested(env) => (&env.payload.run_id, &env.payload.after, "invoice_run"),
            BusinessEvent::RevenueRunRequested(env) => (&env.payload.run_id, &env.payload.after, "revenue_run"),
            BusinessEvent::ReconciliationRequested(env) => (&env.payload.run_id, &env.payload.after, "reconciliation"),
            other => return Err(O2cError::Bug(format!("fan-out of {}", other.event_type().detail_type()))),
        };
        // Runs bill and recognise active engagements; reconciliation checks every one (a
        // provisioned or failed engagement has projects in the PSA and ERP too).
        let status = if matches!(event, BusinessEvent::ReconciliationRequested(_)) { None } else { Some("active".into()) };
        let filter =
            EngagementFilter { status, limit: FAN_OUT_PAGE + 1, after: Some(after.clone().unwrap_or_default()), ..Default::default() };
        let mut ids: Vec<EngagementId> =
            self.platform().store().list(&filter).await?.into_iter().map(|s| EngagementId::new(s.engagement_id)).collect();
        let more = ids.len() > FAN_OUT_PAGE;
        ids.truncate(FAN_OUT_PAGE);
        let events = match event {
            BusinessEvent::InvoiceRunRequested(env) => fan_out(&env.payload, &ids, more, ctx),
            BusinessEvent::RevenueRunRequested(env) => revenue_fan_out(&env.payload, &ids, more, ctx),
            BusinessEvent::ReconciliationRequested(env) => reconciliation_fan_out(&env.payload, &ids, more, ctx),
            _ => Vec::new(),
        };
        self.platform().publisher().publish(&events).await?;
        info!(run_id = %run_id, engagements = ids.len(), more, "{what} fanned out");
        Ok(Handled { action: format!("{what}_fanned_out"), duplicate: false, published: events.len() })
    }
}
