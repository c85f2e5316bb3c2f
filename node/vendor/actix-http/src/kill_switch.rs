//! SUMU-PATCH: a kill switch for one HTTP/1 connection.
//!
//! Put a [`KillSwitch`] in a connection's extensions from an `on_connect`
//! callback; anyone holding a clone may then [`kill`](KillSwitch::kill) that
//! connection, from any thread. Killing only sets a flag and wakes the
//! connection's dispatcher task; the dispatcher, which owns the I/O, sees the
//! flag first thing in its next poll, runs the switch's abort hook while it
//! still owns the I/O, and ends the connection (dropping the response body
//! and the I/O) without flushing anything. So the switch never touches a
//! socket itself: a switch whose connection is already gone does nothing,
//! and no descriptor can be reused under it.
//!
//! The wake-up works whatever the dispatcher is parked on, including a
//! socket that is not writable (a client that stopped reading): the
//! dispatcher registers its task's waker with the switch on every poll.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::Context,
};

use futures_util::task::AtomicWaker;

/// A handle that ends one HTTP/1 connection from outside its task.
#[derive(Clone)]
pub struct KillSwitch(Arc<Inner<dyn Fn() + Send + Sync>>);

struct Inner<F: ?Sized> {
    killed: AtomicBool,
    waker: AtomicWaker,
    /// Runs on the dispatcher's task, while it owns the I/O, right before
    /// the I/O is dropped (e.g. to set a zero linger, so the peer gets a RST
    /// and the kernel frees the unsent data at once).
    abort: F,
}

impl KillSwitch {
    /// A switch with no abort hook: a kill drops the I/O.
    pub fn new() -> KillSwitch {
        KillSwitch::with_abort(|| {})
    }

    /// A switch whose `abort` runs on the connection's own task, while it
    /// still owns the I/O, right before a kill drops it.
    pub fn with_abort<F>(abort: F) -> KillSwitch
    where
        F: Fn() + Send + Sync + 'static,
    {
        KillSwitch(Arc::new(Inner {
            killed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            abort,
        }))
    }

    /// Ends the connection as soon as its dispatcher runs (at once if it is
    /// parked): nothing more is read or written. Idempotent; does nothing
    /// if the connection is already gone.
    pub fn kill(&self) {
        self.0.killed.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    /// Whether [`kill`](KillSwitch::kill) was called.
    pub fn is_killed(&self) -> bool {
        self.0.killed.load(Ordering::Acquire)
    }

    /// Called by the dispatcher first in every poll: registers the task for
    /// a wake-up and, once killed, runs the abort hook and answers true (the
    /// caller then drops the I/O it owns).
    pub(crate) fn poll_killed(&self, cx: &mut Context<'_>) -> bool {
        self.0.waker.register(cx.waker());
        if self.is_killed() {
            (self.0.abort)();
            return true;
        }
        false
    }
}

impl Default for KillSwitch {
    fn default() -> KillSwitch {
        KillSwitch::new()
    }
}

impl fmt::Debug for KillSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KillSwitch")
            .field("killed", &self.is_killed())
            .finish_non_exhaustive()
    }
}
