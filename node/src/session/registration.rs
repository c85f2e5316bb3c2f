//! Undoing a connection's registrations when its session goes, whichever
//! way it goes (closed, killed, or dropped before it ever opened).

use std::sync::Arc;

use actix::Addr;

use crate::engine::ConnectionStore;
use crate::registry::{Registry, Unregister};

pub struct Registration {
    pub connection_id: Arc<str>,
    pub user_id: Arc<str>,
    pub registry: Addr<Registry>,
    pub store: Arc<dyn ConnectionStore>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.do_send(Unregister {
            connection_id: self.connection_id.clone(),
        });
        let store = self.store.clone();
        let user_id = self.user_id.clone();
        let connection_id = self.connection_id.clone();
        let unregister = async move {
            if let Err(e) = store.unregister(&user_id, &connection_id).await {
                tracing::warn!(error = %e, %connection_id, "connection row not removed; the sweeper will");
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
