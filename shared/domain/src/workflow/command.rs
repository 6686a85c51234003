//! External commands a step plans and the results the shell feeds back.
//!
//! A step never calls a system: it returns a [`Plan`] of [`Command`]s; the shell runs them
//! (create-or-get by external key everywhere, transient failures retried inside the
//! invocation) and hands the [`CommandResult`]s to the step's `finalize`. Transient
//! failures never appear here: they either succeed on a retry or hand the message back.

use serde::{Deserialize, Serialize};

use crate::aggregate::AggregateBody;
use crate::engagement::{CrmOpportunityUpdate, Engagement};
use crate::invoicing::InvoiceDoc;
use crate::model::{BillingSchedule, ProjectSpec};
use crate::receivables::{CashReceipt, CrmInvoice};
use crate::reconciliation::{Observation, Read};
use crate::revenue::RevenueJournal;
use crate::tax::{TaxQuote, TaxRequest};

/// A system o2c talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// CRM (opportunities).
    Crm,
    /// PSA (projects, staffing, time).
    Psa,
    /// ERP (projects, billing, receivables).
    Erp,
    /// Tax engine (rates and tax per line).
    Tax,
}

impl System {
    /// Lower-case name (`crm`, `psa`, `erp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crm => "crm",
            Self::Psa => "psa",
            Self::Erp => "erp",
            Self::Tax => "tax",
        }
    }

    /// Upper-case label for operator messages (`PSA`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Crm => "CRM",
            Self::Psa => "PSA",
            Self::Erp => "ERP",
            Self::Tax => "tax engine",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "crm" => Some(Self::Crm),
            "psa" => Some(Self::Psa),
            "erp" => Some(Self::Erp),
            "tax" => Some(Self::Tax),
            _ => None,
        }
    }
}

/// One call to an external system.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Create the project, or get the one that already has `spec.external_key`.
    CreateProject {
        /// PSA or ERP.
        system: System,
        /// What to create.
        spec: ProjectSpec,
    },
    /// Cancel a project (compensation). Cancelling a cancelled project succeeds.
    CancelProject {
        /// The system holding the project.
        system: System,
        /// Its id there.
        project_id: String,
        /// Why (shown in the system).
        reason: String,
    },
    /// Create the billing schedule on an ERP project, or get the one with its id.
    CreateBillingSchedule {
        /// ERP project.
        erp_project_id: String,
        /// The schedule.
        schedule: BillingSchedule,
    },
    /// Write the sync-status fields onto the CRM opportunity (ignored when older).
    UpdateOpportunity(CrmOpportunityUpdate),
    /// Ask the tax engine for each line's rate and tax (a quote: no side effect).
    CalculateTax(TaxRequest),
    /// Post a numbered invoice to the ERP, or get the one already posted under its number.
    PostInvoice(InvoiceDoc),
    /// Book a cash receipt (applied and unapplied) in the ERP, or get the one already booked
    /// under its payment id (a reversal books a reversing receipt the same way).
    BookReceipt(CashReceipt),
    /// Post a revenue journal to the ERP, or get the one already posted under its id.
    PostJournal(RevenueJournal),
    /// Upsert an invoice record (status, amount, open balance) on the CRM account and
    /// opportunity, unless the CRM holds a newer version.
    UpsertCrmInvoice(CrmInvoice),
    /// Read what a system holds (reconciliation; no side effect).
    Read(Read),
}

impl Command {
    /// The system the command goes to.
    pub fn system(&self) -> System {
        match self {
            Self::CreateProject { system, .. } | Self::CancelProject { system, .. } => *system,
            Self::CreateBillingSchedule { .. } | Self::PostInvoice(_) | Self::BookReceipt(_) | Self::PostJournal(_) => System::Erp,
            Self::UpdateOpportunity(_) | Self::UpsertCrmInvoice(_) => System::Crm,
            Self::CalculateTax(_) => System::Tax,
            Self::Read(Read::Project(system, _)) => *system,
            Self::Read(Read::Schedule { .. } | Read::Invoice(_)) => System::Erp,
            Self::Read(Read::Opportunity(_)) => System::Crm,
        }
    }

    /// Operation name (connector metrics, logs).
    pub fn operation(&self) -> &'static str {
        match self {
            Self::CreateProject { .. } => "create_project",
            Self::CancelProject { .. } => "cancel_project",
            Self::CreateBillingSchedule { .. } => "create_billing_schedule",
            Self::UpdateOpportunity(_) => "update_opportunity",
            Self::CalculateTax(_) => "calculate_tax",
            Self::PostInvoice(_) => "post_invoice",
            Self::BookReceipt(_) => "book_receipt",
            Self::PostJournal(_) => "post_journal",
            Self::UpsertCrmInvoice(_) => "upsert_invoice",
            Self::Read(Read::Project(..)) => "get_project",
            Self::Read(Read::Schedule { .. }) => "get_billing_schedule",
            Self::Read(Read::Invoice(_)) => "get_invoice",
            Self::Read(Read::Opportunity(_)) => "get_opportunity",
        }
    }
}

/// Lifecycle status of an object in an external system, as create-or-get reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStatus {
    /// Live.
    Active,
    /// Cancelled or closed: never to be reused as live.
    Cancelled,
}

impl ObjectStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The object a create-or-get returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalObject {
    /// Id in the system.
    pub id: String,
    /// `false` when the external key already existed.
    pub created: bool,
    /// Its status there (an existing object may be cancelled).
    pub status: ObjectStatus,
}

/// What the CRM did with a status update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrmWrite {
    /// Written.
    Applied,
    /// The opportunity already carries a newer `sync_version`; nothing written.
    Stale,
}

/// A permanent refusal (4xx): the request will never succeed as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Who refused.
    pub system: System,
    /// HTTP status.
    pub status: u16,
    /// The system's error code.
    pub code: String,
    /// Its message.
    pub message: String,
}

impl Refusal {
    /// `CODE: message`, for exceptions and the CRM.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
}

/// The result of one command.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandResult {
    /// A create-or-get answered with the object.
    Object(ExternalObject),
    /// A command without an answer body succeeded (cancel).
    Done,
    /// The CRM update.
    Crm(CrmWrite),
    /// The tax engine's quote.
    Tax(TaxQuote),
    /// The system refused permanently.
    Refused(Refusal),
    /// What a read found.
    Read(Observation),
}

impl CommandResult {
    /// True when the result ends a [`Sequence::StopOnFailure`] plan: a refusal, or an
    /// existing object that is cancelled (never reused as live).
    pub fn stops_sequence(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::Object(ExternalObject { status: ObjectStatus::Cancelled, .. }))
    }
}

/// How a plan's commands depend on each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// Stop at the first refusal or cancelled object (later commands need earlier ones).
    StopOnFailure,
    /// Run every command whatever the others answer (independent compensations).
    All,
}

/// What a plan is for, so `finalize` knows which results it is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Create the projects in PSA and ERP.
    Provision,
    /// Undo what a failed attempt left behind.
    Compensate,
    /// Create the ERP billing schedule.
    BillingSchedule,
    /// Write the status back to the CRM.
    CrmUpdate,
    /// Tax a draft invoice.
    Tax,
    /// Post a numbered invoice.
    PostInvoice,
    /// Book a cash receipt.
    BookReceipt,
    /// Post a revenue journal.
    PostJournal,
    /// Write invoices to the CRM.
    CrmInvoices,
    /// Read every system for a reconciliation.
    Reconcile,
}

/// Commands to run, and the state to claim atomically with the reservation before them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What for.
    pub purpose: Purpose,
    /// In order.
    pub commands: Vec<Command>,
    /// Dependency between the commands.
    pub sequence: Sequence,
    /// Engagement state written with the idempotency reservation (e.g. `provisioning`
    /// claimed by this event), so concurrent events see the claim before any side effect.
    pub claim: Option<Engagement>,
    /// Other aggregates written in that same reservation (e.g. the invoice number taken
    /// from its legal entity's counter): durable before the command that uses them.
    pub claim_others: Vec<AggregateBody>,
}

impl Plan {
    /// A plan of `commands` for `purpose`, claiming nothing.
    pub fn new(purpose: Purpose, commands: Vec<Command>, sequence: Sequence) -> Self {
        Self { purpose, commands, sequence, claim: None, claim_others: Vec::new() }
    }
}
