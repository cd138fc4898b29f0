//! Rules as data until compiled: `rules.yaml` is parsed ([`schema`]), validated with line and
//! column for every problem ([`validate`]), then compiled ([`compile`](mod@compile)) into an immutable
//! [`RuleSet`] that the engine evaluates without allocating or looking anything up by name.
//!
//! Nothing here touches customer state or the network; a failed load returns errors and leaves
//! whatever rule set is live untouched.

pub mod compile;
pub mod ir;
pub mod schema;
pub mod text;
pub mod validate;
pub mod zone;

use std::fmt;
use std::path::Path;

pub use compile::{RuleSet, compile};
pub use ir::ValidRules;
pub use schema::{Action, Mode};

/// Largest rules file accepted, in bytes. Far above any real rule set (the shipped file is a
/// few KiB, 1,000 generated rules about 150 KiB) and small enough that parsing it cannot stall.
pub const MAX_RULES_BYTES: usize = 4 * 1024 * 1024;
/// Most rules in one file.
pub const MAX_RULES: usize = 4_096;
/// Most distinct history windows across all rules; the engine keeps one aggregate per window
/// on the stack.
pub const MAX_DISTINCT_WINDOWS: usize = 32;
/// Most distinct (list, window) pairs used by `list_count`.
pub const MAX_LIST_WINDOWS: usize = 32;

/// One problem in a rules file, at a line and column (1-based; 0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Why a rule set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The text is larger than [`MAX_RULES_BYTES`].
    #[error("rules are {bytes} bytes; the limit is {MAX_RULES_BYTES}")]
    TooLarge {
        /// Size offered.
        bytes: usize,
    },
    /// The text is not UTF-8.
    #[error("the file is not UTF-8 text: byte {valid_up_to} is not (save it as UTF-8)")]
    NotUtf8 {
        /// Bytes before the first invalid one.
        valid_up_to: usize,
        /// Its line, 1-based.
        line: u64,
        /// Its column (in characters), 1-based.
        column: u64,
    },
    /// YAML or validation problems, each with a position.
    #[error("{}", .0.first().map(ToString::to_string).unwrap_or_default())]
    Invalid(Vec<Problem>),
}

impl RulesError {
    /// The problems with positions, or one at 0:0 for errors without a position.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            RulesError::Invalid(problems) => problems.clone(),
            RulesError::NotUtf8 { line, column, .. } => vec![Problem {
                line: *line,
                column: *column,
                message: self.to_string(),
            }],
            other => vec![Problem {
                line: 0,
                column: 0,
                message: other.to_string(),
            }],
        }
    }
}

/// Most YAML nodes (keys, values, list items) in a rules file: room for [`MAX_RULES`] rules of
/// a few dozen nodes each, and far below what would let a crafted file stall a reload.
pub const MAX_YAML_NODES: usize = 1_000_000;
/// Deepest nesting of YAML mappings and lists in a rules file.
pub const MAX_YAML_DEPTH: usize = 48;
/// Most aliases (`*name`) and anchors (`&name`) in a rules file.
pub const MAX_YAML_ALIASES: usize = 1_000;

/// Budgets for the YAML parser: far above what a rules file of [`MAX_RULES`] rules needs, far
/// below what would let an alias bomb or a deep nest stall a reload. Each is documented in the
/// README's limits, in the user's terms.
fn parse_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 2 * MAX_YAML_NODES;
    budget.max_aliases = MAX_YAML_ALIASES;
    budget.max_anchors = MAX_YAML_ALIASES;
    budget.max_nodes = MAX_YAML_NODES;
    budget.max_depth = MAX_YAML_DEPTH;
    budget.max_total_scalar_bytes = MAX_RULES_BYTES;
    budget.max_recorded_anchor_events = 50_000;
    budget.max_documents = 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// The message for a YAML error, in the words of someone writing rules: the parser's own text
/// for budget breaches and duplicate keys names its internals.
fn yaml_message(error: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach;
    match error.without_snippet() {
        serde_saphyr::Error::Budget { breach, .. } => Some(match breach {
            BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => format!(
                "the file has more than {MAX_YAML_NODES} YAML values (keys, values and list items); split it or simplify the conditions"
            ),
            BudgetBreach::Depth { .. } => format!(
                "conditions and lists nest more than {MAX_YAML_DEPTH} levels deep"
            ),
            BudgetBreach::Documents { .. } => {
                "the file holds more than one YAML document (a `---` line); give one rule set per file".to_string()
            }
            BudgetBreach::Aliases { .. }
            | BudgetBreach::Anchors { .. }
            | BudgetBreach::AliasAnchorRatio { .. }
            | BudgetBreach::MergeKeys { .. } => format!(
                "the file uses more than {MAX_YAML_ALIASES} YAML anchors or aliases (`&name`, `*name`), or expands them too often"
            ),
            BudgetBreach::ScalarBytes { .. } | BudgetBreach::InputBytes { .. } => {
                format!("the file's text is larger than {MAX_RULES_BYTES} bytes")
            }
            _ => "the file is too complex to load safely".to_string(),
        }),
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => Some(match key {
            Some(key) => format!("duplicate key `{key}`: each key may appear once in a mapping"),
            None => "duplicate key: each key may appear once in a mapping".to_string(),
        }),
        _ => None,
    }
}

/// Stack for parsing a rules file. Deserialising nested conditions takes stack for every YAML
/// level (about 90 KiB a level in a debug build); the YAML depth budget bounds the levels, and
/// parsing on a thread of this size makes that budget, not the calling thread's stack (2 MiB
/// on tokio's blocking pool), the limit. Without it a deeply nested file pushed to
/// `PUT /admin/rules` overflowed the stack and aborted the process.
const PARSE_STACK_BYTES: usize = 32 * 1024 * 1024;

/// Parses YAML text into the file schema, mapping serde-saphyr's error to a positioned problem.
/// Runs on a thread with a stack of its own (see `PARSE_STACK_BYTES`).
pub fn parse(text: &str) -> Result<schema::RulesFile, RulesError> {
    if text.len() > MAX_RULES_BYTES {
        return Err(RulesError::TooLarge { bytes: text.len() });
    }
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("rules-parse".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(scope, || parse_here(text));
        match parser {
            Ok(parser) => parser.join().unwrap_or_else(|_| {
                Err(RulesError::Invalid(vec![Problem {
                    line: 0,
                    column: 0,
                    message: "the YAML parser failed on this file".to_string(),
                }]))
            }),
            // No thread to be had (the process is at its limit): parse here instead.
            Err(_) => parse_here(text),
        }
    })
}

fn parse_here(text: &str) -> Result<schema::RulesFile, RulesError> {
    serde_saphyr::from_str_with_options(text, parse_options()).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let message = yaml_message(&e).unwrap_or_else(|| {
            let plain = e.without_snippet().to_string();
            // serde-saphyr appends the position to its message; we print it in front instead.
            let suffix = format!(" at line {line}, column {column}");
            plain.strip_suffix(&suffix).unwrap_or(&plain).to_string()
        });
        RulesError::Invalid(vec![Problem {
            line,
            column,
            message,
        }])
    })
}

/// The text of `bytes` as UTF-8, or the position of the first byte that is not.
fn utf8(bytes: &[u8]) -> Result<&str, RulesError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let before = &bytes[..e.valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column =
            std::str::from_utf8(&before[line_start..]).map_or(1, |t| t.chars().count() as u64 + 1);
        RulesError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
            line,
            column,
        }
    })
}

/// Parse → validate → compile, from YAML bytes.
pub fn load_bytes(bytes: &[u8]) -> Result<RuleSet, RulesError> {
    if bytes.len() > MAX_RULES_BYTES {
        return Err(RulesError::TooLarge { bytes: bytes.len() });
    }
    let text = utf8(bytes)?;
    let file = parse(text)?;
    let valid = validate::validate(&file).map_err(RulesError::Invalid)?;
    Ok(compile(&valid))
}

/// A ceiling on the evaluation work a rule set may cost per decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalBudget {
    /// Events per customer the rules will scan.
    pub ring_capacity: usize,
    /// Most work units allowed (see [`RuleSet::cost`]).
    pub max_cost: u64,
}

impl EvalBudget {
    /// Refuses a rule set that would cost more than the budget per decision.
    pub fn check(&self, set: &RuleSet) -> Result<(), RulesError> {
        let cost = set.cost(self.ring_capacity);
        if cost > self.max_cost {
            return Err(RulesError::Invalid(vec![Problem {
                line: 0,
                column: 0,
                message: format!(
                    "the rule set would cost {cost} work units per decision with a {}-event history; the evaluation budget is {} (raise --eval-budget, or use fewer windows and rules)",
                    self.ring_capacity, self.max_cost
                ),
            }]));
        }
        Ok(())
    }
}

/// Parse → validate, from YAML bytes; for tests and the reference evaluator.
pub fn validate_bytes(bytes: &[u8]) -> Result<ValidRules, RulesError> {
    let text = utf8(bytes)?;
    let file = parse(text)?;
    validate::validate(&file).map_err(RulesError::Invalid)
}

/// Hex SHA-256 of a rules text: the content half of a rules version.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Every problem of `error` as a `PATH:LINE:COLUMN: message` line.
pub fn problem_report(path: &Path, error: &RulesError) -> String {
    error
        .problems()
        .iter()
        .map(|p| {
            format!(
                "{}:{}:{}: {}\n",
                path.display(),
                p.line,
                p.column,
                p.message
            )
        })
        .collect()
}

/// What `tripwire check` reports of a rules file it accepts.
#[derive(Clone, Debug)]
pub struct CheckSummary {
    /// The file.
    pub path: String,
    /// Rules in the file.
    pub rules: usize,
    /// Of which in shadow mode.
    pub shadow: usize,
    /// Named lists.
    pub lists: usize,
    /// The rules' time zone.
    pub timezone: String,
    /// SHA-256 of the text, as its version will show.
    pub sha256: String,
    /// Evaluation cost per decision.
    pub cost: u64,
    /// The budget it was checked against.
    pub budget: u64,
}

impl fmt::Display for CheckSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: ok: {} rules ({} enforce, {} shadow), {} lists, timezone {}, sha256 {}, cost {} of budget {} per decision",
            self.path,
            self.rules,
            self.rules - self.shadow,
            self.shadow,
            self.lists,
            self.timezone,
            self.sha256,
            self.cost,
            self.budget
        )
    }
}

/// Loads a rules file exactly as `serve` would, budget included, so that a file `check`
/// accepts is one `serve` accepts too.
pub fn check_file(path: &Path, budget: &EvalBudget) -> Result<CheckSummary, RulesError> {
    let bytes = read_file(path)?;
    let set = load_bytes(&bytes)?;
    budget.check(&set)?;
    Ok(CheckSummary {
        path: path.display().to_string(),
        rules: set.rules().len(),
        shadow: set
            .rules()
            .iter()
            .filter(|r| r.mode == Mode::Shadow)
            .count(),
        lists: set.valid.lists.len(),
        timezone: set.valid.timezone_name.clone(),
        sha256: sha256_hex(&bytes),
        cost: set.cost(budget.ring_capacity),
        budget: budget.max_cost,
    })
}

/// Reads a rules file, refusing it before reading when it is too large.
pub fn read_file(path: &Path) -> Result<Vec<u8>, RulesError> {
    let io = |source| RulesError::Io {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_RULES_BYTES as u64 {
        return Err(RulesError::TooLarge {
            bytes: usize::try_from(len).unwrap_or(usize::MAX),
        });
    }
    std::fs::read(path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_problem(bytes: &[u8]) -> Problem {
        match load_bytes(bytes) {
            Err(e) => e.problems().remove(0),
            Ok(_) => panic!("expected a refusal"),
        }
    }

    #[test]
    fn yaml_refusals_speak_of_the_file_not_the_parser() {
        let dup = first_problem(b"timezone: UTC\ntimezone: UTC\nrules: []\n");
        assert_eq!((dup.line, dup.column), (2, 1));
        assert_eq!(
            dup.message,
            "duplicate key `timezone`: each key may appear once in a mapping"
        );
        let docs = first_problem(b"timezone: UTC\nrules: []\n---\ntimezone: UTC\n");
        assert!(
            docs.message.contains("more than one YAML document"),
            "{docs}"
        );
        let deep = format!(
            "timezone: UTC\nrules:\n  - id: a\n    action: review\n    when: {}{{ amount: {{ at_least: 1 }} }}{}\n",
            "{ all: [ ".repeat(30),
            " ] }".repeat(30)
        );
        let deep = first_problem(deep.as_bytes());
        assert!(deep.message.contains("nest more than 48 levels"), "{deep}");
        for p in [dup, docs, deep] {
            assert!(
                !p.message.contains("budget") && !p.message.contains("Options"),
                "{p}"
            );
        }
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused_at_the_line_and_column_of_the_bad_byte() {
        let p = first_problem(b"timezone: UTC\nrules:\n  - id: a\xff\n");
        assert_eq!((p.line, p.column), (3, 10));
        assert!(p.message.contains("not UTF-8"), "{p}");
    }

    #[test]
    fn the_documented_rule_count_fits_the_yaml_limits() {
        let mut yaml = String::from("timezone: UTC\nrules:\n");
        for i in 0..MAX_RULES {
            yaml.push_str(&format!(
                "  - id: r{i}\n    action: review\n    when: {{ all: [ {{ amount: {{ at_least: \"{i}\" }} }}, {{ count: {{ window: 1h, at_least: 3 }} }}, {{ not: {{ local_hour: {{ at_least: 1 }} }} }} ] }}\n"
            ));
        }
        let set = load_bytes(yaml.as_bytes()).expect("4,096 rules of three conditions load");
        assert_eq!(set.rules().len(), MAX_RULES);
    }

    fn problems(yaml: &str) -> Vec<Problem> {
        match load_bytes(yaml.as_bytes()) {
            Ok(_) => panic!("expected a refusal for:\n{yaml}"),
            Err(e) => e.problems(),
        }
    }

    const HEAD: &str = "timezone: Asia/Shanghai\nlists:\n  sensitive: [99, 499]\nrules:\n";

    #[test]
    fn shipped_rules_load() {
        let text = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../rules.yaml")).unwrap();
        let set = load_bytes(&text).unwrap();
        assert!(set.rules().len() >= 6);
    }

    #[test]
    fn unknown_feature_is_refused_at_its_position() {
        let p = problems(&format!(
            "{HEAD}  - id: a\n    action: deny\n    when:\n      cuont: {{ window: 10m, at_least: 5 }}\n"
        ));
        assert_eq!((p[0].line, p[0].column), (8, 7));
        assert!(p[0].message.contains("unknown variant `cuont`"), "{p:?}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let p = problems(&format!(
            "{HEAD}  - id: a\n    action: deny\n    severity: 3\n    when:\n      count: {{ window: 10m, at_least: 5 }}\n"
        ));
        assert_eq!(p[0].line, 7);
        assert!(p[0].message.contains("unknown field `severity`"), "{p:?}");
    }

    #[test]
    fn bad_action_is_refused() {
        let p = problems(&format!(
            "{HEAD}  - id: a\n    action: block\n    when:\n      count: {{ window: 10m, at_least: 5 }}\n"
        ));
        assert_eq!(p[0].line, 6);
        assert!(p[0].message.contains("unknown variant `block`"), "{p:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported_with_its_position() {
        let p = problems(&format!(
            "{HEAD}  - id: a\n    action: deny\n    when:\n      count: {{ window: 10x, at_least: 5 }}\n  - id: a\n    action: review\n    when:\n      list_count: {{ window: 1h, list: nope, at_least: two }}\n"
        ));
        let lines: Vec<u64> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![8, 9, 12, 12], "{p:?}");
        assert!(p[0].message.contains("bad window \"10x\""));
        assert!(
            p[1].message
                .contains("duplicate rule id `a` (first defined on line 5)")
        );
        assert!(p.iter().any(|p| p.message.contains("unknown list `nope`")));
        assert!(p.iter().any(|p| p.message.contains("threshold \"two\"")));
    }

    #[test]
    fn wrong_types_and_missing_parameters_are_refused() {
        let p = problems(&format!(
            "{HEAD}  - id: a\n    action: deny\n    when:\n      count: {{ at_least: 5 }}\n"
        ));
        assert!(p[0].message.contains("needs a `window`"), "{p:?}");
        let p = problems(&format!(
            "{HEAD}  - id: a\n    action: deny\n    when:\n      local_time: {{ from: \"01:00\", to: \"05:00\", window: 1h }}\n"
        ));
        assert!(
            p[0].message
                .contains("`window` does not apply to `local_time`"),
            "{p:?}"
        );
        let p = problems(&format!(
            "{HEAD}  - id: a\n    action: deny\n    when:\n      amount: {{ in: sensitive, at_least: 5 }}\n"
        ));
        assert!(p[0].message.contains("has 2 tests"), "{p:?}");
        let p = problems(&format!(
            "{HEAD}  - id: Bad-Id\n    action: deny\n    when:\n      amount: {{ at_least: 5 }}\n"
        ));
        assert!(p[0].message.contains("snake_case"), "{p:?}");
    }

    #[test]
    fn amount_lists_must_hold_amounts() {
        let p = problems(
            "timezone: UTC\nlists:\n  odd: [99, abc]\nrules:\n  - id: a\n    action: deny\n    when:\n      amount: { in: odd }\n",
        );
        assert_eq!((p[0].line, p[0].column), (3, 13));
    }

    #[test]
    fn unknown_time_zone_is_refused() {
        let p = problems(
            "timezone: Mars/Olympus\nrules:\n  - id: a\n    action: deny\n    when:\n      amount: { at_least: 5 }\n",
        );
        assert_eq!((p[0].line, p[0].column), (1, 11));
    }

    #[test]
    fn alias_bomb_is_refused_quickly() {
        let mut yaml = String::from(
            "timezone: UTC\nrules: []\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
        );
        for i in 1..12 {
            let prev = i - 1;
            yaml.push_str(&format!(
                "x{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        assert!(load_bytes(yaml.as_bytes()).is_err());
    }

    #[test]
    fn oversize_text_is_refused_before_parsing() {
        let yaml = " ".repeat(MAX_RULES_BYTES + 1);
        assert!(matches!(
            load_bytes(yaml.as_bytes()),
            Err(RulesError::TooLarge { .. })
        ));
    }
}
