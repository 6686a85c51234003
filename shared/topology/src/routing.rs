//! EventBridge rule matching over the template's rules: every rule's pattern is compiled once
//! with [`crate::pattern::Pattern`] (EventBridge's event-ruler semantics: exact values,
//! `prefix`, `suffix`, `equals-ignore-case`, `wildcard`, `anything-but`, `numeric`, `cidr`,
//! `exists`, `$or`, nested and dotted fields, array members with array consistency); an event
//! is flattened once and tried against every rule in template order.

use std::collections::HashSet;

use crate::pattern::{FlatEvent, Pattern, TOO_COMPLEX, TooComplex};
use crate::topology::{RuleDef, TargetDef, Topology};

/// A compiled set of rules.
pub struct Router {
    patterns: Vec<Pattern>,
    rules: Vec<RuleDef>,
    /// Field-name steps any pattern reads; other event keys are not flattened.
    steps: HashSet<String>,
}

/// A rule whose pattern was refused, or an event that cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule}: {message}")]
pub struct RoutingError {
    /// Rule logical id (`<event>` when the event is at fault whatever the rule).
    pub rule: String,
    /// Why.
    pub message: String,
}

impl Router {
    /// Compiles the topology's rules.
    ///
    /// # Errors
    /// The first rule whose pattern is refused (see [`Pattern::parse`]).
    pub fn new(topology: &Topology) -> Result<Self, RoutingError> {
        Self::from_rules(topology.rules.clone())
    }

    /// Compiles rules.
    ///
    /// # Errors
    /// The first rule whose pattern is refused (see [`Pattern::parse`]).
    pub fn from_rules(rules: Vec<RuleDef>) -> Result<Self, RoutingError> {
        let patterns = rules
            .iter()
            .map(|r| Pattern::parse(&r.pattern).map_err(|e| RoutingError { rule: r.logical_id.clone(), message: e.to_string() }))
            .collect::<Result<Vec<_>, _>>()?;
        let steps = patterns.iter().flat_map(|p| p.steps().iter().cloned()).collect();
        Ok(Self { patterns, rules, steps })
    }

    /// Rules (and their targets) matching a full EventBridge event, already parsed, in template
    /// order. The event is not serialised or re-parsed, so its nesting depth is not limited here.
    ///
    /// # Errors
    /// The event is not a JSON object (rule `<event>`), or is too complex to match against a
    /// rule's pattern (that rule; see [`Pattern::matches`]).
    pub fn matching_rules_for(&self, event: &serde_json::Value) -> Result<Vec<&RuleDef>, RoutingError> {
        let flat = FlatEvent::new(event, &self.steps).ok_or_else(|| event_error("the event must be a JSON object".into()))?;
        let mut matched = Vec::new();
        for (rule, pattern) in self.rules.iter().zip(&self.patterns) {
            let hit = pattern
                .matches_flat(&flat)
                .map_err(|TooComplex| RoutingError { rule: rule.logical_id.clone(), message: TOO_COMPLEX.to_owned() })?;
            if hit {
                matched.push(rule);
            }
        }
        Ok(matched)
    }

    /// Every (rule, target) an already parsed event is delivered to.
    ///
    /// # Errors
    /// As [`Self::matching_rules_for`].
    pub fn targets_for(&self, event: &serde_json::Value) -> Result<Vec<(&RuleDef, &TargetDef)>, RoutingError> {
        Ok(self.matching_rules_for(event)?.into_iter().flat_map(|r| r.targets.iter().map(move |t| (r, t))).collect())
    }

    /// [`Self::matching_rules_for`] an event given as JSON bytes.
    ///
    /// # Errors
    /// The bytes are not JSON (including JSON nested deeper than serde_json's limit of 128),
    /// or as [`Self::matching_rules_for`].
    pub fn matching_rules(&self, event_json: &[u8]) -> Result<Vec<&RuleDef>, RoutingError> {
        let event: serde_json::Value = serde_json::from_slice(event_json).map_err(|e| event_error(e.to_string()))?;
        self.matching_rules_for(&event)
    }

    /// [`Self::targets_for`] an event given as JSON bytes.
    ///
    /// # Errors
    /// As [`Self::matching_rules`].
    pub fn targets(&self, event_json: &[u8]) -> Result<Vec<(&RuleDef, &TargetDef)>, RoutingError> {
        let event: serde_json::Value = serde_json::from_slice(event_json).map_err(|e| event_error(e.to_string()))?;
        self.targets_for(&event)
    }
}

fn event_error(message: String) -> RoutingError {
    RoutingError { rule: String::from("<event>"), message }
}
