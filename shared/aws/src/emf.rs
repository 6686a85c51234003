//! Business metrics in CloudWatch's embedded metric format: one JSON object per metric on
//! standard output, which Lambda ships to CloudWatch Logs and CloudWatch turns into
//! metrics (namespace `o2c`, two dimension sets: the metric's dimensions + `Stage`, and
//! `Stage` alone — the roll-up the alarms watch). No API call, no extra latency, nothing
//! to fail.
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
                "CloudWatchMetrics": [{"Namespace": self.namespace, "Dimensions": dimension_sets(dims), "Metrics": [{"Name": m.name, "Unit": m.unit.as_str()}]}],
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

/// The metric's own dimension set and, when it has dimensions besides `Stage`, the stage
/// roll-up (`[Stage]`): one line feeds both the per-kind charts and the stage's alarms.
fn dimension_sets(dims: Vec<&str>) -> Vec<Vec<&str>> {
    if dims.len() > 1 { vec![dims, vec!["Stage"]] } else { vec![dims] }
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
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["LegalEntity", "Customer", "Stage"], ["Stage"]]));
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0], json!({"Name": "DaysSalesOutstanding", "Unit": "None"}));
        assert_eq!((v["LegalEntity"].as_str(), v["Stage"].as_str()), (Some("LE-DE-01"), Some("dev")));
        assert_eq!(v["DaysSalesOutstanding"], json!(40.77));
        assert_eq!(v["_aws"]["Timestamp"], json!(1_806_000_000_000_i64));
    }

    /// The EMF specification's structure (CloudWatch's published JSON schema, with the
    /// units CloudWatch accepts) and its member rules: every dimension a string member of
    /// the object, every metric a number member, at most 30 dimensions per set and 100
    /// metrics per directive, the namespace 1–255 characters.
    fn cloudwatch_accepts(v: &Value) -> Result<(), String> {
        let schema = json!({
            "type": "object", "required": ["_aws"],
            "properties": {"_aws": {
                "type": "object", "required": ["Timestamp", "CloudWatchMetrics"],
                "properties": {
                    "Timestamp": {"type": "integer", "minimum": 0},
                    "CloudWatchMetrics": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^:].*$"},
                            "Dimensions": {"type": "array", "items": {"type": "array", "maxItems": 30, "items": {"type": "string", "minLength": 1, "maxLength": 250}}},
                            "Metrics": {"type": "array", "maxItems": 100, "items": {
                                "type": "object", "required": ["Name"],
                                "properties": {
                                    "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                    "Unit": {"enum": ["Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
                                        "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
                                        "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second",
                                        "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second",
                                        "Count/Second", "None"]},
                                    "StorageResolution": {"enum": [1, 60]}
                                }
                            }}
                        }
                    }}
                }
            }}
        });
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        if let Some(e) = validator.iter_errors(v).next() {
            return Err(format!("{e} at {}", e.instance_path()));
        }
        for d in v["_aws"]["CloudWatchMetrics"].as_array().into_iter().flatten() {
            for name in d["Dimensions"].as_array().into_iter().flatten().flat_map(|set| set.as_array().into_iter().flatten()) {
                let key = name.as_str().unwrap_or_default();
                if !v[key].is_string() {
                    return Err(format!("dimension {key} is not a string member"));
                }
            }
            for m in d["Metrics"].as_array().into_iter().flatten() {
                let key = m["Name"].as_str().unwrap_or_default();
                if !v[key].is_number() {
                    return Err(format!("metric {key} is not a number member"));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn when_metrics_are_emitted_should_be_lines_cloudwatch_accepts_under_the_emf_specification() {
        let emf = EmfMetrics::new("o2c", "prod");
        for m in [
            Metric::new(
                "DaysSalesOutstanding",
                MetricUnit::None,
                rust_decimal::Decimal::new(4077, 2),
                &[("LegalEntity", "LE-DE-01"), ("Customer", "C"), ("Currency", "EUR")],
            ),
            Metric::new(
                "PaymentsReceived",
                MetricUnit::Count,
                rust_decimal::Decimal::ONE,
                &[("LegalEntity", "LE-DE-01"), ("Rule", "remittance")],
            ),
            Metric::new("ReconciliationMismatches", MetricUnit::Count, rust_decimal::Decimal::ZERO, &[("System", "erp")]),
        ] {
            let line = emf.line(&m, 1_806_000_000_000);
            assert_eq!(cloudwatch_accepts(&line), Ok(()), "{line}");
            // One line of JSON, as the Lambda log stream carries it.
            assert!(!line.to_string().contains('\n'));
        }
        // The checker itself refuses what CloudWatch refuses.
        let mut bad = emf.line(&Metric::new("X", MetricUnit::Count, rust_decimal::Decimal::ONE, &[("System", "erp")]), 1);
        bad["X"] = json!("1");
        assert!(cloudwatch_accepts(&bad).is_err(), "a metric value must be a number");
        let mut bad = emf.line(&Metric::new("X", MetricUnit::Count, rust_decimal::Decimal::ONE, &[("System", "erp")]), 1);
        bad["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Widgets");
        assert!(cloudwatch_accepts(&bad).is_err(), "an unknown unit");
        let mut bad = emf.line(&Metric::new("X", MetricUnit::Count, rust_decimal::Decimal::ONE, &[("System", "erp")]), 1);
        bad.as_object_mut().unwrap().remove("System");
        assert!(cloudwatch_accepts(&bad).is_err(), "a dimension without its member");
    }
}
