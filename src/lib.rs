//! Tripwire: a low-latency fraud interceptor for a revolving consumer-credit product.
//!
//! The data flows one way:
//!
//! ```text
//! request bytes ─▶ txn (parse + validate) ─▶ state (shard lock, ring) ─▶ engine (evaluate) ─▶ answer
//! rules.yaml ───▶ rules (parse ─▶ validate ─▶ compile) ─▶ reload (ArcSwap<RuleSet>) ──────▲
//! ```
//!
//! [`interceptor`] ties the pipeline together for one request; [`server`] puts it behind HTTP;
//! [`app`] assembles the service; `main.rs` only parses the command line and calls the
//! library. The library never prints: it logs through `tracing` or writes to the writers it is
//! given.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod app;
pub mod config;
pub mod decision_log;
pub mod engine;
pub mod interceptor;
pub mod live_rules;
pub mod metrics;
pub mod reload;
pub mod replay;
pub mod rules;
pub mod server;
pub mod state;
pub mod txn;
