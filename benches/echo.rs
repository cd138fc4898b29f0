//! The HTTP floor: a bare hyper server that reads the whole request body and answers a small
//! JSON. Used as the baseline of the latency harness and as the upstream of proxy benches.
//!
//!     cargo bench --bench echo -- --listen 127.0.0.1:9000 [--workers 1]
//!
//! Built like tripwire (hyper 1, http1, tokio multi-thread, nodelay) so that the ratio between
//! the two measures what tripwire adds, not a difference in HTTP stacks.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let Some(listen) = arg("--listen") else {
        // `cargo bench` without arguments runs every bench target: nothing to serve then.
        eprintln!("echo: give --listen ADDR");
        return;
    };
    let listen: SocketAddr = listen.parse().expect("--listen ADDR");
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = arg("--workers") {
        runtime.worker_threads(n.parse().expect("--workers N"));
    }
    runtime.build().unwrap().block_on(async move {
        let listener = TcpListener::bind(listen).await.unwrap();
        eprintln!("echo listening on {}", listener.local_addr().unwrap());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let answer = if body.is_empty() {
                        Bytes::from_static(b"{\"ok\":true}")
                    } else {
                        Bytes::from_static(b"{\"ok\":true,\"decision\":\"allow\"}")
                    };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(answer))
                            .unwrap(),
                    )
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
