//! The decision core of tripwire: everything a decision needs and nothing that serves it.
//!
//! ```text
//! request bytes ─▶ txn (parse + validate) ─▶ state (shard lock, ring) ─▶ engine (evaluate) ─▶ answer
//! rules.yaml ───▶ rules (parse ─▶ validate ─▶ compile) ─▶ live_rules (ArcSwap<RuleSet>) ─▲
//! ```
//!
//! [`interceptor`] ties the pipeline together for one request. This crate has no async
//! runtime, no HTTP and no metrics registry: the `tripwire` crate puts it behind listeners,
//! reload triggers and observability sinks. Its background work (the idle sweep, the journal
//! and snapshot writers) runs on plain threads.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod engine;
pub mod interceptor;
pub mod live_rules;
pub mod rules;
pub mod state;
pub mod txn;
