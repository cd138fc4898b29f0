//! The proxy floor of tripwire's HTTP stack: a bare hyper reverse proxy that reads the whole
//! request body, forwards the request over hyper-util's pooled keep-alive client and streams the
//! answer back. No decision, no header work, no metrics, no timeouts: what any proxy built on
//! this stack costs before it does anything of its own.
//!
//!     cargo bench --bench bare_proxy -- --listen 127.0.0.1:9001 --upstream 127.0.0.1:9000 [--workers 1]
//!
//! Built like tripwire's proxy mode (hyper 1, http1, tokio multi-thread, nodelay on both sides,
//! the same pooled client) so that tripwire against this measures tripwire's own work, and this
//! against nginx measures the stack. The body is read whole before forwarding, as tripwire must
//! to decide on it and as nginx does by default (`proxy_request_buffering on`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn failed(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

async fn forward(
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return failed(StatusCode::BAD_REQUEST);
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(uri) = format!("http://{upstream}{path_and_query}").parse::<Uri>() else {
        return failed(StatusCode::BAD_REQUEST);
    };
    parts.uri = uri;
    match client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(response) => response.map(|b| b.boxed_unsync()),
        Err(_) => failed(StatusCode::BAD_GATEWAY),
    }
}

fn main() {
    let (Some(listen), Some(upstream)) = (arg("--listen"), arg("--upstream")) else {
        // `cargo bench` without arguments runs every bench target: nothing to serve then.
        eprintln!("bare_proxy: give --listen ADDR --upstream HOST:PORT");
        return;
    };
    let listen: SocketAddr = listen.parse().expect("--listen ADDR");
    let upstream: Arc<str> = upstream.into();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = arg("--workers") {
        runtime.worker_threads(n.parse().expect("--workers N"));
    }
    runtime.build().unwrap().block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        let listener = TcpListener::bind(listen).await.unwrap();
        eprintln!("bare_proxy listening on {}", listener.local_addr().unwrap());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move { Ok::<_, Infallible>(forward(&client, &upstream, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
