//! # o2c-app
//!
//! The imperative shell shared by every deployment target. It imports no AWS SDK crate:
//! AWS adapters live in `o2c-aws`, embedded ones in `o2c-embedded`.
//!
//! Layout:
//! - [`clock`]: the only sources of time and ids (wall / simulated clock, random / seeded ids);
//! - [`contracts`]: JSON Schema validation of every incoming event (all violations);
//! - [`error`]: the error taxonomy (validation / conflict / dependency / bug);
//! - [`ports`]: narrow traits for state, idempotency, rejections, publishing, reference
//!   data, CRM / PSA / ERP / tax-engine connectors, clock; bundled by [`ports::Platform`];
//! - [`service`]: the step service and the at-least-once protocol around the pure
//!   steps of `o2c-domain::workflow`;
//! - [`idempotency`]: the one idempotency core (statuses, classification, payload hash);
//! - [`memory`]: the in-memory store (same semantics as the SQLite and DynamoDB adapters);
//! - [`metrics`]: business-metric sinks for the log and for tests;
//! - `conformance` (feature): the store conformance suite every adapter runs;
//! - [`executor`]: runs a step's plan of commands through the connector ports;
//! - [`fanout`]: a scheduled invoice or revenue run fanned out to every active engagement, page by page;
//! - [`retry`]: in-invocation retry of transient connector failures (backoff, jitter,
//!   deadline);
//! - [`esm`]: the one event-source-mapping driver (a batch in, deletes and retries out)
//!   shared by the embedded runtime and the AWS poller;
//! - [`sqs`]: the SQS batch entrypoint (`SqsEvent` → `SqsBatchResponse`) used by Lambda
//!   handlers and the embedded runtime alike;
//! - [`bus`]: `PutEvents` entries, their limits and the delivered event envelope;
//! - [`receivables`]: a legal entity's receivables with what settled out of them, for reports.

pub mod bus;
pub mod clock;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod contracts;
pub mod error;
pub mod esm;
pub mod executor;
pub mod fanout;
pub mod idempotency;
pub mod memory;
pub mod metrics;
pub mod ports;
pub mod receivables;
pub mod retry;
pub mod service;
pub mod sqs;

pub use error::O2cError;
/// Each step's logic, for a function's `main.rs` to name its own statically.
pub use o2c_domain::workflow as steps;
pub use o2c_domain::workflow::{Step, WorkflowStep};
pub use service::{DeadLetterOutcome, Delivery, Handled, ServiceConfig, StepService};
