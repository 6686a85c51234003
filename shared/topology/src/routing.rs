//! EventBridge rule matching with the `quamina` crate (a Rust port of the matcher behind
//! EventBridge-style patterns: exact values, `prefix`, `suffix`, `anything-but`,
//! `numeric`, `exists`, `equals-ignore-case`, `wildcard`, nested fields, array members).

use quamina::Quamina;

use crate::topology::{RuleDef, TargetDef, Topology};

/// A compiled set of rules.
pub struct Router {
    matcher: Quamina<usize>,
    rules: Vec<RuleDef>,
}

/// A pattern quamina refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule}: {message}")]
pub struct RoutingError {
    /// Rule logical id.
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
        let mut matcher = Quamina::new();
        for (i, r) in rules.iter().enumerate() {
            matcher
                .add_pattern(i, &r.pattern.to_string())
                .map_err(|e| RoutingError { rule: r.logical_id.clone(), message: e.to_string() })?;
        }
        Ok(Self { matcher, rules })
    }

    /// Rules (and their targets) matching a full EventBridge event (JSON bytes).
    pub fn matching_rules(&self, event_json: &[u8]) -> Result<Vec<&RuleDef>, RoutingError> {
        let mut idx = self
            .matcher
            .matches_for_event(event_json)
            .map_err(|e| RoutingError { rule: String::from("<event>"), message: e.to_string() })?;
        idx.sort_unstable();
        idx.dedup();
        Ok(idx.into_iter().filter_map(|i| self.rules.get(i)).collect())
    }

    /// Every (rule, target) an event is delivered to.
    pub fn targets(&self, event_json: &[u8]) -> Result<Vec<(&RuleDef, &TargetDef)>, RoutingError> {
        Ok(self.matching_rules(event_json)?.into_iter().flat_map(|r| r.targets.iter().map(move |t| (r, t))).collect())
    }
}
