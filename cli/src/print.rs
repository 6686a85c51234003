//! Human-readable output.

use o2c_app::ports::{EngagementSummary, RejectedMessage};
use o2c_domain::aggregate::CrmSyncState;
use o2c_domain::delivery::{EntryKind, WipShard};
use o2c_domain::engagement::{AuditEntry, Engagement};
use o2c_domain::exception_case::ExceptionCase;
use o2c_domain::invoicing::{InvoiceDoc, Ledger};

/// One engagement's state, with what the CRM was last sent.
pub fn engagement(e: &Engagement, version: u64, crm: Option<&CrmSyncState>) {
    outln!("Engagement {}  (opportunity {}, version {version})", e.engagement_id, e.opportunity_id);
    outln!("  {:<18} {}", "status", e.status.as_str());
    outln!("  {:<18} {}", "correlation id", e.correlation_id);
    if let Some(c) = &e.contract {
        outln!("  {:<18} {} revision {}: {} — {}", "contract", c.contract_id, c.revision, c.total_value, c.name);
        outln!("  {:<18} {} (hierarchy {})", "customer", c.customer.id, c.customer.hierarchy.join(" > "));
        outln!("  {:<18} {} / ERP subsidiary {}", "legal entity", c.legal_entity.id, c.legal_entity.erp_subsidiary);
        outln!("  {:<18} {} {:?} {}", "tax", c.tax.profile_id, c.tax.regime, c.tax.rate);
        outln!("  {:<18} {} → {} in {}, template {}", "delivery", c.start_date, c.end_date, c.delivery_region, c.project_template_id);
        for l in &c.lines {
            outln!("  {:<18} {} {} {} {}", "line", l.line_id, l.service_offering_id, l.billing_model.as_str(), l.value);
        }
        if c.approval_required {
            let a = e
                .approval
                .as_ref()
                .map_or("not yet".to_owned(), |a| format!("{} by {} at {}", a.clm_agreement_id, a.approver_id, a.approved_at));
            outln!("  {:<18} {a}", "CLM approval");
        }
    }
    if let Some(id) = &e.psa_project_id {
        outln!("  {:<18} {id}", "PSA project");
    }
    if let Some(id) = &e.erp_project_id {
        outln!("  {:<18} {id}", "ERP project");
    }
    if !e.milestones.is_empty() {
        outln!(
            "  {:<18} {}",
            "milestones",
            e.milestones.iter().map(|m| format!("{} {} {}", m.milestone_id, m.due_date, m.amount)).collect::<Vec<_>>().join("; ")
        );
    }
    if let (Some(id), Some(s)) = (&e.erp_billing_schedule_id, &e.billing_schedule) {
        outln!("  {:<18} {id}: {} items, fixed {}, T&M cap {}", "billing schedule", s.items.len(), s.fixed_total, s.time_and_materials_cap);
    }
    if let Some(s) = crm.map(|c| &c.last) {
        outln!(
            "  {:<18} {} / {} (sync v{}) — {}",
            "CRM write-back",
            s.update.sync_status,
            s.update.engagement_status,
            s.update.sync_version,
            s.result
        );
    }
    if let Some(r) = &e.rejection {
        outln!("  {:<18} revision {} — {} reason(s):", "rejected", r.revision, r.reasons.len());
        for i in &r.reasons {
            outln!("  {:<18}   {} [{}] {}", "", i.field, i.code, i.message);
        }
    }
    for x in &e.exceptions {
        outln!(
            "  {:<18} {} {} {:?}: {}",
            if x.open { "OPEN exception" } else { "closed exception" },
            x.exception_id,
            x.step,
            x.kind,
            x.message
        );
        for c in &x.compensations {
            outln!("  {:<18}   compensation: {} {} {} → {}", "", c.system, c.action, c.object_id, c.outcome);
        }
        if let (Some(at), Some(why)) = (x.closed_at, &x.resolution) {
            outln!("  {:<18}   closed {}: {why}", "", at.to_rfc3339());
        }
    }
    for c in &e.compensation_due {
        outln!("  {:<18} {} {} {} (owed by a failed attempt)", "COMPENSATION DUE", c.system, c.action, c.object_id);
    }
}

/// A timeline.
pub fn timeline(entries: &[AuditEntry]) {
    outln!("Timeline:");
    for a in entries {
        outln!("  {}  {:<14} {:<21} {:<34} {}", a.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"), a.step, a.event_type, a.action, a.summary);
    }
}

/// Engagement list.
pub fn engagement_table(rows: &[EngagementSummary]) {
    if rows.is_empty() {
        outln!("no engagements");
        return;
    }
    outln!("{:<28} {:<22} {:<9} {:>7}  updated", "engagement", "status", "exception", "version");
    for r in rows {
        outln!(
            "{:<28} {:<22} {:<9} {:>7}  {}",
            r.engagement_id,
            r.status,
            if r.open_exception { "OPEN" } else { "-" },
            r.version,
            r.updated_at.to_rfc3339()
        );
    }
}

/// Parked rejections.
pub fn rejections(rows: &[RejectedMessage]) {
    if rows.is_empty() {
        outln!("no rejected messages");
        return;
    }
    for r in rows {
        let repeats = match (r.deliveries, r.last_rejected_at) {
            (n, Some(last)) if n > 1 => format!("  ×{n}, last {}", last.to_rfc3339()),
            _ => String::new(),
        };
        outln!(
            "{}  {}  {} {} event {} ({}){repeats}  [{}]",
            r.rejected_at.to_rfc3339(),
            r.step,
            r.source.as_deref().unwrap_or("?"),
            r.detail_type.as_deref().unwrap_or("?"),
            r.event_id.as_deref().unwrap_or("?"),
            r.error_type,
            r.rejection_id
        );
        for i in &r.reasons {
            outln!("    {} [{}] {}", i.field, i.code, i.message);
        }
    }
}

/// One invoice: header, lines with their tax, totals, approvals trail.
pub fn invoice(i: &InvoiceDoc) {
    outln!(
        "Invoice {}  {}  {}  issued {} due {}  ({} → {} / {})",
        i.invoice_id,
        i.number.as_deref().unwrap_or("(no number yet)"),
        i.status.as_str(),
        i.issue_date,
        i.due_date,
        i.legal_entity_id,
        i.customer_id,
        i.erp_invoice_id.as_deref().unwrap_or("not posted")
    );
    for l in &i.lines {
        outln!(
            "  {:>3} {:<11} {:<4} {:<64} {:>10} × {:>14} = {:>16}  tax {:>14} {}",
            l.line_no,
            format!("{:?}", l.kind).to_lowercase(),
            l.contract_line,
            truncate(&l.description, 64),
            l.quantity,
            l.unit_price.to_string(),
            l.net.to_string(),
            l.tax.map(|t| t.to_string()).unwrap_or_default(),
            l.tax_note.as_deref().unwrap_or_default()
        );
    }
    outln!(
        "  subtotal {}  tax {}  total {}  (tax jurisdiction {})",
        i.subtotal,
        i.tax_total,
        i.total,
        i.tax_jurisdiction.as_deref().unwrap_or("-")
    );
    for r in &i.approval_reasons {
        outln!("  needs approval: {r}");
    }
    for a in &i.approvals {
        match &a.refused {
            Some(why) => outln!("  {} {} by {}: REFUSED — {why}", a.at.to_rfc3339(), a.decision, a.user_id),
            None => outln!(
                "  {} {} by {}{}",
                a.at.to_rfc3339(),
                a.decision,
                a.user_id,
                a.comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
            ),
        }
    }
}

/// An engagement's WIP: accepted entries, what is billed and unbilled, refusals, milestones.
pub fn wip(shards: &[&WipShard], ledger: Option<&Ledger>) {
    let entries: Vec<_> = shards.iter().flat_map(|s| s.entries.values()).collect();
    let rejected: Vec<_> = shards.iter().flat_map(|s| s.rejected.iter()).collect();
    if entries.is_empty() && rejected.is_empty() && ledger.is_none() {
        return;
    }
    let hours: rust_decimal::Decimal = entries.iter().filter(|e| e.kind == EntryKind::Time).map(|e| e.quantity).sum();
    let expenses = entries.iter().filter(|e| e.kind == EntryKind::Expense).count();
    let amount: rust_decimal::Decimal = entries.iter().map(|e| e.amount.amount).sum();
    let billed: rust_decimal::Decimal = entries.iter().map(|e| e.billed_amount().amount).sum();
    let currency = entries.first().map(|e| e.amount.currency.code()).unwrap_or_default();
    outln!("WIP:");
    outln!("  {:<18} {} time entries ({hours} h), {expenses} expenses", "accepted", entries.len() - expenses);
    outln!("  {:<18} {currency} {amount} billable, {currency} {billed} billed, {currency} {} unbilled", "amounts", amount - billed);
    for r in &rejected {
        let codes: Vec<&str> = r.reasons.iter().map(|i| i.code.as_str()).collect();
        outln!("  {:<18} {} v{} at {}: {}", "REFUSED", r.entry_id, r.version, r.at.to_rfc3339(), codes.join(", "));
        for i in &r.reasons {
            outln!("  {:<18}   {} [{}] {}", "", i.field, i.code, i.message);
        }
    }
    if let Some(l) = ledger {
        for (id, m) in &l.milestones {
            outln!("  {:<18} {id} completed {} — {}", "milestone", m.completed_on, m.invoice_id.as_deref().unwrap_or("not billed yet"));
        }
        for (line, held) in &l.held_back {
            outln!("  {:<18} line {line}: {held} held back by its cap", "CAPPED");
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_owned() } else { format!("{}…", s.chars().take(n - 1).collect::<String>()) }
}

/// The exception queue.
pub fn case_table(cases: &[ExceptionCase], now: chrono::DateTime<chrono::Utc>) {
    if cases.is_empty() {
        outln!("no exceptions");
        return;
    }
    outln!(
        "{:<9} {:<24} {:>6}  {:<16} {:<10} {:>16}  {:<28} exception",
        "status",
        "kind",
        "age h",
        "assignee",
        "entity",
        "at stake",
        "engagement"
    );
    for c in cases {
        outln!(
            "{:<9} {:<24} {:>6}  {:<16} {:<10} {:>16}  {:<28} {}",
            c.status.as_str(),
            c.kind.as_str(),
            c.age_hours(now),
            c.assignee.as_deref().unwrap_or("-"),
            c.legal_entity_id.as_deref().unwrap_or("-"),
            c.amount_at_stake.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            c.engagement_id,
            c.exception_id
        );
    }
}

/// One exception case with its history.
pub fn case(c: &ExceptionCase, now: chrono::DateTime<chrono::Utc>) {
    outln!("Exception {}", c.exception_id);
    outln!("  {:<14} {}", "status", c.status.as_str());
    outln!("  {:<14} {} (raised by {}{})", "kind", c.kind.as_str(), c.step, if c.kind.is_financial() { "; financial" } else { "" });
    outln!("  {:<14} {}", "engagement", c.engagement_id);
    if let Some(le) = &c.legal_entity_id {
        outln!("  {:<14} {le}", "legal entity");
    }
    if let Some(m) = c.amount_at_stake {
        outln!("  {:<14} {m}", "at stake");
    }
    outln!("  {:<14} {}", "reason", c.message);
    outln!("  {:<14} {}", "correlation", c.correlation_id);
    outln!("  {:<14} {} (first {}, {} h ago)", "raised", c.raised_at.to_rfc3339(), c.first_raised_at.to_rfc3339(), c.age_hours(now));
    if let Some(a) = &c.assignee {
        outln!("  {:<14} {a}", "assignee");
    }
    if !c.caused_by.is_empty() {
        outln!("  {:<14} {}", "caused by", c.caused_by.join(", "));
    }
    if let Some(s) = &c.source_event {
        let kept = if s.payload.is_some() { "kept for retry" } else { "too large to keep: o2c replay" };
        outln!("  {:<14} {} {} ({kept})", "source event", s.detail_type, s.event_id);
    }
    if c.retries > 0 {
        outln!("  {:<14} {}", "retries", c.retries);
    }
    for x in &c.compensations {
        outln!("  {:<14} {} {} {} → {}", "compensation", x.system, x.action, x.object_id, x.outcome);
    }
    if let Some(r) = &c.resolution {
        outln!(
            "  {:<14} {} by {} at {}: {}",
            "closed",
            r.outcome.as_str(),
            r.actor.as_deref().unwrap_or("system"),
            r.at.to_rfc3339(),
            r.reason
        );
    }
    outln!("  History{}:", if c.history_dropped > 0 { format!(" ({} older entries dropped)", c.history_dropped) } else { String::new() });
    for h in &c.history {
        outln!("    {}  {:<16} {:<10} {}", h.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"), h.actor, h.action, h.note);
    }
}
