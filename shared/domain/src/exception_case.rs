//! The exception case: an exception as operators work it — its own aggregate
//! (`EXC#<exception id>` / `CASE`), apart from the engagement, which keeps only whether
//! the condition still holds.
//!
//! ```text
//!            raise ──► open ──assign──► assigned ──┐
//!                       │  ▲                       │ comment / retry (stay)
//!                       │  └──── raised again ◄────┤
//!                       ├── condition cleared ─────┼──► cleared
//!                       ├── resolve (reason) ──────┼──► resolved
//!                       └── waive (reason) ────────┴──► waived
//! ```
//!
//! Rules, all decided here (pure): every action names its actor; resolve and waive need
//! a reason; a financial exception ([`ExceptionKind::is_financial`]) cannot be resolved
//! or waived by whoever raised or caused it (segregation of duties) — the refusal is
//! recorded on the case; a closed case takes comments only; a retry needs the source
//! event's payload. The history keeps the first entry and the latest
//! [`HISTORY_KEPT`]` - 1` (the count of dropped ones is kept).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{
    COMMENT_MAX_CHARS, Compensation, ExceptionAction, ExceptionKind, ExceptionRaised, ExceptionResolved, ResolutionOutcome, SourceEvent,
};
use crate::ids::{EngagementId, ExceptionId};
use crate::money::Money;

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Raised, nobody on it.
    Open,
    /// Someone is on it.
    Assigned,
    /// Its condition cleared (the step completed).
    Cleared,
    /// An operator fixed it.
    Resolved,
    /// An operator accepted it as is.
    Waived,
}

impl CaseStatus {
    /// Every status.
    pub const ALL: [CaseStatus; 5] = [Self::Open, Self::Assigned, Self::Cleared, Self::Resolved, Self::Waived];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Assigned => "assigned",
            Self::Cleared => "cleared",
            Self::Resolved => "resolved",
            Self::Waived => "waived",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Still needs someone.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Open | Self::Assigned)
    }

    fn of(outcome: ResolutionOutcome) -> Self {
        match outcome {
            ResolutionOutcome::Cleared => Self::Cleared,
            ResolutionOutcome::Resolved => Self::Resolved,
            ResolutionOutcome::Waived => Self::Waived,
        }
    }
}

/// How a case closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResolution {
    /// How.
    pub outcome: ResolutionOutcome,
    /// Who (none when its condition cleared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One line of a case's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who (`system` for the steps).
    pub actor: String,
    /// What (`raised`, `assigned`, `commented`, `retried`, `resolved`, `refused`, …).
    pub action: String,
    /// Details.
    pub note: String,
}

/// The history entries a case keeps.
pub const HISTORY_KEPT: usize = 200;

/// The bytes of history a case keeps: with a 32 KB source event and a clipped message the
/// case stays far under its 350 KB item budget (DynamoDB's item limit is 400 KB).
pub const HISTORY_MAX_BYTES: usize = 160 * 1024;

/// The longest text a case keeps in one field (a system's error message, a note).
pub const TEXT_MAX_CHARS: usize = 2000;

/// `s` cut to `max` characters (an ellipsis marks the cut).
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The actor of entries made by the steps.
pub const SYSTEM_ACTOR: &str = "system";

/// An exception as operators work it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionCase {
    /// Id (the raising step's: stable per cause).
    pub exception_id: ExceptionId,
    /// Engagement (or receivables owner).
    pub engagement_id: EngagementId,
    /// Kind.
    pub kind: ExceptionKind,
    /// Step that raised it.
    pub step: String,
    /// Latest reason.
    pub message: String,
    /// Compensations the step performed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensations: Vec<Compensation>,
    /// Legal entity, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_entity_id: Option<String>,
    /// Money held up, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_at_stake: Option<Money>,
    /// Correlation id of the flow it came from (a retry keeps it).
    pub correlation_id: String,
    /// Who caused it (barred from resolving a financial one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caused_by: Vec<String>,
    /// The event being processed when it was raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event: Option<SourceEvent>,
    /// Status.
    pub status: CaseStatus,
    /// Who works it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// When this occurrence was raised (a reopening moves it).
    pub raised_at: DateTime<Utc>,
    /// When it was first raised.
    pub first_raised_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// How it closed (the latest closure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<CaseResolution>,
    /// Retries requested.
    #[serde(default)]
    pub retries: u32,
    /// What happened, oldest first.
    pub history: Vec<CaseEntry>,
    /// History entries dropped to stay under the budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub history_dropped: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What an operator action did to a case.
#[derive(Debug, Clone, PartialEq)]
pub enum Acted {
    /// Recorded (assigned, commented).
    Recorded,
    /// Re-drive the source event: its detail-type, payload and the key to deliver it under.
    Retry {
        /// The source event.
        source: SourceEvent,
        /// Its payload.
        payload: serde_json::Value,
        /// Retry number (1 for the first).
        attempt: u32,
    },
    /// Closed by the operator.
    Closed(CaseResolution),
    /// Refused (recorded on the case with the reason).
    Refused(String),
}

impl ExceptionCase {
    /// A new case from its `ExceptionRaised` (correlation id from the event's envelope).
    pub fn raised(p: &ExceptionRaised, correlation_id: &str, now: DateTime<Utc>) -> Self {
        let raised_at = p.raised_at.unwrap_or(now);
        let mut case = Self {
            exception_id: p.exception_id.clone(),
            engagement_id: p.engagement_id.clone(),
            kind: p.kind,
            step: p.step.clone(),
            message: clip(&p.message, TEXT_MAX_CHARS),
            compensations: p.compensations.clone(),
            legal_entity_id: p.legal_entity_id.clone(),
            amount_at_stake: p.amount_at_stake,
            correlation_id: correlation_id.to_owned(),
            caused_by: p.caused_by.clone(),
            source_event: p.source_event.clone(),
            status: CaseStatus::Open,
            assignee: None,
            raised_at,
            first_raised_at: raised_at,
            updated_at: now,
            resolution: None,
            retries: 0,
            history: Vec::new(),
            history_dropped: 0,
        };
        let by = if p.step.is_empty() { String::from("a step") } else { p.step.clone() };
        case.note(now, SYSTEM_ACTOR, "raised", format!("{by} raised it: {}", p.message));
        case
    }

    /// A later `ExceptionRaised` of the same id: a reopening (a later occurrence of a
    /// closed case), a refreshed reason, or — for the same occurrence — what a closure that
    /// overtook it could not know (step, source event, compensations). `false` when it
    /// changes nothing (a copy, or an older occurrence).
    pub fn raised_again(&mut self, p: &ExceptionRaised, now: DateTime<Utc>) -> bool {
        let at = p.raised_at.unwrap_or(now);
        if at < self.raised_at {
            return false;
        }
        let before = self.clone();
        if self.step.is_empty() {
            self.step = p.step.clone();
        }
        self.message = clip(&p.message, TEXT_MAX_CHARS);
        self.compensations = p.compensations.clone();
        self.amount_at_stake = p.amount_at_stake.or(self.amount_at_stake);
        self.legal_entity_id = self.legal_entity_id.take().or_else(|| p.legal_entity_id.clone());
        if p.source_event.is_some() {
            self.source_event = p.source_event.clone();
        }
        for c in &p.caused_by {
            if !self.caused_by.contains(c) {
                self.caused_by.push(c.clone());
            }
        }
        if at == self.raised_at {
            // The same occurrence: details only, never a reopening.
            if *self == before {
                return false;
            }
            self.note(now, SYSTEM_ACTOR, "updated", format!("{}: {}", p.step, p.message));
            return true;
        }
        self.raised_at = at;
        if self.status.is_open() {
            self.note(now, SYSTEM_ACTOR, "updated", format!("{} raised it again: {}", p.step, p.message));
        } else {
            self.status = if self.assignee.is_some() { CaseStatus::Assigned } else { CaseStatus::Open };
            self.note(now, SYSTEM_ACTOR, "reopened", format!("{} raised it again: {}", p.step, p.message));
        }
        true
    }

    /// An `ExceptionResolved`: closes the occurrence it names (and any earlier one). `false`
    /// when it changes nothing: the case has been raised again since, or it is closed and
    /// already knows that occurrence. A closure of a later occurrence than the case has seen
    /// (its refreshed raising is still on its way) moves `raised_at` forward, so that
    /// raising, arriving late, does not reopen it.
    pub fn closed_by(&mut self, p: &ExceptionResolved, now: DateTime<Utc>) -> bool {
        if p.raised_at < self.raised_at {
            return false;
        }
        let later = p.raised_at > self.raised_at;
        self.raised_at = p.raised_at;
        if !self.status.is_open() {
            return later;
        }
        self.close(CaseResolution { outcome: p.outcome, actor: p.actor.clone(), reason: p.reason.clone(), at: now });
        true
    }

    /// Moves the occurrence forward to `at` (an operator closed the engagement's record of a
    /// later occurrence than the case has seen).
    pub fn seen_occurrence(&mut self, at: DateTime<Utc>) {
        self.raised_at = self.raised_at.max(at);
    }

    /// An operator's action (pure: the caller commits the case and carries out a retry).
    pub fn act(&mut self, action: &ExceptionAction, actor: &str, now: DateTime<Utc>) -> Acted {
        match self.check(action, actor) {
            Err(why) => {
                self.note(now, actor, "refused", format!("{} refused: {why}", action.name()));
                Acted::Refused(why)
            }
            Ok(()) => match action {
                ExceptionAction::Assign { assignee } => {
                    let from = self.assignee.replace(assignee.clone());
                    self.status = CaseStatus::Assigned;
                    let note = match from {
                        Some(f) if &f != assignee => format!("reassigned from {f} to {assignee}"),
                        _ => format!("assigned to {assignee}"),
                    };
                    self.note(now, actor, "assigned", note);
                    Acted::Recorded
                }
                ExceptionAction::Comment { text } => {
                    self.note(now, actor, "commented", text.clone());
                    Acted::Recorded
                }
                ExceptionAction::Retry => {
                    let (Some(source), Some(payload)) =
                        (self.source_event.clone(), self.source_event.as_ref().and_then(|s| s.payload.clone()))
                    else {
                        // check() refused it already.
                        return Acted::Refused("no source event".into());
                    };
                    self.retries += 1;
                    let attempt = self.retries;
                    self.note(now, actor, "retried", format!("retry {attempt}: {} {} re-driven", source.detail_type, source.event_id));
                    Acted::Retry { source, payload, attempt }
                }
                ExceptionAction::Resolve { reason } | ExceptionAction::Waive { reason } => {
                    let outcome = if matches!(action, ExceptionAction::Resolve { .. }) {
                        ResolutionOutcome::Resolved
                    } else {
                        ResolutionOutcome::Waived
                    };
                    let r = CaseResolution { outcome, actor: Some(actor.to_owned()), reason: reason.clone(), at: now };
                    self.close(r.clone());
                    Acted::Closed(r)
                }
            },
        }
    }

    /// Why `actor` may not do `action` now, if so.
    fn check(&self, action: &ExceptionAction, actor: &str) -> Result<(), String> {
        if actor.trim().is_empty() {
            return Err("an action needs its actor".into());
        }
        let text = match action {
            ExceptionAction::Assign { assignee } => assignee,
            ExceptionAction::Comment { text } => text,
            ExceptionAction::Resolve { reason } | ExceptionAction::Waive { reason } => reason,
            ExceptionAction::Retry => "-",
        };
        if text.trim().is_empty() {
            return Err(format!(
                "{} needs a {}",
                action.name(),
                if matches!(action, ExceptionAction::Assign { .. }) { "assignee" } else { "text" }
            ));
        }
        if text.chars().count() > COMMENT_MAX_CHARS {
            return Err(format!("at most {COMMENT_MAX_CHARS} characters"));
        }
        if matches!(action, ExceptionAction::Comment { .. }) {
            return Ok(());
        }
        if !self.status.is_open() {
            return Err(format!("the exception is already {}", self.status.as_str()));
        }
        match action {
            ExceptionAction::Retry => match &self.source_event {
                Some(s) if s.payload.is_some() => Ok(()),
                Some(s) => Err(format!("{} {} was too large to keep: replay it from the archive (o2c replay)", s.detail_type, s.event_id)),
                None => Err("it was not raised while processing an event: nothing to retry".into()),
            },
            ExceptionAction::Resolve { .. } | ExceptionAction::Waive { .. } if self.kind.is_financial() => {
                // User ids compare trimmed and case-insensitively: `U-FIN-01 ` is U-FIN-01.
                let same = |c: &String| c.trim().eq_ignore_ascii_case(actor.trim());
                if self.caused_by.iter().any(same) {
                    Err(format!("segregation of duties: {actor} caused this {} exception", self.kind.as_str()))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    fn close(&mut self, r: CaseResolution) {
        self.status = CaseStatus::of(r.outcome);
        let who = r.actor.clone().unwrap_or_else(|| SYSTEM_ACTOR.to_owned());
        self.note(r.at, &who, r.outcome.as_str(), r.reason.clone());
        self.resolution = Some(r);
    }

    fn note(&mut self, at: DateTime<Utc>, actor: &str, action: &str, note: String) {
        self.updated_at = at;
        self.history.push(CaseEntry {
            at,
            actor: clip(actor, TEXT_MAX_CHARS),
            action: action.to_owned(),
            note: clip(&note, TEXT_MAX_CHARS),
        });
        // Entries and bytes are both capped (comments may be multibyte): the first entry
        // (the raising) stays, the oldest after it go.
        let size = |h: &[CaseEntry]| h.iter().map(|e| e.note.len() + e.actor.len() + e.action.len() + 64).sum::<usize>();
        while self.history.len() > 2 && (self.history.len() > HISTORY_KEPT || size(&self.history) > HISTORY_MAX_BYTES) {
            self.history.remove(1);
            self.history_dropped += 1;
        }
    }

    /// Age at `now` (from the first raising), in whole hours.
    pub fn age_hours(&self, now: DateTime<Utc>) -> i64 {
        (now - self.first_raised_at).num_hours()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, 0, 0).single().unwrap()
    }

    fn raised(kind: ExceptionKind, at: DateTime<Utc>) -> ExceptionRaised {
        ExceptionRaised {
            exception_id: ExceptionId::new("EXC-ENG-1-POST-INV-1"),
            engagement_id: EngagementId::new("ENG-1"),
            kind,
            step: "invoice-posting".into(),
            message: "the ERP refused".into(),
            compensations: vec![],
            raised_at: Some(at),
            legal_entity_id: Some("LE-DE".into()),
            amount_at_stake: None,
            caused_by: vec!["approver-1".into()],
            source_event: None,
        }
    }

    #[test]
    fn when_the_causer_resolves_a_financial_exception_should_refuse_and_record_it() {
        let mut c = ExceptionCase::raised(&raised(ExceptionKind::InvoicePostingFailed, t(1)), "corr", t(1));
        let r = c.act(&ExceptionAction::Resolve { reason: "fixed".into() }, "approver-1", t(2));
        assert!(matches!(r, Acted::Refused(ref why) if why.contains("segregation of duties")), "{r:?}");
        assert_eq!(c.status, CaseStatus::Open);
        assert_eq!(c.history.last().map(|h| h.action.as_str()), Some("refused"));
        let r = c.act(&ExceptionAction::Waive { reason: "credit note issued".into() }, "controller-2", t(3));
        assert!(matches!(r, Acted::Closed(_)));
        assert_eq!(c.status, CaseStatus::Waived);
    }

    #[test]
    fn when_the_causer_resolves_an_operational_exception_should_close_it() {
        let mut c = ExceptionCase::raised(&raised(ExceptionKind::CrmWritebackFailed, t(1)), "corr", t(1));
        assert!(matches!(c.act(&ExceptionAction::Resolve { reason: "fixed".into() }, "approver-1", t(2)), Acted::Closed(_)));
    }

    #[test]
    fn when_a_closed_case_is_raised_again_should_reopen_and_a_late_closure_should_not_close_it() {
        let mut c = ExceptionCase::raised(&raised(ExceptionKind::TaxFailed, t(1)), "corr", t(1));
        let first = ExceptionResolved {
            exception_id: c.exception_id.clone(),
            engagement_id: c.engagement_id.clone(),
            kind: c.kind,
            raised_at: t(1),
            outcome: ResolutionOutcome::Cleared,
            actor: None,
            reason: "taxed".into(),
        };
        assert!(c.closed_by(&first, t(2)));
        assert!(!c.raised_again(&raised(ExceptionKind::TaxFailed, t(1)), t(3)), "a copy of the first raising");
        assert!(c.raised_again(&raised(ExceptionKind::TaxFailed, t(4)), t(4)));
        assert_eq!(c.status, CaseStatus::Open);
        assert!(!c.closed_by(&first, t(5)), "the first occurrence's closure must not close the second");
        assert_eq!(c.status, CaseStatus::Open);
    }

    #[test]
    fn when_a_refreshed_raising_is_cleared_before_it_arrives_should_stay_closed() {
        let mut c = ExceptionCase::raised(&raised(ExceptionKind::TaxFailed, t(1)), "corr", t(1));
        let cleared = ExceptionResolved {
            exception_id: c.exception_id.clone(),
            engagement_id: c.engagement_id.clone(),
            kind: c.kind,
            raised_at: t(2),
            outcome: ResolutionOutcome::Cleared,
            actor: None,
            reason: "taxed".into(),
        };
        assert!(c.closed_by(&cleared, t(3)), "the closure of the refreshed occurrence closes it");
        let mut late = raised(ExceptionKind::TaxFailed, t(2));
        late.message = "the tax engine refused again".into();
        c.raised_again(&late, t(4));
        assert_eq!(c.status, CaseStatus::Cleared, "the refreshed raising, arriving late, does not reopen it");
        assert!(c.raised_again(&raised(ExceptionKind::TaxFailed, t(5)), t(5)));
        assert_eq!(c.status, CaseStatus::Open, "a later occurrence does");
    }

    #[test]
    fn when_the_causer_spells_their_id_differently_should_still_be_refused() {
        let mut c = ExceptionCase::raised(&raised(ExceptionKind::InvoicePostingFailed, t(1)), "corr", t(1));
        for who in [" approver-1", "APPROVER-1", "Approver-1 "] {
            assert!(matches!(c.act(&ExceptionAction::Waive { reason: "x".into() }, who, t(2)), Acted::Refused(_)), "{who:?}");
        }
    }

    #[test]
    fn when_comments_are_long_and_multibyte_should_keep_the_case_under_its_byte_budget() {
        let mut c = ExceptionCase::raised(&raised(ExceptionKind::TaxFailed, t(1)), "corr", t(1));
        let text: String = "請".repeat(COMMENT_MAX_CHARS);
        for _ in 0..HISTORY_KEPT {
            c.act(&ExceptionAction::Comment { text: text.clone() }, "ops", t(2));
        }
        let bytes = serde_json::to_vec(&c).unwrap().len();
        assert!(bytes < 200 * 1024, "{bytes} bytes");
        assert_eq!(c.history[0].action, "raised");
        assert!(c.history_dropped > 0);
    }

    #[test]
    fn when_retrying_without_a_kept_payload_should_refuse() {
        let mut c = ExceptionCase::raised(&raised(ExceptionKind::TaxFailed, t(1)), "corr", t(1));
        assert!(matches!(c.act(&ExceptionAction::Retry, "ops", t(2)), Acted::Refused(_)));
        assert_eq!(c.retries, 0);
    }

    #[test]
    fn when_history_grows_past_its_budget_should_keep_the_first_and_latest_entries() {
        let mut c = ExceptionCase::raised(&raised(ExceptionKind::TaxFailed, t(1)), "corr", t(1));
        for i in 0..(HISTORY_KEPT + 10) {
            c.act(&ExceptionAction::Comment { text: format!("note {i}") }, "ops", t(2));
        }
        assert_eq!(c.history.len(), HISTORY_KEPT);
        assert_eq!(c.history[0].action, "raised");
        assert_eq!(c.history.last().map(|h| h.note.clone()), Some(format!("note {}", HISTORY_KEPT + 9)));
        assert_eq!(c.history_dropped, 11);
    }
}
