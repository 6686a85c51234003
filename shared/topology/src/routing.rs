//! EventBridge rule matching over the template's rules: every rule's pattern is compiled once
//! with [`crate::pattern::Pattern`] (EventBridge's event-ruler semantics: exact values,
//! `prefix`, `suffix`, `equals-ignore-case`, `wildcard`, `anything-but`, `numeric`, `cidr`,
//! `exists`, `$or`, nested and dotted fields, array members with array consistency); an event
//! is parsed and flattened once and tried against every rule in template order.

use std::collections::HashSet;

use crate::pattern::{FlatEvent, Pattern};
use crate::topology::{RuleDef, TargetDef, Topology};

/// A compiled set of rules.
pub struct Router {
    patterns: Vec<Pattern>,
    rules: Vec<RuleDef>,
    /// Field-name steps any pattern reads; other event keys are not flattened.
    steps: HashSet<String>,
}

/// A rule whose pattern was refused, or an event that is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule}: {message}")]
pub struct RoutingError {
    /// Rule logical id (`<event>` when the event is at fault).
    pub rule: String,
    /// Why.
    pub message: String,
}

impl Router {
    /// Compiles the topology's rules.
    pub fn new(topology: &Topology) -> Result<Self, RoutingError> {
        Self::from_rules(topology.rules.clone())
    }

    /// Compiles rules.
    pub fn from_rules(rules: Vec<RuleDef>) -> Result<Self, RoutingError> {
        let patterns = rules
            .iter()
            .map(|r| Pattern::parse(&r.pattern).map_err(|e| RoutingError { rule: r.logical_id.clone(), message: e.to_string() }))
            .collect::<Result<Vec<_>, _>>()?;
        let steps = patterns.iter().flat_map(|p| p.steps().iter().cloned()).collect();
        Ok(Self { patterns, rules, steps })
    }

    /// Rules (and their targets) matching a full EventBridge event (JSON bytes), in template order.
    pub fn matching_rules(&self, event_json: &[u8]) -> Result<Vec<&RuleDef>, RoutingError> {
        let event_error = |message: String| RoutingError { rule: String::from("<event>"), message };
        let event: serde_json::Value = serde_json::from_slice(event_json).map_err(|e| event_error(e.to_string()))?;
        let flat = FlatEvent::new(&event, &self.steps).ok_or_else(|| event_error("the event must be a JSON object".into()))?;
        Ok(self.rules.iter().zip(&self.patterns).filter(|(_, p)| p.matches_flat(&flat)).map(|(r, _)| r).collect())
    }

    /// Every (rule, target) an event is delivered to.
    pub fn targets(&self, event_json: &[u8]) -> Result<Vec<(&RuleDef, &TargetDef)>, RoutingError> {
        Ok(self.matching_rules(event_json)?.into_iter().flat_map(|r| r.targets.iter().map(move |t| (r, t))).collect())
    }
}
