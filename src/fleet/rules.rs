//! Rules for the whole fleet: the rule text lives under the key `rules` of the KV bucket
//! `<stream>-fleet` (16 revisions kept, for rollback). `tripwire rules push` validates exactly
//! like `check` (same budgets) and puts the text; every replica watches the key and installs
//! each new value through the one reload path ([`Reloader`], compile off the async workers).
//!
//! A replica that refuses a pushed text keeps its last good set; the refusal is in its
//! `/admin/rules/history`, counted in `tripwire_rule_reloads{trigger="fleet",outcome="refused"}`
//! and reported under `status.<replica>` in the bucket, which `tripwire rules status` lists.
//! The same bucket holds `txn-keys`, the fleet's transaction-hash keys, written once by the
//! first replica so a transaction id hashes alike on every replica.

use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{FleetConfig, FleetError, js_error};
use crate::reload::{ReloadOutcome, ReloadTrigger, Reloader};
use crate::rules::{self, EvalBudget};

/// The key holding the fleet's rule text.
pub const RULES_KEY: &str = "rules";
const TXN_KEYS_KEY: &str = "txn-keys";
/// Revisions of the rules kept in the bucket (what rollback can reach).
pub const HISTORY: i64 = 16;

/// Opens the fleet's bucket, creating it the first time.
pub async fn bucket(js: &Context, config: &FleetConfig) -> Result<kv::Store, FleetError> {
    if let Ok(store) = js.get_key_value(config.bucket()).await {
        return Ok(store);
    }
    // The bucket's stream is made here, as `create_key_value` would: that call first asks for
    // the account's limits in a form nats-server 2.9 does not answer with.
    let bucket = config.bucket();
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("tripwire fleet: rules and shared keys".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: HISTORY,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| js_error("create the fleet bucket")(&e))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| js_error("open the fleet bucket")(&e))
}

/// The fleet's transaction-hash keys; the first replica to ask writes random ones.
pub async fn txn_keys(bucket: &kv::Store) -> Result<(u64, u64), FleetError> {
    let read = |bytes: &[u8]| -> Option<(u64, u64)> {
        let a = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let b = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some((a, b))
    };
    for _ in 0..3 {
        if let Some(bytes) = bucket
            .get(TXN_KEYS_KEY)
            .await
            .map_err(|e| js_error("read the fleet keys")(&e))?
        {
            return read(&bytes).ok_or_else(|| FleetError::JetStream {
                what: "read the fleet keys",
                message: "the txn-keys value is not 16 bytes".into(),
            });
        }
        let random = std::collections::hash_map::RandomState::new();
        let fresh = (random.hash_one(1u8), random.hash_one(2u8));
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&fresh.0.to_le_bytes());
        bytes.extend_from_slice(&fresh.1.to_le_bytes());
        // `create` fails when another replica won the race; the loop then reads its keys.
        if bucket
            .create(TXN_KEYS_KEY, Bytes::from(bytes))
            .await
            .is_ok()
        {
            return Ok(fresh);
        }
    }
    Err(FleetError::JetStream {
        what: "write the fleet keys",
        message: "neither read nor written after three tries".into(),
    })
}

/// What a replica reports under `status.<replica>` after each pushed revision.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplicaRules {
    /// The replica.
    pub replica: String,
    /// The bucket revision it last saw.
    pub revision: u64,
    /// The version label live on it.
    pub live_version: String,
    /// `installed`, `unchanged` or `refused`.
    pub outcome: String,
    /// Why it refused the revision, when it did.
    pub error: Option<String>,
}

fn status_key(replica: &str) -> String {
    let safe: String = replica
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("status.{safe}")
}

/// Watches the rules key and installs every new value, forever; re-watches after errors.
pub async fn watch(
    js: Context,
    config: FleetConfig,
    reloader: Arc<Reloader>,
    status: Arc<super::FleetStatus>,
) {
    loop {
        if let Err(e) = watch_once(&js, &config, &reloader, &status).await {
            tracing::warn!(error = %e, "fleet: the rules watch stopped; resuming");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn watch_once(
    js: &Context,
    config: &FleetConfig,
    reloader: &Reloader,
    status: &super::FleetStatus,
) -> Result<(), FleetError> {
    let bucket = bucket(js, config).await?;
    // The value held now is installed before the replica counts as ready; the watch then
    // delivers it again (unchanged) and everything after it.
    let current = bucket
        .entry(RULES_KEY)
        .await
        .map_err(|e| js_error("read the rules")(&e))?;
    if let Some(entry) = current.filter(|e| e.operation == Operation::Put) {
        install(&bucket, config, reloader, entry).await;
    }
    status.set_rules_synced();
    let mut entries = bucket
        .watch_with_history(RULES_KEY)
        .await
        .map_err(|e| js_error("watch the rules")(&e))?;
    while let Some(entry) = entries.next().await {
        let entry = entry.map_err(|e| js_error("watch the rules")(&e))?;
        if entry.operation == Operation::Put {
            install(&bucket, config, reloader, entry).await;
        }
    }
    Ok(())
}

/// Installs one revision through the reload path and reports the outcome under
/// `status.<replica>`.
async fn install(bucket: &kv::Store, config: &FleetConfig, reloader: &Reloader, entry: kv::Entry) {
    let (outcome, error) = match reloader
        .reload(ReloadTrigger::Fleet, Some(entry.value))
        .await
    {
        Ok(ReloadOutcome::Installed(_)) => ("installed", None),
        Ok(ReloadOutcome::Unchanged(_)) => ("unchanged", None),
        Err(e) => {
            tracing::warn!(revision = entry.revision, error = %e, "fleet: pushed rules refused; the last good set keeps serving");
            ("refused", Some(e.to_string()))
        }
    };
    let live = reloader.interceptor().rules().load();
    let report = ReplicaRules {
        replica: config.replica.clone(),
        revision: entry.revision,
        live_version: live.version.label.to_string(),
        outcome: outcome.into(),
        error,
    };
    if let Ok(json) = serde_json::to_vec(&report) {
        // The report is informational; a failure to write it changes nothing served.
        let _ = bucket
            .put(status_key(&config.replica), Bytes::from(json))
            .await;
    }
}

/// `tripwire rules push`: validates `path` as `check` does and puts it in the bucket.
/// Returns the revision written.
pub async fn push(
    config: &FleetConfig,
    path: &Path,
    budget: &EvalBudget,
) -> Result<u64, FleetError> {
    let summary = rules::check_file(path, budget)
        .map_err(|e| FleetError::Rules(rules::problem_report(path, &e)))?;
    let bytes =
        rules::read_file(path).map_err(|e| FleetError::Rules(rules::problem_report(path, &e)))?;
    let client = super::connect(config).await?;
    let js = async_nats::jetstream::new(client.clone());
    let bucket = bucket(&js, config).await?;
    let revision = bucket
        .put(RULES_KEY, Bytes::from(bytes))
        .await
        .map_err(|e| js_error("put the rules")(&e))?;
    let _ = client.flush().await;
    tracing::debug!(%summary, revision, "pushed");
    Ok(revision)
}

/// `tripwire rules rollback`: puts again the latest earlier revision that differs from the
/// current one and passes `check` with `budget` (a text put without validation is passed
/// over). Returns the revision written and the one whose text it carries.
pub async fn rollback(config: &FleetConfig, budget: &EvalBudget) -> Result<(u64, u64), FleetError> {
    let client = super::connect(config).await?;
    let js = async_nats::jetstream::new(client.clone());
    let bucket = bucket(&js, config).await?;
    let mut history = bucket
        .history(RULES_KEY)
        .await
        .map_err(|e| js_error("read the rules history")(&e))?;
    let mut puts = Vec::new();
    while let Some(entry) = history.next().await {
        let entry = entry.map_err(|e| js_error("read the rules history")(&e))?;
        if entry.operation == Operation::Put {
            puts.push(entry);
        }
    }
    let Some(current) = puts.pop() else {
        return Err(FleetError::Rules(
            "no rules were pushed to this fleet".into(),
        ));
    };
    let valid = |text: &[u8]| {
        rules::load_bytes(text)
            .and_then(|set| budget.check(&set))
            .is_ok()
    };
    let Some(previous) = puts
        .into_iter()
        .rev()
        .find(|e| e.value != current.value && valid(&e.value))
    else {
        return Err(FleetError::Rules(format!(
            "no earlier, different, valid revision to roll back to (the bucket keeps {HISTORY})"
        )));
    };
    let revision = bucket
        .put(RULES_KEY, previous.value.clone())
        .await
        .map_err(|e| js_error("put the rules")(&e))?;
    let _ = client.flush().await;
    Ok((revision, previous.revision))
}

/// What `tripwire rules status` shows.
#[derive(Debug, Serialize)]
pub struct FleetRulesStatus {
    /// The bucket's current revision of the rules, when any were pushed.
    pub revision: Option<u64>,
    /// The SHA-256 of the current text.
    pub sha256: Option<String>,
    /// What each replica last reported.
    pub replicas: Vec<ReplicaRules>,
}

/// `tripwire rules status`: the current revision and each replica's report.
pub async fn status(config: &FleetConfig) -> Result<FleetRulesStatus, FleetError> {
    let client = super::connect(config).await?;
    let js = async_nats::jetstream::new(client);
    let bucket = bucket(&js, config).await?;
    let current = bucket
        .entry(RULES_KEY)
        .await
        .map_err(|e| js_error("read the rules")(&e))?
        .filter(|e| e.operation == Operation::Put);
    let mut keys = bucket
        .keys()
        .await
        .map_err(|e| js_error("list the replicas")(&e))?;
    let mut replicas = Vec::new();
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if !key.starts_with("status.") {
            continue;
        }
        if let Ok(Some(value)) = bucket.get(&key).await
            && let Ok(report) = serde_json::from_slice::<ReplicaRules>(&value)
        {
            replicas.push(report);
        }
    }
    replicas.sort_by(|a, b| a.replica.cmp(&b.replica));
    Ok(FleetRulesStatus {
        revision: current.as_ref().map(|e| e.revision),
        sha256: current.as_ref().map(|e| rules::sha256_hex(&e.value)),
        replicas,
    })
}

/// `tripwire rules`: the fleet's rules in its NATS KV bucket.
#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Validate a rules file exactly like `check` (same budgets) and push it to every replica.
    Push {
        /// Where the fleet is.
        #[command(flatten)]
        fleet: FleetArgs,
        /// The rules file.
        path: std::path::PathBuf,
        /// The evaluation budget the replicas run with, as `serve --eval-budget` [default: 1000000].
        #[arg(long)]
        eval_budget: Option<u64>,
        /// The ring capacity the replicas run with, as `serve --ring-capacity` [default: 64].
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
        ring_capacity: Option<u16>,
    },
    /// Push again the latest earlier revision that differs from the current one and passes `check`.
    Rollback {
        /// Where the fleet is.
        #[command(flatten)]
        fleet: FleetArgs,
        /// The evaluation budget the replicas run with, as `serve --eval-budget` [default: 1000000].
        #[arg(long)]
        eval_budget: Option<u64>,
        /// The ring capacity the replicas run with, as `serve --ring-capacity` [default: 64].
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
        ring_capacity: Option<u16>,
    },
    /// Show the current revision and what each replica reported about it.
    Status {
        /// Where the fleet is.
        #[command(flatten)]
        fleet: FleetArgs,
    },
}

/// How `tripwire rules` reaches the fleet.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// The NATS server, nats://HOST:PORT.
    #[arg(long)]
    pub nats: String,
    /// The fleet's stream [default: tripwire].
    #[arg(long)]
    pub stream: Option<String>,
    /// NATS credentials file (.creds).
    #[arg(long = "nats-credentials")]
    pub credentials: Option<std::path::PathBuf>,
    /// CA certificate (PEM) to trust for TLS to NATS.
    #[arg(long = "nats-tls-ca")]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl FleetArgs {
    fn config(&self) -> FleetConfig {
        let mut config = FleetConfig::new(self.nats.clone());
        if let Some(stream) = &self.stream {
            config.stream = stream.clone();
        }
        if let Some(path) = &self.credentials {
            config.auth = super::FleetAuth::CredentialsFile(path.clone());
        }
        config.tls_ca = self.tls_ca.clone();
        config.replica = "rules-cli".into();
        config
    }
}

/// Runs a `tripwire rules` command and returns what to print.
pub fn run_command(command: &RulesCommand) -> Result<String, FleetError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FleetError::Rules(format!("cannot start the async runtime: {e}")))?;
    let budget = |eval_budget: &Option<u64>, ring_capacity: &Option<u16>| EvalBudget {
        ring_capacity: ring_capacity.map_or(
            crate::state::StoreConfig::default().ring_capacity,
            usize::from,
        ),
        max_cost: eval_budget.unwrap_or(crate::server::ServeConfig::default().eval_budget),
    };
    runtime.block_on(async {
        match command {
            RulesCommand::Push {
                fleet,
                path,
                eval_budget,
                ring_capacity,
            } => {
                let budget = budget(eval_budget, ring_capacity);
                let revision = push(&fleet.config(), path, &budget).await?;
                Ok(format!(
                    "pushed {} as revision {revision}; replicas install it as they see it (`tripwire rules status`)",
                    path.display()
                ))
            }
            RulesCommand::Rollback {
                fleet,
                eval_budget,
                ring_capacity,
            } => {
                let budget = budget(eval_budget, ring_capacity);
                let (revision, from) = rollback(&fleet.config(), &budget).await?;
                Ok(format!(
                    "rolled back: revision {revision} carries the text of revision {from}"
                ))
            }
            RulesCommand::Status { fleet } => {
                let status = status(&fleet.config()).await?;
                serde_json::to_string_pretty(&status)
                    .map_err(|e| FleetError::Rules(e.to_string()))
            }
        }
    })
}
