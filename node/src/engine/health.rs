//! Whether the engine can take new sockets now. `/readyz` answers 503 while
//! it cannot, so the balancer sends new clients to other nodes; nothing here
//! closes a socket. Two causes, each with its own way back:
//! - the node is out of the mesh (the leader reaped it while it was frozen
//!   or cut off): back once it has rejoined;
//! - connection rows cannot be written (a registration failed or timed out,
//!   or a heartbeat failed): back at the next heartbeat that AWS accepts.
//!
//! Transitions are logged once each, not per request.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub(crate) struct Health {
    in_mesh: AtomicBool,
    store_failing: AtomicBool,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            in_mesh: AtomicBool::new(true),
            store_failing: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// New sockets can be registered.
    pub(crate) fn ready(&self) -> bool {
        self.in_mesh.load(Ordering::Acquire) && !self.store_failing.load(Ordering::Acquire)
    }

    /// The node is in the mesh (sockets opened now get their deliveries).
    pub(crate) fn in_mesh(&self) -> bool {
        self.in_mesh.load(Ordering::Acquire)
    }

    /// A connection row could not be written (or a heartbeat failed).
    pub(crate) fn store_failed(&self) {
        if !self.store_failing.swap(true, Ordering::AcqRel) {
            tracing::warn!("AWS does not accept writes: not ready for new sockets until it does");
        }
    }

    /// AWS accepted a write again.
    pub(crate) fn store_ok(&self) {
        if self.store_failing.swap(false, Ordering::AcqRel) {
            tracing::info!("AWS accepts writes again: ready for new sockets");
        }
    }

    /// The node is out of the mesh (`false`) or back in it (`true`).
    pub(crate) fn set_in_mesh(&self, in_mesh: bool) {
        self.in_mesh.store(in_mesh, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_both_the_mesh_and_the_store() {
        let h = Health::default();
        assert!(h.ready());
        h.store_failed();
        assert!(!h.ready());
        h.set_in_mesh(false);
        h.store_ok();
        assert!(!h.ready(), "still out of the mesh");
        h.set_in_mesh(true);
        assert!(h.ready());
    }
}
