//! # o2c-domain
//!
//! The functional core of o2c: canonical business objects, event contracts and the
//! workflow steps as pure functions. Nothing here performs I/O or imports an AWS crate;
//! the shells (Lambda handlers, the embedded runtime) load state, call these functions and
//! carry out the decisions.
//!
//! Layout:
//! - [`money`]: exact decimal amounts with ISO 4217 currencies and the rounding rules;
//! - [`model`]: contract, project, billing schedule, time, expense, invoice, payment;
//! - [`reference`]: master data (customers, legal entities, tax, rate cards, templates,
//!   catalog) and workflow rules held as data;
//! - [`ids`]: typed identities and their formats (`ENG-`, `CTR-`, `EXC-`, external keys);
//! - [`events`]: the envelope, event types (`source` / `detail-type`) and payloads;
//! - [`engagement`]: the engagement aggregate, its status and audit entries;
//! - [`aggregate`]: the other aggregates (own key, version and size budget);
//! - [`intake`]: closed-won validation (every failure at once) and enrichment;
//! - [`billing`]: milestone and billing-schedule derivation;
//! - [`delivery`]: approved time and expenses as WIP (shards, resource days, assignments);
//! - [`invoicing`]: the billing ledger, invoices from draft to posted, the invoice run;
//! - [`metrics`]: business metrics a decision reports (DSO, payments by rule);
//! - [`exception_case`]: an exception as operators work it (assign, comment, retry,
//!   resolve, waive; segregation of duties);
//! - [`receivables`]: open items, payments and their applications, cash matching, ageing, DSO;
//! - [`reconciliation`]: what each system holds against what o2c says it should;
//! - [`revenue`]: revenue earned per contract line and method, accounting periods, journals;
//! - [`source_of_record`]: which system owns which attribute (as data), what an update from
//!   a system that does not own it leaves alone, what the CRM write-back may send;
//! - [`tax`]: the tax-engine contract and the rounding rule every invoice follows;
//! - [`workflow`]: the decisions of each step (intake, provision, billing setup, write-back,
//!   delivery intake, invoice run, invoice approval, invoice posting).

pub mod aggregate;
pub mod billing;
pub mod delivery;
pub mod engagement;
pub mod events;
pub mod exception_case;
pub mod ids;
pub mod intake;
pub mod invoicing;
pub mod metrics;
pub mod model;
pub mod money;
pub mod receivables;
pub mod reconciliation;
pub mod reference;
pub mod revenue;
pub mod source_of_record;
pub mod tax;
pub mod workflow;
