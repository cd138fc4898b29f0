//! The HTTP side: a payment listener (the decision API) and a separate admin listener (health,
//! readiness, metrics, rule operations), both hyper 1 over tokio. Handlers parse, call the
//! [`Interceptor`], and map errors to answers in one place ([`http::ApiError`]). Rule changes
//! asked for over the admin API go through the one reload path, [`crate::reload::Reloader`];
//! the process-level triggers and the idle sweep are started by [`crate::app`], not here.
//!
//! Shutdown stops both accept loops at once, lets requests in flight finish within a grace
//! period, then returns.

pub mod admin;
pub mod http;
pub mod payment;
pub mod proxy;
pub mod scan;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::decision_log::{DecisionLog, DecisionLogConfig};
use crate::interceptor::Interceptor;
use crate::metrics::Metrics;
use crate::reload::Reloader;

/// Listener and limit settings of `tripwire serve`.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Payment listener (decision API).
    pub listen: SocketAddr,
    /// Admin listener (health, readiness).
    pub admin_listen: SocketAddr,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// Time given to requests in flight at shutdown.
    pub shutdown_grace: Duration,
    /// Bearer token required by admin calls other than `/healthz` and `/readyz`.
    pub admin_token: Option<String>,
    /// Where to write the decision log, if anywhere.
    pub decision_log: Option<DecisionLogConfig>,
    /// Reverse-proxy mode, when an upstream is configured.
    pub proxy: Option<proxy::ProxyConfig>,
    /// A keep-alive connection idle this long between requests is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once per listener; further clients wait in the accept queue.
    pub max_connections: usize,
    /// Largest request head (request line and headers); larger ones get 431.
    pub max_header_bytes: usize,
    /// Most evaluation work a rule set may cost per decision (see `RuleSet::cost`); a rule
    /// set over it is refused like an invalid one.
    pub eval_budget: u64,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            max_body_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            admin_token: None,
            decision_log: None,
            proxy: None,
            idle_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            eval_budget: 1_000_000,
        }
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The interceptor.
    pub interceptor: Arc<Interceptor>,
    /// Settings.
    pub config: ServeConfig,
    /// False once shutdown began: readiness answers 503 so a balancer stops sending.
    pub accepting: AtomicBool,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The reload path for `PUT /admin/rules` and rollback.
    pub reloader: Arc<Reloader>,
    /// The decision log, when enabled.
    pub decision_log: Option<DecisionLog>,
    /// The reverse proxy, in proxy mode.
    pub proxy: Option<proxy::Proxy>,
}

#[derive(Clone, Copy, Debug)]
enum Role {
    Payment,
    Admin,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    payment_addr: SocketAddr,
    admin_addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds both listeners and starts serving decisions with `interceptor`; the admin API
    /// reloads from `PUT /admin/rules` only (there is no rules file).
    pub async fn start(
        config: ServeConfig,
        interceptor: Arc<Interceptor>,
    ) -> std::io::Result<Server> {
        let reloader = Reloader::new(interceptor, None, Arc::new(Metrics::new()));
        Server::serve(config, Arc::new(reloader)).await
    }

    /// Binds both listeners and starts serving decisions with the reloader's interceptor.
    pub async fn serve(config: ServeConfig, reloader: Arc<Reloader>) -> std::io::Result<Server> {
        let interceptor = Arc::clone(reloader.interceptor());
        let metrics = Arc::clone(reloader.metrics());
        let payment = TcpListener::bind(config.listen).await?;
        let admin = TcpListener::bind(config.admin_listen).await?;
        let payment_addr = payment.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let decision_log = match &config.decision_log {
            Some(log) => Some(DecisionLog::open(log.clone()).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot open the decision log {}: {e}", log.path.display()),
                )
            })?),
            None => None,
        };
        metrics.set_live_rules(&interceptor.rules().load());
        let proxy = config.proxy.clone().map(proxy::Proxy::new);
        let state = Arc::new(AppState {
            interceptor,
            config,
            accepting: AtomicBool::new(true),
            metrics,
            reloader,
            decision_log,
            proxy,
        });
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(accept_loop(
                payment,
                Arc::clone(&state),
                Role::Payment,
                stopped.clone(),
            )),
            tokio::spawn(accept_loop(admin, Arc::clone(&state), Role::Admin, stopped)),
        ];
        info!(payment = %payment_addr, admin = %admin_addr, "listening");
        Ok(Server {
            payment_addr,
            admin_addr,
            state,
            stop,
            tasks,
        })
    }

    /// The bound payment address (useful with port 0).
    pub fn payment_addr(&self) -> SocketAddr {
        self.payment_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Shared state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops accepting, lets requests in flight finish within the grace period, and returns.
    pub async fn shutdown(self) {
        self.state.accepting.store(false, Ordering::SeqCst);
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        info!("stopped");
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    role: Role,
    mut stopped: watch::Receiver<bool>,
) {
    let max = state.config.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    loop {
        // At the connection limit, stop accepting: further clients wait in the kernel's
        // accept queue instead of taking memory and file descriptors here.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stopped.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let state = Arc::clone(&state);
        let stop = stopped.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, state, role, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    // Every connection holds a slot until it ends: all slots back means all connections done.
    let grace = state.config.shutdown_grace;
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!(
            ?role,
            grace_seconds = grace.as_secs_f64(),
            "requests still in flight after the grace period were dropped"
        );
    }
}

/// Milliseconds since a fixed origin, for idle tracking.
fn now_millis(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A socket that notes when bytes last moved in either direction.
struct Tracked {
    inner: tokio::net::TcpStream,
    origin: Instant,
    last_active: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        self.last_active
            .store(now_millis(self.origin), Ordering::Relaxed);
    }
}

impl tokio::io::AsyncRead for Tracked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Tracked {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one connection until it ends, closing it when idle past the idle timeout and
/// draining it gracefully (the request in flight finishes) at shutdown.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<AppState>,
    role: Role,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let origin = Instant::now();
    let last_active = Arc::new(AtomicU64::new(0));
    let io = Tracked {
        inner: stream,
        origin,
        last_active: Arc::clone(&last_active),
    };
    let config = &state.config;
    let (idle, header_timeout, max_buf) = (
        config.idle_timeout,
        config.header_read_timeout,
        config.max_header_bytes.max(8192),
    );
    let service_state = Arc::clone(&state);
    let service = service_fn(move |req| {
        let state = Arc::clone(&service_state);
        async move {
            Ok::<_, std::convert::Infallible>(match (role, &state.proxy) {
                (Role::Payment, Some(proxy)) => proxy::handle(&state, proxy, req, peer).await,
                (Role::Payment, None) => http::boxed(payment::handle(&state, req).await),
                (Role::Admin, _) => admin::handle(&state, req).await,
            })
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_buf)
        .serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let mut idle_check =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
    let mut closing = false;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = idle_check.tick(), if !closing => {
                let quiet = now_millis(origin).saturating_sub(last_active.load(Ordering::Relaxed));
                if quiet >= u64::try_from(idle.as_millis()).unwrap_or(u64::MAX) {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
