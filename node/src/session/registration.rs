//! A socket's registrations (in this node's hub and in the engine's
//! connection store), undone when the guard drops: whichever way the socket
//! goes (closed, killed, refused, or dropped before it ever opened, even
//! when the upgrade request is abandoned half-way). A registration never
//! outlives its socket: a row write that was still on its way when the
//! socket was refused (AWS answered late) is awaited, and only then is the
//! row deleted, so a write that lands late cannot leave a row behind.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{ConnectionRecord, ConnectionStore, EngineError};
use crate::hub::LocalDelivery;
use crate::logging::chain;

/// A row write that may still land.
type Write = Pin<Box<dyn Future<Output = Result<(), EngineError>> + Send>>;

/// A write that failed may still land: an attempt sent before it gave up
/// can be applied later (a stalled service works through its backlog). The
/// row of such a write is deleted once more this long after.
const LATE_WRITE_GRACE: Duration = Duration::from_secs(15);

pub(crate) struct Registration {
    connection_id: Arc<str>,
    user_id: Arc<str>,
    local: LocalDelivery,
    store: Arc<dyn ConnectionStore>,
    /// The store may hold a row for it (its write was started).
    stored: bool,
    /// The row write, while it has not answered (the socket was refused
    /// before it did, or the upgrade was abandoned while it was waited for).
    write: Option<Write>,
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
            write: None,
        }
    }

    /// Writes the socket's row, waiting at most `within`. On a timeout the
    /// write goes on (it cannot be recalled): the guard keeps it, and when
    /// the guard drops it deletes the row only once the write answered.
    pub(crate) async fn store(
        &mut self,
        record: ConnectionRecord,
        within: Duration,
    ) -> Result<(), EngineError> {
        self.stored = true;
        let store = self.store.clone();
        let write = self
            .write
            .insert(Box::pin(async move { store.register(&record).await }));
        match tokio::time::timeout(within, write.as_mut()).await {
            Ok(written) => {
                self.write = None;
                written
            }
            Err(_) => Err(EngineError::RegisterTimeout(within)),
        }
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
        let write = self.write.take();
        let unregister = async move {
            // A write still on its way is awaited first: deleting before it
            // lands would leave its row.
            let failed = match write {
                Some(write) => write.await.is_err(),
                None => false,
            };
            let delete = || async {
                if let Err(e) = store.unregister(&user_id, &connection_id).await {
                    tracing::warn!(error = %chain(&e), %connection_id, "connection row not removed; the sweeper will");
                }
            };
            delete().await;
            if failed {
                tokio::time::sleep(LATE_WRITE_GRACE).await;
                delete().await;
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
