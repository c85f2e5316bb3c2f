//! The bound on what one socket may have queued but not yet written.
//!
//! A session actor runs inside its socket's response stream, so while a slow
//! reader's socket is full the actor is not polled at all: it cannot police
//! itself. Everyone who queues a frame for a session therefore reserves its
//! encoded size here first; the response stream releases bytes as the HTTP
//! layer takes them. A reservation over the cap kills the socket from the
//! outside (`shutdown(2)` with a zero linger), which frees what was queued.
//!
//! The kill uses the connection's raw descriptor, not a duplicate (a
//! duplicate per socket would double the descriptors a node needs). It is
//! safe against descriptor reuse: actix-http's dispatcher drops the response
//! body (its `state` field) before the socket (its `io` field, declared
//! later), and dropping [`Metered`] marks the outbound closed under the same
//! lock `kill` holds, so once the descriptor can be closed, `kill` no longer
//! touches it.

use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use crate::close::CloseReason;

pub(crate) struct Outbound {
    queued: AtomicUsize,
    cap: usize,
    killed: AtomicBool,
    /// The connection's descriptor while its response stream lives; `None`
    /// once that stream was dropped (the descriptor may then be reused).
    socket: Mutex<Option<RawFd>>,
}

/// Size of an unmasked server frame carrying `payload` bytes.
pub(crate) fn frame_len(payload: usize) -> usize {
    let header = match payload {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    payload + header
}

impl Outbound {
    pub(crate) fn new(cap: usize, socket: Option<RawFd>) -> Outbound {
        Outbound {
            queued: AtomicUsize::new(0),
            cap,
            killed: AtomicBool::new(false),
            socket: Mutex::new(socket),
        }
    }

    /// The response stream is gone (or never started): never touch the
    /// descriptor again.
    pub(crate) fn closed(&self) {
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Reserves room for a text frame of `payload` bytes; false (and the
    /// socket killed) when that would pass the cap.
    pub(crate) fn reserve(&self, payload: usize) -> bool {
        if self.is_killed() {
            return false;
        }
        let n = frame_len(payload);
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.cap {
            self.kill();
            return false;
        }
        true
    }

    /// Bytes the HTTP layer took.
    pub(crate) fn released(&self, n: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Drops the connection now, discarding unsent data. Idempotent.
    pub(crate) fn kill(&self) {
        if self.killed.swap(true, Ordering::AcqRel) {
            return;
        }
        CloseReason::SlowReader.count();
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = *socket {
            // `fd` is still this connection's socket: `closed()` takes the
            // lock we hold before the dispatcher can close it.
            crate::sys::abort_socket(fd);
        }
    }
}

/// Wraps a session's response stream: releases bytes as they are taken and
/// ends the stream once the socket was killed.
pub(crate) struct Metered<S> {
    inner: S,
    outbound: Arc<Outbound>,
}

impl<S> Metered<S> {
    pub(crate) fn new(inner: S, outbound: Arc<Outbound>) -> Metered<S> {
        Metered { inner, outbound }
    }
}

impl<S> Drop for Metered<S> {
    fn drop(&mut self) {
        self.outbound.closed();
    }
}

impl<S, E> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.outbound.is_killed() {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled {
            self.outbound.released(bytes.len());
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_match_rfc6455_headers() {
        assert_eq!(frame_len(0), 2);
        assert_eq!(frame_len(125), 127);
        assert_eq!(frame_len(126), 130);
        assert_eq!(frame_len(65535), 65539);
        assert_eq!(frame_len(65536), 65546);
    }

    #[test]
    fn reservation_over_cap_kills_and_release_frees() {
        let o = Outbound::new(100, None);
        assert!(o.reserve(50)); // 52
        o.released(52);
        assert_eq!(o.queued(), 0);
        assert!(o.reserve(90)); // 92
        assert!(!o.reserve(10)); // 104 > 100
        assert!(o.is_killed());
        assert!(!o.reserve(1));
    }
}
