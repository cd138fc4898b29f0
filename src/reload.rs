//! Reloading the rules, one owner per step:
//!
//! - **triggers** raise a reload: the rules file changing on disk ([`watch_file`]), SIGHUP, and
//!   `PUT /admin/rules` / `POST /admin/rules/rollback` (the admin listener calls the
//!   [`Reloader`] directly). [`Triggers`] runs the first two until stopped.
//! - the **[`Reloader`]** is the one reload path: read → compile off the async workers → swap
//!   into [`LiveRules`](crate::live_rules::LiveRules) → count and log. It answers with a domain [`ReloadOutcome`] or
//!   [`ReloadError`]; the HTTP layer maps those to status codes, this module knows no HTTP.
//! - the live set itself, with its versions, history and rollback, is
//!   [`crate::live_rules`].
//!
//! A refused rule set never changes what is live: the refusal is recorded in the history and
//! counted, and the old set keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::interceptor::Interceptor;
use crate::live_rules::{LoadedRules, Refusal, RollbackError};
use crate::metrics::Metrics;
use crate::rules::sha256_hex;
use crate::rules::{self, RulesError};

/// What started a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// The rules file changed on disk.
    File,
    /// SIGHUP.
    Signal,
    /// `PUT /admin/rules`.
    Api,
    /// `POST /admin/rules/rollback`.
    Rollback,
    /// Fleet mode: a new value in the fleet's rules bucket (`tripwire rules push`).
    Fleet,
}

impl ReloadTrigger {
    /// The trigger's label value in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::File => "file",
            ReloadTrigger::Signal => "sighup",
            ReloadTrigger::Api => "api",
            ReloadTrigger::Rollback => "rollback",
            ReloadTrigger::Fleet => "fleet",
        }
    }
}

/// What an accepted reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new version is live.
    Installed(Arc<LoadedRules>),
    /// The text is the live one already; nothing changed.
    Unchanged(Arc<LoadedRules>),
}

impl ReloadOutcome {
    /// The rule set live after the reload.
    pub fn live(&self) -> &Arc<LoadedRules> {
        match self {
            ReloadOutcome::Installed(l) | ReloadOutcome::Unchanged(l) => l,
        }
    }
}

/// Why a reload or rollback changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A reload from the file was asked for, but the rules came from elsewhere.
    #[error("no rules file to reload from")]
    NoRulesFile,
    /// The rules text is larger than [`rules::MAX_RULES_BYTES`].
    #[error("rules are larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The rules were refused (unreadable, invalid, over budget); the live set keeps serving.
    #[error("{}", .0.error)]
    Refused(Refusal),
    /// No earlier good version to roll back to.
    #[error(transparent)]
    Rollback(#[from] RollbackError),
    /// The compile task died (a bug).
    #[error("the reload task failed: {0}")]
    Task(String),
    /// Fleet mode: rules change only through the fleet's bucket.
    #[error(
        "this replica runs in fleet mode: the rules come from the fleet's bucket; use `tripwire rules push --nats URL FILE` (or `tripwire rules rollback --nats URL`)"
    )]
    FleetManaged,
}

/// The one reload path, shared by every trigger.
#[derive(Debug)]
pub struct Reloader {
    interceptor: Arc<Interceptor>,
    rules_path: Option<PathBuf>,
    metrics: Arc<Metrics>,
    /// Fleet mode: only [`ReloadTrigger::Fleet`] may change the rules.
    fleet_managed: bool,
}

impl Reloader {
    /// Reloads into `interceptor`'s live rules, from `rules_path` when no text is given.
    pub fn new(
        interceptor: Arc<Interceptor>,
        rules_path: Option<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        Reloader {
            interceptor,
            rules_path,
            metrics,
            fleet_managed: false,
        }
    }

    /// Fleet mode: refuses every trigger but the fleet's bucket ([`ReloadError::FleetManaged`]),
    /// so replicas never drift apart through a local edit.
    pub fn fleet_managed(mut self) -> Reloader {
        self.fleet_managed = true;
        self
    }

    /// The interceptor whose rules this reloads.
    pub fn interceptor(&self) -> &Arc<Interceptor> {
        &self.interceptor
    }

    /// The metrics reloads are counted in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The rules file reloads read, when there is one.
    pub fn rules_path(&self) -> Option<&Path> {
        self.rules_path.as_deref()
    }

    /// Reloads the rules from `text`, or from the rules file when `text` is `None`. Parsing
    /// and compiling run on the blocking pool, never on the async workers; a refused set
    /// changes nothing but the history and the refusal counter.
    pub async fn reload(
        &self,
        trigger: ReloadTrigger,
        text: Option<Bytes>,
    ) -> Result<ReloadOutcome, ReloadError> {
        if self.fleet_managed && trigger != ReloadTrigger::Fleet {
            warn!(
                trigger = trigger.as_str(),
                "rules change refused: in fleet mode rules change only with `tripwire rules push`"
            );
            return Err(ReloadError::FleetManaged);
        }
        let (bytes, source) = match text {
            Some(bytes) if trigger == ReloadTrigger::Fleet => {
                (bytes, "fleet rules bucket".to_string())
            }
            Some(bytes) => (bytes, "PUT /admin/rules".to_string()),
            None => {
                let Some(path) = self.rules_path.clone() else {
                    return Err(ReloadError::NoRulesFile);
                };
                let source = path.display().to_string();
                let read = tokio::task::spawn_blocking(move || rules::read_file(&path))
                    .await
                    .map_err(|e| ReloadError::Task(e.to_string()))?;
                match read {
                    Ok(bytes) => (Bytes::from(bytes), source),
                    Err(e) => return Err(self.refuse(trigger, &source, &[], &e)),
                }
            }
        };
        let live = self.interceptor.rules().load_full();
        if sha256_hex(&bytes) == live.version.sha256 {
            return Ok(ReloadOutcome::Unchanged(live));
        }
        let replaces_pushed_set =
            !matches!(trigger, ReloadTrigger::Api | ReloadTrigger::Fleet) && live.source != source;
        let interceptor = Arc::clone(&self.interceptor);
        let worker_source = source.clone();
        let installed = tokio::task::spawn_blocking(move || {
            interceptor.rules().install(&bytes, &worker_source)
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))?;
        match installed {
            Ok(loaded) => {
                self.metrics.record_reload(trigger, true);
                self.metrics.set_live_rules(&loaded);
                info!(
                    trigger = trigger.as_str(),
                    %source,
                    version = %loaded.version.label,
                    rules = loaded.set.rules().len(),
                    "rules reloaded"
                );
                if replaces_pushed_set {
                    warn!(
                        replaced = %live.version.label,
                        replaced_source = %live.source,
                        "the rules file replaced a rule set pushed through the admin API or rolled back to; the file is the source of truth"
                    );
                }
                Ok(ReloadOutcome::Installed(loaded))
            }
            // `install` recorded the refusal in the history already.
            Err(e) => Err(self.counted_refusal(trigger, &source, &e)),
        }
    }

    /// Refuses rules that could not even be offered for compiling (unreadable, oversized):
    /// records the refusal in the history, counts and logs it.
    pub fn refuse(
        &self,
        trigger: ReloadTrigger,
        source: &str,
        bytes: &[u8],
        e: &RulesError,
    ) -> ReloadError {
        self.interceptor.rules().record_refusal(source, bytes, e);
        self.counted_refusal(trigger, source, e)
    }

    fn counted_refusal(&self, trigger: ReloadTrigger, source: &str, e: &RulesError) -> ReloadError {
        self.metrics.record_reload(trigger, false);
        let refusal = Refusal::from_error(e);
        warn!(
            trigger = trigger.as_str(),
            %source,
            error = %refusal.problems.join("; "),
            "rules refused; the live rule set keeps serving"
        );
        match e {
            RulesError::TooLarge { .. } => ReloadError::TooLarge {
                limit: rules::MAX_RULES_BYTES,
            },
            _ => ReloadError::Refused(refusal),
        }
    }

    /// Rolls back to the previous good rule set.
    pub async fn rollback(&self) -> Result<Arc<LoadedRules>, ReloadError> {
        if self.fleet_managed {
            return Err(ReloadError::FleetManaged);
        }
        // Rolling back recompiles the earlier rule set: like an install, off the async workers.
        let interceptor = Arc::clone(&self.interceptor);
        let loaded = tokio::task::spawn_blocking(move || interceptor.rules().rollback())
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))??;
        self.metrics.record_reload(ReloadTrigger::Rollback, true);
        self.metrics.set_live_rules(&loaded);
        info!(version = %loaded.version.label, source = %loaded.source, "rules rolled back");
        Ok(loaded)
    }
}

/// How the process-level triggers run.
#[derive(Clone, Debug)]
pub struct TriggerConfig {
    /// Watch the rules file for changes.
    pub watch: bool,
    /// Quiet time after a file event before reloading.
    pub debounce: Duration,
}

impl Default for TriggerConfig {
    fn default() -> TriggerConfig {
        TriggerConfig {
            watch: true,
            debounce: Duration::from_millis(200),
        }
    }
}

/// The running file watch and SIGHUP triggers, feeding one reload loop.
#[derive(Debug)]
pub struct Triggers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _watcher: Option<FileWatcher>,
}

impl Triggers {
    /// Starts the triggers for `reloader`'s rules file (none when it has no file). Must be
    /// called inside a tokio runtime.
    pub fn start(reloader: Arc<Reloader>, config: &TriggerConfig) -> std::io::Result<Triggers> {
        let (stop, stopped) = watch::channel(false);
        let mut triggers = Triggers {
            stop,
            tasks: Vec::new(),
            _watcher: None,
        };
        let Some(path) = reloader.rules_path().map(Path::to_path_buf) else {
            return Ok(triggers);
        };
        let (raised, mut raised_rx) = mpsc::channel::<ReloadTrigger>(4);
        if config.watch {
            let file_raised = raised.clone();
            triggers._watcher = Some(
                watch_file(&path, config.debounce, move || {
                    // A full queue already holds a pending reload, which will read the latest
                    // file: dropping this one loses nothing.
                    let _ = file_raised.try_send(ReloadTrigger::File);
                })
                .map_err(|e| {
                    std::io::Error::other(format!("cannot watch {}: {e}", path.display()))
                })?,
            );
        }
        #[cfg(unix)]
        triggers
            .tasks
            .push(tokio::spawn(hangup_loop(raised, stopped.clone())));
        let mut reload_stopped = stopped;
        triggers.tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    trigger = raised_rx.recv() => match trigger {
                        // Refusals are counted and logged by the reloader.
                        Some(trigger) => { let _ = reloader.reload(trigger, None).await; }
                        None => break,
                    },
                    _ = reload_stopped.changed() => break,
                }
            }
        }));
        Ok(triggers)
    }

    /// Stops the triggers and waits for a reload in progress to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[cfg(unix)]
async fn hangup_loop(raised: mpsc::Sender<ReloadTrigger>, mut stopped: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; reload through the file or the admin API");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => {
                info!("SIGHUP: reloading rules");
                let _ = raised.send(ReloadTrigger::Signal).await;
            }
            _ = stopped.changed() => break,
        }
    }
}

/// A running watch of a rules file (see [`watch_file`]); dropping it stops the watch.
pub struct FileWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher").finish_non_exhaustive()
    }
}

/// Watches a rules file and calls `on_change` once changes have settled.
///
/// The file's directory is watched rather than the file, so that editors that save by writing
/// a temporary file and renaming it over the original, and Kubernetes ConfigMap updates (which
/// swap a `..data` symlink), are seen like an in-place write. When the path is a symlink, the
/// directory of its target is watched too. The callback re-reads the file and compares content
/// hashes, so a spurious event never changes the version. Events closer together than
/// `debounce` make one call.
pub fn watch_file(
    path: &std::path::Path,
    debounce: std::time::Duration,
    on_change: impl Fn() + Send + 'static,
) -> notify::Result<FileWatcher> {
    use notify::Watcher;
    use std::sync::mpsc;

    let absolute = std::path::absolute(path).map_err(notify::Error::io)?;
    let mut dirs = Vec::new();
    let mut names = Vec::new();
    for candidate in [
        Some(absolute.clone()),
        std::fs::canonicalize(&absolute).ok(),
    ]
    .into_iter()
    .flatten()
    {
        if let (Some(dir), Some(name)) = (candidate.parent(), candidate.file_name()) {
            if !dirs.iter().any(|d: &std::path::PathBuf| d == dir) {
                dirs.push(dir.to_path_buf());
            }
            names.push(name.to_os_string());
        }
    }
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })?;
    for dir in &dirs {
        watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    }
    let relevant = move |event: &notify::Event| {
        event.paths.iter().any(|p| {
            p.file_name().is_some_and(|n| {
                names.iter().any(|name| name == n) || n.to_string_lossy().starts_with("..")
            })
        })
    };
    std::thread::Builder::new()
        .name("rules-watch".into())
        .spawn(move || {
            while let Ok(event) = rx.recv() {
                let Ok(event) = event else { continue };
                if !relevant(&event) || event.kind.is_access() {
                    continue;
                }
                // Let a burst of events (write, chmod, rename...) settle into one reload.
                loop {
                    match rx.recv_timeout(debounce) {
                        Ok(_) => continue,
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                on_change();
            }
        })
        .map_err(notify::Error::io)?;
    Ok(FileWatcher { _watcher: watcher })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live_rules::LiveRules;
    use crate::state::{Store, StoreConfig};

    fn rules(n: u32) -> String {
        format!(
            "timezone: UTC\nrules:\n  - id: big_{n}\n    action: review\n    when: {{ amount: {{ at_least: \"{n}.00\" }} }}\n"
        )
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tripwire-reload-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn reloader(path: Option<PathBuf>) -> Reloader {
        let live = LiveRules::new(rules(1).as_bytes(), "start").unwrap();
        let interceptor = Arc::new(Interceptor::new(Store::new(StoreConfig::default()), live));
        Reloader::new(interceptor, path, Arc::new(Metrics::new()))
    }

    fn refusals(reloader: &Reloader, trigger: &str) -> bool {
        reloader
            .metrics()
            .render(reloader.interceptor().store(), None, 0)
            .lines()
            .any(|l| {
                l.starts_with(&format!(
                    "tripwire_rule_reloads_total{{trigger=\"{trigger}\",outcome=\"refused\"}} 1"
                ))
            })
    }

    #[tokio::test]
    async fn a_reload_from_the_file_installs_it_and_the_same_text_changes_nothing() {
        let path = temp_file("file", &rules(1));
        let reloader = reloader(Some(path.clone()));
        let same = reloader.reload(ReloadTrigger::Signal, None).await.unwrap();
        assert!(matches!(same, ReloadOutcome::Unchanged(_)));
        std::fs::write(&path, rules(2)).unwrap();
        let new = reloader.reload(ReloadTrigger::File, None).await.unwrap();
        assert!(matches!(new, ReloadOutcome::Installed(_)));
        assert_eq!(new.live().version.seq, 2);
        assert_eq!(new.live().source, path.display().to_string());
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[tokio::test]
    async fn a_refused_reload_names_the_problem_counts_it_and_keeps_the_live_set() {
        let path = temp_file("bad", "timezone: UTC\nrules:\n  - id: [\n");
        let reloader = reloader(Some(path.clone()));
        let err = reloader
            .reload(ReloadTrigger::File, None)
            .await
            .unwrap_err();
        let ReloadError::Refused(refusal) = err else {
            panic!("expected a refusal, got {err:?}");
        };
        assert_eq!(refusal.line, 3);
        assert_eq!(reloader.interceptor().rules().load().version.seq, 1);
        assert!(refusals(&reloader, "file"));
        let history = reloader.interceptor().rules().history();
        assert!(history[0].outcome.is_err(), "the refusal is in the history");
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[tokio::test]
    async fn a_missing_file_an_absent_path_and_oversized_text_are_refused() {
        let reloader_without_file = reloader(None);
        assert!(matches!(
            reloader_without_file
                .reload(ReloadTrigger::Signal, None)
                .await,
            Err(ReloadError::NoRulesFile)
        ));
        let missing = reloader(Some(PathBuf::from("/nonexistent/tripwire/rules.yaml")));
        assert!(matches!(
            missing.reload(ReloadTrigger::Signal, None).await,
            Err(ReloadError::Refused(_))
        ));
        assert!(refusals(&missing, "sighup"));
        let huge = Bytes::from(vec![b'#'; rules::MAX_RULES_BYTES + 1]);
        assert!(matches!(
            missing.reload(ReloadTrigger::Api, Some(huge)).await,
            Err(ReloadError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn rollback_needs_an_earlier_version_and_then_restores_it() {
        let reloader = reloader(None);
        assert!(matches!(
            reloader.rollback().await,
            Err(ReloadError::Rollback(RollbackError::NothingToRollBack))
        ));
        reloader
            .reload(ReloadTrigger::Api, Some(Bytes::from(rules(2))))
            .await
            .unwrap();
        let back = reloader.rollback().await.unwrap();
        assert_eq!(back.version.sha256, sha256_hex(rules(1).as_bytes()));
        assert_eq!(back.version.seq, 3);
    }
}
