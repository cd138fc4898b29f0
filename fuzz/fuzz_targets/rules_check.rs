//! Any bytes through the rules pipeline `tripwire check` runs: parse → validate → compile.
//! It must return a rule set or errors with positions, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = tripwire_core::rules::load_bytes(data) {
        for p in e.problems() {
            assert!(!p.message.is_empty());
        }
    }
});
