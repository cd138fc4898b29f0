//! Helpers for the black-box tests: start the real server on ephemeral ports and speak HTTP/1.1
//! to it over real sockets.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tripwire::interceptor::Interceptor;
use tripwire::live_rules::LiveRules;
use tripwire::server::{ServeConfig, Server};
use tripwire::state::{Store, StoreConfig};

pub const SHIPPED_RULES: &str = include_str!("../../rules.yaml");

/// Starts a server on 127.0.0.1:0 (both listeners) with these rules.
pub async fn start(rules_yaml: &str) -> Server {
    start_with(rules_yaml, StoreConfig::default(), ServeConfig::default()).await
}

pub async fn start_with(rules_yaml: &str, store: StoreConfig, config: ServeConfig) -> Server {
    let live = LiveRules::new(rules_yaml.as_bytes(), "test").expect("test rules load");
    let interceptor = Arc::new(Interceptor::new(Store::new(store), live));
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    Server::start(config, interceptor)
        .await
        .expect("server starts")
}

/// One request on a fresh connection; returns status and body text.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, String) {
    send_bytes(addr, method, path, Bytes::copy_from_slice(body.as_bytes())).await
}

pub async fn send_bytes(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
) -> (StatusCode, String) {
    send_with(addr, method, path, body, &[]).await
}

/// One request with extra headers on a fresh connection.
pub async fn send_with(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut client = Client::connect(addr).await;
    client.request(method, path, body, headers).await
}

/// A status, headers and body text.
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// A keep-alive HTTP/1.1 connection.
pub struct Client {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client { addr, sender }
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let answer = self.exchange(method, path, body, headers).await;
        (answer.status, answer.body)
    }

    /// One request; the answer with its headers. `content-type` defaults to JSON.
    pub async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).unwrap();
        self.sender.ready().await.expect("connection ready");
        let response = self.sender.send_request(req).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn post(&mut self, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let (status, text) = self
            .request(
                Method::POST,
                path,
                Bytes::copy_from_slice(body.as_bytes()),
                &[],
            )
            .await;
        (status, parse(&text))
    }
}

/// Polls `check` every 50 ms until it returns true or `seconds` pass.
pub async fn eventually<F, Fut>(seconds: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

pub async fn post(addr: SocketAddr, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let (status, text) = send(addr, Method::POST, path, body).await;
    (status, parse(&text))
}

pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, serde_json::Value) {
    let (status, text) = send(addr, Method::GET, path, "").await;
    (status, parse(&text))
}

pub fn parse(text: &str) -> serde_json::Value {
    if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

/// A decide body.
pub fn txn(id: &str, customer: &str, timestamp: &str, amount: &str) -> String {
    serde_json::json!({
        "transaction_id": id,
        "customer_id": customer,
        "timestamp": timestamp,
        "amount": amount,
    })
    .to_string()
}

// ---- the real binary -------------------------------------------------------------------

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

/// Kills the server if the test fails before stopping it.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to `seconds` for the process to exit; its exit status.
pub fn wait_exit(child: &mut KillOnDrop, seconds: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tripwire did not exit within {seconds} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts `tripwire serve` on ephemeral ports; returns the process and its two addresses.
pub fn spawn_serve(extra: &[&str]) -> (KillOnDrop, std::net::SocketAddr, std::net::SocketAddr) {
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("TRIPWIRE_ADMIN_TOKEN")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let field = |line: &str, key: &str| -> Option<std::net::SocketAddr> {
        let start = line.find(key)? + key.len();
        line[start..].split_whitespace().next()?.parse().ok()
    };
    let (mut payment, mut admin) = (None, None);
    while payment.is_none() || admin.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server logs its addresses");
        payment = payment.or_else(|| field(&line, "payment="));
        admin = admin.or_else(|| field(&line, "admin="));
    }
    (child, payment.unwrap(), admin.unwrap())
}

pub fn signal(child: &KillOnDrop, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}
