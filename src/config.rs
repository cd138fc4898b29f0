//! One configuration for `tripwire serve`. Every setting is declared once, in
//! [`ServeSettings`]: clap reads it from the command line and serde from the optional TOML file
//! (`--config`), under the same names (`_` for `-`). Flags win over the file and the file over
//! the defaults, each of which has one home in the type it configures (`ServeConfig::default()`,
//! `StoreConfig::default()`, ...). [`Config::resolve`] validates everything once, at start, and
//! every error names the key at fault.
//!
//! The file can also hold what no flag can express: the proxy's `[[proxy.routes]]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgMatches, FromArgMatches};
use serde::Deserialize;

use crate::decision_log::DecisionLogConfig;
use crate::fleet::{FleetAuth, FleetConfig};
use crate::interceptor::upkeep::UpkeepConfig;
use crate::reload::TriggerConfig;
use crate::rules::text::parse_std_duration;
use crate::server::ServeConfig;
use crate::server::proxy::routes::{FieldMapping, PathPattern};
use crate::server::proxy::{FailurePolicy, InvalidPolicy, ProxyConfig, ReviewPolicy, Route};
use crate::state::StoreConfig;

/// The environment variable holding the admin bearer token.
pub const ADMIN_TOKEN_VAR: &str = "TRIPWIRE_ADMIN_TOKEN";

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, dotted (`proxy.routes[0].fields.amount`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The settings of `tripwire serve`, as given: every field is `None` (or empty) unless a flag
/// or the file sets it. The doc comment of each field is its `--help` text.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// TOML config file (every flag below, plus the proxy routes).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Rules file (YAML).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Payment listener address [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    /// Admin listener address [default: 127.0.0.1:9090].
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Tokio worker threads [default: all cores].
    #[arg(long)]
    pub workers: Option<u16>,
    /// Most customers held in memory; the least recently active are evicted past it [default: 1000000].
    #[arg(long)]
    pub max_customers: Option<u64>,
    /// Events kept per customer [default: 64].
    #[arg(long)]
    pub ring_capacity: Option<u16>,
    /// Most merchants, devices, IPs and channels held for `by:` windows; an approximately least recently active one is dropped past it [default: 1000000].
    #[arg(long)]
    pub max_entities: Option<u64>,
    /// Largest request body accepted, bytes [default: 65536].
    #[arg(long)]
    pub max_body_bytes: Option<u64>,
    /// Do not watch the rules file; reload only on SIGHUP or PUT /admin/rules.
    #[arg(long)]
    #[serde(skip)]
    pub no_watch: bool,
    /// Watch the rules file (the file's form of --no-watch) [default: true].
    #[arg(skip)]
    pub watch: Option<bool>,
    /// Write one JSON line per decision to this file.
    #[arg(long)]
    pub decision_log: Option<PathBuf>,
    /// Rotate the decision log when it would pass this many bytes [default: 104857600].
    #[arg(long)]
    pub decision_log_max_bytes: Option<u64>,
    /// Rotated decision log files kept, PATH.1 ... PATH.N [default: 5].
    #[arg(long)]
    pub decision_log_keep: Option<u32>,
    /// Keep at least this much of each customer's history, however little the rules read, e.g. 90d [default: what the rules read].
    #[arg(long)]
    pub retain: Option<String>,
    /// Persist customer state (rings, credit lines, transaction ids) in this directory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// A client must send a request's headers within this time, e.g. 30s [default: 30s].
    #[arg(long)]
    pub header_read_timeout: Option<String>,
    /// A client must send a whole request, head and body, within this time of its first byte, or get 408 [default: 10s].
    #[arg(long)]
    pub request_read_timeout: Option<String>,
    /// Close a keep-alive connection idle this long between requests [default: 30s].
    #[arg(long)]
    pub idle_timeout: Option<String>,
    /// Most connections open at once per listener [default: 10000].
    #[arg(long)]
    pub max_connections: Option<u32>,
    /// Largest request head (request line and headers), bytes [default: 16384].
    #[arg(long)]
    pub max_header_bytes: Option<u64>,
    /// Most evaluation work a rule set may cost per decision [default: 1000000].
    #[arg(long)]
    pub eval_budget: Option<u64>,
    /// Time given to requests in flight at shutdown [default: 10s].
    #[arg(long)]
    pub shutdown_grace: Option<String>,
    /// Reverse-proxy settings (the `[proxy]` section of the file).
    #[command(flatten)]
    #[serde(default)]
    pub proxy: ProxySettings,
    /// Fleet mode (the `[fleet]` section of the file).
    #[command(flatten)]
    #[serde(default)]
    pub fleet: FleetSettings,
}

/// Fleet mode's settings as given: flags `--nats`, `--replica`, `--fleet-*`, or the `[fleet]`
/// section of the file. Secrets (token, password) are accepted from the file only, never as
/// flags (other users see command lines), and never shown by `Debug`.
#[derive(Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// Fleet mode: share customer state and rules with other replicas through this NATS server (nats://HOST:PORT).
    #[arg(long)]
    pub nats: Option<String>,
    /// Fleet mode: the JetStream stream, also the prefix of its subjects and KV bucket [default: tripwire].
    #[arg(long = "fleet-stream")]
    pub stream: Option<String>,
    /// Fleet mode: this replica's name, unique in the fleet [default: the host name].
    #[arg(long)]
    pub replica: Option<String>,
    /// Fleet mode: NATS token (file only).
    #[arg(skip)]
    pub token: Option<String>,
    /// Fleet mode: NATS user (file only; with `password`).
    #[arg(skip)]
    pub user: Option<String>,
    /// Fleet mode: NATS password (file only).
    #[arg(skip)]
    pub password: Option<String>,
    /// Fleet mode: NATS credentials file (.creds).
    #[arg(long = "nats-credentials")]
    pub credentials: Option<PathBuf>,
    /// Fleet mode: CA certificate (PEM) to trust for TLS to NATS.
    #[arg(long = "nats-tls-ca")]
    pub tls_ca: Option<PathBuf>,
    /// Fleet mode: changes queued for publishing at most; more are dropped and counted [default: 65536].
    #[arg(long = "fleet-queue")]
    pub queue: Option<u32>,
    /// Fleet mode: the stream keeps changes this long, e.g. 7d [default: 7d].
    #[arg(long = "fleet-max-age")]
    pub max_age: Option<String>,
    /// Fleet mode: the stream keeps at most this many bytes [default: 1073741824].
    #[arg(long = "fleet-max-bytes")]
    pub max_bytes: Option<u64>,
    /// Fleet mode: also publish decision-log lines to STREAM.decisions, best effort [default: false].
    #[arg(long = "fleet-publish-decisions")]
    pub publish_decisions: Option<bool>,
    /// Fleet mode: how often the fleet's state snapshot (a joining replica's starting point) is renewed, e.g. 10m; off: this replica never writes one [default: 10m].
    #[arg(long = "fleet-snapshot-every")]
    pub snapshot_every: Option<String>,
}

impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("FleetSettings")
            .field("nats", &self.nats)
            .field("stream", &self.stream)
            .field("replica", &self.replica)
            .field("token", &secret(&self.token))
            .field("user", &self.user)
            .field("password", &secret(&self.password))
            .field("credentials", &self.credentials)
            .field("tls_ca", &self.tls_ca)
            .field("queue", &self.queue)
            .field("max_age", &self.max_age)
            .field("max_bytes", &self.max_bytes)
            .field("publish_decisions", &self.publish_decisions)
            .field("snapshot_every", &self.snapshot_every)
            .finish()
    }
}

/// The proxy's settings as given: flags `--upstream`, `--upstream-timeout`, `--on-*`, or the
/// `[proxy]` section of the file.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// Reverse-proxy mode: forward payment requests to this http:// upstream.
    #[arg(long = "upstream")]
    pub upstream: Option<String>,
    /// Time allowed for the upstream's response headers, e.g. 5s or 1500ms [default: 5s].
    #[arg(long = "upstream-timeout")]
    pub timeout: Option<String>,
    /// Proxy mode: forward (marked) or hold (403) transactions the rules send to review [default: forward].
    #[arg(long)]
    pub on_review: Option<String>,
    /// Proxy mode: reject (400) or pass (marked unchecked) bodies that are not valid transactions [default: reject].
    #[arg(long)]
    pub on_invalid: Option<String>,
    /// Proxy mode: fail_open (forward unchecked) or fail_closed (503) when tripwire cannot decide [default: fail_open].
    #[arg(long)]
    pub on_internal_error: Option<String>,
    /// Proxy mode: intercepted requests in flight beyond which new ones count as overload [default: 10000].
    #[arg(long = "proxy-max-inflight")]
    pub max_inflight: Option<u32>,
    /// Which requests are transactions, and where their fields are (file only).
    #[arg(skip)]
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

/// One `[[proxy.routes]]` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// HTTP method (default POST).
    pub method: Option<String>,
    /// Path pattern: `*` matches one segment, a final `**` the rest.
    pub path: String,
    /// Decide field name → JSON pointer into the body.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

impl ServeSettings {
    /// The settings in force: the `--config` file named in `command_line` (if any) with the
    /// flags actually given on the command line (`matches`) laid over it.
    pub fn layered(
        command_line: &ServeSettings,
        matches: &ArgMatches,
    ) -> Result<ServeSettings, ConfigError> {
        let Some(path) = &command_line.config else {
            return Ok(command_line.clone());
        };
        let mut settings = read_file(path)?;
        // clap's updater sets exactly the fields whose flags were given.
        settings
            .update_from_arg_matches(matches)
            .map_err(|e| invalid("command line", e.to_string()))?;
        Ok(settings)
    }
}

/// Reads and parses a TOML config file.
pub fn read_file(path: &Path) -> Result<ServeSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Everything `tripwire serve` needs, resolved.
#[derive(Clone, Debug)]
pub struct Config {
    /// Rules file.
    pub rules: PathBuf,
    /// Tokio worker threads (`None`: all cores).
    pub workers: Option<usize>,
    /// Store sizing.
    pub store: StoreConfig,
    /// Listener settings.
    pub serve: ServeConfig,
    /// Where state persists, when it does.
    pub state_dir: Option<PathBuf>,
    /// The file watch and SIGHUP reload triggers.
    pub triggers: TriggerConfig,
    /// Background upkeep of the store.
    pub upkeep: UpkeepConfig,
    /// Fleet mode, when configured.
    pub fleet: Option<FleetConfig>,
    /// Most entities (merchants, devices, IPs, channels) held for `by:` windows.
    pub max_entities: usize,
}

/// Parses a duration setting in the one duration grammar (`ms s m h d w`, see
/// [`crate::rules::text::parse_duration`]).
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    parse_std_duration(text).map_err(|e| invalid(key, format!("{text:?}: {e}")))
}

fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.trim().parse().map_err(|_| {
        invalid(
            key,
            format!("{text:?} is not an address such as 127.0.0.1:8080"),
        )
    })
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    if v < lo || v > hi {
        return Err(invalid(key, format!("{v} is outside {lo}..={hi}")));
    }
    Ok(v)
}

fn policy<T: Copy>(
    key: &str,
    text: Option<&str>,
    default: T,
    options: &[(&str, T)],
) -> Result<T, ConfigError> {
    let Some(text) = text else { return Ok(default) };
    options
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            invalid(key, format!("{text:?} is not one of {}", names.join(", ")))
        })
}

/// The admin bearer token from [`ADMIN_TOKEN_VAR`], if set.
pub fn admin_token_from_env() -> Result<Option<String>, ConfigError> {
    match std::env::var(ADMIN_TOKEN_VAR) {
        Ok(token) if token.trim().is_empty() => Err(invalid(
            ADMIN_TOKEN_VAR,
            "is set but empty; unset it or give a token",
        )),
        Ok(token) => Ok(Some(token)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(invalid(ADMIN_TOKEN_VAR, "is not UTF-8")),
    }
}

impl Config {
    /// Validates `settings` over the defaults. The admin token is not read here (see
    /// [`admin_token_from_env`]).
    pub fn resolve(settings: ServeSettings) -> Result<Config, ConfigError> {
        let s = settings;
        let serve_defaults = ServeConfig::default();
        let store_defaults = StoreConfig::default();
        let rules = s.rules.ok_or_else(|| {
            invalid(
                "rules",
                "no rules file: give --rules PATH or `rules = \"...\"` in the config file",
            )
        })?;
        let addr = |key: &str, text: Option<String>, default: SocketAddr| {
            text.map_or(Ok(default), |t| parse_addr(key, &t))
        };
        let duration = |key: &str, text: Option<String>, default: Duration| {
            text.map_or(Ok(default), |t| parse_duration(key, &t))
        };
        let workers = s
            .workers
            .map(|w| in_range("workers", w, 1, 1024).map(usize::from))
            .transpose()?;
        let max_customers = match s.max_customers {
            Some(n) => usize::try_from(in_range("max_customers", n, 1, 100_000_000)?)
                .map_err(|_| invalid("max_customers", "too large"))?,
            None => store_defaults.max_customers,
        };
        let ring_capacity = match s.ring_capacity {
            Some(n) => usize::from(in_range("ring_capacity", n, 1, 4096)?),
            None => store_defaults.ring_capacity,
        };
        let max_body_bytes = match s.max_body_bytes {
            Some(n) => usize::try_from(in_range("max_body_bytes", n, 256, 16 * 1024 * 1024)?)
                .map_err(|_| invalid("max_body_bytes", "too large"))?,
            None => serve_defaults.max_body_bytes,
        };
        let fleet = resolve_fleet(s.fleet)?;
        let triggers = TriggerConfig {
            watch: !s.no_watch && s.watch.unwrap_or(TriggerConfig::default().watch),
            ..TriggerConfig::default()
        };
        let decision_log = match s.decision_log {
            Some(path) => {
                let base = DecisionLogConfig::new(path);
                Some(DecisionLogConfig {
                    max_bytes: in_range(
                        "decision_log_max_bytes",
                        s.decision_log_max_bytes.unwrap_or(base.max_bytes),
                        4096,
                        u64::MAX,
                    )?,
                    keep: in_range(
                        "decision_log_keep",
                        s.decision_log_keep.unwrap_or(base.keep),
                        0,
                        1000,
                    )?,
                    ..base
                })
            }
            None => None,
        };
        let max_connections = match s.max_connections {
            Some(n) => in_range("max_connections", n, 1, 1_000_000)? as usize,
            None => serve_defaults.max_connections,
        };
        let max_header_bytes = match s.max_header_bytes {
            Some(n) => in_range("max_header_bytes", n, 8192, 1024 * 1024)? as usize,
            None => serve_defaults.max_header_bytes,
        };
        let eval_budget = match s.eval_budget {
            Some(n) => in_range("eval_budget", n, 1_000, u64::MAX)?,
            None => serve_defaults.eval_budget,
        };
        let serve = ServeConfig {
            listen: addr("listen", s.listen, serve_defaults.listen)?,
            admin_listen: addr("admin_listen", s.admin_listen, serve_defaults.admin_listen)?,
            max_body_bytes,
            header_read_timeout: duration(
                "header_read_timeout",
                s.header_read_timeout,
                serve_defaults.header_read_timeout,
            )?,
            idle_timeout: duration("idle_timeout", s.idle_timeout, serve_defaults.idle_timeout)?,
            shutdown_grace: duration(
                "shutdown_grace",
                s.shutdown_grace,
                serve_defaults.shutdown_grace,
            )?,
            decision_log,
            proxy: resolve_proxy(s.proxy)?,
            max_connections,
            max_header_bytes,
            eval_budget,
            ..serve_defaults
        };
        Ok(Config {
            rules,
            workers,
            store: StoreConfig {
                max_customers,
                ring_capacity,
            },
            serve,
            state_dir: s.state_dir,
            triggers,
            upkeep: UpkeepConfig {
                retain_at_least: duration("retain", s.retain, Duration::ZERO)?,
                ..UpkeepConfig::default()
            },
            fleet,
            max_entities: match s.max_entities {
                Some(n) => usize::try_from(in_range("max_entities", n, 1, 100_000_000)?)
                    .map_err(|_| invalid("max_entities", "too large"))?,
                None => crate::state::DEFAULT_MAX_ENTITIES,
            },
        })
    }
}

fn resolve_fleet(f: FleetSettings) -> Result<Option<FleetConfig>, ConfigError> {
    let Some(nats) = f.nats else {
        let given = f.stream.is_some()
            || f.replica.is_some()
            || f.token.is_some()
            || f.user.is_some()
            || f.password.is_some()
            || f.credentials.is_some()
            || f.tls_ca.is_some()
            || f.queue.is_some()
            || f.max_age.is_some()
            || f.max_bytes.is_some()
            || f.publish_decisions.is_some();
        if given {
            return Err(invalid(
                "fleet.nats",
                "fleet settings are given but no NATS server (--nats nats://HOST:PORT)",
            ));
        }
        return Ok(None);
    };
    let scheme_ok = ["nats://", "tls://"].iter().any(|s| nats.starts_with(s));
    if !scheme_ok || nats.contains('@') {
        return Err(invalid(
            "fleet.nats",
            "give nats://HOST:PORT or tls://HOST:PORT, without credentials (use token, user and password, or credentials)",
        ));
    }
    let defaults = FleetConfig::new(nats);
    let name = |key: &str, text: Option<String>, default: String| -> Result<String, ConfigError> {
        let text = text.unwrap_or(default);
        let ok = !text.is_empty()
            && text.len() <= 64
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(text)
        } else {
            Err(invalid(
                key,
                format!("{text:?}: use 1 to 64 letters, digits, - or _"),
            ))
        }
    };
    let auth = match (f.token, f.user, f.password, f.credentials) {
        (None, None, None, None) => FleetAuth::None,
        (Some(token), None, None, None) => FleetAuth::Token(token),
        (None, Some(user), Some(password), None) => FleetAuth::UserPassword { user, password },
        (None, None, None, Some(path)) => FleetAuth::CredentialsFile(path),
        (None, Some(_), None, None) | (None, None, Some(_), None) => {
            return Err(invalid("fleet.user", "user and password go together"));
        }
        _ => {
            return Err(invalid(
                "fleet.token",
                "give one way to authenticate: token, user and password, or credentials",
            ));
        }
    };
    let max_age = match f.max_age {
        Some(t) => parse_duration("fleet.max_age", &t)?,
        None => defaults.max_age,
    };
    let snapshot_interval = match f.snapshot_every {
        Some(t) if t.trim() == "off" => Duration::ZERO,
        Some(t) => parse_duration("fleet.snapshot_every", &t)?,
        None => defaults.snapshot_interval,
    };
    // A joining replica loads the newest snapshot and reads the stream after it: the stream
    // must still hold what came after, so snapshots are renewed well within its age limit.
    if snapshot_interval >= max_age / 2 {
        return Err(invalid(
            "fleet.snapshot_every",
            format!(
                "{snapshot_interval:?} is not well within the stream's age limit ({max_age:?}): a replica joining just before the next snapshot would find changes aged out after the last one; give at most half of fleet.max_age"
            ),
        ));
    }
    Ok(Some(FleetConfig {
        stream: name("fleet.stream", f.stream, defaults.stream.clone())?,
        replica: name("fleet.replica", f.replica, defaults.replica.clone())?,
        auth,
        tls_ca: f.tls_ca,
        queue_capacity: match f.queue {
            Some(n) => in_range("fleet.queue", n, 16, 16 * 1024 * 1024)? as usize,
            None => defaults.queue_capacity,
        },
        max_age,
        max_bytes: match f.max_bytes {
            Some(n) => in_range("fleet.max_bytes", n, 1 << 20, u64::MAX)?,
            None => defaults.max_bytes,
        },
        publish_decisions: f.publish_decisions.unwrap_or(defaults.publish_decisions),
        snapshot_interval,
        ..defaults
    }))
}

fn resolve_proxy(p: ProxySettings) -> Result<Option<ProxyConfig>, ConfigError> {
    let Some(upstream) = p.upstream else {
        if !p.routes.is_empty() {
            return Err(invalid(
                "proxy.upstream",
                "routes are configured but no upstream is",
            ));
        }
        return Ok(None);
    };
    let defaults = ProxyConfig::new(parse_upstream(&upstream)?);
    Ok(Some(ProxyConfig {
        timeout: match p.timeout {
            Some(t) => parse_duration("proxy.timeout", &t)?,
            None => defaults.timeout,
        },
        on_review: policy(
            "proxy.on_review",
            p.on_review.as_deref(),
            defaults.on_review,
            &[
                ("forward", ReviewPolicy::Forward),
                ("hold", ReviewPolicy::Hold),
            ],
        )?,
        on_invalid: policy(
            "proxy.on_invalid",
            p.on_invalid.as_deref(),
            defaults.on_invalid,
            &[
                ("reject", InvalidPolicy::Reject),
                ("pass", InvalidPolicy::Pass),
            ],
        )?,
        on_internal_error: policy(
            "proxy.on_internal_error",
            p.on_internal_error.as_deref(),
            defaults.on_internal_error,
            &[
                ("fail_open", FailurePolicy::FailOpen),
                ("fail_closed", FailurePolicy::FailClosed),
            ],
        )?,
        max_inflight: match p.max_inflight {
            Some(n) => in_range("proxy.max_inflight", n, 1, 1_000_000)? as usize,
            None => defaults.max_inflight,
        },
        routes: p
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route(i, r))
            .collect::<Result<_, _>>()?,
        ..defaults
    }))
}

fn parse_upstream(text: &str) -> Result<hyper::Uri, ConfigError> {
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e| invalid("proxy.upstream", format!("{text:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid(
            "proxy.upstream",
            format!(
                "{text:?}: only http:// upstreams are supported (terminate TLS in front of or behind the sidecar)"
            ),
        ));
    }
    if uri.authority().is_none() {
        return Err(invalid("proxy.upstream", format!("{text:?} has no host")));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(invalid(
            "proxy.upstream",
            format!(
                "{text:?}: give scheme, host and port only; request paths are forwarded as they come"
            ),
        ));
    }
    Ok(uri)
}

fn route(i: usize, r: &RouteFile) -> Result<Route, ConfigError> {
    let key = format!("proxy.routes[{i}]");
    let method = match &r.method {
        None => hyper::Method::POST,
        Some(m) => hyper::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
            invalid(
                format!("{key}.method"),
                format!("{m:?} is not an HTTP method"),
            )
        })?,
    };
    let path = PathPattern::parse(&r.path).map_err(|e| invalid(format!("{key}.path"), e))?;
    let fields = FieldMapping::new(&r.fields)
        .map_err(|(field, e)| invalid(format!("{key}.fields.{field}"), e))?;
    Ok(Route {
        method,
        path,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn file(text: &str) -> ServeSettings {
        toml::from_str(text).unwrap()
    }

    /// A command line that carries the serve settings, as `tripwire serve` does.
    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        settings: ServeSettings,
    }

    /// `file` with the flags in `args` laid over it, as `ServeSettings::layered` does.
    fn layered(file_text: &str, args: &[&str]) -> ServeSettings {
        let matches = Line::command()
            .try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap();
        let mut settings = file(file_text);
        settings.update_from_arg_matches(&matches).unwrap();
        settings
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let s = layered(
            "rules = \"a.yaml\"\nlisten = \"0.0.0.0:80\"\nmax_customers = 500\nwatch = false\n[proxy]\nupstream = \"http://127.0.0.1:1\"\non_review = \"hold\"\n",
            &["--listen", "127.0.0.1:81", "--upstream-timeout", "2s"],
        );
        let c = Config::resolve(s).unwrap();
        assert_eq!(c.rules, PathBuf::from("a.yaml"));
        assert_eq!(c.serve.listen.port(), 81);
        assert_eq!(c.store.max_customers, 500);
        assert_eq!(c.serve.admin_listen, ServeConfig::default().admin_listen);
        assert_eq!(c.store.ring_capacity, StoreConfig::default().ring_capacity);
        assert!(!c.triggers.watch, "the file's watch = false holds");
        let proxy = c.serve.proxy.unwrap();
        assert_eq!(
            proxy.on_review,
            ReviewPolicy::Hold,
            "the file's value holds"
        );
        assert_eq!(proxy.timeout, Duration::from_secs(2), "the flag wins");
    }

    #[test]
    fn every_duration_setting_reads_the_rules_grammar() {
        let s = layered(
            "rules = \"r\"\nshutdown_grace = \"1m30s\"\n",
            &["--idle-timeout", "1h", "--header-read-timeout", "1500ms"],
        );
        let c = Config::resolve(s).unwrap();
        assert_eq!(c.serve.idle_timeout, Duration::from_secs(3600));
        assert_eq!(c.serve.header_read_timeout, Duration::from_millis(1500));
        assert_eq!(c.serve.shutdown_grace, Duration::from_secs(90));
        assert_eq!(c.upkeep.retain_at_least, Duration::ZERO);
        let c = Config::resolve(layered("rules = \"r\"\nretain = \"90d\"", &[])).unwrap();
        assert_eq!(c.upkeep.retain_at_least, Duration::from_secs(90 * 86_400));
        let err = Config::resolve(layered("rules = \"r\"", &["--idle-timeout", "0s"]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("idle_timeout:"), "{err}");
    }

    #[test]
    fn no_watch_on_the_command_line_turns_the_watch_off() {
        let c = Config::resolve(layered("rules = \"r\"", &["--no-watch"])).unwrap();
        assert!(!c.triggers.watch);
        let c = Config::resolve(layered("rules = \"r\"", &[])).unwrap();
        assert!(c.triggers.watch);
    }

    #[test]
    fn errors_name_the_key() {
        let err = |text: &str| Config::resolve(file(text)).unwrap_err().to_string();
        assert!(err("listen = \"nowhere\"\nrules = \"r\"").starts_with("listen:"));
        assert!(err("rules = \"r\"\nring_capacity = 0").starts_with("ring_capacity:"));
        assert!(
            err("rules = \"r\"\n[proxy]\nupstream = \"https://x\"").starts_with("proxy.upstream:")
        );
        assert!(
            err("rules = \"r\"\n[proxy]\nupstream = \"http://x:1\"\non_review = \"maybe\"")
                .starts_with("proxy.on_review:")
        );
        assert!(
            err("rules = \"r\"\n[proxy]\nupstream = \"http://x:1\"\ntimeout = \"soon\"")
                .starts_with("proxy.timeout:")
        );
        assert!(
            err("rules = \"r\"\n[proxy]\nupstream = \"http://x:1\"\n[[proxy.routes]]\npath = \"/pay\"\nfields = { amount = \"amount/value\" }")
                .starts_with("proxy.routes[0].fields.amount:")
        );
        assert!(
            err("rules = \"r\"\n[proxy]\nupstream = \"http://x:1\"\n[[proxy.routes]]\npath = \"/pay\"\nfields = { amout = \"/a\" }")
                .starts_with("proxy.routes[0].fields.amout:")
        );
        assert!(err("").starts_with("rules:"));
    }

    #[test]
    fn fleet_mode_is_off_without_nats_and_its_keys_are_named() {
        let c = Config::resolve(layered("rules = \"r\"", &[])).unwrap();
        assert!(c.fleet.is_none(), "one process unless --nats is given");
        let c = Config::resolve(layered(
            "rules = \"r\"\n[fleet]\nnats = \"nats://127.0.0.1:4222\"\nuser = \"svc\"\npassword = \"hunter2\"\nmax_age = \"2d\"\npublish_decisions = true\n",
            &["--replica", "gw-2"],
        ))
        .unwrap();
        let fleet = c.fleet.clone().unwrap();
        assert_eq!(fleet.replica, "gw-2", "the flag");
        assert_eq!(fleet.stream, "tripwire", "the default");
        assert_eq!(fleet.max_age, Duration::from_secs(2 * 86_400), "the file");
        assert!(fleet.publish_decisions);
        assert_eq!(
            fleet.queue_capacity,
            FleetConfig::new("nats://x:1").queue_capacity
        );
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "no password in Debug"
        );
        let err = |text: &str| Config::resolve(file(text)).unwrap_err().to_string();
        assert!(err("rules = \"r\"\n[fleet]\nreplica = \"a\"").starts_with("fleet.nats:"));
        assert!(
            err("rules = \"r\"\n[fleet]\nnats = \"nats://u:p@h:1\"").starts_with("fleet.nats:")
        );
        assert!(
            err("rules = \"r\"\n[fleet]\nnats = \"nats://h:1\"\nreplica = \"a b\"")
                .starts_with("fleet.replica:")
        );
        assert!(
            err("rules = \"r\"\n[fleet]\nnats = \"nats://h:1\"\nuser = \"u\"")
                .starts_with("fleet.user:")
        );
        assert!(
            err("rules = \"r\"\n[fleet]\nnats = \"nats://h:1\"\nmax_age = \"soon\"")
                .starts_with("fleet.max_age:")
        );
        assert!(
            err("rules = \"r\"\n[fleet]\nnats = \"nats://h:1\"\nmax_age = \"1h\"\nsnapshot_every = \"40m\"")
                .starts_with("fleet.snapshot_every:")
        );
        let c = Config::resolve(file(
            "rules = \"r\"\n[fleet]\nnats = \"nats://h:1\"\nsnapshot_every = \"off\"",
        ))
        .unwrap();
        assert!(c.fleet.unwrap().snapshot_interval.is_zero(), "off: never");
    }

    #[test]
    fn unknown_keys_are_refused_by_the_parser() {
        assert!(toml::from_str::<ServeSettings>("rulez = \"r\"").is_err());
        assert!(toml::from_str::<ServeSettings>("[proxy]\nupstreams = \"r\"").is_err());
        assert!(
            toml::from_str::<ServeSettings>("config = \"x\"").is_err(),
            "the file cannot name another file"
        );
        assert!(toml::from_str::<ServeSettings>("no_watch = true").is_err());
    }
}
