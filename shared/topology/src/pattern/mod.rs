//! EventBridge event-pattern matching, compiled once per rule and evaluated per event.
//!
//! EventBridge matches rules with AWS's open-source
//! [event-ruler](https://github.com/aws/event-ruler) (`JsonRuleCompiler` + `rulesForJSONEvent`);
//! this module re-implements its semantics. Sources, in order of authority: the behaviour of
//! `TestEventPattern` recorded against AWS by LocalStack
//! (`tests/aws/services/events/event_pattern_templates`, `test_events_patterns.snapshot.json`),
//! event-ruler's code and tests (`JsonRuleCompiler`, `Event`, `ByteMachine`, `StructuredFinder`,
//! `ArrayMembership`, `CIDR`, `ComparableNumber`), and the EventBridge user guide ("Event
//! patterns", "Comparison operators", "Arrays", "Null values and empty strings").
//! `shared/topology/tests/vectors/eventbridge.jsonl` holds the cases, each with its source.
//!
//! # Semantics
//! - **Fields.** Pattern and event are flattened to dotted paths (`detail.state`); a pattern key
//!   with a dot is the same path as the nested keys (`{"a.b": [..]}` matches `{"a.b": ..}` *and*
//!   `{"a": {"b": ..}}`, as EventBridge's "dot joining" does). Only leaves (strings, numbers,
//!   booleans, `null`) are values; objects and arrays are structure. A rule matches when every
//!   field matches; a field matches when any of its listed values matches any of the event's
//!   values at that path (an event array matches when one element matches).
//! - **Array consistency.** Values used to satisfy different fields must not come from
//!   different elements of the same event array of objects (event-ruler's `ArrayMembership`):
//!   `{"a": {"x": ["1"], "y": ["2"]}}` does not match `{"a": [{"x": "1"}, {"y": "2"}]}`.
//!   Fields are checked in the order of their sorted paths, as the rule machine walks them,
//!   and `exists: false` looks only at values consistent with the fields checked before it.
//! - **Exact values.** Strings, `true`, `false` and `null` match the identical JSON value
//!   (`null` ≠ `""` ≠ missing; `"300"` ≠ `300`). A string that is an IP address literal matches
//!   the same address in any spelling. Numbers compare by value (`300` = `300.0` = `3.0e2`).
//! - **Operators.** `prefix`, `suffix` (also `{"equals-ignore-case": ..}` inside them),
//!   `equals-ignore-case`, `wildcard` (`*` any run, `\*` and `\\` literal, `**` refused),
//!   `exactly`, `numeric` (`=`, `<`, `<=`, `>`, `>=`, one lower bound then one upper bound),
//!   `cidr` (IPv4 mask < 32, IPv6 mask < 128, as event-ruler), `exists`, and `anything-but`
//!   with a string, a number, a list of strings or of numbers, or `prefix` / `suffix` /
//!   `equals-ignore-case` / `wildcard` with a string or a list. String operators match string
//!   values only; `numeric` matches number values only.
//! - **anything-but** needs a value to be present (a missing field does not match) and
//!   matches any value not excluded, including values of another type: `{"anything-but":
//!   "x"}` matches `null`, `5` and `true`; a numeric one matches `"5"`. On an array it matches
//!   when one element is not excluded.
//! - **exists** looks at leaves: `exists: true` matches `null` and any other leaf but not an
//!   object or an empty array; `exists: false` matches a missing path, an object, `[]`, `{}`.
//! - **`$or`** takes an array of at least two objects; it may nest and appear at any level;
//!   keys inside it may not be operator names. More than 1000 combinations are refused.
//!
//! # Numbers
//! Numbers compare as IEEE-754 binary64 values, like event-ruler's `ComparableNumber` (whole
//! double range; the user guide's older "±5.0e9, six decimals" limit is not applied). An
//! integer that a double cannot hold exactly (beyond 2^53) is not comparable: it matches only
//! the same integer and never a `numeric` operator, and is refused inside `numeric` and
//! `anything-but`, as event-ruler does. A decimal with more digits than a double holds is
//! rounded by the JSON parser before we see it (event-ruler would keep it as text). This is
//! routing only: amounts in events are never computed with these floats.
//!
//! # Refused or not replicated
//! Everything EventBridge refuses is refused with event-ruler's reason, prefixed with the
//! pattern path (`detail.amount: Value of < must be numeric`). Also refused: a path given twice
//! in one pattern (EventBridge keeps the last in document order, which a parsed JSON object
//! does not keep) and more than 256 fields in one `$or` combination (event-ruler's limit).
//! Not replicated: EventBridge's wildcard "Rule is too complex" limit (its threshold is not
//! public) and event-ruler's byte-level quirks for IPv6 values against IPv4 ranges.

mod cidr;
mod matcher;
mod parse;
mod text;

use std::collections::HashSet;

use serde_json::Value;

pub(crate) use matcher::FlatEvent;

/// Why a pattern (or, for [`test_event_pattern`], an event) is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is not valid (EventBridge answers `InvalidEventPatternException`).
    #[error("{path}: {reason}")]
    Invalid {
        /// Where in the pattern: dotted field path (`$or[i]` for a branch), `pattern` for the root.
        path: String,
        /// What is wrong, in event-ruler's words where it has some.
        reason: String,
    },
    /// The event is not valid for `TestEventPattern` (EventBridge answers `ValidationException`).
    #[error("event is not valid: {0}")]
    InvalidEvent(String),
}

/// A compiled event pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    branches: Vec<matcher::Branch>,
    steps: HashSet<String>,
}

impl Pattern {
    /// Compiles an event pattern, refusing what EventBridge refuses.
    pub fn parse(pattern: &Value) -> Result<Self, PatternError> {
        let branches = parse::compile(pattern)?;
        let steps = branches.iter().flat_map(|b| b.fields.iter()).flat_map(|f| f.path.split('.').map(str::to_owned)).collect();
        Ok(Self { branches, steps })
    }

    /// Whether the event (a JSON object) matches; anything else never matches.
    pub fn matches(&self, event: &Value) -> bool {
        FlatEvent::new(event, &self.steps).is_some_and(|flat| self.matches_flat(&flat))
    }

    /// Matches an event flattened for (at least) this pattern's field names.
    pub(crate) fn matches_flat(&self, event: &FlatEvent<'_>) -> bool {
        self.branches.iter().any(|b| b.matches(event))
    }

    /// The field-name steps this pattern reads (an event key outside them is never needed).
    pub(crate) fn steps(&self) -> &HashSet<String> {
        &self.steps
    }
}

/// Envelope fields `TestEventPattern` requires in the event.
///
/// The API reference also lists `resources`, but EventBridge accepts events without it
/// (LocalStack's AWS-validated `TestEventPattern` cases omit it and match).
pub const TEST_EVENT_REQUIRED_FIELDS: [&str; 6] = ["id", "account", "source", "time", "region", "detail-type"];

/// Like `aws events test-event-pattern`: checks the event envelope, compiles the pattern and
/// says whether the event matches.
pub fn test_event_pattern(pattern: &Value, event: &Value) -> Result<bool, PatternError> {
    let Value::Object(fields) = event else {
        return Err(PatternError::InvalidEvent("the event must be a JSON object".into()));
    };
    if let Some(missing) = TEST_EVENT_REQUIRED_FIELDS.iter().find(|f| !fields.contains_key(**f)) {
        return Err(PatternError::InvalidEvent(format!("missing field `{missing}`")));
    }
    Ok(Pattern::parse(pattern)?.matches(event))
}
