//! A socket's registrations (in this node's hub and in the engine's
//! connection store), undone when the guard drops: whichever way the socket
//! goes (closed, killed, or dropped before it ever opened, even when the
//! upgrade request is abandoned half-way). A registration never outlives
//! its socket.

use std::sync::Arc;

use crate::engine::ConnectionStore;
use crate::hub::LocalDelivery;
use crate::logging::chain;

pub(crate) struct Registration {
    connection_id: Arc<str>,
    user_id: Arc<str>,
    local: LocalDelivery,
    store: Arc<dyn ConnectionStore>,
    /// The store may hold a row for it (its write was started).
    stored: bool,
}

impl Registration {
    /// A guard made before the socket is registered anywhere.
    pub(crate) fn new(
        connection_id: Arc<str>,
        user_id: Arc<str>,
        local: LocalDelivery,
        store: Arc<dyn ConnectionStore>,
    ) -> Registration {
        Registration {
            connection_id,
            user_id,
            local,
            store,
            stored: false,
        }
    }

    /// The store write is about to start: from now on, undo it too.
    pub(crate) fn storing(&mut self) {
        self.stored = true;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.local.unregister(self.connection_id.clone());
        if !self.stored {
            return;
        }
        let store = self.store.clone();
        let user_id = self.user_id.clone();
        let connection_id = self.connection_id.clone();
        let unregister = async move {
            if let Err(e) = store.unregister(&user_id, &connection_id).await {
                tracing::warn!(error = %chain(&e), %connection_id, "connection row not removed; the sweeper will");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(unregister);
            }
            Err(_) => {
                tracing::warn!(connection_id = %self.connection_id, "no runtime to unregister on")
            }
        }
    }
}
