//! Background upkeep of the customer store: the idle sweep, on a thread of its own.
//!
//! Every `interval` (wall-clock cadence) the sweep drops customers idle, on event time, past
//! what any rule set loaded since start can look at, and never less than `--retain`
//! ([`Interceptor::sweep_idle_keeping`]). It takes shard locks one at a
//! time, so decisions wait at most for one shard's sweep. It runs on a plain thread rather than
//! an async task: it blocks on locks, and the interceptor knows no runtime.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::debug;

use super::Interceptor;

/// Upkeep settings.
#[derive(Clone, Debug)]
pub struct UpkeepConfig {
    /// How often idle customers are swept.
    pub sweep_interval: Duration,
    /// History kept however little the rules read (`--retain`); zero keeps what the rules
    /// loaded since start read.
    pub retain_at_least: Duration,
}

impl Default for UpkeepConfig {
    fn default() -> UpkeepConfig {
        UpkeepConfig {
            sweep_interval: Duration::from_secs(10),
            retain_at_least: Duration::ZERO,
        }
    }
}

/// The running upkeep thread; [`Upkeep::stop`] (or dropping it) ends it.
#[derive(Debug)]
pub struct Upkeep {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upkeep {
    /// Starts sweeping `interceptor` every `config.sweep_interval`.
    pub fn start(interceptor: Arc<Interceptor>, config: &UpkeepConfig) -> std::io::Result<Upkeep> {
        let (stop, stopped) = mpsc::channel::<()>();
        let interval = config.sweep_interval;
        let floor = i64::try_from(config.retain_at_least.as_micros()).unwrap_or(i64::MAX);
        let thread = std::thread::Builder::new()
            .name("upkeep".into())
            .spawn(move || {
                // A message or a hang-up on the channel both mean stop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    let removed = interceptor.sweep_idle_keeping(floor);
                    if removed > 0 {
                        debug!(removed, "idle customers dropped");
                    }
                }
            })?;
        Ok(Upkeep {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for a sweep in progress to finish.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.halt();
    }
}
