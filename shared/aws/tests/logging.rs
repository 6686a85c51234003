//! What a function logs, captured from the real shell: every line of an invocation carries
//! the service, the step, cold start, the request id, the SQS message id and the event's
//! correlation, causation and engagement ids — as JSON CloudWatch can index.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use o2c_app::{ServiceConfig, Step, StepService};
use o2c_aws::lambda::{LogSettings, Shell, subscriber};
use serde_json::Value;

/// A `MakeWriter` that keeps every line.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn sample(name: &str) -> SqsEvent {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/sqs").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn when_a_function_handles_a_record_should_log_json_lines_carrying_every_correlation_field() {
    let dir = tempfile::tempdir().unwrap();
    let reference = o2c_embedded::reference::northwind().unwrap();
    let sims = o2c_embedded::sim::Simulators::new(o2c_embedded::db::Db::open(&dir.path().join("sims.db")).unwrap(), &reference);
    let platform = o2c_app::memory::platform(reference, sims.clone(), sims.clone(), sims.clone(), sims);
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder().behavior_version_latest().region(aws_sdk_sqs::config::Region::new("eu-west-1")).build(),
    );
    let shell =
        Shell::new(Step::Intake, StepService::single(platform, ServiceConfig::default(), &o2c_app::steps::Intake), sqs, Some(5), None);

    let capture = Capture::default();
    let settings = LogSettings::from(|k| if k == "AWS_LAMBDA_LOG_FORMAT" { Some("JSON".into()) } else { None });
    let _guard = tracing::subscriber::set_default(subscriber(&settings, capture.clone()));
    for n in 0..2 {
        let mut ctx = Context::default();
        ctx.request_id = format!("req-{n}");
        ctx.xray_trace_id = Some(format!("Root=1-67890abc-{n:024}"));
        ctx.deadline = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap() + 60_000;
        let resp = shell.handle(LambdaEvent::new(sample("intake.OpportunityClosedWon.json"), ctx)).await.unwrap();
        assert!(resp.batch_item_failures.is_empty());
    }

    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let handled: Vec<&Value> = lines.iter().filter(|l| l["message"] == "handled").collect();
    assert_eq!(handled.len(), 2, "{text}");
    let detail: Value = serde_json::from_str(sample("intake.OpportunityClosedWon.json").records[0].body.as_deref().unwrap()).unwrap();
    for (n, line) in handled.iter().enumerate() {
        // Every enclosing span's fields ride on the line.
        let mut fields = serde_json::Map::new();
        for s in line["spans"].as_array().expect("spans") {
            fields.extend(s.as_object().unwrap().clone());
        }
        assert_eq!(fields["service"], "o2c");
        assert_eq!(fields["step"], "intake");
        assert_eq!(fields["cold_start"], n == 0, "only the first invocation is cold");
        assert_eq!(fields["request_id"], format!("req-{n}"));
        assert!(fields["xray_trace_id"].as_str().unwrap().starts_with("Root=1-"));
        assert_eq!(fields["message_id"], sample("intake.OpportunityClosedWon.json").records[0].message_id.clone().unwrap());
        assert_eq!(fields["event_id"], detail["detail"]["event_id"]);
        assert_eq!(fields["correlation_id"], detail["detail"]["correlation_id"]);
        assert!(fields.contains_key("causation_id"), "{line}");
        assert_eq!(fields["engagement_id"], "ENG-0068d00000GLBX01");
        assert_eq!(line["level"], "INFO");
        assert!(line["timestamp"].is_string());
    }
}

/// What a filter lets through, with the shell's subscriber.
fn logged(filter: &str) -> String {
    let out = Capture::default();
    let settings = LogSettings { json: true, filter: filter.into() };
    tracing::subscriber::with_default(subscriber(&settings, out.clone()), || {
        tracing::trace!(target: "o2c_probe", "probe trace");
        tracing::debug!(target: "o2c_probe", "probe debug");
        tracing::info!(target: "other", "other info");
        tracing::warn!(target: "other", "other warn");
    });
    String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn when_the_level_is_debug_or_trace_should_those_lines_reach_the_log_and_nothing_the_filter_holds_back() {
    // AWS_LAMBDA_LOG_LEVEL=DEBUG / TRACE, lower-cased by LogSettings.
    let debug = logged("debug");
    assert!(debug.contains("probe debug") && debug.contains("other info") && !debug.contains("probe trace"), "{debug}");
    assert!(logged("trace").contains("probe trace"));
    // RUST_LOG with per-target directives.
    let per_target = logged("warn,o2c_probe=debug");
    assert!(per_target.contains("probe debug") && per_target.contains("other warn"), "{per_target}");
    assert!(!per_target.contains("probe trace") && !per_target.contains("other info"), "{per_target}");
    // An empty directive is not "errors only".
    assert!(logged("info,").contains("other info"));
    // Nonsense falls back to info.
    let fallback = logged("o2c_probe=verbose");
    assert!(fallback.contains("other info") && !fallback.contains("probe debug"), "{fallback}");
}
