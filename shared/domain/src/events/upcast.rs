//! Upcasters: an older version of an event's `detail` rewritten as the latest version before
//! it is decoded, so a producer still on an old contract keeps working while the steps see
//! only the latest payload type.
//!
//! Each upcaster is a pure function from one version's JSON to the next's, chained until the
//! latest ([`EventType::latest_version`]). It moves what the old version carries to where the
//! new one keeps it and invents nothing: a field the old version did not have stays absent.
//! It is total — whatever JSON it is given, it returns JSON (a malformed old detail is
//! rewritten as well as it can be and then refused by the decoder, with the path).
//!
//! Validation order (see `o2c_app::contracts`): the detail is checked against the schema of
//! the version it declares, so schema issues name the sender's own paths; the domain's
//! checks run on the upcast payload and name the latest version's paths (for
//! `OpportunityClosedWon` v1: `total_value.amount` where the sender wrote `amount`).
//!
//! | Type | From → to | What changes |
//! |---|---|---|
//! | `OpportunityClosedWon` | 1 → 2 | `payload.amount` and `payload.currency` move into `payload.total_value {amount, currency}`; `opportunity_type` (new in 2) stays absent |

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::EventType;

/// One step: the type, the version it reads, the version it writes, the rewrite.
type Step = (EventType, &'static str, &'static str, fn(Value) -> Value);

/// Every upcaster this build has, one per (type, older version).
const STEPS: &[Step] = &[(EventType::OpportunityClosedWon, "1", "2", opportunity_closed_won_v1_to_v2)];

/// `detail` as the latest version of `t`: borrowed when it already is (or declares a
/// version no upcaster reads, which the decoder then refuses), rewritten otherwise.
pub fn to_latest(t: EventType, detail: &Value) -> Cow<'_, Value> {
    let mut current: Cow<'_, Value> = Cow::Borrowed(detail);
    // Each step raises the version; the bound guards against a cycle in `STEPS`.
    for _ in 0..=STEPS.len() {
        let Some(version) = current.get("event_version").and_then(Value::as_str) else { break };
        if version == t.latest_version() {
            break;
        }
        let Some((_, _, to, step)) = STEPS.iter().find(|(ty, from, _, _)| *ty == t && *from == version) else { break };
        let mut next = step(current.into_owned());
        if let Some(obj) = next.as_object_mut() {
            obj.insert("event_version".into(), Value::String((*to).to_owned()));
        }
        current = Cow::Owned(next);
    }
    current
}

/// Whether `t` has an upcaster from `version` (a version older than the latest it reads).
pub fn has_upcaster(t: EventType, version: &str) -> bool {
    STEPS.iter().any(|(ty, from, _, _)| *ty == t && *from == version)
}

/// `OpportunityClosedWon` 1 → 2: the total travels with its currency.
fn opportunity_closed_won_v1_to_v2(mut detail: Value) -> Value {
    if let Some(payload) = detail.get_mut("payload").and_then(Value::as_object_mut) {
        let amount = payload.remove("amount");
        let currency = payload.remove("currency");
        if amount.is_some() || currency.is_some() {
            let mut total = Map::new();
            if let Some(a) = amount {
                total.insert("amount".into(), a);
            }
            if let Some(c) = currency {
                total.insert("currency".into(), c);
            }
            payload.insert("total_value".into(), Value::Object(total));
        }
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::BusinessEvent;
    use serde_json::json;

    fn v1(payload: Value) -> Value {
        json!({"event_id": "e1", "event_version": "1", "correlation_id": "c", "occurred_at": "2026-11-20T09:30:00Z", "payload": payload})
    }

    #[test]
    fn when_a_v1_closed_won_is_upcast_should_move_amount_and_currency_into_total_value() {
        let d = v1(json!({"opportunity_id": "o", "revision": 1, "amount": "10.00", "currency": "EUR", "name": "n"}));
        let up = to_latest(EventType::OpportunityClosedWon, &d);
        assert_eq!(up["event_version"], "2");
        assert_eq!(
            up["payload"],
            json!({"opportunity_id": "o", "revision": 1, "name": "n", "total_value": {"amount": "10.00", "currency": "EUR"}})
        );
        let BusinessEvent::OpportunityClosedWon(e) = BusinessEvent::decode("OpportunityClosedWon", &d).unwrap() else { panic!() };
        assert_eq!(e.event_version, "2");
        let total = e.payload.total_value.unwrap();
        assert_eq!((total.amount.as_deref(), total.currency.as_deref()), (Some("10.00"), Some("EUR")));
        assert_eq!(e.payload.opportunity_type, None, "a v1 sender said nothing about it");
    }

    #[test]
    fn when_a_v1_closed_won_lacks_the_money_should_add_no_total_value() {
        let d = v1(json!({"opportunity_id": "o", "revision": 1}));
        assert!(to_latest(EventType::OpportunityClosedWon, &d)["payload"].get("total_value").is_none());
        let only_currency = v1(json!({"opportunity_id": "o", "revision": 1, "currency": "EUR"}));
        assert_eq!(to_latest(EventType::OpportunityClosedWon, &only_currency)["payload"]["total_value"], json!({"currency": "EUR"}));
    }

    #[test]
    fn when_a_detail_is_already_latest_or_of_an_unknown_version_should_be_borrowed_untouched() {
        let v2 = json!({"event_version": "2", "payload": {"amount": "1"}});
        assert!(matches!(to_latest(EventType::OpportunityClosedWon, &v2), Cow::Borrowed(_)));
        let v9 = json!({"event_version": "9", "payload": {"amount": "1"}});
        assert!(matches!(to_latest(EventType::OpportunityClosedWon, &v9), Cow::Borrowed(_)));
        let other = v1(json!({"amount": "1"}));
        assert!(matches!(to_latest(EventType::ContractApproved, &other), Cow::Borrowed(_)), "no upcaster for the type");
        assert!(matches!(to_latest(EventType::OpportunityClosedWon, &json!([1])), Cow::Borrowed(_)));
    }

    #[test]
    fn when_a_v1_and_its_v2_are_the_same_fact_should_derive_the_same_idempotency_key() {
        let a = v1(json!({"opportunity_id": "o", "revision": 1, "amount": "10.00", "currency": "EUR"}));
        let mut b = a.clone();
        b["event_version"] = "2".into();
        b["event_id"] = "e2".into();
        b["payload"] = json!({"opportunity_id": "o", "revision": 1, "total_value": {"currency": "EUR", "amount": "10.00"}});
        let (a, b) =
            (BusinessEvent::decode("OpportunityClosedWon", &a).unwrap(), BusinessEvent::decode("OpportunityClosedWon", &b).unwrap());
        assert_eq!(a.meta().idempotency_key, b.meta().idempotency_key);
        assert_eq!(a.payload_json(), b.payload_json());
    }

    #[test]
    fn when_every_upcaster_is_listed_should_read_an_older_version_and_write_a_newer_one_the_type_reads() {
        for (t, from, to, _) in STEPS {
            let vs = t.versions();
            let (i, j) = (vs.iter().position(|v| v == from).unwrap(), vs.iter().position(|v| v == to).unwrap());
            assert!(i < j, "{t:?} {from} → {to}");
            assert!(t.schema_text_of(from).is_some() && t.schema_text_of(to).is_some());
        }
        for t in EventType::ALL {
            for v in &t.versions()[..t.versions().len() - 1] {
                assert!(has_upcaster(*t, v), "{t:?} reads v{v} but cannot upcast it");
            }
        }
    }
}
