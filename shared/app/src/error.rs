//! The one error taxonomy of o2c.
//!
//! | kind        | meaning                                         | retried? | where it ends          |
//! |-------------|-------------------------------------------------|----------|------------------------|
//! | Validation  | the message itself is wrong                     | no       | rejection store        |
//! | Conflict    | contradicts what was already processed          | no       | rejection store        |
//! | Dependency  | a store, bus or external system is unavailable  | yes      | retried, then the DLQ  |
//! | InProgress  | another invocation holds the event's key        | yes, soon| retried, then the DLQ  |
//! | Bug         | an invariant broke (code or data defect)        | yes      | retried, then the DLQ  |

use std::time::Duration;

use o2c_domain::events::{DecodeError, Issue};
use o2c_domain::workflow::StepError;

/// Every error a step can return.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum O2cError {
    /// Bad input: will never succeed; parked with every reason.
    #[error("validation failed: {}", summarize(.0))]
    Validation(Vec<Issue>),
    /// Contradicts earlier processing (e.g. same idempotency key, different payload).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A dependency failed transiently; retry.
    #[error("{system} unavailable: {message}")]
    Dependency {
        /// `dynamodb`, `eventbridge`, `psa`, `erp`, `crm`, `sqlite`, …
        system: String,
        /// What happened.
        message: String,
        /// Hint from the dependency (HTTP 429 `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Another invocation holds the event's idempotency key: come back after `retry_after`
    /// (a short, growing delay — not the queue's visibility timeout).
    #[error("{key} is being processed by another invocation")]
    InProgress {
        /// The held key.
        key: String,
        /// When to look again.
        retry_after: Duration,
    },
    /// A defect: retried (it may be a bad deploy) and dead-lettered if it persists.
    #[error("bug: {0}")]
    Bug(String),
}

fn summarize(issues: &[Issue]) -> String {
    issues.iter().map(|i| format!("{} ({}): {}", i.field, i.code, i.message)).collect::<Vec<_>>().join("; ")
}

impl O2cError {
    /// A transient dependency failure.
    pub fn dependency(system: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Dependency { system: system.into(), message: message.into(), retry_after: None }
    }

    /// True when the message should be retried (reported in `batchItemFailures`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Dependency { .. } | Self::InProgress { .. } | Self::Bug(_))
    }

    /// True when the message must be parked in the rejection store, never retried.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Validation(_) | Self::Conflict(_))
    }

    /// Stable `errorType` for Lambda diagnostics and metrics.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Validation(_) => "O2c.Validation",
            Self::Conflict(_) => "O2c.Conflict",
            Self::Dependency { .. } => "O2c.Dependency",
            Self::InProgress { .. } => "O2c.InProgress",
            Self::Bug(_) => "O2c.Bug",
        }
    }

    /// The reasons to store with a parked message.
    pub fn reasons(&self) -> Vec<Issue> {
        match self {
            Self::Validation(issues) => issues.clone(),
            Self::Conflict(m) => vec![Issue::new("", "conflict", m.clone())],
            Self::Dependency { system, message, .. } => vec![Issue::new("", "dependency", format!("{system}: {message}"))],
            Self::InProgress { key, .. } => vec![Issue::new("", "in_progress", format!("{key} is held by another invocation"))],
            Self::Bug(m) => vec![Issue::new("", "bug", m.clone())],
        }
    }
}

impl From<DecodeError> for O2cError {
    fn from(e: DecodeError) -> Self {
        let issue = match &e {
            DecodeError::UnknownDetailType(t) => {
                Issue::new("detail-type", "unknown_detail_type", format!("`{t}` is not an o2c event type"))
            }
            DecodeError::Invalid { path, message, .. } => Issue::new(path.clone(), "invalid_detail", message.clone()),
            DecodeError::UnsupportedVersion { version, supported } => Issue::new(
                "detail.event_version",
                "unsupported_version",
                format!("event_version `{version}` is not supported (this build reads {})", supported.join(", ")),
            ),
        };
        Self::Validation(vec![issue])
    }
}

impl From<StepError> for O2cError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Rejected(issues) => Self::Validation(issues),
            StepError::NotYet(why) => Self::dependency("state", why),
            other => Self::Bug(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_classifying_should_split_permanent_from_retryable() {
        assert!(O2cError::Validation(vec![]).is_permanent());
        assert!(O2cError::Conflict("x".into()).is_permanent());
        assert!(O2cError::dependency("erp", "503").is_retryable());
        assert!(O2cError::Bug("x".into()).is_retryable());
        assert!(!O2cError::Bug("x".into()).is_permanent());
        assert_eq!(O2cError::dependency("erp", "503").error_type(), "O2c.Dependency");
    }
}
