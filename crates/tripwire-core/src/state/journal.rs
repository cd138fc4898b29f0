//! The journal: every change to customer state, appended as a checksummed frame to an
//! in-memory buffer that a background thread writes out every 100 ms and fsyncs every second.
//!
//! Appending is a short critical section on a buffer mutex (taken while the customer's shard
//! lock is held, so frames follow the order changes were applied); it never touches the disk.
//! Replay is idempotent — an event already held is skipped, outcomes and credit lines are
//! last-writer-wins — so a snapshot taken while changes continue can be combined with the
//! journal that followed it.
//!
//! The same frames are the unit of replication: a [`ChangeSink`] (fleet mode) receives each
//! change as a [`Frame`] next to the journal, and [`encode`] writes it in the journal's format,
//! so a replica applies another's changes with the replay code (`persist::apply_frame`).
//!
//! # Frames
//!
//! A frame is `len: u32 | crc: u32 | kind: u8 | id_len: u16 | id | payload` (little-endian),
//! where `len` counts the bytes after the CRC and the CRC-32 covers them. The payload's length
//! is fixed by the kind (event 32, outcome 9, credit line 16 bytes), so a frame's length, kind
//! and id length must agree before its checksum is even computed.
//!
//! # Reading damaged journals
//!
//! Frames are checksummed one by one, so [`scan`] loses only what is damaged. On a frame whose
//! length or checksum is wrong it moves forward one byte at a time to the next position where a
//! whole frame decodes — length, kind and id length in agreement, checksum matching, content in
//! range — and goes on from there. Falling into step on a false frame needs a length, kind and
//! id length that agree, an id of at most 512 bytes, and then a 32-bit checksum that matches by
//! chance: less than one chance in 2^32 for each byte skipped, and far less in practice, since
//! few positions pass the structural test that comes before the checksum. (Customer ids cannot
//! hide a frame: the length and kind bytes are control characters, which ids refuse.)
//! The bytes skipped before a valid frame are a damaged region ([`Damaged`]). At the end of
//! the bytes, what does not decode is a *torn tail* when it is the beginning of a plausible
//! frame or zeros (a crash while writing: expected, not damage); anything else there is a
//! damaged region too.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::event::{Event, Outcome};
use crate::txn::CreditLine;

/// A frame kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A recorded transaction (the event in its 32-byte encoding, [`Event::to_bytes`]).
    Event = 1,
    /// An outcome report (txn hash, outcome).
    Outcome = 2,
    /// A credit line (limit, granted at).
    CreditLine = 3,
    /// A recorded transaction with the entities (merchant, device, IP, channel) it was counted
    /// on: the event in its 32-byte encoding, then four length-prefixed keys.
    EntityEvent = 4,
    /// A confirmed-fraud report: transaction hash, its time (or none), four keys.
    Fraud = 5,
}

/// The entity keys a frame carries, by [`EntityKind`](super::entity::EntityKind) discriminant.
pub type EntityKeys<'a> = [Option<&'a str>; 4];

/// Bytes of the four keys: each a u16 (length + 1; 0 for none) and its bytes.
const KEYS_MIN_LEN: usize = 8;
/// Most bytes of the four keys.
const KEYS_MAX_LEN: usize = 4 * (2 + 4 * crate::txn::MAX_ID_CHARS);
/// "No time known" in a fraud frame.
const NO_TIME: i64 = i64::MIN;

fn put_keys(keys: &EntityKeys<'_>, out: &mut Vec<u8>) {
    for key in keys {
        match key {
            Some(k) => {
                let k = &k.as_bytes()[..k.len().min(4 * crate::txn::MAX_ID_CHARS)];
                out.extend_from_slice(&(k.len() as u16 + 1).to_le_bytes());
                out.extend_from_slice(k);
            }
            None => out.extend_from_slice(&0u16.to_le_bytes()),
        }
    }
}

fn read_keys(mut bytes: &[u8]) -> Option<EntityKeys<'_>> {
    let mut keys: EntityKeys<'_> = [None; 4];
    for key in &mut keys {
        let n = u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]) as usize;
        bytes = &bytes[2..];
        if n > 0 {
            let k = bytes.get(..n - 1)?;
            *key = Some(std::str::from_utf8(k).ok()?);
            bytes = &bytes[n - 1..];
        }
    }
    bytes.is_empty().then_some(keys)
}

/// Most bytes the buffer holds before frames are dropped (and counted): the writer is stuck.
const MAX_BUFFER_BYTES: usize = 256 * 1024 * 1024;

/// Bytes before a frame's body: its length and its CRC-32.
const FRAME_HEADER_LEN: usize = 8;
/// Bytes at the start of a body that say what it is: the kind and the id's length.
const BODY_PREFIX_LEN: usize = 3;
/// Largest body a frame may declare.
const MAX_BODY_LEN: usize = 64 * 1024;
/// Longest customer id in bytes a frame found by resynchronisation may carry: ids are at most
/// [`crate::txn::MAX_ID_CHARS`] characters of at most 4 bytes. It bounds the checksum work
/// spent on each candidate position.
const MAX_RESYNC_ID_BYTES: usize = 4 * crate::txn::MAX_ID_CHARS;

/// The journal buffer shared by the hot path and the writer.
#[derive(Debug, Default)]
pub struct Journal {
    buffer: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    appended: AtomicU64,
}

impl Journal {
    /// An empty journal buffer.
    pub fn new() -> Journal {
        Journal::default()
    }

    fn append(&self, kind: FrameKind, customer: &str, payload: &[u8]) {
        // Customer ids are at most 128 characters (512 bytes), validated upstream.
        let id = customer.as_bytes();
        let id_len = u16::try_from(id.len()).unwrap_or(u16::MAX);
        let body_len = 1 + 2 + id.len() + payload.len();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[kind as u8]);
        crc.update(&id_len.to_le_bytes());
        crc.update(id);
        crc.update(payload);
        let crc = crc.finalize();
        let mut buffer = self.buffer.lock();
        if buffer.len() > MAX_BUFFER_BYTES {
            drop(buffer);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buffer.extend_from_slice(&(body_len as u32).to_le_bytes());
        buffer.extend_from_slice(&crc.to_le_bytes());
        buffer.push(kind as u8);
        buffer.extend_from_slice(&id_len.to_le_bytes());
        buffer.extend_from_slice(id);
        buffer.extend_from_slice(payload);
        drop(buffer);
        self.appended.fetch_add(1, Ordering::Relaxed);
    }

    /// Journals a recorded transaction.
    pub fn event(&self, customer: &str, event: &Event) {
        self.append(FrameKind::Event, customer, &event.to_bytes());
    }

    /// Journals an outcome report.
    pub fn outcome(&self, customer: &str, txn_hash: u64, outcome: Outcome) {
        let mut payload = [0u8; 9];
        payload[..8].copy_from_slice(&txn_hash.to_le_bytes());
        payload[8] = outcome as u8;
        self.append(FrameKind::Outcome, customer, &payload);
    }

    /// Journals a recorded transaction and the entities it was counted on.
    pub fn entity_event(&self, customer: &str, event: &Event, keys: &EntityKeys<'_>) {
        let mut payload = Vec::with_capacity(32 + KEYS_MIN_LEN + 64);
        payload.extend_from_slice(&event.to_bytes());
        put_keys(keys, &mut payload);
        self.append(FrameKind::EntityEvent, customer, &payload);
    }

    /// Journals a confirmed-fraud report.
    pub fn fraud(&self, customer: &str, txn_hash: u64, at: Option<i64>, keys: &EntityKeys<'_>) {
        let mut payload = Vec::with_capacity(16 + KEYS_MIN_LEN + 64);
        payload.extend_from_slice(&txn_hash.to_le_bytes());
        payload.extend_from_slice(&at.unwrap_or(NO_TIME).to_le_bytes());
        put_keys(keys, &mut payload);
        self.append(FrameKind::Fraud, customer, &payload);
    }

    /// Journals a credit line.
    pub fn credit_line(&self, customer: &str, line: CreditLine) {
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&line.limit.minor().to_le_bytes());
        payload[8..].copy_from_slice(&line.granted_at.to_le_bytes());
        self.append(FrameKind::CreditLine, customer, &payload);
    }

    /// Moves everything appended so far into `out` (which is cleared first), keeping the
    /// buffer's allocation for the next round.
    pub fn take(&self, out: &mut Vec<u8>) {
        out.clear();
        std::mem::swap(&mut *self.buffer.lock(), out);
    }

    /// Frames dropped because the writer fell too far behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Frames appended since start.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }
}

/// Receives every change the interceptor makes to customer state, in the order the changes
/// were applied, while the customer's shard lock is held (fleet mode publishes them).
///
/// Implementations must never block or wait: one bounded, non-blocking hand-off at most, a
/// change that does not fit is counted and dropped.
pub trait ChangeSink: Send + Sync + std::fmt::Debug {
    /// One change, just applied.
    fn change(&self, frame: &Frame<'_>);
}

/// Writes `frame` at the end of `out` in the journal's format (length, CRC-32, kind, customer,
/// payload): what [`decode`] reads back.
pub fn encode(frame: &Frame<'_>, out: &mut Vec<u8>) {
    let mut payload = [0u8; 32];
    let mut long = Vec::new();
    let (kind, customer, payload) = match frame {
        Frame::EntityEvent(id, event, keys) => {
            long.extend_from_slice(&event.to_bytes());
            put_keys(keys, &mut long);
            (FrameKind::EntityEvent, *id, &long[..])
        }
        Frame::Fraud(id, hash, at, keys) => {
            long.extend_from_slice(&hash.to_le_bytes());
            long.extend_from_slice(&at.unwrap_or(NO_TIME).to_le_bytes());
            put_keys(keys, &mut long);
            (FrameKind::Fraud, *id, &long[..])
        }
        Frame::Event(id, event) => {
            payload = event.to_bytes();
            (FrameKind::Event, *id, &payload[..])
        }
        Frame::Outcome(id, hash, outcome) => {
            payload[..8].copy_from_slice(&hash.to_le_bytes());
            payload[8] = *outcome as u8;
            (FrameKind::Outcome, *id, &payload[..9])
        }
        Frame::CreditLine(id, line) => {
            payload[..8].copy_from_slice(&line.limit.minor().to_le_bytes());
            payload[8..16].copy_from_slice(&line.granted_at.to_le_bytes());
            (FrameKind::CreditLine, *id, &payload[..16])
        }
    };
    let id = customer.as_bytes();
    let id_len = u16::try_from(id.len()).unwrap_or(u16::MAX);
    let id = &id[..usize::from(id_len)];
    let body_len = 1 + 2 + id.len() + payload.len();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind as u8]);
    crc.update(&id_len.to_le_bytes());
    crc.update(id);
    crc.update(payload);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&id_len.to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(payload);
}

/// One decoded frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Frame<'a> {
    /// A recorded transaction.
    Event(&'a str, Event),
    /// An outcome report.
    Outcome(&'a str, u64, Outcome),
    /// A credit line.
    CreditLine(&'a str, CreditLine),
    /// A recorded transaction and the entities it was counted on.
    EntityEvent(&'a str, Event, EntityKeys<'a>),
    /// A confirmed-fraud report: customer, transaction hash, the transaction's time when
    /// known, the entities it reaches.
    Fraud(&'a str, u64, Option<i64>, EntityKeys<'a>),
}

impl Frame<'_> {
    /// The customer the change is about.
    pub fn customer(&self) -> &str {
        match self {
            Frame::Event(id, _)
            | Frame::Outcome(id, _, _)
            | Frame::CreditLine(id, _)
            | Frame::EntityEvent(id, _, _)
            | Frame::Fraud(id, _, _, _) => id,
        }
    }
}

/// Why decoding stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end inside a frame (a crash while writing): everything before is good.
    Truncated,
    /// A frame's checksum or content is wrong.
    Corrupt,
}

/// Decodes the frame at the start of `bytes`; returns it and the bytes it used.
pub fn decode(bytes: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if !(BODY_PREFIX_LEN..=MAX_BODY_LEN).contains(&len) {
        return Err(FrameError::Corrupt);
    }
    let Some(body) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Err(FrameError::Truncated);
    };
    if crc32fast::hash(body) != crc {
        return Err(FrameError::Corrupt);
    }
    let id_len = u16::from_le_bytes([body[1], body[2]]) as usize;
    let id = body
        .get(3..3 + id_len)
        .and_then(|id| std::str::from_utf8(id).ok())
        .ok_or(FrameError::Corrupt)?;
    let payload = &body[3 + id_len..];
    let frame = match body[0] {
        1 => Frame::Event(id, Event::from_bytes(payload).ok_or(FrameError::Corrupt)?),
        2 if payload.len() == 9 => {
            let hash = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
            let outcome = match payload[8] {
                0 => Outcome::Pending,
                1 => Outcome::Settled,
                2 => Outcome::Failed,
                3 => Outcome::Reversed,
                _ => return Err(FrameError::Corrupt),
            };
            Frame::Outcome(id, hash, outcome)
        }
        3 if payload.len() == 16 => {
            let limit = i64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
            let granted_at = i64::from_le_bytes(payload[8..].try_into().expect("8 bytes"));
            let limit = crate::txn::Amount::from_minor(limit)
                .filter(|a| a.minor() > 0)
                .ok_or(FrameError::Corrupt)?;
            Frame::CreditLine(id, CreditLine { limit, granted_at })
        }
        4 if payload.len() >= 32 + KEYS_MIN_LEN => {
            let event = Event::from_bytes(&payload[..32]).ok_or(FrameError::Corrupt)?;
            let keys = read_keys(&payload[32..]).ok_or(FrameError::Corrupt)?;
            Frame::EntityEvent(id, event, keys)
        }
        5 if payload.len() >= 16 + KEYS_MIN_LEN => {
            let hash = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
            let at = i64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
            let keys = read_keys(&payload[16..]).ok_or(FrameError::Corrupt)?;
            Frame::Fraud(id, hash, (at != NO_TIME).then_some(at), keys)
        }
        _ => return Err(FrameError::Corrupt),
    };
    Ok((frame, FRAME_HEADER_LEN + len))
}

/// Payload bytes of a frame of this kind: the least and the most.
fn payload_len(kind: u8) -> Option<(usize, usize)> {
    match kind {
        k if k == FrameKind::Event as u8 => Some((32, 32)),
        k if k == FrameKind::Outcome as u8 => Some((9, 9)),
        k if k == FrameKind::CreditLine as u8 => Some((16, 16)),
        k if k == FrameKind::EntityEvent as u8 => Some((32 + KEYS_MIN_LEN, 32 + KEYS_MAX_LEN)),
        k if k == FrameKind::Fraud as u8 => Some((16 + KEYS_MIN_LEN, 16 + KEYS_MAX_LEN)),
        _ => None,
    }
}

/// The whole length of the frame that `bytes` would start, when its length, kind and id length
/// agree with one another (no checksum yet). Needs the first 11 bytes.
fn structured_len(bytes: &[u8], max_id: usize) -> Option<usize> {
    let head = bytes.get(..FRAME_HEADER_LEN + BODY_PREFIX_LEN)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let id_len = u16::from_le_bytes([head[9], head[10]]) as usize;
    let (least, most) = payload_len(head[8])?;
    let payload = len.checked_sub(BODY_PREFIX_LEN + id_len)?;
    (id_len <= max_id && (least..=most).contains(&payload) && len <= MAX_BODY_LEN)
        .then_some(FRAME_HEADER_LEN + len)
}

/// Whether `rest`, the undecodable end of a journal, is what a crash while writing leaves:
/// the beginning of a frame whose fields so far make sense but which ends early, or zeros (a
/// file system that grew the file but never wrote the data).
fn is_torn(rest: &[u8]) -> bool {
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    let Some(len) = rest.get(..4) else {
        return true;
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if !(BODY_PREFIX_LEN..=MAX_BODY_LEN).contains(&len) || rest.len() >= FRAME_HEADER_LEN + len {
        return false;
    }
    match rest.len() {
        ..=8 => true,
        9..=10 => payload_len(rest[8]).is_some(),
        _ => structured_len(rest, usize::MAX) == Some(FRAME_HEADER_LEN + len),
    }
}

/// The offset of the first position after the start of `bytes` where a whole, valid frame
/// decodes, if any.
fn resync(bytes: &[u8]) -> Option<usize> {
    (1..bytes.len()).find(|&at| {
        let candidate = &bytes[at..];
        structured_len(candidate, MAX_RESYNC_ID_BYTES)
            .is_some_and(|len| len <= candidate.len() && decode(candidate).is_ok())
    })
}

/// Frames a damaged region probably held: it is walked by the lengths of the frame headers
/// that still make sense; what is left when one does not counts as one more frame.
fn frames_in(region: &[u8]) -> u64 {
    let mut frames = 0;
    let mut at = 0;
    while at < region.len() {
        frames += 1;
        match structured_len(&region[at..], usize::MAX) {
            Some(len) if len <= region.len() - at => at += len,
            _ => break,
        }
    }
    frames
}

/// A run of bytes skipped because no valid frame starts in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damaged {
    /// Where it starts, from the start of the frames.
    pub offset: usize,
    /// Its length in bytes.
    pub len: usize,
    /// Frames it probably held (at least one), from the frame headers in it that still make
    /// sense.
    pub frames: u64,
}

/// What [`scan`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Valid frames, each handed to the caller.
    pub frames: u64,
    /// Damaged regions skipped, in order.
    pub damaged: Vec<Damaged>,
    /// Bytes of an incomplete frame (or zeros) at the end: a crash while writing.
    pub torn_bytes: u64,
}

impl Scan {
    /// Bytes skipped as damaged (the torn tail is not counted).
    pub fn damaged_bytes(&self) -> u64 {
        self.damaged.iter().map(|d| d.len as u64).sum()
    }

    /// Frames skipped as damaged, as estimated by [`Damaged::frames`].
    pub fn damaged_frames(&self) -> u64 {
        self.damaged.iter().map(|d| d.frames).sum()
    }
}

/// Decodes every valid frame in `bytes` (a journal's frames, after its header) and hands each
/// to `apply` in order, resynchronising past damaged frames (see the module documentation).
/// Every byte is accounted for: in a valid frame, in a damaged region, or in the torn tail.
/// Never panics, whatever the bytes.
pub fn scan<'a>(bytes: &'a [u8], mut apply: impl FnMut(Frame<'a>)) -> Scan {
    let mut scan = Scan::default();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if let Ok((frame, used)) = decode(rest) {
            apply(frame);
            scan.frames += 1;
            at += used;
            continue;
        }
        match resync(rest) {
            Some(skip) => {
                scan.damaged.push(Damaged {
                    offset: at,
                    len: skip,
                    frames: frames_in(&rest[..skip]),
                });
                at += skip;
            }
            None => {
                if is_torn(rest) {
                    scan.torn_bytes = rest.len() as u64;
                } else {
                    scan.damaged.push(Damaged {
                        offset: at,
                        len: rest.len(),
                        frames: frames_in(rest),
                    });
                }
                break;
            }
        }
    }
    scan
}

#[cfg(test)]
fn keys_len(keys: &EntityKeys<'_>) -> usize {
    keys.iter().map(|k| 2 + k.map_or(0, str::len)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Action;
    use crate::txn::Amount;

    #[test]
    fn frames_round_trip_and_damage_is_detected() {
        let journal = Journal::new();
        let event = Event::new(
            7,
            99,
            Amount::from_minor(1234).unwrap(),
            None,
            Action::Review,
        );
        journal.event("cust-1", &event);
        journal.outcome("cust-1", 99, Outcome::Failed);
        let line = CreditLine {
            limit: Amount::from_minor(500_000).unwrap(),
            granted_at: -3,
        };
        journal.credit_line("cust-é", line);
        let mut bytes = Vec::new();
        journal.take(&mut bytes);

        let mut frames = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (frame, used) = decode(rest).unwrap();
            frames.push(frame);
            rest = &rest[used..];
        }
        assert_eq!(
            frames,
            vec![
                Frame::Event("cust-1", event),
                Frame::Outcome("cust-1", 99, Outcome::Failed),
                Frame::CreditLine("cust-é", line),
            ]
        );

        assert_eq!(
            decode(&bytes[..bytes.len() - 1]).map(|(_, n)| n),
            decode(&bytes).map(|(_, n)| n),
            "first frame intact"
        );
        let first_len = decode(&bytes).unwrap().1;
        assert_eq!(
            decode(&bytes[..first_len - 1]).unwrap_err(),
            FrameError::Truncated
        );
        let mut encoded = Vec::new();
        for frame in &frames {
            encode(frame, &mut encoded);
        }
        assert_eq!(encoded, bytes, "encode writes what the journal appends");

        let mut flipped = bytes.clone();
        flipped[12] ^= 0x40;
        assert_eq!(decode(&flipped).unwrap_err(), FrameError::Corrupt);
    }

    /// A journal's frames for `n` changes over a few customers, and each frame's
    /// (offset, length).
    fn frames(n: usize) -> (Vec<u8>, Vec<(usize, usize)>) {
        let journal = Journal::new();
        for i in 0..n {
            let customer = format!("cust-{}", i % 7);
            match i % 3 {
                0 => journal.event(
                    &customer,
                    &Event::new(
                        i as i64,
                        i as u64,
                        Amount::from_minor(100 + i as i64).unwrap(),
                        None,
                        Action::Allow,
                    ),
                ),
                1 => journal.outcome(&customer, i as u64, Outcome::Settled),
                _ => journal.credit_line(
                    &customer,
                    CreditLine {
                        limit: Amount::from_minor(1_000 + i as i64).unwrap(),
                        granted_at: i as i64,
                    },
                ),
            }
        }
        let mut bytes = Vec::new();
        journal.take(&mut bytes);
        let mut spans = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (_, used) = decode(&bytes[at..]).unwrap();
            spans.push((at, used));
            at += used;
        }
        (bytes, spans)
    }

    /// Scans `bytes`; returns the scan and the index (in `all`'s frames) of each frame found.
    fn scan_indices(bytes: &[u8], all: &[u8], spans: &[(usize, usize)]) -> (Scan, Vec<usize>) {
        let originals: Vec<Frame<'_>> = spans
            .iter()
            .map(|&(at, _)| decode(&all[at..]).unwrap().0)
            .collect();
        let mut found = Vec::new();
        let mut next = 0;
        let scan = scan(bytes, |frame| {
            let i = (next..originals.len())
                .find(|&i| originals[i] == frame)
                .expect("a frame that was written, in order");
            found.push(i);
            next = i + 1;
        });
        (scan, found)
    }

    #[test]
    fn an_intact_journal_scans_whole() {
        let (bytes, spans) = frames(30);
        let (scan, found) = scan_indices(&bytes, &bytes, &spans);
        assert_eq!(found, (0..30).collect::<Vec<_>>());
        assert_eq!(
            scan,
            Scan {
                frames: 30,
                damaged: vec![],
                torn_bytes: 0
            }
        );
        assert_eq!(scan_indices(&[], &bytes, &spans).0, Scan::default());
    }

    #[test]
    fn every_single_bit_flip_loses_exactly_its_frame() {
        let (bytes, spans) = frames(12);
        for (i, &(at, len)) in spans.iter().enumerate() {
            for byte in at..at + len {
                for bit in 0..8 {
                    let mut damaged = bytes.clone();
                    damaged[byte] ^= 1 << bit;
                    let (scan, found) = scan_indices(&damaged, &bytes, &spans);
                    let want: Vec<usize> = (0..spans.len()).filter(|&j| j != i).collect();
                    assert_eq!(found, want, "byte {byte} bit {bit}");
                    assert_eq!(
                        scan.damaged,
                        vec![Damaged {
                            offset: at,
                            len,
                            frames: 1
                        }],
                        "byte {byte} bit {bit}"
                    );
                    assert_eq!(scan.torn_bytes, 0, "byte {byte} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn a_torn_last_frame_is_a_torn_tail_at_every_cut() {
        let (bytes, spans) = frames(5);
        let &(last, len) = spans.last().unwrap();
        for cut in 1..len {
            let torn = &bytes[..last + cut];
            let (scan, found) = scan_indices(torn, &bytes, &spans);
            assert_eq!(found, vec![0, 1, 2, 3], "cut {cut}");
            assert!(scan.damaged.is_empty(), "cut {cut}");
            assert_eq!(scan.torn_bytes, cut as u64, "cut {cut}");
        }
        // Zeros after the last whole frame are a tear too.
        let mut zeros = bytes.clone();
        zeros.extend_from_slice(&[0; 64]);
        let scan = scan(&zeros, |_| {});
        assert_eq!((scan.frames, scan.torn_bytes), (5, 64));
        assert!(scan.damaged.is_empty());
    }

    #[test]
    fn garbage_at_the_end_is_damage_not_a_tear() {
        let (mut bytes, _) = frames(5);
        let end = bytes.len();
        // A length that says a frame ends here, and then no valid frame.
        bytes.extend_from_slice(&[12, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
        let scan = scan(&bytes, |_| {});
        assert_eq!(scan.frames, 5);
        assert_eq!(scan.torn_bytes, 0);
        assert_eq!(
            scan.damaged,
            vec![Damaged {
                offset: end,
                len: 20,
                frames: 1
            }]
        );
    }

    #[test]
    fn garbage_between_frames_is_skipped() {
        let (bytes, spans) = frames(6);
        let (at, _) = spans[3];
        let mut spliced = bytes[..at].to_vec();
        spliced.extend_from_slice(b"\xff\x00\x13\x00 not a frame \x01\x02");
        spliced.extend_from_slice(&bytes[at..]);
        let (scan, found) = scan_indices(&spliced, &bytes, &spans);
        assert_eq!(found, (0..6).collect::<Vec<_>>());
        assert_eq!(scan.damaged.len(), 1);
        assert_eq!(scan.damaged_bytes(), 19);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Damaging any set of frames (a bit flipped in each) loses exactly those frames, in
        /// one region per run of neighbours, and every other frame comes back in order.
        #[test]
        fn damaged_frames_are_lost_and_no_others(
            n in 1usize..40,
            hits in proptest::collection::vec((0usize..40, 0usize..1000, 0u8..8), 0..6),
        ) {
            let (bytes, spans) = frames(n);
            let mut damaged = bytes.clone();
            let mut lost = std::collections::BTreeSet::new();
            for (frame, byte, bit) in hits {
                let (at, len) = spans[frame % n];
                damaged[at + byte % len] ^= 1 << bit;
                lost.insert(frame % n);
            }
            // Two flips in one frame can cancel out.
            lost.retain(|&i| {
                let (at, len) = spans[i];
                damaged[at..at + len] != bytes[at..at + len]
            });
            let (scan, found) = scan_indices(&damaged, &bytes, &spans);
            let want: Vec<usize> = (0..n).filter(|i| !lost.contains(i)).collect();
            proptest::prop_assert_eq!(&found, &want);
            // Damage at the end can read as a tail cut short by a crash: two flips, one raising
            // a header's length and one its id's length by the same amount, leave a header and
            // a body that agree on a frame longer than the bytes left, which is what a torn
            // write looks like. Then the torn bytes are whole lost frames at the end, and the
            // rest of the loss is damage.
            let mut torn_from = n;
            let mut torn_bytes = 0;
            while torn_bytes < scan.torn_bytes as usize && torn_from > 0 {
                torn_from -= 1;
                proptest::prop_assert!(lost.contains(&torn_from), "an intact frame read as torn");
                torn_bytes += spans[torn_from].1;
            }
            proptest::prop_assert_eq!(scan.torn_bytes, torn_bytes as u64);
            lost.retain(|&i| i < torn_from);
            let lost_bytes: usize = lost.iter().map(|&i| spans[i].1).sum();
            proptest::prop_assert_eq!(scan.damaged_bytes(), lost_bytes as u64);
            let runs = lost.iter().filter(|&&i| i == 0 || !lost.contains(&(i - 1))).count();
            proptest::prop_assert_eq!(scan.damaged.len(), runs);
            proptest::prop_assert!(scan.damaged_frames() >= runs as u64);
            proptest::prop_assert!(scan.damaged_frames() <= lost.len() as u64);
        }

        /// Every frame kind, entity keys included, comes back as it was encoded.
        #[test]
        fn entity_frames_round_trip(
            keys in proptest::collection::vec(proptest::option::of("[a-z0-9.:-]{0,20}"), 4),
            hash in proptest::prelude::any::<u64>(),
            at in proptest::option::of(-1_000_000_000_000i64..4_000_000_000_000_000),
        ) {
            let keys: EntityKeys<'_> = [keys[0].as_deref(), keys[1].as_deref(), keys[2].as_deref(), keys[3].as_deref()];
            let event = Event::new(5, hash, crate::txn::Amount::from_minor(1234).unwrap(), None, crate::rules::Action::Review);
            for frame in [Frame::EntityEvent("cust", event, keys), Frame::Fraud("cust", hash, at, keys)] {
                let mut bytes = Vec::new();
                encode(&frame, &mut bytes);
                let (back, used) = decode(&bytes).unwrap();
                proptest::prop_assert_eq!(back, frame);
                proptest::prop_assert_eq!(used, bytes.len());
            }
        }

        /// Whatever the bytes, scanning never panics and accounts for every byte.
        #[test]
        fn any_bytes_scan_without_panic(
            prefix in 0usize..6,
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            at in 0usize..400,
        ) {
            let (bytes, _) = frames(prefix);
            let mut mixed = bytes.clone();
            let at = at.min(mixed.len());
            mixed.splice(at..at, noise.iter().copied());
            let mut used = 0u64;
            let scan = scan(&mixed, |frame| {
                used += 11 + match frame {
                    Frame::Event(id, _) => id.len() + 32,
                    Frame::Outcome(id, _, _) => id.len() + 9,
                    Frame::CreditLine(id, _) => id.len() + 16,
                    Frame::EntityEvent(id, _, keys) => id.len() + 32 + keys_len(&keys),
                    Frame::Fraud(id, _, _, keys) => id.len() + 16 + keys_len(&keys),
                } as u64;
            });
            proptest::prop_assert_eq!(used + scan.damaged_bytes() + scan.torn_bytes, mixed.len() as u64);
        }
    }
}
