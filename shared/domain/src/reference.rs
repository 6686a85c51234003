//! Reference (master) data: customers, legal entities, tax profiles, rate cards, project
//! templates, the service catalog and the workflow rules that are configured as data.
//!
//! The middleware never owns this data; it reads a snapshot through the
//! `ReferenceData` port and enforces source-of-record rules (a closed-won that names a
//! customer the customer master does not know is rejected, not created).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::invoicing::BillingCycle;
use crate::model::BillingModel;
use crate::money::{Currency, Money};

/// A contracting / invoicing legal entity of the firm (an ERP subsidiary or company code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegalEntity {
    /// Master-data id, e.g. `LE-DE-01`.
    pub id: String,
    /// Registered name.
    pub name: String,
    /// ISO 3166-1 alpha-2 country.
    pub country: String,
    /// Ledger currency.
    pub functional_currency: Currency,
    /// Currencies this entity may invoice in.
    pub billing_currencies: Vec<Currency>,
    /// Subsidiary / company code in the ERP.
    pub erp_subsidiary: String,
    /// Accounting periods up to and including this one (`YYYY-MM`) are closed: revenue for
    /// them books into the first open period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_through: Option<crate::revenue::Period>,
}

/// Tax regime of a tax profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaxRegime {
    /// Value-added tax charged by the supplier.
    Vat,
    /// Goods and services tax (SG, AU, IN, …).
    Gst,
    /// Consumption tax (JP).
    ConsumptionTax,
    /// US-style sales tax.
    SalesTax,
    /// Cross-border B2B supply: the customer self-assesses, invoice carries 0 % and a note.
    ReverseCharge,
    /// Exempt supply.
    Exempt,
}

/// How a customer is taxed for professional services (the tax nexus of the supply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaxProfile {
    /// Master-data id, e.g. `TP-DE-VAT`.
    pub id: String,
    /// ISO country of the tax jurisdiction.
    pub jurisdiction: String,
    /// Regime.
    pub regime: TaxRegime,
    /// Rate as a fraction (0.19 for 19 %).
    pub rate: Decimal,
    /// True when the customer's tax registration number must be on file.
    pub registration_required: bool,
}

/// Customer account status in the customer master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerStatus {
    /// May be contracted and invoiced.
    Active,
    /// Finance placed the account on credit hold: no new engagements.
    CreditHold,
    /// Closed account.
    Inactive,
}

/// A customer account in the customer master (source of record: ERP or MDM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// Master-data id, shared by CRM and ERP through the integration key.
    pub id: String,
    /// Account name.
    pub name: String,
    /// Parent account in the hierarchy, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// ISO country of the billing address.
    pub country: String,
    /// Default contracting legal entity.
    pub legal_entity_id: String,
    /// Tax profile.
    pub tax_profile_id: String,
    /// Preferred billing currency.
    pub currency: Currency,
    /// Account status.
    pub status: CustomerStatus,
    /// Tax registration (VAT id) on file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_registration: Option<String>,
    /// Customer number in the ERP.
    pub erp_customer_id: String,
    /// Default payment terms, e.g. `NET30`.
    pub payment_terms: String,
    /// How often its engagements are billed.
    #[serde(default)]
    pub billing_cycle: BillingCycle,
    /// Expense policy (which categories are re-billable, markup, caps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expense_policy_id: Option<String>,
    /// US ship-to state (sales tax nexus), e.g. `NY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_to_state: Option<String>,
    /// Sales-tax exemption certificate on file (US).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exemption_certificate: Option<String>,
    /// Bank accounts the customer pays from (IBAN / account numbers): a payment from one of
    /// them belongs to this customer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bank_accounts: Vec<String>,
    /// How cash without invoice references is applied.
    #[serde(default)]
    pub cash_rule: crate::receivables::CashRule,
}

/// An offering in the service catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceOffering {
    /// Catalog id, e.g. `SVC-ERP-IMPL`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Service line (practice) that owns delivery; workflow rules key on it.
    pub service_line: String,
    /// Billing models this offering may be sold with.
    pub billing_models: Vec<BillingModel>,
    /// Project template used when the opportunity names none.
    pub default_template_id: String,
    /// How its lines earn revenue (default: by billing model — T&M as delivered, milestones
    /// on completion, fixed fees ratably over the delivery period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue_method: Option<crate::revenue::RevenueMethod>,
}

/// One rate: role × delivery region × validity window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateCardEntry {
    /// Role code, e.g. `MANAGER`.
    pub role: String,
    /// Delivery region code, e.g. `EMEA-DE`.
    pub region: String,
    /// Hourly rate in the card's currency.
    #[serde(with = "rust_decimal::serde::str")]
    pub hourly_rate: Decimal,
    /// First day the rate applies.
    pub valid_from: NaiveDate,
    /// Last day the rate applies (open-ended when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<NaiveDate>,
}

/// A rate card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateCard {
    /// Id, e.g. `RC-EUR-2027`.
    pub id: String,
    /// Currency all rates are in.
    pub currency: Currency,
    /// Rates.
    pub entries: Vec<RateCardEntry>,
}

impl RateCard {
    /// The rate for `role` in `region` valid on `on`, if any.
    pub fn rate_for(&self, role: &str, region: &str, on: NaiveDate) -> Option<&RateCardEntry> {
        self.entries.iter().find(|e| e.role == role && e.region == region && e.valid_from <= on && e.valid_to.is_none_or(|to| on <= to))
    }
}

/// A phase of a project template; phases with a weight become billing milestones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplatePhase {
    /// Phase code, e.g. `DESIGN`.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Share of a milestone-billed line's value, in percent (phases sum to 100).
    #[serde(with = "rust_decimal::serde::str")]
    pub milestone_weight_pct: Decimal,
    /// When the phase ends, as a fraction of the project duration (0 < f ≤ 1).
    #[serde(with = "rust_decimal::serde::str")]
    pub ends_at_fraction: Decimal,
}

/// A project template shared by PSA and ERP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectTemplate {
    /// Id, e.g. `TPL-TRANSFORMATION`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Template code in the PSA.
    pub psa_template: String,
    /// Project type in the ERP.
    pub erp_project_type: String,
    /// Phases in order.
    pub phases: Vec<TemplatePhase>,
}

/// How one expense category is re-billed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpenseCategoryRule {
    /// Re-billable to the customer.
    pub billable: bool,
    /// Markup in percent (e.g. `10` for 10 %).
    #[serde(with = "rust_decimal::serde::str")]
    pub markup_pct: Decimal,
    /// Most that one expense of this category bills (after markup), if capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_per_item: Option<Money>,
}

/// An expense policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpensePolicy {
    /// Id, e.g. `EP-STANDARD`.
    pub id: String,
    /// Rules by category (a category not listed is not billable).
    pub categories: BTreeMap<String, ExpenseCategoryRule>,
}

/// A user of the firm's finance systems (approvals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// User id (as the approvals UI and the PSA know it).
    pub id: String,
    /// What the user may do, and for which legal entities (a role is granted per entity).
    pub grants: Vec<Grant>,
}

/// A role granted for some legal entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// Role, e.g. `billing_approver`.
    pub role: String,
    /// The legal entities it is granted for.
    pub legal_entities: Vec<String>,
}

/// Role that may approve invoices.
pub const ROLE_BILLING_APPROVER: &str = "billing_approver";

/// A tax jurisdiction as the tax engine's configuration knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaxJurisdiction {
    /// `DE`, `GB`, `SG`, `JP`, or `US-<state>`.
    pub code: String,
    /// Regime.
    pub regime: TaxRegime,
    /// Standard rate (fraction).
    #[serde(with = "rust_decimal::serde::str")]
    pub rate: Decimal,
    /// Whether professional services are taxable there (US states differ).
    #[serde(default = "yes")]
    pub services_taxable: bool,
    /// In the EU VAT area.
    #[serde(default)]
    pub eu: bool,
}

fn yes() -> bool {
    true
}

/// Workflow rules configured as data (no redeploy to change them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRules {
    /// Service lines whose engagements need `ContractApproved` from CLM before provisioning.
    #[serde(default)]
    pub approval_required_service_lines: Vec<String>,
    /// Regions the firm delivers from.
    #[serde(default)]
    pub delivery_regions: Vec<String>,
    /// Accepted payment terms codes.
    #[serde(default)]
    pub payment_terms: Vec<String>,
    /// Which system owns which attribute, and what the CRM write-back may send (the
    /// standard rules of [`crate::source_of_record`] when absent).
    #[serde(default)]
    pub source_of_record: crate::source_of_record::SourceOfRecord,
}

/// A consistent snapshot of all reference data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceData {
    /// Legal entities by id.
    pub legal_entities: BTreeMap<String, LegalEntity>,
    /// Tax profiles by id.
    pub tax_profiles: BTreeMap<String, TaxProfile>,
    /// Customers by id.
    pub customers: BTreeMap<String, Customer>,
    /// Service catalog by id.
    pub service_offerings: BTreeMap<String, ServiceOffering>,
    /// Rate cards by id.
    pub rate_cards: BTreeMap<String, RateCard>,
    /// Project templates by id.
    pub project_templates: BTreeMap<String, ProjectTemplate>,
    /// Workflow rules.
    #[serde(default)]
    pub workflow: WorkflowRules,
    /// Expense policies by id.
    #[serde(default)]
    pub expense_policies: BTreeMap<String, ExpensePolicy>,
    /// Users by id.
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// Invoice totals above which approval is needed, per legal entity, one per billing
    /// currency (an invoice in a currency without a threshold always needs approval).
    #[serde(default)]
    pub invoice_approval_thresholds: BTreeMap<String, Vec<Money>>,
    /// Tax jurisdictions by code (the tax engine's configuration).
    #[serde(default)]
    pub tax_jurisdictions: BTreeMap<String, TaxJurisdiction>,
}

/// A reference-data file that failed its consistency check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reference data is inconsistent: {}", .0.join("; "))]
pub struct ReferenceDataError(pub Vec<String>);

impl ReferenceData {
    /// Parses a JSON snapshot and checks its internal consistency.
    pub fn from_json(text: &str) -> Result<Self, ReferenceDataError> {
        // Straight from the text, so an error names its line and column (files the CLI reads).
        let data: ReferenceData = serde_json::from_str(text).map_err(|e| ReferenceDataError(vec![format!("not valid JSON: {e}")]))?;
        data.check()?;
        Ok(data)
    }

    /// Reads a snapshot from its JSON value and checks its internal consistency. (Through
    /// `&Value`, the one deserializer a function compiles the domain's types for.)
    pub fn from_value(value: &serde_json::Value) -> Result<Self, ReferenceDataError> {
        let data = ReferenceData::deserialize(value).map_err(|e| ReferenceDataError(vec![format!("not valid reference data: {e}")]))?;
        data.check()?;
        Ok(data)
    }

    /// Checks cross references (ids resolve, map keys match ids, template weights sum to 100).
    pub fn check(&self) -> Result<(), ReferenceDataError> {
        let mut errs = Vec::new();
        fn keys<T>(m: &BTreeMap<String, T>, id: impl Fn(&T) -> &str, what: &str, errs: &mut Vec<String>) {
            for (k, v) in m {
                if k != id(v) {
                    errs.push(format!("{what} key `{k}` does not match its id `{}`", id(v)));
                }
            }
        }
        keys(&self.legal_entities, |v| &v.id, "legal entity", &mut errs);
        keys(&self.tax_profiles, |v| &v.id, "tax profile", &mut errs);
        keys(&self.customers, |v| &v.id, "customer", &mut errs);
        keys(&self.service_offerings, |v| &v.id, "service offering", &mut errs);
        keys(&self.rate_cards, |v| &v.id, "rate card", &mut errs);
        keys(&self.project_templates, |v| &v.id, "project template", &mut errs);
        keys(&self.expense_policies, |v| &v.id, "expense policy", &mut errs);
        keys(&self.users, |v| &v.id, "user", &mut errs);
        keys(&self.tax_jurisdictions, |v| &v.code, "tax jurisdiction", &mut errs);
        for (le, limits) in &self.invoice_approval_thresholds {
            match self.legal_entities.get(le) {
                None => errs.push(format!("approval threshold for unknown legal entity {le}")),
                Some(entity) => {
                    for c in &entity.billing_currencies {
                        if !limits.iter().any(|m| m.currency == *c) {
                            errs.push(format!("legal entity {le} bills in {c} but has no approval threshold in {c}"));
                        }
                    }
                }
            }
        }
        for c in self.customers.values() {
            if let Some(p) = &c.expense_policy_id
                && !self.expense_policies.contains_key(p)
            {
                errs.push(format!("customer {} names unknown expense policy {p}", c.id));
            }
            if !self.legal_entities.contains_key(&c.legal_entity_id) {
                errs.push(format!("customer {} names unknown legal entity {}", c.id, c.legal_entity_id));
            }
            if !self.tax_profiles.contains_key(&c.tax_profile_id) {
                errs.push(format!("customer {} names unknown tax profile {}", c.id, c.tax_profile_id));
            }
            if let Some(p) = &c.parent_id
                && !self.customers.contains_key(p)
            {
                errs.push(format!("customer {} names unknown parent {p}", c.id));
            }
        }
        for s in self.service_offerings.values() {
            if !self.project_templates.contains_key(&s.default_template_id) {
                errs.push(format!("offering {} names unknown template {}", s.id, s.default_template_id));
            }
        }
        for t in self.project_templates.values() {
            let total: Decimal = t.phases.iter().map(|p| p.milestone_weight_pct).sum();
            if total != Decimal::ONE_HUNDRED {
                errs.push(format!("template {} milestone weights sum to {total}, not 100", t.id));
            }
            let mut last = Decimal::ZERO;
            for p in &t.phases {
                if p.ends_at_fraction <= last || p.ends_at_fraction > Decimal::ONE {
                    errs.push(format!("template {} phase {} ends_at_fraction must increase within (0, 1]", t.id, p.code));
                }
                last = p.ends_at_fraction;
            }
        }
        errs.extend(self.workflow.source_of_record.check().into_iter().map(|e| format!("source of record: {e}")));
        if errs.is_empty() { Ok(()) } else { Err(ReferenceDataError(errs)) }
    }

    /// Walks the account hierarchy from `customer_id` to its ultimate parent (inclusive).
    pub fn hierarchy(&self, customer_id: &str) -> Vec<String> {
        let mut path = Vec::new();
        let mut cur = Some(customer_id.to_owned());
        while let Some(id) = cur {
            if path.contains(&id) {
                break; // a cycle in master data must not hang the worker
            }
            cur = self.customers.get(&id).and_then(|c| c.parent_id.clone());
            path.push(id);
        }
        path
    }

    /// The keyed sections of the data set (every member but `workflow`), as stores that
    /// keep one item per entity name them.
    pub const SECTIONS: [&'static str; 10] = [
        "legal_entities",
        "tax_profiles",
        "customers",
        "service_offerings",
        "rate_cards",
        "project_templates",
        "expense_policies",
        "users",
        "invoice_approval_thresholds",
        "tax_jurisdictions",
    ];

    /// The customer paying from bank account `account` (normalised: no spaces, upper case).
    pub fn customer_by_account(&self, account: &str) -> Option<&Customer> {
        let norm = |a: &str| a.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_uppercase();
        let wanted = norm(account);
        self.customers.values().find(|c| c.bank_accounts.iter().any(|a| norm(a) == wanted))
    }

    /// The user `id` when they hold `role` for `legal_entity`.
    pub fn user_with_role(&self, id: &str, role: &str, legal_entity: &str) -> Option<&User> {
        self.users.get(id).filter(|u| u.grants.iter().any(|g| g.role == role && g.legal_entities.iter().any(|l| l == legal_entity)))
    }

    /// True when the service line needs CLM approval before provisioning.
    pub fn approval_required(&self, service_line: &str) -> bool {
        self.workflow.approval_required_service_lines.iter().any(|s| s == service_line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_reference_data_is_serialised_should_have_exactly_the_named_sections_and_workflow() {
        let v = serde_json::to_value(ReferenceData::default()).unwrap_or_default();
        let mut keys: Vec<&str> = v.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
        keys.sort_unstable();
        let mut expected: Vec<&str> = ReferenceData::SECTIONS.iter().copied().chain(["workflow"]).collect();
        expected.sort_unstable();
        assert_eq!(keys, expected, "a store that lists the sections would drop a new one");
    }
}
