//! Fleet mode: gateway replicas share customer state and rules through NATS JetStream.
//!
//! Without fleet settings nothing here runs and tripwire is one process. With them:
//!
//! - **publish** ([`publish`]): every change the interceptor makes to customer state — a
//!   decided transaction's event, a credit line, an outcome — is handed to a bounded queue
//!   ([`publish::ChangeQueue`], the core's `ChangeSink`) with one non-blocking try-push, and a
//!   task publishes the queue in batches to `<stream>.events.<partition>`. A full queue drops
//!   the change, counts it (`tripwire_fleet_dropped_total`) and logs; a decision never waits.
//! - **apply** ([`apply`]): one ordered consumer per replica reads the whole stream and applies
//!   the other replicas' changes through `Interceptor::apply_remote` (the journal's idempotent
//!   replay), in stream order, so a customer's changes arrive in the order they were made on
//!   each replica. Until it has applied everything the stream held at start, [`FleetStatus`]
//!   says not ready and `/readyz` answers 503 with the progress.
//! - **rules** ([`rules`]): the rule text lives in a KV bucket; `tripwire rules push` validates
//!   and puts it, every replica watches the bucket and installs through the one reload path.
//!
//! What is replicated are the journal frames (the inputs), never derived state: each replica
//! computes features from the events it holds. The payload is the journal's checksummed frame.
//!
//! Invariants: nothing in this module runs on the decision path except
//! `ChangeQueue::change` (the `ChangeSink` hand-off); a malformed message is counted
//! (`tripwire_fleet_rejected_total`) and skipped, never a panic; credentials never reach
//! `Debug`, logs or admin answers.

pub mod apply;
pub mod publish;
pub mod rules;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::interceptor::Interceptor;
use crate::metrics::Metrics;

/// Partitions of the event subjects: `<stream>.events.0` ... `<stream>.events.63`. Fixed, so
/// every replica maps a customer to the same subject; bounded, so the subject space stays
/// small. A future consumer that owns a share of the customers filters on its partitions.
pub const PARTITIONS: u32 = 64;

/// The header naming the replica (and its boot) that published a change.
pub const ORIGIN_HEADER: &str = "Tripwire-Origin";

/// The header naming a message for JetStream's duplicate detection.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// How a replica authenticates to NATS. `Debug` never shows a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum FleetAuth {
    /// No credentials.
    #[default]
    None,
    /// A token.
    Token(String),
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A `.creds` file (JWT and NKey seed).
    CredentialsFile(PathBuf),
}

impl std::fmt::Debug for FleetAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FleetAuth::None => f.write_str("None"),
            FleetAuth::Token(_) => f.write_str("Token(<redacted>)"),
            FleetAuth::UserPassword { user, .. } => {
                write!(f, "UserPassword {{ user: {user:?}, password: <redacted> }}")
            }
            FleetAuth::CredentialsFile(path) => write!(f, "CredentialsFile({path:?})"),
        }
    }
}

/// Fleet mode's settings, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    /// The NATS server, `nats://HOST:PORT` (or `tls://`).
    pub nats: String,
    /// The JetStream stream (and prefix of subjects and buckets).
    pub stream: String,
    /// This replica's name, unique in the fleet.
    pub replica: String,
    /// How to authenticate.
    pub auth: FleetAuth,
    /// A CA certificate (PEM) to trust for TLS to NATS.
    pub tls_ca: Option<PathBuf>,
    /// Changes queued for publishing at most; past it they are dropped and counted.
    pub queue_capacity: usize,
    /// Also publish decision-log lines to `<stream>.decisions` (stream `<stream>-decisions`).
    pub publish_decisions: bool,
    /// The stream keeps changes this long.
    pub max_age: Duration,
    /// The stream keeps at most this many bytes (oldest dropped first).
    pub max_bytes: u64,
    /// Longest time to reach NATS at start.
    pub connect_timeout: Duration,
    /// How often the fleet's state snapshot is renewed; zero: this replica never writes one
    /// (it still loads one to join). See [`snapshot`].
    pub snapshot_interval: Duration,
    /// Where snapshot files are staged on their way to and from the object store (the state
    /// directory when there is one, else the system's temporary directory).
    pub scratch_dir: PathBuf,
}

impl FleetConfig {
    /// Fleet settings for `nats` with every default: the stream `tripwire`, the host name as
    /// the replica name, a queue of 65,536 changes, 7 days or 1 GiB of stream.
    pub fn new(nats: impl Into<String>) -> FleetConfig {
        FleetConfig {
            nats: nats.into(),
            stream: "tripwire".into(),
            replica: host_name(),
            auth: FleetAuth::None,
            tls_ca: None,
            queue_capacity: 65_536,
            publish_decisions: false,
            max_age: Duration::from_secs(7 * 86_400),
            max_bytes: 1 << 30,
            connect_timeout: Duration::from_secs(10),
            snapshot_interval: Duration::from_secs(600),
            scratch_dir: std::env::temp_dir(),
        }
    }

    /// The subject of a customer's changes.
    pub fn event_subject(&self, customer: &str) -> String {
        format!("{}.events.{}", self.stream, partition(customer))
    }

    /// The subject decision-log lines go to.
    pub fn decisions_subject(&self) -> String {
        format!("{}.decisions", self.stream)
    }

    /// The stream decision lines are kept in (`publish_decisions`).
    pub fn decisions_stream(&self) -> String {
        format!("{}-decisions", self.stream)
    }

    /// The KV bucket holding the rules and the fleet's shared keys.
    pub fn bucket(&self) -> String {
        format!("{}-fleet", self.stream)
    }

    /// The object store holding the fleet's state snapshot.
    pub fn snapshot_bucket(&self) -> String {
        format!("{}-snapshots", self.stream)
    }
}

/// The host name, for the default replica name.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tripwire".into())
}

/// A customer's partition: FNV-1a of the id, mod [`PARTITIONS`]. Stable across versions and
/// replicas (it names subjects), unlike the store's seeded hash.
pub fn partition(customer: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in customer.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % PARTITIONS
}

/// Why fleet mode could not start or a fleet command failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// NATS could not be reached or refused the connection.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The server (without credentials).
        url: String,
        /// Why.
        message: String,
    },
    /// A JetStream call failed.
    #[error("JetStream: {what}: {message}")]
    JetStream {
        /// What was being done.
        what: &'static str,
        /// The client's message.
        message: String,
    },
    /// The local state was written with other transaction-hash keys than the fleet's.
    #[error(
        "the state directory was written outside this fleet (its transaction-hash keys differ from the fleet's); move it aside so the replica catches up from the stream"
    )]
    ForeignState,
    /// The pushed rules were refused.
    #[error("{0}")]
    Rules(String),
}

pub(crate) fn js_error(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> FleetError {
    move |e| FleetError::JetStream {
        what,
        message: e.to_string(),
    }
}

/// `url` without any user information (`nats://user:pass@host` → `nats://host`), for errors
/// and logs.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}<redacted>@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Connects to NATS with the configured authentication.
pub async fn connect(config: &FleetConfig) -> Result<async_nats::Client, FleetError> {
    let failed = |message: String| FleetError::Connect {
        url: redacted_url(&config.nats),
        message,
    };
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("tripwire {}", config.replica))
        .connection_timeout(config.connect_timeout)
        .max_reconnects(None);
    options = match &config.auth {
        FleetAuth::None => options,
        FleetAuth::Token(t) => options.token(t.clone()),
        FleetAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        FleetAuth::CredentialsFile(path) => options
            .credentials_file(path)
            .await
            .map_err(|e| failed(format!("credentials file {}: {e}", path.display())))?,
    };
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    tokio::time::timeout(
        config.connect_timeout,
        options.connect(config.nats.as_str()),
    )
    .await
    .map_err(|_| failed(format!("no answer within {:?}", config.connect_timeout)))?
    .map_err(|e| failed(e.to_string()))
}

/// Replication progress, read by `/readyz` and `/admin/fleet`.
#[derive(Debug, Default)]
pub struct FleetStatus {
    /// The replica's name.
    pub replica: String,
    caught_up: AtomicBool,
    rules_synced: AtomicBool,
    connected: AtomicBool,
    restoring: AtomicBool,
    /// The stream's last sequence when the replica started: catching up means applying to it.
    target: AtomicU64,
    /// The last stream sequence whose change the store holds; shared with the state directory's
    /// snapshots, which record it (see `PersistConfig::position`).
    applied: Arc<AtomicU64>,
    joined: parking_lot::Mutex<Option<snapshot::Joined>>,
    snapshot_written: AtomicU64,
}

impl FleetStatus {
    /// A status for `replica` whose store includes the stream up to `position` (0: nothing).
    pub fn new(replica: String, position: Arc<AtomicU64>) -> FleetStatus {
        FleetStatus {
            replica,
            applied: position,
            ..FleetStatus::default()
        }
    }

    /// Whether the replica has applied everything the stream held when it started, and
    /// installed (or refused) the rules the fleet's bucket held: it then decides as the
    /// others do.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire) && self.rules_synced.load(Ordering::Acquire)
    }

    pub(crate) fn set_rules_synced(&self) {
        self.rules_synced.store(true, Ordering::Release);
    }

    /// Whether the NATS connection is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether the fleet snapshot is being loaded.
    pub fn restoring(&self) -> bool {
        self.restoring.load(Ordering::Relaxed)
    }

    /// The last stream sequence applied (or skipped as this replica's own).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The sequence catching up must reach.
    pub fn target(&self) -> u64 {
        self.target.load(Ordering::Relaxed)
    }

    /// How this replica joined, once it has.
    pub fn joined(&self) -> Option<snapshot::Joined> {
        self.joined.lock().clone()
    }

    /// The sequence of the last fleet snapshot this replica stored (0: none).
    pub fn snapshot_written(&self) -> u64 {
        self.snapshot_written.load(Ordering::Relaxed)
    }

    pub(crate) fn set_applied(&self, sequence: u64) {
        self.applied.store(sequence, Ordering::Release);
        if sequence >= self.target() && self.joined.lock().is_some() {
            self.caught_up.store(true, Ordering::Release);
        }
    }

    pub(crate) fn set_target(&self, sequence: u64) {
        self.target.store(sequence, Ordering::Relaxed);
    }

    pub(crate) fn set_joined(&self, joined: snapshot::Joined) {
        *self.joined.lock() = Some(joined);
        if self.applied() >= self.target() {
            self.caught_up.store(true, Ordering::Release);
        }
    }

    pub(crate) fn set_restoring(&self, on: bool) {
        self.restoring.store(on, Ordering::Relaxed);
    }

    pub(crate) fn set_snapshot_written(&self, sequence: u64) {
        self.snapshot_written.store(sequence, Ordering::Relaxed);
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }
}

/// What the listeners need of fleet mode.
#[derive(Clone, Debug)]
pub struct FleetHandles {
    /// Replication progress, for `/readyz`.
    pub status: Arc<FleetStatus>,
    /// Where decision-log lines go too, with `publish_decisions`.
    pub decisions: Option<publish::DecisionPublisher>,
    /// Stores a fleet snapshot on request (`POST /admin/fleet/snapshot`).
    pub snapshots: SnapshotTaker,
}

/// What storing a fleet snapshot on request needs.
#[derive(Clone)]
pub struct SnapshotTaker {
    js: async_nats::jetstream::Context,
    config: FleetConfig,
    interceptor: Arc<Interceptor>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for SnapshotTaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTaker")
            .field("bucket", &self.config.snapshot_bucket())
            .finish_non_exhaustive()
    }
}

impl SnapshotTaker {
    /// Stores this replica's state as the fleet snapshot now, unless the stored one already
    /// includes as much of the stream (`None`).
    pub async fn take(
        &self,
        status: &FleetStatus,
    ) -> Result<Option<snapshot::SnapshotInfo>, FleetError> {
        snapshot::take(
            &self.js,
            &self.config,
            &self.interceptor,
            status,
            &self.metrics,
        )
        .await
    }

    /// The stored fleet snapshot, if any.
    pub async fn latest(&self) -> Option<snapshot::SnapshotInfo> {
        let store = snapshot::bucket(&self.js, &self.config).await.ok()?;
        snapshot::latest(&store).await
    }
}

/// The running fleet tasks of one replica.
#[derive(Debug)]
pub struct Fleet {
    handles: FleetHandles,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client: async_nats::Client,
}

/// What [`Fleet::connect`] hands back before the interceptor exists.
#[derive(Debug)]
pub struct Joining {
    config: FleetConfig,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    /// The fleet's transaction-hash keys (shared so a transaction id hashes alike everywhere).
    pub txn_keys: (u64, u64),
    /// The change queue the interceptor hands changes to.
    pub queue: Arc<publish::ChangeQueue>,
    receiver: tokio::sync::mpsc::Receiver<publish::QueuedChange>,
    start_sequence: u64,
    /// The stream sequence the store includes: set from the state directory's snapshot when
    /// there is one, then advanced by applying; the state directory's snapshots record it.
    pub position: Arc<AtomicU64>,
}

impl Joining {
    /// Stages snapshot files in `dir` (the state directory) rather than the temporary one.
    pub fn stage_in(&mut self, dir: &std::path::Path) {
        self.config.scratch_dir = dir.to_path_buf();
    }
}

impl Fleet {
    /// Connects, makes sure the stream and bucket exist, and learns the fleet's keys and the
    /// stream's last sequence (what catching up must reach).
    pub async fn connect(
        config: FleetConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Joining, FleetError> {
        let client = connect(&config).await?;
        let js = async_nats::jetstream::new(client.clone());
        let stream = js
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: config.stream.clone(),
                // Only changes: catching up reads this stream to its end, so nothing else may
                // be in it (decision lines have their own stream).
                subjects: vec![format!("{}.events.>", config.stream)],
                max_age: config.max_age,
                max_bytes: i64::try_from(config.max_bytes).unwrap_or(i64::MAX),
                duplicate_window: Duration::from_secs(120),
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| js_error("create the stream")(&e))?;
        // Catching up means reaching the last change held now; a stream whose changes have
        // all aged out holds nothing to catch up on, whatever its last sequence.
        let held = &stream.cached_info().state;
        let start_sequence = if held.messages == 0 {
            0
        } else {
            held.last_sequence
        };
        if config.publish_decisions {
            js.get_or_create_stream(async_nats::jetstream::stream::Config {
                name: config.decisions_stream(),
                subjects: vec![config.decisions_subject()],
                max_age: config.max_age,
                max_bytes: i64::try_from(config.max_bytes).unwrap_or(i64::MAX),
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| js_error("create the decisions stream")(&e))?;
        }
        let bucket = rules::bucket(&js, &config).await?;
        let txn_keys = rules::txn_keys(&bucket).await?;
        snapshot::bucket(&js, &config).await?;
        let (queue, receiver) = publish::ChangeQueue::new(&config, metrics);
        Ok(Joining {
            config,
            client,
            js,
            txn_keys,
            queue: Arc::new(queue),
            receiver,
            start_sequence,
            position: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Starts publishing, applying and watching the rules for `interceptor`.
    pub fn start(
        joining: Joining,
        interceptor: Arc<Interceptor>,
        reloader: Arc<crate::reload::Reloader>,
    ) -> Fleet {
        let Joining {
            config,
            client,
            js,
            queue,
            receiver,
            start_sequence,
            position,
            ..
        } = joining;
        let metrics = Arc::clone(reloader.metrics());
        let js_decisions = js.clone();
        let status = Arc::new(FleetStatus::new(config.replica.clone(), position));
        status.set_connected(true);
        status.set_target(start_sequence);
        let mut tasks = vec![
            tokio::spawn(publish::run(
                js.clone(),
                config.clone(),
                queue.boot().to_string(),
                receiver,
                Arc::clone(&metrics),
            )),
            tokio::spawn(apply::run(
                js.clone(),
                config.clone(),
                queue.boot().to_string(),
                Arc::clone(&interceptor),
                Arc::clone(&status),
                Arc::clone(&metrics),
            )),
            tokio::spawn(snapshot::renew(
                js.clone(),
                config.clone(),
                Arc::clone(&interceptor),
                Arc::clone(&status),
                Arc::clone(&metrics),
            )),
            tokio::spawn(rules::watch(
                js.clone(),
                config.clone(),
                reloader,
                Arc::clone(&status),
            )),
            tokio::spawn(watch_connection(
                client.clone(),
                Arc::clone(&status),
                Arc::clone(&metrics),
            )),
        ];
        tracing::info!(
            replica = %config.replica,
            stream = %config.stream,
            nats = %redacted_url(&config.nats),
            catch_up_to = start_sequence,
            "fleet mode: replicating customer state and rules through JetStream"
        );
        let decisions = config.publish_decisions.then(|| {
            let (publisher, task) =
                publish::DecisionPublisher::start(js_decisions, &config, Arc::clone(&metrics));
            tasks.push(task);
            publisher
        });
        let snapshots = SnapshotTaker {
            js: js.clone(),
            config: config.clone(),
            interceptor,
            metrics,
        };
        Fleet {
            handles: FleetHandles {
                status,
                decisions,
                snapshots,
            },
            tasks,
            client,
        }
    }

    /// Replication progress.
    pub fn status(&self) -> &Arc<FleetStatus> {
        &self.handles.status
    }

    /// What the listeners need.
    pub fn handles(&self) -> &FleetHandles {
        &self.handles
    }

    /// Stops the fleet tasks, giving the publisher a moment to flush its queue. (The queue's
    /// sender lives in the interceptor, which outlives this, so the publisher cannot be told
    /// to finish by closing it; what is still queued after the pause is lost, as in a crash,
    /// and the stream has everything acknowledged.)
    pub async fn stop(self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self.client.flush().await;
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Mirrors the connection state into the status and `tripwire_fleet_connected`.
async fn watch_connection(
    client: async_nats::Client,
    status: Arc<FleetStatus>,
    metrics: Arc<Metrics>,
) {
    let mut was = true;
    loop {
        let up = client.connection_state() == async_nats::connection::State::Connected;
        if up != was {
            if up {
                tracing::info!(
                    "fleet: NATS connection is back; queued changes are being published"
                );
            } else {
                tracing::warn!(
                    "fleet: NATS connection lost; decisions continue, changes queue up to the bound"
                );
            }
            was = up;
        }
        status.set_connected(up);
        metrics.fleet.connected.set(i64::from(up));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_bounded() {
        assert_eq!(partition("alice"), partition("alice"));
        assert!((0..1000).all(|i| partition(&format!("c{i}")) < PARTITIONS));
        let used: std::collections::BTreeSet<u32> =
            (0..1000).map(|i| partition(&format!("c{i}"))).collect();
        assert!(used.len() > 50, "customers spread over the partitions");
    }

    #[test]
    fn urls_lose_their_credentials_in_errors() {
        assert_eq!(
            redacted_url("nats://u:pw@h:4222"),
            "nats://<redacted>@h:4222"
        );
        assert_eq!(redacted_url("nats://h:4222"), "nats://h:4222");
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let mut c = FleetConfig::new("nats://127.0.0.1:4222");
        c.auth = FleetAuth::UserPassword {
            user: "svc".into(),
            password: "hunter2".into(),
        };
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2") && text.contains("svc"), "{text}");
        c.auth = FleetAuth::Token("s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
