//! Fuzz target: the claims of a token. Parsing never panics, and accepted
//! claims survive a serialize/parse round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sumu_shared::claims::Claims;

fuzz_target!(|data: &[u8]| {
    if let Ok(claims) = serde_json::from_slice::<Claims>(data) {
        let text = serde_json::to_string(&claims).expect("claims serialize");
        let back: Claims = serde_json::from_str(&text).expect("and parse back");
        assert_eq!(back, claims);
    }
});
