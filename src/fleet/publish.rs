//! Publishing this replica's changes: the bounded queue the interceptor hands changes to, and
//! the task that publishes them to JetStream in batches.
//!
//! The hand-off ([`ChangeQueue::change`]) runs under the customer's shard lock, so it is one
//! `try_send` of an encoded frame and nothing else: it never waits, and a change that does not
//! fit is dropped, counted (`tripwire_fleet_dropped_total`) and logged at most once a second.
//! The publisher keeps a batch until JetStream has acknowledged every message in it, retrying
//! while NATS is down; meanwhile the queue fills up to its bound. Every message carries a
//! `Nats-Msg-Id` of replica, boot and sequence, so a retry of a message that did arrive is
//! dropped by JetStream's duplicate window instead of being stored twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{FleetConfig, MSG_ID_HEADER, ORIGIN_HEADER, partition};
use crate::metrics::Metrics;
use crate::state::journal::{self, ChangeSink, Frame};

/// Messages published per batch at most.
const BATCH: usize = 256;

/// A change's frame: inline up to 128 bytes (a customer id up to 85 bytes), so queueing most
/// changes allocates nothing.
type FrameBytes = smallvec::SmallVec<[u8; 128]>;

thread_local! {
    /// Where `change` encodes before copying into the queued record; grows once per thread.
    static ENCODE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One change waiting to be published.
#[derive(Debug)]
pub struct QueuedChange {
    partition: u32,
    frame: FrameBytes,
}

/// The bounded queue between the interceptor and the publisher.
#[derive(Debug)]
pub struct ChangeQueue {
    sender: mpsc::Sender<QueuedChange>,
    boot: String,
    metrics: Arc<Metrics>,
    /// Wall-clock second of the last "dropped" log line, so a flood logs once a second.
    last_drop_log: AtomicI64,
}

impl ChangeQueue {
    /// A queue of `config.queue_capacity` changes and the receiver the publisher drains.
    pub fn new(
        config: &FleetConfig,
        metrics: Arc<Metrics>,
    ) -> (ChangeQueue, mpsc::Receiver<QueuedChange>) {
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let queue = ChangeQueue {
            sender,
            // Names this run of the replica: message ids and the origin header carry it, so a
            // restarted replica's sequence numbers never collide with its previous run's.
            boot: format!(
                "{}.{:x}{:x}",
                config.replica,
                jiff::Timestamp::now().as_nanosecond(),
                std::process::id()
            ),
            metrics,
            last_drop_log: AtomicI64::new(0),
        };
        (queue, receiver)
    }

    /// This run's origin name (`replica.boot`).
    pub fn boot(&self) -> &str {
        &self.boot
    }
}

impl ChangeSink for ChangeQueue {
    fn change(&self, frame: &Frame<'_>) {
        let customer = frame.customer();
        let frame = ENCODE_BUFFER.with_borrow_mut(|buffer| {
            buffer.clear();
            journal::encode(frame, buffer);
            FrameBytes::from_slice(buffer)
        });
        let change = QueuedChange {
            partition: partition(customer),
            frame,
        };
        match self.sender.try_send(change) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.fleet.dropped.inc();
                let now = jiff::Timestamp::now().as_second();
                if self.last_drop_log.swap(now, Ordering::Relaxed) != now {
                    tracing::warn!(
                        dropped_total = self.metrics.fleet.dropped.get(),
                        "fleet: the publish queue is full (NATS down or too slow); a change was not replicated"
                    );
                }
            }
        }
    }
}

/// Publishes the queue until the sender is gone.
pub async fn run(
    js: Context,
    config: FleetConfig,
    boot: String,
    mut receiver: mpsc::Receiver<QueuedChange>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut sequence = 0u64;
    loop {
        batch.clear();
        if receiver.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        metrics
            .fleet
            .queue_depth
            .set(i64::try_from(receiver.len()).unwrap_or(i64::MAX));
        let mut pending: Vec<(String, HeaderMap, Bytes)> = batch
            .drain(..)
            .map(|change| {
                sequence += 1;
                let mut headers = HeaderMap::new();
                headers.insert(MSG_ID_HEADER, format!("{boot}.{sequence}").as_str());
                headers.insert(ORIGIN_HEADER, boot.as_str());
                (
                    format!("{}.events.{}", config.stream, change.partition),
                    headers,
                    Bytes::copy_from_slice(&change.frame),
                )
            })
            .collect();
        let mut backoff = Duration::from_millis(100);
        while !pending.is_empty() {
            pending = publish_batch(&js, pending).await;
            if pending.is_empty() {
                break;
            }
            tracing::debug!(
                unacknowledged = pending.len(),
                "fleet: publishing failed; retrying"
            );
            metrics.fleet.publish_retries.inc();
            // While NATS is away the queue fills behind this batch: keep the gauge current.
            metrics
                .fleet
                .queue_depth
                .set(i64::try_from(receiver.len()).unwrap_or(i64::MAX));
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        metrics
            .fleet
            .queue_depth
            .set(i64::try_from(receiver.len()).unwrap_or(i64::MAX));
    }
}

/// Publishes `batch` in order and waits for the acknowledgements; returns what was not
/// acknowledged, in order, to be sent again with the same message ids.
async fn publish_batch(
    js: &Context,
    batch: Vec<(String, HeaderMap, Bytes)>,
) -> Vec<(String, HeaderMap, Bytes)> {
    let mut acks = Vec::with_capacity(batch.len());
    for (subject, headers, payload) in &batch {
        acks.push(
            js.publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await,
        );
    }
    let mut failed = Vec::new();
    for (ack, message) in acks.into_iter().zip(batch) {
        let acknowledged = match ack {
            Ok(future) => future.await.is_ok(),
            Err(_) => false,
        };
        if !acknowledged {
            failed.push(message);
        }
    }
    failed
}

/// One decision waiting to be published as a decision-log line.
#[derive(Debug)]
struct DecisionLine {
    logged_at: jiff::Timestamp,
    latency: Duration,
    request: Bytes,
    answer: Bytes,
}

/// `publish_decisions`: decision-log lines also go to `<stream>.decisions`, through a bounded
/// queue like the changes. Best effort: a line that does not fit, or that JetStream does not
/// acknowledge, is dropped and counted (`tripwire_fleet_decisions_dropped_total`); decisions
/// never wait and lines are not retried (the file log is the audit record).
#[derive(Clone, Debug)]
pub struct DecisionPublisher {
    sender: mpsc::Sender<DecisionLine>,
    metrics: Arc<Metrics>,
}

/// Decision lines queued at most.
const DECISION_QUEUE: usize = 16_384;

impl DecisionPublisher {
    /// Starts the publishing task.
    pub fn start(
        js: Context,
        config: &FleetConfig,
        metrics: Arc<Metrics>,
    ) -> (DecisionPublisher, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(DECISION_QUEUE);
        let task = tokio::spawn(publish_decisions(
            js,
            config.decisions_subject(),
            receiver,
            Arc::clone(&metrics),
        ));
        (DecisionPublisher { sender, metrics }, task)
    }

    /// Queues one decision's line; never waits.
    pub fn record(&self, request: Bytes, answer: Bytes, latency: Duration) {
        let line = DecisionLine {
            logged_at: jiff::Timestamp::now(),
            latency,
            request,
            answer,
        };
        if self.sender.try_send(line).is_err() {
            self.metrics.fleet.decisions_dropped.inc();
        }
    }
}

async fn publish_decisions(
    js: Context,
    subject: String,
    mut receiver: mpsc::Receiver<DecisionLine>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        batch.clear();
        if receiver.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let mut acks = Vec::with_capacity(batch.len());
        for d in batch.drain(..) {
            let mut line = Vec::with_capacity(1024);
            crate::decision_log::render_line(
                d.logged_at,
                d.latency,
                &d.request,
                &d.answer,
                &mut line,
            );
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            acks.push(js.publish(subject.clone(), Bytes::from(line)).await);
        }
        for ack in acks {
            let ok = match ack {
                Ok(future) => future.await.is_ok(),
                Err(_) => false,
            };
            if !ok {
                metrics.fleet.decisions_dropped.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{Amount, CreditLine};

    #[test]
    fn a_change_is_queued_as_its_journal_frame_and_a_full_queue_drops_and_counts() {
        let mut config = FleetConfig::new("nats://127.0.0.1:1");
        config.queue_capacity = 2;
        let metrics = Arc::new(Metrics::new());
        let (queue, mut receiver) = ChangeQueue::new(&config, Arc::clone(&metrics));
        let line = CreditLine {
            limit: Amount::from_minor(500_000).unwrap(),
            granted_at: 7,
        };
        let long_id = "c".repeat(300);
        queue.change(&Frame::CreditLine("ann", line));
        queue.change(&Frame::CreditLine(&long_id, line));
        queue.change(&Frame::CreditLine("ann", line));
        assert_eq!(metrics.fleet.dropped.get(), 1, "the third did not fit");

        let first = receiver.try_recv().unwrap();
        assert_eq!(first.partition, partition("ann"));
        assert!(!first.frame.spilled(), "a short id stays inline");
        let (frame, used) = journal::decode(&first.frame).unwrap();
        assert_eq!(
            (frame, used),
            (Frame::CreditLine("ann", line), first.frame.len())
        );
        let second = receiver.try_recv().unwrap();
        assert_eq!(
            journal::decode(&second.frame).unwrap().0,
            Frame::CreditLine(&long_id, line)
        );
    }
}
