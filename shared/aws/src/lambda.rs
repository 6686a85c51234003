//! The Lambda shell: JSON logging, the SQS handler (with visibility hints and the queue's
//! redrive policy), the error → `Diagnostic` mapping, and [`run_step`], which every
//! function's `main.rs` calls with its step.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Diagnostic, LambdaEvent};
use o2c_app::ports::Platform;
use o2c_app::sqs::{BatchContext, BatchResult};
use o2c_app::{O2cError, Step, StepService, WorkflowStep};
use tracing::{Instrument, info_span};
use tracing_subscriber::filter::Targets;

use crate::Config;
use crate::visibility::QueueUrls;

/// How the function logs, from its `LoggingConfig` as Lambda passes it — the variables
/// `lambda_runtime`'s own default subscriber reads: `AWS_LAMBDA_LOG_FORMAT` (`JSON`, the
/// template's, or `Text`) and `AWS_LAMBDA_LOG_LEVEL` (`TRACE` … `FATAL`), then `RUST_LOG`
/// (per-crate directives) when no application log level is set, then `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// JSON lines (else plain text).
    pub json: bool,
    /// The filter directives (`tracing_subscriber::filter::Targets` syntax: `level` or
    /// `target=level`, comma-separated; no span or field filters, which need a regex engine).
    pub filter: String,
}

impl LogSettings {
    /// From the variables of `get` (the process environment in [`init_tracing`]).
    pub fn from(get: impl Fn(&str) -> Option<String>) -> Self {
        let json = get("AWS_LAMBDA_LOG_FORMAT").is_none_or(|f| !f.eq_ignore_ascii_case("text"));
        let level = get("AWS_LAMBDA_LOG_LEVEL").map(|l| match l.to_ascii_lowercase().as_str() {
            "fatal" => "error".to_owned(),
            other => other.to_owned(),
        });
        let filter = level.or_else(|| get("RUST_LOG")).filter(|f| !f.trim().is_empty()).unwrap_or_else(|| "info".to_owned());
        Self { json, filter }
    }
}

/// The subscriber: JSON lines (one per event, its fields flattened, every enclosing span's
/// fields in `spans` — the invocation's `service`, `cold_start` and `request_id`, the
/// record's `message_id`, the event's `correlation_id`, `causation_id` and `engagement_id`),
/// without ANSI colours or the target; Lambda adds the timestamp prefix itself.
pub fn subscriber<W>(settings: &LogSettings, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    // Empty directives (`info,`) are dropped: `Targets` would read one as "errors only".
    let directives: Vec<&str> = settings.filter.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    let filter = directives.join(",").parse::<Targets>().unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    // The builder's own cap (INFO by default) is lifted: `Targets` alone decides, so a
    // DEBUG or TRACE level reaches the log.
    let b = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false);
    if settings.json {
        Box::new(b.json().with_current_span(true).with_span_list(true).flatten_event(true).finish().with(filter))
    } else {
        Box::new(b.finish().with(filter))
    }
}

/// Installs [`subscriber`] on standard output with the function's [`LogSettings`].
pub fn init_tracing() {
    let settings = LogSettings::from(|k| std::env::var(k).ok());
    // A second installation (tests) keeps the first.
    let _ = tracing::subscriber::set_global_default(subscriber(&settings, std::io::stdout));
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
    invocations: std::sync::atomic::AtomicU64,
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
        Self {
            svc,
            invocations: std::sync::atomic::AtomicU64::new(0),
            step,
            sqs,
            urls: QueueUrls::default(),
            max_receive_count,
            dead_letter_queue,
        }
    }

    /// The step service.
    pub fn service(&self) -> &StepService<P> {
        &self.svc
    }

    /// Handles one SQS batch: every record through the step service, failures reported
    /// per record so only they are retried, visibility hints applied before returning.
    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, InvocationError> {
        let deadline: chrono::DateTime<chrono::Utc> = chrono::DateTime::<chrono::Utc>::from(event.context.deadline());
        let cold_start = self.invocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0;
        let span = info_span!(
            "invocation",
            service = "o2c",
            step = self.step.name(),
            cold_start,
            request_id = %event.context.request_id,
            xray_trace_id = event.context.xray_trace_id.as_deref().unwrap_or_default(),
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

/// Runs the function of the step `logic`: tracing, typed configuration and every client
/// built once at cold start, then the Lambda runtime loop. What each `main.rs` calls with
/// its own step (`&o2c_app::steps::Intake`), so the binary links that step's code alone.
pub async fn run_step(logic: &'static dyn WorkflowStep) -> Result<(), lambda_runtime::Error> {
    init_tracing();
    // Fail fast at cold start: every configuration problem is reported at once. Clients are
    // built once per execution environment, never per event.
    let (config, sdk) = crate::config::both(Config::from_env(), crate::platform::lambda_sdk_config())?;
    let platform = crate::platform::lambda_platform(&sdk, &config)?;
    let shell = Arc::new(Shell::new(
        logic.step(),
        StepService::single(platform, config.service(), logic),
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
    fn when_lambda_sets_the_log_format_and_level_should_follow_them_over_rust_log() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(LogSettings::from(env(&[])), LogSettings { json: true, filter: "info".into() });
        assert_eq!(LogSettings::from(env(&[("RUST_LOG", "o2c_app=debug")])).filter, "o2c_app=debug");
        let s = LogSettings::from(env(&[("AWS_LAMBDA_LOG_FORMAT", "Text"), ("AWS_LAMBDA_LOG_LEVEL", "WARN"), ("RUST_LOG", "debug")]));
        assert_eq!(s, LogSettings { json: false, filter: "warn".into() });
        assert_eq!(LogSettings::from(env(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")])).filter, "error");
    }

    #[test]
    fn when_invocation_fails_should_map_to_a_stable_error_type() {
        let d: Diagnostic = InvocationError(O2cError::dependency("dynamodb", "throttled")).into();
        assert_eq!(d.error_type, "O2c.Dependency");
        assert!(d.error_message.contains("throttled"));
    }
}
