//! Fuzz target: a client text frame. `ClientFrame::parse` never panics, and
//! what it accepts routes by a known action and carries valid raw JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sumu_shared::{ClientAction, ClientFrame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = ClientFrame::parse(text) {
        if matches!(frame.action, ClientAction::Publish | ClientAction::Send) {
            let message = frame.message.expect("publish/send carry a message");
            assert!(serde_json::from_str::<serde_json::Value>(message.get()).is_ok());
        }
        if let Some(id) = frame.id {
            assert!(serde_json::from_str::<serde_json::Value>(id.get()).is_ok());
        }
    }
});
