//! Compiled patterns and their evaluation against a flattened event (event-ruler's `Event` +
//! `StructuredFinder` + `ArrayMembership`, one rule at a time).
//!
//! # Array consistency, without backtracking over leaves
//! event-ruler checks a rule's fields in sorted order, picking for each value field one event
//! value consistent with the values picked before (values inside different elements of the same
//! array of objects/arrays are inconsistent), and requiring for an `exists: false` field that no
//! value at its path is consistent with the values picked *before it*. Read literally that is a
//! search over combinations of values: quadratic and worse on events with big arrays.
//!
//! Here the event is a tree of *elements* (the event itself, and every object or array that is
//! an element of an array), and the same question is answered by one walk down that tree:
//! at an array, the value fields that pick a value inside it must all pick inside one element
//! (tried one candidate element at a time, among the elements that hold a match for every one of
//! them), and the `exists: false` fields' values in the *other* elements are ruled out exactly
//! when one of those value fields comes before them in the sorted order. Fields that reach an
//! element along different keys never meet again, so each element is visited once per set of
//! fields routed into it. The only remaining choices — a field whose values sit both directly in
//! an element and inside an array below it, event keys with dots that give one path several
//! routes, and fields listing both values and `exists: false` — are enumerated and memoised;
//! [`MAX_WORK`] caps what a hostile pattern/event pair can cost.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::cidr::{IpRange, parse_ip};
use super::text::{CaseFold, Glob};

/// One `$or` combination: every field must match.
#[derive(Debug, Clone)]
pub(crate) struct Branch {
    /// Indexes into the pattern's fields, sorted by path in UTF-16 order (Java
    /// `String.compareTo`), the order the rule machine walks.
    pub(crate) fields: Vec<usize>,
}

/// A field path with the values it accepts (any of them).
#[derive(Debug, Clone)]
pub(crate) struct Field {
    /// Dotted path, as event-ruler joins names.
    pub(crate) path: String,
    pub(crate) matchers: Vec<Matcher>,
    /// The exact string values among the matchers, looked up at once.
    strings: HashSet<String>,
}

impl Field {
    pub(crate) fn new(path: String, matchers: Vec<Matcher>) -> Self {
        let strings = matchers
            .iter()
            .filter_map(|m| match m {
                Matcher::Value(ValueMatcher::String(s)) => Some(s.clone()),
                _ => None,
            })
            .collect();
        Self { path, matchers, strings }
    }
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
    Strings(HashSet<String>),
    Numbers(Vec<f64>),
    Prefixes(Vec<String>),
    Suffixes(Vec<String>),
    IgnoreCase(Vec<CaseFold>),
    Wildcards(Vec<Glob>),
}

/// A JSON number: its double value when event-ruler can compare it, and its literal value.
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

/// 2^53: every integer up to this magnitude is a double whose shortest decimal form is itself.
const EXACT_INTEGERS: u64 = 1 << 53;

impl Num {
    /// event-ruler's `ComparableNumber.generate` accepts a number when `BigDecimal.valueOf(d)`
    /// — the decimal `Double.toString(d)` prints — equals the literal. An integer literal is
    /// known exactly here: it is comparable when the shortest decimal form of its double is the
    /// integer itself (so 2^60 and `i64::MIN` are not). serde_json has already rounded a decimal
    /// literal to a double, so it is taken as written in its shortest form; that form differs
    /// from Java's only for the smallest subnormals (`5e-324` prints as `4.9E-324`), which are
    /// therefore not comparable.
    pub(crate) fn of(n: &serde_json::Number) -> Self {
        let int = |i: i128, f: f64, magnitude: u64| {
            let comparable = magnitude <= EXACT_INTEGERS || (f.is_finite() && f.to_string() == i.to_string());
            Self { comparable: comparable.then_some(f), literal: Literal::Int(i) }
        };
        if let Some(u) = n.as_u64() {
            int(i128::from(u), u as f64, u)
        } else if let Some(i) = n.as_i64() {
            int(i128::from(i), i as f64, i.unsigned_abs())
        } else {
            let f = n.as_f64().unwrap_or(f64::NAN);
            Self { comparable: (f.is_finite() && java_prints_shortest(f)).then_some(f), literal: Literal::Float(f.to_bits()) }
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

/// Whether Java's `Double.toString` (JDK 19+: the shortest decimal, except that a one-digit
/// result is replaced by the closest two-digit decimal that reads back as the same double)
/// has the value of the shortest decimal. Only subnormals with a handful of significant bits
/// can have two such decimals, so normal doubles skip the formatting.
fn java_prints_shortest(f: f64) -> bool {
    if f == 0.0 || f.abs() >= f64::MIN_POSITIVE {
        return true;
    }
    let shortest = format!("{f:e}");
    let Some((mantissa, exponent)) = shortest.split_once('e') else { return true };
    if mantissa.trim_start_matches('-').len() != 1 {
        return true;
    }
    let two = format!("{f:.1e}");
    two.parse::<f64>() != Ok(f) || two == format!("{mantissa}.0e{exponent}")
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
            (Self::Strings(ss), Value::String(s)) => ss.contains(s),
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

/// The event itself, as an element.
const ROOT: u32 = 0;

/// A leaf and the innermost element holding it.
#[derive(Debug)]
struct Leaf<'a> {
    value: &'a Value,
    element: u32,
}

/// An event's leaves by dotted path, keeping only keys a set of patterns can name, and its
/// tree of elements: element 0 is the event; every object or array that is an element of an
/// array is another (event-ruler's `ArrayMembership` entries). A leaf that is itself an array
/// element belongs to the element holding the array, as in event-ruler.
#[derive(Debug)]
pub(crate) struct FlatEvent<'a> {
    leaves: HashMap<String, Vec<Leaf<'a>>>,
    /// For each element but the root: the array it is an element of.
    element_array: Vec<u32>,
    /// For each array: the element holding it.
    array_parent: Vec<u32>,
}

impl<'a> FlatEvent<'a> {
    /// Flattens a JSON object; `None` for anything else. Keys whose dot-separated parts are not
    /// all in `steps` cannot be part of a pattern path and are skipped.
    pub(crate) fn new(event: &'a Value, steps: &HashSet<String>) -> Option<Self> {
        let Value::Object(map) = event else { return None };
        let mut walk = Walk {
            steps,
            leaves: HashMap::new(),
            path: String::new(),
            element: ROOT,
            element_array: vec![u32::MAX],
            array_parent: Vec::new(),
        };
        walk.object(map);
        Some(Self { leaves: walk.leaves, element_array: walk.element_array, array_parent: walk.array_parent })
    }

    /// The array holding an element and the element holding that array; `None` for the root.
    fn parent(&self, element: u32) -> Option<(u32, u32)> {
        if element == ROOT {
            return None;
        }
        let array = self.element_array[element as usize];
        Some((array, self.array_parent[array as usize]))
    }
}

struct Walk<'a, 's> {
    steps: &'s HashSet<String>,
    leaves: HashMap<String, Vec<Leaf<'a>>>,
    path: String,
    element: u32,
    element_array: Vec<u32>,
    array_parent: Vec<u32>,
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
            self.value(value);
            self.path.truncate(len);
        }
    }

    fn value(&mut self, value: &'a Value) {
        match value {
            Value::Object(m) => self.object(m),
            Value::Array(items) => self.array(items),
            leaf => {
                let leaf = Leaf { value: leaf, element: self.element };
                match self.leaves.get_mut(self.path.as_str()) {
                    Some(list) => list.push(leaf),
                    None => {
                        self.leaves.insert(self.path.clone(), vec![leaf]);
                    }
                }
            }
        }
    }

    fn array(&mut self, items: &'a [Value]) {
        let id = self.array_parent.len() as u32;
        self.array_parent.push(self.element);
        for item in items {
            if item.is_object() || item.is_array() {
                let holder = self.element;
                self.element = self.element_array.len() as u32;
                self.element_array.push(id);
                self.value(item);
                self.element = holder;
            } else {
                self.value(item);
            }
        }
    }
}

/// Work one pattern may spend on one event before the event is refused as too complex. A unit is
/// a leaf tested against one of its field's values (all exact strings together count as one), or
/// a step of the search (an element or candidate element visited, per field carried). Matching
/// the largest events (256 KB: at most ~128k leaves) against patterns of a few fields with a few
/// values each stays under half of it; units cost 2 to 40 ns, so the cap bounds matching to a
/// few tens of ms. Reaching it takes an event built against the pattern: tens of thousands of
/// values at a field listing a dozen non-exact values, or many fields listing both values and
/// `exists: false` inside one array.
pub(crate) const MAX_WORK: u64 = 1_500_000;

/// The event needs more than [`MAX_WORK`] to match against a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooComplex;

/// Multiplicative hashing for the element tree's numbers (std's SipHash guards against keys
/// chosen to collide; these are numbered here, in event order, so nobody chooses them).
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type Ids = std::hash::BuildHasherDefault<IdHasher>;

/// Where one field's leaves (all of them, or those matching its values) sit in the element tree.
#[derive(Debug, Default)]
struct Spread {
    /// Elements holding such a leaf directly.
    direct: HashSet<u32, Ids>,
    /// For each array: its elements holding such a leaf at any depth, ascending.
    in_array: HashMap<u32, Vec<u32>, Ids>,
    /// For each element: its arrays (directly inside it) holding such a leaf at any depth.
    arrays_at: HashMap<u32, Vec<u32>, Ids>,
}

impl Spread {
    /// From the leaves' elements, in event order (so each array's elements come ascending).
    fn new(event: &FlatEvent<'_>, elements: impl Iterator<Item = u32>) -> Self {
        let mut spread = Self::default();
        for element in elements {
            spread.direct.insert(element);
            let mut current = element;
            while let Some((array, holder)) = event.parent(current) {
                let list = spread.in_array.entry(array).or_default();
                if list.last() == Some(&current) {
                    break; // recorded with its ancestors already
                }
                list.push(current);
                let arrays = spread.arrays_at.entry(holder).or_default();
                if !arrays.contains(&array) {
                    arrays.push(array);
                }
                current = holder;
            }
        }
        spread
    }

    fn is_empty(&self) -> bool {
        self.direct.is_empty()
    }

    fn arrays_at(&self, element: u32) -> &[u32] {
        self.arrays_at.get(&element).map_or(&[], Vec::as_slice)
    }

    fn elements_in(&self, array: u32) -> &[u32] {
        self.in_array.get(&array).map_or(&[], Vec::as_slice)
    }
}

/// A field's leaves in one event: those matching one of its values, and (for a field with
/// `exists: false`) all of them.
#[derive(Debug)]
struct Classified {
    matching: Spread,
    all: Option<Spread>,
}

/// Matches an event against a pattern's branches (any of them), sharing the per-field work.
pub(crate) fn matches(fields: &[Field], branches: &[Branch], event: &FlatEvent<'_>) -> Result<bool, TooComplex> {
    Ok(evaluate(fields, branches, event)?.0)
}

/// [`matches()`], also returning the work spent.
pub(crate) fn evaluate(fields: &[Field], branches: &[Branch], event: &FlatEvent<'_>) -> Result<(bool, u64), TooComplex> {
    let mut classified: Vec<Option<Classified>> = fields.iter().map(|_| None).collect();
    let mut work = 0;
    'branches: for branch in branches {
        for &f in &branch.fields {
            if classified[f].is_none() {
                classified[f] = Some(classify(&fields[f], event, &mut work)?);
            }
            // A value field without a matching leaf fails the branch: skip classifying the rest.
            if classified[f].as_ref().is_some_and(|c| c.all.is_none() && c.matching.is_empty()) {
                continue 'branches;
            }
        }
        if branch_matches(fields, branch, &classified, &mut work)? {
            return Ok((true, work));
        }
    }
    Ok((false, work))
}

fn classify(field: &Field, event: &FlatEvent<'_>, work: &mut u64) -> Result<Classified, TooComplex> {
    let leaves = event.leaves.get(&field.path).map(Vec::as_slice).unwrap_or_default();
    let others: Vec<&ValueMatcher> = field
        .matchers
        .iter()
        .filter_map(|m| match m {
            Matcher::Value(ValueMatcher::String(_)) | Matcher::Absent => None,
            Matcher::Value(v) => Some(v),
        })
        .collect();
    *work += (leaves.len() * (1 + others.len())) as u64;
    if *work > MAX_WORK {
        return Err(TooComplex);
    }
    let matching = leaves
        .iter()
        .filter(|l| l.value.as_str().is_some_and(|s| field.strings.contains(s)) || others.iter().any(|m| m.matches(l.value)))
        .map(|l| l.element);
    let absent = field.matchers.iter().any(|m| matches!(m, Matcher::Absent));
    Ok(Classified { matching: Spread::new(event, matching), all: absent.then(|| Spread::new(event, leaves.iter().map(|l| l.element))) })
}

fn branch_matches(fields: &[Field], branch: &Branch, classified: &[Option<Classified>], work: &mut u64) -> Result<bool, TooComplex> {
    let none = Spread::default();
    let mut search = Search { matching: Vec::new(), all: Vec::new(), memo: HashMap::default(), work };
    let (mut values, mut absent, mut either) = (Set::default(), Set::default(), Set::default());
    for (position, &f) in branch.fields.iter().enumerate() {
        let Some(c) = classified[f].as_ref() else { return Ok(false) };
        let all = c.all.as_ref().unwrap_or(&none);
        let has_values = fields[f].matchers.iter().any(|m| matches!(m, Matcher::Value(_)));
        match (has_values, c.all.is_some()) {
            (_, true) if all.is_empty() => {} // nothing at the path: `exists: false` holds
            (true, true) if c.matching.is_empty() => absent = absent.with(position),
            (true, true) => either = either.with(position),
            (false, true) => absent = absent.with(position),
            (true, false) if c.matching.is_empty() => return Ok(false),
            (_, false) => values = values.with(position),
        }
        search.matching.push(&c.matching);
        search.all.push(all);
    }
    search.element(ROOT, values, absent, either)
}

/// A set of branch positions (fields in sorted order; at most 256).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct Set([u64; 4]);

impl Set {
    fn with(mut self, i: usize) -> Self {
        self.0[i / 64] |= 1 << (i % 64);
        self
    }

    fn without(mut self, i: usize) -> Self {
        self.0[i / 64] &= !(1 << (i % 64));
        self
    }

    fn is_empty(self) -> bool {
        self.0 == [0; 4]
    }

    fn len(self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn first(self) -> Option<usize> {
        self.iter().next()
    }

    /// Ascending.
    fn iter(self) -> impl Iterator<Item = usize> {
        (0..4).flat_map(move |w| {
            let mut bits = self.0[w];
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * 64 + bit
                })
            })
        })
    }
}

/// How a field with several possibilities at an element is satisfied.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// By a leaf held directly by the element.
    Here,
    /// By a leaf inside this array (one of its elements).
    Inside(u32),
    /// `exists: false` (for a field listing both values and `exists: false`).
    Absent,
}

/// Fields routed into one array: (array, value fields, `exists: false` fields, undecided fields).
type Routed = (u32, Set, Set, Set);

/// The search for one branch. Field sets hold branch positions: `values` must each take a
/// leaf below the element (consistently), `absent` must have every leaf below the element ruled
/// out by an earlier value field, and `either` (fields listing both) must do one or the other.
struct Search<'s> {
    /// Per branch position: where the leaves matching the field's values are.
    matching: Vec<&'s Spread>,
    /// Per branch position: where all the field's leaves are (fields with `exists: false`).
    all: Vec<&'s Spread>,
    memo: HashMap<Routed, bool, Ids>,
    work: &'s mut u64,
}

impl<'s> Search<'s> {
    fn tick(&mut self, n: usize) -> Result<(), TooComplex> {
        *self.work += n as u64;
        if *self.work > MAX_WORK { Err(TooComplex) } else { Ok(()) }
    }

    /// Whether the fields can be satisfied below `element`, which the values picked so far
    /// reach (so nothing it holds directly is ruled out).
    fn element(&mut self, element: u32, mut values: Set, absent: Set, mut either: Set) -> Result<bool, TooComplex> {
        self.tick(1 + values.len() + absent.len() + either.len())?;
        if absent.iter().any(|f| self.all[f].direct.contains(&element)) {
            return Ok(false);
        }
        for f in either.iter() {
            if self.all[f].direct.contains(&element) {
                // A leaf here cannot be ruled out: only a value can satisfy this field.
                either = either.without(f);
                values = values.with(f);
            }
        }
        let mut routed: Vec<Routed> = Vec::new();
        let mut choices: Vec<(usize, Vec<Route>)> = Vec::new();
        for f in values.iter() {
            let here = self.matching[f].direct.contains(&element);
            match (here, self.matching[f].arrays_at(element)) {
                (false, []) => return Ok(false),
                (true, []) => {}
                (false, &[array]) => {
                    let s = slot(&mut routed, array);
                    s.1 = s.1.with(f);
                }
                (here, arrays) => {
                    let inside = arrays.iter().map(|&a| Route::Inside(a));
                    choices.push((f, here.then_some(Route::Here).into_iter().chain(inside).collect()));
                }
            }
        }
        for f in absent.iter() {
            for &array in self.all[f].arrays_at(element) {
                let s = slot(&mut routed, array);
                s.2 = s.2.with(f);
            }
        }
        for f in either.iter() {
            let (all, matching) = (self.all[f].arrays_at(element), self.matching[f].arrays_at(element));
            match all {
                &[array] if matching.iter().all(|&a| a == array) => {
                    let s = slot(&mut routed, array);
                    s.3 = s.3.with(f);
                }
                _ => choices.push((f, std::iter::once(Route::Absent).chain(matching.iter().map(|&a| Route::Inside(a))).collect())),
            }
        }
        let mut pick = vec![0; choices.len()];
        loop {
            let mut arrays = routed.clone();
            for ((f, routes), &k) in choices.iter().zip(&pick) {
                match routes[k] {
                    Route::Here => {}
                    Route::Inside(array) => {
                        let s = slot(&mut arrays, array);
                        s.1 = s.1.with(*f);
                    }
                    Route::Absent => {
                        for &array in self.all[*f].arrays_at(element) {
                            let s = slot(&mut arrays, array);
                            s.2 = s.2.with(*f);
                        }
                    }
                }
            }
            let mut all_hold = true;
            for (array, values, absent, either) in arrays {
                if !self.array(array, values, absent, either)? {
                    all_hold = false;
                    break;
                }
            }
            if all_hold {
                return Ok(true);
            }
            // Next combination of choices.
            let mut i = 0;
            loop {
                let Some((_, routes)) = choices.get(i) else { return Ok(false) };
                pick[i] += 1;
                if pick[i] < routes.len() {
                    break;
                }
                pick[i] = 0;
                i += 1;
            }
        }
    }

    /// Whether the fields routed into `array` can be satisfied there: the value fields inside one
    /// of its elements, the `exists: false` fields in every element.
    fn array(&mut self, array: u32, values: Set, absent: Set, either: Set) -> Result<bool, TooComplex> {
        if values.is_empty() && either.is_empty() {
            // No value is picked inside: every leaf in it is consistent with the values picked.
            return Ok(absent.is_empty());
        }
        let key = (array, values, absent, either);
        if let Some(&known) = self.memo.get(&key) {
            return Ok(known);
        }
        let undecided: Vec<usize> = either.iter().collect();
        if undecided.len() > 20 {
            return Err(TooComplex);
        }
        let mut result = false;
        for mask in 0..1u32 << undecided.len() {
            self.tick(1 + undecided.len())?;
            let (mut v, mut a) = (values, absent);
            let mut possible = true;
            for (i, &f) in undecided.iter().enumerate() {
                if mask >> i & 1 == 1 {
                    possible &= !self.matching[f].elements_in(array).is_empty();
                    v = v.with(f);
                } else {
                    a = a.with(f);
                }
            }
            if possible && self.elements(array, v, a)? {
                result = true;
                break;
            }
        }
        self.memo.insert(key, result);
        Ok(result)
    }

    /// [`Self::array`] once every field is a value or an `exists: false` field.
    fn elements(&mut self, array: u32, values: Set, absent: Set) -> Result<bool, TooComplex> {
        let Some(first) = values.first() else { return Ok(absent.is_empty()) };
        self.tick(values.len() + absent.len())?;
        // An `exists: false` field sorted before every value field picked in this array sees no
        // element chosen yet: its leaves must all be in the element that will be chosen.
        let mut forced = None;
        for f in absent.iter().take_while(|&f| f < first) {
            match (self.all[f].elements_in(array), forced) {
                (&[only], None) => forced = Some(only),
                (&[only], Some(chosen)) if only == chosen => {}
                _ => return Ok(false),
            }
        }
        let matching = &self.matching;
        let lists: Vec<&'s [u32]> = values.iter().map(|f| matching[f].elements_in(array)).collect();
        let Some(shortest) = lists.iter().copied().min_by_key(|l| l.len()) else { return Ok(false) };
        let candidates = match &forced {
            Some(only) => std::slice::from_ref(only),
            None => shortest,
        };
        for &element in candidates {
            self.tick(1 + lists.len() + absent.len())?;
            if !lists.iter().all(|l| l.binary_search(&element).is_ok()) {
                continue;
            }
            let all = &self.all;
            let inside =
                absent.iter().filter(|&f| all[f].elements_in(array).binary_search(&element).is_ok()).fold(Set::default(), Set::with);
            if self.element(element, values, inside, Set::default())? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The entry for `array`, added if missing.
fn slot(routed: &mut Vec<Routed>, array: u32) -> &mut Routed {
    let i = match routed.iter().position(|r| r.0 == array) {
        Some(i) => i,
        None => {
            routed.push((array, Set::default(), Set::default(), Set::default()));
            routed.len() - 1
        }
    };
    &mut routed[i]
}

#[cfg(test)]
mod tests;
