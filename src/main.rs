//! The `tripwire` command: flags in, library calls out.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tripwire::config::{self, Config};
use tripwire::interceptor::Interceptor;
use tripwire::reload::LiveRules;
use tripwire::replay::{self, input};
use tripwire::rules::{self, EvalBudget, Mode, RulesError};
use tripwire::server::{ServeConfig, Server};
use tripwire::state::Store;
use tripwire::state::persist::{PersistConfig, Persistence};

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
    Serve(Box<ServeArgs>),
    /// Validate a rules file and print a summary, or every problem as PATH:LINE:COLUMN: message.
    Check {
        /// The rules file.
        path: PathBuf,
        /// The evaluation budget `serve` will apply, as its --eval-budget [default: 1000000].
        #[arg(long)]
        eval_budget: Option<u64>,
        /// The ring capacity `serve` will run with, as its --ring-capacity [default: 64].
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
        ring_capacity: Option<u16>,
    },
    /// Run rules over transaction history (CSV or JSON Lines, plain or gzip) and report.
    Replay(Box<ReplayArgs>),
    /// Write a seeded, labelled history with injected fraud, for tests and benches.
    Gen(GenArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// The rules to replay (the live ones).
    #[arg(long)]
    rules: PathBuf,
    /// A candidate rule set: report the transactions whose decision it would change.
    #[arg(long)]
    against: Option<PathBuf>,
    /// History files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write every decision as a JSON line to this file.
    #[arg(long)]
    decisions: Option<PathBuf>,
    /// A TOML file mapping fields to columns: [columns] customer_id = "cust_no", time_format, timezone.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// FIELD=COLUMN, repeatable; wins over the mapping file.
    #[arg(long = "column")]
    columns: Vec<String>,
    /// rfc3339 (default), epoch_s, epoch_ms or local.
    #[arg(long)]
    time_format: Option<String>,
    /// Time zone of local timestamps.
    #[arg(long)]
    timezone: Option<String>,
    /// What to do with a malformed row: skip (report it) or fail.
    #[arg(long, default_value = "skip", value_parser = ["skip", "fail"])]
    on_error: String,
    /// Events kept per customer, as in serve [default: 64].
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    ring_capacity: u16,
}

#[derive(Args)]
struct GenArgs {
    /// Ordinary customers.
    #[arg(long, default_value_t = 1000)]
    customers: usize,
    /// Days of history from 2026-03-01.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Seed; the same seed writes the same history.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraudsters per injected pattern [default: customers / 50, at least 1].
    #[arg(long)]
    fraud_per_pattern: Option<usize>,
    /// csv or jsonl.
    #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl"])]
    format: String,
    /// Compress with gzip.
    #[arg(long)]
    gzip: bool,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

/// Flags of `tripwire serve`. Each can also be set in the `--config` file; a flag given here
/// wins over the file, and the file over the default shown.
#[derive(Args)]
struct ServeArgs {
    /// TOML config file (every flag below, plus [proxy] routes).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rules file (YAML).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Payment listener address [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listener address [default: 127.0.0.1:9090].
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Tokio worker threads [default: all cores].
    #[arg(long)]
    workers: Option<u16>,
    /// Most customers held in memory; the least recently active are evicted past it [default: 1000000].
    #[arg(long)]
    max_customers: Option<u64>,
    /// Events kept per customer [default: 64].
    #[arg(long)]
    ring_capacity: Option<u16>,
    /// Largest request body accepted, bytes [default: 65536].
    #[arg(long)]
    max_body_bytes: Option<u64>,
    /// Do not watch the rules file; reload only on SIGHUP or PUT /admin/rules.
    #[arg(long)]
    no_watch: bool,
    /// Write one JSON line per decision to this file.
    #[arg(long)]
    decision_log: Option<PathBuf>,
    /// Rotate the decision log when it would pass this many bytes [default: 104857600].
    #[arg(long)]
    decision_log_max_bytes: Option<u64>,
    /// Rotated decision log files kept, PATH.1 ... PATH.N [default: 5].
    #[arg(long)]
    decision_log_keep: Option<u32>,
    /// Persist customer state (rings, credit lines, transaction ids) in this directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// A client must send a request's headers within this time, e.g. 30s [default: 30s].
    #[arg(long)]
    header_read_timeout: Option<String>,
    /// Close a keep-alive connection idle this long between requests [default: 30s].
    #[arg(long)]
    idle_timeout: Option<String>,
    /// Most connections open at once per listener [default: 10000].
    #[arg(long)]
    max_connections: Option<u32>,
    /// Largest request head (request line and headers), bytes [default: 16384].
    #[arg(long)]
    max_header_bytes: Option<u64>,
    /// Most evaluation work a rule set may cost per decision [default: 1000000].
    #[arg(long)]
    eval_budget: Option<u64>,
    /// Time given to requests in flight at shutdown [default: 10s].
    #[arg(long)]
    shutdown_grace: Option<String>,
    /// Reverse-proxy mode: forward payment requests to this http:// upstream.
    #[arg(long)]
    upstream: Option<String>,
    /// Time allowed for the upstream's response headers, e.g. 5s or 1500ms [default: 5s].
    #[arg(long)]
    upstream_timeout: Option<String>,
    /// Proxy mode: forward (marked) or hold (403) transactions the rules send to review [default: forward].
    #[arg(long)]
    on_review: Option<String>,
    /// Proxy mode: reject (400) or pass (marked unchecked) bodies that are not valid transactions [default: reject].
    #[arg(long)]
    on_invalid: Option<String>,
    /// Proxy mode: fail_open (forward unchecked) or fail_closed (503) when tripwire cannot decide [default: fail_open].
    #[arg(long)]
    on_internal_error: Option<String>,
}

/// The environment variable holding the admin bearer token.
const ADMIN_TOKEN_VAR: &str = "TRIPWIRE_ADMIN_TOKEN";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            path,
            eval_budget,
            ring_capacity,
        } => {
            // The same budget `serve` applies, so that a file `check` accepts is one `serve`
            // accepts too.
            let budget = EvalBudget {
                ring_capacity: ring_capacity.map_or(
                    tripwire::state::StoreConfig::default().ring_capacity,
                    usize::from,
                ),
                max_cost: eval_budget.unwrap_or(ServeConfig::default().eval_budget),
            };
            check(&path, &budget)
        }
        Command::Replay(args) => match replay(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tripwire replay: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Gen(args) => match generate(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tripwire gen: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => match serve(*args) {
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

fn check(path: &std::path::Path, budget: &EvalBudget) -> ExitCode {
    let loaded = rules::read_file(path).and_then(|bytes| {
        let set = rules::load_bytes(&bytes)?;
        budget.check(&set)?;
        Ok((set, bytes))
    });
    match loaded {
        Ok((set, bytes)) => {
            let shadow = set
                .rules()
                .iter()
                .filter(|r| r.mode == Mode::Shadow)
                .count();
            println!(
                "{}: ok: {} rules ({} enforce, {} shadow), {} lists, timezone {}, sha256 {}, cost {} of budget {} per decision",
                path.display(),
                set.rules().len(),
                set.rules().len() - shadow,
                shadow,
                set.valid.lists.len(),
                set.valid.timezone_name,
                tripwire::reload::sha256_hex(&bytes),
                set.cost(budget.ring_capacity),
                budget.max_cost
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_problems(path, &e);
            ExitCode::FAILURE
        }
    }
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let load = |path: &std::path::Path| -> anyhow::Result<Vec<u8>> {
        rules::read_file(path).map_err(|e| {
            print_problems(path, &e);
            anyhow::anyhow!("cannot load rules from {}", path.display())
        })
    };
    let live = load(&args.rules)?;
    let candidate = args.against.as_deref().map(load).transpose()?;
    let mapping_file = match &args.mapping {
        Some(path) => Some(
            toml::from_str::<input::MappingFile>(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )
            .with_context(|| format!("{}", path.display()))?,
        ),
        None => None,
    };
    let mut mapping = input::Mapping::build(mapping_file, &args.columns, args.timezone.as_deref())?;
    if let Some(format) = &args.time_format {
        mapping = mapping.with_time_format(format, args.timezone.as_deref())?;
    }
    let (mut rows, bad) = input::read(&args.files, &mapping, args.on_error == "fail")?;
    for e in bad.iter().take(20) {
        eprintln!("{e} (skipped)");
    }
    if bad.len() > 20 {
        eprintln!("... and {} more malformed rows skipped", bad.len() - 20);
    }
    replay::sort(&mut rows);
    let files: Vec<String> = args.files.iter().map(|p| p.display().to_string()).collect();
    let mut decisions = match &args.decisions {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => None,
    };
    let config = replay::ReplayConfig {
        ring_capacity: usize::from(args.ring_capacity),
        ..replay::ReplayConfig::default()
    };
    let report = replay::run(
        &live,
        candidate.as_deref(),
        &rows,
        &files,
        bad.len() as u64,
        &config,
        decisions.as_mut().map(|w| w as &mut dyn std::io::Write),
    )?;
    if let Some(mut w) = decisions {
        std::io::Write::flush(&mut w).context("cannot write decisions")?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn generate(args: GenArgs) -> anyhow::Result<()> {
    let config = replay::generate::GenConfig {
        customers: args.customers,
        days: args.days,
        seed: args.seed,
        per_pattern: args
            .fraud_per_pattern
            .unwrap_or((args.customers / 50).max(1)),
    };
    let format = if args.format == "jsonl" {
        replay::generate::Format::Jsonl
    } else {
        replay::generate::Format::Csv
    };
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut writer: Box<dyn std::io::Write> = if args.gzip {
        Box::new(flate2::write::GzEncoder::new(
            std::io::BufWriter::new(file),
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(std::io::BufWriter::new(file))
    };
    let manifest = replay::generate::generate(&config, format, &mut writer)?;
    writer.flush()?;
    drop(writer);
    println!("{}", serde_json::to_string(&manifest)?);
    Ok(())
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

    let file = match &args.config {
        Some(path) => config::read_file(path)?,
        None => config::FileConfig::default(),
    };
    let flags = config::Flags {
        rules: args.rules,
        listen: args.listen,
        admin_listen: args.admin_listen,
        workers: args.workers,
        max_customers: args.max_customers,
        ring_capacity: args.ring_capacity,
        max_body_bytes: args.max_body_bytes,
        no_watch: args.no_watch,
        decision_log: args.decision_log,
        decision_log_max_bytes: args.decision_log_max_bytes,
        decision_log_keep: args.decision_log_keep,
        state_dir: args.state_dir,
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        max_header_bytes: args.max_header_bytes,
        eval_budget: args.eval_budget,
        shutdown_grace: args.shutdown_grace,
        upstream: args.upstream,
        upstream_timeout: args.upstream_timeout,
        on_review: args.on_review,
        on_invalid: args.on_invalid,
        on_internal_error: args.on_internal_error,
    };
    let resolved = Config::resolve(file, flags)?;
    let rules_path = resolved.rules.clone();
    let bytes = rules::read_file(&rules_path).map_err(|e| {
        print_problems(&rules_path, &e);
        anyhow::anyhow!("cannot load rules from {}", rules_path.display())
    })?;
    let budget = EvalBudget {
        ring_capacity: resolved.store.ring_capacity,
        max_cost: resolved.serve.eval_budget,
    };
    let live = LiveRules::with_budget(&bytes, &rules_path.display().to_string(), Some(budget))
        .map_err(|e| {
            print_problems(&rules_path, &e);
            anyhow::anyhow!("cannot load rules from {}", rules_path.display())
        })?;
    let mut store = Store::new(resolved.store);
    let persistence = match &resolved.state_dir {
        Some(dir) => {
            let mut persist_config = PersistConfig::new(dir.clone());
            let rules_now = live.load_full();
            if rules_now.set.needs.months {
                let zone = rules_now.set.zone.clone();
                persist_config.month_of = Some(Arc::new(move |at| zone.month_of(at)));
            }
            Some(Persistence::recover(persist_config, &mut store)?.0)
        }
        None => None,
    };
    let mut interceptor = Interceptor::new(store, live);
    if let Some(p) = &persistence {
        interceptor = interceptor.with_journal(p.journal());
    }
    let interceptor = Arc::new(interceptor);
    let persist = match persistence {
        Some(p) => Some(p.start(Arc::clone(&interceptor))?),
        None => None,
    };
    let admin_token = match std::env::var(ADMIN_TOKEN_VAR) {
        Ok(token) if token.trim().is_empty() => {
            anyhow::bail!("{ADMIN_TOKEN_VAR} is set but empty; unset it or give a token")
        }
        Ok(token) => Some(token),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!("{ADMIN_TOKEN_VAR} is not UTF-8"),
    };
    let config = ServeConfig {
        admin_token,
        ..resolved.serve
    };

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = resolved.workers {
        runtime.worker_threads(n);
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
        if let Some(persist) = persist {
            tracing::info!("writing state");
            let store_owner = Arc::clone(&interceptor);
            tokio::task::spawn_blocking(move || persist.shutdown(store_owner.store()))
                .await
                .context("the state writer panicked")?
                .context("cannot write state at shutdown")?;
        }
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
