//! The event bus's resource policy (`infra/template.yaml`, the `AWS::Events::EventBusPolicy`
//! resources), evaluated as EventBridge would for a `PutEvents` entry — an explicit Deny
//! wins; a principal of another account needs an Allow; one of this account also has its
//! role's own grant. moto does not enforce bus policies, so the template's statements are
//! interpreted here (their intrinsic functions resolved for given parameters) and checked:
//! - o2c's own sources only from o2c's functions (and operators' roles when a pattern is
//!   given): a CRM cannot speak as `o2c.intake`;
//! - a source system's principals, once given, may publish only their source and its
//!   detail-types, and nobody else may publish that source (but the exception workflow,
//!   which re-drives failed events);
//! - every source the rules route is classified, and each grant's detail-types are the
//!   event catalogue's for that source.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use o2c_domain::events::EventType;
use serde_yaml_ng::Value;

const ACCOUNT: &str = "111122223333";

fn template() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn role_arn(logical: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{logical}")
}

/// The template with parameter values, for resolving intrinsics.
struct Stack {
    t: Value,
    params: BTreeMap<String, Vec<String>>,
}

/// A resolved value: absent (`AWS::NoValue`), a string, or a list.
#[derive(Debug, Clone, PartialEq)]
enum R {
    None,
    S(String),
    L(Vec<String>),
}

impl R {
    fn list(self) -> Vec<String> {
        match self {
            R::None => vec![],
            R::S(s) => vec![s],
            R::L(l) => l,
        }
    }
    fn text(self) -> String {
        match self {
            R::S(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }
}

impl Stack {
    fn new(params: &[(&str, &[&str])]) -> Self {
        let t = template();
        let mut p = BTreeMap::new();
        for (name, decl) in t["Parameters"].as_mapping().unwrap() {
            let default = decl.get("Default").map(|d| match d {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
            });
            let list = decl["Type"].as_str() == Some("CommaDelimitedList");
            let v = default.map(|d| if list { d.split(',').map(str::to_owned).collect() } else { vec![d] }).unwrap_or_default();
            p.insert(name.as_str().unwrap().to_owned(), v);
        }
        for (k, v) in params {
            assert!(p.contains_key(*k), "no parameter {k}");
            p.insert((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect());
        }
        Self { t, params: p }
    }

    fn condition(&self, name: &str) -> bool {
        let c = self.t["Conditions"][name].clone();
        self.truth(&c)
    }

    fn truth(&self, v: &Value) -> bool {
        let Value::Tagged(t) = v else { panic!("condition {v:?}") };
        match t.tag.to_string().as_str() {
            "!Not" => !self.truth(&t.value[0]),
            "!Equals" => self.eval(&t.value[0]) == self.eval(&t.value[1]),
            "!Condition" => self.condition(t.value.as_str().unwrap()),
            other => panic!("condition function {other}"),
        }
    }

    fn eval(&self, v: &Value) -> R {
        match v {
            Value::String(s) => R::S(s.clone()),
            Value::Sequence(items) => R::L(items.iter().flat_map(|i| self.eval(i).list()).collect()),
            Value::Tagged(t) => {
                let a = &t.value;
                match t.tag.to_string().as_str() {
                    "!Ref" => match a.as_str().unwrap() {
                        "AWS::NoValue" => R::None,
                        "EventBus" => R::S("o2c-test".into()),
                        name => {
                            let decl = &self.t["Parameters"][name];
                            let v = self.params.get(name).unwrap_or_else(|| panic!("unknown Ref {name}")).clone();
                            if decl["Type"].as_str() == Some("CommaDelimitedList") { R::L(v) } else { R::S(v.concat()) }
                        }
                    },
                    "!GetAtt" => {
                        let (res, att) = a.as_str().unwrap().split_once('.').unwrap();
                        match (self.t["Resources"][res]["Type"].as_str().unwrap(), att) {
                            ("AWS::IAM::Role", "Arn") => R::S(role_arn(res)),
                            ("AWS::Events::EventBus", "Arn") => R::S(format!("arn:aws:events:eu-west-1:{ACCOUNT}:event-bus/o2c-test")),
                            other => panic!("GetAtt {other:?}"),
                        }
                    }
                    "!If" => {
                        if self.condition(a[0].as_str().unwrap()) {
                            self.eval(&a[1])
                        } else {
                            self.eval(&a[2])
                        }
                    }
                    "!Join" => R::S(self.eval(&a[1]).list().join(a[0].as_str().unwrap())),
                    "!Split" => R::L(self.eval(&a[1]).text().split(a[0].as_str().unwrap()).map(str::to_owned).collect()),
                    "!Sub" => R::S(a.as_str().unwrap().replace("${Stage}", "test")),
                    other => panic!("intrinsic {other}"),
                }
            }
            other => panic!("value {other:?}"),
        }
    }

    /// The bus policy's statements in force (their resources' conditions hold).
    fn statements(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (name, r) in self.t["Resources"].as_mapping().unwrap() {
            if r["Type"].as_str() != Some("AWS::Events::EventBusPolicy") {
                continue;
            }
            if let Some(c) = r.get("Condition").and_then(Value::as_str)
                && !self.condition(c)
            {
                continue;
            }
            out.push((name.as_str().unwrap().to_owned(), r["Properties"]["Statement"].clone()));
        }
        out
    }
}

/// `*` as a wildcard, as ArnLike does.
fn like(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let mut rest = value;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else { return false };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else { return false };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

/// Whether one statement applies to `principal` publishing `(source, detail_type)`.
fn applies(s: &Stack, st: &Value, principal: &str, source: &str, detail_type: &str) -> bool {
    assert_eq!(st["Action"].as_str(), Some("events:PutEvents"));
    let principal_ok = match &st["Principal"] {
        Value::String(star) if star == "*" => true,
        p => s.eval(&p["AWS"]).list().iter().any(|a| a == principal),
    };
    if !principal_ok {
        return false;
    }
    for (op, tests) in st.get("Condition").and_then(Value::as_mapping).into_iter().flatten() {
        for (key, want) in tests.as_mapping().unwrap() {
            let want = s.eval(want).list();
            let got = match key.as_str().unwrap() {
                "events:source" => source,
                "events:detail-type" => detail_type,
                "aws:PrincipalArn" => principal,
                other => panic!("condition key {other}"),
            };
            let ok = match op.as_str().unwrap() {
                "StringEquals" => want.iter().any(|w| w == got),
                "ArnNotLike" => !want.iter().any(|w| like(w, got)),
                other => panic!("condition operator {other}"),
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// EventBridge's answer: `Ok(())` or the statement that refuses. `identity_grant`: the
/// principal is of this account and its own policy allows `events:PutEvents` on the bus.
fn decide(s: &Stack, principal: &str, identity_grant: bool, source: &str, detail_type: &str) -> Result<(), String> {
    let statements = s.statements();
    if let Some((name, _)) =
        statements.iter().find(|(_, st)| st["Effect"].as_str() == Some("Deny") && applies(s, st, principal, source, detail_type))
    {
        return Err(format!("denied by {name}"));
    }
    let allowed = statements.iter().any(|(_, st)| st["Effect"].as_str() == Some("Allow") && applies(s, st, principal, source, detail_type));
    if allowed || identity_grant { Ok(()) } else { Err("no statement allows it".into()) }
}

/// The roles whose own policy allows `events:PutEvents` for any source (o2c's step
/// functions); the ingestion function's is limited to the source systems' sources.
fn publishing_roles(t: &Value) -> Vec<String> {
    t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::IAM::Role"))
        .filter(|(_, r)| {
            let policies = serde_yaml_ng::to_string(&r["Properties"]["Policies"]).unwrap();
            policies.contains("events:PutEvents") && !policies.contains("events:source")
        })
        .map(|(k, _)| k.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn when_the_ingestion_function_publishes_should_reach_only_the_source_systems_sources_even_when_they_are_bound() {
    let external = ["o2c.bank", "o2c.clm", "o2c.crm", "o2c.erp", "o2c.psa"];
    let bound = Stack::new(&[
        ("CrmPublisherPrincipals", &[CRM_BRIDGE]),
        ("ClmPublisherPrincipals", &["arn:aws:iam::999900001111:role/docusign-bridge"]),
        ("PsaPublisherPrincipals", &["arn:aws:iam::999900001111:role/certinia-bridge"]),
        ("BankPublisherPrincipals", &["arn:aws:iam::999900001111:role/bank-bridge"]),
        ("ErpPublisherPrincipals", &["arn:aws:iam::999900001111:role/netsuite-bridge"]),
    ]);
    // Its own policy: PutEvents on the bus for the source systems' sources, nothing else.
    let role = &bound.t["Resources"]["IngestRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
    let put = role.as_sequence().unwrap().iter().find(|st| st["Action"].as_str() == Some("events:PutEvents")).unwrap();
    let allowed: BTreeSet<String> = bound.eval(&put["Condition"]["StringEquals"]["events:source"]).list().into_iter().collect();
    assert_eq!(allowed, external.map(str::to_owned).into_iter().collect());
    assert!(!publishing_roles(&bound.t).contains(&"IngestRole".to_owned()));
    let catalogue = sources_of(EventType::ALL);
    let ingest = role_arn("IngestRole");
    for (source, types) in &catalogue {
        for dt in types {
            // The bus decides what the identity policy allowed; the identity policy allows
            // only the external sources.
            let identity = external.contains(source);
            let got = decide(&bound, &ingest, identity, source, dt);
            assert_eq!(got.is_ok(), identity, "{source}/{dt}: {got:?}");
        }
    }
    // Bound sources stay closed to everyone else of the account.
    assert!(decide(&bound, SAME_ACCOUNT_APP, true, "o2c.bank", "PaymentReceived").is_err());
}

fn sources_of(types: &[EventType]) -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut m: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in types {
        m.entry(t.source()).or_default().insert(t.detail_type());
    }
    m
}

const CRM_BRIDGE: &str = "arn:aws:iam::999900001111:role/salesforce-bridge";
const SAME_ACCOUNT_APP: &str = "arn:aws:iam::111122223333:role/some-integration";

#[test]
fn when_no_publisher_is_configured_should_keep_o2cs_own_sources_to_its_functions() {
    let s = Stack::new(&[]);
    let catalogue = sources_of(EventType::ALL);
    let roles = publishing_roles(&s.t);
    assert!(roles.len() >= 13, "{roles:?}");
    let internal =
        ["o2c.intake", "o2c.provisioning", "o2c.billing", "o2c.delivery", "o2c.invoicing", "o2c.cash", "o2c.revenue", "o2c.exceptions"];
    for source in internal {
        for dt in &catalogue[source] {
            // Any other principal of the account, even with PutEvents on the bus: refused.
            assert!(decide(&s, SAME_ACCOUNT_APP, true, source, dt).is_err(), "{source}/{dt} from another role");
            assert!(decide(&s, CRM_BRIDGE, false, source, dt).is_err());
            for r in &roles {
                assert_eq!(decide(&s, &role_arn(r), true, source, dt), Ok(()), "{r} publishing {source}/{dt}");
            }
        }
    }
    // No grant configured: a source system's source is the account's business, as before.
    assert_eq!(decide(&s, SAME_ACCOUNT_APP, true, "o2c.crm", "OpportunityClosedWon"), Ok(()));
    assert!(decide(&s, CRM_BRIDGE, false, "o2c.crm", "OpportunityClosedWon").is_err(), "another account needs a grant");
    // Operators re-publish internal events (redrive, invoice repost) only through their pattern.
    let operator = "arn:aws:iam::111122223333:role/o2c-operators-alice";
    assert!(decide(&s, operator, true, "o2c.invoicing", "InvoiceReleased").is_err());
    // Without operators' roles, approvals are the account's business (the README says so).
    assert_eq!(decide(&s, SAME_ACCOUNT_APP, true, "o2c.approvals", "InvoiceApproved"), Ok(()));
    let s = Stack::new(&[("OperatorPrincipalPattern", &["arn:aws:iam::111122223333:role/o2c-operators-*"])]);
    assert_eq!(decide(&s, operator, true, "o2c.invoicing", "InvoiceReleased"), Ok(()));
    assert!(decide(&s, SAME_ACCOUNT_APP, true, "o2c.invoicing", "InvoiceReleased").is_err());
    // With them, approvals, exception actions and run requests come only from operators.
    for (source, dt) in
        [("o2c.approvals", "InvoiceApproved"), ("o2c.operator", "ExceptionActionRequested"), ("o2c.scheduler", "InvoiceRunRequested")]
    {
        assert!(decide(&s, SAME_ACCOUNT_APP, true, source, dt).unwrap_err().contains("OperatorSourcesPolicy"), "{source}");
        assert!(decide(&s, CRM_BRIDGE, false, source, dt).is_err());
        assert_eq!(decide(&s, operator, true, source, dt), Ok(()), "{source}");
        assert_eq!(decide(&s, &role_arn("ExceptionWorkflowRole"), true, source, dt), Ok(()));
    }
}

#[test]
fn when_a_source_systems_principals_are_given_should_let_them_publish_only_their_own_events_and_nobody_else_impersonate_them() {
    let s = Stack::new(&[
        ("CrmPublisherPrincipals", &[CRM_BRIDGE]),
        ("BankPublisherPrincipals", &["arn:aws:iam::444455556666:role/bank-feed"]),
    ]);
    assert_eq!(decide(&s, CRM_BRIDGE, false, "o2c.crm", "OpportunityClosedWon"), Ok(()));
    // Not the CLM's approval, not a payment, not o2c's own sources, not a detail-type of its
    // source that the CRM does not produce.
    assert!(decide(&s, CRM_BRIDGE, false, "o2c.clm", "ContractApproved").is_err());
    assert!(decide(&s, CRM_BRIDGE, false, "o2c.bank", "PaymentReceived").is_err());
    assert!(decide(&s, CRM_BRIDGE, false, "o2c.intake", "ContractCreated").unwrap_err().contains("InternalSourcesPolicy"));
    assert!(decide(&s, CRM_BRIDGE, false, "o2c.crm", "PaymentReceived").is_err());
    // Nobody else speaks as the CRM or the bank, even with PutEvents on the bus.
    assert!(decide(&s, SAME_ACCOUNT_APP, true, "o2c.crm", "OpportunityClosedWon").unwrap_err().contains("CrmSourcePolicy"));
    assert!(decide(&s, CRM_BRIDGE, false, "o2c.bank", "PaymentReceived").unwrap_err().contains("BankSourcePolicy"));
    assert_eq!(decide(&s, "arn:aws:iam::444455556666:role/bank-feed", false, "o2c.bank", "PaymentReceived"), Ok(()));
    // The exception workflow re-drives a failed closed-won under its source.
    assert_eq!(decide(&s, &role_arn("ExceptionWorkflowRole"), true, "o2c.crm", "OpportunityClosedWon"), Ok(()));
    assert!(decide(&s, &role_arn("IntakeRole"), true, "o2c.crm", "OpportunityClosedWon").is_err());
    // The CLM has no principals given: its source stays unrestricted within the account.
    assert_eq!(decide(&s, SAME_ACCOUNT_APP, true, "o2c.clm", "ContractApproved"), Ok(()));
}

#[test]
fn when_the_rules_route_a_source_should_the_policy_classify_it_and_grant_the_catalogues_detail_types() {
    let s = Stack::new(&[
        ("OperatorPrincipalPattern", &["arn:aws:iam::111122223333:role/o2c-operators-*"]),
        ("CrmPublisherPrincipals", &[CRM_BRIDGE]),
        ("ClmPublisherPrincipals", &[CRM_BRIDGE]),
        ("PsaPublisherPrincipals", &[CRM_BRIDGE]),
        ("BankPublisherPrincipals", &[CRM_BRIDGE]),
        ("ErpPublisherPrincipals", &[CRM_BRIDGE]),
    ]);
    let catalogue = sources_of(EventType::ALL);
    let statements: BTreeMap<String, Value> = s.statements().into_iter().collect();
    let internal: BTreeSet<String> =
        s.eval(&statements["InternalSourcesPolicy"]["Condition"]["StringEquals"]["events:source"]).list().into_iter().collect();
    let operator_sources: Vec<String> = s.eval(&statements["OperatorSourcesPolicy"]["Condition"]["StringEquals"]["events:source"]).list();
    assert_eq!(operator_sources.len(), 3);
    let operator_sources: Vec<&str> = operator_sources.iter().map(String::as_str).collect();
    let mut external = BTreeSet::new();
    for (name, st) in &statements {
        if st["Effect"].as_str() == Some("Allow") {
            let source = s.eval(&st["Condition"]["StringEquals"]["events:source"]).text();
            let types: BTreeSet<String> = s.eval(&st["Condition"]["StringEquals"]["events:detail-type"]).list().into_iter().collect();
            let want: BTreeSet<String> = catalogue[source.as_str()].iter().map(|t| (*t).to_owned()).collect();
            assert_eq!(types, want, "{name}: the detail-types of {source} in the event catalogue");
            assert!(statements.contains_key(&name.replace("Publish", "Source")), "{name} without its Deny for others");
            external.insert(source);
        }
    }
    // Every source of the catalogue is o2c's own, a source system's, or an operator's.
    for source in catalogue.keys() {
        let classes = [internal.contains(*source), external.contains(*source), operator_sources.contains(source)];
        assert_eq!(classes.iter().filter(|c| **c).count(), 1, "{source} is in {classes:?} (internal, external, operator)");
    }
    // The internal sources are exactly what o2c's functions produce: not a source system's.
    assert_eq!(external, ["o2c.bank", "o2c.clm", "o2c.crm", "o2c.erp", "o2c.psa"].map(str::to_owned).into_iter().collect());
    // Exempt from each Deny: every publishing role and the operators' pattern, nobody else.
    let mut roles: BTreeSet<String> = publishing_roles(&s.t).iter().map(|r| role_arn(r)).collect();
    roles.insert("arn:aws:iam::111122223333:role/o2c-operators-*".into());
    for policy in ["InternalSourcesPolicy", "OperatorSourcesPolicy"] {
        let exempt: BTreeSet<String> =
            s.eval(&statements[policy]["Condition"]["ArnNotLike"]["aws:PrincipalArn"]).list().into_iter().collect();
        assert_eq!(exempt, roles, "{policy}: every publishing role and the operators, and only those");
    }
}
