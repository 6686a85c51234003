//! # o2c-topology
//!
//! What the SAM template (`infra/template.yaml`) deploys, read by the tools that run the
//! topology without CloudFormation — the embedded runtime, `o2c serve --target aws`, the
//! emulator tests — and the local EventBridge rule matcher. The Lambda binaries do not
//! link this crate: they never parse YAML or match rules.
//!
//! Layout:
//! - [`topology`]: bus, rules, queues (FIFO, visibility, redrive), pipes, functions, tables;
//!   a template given at run time ([`topology::Template`]) or the copy compiled in;
//! - [`pattern`]: EventBridge event patterns (event-ruler semantics), compiled and matched;
//! - [`routing`]: EventBridge pattern matching over the template's rules.

pub mod pattern;
pub mod routing;
pub mod topology;

pub use topology::{ScheduleDef, TEMPLATE, Template, Topology};
