//! Cash application: a payment credited on a legal entity's account is matched to the
//! invoices it pays (see [`crate::receivables`] for the rules), booked in the ERP as a cash
//! receipt (create-or-get by the payment id), and kept in the customer's receivables.
//!
//! ```text
//! decide: find the customer — the invoice numbers quoted (their references; several
//!         customers' invoices: suspense), else the payer's bank account (reference data),
//!         else suspense; a reversal finds the customer of the payment it reverses, once
//!         that payment is booked or refused
//!         → load that customer's receivables (Need) → match
//!         → Run [BookReceipt], claiming the applied receivables and the payment's
//!           reference in the write that reserves the event
//! finalize: booked → the payment is booked; emit PaymentApplied (+ PaymentUnapplied for a
//!           rest) or PaymentReversed; refused → the applications come off again, the cash
//!           stays unapplied, an issue says why
//! ```
//!
//! The application is durable **before** the ERP sees the receipt: two payments of one
//! customer decided at once race on the receivables' version in the reservation, and the
//! loser decides again on what the winner applied — no invoice is ever applied twice. A
//! redelivery after a crash finds the payment reference still pending and books exactly the
//! receipt it holds (the ERP answers with the one it already has).
//!
//! What the payment closes settles out of the receivables in the write that books it: an
//! invoice paid in full onto its invoice reference, the payment (booked or refused; its
//! unapplied cash stays as a credit) onto its payment reference — the references of the
//! invoices a receipt applies to, and of paid invoices an earlier write left behind, are
//! loaded before it is claimed. A reversal brings back the payment and the invoices it
//! re-opens.
//!
//! A duplicate bank notification (same payment id) changes nothing. A payment in another
//! currency than the invoices it would pay is never converted: it stays unapplied with an
//! issue on the receivables. A reversal (returned payment, chargeback) takes its
//! applications back: the invoices re-open.

use crate::aggregate::{AggregateBody, AggregateKey, InvoiceRef, Load, Loaded, PaymentRef};
use crate::engagement::Action;
use crate::events::{AppliedLine, BusinessEvent, EventType, Issue, PaymentApplied, PaymentReceived, PaymentReversed, PaymentUnapplied};
use crate::ids::EngagementId;
use crate::metrics::{Metric, MetricUnit};
use crate::receivables::{
    Application, CashReceipt, CashRule, OpenItem, PaymentStatus, ReceivableIssue, Receivables, SUSPENSE, Settled, references_in,
};
use crate::reference::ReferenceData;

use super::{
    Command, CommandResult, Decision, Input, Next, Outcome, Plan, Purpose, Sequence, StepContext, StepError, WorkflowStep, step_meta,
};

/// The cash-application step.
pub struct CashApplication;

/// Invoice numbers a payment quotes: structured references first, then the remittance text.
pub fn quoted(p: &PaymentReceived) -> Vec<String> {
    let mut refs = p.references.clone();
    for r in p.remittance.as_deref().map(references_in).unwrap_or_default() {
        if !refs.contains(&r) {
            refs.push(r);
        }
    }
    refs
}

impl WorkflowStep for CashApplication {
    step_meta!(CashApplication, [PaymentReceived]);

    fn loads(&self, event: &BusinessEvent) -> Vec<Load> {
        let Some(p) = payment(event) else { return Vec::new() };
        let mut loads: Vec<Load> = quoted(p).iter().map(|n| Load::Key(AggregateKey::invoice_ref(&p.legal_entity_id, n))).collect();
        loads.push(Load::Key(AggregateKey::payment_ref(&p.legal_entity_id, &p.payment_id)));
        if let Some(original) = &p.reversal_of {
            loads.push(Load::Key(AggregateKey::payment_ref(&p.legal_entity_id, original)));
        }
        loads
    }

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let Some(p) = payment(input.event) else {
            return Err(StepError::NotConsumed(self.step(), input.event.event_type().detail_type()));
        };
        let owner = owner_of(p);
        validate(p, input.reference)?;
        if let Some(r) = input.others.payment_ref(&p.legal_entity_id, &p.payment_id) {
            if r.receipt.amount != p.amount || r.receipt.value_date != p.value_date || r.receipt.reverses != p.reversal_of {
                // A bank reference reused for another credit: never dropped as a duplicate.
                return Err(StepError::Rejected(vec![Issue::new(
                    "payment_id",
                    "payment_id_reused",
                    format!(
                        "payment {} was received as {} on {}; this notification says {} on {}: an operator must tell them apart",
                        p.payment_id, r.receipt.amount, r.receipt.value_date, p.amount, p.value_date
                    ),
                )]));
            }
            if r.status != PaymentStatus::Pending {
                return Ok(Next::Done(Decision::unchanged(
                    ctx,
                    &owner,
                    Action::PaymentDuplicate,
                    format!("payment {} is {} (customer {}): a duplicate notification", p.payment_id, r.status.as_str(), r.customer_id),
                )));
            }
            // Claimed by an earlier delivery that did not finish: book exactly that receipt.
            let mut need = unasked(input.others, &p.legal_entity_id, r.receipt.applications.iter().map(|a| a.number.as_str()));
            let key = AggregateKey::receivables(&p.legal_entity_id, &r.customer_id);
            if !input.others.asked(&key) {
                need.push(Load::Key(key));
            }
            if !need.is_empty() {
                return Ok(Next::Need(need));
            }
            return Ok(Next::Run(Plan::new(Purpose::BookReceipt, vec![Command::BookReceipt(r.receipt.clone())], Sequence::StopOnFailure)));
        }
        let customer = match &p.reversal_of {
            Some(original) => match input.others.payment_ref(&p.legal_entity_id, original) {
                Some(r) if r.status != PaymentStatus::Pending => r.customer_id.clone(),
                // The reversal overtook the payment it reverses (or its booking): retry until
                // the payment is booked or refused, so the two never cross in the ERP.
                _ => return Err(StepError::NotYet(format!("payment {original} (reversed by {}) is not booked yet", p.payment_id))),
            },
            None => customer_of(p, input),
        };
        let key = AggregateKey::receivables(&p.legal_entity_id, &customer);
        if !input.others.asked(&key) {
            return Ok(Next::Need(vec![Load::Key(key)]));
        }
        let mut rec = input
            .others
            .receivables(&p.legal_entity_id, &customer)
            .cloned()
            .unwrap_or_else(|| Receivables::new(&p.legal_entity_id, &customer));
        let erp_customer_id = input.reference.customers.get(&customer).map(|c| c.erp_customer_id.clone());
        // References brought back with what they held (written in the claim).
        let mut returned: Vec<AggregateBody> = Vec::new();
        let receipt = match &p.reversal_of {
            Some(original) => {
                let original_ref = input.others.payment_ref(&p.legal_entity_id, original);
                if let Some(settled) = original_ref.and_then(|r| r.settled.clone()).filter(|_| !rec.payments.contains_key(original)) {
                    rec.restore(settled);
                    returned.extend(original_ref.map(|r| AggregateBody::PaymentRef(PaymentRef { settled: None, ..r.clone() })));
                }
                let Some(orig) = rec.payments.get(original).cloned() else {
                    return Err(StepError::NotYet(format!("payment {original} is not in {customer}'s receivables yet")));
                };
                if let Some(by) = &orig.reversed_by {
                    return Ok(Next::Done(Decision::unchanged(
                        ctx,
                        &owner,
                        Action::PaymentDuplicate,
                        format!("{original} was already reversed by {by}"),
                    )));
                }
                if orig.amount != p.amount {
                    return Err(StepError::Rejected(vec![Issue::new(
                        "amount",
                        "partial_reversal",
                        format!(
                            "{} returns {} of payment {original} of {}: only whole reversals are applied automatically",
                            p.payment_id, p.amount, orig.amount
                        ),
                    )]));
                }
                // The invoices it paid in full settled out: bring them back to re-open them.
                let settled: Vec<&Application> = orig.applications.iter().filter(|a| !rec.invoices.contains_key(&a.invoice_id)).collect();
                let need = unasked(input.others, &p.legal_entity_id, settled.iter().map(|a| a.number.as_str()));
                if !need.is_empty() {
                    return Ok(Next::Need(need));
                }
                for a in settled {
                    let held = input.others.invoice_ref(&p.legal_entity_id, &a.number).and_then(|r| Some((r, r.settled.clone()?)));
                    if let Some((r, item)) = held {
                        rec.reopen(item);
                        returned.push(AggregateBody::InvoiceRef(InvoiceRef { settled: None, ..r.clone() }));
                    }
                }
                let refused = original_ref.is_some_and(|r| r.status == PaymentStatus::Refused);
                rec.reverse(original, &p.payment_id)?;
                if refused {
                    // The ERP never booked the original: nothing to reverse there. The cash
                    // left again; the unapplied credit it stood for is gone.
                    rec.raise(ReceivableIssue::new(
                        &p.payment_id,
                        format!("payment {original}, which the ERP refused, was returned ({}): no receipt to reverse", p.payment_id),
                        ctx.now,
                    ));
                    let reference = PaymentRef {
                        legal_entity_id: p.legal_entity_id.clone(),
                        payment_id: p.payment_id.clone(),
                        customer_id: customer.clone(),
                        status: PaymentStatus::Booked,
                        receipt: CashReceipt {
                            payment_id: p.payment_id.clone(),
                            legal_entity_id: p.legal_entity_id.clone(),
                            erp_customer_id: erp_customer_id.clone(),
                            amount: p.amount,
                            value_date: p.value_date,
                            applications: Vec::new(),
                            unapplied: p.amount,
                            reverses: Some(original.clone()),
                        },
                        settled: None,
                    };
                    let mut d = Decision::unchanged(
                        ctx,
                        &owner,
                        Action::PaymentApplied,
                        format!("{} returns {original}, which the ERP had refused", p.payment_id),
                    );
                    // The original, reversed now, settles out again onto its reference.
                    for body in settle(&mut rec, input.others, returned, vec![reference]) {
                        d = d.with(body);
                    }
                    return Ok(Next::Done(d.with(AggregateBody::Receivables(rec))));
                }
                rec.raise(ReceivableIssue::new(
                    &p.payment_id,
                    format!(
                        "payment {original} was returned or charged back ({}): {} invoice(s) are open again",
                        p.payment_id,
                        orig.applications.len()
                    ),
                    ctx.now,
                ));
                CashReceipt {
                    payment_id: p.payment_id.clone(),
                    legal_entity_id: p.legal_entity_id.clone(),
                    erp_customer_id,
                    amount: p.amount,
                    value_date: p.value_date,
                    applications: orig.applications,
                    unapplied: orig.unapplied,
                    reverses: Some(original.clone()),
                }
            }
            None => {
                // Quoted invoices of this customer already paid and settled out.
                let refs: Vec<&InvoiceRef> = quoted(p).iter().filter_map(|n| input.others.invoice_ref(&p.legal_entity_id, n)).collect();
                let settled: Vec<&OpenItem> =
                    refs.iter().filter(|r| r.customer_id == customer).filter_map(|r| r.settled.as_ref()).collect();
                let applied =
                    rec.apply(&p.payment_id, p.amount, p.value_date, &quoted(p), &settled, rule_of(input.reference, &customer))?;
                // The invoices it applies to settle out when it is booked, with paid ones an
                // earlier write left behind (over its cap): their references first.
                let left_behind = rec.invoices.values().filter(|i| Receivables::is_settled(i)).take(MAX_SETTLED_PER_WRITE);
                let numbers = applied.record.applications.iter().map(|a| a.number.as_str()).chain(left_behind.map(|i| i.number.as_str()));
                let need = unasked(input.others, &p.legal_entity_id, numbers);
                if !need.is_empty() {
                    return Ok(Next::Need(need));
                }
                rec.record(&applied)?;
                if let Some(why) = &applied.exception {
                    rec.raise(ReceivableIssue::new(&p.payment_id, why.clone(), ctx.now));
                }
                CashReceipt {
                    payment_id: p.payment_id.clone(),
                    legal_entity_id: p.legal_entity_id.clone(),
                    erp_customer_id,
                    amount: p.amount,
                    value_date: p.value_date,
                    applications: applied.record.applications,
                    unapplied: applied.record.unapplied,
                    reverses: None,
                }
            }
        };
        let reference = PaymentRef {
            legal_entity_id: p.legal_entity_id.clone(),
            payment_id: p.payment_id.clone(),
            customer_id: customer,
            status: PaymentStatus::Pending,
            receipt: receipt.clone(),
            settled: None,
        };
        let mut plan = Plan::new(Purpose::BookReceipt, vec![Command::BookReceipt(receipt)], Sequence::StopOnFailure);
        plan.claim_others = vec![AggregateBody::Receivables(rec), AggregateBody::PaymentRef(reference)];
        plan.claim_others.extend(returned);
        Ok(Next::Run(plan))
    }

    fn finalize(&self, done: &Outcome<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let Some(p) = payment(done.event) else {
            return Err(StepError::NotConsumed(self.step(), done.event.event_type().detail_type()));
        };
        let owner = owner_of(p);
        let Some(Command::BookReceipt(booked)) = done.plan.commands.first() else {
            return Err(StepError::UnexpectedResults(self.step(), "no receipt in the plan".into()));
        };
        let Some(reference) = done.others.payment_ref(&p.legal_entity_id, &p.payment_id) else {
            return Err(StepError::UnexpectedResults(self.step(), format!("payment {} has no reference after its claim", p.payment_id)));
        };
        if reference.status != PaymentStatus::Pending {
            return Ok(Next::Done(Decision::unchanged(
                ctx,
                &owner,
                Action::PaymentDuplicate,
                format!("payment {} was {} meanwhile", p.payment_id, reference.status.as_str()),
            )));
        }
        if &reference.receipt != booked {
            return Err(StepError::UnexpectedResults(
                self.step(),
                format!("payment {}: the ERP was sent another receipt than claimed", p.payment_id),
            ));
        }
        let customer = reference.customer_id.clone();
        let Some(mut rec) = done.others.receivables(&p.legal_entity_id, &customer).cloned() else {
            return Err(StepError::UnexpectedResults(self.step(), format!("{customer}'s receivables vanished after the claim")));
        };
        let mut reference = reference.clone();
        let le = p.legal_entity_id.as_str();
        // An invoice another payment's booking settled out meanwhile is read on its reference.
        let line = |rec: &Receivables, invoice_id: &str, number: &str, amount| -> AppliedLine {
            let settled = done.others.invoice_ref(le, number).and_then(|r| r.settled.as_ref()).filter(|i| i.invoice_id == invoice_id);
            let item = rec.invoices.get(invoice_id).or(settled);
            AppliedLine {
                invoice_id: invoice_id.to_owned(),
                number: number.to_owned(),
                engagement_id: item.map(|i| i.engagement_id.clone()).unwrap_or_default(),
                amount,
                open_after: item.map_or(amount, |i| i.open()),
            }
        };
        let mut events = Vec::new();
        let mut reopened: Vec<AggregateBody> = Vec::new();
        let summary = match (done.results, &booked.reverses) {
            ([CommandResult::Object(o)], Some(original)) => {
                reference.status = PaymentStatus::Booked;
                let reopened: Vec<AppliedLine> =
                    booked.applications.iter().map(|a| line(&rec, &a.invoice_id, &a.number, a.amount)).collect();
                events.push(ctx.emit(
                    EventType::PaymentReversed,
                    &owner,
                    format!("payment-reversed:{}", p.payment_id),
                    &PaymentReversed {
                        payment_id: p.payment_id.clone(),
                        reversed_payment_id: original.clone(),
                        legal_entity_id: p.legal_entity_id.clone(),
                        customer_id: customer.clone(),
                        reopened,
                    },
                ));
                format!("{} reverses {original} (ERP {}): {} invoice(s) re-opened", p.payment_id, o.id, booked.applications.len())
            }
            ([CommandResult::Object(o)], None) => {
                reference.status = PaymentStatus::Booked;
                let Some(record) = rec.payments.get_mut(&p.payment_id) else {
                    return Err(StepError::UnexpectedResults(
                        self.step(),
                        format!("payment {} is not in {customer}'s receivables", p.payment_id),
                    ));
                };
                record.status = PaymentStatus::Booked;
                record.erp_receipt_id = Some(o.id.clone());
                let record = record.clone();
                let applications: Vec<AppliedLine> =
                    record.applications.iter().map(|a| line(&rec, &a.invoice_id, &a.number, a.amount)).collect();
                events.push(ctx.emit(
                    EventType::PaymentApplied,
                    &owner,
                    format!("payment-applied:{}", p.payment_id),
                    &PaymentApplied {
                        payment_id: p.payment_id.clone(),
                        legal_entity_id: p.legal_entity_id.clone(),
                        customer_id: customer.clone(),
                        amount: p.amount,
                        rule: record.rule,
                        applications,
                        unapplied: record.unapplied,
                        erp_receipt_id: o.id.clone(),
                    },
                ));
                if record.unapplied.is_positive() {
                    let reason = rec
                        .issues
                        .iter()
                        .find(|i| i.payment_id == p.payment_id)
                        .map(|i| i.message.clone())
                        .unwrap_or_else(|| format!("left on {customer}'s account as credit"));
                    events.push(unapplied(ctx, p, &customer, record.unapplied, reason));
                }
                format!(
                    "{} of {} from {}: {} applied to {} invoice(s) by {}, {} unapplied (ERP {})",
                    p.payment_id,
                    p.amount,
                    p.payer.name,
                    crate::money::sum(p.amount.currency, record.applications.iter().map(|a| a.amount))?,
                    record.applications.len(),
                    record.rule.as_str(),
                    record.unapplied,
                    o.id
                )
            }
            ([CommandResult::Refused(r)], reverses) => {
                reference.status = PaymentStatus::Refused;
                let message = match reverses {
                    // The bank returned the money: o2c keeps the reversal; the ERP must book it by hand.
                    Some(original) => {
                        format!("the ERP refused reversing receipt {} of {original}: {}; book it there by hand", p.payment_id, r.reason())
                    }
                    None => {
                        // Its invoices stayed while it was pending (see `Receivables::settle`);
                        // one settled out all the same (stored before that rule) comes back.
                        for a in rec.payments.get(&p.payment_id).map(|r| r.applications.clone()).unwrap_or_default() {
                            let held = done.others.invoice_ref(le, &a.number).and_then(|r| Some((r, r.settled.clone()?)));
                            if let Some((r, item)) = held.filter(|_| !rec.invoices.contains_key(&a.invoice_id)) {
                                rec.reopen(item);
                                reopened.push(AggregateBody::InvoiceRef(InvoiceRef { settled: None, ..r.clone() }));
                            }
                        }
                        rec.unbook(&p.payment_id)?;
                        events.push(unapplied(ctx, p, &customer, p.amount, format!("the ERP refused the receipt: {}", r.reason())));
                        format!("the ERP refused cash receipt {} of {}: {}; the cash stays unapplied", p.payment_id, p.amount, r.reason())
                    }
                };
                rec.raise(ReceivableIssue::new(&p.payment_id, message.clone(), ctx.now));
                message
            }
            (other, _) => return Err(StepError::UnexpectedResults(self.step(), format!("{other:?}"))),
        };
        let mut metrics = vec![Metric::new(
            "PaymentsReceived",
            MetricUnit::Count,
            rust_decimal::Decimal::ONE,
            &[("LegalEntity", &p.legal_entity_id), ("Outcome", &outcome(&reference, &rec, &p.payment_id))],
        )];
        // The customer's DSO after this payment (count-back, per currency), as of today or
        // the value date when that is later.
        for (currency, days) in Receivables::dso_of(&[&rec], ctx.now.date_naive().max(p.value_date)) {
            metrics.push(Metric::new(
                "DaysSalesOutstanding",
                MetricUnit::None,
                days,
                &[("LegalEntity", &p.legal_entity_id), ("Customer", &customer), ("Currency", currency)],
            ));
        }
        let mut d = Decision::unchanged(ctx, &owner, Action::PaymentApplied, summary);
        // What the booking closed settles out onto its references (loaded before the claim).
        for body in settle(&mut rec, done.others, reopened, vec![reference]) {
            d = d.with(body);
        }
        d = d.with(AggregateBody::Receivables(rec));
        d.events = events;
        d.metrics = metrics;
        Ok(Next::Done(d))
    }
}

/// Loads of the references of invoice `numbers` not asked for yet (deduplicated).
fn unasked<'a>(others: &Loaded, legal_entity_id: &str, numbers: impl IntoIterator<Item = &'a str>) -> Vec<Load> {
    let mut need: Vec<Load> = Vec::new();
    for number in numbers {
        let key = AggregateKey::invoice_ref(legal_entity_id, number);
        if !others.asked(&key) && !need.contains(&Load::Key(key.clone())) {
            need.push(Load::Key(key));
        }
    }
    need
}

/// At most this many invoice references settle in one write: with the key record, the
/// audit entry, the receivables and the payment references, a commit stays well inside
/// DynamoDB's 100 items per transaction; the rest settles with the customer's next payment
/// (it loads the references of paid invoices left behind).
const MAX_SETTLED_PER_WRITE: usize = 64;

/// Settles what is closed in `rec` onto its references (see the module docs): those the
/// decision writes anyway (`invoices`, `payments`, which take what settles onto them) and
/// those `others` loaded; what has no loaded reference stays until a later write. Returns
/// every reference to write.
fn settle(rec: &mut Receivables, others: &Loaded, invoices: Vec<AggregateBody>, mut payments: Vec<PaymentRef>) -> Vec<AggregateBody> {
    let le = rec.legal_entity_id.clone();
    let mut refs: Vec<InvoiceRef> = Vec::new();
    let mut rest: Vec<AggregateBody> = Vec::new();
    for body in invoices {
        match body {
            AggregateBody::InvoiceRef(r) => refs.push(r),
            AggregateBody::PaymentRef(r) => payments.push(r),
            other => rest.push(other),
        }
    }
    let mut room = MAX_SETTLED_PER_WRITE.saturating_sub(refs.len());
    let (paid, closed) = rec.settle(|s| match s {
        Settled::Invoice(i) if refs.iter().any(|r| r.number == i.number) => true,
        Settled::Invoice(i) => {
            let fits = room > 0 && others.asked(&AggregateKey::invoice_ref(&le, &i.number));
            room -= usize::from(fits);
            fits
        }
        Settled::Payment(p) => payments.iter().any(|r| r.payment_id == p.payment_id) || others.payment_ref(&le, &p.payment_id).is_some(),
    });
    for item in paid {
        if let Some(r) = refs.iter_mut().find(|r| r.number == item.number) {
            r.settled = Some(item);
            continue;
        }
        let mut r = others.invoice_ref(&le, &item.number).cloned().unwrap_or_else(|| InvoiceRef {
            legal_entity_id: le.clone(),
            number: item.number.clone(),
            customer_id: rec.customer_id.clone(),
            invoice_id: item.invoice_id.clone(),
            settled: None,
        });
        r.settled = Some(item);
        refs.push(r);
    }
    for record in closed {
        if let Some(r) = payments.iter_mut().find(|r| r.payment_id == record.payment_id) {
            r.settled = Some(record);
        } else if let Some(mut r) = others.payment_ref(&le, &record.payment_id).cloned() {
            r.settled = Some(record);
            payments.push(r);
        }
    }
    rest.extend(refs.into_iter().map(AggregateBody::InvoiceRef));
    rest.extend(payments.into_iter().map(AggregateBody::PaymentRef));
    rest
}

/// `PaymentUnapplied` for `amount` of payment `p` left on `customer`'s account.
fn unapplied(
    ctx: &StepContext<'_>,
    p: &PaymentReceived,
    customer: &str,
    amount: crate::money::Money,
    reason: String,
) -> crate::events::OutgoingEvent {
    ctx.emit(
        EventType::PaymentUnapplied,
        &owner_of(p),
        format!("payment-unapplied:{}", p.payment_id),
        &PaymentUnapplied {
            payment_id: p.payment_id.clone(),
            legal_entity_id: p.legal_entity_id.clone(),
            customer_id: customer.to_owned(),
            amount,
            reason,
        },
    )
}

fn payment(event: &BusinessEvent) -> Option<&PaymentReceived> {
    match event {
        BusinessEvent::PaymentReceived(e) => Some(&e.payload),
        _ => None,
    }
}

fn owner_of(p: &PaymentReceived) -> EngagementId {
    EngagementId::new(crate::events::receivables_owner(&p.legal_entity_id))
}

fn validate(p: &PaymentReceived, reference: &ReferenceData) -> Result<(), StepError> {
    let mut issues = Vec::new();
    if !reference.legal_entities.contains_key(&p.legal_entity_id) {
        issues.push(Issue::new("legal_entity_id", "unknown_legal_entity", format!("no legal entity {}", p.legal_entity_id)));
    }
    if !p.amount.is_positive() {
        issues.push(Issue::new("amount", "not_positive", format!("a payment credits a positive amount, not {}", p.amount)));
    }
    if let Err(e) = p.amount.ensure_exact() {
        issues.push(Issue::new("amount", "too_precise", e.to_string()));
    }
    if p.reversal_of.as_deref() == Some(p.payment_id.as_str()) {
        issues.push(Issue::new("reversal_of", "reverses_itself", format!("{} cannot reverse itself", p.payment_id)));
    }
    if issues.is_empty() { Ok(()) } else { Err(StepError::Rejected(issues)) }
}

/// The customer a payment belongs to: the invoices it quotes (all of one customer), else
/// the payer's account, else suspense.
fn customer_of(p: &PaymentReceived, input: &Input<'_>) -> String {
    // The invoices quoted are the strongest evidence (a parent may pay a subsidiary's
    // invoices from its own account); invoices of several customers are for an operator.
    let owners: std::collections::BTreeSet<&str> =
        quoted(p).iter().filter_map(|n| input.others.invoice_ref(&p.legal_entity_id, n)).map(|r| r.customer_id.as_str()).collect();
    match owners.into_iter().collect::<Vec<_>>()[..] {
        [one] => return one.to_owned(),
        [_, _, ..] => return SUSPENSE.to_owned(),
        [] => {}
    }
    match p.payer.account.as_deref().and_then(|a| input.reference.customer_by_account(a)) {
        Some(c) => c.id.clone(),
        None => SUSPENSE.to_owned(),
    }
}

fn rule_of(reference: &ReferenceData, customer: &str) -> CashRule {
    reference.customers.get(customer).map(|c| c.cash_rule).unwrap_or(CashRule::None)
}

/// How a payment ended, for the metrics: its match rule, `refused`, or `returned`.
fn outcome(reference: &PaymentRef, rec: &Receivables, payment_id: &str) -> String {
    match (reference.status, &reference.receipt.reverses) {
        (PaymentStatus::Refused, _) => "refused".to_owned(),
        (_, Some(_)) => "returned".to_owned(),
        _ => rec.payments.get(payment_id).map_or("unmatched", |p| p.rule.as_str()).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::money::{Currency, Money};
    use crate::receivables::{CashRule, OpenItem};
    use rust_decimal::Decimal;

    #[test]
    fn when_one_payment_pays_more_invoices_than_a_transaction_holds_should_settle_them_over_several_writes() {
        let eur = Currency::parse("EUR").unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        let mut rec = Receivables::new("LE-X", "CUST-1");
        let n = MAX_SETTLED_PER_WRITE + 10;
        for i in 0..n {
            rec.post(OpenItem {
                invoice_id: format!("I{i}"),
                number: format!("LE-X-{i:06}"),
                engagement_id: EngagementId::new("ENG-1"),
                issue_date: day,
                due_date: day,
                total: Money::new(Decimal::ONE, eur),
                applied: Money::zero(eur),
                version: 1,
            });
        }
        let a = rec.apply("P1", Money::new(Decimal::from(n), eur), day, &[], &[], CashRule::OldestFirst).unwrap();
        rec.record(&a).unwrap();
        rec.payments.get_mut("P1").unwrap().status = PaymentStatus::Booked;
        let asked = Loaded {
            items: Vec::new(),
            asked: (0..n).map(|i| Load::Key(AggregateKey::invoice_ref("LE-X", &format!("LE-X-{i:06}")))).collect(),
        };
        let first = settle(&mut rec, &asked, Vec::new(), Vec::new());
        let refs = |bodies: &[AggregateBody]| bodies.iter().filter(|b| matches!(b, AggregateBody::InvoiceRef(_))).count();
        assert_eq!(refs(&first), MAX_SETTLED_PER_WRITE);
        assert_eq!(rec.invoices.len(), 10, "the rest waits for the next write");
        assert_eq!(refs(&settle(&mut rec, &asked, Vec::new(), Vec::new())), 10);
        assert!(rec.invoices.is_empty());
    }
}
