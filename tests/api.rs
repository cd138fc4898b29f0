//! The decision API over real HTTP against the real server with the shipped rules.

mod common;

use common::{get, post, send, start, txn};
use hyper::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn answers_allow_with_every_documented_field() {
    let server = start(common::SHIPPED_RULES).await;
    let (status, body) = post(
        server.payment_addr(),
        "/v1/decide",
        &txn("t-1", "alice", "2026-03-01T10:00:00+08:00", "120.50"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["transaction_id"], "t-1");
    assert_eq!(body["decision"], "allow");
    assert_eq!(body["reasons"], json!([]));
    assert_eq!(body["shadow"], json!([]));
    assert_eq!(body["tags"], json!([]));
    assert_eq!(
        body["score"], 630,
        "the shipped scorecard: base 600, one transaction -10, no failures +20, nothing flagged +10, no night activity +10"
    );
    let version = body["rules_version"].as_str().unwrap();
    assert!(
        version.starts_with("1-") && version.len() == 14,
        "{version}"
    );
}

#[tokio::test]
async fn denies_the_fifth_transaction_in_ten_minutes_with_figures() {
    let server = start(common::SHIPPED_RULES).await;
    let addr = server.payment_addr();
    for i in 0..4 {
        let (status, body) = post(
            addr,
            "/v1/decide",
            &txn(
                &format!("b-{i}"),
                "bob",
                &format!("2026-03-01T10:0{i}:00+08:00"),
                &format!("{}.00", 10 + i),
            ),
        )
        .await;
        assert_eq!(
            (status, body["decision"].as_str()),
            (StatusCode::OK, Some("allow")),
            "{body}"
        );
    }
    let (_, body) = post(
        addr,
        "/v1/decide",
        &txn("b-4", "bob", "2026-03-01T10:09:59+08:00", "14"),
    )
    .await;
    assert_eq!(body["decision"], "deny");
    assert_eq!(
        body["reasons"],
        json!([{"rule": "velocity_burst", "action": "deny", "message": "5 transactions in 10m, limit 4"}])
    );
}

#[tokio::test]
async fn amounts_are_exact_whatever_the_spelling() {
    let server = start(common::SHIPPED_RULES).await;
    let addr = server.payment_addr();
    let body = |id: &str, amount: serde_json::Value| {
        json!({"transaction_id": id, "customer_id": "carol", "timestamp": "2026-03-01T10:00:00+08:00", "amount": amount}).to_string()
    };
    post(addr, "/v1/decide", &body("c1", json!("200"))).await;
    let (_, b) = post(addr, "/v1/decide", &body("c2", json!(200))).await;
    assert_eq!(b["decision"], "allow");
    let (_, b) = post(addr, "/v1/decide", &body("c3", json!("200.01"))).await;
    assert_eq!(b["decision"], "allow", "200.01 is another amount");
    let (_, b) = post(addr, "/v1/decide", &body("c4", json!("200.00"))).await;
    assert_eq!(b["decision"], "deny", "third 200 in 30 minutes: {b}");
    assert_eq!(b["reasons"][0]["rule"], "repeated_equal_amount");
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_and_records_nothing() {
    let server = start(common::SHIPPED_RULES).await;
    let addr = server.payment_addr();
    let good = json!({"transaction_id": "x", "customer_id": "dave", "timestamp": "2026-03-01T10:00:00+08:00", "amount": "10.00"});
    let with = |key: &str, value: serde_json::Value| {
        let mut v = good.clone();
        v[key] = value;
        v.to_string()
    };
    let without = |key: &str| {
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove(key);
        v.to_string()
    };
    let cases: Vec<(String, Option<&str>)> = vec![
        ("{\"transaction_id\": ".to_string(), None),
        ("not json".to_string(), None),
        ("[]".to_string(), None),
        (without("transaction_id"), Some("transaction_id")),
        (without("customer_id"), Some("customer_id")),
        (without("timestamp"), Some("timestamp")),
        (without("amount"), Some("amount")),
        (with("transaction_id", json!("")), Some("transaction_id")),
        (with("customer_id", json!("")), Some("customer_id")),
        (
            with("customer_id", json!("x".repeat(129))),
            Some("customer_id"),
        ),
        (with("amount", json!("ten")), Some("amount")),
        (with("amount", json!("-10")), Some("amount")),
        (with("amount", json!(-10)), Some("amount")),
        (with("amount", json!("NaN")), Some("amount")),
        (with("amount", json!("10.001")), Some("amount")),
        (with("amount", json!(10.001)), Some("amount")),
        (with("amount", json!("0")), Some("amount")),
        (with("amount", json!(true)), Some("amount")),
        (
            with("timestamp", json!("2026-03-01T10:00:00")),
            Some("timestamp"),
        ),
        (with("timestamp", json!("yesterday")), Some("timestamp")),
        (with("lat", json!(12.5)), Some("lon")),
        (with("lon", json!(12.5)), Some("lat")),
        (
            format!("{{\"lat\": 91, \"lon\": 0, {}", &good.to_string()[1..]),
            Some("lat"),
        ),
        (
            format!("{{\"lat\": 0, \"lon\": -181, {}", &good.to_string()[1..]),
            Some("lon"),
        ),
        (with("currency", json!("yuan")), Some("currency")),
        (
            with("credit_limit", json!("5000")),
            Some("credit_granted_at"),
        ),
    ];
    for (body, field) in &cases {
        let (status, answer) = post(addr, "/v1/decide", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
        assert_eq!(answer["field"].as_str(), *field, "{body} → {answer}");
    }

    let big = json!({"transaction_id": "big", "customer_id": "dave", "timestamp": "2026-03-01T10:00:00+08:00", "amount": "10", "pad": "x".repeat(70_000)});
    let (status, answer) = post(addr, "/v1/decide", &big.to_string()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");

    // None of the refused requests was recorded: four good ones are still allowed.
    for i in 0..4 {
        let (_, answer) = post(
            addr,
            "/v1/decide",
            &txn(
                &format!("d{i}"),
                "dave",
                "2026-03-01T10:00:00+08:00",
                &format!("{}", 20 + i),
            ),
        )
        .await;
        assert_eq!(answer["decision"], "allow", "request {i}: {answer}");
    }
    let (_, answer) = post(
        addr,
        "/v1/decide",
        &txn("d4", "dave", "2026-03-01T10:00:00+08:00", "30"),
    )
    .await;
    assert_eq!(answer["decision"], "deny");
}

#[tokio::test]
async fn a_repeated_transaction_id_gets_its_first_decision_and_is_not_recorded_again() {
    let server = start(common::SHIPPED_RULES).await;
    let addr = server.payment_addr();
    let first = txn("same", "erin", "2026-03-01T10:00:00+08:00", "10");
    for _ in 0..6 {
        let (status, answer) = post(addr, "/v1/decide", &first).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["decision"], "allow", "{answer}");
    }
    let (_, answer) = post(addr, "/v1/decide", &first).await;
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["reasons"][0]["rule"], "duplicate_transaction");
    // Only the first was recorded: three more make four, all allowed; the fifth is denied.
    for i in 0..3 {
        let (_, answer) = post(
            addr,
            "/v1/decide",
            &txn(
                &format!("e{i}"),
                "erin",
                "2026-03-01T10:01:00+08:00",
                &format!("{}", 11 + i),
            ),
        )
        .await;
        assert_eq!(answer["decision"], "allow");
    }
    let (_, answer) = post(
        addr,
        "/v1/decide",
        &txn("e9", "erin", "2026-03-01T10:02:00+08:00", "99.5"),
    )
    .await;
    assert_eq!(answer["decision"], "deny");
    // A retry of a denied transaction is denied again.
    let (_, again) = post(
        addr,
        "/v1/decide",
        &txn("e9", "erin", "2026-03-01T10:02:00+08:00", "99.5"),
    )
    .await;
    assert_eq!(again["decision"], "deny");
}

#[tokio::test]
async fn a_full_limit_drawdown_right_after_the_grant_is_denied() {
    let server = start(common::SHIPPED_RULES).await;
    let addr = server.payment_addr();
    let (status, text) = send(
        addr,
        Method::PUT,
        "/v1/customers/frank%2F01/credit-line",
        r#"{"limit": "20000.00", "granted_at": "2026-03-01T10:00:00+08:00"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let (_, answer) = post(
        addr,
        "/v1/decide",
        &txn("f1", "frank/01", "2026-03-01T10:12:00+08:00", "19000"),
    )
    .await;
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert_eq!(answer["reasons"][0]["rule"], "full_limit_after_grant");
    assert_eq!(
        answer["reasons"][0]["message"],
        "credit line granted 12m ago (less than 30m); amount 19000.00 is 95% of the credit limit 20000.00 (at least 90%)"
    );

    // The line can also ride along on a decide request.
    let body = json!({"transaction_id": "g1", "customer_id": "grace", "timestamp": "2026-03-01T10:05:00+08:00", "amount": "4500",
        "credit_limit": "5000", "credit_granted_at": "2026-03-01T10:00:00+08:00"});
    let (_, answer) = post(addr, "/v1/decide", &body.to_string()).await;
    assert_eq!(answer["decision"], "deny");

    let (status, text) = send(
        addr,
        Method::PUT,
        "/v1/customers/frank/credit-line",
        r#"{"limit": "-1", "granted_at": "2026-03-01T10:00:00+08:00"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(common::parse(&text)["field"], "limit");
    let (status, _) = send(addr, Method::POST, "/v1/customers/frank/credit-line", "{}").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // A path that is not one segment names no customer.
    for path in [
        "/v1/customers/../../admin/rules/credit-line",
        "/v1/customers/a/b/credit-line",
        "/v1/customers/../credit-line",
    ] {
        let (status, text) = send(
            addr,
            Method::PUT,
            path,
            r#"{"limit": "100", "granted_at": "2026-03-01T10:00:00+08:00"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {text}");
        assert_eq!(common::parse(&text)["field"], "customer_id");
    }
}

#[tokio::test]
async fn reported_failures_feed_failure_counts() {
    let rules = "timezone: UTC\nrules:\n  - id: failing_repeatedly\n    action: review\n    when:\n      failed_count: { window: 1h, at_least: 2 }\n";
    let server = start(rules).await;
    let addr = server.payment_addr();
    for i in 0..2 {
        post(
            addr,
            "/v1/decide",
            &txn(&format!("h{i}"), "heidi", "2026-03-01T10:00:00Z", "10"),
        )
        .await;
        let (status, text) = send(
            addr,
            Method::POST,
            "/v1/outcomes",
            &json!({"transaction_id": format!("h{i}"), "customer_id": "heidi", "status": "failed"})
                .to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    }
    let (_, answer) = post(
        addr,
        "/v1/decide",
        &txn("h2", "heidi", "2026-03-01T10:10:00Z", "10"),
    )
    .await;
    assert_eq!(answer["decision"], "review");
    assert_eq!(
        answer["reasons"][0]["message"],
        "2 failed transactions in 1h, limit 1"
    );

    let (status, answer) = post(
        addr,
        "/v1/outcomes",
        r#"{"transaction_id": "nope", "customer_id": "heidi", "status": "settled"}"#,
    )
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::NOT_FOUND, Some("transaction_id"))
    );
    let (status, answer) = post(
        addr,
        "/v1/outcomes",
        r#"{"transaction_id": "h0", "customer_id": "heidi", "status": "lost"}"#,
    )
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("status"))
    );
}

#[tokio::test]
async fn confirmed_fraud_reaches_the_merchant_after_the_customer_has_gone() {
    let rules = "timezone: UTC\nrules:\n  - id: bad_terminal\n    action: deny\n    when:\n      fraud_count: { by: merchant_id, window: 7d, at_least: 1 }\n";
    let server = start(rules).await;
    let addr = server.payment_addr();
    let decide = |id: &'static str, customer: &'static str| {
        json!({"transaction_id": id, "customer_id": customer, "timestamp": "2026-03-01T10:00:00Z",
               "amount": "10", "merchant_id": "t-7"})
        .to_string()
    };
    let (_, first) = post(addr, "/v1/decide", &decide("f1", "fay")).await;
    assert_eq!(first["decision"], "allow", "{first}");
    // Reported by the acquirer for a customer this replica never saw: it still reaches the
    // terminal, because the report carries the transaction's time and merchant.
    let (status, text) = send(
        addr,
        Method::POST,
        "/v1/outcomes",
        &json!({"transaction_id": "x9", "customer_id": "stranger", "status": "fraud",
                "timestamp": "2026-03-01T09:00:00Z", "merchant_id": "t-7",
                "reported_at": "2026-03-03T09:00:00Z"})
        .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let (_, next) = post(addr, "/v1/decide", &decide("f2", "gus")).await;
    assert_eq!(next["decision"], "deny", "{next}");
    // Details are only taken with `fraud`, and a fraud report reaching nothing is 404.
    let (status, answer) = post(
        addr,
        "/v1/outcomes",
        r#"{"transaction_id": "f1", "customer_id": "fay", "status": "settled", "merchant_id": "t-7"}"#,
    )
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("merchant_id"))
    );
    let (status, _) = post(
        addr,
        "/v1/outcomes",
        r#"{"transaction_id": "zz", "customer_id": "nobody", "status": "fraud"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_scorecard_page_shows_live_scores_against_the_development_bands() {
    let rules = "timezone: UTC\nrules:\n  - id: low\n    action: review\n    when:\n      score: { less_than: 580 }\nscorecard:\n  base_score: 600\n  points_to_double_odds: 20\n  characteristics:\n    - name: amount\n      feature: { amount: {} }\n      bins:\n        - { below: 100, points: 10 }\n        - { from: 100, points: -30 }\n  development:\n    band_cuts: [600]\n    shares: [0.1, 0.9]\n";
    let server = start(rules).await;
    for i in 0..10 {
        let amount = if i < 5 { "150" } else { "50" };
        post(
            server.payment_addr(),
            "/v1/decide",
            &txn(
                &format!("p{i}"),
                &format!("c{i}"),
                "2026-03-01T10:00:00Z",
                amount,
            ),
        )
        .await;
    }
    let (status, page) = get(server.admin_addr(), "/admin/scorecard").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let drift = &page["drift"];
    assert_eq!(drift["live_decisions"], 10, "{page}");
    assert_eq!(drift["live_shares"], json!([0.5, 0.5]), "{page}");
    // (0.5 − 0.1)·ln 5 + (0.5 − 0.9)·ln(5/9) ≈ 0.879: the population has moved.
    let psi = drift["psi"].as_f64().unwrap();
    assert!((psi - 0.879).abs() < 0.001, "{psi}");
    assert_eq!(drift["reading"], "rebuild");
    let (_, metrics) = send(server.admin_addr(), Method::GET, "/metrics", "").await;
    assert!(metrics.contains("tripwire_score_psi 0.87"), "{metrics}");
    let plain = start(common::SHIPPED_RULES).await;
    let (_, page) = get(plain.admin_addr(), "/admin/scorecard").await;
    assert!(
        page["drift"].is_null(),
        "the shipped card has no development distribution: {page}"
    );
}

#[tokio::test]
async fn admin_paths_live_only_on_the_admin_listener() {
    let server = start(common::SHIPPED_RULES).await;
    let (status, body) = get(server.admin_addr(), "/healthz").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, body) = get(server.admin_addr(), "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["rules_version"].as_str().unwrap().starts_with("1-"));
    for path in ["/healthz", "/readyz", "/admin/rules", "/nope"] {
        let (status, _) = get(server.payment_addr(), path).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{path} on the payment listener"
        );
    }
    let (status, _) = get(server.payment_addr(), "/v1/decide").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = get(server.admin_addr(), "/v1/decide").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await;
}
