//! One file per command: its arguments and what it does.

pub mod bill;
pub mod bootstrap;
pub mod demo;
pub mod dlq;
pub mod engagements;
pub mod exceptions;
pub mod export;
pub mod invoice;
pub mod map;
pub mod publish;
pub mod receivables;
pub mod reconcile;
pub mod reference;
pub mod rejections;
pub mod replay;
pub mod resubmit;
pub mod revenue;
pub mod rules;
pub mod run;
pub mod send;
pub mod serve;
pub mod sim;
pub mod sim_run;
pub mod sources;
pub mod status;
pub mod unrouted;
