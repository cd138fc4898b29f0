//! The live rule set and how it is replaced: a complete new [`RuleSet`] is built off the hot
//! path (parse → validate → compile) and swapped in whole through an `ArcSwap`. A request loads
//! the current set once and uses that snapshot to the end; a refused set changes nothing.

use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::rules::{self, RuleSet, RulesError};

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

/// Hex SHA-256 of a rules text.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The rule set in force, swapped atomically.
pub struct LiveRules {
    current: ArcSwap<LoadedRules>,
    /// Serialises installs so sequence numbers follow swap order.
    install_lock: Mutex<u64>,
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
        let set = rules::load_bytes(bytes)?;
        Ok(LiveRules {
            current: ArcSwap::from_pointee(Self::loaded(set, bytes, source, 1)),
            install_lock: Mutex::new(1),
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

    /// The rule set in force now. Hold the returned `Arc` for the whole decision.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<LoadedRules>> {
        self.current.load()
    }

    /// The rule set in force now, as an owned `Arc`.
    pub fn load_full(&self) -> Arc<LoadedRules> {
        self.current.load_full()
    }

    /// Parses, validates and compiles `bytes`, then swaps it in. On error nothing changes.
    pub fn install(&self, bytes: &[u8], source: &str) -> Result<Arc<LoadedRules>, RulesError> {
        // Compile before taking the lock: a slow or bad file never blocks another install.
        let set = rules::load_bytes(bytes)?;
        let mut seq = self.install_lock.lock();
        *seq += 1;
        let loaded = Arc::new(Self::loaded(set, bytes, source, *seq));
        self.current.store(Arc::clone(&loaded));
        Ok(loaded)
    }
}
