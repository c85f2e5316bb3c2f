//! The patched copies in `node/vendor/` (through `[patch.crates-io]`) are
//! the ones compiled in (issue 17 item 10): for each crate a behaviour only
//! the patch has, observed through the public API, and for actix-http also
//! its marker constant and kill switch (items upstream does not have:
//! without the patch this module does not compile). The patched behaviours
//! themselves are tested in `hostile.rs` (actix-http) and measured by
//! README's "TLS on the node" (rustls).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::sync::Arc;

use actix_http::ws::{Parser, ProtocolError};
use bytes::BytesMut;

/// Counts the bytes this thread has allocated and not freed, so a test can
/// see what one call keeps (other tests run on other threads).
struct ThreadCounting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn adjust(by: isize) {
    // `try_with`: the thread-local may be gone while a thread exits.
    let _ = LIVE.try_with(|live| live.set(live.get() + by));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// thread-local counter is a `const`-initialised `Cell`, which neither
// allocates nor panics.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for ThreadCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        adjust(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        adjust(layout.size() as isize);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        adjust(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        adjust(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: ThreadCounting = ThreadCounting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// A reader with nothing to read yet, as an idle socket.
struct Idle;

impl io::Read for Idle {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

#[test]
fn the_patched_rustls_is_compiled_in() {
    // Upstream sizes a connection's read buffer to 4 KiB before each read
    // and keeps it; the patch gives it back when a read finds nothing and
    // nothing is buffered (an idle connection parked on `WouldBlock`).
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    for _ in 0..3 {
        let before = live();
        let read = conn.read_tls(&mut Idle);
        let kept = live() - before;
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(
            kept < 1024,
            "an idle read kept {kept} bytes: this is not the patched rustls"
        );
    }
}

#[test]
fn the_patched_actix_http_is_compiled_in() {
    assert!(actix_http::SUMU_PATCH.contains("buffers"));
    // The type the patched h1 dispatcher checks on every poll.
    let kill = actix_http::KillSwitch::new();
    kill.kill();
    assert!(kill.is_killed());
    // Upstream awaits a frame's whole payload before comparing its declared
    // length with the limit; the patch refuses it on the header alone.
    let mut header = BytesMut::from(&[0x82u8, 0x80 | 127][..]);
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    assert!(matches!(
        Parser::parse(&mut header, true, 64 * 1024),
        Err(ProtocolError::Overflow)
    ));
}
