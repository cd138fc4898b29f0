//! Applying the other replicas' changes: one ordered consumer over the whole stream's event
//! subjects, applied one message at a time through `Interceptor::apply_remote`.
//!
//! Stream order is the order changes were published, so each customer's changes from one
//! replica arrive in the order they were made. Applying is idempotent (the journal's replay):
//! a transaction decided on two replicas is held once, and its first recorded decision is what
//! a retry gets. Messages this run published itself are skipped by their origin header;
//! changes from an earlier run of the same replica are applied (a restarted replica without
//! state catches up on its own history too).
//!
//! The ordered consumer is recreated by the client from the last sequence delivered when the
//! connection or the consumer is lost, so an outage resumes where applying stopped.
//! A malformed message is counted in `tripwire_fleet_rejected_total` and skipped.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::OrderedConfig;
use futures_util::StreamExt;

use super::{FleetConfig, FleetStatus, ORIGIN_HEADER};
use crate::interceptor::Interceptor;
use crate::metrics::Metrics;
use crate::state::journal;

/// Applies the stream to `interceptor`, forever; reconnects after errors.
pub async fn run(
    js: Context,
    config: FleetConfig,
    boot: String,
    interceptor: Arc<Interceptor>,
    status: Arc<FleetStatus>,
    metrics: Arc<Metrics>,
) {
    // First where to start: the local state, the fleet snapshot, or the stream's beginning.
    super::snapshot::join_until_done(&js, &config, &interceptor, &status, &metrics).await;
    loop {
        if let Err(e) = consume(&js, &config, &boot, &interceptor, &status, &metrics).await {
            tracing::warn!(error = %e, applied = status.applied(), "fleet: the change consumer stopped; resuming");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn consume(
    js: &Context,
    config: &FleetConfig,
    boot: &str,
    interceptor: &Interceptor,
    status: &FleetStatus,
    metrics: &Metrics,
) -> Result<(), super::FleetError> {
    let stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| super::js_error("open the stream")(&e))?;
    let after = status.applied();
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: format!("_INBOX.tripwire.{}", nuid_like()),
            filter_subject: format!("{}.events.>", config.stream),
            deliver_policy: if after == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                }
            },
            ..Default::default()
        })
        .await
        .map_err(|e| super::js_error("create the consumer")(&e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| super::js_error("read the stream")(&e))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| super::js_error("read the stream")(&e))?;
        let Ok(info) = message.info() else {
            metrics.fleet.rejected.inc();
            continue;
        };
        let sequence = info.stream_sequence;
        let published = info.published;
        let own = message
            .headers
            .as_ref()
            .and_then(|h| h.get(ORIGIN_HEADER))
            .is_some_and(|origin| origin.as_str() == boot);
        if !own {
            apply_payload(interceptor, &message.payload, metrics);
            let lag_nanos =
                jiff::Timestamp::now().as_nanosecond() - published.unix_timestamp_nanos();
            metrics
                .fleet
                .lag_seconds
                .observe((lag_nanos.max(0) as f64) / 1e9);
        }
        status.set_applied(sequence);
    }
    Ok(())
}

/// Applies one message's frame; a frame that does not decode is counted and skipped.
fn apply_payload(interceptor: &Interceptor, payload: &[u8], metrics: &Metrics) {
    match journal::decode(payload) {
        Ok((frame, used)) if used == payload.len() => {
            interceptor.apply_remote(&frame);
            metrics.fleet.applied.inc();
        }
        Ok(_) | Err(_) => {
            metrics.fleet.rejected.inc();
            tracing::warn!(
                bytes = payload.len(),
                "fleet: a message is not one intact change frame; skipped"
            );
        }
    }
}

fn nuid_like() -> String {
    format!(
        "{:x}{:x}",
        jiff::Timestamp::now().as_nanosecond(),
        std::process::id()
    )
}
