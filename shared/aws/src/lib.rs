//! # o2c-aws
//!
//! The AWS engine: adapters over the official `aws-sdk-*` crates behind the ports of
//! `o2c-app`, the Lambda shell every function binary uses, and the tools that run the
//! template's topology against AWS APIs from one machine.
//!
//! Layout:
//! - [`config`]: typed environment configuration, read once per cold start;
//! - [`platform`]: SDK configuration (retries, timeouts, endpoint overrides) and the
//!   platform bundle (`LambdaPlatform` uses the HTTP connectors);
//! - [`dynamo`]: state, idempotency, rejections and reference data on DynamoDB, with
//!   request counters;
//! - [`eventbridge`]: `PutEvents` publisher (≤ 10 entries per call, partial-failure retry);
//! - [`emf`]: business metrics in CloudWatch's embedded metric format (standard output);
//! - [`lambda`]: JSON logging, the SQS handler, the `Diagnostic` mapping, `run_step`;
//! - [`visibility`]: `ChangeMessageVisibility` hints for records that should come back soon;
//! - feature `ingest` (only `functions/ingest`): [`ingest`], vendors' signed webhooks from the
//!   stack's HTTP API, mapped by the mapping files and published;
//! - feature `tools` (the CLI and the tests; the Lambda functions build without it, so they
//!   never link YAML parsing or the rule matcher): `resources` (create / locate the
//!   template's tables, bus, queues and rules), `poller` (the event source mapping and
//!   pipes, emulated over SQS), `ops` (DLQ peek and redrive, archive replay).

pub mod config;
pub mod dynamo;
pub mod emf;
pub mod eventbridge;
#[cfg(feature = "ingest")]
pub mod ingest;
pub mod lambda;
#[cfg(feature = "tools")]
pub mod ops;
pub mod platform;
#[cfg(feature = "tools")]
pub mod poller;
#[cfg(feature = "tools")]
pub mod resources;
pub mod visibility;

pub use config::Config;
pub use platform::{AwsPlatform, LambdaPlatform, lambda_sdk_config, sdk_config};

/// A failed SDK call as a dependency error: the error and its sources on one line
/// ("dispatch failure: io error: … Connection refused"), never the SDK's debug dump (which
/// `DisplayErrorContext` appends); capped at 500 characters.
pub(crate) fn sdk_error(service: &str, e: &(dyn std::error::Error + 'static)) -> o2c_app::O2cError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    // One line: the credential chain lists its providers on lines of their own.
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    o2c_app::O2cError::dependency(service, text.chars().take(500).collect::<String>())
}
