//! Source-of-record rules: what the CRM may still change once the CLM signed and the PSA
//! provisioned, what it may not (kept, audited, a data-stewardship exception), and what the
//! CRM write-back may send.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use o2c_domain::engagement::{Action, Approval, Engagement, EngagementStatus};
use o2c_domain::events::{EventType, ExceptionKind, OpportunityClosedWon, OpportunityType};
use o2c_domain::intake::validate_and_enrich;
use o2c_domain::reference::ReferenceData;
use o2c_domain::source_of_record::{CONTRACT_ATTRIBUTES, Reached, SourceOfRecord, System, apply};
use o2c_domain::workflow::{Decision, Step, StepContext, crm_update_for, decide_closed_won};
use proptest::prelude::*;
use rust_decimal_macros::dec;

fn decide(current: Option<&Engagement>, opp: OpportunityClosedWon, event_id: &str) -> Decision {
    let m = meta(event_id);
    let ctx = StepContext { step: Step::Intake, event_type: EventType::OpportunityClosedWon, meta: &m, now: now(), event: None };
    decide_closed_won(current, &envelope(opp, event_id), &reference(), &ctx)
}

/// Globex revision 1, then as the engagement is after the CLM signed (and, when
/// `provisioned`, after provisioning started).
fn signed(provisioned: bool) -> Engagement {
    let mut e = decide(None, globex_closed_won(), "e1").engagement.unwrap();
    e.approval = Some(Approval { clm_agreement_id: "AGR-1".into(), approver_id: "U-LEGAL".into(), approved_at: now() });
    e.status = if provisioned { EngagementStatus::Active } else { EngagementStatus::ProvisioningFailed };
    e
}

/// Revision `r` with the total and the fixed-fee line raised by 50,000.00 and a new name.
fn repriced(r: u64) -> OpportunityClosedWon {
    let mut opp = globex_closed_won();
    opp.revision = r;
    opp.total_value.as_mut().unwrap().amount = Some("1300000.00".into());
    opp.lines[2].amount = Some("150000.00".into());
    opp.name = Some("Globex S/4HANA transformation (extended)".into());
    opp
}

#[test]
fn when_the_crm_reprices_a_signed_and_provisioned_contract_should_keep_the_signed_terms_and_raise_a_stewardship_exception() {
    let before = signed(true);
    let d = decide(Some(&before), repriced(2), "e2");
    let e = d.engagement.clone().unwrap();
    let c = e.contract.as_ref().unwrap();
    assert_eq!(c.total_value.amount, dec!(1250000.00), "the CLM's signed value stands");
    assert_eq!(c.lines[2].value.amount, dec!(100000.00));
    assert_eq!(c.name, "Globex S/4HANA transformation", "the PSA owns the project name once it exists");
    assert_eq!(c.revision, 2, "the revision is recorded: a late copy of it is a duplicate");
    assert!(e.pending_change.is_none(), "nothing left for a change order");
    assert_eq!(d.audit.action, Action::AttributesNotApplied);
    assert!(d.audit.summary.contains("not applied (not the CRM's): name, total_value, lines"), "{}", d.audit.summary);
    let ex = e.exceptions.iter().find(|x| x.kind == ExceptionKind::DataStewardship && x.open).expect("stewardship exception");
    for want in [
        "total_value EUR 1250000.00 → EUR 1300000.00 (owned by the clm)",
        "name Globex S/4HANA transformation → Globex S/4HANA transformation (extended) (owned by the psa)",
    ] {
        assert!(ex.message.contains(want), "{want} not in {}", ex.message);
    }
    assert_eq!(d.events.iter().filter(|ev| ev.event_type == EventType::ExceptionRaised).count(), 1);
    assert!(!e.exceptions.iter().any(|x| x.kind == ExceptionKind::ChangeOrderRequired));
    // The CRM shows it: the write-back reports open exceptions.
    let update = crm_update_for(&e, 3, &SourceOfRecord::default());
    assert_eq!(update.sync_status, "Error");
    assert!(update.last_error.unwrap().contains("not applied"));

    // Revision 3 still disagrees: the same exception, refreshed, not a second one.
    let d3 = decide(Some(&e), repriced(3), "e3");
    let e3 = d3.engagement.clone().unwrap();
    assert_eq!(e3.exceptions.iter().filter(|x| x.kind == ExceptionKind::DataStewardship).count(), 1);
    assert!(e3.exceptions.iter().any(|x| x.kind == ExceptionKind::DataStewardship && x.open && x.message.contains("revision 3")));

    // Revision 4 agrees with the owners again: the exception closes.
    let mut agrees = globex_closed_won();
    agrees.revision = 4;
    let d4 = decide(Some(&e3), agrees, "e4");
    let e4 = d4.engagement.clone().unwrap();
    assert!(e4.exceptions.iter().filter(|x| x.kind == ExceptionKind::DataStewardship).all(|x| !x.open), "closed");
    assert_eq!(d4.audit.action, Action::RevisionWithoutCommercialChange);
    let settled = d4.settle(
        Some(&e3),
        &StepContext { step: Step::Intake, event_type: EventType::OpportunityClosedWon, meta: &meta("e4"), now: now(), event: None },
    );
    assert!(settled.events.iter().any(|ev| ev.event_type == EventType::ExceptionResolved), "announced: the CRM stops showing it");
}

#[test]
fn when_the_crm_changes_what_it_still_owns_after_signing_should_apply_it_and_refuse_only_the_rest() {
    // Signed but not provisioned (a failed attempt): the name is still the CRM's, the value
    // is the CLM's.
    let before = signed(false);
    let mut opp = repriced(2);
    opp.customer_po = Some("PO-4500099999".into());
    opp.opportunity_type = Some(OpportunityType::Expansion);
    let d = decide(Some(&before), opp, "e2");
    let e = d.engagement.clone().unwrap();
    let c = e.contract.as_ref().unwrap();
    assert_eq!(c.name, "Globex S/4HANA transformation (extended)");
    assert_eq!(c.customer_po.as_deref(), Some("PO-4500099999"));
    assert_eq!(c.opportunity_type, Some(OpportunityType::Expansion));
    assert_eq!(c.total_value.amount, dec!(1250000.00));
    let ex = e.exceptions.iter().find(|x| x.kind == ExceptionKind::DataStewardship).unwrap();
    assert!(ex.message.contains("total_value") && ex.message.contains("lines") && !ex.message.contains("name "), "{}", ex.message);
    assert!(d.audit.summary.contains("not applied (not the CRM's): total_value, lines"), "{}", d.audit.summary);
}

#[test]
fn when_the_contract_is_not_signed_should_let_the_crm_change_its_commercial_terms_as_before() {
    // Provisioned without a CLM signature (no approval needed): the CRM still owns the
    // commercial terms, and a change needs a change order, as it always did.
    let mut before = decide(None, globex_closed_won(), "e1").engagement.unwrap();
    before.status = EngagementStatus::Active;
    let d = decide(Some(&before), repriced(2), "e2");
    let e = d.engagement.clone().unwrap();
    assert_eq!(d.audit.action, Action::ChangeOrderRequired);
    assert!(e.exceptions.iter().any(|x| x.kind == ExceptionKind::ChangeOrderRequired));
    let pending = e.pending_change.as_ref().unwrap();
    assert_eq!(pending.total_value.amount, dec!(1300000.00));
    assert_eq!(pending.name, "Globex S/4HANA transformation", "but the project's name is the PSA's");
    assert!(e.exceptions.iter().any(|x| x.kind == ExceptionKind::DataStewardship && x.message.contains("name")));
}

#[test]
fn when_the_rules_limit_the_write_back_should_send_only_what_they_allow() {
    let mut e = signed(true);
    e.psa_project_id = Some("PSA-1".into());
    e.erp_project_id = Some("ERP-1".into());
    e.erp_billing_schedule_id = Some("BS-1".into());
    let all = crm_update_for(&e, 1, &SourceOfRecord::default());
    assert_eq!((all.psa_project_id.as_deref(), all.erp_billing_schedule_id.as_deref()), (Some("PSA-1"), Some("BS-1")));
    let mut rules = SourceOfRecord::default();
    rules.crm_writeback.retain(|f| !["erp_project_id", "erp_billing_schedule_id", "contract_id"].contains(&f.as_str()));
    assert!(rules.check().is_empty());
    let some = crm_update_for(&e, 1, &rules);
    assert_eq!(some.psa_project_id.as_deref(), Some("PSA-1"));
    assert_eq!((&some.erp_project_id, &some.erp_billing_schedule_id, &some.contract_id), (&None, &None, &None));
    let sent = serde_json::to_value(&some).unwrap();
    assert!(sent.get("erp_project_id").is_none() && sent.get("contract_id").is_none(), "not sent at all: {sent}");
}

#[test]
fn when_reference_data_carries_unsound_rules_should_refuse_to_load_with_every_reason() {
    let mut data: serde_json::Value = serde_json::from_str(include_str!("../../reference/northwind.json")).unwrap();
    let shipped: SourceOfRecord = serde_json::from_value(data["workflow"]["source_of_record"].clone()).unwrap();
    assert_eq!(shipped, SourceOfRecord::default(), "the shipped rules are the documented ones");
    data["workflow"]["source_of_record"]["rules"][0]["attributes"] = serde_json::json!(["total_value"]);
    data["workflow"]["source_of_record"]["crm_writeback"] =
        serde_json::json!(["sync_status", "engagement_status", "engagement_id", "payment_terms"]);
    let err = ReferenceData::from_json(&data.to_string()).unwrap_err();
    let text = err.0.join("\n");
    for want in [
        "`lines` has no owner",
        "`start_date` has no owner",
        "total_value, lines, start_date, end_date, delivery_region, rate_card_id must share one rule",
        "no field `payment_terms`",
    ] {
        assert!(text.contains(want), "{want} not in {text}");
    }
    data["workflow"]["source_of_record"]["rules"][0]["owner"] = serde_json::json!("sap");
    assert!(ReferenceData::from_json(&data.to_string()).is_err(), "an unknown system");
}

/// A contract attribute's value in the contract, for comparing.
fn value_of(c: &o2c_domain::model::Contract, attribute: &str) -> serde_json::Value {
    let v = serde_json::to_value(c).unwrap();
    match attribute {
        "account_id" => v["customer"].clone(),
        "contracting_entity_id" => v["legal_entity"].clone(),
        "total_value" => serde_json::json!([v["total_value"], v["currency"]]),
        other => v[other].clone(),
    }
}

proptest! {
    /// Whatever changes a sender proposes, at whatever milestone: each attribute ends as the
    /// sender's value exactly when the sender owns it then, and every change refused is
    /// listed once.
    #[test]
    fn when_any_update_meets_the_rules_should_apply_exactly_what_the_sender_owns(
        changes in proptest::collection::vec(proptest::bool::ANY, 7),
        signed in proptest::bool::ANY,
        provisioned in proptest::bool::ANY,
        sender in prop_oneof![Just(System::Crm), Just(System::Clm), Just(System::Psa), Just(System::Erp)],
    ) {
        let refdata = reference();
        let current = validate_and_enrich(&globex_closed_won(), &refdata).unwrap();
        let mut opp = globex_closed_won();
        if changes[0] { opp.name = Some("Renamed".into()); }
        if changes[1] { opp.customer_po = Some("PO-NEW".into()); }
        if changes[2] { opp.total_value.as_mut().unwrap().amount = Some("1300000.00".into()); opp.lines[2].amount = Some("150000.00".into()); }
        if changes[3] { opp.end_date = Some("2027-12-31".into()); }
        if changes[4] { opp.payment_terms = Some("NET45".into()); }
        if changes[5] { opp.opportunity_type = Some(OpportunityType::Renewal); }
        if changes[6] { opp.delivery_region = Some("EMEA-UK".into()); }
        let proposed = validate_and_enrich(&opp, &refdata).unwrap();
        let rules = SourceOfRecord::default();
        let reached = Reached { contract_signed: signed, project_provisioned: provisioned };
        let (result, refused) = apply(&rules, reached, sender, &current, proposed.clone());
        for a in CONTRACT_ATTRIBUTES {
            let changed = value_of(&current, a) != value_of(&proposed, a);
            let owned = rules.owner(a, reached) == Some(sender);
            let want = if owned { value_of(&proposed, a) } else { value_of(&current, a) };
            prop_assert_eq!(value_of(&result, a), want, "{}", a);
            prop_assert_eq!(refused.iter().filter(|n| n.attribute == *a).count(), usize::from(changed && !owned), "{}", a);
        }
        prop_assert!(refused.iter().all(|n| n.sender == sender && n.owner != sender && n.kept != n.proposed));
    }
}
