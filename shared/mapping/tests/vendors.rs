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

/// The one event a shipped mapping makes of its example: `detail_type` from `source`.
fn one_event(name: &str, source: &str, detail_type: &str) -> Value {
    let r = Registry::open(&dir()).unwrap();
    let mut out = r.get(name).unwrap().apply(&example(name)).unwrap();
    assert_eq!(out.len(), 1, "{name}");
    assert_eq!((out[0].source.as_str(), out[0].detail_type.as_str()), (source, detail_type));
    out.remove(0).detail
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
    assert_eq!(d["event_version"], "2", "the mapping writes the latest version");
    assert_eq!(
        p["total_value"],
        json!({"amount": "1250000.00", "currency": "EUR"}),
        "a JSON number read exactly, at the scale of the mapping"
    );
    assert_eq!(p["opportunity_type"], "new_business");
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
        "detail.payload.total_value.amount",
        "detail.payload.delivery_region",
        "detail.payload.lines[0].billing_model",
        "detail.payload.rate_card_id",
        "detail.payload.close_date",
    ] {
        assert!(fields.contains(&want), "{want} not in {got:?}");
    }
    let amount = &got.iter().find(|(f, _)| f == "detail.payload.total_value.amount").unwrap().1;
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
        assert!(got.iter().any(|(f, m)| f == "detail.payload.total_value.amount" && m.contains(why)), "{amount}: {got:?}");
    }

    // The event's own schema has the last word (a payer name must not be empty).
    let mut stripe = example("stripe/payment_intent.succeeded");
    stripe["data"]["object"]["metadata"]["o2c_payer_name"] = json!("");
    let got = issues("stripe/payment_intent.succeeded", &stripe);
    assert!(got.iter().any(|(f, _)| f == "detail.payload.payer.name"), "{got:?}");
}

#[test]
fn when_a_salesforce_change_event_closes_an_opportunity_should_make_its_one_milestone_line_under_the_revisions_key() {
    let r = Registry::open(&dir()).unwrap();
    let m = r.get("salesforce/opportunity-change-event").unwrap();
    let out = m.apply(&example("salesforce/opportunity-change-event")).unwrap();
    assert_eq!(out.len(), 1);
    let d = &out[0].detail;
    assert_eq!((out[0].source.as_str(), out[0].detail_type.as_str()), ("o2c.crm", "OpportunityClosedWon"));
    assert_eq!(
        d["payload"],
        json!({
            "opportunity_id": "0068d00000HQPj2AAF",
            "revision": 1,
            "name": "Soylent audit readiness programme",
            "stage": "Closed Won",
            "account_id": "CUST-4001",
            "close_date": "2026-12-04",
            "currency": "EUR",
            "amount": "240000.00",
            "delivery_region": "EMEA-DE",
            "start_date": "2027-01-11",
            "end_date": "2027-06-25",
            "lines": [{
                "line_id": "L1",
                "service_offering_id": "SVC-AUDIT",
                "billing_model": "milestone",
                "amount": "240000.00",
                "description": "Soylent audit readiness programme"
            }]
        }),
        "fields the event does not carry (owner, PO, terms) are left out, not guessed"
    );
    assert_eq!(d["event_version"], "1");
    assert_eq!(d["correlation_id"], "corr-0068d00000HQPj2AAF");
    assert_eq!(d["occurred_at"], "2026-12-04T15:21:07Z", "LastModifiedDate, in UTC");
    // The key salesforce/opportunity gives the same revision: one business event either way.
    assert_eq!(d["idempotency_key"], "crm:opportunity:0068d00000HQPj2AAF:closed-won:r1");
    let rest = r.get("salesforce/opportunity").unwrap().apply(&example("salesforce/opportunity")).unwrap();
    assert_eq!(rest[0].detail["idempotency_key"], "crm:opportunity:0068d00000SFDC01AAA:closed-won:r1");
    // A CREATE carries every populated field: the same event's content.
    let mut created = example("salesforce/opportunity-change-event");
    created["payload"]["ChangeEventHeader"]["changeType"] = json!("CREATE");
    created["payload"]["ChangeEventHeader"]["changedFields"] = json!([]);
    created["payload"]["OwnerId"] = json!("0058d000001AbCdAAJ");
    let c = m.apply(&created).unwrap();
    assert_eq!(c[0].detail["payload"]["owner_id"], "0058d000001AbCdAAJ");
    // The same change redelivered is the same event; another transaction is another event
    // (of the same revision, so o2c absorbs it as a duplicate when nothing changed).
    assert_eq!(m.apply(&example("salesforce/opportunity-change-event")).unwrap()[0].detail["event_id"], d["event_id"]);
    let mut later = example("salesforce/opportunity-change-event");
    later["payload"]["ChangeEventHeader"]["transactionKey"] = json!("0004c1d2-7e3f-8a9b-0c1d-2e3f4a5b6c7e");
    let l = m.apply(&later).unwrap();
    assert_ne!(l[0].detail["event_id"], d["event_id"]);
    assert_eq!(l[0].detail["idempotency_key"], d["idempotency_key"]);
}

#[test]
fn when_a_change_event_lacks_what_o2c_needs_should_list_every_missing_path() {
    // The standard channel, no enrichment: only the fields the close changed.
    let mut bare = example("salesforce/opportunity-change-event");
    let keep = ["ChangeEventHeader", "StageName", "Probability", "ForecastCategoryName", "IsClosed", "IsWon", "LastModifiedDate"];
    bare["payload"].as_object_mut().unwrap().retain(|k, _| keep.contains(&k.as_str()));
    bare["payload"]["o2c_Billing_Model__c"] = json!("Milestone");
    let got = issues("salesforce/opportunity-change-event", &bare);
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "detail.idempotency_key",
            "detail.payload.account_id",
            "detail.payload.amount",
            "detail.payload.close_date",
            "detail.payload.currency",
            "detail.payload.delivery_region",
            "detail.payload.end_date",
            "detail.payload.lines[0].amount",
            "detail.payload.lines[0].description",
            "detail.payload.lines[0].service_offering_id",
            "detail.payload.name",
            "detail.payload.revision",
            "detail.payload.start_date",
        ],
        "{got:?}"
    );
    assert!(got.iter().all(|(_, m)| m.starts_with("missing")), "{got:?}");
    // A channel without the billing-model filter: a time-and-materials deal cannot be one line.
    let mut tm = example("salesforce/opportunity-change-event");
    tm["payload"]["o2c_Billing_Model__c"] = json!("Time and Materials");
    let got = issues("salesforce/opportunity-change-event", &tm);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].0 == "detail.payload.lines[0].billing_model" && got[0].1.contains("Milestone"), "{got:?}");
    // Another object, a lost deal, one change merged over two opportunities: the guards, all.
    let mut other = example("salesforce/opportunity-change-event");
    other["payload"]["ChangeEventHeader"]["entityName"] = json!("Account");
    other["payload"]["ChangeEventHeader"]["changeType"] = json!("DELETE");
    other["payload"]["ChangeEventHeader"]["recordIds"] = json!(["0068d00000HQPj2AAF", "0068d00000HQPj3AAF"]);
    other["payload"]["StageName"] = json!("Closed Lost");
    let got = issues("salesforce/opportunity-change-event", &other);
    assert_eq!(
        got.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        vec!["require[0]", "require[1]", "require[2]", "require[3]"],
        "{got:?}"
    );
    assert!(got[2].1.contains("selects 2 values"), "{got:?}");
}

#[test]
fn when_a_dynamics_opportunity_is_won_should_carry_every_column_exactly_with_its_row_version_as_revision() {
    let r = Registry::open(&dir()).unwrap();
    let m = r.get("dynamics365/opportunity").unwrap();
    let out = m.apply(&example("dynamics365/opportunity")).unwrap();
    let d = &out[0].detail;
    assert_eq!((out[0].source.as_str(), out[0].detail_type.as_str()), ("o2c.crm", "OpportunityClosedWon"));
    assert_eq!(
        d["payload"],
        json!({
            "opportunity_id": "5d2e7f10-3a4b-ef11-a81c-000d3a2b1c9f",
            "revision": 4585932,
            "name": "Globex UK operating model review",
            "stage": "Closed Won",
            "account_id": "CUST-1002",
            "close_date": "2026-12-15",
            "currency": "GBP",
            "amount": "180000.00",
            "delivery_region": "EMEA-UK",
            "start_date": "2027-02-01",
            "end_date": "2027-07-30",
            "rate_card_id": "RC-GBP-2027",
            "customer_po": "GUK-PO-77812",
            "owner_id": "8c1d7a4e-2f3b-ef11-a81c-000d3a2b1c01",
            "lines": [
                {
                    "line_id": "L1",
                    "service_offering_id": "SVC-STRAT",
                    "billing_model": "time_and_materials",
                    "amount": "120000.00",
                    "description": "Operating model diagnostic and target design",
                    "roles": [{"role": "MANAGER", "hours": "240.0"}, {"role": "SENIOR_CONSULTANT", "hours": "420.0"}]
                },
                {
                    "line_id": "L2",
                    "service_offering_id": "SVC-AUDIT",
                    "billing_model": "fixed_fee",
                    "amount": "60000.00",
                    "description": "Audit readiness review",
                    "installments": 3,
                    "installment_frequency": "monthly"
                }
            ]
        }),
        "choices read by value, null columns and an empty staffing list left out"
    );
    assert_eq!(d["event_version"], "1");
    assert_eq!(d["correlation_id"], "corr-5d2e7f10-3a4b-ef11-a81c-000d3a2b1c9f");
    assert_eq!(d["occurred_at"], "2026-12-15T16:42:10Z");
    assert_eq!(d["idempotency_key"], "crm:opportunity:5d2e7f10-3a4b-ef11-a81c-000d3a2b1c9f:closed-won:r4585932");
    // A later write to the row is a new revision and a new event.
    let mut edited = example("dynamics365/opportunity");
    edited["versionnumber"] = json!(4586210);
    let e = m.apply(&edited).unwrap();
    assert_eq!((e[0].detail["payload"]["revision"].as_u64(), e[0].detail["event_id"] == d["event_id"]), (Some(4586210), false));
}

#[test]
fn when_a_dynamics_opportunity_cannot_be_mapped_should_list_every_failing_path() {
    // Open (statecode 0, statuscode 1 In Progress): the guards only.
    let mut open = example("dynamics365/opportunity");
    open["statecode"] = json!(0);
    open["statuscode"] = json!(1);
    let got = issues("dynamics365/opportunity", &open);
    assert_eq!(got.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), vec!["require[1]", "require[2]"], "{got:?}");
    // Lost (statecode 2) with a won status is not won either.
    let mut lost = example("dynamics365/opportunity");
    lost["statecode"] = json!(2);
    assert_eq!(issues("dynamics365/opportunity", &lost).iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), vec!["require[1]"]);
    // Won, with faults in several columns: each with its output field.
    let mut bad = example("dynamics365/opportunity");
    bad["parentaccountid"].as_object_mut().unwrap().remove("accountnumber");
    bad["actualvalue"] = json!(180000.005);
    bad["o2c_deliverycountry"] = json!("FR");
    bad["product_opportunities"][0]["o2c_billingmodel"] = json!(104570009);
    bad["product_opportunities"][0]["o2c_opportunityproduct_o2c_staffing"][1]["o2c_role"] = json!(104570042);
    bad["product_opportunities"][1]["productid"] = Value::Null;
    bad.as_object_mut().unwrap().remove("transactioncurrencyid");
    let got = issues("dynamics365/opportunity", &bad);
    assert_eq!(
        got.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        vec![
            "detail.payload.account_id",
            "detail.payload.amount",
            "detail.payload.currency",
            "detail.payload.delivery_region",
            "detail.payload.lines[0].billing_model",
            "detail.payload.lines[0].roles[1].role",
            "detail.payload.lines[1].service_offering_id",
        ],
        "{got:?}"
    );
    let model = &got.iter().find(|(f, _)| f == "detail.payload.lines[0].billing_model").unwrap().1;
    assert!(model.contains("`104570009`") && model.contains("104570000"), "the choice values accepted are listed: {model}");
    assert!(got.iter().any(|(f, m)| f == "detail.payload.amount" && m.contains("more than 2 decimals")), "{got:?}");
}

#[test]
fn when_a_stripe_invoice_is_paid_should_receive_its_payment_intent_in_the_currencys_amount() {
    let r = Registry::open(&dir()).unwrap();
    let m = r.get("stripe/invoice.paid").unwrap();
    let out = m.apply(&example("stripe/invoice.paid")).unwrap();
    let d = &out[0].detail;
    assert_eq!((out[0].source.as_str(), out[0].detail_type.as_str()), ("o2c.bank", "PaymentReceived"));
    assert_eq!(
        d["payload"],
        json!({
            "payment_id": "pi_3R2sVaEYbKjD8h0q1Qw2Er3T",
            "legal_entity_id": "LE-DE-01",
            "amount": {"amount": "139286.88", "currency": "EUR"},
            "value_date": "2027-03-29",
            "payer": {"name": "Globex Manufacturing GmbH", "account": "cus_R8mNp2QrStUvWx"},
            "remittance": "Rechnung LE-DE-01-000001",
            "references": ["LE-DE-01-000001"]
        })
    );
    assert_eq!(d["event_version"], "1");
    assert_eq!(d["occurred_at"], "2027-03-29T09:41:12Z", "paid_at, not the event's creation a second later");
    assert_eq!(d["idempotency_key"], "stripe:invoice:in_1R0aB3EYbKjD8h0qZx9Yw8Vu:paid");
    assert_eq!(d["correlation_id"], "corr-stripe-pi_3R2sVaEYbKjD8h0q1Qw2Er3T");
    // The payment_intent.succeeded of the same PaymentIntent names the same payment, under
    // another key (never one key with two payloads).
    let mut pi = example("stripe/payment_intent.succeeded");
    pi["data"]["object"]["id"] = json!("pi_3R2sVaEYbKjD8h0q1Qw2Er3T");
    let p = r.get("stripe/payment_intent.succeeded").unwrap().apply(&pi).unwrap();
    assert_eq!(p[0].detail["payload"]["payment_id"], d["payload"]["payment_id"]);
    assert_ne!(p[0].detail["idempotency_key"], d["idempotency_key"]);
    // Yen have no minor unit.
    let mut yen = example("stripe/invoice.paid");
    yen["data"]["object"]["currency"] = json!("jpy");
    yen["data"]["object"]["amount_paid"] = json!(4_180_000);
    assert_eq!(m.apply(&yen).unwrap()[0].detail["payload"]["amount"], json!({"amount": "4180000", "currency": "JPY"}));
}

#[test]
fn when_a_stripe_invoice_payment_cannot_be_mapped_should_list_every_failing_path() {
    // Marked paid out of band: the money arrived elsewhere (the bank reports it).
    let mut oob = example("stripe/invoice.paid");
    oob["data"]["object"]["paid_out_of_band"] = json!(true);
    let got = issues("stripe/invoice.paid", &oob);
    assert_eq!(got.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), vec!["require[4]"], "{got:?}");
    // An invoice.payment_failed, or an open invoice: the guards that fail, all of them.
    let mut failed = example("stripe/invoice.paid");
    failed["type"] = json!("invoice.payment_failed");
    failed["data"]["object"]["status"] = json!("open");
    let got = issues("stripe/invoice.paid", &failed);
    assert_eq!(got.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), vec!["require[1]", "require[3]"], "{got:?}");
    // An endpoint on 2025-03-31.basil or later: no `paid_out_of_band` (nor `payment_intent`).
    let mut basil = example("stripe/invoice.paid");
    basil["data"]["object"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| !["paid", "paid_out_of_band", "payment_intent", "charge"].contains(&k.as_str()));
    let got = issues("stripe/invoice.paid", &basil);
    assert_eq!(got, vec![("require[4]".to_owned(), "missing".to_owned())], "{got:?}");
    // Paid, but the firm's metadata is missing, the PaymentIntent too, the currency broken
    // (refused where the amount needs its exponent; the event's schema is checked once every
    // field maps).
    let mut bad = example("stripe/invoice.paid");
    let inv = bad["data"]["object"].as_object_mut().unwrap();
    inv.remove("payment_intent");
    inv["metadata"].as_object_mut().unwrap().remove("o2c_legal_entity_id");
    inv.insert("currency".into(), json!("eu"));
    let got = issues("stripe/invoice.paid", &bad);
    assert_eq!(
        got.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        vec!["detail.correlation_id", "detail.payload.amount.amount", "detail.payload.legal_entity_id", "detail.payload.payment_id",],
        "{got:?}"
    );
    assert!(got.iter().any(|(f, m)| f == "detail.payload.amount.amount" && m.contains("`EU`")), "{got:?}");
}

#[test]
fn when_netsuite_reports_a_hand_keyed_invoice_should_name_its_engagement_number_and_amounts_exactly() {
    let d = &one_event("netsuite/invoice", "o2c.erp", "ErpInvoicePosted");
    assert_eq!(
        d["payload"],
        json!({
            "engagement_id": "ENG-0068d00000GLBX01",
            "erp": "netsuite",
            "erp_invoice_id": "4471",
            "number": "INV-MAN-0917",
            "legal_entity_id": "LE-DE-01",
            "customer_id": "10001",
            "total": {"amount": "11900.00", "currency": "EUR"},
            "tax_total": {"amount": "1900.00", "currency": "EUR"},
            "posted_on": "2027-03-04",
            "due_date": "2027-04-03"
        }),
        "no externalId: not o2c's invoice"
    );
    assert_eq!(d["idempotency_key"], "erp:netsuite:invoice:4471:2027-03-04T09:00:00Z");
    let r = Registry::open(&dir()).unwrap();
    let m = r.get("netsuite/invoice").unwrap();
    // o2c's own invoice carries its id as the external id; a later edit is another event.
    let mut ours = example("netsuite/invoice");
    ours["externalId"] = json!("INV-ENG-0068d00000GLBX01-1");
    ours["tranId"] = json!("LE-DE-01-000001");
    let o = m.apply(&ours).unwrap();
    assert_eq!(o[0].detail["payload"]["invoice_id"], "INV-ENG-0068d00000GLBX01-1");
    let mut edited = ours.clone();
    edited["lastModifiedDate"] = json!("2027-03-05T10:00:00Z");
    assert_ne!(m.apply(&edited).unwrap()[0].detail["event_id"], o[0].detail["event_id"]);
    // Voided: still reported (reconciliation re-reads it); pending approval: not posted.
    let mut voided = ours.clone();
    voided["status"] = json!({"id": "V", "refName": "Voided"});
    assert!(m.apply(&voided).is_ok());
    let mut pending = ours;
    pending["status"] = json!({"id": "E", "refName": "Pending Approval"});
    assert_eq!(issues("netsuite/invoice", &pending).len(), 1);
}

#[test]
fn when_a_netsuite_invoice_cannot_be_mapped_should_list_every_failing_path() {
    let mut bad = example("netsuite/invoice");
    let o = bad.as_object_mut().unwrap();
    o.remove("custbody_o2c_engagement_id");
    o.insert("subsidiary".into(), json!({"id": "9", "refName": "Elsewhere"}));
    o.insert("currency".into(), json!({"id": "7", "refName": "Yen"}));
    o.insert("total".into(), json!(11900.005));
    let mut got: Vec<String> = issues("netsuite/invoice", &bad).into_iter().map(|(f, _)| f).collect();
    got.dedup();
    for want in [
        "detail.correlation_id",
        "detail.payload.engagement_id",
        "detail.payload.legal_entity_id",
        "detail.payload.total.amount",
        "detail.payload.total.currency",
        "detail.payload.tax_total.currency",
    ] {
        assert!(got.iter().any(|f| f == want), "{want} not in {got:?}");
    }
}

#[test]
fn when_s4hana_reports_a_billing_document_should_know_o2cs_number_from_its_reference_and_a_hand_made_one_by_its_own() {
    let d = &one_event("s4hana/billing-document", "o2c.erp", "ErpInvoicePosted");
    assert_eq!(
        d["payload"],
        json!({
            "engagement_id": "ENG-0068d00000GLBX01",
            "erp": "sap_s4hana",
            "erp_invoice_id": "90000123",
            "number": "LE-DE-01-000001",
            "legal_entity_id": "LE-DE-01",
            "customer_id": "C-10001",
            "total": {"amount": "139286.88", "currency": "EUR"},
            "tax_total": {"amount": "22239.08", "currency": "EUR"},
            "posted_on": "2027-03-02"
        }),
        "no due date: the header has payment terms"
    );
    assert_eq!(d["occurred_at"], "2027-03-02T09:12:40Z", "LastChangeDateTime, UTC");
    let r = Registry::open(&dir()).unwrap();
    let m = r.get("s4hana/billing-document").unwrap();
    // A document billed in S/4HANA by hand: no o2c number (its FI reference holds the
    // customer's PO, as copy control fills it) → its own number. Never changed: its
    // creation date is when it happened.
    let mut manual = example("s4hana/billing-document");
    manual["d"]["YY1_O2CInvoiceNumber_BDH"] = json!("");
    manual["d"]["LastChangeDateTime"] = json!(null);
    let o = m.apply(&manual).unwrap();
    assert_eq!(o[0].detail["payload"]["number"], "90000123");
    assert_eq!(o[0].detail["occurred_at"], "2027-03-02T00:00:00Z");
    assert_ne!(o[0].detail["event_id"], d["event_id"]);
    assert_ne!(o[0].detail["idempotency_key"], d["idempotency_key"]);
    // Neither: every path tried is named.
    manual["d"].as_object_mut().unwrap().remove("BillingDocument");
    let got = issues("s4hana/billing-document", &manual);
    assert!(got.iter().any(|(f, _)| f == "detail.payload.number"), "{got:?}");
    let m2 = m.apply(&manual).unwrap_err();
    assert!(m2.iter().any(|i| i.path == "$.d.YY1_O2CInvoiceNumber_BDH | $.d.BillingDocument" && i.message == "missing"), "{m2:?}");
    // A credit memo, or a document not yet transferred to accounting: not a posted invoice.
    let mut listed = example("s4hana/billing-document");
    listed["d"]["AccountingTransferStatus"] = json!("H");
    assert!(m.apply(&listed).is_ok(), "posted through an invoice list");
    for (field, value) in [("SDDocumentCategory", "O"), ("SDDocumentCategory", "N"), ("AccountingTransferStatus", "B")] {
        let mut other = example("s4hana/billing-document");
        other["d"][field] = json!(value);
        assert_eq!(issues("s4hana/billing-document", &other).len(), 1, "{field}");
    }
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
