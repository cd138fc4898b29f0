//! The `tripwire` command: flags in, library calls out.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tripwire::decision_log::DecisionLogConfig;
use tripwire::interceptor::Interceptor;
use tripwire::reload::LiveRules;
use tripwire::rules::{self, Mode, RulesError};
use tripwire::server::{ServeConfig, Server};
use tripwire::state::{Store, StoreConfig};

#[derive(Parser)]
#[command(
    name = "tripwire",
    version,
    about = "Low-latency fraud interceptor for credit-line transactions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the decision API with the rules in a file.
    Serve(ServeArgs),
    /// Validate a rules file and print a summary, or every problem as PATH:LINE:COLUMN: message.
    Check {
        /// The rules file.
        path: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Rules file (YAML).
    #[arg(long)]
    rules: PathBuf,
    /// Payment listener address (decision API).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Admin listener address (health, readiness).
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
    /// Tokio worker threads [default: all cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Most customers held in memory; the least recently active are evicted past it.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_customers: u64,
    /// Events kept per customer.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    ring_capacity: u16,
    /// Largest request body accepted, bytes.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(256..=16_777_216))]
    max_body_bytes: u64,
    /// Do not watch the rules file; reload only on SIGHUP or PUT /admin/rules.
    #[arg(long)]
    no_watch: bool,
    /// Write one JSON line per decision to this file.
    #[arg(long)]
    decision_log: Option<PathBuf>,
    /// Rotate the decision log when it would pass this many bytes.
    #[arg(long, default_value_t = 104_857_600, value_parser = clap::value_parser!(u64).range(4096..))]
    decision_log_max_bytes: u64,
    /// Rotated decision log files kept (PATH.1 ... PATH.N).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=1000))]
    decision_log_keep: u32,
}

/// The environment variable holding the admin bearer token.
const ADMIN_TOKEN_VAR: &str = "TRIPWIRE_ADMIN_TOKEN";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { path } => check(&path),
        Command::Serve(args) => match serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tripwire: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn print_problems(path: &std::path::Path, error: &RulesError) {
    for p in error.problems() {
        eprintln!("{}:{}:{}: {}", path.display(), p.line, p.column, p.message);
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let loaded =
        rules::read_file(path).and_then(|bytes| rules::load_bytes(&bytes).map(|set| (set, bytes)));
    match loaded {
        Ok((set, bytes)) => {
            let shadow = set
                .rules()
                .iter()
                .filter(|r| r.mode == Mode::Shadow)
                .count();
            println!(
                "{}: ok: {} rules ({} enforce, {} shadow), {} lists, timezone {}, sha256 {}",
                path.display(),
                set.rules().len(),
                set.rules().len() - shadow,
                shadow,
                set.valid.lists.len(),
                set.valid.timezone_name,
                tripwire::reload::sha256_hex(&bytes)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_problems(path, &e);
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let bytes = rules::read_file(&args.rules).map_err(|e| {
        print_problems(&args.rules, &e);
        anyhow::anyhow!("cannot load rules from {}", args.rules.display())
    })?;
    let live = LiveRules::new(&bytes, &args.rules.display().to_string()).map_err(|e| {
        print_problems(&args.rules, &e);
        anyhow::anyhow!("cannot load rules from {}", args.rules.display())
    })?;
    let store = Store::new(StoreConfig {
        max_customers: usize::try_from(args.max_customers).context("--max-customers")?,
        ring_capacity: usize::from(args.ring_capacity),
    });
    let interceptor = Arc::new(Interceptor::new(store, live));
    let admin_token = match std::env::var(ADMIN_TOKEN_VAR) {
        Ok(token) if token.trim().is_empty() => {
            anyhow::bail!("{ADMIN_TOKEN_VAR} is set but empty; unset it or give a token")
        }
        Ok(token) => Some(token),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!("{ADMIN_TOKEN_VAR} is not UTF-8"),
    };
    let decision_log = args.decision_log.clone().map(|path| DecisionLogConfig {
        max_bytes: args.decision_log_max_bytes,
        keep: args.decision_log_keep,
        ..DecisionLogConfig::new(path)
    });
    let config = ServeConfig {
        listen: args.listen,
        admin_listen: args.admin_listen,
        max_body_bytes: usize::try_from(args.max_body_bytes).context("--max-body-bytes")?,
        rules_path: Some(args.rules.clone()),
        watch_rules: !args.no_watch,
        admin_token,
        decision_log,
        ..ServeConfig::default()
    };

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.workers {
        runtime.worker_threads(usize::from(n));
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::start(config, Arc::clone(&interceptor))
            .await
            .context("cannot bind the listeners")?;
        tracing::info!(
            rules_version = %interceptor.rules().load().version.label,
            rules = interceptor.rules().load().set.rules().len(),
            "tripwire ready"
        );
        wait_for_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
