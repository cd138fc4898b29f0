//! The decision log: one JSON line per decision — the request as received, the answer as sent,
//! the in-process latency — written by a background thread.
//!
//! The hot path only hands two reference-counted buffers to a bounded channel; when the channel
//! is full the line is dropped and counted, never waited for. The writer rotates the file by
//! size, keeping a fixed number of older files (`PATH.1` newest ... `PATH.N` oldest).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use bytes::Bytes;
use tracing::warn;

/// Settings of the decision log.
#[derive(Clone, Debug)]
pub struct DecisionLogConfig {
    /// File to write.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
    /// Lines buffered between the hot path and the writer.
    pub queue: usize,
}

impl DecisionLogConfig {
    /// Defaults: rotate at 100 MiB, keep 5 files, queue 16,384 lines.
    pub fn new(path: PathBuf) -> DecisionLogConfig {
        DecisionLogConfig {
            path,
            max_bytes: 100 * 1024 * 1024,
            keep: 5,
            queue: 16_384,
        }
    }
}

struct Entry {
    logged_at: jiff::Timestamp,
    latency_micros: u64,
    request: Bytes,
    answer: Bytes,
}

/// Handle to the decision log, cheap to share.
#[derive(Clone)]
pub struct DecisionLog {
    tx: SyncSender<Entry>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog")
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl DecisionLog {
    /// Opens (appending) the log file, making its directory if needed, and starts the writer
    /// thread.
    pub fn open(config: DecisionLogConfig) -> std::io::Result<DecisionLog> {
        // A log directory that does not exist yet is made, as the config example expects.
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(&config.path)?;
        let size = file.metadata()?.len();
        let (tx, rx) = sync_channel(config.queue.max(1));
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_loop(rx, config, file, size))?;
        Ok(DecisionLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues one decision; returns false (and counts a drop) when the writer is behind.
    pub fn record(&self, request: Bytes, answer: Bytes, latency: Duration) -> bool {
        let entry = Entry {
            logged_at: jiff::Timestamp::now(),
            latency_micros: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            request,
            answer,
        };
        match self.tx.try_send(entry) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Lines dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn rotate(config: &DecisionLogConfig) -> std::io::Result<File> {
    if config.keep == 0 {
        std::fs::remove_file(&config.path)?;
    } else {
        for n in (1..config.keep).rev() {
            let from = rotated(&config.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&config.path, n + 1))?;
            }
        }
        std::fs::rename(&config.path, rotated(&config.path, 1))?;
    }
    open_append(&config.path)
}

/// Renders one decision-log line into `line` (cleared first): what the file gets, and what fleet
/// mode publishes with `publish_decisions`.
pub fn render_line(
    logged_at: jiff::Timestamp,
    latency: Duration,
    request: &Bytes,
    answer: &Bytes,
    line: &mut Vec<u8>,
) {
    let entry = Entry {
        logged_at,
        latency_micros: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        request: request.clone(),
        answer: answer.clone(),
    };
    render(&entry, line);
}

/// Renders one line: the request body as it was sent, made compact so that a pretty-printed body
/// still makes one line (see [`compact_json`]).
fn render(entry: &Entry, line: &mut Vec<u8>) {
    line.clear();
    line.extend_from_slice(b"{\"logged_at\":\"");
    line.extend_from_slice(entry.logged_at.to_string().as_bytes());
    line.extend_from_slice(b"\",\"latency_us\":");
    line.extend_from_slice(entry.latency_micros.to_string().as_bytes());
    line.extend_from_slice(b",\"request\":");
    compact_json(&entry.request, line);
    line.extend_from_slice(b",\"answer\":");
    line.extend_from_slice(&entry.answer);
    line.extend_from_slice(b"}\n");
}

/// Appends `raw`, a JSON text the decide parser accepted, without the whitespace between its
/// tokens. It is not parsed again: re-parsing would fail on what the decide parser lets through
/// in fields it ignores (nesting deeper than a tree parser's limit), and a log line without its
/// request is no audit. Bytes that are not UTF-8, which can only stand inside a string the
/// decide parser ignored, become U+FFFD so that the line stays valid JSON.
fn compact_json(raw: &[u8], out: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(raw);
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            out.push(b);
            in_string = b == b'"';
        }
    }
}

fn write_loop(rx: Receiver<Entry>, config: DecisionLogConfig, file: File, mut size: u64) {
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let mut line = Vec::with_capacity(1024);
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(entry) = next {
            render(&entry, &mut line);
            if size > 0 && size + line.len() as u64 > config.max_bytes {
                let flushed = out.flush();
                match flushed.and_then(|()| rotate(&config)) {
                    Ok(file) => {
                        out = BufWriter::with_capacity(256 * 1024, file);
                        size = 0;
                    }
                    Err(e) => {
                        warn!(error = %e, path = %config.path.display(), "decision log rotation failed")
                    }
                }
            }
            match out.write_all(&line) {
                Ok(()) => {
                    size += line.len() as u64;
                    failing = false;
                }
                Err(e) if !failing => {
                    warn!(error = %e, path = %config.path.display(), "decision log write failed");
                    failing = true;
                }
                Err(_) => {}
            }
            next = rx.try_recv().ok();
        }
        // The queue is empty: make what was written visible before waiting again.
        if let Err(e) = out.flush()
            && !failing
        {
            warn!(error = %e, "decision log flush failed");
            failing = true;
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_line(request: &[u8]) -> Vec<u8> {
        let entry = Entry {
            logged_at: jiff::Timestamp::UNIX_EPOCH,
            latency_micros: 7,
            request: Bytes::copy_from_slice(request),
            answer: Bytes::from_static(b"{\"decision\":\"allow\"}"),
        };
        let mut line = Vec::new();
        render(&entry, &mut line);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        line
    }

    fn line_for(request: &[u8]) -> serde_json::Value {
        serde_json::from_slice(&render_line(request)).expect("every line is JSON")
    }

    #[test]
    fn a_pretty_printed_request_is_logged_on_one_line_as_sent() {
        let line = line_for(b"{\n  \"customer_id\": \"c 1\",\n  \"note\": \"a \\\" b\\n\"\n}");
        assert_eq!(
            line["request"]["customer_id"], "c 1",
            "spaces in strings stay"
        );
        assert_eq!(line["request"]["note"], "a \" b\n");
        assert_eq!(line["answer"]["decision"], "allow");
    }

    #[test]
    fn deep_nesting_and_bad_utf8_in_ignored_fields_still_log_the_request() {
        let mut deep = b"{\"customer_id\":\"c-deep\",\"extra\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 300));
        deep.extend(std::iter::repeat_n(b']', 300));
        deep.push(b'}');
        // Read the way an audit tool reads it: typed, skipping what it does not need.
        #[derive(serde::Deserialize)]
        struct Line {
            request: Request,
        }
        #[derive(serde::Deserialize)]
        struct Request {
            customer_id: String,
        }
        let line: Line = serde_json::from_slice(&render_line(&deep)).expect("the line is JSON");
        assert_eq!(line.request.customer_id, "c-deep");

        let bad = b"{\"customer_id\":\"c-bad\",\"extra\":\"\xff\xfe\"}";
        let line = line_for(bad);
        assert_eq!(line["request"]["customer_id"], "c-bad");
        assert_eq!(line["request"]["extra"], "\u{fffd}\u{fffd}");
    }
}
