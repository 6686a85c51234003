//! # o2c-embedded
//!
//! The default way to run o2c on one machine, with no AWS account and no Docker: the SAM
//! template's topology in one process over one durable SQLite file.
//!
//! Layout:
//! - [`db`]: the SQLite file (WAL with group commit), schema migrations;
//! - [`store`]: state / idempotency / rejection ports over SQLite;
//! - [`bus`]: the in-process EventBridge bus (rules from the template, event-ruler matching,
//!   archive) and SQS-like queues (visibility, redelivery, DLQ, FIFO groups);
//! - [`sim`]: CRM, PSA, ERP and tax-engine simulators with realistic validation and
//!   switchable faults; [`sim_tax`]: the tax engine's rules;
//! - [`sim_http`]: the simulators behind the o2c connector contract over HTTP;
//! - [`runtime`]: wiring, workers with event-source-mapping semantics, crash recovery;
//! - [`simulation`]: the seeded deterministic simulation of the whole flow (`o2c sim run`):
//!   duplicates, reordering, connector faults and crashes, then the invariants;
//! - [`unrouted`]: the accepted events that matched no rule, counted and listed;
//! - [`access`]: `o2c serve`'s API keys (hashed), their grants, and the refusals;
//! - [`webhooks`]: vendors' webhook signature schemes (Stripe, DocuSign Connect), re-exported from `o2c-mapping`;
//! - [`reference`]: the bundled sample reference data (a global consulting firm).

pub mod access;
pub mod bus;
pub mod db;
pub mod runtime;
pub mod sim;
pub mod sim_http;
pub mod sim_tax;
pub mod simulation;
pub mod store;
pub mod unrouted;
/// Vendors' webhook signature schemes (in `o2c-mapping`, shared with the AWS ingestion function).
pub use o2c_mapping::webhooks;

/// Bundled sample reference data.
pub mod reference {
    use o2c_domain::reference::{ReferenceData, ReferenceDataError};

    /// The sample data set: Northwind Partners, a consulting firm with legal entities in
    /// the US, UK, Germany, Singapore and Japan, billing in five currencies.
    pub const NORTHWIND_JSON: &str = include_str!("../../reference/northwind.json");

    /// Parses the sample data set.
    pub fn northwind() -> Result<ReferenceData, ReferenceDataError> {
        ReferenceData::from_json(NORTHWIND_JSON)
    }
}

pub use runtime::{RunReport, Runtime, RuntimeOptions};
