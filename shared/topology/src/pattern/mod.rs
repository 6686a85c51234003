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
//!   The answer is event-ruler's; how it is computed without trying combinations of values is
//!   described in `matcher.rs`.
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
//! double range; the user guide's older "±5.0e9, six decimals" limit is not applied).
//! event-ruler compares a number only when `BigDecimal.valueOf(double)` — the decimal Java prints
//! for the double — equals the literal. An integer literal reaches this module exactly and gets
//! the same answer: it is comparable when the shortest decimal form of its double is the integer
//! itself, which holds for every integer up to 2^53 and beyond that only for some (10^18 is,
//! 2^53 + 1, 2^60 and `i64::MIN` are not). A number that is not comparable matches only the same
//! literal as an exact value, never a `numeric` operator, and is refused inside `numeric` and
//! `anything-but` ("Cannot compare number : 1152921504606846976").
//!
//! A literal with a fraction or an exponent, or an integer beyond 64 bits, is rounded to a double
//! by serde_json before this module sees it (its `arbitrary_precision` feature would change
//! serde_json for the whole workspace), so it is taken as if written in the double's shortest
//! form. Not replicated, therefore: `1.00000000000000001` in an event equals `["=", 1]` here (not
//! comparable in event-ruler, so no match); `[0.1]` matches `0.1000000000000000055511151231257827`
//! here; a pattern literal with more digits than its double is accepted here and refused there;
//! an integer beyond 64 bits (`123456789012345678901234`) is comparable here and not there. The
//! shortest form and Java's `Double.toString` (JDK 19+ rules) differ only for a few subnormals
//! (`5e-324` prints as `4.9E-324`), which are not comparable here, as `5e-324` is not in
//! event-ruler (the JDK 17 the review ran prints a few others differently: `1e-323` is comparable
//! there, `1.6e-322` is not). A literal beyond the double range (`1e400`) cannot be held by
//! serde_json: an event carrying one is refused as not JSON (`MalformedDetail` from the bus),
//! where event-ruler reads it as an uncomparable value. A one-sided range open towards the end
//! of the double line (`[">", 1.7976931348623157e308]`, `["<=", -1.7976931348623157e308]`) is
//! refused: event-ruler fails on it with an `ArrayIndexOutOfBoundsException`. This is routing
//! only: amounts in events are never computed with these floats.
//!
//! # Refused or not replicated
//! Everything EventBridge refuses is refused with event-ruler's reason, prefixed with the
//! pattern path (`detail.amount: Value of < must be numeric`). Also refused:
//! - a pattern longer than [`MAX_PATTERN_CHARS`] (4096) characters, counted on its compact JSON:
//!   EventBridge's event-pattern size quota is 2048 characters by default, adjustable to 4096;
//!   the highest is applied since the deploying account's quota is not known here;
//! - a rule whose wildcard values score above [`MAX_WILDCARD_COMPLEXITY`] (10) with event-ruler's
//!   `MachineComplexityEvaluator` (`complexity.rs`, which agrees with event-ruler on the scores
//!   of 3000 random patterns), refused with EventBridge's "Rule is too complex - try using fewer
//!   wildcard characters or fewer repeating character sequences after a wildcard character".
//!   AWS's threshold is not public; it was inferred from LocalStack's recordings of AWS, which
//!   refuse `*:*:*:*:*:event-bus/*` (score 11) and accept `/Users/*/dir/dir/dir/dir/dir/doc.txt`
//!   (7), `anything-but` `["*/init/*", "*/dir/*"]` (5), `*/dir/*` (4), `arn:…:*:event-bus/*` (3)
//!   and `/Users/*/doc.txt` (2): any threshold from 7 to 10 reproduces them, and the highest is
//!   used so that no pattern AWS may accept is refused here;
//! - a path given twice in one pattern: event-ruler keeps the last one in document order
//!   (`{"a.b": ["1"], "a": {"b": ["2"]}}` matches `b = 2` there and not `b = 1`), an order a
//!   parsed JSON object does not keep;
//! - more than 256 fields in one `$or` combination (event-ruler's limit);
//! - an empty list in `anything-but` with `prefix`, `suffix`, `equals-ignore-case` or
//!   `wildcard` (event-ruler accepts it, then fails with a `NullPointerException` when the rule
//!   is added to its machine);
//! - an event that would cost more than a fixed amount of work to match against a rule's
//!   pattern (see "Cost").
//!
//! Not replicated:
//! - `equals-ignore-case` (and its `prefix`, `suffix` and `anything-but` forms) with characters
//!   outside the Basic Multilingual Plane: event-ruler folds case on UTF-16 units, so there `😀`
//!   does not even match `😀`; here case is folded per character;
//! - IPv4 addresses with leading zeros (`010.0.0.1`): event-ruler reads them through the JDK's
//!   `InetAddress` (JDK-dependent; the review's JDK read `10.0.0.1`); here they are not addresses,
//!   so they match as plain strings and are refused in `cidr`;
//! - a `"` inside a `prefix` or `suffix` value (and their `anything-but` and
//!   `equals-ignore-case` forms): event-ruler matches the quoted value byte by byte, so the `"`
//!   can match the quote around the event value (`{"prefix": "x\""}` matches `"x"` there); here
//!   values are compared as text;
//! - empty field-name steps (`{"a": {"": ["x"]}}` against `{"a": {"": "x"}}`, or an event key
//!   `.a`): event-ruler never matches them; here an empty step is a step like any other;
//! - event-ruler's byte-level quirks for IPv6 values against IPv4 ranges;
//! - which problem is reported first: serde_json keeps object keys in alphabetical order, not
//!   document order, so with several problems, or several keys in one operator object, the
//!   reason is about the alphabetically first key (`{"zzz": 1, "prefix": "a"}`: "Only one key
//!   allowed in match expression" here, "Unrecognized match type zzz" in event-ruler);
//! - events nested deeper than serde_json's 128 levels are refused as not JSON (the router's byte
//!   APIs; [`Router::targets_for`](crate::routing::Router::targets_for) takes a parsed value and
//!   has no such limit).
//!
//! # Cost
//! A pattern is compiled once. An event is flattened once for all rules (only keys whose steps
//! some pattern names), then, per rule, each field's leaves are tested once (exact strings by one
//! lookup) and the element tree is walked once per set of fields routed into an element
//! (`matcher.rs`): linear in the event for every pattern whose fields have one way to be
//! satisfied. What remains to enumerate (fields listing both values and `exists: false`, paths
//! reachable along several dotted or nested keys) is memoised, and the whole is capped at
//! `matcher::MAX_WORK` units, a few tens of ms; beyond it the event is refused for that rule
//! (the router's error names the rule; the embedded bus fails that entry only; `TestEventPattern`
//! answers "event is not valid"). The shipped template's rules stay within a few ms on a 256 KB
//! event built against them, far below the cap.

mod cidr;
mod complexity;
mod matcher;
mod parse;
mod text;

use std::collections::HashSet;

use serde_json::Value;

pub(crate) use matcher::{FlatEvent, TooComplex};

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
    /// Each field as written in the pattern (shared by the `$or` combinations holding it).
    fields: Vec<matcher::Field>,
    branches: Vec<matcher::Branch>,
    steps: HashSet<String>,
}

impl Pattern {
    /// Compiles an event pattern, refusing what EventBridge refuses.
    ///
    /// # Errors
    /// [`PatternError::Invalid`] with EventBridge's (event-ruler's) reason when the pattern is
    /// not valid, or is one this module refuses (see "Refused or not replicated" above).
    pub fn parse(pattern: &Value) -> Result<Self, PatternError> {
        let size = pattern.to_string().chars().count();
        if size > MAX_PATTERN_CHARS {
            return Err(PatternError::Invalid {
                path: "pattern".into(),
                reason: format!(
                    "Event pattern is {size} characters long (as compact JSON); EventBridge allows at most {MAX_PATTERN_CHARS} \
                     (2048 by default, adjustable to 4096)"
                ),
            });
        }
        let (fields, branches) = parse::compile(pattern)?;
        let (score, path) = complexity::rule_complexity(&fields, &branches, MAX_WILDCARD_COMPLEXITY + 1);
        if score > MAX_WILDCARD_COMPLEXITY {
            return Err(PatternError::Invalid { path, reason: TOO_COMPLEX_RULE.into() });
        }
        let steps = fields.iter().flat_map(|f| f.path.split('.').map(str::to_owned)).collect();
        Ok(Self { fields, branches, steps })
    }

    /// Whether the event (a JSON object) matches; anything else never matches.
    ///
    /// # Errors
    /// [`PatternError::InvalidEvent`] when matching would cost more than this module allows
    /// (see "Cost" above), which takes an event built against this pattern.
    pub fn matches(&self, event: &Value) -> Result<bool, PatternError> {
        let Some(flat) = FlatEvent::new(event, &self.steps) else { return Ok(false) };
        self.matches_flat(&flat).map_err(|TooComplex| PatternError::InvalidEvent(TOO_COMPLEX.into()))
    }

    /// Matches an event flattened for (at least) this pattern's field names.
    pub(crate) fn matches_flat(&self, event: &FlatEvent<'_>) -> Result<bool, TooComplex> {
        matcher::matches(&self.fields, &self.branches, event)
    }

    /// The field-name steps this pattern reads (an event key outside them is never needed).
    pub(crate) fn steps(&self) -> &HashSet<String> {
        &self.steps
    }

    /// [`Self::matches`], also returning the work spent (for tests of the cost).
    #[cfg(test)]
    pub(crate) fn work(&self, event: &Value) -> (bool, u64) {
        let flat = FlatEvent::new(event, &self.steps).unwrap_or_else(|| panic!("not an object"));
        matcher::evaluate(&self.fields, &self.branches, &flat).unwrap_or_else(|TooComplex| panic!("too complex"))
    }
}

/// EventBridge's event-pattern size quota at its highest (the default is 2048 characters).
pub const MAX_PATTERN_CHARS: usize = 4096;

/// The highest wildcard complexity score accepted (see "Refused or not replicated" above).
pub const MAX_WILDCARD_COMPLEXITY: usize = 10;

/// EventBridge's reason for a pattern above [`MAX_WILDCARD_COMPLEXITY`].
const TOO_COMPLEX_RULE: &str =
    "Rule is too complex - try using fewer wildcard characters or fewer repeating character sequences after a wildcard character";

/// Why an event that needs more than [`matcher::MAX_WORK`] is refused.
pub(crate) const TOO_COMPLEX: &str = "the event is too complex to match against this pattern (matching it would exceed the work budget)";

/// Envelope fields `TestEventPattern` requires in the event.
///
/// The API reference also lists `resources`, but EventBridge accepts events without it
/// (LocalStack's AWS-validated `TestEventPattern` cases omit it and match).
pub const TEST_EVENT_REQUIRED_FIELDS: [&str; 6] = ["id", "account", "source", "time", "region", "detail-type"];

/// Like `aws events test-event-pattern`: checks the event envelope, compiles the pattern and
/// says whether the event matches.
///
/// # Errors
/// [`PatternError::InvalidEvent`] when the event is not an object, lacks one of
/// [`TEST_EVENT_REQUIRED_FIELDS`] or is too complex to match (see [`Pattern::matches`]);
/// [`PatternError::Invalid`] when the pattern is refused (see [`Pattern::parse`]).
pub fn test_event_pattern(pattern: &Value, event: &Value) -> Result<bool, PatternError> {
    let Value::Object(fields) = event else {
        return Err(PatternError::InvalidEvent("the event must be a JSON object".into()));
    };
    if let Some(missing) = TEST_EVENT_REQUIRED_FIELDS.iter().find(|f| !fields.contains_key(**f)) {
        return Err(PatternError::InvalidEvent(format!("missing field `{missing}`")));
    }
    Pattern::parse(pattern)?.matches(event)
}
