//! What must hold once the simulated firm has delivered, billed and been paid, read from
//! o2c's invoices and receivables and from the ERP and CRM simulators, and compared with
//! what the firm sent ([`Delivered`]):
//! - `invoiced_equals_billable`: per active engagement, every installment of its schedule,
//!   every milestone reported complete and every time entry (latest version) is billed on
//!   exactly one live invoice (at most one while the engagement has an open exception);
//!   nothing else is billed; an installment or milestone line bills the schedule's amount;
//!   the time and adjustment lines add up to Σ round(hours × the rate card's rate) of the
//!   latest versions (half away from zero, to the cent — the rule delivery intake states);
//!   every invoice's lines add up to its net, and net + tax to its total; nothing is billed
//!   before its cut-off (bill date, completion, work date), no entry is on two time lines;
//!   while the engagement has an open exception an item may be not yet billed — never
//!   billed twice or at another amount;
//! - `invoices_match_erp`: every posted invoice is in the ERP under its number with the same
//!   id and total, the ERP holds no other invoice and no invoice twice, and no invoice is
//!   left unposted without an open exception on its engagement;
//! - `segregation_of_duties`: no invoice was approved by the user who requested its run
//!   (the simulation sends such self-approvals on purpose);
//! - `cash_conserved`: every payment sent is in o2c's receivables (or parked with its
//!   reasons after its retry budget ran out; a payment applied in o2c whose ERP booking was
//!   never confirmed must be parked too), with applications +
//!   unapplied = amount; the ERP holds one receipt per payment with the same applications
//!   and rest; per invoice, what o2c applied = what the ERP applied = min(total, what was
//!   paid against it); every posted invoice is in its customer's receivables; Σ cash
//!   received = Σ applied + Σ unapplied;
//! - `crm_invoices_current`: the CRM shows every posted invoice with its total and open
//!   balance (total − applied), unless its engagement has an open exception or a sync of it
//!   is parked with its reasons (refused by the CRM, or dead-lettered).

use std::collections::{BTreeMap, BTreeSet};

use o2c_app::O2cError;
use o2c_app::Step;
use o2c_app::ports::{EngagementStore, RejectionStore};
use o2c_domain::aggregate::AggregateKind;
use o2c_domain::engagement::{Engagement, EngagementStatus};
use o2c_domain::ids::EngagementId;
use o2c_domain::invoicing::{InvoiceDoc, InvoiceStatus, LineKind, LineSource};
use o2c_domain::model::BillingItem;
use o2c_domain::receivables::PaymentStatus;
use o2c_domain::reference::ReferenceData;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use super::billing::Delivered;
use super::inputs::EngagementInput;
use super::invariants::{Check, Invariant, open_exception};
use crate::runtime::Runtime;

/// What was billed and paid, in the engagements' currency units (the simulation sells in EUR).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Billed {
    /// Time entries sent (latest versions).
    pub time_entries: usize,
    /// Milestones reported complete.
    pub milestones: usize,
    /// Self-approvals sent (each must be refused).
    pub self_approvals: usize,
    /// Live invoices (not rejected or voided).
    pub invoices: usize,
    /// Of which posted.
    pub posted: usize,
    /// Net invoiced.
    pub net: Decimal,
    /// Tax invoiced.
    pub tax: Decimal,
    /// Payments sent.
    pub payments: usize,
    /// Cash received.
    pub received: Decimal,
    /// Applied to invoices.
    pub applied: Decimal,
    /// Left on account.
    pub unapplied: Decimal,
    /// Payments parked with their reasons instead of applied (dead-lettered, refused).
    pub payments_parked: usize,
    /// Active engagements checked.
    pub engagements: usize,
    /// Of which with an open exception (billing may stop short, never double).
    pub excused: usize,
    /// Self-approvals refused on record (segregation of duties).
    pub self_approvals_refused: usize,
}

fn live(i: &InvoiceDoc) -> bool {
    !matches!(i.status, InvoiceStatus::Rejected | InvoiceStatus::Voided)
}

/// Checks the billing and cash invariants, appending them to `out`.
pub async fn check(
    rt: &Runtime,
    reference: &ReferenceData,
    generated: &[EngagementInput],
    delivered: &Delivered,
    out: &mut Vec<Invariant>,
) -> Result<Billed, O2cError> {
    let mut billed = Billed {
        time_entries: delivered.time.values().map(|t| t.len()).sum(),
        milestones: delivered.milestones.values().map(|m| m.len()).sum(),
        self_approvals: delivered.self_approved.len(),
        ..Billed::default()
    };
    let mut engagements: Vec<Engagement> = Vec::new();
    for g in generated {
        if let Some(v) = rt.store().load(&EngagementId::for_opportunity(&g.opportunity_id)).await?
            && v.value.status == EngagementStatus::Active
        {
            engagements.push(v.value);
        }
    }
    billed.engagements = engagements.len();
    let mut invoiced = Check::new("invoiced_equals_billable");
    let mut erp = Check::new("invoices_match_erp");
    let mut sod = Check::new("segregation_of_duties");
    // Posted invoices by number: (invoice id, total, engagement).
    let mut posted: BTreeMap<String, (String, o2c_domain::money::Money, String)> = BTreeMap::new();
    // Every numbered invoice: (invoice id, status, engagement has an open exception).
    let mut numbered: BTreeMap<String, (String, InvoiceStatus, bool)> = BTreeMap::new();
    for e in &engagements {
        let eng = e.engagement_id.to_string();
        let exception = open_exception(e);
        let all = rt.store().load_all(AggregateKind::Invoice, &eng).await?;
        let invoices: Vec<&InvoiceDoc> = all.invoices().into_iter().filter(|i| live(i)).collect();
        // What is billable: every installment (all fall due by the last run), the milestones
        // reported complete, the time entries sent.
        // Each with the day it became billable (the bill date; the completion date).
        let mut fixed: BTreeMap<String, (Decimal, chrono::NaiveDate)> = BTreeMap::new();
        let done = delivered.milestones.get(&eng);
        for item in e.billing_schedule.iter().flat_map(|s| &s.items) {
            match item {
                BillingItem::Installment { item_id, amount, bill_date, .. } => {
                    fixed.insert(format!("installment {item_id}"), (amount.amount, *bill_date));
                }
                BillingItem::Milestone { milestone_id, amount, .. } => {
                    if let Some(on) = done.and_then(|d| d.get(milestone_id)) {
                        fixed.insert(format!("milestone {milestone_id}"), (amount.amount, *on));
                    }
                }
                BillingItem::TimeAndMaterials { .. } => {}
            }
        }
        if exception {
            billed.excused += 1;
        }
        let sent = delivered.time.get(&eng);
        let mut expected_time = Decimal::ZERO;
        if let (Some(sent), Some(contract)) = (sent, &e.contract) {
            let card = contract.rate_card_id.as_ref().and_then(|id| reference.rate_cards.get(id));
            for (id, t) in sent {
                match card.and_then(|c| c.rate_for(&t.role, &contract.delivery_region, t.date)) {
                    Some(rate) => {
                        let exp = card.map_or(2, |c| c.currency.exponent());
                        expected_time += (t.hours * rate.hourly_rate).round_dp_with_strategy(exp, RoundingStrategy::MidpointAwayFromZero)
                    }
                    None => invoiced.expect(false, || format!("{eng}: no rate for {id} ({} on {})", t.role, t.date)),
                }
            }
        }
        // What the live invoices bill.
        let mut seen: BTreeMap<String, (usize, Decimal)> = BTreeMap::new();
        let mut entries: BTreeSet<&str> = BTreeSet::new();
        // Time lines per entry (adjustments may follow; a second time line is a double bill).
        let mut time_lines: BTreeMap<&str, usize> = BTreeMap::new();
        let mut time_net = Decimal::ZERO;
        for inv in all.invoices() {
            if let Some(n) = &inv.number {
                numbered.insert(n.clone(), (inv.invoice_id.clone(), inv.status, exception));
            }
        }
        for inv in &invoices {
            billed.invoices += 1;
            billed.net += inv.subtotal.amount;
            billed.tax += inv.tax_total.amount;
            let lines: Decimal = inv.lines.iter().map(|l| l.net.amount).sum();
            let tax: Decimal = inv.lines.iter().filter_map(|l| l.tax.map(|t| t.amount)).sum();
            invoiced.expect(
                lines == inv.subtotal.amount && tax == inv.tax_total.amount && inv.subtotal.amount + tax == inv.total.amount,
                || {
                    format!(
                        "{}: lines net {lines} tax {tax}, the invoice says {} + {} = {}",
                        inv.invoice_id, inv.subtotal, inv.tax_total, inv.total
                    )
                },
            );
            for l in &inv.lines {
                match (&l.source, l.kind) {
                    (LineSource::Installment { item_id }, _) => {
                        let what = format!("installment {item_id}");
                        let due = fixed.get(&what).map(|(_, d)| *d);
                        invoiced.expect(due.is_none_or(|d| d <= inv.cut_off), || {
                            format!("{}: {what} due {due:?} billed with cut-off {}", inv.invoice_id, inv.cut_off)
                        });
                        let s = seen.entry(what).or_default();
                        s.0 += 1;
                        s.1 += l.net.amount;
                    }
                    (LineSource::Milestone { milestone_id }, _) => {
                        let what = format!("milestone {milestone_id}");
                        let done_on = fixed.get(&what).map(|(_, d)| *d);
                        invoiced.expect(done_on.is_none_or(|d| d <= inv.cut_off), || {
                            format!("{}: {what} completed {done_on:?} billed with cut-off {}", inv.invoice_id, inv.cut_off)
                        });
                        let s = seen.entry(what).or_default();
                        s.0 += 1;
                        s.1 += l.net.amount;
                    }
                    (LineSource::Entries { entry_ids }, kind @ (LineKind::Time | LineKind::Adjustment)) => {
                        for id in entry_ids {
                            if kind == LineKind::Time {
                                *time_lines.entry(id.as_str()).or_default() += 1;
                                let worked = sent.and_then(|t| t.get(id)).map(|t| t.date);
                                invoiced.expect(worked.is_none_or(|d| d <= inv.cut_off), || {
                                    format!("{}: time entry {id} of {worked:?} billed with cut-off {}", inv.invoice_id, inv.cut_off)
                                });
                            }
                        }
                        entries.extend(entry_ids.iter().map(String::as_str));
                        time_net += l.net.amount;
                    }
                    (LineSource::Entries { .. }, kind) => {
                        invoiced.expect(false, || format!("{}: a {kind:?} line the simulation never sent work for", inv.invoice_id));
                    }
                }
            }
            if delivered.self_approved.contains(&inv.invoice_id)
                && inv.approvals.iter().any(|a| a.user_id == inv.requested_by && a.refused.is_some())
            {
                billed.self_approvals_refused += 1;
            }
            if inv.status == InvoiceStatus::Posted {
                billed.posted += 1;
                if let Some(n) = &inv.number {
                    posted.insert(n.clone(), (inv.invoice_id.clone(), inv.total, eng.clone()));
                }
                let approvers: Vec<&str> = inv.approvals.iter().filter(|a| a.refused.is_none()).map(|a| a.user_id.as_str()).collect();
                sod.expect(!approvers.contains(&inv.requested_by.as_str()), || {
                    format!("{}: approved by {approvers:?}, requested by {}", inv.invoice_id, inv.requested_by)
                });
            }
            erp.expect(inv.status == InvoiceStatus::Posted || exception, || {
                format!("{}: left {} without an open exception on {eng}", inv.invoice_id, inv.status.as_str())
            });
        }
        // Billed once at its amount; while an exception is open, perhaps not yet — never
        // twice, never at another amount.
        for (what, (amount, _)) in &fixed {
            let (times, net) = seen.get(what).copied().unwrap_or_default();
            let once = times == 1 && net == *amount;
            let ok = once || (exception && times == 0);
            invoiced.expect(ok, || format!("{eng}: {what} ({amount}) billed {times} time(s), net {net}"));
        }
        for (id, n) in &time_lines {
            invoiced.expect(*n == 1, || format!("{eng}: time entry {id} on {n} time lines"));
        }
        for what in seen.keys().filter(|w| !fixed.contains_key(*w)) {
            invoiced.expect(false, || format!("{eng}: {what} billed but never due"));
        }
        let sent_ids: BTreeSet<&str> = sent.map(|s| s.keys().map(String::as_str).collect()).unwrap_or_default();
        for id in entries.difference(&sent_ids) {
            invoiced.expect(false, || format!("{eng}: time entry {id} billed but never sent"));
        }
        if !exception {
            for id in sent_ids.difference(&entries) {
                invoiced.expect(false, || format!("{eng}: time entry {id} sent and approved, never billed"));
            }
            invoiced.expect(time_net == expected_time, || {
                format!("{eng}: time billed {time_net}, the latest versions are worth {expected_time}")
            });
        }
    }
    // The ERP's side: one invoice per number and id, each a posted o2c invoice.
    let in_erp = rt.sims().invoices().await?;
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &in_erp {
        *ids.entry(i.invoice_id.as_str()).or_default() += 1;
        // Posted in o2c with the same id and total — or its posting is in an operator's
        // hands (the ERP committed, o2c never heard: an open exception says so).
        let ours = posted.get(&i.number);
        let flagged = numbered.get(&i.number).is_some_and(|(id, _, exception)| *id == i.invoice_id && *exception);
        erp.expect(ours.is_some_and(|(id, total, _)| *id == i.invoice_id && *total == i.invoice.total) || flagged, || {
            format!("ERP invoice {} ({}, {}) is not o2c's: {:?}", i.number, i.invoice_id, i.invoice.total, numbered.get(&i.number))
        });
    }
    for (id, n) in ids {
        erp.expect(n == 1, || format!("{id} is in the ERP {n} times"));
    }
    let numbers: BTreeSet<&str> = in_erp.iter().map(|i| i.number.as_str()).collect();
    for (number, (id, _, eng)) in &posted {
        erp.expect(numbers.contains(number.as_str()), || format!("{eng}: {id} posted as {number}, which the ERP does not hold"));
    }

    // Cash: o2c's receivables against what was sent and what the ERP booked.
    let mut cash = Check::new("cash_conserved");
    let mut applied_by_number: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut items: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    let mut payments = BTreeMap::new();
    // Payments an operator must look at (an open issue on the receivables).
    let mut flagged: BTreeSet<String> = BTreeSet::new();
    let entities: BTreeSet<&str> = delivered
        .payments
        .values()
        .map(|p| p.legal_entity_id.as_str())
        .chain(engagements.iter().filter_map(|e| e.contract.as_ref().map(|c| c.legal_entity.id.as_str())))
        .collect();
    for le in entities {
        // With what settled out of them onto their references (paid invoices, closed payments).
        for r in &o2c_app::receivables::history(rt.store(), le, None).await? {
            for (id, p) in &r.payments {
                payments.insert(id.clone(), p.clone());
            }
            flagged.extend(r.issues.iter().filter(|i| i.open).map(|i| i.payment_id.clone()));
            for item in r.invoices.values() {
                items.insert(item.number.clone(), (item.total.amount, item.applied.amount));
            }
        }
    }
    let mut refused: BTreeSet<String> = BTreeSet::new();
    // Invoices a payment applies to whose ERP booking is not confirmed (parked).
    let mut unsettled: BTreeSet<String> = BTreeSet::new();
    let rejections = rt.store().rejections(usize::MAX).await?;
    // Parked because its retries ran out (dead-lettered) — not for a business reason.
    let parked_events: BTreeSet<String> =
        rejections.iter().filter(|r| r.reasons.iter().any(|i| i.code == "dead_lettered")).filter_map(|r| r.event_id.clone()).collect();
    // What each invoice number was paid, by the payments o2c booked.
    let mut paid: BTreeMap<&str, Decimal> = BTreeMap::new();
    let receipts: BTreeMap<String, o2c_domain::receivables::CashReceipt> =
        rt.sims().receipts().await?.into_iter().map(|r| (r.receipt.payment_id.clone(), r.receipt)).collect();
    for (id, sent) in &delivered.payments {
        let amount = &sent.amount;
        billed.payments += 1;
        billed.received += amount.amount;
        let Some(p) = payments.get(id) else {
            // Not applied at all: acceptable only parked with its reasons (dead-lettered
            // after its retry budget, in the operators' rejections list).
            let parked = parked_events.contains(&format!("sim-bank:{id}"));
            billed.payments_parked += usize::from(parked);
            billed.unapplied += amount.amount;
            cash.expect(parked, || format!("payment {id} ({amount}) is in no receivables and not parked"));
            unsettled.insert(sent.number.clone());
            continue;
        };
        let applied: Decimal = p.applications.iter().map(|a| a.amount.amount).sum();
        billed.applied += applied;
        billed.unapplied += p.unapplied.amount;
        cash.expect(p.amount == *amount && applied + p.unapplied.amount == amount.amount, || {
            format!("payment {id}: received {amount}, recorded {} = applied {applied} + unapplied {}", p.amount, p.unapplied)
        });
        for a in &p.applications {
            *applied_by_number.entry(a.number.clone()).or_default() += a.amount.amount;
        }
        // Booked: the ERP holds the same receipt. Refused: the cash stays unapplied and an
        // open issue puts it in front of an operator (the ERP may hold a receipt it booked
        // before refusing a retry: reconciliation shows that difference).
        let booked = receipts.get(id);
        // Pending: applied in o2c, the ERP booking not confirmed — acceptable only parked
        // (its retries ran out; a redrive books exactly the receipt it holds).
        let parked = parked_events.contains(&format!("sim-bank:{id}"));
        let ok = match p.status {
            PaymentStatus::Booked => booked.is_some_and(|r| r.applications == p.applications && r.unapplied == p.unapplied),
            PaymentStatus::Refused => flagged.contains(id) && p.applications.is_empty(),
            PaymentStatus::Pending => parked,
        };
        cash.expect(ok, || {
            format!(
                "payment {id} {}: the ERP holds {:?}, o2c {applied} applied + {} unapplied",
                p.status.as_str(),
                booked.map(|r| (&r.applications, r.unapplied)),
                p.unapplied
            )
        });
        if p.status == PaymentStatus::Booked {
            *paid.entry(sent.number.as_str()).or_default() += amount.amount;
        } else {
            refused.insert(id.clone());
            billed.payments_parked += 1;
            unsettled.insert(sent.number.clone());
            unsettled.extend(p.applications.iter().map(|a| a.number.clone()));
        }
    }
    // What the ERP applied through the receipts o2c holds as booked.
    let mut erp_applied: BTreeMap<String, Decimal> = BTreeMap::new();
    for (id, r) in &receipts {
        if !refused.contains(id) {
            for a in &r.applications {
                *erp_applied.entry(a.number.clone()).or_default() += a.amount.amount;
            }
        }
    }
    for (number, (total, applied)) in &items {
        let ours = applied_by_number.get(number).copied().unwrap_or_default();
        let theirs = erp_applied.get(number).copied().unwrap_or_default();
        // Each payment quotes one invoice: what it was paid applies to it, up to its total
        // (the rest stays on account) — unless a payment naming it is parked or refused.
        let owed = paid.get(number.as_str()).copied().unwrap_or_default().min(*total);
        let settled = !unsettled.contains(number);
        let ok = ours == *applied && *applied <= *total && (!settled || (theirs == *applied && *applied == owed));
        cash.expect(ok, || {
            format!("{number}: total {total}, paid {owed}, receivables say {applied} applied, payments {ours}, the ERP {theirs}")
        });
    }
    // Every posted invoice is an open item of its customer's receivables.
    for (number, (id, _, eng)) in &posted {
        cash.expect(items.contains_key(number), || format!("{eng}: {id} posted as {number}, in no customer's receivables"));
    }
    cash.expect(billed.received == billed.applied + billed.unapplied, || {
        format!("received {} ≠ applied {} + unapplied {}", billed.received, billed.applied, billed.unapplied)
    });

    let mut crm = Check::new("crm_invoices_current");
    // An engagement with an open exception may lag in the CRM (its sync may be what failed).
    let excepted: BTreeSet<String> = engagements.iter().filter(|e| open_exception(e)).map(|e| e.engagement_id.to_string()).collect();
    let shown: BTreeMap<String, o2c_domain::receivables::CrmInvoice> =
        rt.sims().crm_invoices().await?.into_iter().map(|i| (i.number.clone(), i)).collect();
    // A record the CRM refused is parked with its reasons, in the operators' view; a redrive
    // writes it again.
    // So is a sync that dead-lettered (a payment's events belong to no engagement).
    let parked: Vec<&o2c_app::ports::RejectedMessage> = rejections.iter().filter(|r| r.step == Step::CrmInvoiceSync.name()).collect();
    for (number, (_, total, eng)) in posted.iter().filter(|(_, (_, _, eng))| !excepted.contains(eng)) {
        if unsettled.contains(number)
            || parked.iter().any(|r| r.body.contains(number.as_str()) || r.reasons.iter().any(|i| i.message.contains(number.as_str())))
        {
            continue;
        }
        let applied = items.get(number).map(|(_, a)| *a).unwrap_or_default();
        let c = shown.get(number);
        crm.expect(c.is_some_and(|c| c.total == *total && c.open_balance.amount == total.amount - applied), || {
            format!(
                "{eng}: {number} (total {total}, applied {applied}): the CRM shows {:?}",
                c.map(|c| (c.total, c.open_balance, &c.status))
            )
        });
    }
    out.extend([invoiced.done(), erp.done(), sod.done(), cash.done(), crm.done()]);
    Ok(billed)
}
