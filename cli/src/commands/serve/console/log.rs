//! What operators did through the console, by whom, and the requests the gate refused.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use o2c_app::ports::{OperatorAction, OperatorLog};
use o2c_embedded::access::{self, Refusals};

use super::layout::{at, thead};
use super::session::Session;
use super::source::{Source, with_store};
use super::{Console, Viewer, failed, render};
use crate::commands::serve::auth::Caller;

const SECTION: &str = "/console/log";

/// `GET /console/log`.
pub async fn page(State(s): State<Arc<Console>>, Extension(caller): Extension<Caller>, Extension(session): Extension<Session>) -> Response {
    let v = Viewer::from(caller, session);
    let title = "Operator log";
    let actions = match with_store!(s.source, st => st.operator_actions(200).await) {
        Ok(a) => a,
        Err(e) => return failed(&s, &v, title, SECTION, StatusCode::SERVICE_UNAVAILABLE, e),
    };
    // Refused requests are the embedded gate's; on AWS they are the API's own (CloudTrail).
    let refusals = match &s.source {
        Source::Embedded(rt) => match access::refusals(rt.db(), 100).await {
            Ok(r) => Some(r),
            Err(e) => return failed(&s, &v, title, SECTION, StatusCode::SERVICE_UNAVAILABLE, e),
        },
        Source::Aws(_) => None,
    };
    render(&s, &v, title, SECTION, view(&actions, refusals.as_ref()))
}

fn view(actions: &[OperatorAction], refusals: Option<&Refusals>) -> Markup {
    html! {
        h2 { "Console actions" }
        table #actions {
            caption { "Latest first (exception actions are also on each case's history and its engagement's timeline)" }
            (thead(&["At", "Operator", "Action", "On", "Outcome", "From"]))
            tbody {
                @for a in actions {
                    tr { td { (at(a.at)) } td { (a.actor) } td { (a.action) } td { (a.object.as_deref().unwrap_or("—")) } td { (a.outcome) } td { (a.remote.as_deref().unwrap_or("—")) } }
                }
            }
        }
        @if refusals.is_none() {
            p.hint { "Refused requests: on AWS the stage's APIs refuse them, and CloudTrail records them under the caller." }
        }
        @if let Some(refusals) = refusals {
            h2 { "Refused requests" }
            p { (refusals.total) " refused since the database began; the latest:" }
            table #refusals {
                (thead(&["At", "Status#", "Code", "Key", "Request", "Reason"]))
                tbody {
                    @for r in &refusals.latest {
                        tr {
                            td { (at(r.at)) } td.num { (r.status) } td { (r.code) }
                            td { (r.name.as_deref().or(r.key_id.as_deref()).unwrap_or("—")) }
                            td { (r.method) " " (r.path) } td { (r.reason) }
                        }
                    }
                }
            }
        }
    }
}
