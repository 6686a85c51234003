//! Runs a step's [`Plan`]: each [`Command`] through its connector port, transient failures
//! retried inside the invocation ([`crate::retry`]), permanent ones turned into
//! [`CommandResult::Refused`]. The only place a command meets a connector.

use chrono::{DateTime, Utc};
use o2c_domain::reconciliation::{Observation, Read};
use o2c_domain::workflow::{Command, CommandResult, Plan, Sequence, System};
use tracing::{Instrument, info_span};

use crate::error::O2cError;
use crate::ports::{Crm, Erp, Platform, Psa, TaxEngine};
use crate::retry::{Retrier, RetryPolicy, seed_of};

/// Runs `plan`'s commands in order for the event keyed `key`, within `deadline`.
pub async fn execute<P: Platform>(
    platform: &P,
    policy: &RetryPolicy,
    plan: &Plan,
    key: &str,
    deadline: DateTime<Utc>,
) -> Result<Vec<CommandResult>, O2cError> {
    let mut results = Vec::with_capacity(plan.commands.len());
    for (i, cmd) in plan.commands.iter().enumerate() {
        let retrier = Retrier { policy, clock: platform.clock(), deadline, seed: seed_of(&[key, &i.to_string()]) };
        let span = info_span!("command", system = cmd.system().as_str(), operation = cmd.operation());
        let started = platform.clock().now();
        let result = run(platform, &retrier, cmd).instrument(span).await;
        platform.metrics().emit(&connector_metrics(cmd, &result, platform.clock().now() - started));
        let result = result?;
        let stop = plan.sequence == Sequence::StopOnFailure && result.stops_sequence();
        results.push(result);
        if stop {
            break;
        }
    }
    Ok(results)
}

/// Per command: `ConnectorLatencyMs` (the call with its in-invocation retries) per system
/// and operation, and `ConnectorErrors` per system when it ended refused or failed.
fn connector_metrics(cmd: &Command, result: &Result<CommandResult, O2cError>, took: chrono::Duration) -> Vec<o2c_domain::metrics::Metric> {
    use o2c_domain::metrics::{Metric, MetricUnit};
    use rust_decimal::Decimal;
    let (system, operation) = (cmd.system().as_str(), cmd.operation());
    let ms = Decimal::from(took.num_milliseconds().max(0));
    let mut out = vec![Metric::new("ConnectorLatencyMs", MetricUnit::Milliseconds, ms, &[("System", system), ("Operation", operation)])];
    let failed = match result {
        Ok(CommandResult::Refused(_)) => Some("refused"),
        Err(_) => Some("failed"),
        Ok(_) => None,
    };
    if let Some(kind) = failed {
        out.push(Metric::new("ConnectorErrors", MetricUnit::Count, Decimal::ONE, &[("System", system), ("Kind", kind)]));
    }
    out
}

async fn run<P: Platform>(p: &P, retry: &Retrier<'_>, cmd: &Command) -> Result<CommandResult, O2cError> {
    let result = match cmd {
        Command::CreateProject { system: System::Psa, spec } => {
            retry.run(|| p.psa().create_or_get_project(spec)).await?.map(CommandResult::Object)
        }
        Command::CreateProject { system: System::Erp, spec } => {
            retry.run(|| p.erp().create_or_get_project(spec)).await?.map(CommandResult::Object)
        }
        Command::CancelProject { system: System::Psa, project_id, reason } => {
            retry.run(|| p.psa().cancel_project(project_id, reason)).await?.map(|()| CommandResult::Done)
        }
        Command::CreateBillingSchedule { erp_project_id, schedule } => {
            retry.run(|| p.erp().create_or_get_billing_schedule(erp_project_id, schedule)).await?.map(CommandResult::Object)
        }
        Command::UpdateOpportunity(update) => retry.run(|| p.crm().update_opportunity(update)).await?.map(CommandResult::Crm),
        Command::UpsertCrmInvoice(invoice) => retry.run(|| p.crm().upsert_invoice(invoice)).await?.map(CommandResult::Crm),
        Command::CalculateTax(request) => retry.run(|| p.tax().calculate(request)).await?.map(CommandResult::Tax),
        Command::PostInvoice(invoice) => retry.run(|| p.erp().create_or_get_invoice(invoice)).await?.map(CommandResult::Object),
        Command::BookReceipt(receipt) => retry.run(|| p.erp().book_receipt(receipt)).await?.map(CommandResult::Object),
        Command::PostJournal(journal) => retry.run(|| p.erp().post_journal(journal)).await?.map(CommandResult::Object),
        Command::Read(Read::Project(System::Psa, key)) => {
            retry.run(|| p.psa().get_project(key)).await?.map(|r| CommandResult::Read(Observation::Project(r)))
        }
        Command::Read(Read::Project(System::Erp, key)) => {
            retry.run(|| p.erp().get_project(key)).await?.map(|r| CommandResult::Read(Observation::Project(r)))
        }
        Command::Read(Read::Schedule { erp_project_id, schedule_id }) => retry
            .run(|| p.erp().get_billing_schedule(erp_project_id, schedule_id))
            .await?
            .map(|r| CommandResult::Read(Observation::Schedule(r))),
        Command::Read(Read::Invoice(number)) => {
            retry.run(|| p.erp().get_invoice(number)).await?.map(|r| CommandResult::Read(Observation::Invoice(r)))
        }
        Command::Read(Read::Opportunity(id)) => {
            retry.run(|| p.crm().get_opportunity(id)).await?.map(|r| CommandResult::Read(Observation::Opportunity(r)))
        }
        other => return Err(O2cError::Bug(format!("no connector operation {} in {}", other.operation(), other.system().as_str()))),
    };
    Ok(result.unwrap_or_else(CommandResult::Refused))
}
