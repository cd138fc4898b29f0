//! Any bytes through the decide request parser and validator: a transaction or an error that
//! names what is wrong, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match tripwire_core::txn::parse_decide(data) {
        Ok(txn) => {
            assert!(txn.amount.minor() > 0);
            assert!(!txn.transaction_id.is_empty() && !txn.customer_id.is_empty());
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
});
