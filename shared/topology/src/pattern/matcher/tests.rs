//! The element-tree matcher against the literal reading of event-ruler (fields in sorted order,
//! each picking a value consistent with the values picked before), on random patterns and events;
//! and the cost of matching, counted rather than timed.

use serde_json::{Value, json};

use super::{Branch, Field, FlatEvent, Matcher, TooComplex, evaluate};
use crate::pattern::Pattern;

/// (array, element) pairs from the leaf's element up to the event (event-ruler's `ArrayMembership`).
fn membership(event: &FlatEvent<'_>, element: u32) -> Vec<(u32, u32)> {
    let mut chain = Vec::new();
    let mut current = element;
    while let Some((array, holder)) = event.parent(current) {
        chain.push((array, current));
        current = holder;
    }
    chain
}

fn merge(constraints: &[(u32, u32)], membership: &[(u32, u32)]) -> Option<Vec<(u32, u32)>> {
    let mut merged = constraints.to_vec();
    for &(array, element) in membership {
        match constraints.iter().find(|(a, _)| *a == array) {
            Some(&(_, e)) if e != element => return None,
            Some(_) => {}
            None => merged.push((array, element)),
        }
    }
    Some(merged)
}

/// The search event-ruler's `StructuredFinder` describes, over every combination of values.
fn reference(fields: &[Field], branch: &Branch, event: &FlatEvent<'_>, i: usize, constraints: &[(u32, u32)]) -> bool {
    let Some(&f) = branch.fields.get(i) else { return true };
    let field = &fields[f];
    let leaves = event.leaves.get(&field.path).map(Vec::as_slice).unwrap_or_default();
    field.matchers.iter().any(|matcher| match matcher {
        Matcher::Absent => {
            leaves.iter().all(|l| merge(constraints, &membership(event, l.element)).is_none())
                && reference(fields, branch, event, i + 1, constraints)
        }
        Matcher::Value(m) => leaves.iter().any(|l| {
            m.matches(l.value)
                && merge(constraints, &membership(event, l.element)).is_some_and(|merged| reference(fields, branch, event, i + 1, &merged))
        }),
    })
}

fn reference_matches(pattern: &Pattern, event: &Value) -> bool {
    let flat = FlatEvent::new(event, &pattern.steps).unwrap_or_else(|| panic!("not an object"));
    pattern.branches.iter().any(|b| reference(&pattern.fields, b, &flat, 0, &[]))
}

/// xorshift64*: deterministic cases without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const PATHS: [&str; 9] = ["a", "a.b", "a.c", "a.b.c", "a-b", "a-b.x", "b", "b.x", "c"];
const KEYS: [&str; 7] = ["a", "b", "c", "x", "a-b", "a.b", "b.x"];

fn random_values(rng: &mut Rng) -> Value {
    let value =
        |rng: &mut Rng| rng.pick(&[json!("1"), json!("2"), json!(1), json!({"exists": true}), json!({"anything-but": "1"})]).clone();
    match rng.below(6) {
        0 => json!([{"exists": false}]),
        1 => json!([value(rng), {"exists": false}]),
        2 => json!([value(rng), value(rng)]),
        _ => json!([value(rng)]),
    }
}

fn random_pattern(rng: &mut Rng) -> Value {
    let mut pattern = serde_json::Map::new();
    for _ in 0..=rng.below(4) {
        let path = *rng.pick(&PATHS);
        pattern.insert(path.to_owned(), random_values(rng));
    }
    Value::Object(pattern)
}

fn random_leaf(rng: &mut Rng) -> Value {
    rng.pick(&[json!("1"), json!("2"), json!(1), json!(null)]).clone()
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match if depth == 0 { 0 } else { rng.below(5) } {
        0 | 1 => random_leaf(rng),
        2 => random_object(rng, depth - 1),
        _ => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth - 1)).collect()),
    }
}

fn random_object(rng: &mut Rng, depth: usize) -> Value {
    let mut map = serde_json::Map::new();
    for _ in 0..=rng.below(3) {
        map.insert((*rng.pick(&KEYS)).to_owned(), random_value(rng, depth));
    }
    Value::Object(map)
}

#[test]
fn when_random_patterns_meet_random_events_should_answer_like_the_sequential_search() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut compared, mut matched) = (0, 0);
    while compared < 30_000 {
        let Ok(pattern) = Pattern::parse(&random_pattern(&mut rng)) else { continue };
        for _ in 0..5 {
            let event = random_object(&mut rng, 4);
            let expected = reference_matches(&pattern, &event);
            assert_eq!(pattern.matches(&event), Ok(expected), "pattern {pattern:?}\nevent {event}");
            compared += 1;
            matched += usize::from(expected);
        }
    }
    // Both answers occur often enough for the comparison to mean something.
    assert!(matched > compared / 10 && matched < compared * 9 / 10, "{matched} of {compared} matched");
}

/// Work for the pattern on the event built with `n` (it must not match, so nothing stops early).
fn work(pattern: &Value, event: impl Fn(usize) -> Value, n: usize) -> u64 {
    let pattern = Pattern::parse(pattern).unwrap_or_else(|e| panic!("{e}"));
    let (matched, work) = pattern.work(&event(n));
    assert!(!matched);
    work
}

fn items(n: usize, item: &Value) -> Value {
    Value::Array(vec![item.clone(); n])
}

/// Builds the event of a case for a size.
type EventOfSize = Box<dyn Fn(usize) -> Value>;

/// `n` elements, alternately `a` and `b`.
fn alternate(n: usize, a: &Value, b: &Value) -> Value {
    Value::Array((0..n).map(|i| if i % 2 == 0 { a.clone() } else { b.clone() }).collect())
}

#[test]
fn when_events_grow_should_cost_linear_work() {
    let (one, two) = (json!({"x": "1", "y": "1"}), json!({"x": "2", "y": "2"}));
    let cases: Vec<(Value, EventOfSize)> = vec![
        // Two fields of one array, each matching in every other element, never in the same one.
        (
            json!({"detail": {"items": {"qty": [1], "sku": ["B"]}}}),
            Box::new(|n| json!({"detail": {"items": alternate(n, &json!({"qty": 1, "sku": "A"}), &json!({"qty": 2, "sku": "B"}))}})),
        ),
        // Sibling arrays are independent.
        (
            json!({"a": {"x": ["1"]}, "b": {"x": ["1"], "y": ["2"]}}),
            Box::new(move |n| json!({"a": items(n, &json!({"x": "1"})), "b": alternate(n, &one, &two)})),
        ),
        (
            json!({"a": {"x": ["1"]}, "b": {"x": ["1"]}, "c": {"x": ["1"]}, "d": {"x": ["1"]}, "e": {"x": ["1"], "y": ["2"]}}),
            Box::new(|n| {
                let column = items(n, &json!({"x": "1"}));
                let last = alternate(n, &json!({"x": "1", "y": "1"}), &json!({"x": "2", "y": "2"}));
                json!({"a": column, "b": column, "c": column, "d": column, "e": last})
            }),
        ),
        // `exists: false` inside one array, after and before the value field.
        (
            json!({"detail": {"items": {"sku": ["A"], "tag": [{"exists": false}]}}}),
            Box::new(|n| json!({"detail": {"items": items(n, &json!({"sku": "A", "tag": 1}))}})),
        ),
        (json!({"items": {"a": [{"exists": false}], "b": ["1"]}}), Box::new(|n| json!({"items": items(n, &json!({"a": 1, "b": "1"}))}))),
        // Independent arrays interleaved in sorted order (`o.a`, `o.a-b.*`, `o.a.c`) in one element.
        (
            json!({"o": {"a": ["1"], "a-b": {"x": ["1"], "y": ["2"]}, "a.c": ["2"]}}),
            Box::new(|n| {
                let pairs = alternate(n, &json!({"x": "1", "y": "1"}), &json!({"x": "2", "y": "2"}));
                json!({"o": [{"a": items(n, &json!(["1"])), "a-b": pairs, "a.c": "2"}]})
            }),
        ),
        // A field listing both a value and `exists: false`.
        (
            json!({"items": {"a": ["1", {"exists": false}], "b": ["2"]}}),
            Box::new(|n| json!({"items": alternate(n, &json!({"a": "1", "b": "1"}), &json!({"a": "2", "b": "2"}))})),
        ),
        // Arrays of arrays.
        (
            json!({"m": {"x": ["1"], "y": ["2"]}}),
            Box::new(|n| json!({"m": items(n / 4, &alternate(4, &json!({"x": "1", "y": "1"}), &json!({"x": "2", "y": "2"})))})),
        ),
    ];
    for (i, (pattern, event)) in cases.iter().enumerate() {
        let (small, large) = (work(pattern, event, 1000), work(pattern, event, 2000));
        assert!(large <= small * 21 / 10 + 100, "case {i}: work {small} at n = 1000, {large} at n = 2000");
        assert!(small <= 60 * 1000, "case {i}: work {small} at n = 1000");
    }
}

#[test]
fn when_a_pattern_multiplies_choices_beyond_the_budget_should_refuse_the_event() {
    // 21 fields each listing a value and `exists: false`, all inside one array.
    let fields: serde_json::Map<String, Value> = (0..21).map(|i| (format!("f{i:02}"), json!(["x", {"exists": false}]))).collect();
    let pattern = Pattern::parse(&json!({"items": fields})).unwrap_or_else(|e| panic!("{e}"));
    let element: serde_json::Map<String, Value> = (0..21).map(|i| (format!("f{i:02}"), json!("x"))).collect();
    let event = json!({"items": [element.clone(), element]});
    let flat = FlatEvent::new(&event, &pattern.steps).unwrap_or_else(|| panic!("object"));
    assert_eq!(evaluate(&pattern.fields, &pattern.branches, &flat), Err(TooComplex));
    assert!(pattern.matches(&event).is_err());
    // The same event is fine for a plain pattern.
    let plain = Pattern::parse(&json!({"items": {"f00": ["x"], "f01": ["x"]}})).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plain.matches(&event), Ok(true));
}
