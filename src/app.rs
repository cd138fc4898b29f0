//! The assembled service behind `tripwire serve`: rules, customer store, persistence recovery,
//! interceptor, listeners, reload triggers and upkeep, started in that order and stopped in
//! the reverse one.
//!
//! [`App::start`] needs a running tokio runtime and returns once both listeners are bound;
//! [`App::shutdown`] stops accepting, drains requests in flight, stops the background work and
//! writes the final snapshot. [`serve`] wraps both around a runtime and the process signals,
//! for `main`. Tests start an [`App`] in process to exercise exactly what the binary runs.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{self, Config, ConfigError};
use crate::fleet::Fleet;
use crate::interceptor::Interceptor;
use crate::interceptor::upkeep::Upkeep;
use crate::live_rules::LiveRules;
use crate::metrics::Metrics;
use crate::reload::{Reloader, Triggers};
use crate::rules::{self, EvalBudget, RulesError};
use crate::server::{ServeConfig, Server, StartError};
use crate::state::Store;
use crate::state::persist::{
    PersistConfig, PersistError, PersistHandle, Persistence, RecoveryReport,
};

/// Why the service could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The rules file could not be loaded; every problem as `PATH:LINE:COLUMN: message`.
    #[error("cannot load rules from {path}:\n{}", report.trim_end())]
    Rules {
        /// The rules file.
        path: String,
        /// One line per problem.
        report: String,
    },
    /// Persisted state could not be recovered or written.
    #[error(transparent)]
    State(#[from] PersistError),
    /// A listener or the decision log could not start.
    #[error(transparent)]
    Server(#[from] StartError),
    /// The rules watch or a background thread could not start.
    #[error("{0}")]
    Start(std::io::Error),
    /// Fleet mode could not start.
    #[error("fleet mode: {0}")]
    Fleet(#[from] crate::fleet::FleetError),
    /// The final snapshot task died.
    #[error("the state writer panicked: {0}")]
    Shutdown(String),
}

/// The running service.
#[derive(Debug)]
pub struct App {
    interceptor: Arc<Interceptor>,
    server: Server,
    triggers: Triggers,
    upkeep: Upkeep,
    persist: Option<PersistHandle>,
    fleet: Option<Fleet>,
}

impl App {
    /// Loads the rules, recovers persisted state, and starts listeners, reload triggers and
    /// upkeep. Must be called inside a tokio runtime.
    pub async fn start(config: Config) -> Result<App, AppError> {
        let Config {
            rules: rules_path,
            store: store_config,
            serve,
            state_dir,
            triggers: mut trigger_config,
            upkeep: upkeep_config,
            workers: _,
            fleet: fleet_config,
            max_entities,
        } = config;
        let live = load_rules(&rules_path, &store_config, &serve)?;
        let metrics = Arc::new(Metrics::new());
        // Fleet mode learns the fleet's transaction-hash keys before any state is loaded.
        let joining = match fleet_config {
            Some(f) => Some(Fleet::connect(f, Arc::clone(&metrics)).await?),
            None => None,
        };
        let mut store = Store::new(store_config);
        store.set_max_entities(max_entities);
        if let Some(j) = &joining {
            store.set_txn_keys(j.txn_keys);
        }
        let mut joining = joining;
        let persistence = match state_dir {
            Some(dir) => {
                let position = joining.as_mut().map(|j| {
                    // Snapshot files are staged beside the state, not in a tmpfs.
                    j.stage_in(&dir);
                    Arc::clone(&j.position)
                });
                let (persistence, report) = recover(dir, &live, &mut store, position.clone())?;
                if let (Some(position), Some(at)) = (position, report.position) {
                    position.store(at, std::sync::atomic::Ordering::Release);
                }
                metrics.record_recovery(&report);
                Some(persistence)
            }
            None => None,
        };
        if let Some(j) = &joining
            && store.txn_keys() != j.txn_keys
        {
            return Err(crate::fleet::FleetError::ForeignState.into());
        }
        let mut interceptor = Interceptor::new(store, live);
        if let Some(p) = &persistence {
            interceptor = interceptor.with_journal(p.journal());
        }
        if let Some(j) = &joining {
            interceptor = interceptor.with_change_sink(j.queue.clone());
        }
        let interceptor = Arc::new(interceptor);
        let persist = persistence
            .map(|p| p.start(Arc::clone(&interceptor)))
            .transpose()?;
        let mut reloader = Reloader::new(Arc::clone(&interceptor), Some(rules_path), metrics);
        if joining.is_some() {
            // The fleet's bucket is the one source of rules; see `fleet::rules`.
            reloader = reloader.fleet_managed();
            trigger_config.watch = false;
        }
        let reloader = Arc::new(reloader);
        let fleet =
            joining.map(|j| Fleet::start(j, Arc::clone(&interceptor), Arc::clone(&reloader)));
        let proxy = serve
            .proxy
            .as_ref()
            .map(|p| (p.upstream.to_string(), p.routes.len()));
        // The triggers (with their SIGHUP handler) and upkeep start before the listeners: once
        // the server logs that it listens, a SIGHUP reloads instead of ending the process.
        let triggers =
            Triggers::start(Arc::clone(&reloader), &trigger_config).map_err(AppError::Start)?;
        let upkeep = Upkeep::start(Arc::clone(&interceptor), &upkeep_config)
            .map_err(|e| AppError::Start(annotate(e, "cannot start the upkeep thread")))?;
        let server =
            Server::serve_fleet(serve, reloader, fleet.as_ref().map(|f| f.handles().clone()))
                .await?;
        let live = interceptor.rules().load();
        match &proxy {
            Some((upstream, routes)) => tracing::info!(
                rules_version = %live.version.label,
                rules = live.set.rules().len(),
                mode = "reverse proxy",
                %upstream,
                routes,
                "tripwire ready: payments on {} are decided, then forwarded to {upstream}{}",
                server.payment_addr(),
                if *routes == 0 {
                    " (no routes: JSON POSTs naming a transaction_id and customer_id are decided, the rest passes through)"
                } else {
                    ""
                }
            ),
            None => tracing::info!(
                rules_version = %live.version.label,
                rules = live.set.rules().len(),
                mode = "decision API",
                "tripwire ready: POST /v1/decide on {}",
                server.payment_addr()
            ),
        }
        Ok(App {
            interceptor,
            server,
            triggers,
            upkeep,
            persist,
            fleet,
        })
    }

    /// The bound payment address.
    pub fn payment_addr(&self) -> SocketAddr {
        self.server.payment_addr()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.server.admin_addr()
    }

    /// Fleet mode's replication progress, when fleet mode is on.
    pub fn fleet(&self) -> Option<&Arc<crate::fleet::FleetStatus>> {
        self.fleet.as_ref().map(|f| f.status())
    }

    /// The interceptor serving decisions.
    pub fn interceptor(&self) -> &Arc<Interceptor> {
        &self.interceptor
    }

    /// Stops accepting, lets requests in flight finish within the grace period, stops the
    /// triggers and upkeep, and writes the final snapshot when state persists.
    pub async fn shutdown(self) -> Result<(), AppError> {
        self.server.shutdown().await;
        self.triggers.stop().await;
        self.upkeep.stop();
        if let Some(fleet) = self.fleet {
            fleet.stop().await;
        }
        if let Some(persist) = self.persist {
            tracing::info!("writing state");
            let interceptor = self.interceptor;
            tokio::task::spawn_blocking(move || persist.shutdown(interceptor.store()))
                .await
                .map_err(|e| AppError::Shutdown(e.to_string()))??;
        }
        Ok(())
    }
}

fn annotate(e: std::io::Error, what: &str) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Loads the rules file with the evaluation budget `serve` applies to every rule set.
fn load_rules(
    path: &std::path::Path,
    store: &crate::state::StoreConfig,
    serve: &ServeConfig,
) -> Result<LiveRules, AppError> {
    let refused = |e: RulesError| AppError::Rules {
        path: path.display().to_string(),
        report: rules::problem_report(path, &e),
    };
    let bytes = rules::read_file(path).map_err(refused)?;
    let budget = EvalBudget {
        ring_capacity: store.ring_capacity,
        max_cost: serve.eval_budget,
    };
    LiveRules::with_budget(&bytes, &path.display().to_string(), Some(budget)).map_err(refused)
}

/// Recovers persisted state into `store`; monthly buckets follow the live rules' zone.
fn recover(
    dir: std::path::PathBuf,
    live: &LiveRules,
    store: &mut Store,
    position: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> Result<(Persistence, RecoveryReport), AppError> {
    let mut persist_config = PersistConfig::new(dir);
    persist_config.position = position;
    let rules_now = live.load_full();
    if rules_now.set.needs.months {
        let zone = rules_now.set.zone.clone();
        persist_config.month_of = Some(Arc::new(move |at| zone.month_of(at)));
    }
    Ok(Persistence::recover(persist_config, store)?)
}

/// Runs `tripwire serve` to completion: builds the runtime, starts the [`App`], waits for
/// SIGINT or SIGTERM, and shuts down.
pub fn serve(mut config: Config) -> Result<(), AppError> {
    config.serve.admin_token = config::admin_token_from_env()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = config.workers {
        runtime.worker_threads(n);
    }
    let runtime = runtime
        .build()
        .map_err(|e| AppError::Start(annotate(e, "cannot start the async runtime")))?;
    runtime.block_on(async move {
        // Listen for the stop signals before anything starts: a SIGTERM that arrives while the
        // service is starting (a fast rollout) then stops it gracefully instead of killing it.
        let stop = StopSignals::listen();
        let app = App::start(config).await?;
        stop.wait().await;
        tracing::info!("shutting down");
        app.shutdown().await
    })
}

/// SIGINT and SIGTERM, registered when created.
struct StopSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            StopSignals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            let (mut interrupt, mut terminate) = (self.interrupt, self.terminate);
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let terminated = async {
                match terminate.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = interrupted => {},
                _ = terminated => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
