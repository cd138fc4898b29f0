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
    /// A client must send a whole request, head and body, within this time of its first byte;
    /// past it the request gets 408 and the connection closes.
    pub request_read_timeout: Duration,
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
            request_read_timeout: Duration::from_secs(10),
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

/// Why the server could not start, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind its address.
    #[error("cannot listen for {role} on {addr}: {source}{hint}")]
    Bind {
        /// `payments` or `admin requests`.
        role: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
        /// What to try, when the cause suggests it.
        hint: &'static str,
    },
    /// The decision log could not be opened.
    #[error("cannot open the decision log {path}: {source}")]
    DecisionLog {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

async fn bind(role: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            role,
            addr,
            hint: match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    " (another process, or another tripwire, is listening there; choose another port)"
                }
                std::io::ErrorKind::PermissionDenied => {
                    " (ports below 1024 need privileges; choose a port above 1023)"
                }
                std::io::ErrorKind::AddrNotAvailable => " (no interface of this machine has that address)",
                _ => "",
            },
            source,
        })
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
    /// Fleet mode: replication progress (`/readyz` answers 503 until caught up) and the
    /// decision-line publisher.
    pub fleet: Option<crate::fleet::FleetHandles>,
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
    ) -> Result<Server, StartError> {
        let reloader = Reloader::new(interceptor, None, Arc::new(Metrics::new()));
        Server::serve(config, Arc::new(reloader)).await
    }

    /// Binds both listeners and starts serving decisions with the reloader's interceptor.
    pub async fn serve(config: ServeConfig, reloader: Arc<Reloader>) -> Result<Server, StartError> {
        Server::serve_fleet(config, reloader, None).await
    }

    /// Like [`Server::serve`], for a fleet replica: readiness waits for `fleet` to catch up.
    pub async fn serve_fleet(
        config: ServeConfig,
        reloader: Arc<Reloader>,
        fleet: Option<crate::fleet::FleetHandles>,
    ) -> Result<Server, StartError> {
        let interceptor = Arc::clone(reloader.interceptor());
        let metrics = Arc::clone(reloader.metrics());
        let payment = bind("payments", config.listen).await?;
        let admin = bind("admin requests", config.admin_listen).await?;
        let payment_addr = payment.local_addr().unwrap_or(config.listen);
        let admin_addr = admin.local_addr().unwrap_or(config.admin_listen);
        let decision_log =
            match &config.decision_log {
                Some(log) => Some(DecisionLog::open(log.clone()).map_err(|source| {
                    StartError::DecisionLog {
                        path: log.path.display().to_string(),
                        source,
                    }
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
            fleet,
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
    let open = Arc::new(OpenConnections::default());
    loop {
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
        // At the connection limit, this client waits for a slot (and those after it in the
        // kernel's accept queue, taking no memory here). While it waits, a connection that has
        // stalled is shed, so that a few slow clients cannot hold every slot.
        let slot = loop {
            if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
                break Some(slot);
            }
            if open.shed_one() {
                state.metrics.record_connection_shed();
            }
            tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => break Some(slot.expect("the semaphore is never closed")),
                _ = tokio::time::sleep(SHED_CHECK) => continue,
                _ = stopped.changed() => break None,
            }
        };
        let Some(slot) = slot else { break };
        let state = Arc::clone(&state);
        let stop = stopped.clone();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            let connection = Arc::new(Connection::new());
            let id = open.add(Arc::clone(&connection));
            serve_connection(stream, peer, state, role, stop, connection).await;
            open.remove(id);
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

/// How often a full listener looks again for a stalled connection to shed.
const SHED_CHECK: Duration = Duration::from_millis(250);
/// A connection that moved no byte for this long counts as stalled when slots run out.
const STALLED_AFTER_MILLIS: u64 = 1_000;
/// `Connection::request_started` between requests.
const BETWEEN_REQUESTS: u64 = u64::MAX;

/// What the socket wrapper, the connection task, the handlers and the listener know of one
/// connection.
#[derive(Debug)]
struct Connection {
    origin: Instant,
    /// Milliseconds since `origin` when bytes last moved either way.
    last_active: AtomicU64,
    /// Milliseconds since `origin` of the first byte of the request being read, or
    /// [`BETWEEN_REQUESTS`].
    request_started: AtomicU64,
    /// Set once the listener chose to shed this connection.
    shedding: AtomicBool,
    shed: tokio::sync::Notify,
}

impl Connection {
    fn new() -> Connection {
        Connection {
            origin: Instant::now(),
            last_active: AtomicU64::new(0),
            request_started: AtomicU64::new(BETWEEN_REQUESTS),
            shedding: AtomicBool::new(false),
            shed: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        now_millis(self.origin)
    }

    /// When the request being read began (now, for one read whole before the previous
    /// answer was written).
    fn request_start(&self) -> Instant {
        match self.request_started.load(Ordering::Relaxed) {
            BETWEEN_REQUESTS => Instant::now(),
            at => self.origin + Duration::from_millis(at),
        }
    }
}

/// The open connections of one listener, so that a full listener can shed a stalled one.
#[derive(Debug, Default)]
struct OpenConnections {
    next_id: AtomicU64,
    live: parking_lot::Mutex<std::collections::HashMap<u64, Arc<Connection>>>,
}

impl OpenConnections {
    fn add(&self, connection: Arc<Connection>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.live.lock().insert(id, connection);
        id
    }

    fn remove(&self, id: u64) {
        self.live.lock().remove(&id);
    }

    /// Closes the connection that has stalled longest: one stuck in the middle of a request
    /// first, else one idle between requests. Returns whether one was shed.
    fn shed_one(&self) -> bool {
        let live = self.live.lock();
        let quiet = |c: &Connection| {
            c.now()
                .saturating_sub(c.last_active.load(Ordering::Relaxed))
        };
        let victim = live
            .values()
            .filter(|c| !c.shedding.load(Ordering::Relaxed) && quiet(c) >= STALLED_AFTER_MILLIS)
            .max_by_key(|c| {
                let mid_request = c.request_started.load(Ordering::Relaxed) != BETWEEN_REQUESTS;
                (mid_request, quiet(c))
            });
        match victim {
            Some(c) => {
                c.shedding.store(true, Ordering::Relaxed);
                c.shed.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Milliseconds since a fixed origin, for idle tracking.
fn now_millis(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A socket that notes when bytes last moved in either direction, and when each request began.
struct Tracked {
    inner: tokio::net::TcpStream,
    connection: Arc<Connection>,
}

impl Tracked {
    fn touch(&self) -> u64 {
        let now = self.connection.now();
        self.connection.last_active.store(now, Ordering::Relaxed);
        now
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
            let now = self.touch();
            // The first bytes after an answer begin the next request.
            let _ = self.connection.request_started.compare_exchange(
                BETWEEN_REQUESTS,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
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
            // An answer is going out: the request it answers has been read.
            self.connection
                .request_started
                .store(BETWEEN_REQUESTS, Ordering::Relaxed);
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

/// Serves one connection until it ends, closing it when idle past the idle timeout, draining
/// it gracefully (the request in flight finishes) at shutdown, and dropping it at once when the
/// listener sheds it.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<AppState>,
    role: Role,
    mut stop: watch::Receiver<bool>,
    connection: Arc<Connection>,
) {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket lets a handler see that its client left (see
    // `http::RequestContext::client_gone`); without one, requests are acted on regardless.
    let socket = socket2::SockRef::from(&stream)
        .try_clone()
        .ok()
        .map(Arc::new);
    let io = Tracked {
        inner: stream,
        connection: Arc::clone(&connection),
    };
    let config = &state.config;
    let (idle, header_timeout, request_timeout, max_buf) = (
        config.idle_timeout,
        config.header_read_timeout,
        config.request_read_timeout,
        config.max_header_bytes.max(8192),
    );
    let service_state = Arc::clone(&state);
    let service_connection = Arc::clone(&connection);
    let client = proxy::Peer::new(peer);
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let state = Arc::clone(&service_state);
        let client = client.clone();
        let context = socket.as_ref().map(|socket| http::RequestContext {
            deadline: (service_connection.request_start() + request_timeout).into(),
            timeout: request_timeout,
            socket: Arc::clone(socket),
        });
        async move {
            let context = context.as_ref();
            Ok::<_, std::convert::Infallible>(match (role, &state.proxy) {
                (Role::Payment, Some(proxy)) => {
                    proxy::handle(&state, proxy, req, &client, context).await
                }
                (Role::Payment, None) => http::boxed(payment::handle(&state, req, context).await),
                // Boxed: the admin calls' future is the largest, and hyper moves the request's
                // future into place whole, whichever listener it serves.
                (Role::Admin, _) => Box::pin(admin::handle(&state, req, context)).await,
            })
        }
    });
    let hyper_connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_buf)
        .serve_connection(TokioIo::new(io), service);
    let mut hyper_connection = std::pin::pin!(hyper_connection);
    let mut idle_check =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
    let idle_millis = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let shed = connection.shed.notified();
    let mut shed = std::pin::pin!(shed);
    let stopped = stop.changed();
    let mut stopped = std::pin::pin!(stopped);
    // The watchers (shedding, shutdown, the idle check) are polled only when one of them woke
    // the task: the connection wakes it a few times a request, and polling three idle
    // watchers each time cost more than tripwire's whole header handling.
    let watchers = Arc::new(WatcherWake::default());
    let watcher_waker = std::task::Waker::from(Arc::clone(&watchers));
    let mut closing = false;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(ended) = hyper_connection.as_mut().poll(cx) {
            if let Err(e) = ended {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            return std::task::Poll::Ready(());
        }
        if !watchers.take(cx.waker()) {
            return std::task::Poll::Pending;
        }
        let mut watching = std::task::Context::from_waker(&watcher_waker);
        if shed.as_mut().poll(&mut watching).is_ready() {
            debug!(%peer, "stalled connection shed: the listener is at its connection limit");
            return std::task::Poll::Ready(());
        }
        if closing {
            return std::task::Poll::Pending;
        }
        let quiet = || {
            connection
                .now()
                .saturating_sub(connection.last_active.load(Ordering::Relaxed))
        };
        let mut idle = false;
        // Polled until pending, so that the next tick will wake the task.
        while !idle && idle_check.poll_tick(&mut watching).is_ready() {
            idle = quiet() >= idle_millis;
        }
        if idle || stopped.as_mut().poll(&mut watching).is_ready() {
            closing = true;
            hyper_connection.as_mut().graceful_shutdown();
            // Polled again at once: the connection may end now that it was asked to.
            cx.waker().wake_by_ref();
        }
        std::task::Poll::Pending
    })
    .await;
}

/// The waker the watchers of a connection are polled with: it marks that one of them woke the
/// connection's task, then wakes the task.
#[derive(Default)]
struct WatcherWake {
    woken: AtomicBool,
    task: parking_lot::Mutex<Option<std::task::Waker>>,
}

impl WatcherWake {
    /// Whether a watcher woke the task since the last call (true the first time), noting the
    /// task's current waker for the next wake-up.
    fn take(&self, task: &std::task::Waker) -> bool {
        let mut held = self.task.lock();
        let first = held.is_none();
        if !held.as_ref().is_some_and(|w| w.will_wake(task)) {
            *held = Some(task.clone());
        }
        drop(held);
        self.woken.swap(false, Ordering::AcqRel) || first
    }
}

impl std::task::Wake for WatcherWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock() {
            task.wake_by_ref();
        }
    }
}
