//! Fuzz target: a notification request body (SQS message or HTTP API body).
//! Parsing never panics; an accepted request has unique users and non-null data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sumu_shared::NotificationRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = NotificationRequest::parse(data) {
        let mut users = req.users.clone();
        users.sort();
        users.dedup();
        assert_eq!(users.len(), req.users.len(), "users are de-duplicated");
        assert_ne!(req.data.get(), "null");
        assert!(req.targets().all(|u| !req.exclude_users.contains(u)));
    }
});
