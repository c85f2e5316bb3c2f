//! Fuzz target: a mesh envelope from another node's message. Parsing never
//! panics, and an accepted envelope survives a serialize/parse round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sumu_shared::mesh::MeshEnvelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = serde_json::from_slice::<MeshEnvelope>(data) {
        let text = serde_json::to_string(&env).expect("an envelope serializes");
        let back: MeshEnvelope = serde_json::from_str(&text).expect("and parses back");
        assert_eq!(back.request_id, env.request_id);
        assert_eq!(back.from_node, env.from_node);
        assert_eq!(back.data.get(), env.data.get());
    }
});
