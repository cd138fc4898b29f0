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

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::event::{Event, Outcome};
use crate::txn::CreditLine;

/// A frame kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A recorded transaction (32-byte event).
    Event = 1,
    /// An outcome report (txn hash, outcome).
    Outcome = 2,
    /// A credit line (limit, granted at).
    CreditLine = 3,
}

/// Most bytes the buffer holds before frames are dropped (and counted): the writer is stuck.
const MAX_BUFFER_BYTES: usize = 256 * 1024 * 1024;

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
    let (kind, customer, payload) = match frame {
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
    if bytes.len() < 8 {
        return Err(FrameError::Truncated);
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if !(3..=64 * 1024).contains(&len) {
        return Err(FrameError::Corrupt);
    }
    let Some(body) = bytes.get(8..8 + len) else {
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
        _ => return Err(FrameError::Corrupt),
    };
    Ok((frame, 8 + len))
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
}
