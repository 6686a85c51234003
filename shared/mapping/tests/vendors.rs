//! Every shipped mapping against its vendor's payload (`mappings/<vendor>/<object>.example.json`,
//! built from the vendor's API documentation): the canonical event it must become, the
//! refusals a broken payload must get (every failing path), and — over arbitrary JSON,
//! XML and bytes — no panic: every input mapped or refused with a reason.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use o2c_mapping::{Format, Registry, parse_input};
use proptest::prelude::*;
use serde_json::{Value, json};

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../mappings"))
}

/// A mapping's example payload (`.example.json` or `.example.xml`), read as the mapping reads.
fn example(name: &str) -> Value {
    let r = Registry::open(&dir()).unwrap();
    let m = r.get(name).unwrap();
    let ext = if m.format == Format::Xml { "xml" } else { "json" };
    m.read(&std::fs::read(dir().join(format!("{name}.example.{ext}"))).unwrap()).unwrap()
}

fn issues(name: &str, doc: &Value) -> Vec<(String, String)> {
    let r = Registry::open(&dir()).unwrap();
    r.get(name).unwrap().apply(doc).unwrap_err().into_iter().map(|i| (i.field, i.message)).collect()
}

#[test]
fn when_every_shipped_mapping_loads_should_each_have_an_example_that_maps_to_a_schema_valid_event() {
    let r = Registry::open(&dir()).unwrap();
    let loaded = r.loaded();
    assert!(loaded.mappings.len() >= 2 && loaded.problems.is_empty());
    for (name, m) in &loaded.mappings {
        let out = m.apply(&example(name)).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(!out.is_empty(), "{name}");
        for e in &out {
            assert_eq!(e.detail_type, m.emit.event_type.detail_type());
        }
    }
}

#[test]
fn when_a_salesforce_opportunity_is_mapped_should_carry_every_field_exactly() {
    let r = Registry::open(&dir()).unwrap();
    let out = r.get("salesforce/opportunity").unwrap().apply(&example("salesforce/opportunity")).unwrap();
    let d = &out[0].detail;
    let p = &d["payload"];
    assert_eq!((out[0].source.as_str(), out[0].detail_type.as_str()), ("o2c.crm", "OpportunityClosedWon"));
    assert_eq!(p["opportunity_id"], "0068d00000SFDC01AAA");
    assert_eq!(p["amount"], "1250000.00", "a JSON number read exactly, at the scale of the mapping");
    assert_eq!(p["delivery_region"], "EMEA-DE");
    assert_eq!(p["lines"][1]["billing_model"], "time_and_materials");
    assert_eq!(p["lines"][1]["roles"], json!([{"role": "MANAGER", "hours": "400"}, {"role": "SENIOR_CONSULTANT", "hours": "600"}]));
    assert!(p["lines"][0].get("roles").is_none(), "no staffing: left out, not an empty list");
    assert_eq!(p["lines"][2]["installments"], 4);
    assert!(p.get("payment_terms").is_none(), "a null custom field is left out");
    assert_eq!(d["occurred_at"], "2026-11-20T09:30:00Z");
    assert_eq!(d["idempotency_key"], "crm:opportunity:0068d00000SFDC01AAA:closed-won:r1");
    // The same record version is the same event; a new version is another.
    let again = r.get("salesforce/opportunity").unwrap().apply(&example("salesforce/opportunity")).unwrap();
    assert_eq!(again[0].detail["event_id"], d["event_id"]);
    let mut edited = example("salesforce/opportunity");
    edited["SystemModstamp"] = json!("2026-11-21T10:00:00.000+0000");
    let other = r.get("salesforce/opportunity").unwrap().apply(&edited).unwrap();
    assert_ne!(other[0].detail["event_id"], d["event_id"]);
}

#[test]
fn when_a_stripe_payment_is_mapped_should_turn_minor_units_into_the_currencys_amount() {
    let r = Registry::open(&dir()).unwrap();
    let m = r.get("stripe/payment_intent.succeeded").unwrap();
    let out = m.apply(&example("stripe/payment_intent.succeeded")).unwrap();
    let p = &out[0].detail["payload"];
    assert_eq!(p["amount"], json!({"amount": "50000.00", "currency": "EUR"}));
    assert_eq!(p["references"], json!(["LE-DE-01-000001"]));
    assert_eq!(p["value_date"], "2027-04-08");
    // Yen have no minor unit: 5,000,000 is ¥5,000,000.
    let mut yen = example("stripe/payment_intent.succeeded");
    yen["data"]["object"]["currency"] = json!("jpy");
    assert_eq!(m.apply(&yen).unwrap()[0].detail["payload"]["amount"]["amount"], "5000000");
    // Stripe counts ISK in hundredths (ISO 4217 gives ISK none): 100000 is ISK 1,000.
    let mut isk = example("stripe/payment_intent.succeeded");
    isk["data"]["object"]["currency"] = json!("isk");
    isk["data"]["object"]["amount_received"] = json!(100_000);
    assert_eq!(m.apply(&isk).unwrap()[0].detail["payload"]["amount"]["amount"], "1000");
    // A fraction of a krona cannot be written: refused, not rounded.
    isk["data"]["object"]["amount_received"] = json!(100_050);
    assert!(m.apply(&isk).unwrap_err()[0].message.contains("more decimals than ISK"));
    // The client secret is never parked.
    let red = m.redacted(example("stripe/payment_intent.succeeded"));
    assert_eq!(red["data"]["object"]["client_secret"], "[redacted]");
    assert_eq!(red["data"]["object"]["id"], "pi_3QxLk2EYbKjD8h0q1a2B3c4D");
}

#[test]
fn when_a_camt054_is_mapped_should_make_one_payment_per_booked_credit_with_the_accounts_legal_entity() {
    let r = Registry::open(&dir()).unwrap();
    let m = r.get("iso20022/camt.054").unwrap();
    let out = m.apply(&example("iso20022/camt.054")).unwrap();
    assert_eq!(out.len(), 1, "the debit entry is not a payment received");
    let p = &out[0].detail["payload"];
    assert_eq!(p["payment_id"], "2027041100017");
    assert_eq!(p["legal_entity_id"], "LE-DE-01", "from the notification's account, stated once");
    assert_eq!(p["amount"], json!({"amount": "50000.00", "currency": "EUR"}));
    assert_eq!(p["payer"], json!({"name": "GLOBEX MANUFACTURING GMBH", "account": "DE44500105175407324931"}));
    assert_eq!(p["references"], json!(["LE-DE-01-000001"]));
    assert_eq!(out[0].detail["occurred_at"], "2027-04-11T06:00:00Z", "the bank's local time in UTC");
    // An account the firm does not list: refused with the account's path, not guessed.
    let xml = std::fs::read_to_string(dir().join("iso20022/camt.054.example.xml"))
        .unwrap()
        .replace("DE02100100100006820101", "FR7630006000011234567890189");
    let doc = m.read(xml.as_bytes()).unwrap();
    let issues = m.apply(&doc).unwrap_err();
    assert!(issues.iter().any(|i| i.field == "[0].detail.payload.legal_entity_id" && i.message.contains("FR76")), "{issues:?}");
    // Broken XML is refused as such.
    assert!(m.read(b"<Document><BkToCstmrDbtCdtNtfctn>").unwrap_err().message.contains("not XML"));
}

#[test]
fn when_a_docusign_envelope_completes_should_approve_the_contract_of_its_opportunity() {
    let r = Registry::open(&dir()).unwrap();
    let out = r.get("docusign/envelope-completed").unwrap().apply(&example("docusign/envelope-completed")).unwrap();
    let d = &out[0].detail;
    assert_eq!((out[0].source.as_str(), out[0].detail_type.as_str()), ("o2c.clm", "ContractApproved"));
    assert_eq!(d["payload"]["opportunity_id"], "0068d00000GLBX01", "from the envelope's custom field");
    assert_eq!(d["payload"]["approver_id"], "0058d000009LegAl", "the firm's signatory");
    assert_eq!(d["payload"]["approved_at"], "2026-11-21T14:05:00Z");
    assert_eq!(d["correlation_id"], "corr-0068d00000GLBX01", "the opportunity's flow");
    let mut voided = example("docusign/envelope-completed");
    voided["event"] = json!("envelope-voided");
    assert!(r.get("docusign/envelope-completed").unwrap().apply(&voided).is_err());
}

#[test]
fn when_a_certinia_timecard_is_approved_should_become_time_on_its_engagement_line() {
    let r = Registry::open(&dir()).unwrap();
    let m = r.get("certinia/timecard").unwrap();
    let out = m.apply(&example("certinia/timecard")).unwrap();
    let t = &out[0].detail["payload"]["time_entry"];
    assert_eq!(t["engagement_id"], "ENG-0068d00000GLBX01");
    assert_eq!((t["role"].as_str(), t["hours"].as_str(), t["line_id"].as_str()), (Some("MANAGER"), Some("7.5"), Some("L2")));
    assert_eq!(t["billable"], true);
    let mut submitted = example("certinia/timecard");
    submitted["pse__Status__c"] = json!("Submitted");
    assert!(m.apply(&submitted).is_err(), "only approved time");
    let mut intern = example("certinia/timecard");
    intern["pse__Assignment__r"]["pse__Role__c"] = json!("Intern");
    let issues = m.apply(&intern).unwrap_err();
    assert_eq!(issues[0].field, "detail.payload.time_entry.role", "{issues:?}");
}

#[test]
fn when_a_payload_cannot_be_mapped_should_list_every_failing_path() {
    // Not closed won: the guard, nothing else.
    let mut open = example("salesforce/opportunity");
    open["StageName"] = json!("Negotiation/Review");
    open["IsWon"] = json!(false);
    let got = issues("salesforce/opportunity", &open);
    assert_eq!(got.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), vec!["require[1]", "require[2]"], "{got:?}");

    // Several faults at once: each with its output field.
    let mut bad = example("salesforce/opportunity");
    bad["Amount"] = json!(1250000.005);
    bad["o2c_Delivery_Country__c"] = json!("FR");
    bad["OpportunityLineItems"]["records"][0]["o2c_Billing_Model__c"] = json!("Retainer");
    bad.as_object_mut().unwrap().remove("o2c_Rate_Card__c");
    bad["CloseDate"] = json!("20 Nov 2026");
    let got = issues("salesforce/opportunity", &bad);
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    for want in [
        "detail.payload.amount",
        "detail.payload.delivery_region",
        "detail.payload.lines[0].billing_model",
        "detail.payload.rate_card_id",
        "detail.payload.close_date",
    ] {
        assert!(fields.contains(&want), "{want} not in {got:?}");
    }
    let amount = &got.iter().find(|(f, _)| f == "detail.payload.amount").unwrap().1;
    assert!(amount.contains("more than 2 decimals"), "{amount}");
    let region = &got.iter().find(|(f, _)| f == "detail.payload.delivery_region").unwrap().1;
    assert!(region.contains("`FR`") && region.contains("DE"), "the accepted values are listed: {region}");

    // Amounts as strings are read strictly: no `_`, no exponent, nothing rounded.
    for (amount, why) in
        [("1_250_000.00", "not a decimal"), ("1.25e6", "not a decimal"), ("0.99999999999999999999999999999", "more than 28 digits")]
    {
        let mut s = example("salesforce/opportunity");
        s["Amount"] = json!(amount);
        let got = issues("salesforce/opportunity", &s);
        assert!(got.iter().any(|(f, m)| f == "detail.payload.amount" && m.contains(why)), "{amount}: {got:?}");
    }

    // The event's own schema has the last word (a payer name must not be empty).
    let mut stripe = example("stripe/payment_intent.succeeded");
    stripe["data"]["object"]["metadata"]["o2c_payer_name"] = json!("");
    let got = issues("stripe/payment_intent.succeeded", &stripe);
    assert!(got.iter().any(|(f, _)| f == "detail.payload.payer.name"), "{got:?}");
}

#[test]
fn when_a_mapping_file_is_wrong_should_refuse_to_load_it_with_every_problem() {
    let bad = "mapping: x\nversion: 0\nemit:\n  source: o2c.crm\n  detail_type: OpportunityWon\n  detail:\n    a: {path: '$.[', as: money}\n    b: {path: $.x, map: nope}\n";
    let e = o2c_mapping::Mapping::from_yaml("bad.yaml", bad).unwrap_err();
    let all = e.problems.join("\n");
    for want in ["vendor/object", "version", "not an o2c event type", "not a JSONPath", "unknown `as: money`", "no value map `nope`"] {
        assert!(all.contains(want), "{want} not in:\n{all}");
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("Id".to_owned()),
                    Just("StageName".to_owned()),
                    Just("data".to_owned()),
                    Just("object".to_owned()),
                    "[a-zA-Z_]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn when_any_json_is_mapped_should_never_panic_and_refuse_with_reasons(doc in arb_json()) {
        let r = Registry::open(&dir()).unwrap();
        for m in r.loaded().mappings.values() {
            match m.apply(&doc) {
                Ok(events) => prop_assert!(!events.is_empty()),
                Err(issues) => prop_assert!(!issues.is_empty() && issues.iter().all(|i| !i.message.is_empty())),
            }
        }
    }

    #[test]
    fn when_an_example_is_mutated_should_map_or_refuse_never_panic(path in 0usize..64, value in arb_json()) {
        let r = Registry::open(&dir()).unwrap();
        for (name, m) in r.loaded().mappings {
            let mut doc = example(&name);
            // Replace the path-th node (depth-first) with an arbitrary value.
            let mut n = 0;
            fn walk(v: &mut Value, target: usize, n: &mut usize, with: &Value) {
                if *n == target { *v = with.clone(); *n += 1; return; }
                *n += 1;
                match v {
                    Value::Object(m) => for x in m.values_mut() { walk(x, target, n, with) },
                    Value::Array(a) => for x in a.iter_mut() { walk(x, target, n, with) },
                    _ => {}
                }
            }
            walk(&mut doc, path, &mut n, &value);
            match m.apply(&doc) {
                Ok(events) => prop_assert!(!events.is_empty()),
                Err(issues) => prop_assert!(!issues.is_empty()),
            }
        }
    }

    #[test]
    fn when_any_bytes_are_read_as_json_or_xml_should_parse_or_refuse_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for f in [Format::Json, Format::Xml] {
            if let Err(i) = parse_input(f, &bytes) { prop_assert!(!i.message.is_empty()) }
        }
    }

    #[test]
    fn when_xml_like_text_is_read_should_parse_or_refuse_never_panic(s in "(<[a-zA-Z:]{1,4}( [a-z]{1,3}=\"[^\"<&]{0,4}\")?/?>|</[a-zA-Z:]{1,4}>|[^<]{0,6}|&(amp|lt|#x41|bogus);){0,24}") {
        if let Err(i) = parse_input(Format::Xml, s.as_bytes()) { prop_assert!(!i.message.is_empty()) }
    }
}
