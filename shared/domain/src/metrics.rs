//! Business metrics a decision reports (CloudWatch embedded metric format on AWS): a name,
//! a unit, an exact value and its dimensions. The shell emits them once the decision is
//! committed; a duplicate does not emit them again.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A metric's unit (CloudWatch names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricUnit {
    /// A count.
    Count,
    /// A dimensionless number (days, a ratio).
    None,
    /// A duration in seconds.
    Seconds,
    /// A duration in milliseconds.
    Milliseconds,
}

impl MetricUnit {
    /// CloudWatch's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::None => "None",
            Self::Seconds => "Seconds",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// One data point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    /// Metric name, e.g. `DaysSalesOutstanding`.
    pub name: String,
    /// Unit.
    pub unit: MetricUnit,
    /// Value (exact; converted at the edge).
    pub value: Decimal,
    /// Dimensions, in order: (name, value).
    pub dimensions: Vec<(String, String)>,
}

impl Metric {
    /// A data point of `name` with `dimensions`.
    pub fn new(name: &str, unit: MetricUnit, value: Decimal, dimensions: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_owned(),
            unit,
            value,
            dimensions: dimensions.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }
}
