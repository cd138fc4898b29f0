//! State that survives restarts: periodic snapshots of the whole store plus the journal of
//! every change since, in `--state-dir`.
//!
//! - The journal (see [`super::journal`]) is written every 100 ms and fsynced every second, so
//!   a crash of the process loses at most the changes of the last 100 ms that were not yet
//!   handed to the kernel, and a crash of the machine at most the last second.
//! - A snapshot is taken every 5 minutes (or when the journal passes 256 MiB) and at graceful
//!   shutdown: the journal is rotated, the store is walked one shard at a time, and the file is
//!   written to a temporary name, fsynced, renamed into place and read back to verify its
//!   checksum. Only then are old files deleted, and one generation is kept behind: the
//!   previous snapshot and every journal after it stay until the next snapshot verifies, so a
//!   damaged newest snapshot falls back to the previous one plus those journals and loses
//!   nothing. A snapshot that does not verify is moved to `corrupt/` and nothing is deleted.
//! - Every file starts with a magic, a format version and the generation, and ends (snapshot)
//!   or is framed (journal) with CRC-32 checksums. A corrupt, truncated or foreign file is
//!   detected, logged and moved aside to `corrupt/`; start goes on with what is valid, and a
//!   snapshot is applied whole or not at all.
//! - A journal whose header is sound is replayed frame by frame: a damaged frame is skipped and
//!   replay resynchronises on the next valid one ([`journal::scan`]). Damage is logged at ERROR
//!   with its counts, reported ([`RecoveryReport::damaged_journals`]), and the file is copied to
//!   `corrupt/` while the original stays in place, since its good frames are needed until the
//!   next snapshot covers them. An incomplete last frame (a crash while writing) is expected:
//!   it is counted ([`RecoveryReport::torn_bytes`]) and logged at WARN, nothing more.
//! - Journal generations are consecutive. One missing between the snapshot loaded and the
//!   newest journal means its changes are lost: it is logged at ERROR and reported
//!   ([`RecoveryReport::missing_journals`]).

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::entity::EntityKind;
use super::journal::{self, Frame, Journal};
use super::months::{MONTHS, MonthBucket, MonthBuckets};
use super::{CustomerRecord, Event, Store};
use crate::txn::{Amount, CreditLine};

mod snapshot;

use snapshot::{check_snapshot, load_snapshot, write_snapshot};

const SNAPSHOT_MAGIC: &[u8; 8] = b"TRIPWSNP";
const SNAPSHOT_END: &[u8; 8] = b"TWSNPEND";
const JOURNAL_MAGIC: &[u8; 8] = b"TRIPWJNL";
/// Format version written. Version 2 adds each customer's calendar-month buckets; version 3
/// adds the entities (merchants, devices, IPs, channels) before the customers; version 4 has
/// version 3's layout but keeps 43 bits of each event's transaction hash (28-byte events), so
/// a build that reads only up to version 3, which compares full hashes, refuses its files
/// rather than misreading them. Versions 1 to 3 are still read (their full hashes keep their
/// low 43 bits).
const FORMAT_VERSION: u32 = 4;
/// Oldest format version read.
const OLDEST_VERSION_READ: u32 = 1;
const SNAPSHOT_HEADER_LEN: usize = 8 + 4 + 8 + 16 + 4;
const SNAPSHOT_TRAILER_LEN: usize = 8 + 4 + 8;
const JOURNAL_HEADER_LEN: usize = 8 + 4 + 8 + 16 + 4;

/// Persistence settings.
#[derive(Clone)]
pub struct PersistConfig {
    /// The state directory.
    pub dir: PathBuf,
    /// How often the journal buffer is written to the file.
    pub flush_interval: Duration,
    /// How often the journal file is fsynced.
    pub fsync_interval: Duration,
    /// How often a snapshot is taken.
    pub snapshot_interval: Duration,
    /// Journal size that triggers a snapshot before the interval.
    pub snapshot_after_bytes: u64,
    /// The calendar month of an event time, when the rules keep monthly buckets: replayed
    /// events and failures update them as live ones do.
    pub month_of: Option<Arc<dyn Fn(i64) -> i32 + Send + Sync>>,
    /// A position in an outside log that the state is known to include (fleet mode: the last
    /// stream sequence applied). Read before each snapshot walks the store and written beside
    /// it (`snapshot-N.pos`), so recovery can say where to resume reading that log
    /// ([`RecoveryReport::position`]).
    pub position: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for PersistConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistConfig")
            .field("dir", &self.dir)
            .field("flush_interval", &self.flush_interval)
            .field("fsync_interval", &self.fsync_interval)
            .field("snapshot_interval", &self.snapshot_interval)
            .field("snapshot_after_bytes", &self.snapshot_after_bytes)
            .field("month_of", &self.month_of.is_some())
            .field("position", &self.position)
            .finish()
    }
}

impl PersistConfig {
    /// Defaults: flush every 100 ms, fsync every second, snapshot every 5 minutes or 256 MiB.
    pub fn new(dir: PathBuf) -> PersistConfig {
        PersistConfig {
            dir,
            flush_interval: Duration::from_millis(100),
            fsync_interval: Duration::from_secs(1),
            snapshot_interval: Duration::from_secs(300),
            snapshot_after_bytes: 256 * 1024 * 1024,
            month_of: None,
            position: None,
        }
    }
}

/// A persistence failure that stops start or shutdown.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Another process holds the state directory.
    #[error("the state directory {0} is in use by another tripwire")]
    Locked(String),
    /// A snapshot just written did not read back whole; it was moved aside and nothing older
    /// was deleted.
    #[error(
        "the snapshot {path} did not verify after writing ({reason}); the previous generation is kept"
    )]
    Unverified {
        /// The snapshot.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> PersistError + 'a {
    move |source| PersistError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// What recovery found and did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Generation and customers of the snapshot loaded, if any.
    pub snapshot: Option<(u64, u64)>,
    /// Journals replayed.
    pub journals: usize,
    /// Journal frames applied.
    pub frames: u64,
    /// Bytes of incomplete frames at the end of journals, ignored: what a crash while writing
    /// leaves, expected.
    pub torn_bytes: u64,
    /// Journals with damaged frames, each replayed around its damage and copied to `corrupt/`.
    pub damaged_journals: Vec<JournalDamage>,
    /// Frames skipped as damaged over every journal (estimated from the frame headers in the
    /// damaged regions, at least one a region).
    pub damaged_frames: u64,
    /// Bytes skipped as damaged over every journal.
    pub damaged_bytes: u64,
    /// Journal generations missing between the snapshot loaded (or the first journal) and the
    /// newest journal: the changes they held are lost.
    pub missing_journals: Vec<RangeInclusive<u64>>,
    /// Files moved aside as corrupt, truncated or foreign.
    pub moved_aside: Vec<PathBuf>,
    /// Time taken.
    pub elapsed: Duration,
    /// The outside-log position (see [`PersistConfig::position`]) written with the snapshot
    /// loaded: the state includes everything up to it. `None` without a snapshot or without a
    /// readable position file.
    pub position: Option<u64>,
}

impl RecoveryReport {
    /// How many journal generations are missing.
    pub fn missing_journal_count(&self) -> u64 {
        self.missing_journals
            .iter()
            .map(|r| (r.end() - r.start()).saturating_add(1))
            .fold(0, u64::saturating_add)
    }
}

/// A journal whose frames were damaged in places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalDamage {
    /// The journal, left in place.
    pub path: PathBuf,
    /// Its copy in `corrupt/`, unless copying failed.
    pub copy: Option<PathBuf>,
    /// Frames applied from it.
    pub frames_applied: u64,
    /// Damaged regions skipped.
    pub regions: usize,
    /// Frames skipped (estimated: see [`journal::Damaged::frames`]).
    pub frames_skipped: u64,
    /// Bytes skipped.
    pub bytes_skipped: u64,
}

/// State persistence for one state directory, recovered and ready to start.
pub struct Persistence {
    config: PersistConfig,
    journal: Arc<Journal>,
    next_generation: u64,
    keys: (u64, u64),
    _lock: File,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("dir", &self.config.dir)
            .field("next_generation", &self.next_generation)
            .finish_non_exhaustive()
    }
}

fn generation_of(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

fn snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation:020}.bin"))
}

fn position_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation:020}.pos"))
}

/// Writes the position file of snapshot `generation` (temporary name, fsync, rename).
fn write_position(dir: &Path, generation: u64, position: u64) -> Result<(), PersistError> {
    let path = position_path(dir, generation);
    let tmp = path.with_extension("pos.tmp");
    let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(format!("{position}\n").as_bytes())
        .map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    fs::rename(&tmp, &path).map_err(io("rename", &tmp))
}

/// Reads the position file of snapshot `generation`, if there is a sound one.
fn read_position(dir: &Path, generation: u64) -> Option<u64> {
    let path = position_path(dir, generation);
    let text = fs::read_to_string(&path).ok()?;
    let position = text.trim().parse().ok();
    if position.is_none() {
        warn!(file = %path.display(), "the snapshot's position file is not a number; resuming from the start of the outside log");
    }
    position
}

fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation:020}.bin"))
}

fn sync_dir(dir: &Path) {
    // Makes renames and new files durable; not every platform can open a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A name in `corrupt/` for a copy of `path`: its file name and the time, made unique.
fn aside_target(aside: &Path, path: &Path) -> PathBuf {
    let stamp = jiff::Timestamp::now().as_second();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut target = aside.join(format!("{name}.{stamp}"));
    let mut n = 1;
    while target.exists() {
        target = aside.join(format!("{name}.{stamp}.{n}"));
        n += 1;
    }
    target
}

/// Moves a damaged file to `corrupt/`; returns where it went.
fn move_aside(dir: &Path, path: &Path, why: &str) -> Option<PathBuf> {
    let aside = dir.join("corrupt");
    let _ = fs::create_dir_all(&aside);
    let target = aside_target(&aside, path);
    match fs::rename(path, &target) {
        Ok(()) => {
            error!(file = %path.display(), moved_to = %target.display(), reason = why, "state file is damaged and was moved aside");
            sync_dir(dir);
            Some(target)
        }
        Err(e) => {
            error!(file = %path.display(), reason = why, error = %e, "state file is damaged and could not be moved aside; it is ignored");
            None
        }
    }
}

/// Copies `bytes`, the content of the damaged journal `path`, to `corrupt/`, unless an
/// identical copy is already there (a restart before the next snapshot); returns the copy.
fn copy_aside(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let aside = dir.join("corrupt");
    fs::create_dir_all(&aside)?;
    let prefix = path
        .file_name()
        .map(|n| format!("{}.", n.to_string_lossy()))
        .unwrap_or_default();
    for entry in fs::read_dir(&aside)?.flatten() {
        let same_name = entry.file_name().to_string_lossy().starts_with(&prefix);
        let same_len = entry
            .metadata()
            .is_ok_and(|m| m.len() == bytes.len() as u64);
        if same_name && same_len && fs::read(entry.path()).is_ok_and(|held| held == bytes) {
            return Ok(entry.path());
        }
    }
    let target = aside_target(&aside, path);
    let mut file = File::create(&target)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    sync_dir(&aside);
    Ok(target)
}

/// Journal generations missing from `present` (sorted, after the snapshot `base` if any) up
/// to `newest`, as ranges.
fn missing_generations(
    base: Option<u64>,
    present: &[u64],
    newest: u64,
) -> Vec<RangeInclusive<u64>> {
    let mut missing = Vec::new();
    let mut expected = match (base, present.first()) {
        (Some(b), _) => b.saturating_add(1),
        (None, Some(&first)) => first,
        (None, None) => return missing,
    };
    for &g in present.iter().filter(|&&g| g <= newest) {
        if g > expected {
            missing.push(expected..=g - 1);
        }
        expected = expected.max(g.saturating_add(1));
    }
    missing
}

/// Logs and reports a journal damaged in places, and copies it to `corrupt/`.
fn report_damage(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    scan: &journal::Scan,
    report: &mut RecoveryReport,
) {
    let copy = match copy_aside(dir, path, bytes) {
        Ok(copy) => Some(copy),
        Err(e) => {
            error!(file = %path.display(), error = %e, "cannot copy a damaged journal to corrupt/");
            None
        }
    };
    let damage = JournalDamage {
        path: path.to_path_buf(),
        copy,
        frames_applied: scan.frames,
        regions: scan.damaged.len(),
        frames_skipped: scan.damaged_frames(),
        bytes_skipped: scan.damaged_bytes(),
    };
    let first = &scan.damaged[0];
    error!(
        file = %path.display(),
        copied_to = damage.copy.as_ref().map(|c| c.display().to_string()),
        frames_applied = damage.frames_applied,
        damaged_regions = damage.regions,
        frames_skipped = damage.frames_skipped,
        bytes_skipped = damage.bytes_skipped,
        first_damage_at = (JOURNAL_HEADER_LEN + first.offset) as u64,
        "journal has damaged frames; they were skipped and every valid frame around them applied; the changes they held are lost"
    );
    report.damaged_frames += damage.frames_skipped;
    report.damaged_bytes += damage.bytes_skipped;
    report.damaged_journals.push(damage);
}

impl Persistence {
    /// Opens the state directory (creating it), takes its lock, and restores the store from
    /// the newest valid snapshot and the journals after it.
    pub fn recover(
        config: PersistConfig,
        store: &mut Store,
    ) -> Result<(Persistence, RecoveryReport), PersistError> {
        let started = Instant::now();
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(io("create the state directory", &dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(PersistError::Locked(dir.display().to_string()));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }

        let mut snapshots = Vec::new();
        let mut journals = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io("list", &dir))? {
            let entry = entry.map_err(io("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(g) = generation_of(&name, "snapshot-", ".bin") {
                snapshots.push(g);
            } else if let Some(g) = generation_of(&name, "journal-", ".bin") {
                journals.push(g);
            } else if name.ends_with(".tmp") {
                // An interrupted snapshot write: never renamed into place, never valid.
                let _ = fs::remove_file(entry.path());
            }
        }
        snapshots.sort_unstable();
        journals.sort_unstable();
        let mut report = RecoveryReport::default();
        let mut max_generation = snapshots
            .iter()
            .chain(&journals)
            .copied()
            .max()
            .unwrap_or(0);

        let mut base = None;
        for &generation in snapshots.iter().rev() {
            let path = snapshot_path(&dir, generation);
            match load_snapshot(&path, store) {
                Ok((keys, customers)) => {
                    store.set_txn_keys(keys);
                    report.snapshot = Some((generation, customers));
                    report.position = read_position(&dir, generation);
                    base = Some(generation);
                    break;
                }
                Err(why) => {
                    store.clear();
                    report.moved_aside.extend(move_aside(&dir, &path, &why));
                }
            }
        }

        let mut keys = base.map(|_| store.txn_keys());
        let mut present = Vec::new();
        let mut newest_replayed = None;
        for &generation in journals.iter().filter(|&&g| base.is_none_or(|b| g > b)) {
            present.push(generation);
            let path = journal_path(&dir, generation);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    let why = format!("cannot read: {e}");
                    report.moved_aside.extend(move_aside(&dir, &path, &why));
                    continue;
                }
            };
            let scan = match replay_journal(&bytes, store, &mut keys, config.month_of.as_deref()) {
                Ok(scan) => scan,
                Err(why) => {
                    report.moved_aside.extend(move_aside(&dir, &path, &why));
                    continue;
                }
            };
            newest_replayed = Some(generation);
            report.journals += 1;
            report.frames += scan.frames;
            report.torn_bytes += scan.torn_bytes;
            if scan.torn_bytes > 0 {
                warn!(file = %path.display(), torn_bytes = scan.torn_bytes, "journal ends in an incomplete frame, as a crash while writing leaves it; the frames before it were applied");
            }
            if !scan.damaged.is_empty() {
                report_damage(&dir, &path, &bytes, &scan, &mut report);
            }
        }
        if let Some(newest) = newest_replayed {
            report.missing_journals = missing_generations(base, &present, newest);
            for gap in &report.missing_journals {
                error!(
                    dir = %dir.display(),
                    first_missing = gap.start(),
                    last_missing = gap.end(),
                    after_snapshot = base,
                    "journal generations are missing from the state directory; the changes they held are lost"
                );
            }
        }
        if let Some(k) = keys {
            store.set_txn_keys(k);
        }
        max_generation = max_generation.max(base.unwrap_or(0));
        report.elapsed = started.elapsed();
        info!(
            dir = %dir.display(),
            snapshot_generation = report.snapshot.map(|s| s.0),
            snapshot_customers = report.snapshot.map(|s| s.1),
            journals = report.journals,
            frames = report.frames,
            torn_bytes = report.torn_bytes,
            damaged_frames = report.damaged_frames,
            damaged_bytes = report.damaged_bytes,
            missing_journals = report.missing_journal_count(),
            customers = store.customers(),
            events = store.events(),
            moved_aside = report.moved_aside.len(),
            elapsed_ms = report.elapsed.as_millis() as u64,
            "state restored"
        );
        let keys = store.txn_keys();
        Ok((
            Persistence {
                config,
                journal: Arc::new(Journal::new()),
                next_generation: max_generation + 1,
                keys,
                _lock: lock,
            },
            report,
        ))
    }

    /// The journal the interceptor appends to.
    pub fn journal(&self) -> Arc<Journal> {
        Arc::clone(&self.journal)
    }

    /// Opens the next journal and starts the writer and snapshot threads over `owner`'s store.
    pub fn start<S>(self, owner: Arc<S>) -> Result<PersistHandle, PersistError>
    where
        S: AsRef<Store> + Send + Sync + 'static,
    {
        let generation = self.next_generation;
        let file = create_journal(&self.config.dir, generation, self.keys)?;
        let (commands, inbox) = mpsc::channel();
        let journal_bytes = Arc::new(AtomicU64::new(0));
        let writer = {
            let journal = Arc::clone(&self.journal);
            let config = self.config.clone();
            let bytes = Arc::clone(&journal_bytes);
            let keys = self.keys;
            std::thread::Builder::new()
                .name("state-journal".into())
                .spawn(move || write_loop(inbox, journal, config, file, generation, keys, bytes))
                .map_err(io("start the journal writer for", &self.config.dir))?
        };
        let stop = Arc::new(AtomicBool::new(false));
        let snapshots = Arc::new(Snapshots {
            dir: self.config.dir.clone(),
            keys: self.keys,
            commands: parking_lot::Mutex::new(commands.clone()),
            written: AtomicU64::new(0),
            position: self.config.position.clone(),
        });
        let snapshotter = {
            let snapshots = Arc::clone(&snapshots);
            let stop = Arc::clone(&stop);
            let owner = Arc::clone(&owner);
            let config = self.config.clone();
            let bytes = Arc::clone(&journal_bytes);
            std::thread::Builder::new()
                .name("state-snapshot".into())
                .spawn(move || {
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(Duration::from_millis(250));
                        let due = last.elapsed() >= config.snapshot_interval
                            || bytes.load(Ordering::Relaxed) >= config.snapshot_after_bytes;
                        if due && !stop.load(Ordering::Relaxed) {
                            if let Err(e) = snapshots.take(owner.as_ref().as_ref()) {
                                error!(error = %e, "snapshot failed; the journal keeps every change");
                            }
                            last = Instant::now();
                        }
                    }
                })
                .map_err(io("start the snapshot thread for", &self.config.dir))?
        };
        Ok(PersistHandle {
            commands,
            writer: Some(writer),
            snapshotter: Some(snapshotter),
            snapshots,
            stop,
            journal: self.journal,
            _lock: self._lock,
        })
    }
}

/// The running persistence threads.
pub struct PersistHandle {
    commands: mpsc::Sender<Command>,
    writer: Option<JoinHandle<()>>,
    snapshotter: Option<JoinHandle<()>>,
    snapshots: Arc<Snapshots>,
    stop: Arc<AtomicBool>,
    journal: Arc<Journal>,
    _lock: File,
}

impl std::fmt::Debug for PersistHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistHandle").finish_non_exhaustive()
    }
}

impl PersistHandle {
    /// Takes a snapshot now (rotating the journal), off the caller's async context.
    pub fn snapshot(&self, store: &Store) -> Result<(), PersistError> {
        self.snapshots.take(store)
    }

    /// Snapshots written since start.
    pub fn snapshots_written(&self) -> u64 {
        self.snapshots.written.load(Ordering::Relaxed)
    }

    /// Journal frames dropped because the writer fell behind.
    pub fn journal_dropped(&self) -> u64 {
        self.journal.dropped()
    }

    /// Writes everything: stops the snapshot thread, takes a final snapshot, flushes and
    /// fsyncs the journal, and stops the writer. Call once requests have stopped.
    pub fn shutdown(mut self, store: &Store) -> Result<(), PersistError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.snapshotter.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let snapshot = self.snapshots.take(store);
        let (reply, done) = mpsc::channel();
        let _ = self.commands.send(Command::Stop(reply));
        let stopped = done.recv_timeout(Duration::from_secs(30));
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
        snapshot?;
        match stopped {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }
}

enum Command {
    /// Flush and close the current journal, open the next; reply with the closed generation.
    Rotate(mpsc::Sender<Result<u64, PersistError>>),
    /// Flush, fsync and stop.
    Stop(mpsc::Sender<Result<(), PersistError>>),
}

fn create_journal(dir: &Path, generation: u64, keys: (u64, u64)) -> Result<File, PersistError> {
    let path = journal_path(dir, generation);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io("create", &path))?;
    let mut header = Vec::with_capacity(JOURNAL_HEADER_LEN);
    header.extend_from_slice(JOURNAL_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&generation.to_le_bytes());
    header.extend_from_slice(&keys.0.to_le_bytes());
    header.extend_from_slice(&keys.1.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    file.write_all(&header).map_err(io("write", &path))?;
    file.sync_all().map_err(io("fsync", &path))?;
    sync_dir(dir);
    Ok(file)
}

#[allow(clippy::too_many_arguments)]
fn write_loop(
    inbox: mpsc::Receiver<Command>,
    journal: Arc<Journal>,
    config: PersistConfig,
    mut file: File,
    mut generation: u64,
    keys: (u64, u64),
    bytes: Arc<AtomicU64>,
) {
    let mut pending = Vec::with_capacity(1024 * 1024);
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    let mut failing = false;
    let mut flush = |file: &mut File, sync: bool, pending: &mut Vec<u8>| -> std::io::Result<()> {
        journal.take(pending);
        if !pending.is_empty() {
            file.write_all(pending)?;
            bytes.fetch_add(pending.len() as u64, Ordering::Relaxed);
            unsynced = true;
        }
        if sync && unsynced {
            file.sync_data()?;
            unsynced = false;
        }
        Ok(())
    };
    loop {
        match inbox.recv_timeout(config.flush_interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let sync = last_sync.elapsed() >= config.fsync_interval;
                match flush(&mut file, sync, &mut pending) {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        error!(error = %e, "cannot write the state journal; changes are at risk until it recovers");
                        failing = true;
                    }
                    Err(_) => {}
                }
                if sync {
                    last_sync = Instant::now();
                }
            }
            Ok(Command::Rotate(reply)) => {
                let result = flush(&mut file, true, &mut pending)
                    .map_err(io("write", &journal_path(&config.dir, generation)))
                    .and_then(|()| create_journal(&config.dir, generation + 1, keys));
                match result {
                    Ok(next) => {
                        file = next;
                        generation += 1;
                        bytes.store(0, Ordering::Relaxed);
                        let _ = reply.send(Ok(generation - 1));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Ok(Command::Stop(reply)) => {
                let result = flush(&mut file, true, &mut pending)
                    .map_err(io("write", &journal_path(&config.dir, generation)));
                let _ = reply.send(result);
                return;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = flush(&mut file, true, &mut pending);
                return;
            }
        }
    }
}

struct Snapshots {
    dir: PathBuf,
    keys: (u64, u64),
    commands: parking_lot::Mutex<mpsc::Sender<Command>>,
    written: AtomicU64,
    position: Option<Arc<AtomicU64>>,
}

impl Snapshots {
    /// Rotates the journal, writes a snapshot covering everything before the rotation, reads
    /// it back to verify it, and then deletes the generation before the previous one.
    fn take(&self, store: &Store) -> Result<(), PersistError> {
        let started = Instant::now();
        // Read before the walk: the store then holds everything up to this position.
        let position = self.position.as_ref().map(|p| p.load(Ordering::Acquire));
        let (reply, answer) = mpsc::channel();
        self.commands
            .lock()
            .send(Command::Rotate(reply))
            .map_err(|_| PersistError::Io {
                action: "rotate",
                path: self.dir.display().to_string(),
                source: std::io::Error::other("the journal writer has stopped"),
            })?;
        let generation = answer.recv().map_err(|_| PersistError::Io {
            action: "rotate",
            path: self.dir.display().to_string(),
            source: std::io::Error::other("the journal writer has stopped"),
        })??;
        let path = snapshot_path(&self.dir, generation);
        let tmp = path.with_extension("tmp");
        let customers = write_snapshot(&tmp, store, generation, self.keys)?;
        if let Some(position) = position {
            write_position(&self.dir, generation, position)?;
        }
        fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        sync_dir(&self.dir);
        // Read it back: nothing is deleted on the strength of a snapshot that does not verify.
        let verified = check_snapshot(&path).and_then(|checked| {
            if (checked.generation, checked.customers) == (generation, customers) {
                Ok(())
            } else {
                Err(format!(
                    "it reads back as generation {} with {} customers, written as generation {generation} with {customers}",
                    checked.generation, checked.customers
                ))
            }
        });
        if let Err(reason) = verified {
            move_aside(&self.dir, &path, &reason);
            return Err(PersistError::Unverified {
                path: path.display().to_string(),
                reason,
            });
        }
        let previous = prune(&self.dir, generation);
        self.written.fetch_add(1, Ordering::Relaxed);
        info!(
            generation,
            customers,
            bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            previous_generation_kept = previous,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot written and verified"
        );
        Ok(())
    }
}

/// Writes the whole store to `path` in the snapshot format, labelled with `position` (an
/// outside log's position the store includes: fleet mode's stream sequence), for another
/// process to load with [`import_snapshot`]. Shards are copied out one lock at a time, as for
/// local snapshots. Returns the number of customers written.
pub fn export_snapshot(path: &Path, store: &Store, position: u64) -> Result<u64, PersistError> {
    write_snapshot(path, store, position, store.txn_keys())
}

/// What [`import_snapshot`] loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedSnapshot {
    /// The position the exporter labelled it with.
    pub position: u64,
    /// Customers loaded.
    pub customers: u64,
}

/// Checks a snapshot written by [`export_snapshot`] whole (magic, version, checksum) and loads
/// it into `store`, which should be empty. A snapshot written with other transaction-hash keys
/// than `store`'s is refused before anything is loaded; one that fails while loading leaves the
/// store cleared, never half loaded.
pub fn import_snapshot(path: &Path, store: &Store) -> Result<ImportedSnapshot, String> {
    let checked = check_snapshot(path)?;
    if checked.keys != store.txn_keys() {
        return Err("it was written with other transaction-hash keys than this store's".into());
    }
    match load_snapshot(path, store) {
        Ok((_, customers)) => Ok(ImportedSnapshot {
            position: checked.generation,
            customers,
        }),
        Err(why) => {
            store.clear();
            Err(why)
        }
    }
}

/// Once the snapshot `newest` is verified, deletes what only the generation before the previous
/// one needs: snapshots older than the previous snapshot, and journals up to it. The previous
/// snapshot and every journal after it stay, so a damaged `newest` falls back to them and loses
/// nothing. With no previous snapshot, every journal stays (the previous generation is the
/// empty state and the journals from the start). Returns the previous snapshot's generation.
fn prune(dir: &Path, newest: u64) -> Option<u64> {
    let entries: Vec<(String, PathBuf)> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect(),
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "cannot list the state directory to delete old files; they stay");
            return None;
        }
    };
    let previous = entries
        .iter()
        .filter_map(|(name, _)| generation_of(name, "snapshot-", ".bin"))
        .filter(|&g| g < newest)
        .max()?;
    for (name, path) in &entries {
        let old_journal = generation_of(name, "journal-", ".bin").is_some_and(|g| g <= previous);
        let old_snapshot = generation_of(name, "snapshot-", ".bin").is_some_and(|g| g < previous);
        let old_position = generation_of(name, "snapshot-", ".pos").is_some_and(|g| g < previous);
        if old_journal || old_snapshot || old_position {
            let _ = fs::remove_file(path);
        }
    }
    sync_dir(dir);
    Some(previous)
}

/// Replays a journal (the whole file's `bytes`) into `store`. `keys` are the hash keys of the
/// state so far (from the snapshot or an earlier journal); a journal with other keys belongs to
/// another state and is refused, as is one whose header is not sound. Frames are read by
/// [`journal::scan`], past any damage; returns what it found.
fn replay_journal(
    bytes: &[u8],
    store: &mut Store,
    keys: &mut Option<(u64, u64)>,
    month_of: Option<&(dyn Fn(i64) -> i32 + Send + Sync)>,
) -> Result<journal::Scan, String> {
    if bytes.len() < JOURNAL_HEADER_LEN {
        return Err("truncated: shorter than a header".into());
    }
    let (header, frames) = bytes.split_at(JOURNAL_HEADER_LEN);
    if &header[..8] != JOURNAL_MAGIC {
        return Err("not a tripwire journal (bad magic)".into());
    }
    if crc32fast::hash(&header[..JOURNAL_HEADER_LEN - 4])
        != u32::from_le_bytes(
            header[JOURNAL_HEADER_LEN - 4..]
                .try_into()
                .expect("4 bytes"),
        )
    {
        return Err("header checksum mismatch".into());
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if !(OLDEST_VERSION_READ..=FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "journal format version {version}; this tripwire reads {OLDEST_VERSION_READ} to {FORMAT_VERSION}"
        ));
    }
    let file_keys = (
        u64::from_le_bytes(header[20..28].try_into().expect("8 bytes")),
        u64::from_le_bytes(header[28..36].try_into().expect("8 bytes")),
    );
    match keys {
        Some(k) if *k != file_keys => {
            return Err("written by another state (hash keys differ)".into());
        }
        Some(_) => {}
        None => {
            *keys = Some(file_keys);
            store.set_txn_keys(file_keys);
        }
    }
    let now = jiff::Timestamp::now().as_microsecond();
    Ok(journal::scan(frames, |frame| {
        apply_frame(store, &frame, month_of, now, None);
    }))
}

/// Records an event (and the entities it was counted on) unless its customer holds it already.
/// The entities count it only when the customer takes it: a change applied twice (a snapshot
/// and the journal after it, a replica's own change coming back) is counted once.
fn apply_event(
    store: &Store,
    id: &str,
    event: Event,
    keys: &journal::EntityKeys<'_>,
    month_of: Option<&(dyn Fn(i64) -> i32 + Send + Sync)>,
    now: i64,
    journal: Option<&Journal>,
) -> bool {
    let taken = store.with_customer(id, |record, capacity| {
        let taken = record.record(event, capacity);
        if !taken {
            return false;
        }
        if let Some(month_of) = month_of {
            record
                .months
                .get_or_insert_with(Default::default)
                .add(month_of(event.at), event.amount_minor());
        }
        let with_entities = keys.iter().any(Option::is_some);
        if with_entities {
            let customer = store.customer_hash(id);
            for kind in EntityKind::ALL {
                if let Some(key) = keys[kind as usize] {
                    store.entities().with_entity(kind, key, i64::MIN, |r| {
                        r.record(event.at, event.amount_minor(), customer)
                    });
                }
            }
        }
        if let Some(journal) = journal {
            if with_entities {
                journal.entity_event(id, &event, keys);
            } else {
                journal.event(id, &event);
            }
        }
        true
    });
    store.observe_event_time(event.at.min(now));
    taken
}

/// Applies one change to `store`, idempotently: an event already held (same transaction hash)
/// is skipped, an outcome is set again, a credit line older than the one held is ignored.
/// Journal replay and fleet replication both apply changes here. Event times past `now` do not
/// move the idleness watermark. Returns whether the store changed (an event or credit line
/// taken, an outcome set on a held transaction). A change taken is appended to `journal`, when
/// given, under the shard lock, so the journal keeps the order changes were applied in.
pub fn apply_frame(
    store: &Store,
    frame: &Frame<'_>,
    month_of: Option<&(dyn Fn(i64) -> i32 + Send + Sync)>,
    now: i64,
    journal: Option<&Journal>,
) -> bool {
    match *frame {
        Frame::Event(id, event) => {
            apply_event(store, id, event, &[None; 4], month_of, now, journal)
        }
        Frame::Outcome(id, hash, outcome) => store
            .with_existing(id, |record| {
                if !record.set_outcome(hash, outcome, month_of) {
                    return false;
                }
                if let Some(journal) = journal {
                    journal.outcome(id, hash, outcome);
                }
                true
            })
            .unwrap_or(false),
        Frame::CreditLine(id, line) => store.with_customer(id, |record, _| {
            let taken = record.offer_credit_line(line);
            if taken && let Some(journal) = journal {
                journal.credit_line(id, line);
            }
            taken
        }),
        Frame::EntityEvent(id, event, keys) => {
            apply_event(store, id, event, &keys, month_of, now, journal)
        }
        Frame::Fraud(id, hash, at, keys) => {
            let held_at = store
                .with_existing(id, |record| {
                    record.ring.update(hash, |event| {
                        event.set_fraud();
                        event.at
                    })
                })
                .flatten();
            let mut reached = held_at.is_some();
            if let Some(at) = at.or(held_at) {
                for kind in EntityKind::ALL {
                    if let Some(key) = keys[kind as usize] {
                        // Counted once per transaction: the entity remembers recent reports.
                        store
                            .entities()
                            .with_entity(kind, key, i64::MIN, |r| r.record_fraud(at, hash));
                        reached = true;
                    }
                }
            }
            if reached && let Some(journal) = journal {
                journal.fraud(id, hash, at, &keys);
            }
            reached
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::rules::Action;
    use crate::state::{Outcome, StoreConfig};
    use crate::txn::GeoPoint;

    const DAY: i64 = 86_400_000_000;
    /// 2026-01-10T00:00:00Z in microseconds.
    const T0: i64 = 1_768_003_200_000_000;

    /// A stand-in for the rules' calendar: thirty-day months.
    fn month_of(at: i64) -> i32 {
        at.div_euclid(30 * DAY) as i32
    }

    /// A unique, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "tripwire-persist-{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn store_config() -> StoreConfig {
        StoreConfig {
            max_customers: 1000,
            ring_capacity: 4,
        }
    }

    fn config(dir: &Path) -> PersistConfig {
        let mut config = PersistConfig::new(dir.to_path_buf());
        config.flush_interval = Duration::from_millis(2);
        config.snapshot_interval = Duration::from_secs(3600);
        config.month_of = Some(Arc::new(month_of));
        config
    }

    /// A store and its journal, changed the way the interceptor changes them.
    struct Live {
        store: Store,
        journal: Arc<Journal>,
        /// Bytes of the frames journalled so far.
        journalled: AtomicU64,
    }

    impl AsRef<Store> for Live {
        fn as_ref(&self) -> &Store {
            &self.store
        }
    }

    fn frame_len(customer: &str, payload: usize) -> u64 {
        (8 + 1 + 2 + customer.len() + payload) as u64
    }

    impl Live {
        fn txn(&self, customer: &str, id: &str, at: i64, minor: i64) {
            self.txn_with(customer, id, at, minor, Action::Allow, None);
        }

        fn txn_with(
            &self,
            customer: &str,
            id: &str,
            at: i64,
            minor: i64,
            decision: Action,
            geo: Option<GeoPoint>,
        ) {
            let hash = self.store.txn_hash(customer, id);
            let event = Event::new(at, hash, Amount::from_minor(minor).unwrap(), geo, decision);
            self.store.with_customer(customer, |record, capacity| {
                assert!(record.record(event, capacity), "{customer}/{id} is new");
                record
                    .months
                    .get_or_insert_with(Default::default)
                    .add(month_of(at), minor);
                self.journal.event(customer, &event);
            });
            self.journalled
                .fetch_add(frame_len(customer, 32), Ordering::Relaxed);
        }

        fn outcome(&self, customer: &str, id: &str, outcome: Outcome) {
            let hash = self.store.txn_hash(customer, id);
            self.store
                .with_existing(customer, |record| {
                    assert!(
                        record.set_outcome(hash, outcome, Some(month_of)),
                        "the event is held"
                    );
                    self.journal.outcome(customer, hash, outcome);
                })
                .expect("the customer is held");
            self.journalled
                .fetch_add(frame_len(customer, 9), Ordering::Relaxed);
        }

        fn credit_line(&self, customer: &str, minor: i64, granted_at: i64) {
            let line = CreditLine {
                limit: Amount::from_minor(minor).unwrap(),
                granted_at,
            };
            self.store.with_customer(customer, |record, _| {
                if record.offer_credit_line(line) {
                    self.journal.credit_line(customer, line);
                    self.journalled
                        .fetch_add(frame_len(customer, 16), Ordering::Relaxed);
                }
            });
        }

        fn journalled(&self) -> u64 {
            self.journalled.load(Ordering::Relaxed)
        }
    }

    /// Recovers `dir` and starts persistence over the recovered store.
    fn start(dir: &Path) -> (Arc<Live>, PersistHandle, RecoveryReport) {
        let mut store = Store::new(store_config());
        let (persistence, report) = Persistence::recover(config(dir), &mut store).unwrap();
        let live = Arc::new(Live {
            store,
            journal: persistence.journal(),
            journalled: AtomicU64::new(0),
        });
        let handle = persistence.start(Arc::clone(&live)).unwrap();
        (live, handle, report)
    }

    /// Recovers `dir` into a fresh store (and releases the directory).
    fn recover(dir: &Path) -> (Store, RecoveryReport) {
        let mut store = Store::new(store_config());
        let (persistence, report) = Persistence::recover(config(dir), &mut store).unwrap();
        drop(persistence);
        (store, report)
    }

    /// One customer as held, for comparing stores.
    #[derive(Debug, PartialEq)]
    struct Held {
        events: Vec<Event>,
        credit_line: Option<CreditLine>,
        last_event_at: i64,
        months: Option<MonthBuckets>,
    }

    fn state(store: &Store) -> BTreeMap<String, Held> {
        let mut out = BTreeMap::new();
        for shard in 0..store.shard_count() {
            store.for_each_in_shard(shard, |r| {
                out.insert(
                    r.key.to_string(),
                    Held {
                        events: r.ring.iter().copied().collect(),
                        credit_line: r.credit_line(),
                        last_event_at: r.last_event_at,
                        months: r.months.clone(),
                    },
                );
            });
        }
        out
    }

    fn holds_txn(store: &Store, customer: &str, id: &str) -> bool {
        let hash = store.txn_hash(customer, id);
        store
            .with_existing(customer, |r| r.ring.find(hash).is_some())
            .unwrap_or(false)
    }

    /// Customers with events, outcomes, credit lines and months, before any snapshot.
    fn populate(live: &Live) {
        // Six events in a ring of four, over two months; a failure and a settlement.
        for i in 0..6 {
            let at = T0 + i * 8 * DAY;
            live.txn("alice", &format!("a-{i}"), at, 1_000 + i * 100);
        }
        live.outcome("alice", "a-4", Outcome::Failed);
        live.outcome("alice", "a-5", Outcome::Settled);
        live.credit_line("alice", 500_000, T0 - DAY);
        // Geotagged, decided review and deny; a late credit line is ignored.
        let shanghai = GeoPoint {
            lat: 31.2304,
            lon: 121.4737,
        };
        live.txn_with("bob", "b-0", T0, 9_900, Action::Review, Some(shanghai));
        live.txn_with("bob", "b-1", T0 + 60_000_000, 49_900, Action::Deny, None);
        live.credit_line("bob", 100_000, T0);
        live.credit_line("bob", 999_999, T0 - DAY);
        // A credit line and nothing else.
        live.credit_line("carol", 2_000_000, T0 + 3 * DAY);
        // An id that is not ASCII.
        live.txn("dörte", "d-0", T0 + DAY, 1);
        live.outcome("dörte", "d-0", Outcome::Reversed);
    }

    /// Changes after the first snapshot: a new customer, a new event, an outcome and a
    /// credit line on old ones.
    fn change_after_snapshot(live: &Live) {
        live.txn("erin", "e-0", T0 + 50 * DAY, 700);
        live.txn("erin", "e-1", T0 + 51 * DAY, 800);
        live.credit_line("erin", 300_000, T0 + 49 * DAY);
        live.txn("alice", "a-6", T0 + 60 * DAY, 5_000);
        live.outcome("bob", "b-1", Outcome::Failed);
        live.credit_line("carol", 2_500_000, T0 + 52 * DAY);
    }

    fn state_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("snapshot-") || name.starts_with("journal-")
            })
            .collect();
        files.sort();
        files
    }

    fn newest(dir: &Path, prefix: &str) -> PathBuf {
        state_files(dir)
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .max()
            .unwrap_or_else(|| panic!("no {prefix} file in {}", dir.display()))
    }

    /// Waits until the writer has put `bytes` of frames in the newest journal, then copies the
    /// state files to `to`: what a crash at this moment would leave.
    fn crash_image(dir: &Path, bytes: u64, to: &Path) {
        let journal = newest(dir, "journal-");
        let want = JOURNAL_HEADER_LEN as u64 + bytes;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let len = fs::metadata(&journal).unwrap().len();
            assert!(len <= want, "journal holds {len} bytes, expected {want}");
            if len == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "journal not written: {len} of {want} bytes"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        fs::create_dir_all(to).unwrap();
        for file in state_files(dir) {
            fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
        }
    }

    /// A state directory holding a snapshot of [`populate`] and a journal of
    /// [`change_after_snapshot`], as a crash leaves it; with the state at the crash and the
    /// state of the customers the journal alone creates.
    fn snapshot_then_journal(
        name: &str,
    ) -> (TempDir, BTreeMap<String, Held>, BTreeMap<String, Held>) {
        let running = TempDir::new(&format!("{name}-running"));
        let crashed = TempDir::new(name);
        let (live, handle, _) = start(&running.0);
        populate(&live);
        handle.snapshot(&live.store).unwrap();
        let before = live.journalled();
        change_after_snapshot(&live);
        crash_image(&running.0, live.journalled() - before, &crashed.0);
        handle.shutdown(&live.store).unwrap();
        let at_crash = state(&live.store);
        // Only erin is created by the journal; the other frames touch customers that the
        // snapshot created.
        let mut journal_only = Live {
            store: Store::new(store_config()),
            journal: Arc::new(Journal::new()),
            journalled: AtomicU64::new(0),
        };
        journal_only.store.set_txn_keys(live.store.txn_keys());
        journal_only.txn("erin", "e-0", T0 + 50 * DAY, 700);
        journal_only.txn("erin", "e-1", T0 + 51 * DAY, 800);
        journal_only.credit_line("erin", 300_000, T0 + 49 * DAY);
        journal_only.txn("alice", "a-6", T0 + 60 * DAY, 5_000);
        journal_only.credit_line("carol", 2_500_000, T0 + 52 * DAY);
        let journal_only = state(&journal_only.store);
        (crashed, at_crash, journal_only)
    }

    /// Asserts that `path` was moved to `corrupt/` with these bytes, and is the only file moved.
    fn assert_moved_aside(dir: &Path, report: &RecoveryReport, path: &Path, bytes: &[u8]) {
        assert!(!path.exists(), "{} is still in place", path.display());
        assert_eq!(report.moved_aside.len(), 1, "{:?}", report.moved_aside);
        let moved = &report.moved_aside[0];
        assert_eq!(moved.parent(), Some(dir.join("corrupt").as_path()));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            moved
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}.")),
            "{}",
            moved.display()
        );
        assert_eq!(fs::read(moved).unwrap(), bytes, "moved, not rewritten");
    }

    fn reseal_snapshot(bytes: &mut [u8]) {
        let covered = bytes.len() - 12;
        let crc = crc32fast::hash(&bytes[..covered]);
        bytes[covered..covered + 4].copy_from_slice(&crc.to_le_bytes());
    }

    fn reseal_journal_header(bytes: &mut [u8]) {
        let crc = crc32fast::hash(&bytes[..JOURNAL_HEADER_LEN - 4]);
        bytes[JOURNAL_HEADER_LEN - 4..JOURNAL_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }

    /// Damages the snapshot of [`snapshot_then_journal`], recovers, and checks that the snapshot
    /// was moved aside whole and the journal after it still applied. The journal before the
    /// snapshot is removed first (the writer keeps it until the next snapshot), so that what
    /// comes back shows that nothing of the damaged snapshot was kept.
    fn damaged_snapshot_is_moved_aside(name: &str, damage: impl FnOnce(&mut Vec<u8>)) {
        let (dir, _, journal_only) = snapshot_then_journal(name);
        fs::remove_file(journal_path(&dir.0, 1)).unwrap();
        let snapshot = newest(&dir.0, "snapshot-");
        let mut bytes = fs::read(&snapshot).unwrap();
        damage(&mut bytes);
        fs::write(&snapshot, &bytes).unwrap();

        let (store, report) = recover(&dir.0);
        assert_moved_aside(&dir.0, &report, &snapshot, &bytes);
        assert_eq!(report.snapshot, None);
        assert_eq!((report.journals, report.frames), (1, 6));
        // Nothing of the snapshot is kept: bob (only in it) is gone, alice holds only the
        // event journalled after it.
        assert_eq!(state(&store), journal_only);
        assert!(!holds_txn(&store, "alice", "a-5"));
        assert!(holds_txn(&store, "erin", "e-1"));
        assert_eq!(store.customers(), 3);
        assert_eq!(store.events(), 3);
    }

    /// An entity as held: its buckets (hour, count, frauds, sum) and distinct customers.
    type HeldEntity = (Vec<(i64, u32, u32, i64)>, usize);

    /// Every entity as held, by (kind, key).
    fn entities(store: &Store) -> BTreeMap<(u8, String), HeldEntity> {
        let mut out = BTreeMap::new();
        let e = store.entities();
        for shard in 0..e.shard_count() {
            e.for_each_in_shard(shard, |kind, key, r| {
                let buckets = r
                    .hours()
                    .map(|b| (b.hour, b.count, b.fraud, b.sum))
                    .collect();
                out.insert((kind as u8, key.to_string()), (buckets, r.customers.len()));
            });
        }
        out
    }

    #[test]
    fn entity_state_survives_a_snapshot_and_its_journal_and_replay_counts_it_once() {
        let dir = TempDir::new("entities");
        let (live, handle, _) = start(&dir.0);
        let apply = |frame: &Frame<'_>| {
            apply_frame(
                &live.store,
                frame,
                Some(&month_of),
                i64::MAX,
                Some(&live.journal),
            )
        };
        let keys: journal::EntityKeys<'_> = [Some("term-1"), Some("dev-9"), None, None];
        // Transaction i: customer c(i mod 3), one an hour.
        let nth = |i: i64| {
            let customer = format!("c{}", i % 3);
            let hash = live.store.txn_hash(&customer, &format!("t{i}"));
            let at = T0 + i * 3_600_000_000;
            let event = Event::new(
                at,
                hash,
                Amount::from_minor(1_000 + i).unwrap(),
                None,
                Action::Allow,
            );
            (customer, event)
        };
        for i in 0..6i64 {
            let (customer, event) = nth(i);
            assert!(apply(&Frame::EntityEvent(&customer, event, keys)));
            assert!(
                !apply(&Frame::EntityEvent(&customer, event, keys)),
                "counted once"
            );
            if i == 2 {
                handle.snapshot(&live.store).unwrap();
            }
        }
        let hash = live.store.txn_hash("c1", "t1");
        assert!(apply(&Frame::Fraud(
            "c1",
            hash,
            Some(T0 + 3_600_000_000),
            keys
        )));
        // A fraud on a transaction whose customer is gone still reaches the entities.
        assert!(apply(&Frame::Fraud(
            "gone",
            99,
            Some(T0),
            [Some("term-1"), None, None, None]
        )));
        let want = entities(&live.store);
        assert_eq!(want.len(), 2);
        let terminal = &want[&(0, "term-1".to_string())];
        assert_eq!(terminal.0.iter().map(|b| b.1).sum::<u32>(), 6);
        assert_eq!(terminal.0.iter().map(|b| b.2).sum::<u32>(), 2);
        assert_eq!(terminal.1, 3, "three customers");
        // A crash now: the mid-run snapshot plus the journal after it (written within ms).
        let journal = newest(&dir.0, "journal-");
        let written = |len: u64| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while fs::metadata(&journal).unwrap().len() < len && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            fs::metadata(&journal).unwrap().len()
        };
        let mut after = Vec::new();
        for i in 3..6i64 {
            let (customer, event) = nth(i);
            journal::encode(&Frame::EntityEvent(&customer, event, keys), &mut after);
        }
        journal::encode(
            &Frame::Fraud("c1", hash, Some(T0 + 3_600_000_000), keys),
            &mut after,
        );
        journal::encode(
            &Frame::Fraud("gone", 99, Some(T0), [Some("term-1"), None, None, None]),
            &mut after,
        );
        let want_len = JOURNAL_HEADER_LEN as u64 + after.len() as u64;
        assert_eq!(written(want_len), want_len);
        let crashed = TempDir::new("entities-crash");
        fs::create_dir_all(&crashed.0).unwrap();
        for file in state_files(&dir.0) {
            fs::copy(&file, crashed.0.join(file.file_name().unwrap())).unwrap();
        }
        let (store, report) = recover(&crashed.0);
        assert_eq!(report.frames, 5);
        assert_eq!(
            entities(&store),
            want,
            "the snapshot's entities and the journal after it"
        );
        handle.shutdown(&live.store).unwrap();

        let (store, _) = recover(&dir.0);
        assert_eq!(entities(&store), want, "the final snapshot's entities");
        assert!(
            store
                .with_existing("c1", |r| r.ring.iter().any(|e| e.is_fraud()))
                .unwrap(),
            "the customer's fraud mark came back"
        );
    }

    #[test]
    fn a_snapshot_carries_the_outside_position_read_before_its_walk() {
        let dir = TempDir::new("position");
        let position = Arc::new(AtomicU64::new(0));
        let mut store = Store::new(store_config());
        let mut cfg = config(&dir.0);
        cfg.position = Some(Arc::clone(&position));
        let (persistence, report) = Persistence::recover(cfg.clone(), &mut store).unwrap();
        assert_eq!(report.position, None);
        let live = Arc::new(Live {
            store,
            journal: persistence.journal(),
            journalled: AtomicU64::new(0),
        });
        let handle = persistence.start(Arc::clone(&live)).unwrap();
        populate(&live);
        position.store(41, Ordering::Release);
        handle.snapshot(&live.store).unwrap();
        position.store(57, Ordering::Release);
        handle.snapshot(&live.store).unwrap();
        drop(handle);

        let mut store = Store::new(store_config());
        let (_, report) = Persistence::recover(cfg, &mut store).unwrap();
        assert_eq!(report.position, Some(57), "the newest snapshot's position");
        let positions: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pos"))
            .collect();
        assert_eq!(
            positions.len(),
            2,
            "the previous generation keeps its position"
        );
    }

    #[test]
    fn an_exported_snapshot_imports_exactly_and_only_with_the_same_keys() {
        let dir = TempDir::new("export");
        let (live, handle, _) = start(&dir.0);
        populate(&live);
        change_after_snapshot(&live);
        let path = dir.0.join("exported.bin");
        let customers = export_snapshot(&path, &live.store, 1234).unwrap();
        assert_eq!(customers as usize, live.store.customers());

        let mut store = Store::new(store_config());
        store.set_txn_keys(live.store.txn_keys());
        let imported = import_snapshot(&path, &store).unwrap();
        assert_eq!(
            imported,
            ImportedSnapshot {
                position: 1234,
                customers
            }
        );
        assert_eq!(state(&store), state(&live.store));

        let other = Store::new(store_config());
        let refused = import_snapshot(&path, &other).unwrap_err();
        assert!(refused.contains("transaction-hash keys"), "{refused}");
        assert_eq!(other.customers(), 0);

        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
        let mut damaged = Store::new(store_config());
        damaged.set_txn_keys(live.store.txn_keys());
        assert!(import_snapshot(&path, &damaged).is_err());
        assert_eq!(
            damaged.customers(),
            0,
            "nothing of a damaged snapshot is loaded"
        );
        handle.shutdown(&live.store).unwrap();
    }

    #[test]
    fn a_snapshot_round_trip_restores_every_customer_exactly() {
        let dir = TempDir::new("round-trip");
        let (live, handle, report) = start(&dir.0);
        assert_eq!(report.snapshot, None);
        assert!(report.moved_aside.is_empty());
        populate(&live);
        handle.snapshot(&live.store).unwrap();
        change_after_snapshot(&live);
        assert_eq!(handle.snapshots_written(), 1);
        handle.shutdown(&live.store).unwrap();
        let want = state(&live.store);

        let (store, report) = recover(&dir.0);
        assert_eq!(state(&store), want);
        assert_eq!(want.len(), 5);
        assert_eq!(want["alice"].events.len(), 4, "the ring wrapped");
        assert!(want["alice"].months.is_some() && want["carol"].months.is_none());
        assert_eq!(store.customers(), live.store.customers());
        assert_eq!(store.events(), live.store.events());
        assert_eq!(store.txn_keys(), live.store.txn_keys());
        // Transaction ids still match what is held, so duplicates are still caught.
        for (customer, id) in [("alice", "a-6"), ("alice", "a-3"), ("bob", "b-0")] {
            assert!(holds_txn(&store, customer, id), "{customer}/{id}");
        }
        assert!(
            !holds_txn(&store, "alice", "a-0"),
            "overwritten in the ring"
        );
        // Shutdown's snapshot covers everything: the journal after it is empty.
        let (generation, customers) = report.snapshot.expect("a snapshot was loaded");
        assert_eq!(customers, 5);
        assert_eq!(
            (report.journals, report.frames, report.torn_bytes),
            (1, 0, 0)
        );
        assert!(report.moved_aside.is_empty());
        assert_eq!(
            state_files(&dir.0),
            vec![
                journal_path(&dir.0, generation),
                journal_path(&dir.0, generation + 1),
                snapshot_path(&dir.0, generation - 1),
                snapshot_path(&dir.0, generation)
            ],
            "the previous snapshot and the journals after it are kept; the journal before it was deleted"
        );
    }

    #[test]
    fn changes_after_the_last_snapshot_come_back_from_the_journal() {
        let (dir, at_crash, _) = snapshot_then_journal("journal-replay");
        let (store, report) = recover(&dir.0);
        assert_eq!(state(&store), at_crash);
        let (_, customers) = report.snapshot.expect("a snapshot was loaded");
        assert_eq!(customers, 4, "erin came after the snapshot");
        assert_eq!(
            (report.journals, report.frames, report.torn_bytes),
            (1, 6, 0)
        );
        assert!(report.moved_aside.is_empty());
        assert!(holds_txn(&store, "erin", "e-0"));
        let bob_b1 = store.txn_hash("bob", "b-1");
        let outcome = store.with_existing("bob", |r| r.ring.find(bob_b1).map(|e| e.outcome()));
        assert_eq!(outcome, Some(Some(Outcome::Failed)));
        // The failure was counted in bob's month, as a live one is.
        let month = month_of(T0 + 60_000_000);
        let failed = store.with_existing("bob", |r| r.months.as_ref().unwrap().get(month).failed);
        assert_eq!(failed, Some(1));
    }

    #[test]
    fn replaying_a_journal_twice_over_its_snapshot_changes_nothing() {
        // A snapshot taken while changes continue holds some of the journal after it.
        let (dir, at_crash, _) = snapshot_then_journal("idempotent");
        let journal = newest(&dir.0, "journal-");
        let generation = generation_of(
            &journal.file_name().unwrap().to_string_lossy(),
            "journal-",
            ".bin",
        )
        .unwrap();
        let bytes = fs::read(&journal).unwrap();
        let mut again = bytes.clone();
        again[12..20].copy_from_slice(&(generation + 1).to_le_bytes());
        reseal_journal_header(&mut again);
        fs::write(journal_path(&dir.0, generation + 1), &again).unwrap();

        let (store, report) = recover(&dir.0);
        assert_eq!((report.journals, report.frames), (2, 12));
        assert_eq!(state(&store), at_crash);
    }

    #[test]
    fn a_truncated_snapshot_is_moved_aside_and_the_journal_still_applies() {
        damaged_snapshot_is_moved_aside("truncated-snapshot", |bytes| {
            bytes.truncate(bytes.len() * 2 / 3);
        });
    }

    #[test]
    fn a_snapshot_cut_inside_its_header_is_moved_aside() {
        damaged_snapshot_is_moved_aside("short-snapshot", |bytes| bytes.truncate(30));
    }

    #[test]
    fn a_flipped_byte_in_a_snapshot_fails_its_checksum() {
        damaged_snapshot_is_moved_aside("flipped-snapshot", |bytes| {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
        });
    }

    #[test]
    fn a_snapshot_with_a_bad_magic_is_moved_aside() {
        damaged_snapshot_is_moved_aside("magic-snapshot", |bytes| {
            bytes[..8].copy_from_slice(b"NOTTRIPW");
            reseal_snapshot(bytes);
        });
    }

    #[test]
    fn a_foreign_file_named_like_a_snapshot_is_moved_aside() {
        damaged_snapshot_is_moved_aside("foreign-snapshot", |bytes| {
            *bytes = b"# not a snapshot at all, just a text file that happens to be long enough\n"
                .repeat(3);
        });
    }

    #[test]
    fn a_snapshot_of_an_unknown_format_version_is_moved_aside() {
        damaged_snapshot_is_moved_aside("version-snapshot", |bytes| {
            bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
            reseal_snapshot(bytes);
        });
    }

    #[test]
    fn a_snapshot_is_applied_whole_or_not_at_all() {
        // The checksum matches but the content does not add up: every customer is parsed and
        // applied before the count is found wrong, and all of them must be dropped again.
        damaged_snapshot_is_moved_aside("inconsistent-snapshot", |bytes| {
            let count_at = bytes.len() - 20;
            let count = u64::from_le_bytes(bytes[count_at..count_at + 8].try_into().unwrap());
            bytes[count_at..count_at + 8].copy_from_slice(&(count + 1).to_le_bytes());
            reseal_snapshot(bytes);
        });
    }

    #[test]
    fn a_damaged_first_snapshot_falls_back_to_every_journal_from_the_start() {
        // Before a second snapshot, the previous generation is the empty state and the
        // journals from the first one: they are all kept.
        let (dir, at_crash, _) = snapshot_then_journal("first-snapshot");
        let snapshot = newest(&dir.0, "snapshot-");
        let mut bytes = fs::read(&snapshot).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        fs::write(&snapshot, &bytes).unwrap();

        let (store, report) = recover(&dir.0);
        assert_moved_aside(&dir.0, &report, &snapshot, &bytes);
        assert_eq!(report.snapshot, None);
        assert_eq!((report.journals, report.frames), (2, 21));
        assert_eq!(state(&store), at_crash, "nothing lost");
    }

    #[test]
    fn a_damaged_newest_snapshot_falls_back_to_the_one_before_it() {
        let (dir, at_crash, _) = snapshot_then_journal("fallback");
        let snapshot = newest(&dir.0, "snapshot-");
        let generation = generation_of(
            &snapshot.file_name().unwrap().to_string_lossy(),
            "snapshot-",
            ".bin",
        )
        .unwrap();
        // A newer snapshot that parses whole (so it is applied) and is then refused: the
        // older one must load into a clean store, not on top of it.
        let mut bytes = fs::read(&snapshot).unwrap();
        let count_at = bytes.len() - 20;
        bytes[count_at..count_at + 8].copy_from_slice(&99u64.to_le_bytes());
        reseal_snapshot(&mut bytes);
        let newer = snapshot_path(&dir.0, generation + 5);
        fs::write(&newer, &bytes).unwrap();

        let (store, report) = recover(&dir.0);
        assert_moved_aside(&dir.0, &report, &newer, &bytes);
        assert_eq!(report.snapshot, Some((generation, 4)));
        assert_eq!(state(&store), at_crash);
    }

    /// Journal frames as (offset, length) from the end of the header.
    fn frames_of(bytes: &[u8]) -> Vec<(usize, usize)> {
        let mut frames = Vec::new();
        let mut at = JOURNAL_HEADER_LEN;
        while at < bytes.len() {
            let (_, used) = journal::decode(&bytes[at..]).unwrap();
            frames.push((at, used));
            at += used;
        }
        frames
    }

    /// A state directory holding only a journal: [`populate`] and then one credit line for
    /// "zed", as a crash leaves it; with the state before zed and at the crash.
    fn journal_only(name: &str) -> (TempDir, BTreeMap<String, Held>, BTreeMap<String, Held>) {
        let running = TempDir::new(&format!("{name}-running"));
        let crashed = TempDir::new(name);
        let (live, handle, _) = start(&running.0);
        populate(&live);
        let before_zed = state(&live.store);
        live.credit_line("zed", 10_000, T0);
        crash_image(&running.0, live.journalled(), &crashed.0);
        handle.shutdown(&live.store).unwrap();
        (crashed, before_zed, state(&live.store))
    }

    #[test]
    fn a_journal_alone_restores_every_customer_exactly() {
        let (dir, _, at_crash) = journal_only("journal-alone");
        let (store, report) = recover(&dir.0);
        assert_eq!(report.snapshot, None);
        assert_eq!(
            (report.journals, report.frames, report.torn_bytes),
            (1, 16, 0)
        );
        assert_eq!(state(&store), at_crash);
    }

    #[test]
    fn a_torn_journal_tail_keeps_the_frames_before_it() {
        let (dir, before_zed, _) = journal_only("torn-journal");
        let journal = newest(&dir.0, "journal-");
        let mut bytes = fs::read(&journal).unwrap();
        let &(last, _) = frames_of(&bytes).last().unwrap();
        bytes.truncate(last + 10); // a crash in the middle of writing zed's frame
        fs::write(&journal, &bytes).unwrap();

        let (store, report) = recover(&dir.0);
        assert_eq!(report.frames, 15);
        assert_eq!(report.torn_bytes, 10);
        assert_eq!(state(&store), before_zed);
        // The frames before the tear are still needed until the next snapshot: the journal
        // stays where it is. A tear is expected after a crash: it is not damage.
        assert!(report.moved_aside.is_empty());
        assert!(journal.exists());
        assert!(report.damaged_journals.is_empty());
        assert_eq!((report.damaged_frames, report.damaged_bytes), (0, 0));
        assert!(!dir.0.join("corrupt").exists());
    }

    #[test]
    fn a_corrupt_journal_frame_is_skipped_and_replay_goes_on_after_it() {
        let (dir, _, at_crash) = journal_only("corrupt-frame");
        let journal = newest(&dir.0, "journal-");
        let mut bytes = fs::read(&journal).unwrap();
        let frames = frames_of(&bytes);
        // Frame 9 is bob's first event (b-0); every other change comes back.
        let (at, len) = frames[9];
        bytes[at + 20] ^= 0x01;
        fs::write(&journal, &bytes).unwrap();

        let (store, report) = recover(&dir.0);
        assert_eq!(report.frames, 15);
        assert_eq!(report.torn_bytes, 0);
        assert_eq!(
            (report.damaged_frames, report.damaged_bytes),
            (1, len as u64)
        );
        assert!(report.moved_aside.is_empty());
        let mut want = at_crash;
        let bob = want.get_mut("bob").unwrap();
        bob.events.remove(0);
        bob.months = Some({
            let mut months = MonthBuckets::default();
            months.add(month_of(T0 + 60_000_000), 49_900);
            months
        });
        assert_eq!(state(&store), want);
        assert!(!holds_txn(&store, "bob", "b-0"));
    }

    /// Damages the journal of [`journal_only`], recovers, and checks it was moved aside whole.
    fn damaged_journal_is_moved_aside(name: &str, damage: impl FnOnce(&mut Vec<u8>)) {
        let (dir, _, _) = journal_only(name);
        let journal = newest(&dir.0, "journal-");
        let mut bytes = fs::read(&journal).unwrap();
        damage(&mut bytes);
        fs::write(&journal, &bytes).unwrap();

        let (store, report) = recover(&dir.0);
        assert_moved_aside(&dir.0, &report, &journal, &bytes);
        assert_eq!((report.journals, report.frames), (0, 0));
        assert_eq!(store.customers(), 0);
    }

    #[test]
    fn a_journal_with_a_bad_magic_is_moved_aside() {
        damaged_journal_is_moved_aside("magic-journal", |bytes| {
            bytes[..8].copy_from_slice(b"TRIPWSNP");
            reseal_journal_header(bytes);
        });
    }

    #[test]
    fn a_journal_cut_inside_its_header_is_moved_aside() {
        damaged_journal_is_moved_aside("short-journal", |bytes| bytes.truncate(20));
    }

    #[test]
    fn a_journal_with_a_damaged_header_is_moved_aside() {
        damaged_journal_is_moved_aside("header-journal", |bytes| bytes[14] ^= 0x04);
    }

    #[test]
    fn a_journal_of_an_unknown_format_version_is_moved_aside() {
        damaged_journal_is_moved_aside("version-journal", |bytes| {
            bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
            reseal_journal_header(bytes);
        });
    }

    #[test]
    fn a_journal_written_with_other_hash_keys_is_moved_aside() {
        // Its transaction hashes mean nothing to the state before it.
        let (dir, _, _) = snapshot_then_journal("keys-journal");
        let journal = newest(&dir.0, "journal-");
        let mut bytes = fs::read(&journal).unwrap();
        bytes[20] ^= 0xff;
        reseal_journal_header(&mut bytes);
        fs::write(&journal, &bytes).unwrap();

        let (store, report) = recover(&dir.0);
        assert_moved_aside(&dir.0, &report, &journal, &bytes);
        assert!(report.snapshot.is_some());
        assert_eq!(report.frames, 0);
        assert!(!state(&store).contains_key("erin"));
        assert_eq!(store.customers(), 4, "the snapshot alone");
    }

    /// Rewrites a version-3 snapshot without entities as version 2 wrote it: no entity section.
    fn as_version_2(v3: &[u8]) -> Vec<u8> {
        assert_eq!(v3[SNAPSHOT_HEADER_LEN], 0xff, "an empty entity section");
        let mut out = v3[..SNAPSHOT_HEADER_LEN].to_vec();
        out[8..12].copy_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&v3[SNAPSHOT_HEADER_LEN + 1..]);
        reseal_snapshot(&mut out);
        out
    }

    /// Rewrites a version-3 snapshot without entities as version 1 wrote it: no entity
    /// section, no month buckets.
    fn as_version_1(v3: &[u8]) -> Vec<u8> {
        let v2 = &as_version_2(v3);
        let covered = v2.len() - 12;
        let mut out = v2[..SNAPSHOT_HEADER_LEN].to_vec();
        out[8..12].copy_from_slice(&1u32.to_le_bytes());
        let mut at = SNAPSHOT_HEADER_LEN;
        while at < covered - 8 {
            let id_len = u16::from_le_bytes([v2[at], v2[at + 1]]) as usize;
            let fixed = at + 2 + id_len;
            let events = u16::from_le_bytes([v2[fixed + 24], v2[fixed + 25]]) as usize;
            let flag = fixed + 26 + events * 32;
            out.extend_from_slice(&v2[at..flag]);
            at = flag + 1 + if v2[flag] == 1 { MONTHS * 16 } else { 0 };
        }
        assert_eq!(at, covered - 8, "walked every customer");
        out.extend_from_slice(&v2[covered - 8..]);
        reseal_snapshot(&mut out);
        out
    }

    #[test]
    fn version_1_snapshots_and_journals_are_still_read() {
        let (dir, at_crash, _) = snapshot_then_journal("version-1");
        let snapshot = newest(&dir.0, "snapshot-");
        let v1 = as_version_1(&fs::read(&snapshot).unwrap());
        fs::write(&snapshot, &v1).unwrap();
        let journal = newest(&dir.0, "journal-");
        let mut bytes = fs::read(&journal).unwrap();
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        reseal_journal_header(&mut bytes);
        fs::write(&journal, &bytes).unwrap();

        let mut store = Store::new(store_config());
        let mut config = config(&dir.0);
        config.month_of = None;
        let (_persistence, report) = Persistence::recover(config, &mut store).unwrap();
        assert!(report.moved_aside.is_empty(), "{:?}", report.moved_aside);
        assert_eq!(report.snapshot.map(|s| s.1), Some(4));
        assert_eq!((report.journals, report.frames), (1, 6));
        // Version 1 kept no month buckets; everything else is as it was.
        let mut want = at_crash;
        for held in want.values_mut() {
            held.months = None;
        }
        assert_eq!(state(&store), want);
    }

    #[test]
    fn a_second_process_cannot_open_a_state_directory_in_use() {
        let dir = TempDir::new("locked");
        let mut first = Store::new(store_config());
        let (held, _) = Persistence::recover(config(&dir.0), &mut first).unwrap();
        let mut second = Store::new(store_config());
        let refused = Persistence::recover(config(&dir.0), &mut second);
        assert!(
            matches!(refused, Err(PersistError::Locked(_))),
            "{refused:?}"
        );
        drop(held);
        assert!(Persistence::recover(config(&dir.0), &mut second).is_ok());
    }

    /// A state directory holding only a journal of 500 frames, one event for each of the
    /// customers `c-0` to `c-499`, as a crash leaves it; with the journal's path.
    fn five_hundred_frames(name: &str) -> (TempDir, PathBuf) {
        let running = TempDir::new(&format!("{name}-running"));
        let crashed = TempDir::new(name);
        let (live, handle, _) = start(&running.0);
        for i in 0..500 {
            live.txn(&format!("c-{i}"), "t", T0 + i, 100 + i);
        }
        crash_image(&running.0, live.journalled(), &crashed.0);
        handle.shutdown(&live.store).unwrap();
        let journal = newest(&crashed.0, "journal-");
        (crashed, journal)
    }

    /// The customers `c-N` held, by N.
    fn customers_held(store: &Store) -> Vec<i64> {
        let mut held: Vec<i64> = state(store)
            .keys()
            .map(|k| k.strip_prefix("c-").unwrap().parse().unwrap())
            .collect();
        held.sort_unstable();
        held
    }

    fn all_but(lost: &[i64]) -> Vec<i64> {
        (0..500).filter(|i| !lost.contains(i)).collect()
    }

    /// Damages the 500-frame journal, recovers, and checks that exactly the frames `lost` are
    /// gone, in `regions` damaged regions, and that the damage was reported.
    fn damaged_frames_are_skipped(
        name: &str,
        lost: &[i64],
        regions: usize,
        damage: impl FnOnce(&mut Vec<u8>, &[(usize, usize)]),
    ) -> (TempDir, RecoveryReport) {
        let (dir, journal) = five_hundred_frames(name);
        let mut bytes = fs::read(&journal).unwrap();
        let frames = frames_of(&bytes);
        assert_eq!(frames.len(), 500);
        damage(&mut bytes, &frames);
        fs::write(&journal, &bytes).unwrap();

        let (store, report) = recover(&dir.0);
        assert_eq!(customers_held(&store), all_but(lost));
        assert_eq!(report.frames, 500 - lost.len() as u64);
        let lost_bytes: usize = lost.iter().map(|&i| frames[i as usize].1).sum();
        assert_eq!(
            (
                report.damaged_frames,
                report.damaged_bytes,
                report.torn_bytes
            ),
            (lost.len() as u64, lost_bytes as u64, 0)
        );
        assert_eq!(report.damaged_journals.len(), 1);
        let damage = &report.damaged_journals[0];
        assert_eq!(damage.path, journal);
        assert_eq!(
            (damage.frames_applied, damage.regions, damage.frames_skipped),
            (500 - lost.len() as u64, regions, lost.len() as u64)
        );
        (dir, report)
    }

    #[test]
    fn a_flipped_bit_in_the_first_frame_of_500_loses_only_that_frame() {
        // The high bit of the length's second byte: the frame now claims to run past the end
        // of the file, which used to be read as a torn tail and lost all 500 frames.
        damaged_frames_are_skipped("first-frame", &[0], 1, |bytes, frames| {
            bytes[frames[0].0 + 1] ^= 0x80;
        });
    }

    #[test]
    fn a_flipped_bit_in_the_middle_of_500_frames_loses_only_that_frame() {
        damaged_frames_are_skipped("middle-frame", &[250], 1, |bytes, frames| {
            let (at, len) = frames[250];
            bytes[at + len - 5] ^= 0x08; // in the event's payload: the checksum fails
        });
    }

    #[test]
    fn two_damaged_regions_lose_only_their_frames() {
        // Frame 100's checksum; frames 300 and 301 together (an event's time, an id length).
        damaged_frames_are_skipped("two-regions", &[100, 300, 301], 2, |bytes, frames| {
            bytes[frames[100].0 + 6] ^= 0x01;
            bytes[frames[300].0 + 20] ^= 0x02;
            bytes[frames[301].0 + 9] ^= 0x10;
        });
    }

    #[test]
    fn a_damaged_journal_is_copied_to_corrupt_and_left_in_place() {
        let (dir, report) = damaged_frames_are_skipped("copied", &[7], 1, |bytes, frames| {
            bytes[frames[7].0 + 30] ^= 0x04;
        });
        let journal = newest(&dir.0, "journal-");
        let bytes = fs::read(&journal).unwrap();
        let damage = &report.damaged_journals[0];
        let copy = damage.copy.clone().expect("copied");
        assert_eq!(copy.parent(), Some(dir.0.join("corrupt").as_path()));
        assert_eq!(fs::read(&copy).unwrap(), bytes, "an exact copy");
        assert!(
            report.moved_aside.is_empty(),
            "the original stays: its good frames are needed until the next snapshot"
        );
        // A restart before the next snapshot finds the same damage but does not copy it again.
        let (store, again) = recover(&dir.0);
        assert_eq!(customers_held(&store), all_but(&[7]));
        assert_eq!(again.damaged_journals[0].copy, Some(copy));
        assert_eq!(fs::read_dir(dir.0.join("corrupt")).unwrap().count(), 1);
    }

    #[test]
    fn a_torn_tail_after_damage_in_the_middle_is_still_only_a_torn_tail() {
        let (dir, journal) = five_hundred_frames("damage-and-tear");
        let mut bytes = fs::read(&journal).unwrap();
        let frames = frames_of(&bytes);
        bytes[frames[10].0 + 20] ^= 0x01;
        let (last, _) = frames[499];
        bytes.truncate(last + 12); // a crash while writing the last frame
        fs::write(&journal, &bytes).unwrap();

        let (store, report) = recover(&dir.0);
        assert_eq!(customers_held(&store), all_but(&[10, 499]));
        assert_eq!(report.frames, 498);
        assert_eq!(report.torn_bytes, 12);
        assert_eq!(
            (report.damaged_frames, report.damaged_bytes),
            (1, frames[10].1 as u64),
            "the tear is not counted as damage"
        );
    }

    #[test]
    fn a_torn_tail_alone_is_not_damage() {
        let (dir, journal) = five_hundred_frames("torn-only");
        let mut bytes = fs::read(&journal).unwrap();
        let frames = frames_of(&bytes);
        for cut in 1..frames[499].1 {
            fs::write(&journal, &bytes[..frames[499].0 + cut]).unwrap();
            let (store, report) = recover(&dir.0);
            assert_eq!(customers_held(&store), all_but(&[499]), "cut at {cut}");
            assert_eq!(report.torn_bytes, cut as u64);
            assert!(report.damaged_journals.is_empty(), "cut at {cut}");
            assert_eq!(report.damaged_frames, 0);
        }
        assert!(!dir.0.join("corrupt").exists(), "nothing copied aside");
        // Zeros where the last frame should be: the file grew but its data never reached the
        // disk. A crash artefact too, not damage.
        let (last, len) = frames[499];
        bytes[last..].fill(0);
        bytes.extend_from_slice(&[0; 100]);
        fs::write(&journal, &bytes).unwrap();
        let (store, report) = recover(&dir.0);
        assert_eq!(customers_held(&store), all_but(&[499]));
        assert_eq!(report.torn_bytes, (len + 100) as u64);
        assert!(report.damaged_journals.is_empty());
    }

    #[test]
    fn a_damaged_last_frame_is_damage_not_a_torn_tail() {
        // The frame is whole but its checksum fails: it was written, and then damaged.
        let (_dir, report) =
            damaged_frames_are_skipped("last-frame", &[499], 1, |bytes, frames| {
                let (at, len) = frames[499];
                bytes[at + len - 1] ^= 0x20;
            });
        assert_eq!(report.torn_bytes, 0);
    }

    /// Snapshots twice with changes after each and then some, as a crash leaves it; with the
    /// state at the crash.
    fn two_snapshots_then_journal(name: &str) -> (TempDir, BTreeMap<String, Held>) {
        let running = TempDir::new(&format!("{name}-running"));
        let crashed = TempDir::new(name);
        let (live, handle, _) = start(&running.0);
        populate(&live);
        handle.snapshot(&live.store).unwrap();
        change_after_snapshot(&live);
        handle.snapshot(&live.store).unwrap();
        let before = live.journalled();
        live.txn("fay", "f-0", T0 + 70 * DAY, 900);
        live.outcome("erin", "e-1", Outcome::Failed);
        crash_image(&running.0, live.journalled() - before, &crashed.0);
        handle.shutdown(&live.store).unwrap();
        (crashed, state(&live.store))
    }

    #[test]
    fn after_two_snapshots_the_previous_generation_and_its_journals_are_kept() {
        let (dir, _) = two_snapshots_then_journal("generations");
        // Journal 1 went into snapshot 1, journal 2 into snapshot 2; journal 3 is open.
        assert_eq!(
            state_files(&dir.0),
            vec![
                journal_path(&dir.0, 2),
                journal_path(&dir.0, 3),
                snapshot_path(&dir.0, 1),
                snapshot_path(&dir.0, 2),
            ]
        );
    }

    #[test]
    fn a_damaged_newest_snapshot_recovers_from_the_previous_generation_losing_nothing() {
        let (dir, at_crash) = two_snapshots_then_journal("previous-generation");
        let snapshot = snapshot_path(&dir.0, 2);
        let mut bytes = fs::read(&snapshot).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        fs::write(&snapshot, &bytes).unwrap();

        let (store, report) = recover(&dir.0);
        assert_moved_aside(&dir.0, &report, &snapshot, &bytes);
        assert_eq!(report.snapshot, Some((1, 4)));
        assert_eq!(report.journals, 2, "journals 2 and 3");
        assert!(report.missing_journals.is_empty());
        assert_eq!(state(&store), at_crash, "nothing lost");
        assert!(holds_txn(&store, "fay", "f-0"));
    }

    #[test]
    fn the_generation_before_the_previous_is_deleted_by_the_next_snapshot() {
        let dir = TempDir::new("third-snapshot");
        let (live, handle, _) = start(&dir.0);
        populate(&live);
        for _ in 0..3 {
            handle.snapshot(&live.store).unwrap();
        }
        assert_eq!(
            state_files(&dir.0),
            vec![
                journal_path(&dir.0, 3),
                journal_path(&dir.0, 4),
                snapshot_path(&dir.0, 2),
                snapshot_path(&dir.0, 3),
            ]
        );
        handle.shutdown(&live.store).unwrap();
    }

    /// Recovers `dir`, makes `change`, and leaves `dir` as a crash right after would: one more
    /// journal, no snapshot.
    fn crash_after(dir: &Path, change: impl FnOnce(&Live)) {
        let running = TempDir::new("crash-after-running");
        fs::create_dir_all(&running.0).unwrap();
        for file in state_files(dir) {
            fs::copy(&file, running.0.join(file.file_name().unwrap())).unwrap();
        }
        let (live, handle, _) = start(&running.0);
        change(&live);
        crash_image(&running.0, live.journalled(), dir);
        handle.shutdown(&live.store).unwrap();
    }

    #[test]
    fn a_missing_journal_in_the_middle_of_the_sequence_is_reported() {
        let (dir, _, _) = journal_only("missing-journal");
        crash_after(&dir.0, |live| live.txn("yan", "y-0", T0 + 9 * DAY, 10));
        crash_after(&dir.0, |live| live.txn("xia", "x-0", T0 + 9 * DAY, 10));
        crash_after(&dir.0, |live| live.txn("wei", "w-0", T0 + 9 * DAY, 10));
        assert_eq!(
            state_files(&dir.0),
            (1..=4).map(|g| journal_path(&dir.0, g)).collect::<Vec<_>>()
        );
        fs::remove_file(journal_path(&dir.0, 2)).unwrap();
        fs::remove_file(journal_path(&dir.0, 3)).unwrap();

        let (store, report) = recover(&dir.0);
        assert_eq!(report.missing_journals, vec![2..=3]);
        assert_eq!(report.missing_journal_count(), 2);
        assert_eq!(report.journals, 2);
        let held = state(&store);
        assert!(held.contains_key("zed") && held.contains_key("wei"));
        assert!(!held.contains_key("yan") && !held.contains_key("xia"));
    }

    #[test]
    fn a_missing_journal_right_after_the_snapshot_is_reported() {
        // The newest snapshot is damaged and the journal after the previous one is gone.
        let (dir, _) = two_snapshots_then_journal("missing-after-snapshot");
        let snapshot = snapshot_path(&dir.0, 2);
        let mut bytes = fs::read(&snapshot).unwrap();
        bytes.truncate(40);
        fs::write(&snapshot, &bytes).unwrap();
        fs::remove_file(journal_path(&dir.0, 2)).unwrap();

        let (store, report) = recover(&dir.0);
        assert_eq!(report.snapshot, Some((1, 4)));
        assert_eq!(report.missing_journals, vec![2..=2]);
        assert!(
            !state(&store).contains_key("erin"),
            "erin was only in journal 2"
        );
        assert!(holds_txn(&store, "fay", "f-0"));
    }

    #[test]
    fn a_complete_sequence_reports_nothing_missing() {
        assert_eq!(missing_generations(Some(4), &[5, 6, 7], 7), vec![]);
        assert_eq!(missing_generations(None, &[3, 4], 4), vec![]);
        assert_eq!(missing_generations(None, &[], 0), vec![]);
        assert_eq!(missing_generations(Some(4), &[], 0), vec![]);
        assert_eq!(missing_generations(Some(1), &[4, 9], 9), vec![2..=3, 5..=8]);
        // A foreign file with a huge generation that was moved aside does not count.
        assert_eq!(missing_generations(Some(1), &[2, u64::MAX], 2), vec![]);
        assert_eq!(
            missing_generations(None, &[0, u64::MAX], u64::MAX),
            vec![1..=u64::MAX - 1]
        );
    }
}
