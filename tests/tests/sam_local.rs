//! `sam local invoke` reads `infra/env.local.json`, but SAM overrides only the variables
//! the template declares (Globals or the function's own) and always sets the reserved
//! `AWS_REGION` and credentials itself: every variable in the file must be declared, every
//! section must name a function, and no reserved variable may be in it (it would be
//! silently ignored).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use o2c_tests::read_json;
use serde_yaml_ng::Value;

/// Variables Lambda reserves (the runtime or SAM CLI sets them; a template cannot).
const RESERVED: [&str; 8] = [
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_FUNCTION_NAME",
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
];

fn template() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn keys(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_mapping).map(|m| m.keys().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default()
}

#[test]
fn when_sam_local_reads_the_env_file_should_find_every_variable_declared() {
    let t = template();
    let globals = keys(t["Globals"]["Function"]["Environment"].get("Variables"));
    let resources = t["Resources"].as_mapping().unwrap();
    let functions: Vec<&str> =
        resources.iter().filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function")).filter_map(|(k, _)| k.as_str()).collect();
    let env = read_json("infra/env.local.json");
    let env = env.as_object().unwrap();
    assert!(globals.contains("AWS_ENDPOINT_URL"), "the template must declare AWS_ENDPOINT_URL for sam local");
    for (section, vars) in env {
        let declared: BTreeSet<String> = if section == "Parameters" {
            globals.clone()
        } else {
            assert!(functions.contains(&section.as_str()), "env.local.json section {section} is not a function of the template");
            let own = keys(resources[&Value::from(section.as_str())]["Properties"]["Environment"].get("Variables"));
            globals.union(&own).cloned().collect()
        };
        for name in vars.as_object().unwrap().keys() {
            assert!(!RESERVED.contains(&name.as_str()), "{section}.{name} is reserved: SAM sets it from --region / the credentials");
            assert!(declared.contains(name), "{section}.{name} is not declared for that function: sam local would ignore it");
        }
    }
    for f in &functions {
        assert!(env.contains_key(*f), "env.local.json has no section for {f}");
    }
}

#[test]
fn when_cargo_lambda_watch_reads_its_env_file_should_set_the_same_variables_as_sam_local() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/env.cargo-lambda")).unwrap();
    let watch: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {l}")).0.to_owned())
        .collect();
    let sam: BTreeSet<String> = read_json("infra/env.local.json")["Parameters"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(watch, sam);
    assert!(
        text.lines().filter(|l| !l.starts_with('#')).all(|l| !l.contains("host.docker.internal")),
        "cargo lambda runs the functions on this machine"
    );
}
