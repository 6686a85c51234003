//! Closed-won validation and enrichment: every mandatory commercial attribute is checked
//! and **all** failures are reported together; a valid opportunity is enriched from the
//! customer master, legal entity, tax profile, service catalog and rate card into a
//! [`Contract`].

use crate::ids::ContractId;
use std::collections::{BTreeSet, HashSet};

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::events::{Issue, OpportunityClosedWon, OpportunityLine, engagement_id_for};
use crate::model::{BillingModel, Contract, ContractLine, CustomerRef, Frequency, LegalEntityRef, RoleEstimate, TaxTreatment};
use crate::money::{Currency, Money};
use crate::reference::{CustomerStatus, ReferenceData};

/// The CRM stage value a closed-won must carry.
pub const CLOSED_WON_STAGE: &str = "Closed Won";
/// Where the contract currency is (payload v2; a v1 sender's `currency`).
const CURRENCY: &str = "total_value.currency";
/// Where the total contract value is (payload v2; a v1 sender's `amount`).
const AMOUNT: &str = "total_value.amount";
/// Longest name the PSA and ERP accept for a project (NetSuite: 83, Salesforce PSA: 80).
pub const MAX_NAME_LEN: usize = 80;

/// Collects issues while reading fields.
struct Check {
    issues: Vec<Issue>,
}

impl Check {
    fn push(&mut self, field: impl Into<String>, code: &str, message: impl Into<String>) {
        self.issues.push(Issue::new(field, code, message));
    }

    fn required<'a>(&mut self, field: &str, v: &'a Option<String>) -> Option<&'a str> {
        match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                self.push(field, "missing", format!("{field} is required"));
                None
            }
        }
    }

    fn date(&mut self, field: &str, v: &Option<String>) -> Option<NaiveDate> {
        let s = self.required(field, v)?;
        match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) => {
                self.push(field, "invalid_date", format!("{field} `{s}` is not a date (YYYY-MM-DD)"));
                None
            }
        }
    }

    fn money(&mut self, field: &str, v: &Option<String>, currency: Option<Currency>) -> Option<Decimal> {
        let s = self.required(field, v)?;
        let Ok(d) = Decimal::from_str_exact(s) else {
            self.push(field, "invalid_amount", format!("{field} `{s}` is not a decimal amount"));
            return None;
        };
        if d <= Decimal::ZERO {
            self.push(field, "not_positive", format!("{field} must be greater than zero"));
            return None;
        }
        if let Some(c) = currency
            && Money::new(d, c).ensure_exact().is_err()
        {
            self.push(field, "too_precise", format!("{field} `{s}` has more decimals than {c} allows ({})", c.exponent()));
            return None;
        }
        Some(d)
    }
}

/// Validates a closed-won against the reference data and enriches it into a contract.
/// Returns every issue found when it is not valid.
pub fn validate_and_enrich(opp: &OpportunityClosedWon, reference: &ReferenceData) -> Result<Contract, Vec<Issue>> {
    let mut c = Check { issues: Vec::new() };

    if opp.opportunity_id.trim().is_empty() {
        c.push("opportunity_id", "missing", "opportunity_id is required");
    }
    if opp.revision == 0 {
        c.push("revision", "invalid", "revision must be 1 or greater");
    }
    match opp.stage.as_deref() {
        Some(CLOSED_WON_STAGE) => {}
        Some(other) => c.push("stage", "not_closed_won", format!("stage is `{other}`, expected `{CLOSED_WON_STAGE}`")),
        None => c.push("stage", "missing", "stage is required"),
    }
    let name = c.required("name", &opp.name).map(str::to_owned);
    if let Some(n) = &name
        && n.chars().count() > MAX_NAME_LEN
    {
        c.push("name", "too_long", format!("name is longer than {MAX_NAME_LEN} characters (PSA/ERP limit)"));
    }
    let close_date = c.date("close_date", &opp.close_date);
    let start = c.date("start_date", &opp.start_date);
    let end = c.date("end_date", &opp.end_date);
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        c.push("end_date", "before_start", "end_date is before start_date");
    }
    if let (Some(cd), Some(s)) = (close_date, start)
        && s < cd - chrono::Days::new(90)
    {
        c.push("start_date", "too_far_before_close", "start_date is more than 90 days before close_date");
    }

    // Currency.
    let total = opp.total_value.clone().unwrap_or_default();
    let currency = c.required(CURRENCY, &total.currency).and_then(|code| match Currency::parse(code) {
        Ok(cur) => Some(cur),
        Err(e) => {
            c.push(CURRENCY, "invalid_currency", e.to_string());
            None
        }
    });
    let amount = c.money(AMOUNT, &total.amount, currency);

    // Customer master.
    let customer = c.required("account_id", &opp.account_id).and_then(|id| match reference.customers.get(id) {
        None => {
            c.push("account_id", "unknown_customer", format!("customer `{id}` is not in the customer master"));
            None
        }
        Some(cust) => {
            match cust.status {
                CustomerStatus::Active => {}
                CustomerStatus::CreditHold => c.push("account_id", "customer_on_credit_hold", format!("customer `{id}` is on credit hold")),
                CustomerStatus::Inactive => c.push("account_id", "customer_inactive", format!("customer `{id}` is inactive")),
            }
            Some(cust)
        }
    });

    // Legal entity: explicit or the customer's default.
    let le_id = opp.contracting_entity_id.clone().or_else(|| customer.map(|c| c.legal_entity_id.clone()));
    let legal_entity = match le_id {
        None => {
            if customer.is_some() {
                c.push("contracting_entity_id", "missing", "no contracting entity and none on the customer");
            }
            None
        }
        Some(id) => match reference.legal_entities.get(&id) {
            None => {
                c.push("contracting_entity_id", "unknown_legal_entity", format!("legal entity `{id}` does not exist"));
                None
            }
            Some(le) => Some(le),
        },
    };
    if let (Some(le), Some(cur)) = (legal_entity, currency)
        && !le.billing_currencies.contains(&cur)
    {
        c.push(
            CURRENCY,
            "currency_not_billable_by_entity",
            format!("{} cannot invoice in {cur} (allowed: {})", le.id, join(le.billing_currencies.iter())),
        );
    }

    // Tax profile.
    let tax = customer.and_then(|cust| match reference.tax_profiles.get(&cust.tax_profile_id) {
        None => {
            c.push("account_id", "unknown_tax_profile", format!("tax profile `{}` does not exist", cust.tax_profile_id));
            None
        }
        Some(tp) => {
            if tp.registration_required && cust.tax_registration.as_deref().is_none_or(str::is_empty) {
                c.push(
                    "account_id",
                    "missing_tax_registration",
                    format!("customer `{}` has no tax registration on file ({})", cust.id, tp.id),
                );
            }
            Some(tp)
        }
    });

    // Delivery region, payment terms.
    let region = c.required("delivery_region", &opp.delivery_region).map(str::to_owned);
    if let Some(r) = &region
        && !reference.workflow.delivery_regions.iter().any(|x| x == r)
    {
        c.push("delivery_region", "unknown_region", format!("delivery region `{r}` is not one the firm delivers from"));
    }
    let payment_terms = opp.payment_terms.clone().or_else(|| customer.map(|c| c.payment_terms.clone()));
    if let Some(pt) = &payment_terms
        && !reference.workflow.payment_terms.iter().any(|x| x == pt)
    {
        c.push("payment_terms", "unknown_payment_terms", format!("payment terms `{pt}` are not accepted"));
    }

    // Rate card (needed by T&M lines).
    let rate_card = opp.rate_card_id.as_deref().and_then(|id| match reference.rate_cards.get(id) {
        None => {
            c.push("rate_card_id", "unknown_rate_card", format!("rate card `{id}` does not exist"));
            None
        }
        Some(rc) => {
            if let Some(cur) = currency
                && rc.currency != cur
            {
                c.push(
                    "rate_card_id",
                    "rate_card_currency_mismatch",
                    format!("rate card `{id}` is in {} but the contract is in {cur}", rc.currency),
                );
            }
            Some(rc)
        }
    });

    // Lines.
    if opp.lines.is_empty() {
        c.push("lines", "missing", "at least one line is required");
    }
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    for (i, l) in opp.lines.iter().enumerate() {
        if let Some(line) =
            check_line(&mut c, i, l, &mut seen, currency, region.as_deref(), start, end, rate_card, opp.rate_card_id.is_some(), reference)
        {
            lines.push(line);
        }
    }

    // Totals.
    if let (Some(total), Some(_)) = (amount, currency)
        && lines.len() == opp.lines.len()
        && !lines.is_empty()
    {
        let sum: Decimal = lines.iter().map(|l| l.value.amount).sum();
        if sum != total {
            c.push(AMOUNT, "lines_do_not_sum_to_amount", format!("lines sum to {sum} but the total value is {total}"));
        }
    }

    // Project template: explicit or the first line's offering default.
    let template_id = opp.project_template_id.clone().or_else(|| {
        opp.lines
            .first()
            .and_then(|l| l.service_offering_id.as_ref())
            .and_then(|o| reference.service_offerings.get(o))
            .map(|o| o.default_template_id.clone())
    });
    let template = template_id.as_deref().and_then(|id| match reference.project_templates.get(id) {
        None => {
            c.push("project_template_id", "unknown_template", format!("project template `{id}` does not exist"));
            None
        }
        Some(t) => Some(t),
    });
    if template.is_some_and(|t| t.phases.is_empty()) && lines.iter().any(|l| l.billing_model == BillingModel::Milestone) {
        c.push("project_template_id", "template_has_no_milestones", "milestone lines need a template with phases");
    }

    if !c.issues.is_empty() {
        return Err(c.issues);
    }
    // Every Option below is Some when no issue was recorded; a None here is a bug in
    // the checks above, reported as an issue rather than a panic.
    let (
        Some(name),
        Some(currency),
        Some(amount),
        Some(customer),
        Some(le),
        Some(tax),
        Some(region),
        Some(start),
        Some(end),
        Some(template),
        Some(payment_terms),
    ) = (name, currency, amount, customer, legal_entity, tax, region, start, end, template, payment_terms)
    else {
        return Err(vec![Issue::new("", "internal", "validation passed but a required value is missing")]);
    };
    let service_lines: BTreeSet<String> = lines.iter().map(|l| l.service_line.clone()).collect();
    let approval_required = service_lines.iter().any(|s| reference.approval_required(s));
    Ok(Contract {
        contract_id: ContractId::for_opportunity(&opp.opportunity_id),
        engagement_id: engagement_id_for(&opp.opportunity_id),
        opportunity_id: opp.opportunity_id.clone(),
        revision: opp.revision,
        name,
        customer: CustomerRef {
            id: customer.id.clone(),
            name: customer.name.clone(),
            hierarchy: reference.hierarchy(&customer.id),
            country: customer.country.clone(),
            erp_customer_id: customer.erp_customer_id.clone(),
        },
        legal_entity: LegalEntityRef {
            id: le.id.clone(),
            name: le.name.clone(),
            country: le.country.clone(),
            erp_subsidiary: le.erp_subsidiary.clone(),
        },
        tax: TaxTreatment { profile_id: tax.id.clone(), jurisdiction: tax.jurisdiction.clone(), regime: tax.regime, rate: tax.rate },
        currency,
        total_value: Money::new(amount, currency),
        start_date: start,
        end_date: end,
        delivery_region: region,
        project_template_id: template.id.clone(),
        rate_card_id: opp.rate_card_id.clone(),
        payment_terms,
        customer_po: opp.customer_po.clone().filter(|s| !s.trim().is_empty()),
        service_lines: service_lines.into_iter().collect(),
        approval_required,
        opportunity_type: opp.opportunity_type,
        lines,
    })
}

#[allow(clippy::too_many_arguments)]
fn check_line(
    c: &mut Check,
    i: usize,
    l: &OpportunityLine,
    seen: &mut HashSet<String>,
    currency: Option<Currency>,
    region: Option<&str>,
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    rate_card: Option<&crate::reference::RateCard>,
    rate_card_named: bool,
    reference: &ReferenceData,
) -> Option<ContractLine> {
    let p = |f: &str| format!("lines[{i}].{f}");
    let line_id = c.required(&p("line_id"), &l.line_id).map(str::to_owned);
    if let Some(id) = &line_id
        && !seen.insert(id.clone())
    {
        c.push(p("line_id"), "duplicate_line_id", format!("line id `{id}` appears twice"));
    }
    let offering = c.required(&p("service_offering_id"), &l.service_offering_id).and_then(|id| match reference.service_offerings.get(id) {
        None => {
            c.push(p("service_offering_id"), "unknown_offering", format!("service offering `{id}` is not in the catalog"));
            None
        }
        Some(o) => Some(o),
    });
    let model = c.required(&p("billing_model"), &l.billing_model).and_then(|m| match BillingModel::parse(m) {
        None => {
            c.push(p("billing_model"), "invalid_billing_model", format!("`{m}` is not time_and_materials, fixed_fee or milestone"));
            None
        }
        Some(bm) => Some(bm),
    });
    if let (Some(o), Some(m)) = (offering, model)
        && !o.billing_models.contains(&m)
    {
        c.push(p("billing_model"), "billing_model_not_allowed", format!("{} cannot be sold as {}", o.id, m.as_str()));
    }
    let amount = c.money(&p("amount"), &l.amount, currency);

    let mut installments = None;
    let mut frequency = None;
    let mut roles = Vec::new();
    match model {
        Some(BillingModel::FixedFee) => {
            match l.installments {
                Some(n) if n >= 1 => installments = Some(n),
                Some(_) => c.push(p("installments"), "invalid", "installments must be 1 or more"),
                None => c.push(p("installments"), "missing", "fixed-fee lines need installments"),
            }
            match l.installment_frequency.as_deref().map(Frequency::parse) {
                Some(Some(f)) => frequency = Some(f),
                Some(None) => c.push(p("installment_frequency"), "invalid", "installment_frequency must be monthly or quarterly"),
                None => c.push(p("installment_frequency"), "missing", "fixed-fee lines need installment_frequency"),
            }
            if let (Some(n), Some(f), Some(s), Some(e)) = (installments, frequency, start, end) {
                let last = s.checked_add_months(chrono::Months::new(f.months() * (n - 1)));
                if last.is_none_or(|d| d > e) {
                    c.push(
                        p("installments"),
                        "installments_beyond_end",
                        format!("{n} {} installments run past end_date", if f == Frequency::Monthly { "monthly" } else { "quarterly" }),
                    );
                }
            }
        }
        Some(BillingModel::TimeAndMaterials) => {
            if !rate_card_named {
                c.push("rate_card_id", "missing", format!("lines[{i}] is time_and_materials and needs a rate card"));
            }
            if l.roles.is_empty() {
                c.push(p("roles"), "missing", "time_and_materials lines need role estimates");
            }
            for (j, r) in l.roles.iter().enumerate() {
                let rp = |f: &str| format!("lines[{i}].roles[{j}].{f}");
                let role = c.required(&rp("role"), &r.role);
                let hours = c.required(&rp("hours"), &r.hours).and_then(|h| match Decimal::from_str_exact(h) {
                    Ok(d) if d > Decimal::ZERO => Some(d),
                    _ => {
                        c.push(rp("hours"), "invalid_hours", format!("hours `{h}` must be a positive decimal"));
                        None
                    }
                });
                if let (Some(role), Some(rc), Some(region), Some(s)) = (role, rate_card, region, start) {
                    match rc.rate_for(role, region, s) {
                        None => c.push(rp("role"), "no_rate", format!("rate card {} has no rate for {role} in {region} on {s}", rc.id)),
                        Some(entry) => {
                            if let (Some(h), Some(cur)) = (hours, currency) {
                                roles.push(RoleEstimate {
                                    role: role.to_owned(),
                                    hours: h,
                                    hourly_rate: Money::new(entry.hourly_rate, cur),
                                });
                            }
                        }
                    }
                }
            }
            if let Some(cap) = amount
                && roles.len() == l.roles.len()
            {
                let estimate: Decimal = roles.iter().map(|r| r.hours * r.hourly_rate.amount).sum();
                if estimate > cap {
                    c.push(
                        p("amount"),
                        "estimate_exceeds_cap",
                        format!("role estimates price at {estimate}, above the not-to-exceed {cap}"),
                    );
                }
            }
        }
        Some(BillingModel::Milestone) | None => {}
    }

    let (Some(line_id), Some(o), Some(m), Some(a), Some(cur)) = (line_id, offering, model, amount, currency) else {
        return None;
    };
    Some(ContractLine {
        line_id,
        service_offering_id: o.id.clone(),
        service_line: o.service_line.clone(),
        description: l.description.clone().unwrap_or_else(|| o.name.clone()),
        billing_model: m,
        value: Money::new(a, cur),
        installments,
        frequency,
        roles,
    })
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}
