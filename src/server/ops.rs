//! Rule operations shared by every trigger: one reload path (read → compile off the async
//! workers → swap → record), and rollback.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use super::AppState;
use super::http::ApiError;
use crate::metrics::ReloadTrigger;
use crate::reload::{LoadedRules, Refusal, sha256_hex};
use crate::rules::{self, RulesError};

/// What a reload did.
#[derive(Debug)]
pub enum Reloaded {
    /// A new version is live.
    Installed(Arc<LoadedRules>),
    /// The text is the live one already; nothing changed.
    Unchanged(Arc<LoadedRules>),
}

impl Reloaded {
    /// The rule set live after the reload.
    pub fn live(&self) -> &Arc<LoadedRules> {
        match self {
            Reloaded::Installed(l) | Reloaded::Unchanged(l) => l,
        }
    }
}

/// Reloads the rules from `text`, or from the rules file when `text` is `None`. Parsing and
/// compiling run on the blocking pool, never on the async workers; a refused set changes
/// nothing but the history and the refusal counter.
pub async fn reload(
    state: &Arc<AppState>,
    trigger: ReloadTrigger,
    text: Option<Bytes>,
) -> Result<Reloaded, ApiError> {
    let (bytes, source) = match text {
        Some(bytes) => (bytes, "PUT /admin/rules".to_string()),
        None => {
            let Some(path) = state.config.rules_path.clone() else {
                return Err(ApiError::Conflict("no rules file to reload from".into()));
            };
            let read = tokio::task::spawn_blocking({
                let path = path.clone();
                move || rules::read_file(&path)
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
            match read {
                Ok(bytes) => (Bytes::from(bytes), path.display().to_string()),
                Err(e) => {
                    let source = path.display().to_string();
                    state.interceptor.rules().record_refusal(&source, &[], &e);
                    return Err(refused(state, trigger, &source, &e));
                }
            }
        }
    };
    let live = state.interceptor.rules().load_full();
    if sha256_hex(&bytes) == live.version.sha256 {
        return Ok(Reloaded::Unchanged(live));
    }
    let worker_state = Arc::clone(state);
    let worker_source = source.clone();
    let installed = tokio::task::spawn_blocking(move || {
        worker_state
            .interceptor
            .rules()
            .install(&bytes, &worker_source)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    match installed {
        Ok(loaded) => {
            state.metrics.record_reload(trigger, true);
            state.metrics.set_live_rules(&loaded);
            info!(
                trigger = trigger.as_str(),
                %source,
                version = %loaded.version.label,
                rules = loaded.set.rules().len(),
                "rules reloaded"
            );
            Ok(Reloaded::Installed(loaded))
        }
        Err(e) => Err(refused(state, trigger, &source, &e)),
    }
}

/// Counts and logs a refusal and turns it into the API's answer.
pub fn refused(state: &AppState, trigger: ReloadTrigger, source: &str, e: &RulesError) -> ApiError {
    state.metrics.record_reload(trigger, false);
    let refusal = Refusal::from_error(e);
    warn!(
        trigger = trigger.as_str(),
        %source,
        error = %refusal.problems.join("; "),
        "rules refused; the live rule set keeps serving"
    );
    match e {
        RulesError::TooLarge { .. } => ApiError::PayloadTooLarge {
            limit: rules::MAX_RULES_BYTES,
        },
        _ => ApiError::RulesRefused(refusal),
    }
}

/// Rolls back to the previous good rule set.
pub async fn rollback(state: &Arc<AppState>) -> Result<Arc<LoadedRules>, ApiError> {
    // Rolling back recompiles the earlier rule set: like an install, off the async workers.
    let worker_state = Arc::clone(state);
    let rolled = tokio::task::spawn_blocking(move || worker_state.interceptor.rules().rollback())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match rolled {
        Ok(loaded) => {
            state.metrics.record_reload(ReloadTrigger::Rollback, true);
            state.metrics.set_live_rules(&loaded);
            info!(version = %loaded.version.label, source = %loaded.source, "rules rolled back");
            Ok(loaded)
        }
        Err(e) => Err(ApiError::Conflict(e.to_string())),
    }
}
