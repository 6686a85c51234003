//! Source-of-record rules: which system owns each attribute of an engagement, as reference
//! data (`workflow.source_of_record`), and what they decide.
//!
//! An attribute has one owner at a time. Ownership can move when the engagement reaches a
//! milestone — by default the CRM owns the commercial terms until the contract is signed
//! in the CLM, and the delivery attributes until the project exists in the PSA:
//!
//! | Attributes | Owner | Then |
//! |---|---|---|
//! | `total_value`, `lines`, `start_date`, `end_date`, `delivery_region`, `payment_terms`, `rate_card_id`, `account_id`, `contracting_entity_id` | CRM | CLM once the contract is signed |
//! | `name`, `project_template_id` | CRM | PSA once the project is provisioned |
//! | `customer_po`, `opportunity_type` | CRM | — |
//! | `approval` | CLM | — |
//! | `staffing`, `time`, `expenses`, `milestones` | PSA | — |
//! | `invoices`, `payments`, `revenue`, `project_accounting` | ERP | — |
//!
//! [`apply`] takes an update from one system: what the sender owns is applied, every other
//! attribute keeps the owner's value, and each attribute the sender tried to change without
//! owning it is returned ([`NotApplied`], with both values) — the caller audits it and, as
//! it conflicts with the owner's value, raises a data-stewardship exception. The CRM
//! write-back sends only the fields listed in `crm_writeback` ([`SourceOfRecord::crm_may_receive`]).
//!
//! [`SourceOfRecord::check`] refuses rules that leave an attribute without an owner or with
//! two, name an unknown attribute, split attributes that only make sense together
//! (the lines are priced from the currency, the dates, the delivery region and the rate
//! card: one owner for all of them, or a merge would keep lines priced for other terms), or
//! let the write-back send something the CRM owns.

use serde::{Deserialize, Serialize};

use crate::model::Contract;

/// A system around o2c that can own attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    /// The CRM (Salesforce, Dynamics).
    Crm,
    /// Contract lifecycle management (the signed statement of work).
    Clm,
    /// Professional services automation (projects, staffing, time).
    Psa,
    /// The ERP (invoices, payments, project accounting).
    Erp,
}

impl System {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crm => "crm",
            Self::Clm => "clm",
            Self::Psa => "psa",
            Self::Erp => "erp",
        }
    }
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A point in the engagement's life where ownership can move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Milestone {
    /// The CLM approved (signed) the statement of work.
    ContractSigned,
    /// Provisioning of the PSA and ERP projects started.
    ProjectProvisioned,
}

impl Milestone {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContractSigned => "contract_signed",
            Self::ProjectProvisioned => "project_provisioned",
        }
    }
}

/// Ownership moving to `to` when the engagement reaches `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// The milestone.
    pub at: Milestone,
    /// The new owner.
    pub to: System,
}

/// Who owns a group of attributes, and when that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnershipRule {
    /// Attribute names (see [`CONTRACT_ATTRIBUTES`] and [`OTHER_ATTRIBUTES`]).
    pub attributes: Vec<String>,
    /// The owner from the start.
    pub owner: System,
    /// Later owners, each from its milestone on; the last reached wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handoffs: Vec<Handoff>,
}

/// The firm's source-of-record rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOfRecord {
    /// Ownership, per group of attributes.
    pub rules: Vec<OwnershipRule>,
    /// The fields the CRM write-back may send (see [`CRM_WRITEBACK_FIELDS`]).
    pub crm_writeback: Vec<String>,
}

/// The attributes of a contract a closed-won carries (names as in its payload, v2).
pub const CONTRACT_ATTRIBUTES: &[&str] = &[
    "name",
    "account_id",
    "contracting_entity_id",
    "total_value",
    "lines",
    "start_date",
    "end_date",
    "delivery_region",
    "project_template_id",
    "rate_card_id",
    "payment_terms",
    "customer_po",
    "opportunity_type",
];

/// Attributes o2c takes from the other systems (each system's own events carry them).
pub const OTHER_ATTRIBUTES: &[&str] =
    &["approval", "staffing", "time", "expenses", "milestones", "invoices", "payments", "revenue", "project_accounting"];

/// Every field the CRM write-back can send.
pub const CRM_WRITEBACK_FIELDS: &[&str] = &[
    "sync_status",
    "engagement_status",
    "engagement_id",
    "contract_id",
    "psa_project_id",
    "erp_project_id",
    "erp_billing_schedule_id",
    "last_error",
];

/// Fields every write-back carries (with the opportunity id and the sync version).
pub const CRM_WRITEBACK_REQUIRED: &[&str] = &["sync_status", "engagement_status", "engagement_id"];

/// Attributes that only make sense together: one owner for all of each group. The lines
/// are priced from the others (rates by region and start date, in the contract currency).
const TOGETHER: &[&[&str]] = &[&["total_value", "lines", "start_date", "end_date", "delivery_region", "rate_card_id"]];

/// Which milestones an engagement has reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    /// The CLM signed the statement of work.
    pub contract_signed: bool,
    /// Provisioning started.
    pub project_provisioned: bool,
}

impl Reached {
    fn has(self, m: Milestone) -> bool {
        match m {
            Milestone::ContractSigned => self.contract_signed,
            Milestone::ProjectProvisioned => self.project_provisioned,
        }
    }
}

fn rule(attributes: &[&str], owner: System, handoffs: &[(Milestone, System)]) -> OwnershipRule {
    OwnershipRule {
        attributes: attributes.iter().map(|a| (*a).to_owned()).collect(),
        owner,
        handoffs: handoffs.iter().map(|(at, to)| Handoff { at: *at, to: *to }).collect(),
    }
}

impl Default for SourceOfRecord {
    /// The rules in the module documentation.
    fn default() -> Self {
        Self {
            rules: vec![
                rule(
                    &[
                        "total_value",
                        "lines",
                        "start_date",
                        "end_date",
                        "delivery_region",
                        "payment_terms",
                        "rate_card_id",
                        "account_id",
                        "contracting_entity_id",
                    ],
                    System::Crm,
                    &[(Milestone::ContractSigned, System::Clm)],
                ),
                rule(&["name", "project_template_id"], System::Crm, &[(Milestone::ProjectProvisioned, System::Psa)]),
                rule(&["customer_po", "opportunity_type"], System::Crm, &[]),
                rule(&["approval"], System::Clm, &[]),
                rule(&["staffing", "time", "expenses", "milestones"], System::Psa, &[]),
                rule(&["invoices", "payments", "revenue", "project_accounting"], System::Erp, &[]),
            ],
            crm_writeback: CRM_WRITEBACK_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
        }
    }
}

/// An attribute update that was not applied: its sender does not own it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotApplied {
    /// The attribute.
    pub attribute: String,
    /// Who sent the update.
    pub sender: System,
    /// Who owns the attribute now.
    pub owner: System,
    /// The owner's value (kept).
    pub kept: String,
    /// The sender's value (not applied).
    pub proposed: String,
}

impl std::fmt::Display for NotApplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} → {} (owned by the {})", self.attribute, self.kept, self.proposed, self.owner)
    }
}

impl SourceOfRecord {
    /// The rule that covers `attribute`.
    fn rule_of(&self, attribute: &str) -> Option<&OwnershipRule> {
        self.rules.iter().find(|r| r.attributes.iter().any(|a| a == attribute))
    }

    /// Who owns `attribute` once the engagement has reached `reached`.
    pub fn owner(&self, attribute: &str, reached: Reached) -> Option<System> {
        let r = self.rule_of(attribute)?;
        Some(r.handoffs.iter().rev().find(|h| reached.has(h.at)).map_or(r.owner, |h| h.to))
    }

    /// Whether the CRM write-back may send `field`.
    pub fn crm_may_receive(&self, field: &str) -> bool {
        self.crm_writeback.iter().any(|f| f == field)
    }

    /// Every problem with the rules (empty when they are sound).
    pub fn check(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let known = |a: &str| CONTRACT_ATTRIBUTES.contains(&a) || OTHER_ATTRIBUTES.contains(&a);
        let mut seen: Vec<&str> = Vec::new();
        for r in &self.rules {
            if r.attributes.is_empty() {
                errs.push(format!("a rule owned by the {} names no attribute", r.owner));
            }
            for a in &r.attributes {
                if !known(a) {
                    errs.push(format!("unknown attribute `{a}`"));
                } else if seen.contains(&a.as_str()) {
                    errs.push(format!("attribute `{a}` has two rules"));
                }
                seen.push(a);
            }
            for pair in r.handoffs.windows(2) {
                if pair[0].at == pair[1].at {
                    errs.push(format!("two handoffs at {} for {}", pair[0].at.as_str(), r.attributes.join(", ")));
                }
            }
        }
        for a in CONTRACT_ATTRIBUTES.iter().chain(OTHER_ATTRIBUTES) {
            if !seen.contains(a) {
                errs.push(format!("attribute `{a}` has no owner"));
            }
        }
        for group in TOGETHER {
            let rules: Vec<Option<&OwnershipRule>> = group.iter().map(|a| self.rule_of(a)).collect();
            if rules.windows(2).any(|w| w[0] != w[1]) {
                errs.push(format!("{} must share one rule (they only make sense together)", group.join(", ")));
            }
        }
        for f in &self.crm_writeback {
            if !CRM_WRITEBACK_FIELDS.contains(&f.as_str()) {
                errs.push(format!("the CRM write-back has no field `{f}` (it has {})", CRM_WRITEBACK_FIELDS.join(", ")));
            }
            // Write-back fields are o2c's own; one named like an attribute would send the CRM
            // an attribute back — never one the CRM owns at any point.
            if let Some(r) = self.rule_of(f)
                && (r.owner == System::Crm || r.handoffs.iter().any(|h| h.to == System::Crm))
            {
                errs.push(format!("the CRM write-back may not send `{f}`: the CRM owns it"));
            }
        }
        for f in CRM_WRITEBACK_REQUIRED {
            if !self.crm_may_receive(f) {
                errs.push(format!("the CRM write-back must send `{f}`"));
            }
        }
        errs
    }
}

/// One contract attribute: how to show it, compare it and copy it.
struct Attr {
    name: &'static str,
    show: fn(&Contract) -> String,
    same: fn(&Contract, &Contract) -> bool,
    /// Copies the attribute (and what is derived from it) from the first into the second.
    keep: fn(&Contract, &mut Contract),
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".to_owned())
}

const ATTRS: &[Attr] = &[
    Attr { name: "name", show: |c| c.name.clone(), same: |a, b| a.name == b.name, keep: |a, b| b.name = a.name.clone() },
    Attr {
        name: "account_id",
        show: |c| c.customer.id.clone(),
        same: |a, b| a.customer == b.customer,
        keep: |a, b| {
            b.customer = a.customer.clone();
            b.tax = a.tax.clone();
        },
    },
    Attr {
        name: "contracting_entity_id",
        show: |c| c.legal_entity.id.clone(),
        same: |a, b| a.legal_entity == b.legal_entity,
        keep: |a, b| b.legal_entity = a.legal_entity.clone(),
    },
    Attr {
        name: "total_value",
        show: |c| c.total_value.to_string(),
        same: |a, b| a.total_value == b.total_value && a.currency == b.currency,
        keep: |a, b| {
            b.total_value = a.total_value;
            b.currency = a.currency;
        },
    },
    Attr {
        name: "lines",
        show: |c| {
            let ids: Vec<String> = c
                .lines
                .iter()
                .map(|l| {
                    let rates: Vec<String> = l.roles.iter().map(|r| format!("{} {}/h", r.role, r.hourly_rate.amount)).collect();
                    if rates.is_empty() {
                        format!("{} {}", l.line_id, l.value)
                    } else {
                        format!("{} {} ({})", l.line_id, l.value, rates.join(", "))
                    }
                })
                .collect();
            format!("{} line(s): {}", c.lines.len(), ids.join(", "))
        },
        same: |a, b| a.lines == b.lines,
        keep: |a, b| {
            b.lines = a.lines.clone();
            b.service_lines = a.service_lines.clone();
            b.approval_required = a.approval_required;
        },
    },
    Attr {
        name: "start_date",
        show: |c| c.start_date.to_string(),
        same: |a, b| a.start_date == b.start_date,
        keep: |a, b| b.start_date = a.start_date,
    },
    Attr {
        name: "end_date",
        show: |c| c.end_date.to_string(),
        same: |a, b| a.end_date == b.end_date,
        keep: |a, b| b.end_date = a.end_date,
    },
    Attr {
        name: "delivery_region",
        show: |c| c.delivery_region.clone(),
        same: |a, b| a.delivery_region == b.delivery_region,
        keep: |a, b| b.delivery_region = a.delivery_region.clone(),
    },
    Attr {
        name: "project_template_id",
        show: |c| c.project_template_id.clone(),
        same: |a, b| a.project_template_id == b.project_template_id,
        keep: |a, b| b.project_template_id = a.project_template_id.clone(),
    },
    Attr {
        name: "rate_card_id",
        show: |c| opt(&c.rate_card_id),
        same: |a, b| a.rate_card_id == b.rate_card_id,
        keep: |a, b| b.rate_card_id = a.rate_card_id.clone(),
    },
    Attr {
        name: "payment_terms",
        show: |c| c.payment_terms.clone(),
        same: |a, b| a.payment_terms == b.payment_terms,
        keep: |a, b| b.payment_terms = a.payment_terms.clone(),
    },
    Attr {
        name: "customer_po",
        show: |c| opt(&c.customer_po),
        same: |a, b| a.customer_po == b.customer_po,
        keep: |a, b| b.customer_po = a.customer_po.clone(),
    },
    Attr {
        name: "opportunity_type",
        show: |c| {
            c.opportunity_type
                .and_then(|t| serde_json::to_value(t).ok())
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "(none)".to_owned())
        },
        same: |a, b| a.opportunity_type == b.opportunity_type,
        keep: |a, b| b.opportunity_type = a.opportunity_type,
    },
];

/// The first 8 hex digits of the SHA-256 of a contract's canonical JSON.
fn fingerprint(c: &Contract) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_value(c).map(|v| crate::events::canonical_json(&v)).unwrap_or_default();
    hex::encode(Sha256::digest(json.as_bytes())).chars().take(8).collect()
}

/// Applies `proposed` (sent by `sender`) to `current` under `rules`: the attributes the
/// sender owns come from `proposed`, the others stay as they are in `current`. Returns the
/// resulting contract and every attribute the sender changed without owning it.
pub fn apply(
    rules: &SourceOfRecord,
    reached: Reached,
    sender: System,
    current: &Contract,
    proposed: Contract,
) -> (Contract, Vec<NotApplied>) {
    let mut result = proposed;
    let mut refused = Vec::new();
    for a in ATTRS {
        if (a.same)(current, &result) {
            continue;
        }
        // An attribute without a rule is refused rather than applied: `check` keeps that from
        // happening with rules that passed it.
        let owner = rules.owner(a.name, reached);
        if owner == Some(sender) {
            continue;
        }
        let (mut kept, mut proposed) = ((a.show)(current), (a.show)(&result));
        if kept == proposed {
            // Different in what the summary leaves out: tell them apart by content.
            kept = format!("{kept} #{}", fingerprint(current));
            proposed = format!("{proposed} #{}", fingerprint(&result));
        }
        refused.push(NotApplied { attribute: a.name.to_owned(), sender, owner: owner.unwrap_or(System::Crm), kept, proposed });
        (a.keep)(current, &mut result);
    }
    (result, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_the_default_rules_are_checked_should_be_sound_and_cover_every_contract_attribute() {
        let rules = SourceOfRecord::default();
        assert_eq!(rules.check(), Vec::<String>::new());
        let names: Vec<&str> = ATTRS.iter().map(|a| a.name).collect();
        assert_eq!(names, CONTRACT_ATTRIBUTES, "one accessor per contract attribute, in order");
    }

    #[test]
    fn when_milestones_are_reached_should_hand_ownership_over() {
        let rules = SourceOfRecord::default();
        let none = Reached::default();
        let signed = Reached { contract_signed: true, project_provisioned: false };
        let provisioned = Reached { contract_signed: false, project_provisioned: true };
        let both = Reached { contract_signed: true, project_provisioned: true };
        assert_eq!(rules.owner("total_value", none), Some(System::Crm));
        assert_eq!(rules.owner("total_value", signed), Some(System::Clm));
        assert_eq!(rules.owner("total_value", provisioned), Some(System::Crm), "no signature, no handoff");
        assert_eq!(rules.owner("name", both), Some(System::Psa));
        assert_eq!(rules.owner("customer_po", both), Some(System::Crm));
        assert_eq!(rules.owner("payments", none), Some(System::Erp));
        assert_eq!(rules.owner("colour", none), None);
    }

    #[test]
    fn when_rules_are_unsound_should_list_every_problem() {
        let mut rules = SourceOfRecord::default();
        rules.rules[0].attributes.retain(|a| a != "lines");
        rules.rules[2].attributes.push("colour".into());
        rules.rules[3].attributes.push("customer_po".into());
        rules.rules[1].handoffs.push(Handoff { at: Milestone::ProjectProvisioned, to: System::Erp });
        rules.crm_writeback = vec!["engagement_status".into(), "amount".into(), "customer_po".into()];
        let errs = rules.check();
        for want in [
            "attribute `lines` has no owner",
            "unknown attribute `colour`",
            "attribute `customer_po` has two rules",
            "two handoffs at project_provisioned",
            "total_value, lines, start_date, end_date, delivery_region, rate_card_id must share one rule",
            "the CRM write-back has no field `amount`",
            "the CRM write-back may not send `customer_po`: the CRM owns it",
            "the CRM write-back must send `sync_status`",
        ] {
            assert!(errs.iter().any(|e| e.contains(want)), "{want} not in {errs:#?}");
        }
    }
}
