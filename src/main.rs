//! The `tripwire` command: parses the command line and calls the library. Every flag is
//! declared in the library type it configures (`config::ServeSettings`,
//! `replay::command::{ReplayArgs, GenArgs}`); the service itself is assembled in `app`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tripwire::config::{Config, ServeSettings};
use tripwire::fleet::rules::RulesCommand;
use tripwire::replay::command::{self, GenArgs, ReplayArgs};
use tripwire::rules::{self, EvalBudget};
use tripwire::server::ServeConfig;
use tripwire::state::StoreConfig;

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
    /// Serve the decision API with the rules in a file. Each flag can also be set in the
    /// `--config` file; a flag given here wins over the file, and the file over the default.
    Serve(Box<ServeSettings>),
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
    /// Fleet mode: push, roll back or inspect the rules every replica runs (NATS KV).
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Behaviour scorecards built from history.
    #[command(subcommand)]
    Scorecard(ScorecardCommand),
}

#[derive(Subcommand)]
enum ScorecardCommand {
    /// Fit a scorecard (binning, WOE and IV, logistic regression, points) on labelled history,
    /// with the features computed by the engine that serves them.
    Fit(Box<tripwire::scorecard::command::FitArgs>),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let (stdout, stderr) = (&mut std::io::stdout(), &mut std::io::stderr());
    match cli.command {
        Command::Check {
            path,
            eval_budget,
            ring_capacity,
        } => {
            let budget = EvalBudget {
                ring_capacity: ring_capacity
                    .map_or(StoreConfig::default().ring_capacity, usize::from),
                max_cost: eval_budget.unwrap_or(ServeConfig::default().eval_budget),
            };
            match rules::check_file(&path, &budget) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprint!("{}", rules::problem_report(&path, &e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Replay(args) => exit("tripwire replay", command::replay(&args, stdout, stderr)),
        Command::Gen(args) => exit("tripwire gen", command::generate(&args, stdout, stderr)),
        Command::Scorecard(ScorecardCommand::Fit(args)) => exit(
            "tripwire scorecard fit",
            tripwire::scorecard::command::fit(&args, stdout, stderr),
        ),
        Command::Rules(rules_command) => {
            match tripwire::fleet::rules::run_command(&rules_command) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => exit("tripwire rules", Err(e)),
            }
        }
        Command::Serve(flags) => {
            let serve_matches = matches
                .subcommand_matches("serve")
                .expect("the serve subcommand was parsed from these matches");
            init_tracing();
            exit(
                "tripwire",
                ServeSettings::layered(&flags, serve_matches)
                    .and_then(Config::resolve)
                    .map_err(tripwire::app::AppError::from)
                    .and_then(tripwire::app::serve),
            )
        }
    }
}

fn exit<E: std::fmt::Display>(name: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
