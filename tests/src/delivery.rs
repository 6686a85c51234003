//! Source-system events of the delivery and invoicing half: PSA staffing, approved time and
//! expenses, completed milestones, invoice-run requests and approvers' decisions.

use serde_json::{Value, json};

use crate::envelope;

/// A `(source, detail-type, detail)` triple, as `Harness::send` takes it.
pub type Event = (&'static str, &'static str, Value);

/// `ResourceAssigned`: `resource` staffed as `role` from `start` to `end`.
pub fn assigned(eng: &str, project: &str, assignment: &str, resource: &str, role: &str, (start, end): (&str, &str), version: u32) -> Event {
    let payload = json!({
        "engagement_id": eng, "assignment_id": assignment, "project_id": project, "resource_id": resource, "role": role,
        "start_date": start, "end_date": end, "planned_hours": "400", "version": version,
    });
    let key = format!("psa:assignment:{assignment}:v{version}");
    ("o2c.psa", "ResourceAssigned", envelope(&key, &format!("corr-{eng}"), Some(&key), payload))
}

/// One approved time entry (`version` 1 is the first approval).
#[derive(Debug, Clone)]
pub struct Time {
    /// Entry id.
    pub id: String,
    /// Resource.
    pub resource: String,
    /// Role.
    pub role: String,
    /// Contract line.
    pub line: String,
    /// Work date.
    pub date: String,
    /// Hours.
    pub hours: String,
    /// Version.
    pub version: u32,
    /// `approved` or `withdrawn`.
    pub status: &'static str,
    /// Billable flag.
    pub billable: bool,
    /// Approver.
    pub approved_by: Option<String>,
}

impl Time {
    /// Version 1 of an approved, billable entry.
    pub fn new(id: &str, resource: &str, role: &str, line: &str, date: &str, hours: &str) -> Self {
        Self {
            id: id.into(),
            resource: resource.into(),
            role: role.into(),
            line: line.into(),
            date: date.into(),
            hours: hours.into(),
            version: 1,
            status: "approved",
            billable: true,
            approved_by: Some("U-PM-01".into()),
        }
    }

    /// The `TimeApproved` event of this version.
    pub fn event(&self, eng: &str, project: &str) -> Event {
        let mut entry = json!({
            "time_entry_id": self.id, "engagement_id": eng, "project_id": project, "line_id": self.line,
            "resource_id": self.resource, "role": self.role, "work_date": self.date, "hours": self.hours,
            "billable": self.billable, "approved_at": "2027-01-08T17:12:00Z", "version": self.version, "status": self.status,
        });
        if let Some(a) = &self.approved_by {
            entry["approved_by"] = json!(a);
        }
        let key = format!("psa:time-entry:{}:v{}", self.id, self.version);
        ("o2c.psa", "TimeApproved", envelope(&key, &format!("corr-{eng}"), Some(&key), json!({"time_entry": entry})))
    }
}

/// An approved expense (version 1).
pub fn expense(
    eng: &str,
    id: &str,
    resource: &str,
    category: &str,
    on: &str,
    (amount, currency): (&str, &str),
    line: Option<&str>,
) -> Event {
    let mut x = json!({
        "expense_id": id, "engagement_id": eng, "resource_id": resource, "incurred_on": on, "category": category,
        "amount": {"amount": amount, "currency": currency}, "billable": true, "approved_at": "2027-01-09T08:00:00Z",
        "version": 1, "approved_by": "U-PM-01",
    });
    if let Some(l) = line {
        x["line_id"] = json!(l);
    }
    let key = format!("psa:expense:{id}:v1");
    ("o2c.psa", "ExpenseApproved", envelope(&key, &format!("corr-{eng}"), Some(&key), json!({"expense": x})))
}

/// `MilestoneCompleted`.
pub fn milestone(eng: &str, project: &str, milestone: &str, on: &str) -> Event {
    let payload =
        json!({"engagement_id": eng, "milestone_id": milestone, "psa_project_id": project, "completed_on": on, "reported_by": "U-PM-01"});
    let key = format!("psa:milestone:{milestone}:completed");
    ("o2c.psa", "MilestoneCompleted", envelope(&key, &format!("corr-{eng}"), Some(&key), payload))
}

/// An on-demand `InvoiceRunRequested` for one engagement (or every one due when `eng` is `None`).
pub fn invoice_run(run_id: &str, as_of: &str, eng: Option<&str>, scheduled: bool, requested_by: &str) -> Event {
    let mut payload = json!({"run_id": run_id, "as_of": as_of, "scheduled": scheduled, "requested_by": requested_by});
    if let Some(e) = eng {
        payload["engagement_id"] = json!(e);
    }
    let key = format!("invoice-run:{run_id}:{}", eng.unwrap_or("*"));
    ("o2c.scheduler", "InvoiceRunRequested", envelope(&key, &format!("run-{run_id}"), Some(&key), payload))
}

/// An approver's decision (`approve` true → `InvoiceApproved`).
pub fn decision(eng: &str, invoice: &str, approver: &str, approve: bool, n: u32) -> Event {
    let payload = json!({"engagement_id": eng, "invoice_id": invoice, "approver_id": approver, "decided_at": "2027-02-01T10:00:00Z"});
    let key = format!("approvals:{invoice}:{approver}:{n}");
    (
        "o2c.approvals",
        if approve { "InvoiceApproved" } else { "InvoiceRejected" },
        envelope(&key, &format!("corr-{eng}"), Some(&key), payload),
    )
}

/// A `RevenueRunRequested` for `period` (`YYYY-MM`): one engagement, or every active one.
pub fn revenue_run(run_id: &str, period: &str, eng: Option<&str>) -> Event {
    let mut payload = json!({"run_id": run_id, "period": period, "as_of": "2027-06-01", "requested_by": "U-FIN-CTRL-01"});
    if let Some(e) = eng {
        payload["engagement_id"] = json!(e);
    }
    let key = format!("revenue-run:{run_id}:{}", eng.unwrap_or("*"));
    ("o2c.scheduler", "RevenueRunRequested", envelope(&key, &format!("run-{run_id}"), Some(&key), payload))
}

/// `resource`'s week of 8 h days on line 1 (11–15 January 2027), entries `<prefix>-<day>`.
pub fn week(resource: &str, role: &str, prefix: &str) -> Vec<Time> {
    (11..=15).map(|d| Time::new(&format!("{prefix}-{d}"), resource, role, "1", &format!("2027-01-{d}"), "8")).collect()
}
