//! The demo's last part: cash. The bank reports a partial payment of the posted Globex
//! invoice that quotes its number in the remittance text, then everything still open from
//! the customer's account without a reference and a little too much: it pays the open
//! invoices oldest first and leaves the difference on account. Then the receivables of every
//! legal entity with ageing, overdue invoices and DSO.

use anyhow::{Context, Result};
use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::AggregateKind;
use o2c_domain::invoicing::InvoiceStatus;
use o2c_embedded::Runtime;
use rust_decimal::Decimal;
use serde_json::json;

use super::billing::entry;
use super::play;

const GLOBEX: &str = "ENG-0068d00000GLBX01";

/// Plays the cash part; `n` numbers the steps, `seen` is the audit cursor.
pub async fn play_all(rt: &Runtime, n: &mut usize, seen: &mut i64) -> Result<()> {
    let invoices = rt.store().load_all(AggregateKind::Invoice, GLOBEX).await?;
    let invoice = invoices
        .invoices()
        .into_iter()
        .filter(|i| i.status == InvoiceStatus::Posted)
        .max_by_key(|i| i.invoice_id.clone())
        .cloned()
        .context("the billing half posted no Globex invoice")?;
    let number = invoice.number.clone().context("a posted invoice has a number")?;
    let reference = o2c_embedded::reference::northwind()?;
    let account = reference.customers.get(&invoice.customer_id).and_then(|c| c.bank_accounts.first().cloned()).unwrap_or_default();
    let currency = invoice.currency.code();
    let posted: Decimal = invoices
        .invoices()
        .into_iter()
        .filter(|i| i.status == InvoiceStatus::Posted && i.customer_id == invoice.customer_id)
        .map(|i| i.total.amount)
        .sum();
    let partial = (invoice.total.amount * Decimal::new(4, 1)).round_dp(2);
    let rest = posted - partial + Decimal::new(2500, 2);
    let credit = |id: &str, amount: Decimal, on: &str, payer: serde_json::Value, remittance: Option<String>| {
        let mut p = json!({"payment_id": id, "legal_entity_id": invoice.legal_entity_id, "amount": {"amount": amount.to_string(), "currency": currency},
            "value_date": on, "payer": payer});
        if let Some(r) = remittance {
            p["remittance"] = json!(r);
        }
        entry("o2c.bank", "PaymentReceived", &format!("bank:{id}"), &format!("corr-bank-{id}"), &format!("{on}T06:00:00Z"), p)
    };

    *n += 1;
    let title = format!("The bank credits {currency} {partial} quoting {number} in the remittance text (a partial payment)");
    let first =
        credit("CAMT-20270320-0001", partial, "2027-03-20", json!({"name": "GLOBEX MFG GMBH"}), Some(format!("Teilzahlung {number}")));
    play(rt, *n, &title, vec![first], seen).await?;

    *n += 1;
    let title = format!("Everything still open arrives from the customer's account, with no reference and {currency} 25.00 too much");
    let second = credit("CAMT-20270402-0007", rest, "2027-04-02", json!({"name": "GLOBEX MFG GMBH", "account": account}), None);
    play(rt, *n, &title, vec![second], seen).await?;

    let entities: Vec<String> = reference.legal_entities.keys().cloned().collect();
    let as_of = chrono::NaiveDate::from_ymd_opt(2027, 4, 2).context("date")?;
    crate::commands::receivables::report(rt.store(), "embedded demo", &entities, None, as_of, false).await?;
    outln!();
    Ok(())
}
