//! Compiled patterns and their evaluation against a flattened event (event-ruler's `Event` +
//! `StructuredFinder`, one rule at a time).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::cidr::{IpRange, parse_ip};
use super::text::{CaseFold, Glob};

/// One `$or` combination: every field must match.
#[derive(Debug, Clone)]
pub(crate) struct Branch {
    /// Sorted by path in UTF-16 order (Java `String.compareTo`), the order the rule machine walks.
    pub(crate) fields: Vec<Field>,
}

/// A field path with the values it accepts (any of them).
#[derive(Debug, Clone)]
pub(crate) struct Field {
    /// Dotted path, as event-ruler joins names.
    pub(crate) path: String,
    pub(crate) matchers: Vec<Matcher>,
}

#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// `exists: false`: no value at the path consistent with the fields matched so far.
    Absent,
    /// A condition on one value.
    Value(ValueMatcher),
}

#[derive(Debug, Clone)]
pub(crate) enum ValueMatcher {
    /// `exists: true`.
    Exists,
    String(String),
    Ip(IpRange),
    Number(Num),
    Bool(bool),
    Null,
    Prefix(String),
    PrefixIgnoreCase(CaseFold),
    Suffix(String),
    SuffixIgnoreCase(CaseFold),
    EqualsIgnoreCase(CaseFold),
    Wildcard(Glob),
    Numeric(NumRange),
    Cidr(IpRange),
    AnythingBut(AnythingBut),
}

#[derive(Debug, Clone)]
pub(crate) enum AnythingBut {
    Strings(Vec<String>),
    Numbers(Vec<f64>),
    Prefixes(Vec<String>),
    Suffixes(Vec<String>),
    IgnoreCase(Vec<CaseFold>),
    Wildcards(Vec<Glob>),
}

/// A JSON number: its double value when a double holds it exactly, and its literal value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Num {
    pub(crate) comparable: Option<f64>,
    literal: Literal,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Literal {
    Int(i128),
    Float(u64),
}

impl Num {
    pub(crate) fn of(n: &serde_json::Number) -> Self {
        let int = |i: i128, f: f64| Self { comparable: (f.is_finite() && f as i128 == i).then_some(f), literal: Literal::Int(i) };
        if let Some(u) = n.as_u64() {
            int(i128::from(u), u as f64)
        } else if let Some(i) = n.as_i64() {
            int(i128::from(i), i as f64)
        } else {
            let f = n.as_f64().unwrap_or(f64::NAN);
            Self { comparable: f.is_finite().then_some(f), literal: Literal::Float(f.to_bits()) }
        }
    }

    /// Exact-value equality: numerically when both are comparable, literally when neither is.
    fn same(&self, other: &Self) -> bool {
        match (self.comparable, other.comparable) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.literal == other.literal,
            _ => false,
        }
    }
}

/// A `numeric` condition.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NumRange {
    Equal(f64),
    /// Bounds with "open" (strict) flags; `None` is unbounded.
    Between {
        low: Option<(f64, bool)>,
        high: Option<(f64, bool)>,
    },
}

impl NumRange {
    fn contains(&self, x: f64) -> bool {
        match *self {
            Self::Equal(v) => x == v,
            Self::Between { low, high } => {
                low.is_none_or(|(b, open)| if open { x > b } else { x >= b })
                    && high.is_none_or(|(t, open)| if open { x < t } else { x <= t })
            }
        }
    }
}

impl ValueMatcher {
    fn matches(&self, value: &Value) -> bool {
        let text = value.as_str();
        match self {
            Self::Exists => true,
            Self::String(s) => text == Some(s.as_str()),
            Self::Ip(ip) | Self::Cidr(ip) => text.and_then(parse_ip).is_some_and(|v| ip.contains(&v)),
            Self::Number(n) => matches!(value, Value::Number(v) if n.same(&Num::of(v))),
            Self::Bool(b) => value.as_bool() == Some(*b),
            Self::Null => value.is_null(),
            Self::Prefix(p) => text.is_some_and(|t| t.starts_with(p.as_str())),
            Self::PrefixIgnoreCase(f) => text.is_some_and(|t| f.is_prefix_of(t)),
            Self::Suffix(p) => text.is_some_and(|t| t.ends_with(p.as_str())),
            Self::SuffixIgnoreCase(f) => text.is_some_and(|t| f.is_suffix_of(t)),
            Self::EqualsIgnoreCase(f) => text.is_some_and(|t| f.equals(t)),
            Self::Wildcard(g) => text.is_some_and(|t| g.matches(t)),
            Self::Numeric(r) => comparable(value).is_some_and(|x| r.contains(x)),
            Self::AnythingBut(a) => !a.excludes(value),
        }
    }
}

impl AnythingBut {
    /// Whether the value is one of the excluded ones (only values of the operand's type can be).
    fn excludes(&self, value: &Value) -> bool {
        match (self, value) {
            (Self::Numbers(ns), v) => comparable(v).is_some_and(|x| ns.contains(&x)),
            (Self::Strings(ss), Value::String(s)) => ss.iter().any(|x| x == s),
            (Self::Prefixes(ps), Value::String(s)) => ps.iter().any(|p| s.starts_with(p.as_str())),
            (Self::Suffixes(ps), Value::String(s)) => ps.iter().any(|p| s.ends_with(p.as_str())),
            (Self::IgnoreCase(fs), Value::String(s)) => fs.iter().any(|f| f.equals(s)),
            (Self::Wildcards(gs), Value::String(s)) => gs.iter().any(|g| g.matches(s)),
            _ => false,
        }
    }
}

fn comparable(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => Num::of(n).comparable,
        _ => None,
    }
}

/// Which element of which event array (numbered in traversal order) a value sits in, for
/// arrays whose elements are objects or arrays (event-ruler's `ArrayMembership`).
type Membership = Vec<(u32, u32)>;

#[derive(Debug)]
struct Leaf<'a> {
    value: &'a Value,
    membership: Membership,
}

/// An event's leaves by dotted path, keeping only keys a set of patterns can name.
#[derive(Debug)]
pub(crate) struct FlatEvent<'a> {
    leaves: HashMap<String, Vec<Leaf<'a>>>,
}

impl<'a> FlatEvent<'a> {
    /// Flattens a JSON object; `None` for anything else. Keys whose dot-separated parts are not
    /// all in `steps` cannot be part of a pattern path and are skipped.
    pub(crate) fn new(event: &'a Value, steps: &HashSet<String>) -> Option<Self> {
        let Value::Object(map) = event else { return None };
        let mut walk = Walk { steps, leaves: HashMap::new(), path: String::new(), membership: Vec::new(), arrays: 0 };
        walk.object(map);
        Some(Self { leaves: walk.leaves })
    }
}

struct Walk<'a, 's> {
    steps: &'s HashSet<String>,
    leaves: HashMap<String, Vec<Leaf<'a>>>,
    path: String,
    membership: Membership,
    arrays: u32,
}

impl<'a> Walk<'a, '_> {
    fn object(&mut self, map: &'a Map<String, Value>) {
        for (key, value) in map {
            if !key.split('.').all(|step| self.steps.contains(step)) {
                continue;
            }
            let len = self.path.len();
            if len > 0 {
                self.path.push('.');
            }
            self.path.push_str(key);
            match value {
                Value::Object(m) => self.object(m),
                Value::Array(a) => self.array(a),
                leaf => self.leaf(leaf),
            }
            self.path.truncate(len);
        }
    }

    fn array(&mut self, items: &'a [Value]) {
        let id = self.arrays;
        self.arrays += 1;
        for (index, item) in (0u32..).zip(items) {
            match item {
                Value::Object(m) => {
                    self.membership.push((id, index));
                    self.object(m);
                    self.membership.pop();
                }
                Value::Array(a) => {
                    self.membership.push((id, index));
                    self.array(a);
                    self.membership.pop();
                }
                leaf => self.leaf(leaf),
            }
        }
    }

    fn leaf(&mut self, value: &'a Value) {
        let leaf = Leaf { value, membership: self.membership.clone() };
        self.leaves.entry(self.path.clone()).or_default().push(leaf);
    }
}

/// Merges a value's membership into the constraints so far; `None` when it sits in another
/// element of an array already constrained (event-ruler's `checkArrayConsistency`).
fn merge(constraints: &Membership, membership: &Membership) -> Option<Membership> {
    let mut merged = constraints.clone();
    for &(array, index) in membership {
        match constraints.iter().find(|(a, _)| *a == array) {
            Some(&(_, i)) if i != index => return None,
            Some(_) => {}
            None => merged.push((array, index)),
        }
    }
    Some(merged)
}

impl Branch {
    pub(crate) fn matches(&self, event: &FlatEvent<'_>) -> bool {
        self.match_from(0, event, &Vec::new())
    }

    fn match_from(&self, i: usize, event: &FlatEvent<'_>, constraints: &Membership) -> bool {
        let Some(field) = self.fields.get(i) else { return true };
        let leaves = event.leaves.get(&field.path).map(Vec::as_slice).unwrap_or_default();
        // Constraint sets already tried for the next field: values outside arrays of objects
        // (or in the same element) leave the constraints as they were.
        let mut tried: Vec<Membership> = Vec::new();
        let mut next = |merged: Membership| {
            if tried.contains(&merged) {
                return false;
            }
            let hit = self.match_from(i + 1, event, &merged);
            tried.push(merged);
            hit
        };
        for matcher in &field.matchers {
            match matcher {
                Matcher::Absent => {
                    if leaves.iter().all(|l| merge(constraints, &l.membership).is_none()) && next(constraints.clone()) {
                        return true;
                    }
                }
                Matcher::Value(m) => {
                    for leaf in leaves {
                        if let Some(merged) = merge(constraints, &leaf.membership)
                            && m.matches(leaf.value)
                            && next(merged)
                        {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }
}
