//! The live rule set: the compiled [`RuleSet`] in force, its version, the record of every load
//! and refusal, and the earlier good versions rollback walks back through.
//!
//! A complete new set is built off the hot path (parse → validate → compile) and swapped in
//! whole through an `ArcSwap`. A request loads the current set once and uses that snapshot to
//! the end; a refused set changes nothing but the history. What starts a reload (a file watch,
//! SIGHUP, the admin API) is the reload module of the `tripwire` crate, not this one.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::rules::{self, RuleSet, RulesError, sha256_hex};

/// Which load of the rules a decision used: a sequence number and the content hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesVersion {
    /// 1 for the rules loaded at start, then one more per accepted reload.
    pub seq: u64,
    /// SHA-256 of the rules text, hex.
    pub sha256: String,
    /// `"{seq}-{first 12 hex digits of the hash}"`, as reported in every decision.
    pub label: String,
}

/// A compiled rule set with where and when it came from.
#[derive(Debug)]
pub struct LoadedRules {
    /// The compiled rules.
    pub set: RuleSet,
    /// Its version.
    pub version: RulesVersion,
    /// When it was loaded (wall clock; informational).
    pub loaded_at: jiff::Timestamp,
    /// Where it came from (a path, `PUT /admin/rules`...).
    pub source: String,
}

/// How many loads and refusals `GET /admin/rules/history` remembers.
pub const HISTORY_LEN: usize = 50;
/// How many earlier good versions rollback can walk back through.
pub const ROLLBACK_DEPTH: usize = 20;

/// One entry of the reload history.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    /// When it happened (wall clock).
    pub at: jiff::Timestamp,
    /// Where the rules came from.
    pub source: String,
    /// SHA-256 of the text offered.
    pub sha256: String,
    /// The version it became, or the error that refused it.
    pub outcome: Result<RulesVersion, Refusal>,
}

/// Why a rule set was refused, with the position of the first problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The first problem's message.
    pub error: String,
    /// Its line (0 when unknown).
    pub line: u64,
    /// Its column (0 when unknown).
    pub column: u64,
    /// Every problem, as `LINE:COLUMN: message`.
    pub problems: Vec<String>,
}

impl Refusal {
    /// The refusal for a load error.
    pub fn from_error(e: &RulesError) -> Refusal {
        let problems = e.problems();
        let first = problems.first();
        Refusal {
            error: first.map_or_else(|| e.to_string(), |p| p.message.clone()),
            line: first.map_or(0, |p| p.line),
            column: first.map_or(0, |p| p.column),
            problems: problems.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Why a rollback did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// No earlier good version is remembered.
    #[error("no earlier good rule set to roll back to")]
    NothingToRollBack,
}

struct Book {
    next_seq: u64,
    history: std::collections::VecDeque<HistoryEntry>,
    /// Good versions, oldest first; the last is the live one. Rollback pops it.
    good: Vec<(RulesVersion, Arc<[u8]>)>,
    /// Rule sets swapped out but perhaps still used by requests in flight. Freeing a rule set
    /// is many deallocations; holding the last reference here means it happens on the reload
    /// path (at a later swap), never at the end of a decision.
    retired: Vec<Arc<LoadedRules>>,
}

impl Book {
    fn remember(&mut self, entry: HistoryEntry) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(entry);
    }
}

/// The rule set in force, swapped atomically, with the record of every load and refusal.
pub struct LiveRules {
    current: ArcSwap<LoadedRules>,
    /// The most history any rule set loaded since start reads (see [`LiveRules::retention`]).
    retention: AtomicI64,
    budget: Option<rules::EvalBudget>,
    /// Serialises installs so sequence numbers follow swap order.
    book: Mutex<Book>,
}

impl std::fmt::Debug for LiveRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRules")
            .field("version", &self.current.load().version)
            .finish()
    }
}

impl LiveRules {
    /// Compiles `bytes` as the first rule set (sequence 1).
    pub fn new(bytes: &[u8], source: &str) -> Result<LiveRules, RulesError> {
        LiveRules::with_budget(bytes, source, None)
    }

    /// Like [`LiveRules::new`], refusing this and every later rule set that costs more than
    /// `budget` per decision.
    pub fn with_budget(
        bytes: &[u8],
        source: &str,
        budget: Option<rules::EvalBudget>,
    ) -> Result<LiveRules, RulesError> {
        let set = rules::load_bytes(bytes)?;
        if let Some(budget) = budget {
            budget.check(&set)?;
        }
        let loaded = Self::loaded(set, bytes, source, 1);
        let mut book = Book {
            next_seq: 2,
            history: std::collections::VecDeque::new(),
            good: vec![(loaded.version.clone(), Arc::from(bytes))],
            retired: Vec::new(),
        };
        book.remember(HistoryEntry {
            at: loaded.loaded_at,
            source: source.to_string(),
            sha256: loaded.version.sha256.clone(),
            outcome: Ok(loaded.version.clone()),
        });
        Ok(LiveRules {
            retention: AtomicI64::new(loaded.set.retention()),
            current: ArcSwap::from_pointee(loaded),
            budget,
            book: Mutex::new(book),
        })
    }

    fn loaded(set: RuleSet, bytes: &[u8], source: &str, seq: u64) -> LoadedRules {
        let sha256 = sha256_hex(bytes);
        LoadedRules {
            set,
            version: RulesVersion {
                seq,
                label: format!("{seq}-{}", &sha256[..12]),
                sha256,
            },
            loaded_at: jiff::Timestamp::now(),
            source: source.to_string(),
        }
    }

    /// The rule set in force now. Hold the returned guard for the whole decision.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<LoadedRules>> {
        self.current.load()
    }

    /// The rule set in force now, as an owned `Arc`.
    pub fn load_full(&self) -> Arc<LoadedRules> {
        self.current.load_full()
    }

    /// Parses, validates and compiles `bytes`, then swaps it in. On error nothing changes but
    /// the history, which records the refusal.
    pub fn install(&self, bytes: &[u8], source: &str) -> Result<Arc<LoadedRules>, RulesError> {
        // Compile before taking the lock: a slow or bad file never blocks another install.
        let compiled = rules::load_bytes(bytes).and_then(|set| match self.budget {
            Some(budget) => budget.check(&set).map(|()| set),
            None => Ok(set),
        });
        let mut book = self.book.lock();
        match compiled {
            Ok(set) => {
                let loaded = self.swap_in(&mut book, set, bytes, source);
                book.good.push((loaded.version.clone(), Arc::from(bytes)));
                // The live version plus ROLLBACK_DEPTH earlier ones.
                if book.good.len() > ROLLBACK_DEPTH + 1 {
                    book.good.remove(0);
                }
                Ok(loaded)
            }
            Err(e) => {
                book.remember(HistoryEntry {
                    at: jiff::Timestamp::now(),
                    source: source.to_string(),
                    sha256: sha256_hex(bytes),
                    outcome: Err(Refusal::from_error(&e)),
                });
                Err(e)
            }
        }
    }

    fn swap_in(
        &self,
        book: &mut Book,
        set: RuleSet,
        bytes: &[u8],
        source: &str,
    ) -> Arc<LoadedRules> {
        let seq = book.next_seq;
        book.next_seq += 1;
        let loaded = Arc::new(Self::loaded(set, bytes, source, seq));
        // Before the swap: the sweep must never see the new set without its retention.
        self.retention
            .fetch_max(loaded.set.retention(), Ordering::SeqCst);
        let previous = self.current.swap(Arc::clone(&loaded));
        // Sets no request holds any more are freed here, on the reload path.
        book.retired.retain(|set| Arc::strong_count(set) > 1);
        book.retired.push(previous);
        book.remember(HistoryEntry {
            at: loaded.loaded_at,
            source: source.to_string(),
            sha256: loaded.version.sha256.clone(),
            outcome: Ok(loaded.version.clone()),
        });
        loaded
    }

    /// Goes back to the good rule set loaded before the live one, as a new version (the
    /// sequence number moves on; the content hash is the earlier one's). Repeated rollbacks
    /// walk further back.
    pub fn rollback(&self) -> Result<Arc<LoadedRules>, RollbackError> {
        let mut book = self.book.lock();
        if book.good.len() < 2 {
            return Err(RollbackError::NothingToRollBack);
        }
        book.good.pop();
        let (version, text) = book.good.last().cloned().expect("two or more were held");
        let set = rules::load_bytes(&text)
            .expect("a rule set that compiled once compiles again: compilation is deterministic");
        let source = format!("rollback to {}", version.label);
        let loaded = self.swap_in(&mut book, set, &text, &source);
        if let Some(top) = book.good.last_mut() {
            top.0 = loaded.version.clone();
        }
        Ok(loaded)
    }

    /// Records a refusal that happened before compiling (unreadable or oversized text).
    pub fn record_refusal(&self, source: &str, bytes: &[u8], error: &RulesError) {
        self.book.lock().remember(HistoryEntry {
            at: jiff::Timestamp::now(),
            source: source.to_string(),
            sha256: sha256_hex(bytes),
            outcome: Err(Refusal::from_error(error)),
        });
    }

    /// How far back in event time history must be kept: the most that any rule set loaded
    /// since start reads ([`RuleSet::retention`]). Not only the live set's: a rollback, or a
    /// reload of the rules file after a pushed set, can make an earlier set live again, and the
    /// history it reads must still be there. It never shrinks while the process runs.
    pub fn retention(&self) -> i64 {
        self.retention.load(Ordering::SeqCst)
    }

    /// Loads and refusals, newest first.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.book.lock().history.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid rule set whose text differs by `n`.
    fn rules(n: u32) -> Vec<u8> {
        format!(
            "timezone: UTC\nrules:\n  - id: big_{n}\n    action: review\n    when: {{ amount: {{ at_least: \"{n}.00\" }} }}\n"
        )
        .into_bytes()
    }

    const BAD: &[u8] = b"timezone: UTC\nrules:\n  - id: x\n    action: nope\n    when: { amount: { at_least: \"1\" } }\n";

    #[test]
    fn the_first_set_is_version_one_and_each_install_moves_the_sequence_on() {
        let live = LiveRules::new(&rules(1), "start").unwrap();
        let first = live.load_full();
        assert_eq!(first.version.seq, 1);
        assert_eq!(first.version.sha256, sha256_hex(&rules(1)));
        assert_eq!(
            first.version.label,
            format!("1-{}", &first.version.sha256[..12])
        );
        let second = live.install(&rules(2), "PUT").unwrap();
        assert_eq!(second.version.seq, 2);
        assert_eq!(live.load().version, second.version);
        assert_eq!(live.load().source, "PUT");
    }

    #[test]
    fn a_refused_set_changes_nothing_but_the_history() {
        let live = LiveRules::new(&rules(1), "start").unwrap();
        let before = live.load().version.clone();
        assert!(live.install(BAD, "PUT").is_err());
        assert_eq!(live.load().version, before);
        let history = live.history();
        assert_eq!(history.len(), 2);
        let refusal = history[0].outcome.as_ref().unwrap_err();
        assert!(refusal.line > 0, "{refusal:?}");
        assert_eq!(history[0].sha256, sha256_hex(BAD));
        // The next good install takes the next sequence number: refusals use none.
        assert_eq!(live.install(&rules(2), "PUT").unwrap().version.seq, 2);
    }

    #[test]
    fn rollback_walks_back_through_earlier_good_versions_as_new_versions() {
        let live = LiveRules::new(&rules(1), "start").unwrap();
        live.install(&rules(2), "PUT").unwrap();
        live.install(&rules(3), "PUT").unwrap();
        let back = live.rollback().unwrap();
        assert_eq!(back.version.seq, 4);
        assert_eq!(back.version.sha256, sha256_hex(&rules(2)));
        assert!(back.source.starts_with("rollback to 2-"), "{}", back.source);
        let back = live.rollback().unwrap();
        assert_eq!(back.version.seq, 5);
        assert_eq!(back.version.sha256, sha256_hex(&rules(1)));
        assert_eq!(
            live.rollback().unwrap_err(),
            RollbackError::NothingToRollBack
        );
        assert_eq!(
            live.load().version.seq,
            5,
            "a failed rollback changes nothing"
        );
    }

    #[test]
    fn rollback_reaches_back_at_most_the_rollback_depth() {
        let live = LiveRules::new(&rules(0), "start").unwrap();
        for n in 1..=ROLLBACK_DEPTH as u32 + 5 {
            live.install(&rules(n), "PUT").unwrap();
        }
        let mut walked = 0;
        while live.rollback().is_ok() {
            walked += 1;
        }
        assert_eq!(
            walked, ROLLBACK_DEPTH,
            "as many rollbacks as the README promises"
        );
    }

    #[test]
    fn the_history_keeps_the_newest_entries_up_to_its_length() {
        let live = LiveRules::new(&rules(0), "start").unwrap();
        for n in 1..=HISTORY_LEN as u32 + 10 {
            live.install(&rules(n), "PUT").unwrap();
        }
        let history = live.history();
        assert_eq!(history.len(), HISTORY_LEN);
        let newest = history[0].outcome.as_ref().unwrap();
        assert_eq!(newest.seq, HISTORY_LEN as u64 + 11);
    }

    #[test]
    fn a_set_over_the_budget_is_refused_at_start_and_at_install() {
        let budget = rules::EvalBudget {
            ring_capacity: 64,
            max_cost: 1,
        };
        assert!(LiveRules::with_budget(&rules(1), "start", Some(budget)).is_err());
        let roomy = rules::EvalBudget {
            ring_capacity: 64,
            max_cost: u64::MAX,
        };
        let live = LiveRules::with_budget(&rules(1), "start", Some(roomy)).unwrap();
        assert!(live.install(&rules(2), "PUT").is_ok());
    }
}
