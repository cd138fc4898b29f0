//! Reverse-proxy mode against a real upstream: a hyper server started by the test that records
//! what reaches it.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Client, start_with, txn};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tripwire::config::{Config, ServeSettings};
use tripwire::server::proxy::ProxyConfig;
use tripwire::server::{ServeConfig, Server};
use tripwire::state::StoreConfig;

const RULES: &str = "timezone: UTC\nrules:\n  - id: big_amount\n    action: deny\n    when:\n      amount: { at_least: 1000 }\n  - id: mid_amount\n    action: review\n    when:\n      amount: { at_least: 500 }\n  - id: failing\n    action: review\n    when:\n      failed_count: { window: 1h, at_least: 1 }\n";

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// A real upstream: `/hang` never answers, paths starting `/fail` answer 500, others 200.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let record = Arc::clone(&record);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let path = parts.uri.path().to_string();
                            record.lock().push(Seen {
                                method: parts.method,
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body: body.clone(),
                            });
                            if path == "/hang" {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                            }
                            let status = if path.starts_with("/fail") { 500 } else { 200 };
                            let answer = json!({"upstream": "ok", "bytes": body.len()}).to_string();
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("x-upstream", "yes")
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(answer)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

fn proxy_config(upstream: SocketAddr, extra: &str) -> ProxyConfig {
    let text =
        format!("rules = \"unused.yaml\"\n[proxy]\nupstream = \"http://{upstream}\"\n{extra}");
    let file: ServeSettings = toml::from_str(&text).unwrap();
    Config::resolve(file).unwrap().serve.proxy.unwrap()
}

async fn start_proxy(upstream: SocketAddr, extra: &str) -> Server {
    start_proxy_with(RULES, upstream, extra).await
}

/// A proxy to `upstream` deciding with `rules`, with `extra` added to its config.
async fn start_proxy_with(rules: &str, upstream: SocketAddr, extra: &str) -> Server {
    let config = ServeConfig {
        proxy: Some(proxy_config(upstream, extra)),
        ..ServeConfig::default()
    };
    start_with(rules, StoreConfig::default(), config).await
}

async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, hyper::HeaderMap, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "payments.internal");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = sender
        .send_request(
            req.body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn body(id: &str, amount: &str) -> String {
    txn(id, "cust-1", "2026-03-01T10:00:00Z", amount)
}

#[tokio::test]
async fn an_allowed_transaction_is_forwarded_intact_and_marked() {
    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "").await;
    let sent = body("p1", "120.00");
    let (status, headers, text) = request(
        server.payment_addr(),
        Method::POST,
        "/payments/charge?attempt=2&src=app",
        &sent,
        &[
            JSON,
            ("x-trace", "abc"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "hop"),
            ("keep-alive", "timeout=5"),
            ("x-risk-decision", "deny"),
            ("x-risk-tags", "forged"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["x-upstream"], "yes");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["upstream"],
        "ok"
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got.method, Method::POST);
    assert_eq!(got.uri, "/payments/charge?attempt=2&src=app");
    assert_eq!(got.body, sent.as_bytes());
    assert_eq!(got.headers["x-trace"], "abc");
    assert_eq!(got.headers["host"], "payments.internal");
    assert_eq!(got.headers["x-risk-decision"], "allow");
    assert!(
        got.headers["x-risk-rules-version"]
            .to_str()
            .unwrap()
            .starts_with("1-")
    );
    assert_eq!(got.headers.get_all("x-risk-decision").iter().count(), 1);
    assert!(
        got.headers.get("x-risk-tags").is_none(),
        "a client's own risk headers never reach the upstream"
    );
    assert!(
        got.headers.get("x-risk-score").is_none(),
        "these rules have no scorecard"
    );
    assert_eq!(got.headers["x-forwarded-for"], "127.0.0.1");
    assert!(
        got.headers.get("x-secret").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert!(got.headers.get("keep-alive").is_none());
}

const SCORED_RULES: &str = "timezone: UTC
rules:
  - id: big_amount
    action: deny
    when:
      amount: { at_least: 1000 }
  - id: regular
    action: tag
    when:
      count: { window: 1h, at_least: 2 }
scorecard:
  base_score: 600
  base_odds: 50
  points_to_double_odds: 20
  characteristics:
    - name: activity
      feature: { count: { window: 1h } }
      bins:
        - { below: 2, points: -10 }
        - { from: 2, points: 15 }
";

#[tokio::test]
async fn the_score_and_tags_travel_with_the_decision() {
    let upstream = Upstream::start().await;
    let server = start_proxy_with(SCORED_RULES, upstream.addr, "").await;
    let first = txn("s1", "cust-s", "2026-03-01T10:00:00Z", "10");
    let (status, _, _) =
        request(server.payment_addr(), Method::POST, "/pay", &first, &[JSON]).await;
    assert_eq!(status, StatusCode::OK);
    let second = txn("s2", "cust-s", "2026-03-01T10:01:00Z", "10");
    let (status, _, _) = request(
        server.payment_addr(),
        Method::POST,
        "/pay",
        &second,
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen[0].headers["x-risk-score"], "590");
    assert!(seen[0].headers.get("x-risk-tags").is_none());
    assert_eq!(seen[1].headers["x-risk-score"], "615");
    assert_eq!(seen[1].headers["x-risk-tags"], "regular");

    let denied = txn("s3", "cust-s", "2026-03-01T10:02:00Z", "5000");
    let (status, _, text) = request(
        server.payment_addr(),
        Method::POST,
        "/pay",
        &denied,
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["score"], 615);
    assert_eq!(answer["tags"], json!(["regular"]));
}

#[tokio::test]
async fn a_denied_transaction_never_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "").await;
    let (status, _, text) = request(
        server.payment_addr(),
        Method::POST,
        "/pay",
        &body("d1", "5000"),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["decision"], "deny");
    assert_eq!(answer["transaction_id"], "d1");
    assert_eq!(answer["reasons"][0]["rule"], "big_amount");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn review_is_forwarded_by_default_and_held_when_configured() {
    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "").await;
    let (status, _, _) = request(
        server.payment_addr(),
        Method::POST,
        "/pay",
        &body("r1", "600"),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(upstream.seen()[0].headers["x-risk-decision"], "review");

    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "on_review = \"hold\"").await;
    let (status, _, text) = request(
        server.payment_addr(),
        Method::POST,
        "/pay",
        &body("r2", "600"),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["decision"],
        "review"
    );
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_client_cannot_strip_the_decision_headers_by_naming_them_in_connection() {
    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "").await;
    let (status, _, _) = request(
        server.payment_addr(),
        Method::POST,
        "/pay",
        &body("c1", "600"),
        &[
            JSON,
            (
                "connection",
                "x-risk-decision, x-risk-rules-version, x-risk-score, x-risk-tags, x-forwarded-for",
            ),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = &upstream.seen()[0].headers;
    assert_eq!(seen["x-risk-decision"], "review");
    assert!(seen.contains_key("x-risk-rules-version"));
    assert!(seen.contains_key("x-forwarded-for"));
    assert!(
        !seen.contains_key("connection"),
        "hop-by-hop headers still go"
    );
}

#[tokio::test]
async fn an_invalid_transaction_is_refused_or_passed_unchecked() {
    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "").await;
    let bad = json!({"transaction_id": "i1", "customer_id": "c", "timestamp": "2026-03-01T10:00:00Z", "amount": "1.001"}).to_string();
    let (status, _, text) =
        request(server.payment_addr(), Method::POST, "/pay", &bad, &[JSON]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["field"],
        "amount"
    );
    assert!(upstream.seen().is_empty());
    // On a configured route, a body that is not even JSON is refused too.
    let routed = Upstream::start().await;
    let server = start_proxy(routed.addr, "[[proxy.routes]]\npath = \"/pay\"").await;
    let (status, _, _) = request(
        server.payment_addr(),
        Method::POST,
        "/pay",
        "{oops",
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(routed.seen().is_empty());

    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "on_invalid = \"pass\"").await;
    let (status, _, _) = request(server.payment_addr(), Method::POST, "/pay", &bad, &[JSON]).await;
    assert_eq!(status, StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen[0].headers["x-risk-decision"], "unchecked");
    assert_eq!(seen[0].body, bad.as_bytes());
}

#[tokio::test]
async fn without_routes_a_json_post_that_names_no_transaction_passes_through() {
    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "").await;
    for body in [r#"{"user": "ann", "password": "x"}"#, "{oops", "[1, 2]"] {
        let (status, headers, _) =
            request(server.payment_addr(), Method::POST, "/login", body, &[JSON]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!headers.contains_key("x-risk-decision"));
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0].body,
        r#"{"user": "ann", "password": "x"}"#.as_bytes()
    );
    assert!(
        seen.iter()
            .all(|s| !s.headers.contains_key("x-risk-decision"))
    );
}

#[tokio::test]
async fn requests_that_are_not_transactions_pass_through_untouched() {
    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "").await;
    let (status, _, _) = request(
        server.payment_addr(),
        Method::GET,
        "/status?verbose=1",
        "",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = request(
        server.payment_addr(),
        Method::POST,
        "/notes",
        "amount=5000",
        &[
            ("content-type", "text/plain"),
            ("x-risk-decision", "allow"),
            ("x-risk-rules-version", "1-forged"),
            ("x-risk-score", "999"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].uri, "/status?verbose=1");
    assert!(
        seen.iter().all(|s| {
            ["x-risk-decision", "x-risk-rules-version", "x-risk-score"]
                .iter()
                .all(|h| s.headers.get(*h).is_none())
        }),
        "an undecided request never looks decided to the upstream"
    );
    assert_eq!(seen[1].body, "amount=5000".as_bytes());
}

#[tokio::test]
async fn large_and_chunked_bodies_arrive_whole() {
    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "").await;
    let big: String = (0..2 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let (status, _, text) = request(
        server.payment_addr(),
        Method::PUT,
        "/documents/42",
        &big,
        &[("content-type", "application/octet-stream")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["bytes"],
        big.len()
    );
    assert_eq!(upstream.seen()[0].body, big.as_bytes());

    // A transaction sent chunked (no content-length), in pieces.
    let json_body = body("c1", "42.00");
    let pieces = json_body
        .as_bytes()
        .chunks(20)
        .map(Bytes::copy_from_slice)
        .collect();
    let stream = TcpStream::connect(server.payment_addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/pay")
        .header("host", "x")
        .header("content-type", "application/json")
        .body(Chunks(pieces))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.body, json_body.as_bytes());
    assert_eq!(last.headers["x-risk-decision"], "allow");
}

/// A request body of several chunks with no declared length, so hyper sends it chunked.
struct Chunks(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn the_upstream_status_becomes_the_outcome() {
    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "").await;
    let (status, _, _) = request(
        server.payment_addr(),
        Method::POST,
        "/fail/pay",
        &body("o1", "10"),
        &[JSON],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the upstream's answer comes back"
    );
    let (status, _, _) = request(
        server.payment_addr(),
        Method::POST,
        "/pay",
        &body("o2", "11"),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(
        seen[1].headers["x-risk-decision"], "review",
        "the failure counted: failed_count ≥ 1"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_and_a_hanging_one_504() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let server = start_proxy(dead, "").await;
    let (status, _, text) = request(
        server.payment_addr(),
        Method::POST,
        "/pay",
        &body("u1", "10"),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{text}");
    let (status, _, _) = request(server.payment_addr(), Method::GET, "/status", "", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    // The payment did not go through: it counts as failed for the rules.
    let (status, text) = common::send(
        server.payment_addr(),
        Method::POST,
        "/v1/decide",
        &body("u1-next", "10"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["decision"], "review", "{answer}");
    assert_eq!(answer["reasons"][0]["rule"], "failing");

    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "timeout = \"300ms\"").await;
    let started = std::time::Instant::now();
    let (status, _, text) = request(
        server.payment_addr(),
        Method::POST,
        "/hang",
        &body("u2", "10"),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (_, text) = common::send(
        server.payment_addr(),
        Method::POST,
        "/v1/decide",
        &body("u2-next", "10"),
    )
    .await;
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["decision"], "review",
        "a timed-out payment counts as failed"
    );
    let m = common::send(server.admin_addr(), Method::GET, "/metrics", "")
        .await
        .1;
    assert!(
        m.contains("tripwire_proxy_requests_total{result=\"upstream_timeout\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn a_nested_gateway_payload_is_mapped_by_pointers() {
    let upstream = Upstream::start().await;
    let routes = r#"
[[proxy.routes]]
method = "POST"
path = "/v2/payments/*/capture"
fields = { transaction_id = "/id", customer_id = "/payer/id", amount = "/amount/value", timestamp = "/created_at", lat = "/device/geo/0", lon = "/device/geo/1" }
"#;
    let server = start_proxy(upstream.addr, routes).await;
    let gateway = |id: &str, value: &str| {
        format!(
            r#"{{"id":"{id}","payer":{{"id":"cust-9","tier":"gold"}},"amount":{{"value":{value},"currency":"CNY"}},"created_at":"2026-03-01T10:00:00Z","device":{{"geo":[31.23,121.47]}}}}"#
        )
    };
    let (status, _, text) = request(
        server.payment_addr(),
        Method::POST,
        "/v2/payments/abc/capture",
        &gateway("g1", "4999.00"),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["transaction_id"],
        "g1"
    );
    let (status, _, _) = request(
        server.payment_addr(),
        Method::POST,
        "/v2/payments/abc/capture",
        &gateway("g2", "20.5"),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(upstream.seen()[0].headers["x-risk-decision"], "allow");
    // The mapped fields are validated like /v1/decide, and the error says where to look.
    let (status, _, text) = request(
        server.payment_addr(),
        Method::POST,
        "/v2/payments/abc/capture",
        &gateway("g3", "-1"),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (err["field"].as_str(), err["pointer"].as_str()),
        (Some("amount"), Some("/amount/value"))
    );
    // Other routes are not transactions once routes are configured: a JSON POST elsewhere passes.
    let (status, _, _) = request(
        server.payment_addr(),
        Method::POST,
        "/v2/refunds",
        &gateway("g4", "99999"),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(upstream.seen()[1].headers.get("x-risk-decision").is_none());
}

#[tokio::test]
async fn device_and_ip_are_mapped_by_pointers_for_entity_windows() {
    let upstream = Upstream::start().await;
    let rules = "timezone: UTC\nrules:\n  - id: shared_device\n    action: deny\n    when:\n      distinct_customers: { by: device_id, window: 1d, at_least: 3 }\n  - id: shared_ip\n    action: review\n    when:\n      distinct_customers: { by: ip, window: 1d, at_least: 2 }\n";
    let routes = r#"
[[proxy.routes]]
method = "POST"
path = "/pay"
fields = { transaction_id = "/id", customer_id = "/payer", amount = "/amount", timestamp = "/at", device_id = "/client/device", ip = "/client/ip" }
"#;
    let server = start_proxy_with(rules, upstream.addr, routes).await;
    let addr = server.payment_addr();
    let pay = |id: &str, customer: &str, minute: u32| {
        let body = format!(
            r#"{{"id":"{id}","payer":"{customer}","amount":"25.00","at":"2026-03-01T10:{minute:02}:00Z","client":{{"device":"dev-1","ip":"10.0.0.7"}}}}"#
        );
        async move { request(addr, Method::POST, "/pay", &body, &[JSON]).await }
    };
    // Three customers on one device and one IP: the second is the IP's second customer, the
    // third the device's third. Without the mapping, neither entity would be seen.
    assert_eq!(pay("d1", "c1", 0).await.0, StatusCode::OK);
    assert_eq!(pay("d2", "c2", 1).await.0, StatusCode::OK);
    let (status, _, text) = pay("d3", "c3", 2).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("shared_device"), "{text}");
    let seen = upstream.seen();
    assert_eq!(seen[0].headers["x-risk-decision"], "allow");
    assert_eq!(seen[1].headers["x-risk-decision"], "review");
}

#[tokio::test]
async fn overload_fails_open_or_closed_as_configured() {
    for (policy, expect) in [
        ("fail_open", StatusCode::OK),
        ("fail_closed", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let upstream = Upstream::start().await;
        let extra = format!("timeout = \"2s\"\nmax_inflight = 1\non_internal_error = \"{policy}\"");
        let server = start_proxy(upstream.addr, &extra).await;
        let addr = server.payment_addr();
        let hanging = tokio::spawn(async move {
            request(addr, Method::POST, "/hang", &body("h1", "10"), &[JSON]).await
        });
        let ready = common::eventually(5, || async { !upstream.seen().is_empty() }).await;
        assert!(ready, "the first request holds the only slot");
        let (status, _, text) =
            request(addr, Method::POST, "/pay", &body("h2", "5000"), &[JSON]).await;
        assert_eq!(status, expect, "{policy}: {text}");
        if policy == "fail_open" {
            let seen = upstream.seen();
            assert_eq!(seen.last().unwrap().headers["x-risk-decision"], "unchecked");
        }
        let m = common::send(server.admin_addr(), Method::GET, "/metrics", "")
            .await
            .1;
        assert!(
            m.contains(&format!(
                "tripwire_proxy_internal_failures_total{{cause=\"overload\",policy=\"{policy}\"}} 1"
            )),
            "{m}"
        );
        hanging.abort();
    }
}

#[tokio::test]
async fn the_decision_api_and_admin_keep_working_in_proxy_mode() {
    let upstream = Upstream::start().await;
    let server = start_proxy(upstream.addr, "").await;
    let mut client = Client::connect(server.payment_addr()).await;
    let (status, answer) = client.post("/v1/decide", &body("api1", "5000")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["decision"], "deny");
    assert!(
        upstream.seen().is_empty(),
        "the decision API is answered locally"
    );
    let (status, _) = common::get(server.admin_addr(), "/readyz").await;
    assert_eq!(status, StatusCode::OK);
}
