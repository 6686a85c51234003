//! Metrics sinks that need no cloud: the log (embedded runtime) and a list (tests). The
//! CloudWatch embedded-metric-format sink lives with the AWS adapters.

use std::sync::{Arc, Mutex};

use o2c_domain::metrics::Metric;
use tracing::info;

use crate::ports::MetricsSink;

/// Logs each metric as a structured `metric` line.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogMetrics;

impl MetricsSink for LogMetrics {
    fn emit(&self, metrics: &[Metric]) {
        for m in metrics {
            let dims: Vec<String> = m.dimensions.iter().map(|(k, v)| format!("{k}={v}")).collect();
            info!(metric = %m.name, value = %m.value, unit = m.unit.as_str(), dimensions = %dims.join(","), "metric");
        }
    }
}

/// Keeps every metric emitted (tests read them back).
#[derive(Debug, Clone, Default)]
pub struct RecordingMetrics(Arc<Mutex<Vec<Metric>>>);

impl RecordingMetrics {
    /// Everything emitted so far.
    pub fn recorded(&self) -> Vec<Metric> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl MetricsSink for RecordingMetrics {
    fn emit(&self, metrics: &[Metric]) {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(metrics);
        }
    }
}
