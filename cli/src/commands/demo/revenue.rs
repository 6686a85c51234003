//! The demo's close: on 1 April the monthly schedule asks for March's revenue. Each active
//! engagement books what it earned through 31 March — Globex's completed milestone, its
//! fixed fee ratably over the delivery period; Globex Asia's delivered time and billed hotel
//! night, and its fixed fee — as a journal in the ERP. Singapore has closed March already,
//! so Asia's journal books into April.

use anyhow::Result;
use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::AggregateKey;
use o2c_embedded::Runtime;
use serde_json::json;

use super::billing::entry;
use super::play;

/// Plays the revenue close; `n` numbers the steps, `seen` is the audit cursor.
pub async fn play_all(rt: &Runtime, n: &mut usize, seen: &mut i64) -> Result<()> {
    *n += 1;
    let run = json!({"run_id": "revenue-2027-04-01", "as_of": "2027-04-01T04:00:00Z", "requested_by": "scheduler"});
    let request = entry(
        "o2c.scheduler",
        "RevenueRunRequested",
        "schedule:revenue:2027-04-01T04:00:00Z",
        "revenue-2027-04-01",
        "2027-04-01T04:00:00Z",
        run,
    );
    play(
        rt,
        *n,
        "1 April: the monthly schedule recognises March revenue for every active engagement (Singapore has closed March)",
        vec![request],
        seen,
    )
    .await?;
    for eng in ["ENG-0068d00000GLBX01", "ENG-0068d00000GLBA02"] {
        if let Some(rl) = rt.store().load_aggregates(&[AggregateKey::revenue_ledger(eng)]).await?.revenue_ledger(eng) {
            crate::commands::revenue::print_ledger(rl);
        }
    }
    outln!();
    Ok(())
}
