//! The `tripwire replay` and `tripwire gen` commands: their flags (declared once, here) and
//! what they do with them. `main` parses the command line into these types and calls
//! [`replay()`] or [`generate()`]; output goes to the writers given, so tests can read it.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::generate::{self, Format, GenConfig};
use super::input::{self, InputError};
use super::{ReplayConfig, ReplayError};
use crate::rules::{self, RulesError};
use crate::state::StoreConfig;

/// How history files' columns are read: the flags `replay` and `scorecard fit` share.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ColumnArgs {
    /// A TOML file mapping fields to columns: a columns table (customer_id = "cust_no"), time_format, timezone.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// FIELD=COLUMN, repeatable; wins over the mapping file.
    #[arg(long = "column")]
    pub columns: Vec<String>,
    /// rfc3339 (default), epoch_s, epoch_ms or local.
    #[arg(long)]
    pub time_format: Option<String>,
    /// Time zone of local timestamps.
    #[arg(long)]
    pub timezone: Option<String>,
}

/// Flags of `tripwire replay`.
#[derive(Clone, Debug, clap::Args)]
pub struct ReplayArgs {
    /// The rules to replay (the live ones).
    #[arg(long)]
    pub rules: PathBuf,
    /// A candidate rule set: report the transactions whose decision it would change.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// History files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write every decision as a JSON line to this file.
    #[arg(long)]
    pub decisions: Option<PathBuf>,
    /// How the history's columns are read.
    #[command(flatten)]
    pub columns: ColumnArgs,
    /// Split recall by this column's values, e.g. a fraud-pattern column (the same as --column group=COLUMN).
    #[arg(long)]
    pub group_by: Option<String>,
    /// What to do with a malformed row: skip (report it) or fail.
    #[arg(long, default_value = "skip", value_parser = ["skip", "fail"])]
    pub on_error: String,
    /// Measure only from this time (RFC 3339, or a date YYYY-MM-DD meaning its UTC midnight); earlier rows warm the state.
    #[arg(long)]
    pub from: Option<String>,
    /// Measure only before this time (exclusive; RFC 3339 or YYYY-MM-DD); later rows are not replayed.
    #[arg(long)]
    pub until: Option<String>,
    /// Events kept per customer, as in serve [default: 64].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub ring_capacity: Option<u16>,
    /// Write a self-contained HTML report here: per-rule hits and precision, decisions over time, the --against changes.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Turn each row labelled fraud into a confirmed-fraud report this long after its transaction (e.g. 7d), applied in event-time order; without it labels are never shown to the rules.
    #[arg(long)]
    pub label_delay: Option<String>,
    /// Customer parts decided in parallel, on at most one thread per core shared with the pass that keeps merchant, device, IP and channel state [default: one per core]; 0 decides everything on one thread. The decisions are the same either way.
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub threads: Option<u16>,
}

/// Flags of `tripwire gen`.
#[derive(Clone, Debug, clap::Args)]
pub struct GenArgs {
    /// Ordinary customers.
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    /// Days of history from 2026-03-01.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Seed; the same seed writes the same history.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fraudsters per injected pattern [default: customers / 50, at least 1].
    #[arg(long)]
    pub fraud_per_pattern: Option<usize>,
    /// csv or jsonl.
    #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl"])]
    pub format: String,
    /// credit (default): credit-line customers with the patterns the shipped interception rules catch; card: card transactions with terminals and devices, fraud only history-aware rules catch (large amounts, compromised terminals and customers, device rings) and legitimate look-alikes (CSV only).
    #[arg(long, default_value = "credit", value_parser = ["credit", "card"])]
    pub profile: String,
    /// Compress with gzip.
    #[arg(long)]
    pub gzip: bool,
    /// Output file; `-` writes to standard output (the manifest then goes to standard error).
    #[arg(long)]
    pub out: PathBuf,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A rules file did not load; every problem as `PATH:LINE:COLUMN: message`.
    #[error("cannot load rules from {path}:\n{}", report.trim_end())]
    Rules {
        /// The file.
        path: String,
        /// One line per problem.
        report: String,
    },
    /// The mapping file could not be read or parsed.
    #[error("{path}: {message}")]
    Mapping {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The history could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The replay failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// A flag's value is malformed.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An output file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file (or `stdout`).
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

pub(crate) fn output_error(path: &Path) -> impl Fn(std::io::Error) -> CommandError + '_ {
    move |source| CommandError::Output {
        path: path.display().to_string(),
        source,
    }
}

pub(crate) fn stdout_error(source: std::io::Error) -> CommandError {
    CommandError::Output {
        path: "stdout".into(),
        source,
    }
}

/// A `--from`/`--until` value: an RFC 3339 timestamp, or a date meaning its UTC midnight.
pub(crate) fn period_bound(
    flag: &'static str,
    text: &str,
) -> Result<crate::txn::EventTime, CommandError> {
    let text = text.trim();
    let timestamp = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    crate::txn::parse_timestamp(&timestamp).map_err(|message| CommandError::Flag {
        flag,
        message: format!("{text:?} {message}, or a date such as 2026-03-01"),
    })
}

/// A `--label-delay` value, in microseconds.
pub(crate) fn label_delay(text: Option<&str>) -> Result<Option<i64>, CommandError> {
    text.map(|t| {
        crate::rules::text::parse_duration(t).map_err(|message| CommandError::Flag {
            flag: "--label-delay",
            message,
        })
    })
    .transpose()
}

pub(crate) fn load_rules_text(path: &Path) -> Result<Vec<u8>, CommandError> {
    rules::read_file(path).map_err(|e: RulesError| CommandError::Rules {
        path: path.display().to_string(),
        report: rules::problem_report(path, &e),
    })
}

/// Runs `tripwire replay`: the report to `out`, skipped rows to `err`.
pub fn replay(
    args: &ReplayArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CommandError> {
    let measure_from = args
        .from
        .as_deref()
        .map(|t| period_bound("--from", t))
        .transpose()?;
    let measure_until = args
        .until
        .as_deref()
        .map(|t| period_bound("--until", t))
        .transpose()?;
    if let (Some(from), Some(until)) = (measure_from, measure_until)
        && from >= until
    {
        return Err(CommandError::Flag {
            flag: "--until",
            message: "must be after --from".into(),
        });
    }
    let live = load_rules_text(&args.rules)?;
    let candidate = args.against.as_deref().map(load_rules_text).transpose()?;
    let (mut rows, bad) = load_rows(
        &HistoryInput {
            files: &args.files,
            columns: &args.columns,
            group_by: args.group_by.as_deref(),
            fatal: args.on_error == "fail",
        },
        err,
    )?;
    super::sort(&mut rows);
    let files: Vec<String> = args.files.iter().map(|p| p.display().to_string()).collect();
    let mut decisions = match &args.decisions {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(output_error(path))?,
        )),
        None => None,
    };
    let config = ReplayConfig {
        ring_capacity: args
            .ring_capacity
            .map_or(StoreConfig::default().ring_capacity, usize::from),
        measure_from,
        measure_until,
        label_delay: label_delay(args.label_delay.as_deref())?,
        threads: args.threads.map(usize::from),
        ..ReplayConfig::default()
    };
    let report = super::run(
        &live,
        candidate.as_deref(),
        &rows,
        &files,
        bad.len() as u64,
        &config,
        decisions.as_mut().map(|w| w as &mut dyn Write),
    )?;
    if let (Some(mut w), Some(path)) = (decisions, &args.decisions) {
        w.flush().map_err(output_error(path))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report.html()).map_err(output_error(path))?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| stdout_error(e.into()))?;
        writeln!(out, "{text}").map_err(stdout_error)?;
    } else {
        write!(out, "{}", report.table()).map_err(stdout_error)?;
    }
    // Freeing the rows one allocation at a time takes about 50 ms for 1.7 M of them, with
    // nothing left to do: on a thread of its own, the process need not wait for it to exit.
    // (If the thread cannot start, the rows are freed here as the closure is dropped.)
    let _ = std::thread::Builder::new()
        .name("replay-free".into())
        .spawn(move || drop(rows));
    Ok(())
}

/// Runs `tripwire gen`: writes the history to `args.out` and its manifest (JSON) to `out`; with
/// `--out -`, the history to `out` and the manifest to `err`.
pub fn generate(
    args: &GenArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CommandError> {
    let config = GenConfig {
        customers: args.customers,
        days: args.days,
        seed: args.seed,
        per_pattern: args
            .fraud_per_pattern
            .unwrap_or((args.customers / 50).max(1)),
    };
    let format = if args.format == "jsonl" {
        Format::Jsonl
    } else {
        Format::Csv
    };
    let written = output_error(&args.out);
    // `--out -` writes the history to standard output; the manifest then goes to `err`, so
    // the two never mix.
    let to_stdout = args.out.as_os_str() == "-";
    let sink: Box<dyn Write + '_> = if to_stdout {
        Box::new(&mut *out)
    } else {
        Box::new(std::fs::File::create(&args.out).map_err(&written)?)
    };
    let mut writer: Box<dyn Write + '_> = if args.gzip {
        Box::new(flate2::write::GzEncoder::new(
            std::io::BufWriter::new(sink),
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(std::io::BufWriter::new(sink))
    };
    let text = if args.profile == "card" {
        if format != Format::Csv {
            return Err(CommandError::Flag {
                flag: "--format",
                message: "the card profile writes CSV only".into(),
            });
        }
        let manifest = super::generate_card::generate(&config, &mut writer).map_err(&written)?;
        writer.flush().map_err(&written)?;
        serde_json::to_string(&manifest)
    } else {
        let manifest = generate::generate(&config, format, &mut writer).map_err(&written)?;
        writer.flush().map_err(&written)?;
        serde_json::to_string(&manifest)
    }
    .map_err(|e| stdout_error(e.into()))?;
    drop(writer);
    if to_stdout {
        writeln!(err, "{text}").map_err(stdout_error)
    } else {
        writeln!(out, "{text}").map_err(stdout_error)
    }
}

/// Where history comes from and how its columns are read: what `replay` and `scorecard fit`
/// share.
pub(crate) struct HistoryInput<'a> {
    pub(crate) files: &'a [PathBuf],
    pub(crate) columns: &'a ColumnArgs,
    pub(crate) group_by: Option<&'a str>,
    pub(crate) fatal: bool,
}

/// Reads history rows (unsorted) and reports the first malformed rows skipped to `err`;
/// returns the rows and every malformed row.
pub(crate) fn load_rows(
    input: &HistoryInput<'_>,
    err: &mut dyn Write,
) -> Result<(Vec<super::input::Row>, Vec<super::input::RowError>), CommandError> {
    let flags = input.columns;
    let mapping_file = match flags.mapping.as_deref() {
        Some(path) => {
            let mapping_error = |message: String| CommandError::Mapping {
                path: path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(path)
                .map_err(|e| mapping_error(format!("cannot read: {e}")))?;
            Some(
                toml::from_str::<input::MappingFile>(&text)
                    .map_err(|e| mapping_error(e.to_string()))?,
            )
        }
        None => None,
    };
    let mut columns = flags.columns.clone();
    if let Some(column) = input.group_by {
        columns.push(format!("group={column}"));
    }
    let timezone = flags.timezone.as_deref();
    let mut mapping = input::Mapping::build(mapping_file, &columns, timezone)?;
    if let Some(format) = &flags.time_format {
        mapping = mapping.with_time_format(format, timezone)?;
    }
    let (rows, bad) = input::read(input.files, &mapping, input.fatal)?;
    for e in bad.iter().take(20) {
        writeln!(err, "{e} (skipped)").map_err(stdout_error)?;
    }
    if bad.len() > 20 {
        writeln!(
            err,
            "... and {} more malformed rows skipped",
            bad.len() - 20
        )
        .map_err(stdout_error)?;
    }
    Ok((rows, bad))
}
