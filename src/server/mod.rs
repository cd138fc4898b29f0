//! The HTTP side: a payment listener (the decision API) and a separate admin listener (health,
//! readiness), both hyper 1 over tokio. Handlers parse, call the [`Interceptor`], and map
//! errors to answers in one place ([`http::ApiError`]).
//!
//! Shutdown stops both accept loops at once, lets requests in flight finish within a grace
//! period, then returns.

pub mod admin;
pub mod http;
pub mod payment;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::interceptor::Interceptor;

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
    /// How often idle customers are swept (wall clock cadence; idleness is event time).
    pub sweep_interval: Duration,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            max_body_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(10),
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
}

#[derive(Clone, Copy, Debug)]
enum Role {
    Payment,
    Admin,
}

/// A running server.
pub struct Server {
    payment_addr: SocketAddr,
    admin_addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds both listeners and starts serving.
    pub async fn start(
        config: ServeConfig,
        interceptor: Arc<Interceptor>,
    ) -> std::io::Result<Server> {
        let payment = TcpListener::bind(config.listen).await?;
        let admin = TcpListener::bind(config.admin_listen).await?;
        let payment_addr = payment.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let state = Arc::new(AppState {
            interceptor,
            config,
            accepting: AtomicBool::new(true),
        });
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(accept_loop(
                payment,
                Arc::clone(&state),
                Role::Payment,
                stopped.clone(),
            )),
            tokio::spawn(accept_loop(
                admin,
                Arc::clone(&state),
                Role::Admin,
                stopped.clone(),
            )),
            tokio::spawn(sweep_loop(Arc::clone(&state), stopped)),
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
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let header_timeout = state.config.header_read_timeout;
                let state = Arc::clone(&state);
                let service = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move {
                        Ok::<_, std::convert::Infallible>(match role {
                            Role::Payment => payment::handle(&state, req).await,
                            Role::Admin => admin::handle(&state, req).await,
                        })
                    }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    let grace = state.config.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
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

async fn sweep_loop(state: Arc<AppState>, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(state.config.sweep_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let interceptor = Arc::clone(&state.interceptor);
                // The sweep takes shard locks one at a time; keep it off the async workers.
                match tokio::task::spawn_blocking(move || interceptor.sweep_idle()).await {
                    Ok(removed) if removed > 0 => debug!(removed, "idle customers dropped"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "idle sweep failed"),
                }
            }
            _ = stopped.changed() => break,
        }
    }
}
