//! The snapshot file: its writer (one customer record after another, checksummed as it goes),
//! its check (header, trailer, checksum, generation and customer count, read back whole before
//! older generations are deleted) and its loader, which applies a snapshot whole or not at all.

use super::*;
use crate::state::entity::EntityRecord;

/// Ends the entity section of a version-3 snapshot.
const ENTITIES_END: u8 = 0xff;

/// A writer that keeps a running CRC-32 of what passes through.
pub(super) struct Checksummed<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(super) fn encode_customer(record: &CustomerRecord, out: &mut Vec<u8>) {
    let id = record.key.as_bytes();
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&record.credit_limit.to_le_bytes());
    out.extend_from_slice(&record.credit_granted_at.to_le_bytes());
    out.extend_from_slice(&record.last_event_at.to_le_bytes());
    out.extend_from_slice(&(record.ring.len() as u16).to_le_bytes());
    for event in record.ring.iter() {
        out.extend_from_slice(&event.to_bytes());
    }
    match &record.months {
        None => out.push(0),
        Some(months) => {
            out.push(1);
            for b in months.raw() {
                out.extend_from_slice(&b.month.to_le_bytes());
                out.extend_from_slice(&b.count.to_le_bytes());
                out.extend_from_slice(&b.failed.to_le_bytes());
                out.extend_from_slice(&b.sum.to_le_bytes());
            }
        }
    }
}

pub(super) fn write_snapshot(
    path: &Path,
    store: &Store,
    generation: u64,
    keys: (u64, u64),
) -> Result<u64, PersistError> {
    let file = File::create(path).map_err(io("create", path))?;
    let mut out = Checksummed {
        inner: BufWriter::with_capacity(1024 * 1024, file),
        crc: crc32fast::Hasher::new(),
    };
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER_LEN);
    header.extend_from_slice(SNAPSHOT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&generation.to_le_bytes());
    header.extend_from_slice(&keys.0.to_le_bytes());
    header.extend_from_slice(&keys.1.to_le_bytes());
    header.extend_from_slice(&(store.config().ring_capacity as u32).to_le_bytes());
    out.write_all(&header).map_err(io("write", path))?;
    let mut buffer = Vec::with_capacity(1024 * 1024);
    // Entities first: a transaction decided during the walk that an entity already counts is
    // then in its customer's record too, and journal replay (which counts a transaction on
    // its entities only when the customer takes it) does not count it twice.
    // The section ends with the byte 0xff where a record's kind would be.
    let entities = store.entities();
    for shard in 0..entities.shard_count() {
        buffer.clear();
        entities.for_each_in_shard(shard, |kind, key, record| {
            record.encode(kind, key, &mut buffer);
        });
        out.write_all(&buffer).map_err(io("write", path))?;
    }
    out.write_all(&[ENTITIES_END]).map_err(io("write", path))?;
    let mut customers = 0u64;
    for shard in 0..store.shard_count() {
        buffer.clear();
        // Copy the shard out under its lock, write it after: decisions wait for a memcpy,
        // never for the disk.
        store.for_each_in_shard(shard, |record| {
            encode_customer(record, &mut buffer);
            customers += 1;
        });
        out.write_all(&buffer).map_err(io("write", path))?;
    }
    out.write_all(&customers.to_le_bytes())
        .map_err(io("write", path))?;
    let crc = out.crc.clone().finalize();
    let mut file = out
        .inner
        .into_inner()
        .map_err(|e| io("write", path)(e.into_error()))?;
    file.write_all(&crc.to_le_bytes())
        .map_err(io("write", path))?;
    file.write_all(SNAPSHOT_END).map_err(io("write", path))?;
    file.sync_all().map_err(io("fsync", path))?;
    Ok(customers)
}

/// What the checksum pass over a snapshot found.
pub(super) struct CheckedSnapshot {
    /// Format version.
    pub(super) version: u32,
    /// Generation written in the header.
    pub(super) generation: u64,
    /// Transaction-hash keys.
    pub(super) keys: (u64, u64),
    /// Customers the trailer counts.
    pub(super) customers: u64,
    /// Bytes covered by the checksum (header, customers and count).
    pub(super) covered: u64,
}

/// Reads a whole snapshot and checks its magic, version, end marker and checksum, without
/// applying anything.
pub(super) fn check_snapshot(path: &Path) -> Result<CheckedSnapshot, String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    if len < (SNAPSHOT_HEADER_LEN + SNAPSHOT_TRAILER_LEN) as u64 {
        return Err("truncated: shorter than a header and a trailer".into());
    }
    // The checksum covers everything but the stored checksum and the end marker.
    let covered = len - 12;
    let mut reader = BufReader::with_capacity(1024 * 1024, file);
    let mut crc = crc32fast::Hasher::new();
    let mut left = covered;
    let mut chunk = vec![0u8; 1024 * 1024];
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER_LEN);
    // The customer count is the last 8 covered bytes.
    let mut tail = Vec::with_capacity(16);
    while left > 0 {
        let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        reader
            .read_exact(&mut chunk[..want])
            .map_err(|e| format!("truncated: {e}"))?;
        if header.len() < SNAPSHOT_HEADER_LEN {
            let need = SNAPSHOT_HEADER_LEN - header.len();
            header.extend_from_slice(&chunk[..need.min(want)]);
        }
        tail.extend_from_slice(&chunk[want.saturating_sub(8)..want]);
        let excess = tail.len().saturating_sub(8);
        tail.drain(..excess);
        crc.update(&chunk[..want]);
        left -= want as u64;
    }
    let stored_count = u64::from_le_bytes(
        tail.as_slice()
            .try_into()
            .map_err(|_| "truncated".to_string())?,
    );
    let mut trailer = [0u8; 12];
    reader
        .read_exact(&mut trailer)
        .map_err(|e| format!("truncated: {e}"))?;
    if &header[..8] != SNAPSHOT_MAGIC {
        return Err("not a tripwire snapshot (bad magic)".into());
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if !(OLDEST_VERSION_READ..=FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "snapshot format version {version}; this tripwire reads {OLDEST_VERSION_READ} to {FORMAT_VERSION}"
        ));
    }
    if &trailer[4..] != SNAPSHOT_END {
        return Err("truncated: no end marker".into());
    }
    if crc.finalize() != u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) {
        return Err("checksum mismatch".into());
    }
    Ok(CheckedSnapshot {
        version,
        generation: u64::from_le_bytes(header[12..20].try_into().expect("8 bytes")),
        keys: (
            u64::from_le_bytes(header[20..28].try_into().expect("8 bytes")),
            u64::from_le_bytes(header[28..36].try_into().expect("8 bytes")),
        ),
        customers: stored_count,
        covered,
    })
}

/// Reads a snapshot into `store`: checksum first, then apply. Returns the keys and the number
/// of customers, or why the file is not a valid snapshot (the caller clears the store).
pub(super) fn load_snapshot(path: &Path, store: &Store) -> Result<((u64, u64), u64), String> {
    let CheckedSnapshot {
        version,
        keys,
        customers: stored_count,
        covered,
        ..
    } = check_snapshot(path)?;

    // Then parse and apply. The checksum matched, so a parse error means a bug in the
    // writer; the caller then clears the store rather than keep half a snapshot.
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut reader = BufReader::with_capacity(1024 * 1024, file).take(covered - 8);
    let mut skip = [0u8; SNAPSHOT_HEADER_LEN];
    reader.read_exact(&mut skip).map_err(|e| e.to_string())?;
    if version >= 3 {
        loop {
            let mut kind = [0u8; 1];
            reader.read_exact(&mut kind).map_err(|e| e.to_string())?;
            if kind[0] == ENTITIES_END {
                break;
            }
            let (kind, key, record) = EntityRecord::decode(kind[0], &mut reader)?;
            store.entities().insert(kind, &key, record);
        }
    }
    let mut customers = 0u64;
    let now = jiff::Timestamp::now().as_microsecond();
    loop {
        let mut len = [0u8; 2];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.to_string()),
        }
        let mut id = vec![0u8; u16::from_le_bytes(len) as usize];
        let mut fixed = [0u8; 26];
        reader.read_exact(&mut id).map_err(|e| e.to_string())?;
        reader.read_exact(&mut fixed).map_err(|e| e.to_string())?;
        let id = String::from_utf8(id).map_err(|_| "customer id is not UTF-8".to_string())?;
        let limit = i64::from_le_bytes(fixed[..8].try_into().expect("8 bytes"));
        let granted_at = i64::from_le_bytes(fixed[8..16].try_into().expect("8 bytes"));
        let last_event_at = i64::from_le_bytes(fixed[16..24].try_into().expect("8 bytes"));
        let n = u16::from_le_bytes([fixed[24], fixed[25]]) as usize;
        let mut events = vec![0u8; n * 32];
        reader.read_exact(&mut events).map_err(|e| e.to_string())?;
        let events: Vec<Event> = events
            .chunks_exact(32)
            .map(Event::from_bytes)
            .collect::<Option<_>>()
            .ok_or("an event is out of range")?;
        let months = if version >= 2 {
            let mut flag = [0u8; 1];
            reader.read_exact(&mut flag).map_err(|e| e.to_string())?;
            match flag[0] {
                0 => None,
                1 => {
                    let mut raw = [0u8; MONTHS * 16];
                    reader.read_exact(&mut raw).map_err(|e| e.to_string())?;
                    let mut buckets = [MonthBucket {
                        month: i32::MIN,
                        count: 0,
                        failed: 0,
                        sum: 0,
                    }; MONTHS];
                    for (b, chunk) in buckets.iter_mut().zip(raw.chunks_exact(16)) {
                        b.month = i32::from_le_bytes(chunk[..4].try_into().expect("4 bytes"));
                        b.count = u16::from_le_bytes([chunk[4], chunk[5]]);
                        b.failed = u16::from_le_bytes([chunk[6], chunk[7]]);
                        b.sum = i64::from_le_bytes(chunk[8..16].try_into().expect("8 bytes"));
                    }
                    Some(MonthBuckets::from_raw(buckets))
                }
                _ => return Err("bad month-bucket flag".into()),
            }
        } else {
            None
        };
        let line = Amount::from_minor(limit)
            .filter(|a| a.minor() > 0)
            .map(|limit| CreditLine { limit, granted_at });
        store.with_customer(&id, |record, capacity| {
            record.months = months;
            if let Some(line) = line {
                record.offer_credit_line(line);
            }
            for event in &events {
                record.ring.push(*event, capacity);
            }
            record.last_event_at = record.last_event_at.max(last_event_at);
        });
        if let Some(latest) = events.iter().map(|e| e.at).max() {
            store.observe_event_time(latest.min(now));
        }
        customers += 1;
    }
    if stored_count != customers {
        return Err(format!(
            "holds {customers} customers but its trailer says {stored_count}"
        ));
    }
    Ok((keys, customers))
}
