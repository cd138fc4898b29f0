//! The fleet's state snapshot: where a joining replica starts, so catching up does not depend on
//! the stream still holding every change since the fleet began.
//!
//! One object, [`OBJECT`], in the object store `<stream>-snapshots`: the whole customer store in
//! the state directory's snapshot format (checksummed), labelled with the stream sequence it
//! includes (object metadata `sequence`, and the snapshot header). Any caught-up replica renews
//! it every `snapshot_interval` (with a per-replica offset, and only when the stored one is
//! older than half the interval, so a fleet writes about one per interval; two writing at once
//! is harmless: each is whole and consistent, the later replaces the earlier). A replica whose
//! position is older than the stored snapshot's sequence never overwrites it.
//!
//! Why it is consistent: the sequence is read before the store is walked, and every change up
//! to it was applied (or made here) before that; changes after it that the walk also caught are
//! applied again by the joiner from the stream, and applying is idempotent.
//!
//! Joining ([`join`]): a replica with a local position (its state directory's snapshot says
//! which sequence it includes) that the stream still continues resumes there; otherwise it loads
//! the fleet snapshot (replacing whatever partial local state it had) and reads the stream after
//! its sequence. What neither covers — changes aged out of the stream after the newest snapshot —
//! is counted (`tripwire_fleet_catchup_gap`), logged at ERROR and shown in `/admin/fleet`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use serde::Serialize;

use super::{FleetConfig, FleetError, FleetStatus, js_error};
use crate::interceptor::Interceptor;
use crate::metrics::Metrics;
use crate::state::persist;

/// The snapshot's object name.
pub const OBJECT: &str = "state";

/// Chunks of the object: under NATS's default 1 MiB message limit with room for headers.
const CHUNK_BYTES: usize = 512 * 1024;

/// What is known of a stored snapshot, from its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// The stream sequence it includes.
    pub sequence: u64,
    /// Customers in it.
    pub customers: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// The replica that wrote it.
    pub replica: String,
    /// When it was written (RFC 3339).
    pub taken_at: String,
    #[serde(skip)]
    taken_at_micros: i64,
}

/// Opens the snapshot object store, creating it the first time.
pub async fn bucket(js: &Context, config: &FleetConfig) -> Result<ObjectStore, FleetError> {
    if let Ok(store) = js.get_object_store(config.snapshot_bucket()).await {
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: config.snapshot_bucket(),
        description: Some("tripwire fleet state snapshot: where a joining replica starts".into()),
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| js_error("create the snapshot object store")(&e))
}

/// The stored snapshot's description, or `None` when there is none (or it is unreadable).
pub async fn latest(store: &ObjectStore) -> Option<SnapshotInfo> {
    let info = store.info(OBJECT).await.ok()?;
    if info.deleted {
        return None;
    }
    let number = |key: &str| info.metadata.get(key).and_then(|v| v.parse::<i64>().ok());
    let taken_at_micros = number("taken_at_us").unwrap_or(0);
    Some(SnapshotInfo {
        sequence: u64::try_from(number("sequence")?).ok()?,
        customers: number("customers")
            .and_then(|c| u64::try_from(c).ok())
            .unwrap_or(0),
        bytes: info.size as u64,
        replica: info.metadata.get("replica").cloned().unwrap_or_default(),
        taken_at: jiff::Timestamp::from_microsecond(taken_at_micros)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        taken_at_micros,
    })
}

/// A scratch file's path, unique to this process and moment.
fn scratch_file(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!(
        "fleet-{what}-{}-{}.tmp",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ))
}

/// Removes a scratch file when dropped, whatever happened.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> FleetError {
    move |e| FleetError::JetStream {
        what,
        message: e.to_string(),
    }
}

/// Writes this replica's store as the fleet snapshot, unless the stored one already includes
/// as much of the stream. Returns what was stored, or `None` when it was left alone.
pub async fn take(
    js: &Context,
    config: &FleetConfig,
    interceptor: &Arc<Interceptor>,
    status: &FleetStatus,
    metrics: &Metrics,
) -> Result<Option<SnapshotInfo>, FleetError> {
    let started = Instant::now();
    let store = bucket(js, config).await?;
    // Read before the walk: the store then holds every change up to this sequence.
    let sequence = status.applied();
    if latest(&store).await.is_some_and(|s| s.sequence >= sequence) {
        return Ok(None);
    }
    let scratch = Scratch(scratch_file(&config.scratch_dir, "snapshot-out"));
    let customers = {
        let path = scratch.0.clone();
        let interceptor = Arc::clone(interceptor);
        tokio::task::spawn_blocking(move || {
            persist::export_snapshot(&path, interceptor.store(), sequence)
        })
        .await
        .map_err(|e| FleetError::JetStream {
            what: "write the snapshot",
            message: e.to_string(),
        })?
        .map_err(|e| FleetError::JetStream {
            what: "write the snapshot",
            message: e.to_string(),
        })?
    };
    let taken_at = jiff::Timestamp::now();
    let mut file = tokio::fs::File::open(&scratch.0)
        .await
        .map_err(io_error("read the snapshot file"))?;
    let metadata = HashMap::from([
        ("sequence".to_string(), sequence.to_string()),
        ("customers".to_string(), customers.to_string()),
        ("replica".to_string(), config.replica.clone()),
        (
            "taken_at_us".to_string(),
            taken_at.as_microsecond().to_string(),
        ),
    ]);
    let stored = store
        .put(
            ObjectMetadata {
                name: OBJECT.into(),
                description: Some(format!(
                    "tripwire state: {customers} customers through stream sequence {sequence}"
                )),
                chunk_size: Some(CHUNK_BYTES),
                metadata,
                headers: None,
            },
            &mut file,
        )
        .await
        .map_err(|e| js_error("store the snapshot")(&e))?;
    metrics.fleet.snapshots_written.inc();
    status.set_snapshot_written(sequence);
    let info = SnapshotInfo {
        sequence,
        customers,
        bytes: stored.size as u64,
        replica: config.replica.clone(),
        taken_at: taken_at.to_string(),
        taken_at_micros: taken_at.as_microsecond(),
    };
    tracing::info!(
        sequence,
        customers,
        bytes = info.bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "fleet: state snapshot stored"
    );
    Ok(Some(info))
}

/// Renews the fleet snapshot every `snapshot_interval`, forever (nothing when it is zero).
pub async fn renew(
    js: Context,
    config: FleetConfig,
    interceptor: Arc<Interceptor>,
    status: Arc<FleetStatus>,
    metrics: Arc<Metrics>,
) {
    let every = config.snapshot_interval;
    if every.is_zero() {
        return;
    }
    // Replicas started together spread their checks over the interval.
    let offset = every.mul_f64(f64::from(super::partition(&config.replica)) / 64.0 / 2.0);
    tokio::time::sleep(offset).await;
    loop {
        tokio::time::sleep(every).await;
        if !status.caught_up() {
            continue;
        }
        let fresh = match bucket(&js, &config).await {
            Ok(store) => latest(&store).await.is_some_and(|s| {
                let age = jiff::Timestamp::now().as_microsecond() - s.taken_at_micros;
                age >= 0 && (age as u128) < (every / 2).as_micros()
            }),
            Err(_) => false,
        };
        if fresh {
            continue;
        }
        if let Err(e) = take(&js, &config, &interceptor, &status, &metrics).await {
            tracing::warn!(error = %e, "fleet: the state snapshot could not be stored; the previous one stays");
        }
    }
}

/// How a replica joined: where its state came from and what it could not recover.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Joined {
    /// `local state` (its state directory), `fleet snapshot`, or `stream` (from the start).
    pub from: &'static str,
    /// The stream sequence its state included when it started reading the stream.
    pub position: u64,
    /// Customers loaded from the fleet snapshot.
    pub snapshot_customers: u64,
    /// Time spent loading the fleet snapshot, milliseconds.
    pub snapshot_ms: u64,
    /// Changes that had aged out of the stream and were in no snapshot: lost to this replica.
    pub gap: u64,
}

/// Decides where this replica's state starts and loads the fleet snapshot when that is the
/// best start. `status.applied()` holds the local position on entry (0 without one) and the
/// position to read the stream after on return.
pub async fn join(
    js: &Context,
    config: &FleetConfig,
    interceptor: &Arc<Interceptor>,
    status: &FleetStatus,
    metrics: &Metrics,
) -> Result<Joined, FleetError> {
    let mut stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| js_error("open the stream")(&e))?;
    let held = stream
        .info()
        .await
        .map_err(|e| js_error("read the stream's state")(&e))?
        .state
        .clone();
    // The changes after `p` the stream no longer holds.
    // (An empty stream that held changes reports its first sequence as its last plus one.)
    let missing_after = |p: u64| held.first_sequence.saturating_sub(p + 1);
    let local = status.applied();
    let mut joined = Joined {
        from: "stream",
        position: local,
        ..Joined::default()
    };
    if local > 0 && missing_after(local) == 0 {
        joined.from = "local state";
    } else {
        let store = bucket(js, config).await?;
        if let Some(info) = latest(&store).await.filter(|s| s.sequence > local) {
            status.set_restoring(true);
            let started = Instant::now();
            let loaded = restore(&store, config, interceptor).await;
            status.set_restoring(false);
            let loaded = loaded?;
            joined.from = "fleet snapshot";
            joined.position = loaded.position;
            joined.snapshot_customers = loaded.customers;
            joined.snapshot_ms = started.elapsed().as_millis() as u64;
            status.set_applied(loaded.position);
            tracing::info!(
                sequence = loaded.position,
                customers = loaded.customers,
                bytes = info.bytes,
                written_by = %info.replica,
                elapsed_ms = joined.snapshot_ms,
                "fleet: state loaded from the fleet snapshot; reading the stream after it"
            );
        } else if local > 0 {
            joined.from = "local state";
        }
    }
    joined.gap = missing_after(joined.position);
    if joined.gap > 0 {
        metrics.fleet.catchup_gap.set(joined.gap as i64);
        tracing::error!(
            position = joined.position,
            stream_first = held.first_sequence,
            lost = joined.gap,
            "fleet: changes aged out of the stream after the newest state this replica could load; they are lost to it (renew snapshots more often than the stream's limits drop changes)"
        );
    }
    status.set_joined(joined.clone());
    Ok(joined)
}

/// Downloads the fleet snapshot to a scratch file and loads it, replacing the store's contents.
async fn restore(
    store: &ObjectStore,
    config: &FleetConfig,
    interceptor: &Arc<Interceptor>,
) -> Result<persist::ImportedSnapshot, FleetError> {
    let scratch = Scratch(scratch_file(&config.scratch_dir, "snapshot-in"));
    {
        let mut object = store
            .get(OBJECT)
            .await
            .map_err(|e| js_error("fetch the snapshot")(&e))?;
        let mut file = tokio::fs::File::create(&scratch.0)
            .await
            .map_err(io_error("stage the snapshot"))?;
        tokio::io::copy(&mut object, &mut file)
            .await
            .map_err(io_error("fetch the snapshot"))?;
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(io_error("stage the snapshot"))?;
    }
    let path = scratch.0.clone();
    let interceptor = Arc::clone(interceptor);
    tokio::task::spawn_blocking(move || {
        let store = interceptor.store();
        // A partial local state (older than the stream reaches back) is replaced whole: the
        // snapshot and the stream after it hold everything it held that the fleet kept.
        if store.customers() > 0 {
            store.clear();
        }
        persist::import_snapshot(&path, store)
    })
    .await
    .map_err(|e| FleetError::JetStream {
        what: "load the snapshot",
        message: e.to_string(),
    })?
    .map_err(|message| FleetError::JetStream {
        what: "load the snapshot",
        message,
    })
}

/// Keeps retrying `join` until it succeeds (NATS may be briefly away at start).
pub(crate) async fn join_until_done(
    js: &Context,
    config: &FleetConfig,
    interceptor: &Arc<Interceptor>,
    status: &FleetStatus,
    metrics: &Metrics,
) {
    loop {
        match join(js, config, interceptor, status, metrics).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: could not join yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
