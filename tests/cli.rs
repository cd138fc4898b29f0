//! The `tripwire` binary itself: `check`, and `serve` from start to a graceful stop.

mod common;

use std::process::Command;
use std::time::Duration;

use hyper::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

fn rules_path() -> String {
    format!("{}/rules.yaml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_the_shipped_rules_with_a_summary() {
    let out = Command::new(BIN)
        .args(["check", &rules_path()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("ok: 14 rules (11 enforce, 3 shadow), 1 lists, timezone Asia/Shanghai"),
        "{stdout}"
    );
}

#[test]
fn check_applies_the_evaluation_budget_serve_would() {
    let run = |extra: &[&str]| {
        let path = rules_path();
        let mut args = vec!["check", path.as_str()];
        args.extend_from_slice(extra);
        Command::new(BIN).args(&args).output().unwrap()
    };
    let out = run(&[]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("of budget 1000000 per decision"),
        "{stdout}"
    );
    let out = run(&["--eval-budget", "1000", "--ring-capacity", "4096"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("with a 4096-event history; the evaluation budget is 1000 "),
        "{stderr}"
    );
}

#[test]
fn check_reports_every_problem_as_path_line_column() {
    let dir = std::env::temp_dir().join(format!("tripwire-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "timezone: Asia/Shanghai\nrules:\n  - id: burst\n    action: deny\n    when:\n      count: { window: 10q, at_least: 5 }\n  - id: burst\n    action: deny\n    when:\n      amount: { in: nowhere }\n",
    )
    .unwrap();
    let out = Command::new(BIN).arg("check").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let p = path.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{p}:6:24: bad window \"10q\"")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{p}:7:9: duplicate rule id `burst`")),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with(&format!("{p}:10:21: unknown list `nowhere`")),
        "{stderr}"
    );

    let missing = Command::new(BIN)
        .args(["check", "/nonexistent/rules.yaml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/rules.yaml")
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn serve_refuses_to_start_on_a_bad_rules_file() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--rules",
            "/nonexistent/rules.yaml",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn serve_answers_and_stops_gracefully_on_sigterm() {
    let (mut child, payment, admin) = common::spawn_serve(&["--rules", &rules_path()]);
    let (status, body) = common::get(admin, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = common::post(
        payment,
        "/v1/decide",
        &common::txn("t1", "zed", "2026-03-01T02:30:00+08:00", "10"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["decision"], "review",
        "02:30 local is in the night window: {body}"
    );

    common::signal(&child, "TERM");
    let status = common::wait_exit(&mut child, 20);
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn a_request_in_flight_at_sigterm_is_answered_before_exit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut child, payment, admin) = common::spawn_serve(&["--rules", &rules_path()]);
    let (status, _) = common::get(admin, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let body = common::txn("f1", "fay", "2026-03-01T10:00:00+08:00", "10");
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(payment).await.unwrap();
    let head = format!(
        "POST /v1/decide HTTP/1.1\r\nhost: tripwire\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The request is half sent when the stop is asked for.
    common::signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "tripwire exited with a request in flight"
    );
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(13).any(|w| w == b"rules_version") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to the request in flight");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"decision\":\"allow\""), "{answer}");
    let status = common::wait_exit(&mut child, 20);
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn sighup_reloads_the_rules_file() {
    let dir = std::env::temp_dir().join(format!("tripwire-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rules.yaml");
    let first = "timezone: UTC\nrules:\n  - id: big\n    action: deny\n    when:\n      amount: { at_least: 1000 }\n";
    std::fs::write(&path, first).unwrap();
    let path_text = path.display().to_string();
    let (child, payment, admin) = common::spawn_serve(&["--rules", &path_text, "--no-watch"]);
    std::fs::write(&path, first.replace("deny", "review")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        common::get(admin, "/admin/rules").await.1["seq"],
        1,
        "--no-watch: the edit alone does nothing"
    );
    common::signal(&child, "HUP");
    let reloaded = common::eventually(10, || async {
        common::get(admin, "/admin/rules").await.1["seq"] == 2
    })
    .await;
    assert!(reloaded, "SIGHUP reloaded the file");
    let (_, answer) = common::post(
        payment,
        "/v1/decide",
        &common::txn("h1", "c", "2026-03-01T10:00:00Z", "5000"),
    )
    .await;
    assert_eq!(answer["decision"], "review");
    assert!(answer["rules_version"].as_str().unwrap().starts_with("2-"));
    drop(child);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn serve_reads_a_config_file_and_flags_win() {
    let dir = std::env::temp_dir().join(format!("tripwire-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("decisions.jsonl");
    let config = dir.join("tripwire.toml");
    std::fs::write(
        &config,
        format!(
            "rules = \"{}\"\nlisten = \"127.0.0.1:1\"\ndecision_log = \"{}\"\n",
            rules_path(),
            log.display()
        ),
    )
    .unwrap();
    let config_text = config.display().to_string();
    // The file's listen address (port 1) would fail; the flag given by spawn_serve wins.
    let (child, payment, _) = common::spawn_serve(&["--config", &config_text]);
    let (status, _) = common::post(
        payment,
        "/v1/decide",
        &common::txn("k1", "c", "2026-03-01T10:00:00Z", "10"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let logged = common::eventually(10, || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"k1\""))
    })
    .await;
    assert!(logged, "the config file's decision_log is used");
    drop(child);

    std::fs::write(
        &config,
        "rules = \"x.yaml\"\n[proxy]\nupstream = \"ftp://nowhere\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", &config_text])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("proxy.upstream:"), "{stderr}");
    std::fs::write(&config, "rules = \"x.yaml\"\nlisen = \"oops\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", &config_text])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lisen"),
        "unknown keys are named"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn serve_refusals_name_what_failed() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["serve", "--rules", &rules_path(), "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", &port])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen for admin requests on {port}")),
        "{stderr}"
    );
    assert!(stderr.contains("choose another port"), "{stderr}");

    let out = Command::new(BIN)
        .args(["serve", "--rules", &rules_path()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--decision-log", "/proc/tripwire/decisions.jsonl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open the decision log /proc/tripwire/decisions.jsonl"),
        "{stderr}"
    );
    assert!(!stderr.contains("bind"), "{stderr}");

    let out = Command::new(BIN)
        .args(["serve", "--rules", &rules_path()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--state-dir", "/proc/tripwire-state"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot create the state directory /proc/tripwire-state"),
        "{stderr}"
    );
}

#[test]
fn the_ready_line_says_when_tripwire_runs_as_a_proxy_and_where_it_forwards() {
    use std::io::{BufRead, BufReader};
    let child = Command::new(BIN)
        .args(["serve", "--rules", &rules_path()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--upstream", "http://127.0.0.1:9"])
        .env("RUST_LOG", "info")
        .env_remove("TRIPWIRE_ADMIN_TOKEN")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = common::KillOnDrop(child);
    let stderr = child.0.stderr.take().unwrap();
    let ready = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("tripwire ready"))
        .expect("a ready line");
    assert!(ready.contains("reverse proxy"), "{ready}");
    assert!(ready.contains("http://127.0.0.1:9/"), "{ready}");
    assert!(ready.contains("no routes"), "{ready}");
}
