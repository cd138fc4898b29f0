//! Live rule operations over real HTTP: reload triggers, refusals, rollback, the admin token,
//! shadow rules, metrics and the decision log.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Client, eventually, get, send, send_with, start_with, txn};
use hyper::{Method, StatusCode};
use serde_json::Value;
use tripwire::app::App;
use tripwire::config::Config;
use tripwire::decision_log::DecisionLogConfig;
use tripwire::interceptor::upkeep::UpkeepConfig;
use tripwire::reload::TriggerConfig;
use tripwire::server::{ServeConfig, Server};
use tripwire::state::StoreConfig;

/// Something with an admin listener: a bare server or the whole assembled service.
trait Admin {
    fn admin(&self) -> std::net::SocketAddr;
}

impl Admin for Server {
    fn admin(&self) -> std::net::SocketAddr {
        self.admin_addr()
    }
}

impl Admin for App {
    fn admin(&self) -> std::net::SocketAddr {
        self.admin_addr()
    }
}

const RULES_A: &str = "timezone: UTC\nrules:\n  - id: big_amount\n    action: deny\n    when:\n      amount: { at_least: 1000 }\n";
const RULES_B: &str = "timezone: UTC\nrules:\n  - id: big_amount\n    action: review\n    when:\n      amount: { at_least: 500 }\n  - id: tiny_amount\n    action: review\n    when:\n      amount: { less_than: 1 }\n";
const RULES_C: &str = "timezone: UTC\nrules:\n  - id: anything\n    action: review\n    when:\n      amount: { at_least: \"0.01\" }\n";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tripwire-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start(rules: &str) -> Server {
    start_with(rules, StoreConfig::default(), ServeConfig::default()).await
}

async fn put_rules(addr: std::net::SocketAddr, yaml: &str) -> (StatusCode, Value) {
    let (status, text) = send(addr, Method::PUT, "/admin/rules", yaml).await;
    (status, common::parse(&text))
}

async fn live_version(server: &impl Admin) -> Value {
    get(server.admin(), "/admin/rules").await.1
}

async fn metrics(server: &impl Admin) -> String {
    send(server.admin(), Method::GET, "/metrics", "").await.1
}

fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reloads_under_load_fail_no_request() {
    let server = start(RULES_A).await;
    let admin = server.admin_addr();
    let payment = server.payment_addr();
    let initial = live_version(&server).await["version"]
        .as_str()
        .unwrap()
        .to_string();

    let done = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..3 {
        let done = Arc::clone(&done);
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(payment).await;
            let mut seen = Vec::new();
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) {
                i += 1;
                let body = txn(
                    &format!("t{c}-{i}"),
                    &format!("c{c}-{}", i % 50),
                    "2026-03-01T10:00:00Z",
                    "700",
                );
                let (status, answer) = client.post("/v1/decide", &body).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
                seen.push(answer["rules_version"].as_str().unwrap().to_string());
            }
            seen
        }));
    }

    let mut loaded: HashSet<String> = HashSet::from([initial]);
    let mut admin_client = Client::connect(admin).await;
    let mut last = String::new();
    for i in 0..1000 {
        let yaml = if i % 2 == 0 { RULES_B } else { RULES_A };
        let (status, text) = admin_client
            .request(
                Method::PUT,
                "/admin/rules",
                Bytes::from_static(yaml.as_bytes()),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let body = common::parse(&text);
        last = body["version"].as_str().unwrap().to_string();
        assert_eq!(body["seq"], i + 2);
        loaded.insert(last.clone());
    }
    done.store(true, Ordering::Relaxed);
    let mut answers = 0;
    for client in clients {
        let seen = client.await.unwrap();
        answers += seen.len();
        for version in seen {
            assert!(
                loaded.contains(&version),
                "answer named {version}, which was never loaded"
            );
        }
    }
    assert!(
        answers > 100,
        "clients decided throughout ({answers} answers)"
    );
    for i in 0..20 {
        let (_, answer) = common::post(
            payment,
            "/v1/decide",
            &txn(&format!("after-{i}"), "z", "2026-03-01T10:00:00Z", "1500"),
        )
        .await;
        assert_eq!(answer["rules_version"], last.as_str());
        assert_eq!(answer["decision"], "deny", "the last rule set loaded was A");
    }
    let m = metrics(&server).await;
    assert_eq!(
        metric_value(
            &m,
            "tripwire_rule_reloads_total{trigger=\"api\",outcome=\"accepted\"}"
        ),
        Some(1000.0),
        "{m}"
    );
}

#[tokio::test]
async fn a_refused_rule_set_changes_nothing_and_says_where() {
    let server = start(RULES_A).await;
    let admin = server.admin_addr();
    let before = live_version(&server).await;
    let mut bomb = String::from(
        "timezone: UTC\nrules:\n  - id: a\n    action: deny\n    description: &a0 x\n    when:\n      amount: { at_least: 1 }\nlists:\n",
    );
    bomb.push_str("  l0: &l0 [\"1\",\"1\",\"1\",\"1\",\"1\",\"1\",\"1\",\"1\",\"1\",\"1\"]\n");
    for i in 1..9 {
        let p = i - 1;
        bomb.push_str(&format!(
            "  l{i}: &l{i} [*l{p},*l{p},*l{p},*l{p},*l{p},*l{p},*l{p},*l{p},*l{p},*l{p}]\n"
        ));
    }
    let cases: Vec<(&str, String, u64)> = vec![
        (
            "broken YAML",
            "timezone: UTC\nrules:\n  - id: a\n   action: deny\n".into(),
            3,
        ),
        (
            "unknown key",
            RULES_A.replace("    action: deny\n", "    action: deny\n    severity: 9\n"),
            5,
        ),
        (
            "duplicate id",
            format!("{RULES_A}{}", &RULES_A["timezone: UTC\nrules:\n".len()..]),
            7,
        ),
        (
            "bad action",
            RULES_A.replace("action: deny", "action: block"),
            4,
        ),
        ("alias bomb", bomb, 0),
    ];
    for (what, yaml, line) in &cases {
        let started = std::time::Instant::now();
        let (status, body) = put_rules(admin, yaml).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what} took {:?}",
            started.elapsed()
        );
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
        if *line > 0 {
            assert_eq!(body["line"], *line, "{what}: {body}");
            assert!(body["column"].as_u64().unwrap() > 0, "{what}: {body}");
        }
    }
    let huge = format!(
        "{RULES_A}#{}\n",
        "x".repeat(tripwire::rules::MAX_RULES_BYTES)
    );
    let started = std::time::Instant::now();
    let (status, _) = put_rules(admin, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(started.elapsed() < Duration::from_secs(1));

    let after = live_version(&server).await;
    assert_eq!(
        before["version"], after["version"],
        "a refused set never changes the version"
    );
    let (_, answer) = common::post(
        server.payment_addr(),
        "/v1/decide",
        &txn("t", "c", "2026-03-01T10:00:00Z", "5000"),
    )
    .await;
    assert_eq!(answer["decision"], "deny", "the old rules keep serving");

    let (_, history) = get(admin, "/admin/rules/history").await;
    let entries = history["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 7, "{history}");
    assert!(
        entries[..6]
            .iter()
            .all(|e| e["outcome"] == "refused" && e["error"].is_string())
    );
    assert_eq!(entries[6]["outcome"], "loaded");
    let m = metrics(&server).await;
    assert_eq!(
        metric_value(
            &m,
            "tripwire_rule_reloads_total{trigger=\"api\",outcome=\"refused\"}"
        ),
        Some(6.0),
        "{m}"
    );
}

#[tokio::test]
async fn rollback_walks_back_through_good_versions() {
    let server = start(RULES_A).await;
    let admin = server.admin_addr();
    let a = live_version(&server).await;
    let (_, b) = put_rules(admin, RULES_B).await;
    let (_, c) = put_rules(admin, RULES_C).await;
    assert_eq!(c["seq"], 3);
    put_rules(admin, "timezone: UTC\nrules: [oops\n").await;

    let (status, back) = common::post(admin, "/admin/rules/rollback", "").await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["seq"], 4);
    assert_eq!(back["sha256"], b["sha256"]);
    assert!(
        back["source"]
            .as_str()
            .unwrap()
            .starts_with("rollback to 2-")
    );
    let (_, answer) = common::post(
        server.payment_addr(),
        "/v1/decide",
        &txn("t1", "c", "2026-03-01T10:00:00Z", "600"),
    )
    .await;
    assert_eq!(answer["decision"], "review");
    assert_eq!(answer["rules_version"], back["version"]);

    let (_, back) = common::post(admin, "/admin/rules/rollback", "").await;
    assert_eq!(back["seq"], 5);
    assert_eq!(back["sha256"], a["sha256"]);
    let (status, body) = common::post(admin, "/admin/rules/rollback", "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(live_version(&server).await["seq"], 5);
}

#[tokio::test]
async fn the_admin_token_guards_everything_but_health() {
    let config = ServeConfig {
        admin_token: Some("s3cret-token".into()),
        ..ServeConfig::default()
    };
    let server = start_with(RULES_A, StoreConfig::default(), config).await;
    let admin = server.admin_addr();
    for path in ["/healthz", "/readyz"] {
        assert_eq!(get(admin, path).await.0, StatusCode::OK, "{path}");
    }
    for (method, path) in [
        (Method::GET, "/metrics"),
        (Method::GET, "/admin/rules"),
        (Method::GET, "/admin/rules/history"),
        (Method::POST, "/admin/rules/rollback"),
        (Method::PUT, "/admin/rules"),
    ] {
        let body = Bytes::from_static(RULES_B.as_bytes());
        let (status, _) = send_with(admin, method.clone(), path, body.clone(), &[]).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        let (status, _) = send_with(
            admin,
            method.clone(),
            path,
            body.clone(),
            &[("authorization", "Bearer s3cret-tokex")],
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a wrong token"
        );
        let (status, _) = send_with(
            admin,
            method.clone(),
            path,
            body,
            &[("authorization", "s3cret-token")],
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without the Bearer scheme"
        );
    }
    assert_eq!(
        live_version(&server).await["seq"],
        Value::Null,
        "unauthorised GET shows nothing"
    );
    let auth = [("authorization", "Bearer s3cret-token")];
    let (status, text) = send_with(
        admin,
        Method::PUT,
        "/admin/rules",
        Bytes::from_static(RULES_B.as_bytes()),
        &auth,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, text) = send_with(admin, Method::GET, "/metrics", Bytes::new(), &auth).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("tripwire_rules_version 2"), "{text}");
}

#[tokio::test]
async fn shadow_rules_are_reported_counted_and_logged_but_never_decide() {
    let dir = temp_dir("shadow");
    // In a directory that does not exist yet: tripwire makes it.
    let log = dir.join("logs").join("decisions.jsonl");
    let rules = format!(
        "{RULES_A}  - id: watch_mid_amounts\n    action: deny\n    mode: shadow\n    when:\n      amount: {{ at_least: 100 }}\n"
    );
    let config = ServeConfig {
        decision_log: Some(DecisionLogConfig::new(log.clone())),
        ..ServeConfig::default()
    };
    let server = start_with(&rules, StoreConfig::default(), config).await;
    let (_, answer) = common::post(
        server.payment_addr(),
        "/v1/decide",
        &txn("s1", "c", "2026-03-01T10:00:00Z", "150"),
    )
    .await;
    assert_eq!(answer["decision"], "allow");
    assert_eq!(answer["reasons"], serde_json::json!([]));
    assert_eq!(answer["shadow"][0]["rule"], "watch_mid_amounts");
    assert_eq!(answer["shadow"][0]["action"], "deny");
    assert_eq!(
        answer["shadow"][0]["message"],
        "amount 150.00 (at least 100.00)"
    );
    let (_, answer) = common::post(
        server.payment_addr(),
        "/v1/decide",
        &txn("s2", "c", "2026-03-01T10:00:01Z", "1500"),
    )
    .await;
    assert_eq!(answer["decision"], "deny");

    let m = metrics(&server).await;
    assert_eq!(
        metric_value(
            &m,
            "tripwire_rule_hits_total{rule=\"watch_mid_amounts\",mode=\"shadow\",action=\"deny\"}"
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "tripwire_rule_hits_total{rule=\"big_amount\",mode=\"enforce\",action=\"deny\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&m, "tripwire_decisions_total{decision=\"allow\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&m, "tripwire_decisions_total{decision=\"deny\"}"),
        Some(1.0)
    );
    assert_eq!(metric_value(&m, "tripwire_customers"), Some(1.0));
    assert_eq!(metric_value(&m, "tripwire_events"), Some(2.0));
    assert!(m.contains("tripwire_decide_duration_seconds_bucket"), "{m}");

    let logged = eventually(5, || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 2)
    })
    .await;
    assert!(logged, "two decision log lines");
    let text = std::fs::read_to_string(&log).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["request"]["transaction_id"], "s1");
    assert_eq!(first["request"]["amount"], "150");
    assert_eq!(first["answer"]["shadow"][0]["rule"], "watch_mid_amounts");
    assert!(
        first["answer"]["rules_version"]
            .as_str()
            .unwrap()
            .starts_with("1-")
    );
    assert!(first["latency_us"].is_u64() && first["logged_at"].is_string());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_decision_log_rotates_by_size() {
    let dir = temp_dir("rotate");
    let log = dir.join("d.jsonl");
    let config = ServeConfig {
        decision_log: Some(DecisionLogConfig {
            max_bytes: 2_000,
            keep: 2,
            ..DecisionLogConfig::new(log.clone())
        }),
        ..ServeConfig::default()
    };
    let server = start_with(RULES_A, StoreConfig::default(), config).await;
    let mut client = Client::connect(server.payment_addr()).await;
    for i in 0..60 {
        client
            .post(
                "/v1/decide",
                &txn(
                    &format!("r{i}"),
                    &format!("c{i}"),
                    "2026-03-01T10:00:00Z",
                    "10",
                ),
            )
            .await;
    }
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    // The writer works behind a queue: wait until it has written the last decision, after
    // which it renames nothing more.
    assert!(
        eventually(5, || async {
            std::fs::read_to_string(&log).is_ok_and(|s| s.contains("\"r59\""))
        })
        .await,
        "the last decision reached the log"
    );
    assert!(rotated(2).exists(), "two rotations happened");
    assert!(!rotated(3).exists(), "only two rotated files are kept");
    for path in [log.clone(), rotated(1), rotated(2)] {
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= 2_000, "{} is {len} bytes", path.display());
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            serde_json::from_str::<Value>(line).expect("every line is JSON");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Starts the whole service, as `tripwire serve` does, on the rules file at `path`.
async fn start_watching(path: &Path) -> App {
    let config = Config {
        rules: path.to_path_buf(),
        workers: None,
        store: StoreConfig::default(),
        serve: ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..ServeConfig::default()
        },
        state_dir: None,
        fleet: None,
        max_entities: tripwire::state::DEFAULT_MAX_ENTITIES,
        triggers: TriggerConfig {
            watch: true,
            debounce: Duration::from_millis(50),
        },
        upkeep: UpkeepConfig::default(),
    };
    App::start(config).await.expect("the service starts")
}

async fn wait_for_seq(server: &impl Admin, seq: u64) -> bool {
    eventually(10, || async { live_version(server).await["seq"] == seq }).await
}

#[tokio::test]
async fn editing_the_rules_file_in_place_reloads_it() {
    let dir = temp_dir("edit");
    let path = dir.join("rules.yaml");
    std::fs::write(&path, RULES_A).unwrap();
    let server = start_watching(&path).await;
    std::fs::write(&path, RULES_B).unwrap();
    assert!(wait_for_seq(&server, 2).await, "an in-place write reloads");
    let live = live_version(&server).await;
    assert_eq!(live["source"], path.display().to_string());
    assert_eq!(live["rules"][1]["id"], "tiny_amount");

    // A broken save is refused and counted; the good rules keep serving.
    std::fs::write(&path, "timezone: UTC\nrules:\n  - id: [\n").unwrap();
    let refused = eventually(10, || async {
        metric_value(
            &metrics(&server).await,
            "tripwire_rule_reloads_total{trigger=\"file\",outcome=\"refused\"}",
        ) == Some(1.0)
    })
    .await;
    assert!(refused, "the broken file was seen and refused");
    assert_eq!(live_version(&server).await["seq"], 2);
    let (_, history) = get(server.admin(), "/admin/rules/history").await;
    assert_eq!(history["entries"][0]["outcome"], "refused");
    assert_eq!(history["entries"][0]["line"], 3);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn saving_by_rename_reloads_it() {
    let dir = temp_dir("rename");
    let path = dir.join("rules.yaml");
    std::fs::write(&path, RULES_A).unwrap();
    let server = start_watching(&path).await;
    let tmp = dir.join(".rules.yaml.swp");
    std::fs::write(&tmp, RULES_C).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert!(
        wait_for_seq(&server, 2).await,
        "a rename over the file reloads"
    );
    assert_eq!(live_version(&server).await["rules"][0]["id"], "anything");
    // Touching the file without changing it does not make a new version.
    std::fs::write(&path, RULES_C).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(live_version(&server).await["seq"], 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_symlink_swap_reloads_it() {
    use std::os::unix::fs::symlink;
    let dir = temp_dir("configmap");
    // The layout the kubelet writes: rules.yaml -> ..data/rules.yaml, ..data -> ..<timestamp>.
    std::fs::create_dir(dir.join("..2026_01")).unwrap();
    std::fs::write(dir.join("..2026_01/rules.yaml"), RULES_A).unwrap();
    symlink("..2026_01", dir.join("..data")).unwrap();
    symlink("..data/rules.yaml", dir.join("rules.yaml")).unwrap();
    let path = dir.join("rules.yaml");
    let server = start_watching(&path).await;

    std::fs::create_dir(dir.join("..2026_02")).unwrap();
    std::fs::write(dir.join("..2026_02/rules.yaml"), RULES_B).unwrap();
    symlink("..2026_02", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    assert!(wait_for_seq(&server, 2).await, "the ..data swap reloads");
    assert_eq!(live_version(&server).await["rules"][1]["id"], "tiny_amount");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_deeply_nested_rule_file_is_refused_and_the_server_keeps_serving() {
    let server = start(RULES_A).await;
    let nested = format!(
        "timezone: UTC\nrules:\n  - id: deep\n    action: review\n    when: {}{{ amount: {{ at_least: 1 }} }}{}\n",
        "{ all: [ ".repeat(40),
        " ] }".repeat(40)
    );
    let (status, body) = put_rules(server.admin_addr(), &nested).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("nest more than"),
        "{body}"
    );
    let (status, _) = send(server.admin_addr(), Method::GET, "/healthz", "").await;
    assert_eq!(status, StatusCode::OK, "the interceptor is still up");
    assert_eq!(live_version(&server).await["seq"], 1);
}

#[tokio::test]
async fn answers_say_how_long_a_pushed_set_lasts_and_the_file_wins_on_sighup_or_edit() {
    let dir = temp_dir("precedence");
    let path = dir.join("rules.yaml");
    std::fs::write(&path, RULES_A).unwrap();
    let app = start_watching(&path).await;
    let live = live_version(&app).await;
    assert_eq!(
        live["lasts"],
        "until the rules file changes or another set is pushed"
    );
    let (status, pushed) = put_rules(app.admin(), RULES_B).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        pushed["lasts"]
            .as_str()
            .unwrap()
            .contains("until the rules file is reloaded"),
        "{pushed}"
    );
    // An edit of the file replaces the pushed set: the file is the source of truth.
    std::fs::write(&path, RULES_C).unwrap();
    assert!(wait_for_seq(&app, 3).await);
    assert_eq!(
        live_version(&app).await["source"],
        path.display().to_string()
    );
    std::fs::remove_dir_all(&dir).ok();
}
