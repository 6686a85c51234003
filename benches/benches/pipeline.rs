//! Per-event CPU cost of the pure parts, in one run so they compare as ratios:
//! schema-validated decode vs serde-only decode, the intake decision (validation +
//! enrichment), milestone + schedule derivation, and EventBridge routing over the
//! template's rules.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use o2c_domain::billing::{derive_milestones, derive_schedule};
use o2c_domain::events::{BusinessEvent, EventType};
use o2c_domain::intake::validate_and_enrich;
use o2c_domain::workflow::{Step, StepContext, decide_closed_won};
use o2c_topology::routing::Router;
use o2c_topology::topology::{TEMPLATE, Topology};

fn pipeline(c: &mut Criterion) {
    let ev: serde_json::Value = serde_json::from_str(o2c_benches::CLOSED_WON).unwrap();
    let detail = ev["detail"].clone();
    let reference = o2c_embedded::reference::northwind().unwrap();
    let topo = Topology::from_sam_yaml(TEMPLATE).unwrap();
    let router = Router::new(&topo).unwrap();
    let ev_bytes = serde_json::to_vec(&ev).unwrap();

    let mut g = c.benchmark_group("per_event");
    g.bench_function("decode_serde_only", |b| b.iter(|| BusinessEvent::decode("OpportunityClosedWon", black_box(&detail)).unwrap()));
    g.bench_function("decode_schema_validated", |b| {
        b.iter(|| o2c_app::contracts::decode("OpportunityClosedWon", black_box(&detail)).unwrap())
    });
    let BusinessEvent::OpportunityClosedWon(env) = BusinessEvent::decode("OpportunityClosedWon", &detail).unwrap() else { unreachable!() };
    g.bench_function("validate_and_enrich", |b| b.iter(|| validate_and_enrich(black_box(&env.payload), &reference).unwrap()));
    let meta = BusinessEvent::OpportunityClosedWon(env.clone()).meta();
    g.bench_function("decide_closed_won", |b| {
        b.iter(|| {
            let ctx =
                StepContext { step: Step::Intake, event_type: EventType::OpportunityClosedWon, meta: &meta, now: Utc::now(), event: None };
            decide_closed_won(None, black_box(&env), &reference, &ctx)
        })
    });
    let contract = validate_and_enrich(&env.payload, &reference).unwrap();
    let template = &reference.project_templates[&contract.project_template_id];
    g.bench_function("derive_milestones_and_schedule", |b| {
        b.iter(|| {
            let ms = derive_milestones(black_box(&contract), template).unwrap();
            derive_schedule(&contract, &ms).unwrap()
        })
    });
    g.bench_function("route_eventbridge_rules", |b| b.iter(|| router.targets(black_box(&ev_bytes)).unwrap().len()));
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
