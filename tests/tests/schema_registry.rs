//! The EventBridge Schema Registry in `infra/template.yaml`: every event contract, each
//! version, registered as the EventBridge event a rule delivers, in JSON Schema draft 4 —
//! one of the two forms the registry takes (the other is OpenAPI 3) — so consumers find the
//! contracts in the console and generate code bindings from them.
//!
//! The block between the `BEGIN/END GENERATED SCHEMA REGISTRY` markers is generated from
//! `events/schemas` (JSON Schema 2020-12) by this file and must match it; regenerate with
//! `O2C_UPDATE_SCHEMA_REGISTRY=1 cargo test -p o2c-tests --test schema_registry`.
//!
//! From 2020-12 to draft 4: `const` becomes a one-value `enum`; numeric `exclusiveMinimum` /
//! `exclusiveMaximum` become `minimum` / `maximum` with the boolean form; `$defs` becomes
//! `definitions` (and `$ref`s follow); `$id` becomes `id`; `examples` and empty `required`
//! lists (draft 4 wants at least one name) are dropped. A keyword draft 4 cannot express
//! (`if`, `prefixItems`, `unevaluatedProperties`, …) fails generation rather than being
//! silently weakened. The tests then prove the draft 4 form accepts every sample and refuses
//! what the 2020-12 form refuses.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use o2c_domain::events::EventType;
use o2c_tests::{read_json, repo_root};
use serde_json::{Map, Value, json};

const BEGIN: &str = "  # BEGIN GENERATED SCHEMA REGISTRY";
const END: &str = "  # END GENERATED SCHEMA REGISTRY";

/// Keywords of 2019-09 / 2020-12 that draft 4 has no way to say.
const INEXPRESSIBLE: &[&str] = &[
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "prefixItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "minContains",
    "maxContains",
    "propertyNames",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$recursiveRef",
];

/// A 2020-12 (sub)schema in draft 4.
fn to_draft4(s: &Value, at: &str) -> Result<Value, String> {
    let Some(obj) = s.as_object() else { return Ok(s.clone()) };
    let mut out = Map::new();
    for (k, v) in obj {
        let here = format!("{at}/{k}");
        match k.as_str() {
            k if INEXPRESSIBLE.contains(&k) => return Err(format!("{here}: draft 4 cannot express `{k}`")),
            "$schema" | "$id" | "examples" => {}
            "const" => {
                out.insert("enum".into(), json!([v]));
            }
            "exclusiveMinimum" | "exclusiveMaximum" if v.is_number() => {
                let bound = if k == "exclusiveMinimum" { "minimum" } else { "maximum" };
                out.insert(bound.into(), v.clone());
                out.insert(k.into(), json!(true));
            }
            "required" if v.as_array().is_some_and(Vec::is_empty) => {}
            "$ref" => {
                let r = v.as_str().ok_or_else(|| format!("{here}: not a string"))?;
                out.insert("$ref".into(), json!(r.replace("#/$defs/", "#/definitions/")));
            }
            "properties" | "$defs" | "definitions" | "patternProperties" => {
                let mut m = Map::new();
                for (name, sub) in v.as_object().ok_or_else(|| format!("{here}: not an object"))? {
                    m.insert(name.clone(), to_draft4(sub, &format!("{here}/{name}"))?);
                }
                out.insert(if k == "$defs" { "definitions".into() } else { k.into() }, Value::Object(m));
            }
            "items" | "additionalProperties" | "not" if v.is_object() => {
                out.insert(k.into(), to_draft4(v, &here)?);
            }
            "oneOf" | "anyOf" | "allOf" | "items" => {
                let subs = v.as_array().ok_or_else(|| format!("{here}: not an array"))?;
                out.insert(
                    k.into(),
                    Value::Array(subs.iter().enumerate().map(|(i, x)| to_draft4(x, &format!("{here}/{i}"))).collect::<Result<_, _>>()?),
                );
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(Value::Object(out))
}

/// The registry's schema of one version: the whole EventBridge event, its `detail` the
/// contract.
fn registry_schema(t: EventType, version: &str) -> Value {
    let detail = read_json(&format!("events/schemas/{}.v{version}.json", t.detail_type()));
    let converted = to_draft4(&detail, "").unwrap_or_else(|e| panic!("{} v{version}: {e}", t.detail_type()));
    json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "id": format!("https://o2c.dev/schemas/registry/{}.v{version}.json", t.detail_type()),
        "title": format!("{} v{version} (EventBridge event)", t.detail_type()),
        "description": format!("The EventBridge event a rule delivers for `{}` from `{}`; `detail` is the contract (events/schemas/{}.v{version}.json).", t.detail_type(), t.source(), t.detail_type()),
        "type": "object",
        "required": ["detail-type", "source", "detail"],
        "properties": {
            "version": {"type": "string"},
            "id": {"type": "string"},
            "detail-type": {"enum": [t.detail_type()]},
            "source": {"enum": [t.source()]},
            "account": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "region": {"type": "string"},
            "resources": {"type": "array", "items": {"type": "string"}},
            "detail": converted,
        }
    })
}

fn versions() -> Vec<(EventType, &'static str)> {
    EventType::ALL.iter().flat_map(|t| t.versions().iter().map(move |v| (*t, *v))).collect()
}

/// The logical id of a version's schema resource (`SchemaOpportunityClosedWonV2`).
fn logical_id(t: EventType, version: &str) -> String {
    format!("Schema{}V{version}", t.detail_type())
}

/// The generated block of the template, markers included.
fn generated() -> String {
    let mut out = String::new();
    out.push_str(BEGIN);
    out.push_str(" (tests/tests/schema_registry.rs; do not edit)\n");
    out.push_str("  EventSchemaRegistry:\n    Type: AWS::EventSchemas::Registry\n    Properties:\n");
    out.push_str("      RegistryName: !Sub o2c-${Stage}\n");
    out.push_str(
        "      Description: o2c's event contracts, every version, as the EventBridge events rules deliver (JSON Schema draft 4).\n",
    );
    for (t, v) in versions() {
        // A JSON string is a YAML double-quoted scalar with the same escapes; compact JSON keeps
        // each schema on one line (a template sent through S3 may be 1 MB; all of these are
        // well under 150 KB together).
        let content = serde_json::to_string(&registry_schema(t, v)).unwrap();
        out.push_str(&format!(
            "  {}:\n    Type: AWS::EventSchemas::Schema\n    Properties:\n      RegistryName: !GetAtt EventSchemaRegistry.RegistryName\n      SchemaName: {}@{}.v{v}\n      Type: JSONSchemaDraft4\n      Description: {} v{v}\n      Content: {}\n",
            logical_id(t, v),
            t.source(),
            t.detail_type(),
            t.detail_type(),
            serde_json::to_string(&content).unwrap(),
        ));
    }
    out.push_str(END);
    out.push('\n');
    out
}

fn template_path() -> std::path::PathBuf {
    repo_root().join("infra/template.yaml")
}

/// The template's block between the markers (markers included), and where it is.
fn block(template: &str) -> (usize, usize) {
    let start = template.find(BEGIN).expect("the template has the generated schema registry block");
    let end = template[start..].find(END).map(|i| start + i).expect("the block is closed");
    let end = end + template[end..].find('\n').map_or(template.len() - end, |i| i + 1);
    (start, end)
}

#[test]
fn when_the_template_is_read_should_register_every_contract_version_as_generated() {
    let template = std::fs::read_to_string(template_path()).unwrap();
    let (start, end) = block(&template);
    let want = generated();
    if std::env::var_os("O2C_UPDATE_SCHEMA_REGISTRY").is_some() {
        std::fs::write(template_path(), format!("{}{want}{}", &template[..start], &template[end..])).unwrap();
        return;
    }
    assert!(
        template[start..end] == want,
        "infra/template.yaml's schema registry is stale: O2C_UPDATE_SCHEMA_REGISTRY=1 cargo test -p o2c-tests --test schema_registry"
    );
}

#[test]
fn when_the_template_is_parsed_should_carry_each_schema_exactly_under_a_name_the_registry_accepts() {
    let template: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(template_path()).unwrap()).unwrap();
    let resources = template["Resources"].as_mapping().unwrap();
    let registered: Vec<&str> = resources
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::EventSchemas::Schema"))
        .map(|(k, _)| k.as_str().unwrap())
        .collect();
    assert_eq!(registered.len(), versions().len(), "one schema per contract version");
    for (t, v) in versions() {
        let props = &resources[logical_id(t, v).as_str()]["Properties"];
        let content: Value = serde_json::from_str(props["Content"].as_str().unwrap()).unwrap();
        assert_eq!(content, registry_schema(t, v), "{} v{v} read back from the YAML", t.detail_type());
        let name = props["SchemaName"].as_str().unwrap();
        // The registry's name rule: [a-zA-Z0-9-_.@]+, at most 385 characters.
        assert!(name.len() <= 385 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)), "{name}");
        assert_eq!(props["Type"].as_str(), Some("JSONSchemaDraft4"));
    }
}

#[test]
fn when_the_draft4_form_is_checked_should_be_a_valid_draft4_schema_accepting_every_sample() {
    for (t, v) in versions() {
        let schema = registry_schema(t, v);
        if let Err(e) = jsonschema::draft4::meta::validate(&schema) {
            panic!("{} v{v} is not draft 4: {e}", t.detail_type());
        }
        let draft4 = jsonschema::draft4::options().should_validate_formats(true).build(&schema).unwrap();
        let path = format!("events/{}/{}.v{v}.json", if t.in_story() { "samples" } else { "catalog" }, t.detail_type());
        let sample = read_json(&path);
        let errs: Vec<String> = draft4.iter_errors(&sample).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errs.is_empty(), "{path}: {errs:?}");
    }
}

/// A named change to a detail.
type Mutation = (&'static str, Box<dyn Fn(&mut Value)>);

#[test]
fn when_a_detail_breaks_its_contract_should_be_refused_by_the_draft4_form_as_by_the_original() {
    let mut compared = 0;
    for (t, v) in versions() {
        let original = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&read_json(&format!("events/schemas/{}.v{v}.json", t.detail_type())))
            .unwrap();
        let draft4 = jsonschema::draft4::options().should_validate_formats(true).build(&registry_schema(t, v)).unwrap();
        let path = format!("events/{}/{}.v{v}.json", if t.in_story() { "samples" } else { "catalog" }, t.detail_type());
        let sample = read_json(&path);
        let mutations: Vec<Mutation> = vec![
            ("no correlation id", Box::new(|d| drop(d.as_object_mut().unwrap().remove("correlation_id")))),
            ("another version", Box::new(|d| d["event_version"] = json!("7"))),
            ("an unknown envelope field", Box::new(|d| d["surprise"] = json!(true))),
            ("an unknown payload field", Box::new(|d| d["payload"]["surprise"] = json!(true))),
            ("a payload that is a list", Box::new(|d| d["payload"] = json!([]))),
            ("an empty event id", Box::new(|d| d["event_id"] = json!(""))),
            ("a bad timestamp", Box::new(|d| d["occurred_at"] = json!("yesterday"))),
        ];
        for (what, mutate) in &mutations {
            let mut detail = sample["detail"].clone();
            mutate(&mut detail);
            let mut event = sample.clone();
            event["detail"] = detail.clone();
            assert!(!original.is_valid(&detail), "{path}: the original accepts {what}");
            assert!(!draft4.is_valid(&event), "{path}: the draft 4 form accepts {what}");
            compared += 1;
        }
        let mut wrong_source = sample.clone();
        wrong_source["source"] = json!("o2c.forged");
        assert!(!draft4.is_valid(&wrong_source), "{path}: another source");
    }
    assert!(compared >= 7 * 29);
}

#[test]
fn when_a_schema_uses_what_draft4_cannot_say_should_refuse_to_generate() {
    let s = json!({"type": "object", "properties": {"a": {"if": {"const": 1}, "then": {"minimum": 0}}}});
    assert_eq!(to_draft4(&s, "").unwrap_err(), "/properties/a/if: draft 4 cannot express `if`");
    let s =
        json!({"$defs": {"m": {"const": "x", "exclusiveMinimum": 0, "examples": ["x"]}}, "items": {"$ref": "#/$defs/m"}, "required": []});
    assert_eq!(
        to_draft4(&s, "").unwrap(),
        json!({"definitions": {"m": {"enum": ["x"], "minimum": 0, "exclusiveMinimum": true}}, "items": {"$ref": "#/definitions/m"}})
    );
}
