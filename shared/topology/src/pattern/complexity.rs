//! EventBridge's "Rule is too complex" check on wildcard patterns: event-ruler's
//! `MachineComplexityEvaluator`, run on the byte machine event-ruler builds for a field's
//! `wildcard` and `anything-but`/`wildcard` values (`ByteMachine.addMatchValue`,
//! `addEndOfMatch`, `findOrMakeNextByteState`, `addTransitionNextState`, `insertMatch`).
//!
//! The score is the largest number of wildcard patterns a single input value can keep alive at
//! once: the byte machine is walked as a subset automaton (each step: the states reachable by
//! one byte from the current ones), and each set of states counts the wildcard patterns
//! reachable from its states, plus those behind a `*` state right after one of them. Only the
//! wildcard values are put in the machine (event-ruler's other value types share its states but
//! never count), and fields are grouped into machines by the fields before them in their `$or`
//! combination, as event-ruler's name states would share them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use super::matcher::{AnythingBut, Branch, Field, Matcher, ValueMatcher};
use super::text::Glob;

/// A character of a wildcard value as event-ruler's `WildcardParser` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Char {
    Byte(u8),
    Star,
}

/// A transition: to a state, to a match (a pattern's end), or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Single {
    State(usize),
    Match(usize),
    Both(usize, usize),
}

impl Single {
    fn next(self) -> Option<usize> {
        match self {
            Self::State(s) | Self::Both(s, _) => Some(s),
            Self::Match(_) => None,
        }
    }

    fn pattern(self) -> Option<usize> {
        match self {
            Self::Match(p) | Self::Both(_, p) => Some(p),
            Self::State(_) => None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    by_byte: BTreeMap<u8, Vec<Single>>,
    /// Transitions on every byte (`*`).
    all: Vec<Single>,
    /// Reachable by more than one prefix (after a `*`).
    indeterminate: bool,
}

/// One field's byte machine (wildcard values only). Patterns are numbered by the caller; equal
/// values share a number, as equal `Patterns` do in event-ruler.
#[derive(Debug)]
struct Machine {
    states: Vec<State>,
}

fn add(list: &mut Vec<Single>, single: Single) {
    if !list.contains(&single) {
        list.push(single);
    }
}

impl Machine {
    fn new() -> Self {
        Self { states: vec![State::default()] }
    }

    fn new_state(&mut self, indeterminate: bool) -> usize {
        self.states.push(State { indeterminate, ..State::default() });
        self.states.len() - 1
    }

    /// `getTransition(state, byte)`: the byte's own transitions and the `*` ones.
    fn on_byte(&self, state: usize, byte: u8) -> Vec<Single> {
        let s = &self.states[state];
        let mut out = s.all.clone();
        for &t in s.by_byte.get(&byte).into_iter().flatten() {
            add(&mut out, t);
        }
        out
    }

    fn on(&self, state: usize, c: Char) -> Vec<Single> {
        match c {
            Char::Star => self.states[state].all.clone(),
            Char::Byte(b) => self.on_byte(state, b),
        }
    }

    fn add_transition(&mut self, state: usize, c: Char, single: Single) {
        match c {
            // `putTransitionForAllBytes` replaces the state's transitions.
            Char::Star => self.states[state] = State { all: vec![single], ..std::mem::take(&mut self.states[state]) },
            Char::Byte(b) => add(self.states[state].by_byte.entry(b).or_default(), single),
        }
    }

    /// `ByteMachine.addMatchValue` for a wildcard value (quotes included).
    fn add_value(&mut self, chars: &[Char], pattern: usize) {
        let (mut state, mut prev) = (0, None);
        let mut i = 0;
        while i + 1 < chars.len() {
            let reusable = self.on(state, chars[i]).into_iter().filter_map(Single::next).find(|&n| self.can_reuse(state, n, chars, i));
            let Some(next) = reusable else { break };
            prev = Some(state);
            state = next;
            i += 1;
        }
        self.add_end(state, prev, chars, i, pattern);
    }

    fn can_reuse(&self, state: usize, next: usize, chars: &[Char], i: usize) -> bool {
        if next == state {
            return false;
        }
        if !self.states[next].indeterminate {
            return !(i + 2 == chars.len() && chars[i + 1] == Char::Star);
        }
        !self.converges(state, chars, i)
    }

    /// `doMultipleTransitionsConvergeForInputByte` (without suffix patterns in the machine).
    fn converges(&self, state: usize, chars: &[Char], i: usize) -> bool {
        let Char::Byte(b) = chars[i] else { return false };
        if (0x80..0xC0).contains(&b) {
            return false; // a continuation byte
        }
        let all = &self.states[state].all;
        if !all.is_empty() && all.as_slice() != [Single::State(state)] {
            return true;
        }
        // A character with distinct lower and upper case forms (event-ruler looks for its
        // equals-ignore-case paths, and always finds a transition object).
        let width = match b {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => return false, // event-ruler decodes 3 of the 4 bytes: a replacement character
        };
        let bytes: Vec<u8> = chars[i..].iter().take(width).filter_map(|c| if let Char::Byte(b) = c { Some(*b) } else { None }).collect();
        std::str::from_utf8(&bytes).ok().and_then(|s| s.chars().next()).is_some_and(|c| !c.to_lowercase().eq(c.to_uppercase()))
    }

    /// `addEndOfMatch` (wildcard values take no shortcut transitions).
    fn add_end(&mut self, mut state: usize, mut prev: Option<usize>, chars: &[Char], from: usize, pattern: usize) {
        let last = chars.len() - 1;
        let mut j = from;
        while j < last {
            if j + 1 == last && chars[j + 1] == Char::Star {
                break;
            }
            let trans = self.on(state, chars[j]);
            if trans.is_empty() {
                break;
            }
            match first_next(&self.states, &trans) {
                Some(next) if self.states[next].indeterminate => break,
                Some(next) => {
                    prev = Some(state);
                    state = next;
                }
                None => {
                    // A match with no next state: give it one.
                    let fresh = self.new_state(self.states[state].indeterminate);
                    let single = trans[0];
                    if let (Char::Byte(b), Some(p)) = (chars[j], single.pattern()) {
                        let list = self.states[state].by_byte.entry(b).or_default();
                        list.retain(|&t| t != single);
                        add(list, Single::Both(fresh, p));
                    }
                    prev = Some(state);
                    state = fresh;
                }
            }
            j += 1;
        }
        while j < last {
            let next = self.find_or_make_next(state, prev, chars, j);
            prev = Some(state);
            state = next;
            j += 1;
        }
        self.insert_match(chars, last, state, prev, pattern);
    }

    /// `findOrMakeNextByteState`.
    fn find_or_make_next(&mut self, state: usize, prev: Option<usize>, chars: &[Char], j: usize) -> usize {
        let trans = self.on(state, chars[j]);
        if let Some(next) = first_next(&self.states, &trans)
            && !self.states[next].indeterminate
            && !(j + 2 == chars.len() && chars[j + 1] == Char::Star)
        {
            return next;
        }
        let next = self.new_state(self.states[state].indeterminate);
        match chars[j] {
            Char::Star => {
                // `addTransitionNextStateForWildcard`: a self-looping `*` state.
                add(&mut self.states[next].all, Single::State(next));
                self.states[next].indeterminate = true;
                add(&mut self.states[state].all, Single::State(next));
            }
            c => {
                self.add_transition(state, c, Single::State(next));
                // A `*` just before: skipping it (matching nothing) reaches the same state.
                if let Some(p) = prev
                    && j > 0
                    && chars[j - 1] == Char::Star
                {
                    self.add_transition(p, c, Single::State(next));
                }
            }
        }
        next
    }

    /// `insertMatch` for the closing quote.
    fn insert_match(&mut self, chars: &[Char], at: usize, state: usize, prev: Option<usize>, pattern: usize) {
        if self.on(state, chars[at]).iter().any(|t| t.pattern() == Some(pattern)) {
            return;
        }
        self.add_transition(state, chars[at], Single::Match(pattern));
        if let Some(p) = prev
            && at == chars.len() - 1
            && at > 0
            && chars[at - 1] == Char::Star
        {
            self.add_transition(p, chars[at], Single::Match(pattern));
        }
    }

    /// `MachineComplexityEvaluator.evaluate`, stopping at `cap`.
    fn complexity(&self, cap: usize) -> usize {
        let reach = self.reachable_patterns();
        let count = |t: &Single| -> usize {
            let mut patterns: BTreeSet<usize> = t.next().map(|s| reach[s].clone()).unwrap_or_default();
            patterns.extend(t.pattern());
            patterns.len()
        };
        let mut seen: HashSet<Vec<Single>> = HashSet::new();
        let mut queue: VecDeque<Vec<Single>> = self.step(&[0]).into();
        let mut max = 0;
        while let Some(set) = queue.pop_front() {
            if seen.len() > 100_000 {
                return cap;
            }
            if !seen.insert(set.clone()) {
                continue;
            }
            let mut size = 0;
            for t in &set {
                size += count(t);
                if let Some(next) = t.next() {
                    size += self.states[next].all.iter().filter(|u| !set.contains(u)).map(count).sum::<usize>();
                }
            }
            if size >= cap {
                return cap;
            }
            max = max.max(size);
            let states: Vec<usize> = set.iter().filter_map(|t| t.next()).collect::<BTreeSet<_>>().into_iter().collect();
            queue.extend(self.step(&states));
        }
        max
    }

    /// The distinct transition sets the states lead to, one per byte value.
    fn step(&self, states: &[usize]) -> Vec<Vec<Single>> {
        let mut sets: Vec<Vec<Single>> = Vec::new();
        for b in 0..=255u8 {
            let mut set: Vec<Single> = states.iter().flat_map(|&s| self.on_byte(s, b)).collect();
            set.sort_unstable();
            set.dedup();
            if !set.is_empty() && !sets.contains(&set) {
                sets.push(set);
            }
        }
        sets
    }

    /// For each state: the patterns whose match can be reached from it.
    fn reachable_patterns(&self) -> Vec<BTreeSet<usize>> {
        let mut reach = vec![BTreeSet::new(); self.states.len()];
        loop {
            let mut changed = false;
            for s in (0..self.states.len()).rev() {
                let state = &self.states[s];
                let mut found = reach[s].clone();
                for t in state.all.iter().chain(state.by_byte.values().flatten()) {
                    found.extend(t.pattern());
                    if let Some(n) = t.next() {
                        found.extend(reach[n].iter().copied());
                    }
                }
                if found.len() != reach[s].len() {
                    reach[s] = found;
                    changed = true;
                }
            }
            if !changed {
                return reach;
            }
        }
    }
}

/// `CompoundByteTransition.getNextByteState`: a determinate next state first.
fn first_next(states: &[State], trans: &[Single]) -> Option<usize> {
    let nexts = trans.iter().filter_map(|t| t.next());
    nexts.clone().find(|&n| !states[n].indeterminate).or_else(|| nexts.clone().next())
}

fn quoted(glob: &Glob) -> Vec<Char> {
    let mut chars = vec![Char::Byte(b'"')];
    for (i, part) in glob.parts().iter().enumerate() {
        if i > 0 {
            chars.push(Char::Star);
        }
        chars.extend(part.bytes().map(Char::Byte));
    }
    chars.push(Char::Byte(b'"'));
    chars
}

/// The wildcard patterns of a field: (identity, byte paths) — one identity per `wildcard` value,
/// one for an `anything-but`/`wildcard` list as a whole.
fn wildcard_patterns(field: &Field) -> Vec<(String, Vec<Vec<Char>>)> {
    field
        .matchers
        .iter()
        .filter_map(|m| match m {
            Matcher::Value(ValueMatcher::Wildcard(g)) => Some((format!("w{:?}", g.parts()), vec![quoted(g)])),
            Matcher::Value(ValueMatcher::AnythingBut(AnythingBut::Wildcards(gs))) => {
                let mut ids: Vec<String> = gs.iter().map(|g| format!("{:?}", g.parts())).collect();
                ids.sort();
                ids.dedup();
                Some((format!("a{ids:?}"), gs.iter().map(quoted).collect()))
            }
            _ => None,
        })
        .collect()
}

/// The largest score over the rule's machines (capped at `cap`) and the field path of that
/// machine.
pub(crate) fn rule_complexity(fields: &[Field], branches: &[Branch], cap: usize) -> (usize, String) {
    // Machines keyed by (field path, the fields before it in the combination), with their
    // patterns numbered by identity.
    type Key = (String, Vec<usize>);
    let mut machines: HashMap<Key, (Machine, HashMap<String, usize>)> = HashMap::new();
    for branch in branches {
        for (i, &f) in branch.fields.iter().enumerate() {
            let patterns = wildcard_patterns(&fields[f]);
            if patterns.is_empty() {
                continue;
            }
            let key = (fields[f].path.clone(), branch.fields[..i].to_vec());
            let (machine, ids) = machines.entry(key).or_insert_with(|| (Machine::new(), HashMap::new()));
            for (identity, paths) in patterns {
                let next = ids.len();
                let id = *ids.entry(identity).or_insert(next);
                for chars in paths {
                    machine.add_value(&chars, id);
                }
            }
        }
    }
    machines.iter().map(|((path, _), (m, _))| (m.complexity(cap), path.clone())).max().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    fn score(pattern: &Value) -> usize {
        let (fields, branches) = super::super::parse::compile(pattern).unwrap_or_else(|e| panic!("{e}"));
        super::rule_complexity(&fields, &branches, 1000).0
    }

    #[test]
    fn when_wildcard_patterns_are_scored_should_agree_with_event_ruler() {
        // Scores printed by event-ruler 337e8d9's `MachineComplexityEvaluator` (uncapped) for the
        // same patterns; the last ones came out of a random comparison of 3000 patterns (all equal).
        let cases = [
            (json!({"EventBusArn": [{"wildcard": "*:*:*:*:*:event-bus/*"}]}), 11),
            (json!({"FileName": [{"wildcard": "/Users/*/dir/dir/dir/dir/dir/doc.txt"}]}), 7),
            (json!({"FileName": [{"wildcard": "/Users/*/doc.txt"}]}), 2),
            (json!({"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]}), 3),
            (json!({"f": [{"anything-but": {"wildcard": "*/dir/*"}}]}), 4),
            (json!({"f": [{"anything-but": {"wildcard": ["*/init/*", "*/dir/*"]}}]}), 5),
            (json!({"a": [{"wildcard": "*:*:*:*:*"}]}), 9),
            (json!({"a": [{"wildcard": "*:*:*:*:*:*"}]}), 11),
            (json!({"a": [{"wildcard": "*a*b*c*d*e*"}]}), 7),
            (json!({"a": [{"wildcard": "a*"}, {"wildcard": "a*b"}]}), 4),
            (json!({"a": ["abc", {"wildcard": "a*c"}]}), 2),
            (json!({"a": [{"wildcard": "*"}], "b": [{"wildcard": "*x*"}]}), 3),
            (json!({"a": ["x", {"prefix": "a"}]}), 0),
            // event-ruler adds a value again for each `$or` combination; after a `*`, a letter
            // (which has case forms) cannot reuse the states already there, so they pile up.
            (json!({"$or": [{"x": ["1"]}, {"x": ["2"]}], "b": [{"wildcard": "*y"}]}), 3),
            (
                json!({"$or": [{"x": ["1"]}, {"x": ["2"]}, {"x": ["3"]}, {"x": ["4"]}, {"x": ["5"]}, {"x": ["6"]}], "b": [{"wildcard": "*y"}]}),
                7,
            ),
            (
                json!({"$or": [{"x": ["1"]}, {"x": ["2"]}, {"x": ["3"]}, {"x": ["4"]}, {"x": ["5"]}, {"x": ["6"]}], "b": [{"wildcard": "*:"}]}),
                2,
            ),
            (json!({"f": [":a", {"wildcard": "a*aa*aaa*a*"}, {"wildcard": "*abbb"}, {"wildcard": "a*:b"}]}), 13),
            (
                json!({"$or": [{"f": [{"wildcard": "*"}, {"wildcard": "bb*b*b"}, {"anything-but": {"wildcard": ["b*a*", "b*bba"]}}, {"wildcard": "a*a*aaaaa"}]}, {"f": [{"wildcard": "*aabbbaa*"}]}]}),
                13,
            ),
            (
                json!({"$or": [{"f": [{"wildcard": "b"}, {"wildcard": "aa*aaa*a"}, {"anything-but": {"wildcard": ["bbaba*ab*babaaabb"]}}, {"wildcard": "*ba*aab*b"}, {"wildcard": "a*aa*a*a*aaa*aaa"}]}, {"f": [{"wildcard": "b"}]}]}),
                26,
            ),
        ];
        for (pattern, expected) in cases {
            assert_eq!(score(&pattern), expected, "{pattern}");
        }
    }
}
