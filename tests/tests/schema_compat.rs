//! Event contracts change only compatibly within a version. `events/schemas.lock.json`
//! holds, per schema file, every field's path, types, whether it is required, and its
//! constraints (enum, const, pattern, format, closed objects). A schema that differs from
//! its lock fails this test:
//! - incompatibly (a field removed, newly required, its type, enum, pattern or format
//!   changed, an object closed) — publish a new version (`<DetailType>.v2.json`) instead;
//! - compatibly (an optional field added, a description changed, a value added to an enum
//!   declared open with `"x-open-enum": true`) — accept it by
//!   regenerating the lock: `O2C_UPDATE_SCHEMA_LOCK=1 cargo test -p o2c-tests --test schema_compat`.
//!
//! A new schema file is added to the lock the same way; a schema file removed is refused
//! (a version, once published, stays).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use o2c_tests::repo_root;
use serde_json::{Value, json};

/// Path → what a consumer relies on.
type Summary = BTreeMap<String, Value>;

fn summarize(schema: &Value) -> Summary {
    let mut out = Summary::new();
    walk(schema, "$", true, &mut out);
    out
}

fn walk(s: &Value, path: &str, required: bool, out: &mut Summary) {
    let mut facts = serde_json::Map::new();
    facts.insert("required".into(), json!(required));
    for k in ["type", "enum", "const", "pattern", "format", "minimum", "maximum", "minLength", "maxLength"] {
        if let Some(v) = s.get(k) {
            facts.insert(k.into(), v.clone());
        }
    }
    if s.get("additionalProperties") == Some(&json!(false)) {
        facts.insert("closed".into(), json!(true));
    }
    if s.get("x-open-enum") == Some(&json!(true)) {
        facts.insert("open_enum".into(), json!(true));
    }
    out.insert(path.to_owned(), Value::Object(facts));
    let req: Vec<&str> = s.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    for (name, sub) in s.get("properties").and_then(Value::as_object).into_iter().flatten() {
        walk(sub, &format!("{path}.{name}"), req.contains(&name.as_str()), out);
    }
    if let Some(items) = s.get("items") {
        walk(items, &format!("{path}[]"), true, out);
    }
    for k in ["oneOf", "anyOf", "allOf"] {
        for (i, sub) in s.get(k).and_then(Value::as_array).into_iter().flatten().enumerate() {
            walk(sub, &format!("{path}<{k}{i}>"), required, out);
        }
    }
}

/// An enum declared open (`"x-open-enum": true`: consumers must take a value they do not
/// know, e.g. an exception kind added later) that only gained values, and stays open.
fn widened_open_enum(was: &Value, now: &Value) -> bool {
    let open = |f: &Value| f.get("open_enum") == Some(&json!(true));
    let (Some(before), Some(after)) = (was.get("enum").and_then(Value::as_array), now.get("enum").and_then(Value::as_array)) else {
        return false;
    };
    open(was) && open(now) && before.iter().all(|v| after.contains(v))
}

/// Every incompatible difference of `after` from `before`, and whether anything changed.
fn compare(before: &Summary, after: &Summary) -> (Vec<String>, bool) {
    let mut breaking = Vec::new();
    for (path, was) in before {
        let Some(now) = after.get(path) else {
            breaking.push(format!("{path} removed"));
            continue;
        };
        if now["required"] == true && was["required"] == false {
            breaking.push(format!("{path} became required"));
        }
        for k in ["type", "enum", "const", "pattern", "format", "minimum", "maximum", "minLength", "maxLength"] {
            if k == "enum" && widened_open_enum(was, now) {
                continue;
            }
            if was.get(k) != now.get(k) {
                breaking.push(format!("{path}: {k} {} → {}", was.get(k).unwrap_or(&Value::Null), now.get(k).unwrap_or(&Value::Null)));
            }
        }
        if now.get("closed").is_some() && was.get("closed").is_none() {
            breaking.push(format!("{path} closed to other fields"));
        }
    }
    for (path, now) in after {
        if !before.contains_key(path) && now["required"] == true {
            // A new required field inside a new optional object is fine; directly under an
            // existing object it breaks every producer of the old version.
            let parent = path.rsplit_once(['.', '[']).map(|(p, _)| p).unwrap_or("$");
            if before.contains_key(parent) {
                breaking.push(format!("{path} added as required"));
            }
        }
    }
    (breaking, before != after)
}

fn lock_path() -> std::path::PathBuf {
    repo_root().join("events/schemas.lock.json")
}

fn current() -> BTreeMap<String, Summary> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(repo_root().join("events/schemas")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            let schema: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            out.insert(name, summarize(&schema));
        }
    }
    out
}

#[test]
fn when_a_schema_differs_from_its_lock_should_refuse_incompatible_changes_within_a_version() {
    let now = current();
    if std::env::var_os("O2C_UPDATE_SCHEMA_LOCK").is_some() {
        let locked: BTreeMap<String, Summary> =
            std::fs::read_to_string(lock_path()).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        for (name, before) in &locked {
            let after = now.get(name).unwrap_or_else(|| panic!("{name} was removed: a published version stays"));
            let (breaking, _) = compare(before, after);
            assert!(breaking.is_empty(), "{name} changed incompatibly, not locked: {breaking:#?}");
        }
        std::fs::write(lock_path(), serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
        return;
    }
    let locked: BTreeMap<String, Summary> = serde_json::from_str(&std::fs::read_to_string(lock_path()).unwrap()).unwrap();
    let mut problems = Vec::new();
    for (name, before) in &locked {
        let Some(after) = now.get(name) else {
            problems.push(format!("{name} was removed: a published version stays"));
            continue;
        };
        let (breaking, changed) = compare(before, after);
        if !breaking.is_empty() {
            problems.push(format!("{name} changed incompatibly — publish a new version instead:\n  {}", breaking.join("\n  ")));
        } else if changed {
            problems.push(format!(
                "{name} changed compatibly: accept it with O2C_UPDATE_SCHEMA_LOCK=1 cargo test -p o2c-tests --test schema_compat"
            ));
        }
    }
    for name in now.keys().filter(|n| !locked.contains_key(*n)) {
        problems.push(format!("{name} is new: lock it with O2C_UPDATE_SCHEMA_LOCK=1 cargo test -p o2c-tests --test schema_compat"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn when_schemas_change_should_tell_compatible_from_incompatible() {
    let base = json!({"type": "object", "additionalProperties": false, "required": ["a"], "properties": {
        "a": {"type": "string"}, "b": {"type": "integer"}, "c": {"enum": ["x", "y"]}}});
    let before = summarize(&base);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut s = base.clone();
        f(&mut s);
        compare(&before, &summarize(&s))
    };
    // Compatible: an optional field, a description.
    let (breaking, changed) = with(&|s| s["properties"]["d"] = json!({"type": "string"}));
    assert!(breaking.is_empty() && changed);
    let (breaking, changed) = with(&|s| s["properties"]["a"]["description"] = json!("the a"));
    assert!(breaking.is_empty() && !changed, "a description is not a contract");
    // Incompatible, each named.
    let mut removed = base.clone();
    removed["properties"].as_object_mut().unwrap().remove("b");
    let mut now_required = base.clone();
    now_required["required"] = json!(["a", "b"]);
    let mut retyped = base.clone();
    retyped["properties"]["b"]["type"] = json!("string");
    let mut narrowed = base.clone();
    narrowed["properties"]["c"]["enum"] = json!(["x"]);
    let mut new_required = base.clone();
    new_required["properties"]["e"] = json!({"type": "string"});
    new_required["required"] = json!(["a", "e"]);
    for (s, want) in [
        (removed, "$.b removed"),
        (now_required, "$.b became required"),
        (retyped, "$.b: type"),
        (narrowed, "$.c: enum"),
        (new_required, "$.e added as required"),
    ] {
        let (breaking, _) = compare(&before, &summarize(&s));
        assert!(breaking.iter().any(|b| b.starts_with(want)), "{want}: {breaking:?}");
    }
    // An open enum may gain values, never lose them; a closed one may do neither.
    let mut open_enum = base.clone();
    open_enum["properties"]["c"]["x-open-enum"] = json!(true);
    let mut widened = open_enum.clone();
    widened["properties"]["c"]["enum"] = json!(["x", "y", "z"]);
    let (breaking, changed) = compare(&summarize(&open_enum), &summarize(&widened));
    assert!(breaking.is_empty() && changed, "{breaking:?}");
    let mut narrowed_open = open_enum.clone();
    narrowed_open["properties"]["c"]["enum"] = json!(["x"]);
    assert!(compare(&summarize(&open_enum), &summarize(&narrowed_open)).0.iter().any(|b| b.starts_with("$.c: enum")));
    let mut widened_closed = base.clone();
    widened_closed["properties"]["c"]["enum"] = json!(["x", "y", "z"]);
    assert!(compare(&before, &summarize(&widened_closed)).0.iter().any(|b| b.starts_with("$.c: enum")), "not declared open");
    let open = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let closed = json!({"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}});
    assert!(compare(&summarize(&open), &summarize(&closed)).0.iter().any(|b| b.contains("closed")));
}
