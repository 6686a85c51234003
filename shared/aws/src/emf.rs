//! Business metrics in CloudWatch's embedded metric format: one JSON object per metric on
//! standard output, which Lambda ships to CloudWatch Logs and CloudWatch turns into
//! metrics (namespace `o2c`, dimension set = the metric's dimensions + `Stage`). No API
//! call, no extra latency, nothing to fail.
//!
//! CloudWatch limits relied on: at most 30 dimensions per set and 100 metrics per object
//! (one metric with ≤ 4 dimensions per line here).

use std::io::Write;

use o2c_app::clock::Clock;
use o2c_app::ports::MetricsSink;
use o2c_domain::metrics::Metric;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Map, Value, json};

/// Writes EMF lines to standard output.
#[derive(Debug, Clone)]
pub struct EmfMetrics {
    namespace: String,
    stage: String,
}

impl EmfMetrics {
    /// Metrics of `stage` in `namespace`.
    pub fn new(namespace: &str, stage: &str) -> Self {
        Self { namespace: namespace.to_owned(), stage: stage.to_owned() }
    }

    /// The EMF object of `m` at `timestamp_ms`.
    pub fn line(&self, m: &Metric, timestamp_ms: i64) -> Value {
        let mut dims: Vec<&str> = m.dimensions.iter().map(|(k, _)| k.as_str()).collect();
        dims.push("Stage");
        let mut o = Map::new();
        o.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{"Namespace": self.namespace, "Dimensions": [dims], "Metrics": [{"Name": m.name, "Unit": m.unit.as_str()}]}],
            }),
        );
        for (k, v) in &m.dimensions {
            o.insert(k.clone(), json!(v));
        }
        o.insert("Stage".into(), json!(self.stage));
        // CloudWatch stores doubles; the exact value is converted only here, at the edge.
        o.insert(m.name.clone(), json!(m.value.to_f64().unwrap_or_default()));
        Value::Object(o)
    }
}

impl MetricsSink for EmfMetrics {
    fn emit(&self, metrics: &[Metric]) {
        let now = o2c_app::clock::SystemClock.now().timestamp_millis();
        let mut out = std::io::stdout().lock();
        for m in metrics {
            // Best effort: a closed stdout must never fail a step.
            let _ = writeln!(out, "{}", self.line(m, now));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use o2c_domain::metrics::MetricUnit;

    #[test]
    fn when_a_metric_is_emitted_should_write_the_embedded_metric_format() {
        let m = Metric::new(
            "DaysSalesOutstanding",
            MetricUnit::None,
            rust_decimal::Decimal::new(4077, 2),
            &[("LegalEntity", "LE-DE-01"), ("Customer", "CUST-1001")],
        );
        let v = EmfMetrics::new("o2c", "dev").line(&m, 1_806_000_000_000);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "o2c");
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0], json!(["LegalEntity", "Customer", "Stage"]));
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0], json!({"Name": "DaysSalesOutstanding", "Unit": "None"}));
        assert_eq!((v["LegalEntity"].as_str(), v["Stage"].as_str()), (Some("LE-DE-01"), Some("dev")));
        assert_eq!(v["DaysSalesOutstanding"], json!(40.77));
        assert_eq!(v["_aws"]["Timestamp"], json!(1_806_000_000_000_i64));
    }
}
