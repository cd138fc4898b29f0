//! Tripwire: a low-latency fraud interceptor for a revolving consumer-credit product.
//!
//! The decision itself (transactions, rules, customer state, the engine, the interceptor and
//! the live rule set) is the `tripwire-core` crate, re-exported here under the same module
//! names. This crate is the service around it: [`server`] puts the interceptor behind HTTP,
//! [`reload`] owns the rule-change triggers, [`metrics`] and [`decision_log`] observe, [`replay`]
//! runs history through the same interceptor, [`config`] reads the settings, and [`app`]
//! assembles the service; `main.rs` only parses the command line and calls the
//! library. The library never prints: it logs through `tracing` or writes to the writers it is
//! given.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod app;
pub mod config;
pub mod decision_log;
pub mod drift;
pub mod fleet;
pub mod metrics;
pub mod reload;
pub mod replay;
pub mod report;
pub mod scorecard;
pub mod server;

pub use tripwire_core::{engine, interceptor, live_rules, rules, state, txn};
