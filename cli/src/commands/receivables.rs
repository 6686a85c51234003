//! `o2c receivables`: open invoices, payments and how each was applied, unapplied cash,
//! ageing, overdue invoices and DSO — per customer, legal entity and firm.
//!
//! DSO is the count-back method (`o2c_domain::receivables::dso_count_back`): per customer,
//! per legal entity and for the firm, each in its invoicing currency (DSO is a number of
//! days, so no exchange rate is involved; a firm with several currencies gets one DSO per
//! currency).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use chrono::NaiveDate;
use clap::Args as ClapArgs;
use o2c_app::ports::EngagementStore;
use o2c_domain::receivables::{AGEING_BUCKETS, Receivables};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::backend::Backend;
use crate::{Target, load_reference, with_backend};

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Legal entities (repeatable; default: every one in the reference data).
    #[arg(long = "legal-entity")]
    legal_entities: Vec<String>,
    /// Only this customer (or `SUSPENSE`).
    #[arg(long)]
    customer: Option<String>,
    /// Ageing and DSO as of this day (default: today, UTC).
    #[arg(long)]
    as_of: Option<NaiveDate>,
    /// Reference data file (default: the bundled Northwind set).
    #[arg(long)]
    reference: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What one customer's receivables add up to.
#[derive(Serialize)]
struct Summary<'a> {
    legal_entity_id: &'a str,
    customer_id: &'a str,
    open: BTreeMap<&'static str, Decimal>,
    unapplied: BTreeMap<&'static str, Decimal>,
    ageing: BTreeMap<&'static str, Vec<(&'static str, Decimal)>>,
    dso: BTreeMap<&'static str, Decimal>,
    overdue: Vec<&'a str>,
    receivables: &'a Receivables,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let reference = load_reference(args.reference.as_deref())?;
    // Filters name reference-data ids: an unknown one is a typo, never an empty answer.
    if let Some(le) = args.legal_entities.iter().find(|le| !reference.legal_entities.contains_key(*le)) {
        usage!("unknown legal entity `{le}` ({})", reference.legal_entities.keys().cloned().collect::<Vec<_>>().join(", "));
    }
    if let Some(c) = args.customer.as_deref().filter(|c| *c != "SUSPENSE" && !reference.customers.contains_key(*c)) {
        usage!("unknown customer `{c}` (a customer id of the reference data, or SUSPENSE)");
    }
    let entities =
        if args.legal_entities.is_empty() { reference.legal_entities.keys().cloned().collect() } else { args.legal_entities.clone() };
    let as_of = args.as_of.unwrap_or_else(|| o2c_app::clock::Clock::now(&o2c_app::clock::SystemClock).date_naive());
    with_backend!(args.target, b => show(&b, &entities, args.customer.as_deref(), as_of, args.json).await)
}

async fn show<B: Backend>(b: &B, entities: &[String], customer: Option<&str>, as_of: NaiveDate, json: bool) -> Result<ExitCode> {
    report(b.store(), &b.label(), entities, customer, as_of, json).await
}

/// Prints the receivables of `entities` (one customer's, when given) held in `store`.
pub async fn report<S: EngagementStore>(
    store: &S,
    label: &str,
    entities: &[String],
    customer: Option<&str>,
    as_of: NaiveDate,
    json: bool,
) -> Result<ExitCode> {
    let mut all = Vec::new();
    for le in entities {
        all.extend(o2c_app::receivables::history(store, le, customer).await?);
    }
    all.sort_by(|a, b| (&a.legal_entity_id, &a.customer_id).cmp(&(&b.legal_entity_id, &b.customer_id)));
    let summaries: Vec<Summary<'_>> = all.iter().map(|r| summary(r, as_of)).collect();
    let group = |key: &dyn Fn(&Receivables) -> String| -> BTreeMap<String, BTreeMap<&'static str, Decimal>> {
        let mut by: BTreeMap<String, Vec<&Receivables>> = BTreeMap::new();
        for r in &all {
            by.entry(key(r)).or_default().push(r);
        }
        by.into_iter().map(|(k, rs)| (k, dso(&rs, as_of))).collect()
    };
    let by_entity = group(&|r| r.legal_entity_id.clone());
    let firm = dso(&all.iter().collect::<Vec<_>>(), as_of);
    if json {
        let doc = serde_json::json!({"as_of": as_of, "customers": summaries, "dso_by_legal_entity": by_entity, "dso_firm": firm});
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    if summaries.is_empty() {
        outln!("No receivables in {label} (nothing posted, no payment received).");
        return Ok(ExitCode::SUCCESS);
    }
    outln!("Receivables as of {as_of} ({label})");
    for s in &summaries {
        print_customer(s);
    }
    outln!("DSO by legal entity (count-back):");
    for (le, d) in &by_entity {
        outln!("  {le:<10} {}", days(d));
    }
    outln!("DSO firm-wide: {}", days(&firm));
    Ok(ExitCode::SUCCESS)
}

fn summary(r: &Receivables, as_of: NaiveDate) -> Summary<'_> {
    let ageing = r.ageing(as_of).into_iter().map(|(c, buckets)| (c, AGEING_BUCKETS.iter().copied().zip(buckets).collect())).collect();
    Summary {
        legal_entity_id: &r.legal_entity_id,
        customer_id: &r.customer_id,
        open: r.balance(),
        unapplied: r.unapplied(),
        ageing,
        dso: dso(&[r], as_of),
        overdue: r.overdue(as_of).into_iter().map(|i| i.number.as_str()).collect(),
        receivables: r,
    }
}

/// DSO per currency over some receivables (see [`Receivables::dso_of`]).
fn dso(rs: &[&Receivables], as_of: NaiveDate) -> BTreeMap<&'static str, Decimal> {
    Receivables::dso_of(rs, as_of)
}

fn days(d: &BTreeMap<&'static str, Decimal>) -> String {
    if d.is_empty() {
        return "—".into();
    }
    d.iter().map(|(c, v)| format!("{v} days ({c})")).collect::<Vec<_>>().join(", ")
}

fn amounts(m: &BTreeMap<&'static str, Decimal>) -> String {
    if m.values().all(Decimal::is_zero) {
        return "0".into();
    }
    m.iter().filter(|(_, v)| !v.is_zero()).map(|(c, v)| format!("{c} {v}")).collect::<Vec<_>>().join(", ")
}

fn print_customer(s: &Summary<'_>) {
    let r = s.receivables;
    outln!(
        "{} / {}: open {}  unapplied {}  DSO {}  overdue {}",
        s.legal_entity_id,
        s.customer_id,
        amounts(&s.open),
        amounts(&s.unapplied),
        days(&s.dso),
        if s.overdue.is_empty() { "none".to_owned() } else { s.overdue.join(", ") }
    );
    for (cur, buckets) in &s.ageing {
        let cols: Vec<String> = buckets.iter().map(|(b, v)| format!("{b} {v}")).collect();
        outln!("  ageing {cur}: {}", cols.join("  "));
    }
    for i in r.invoices.values() {
        outln!(
            "  invoice {:<16} {:<28} due {}  total {:>16}  applied {:>16}  open {:>16}",
            i.number,
            i.invoice_id,
            i.due_date,
            i.total.to_string(),
            i.applied.to_string(),
            i.open().to_string()
        );
    }
    for p in r.payments.values() {
        let applied: Vec<String> = p.applications.iter().map(|a| format!("{} {}", a.number, a.amount)).collect();
        outln!(
            "  payment {:<24} {} value {}  {:<17} {:<8} → {}{}{}",
            p.payment_id,
            p.amount,
            p.value_date,
            p.rule.as_str(),
            p.status.as_str(),
            if applied.is_empty() { "nothing applied".to_owned() } else { applied.join(", ") },
            if p.unapplied.is_positive() { format!("; unapplied {}", p.unapplied) } else { String::new() },
            p.reversed_by.as_deref().map(|b| format!("; reversed by {b}")).unwrap_or_default()
        );
    }
    for i in r.open_issues() {
        outln!("  issue   {}: {}", i.payment_id, i.message);
    }
}
