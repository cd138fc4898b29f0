//! Any bytes through the decide request parser and validator: a transaction or an error that
//! names what is wrong, never a panic; and the same answer as the general readers alone
//! (serde_json for the body, jiff for timestamps), so the fast readers of everyday bodies and
//! timestamps never read anything differently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tripwire_core::txn::{parse_decide, parse_decide_by_general_readers};

fuzz_target!(|data: &[u8]| {
    let parsed = parse_decide(data);
    match &parsed {
        Ok(txn) => {
            assert!(txn.amount.minor() > 0);
            assert!(!txn.transaction_id.is_empty() && !txn.customer_id.is_empty());
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
    assert_eq!(parsed, parse_decide_by_general_readers(data));
});
