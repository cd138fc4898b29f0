//! Helpers for the black-box tests: start the real server on ephemeral ports and speak HTTP/1.1
//! to it over real sockets.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tripwire::interceptor::Interceptor;
use tripwire::reload::LiveRules;
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
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let response = sender.send_request(req).await.expect("response");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
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
