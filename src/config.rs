//! One configuration for `tripwire serve`: an optional TOML file (`--config`), overridden by
//! flags, validated once at start. Every error names the key at fault.
//!
//! The file can set every flag (same names, `_` for `-`) plus the `[proxy]` section, whose
//! routes and field mappings only the file can express.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::decision_log::DecisionLogConfig;
use crate::mapping::{FieldMapping, PathPattern};
use crate::server::ServeConfig;
use crate::state::StoreConfig;

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

/// The TOML file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Rules file.
    pub rules: Option<PathBuf>,
    /// Payment listener.
    pub listen: Option<String>,
    /// Admin listener.
    pub admin_listen: Option<String>,
    /// Tokio worker threads.
    pub workers: Option<u16>,
    /// Customer cap.
    pub max_customers: Option<u64>,
    /// Events per customer.
    pub ring_capacity: Option<u16>,
    /// Request body limit.
    pub max_body_bytes: Option<u64>,
    /// Watch the rules file.
    pub watch: Option<bool>,
    /// Decision log file.
    pub decision_log: Option<PathBuf>,
    /// Decision log rotation size.
    pub decision_log_max_bytes: Option<u64>,
    /// Decision log files kept.
    pub decision_log_keep: Option<u32>,
    /// Directory where customer state persists.
    pub state_dir: Option<PathBuf>,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Option<String>,
    /// Time a keep-alive connection may sit idle between requests.
    pub idle_timeout: Option<String>,
    /// Most connections open at once per listener.
    pub max_connections: Option<u32>,
    /// Largest request head (request line and headers).
    pub max_header_bytes: Option<u64>,
    /// Most evaluation work a rule set may cost per decision.
    pub eval_budget: Option<u64>,
    /// Time given to requests in flight at shutdown.
    pub shutdown_grace: Option<String>,
    /// Reverse-proxy mode.
    pub proxy: Option<ProxyFile>,
}

/// The `[proxy]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    /// `http://host:port` of the payment service.
    pub upstream: Option<String>,
    /// Upstream timeout, e.g. `5s`, `1500ms`.
    pub timeout: Option<String>,
    /// `forward` (default) or `hold`.
    pub on_review: Option<String>,
    /// `reject` (default) or `pass`.
    pub on_invalid: Option<String>,
    /// `fail_open` (default) or `fail_closed`.
    pub on_internal_error: Option<String>,
    /// Most intercepted requests in flight before new ones count as overload.
    pub max_inflight: Option<u32>,
    /// Which requests are transactions, and where their fields are.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

/// One `[[proxy.routes]]` entry as written.
#[derive(Debug, Deserialize)]
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

/// Values given on the command line; `None` when the flag was not given.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    /// `--rules`
    pub rules: Option<PathBuf>,
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--admin-listen`
    pub admin_listen: Option<SocketAddr>,
    /// `--workers`
    pub workers: Option<u16>,
    /// `--max-customers`
    pub max_customers: Option<u64>,
    /// `--ring-capacity`
    pub ring_capacity: Option<u16>,
    /// `--max-body-bytes`
    pub max_body_bytes: Option<u64>,
    /// `--no-watch`
    pub no_watch: bool,
    /// `--decision-log`
    pub decision_log: Option<PathBuf>,
    /// `--decision-log-max-bytes`
    pub decision_log_max_bytes: Option<u64>,
    /// `--decision-log-keep`
    pub decision_log_keep: Option<u32>,
    /// `--state-dir`
    pub state_dir: Option<PathBuf>,
    /// `--header-read-timeout`
    pub header_read_timeout: Option<String>,
    /// `--idle-timeout`
    pub idle_timeout: Option<String>,
    /// `--max-connections`
    pub max_connections: Option<u32>,
    /// `--max-header-bytes`
    pub max_header_bytes: Option<u64>,
    /// `--eval-budget`
    pub eval_budget: Option<u64>,
    /// `--shutdown-grace`
    pub shutdown_grace: Option<String>,
    /// `--upstream`
    pub upstream: Option<String>,
    /// `--upstream-timeout`
    pub upstream_timeout: Option<String>,
    /// `--on-review`
    pub on_review: Option<String>,
    /// `--on-invalid`
    pub on_invalid: Option<String>,
    /// `--on-internal-error`
    pub on_internal_error: Option<String>,
}

/// What to do with a transaction the rules send to review, in proxy mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewPolicy {
    /// Forward it, marked `x-risk-decision: review`.
    Forward,
    /// Answer 403 and keep it from the upstream.
    Hold,
}

/// What to do with a body on an intercepted route that is not a valid transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidPolicy {
    /// Answer 400 with the error.
    Reject,
    /// Forward it, marked `x-risk-decision: unchecked`.
    Pass,
}

/// What to do when tripwire itself cannot decide (an internal error, overload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Forward the request marked `x-risk-decision: unchecked`.
    FailOpen,
    /// Answer 503.
    FailClosed,
}

/// Which requests are transactions and where their fields are.
#[derive(Clone, Debug)]
pub struct Route {
    /// Method to match.
    pub method: hyper::Method,
    /// Path pattern to match.
    pub path: PathPattern,
    /// Where each decide field is in the body.
    pub fields: FieldMapping,
}

/// Reverse-proxy settings.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The payment service: scheme, host and port.
    pub upstream: hyper::Uri,
    /// Time allowed for the upstream's response headers.
    pub timeout: Duration,
    /// Review handling.
    pub on_review: ReviewPolicy,
    /// Invalid body handling.
    pub on_invalid: InvalidPolicy,
    /// Internal failure handling.
    pub on_internal_error: FailurePolicy,
    /// Intercepted requests in flight beyond which new ones count as overload.
    pub max_inflight: usize,
    /// Routes; empty means every POST with a JSON body, with the decide field names.
    pub routes: Vec<Route>,
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
}

/// Parses a duration such as `5s`, `1500ms`, `2m`.
pub fn parse_timeout(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number.parse().map_err(|_| {
        invalid(
            key,
            format!("{text:?} is not a duration such as 5s or 1500ms"),
        )
    })?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => {
            return Err(invalid(
                key,
                format!("{text:?} is not a duration such as 5s or 1500ms"),
            ));
        }
    };
    if d.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    Ok(d)
}

fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
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

fn policy<T>(
    key: &str,
    text: Option<&str>,
    default: T,
    options: &[(&str, T)],
) -> Result<T, ConfigError>
where
    T: Copy,
{
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

/// Reads and parses a TOML config file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

impl Config {
    /// Resolves flags over the file over the defaults, validating every value.
    pub fn resolve(file: FileConfig, flags: Flags) -> Result<Config, ConfigError> {
        let defaults = ServeConfig::default();
        let rules = flags.rules.or(file.rules).ok_or_else(|| {
            invalid(
                "rules",
                "no rules file: give --rules PATH or `rules = \"...\"` in the config file",
            )
        })?;
        let listen = match (flags.listen, file.listen) {
            (Some(a), _) => a,
            (None, Some(text)) => parse_addr("listen", &text)?,
            (None, None) => defaults.listen,
        };
        let admin_listen = match (flags.admin_listen, file.admin_listen) {
            (Some(a), _) => a,
            (None, Some(text)) => parse_addr("admin_listen", &text)?,
            (None, None) => defaults.admin_listen,
        };
        let workers = flags
            .workers
            .or(file.workers)
            .map(|w| in_range("workers", w, 1, 1024).map(usize::from))
            .transpose()?;
        let max_customers = in_range(
            "max_customers",
            flags
                .max_customers
                .or(file.max_customers)
                .unwrap_or(1_000_000),
            1,
            100_000_000,
        )?;
        let ring_capacity = in_range(
            "ring_capacity",
            flags.ring_capacity.or(file.ring_capacity).unwrap_or(64),
            1,
            4096,
        )?;
        let max_body_bytes = in_range(
            "max_body_bytes",
            flags
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(65_536),
            256,
            16 * 1024 * 1024,
        )?;
        let watch = !flags.no_watch && file.watch.unwrap_or(true);
        let decision_log = flags.decision_log.or(file.decision_log).map(|path| {
            let base = DecisionLogConfig::new(path);
            Ok::<_, ConfigError>(DecisionLogConfig {
                max_bytes: in_range(
                    "decision_log_max_bytes",
                    flags
                        .decision_log_max_bytes
                        .or(file.decision_log_max_bytes)
                        .unwrap_or(base.max_bytes),
                    4096,
                    u64::MAX,
                )?,
                keep: in_range(
                    "decision_log_keep",
                    flags
                        .decision_log_keep
                        .or(file.decision_log_keep)
                        .unwrap_or(base.keep),
                    0,
                    1000,
                )?,
                ..base
            })
        });
        let decision_log = decision_log.transpose()?;
        let timeout = |key: &str, flag: Option<String>, file: Option<String>, default: Duration| {
            flag.or(file)
                .map_or(Ok(default), |t| parse_timeout(key, &t))
        };
        let header_read_timeout = timeout(
            "header_read_timeout",
            flags.header_read_timeout,
            file.header_read_timeout,
            defaults.header_read_timeout,
        )?;
        let idle_timeout = timeout(
            "idle_timeout",
            flags.idle_timeout,
            file.idle_timeout,
            defaults.idle_timeout,
        )?;
        let shutdown_grace = timeout(
            "shutdown_grace",
            flags.shutdown_grace,
            file.shutdown_grace,
            defaults.shutdown_grace,
        )?;
        let max_connections = in_range(
            "max_connections",
            flags
                .max_connections
                .or(file.max_connections)
                .unwrap_or(defaults.max_connections as u32),
            1,
            1_000_000,
        )? as usize;
        let max_header_bytes = in_range(
            "max_header_bytes",
            flags
                .max_header_bytes
                .or(file.max_header_bytes)
                .unwrap_or(defaults.max_header_bytes as u64),
            8192,
            1024 * 1024,
        )? as usize;
        let eval_budget = in_range(
            "eval_budget",
            flags
                .eval_budget
                .or(file.eval_budget)
                .unwrap_or(defaults.eval_budget),
            1_000,
            u64::MAX,
        )?;
        let state_dir = flags.state_dir.or(file.state_dir);

        let proxy_file = file.proxy.unwrap_or_default();
        let upstream = flags.upstream.or(proxy_file.upstream);
        let proxy = match upstream {
            None => {
                if !proxy_file.routes.is_empty() {
                    return Err(invalid(
                        "proxy.upstream",
                        "routes are configured but no upstream is",
                    ));
                }
                None
            }
            Some(text) => Some(ProxyConfig {
                upstream: parse_upstream(&text)?,
                timeout: match flags.upstream_timeout.or(proxy_file.timeout) {
                    Some(t) => parse_timeout("proxy.timeout", &t)?,
                    None => Duration::from_secs(5),
                },
                on_review: policy(
                    "proxy.on_review",
                    flags
                        .on_review
                        .as_deref()
                        .or(proxy_file.on_review.as_deref()),
                    ReviewPolicy::Forward,
                    &[
                        ("forward", ReviewPolicy::Forward),
                        ("hold", ReviewPolicy::Hold),
                    ],
                )?,
                on_invalid: policy(
                    "proxy.on_invalid",
                    flags
                        .on_invalid
                        .as_deref()
                        .or(proxy_file.on_invalid.as_deref()),
                    InvalidPolicy::Reject,
                    &[
                        ("reject", InvalidPolicy::Reject),
                        ("pass", InvalidPolicy::Pass),
                    ],
                )?,
                on_internal_error: policy(
                    "proxy.on_internal_error",
                    flags
                        .on_internal_error
                        .as_deref()
                        .or(proxy_file.on_internal_error.as_deref()),
                    FailurePolicy::FailOpen,
                    &[
                        ("fail_open", FailurePolicy::FailOpen),
                        ("fail_closed", FailurePolicy::FailClosed),
                    ],
                )?,
                max_inflight: in_range(
                    "proxy.max_inflight",
                    proxy_file.max_inflight.unwrap_or(10_000),
                    1,
                    1_000_000,
                )? as usize,
                routes: proxy_file
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| route(i, r))
                    .collect::<Result<_, _>>()?,
            }),
        };

        Ok(Config {
            rules: rules.clone(),
            workers,
            store: StoreConfig {
                max_customers: usize::try_from(max_customers)
                    .map_err(|_| invalid("max_customers", "too large"))?,
                ring_capacity: usize::from(ring_capacity),
            },
            serve: ServeConfig {
                listen,
                admin_listen,
                max_body_bytes: usize::try_from(max_body_bytes)
                    .map_err(|_| invalid("max_body_bytes", "too large"))?,
                rules_path: Some(rules),
                watch_rules: watch,
                decision_log,
                proxy,
                header_read_timeout,
                idle_timeout,
                shutdown_grace,
                max_connections,
                max_header_bytes,
                eval_budget,
                ..defaults
            },
            state_dir,
        })
    }
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

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let f = file("rules = \"a.yaml\"\nlisten = \"0.0.0.0:80\"\nmax_customers = 500\n");
        let flags = Flags {
            listen: Some("127.0.0.1:81".parse().unwrap()),
            ..Flags::default()
        };
        let c = Config::resolve(f, flags).unwrap();
        assert_eq!(c.rules, PathBuf::from("a.yaml"));
        assert_eq!(c.serve.listen.port(), 81);
        assert_eq!(c.store.max_customers, 500);
        assert_eq!(c.serve.admin_listen.port(), 9090);
        assert!(c.serve.proxy.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let err = |text: &str| {
            Config::resolve(file(text), Flags::default())
                .unwrap_err()
                .to_string()
        };
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
    fn unknown_keys_are_refused_by_the_parser() {
        assert!(toml::from_str::<FileConfig>("rulez = \"r\"").is_err());
        assert!(toml::from_str::<FileConfig>("[proxy]\nupstreams = \"r\"").is_err());
    }
}
