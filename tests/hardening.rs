//! Hostile and careless clients: half-sent requests, oversized heads and bodies, crowds of
//! connections, idle keep-alives; and many threads deciding for one customer at once.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Client, start_with, txn};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tripwire::interceptor::Interceptor;
use tripwire::live_rules::LiveRules;
use tripwire::rules::{EvalBudget, RulesError};
use tripwire::server::ServeConfig;
use tripwire::state::{Store, StoreConfig};

/// Reads until the server closes the connection or `limit` passes; true if it closed.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_neither_starve_others_nor_outstay_the_header_timeout() {
    let config = ServeConfig {
        header_read_timeout: Duration::from_secs(1),
        ..ServeConfig::default()
    };
    let server = start_with(common::SHIPPED_RULES, StoreConfig::default(), config).await;
    let addr = server.payment_addr();
    let mut stragglers = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("POST /v1/decide HTTP/1.1\r\nHost: x\r\nX-Slow: {i}\r\n").as_bytes())
            .await
            .unwrap();
        stragglers.push(s);
    }
    let started = Instant::now();
    for i in 0..20 {
        let (status, _) = common::post(
            addr,
            "/v1/decide",
            &txn(
                &format!("n{i}"),
                &format!("c{i}"),
                "2026-03-01T10:00:00Z",
                "10",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "normal requests were not held up: {:?}",
        started.elapsed()
    );
    for s in &mut stragglers {
        assert!(
            closed_within(s, Duration::from_secs(4)).await,
            "a half-sent request outstayed the header timeout"
        );
    }
}

/// Reads what the server sends until it closes the connection or `limit` passes.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// A decide request whose body never arrives whole: the head and one byte of 100.
const STALLED_BODY: &[u8] =
    b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";

#[tokio::test]
async fn a_stalled_or_trickling_body_gets_408_and_the_connection_closes() {
    let config = ServeConfig {
        request_read_timeout: Duration::from_millis(400),
        ..ServeConfig::default()
    };
    let server = start_with(common::SHIPPED_RULES, StoreConfig::default(), config).await;
    let addr = server.payment_addr();

    let started = Instant::now();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(STALLED_BODY).await.unwrap();
    let answer = read_until_closed(&mut stalled, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 0.4 s"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A chunked body sent a byte at a time, each well within any per-read timer.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for _ in 0..40 {
        if trickle.write_all(b"1\r\n{\r\n").await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let answer = read_until_closed(&mut trickle, Duration::from_secs(2)).await;
    assert!(
        closed || answer.starts_with("HTTP/1.1 408"),
        "the trickle was cut off: {answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_stalled_clients_cannot_hold_every_connection_slot() {
    let config = ServeConfig {
        max_connections: 3,
        // Long timeouts: only shedding at the limit can free a slot in time.
        request_read_timeout: Duration::from_secs(60),
        header_read_timeout: Duration::from_secs(60),
        ..ServeConfig::default()
    };
    let server = start_with(common::SHIPPED_RULES, StoreConfig::default(), config).await;
    let addr = server.payment_addr();
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(STALLED_BODY).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(10),
        common::post(
            addr,
            "/v1/decide",
            &txn("ok1", "c-ok", "2026-03-01T10:00:00Z", "10"),
        ),
    )
    .await
    .expect("a normal request is served while stalled clients hold every slot");
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (_, metrics) = common::send(server.admin_addr(), hyper::Method::GET, "/metrics", "").await;
    let shed = metrics
        .lines()
        .find(|l| l.starts_with("tripwire_connections_shed_total "))
        .unwrap_or_default()
        .to_string();
    assert!(shed.ends_with(" 1"), "{shed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_left_while_queued_is_not_recorded() {
    // Two transactions of the same customer within an hour are reviewed: a recorded first one
    // would show in the second's decision.
    const RULES: &str = "timezone: UTC\nrules:\n  - id: repeat\n    action: review\n    when: { count: { window: 1h, at_least: 2 } }\n";
    let config = ServeConfig {
        max_connections: 1,
        request_read_timeout: Duration::from_millis(500),
        ..ServeConfig::default()
    };
    let server = start_with(RULES, StoreConfig::default(), config).await;
    let addr = server.payment_addr();
    // The only slot is held by a stalled body...
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(STALLED_BODY).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so this client waits in the accept queue, sends its transaction, and gives up.
    let body = txn("gone-1", "c-gone", "2026-03-01T10:00:00Z", "5.00");
    let mut gone = TcpStream::connect(addr).await.unwrap();
    gone.write_all(
        format!(
            "POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    drop(gone);
    // The stalled body times out, the queued request is read, and its client is not there.
    let answer = read_until_closed(&mut stalled, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, text) = common::post(
        addr,
        "/v1/decide",
        &txn("here-1", "c-gone", "2026-03-01T10:05:00Z", "5.00"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        text["decision"], "allow",
        "the abandoned request was recorded: {text}"
    );
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused() {
    let server = start_with(
        common::SHIPPED_RULES,
        StoreConfig::default(),
        ServeConfig::default(),
    )
    .await;
    let mut s = TcpStream::connect(server.payment_addr()).await.unwrap();
    let huge = "a".repeat(64 * 1024);
    let request = format!(
        "POST /v1/decide HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let _ = s.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000));
    let (status, answer) = common::post(server.payment_addr(), "/v1/decide", &body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    // Declared large but sent slowly: refused on the header alone, before the body arrives.
    let mut s = TcpStream::connect(server.payment_addr()).await.unwrap();
    s.write_all(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_at_once_are_all_answered() {
    let server = start_with(
        common::SHIPPED_RULES,
        StoreConfig::default(),
        ServeConfig::default(),
    )
    .await;
    let addr = server.payment_addr();
    let mut tasks = Vec::new();
    for i in 0..500 {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            client
                .post(
                    "/v1/decide",
                    &txn(
                        &format!("m{i}"),
                        &format!("crowd-{}", i % 100),
                        "2026-03-01T10:00:00Z",
                        &format!("{}", 1 + i),
                    ),
                )
                .await
                .0
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
}

#[tokio::test]
async fn past_the_connection_limit_clients_wait_their_turn() {
    let config = ServeConfig {
        max_connections: 2,
        idle_timeout: Duration::from_millis(600),
        ..ServeConfig::default()
    };
    let server = start_with(common::SHIPPED_RULES, StoreConfig::default(), config).await;
    let addr = server.payment_addr();
    let mut first = Client::connect(addr).await;
    let mut second = Client::connect(addr).await;
    assert_eq!(
        first
            .post("/v1/decide", &txn("l1", "c", "2026-03-01T10:00:00Z", "1"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        second
            .post("/v1/decide", &txn("l2", "c", "2026-03-01T10:00:01Z", "2"))
            .await
            .0,
        StatusCode::OK
    );
    let started = Instant::now();
    let mut third = Client::connect(addr).await;
    let (status, _) = third
        .post("/v1/decide", &txn("l3", "c", "2026-03-01T10:00:02Z", "3"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "the third was served only once an idle connection closed ({waited:?})"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let config = ServeConfig {
        idle_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    };
    let server = start_with(common::SHIPPED_RULES, StoreConfig::default(), config).await;
    let mut s = TcpStream::connect(server.payment_addr()).await.unwrap();
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 404");
    assert!(
        closed_within(&mut s, Duration::from_secs(3)).await,
        "the idle keep-alive was closed"
    );
}

#[test]
fn many_threads_deciding_for_one_customer_at_one_instant_allow_exactly_four() {
    let rules = common::SHIPPED_RULES.as_bytes();
    for round in 0..20 {
        let interceptor = Arc::new(Interceptor::new(
            Store::new(StoreConfig::default()),
            LiveRules::new(rules, "t").unwrap(),
        ));
        let threads = 16;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (interceptor, barrier) = (Arc::clone(&interceptor), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let body = txn(
                        &format!("r{round}-t{i}"),
                        "one",
                        "2026-03-01T10:00:00Z",
                        &format!("{}", 10 + i),
                    );
                    barrier.wait();
                    let mut out = Vec::new();
                    interceptor
                        .decide(body.as_bytes(), &mut out)
                        .unwrap()
                        .action
                })
            })
            .collect();
        let actions: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let allowed = actions.iter().filter(|a| a.as_str() == "allow").count();
        assert_eq!(allowed, 4, "round {round}: {actions:?}");
        assert_eq!(
            interceptor.store().events(),
            threads,
            "every attempt recorded once"
        );
    }
}

#[test]
fn a_rule_set_over_the_evaluation_budget_is_refused() {
    let base = "timezone: UTC\nrules:\n  - id: burst\n    action: deny\n    when:\n      count: { window: 10m, at_least: 5 }\n";
    let bigger = format!(
        "{base}  - id: extra\n    action: review\n    when:\n      count: {{ window: 7d, at_least: 500 }}\n"
    );
    let cost = |yaml: &str| {
        tripwire::rules::load_bytes(yaml.as_bytes())
            .unwrap()
            .cost(64)
    };
    let (small, large) = (cost(base), cost(&bigger));
    assert!(
        large > small,
        "one more window costs more ({small} → {large})"
    );

    let err = LiveRules::with_budget(
        base.as_bytes(),
        "t",
        Some(EvalBudget {
            ring_capacity: 64,
            max_cost: small - 1,
        }),
    )
    .unwrap_err();
    assert!(matches!(err, RulesError::Invalid(_)));
    assert!(
        err.to_string()
            .contains(&format!("evaluation budget is {}", small - 1)),
        "{err}"
    );

    let roomy = LiveRules::with_budget(
        base.as_bytes(),
        "t",
        Some(EvalBudget {
            ring_capacity: 64,
            max_cost: large,
        }),
    )
    .unwrap();
    assert!(roomy.install(bigger.as_bytes(), "t").is_ok());
    let tight = LiveRules::with_budget(
        base.as_bytes(),
        "t",
        Some(EvalBudget {
            ring_capacity: 64,
            max_cost: small,
        }),
    )
    .unwrap();
    assert!(
        tight.install(bigger.as_bytes(), "t").is_err(),
        "one more window pushes it over"
    );
    assert_eq!(
        tight.load().version.seq,
        1,
        "and the refused set changed nothing"
    );
    // The shipped rules fit the default budget with room to spare.
    let shipped = cost(common::SHIPPED_RULES);
    assert!(
        shipped < ServeConfig::default().eval_budget / 100,
        "shipped rules cost {shipped}"
    );
}
