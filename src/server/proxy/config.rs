//! The proxy's settings, resolved: the upstream, the policies for review, invalid bodies and
//! internal failures, and the routes that say which requests are transactions. Reading them
//! from flags and the config file is [`crate::config`]'s job; this is what it produces.

use std::time::Duration;

use super::routes::{FieldMapping, PathPattern};

/// What to do with a transaction the rules send to review, in proxy mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewPolicy {
    /// Forward it, marked `x-risk-decision: review`.
    Forward,
    /// Answer 403 and keep it from the upstream.
    Hold,
}

/// What to do with a body on an intercepted route that is not a valid transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidPolicy {
    /// Answer 400 with the error.
    Reject,
    /// Forward it, marked `x-risk-decision: unchecked`.
    Pass,
}

/// What to do when tripwire itself cannot decide (an internal error, overload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Forward the request marked `x-risk-decision: unchecked`.
    FailOpen,
    /// Answer 503.
    FailClosed,
}

/// Which requests are transactions and where their fields are.
#[derive(Clone, Debug)]
pub struct Route {
    /// Method to match.
    pub method: hyper::Method,
    /// Path pattern to match.
    pub path: PathPattern,
    /// Where each decide field is in the body.
    pub fields: FieldMapping,
}

/// Reverse-proxy settings.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The payment service: scheme, host and port.
    pub upstream: hyper::Uri,
    /// Time allowed for the upstream's response headers.
    pub timeout: Duration,
    /// Review handling.
    pub on_review: ReviewPolicy,
    /// Invalid body handling.
    pub on_invalid: InvalidPolicy,
    /// Internal failure handling.
    pub on_internal_error: FailurePolicy,
    /// Intercepted requests in flight beyond which new ones count as overload.
    pub max_inflight: usize,
    /// Routes; empty means every POST with a JSON body, with the decide field names.
    pub routes: Vec<Route>,
}

impl ProxyConfig {
    /// The defaults for `upstream`: 5 s timeout, forward reviews, reject invalid bodies, fail
    /// open (see the README for why), 10,000 requests in flight, no routes.
    pub fn new(upstream: hyper::Uri) -> ProxyConfig {
        ProxyConfig {
            upstream,
            timeout: Duration::from_secs(5),
            on_review: ReviewPolicy::Forward,
            on_invalid: InvalidPolicy::Reject,
            on_internal_error: FailurePolicy::FailOpen,
            max_inflight: 10_000,
            routes: Vec::new(),
        }
    }
}
