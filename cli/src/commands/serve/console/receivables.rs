//! Receivables: each customer's open balance, unapplied cash, ageing and overdue
//! invoices; DSO per legal entity and firm-wide (the count-back method of
//! `o2c receivables`); the ageing buckets as a chart.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;
use maud::{Markup, html};
use o2c_app::ports::EngagementStore;
use o2c_domain::receivables::{AGEING_BUCKETS, Receivables};
use rust_decimal::Decimal;

use super::charts::{Bar, bars};
use super::session::Session;
use super::source::with_store;
use super::{Console, Viewer, failed, render};
use crate::commands::serve::auth::Caller;

const SECTION: &str = "/console/receivables";

/// Every customer's receivables in the legal entities of the reference data.
pub async fn all<S: EngagementStore>(store: &S, entities: impl Iterator<Item = String>) -> Result<Vec<Receivables>, o2c_app::O2cError> {
    let mut all = Vec::new();
    for le in entities {
        all.extend(o2c_app::receivables::history(store, &le, None).await?);
    }
    all.sort_by(|a, b| (&a.legal_entity_id, &a.customer_id).cmp(&(&b.legal_entity_id, &b.customer_id)));
    Ok(all)
}

/// The page's query: the date it is as of, one legal entity.
#[derive(serde::Deserialize, Default)]
pub struct ReceivablesQuery {
    as_of: Option<String>,
    legal_entity: Option<String>,
}

/// `GET /console/receivables[?as_of=YYYY-MM-DD&legal_entity=]`.
pub async fn page(
    State(s): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    axum::extract::Query(q): axum::extract::Query<ReceivablesQuery>,
) -> Response {
    let v = Viewer::from(caller, session);
    let title = "Receivables";
    let as_of = match q.as_of.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        Some(d) => match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
            Ok(d) => d,
            Err(_) => return failed(&s, &v, title, SECTION, StatusCode::BAD_REQUEST, format!("`{d}` is not a date (YYYY-MM-DD).")),
        },
        None => s.source.now().date_naive(),
    };
    let le = q.legal_entity.as_deref().map(str::trim).filter(|l| !l.is_empty());
    if let Some(le) = le.filter(|le| !s.reference.legal_entities.contains_key(*le)) {
        return failed(&s, &v, title, SECTION, StatusCode::BAD_REQUEST, format!("No legal entity {le} in the reference data."));
    }
    let entities: Vec<String> = s.reference.legal_entities.keys().filter(|k| le.is_none_or(|le| le == k.as_str())).cloned().collect();
    let all_entities: Vec<&str> = s.reference.legal_entities.keys().map(String::as_str).collect();
    match with_store!(s.source, store => all(store, entities.into_iter()).await) {
        Ok(rs) => render(&s, &v, title, SECTION, view(&rs, as_of, le, &all_entities)),
        Err(e) => failed(&s, &v, title, SECTION, StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

fn amounts(m: &BTreeMap<&'static str, Decimal>) -> String {
    let parts: Vec<String> = m.iter().filter(|(_, v)| !v.is_zero()).map(|(c, v)| format!("{c} {v}")).collect();
    if parts.is_empty() { "0".into() } else { parts.join(", ") }
}

fn days(m: &BTreeMap<&'static str, Decimal>) -> String {
    if m.is_empty() {
        return "—".into();
    }
    m.iter().map(|(c, v)| format!("{v} days ({c})")).collect::<Vec<_>>().join(", ")
}

/// The ageing buckets summed over customers, per currency: one chart each (amounts in
/// different currencies never share an axis).
pub fn ageing_bars(rs: &[Receivables], as_of: NaiveDate) -> BTreeMap<&'static str, Vec<Bar>> {
    let mut sums: BTreeMap<&'static str, [Decimal; 5]> = BTreeMap::new();
    for r in rs {
        for (cur, b) in r.ageing(as_of) {
            let e = sums.entry(cur).or_default();
            for (i, v) in b.iter().enumerate() {
                e[i] += *v;
            }
        }
    }
    sums.into_iter()
        .map(|(cur, b)| {
            let bars = AGEING_BUCKETS.iter().zip(b).map(|(label, v)| Bar { label: (*label).to_owned(), parts: vec![(cur.to_owned(), v)] });
            (cur, bars.collect())
        })
        .collect()
}

/// One ageing chart per currency.
pub fn ageing_charts(id: &str, charts: &BTreeMap<&'static str, Vec<Bar>>) -> Markup {
    html! {
        @for (cur, b) in charts {
            (bars(&format!("{id}-{cur}"), &format!("Open receivables by age, {cur}"), &format!("Open receivables in {cur} summed per ageing bucket"), cur, b))
        }
    }
}

fn view(rs: &[Receivables], as_of: NaiveDate, le: Option<&str>, entities: &[&str]) -> Markup {
    let mut by_entity: BTreeMap<&str, Vec<&Receivables>> = BTreeMap::new();
    for r in rs {
        by_entity.entry(r.legal_entity_id.as_str()).or_default().push(r);
    }
    let firm = Receivables::dso_of(&rs.iter().collect::<Vec<_>>(), as_of);
    html! {
        form.filters method="get" action=(SECTION) aria-label="Receivables as of" {
            label { "As of" input type="date" name="as_of" value=(as_of); }
            label { "Legal entity"
                select name="legal_entity" {
                    option value="" { "all" }
                    @for e in entities { option value=(e) selected[le == Some(*e)] { (e) } }
                }
            }
            button type="submit" { "Show" }
        }
        p #as-of { "As of " (as_of) "." }
        p.hint { "Open items as they stand now, aged and counted back (DSO) as at that date." }
        @if rs.is_empty() {
            p #empty { "No receivables (nothing posted, no payment received)." }
        } @else {
            dl.facts #dso {
                dt { "DSO firm-wide" } dd { (days(&firm)) }
                @for (le, group) in &by_entity {
                    dt { "DSO " (le) } dd { (days(&Receivables::dso_of(group, as_of))) }
                }
            }
            (ageing_charts("ageing-chart", &ageing_bars(rs, as_of)))
            table #receivables {
                caption { "Per customer" }
                thead { tr {
                    th scope="col" { "Legal entity" } th scope="col" { "Customer" } th.num scope="col" { "Open" } th.num scope="col" { "Unapplied cash" }
                    @for b in AGEING_BUCKETS { th.num scope="col" { (b) } }
                    th scope="col" { "DSO" } th scope="col" { "Overdue invoices" }
                } }
                tbody {
                    @for r in rs {
                        @let ageing = r.ageing(as_of);
                        tr {
                            td { (r.legal_entity_id) }
                            td { (r.customer_id) }
                            td.num { (amounts(&r.balance())) }
                            td.num { (amounts(&r.unapplied())) }
                            @for i in 0..AGEING_BUCKETS.len() {
                                td.num { (amounts(&ageing.iter().map(|(c, b)| (*c, b[i])).collect())) }
                            }
                            td { (days(&Receivables::dso_of(&[r], as_of))) }
                            td { (r.overdue(as_of).iter().map(|i| i.number.as_str()).collect::<Vec<_>>().join(", ")) }
                        }
                    }
                }
            }
        }
    }
}
