//! What must hold after any seed, read from every system (o2c's store and queues, the PSA,
//! ERP and CRM simulators), not from what the steps returned:
//! - `every_input_accounted`: each engagement is active, rejected with its reasons, or has an
//!   open exception in the operators' queue; an invalid input is never activated and a valid
//!   one never rejected;
//! - `nothing_stuck`: no message left in a function or pipe queue, no reservation still held;
//! - `dead_letters_raised`: every dead-lettered message has its dead-letter exception on its
//!   engagement (open, or closed because a later delivery of the same work succeeded), or —
//!   a message of no engagement, such as a payment — a parked rejection naming it (none when
//!   its step had completed it before its batch crashed);
//! - `no_duplicate_external_objects`: at most one live project per engagement in the PSA and
//!   in the ERP, one billing schedule per ERP project, and the ids o2c holds are the ones the
//!   systems hold;
//! - `money_conserved`: per active engagement, contract value = schedule (fixed items + T&M
//!   caps) to the cent, the fixed items add up to the fixed total, the ERP holds exactly
//!   o2c's schedule, and a straight-through contract is worth what the CRM sold;
//! - `crm_current`: an active engagement without an open exception shows as active in the
//!   CRM, with the project ids.

use std::collections::{BTreeMap, HashMap};

use o2c_app::O2cError;
use o2c_app::Step;
use o2c_app::ports::{EngagementStore, RejectionStore};
use o2c_domain::engagement::{Engagement, EngagementStatus};
use o2c_domain::events::ExceptionKind;
use o2c_domain::ids::EngagementId;
use o2c_domain::model::BillingItem;
use rust_decimal::Decimal;
use serde::Serialize;

use super::inputs::{EngagementInput, Kind};
use crate::db::{Cached, db_err};
use crate::runtime::Runtime;
use crate::sim::System;

/// Violations listed per invariant, at most.
const SHOWN: usize = 5;

/// One invariant's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Invariant {
    /// Name.
    pub name: &'static str,
    /// True when it held.
    pub holds: bool,
    /// Cases checked.
    pub checked: usize,
    /// Violations (the first few).
    pub violations: Vec<String>,
    /// Violations in all.
    pub violation_count: usize,
}

/// How the engagements ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcomes {
    /// Active (projects, schedule, CRM written back).
    pub active: usize,
    /// Rejected with reasons.
    pub rejected: usize,
    /// Waiting on an open exception.
    pub exception: usize,
    /// None of those.
    pub unaccounted: usize,
}

pub(super) struct Check {
    name: &'static str,
    checked: usize,
    violations: Vec<String>,
}

impl Check {
    pub(super) fn new(name: &'static str) -> Self {
        Self { name, checked: 0, violations: Vec::new() }
    }

    pub(super) fn expect(&mut self, ok: bool, violation: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.violations.push(violation());
        }
    }

    pub(super) fn done(self) -> Invariant {
        let count = self.violations.len();
        Invariant {
            name: self.name,
            holds: count == 0,
            checked: self.checked,
            violations: self.violations.into_iter().take(SHOWN).collect(),
            violation_count: count,
        }
    }
}

pub(super) fn open_exception(e: &Engagement) -> bool {
    e.exceptions.iter().any(|x| x.open)
}

/// Checks every invariant over what the run left behind.
pub async fn check(rt: &Runtime, generated: &[EngagementInput]) -> Result<(Outcomes, Vec<Invariant>), O2cError> {
    // Ordered, so a failing seed lists the same violations on every replay.
    let mut engagements: BTreeMap<String, Engagement> = BTreeMap::new();
    for g in generated {
        let id = EngagementId::for_opportunity(&g.opportunity_id);
        if let Some(v) = rt.store().load(&id).await? {
            engagements.insert(g.opportunity_id.clone(), v.value);
        }
    }
    let parked: Vec<String> = rt.store().rejections(usize::MAX).await?.into_iter().filter_map(|r| r.correlation_id).collect();
    let mut outcomes = Outcomes::default();
    let mut accounted = Check::new("every_input_accounted");
    for g in generated {
        let e = engagements.get(&g.opportunity_id);
        let rejected = e
            .is_some_and(|e| e.status == EngagementStatus::Rejected && e.rejection.as_ref().is_some_and(|r| !r.reasons.is_empty()))
            || (e.is_none() && parked.iter().any(|c| c.ends_with(&g.opportunity_id)));
        let active = e.is_some_and(|e| e.status == EngagementStatus::Active);
        let exception = e.is_some_and(open_exception);
        if active {
            outcomes.active += 1;
        } else if rejected {
            outcomes.rejected += 1;
        } else if exception {
            outcomes.exception += 1;
        } else {
            outcomes.unaccounted += 1;
        }
        accounted.expect(active || rejected || exception, || {
            format!(
                "{}: {}, no open exception",
                g.opportunity_id,
                e.map_or("never recorded".to_owned(), |e| format!("left {}", e.status.as_str()))
            )
        });
        if g.kind == Kind::Invalid {
            accounted.expect(!active, || format!("{}: an invalid closed-won was activated", g.opportunity_id));
        } else {
            accounted.expect(!rejected, || format!("{}: a valid closed-won was rejected", g.opportunity_id));
        }
    }

    let mut stuck = Check::new("nothing_stuck");
    let topo = rt.topology();
    for q in &topo.consumed_queues() {
        let depth = rt.bus().depth(q).await?.total();
        stuck.expect(depth == 0, || format!("{depth} message(s) left in {q}"));
    }
    // A reservation a crash left behind expires (recovery expires it at once) and is taken
    // over by the next delivery; one still live at the end has a holder that never finished.
    let now = rt.db().now_ms();
    let in_progress: i64 = rt
        .db()
        .call(move |c| {
            c.row("SELECT COUNT(*) FROM idempotency WHERE status = 'INPROGRESS' AND in_progress_until > ?1", [now], |r| r.get(0))
                .map_err(db_err)
        })
        .await?;
    stuck.expect(in_progress == 0, || format!("{in_progress} idempotency reservation(s) still held"));

    let mut dead = Check::new("dead_letters_raised");
    // A message of no engagement (a payment, before a customer is found) is parked with
    // its reasons when it dead-letters: the operators' rejections list shows it.
    let parked_ids: std::collections::BTreeSet<String> =
        rt.store().rejections(usize::MAX).await?.into_iter().flat_map(|r| r.message_ids).collect();
    for q in topo.queues.values().filter(|q| topo.is_dlq(&q.logical_id)) {
        for m in rt.bus().list(&q.logical_id, usize::MAX).await? {
            let event = o2c_app::sqs::decode_body(&m.body).ok();
            let engagement = event.as_ref().map(|ev| ev.engagement_id());
            // A message of no engagement is parked, unless its step had completed it (a batch
            // that crashed after the record was processed dead-letters it all the same).
            let step = m
                .dead_lettered_from
                .as_ref()
                .and_then(|from| topo.functions.iter().find(|f| &f.queue == from))
                .and_then(|f| Step::from_name(&f.binary));
            let parked_or_processed = async {
                Ok::<_, O2cError>(
                    parked_ids.contains(&m.message_id)
                        || match (step, &event) {
                            (Some(step), Some(ev)) => rt.processed(step, ev).await?,
                            _ => false,
                        },
                )
            };
            // Open, or closed because a later delivery of the same work succeeded.
            let raised = match &engagement {
                Some(id) => match rt.store().load(id).await? {
                    Some(v) => v.value.exceptions.iter().any(|x| x.kind == ExceptionKind::DeadLettered),
                    None => parked_or_processed.await?,
                },
                None => parked_or_processed.await?,
            };
            dead.expect(raised, || {
                format!(
                    "{} in {}: {} has no dead-letter exception",
                    m.message_id,
                    q.logical_id,
                    engagement.map_or("?".into(), |e| e.to_string())
                )
            });
        }
    }

    let mut duplicates = Check::new("no_duplicate_external_objects");
    for system in [System::Psa, System::Erp] {
        let mut live: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in rt.sims().projects(system).await?.into_iter().filter(|p| p.status != "cancelled") {
            let engagement = p.external_key.split('~').next().unwrap_or_default().to_owned();
            live.entry(engagement).or_default().push(p.project_id);
        }
        for (engagement, ids) in &live {
            duplicates.expect(ids.len() == 1, || format!("{engagement}: {} live projects in the {}: {ids:?}", ids.len(), system.as_str()));
        }
        for e in engagements.values().filter(|e| e.status == EngagementStatus::Active) {
            let held = if system == System::Psa { &e.psa_project_id } else { &e.erp_project_id };
            let found = live.get(e.engagement_id.as_str()).is_some_and(|ids| held.as_ref().is_some_and(|h| ids.contains(h)));
            duplicates.expect(found, || {
                format!("{}: o2c holds {} project {held:?}, which the system does not hold live", e.engagement_id, system.as_str())
            });
        }
    }
    let schedules = rt.sims().billing_schedules().await?;
    let mut per_project: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, project, _) in &schedules {
        *per_project.entry(project.as_str()).or_default() += 1;
    }
    for (project, n) in per_project {
        duplicates.expect(n == 1, || format!("ERP project {project}: {n} billing schedules"));
    }

    let mut money = Check::new("money_conserved");
    // By external key (o2c's schedule id): the ERP's own id beside it.
    let erp_schedules: HashMap<&str, (&str, &o2c_domain::model::BillingSchedule)> =
        schedules.iter().map(|(id, _, s)| (s.schedule_id.as_str(), (id.as_str(), s))).collect();
    for g in generated {
        let Some(e) = engagements.get(&g.opportunity_id).filter(|e| e.status == EngagementStatus::Active) else { continue };
        let (Some(contract), Some(schedule)) = (&e.contract, &e.billing_schedule) else {
            money.expect(false, || format!("{}: active without a contract or a schedule", e.engagement_id));
            continue;
        };
        let total = schedule.fixed_total.amount + schedule.time_and_materials_cap.amount;
        money.expect(contract.total_value.amount == total, || {
            format!("{}: contract {} ≠ schedule {total} (fixed + T&M caps)", e.engagement_id, contract.total_value)
        });
        let fixed: Decimal = schedule
            .items
            .iter()
            .map(|i| match i {
                BillingItem::Milestone { amount, .. } | BillingItem::Installment { amount, .. } => amount.amount,
                BillingItem::TimeAndMaterials { .. } => Decimal::ZERO,
            })
            .sum();
        money.expect(fixed == schedule.fixed_total.amount, || {
            format!("{}: fixed items add up to {fixed}, the schedule says {}", e.engagement_id, schedule.fixed_total)
        });
        let in_erp = erp_schedules.get(schedule.schedule_id.as_str());
        money.expect(in_erp.is_some_and(|(id, s)| e.erp_billing_schedule_id.as_deref() == Some(*id) && *s == schedule), || {
            format!("{}: the ERP does not hold o2c's schedule {} as {:?}", e.engagement_id, schedule.schedule_id, e.erp_billing_schedule_id)
        });
        if g.kind == Kind::StraightThrough {
            money.expect(contract.total_value.amount == g.amount, || {
                format!("{}: contract {} ≠ the {} the CRM sold", e.engagement_id, contract.total_value, g.amount)
            });
        }
    }

    let mut crm = Check::new("crm_current");
    for e in engagements.values().filter(|e| e.status == EngagementStatus::Active && !open_exception(e)) {
        let shown = rt.sims().opportunity(&e.opportunity_id).await?;
        let current = shown.as_ref().is_some_and(|(_, u)| {
            u.engagement_status == "active" && u.psa_project_id == e.psa_project_id && u.erp_project_id == e.erp_project_id
        });
        crm.expect(current, || {
            format!(
                "{}: the CRM shows {:?}",
                e.opportunity_id,
                shown.map(|(v, u)| format!("v{v} {} / {}", u.engagement_status, u.sync_status))
            )
        });
    }

    Ok((outcomes, vec![accounted.done(), stuck.done(), dead.done(), duplicates.done(), money.done(), crm.done()]))
}
