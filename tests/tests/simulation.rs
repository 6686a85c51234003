//! The seeded simulation of the flow (`o2c sim run`): seeds at 1,000 engagements — the sale,
//! then a year of delivery, invoicing and cash — with duplicates, reordering, connector
//! faults and crashes after side effects hold every invariant; a seed replays to the same
//! report; a planted defect makes a seed fail, in the sale's invariants and the ledgers'.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use o2c_embedded::simulation::{PlantedBug, SimulationConfig, SimulationReport, run_within};

fn config(seed: u64, engagements: usize) -> SimulationConfig {
    SimulationConfig {
        seed,
        engagements,
        duplicates: 2,
        reorder: true,
        fault_rate: 0.2,
        crash_rate: 0.05,
        planted_bug: None,
        billing: true,
        customers: None,
    }
}

async fn simulate(cfg: SimulationConfig) -> SimulationReport {
    let dir = tempfile::tempdir().unwrap();
    run_within(Duration::from_secs(900), dir.path().join("sim.db"), o2c_embedded::reference::northwind().unwrap(), cfg).await.unwrap()
}

fn assert_holds(r: &SimulationReport) {
    let broken: Vec<String> = r.invariants.iter().filter(|i| !i.holds).map(|i| format!("{}: {:?}", i.name, i.violations)).collect();
    assert!(broken.is_empty(), "seed broke invariants — replay: {}\n{}", r.config.command(), broken.join("\n"));
    // The run exercised what it claims to: every hazard happened, every outcome occurred.
    assert!(r.faults > 0 && r.crashes > 0 && r.published > r.inputs as u64 / 2, "{r:?}");
    let o = &r.outcomes;
    assert!(o.active > 0 && o.rejected > 0 && o.exception > 0 && o.unaccounted == 0, "{o:?}");
    let dead = r.invariants.iter().find(|i| i.name == "dead_letters_raised").unwrap();
    assert!(dead.checked > 0, "no message was dead-lettered: the outages are too short to test the retry budget");
    assert_eq!(o.active + o.rejected + o.exception, r.config.engagements);
    // The billing year happened: work, milestones, invoices, refused self-approvals,
    // payments, overpayments left on account.
    let b = r.billing.as_ref().unwrap();
    assert!(b.time_entries > 0 && b.milestones > 0 && b.self_approvals > 0, "{b:?}");
    assert!(b.posted > o.active / 2 && b.payments > b.posted && b.unapplied > rust_decimal::Decimal::ZERO, "{b:?}");
    assert!(b.applied > b.unapplied && b.self_approvals_refused > 0, "cash applied, self-approvals refused on record: {b:?}");
    // Every active engagement's ledgers were checked; few of them excused by an open exception.
    assert!(b.engagements == o.active && b.excused * 5 < b.engagements, "{b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_seed_11_runs_1000_engagements_with_every_hazard_should_hold_every_invariant() {
    assert_holds(&simulate(config(11, 1000)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_seed_12_runs_1000_engagements_with_every_hazard_should_hold_every_invariant() {
    assert_holds(&simulate(config(12, 1000)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_seed_13_runs_1000_engagements_with_every_hazard_should_hold_every_invariant() {
    assert_holds(&simulate(config(13, 1000)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_same_seed_runs_twice_should_replay_the_same_run() {
    let (a, b) = (simulate(config(21, 100)).await, simulate(config(21, 100)).await);
    let (a, b) = (serde_json::to_value(&a).unwrap(), serde_json::to_value(&b).unwrap());
    assert_eq!(a, b, "same seed, same options: same steps, faults, crashes, outcomes and verdicts");
    let c = serde_json::to_value(simulate(config(22, 100)).await).unwrap();
    assert_ne!(a["steps"], c["steps"], "another seed takes another path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_runtime_acknowledges_before_processing_should_fail_the_seed_on_lost_inputs() {
    // The planted defect deletes a batch before its step runs: a crash after the step's
    // external call then loses the input, and the engagement is left half-provisioned.
    let mut cfg = config(11, 200);
    cfg.planted_bug = Some(PlantedBug::AckBeforeProcessing);
    let r = simulate(cfg).await;
    assert!(!r.passed(), "the planted bug went unnoticed: {r:?}");
    let accounted = r.invariants.iter().find(|i| i.name == "every_input_accounted").unwrap();
    assert!(!accounted.holds && r.outcomes.unaccounted > 0, "{accounted:?}");
    // The lost inputs of the billing year show in its ledgers too: work never billed,
    // invoices never posted, payments never booked.
    for name in ["invoiced_equals_billable", "invoices_match_erp", "cash_conserved"] {
        let i = r.invariants.iter().find(|i| i.name == name).unwrap();
        assert!(!i.holds, "{name} missed the lost inputs: {i:?}");
    }
    assert!(r.config.command().ends_with("--plant-bug ack-before-processing"), "{}", r.config.command());
    // The same seed without the defect holds.
    let mut clean = config(11, 200);
    clean.planted_bug = None;
    assert!(simulate(clean).await.passed());
}
