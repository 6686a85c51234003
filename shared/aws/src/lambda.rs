//! The Lambda shell: JSON logging, the SQS handler and the error → `Diagnostic` mapping.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Diagnostic, LambdaEvent};
use o2c_app::ports::Platform;
use o2c_app::{O2cError, Step, StepService};
use tracing::{Instrument, info_span};

/// JSON logs to stdout (CloudWatch), level from `RUST_LOG` (default `info`), without ANSI
/// colours or the (redundant) timestamp prefix Lambda adds itself.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_ansi(false)
        .with_target(false)
        .flatten_event(true)
        .init();
}

/// A whole-invocation failure with a stable `errorType` (per-record failures are reported
/// in `batchItemFailures` instead and never reach here).
#[derive(Debug)]
pub struct InvocationError(pub O2cError);

impl From<InvocationError> for Diagnostic {
    fn from(e: InvocationError) -> Self {
        Diagnostic { error_type: e.0.error_type().to_owned(), error_message: e.0.to_string() }
    }
}

/// Handles one SQS batch: every record through the step service, failures reported
/// per record so only they are retried. The reservation deadline is the invocation's.
pub async fn handle_sqs<P: Platform>(
    svc: Arc<StepService<P>>,
    step: Step,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, InvocationError> {
    let deadline: chrono::DateTime<chrono::Utc> = chrono::DateTime::<chrono::Utc>::from(event.context.deadline());
    let span = info_span!("invocation", request_id = %event.context.request_id, step = step.name(), records = event.payload.records.len());
    if event.payload.records.is_empty() {
        return Err(InvocationError(O2cError::Validation(vec![o2c_domain::events::Issue::new(
            "Records",
            "empty",
            "an SQS event with no records",
        )])));
    }
    // Boxed: the step futures nest deeply, and an unboxed chain overflows rustc's layout
    // query depth in the binary that hands it to the runtime.
    let batch: std::pin::Pin<Box<dyn std::future::Future<Output = SqsBatchResponse> + Send + '_>> =
        Box::pin(o2c_app::sqs::handle_batch(&svc, step, event.payload, deadline).instrument(span));
    Ok(batch.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_invocation_fails_should_map_to_a_stable_error_type() {
        let d: Diagnostic = InvocationError(O2cError::dependency("dynamodb", "throttled")).into();
        assert_eq!(d.error_type, "O2c.Dependency");
        assert!(d.error_message.contains("throttled"));
    }
}
