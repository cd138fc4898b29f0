//! Reverse-proxy mode: the payment listener sits in front of the payment service. Requests that
//! are transactions are decided first; a denied one never reaches the upstream. Everything
//! else passes through untouched. The decision API paths stay local.
//!
//! Forwarding keeps method, path, query, headers (less hop-by-hop ones) and body, over a pooled
//! keep-alive hyper client; the upstream's answer is streamed back.

pub mod config;
pub mod routes;

pub use config::{FailurePolicy, InvalidPolicy, ProxyConfig, ReviewPolicy, Route};

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use smallvec::{SmallVec, smallvec};
use tracing::{debug, warn};

use super::AppState;
use super::http::{
    ApiError, Body, RequestContext, boxed, ensure_client_present, json, read_limited,
};
use crate::rules::Action;
use crate::txn::{self, OutcomeReport, OutcomeStatus};
use routes::FieldMapping;

/// Header naming the decision on a forwarded request.
pub const DECISION_HEADER: &str = "x-risk-decision";
/// Header naming the rules version on a forwarded request.
pub const VERSION_HEADER: &str = "x-risk-rules-version";
/// Header carrying the behaviour score on a forwarded request, when the rules have a scorecard.
pub const SCORE_HEADER: &str = "x-risk-score";
/// Header listing the matched tag rules (comma-separated ids) on a forwarded request.
pub const TAGS_HEADER: &str = "x-risk-tags";

/// Every header tripwire sets for the upstream. A client's own copies are removed from every
/// forwarded request, decided or not, so that no client can send a payment the upstream would
/// read as approved. Built once: a header name given as text is parsed again at each use.
static RISK_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static(DECISION_HEADER),
    HeaderName::from_static(VERSION_HEADER),
    HeaderName::from_static(SCORE_HEADER),
    HeaderName::from_static(TAGS_HEADER),
];

/// `x-forwarded-for`: the client's address, appended to any the request already carries.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`: the scheme the client used.
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The risk headers of one forwarded request: at most one of each of [`RISK_HEADERS`].
type RiskHeaders = SmallVec<[(&'static HeaderName, HeaderValue); 4]>;

/// The proxy's state: settings, the upstream client, the in-flight count.
pub struct Proxy {
    config: ProxyConfig,
    client: Client<HttpConnector, Body>,
    inflight: AtomicUsize,
    identity: FieldMapping,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("upstream", &self.config.upstream)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy for `config`, with a pooled keep-alive client.
    pub fn new(config: ProxyConfig) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Proxy {
            config,
            client,
            inflight: AtomicUsize::new(0),
            identity: FieldMapping::default(),
        }
    }

    /// The field mapping of the route this request matches, if it is a transaction.
    fn interception<'a>(&'a self, req: &Request<Incoming>) -> Option<&'a FieldMapping> {
        if self.config.routes.is_empty() {
            let json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| {
                    let mime = ct.split(';').next().unwrap_or("").trim().as_bytes();
                    let ends_with = |suffix: &[u8]| {
                        mime.len() >= suffix.len()
                            && mime[mime.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    };
                    mime.eq_ignore_ascii_case(b"application/json") || ends_with(b"+json")
                });
            return (req.method() == hyper::Method::POST && json).then_some(&self.identity);
        }
        self.config
            .routes
            .iter()
            .find(|r| r.method == req.method() && r.path.matches(req.uri().path()))
            .map(|r| &r.fields)
    }
}

/// Whether a body is a JSON object carrying both `transaction_id` and `customer_id`: what makes
/// a request a transaction when no routes are configured.
fn names_a_transaction(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Names {
        transaction_id: Option<serde::de::IgnoredAny>,
        customer_id: Option<serde::de::IgnoredAny>,
    }
    // A struct also deserialises from an array; only an object names fields.
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && serde_json::from_slice::<Names>(body)
            .is_ok_and(|n| n.transaction_id.is_some() && n.customer_id.is_some())
}

/// The client of a connection, as the requests forwarded for it name it in
/// `x-forwarded-for`: its address formatted once a connection, not once a request.
#[derive(Clone, Debug)]
pub struct Peer {
    ip: HeaderValue,
}

impl Peer {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Peer {
        let ip = HeaderValue::from_maybe_shared(Bytes::from(addr.ip().to_string()))
            .unwrap_or(HeaderValue::from_static("unknown"));
        Peer { ip }
    }
}

/// Counts an intercepted request in flight; the count drops when this does.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `name` describes one connection, not the message (RFC 9110 section 7.6.1): never
/// forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, including those the `Connection` header names, and `also`.
///
/// Only the names the message carries are looked at: most messages carry none of these, and
/// then nothing is removed, where removing each of a dozen names would hash and probe for
/// every one.
fn strip_hop_by_hop(headers: &mut HeaderMap, also: &[HeaderName]) {
    let mut doomed: SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name) || also.contains(name))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    doomed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
    );
    for name in &doomed {
        headers.remove(name);
    }
}

#[derive(Serialize)]
struct Refused<'a> {
    decision: &'a str,
    reasons: &'a serde_json::Value,
    transaction_id: &'a str,
    score: &'a serde_json::Value,
    tags: &'a serde_json::Value,
}

#[derive(Serialize)]
struct InvalidBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pointer: Option<&'a str>,
}

/// Routes one request of the payment listener in proxy mode.
pub async fn handle(
    state: &Arc<AppState>,
    proxy: &Proxy,
    req: Request<Incoming>,
    peer: &Peer,
    context: Option<&RequestContext>,
) -> Response<Body> {
    let path = req.uri().path();
    if path == "/v1/decide" || path == "/v1/outcomes" || path.starts_with("/v1/customers/") {
        return boxed(super::payment::handle(state, req, context).await);
    }
    let Some(mapping) = proxy.interception(&req) else {
        state.metrics.record_proxy("passthrough");
        let (parts, body) = req.into_parts();
        return forward(
            state,
            proxy,
            parts,
            body.boxed_unsync(),
            peer,
            None,
            RiskHeaders::new(),
        )
        .await;
    };

    let inflight = proxy.inflight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(&proxy.inflight);
    if inflight >= proxy.config.max_inflight {
        warn!(
            inflight,
            limit = proxy.config.max_inflight,
            "proxy overloaded"
        );
        return internal_failure(state, proxy, req, peer, "overload").await;
    }

    let (parts, body) = req.into_parts();
    let body = match read_limited(context, &parts.headers, body, state.config.max_body_bytes).await
    {
        Ok(body) => body,
        Err(e) => {
            state.metrics.record_proxy("invalid_rejected");
            return boxed(e.response());
        }
    };

    let decide_body: Bytes = if mapping.is_identity() {
        body.clone()
    } else {
        match mapping.to_decide_body(&body) {
            Ok(mapped) => Bytes::from(mapped),
            Err(e) => {
                return invalid(state, proxy, parts, body, peer, &e.to_string(), None, None).await;
            }
        }
    };

    if let Err(e) = ensure_client_present(context) {
        state.metrics.record_proxy("client_gone");
        return boxed(e.response());
    }
    let started = Instant::now();
    let mut answer = Vec::with_capacity(512);
    // Parsed once here rather than through `Interceptor::decide`: the ids are needed again to
    // record the upstream's answer as the outcome.
    let decided = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let txn = txn::parse_decide(&decide_body)?;
        let summary = state.interceptor.decide_txn(&txn, &mut answer);
        Ok::<_, txn::TxnError>((
            summary,
            (
                txn.customer_id.into_owned(),
                txn.transaction_id.into_owned(),
            ),
        ))
    }));
    let (summary, outcome_key) = match decided {
        Ok(Ok(decided)) => decided,
        // Without routes, only a body that names a transaction is one: a JSON POST to
        // `/login` or a webhook passes through untouched instead of being refused for lacking
        // a `transaction_id`. Asked only when the body did not parse as a transaction, so a
        // transaction is parsed once.
        Ok(Err(_)) if proxy.config.routes.is_empty() && !names_a_transaction(&body) => {
            state.metrics.record_proxy("passthrough");
            let body = http_body_util::Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync();
            return forward(state, proxy, parts, body, peer, None, RiskHeaders::new()).await;
        }
        Ok(Err(e)) => {
            let pointer = e.field.and_then(|f| mapping.pointer(f));
            return invalid(
                state, proxy, parts, body, peer, &e.message, e.field, pointer,
            )
            .await;
        }
        Err(_) => {
            warn!("the interceptor panicked while deciding");
            let req = Request::from_parts(parts, http_body_util::Full::new(body));
            return internal_failure_buffered(state, proxy, req, peer, "internal_error").await;
        }
    };
    let elapsed = started.elapsed();
    state
        .metrics
        .record_decision(&summary, elapsed.as_secs_f64());
    let answer = Bytes::from(answer);
    if let Some(feed) = state.fleet.as_ref().and_then(|f| f.decisions.as_ref()) {
        feed.record(decide_body.clone(), answer.clone(), elapsed);
    }
    if let Some(log) = &state.decision_log
        && log.record(decide_body.clone(), answer.clone(), elapsed)
    {
        state.metrics.record_logged();
    }

    let held = match summary.action {
        Action::Deny => true,
        Action::Review => proxy.config.on_review == ReviewPolicy::Hold,
        Action::Allow | Action::Tag => false,
    };
    if held {
        // The refusal repeats parts of the answer; read back only on this path.
        let parsed: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
        let transaction_id = parsed["transaction_id"].as_str().unwrap_or_default();
        state
            .metrics
            .record_proxy(if summary.action == Action::Deny {
                "denied"
            } else {
                "held"
            });
        return boxed(json(
            StatusCode::FORBIDDEN,
            &Refused {
                decision: summary.action.as_str(),
                reasons: &parsed["reasons"],
                transaction_id,
                score: &parsed["score"],
                tags: &parsed["tags"],
            },
        ));
    }
    state
        .metrics
        .record_forwarded(summary.action != Action::Allow);
    let [decision_header, version_header, score_header, tags_header] = &RISK_HEADERS;
    let mut risk: RiskHeaders = smallvec![(
        decision_header,
        HeaderValue::from_static(summary.action.as_str()),
    )];
    if let Ok(v) = HeaderValue::from_str(&summary.rules.version.label) {
        risk.push((version_header, v));
    }
    if let Some(score) = summary.score {
        risk.push((score_header, HeaderValue::from(score)));
    }
    if !summary.tags.is_empty() {
        let rules = summary.rules.set.rules();
        let ids: Vec<&str> = summary
            .tags
            .iter()
            .map(|&i| &*rules[usize::from(i)].id)
            .collect();
        if let Ok(v) = HeaderValue::from_str(&ids.join(",")) {
            risk.push((tags_header, v));
        }
    }
    drop(summary);
    let body = http_body_util::Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync();
    forward(state, proxy, parts, body, peer, Some(outcome_key), risk).await
}

#[allow(clippy::too_many_arguments)]
async fn invalid(
    state: &Arc<AppState>,
    proxy: &Proxy,
    parts: hyper::http::request::Parts,
    body: Bytes,
    peer: &Peer,
    error: &str,
    field: Option<&str>,
    pointer: Option<&str>,
) -> Response<Body> {
    match proxy.config.on_invalid {
        InvalidPolicy::Reject => {
            state.metrics.record_proxy("invalid_rejected");
            boxed(json(
                StatusCode::BAD_REQUEST,
                &InvalidBody {
                    error,
                    field,
                    pointer,
                },
            ))
        }
        InvalidPolicy::Pass => {
            state.metrics.record_proxy("invalid_passed");
            let body = http_body_util::Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync();
            forward(state, proxy, parts, body, peer, None, unchecked()).await
        }
    }
}

/// Tripwire cannot decide: forward unchecked (fail-open) or answer 503 (fail-closed).
async fn internal_failure(
    state: &Arc<AppState>,
    proxy: &Proxy,
    req: Request<Incoming>,
    peer: &Peer,
    cause: &'static str,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    fail(state, proxy, parts, body.boxed_unsync(), peer, cause).await
}

async fn internal_failure_buffered(
    state: &Arc<AppState>,
    proxy: &Proxy,
    req: Request<http_body_util::Full<Bytes>>,
    peer: &Peer,
    cause: &'static str,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body.map_err(|never| match never {}).boxed_unsync();
    fail(state, proxy, parts, body, peer, cause).await
}

async fn fail(
    state: &Arc<AppState>,
    proxy: &Proxy,
    parts: hyper::http::request::Parts,
    body: Body,
    peer: &Peer,
    cause: &'static str,
) -> Response<Body> {
    match proxy.config.on_internal_error {
        FailurePolicy::FailOpen => {
            state.metrics.record_proxy_failure(cause, "fail_open");
            forward(state, proxy, parts, body, peer, None, unchecked()).await
        }
        FailurePolicy::FailClosed => {
            state.metrics.record_proxy_failure(cause, "fail_closed");
            boxed(
                ApiError::Unavailable(format!(
                    "tripwire cannot decide ({cause}) and is configured to fail closed"
                ))
                .response(),
            )
        }
    }
}

/// The marking of a request forwarded without a decision.
fn unchecked() -> RiskHeaders {
    smallvec![(&RISK_HEADERS[0], HeaderValue::from_static("unchecked"))]
}

/// Sends the request to the upstream, carrying exactly the `risk` headers of tripwire's (any
/// the client sent are dropped), and streams its answer back. When `outcome` names the
/// transaction, what became of it is recorded as its outcome: settled on a 2xx, failed on any
/// other status and when the upstream could not be reached or did not answer in time (the
/// gateway saw the payment fail).
#[allow(clippy::too_many_arguments)]
async fn forward(
    state: &Arc<AppState>,
    proxy: &Proxy,
    mut parts: hyper::http::request::Parts,
    body: Body,
    peer: &Peer,
    outcome: Option<(String, String)>,
    risk: RiskHeaders,
) -> Response<Body> {
    // Hop-by-hop processing first: a client's `Connection:` may name any header, and must
    // never be able to remove one tripwire sets, so tripwire's are added after it.
    strip_hop_by_hop(&mut parts.headers, &RISK_HEADERS);
    for (name, value) in risk {
        parts.headers.insert(name.clone(), value);
    }
    let record_outcome = |status: OutcomeStatus| {
        if let Some((customer_id, transaction_id)) = &outcome {
            let _ = state.interceptor.record_outcome(&OutcomeReport {
                transaction_id: transaction_id.as_str().into(),
                customer_id: customer_id.as_str().into(),
                status: crate::txn::ReportedStatus::Outcome(status),
                fraud: Default::default(),
            });
        }
    };
    let upstream = &proxy.config.upstream;
    // The upstream's scheme and authority (clones share the configured URI's bytes) with the
    // request's own path and query, which are moved, not copied. The configuration checks
    // that an upstream has a host.
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(upstream.scheme().cloned().unwrap_or(Scheme::HTTP));
    uri.authority = upstream.authority().cloned();
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    let Ok(uri) = Uri::from_parts(uri) else {
        return boxed(ApiError::BadGateway("cannot build the upstream URL".into()).response());
    };
    parts.uri = uri;
    let forwarded_for = match parts
        .headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        // The text becomes the value's bytes without a copy.
        Some(before) => HeaderValue::from_maybe_shared(Bytes::from(format!(
            "{before}, {}",
            peer.ip.to_str().unwrap_or_default()
        )))
        .ok(),
        None => Some(peer.ip.clone()),
    };
    if let Some(v) = forwarded_for {
        parts.headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    parts
        .headers
        .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));

    let started = Instant::now();
    let sent = tokio::time::timeout(
        proxy.config.timeout,
        proxy.client.request(Request::from_parts(parts, body)),
    )
    .await;
    state
        .metrics
        .observe_upstream(started.elapsed().as_secs_f64());
    let response = match sent {
        Err(_) => {
            state.metrics.record_proxy("upstream_timeout");
            record_outcome(OutcomeStatus::Failed);
            return boxed(
                ApiError::GatewayTimeout(format!(
                    "the upstream did not answer within {} ms",
                    proxy.config.timeout.as_millis()
                ))
                .response(),
            );
        }
        Ok(Err(e)) => {
            let unreachable = e.is_connect();
            state.metrics.record_proxy(if unreachable {
                "upstream_unreachable"
            } else {
                "upstream_error"
            });
            debug!(error = %e, "upstream request failed");
            record_outcome(OutcomeStatus::Failed);
            return boxed(
                ApiError::BadGateway(if unreachable {
                    format!("the upstream {upstream} is unreachable")
                } else {
                    format!("the upstream failed: {e}")
                })
                .response(),
            );
        }
        Ok(Ok(response)) => response,
    };
    record_outcome(if response.status().is_success() {
        OutcomeStatus::Settled
    } else {
        OutcomeStatus::Failed
    });
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, &[]);
    Response::from_parts(parts, body.boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_by_hop_test_knows_exactly_the_rfc_names() {
        for name in [
            header::CONNECTION,
            HeaderName::from_static("keep-alive"),
            header::PROXY_AUTHENTICATE,
            header::PROXY_AUTHORIZATION,
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
        ] {
            assert!(is_hop_by_hop(&name), "{name}");
        }
        for name in RISK_HEADERS.iter().chain([&X_FORWARDED_FOR, &header::HOST]) {
            assert!(!is_hop_by_hop(name), "{name}");
        }
    }

    #[test]
    fn stripping_removes_hop_by_hop_named_and_extra_headers_only() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-secret, close"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(DECISION_HEADER, HeaderValue::from_static("allow"));
        let mut response = headers.clone();
        strip_hop_by_hop(&mut headers, &RISK_HEADERS);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host"]);
        // Without extra names, a risk header an upstream answers with is the upstream's own.
        strip_hop_by_hop(&mut response, &[]);
        let mut left: Vec<&str> = response.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", DECISION_HEADER]);
        // Nothing to strip: the map is left as it was.
        let mut plain = HeaderMap::new();
        plain.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut plain, &RISK_HEADERS);
        assert_eq!(plain.len(), 1);
    }
}
