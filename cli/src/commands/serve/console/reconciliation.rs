//! The latest reconciliation report of every engagement: what each system holds against
//! what o2c recorded, each mismatch side by side.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use o2c_domain::reconciliation::{Mismatch, ReconciliationReport};

use super::layout::{at, badge, seg, thead};
use super::session::Session;
use super::source::with_store;
use super::{Console, Viewer, failed, render};
use crate::commands::serve::auth::Caller;

const SECTION: &str = "/console/reconciliation";

/// `GET /console/reconciliation`.
pub async fn page(State(s): State<Arc<Console>>, Extension(caller): Extension<Caller>, Extension(session): Extension<Session>) -> Response {
    let v = Viewer::from(caller, session);
    let title = "Reconciliation";
    match with_store!(s.source, store => crate::commands::reconcile::reports(store, None, None).await) {
        Ok((mut reports, _)) => {
            // Breaks first, then the latest.
            reports.sort_by(|a, b| a.is_clean().cmp(&b.is_clean()).then(b.at.cmp(&a.at)));
            render(&s, &v, title, SECTION, view(&reports))
        }
        Err(e) => failed(&s, &v, title, SECTION, StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

fn mismatch_rows(ms: &[Mismatch]) -> Markup {
    html! {
        @for m in ms {
            tr {
                td { (m.system.label()) }
                td { (m.object) }
                td { code { (m.field) } }
                td { (m.o2c) }
                td { (m.system_value) }
            }
        }
    }
}

fn view(reports: &[ReconciliationReport]) -> Markup {
    let breaks = reports.iter().filter(|r| !r.is_clean()).count();
    html! {
        p #summary { (reports.len()) " engagement(s) reconciled; " strong { (breaks) } " with a break. Run one with " code { "o2c reconcile" } "." }
        @if !reports.is_empty() {
            table #reports {
                (thead(&["Engagement", "Result", "Checked#", "Mismatches#", "Run", "At"]))
                tbody {
                    @for r in reports {
                        tr {
                            td { a href={ "/console/engagements/" (seg(r.engagement_id.as_str())) } { (r.engagement_id.as_str()) } }
                            td { (badge(if r.is_clean() { "agrees" } else { "break" })) }
                            td.num { (r.checked.len()) }
                            td.num { (r.mismatches.len() + r.unreadable.len()) }
                            td { code { (r.run_id) } }
                            td { (at(r.at)) }
                        }
                    }
                }
            }
        }
        @for r in reports.iter().filter(|r| !r.is_clean()) {
            h2 { "Break: " (r.engagement_id.as_str()) }
            table.mismatches {
                caption { "o2c's record beside the system's" }
                (thead(&["System", "Object", "Field", "o2c", "The system"]))
                tbody { (mismatch_rows(&r.mismatches)) (mismatch_rows(&r.unreadable)) }
            }
            @if !r.foreign_invoices.is_empty() {
                p { "Invoices the ERP holds that o2c did not post: " (r.foreign_invoices.join(", ")) }
            }
        }
    }
}
