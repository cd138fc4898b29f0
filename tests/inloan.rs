//! In-loan features over HTTP with the shipped rules: scores and tags in answers and metrics,
//! and the customer scan that finds customers who no longer transact.

mod common;

use common::{Client, start, txn};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tripwire::interceptor::Interceptor;
use tripwire::live_rules::LiveRules;
use tripwire::state::{Store, StoreConfig};

#[test]
fn the_idle_sweep_keeps_customers_as_long_as_their_month_buckets_reach() {
    let rules = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/rules.yaml")).unwrap();
    let interceptor = Interceptor::new(
        Store::new(StoreConfig::default()),
        LiveRules::new(&rules, "rules.yaml").unwrap(),
    );
    let decide = |id: &str, customer: &str, at: &str| {
        let mut out = Vec::new();
        interceptor
            .decide(txn(id, customer, at, "100").as_bytes(), &mut out)
            .unwrap();
    };
    decide("q1", "quiet", "2024-01-10T10:00:00Z");
    // 200 days on, past every window of the rules (90 days) but inside their months.
    decide("b1", "busy", "2024-07-28T10:00:00Z");
    assert_eq!(interceptor.sweep_idle(), 0);
    assert_eq!(interceptor.store().customers(), 2);
    // 420 days on, past the thirteen months too.
    decide("b2", "busy", "2025-03-05T10:00:00Z");
    assert_eq!(interceptor.sweep_idle(), 1);
    assert_eq!(interceptor.store().customers(), 1);
}

#[tokio::test]
async fn a_good_customer_using_the_line_is_tagged_for_a_limit_increase() {
    let server = start(common::SHIPPED_RULES).await;
    let addr = server.payment_addr();
    let (status, _) = common::send(
        addr,
        Method::PUT,
        "/v1/customers/kim/credit-line",
        r#"{"limit": "10000", "granted_at": "2025-06-01T00:00:00+08:00"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut last = Value::Null;
    for (i, day) in ["01", "02", "03"].iter().enumerate() {
        let (_, answer) = common::post(
            addr,
            "/v1/decide",
            &txn(
                &format!("k{i}"),
                "kim",
                &format!("2026-03-{day}T10:00:00+08:00"),
                "2500",
            ),
        )
        .await;
        assert_eq!(answer["decision"], "allow", "{answer}");
        last = answer;
    }
    // Three transactions in 30 days +15, no failures +20, nothing flagged +10, 75% drawn 0,
    // no night activity +10: 655.
    assert_eq!(last["score"], 655, "{last}");
    assert_eq!(last["tags"], json!(["limit_increase_candidate"]));
    let metrics = common::send(server.admin_addr(), Method::GET, "/metrics", "")
        .await
        .1;
    assert!(
        metrics.contains("tripwire_tags_total{tag=\"limit_increase_candidate\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tripwire_score_bucket"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_finds_silent_customers_while_decisions_go_on() {
    let server = start(common::SHIPPED_RULES).await;
    let addr = server.payment_addr();
    let mut client = Client::connect(addr).await;
    for i in 0..300 {
        client
            .post(
                "/v1/decide",
                &txn(
                    &format!("q{i}"),
                    &format!("quiet-{i:03}"),
                    "2026-03-01T10:00:00+08:00",
                    "120",
                ),
            )
            .await;
    }
    for i in 0..100 {
        client
            .post(
                "/v1/decide",
                &txn(
                    &format!("a{i}"),
                    &format!("quiet-{i:03}"),
                    "2026-04-05T10:00:00+08:00",
                    "80",
                ),
            )
            .await;
    }
    // Decisions keep flowing during the scan.
    let busy = tokio::spawn(async move {
        let mut client = Client::connect(addr).await;
        for i in 0..300 {
            let (status, _) = client
                .post(
                    "/v1/decide",
                    &txn(
                        &format!("b{i}"),
                        &format!("busy-{}", i % 20),
                        "2026-04-10T09:00:00+08:00",
                        &format!("{}", 5 + i),
                    ),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
        }
    });
    let (status, body) = common::send(
        server.admin_addr(),
        Method::GET,
        "/admin/customers?tag=silent_good_customer&at=2026-04-10T10:00:00%2B08:00",
        "",
    )
    .await;
    busy.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The 200 customers silent since March 1 are found; the 100 active on April 5 and the
    // busy ones are not.
    assert_eq!(lines.len(), 200, "{body}");
    for line in &lines {
        let id = line["customer_id"].as_str().unwrap();
        let n: usize = id.trim_start_matches("quiet-").parse().unwrap();
        assert!(n >= 100, "{id} transacted on April 5");
        assert_eq!(line["tag"], "silent_good_customer");
        assert!(line["score"].as_i64().unwrap() >= 620);
        assert_eq!(line["last_transaction_at"], "2026-03-01T02:00:00Z");
    }
    // Without `at`, the scan looks at the latest event time seen, and says so.
    let mut admin = Client::connect(server.admin_addr()).await;
    let common::Answer {
        status,
        headers,
        body,
    } = admin
        .exchange(
            Method::GET,
            "/admin/customers?tag=silent_good_customer",
            bytes::Bytes::new(),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-scan-at-source"], "latest-event");
    assert_eq!(headers["x-scan-at"], "2026-04-10T01:00:00Z");
    assert_eq!(headers["x-scan-customers"], "320");
    let (status, body) = common::send(
        server.admin_addr(),
        Method::GET,
        "/admin/customers?tag=velocity_burst",
        "",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "only tag rules can be scanned: {body}"
    );
    let (status, _) = common::send(server.admin_addr(), Method::GET, "/admin/customers", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
