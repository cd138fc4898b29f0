//! Fleet mode end to end: three in-process replicas (`App::start`, fully assembled) sharing
//! state and rules through a real `nats-server -js` started here on a loopback ephemeral port
//! with its own store directory.
//!
//! Without `nats-server` on PATH the tests say so loudly and pass, unless
//! `TRIPWIRE_REQUIRE_NATS=1` (CI), where they fail.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, post, send, txn};
use hyper::{Method, StatusCode};
use serde_json::json;
use tripwire::app::App;
use tripwire::config::Config;
use tripwire::fleet::FleetConfig;
use tripwire::interceptor::upkeep::UpkeepConfig;
use tripwire::reload::TriggerConfig;
use tripwire::server::ServeConfig;
use tripwire::state::{Outcome, StoreConfig};

/// A `nats-server -js` on a loopback port, killed (and its store removed) on drop.
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Nats {
    /// Starts a server, or returns `None` (after saying so) when nats-server is not installed.
    fn start(name: &str) -> Option<Nats> {
        let installed = Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var("TRIPWIRE_REQUIRE_NATS").as_deref() != Ok("1"),
                "TRIPWIRE_REQUIRE_NATS=1 but nats-server is not on PATH"
            );
            eprintln!(
                "\n!!!!!!!! skipped: install nats-server (apt-get install nats-server) to run the fleet tests !!!!!!!!\n"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "tripwire-fleet-{name}-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut nats = Nats {
            child: None,
            port,
            dir,
        };
        nats.run();
        Some(nats)
    }

    fn run(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fleet_config(nats: &Nats, replica: &str) -> FleetConfig {
    let mut fleet = FleetConfig::new(nats.url());
    fleet.replica = replica.into();
    fleet
}

/// Starts a replica with the shipped rules, as `serve --nats URL --replica NAME` does.
async fn replica_with(fleet: FleetConfig) -> App {
    let config = Config {
        rules: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules.yaml"),
        workers: None,
        store: StoreConfig::default(),
        serve: ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..ServeConfig::default()
        },
        state_dir: None,
        triggers: TriggerConfig::default(),
        upkeep: UpkeepConfig::default(),
        max_entities: tripwire::state::DEFAULT_MAX_ENTITIES,
        fleet: Some(fleet),
    };
    App::start(config).await.expect("replica starts")
}

async fn replica(nats: &Nats, name: &str) -> App {
    let app = replica_with(fleet_config(nats, name)).await;
    assert!(
        common::eventually(10, || async {
            get(app.admin_addr(), "/readyz").await.0 == StatusCode::OK
        })
        .await,
        "{name} becomes ready"
    );
    app
}

async fn decide(app: &App, id: &str, customer: &str, at: &str, amount: &str) -> serde_json::Value {
    let (status, answer) = post(
        app.payment_addr(),
        "/v1/decide",
        &txn(id, customer, at, amount),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

/// Waits until `app` holds `events` transactions of `customer`.
async fn holds(app: &App, customer: &str, events: usize) -> bool {
    common::eventually(5, || async {
        app.interceptor()
            .store()
            .with_existing(customer, |r| r.ring.len())
            == Some(events)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_fifth_transaction_round_robin_over_three_replicas_is_denied() {
    let Some(nats) = Nats::start("velocity") else {
        return;
    };
    let replicas = [
        replica(&nats, "a").await,
        replica(&nats, "b").await,
        replica(&nats, "c").await,
    ];
    // How long a change takes to reach the other replicas, decide to applied
    // (`cargo test --test fleet round_robin -- --nocapture`).
    let sent = Instant::now();
    decide(
        &replicas[0],
        "lag",
        "lena",
        "2026-03-01T10:00:00+08:00",
        "1",
    )
    .await;
    let held = |app: &App| {
        app.interceptor()
            .store()
            .with_existing("lena", |r| r.ring.len())
            == Some(1)
    };
    while !(held(&replicas[1]) && held(&replicas[2])) {
        assert!(sent.elapsed() < Duration::from_secs(5), "not replicated");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "replicated to both others {:?} after the decision was sent",
        sent.elapsed()
    );

    let mut answers = Vec::new();
    for i in 0..5 {
        let app = &replicas[i % 3];
        let at = format!("2026-03-01T10:0{i}:00+08:00");
        answers.push(decide(app, &format!("v{i}"), "vera", &at, &format!("{}", 10 + i)).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for answer in &answers[..4] {
        assert_eq!(answer["decision"], "allow", "{answer}");
    }
    assert_eq!(answers[4]["decision"], "deny", "{}", answers[4]);
    assert_eq!(
        answers[4]["reasons"][0]["rule"], "velocity_burst",
        "{}",
        answers[4]
    );
    for app in &replicas {
        assert!(holds(app, "vera", 5).await, "every replica holds the five");
    }

    // Entity state follows too: five customers on one device, round robin, are seen by the
    // shipped `shared_device` shadow rule on the fifth, wherever it lands.
    let mut last = serde_json::Value::Null;
    for i in 0..5 {
        let body = serde_json::json!({
            "transaction_id": format!("r{i}"), "customer_id": format!("ring{i}"),
            "timestamp": format!("2026-03-01T11:0{i}:00+08:00"), "amount": "15",
            "device_id": "shared-phone",
        })
        .to_string();
        let (status, answer) = post(replicas[i % 3].payment_addr(), "/v1/decide", &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        last = answer;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(last["shadow"][0]["rule"], "shared_device", "{last}");
    for app in replicas {
        app.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_lines_outcomes_and_duplicates_follow_the_customer_across_replicas() {
    let Some(nats) = Nats::start("state") else {
        return;
    };
    let (a, b, c) = (
        replica(&nats, "a").await,
        replica(&nats, "b").await,
        replica(&nats, "c").await,
    );
    // A credit line granted through A; the full-limit drawdown arrives at C.
    let (status, text) = send(
        a.payment_addr(),
        Method::PUT,
        "/v1/customers/frank/credit-line",
        r#"{"limit": "20000.00", "granted_at": "2026-03-01T10:00:00+08:00"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert!(
        common::eventually(5, || async {
            c.interceptor()
                .store()
                .with_existing("frank", |r| r.credit_line().is_some())
                == Some(true)
        })
        .await,
        "C holds the credit line"
    );
    let answer = decide(&c, "f1", "frank", "2026-03-01T10:12:00+08:00", "19000").await;
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert_eq!(
        answer["reasons"][0]["rule"], "full_limit_after_grant",
        "{answer}"
    );

    // An outcome reported to C is seen on A.
    assert!(holds(&a, "frank", 1).await);
    let (status, text) = send(
        c.payment_addr(),
        Method::POST,
        "/v1/outcomes",
        &json!({"transaction_id": "f1", "customer_id": "frank", "status": "failed"}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let hash = a.interceptor().store().txn_hash("frank", "f1");
    assert!(
        common::eventually(5, || async {
            a.interceptor()
                .store()
                .with_existing("frank", |r| r.ring.find(hash).map(|e| e.outcome()))
                == Some(Some(Outcome::Failed))
        })
        .await,
        "A sees C's outcome"
    );

    // The same transaction id on A, then B: B answers with A's decision, as a duplicate.
    let first = decide(&a, "d1", "dora", "2026-03-01T11:00:00+08:00", "25").await;
    assert!(holds(&b, "dora", 1).await);
    let again = decide(&b, "d1", "dora", "2026-03-01T11:00:00+08:00", "25").await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["decision"], first["decision"], "{again}");
    assert!(holds(&c, "dora", 1).await, "recorded once everywhere");

    // Rules change through the fleet only.
    let (status, text) = send(a.admin_addr(), Method::PUT, "/admin/rules", "rules: []").await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("rules push"), "{text}");
    for app in [a, b, c] {
        app.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_rules_reach_every_replica_within_a_second_and_roll_back() {
    let Some(nats) = Nats::start("rules") else {
        return;
    };
    let replicas = [
        replica(&nats, "a").await,
        replica(&nats, "b").await,
        replica(&nats, "c").await,
    ];
    let dir = std::env::temp_dir().join(format!("tripwire-fleet-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("strict.yaml");
    std::fs::write(
        &path,
        "timezone: UTC\nrules:\n  - id: anything_large\n    action: deny\n    when: { amount: { at_least: \"100\" } }\n",
    )
    .unwrap();
    let budget = tripwire::rules::EvalBudget {
        ring_capacity: StoreConfig::default().ring_capacity,
        max_cost: ServeConfig::default().eval_budget,
    };
    let config = fleet_config(&nats, "cli");
    let pushed = Instant::now();
    let strict_revision = tripwire::fleet::rules::push(&config, &path, &budget)
        .await
        .unwrap();
    let sha = tripwire::rules::sha256_hex(&std::fs::read(&path).unwrap());
    for app in &replicas {
        while app.interceptor().rules().load().version.sha256 != sha {
            assert!(
                pushed.elapsed() < Duration::from_secs(1),
                "not on the new version within 1 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let answer = decide(&replicas[1], "r1", "rita", "2026-03-01T10:00:00Z", "150").await;
    assert_eq!(answer["reasons"][0]["rule"], "anything_large", "{answer}");

    // A text that does not validate is refused by push, exactly like `check`.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "rules:\n  - id: x\n    action: maybe\n").unwrap();
    assert!(
        tripwire::fleet::rules::push(&config, &bad, &budget)
            .await
            .is_err()
    );

    // A text that reaches the bucket without `push`'s validation (an older or newer tripwire)
    // is refused by each replica, which keeps its last good set and says so.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let bucket = async_nats::jetstream::new(client)
        .get_key_value("tripwire-fleet")
        .await
        .unwrap();
    bucket
        .put("rules", "rules:\n  - id: x\n    action: maybe\n".into())
        .await
        .unwrap();
    for app in &replicas {
        assert!(
            common::eventually(2, || async {
                let (_, history) = get(app.admin_addr(), "/admin/rules/history").await;
                history["entries"].as_array().is_some_and(|h| {
                    h.iter()
                        .any(|e| e["outcome"] == "refused" && e["source"] == "fleet rules bucket")
                })
            })
            .await,
            "the refusal is in the history: {}",
            get(app.admin_addr(), "/admin/rules/history").await.1
        );
        assert_eq!(
            app.interceptor().rules().load().version.sha256,
            sha,
            "last good set kept"
        );
        let (_, metrics) = send(app.admin_addr(), Method::GET, "/metrics", "").await;
        assert!(
            metrics.contains(r#"tripwire_rule_reloads_total{trigger="fleet",outcome="refused"} 1"#),
            "{metrics}"
        );
    }
    assert!(
        common::eventually(2, || async {
            let status = tripwire::fleet::rules::status(&config).await.unwrap();
            status.replicas.len() == 3 && status.replicas.iter().all(|r| r.outcome == "refused")
        })
        .await
    );

    // Rollback puts the shipped set back everywhere.
    std::fs::write(&path, common::SHIPPED_RULES).unwrap();
    tripwire::fleet::rules::push(&config, &path, &budget)
        .await
        .unwrap();
    let (_, from) = tripwire::fleet::rules::rollback(&config, &budget)
        .await
        .unwrap();
    assert_eq!(
        from, strict_revision,
        "the strict set, passing over the text that does not validate"
    );
    for app in &replicas {
        assert!(
            common::eventually(2, || async {
                app.interceptor().rules().load().version.sha256 == sha
            })
            .await
        );
    }
    // A replica that joins now is ready only on the fleet's rules, not its own file's.
    let late = replica(&nats, "d").await;
    assert_eq!(late.interceptor().rules().load().version.sha256, sha);
    late.shutdown().await.unwrap();

    let status = tripwire::fleet::rules::status(&config).await.unwrap();
    assert!(
        common::eventually(2, || async {
            tripwire::fleet::rules::status(&config)
                .await
                .unwrap()
                .replicas
                .len()
                == 4
        })
        .await,
        "{status:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
    for app in replicas {
        app.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_replica_catches_up_before_it_is_ready_then_decides_as_the_others() {
    let Some(nats) = Nats::start("join") else {
        return;
    };
    let a = replica(&nats, "a").await;
    let b = replica(&nats, "b").await;
    // Enough history that catching up takes visible work.
    for i in 0..400 {
        let app = if i % 2 == 0 { &a } else { &b };
        let customer = format!("k{}", i % 100);
        decide(
            app,
            &format!("j{i}"),
            &customer,
            "2026-03-01T10:00:00+08:00",
            "10",
        )
        .await;
    }
    for i in 0..4 {
        decide(
            &a,
            &format!("w{i}"),
            "wendy",
            &format!("2026-03-01T10:0{i}:00+08:00"),
            "5",
        )
        .await;
    }
    assert!(holds(&b, "wendy", 4).await);

    // What one replicated change costs the stream, for the retention arithmetic in README.md
    // (`cargo test --test fleet a_fresh_replica -- --nocapture`).
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("tripwire")
        .await
        .unwrap();
    let state = stream.info().await.unwrap().state.clone();
    eprintln!(
        "stream: {} changes, {} bytes, {} bytes a change",
        state.messages,
        state.bytes,
        state.bytes / state.messages.max(1)
    );

    let c = replica_with(fleet_config(&nats, "c")).await;
    let (status, body) = get(c.admin_addr(), "/readyz").await;
    let fleet = &body["fleet"];
    assert_eq!(fleet["replica"], "c", "{body}");
    assert!(fleet["catch_up_to"].as_u64().unwrap() >= 404, "{body}");
    if status != StatusCode::OK {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["status"], "catching up", "{body}");
    }
    assert!(
        common::eventually(10, || async {
            get(c.admin_addr(), "/readyz").await.0 == StatusCode::OK
        })
        .await
    );
    // Ready means everything the stream held is applied.
    assert_eq!(c.interceptor().store().events(), 404);
    let on_c = decide(&c, "w4", "wendy", "2026-03-01T10:04:00+08:00", "5").await;
    assert_eq!(on_c["decision"], "deny", "{on_c}");
    assert_eq!(on_c["reasons"][0]["rule"], "velocity_burst", "{on_c}");
    for app in [a, b, c] {
        app.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_nats_is_down_are_published_when_it_is_back() {
    let Some(mut nats) = Nats::start("outage") else {
        return;
    };
    let a = replica(&nats, "a").await;
    let b = replica(&nats, "b").await;
    decide(&a, "o0", "olga", "2026-03-01T10:00:00+08:00", "5").await;
    assert!(holds(&b, "olga", 1).await);

    nats.kill();
    assert!(
        common::eventually(5, || async { !a.fleet().unwrap().connected() }).await,
        "A notices"
    );
    // Decisions continue, and the replica stays ready (replication fails open).
    for i in 1..4 {
        let amount = format!("{}", 5 + i);
        let at = format!("2026-03-01T10:0{i}:00+08:00");
        let answer = decide(&a, &format!("o{i}"), "olga", &at, &amount).await;
        assert_eq!(answer["decision"], "allow", "{answer}");
    }
    assert_eq!(get(a.admin_addr(), "/readyz").await.0, StatusCode::OK);

    nats.run();
    assert!(
        holds(&b, "olga", 4).await || holds_long(&b, "olga", 4).await,
        "B gets what A decided during the outage"
    );
    let answer = decide(&b, "o4", "olga", "2026-03-01T10:04:00+08:00", "9").await;
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert_eq!(answer["reasons"][0]["rule"], "velocity_burst", "{answer}");
    assert!(common::eventually(2, || async { a.fleet().unwrap().connected() }).await);
    let (_, metrics) = send(a.admin_addr(), Method::GET, "/metrics", "").await;
    assert!(
        metrics.contains("tripwire_fleet_dropped_total 0"),
        "{metrics}"
    );
    assert!(metrics.contains("tripwire_fleet_connected 1"), "{metrics}");
    for app in [a, b] {
        app.shutdown().await.unwrap();
    }
}

/// Like `holds`, allowing for the client's reconnect backoff.
async fn holds_long(app: &App, customer: &str, events: usize) -> bool {
    common::eventually(20, || async {
        app.interceptor()
            .store()
            .with_existing(customer, |r| r.ring.len())
            == Some(events)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_nats_is_down_changes_beyond_the_queue_bound_are_dropped_and_counted_nothing_else_is_lost()
 {
    let Some(mut nats) = Nats::start("bound") else {
        return;
    };
    let mut small = fleet_config(&nats, "a");
    small.queue_capacity = 16;
    let a = replica_with(small).await;
    let b = replica(&nats, "b").await;
    assert!(
        common::eventually(10, || async {
            get(a.admin_addr(), "/readyz").await.0 == StatusCode::OK
        })
        .await
    );

    nats.kill();
    assert!(common::eventually(5, || async { !a.fleet().unwrap().connected() }).await);
    let sent = 60;
    for i in 0..sent {
        decide(
            &a,
            &format!("q{i}"),
            &format!("q{i}"),
            "2026-03-01T10:00:00+08:00",
            "5",
        )
        .await;
    }
    let (_, metrics) = send(a.admin_addr(), Method::GET, "/metrics", "").await;
    let dropped: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tripwire_fleet_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the dropped counter");
    assert!(
        dropped > 0 && dropped <= sent - 16,
        "dropped {dropped} of {sent}"
    );

    nats.run();
    let expected = sent - dropped;
    assert!(
        common::eventually(20, || async {
            b.interceptor().store().events() == expected
        })
        .await,
        "B holds {} of the {expected} not dropped",
        b.interceptor().store().events()
    );
    for app in [a, b] {
        app.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_publish_decisions_each_decision_log_line_is_published_too() {
    let Some(nats) = Nats::start("decisions") else {
        return;
    };
    let mut config = fleet_config(&nats, "a");
    config.publish_decisions = true;
    let a = replica_with(config).await;
    assert!(
        common::eventually(10, || async {
            get(a.admin_addr(), "/readyz").await.0 == StatusCode::OK
        })
        .await
    );
    decide(&a, "p1", "pia", "2026-03-01T10:00:00+08:00", "12.50").await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("tripwire-decisions").await.unwrap();
    assert!(
        common::eventually(5, || {
            let stream = stream.clone();
            async move { stream.clone().info().await.unwrap().state.messages == 1 }
        })
        .await,
        "one line in the decisions stream"
    );
    let message = stream
        .get_last_raw_message_by_subject("tripwire.decisions")
        .await
        .unwrap();
    let line: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(line["answer"]["transaction_id"], "p1", "{line}");
    assert_eq!(line["request"]["customer_id"], "pia", "{line}");
    assert!(line["latency_us"].is_u64(), "{line}");
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_on_its_state_dir_keeps_its_state_and_a_foreign_state_dir_is_refused() {
    let Some(nats) = Nats::start("statedir") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("tripwire-fleet-statedir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let start = |state_dir: PathBuf, fleet: Option<FleetConfig>| Config {
        rules: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules.yaml"),
        workers: None,
        store: StoreConfig::default(),
        serve: ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..ServeConfig::default()
        },
        state_dir: Some(state_dir),
        triggers: TriggerConfig::default(),
        upkeep: UpkeepConfig::default(),
        max_entities: tripwire::state::DEFAULT_MAX_ENTITIES,
        fleet,
    };
    let a = App::start(start(dir.join("a"), Some(fleet_config(&nats, "a"))))
        .await
        .unwrap();
    decide(&a, "s1", "sam", "2026-03-01T10:00:00+08:00", "5").await;
    a.shutdown().await.unwrap();
    let a = App::start(start(dir.join("a"), Some(fleet_config(&nats, "a"))))
        .await
        .expect("its own state dir is accepted");
    assert_eq!(
        a.interceptor()
            .store()
            .with_existing("sam", |r| r.ring.len()),
        Some(1)
    );
    let again = decide(&a, "s1", "sam", "2026-03-01T10:00:00+08:00", "5").await;
    assert_eq!(again["duplicate"], true, "{again}");
    // Its state directory's snapshot recorded the stream position it included, so it read
    // the stream only after it.
    assert!(
        common::eventually(10, || async {
            get(a.admin_addr(), "/readyz").await.0 == StatusCode::OK
        })
        .await
    );
    let (_, fleet) = get(a.admin_addr(), "/admin/fleet").await;
    assert_eq!(fleet["joined"]["from"], "local state", "{fleet}");
    assert!(
        fleet["joined"]["position"].as_u64().unwrap() >= 1,
        "{fleet}"
    );
    a.shutdown().await.unwrap();

    // A directory a standalone tripwire wrote hashes transaction ids with other keys.
    let alone = App::start(start(dir.join("alone"), None)).await.unwrap();
    decide(&alone, "x1", "xena", "2026-03-01T10:00:00+08:00", "5").await;
    alone.shutdown().await.unwrap();
    let err = App::start(start(dir.join("alone"), Some(fleet_config(&nats, "b"))))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("written outside this fleet"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_commands_push_check_status_and_roll_back_through_the_binary() {
    let Some(nats) = Nats::start("cli") else {
        return;
    };
    let a = replica(&nats, "a").await;
    let run = |args: &[&str]| {
        let out = Command::new(common::BIN)
            .args(args)
            .output()
            .expect("tripwire runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let url = nats.url();
    let dir = std::env::temp_dir().join(format!("tripwire-fleet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        "timezone: UTC\nrules:\n  - id: big\n    action: review\n    when: { amount: { at_least: \"500\" } }\n",
    )
    .unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "timezone: UTC\nrules:\n  - id: big\n    action: maybe\n",
    )
    .unwrap();

    let (ok, _, err) = run(&["rules", "push", "--nats", &url, bad.to_str().unwrap()]);
    assert!(!ok, "refused like check");
    assert!(err.contains("bad.yaml:4:"), "{err}");

    let (ok, out, err) = run(&["rules", "push", "--nats", &url, good.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("revision"), "{out}");
    let sha = tripwire::rules::sha256_hex(&std::fs::read(&good).unwrap());
    assert!(
        common::eventually(2, || async {
            a.interceptor().rules().load().version.sha256 == sha
        })
        .await
    );
    let status = || async {
        let (ok, out, err) = run(&["rules", "status", "--nats", &url]);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert!(
        common::eventually(2, || async {
            let s = status().await;
            s["sha256"] == sha.as_str() && s["replicas"][0]["outcome"] == "installed"
        })
        .await,
        "{}",
        status().await
    );
    let (ok, _, err) = run(&["rules", "rollback", "--nats", &url]);
    assert!(!ok, "nothing earlier to roll back to");
    assert!(err.contains("no earlier"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_counted_and_skipped_and_applying_goes_on() {
    let Some(nats) = Nats::start("malformed") else {
        return;
    };
    let a = replica(&nats, "a").await;
    let b = replica(&nats, "b").await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for garbage in [&b"not a frame"[..], &[0u8; 3][..], &[]] {
        js.publish("tripwire.events.7", garbage.to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    decide(&a, "m1", "mona", "2026-03-01T10:00:00+08:00", "5").await;
    assert!(holds(&b, "mona", 1).await, "the next change is applied");
    let (_, metrics) = send(b.admin_addr(), Method::GET, "/metrics", "").await;
    assert!(
        metrics.contains("tripwire_fleet_rejected_total 3"),
        "{metrics}"
    );
    for app in [a, b] {
        app.shutdown().await.unwrap();
    }
}

/// Removes every change before `keep_from` from the stream, as its age or byte limit would.
async fn age_out(nats: &Nats, keep_from: u64) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream("tripwire")
        .await
        .unwrap();
    stream.purge().sequence(keep_from).await.unwrap();
}

async fn last_sequence(nats: &Nats) -> u64 {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("tripwire")
        .await
        .unwrap();
    stream.info().await.unwrap().state.last_sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_replica_joins_from_the_fleet_snapshot_after_the_stream_has_aged_out() {
    let Some(nats) = Nats::start("snapshot") else {
        return;
    };
    let a = replica(&nats, "a").await;
    for i in 0..300 {
        decide(
            &a,
            &format!("h{i}"),
            &format!("k{}", i % 60),
            "2026-03-01T10:00:00+08:00",
            "10",
        )
        .await;
    }
    // Published and acknowledged before the snapshot is taken of it.
    assert!(common::eventually(10, || async { last_sequence(&nats).await >= 300 }).await);
    let (status, body) = post(a.admin_addr(), "/admin/fleet/snapshot", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stored"], true, "{body}");
    assert_eq!(body["snapshot"]["customers"], 60, "{body}");
    let sequence = body["snapshot"]["sequence"].as_u64().unwrap();
    assert!(sequence >= 300, "{body}");
    // Asked again with nothing new, it keeps the stored one.
    let (_, again) = post(a.admin_addr(), "/admin/fleet/snapshot", "").await;
    assert_eq!(again["stored"], false, "{again}");

    for i in 0..4 {
        decide(
            &a,
            &format!("w{i}"),
            "wendy",
            &format!("2026-03-01T10:0{i}:00+08:00"),
            "5",
        )
        .await;
    }
    assert!(common::eventually(10, || async { last_sequence(&nats).await >= 304 }).await);
    // The stream's limits dropped everything the snapshot holds.
    age_out(&nats, sequence + 1).await;

    let c = replica(&nats, "c").await;
    let (_, fleet) = get(c.admin_addr(), "/admin/fleet").await;
    assert_eq!(fleet["joined"]["from"], "fleet snapshot", "{fleet}");
    assert_eq!(fleet["joined"]["snapshot_customers"], 60, "{fleet}");
    assert_eq!(fleet["joined"]["gap"], 0, "{fleet}");
    assert_eq!(c.interceptor().store().events(), 304);
    let on_c = decide(&c, "w4", "wendy", "2026-03-01T10:04:00+08:00", "5").await;
    assert_eq!(on_c["decision"], "deny", "{on_c}");
    assert_eq!(on_c["reasons"][0]["rule"], "velocity_burst", "{on_c}");
    let repeat = decide(&c, "h7", "k7", "2026-03-01T10:00:00+08:00", "10").await;
    assert_eq!(
        repeat["duplicate"], true,
        "a transaction held only in the snapshot: {repeat}"
    );

    // Changes that aged out after the newest snapshot are lost to a joiner: counted, not hidden.
    for i in 0..3 {
        decide(
            &a,
            &format!("g{i}"),
            "gina",
            "2026-03-01T11:00:00+08:00",
            "5",
        )
        .await;
    }
    let last = {
        let want = last_sequence(&nats).await;
        assert!(common::eventually(10, || async { last_sequence(&nats).await >= want }).await);
        last_sequence(&nats).await
    };
    age_out(&nats, last).await;
    let d = replica(&nats, "d").await;
    let (_, fleet) = get(d.admin_addr(), "/admin/fleet").await;
    assert_eq!(fleet["joined"]["from"], "fleet snapshot", "{fleet}");
    let gap = fleet["joined"]["gap"].as_u64().unwrap();
    assert_eq!(gap, last - sequence - 1, "{fleet}");
    let (_, metrics) = send(d.admin_addr(), Method::GET, "/metrics", "").await;
    assert!(
        metrics.contains(&format!("tripwire_fleet_catchup_gap {gap}")),
        "{metrics}"
    );
    for app in [a, c, d] {
        app.shutdown().await.unwrap();
    }
}
