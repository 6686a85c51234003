//! The Lambda shell: JSON logging, the SQS handler (with visibility hints and the queue's
//! redrive policy), the error → `Diagnostic` mapping, and [`run_step`], which every
//! function's `main.rs` calls with its step.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Diagnostic, LambdaEvent};
use o2c_app::ports::Platform;
use o2c_app::sqs::{BatchContext, BatchResult};
use o2c_app::{O2cError, Step, StepService};
use tracing::{Instrument, info_span};

use crate::Config;
use crate::visibility::QueueUrls;

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

/// The shell of one function: the step service, the SQS client for visibility hints and
/// the queue's redrive policy, all built once at cold start.
pub struct Shell<P: Platform> {
    svc: StepService<P>,
    step: Step,
    sqs: aws_sdk_sqs::Client,
    urls: QueueUrls,
    max_receive_count: Option<u32>,
    dead_letter_queue: Option<String>,
}

impl<P: Platform> Shell<P> {
    /// A shell for `step` over `svc`.
    pub fn new(
        step: Step,
        svc: StepService<P>,
        sqs: aws_sdk_sqs::Client,
        max_receive_count: Option<u32>,
        dead_letter_queue: Option<String>,
    ) -> Self {
        Self { svc, step, sqs, urls: QueueUrls::default(), max_receive_count, dead_letter_queue }
    }

    /// The step service.
    pub fn service(&self) -> &StepService<P> {
        &self.svc
    }

    /// Handles one SQS batch: every record through the step service, failures reported
    /// per record so only they are retried, visibility hints applied before returning.
    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, InvocationError> {
        let deadline: chrono::DateTime<chrono::Utc> = chrono::DateTime::<chrono::Utc>::from(event.context.deadline());
        let span = info_span!(
            "invocation",
            request_id = %event.context.request_id,
            step = self.step.name(),
            records = event.payload.records.len()
        );
        let arn = event.payload.records.first().and_then(|r| r.event_source_arn.clone());
        let batch = BatchContext { deadline, max_receive_count: self.max_receive_count, dead_letter_queue: self.dead_letter_queue.clone() };
        // Boxed: the step futures nest deeply, and an unboxed chain overflows rustc's layout
        // query depth in the binary that hands it to the runtime.
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = BatchResult> + Send + '_>> =
            Box::pin(o2c_app::sqs::handle_batch(&self.svc, self.step, event.payload, &batch).instrument(span));
        let result = fut.await;
        if !result.visibility.is_empty()
            && let Some(arn) = arn
        {
            match self.urls.url(&self.sqs, &arn).await {
                Ok(url) => crate::visibility::apply(&self.sqs, &url, &result.visibility).await,
                Err(e) => tracing::warn!(error = %e, "no queue URL for the visibility hints; the visibility timeout applies"),
            }
        }
        Ok(result.response)
    }
}

/// Runs the function of `step`: tracing, typed configuration and every client built once
/// at cold start, then the Lambda runtime loop. What each `main.rs` calls.
pub async fn run_step(step: Step) -> Result<(), lambda_runtime::Error> {
    init_tracing();
    // Fail fast at cold start: every configuration problem is reported at once.
    let config = Config::from_env()?;
    // Clients are built once per execution environment, never per event.
    let sdk = crate::sdk_config().await;
    let platform = crate::platform::lambda_platform(&sdk, &config)?;
    let shell = Arc::new(Shell::new(
        step,
        StepService::new(platform, config.service()),
        aws_sdk_sqs::Client::new(&sdk),
        config.max_receive_count,
        config.dead_letter_queue.clone(),
    ));
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        let shell = shell.clone();
        async move { shell.handle(event).await }
    }))
    .await
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
