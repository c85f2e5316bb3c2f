//! The only module with `unsafe` code: the few raw libc calls sumu needs
//! (the descriptor limits, the zero linger of a socket being killed, the
//! coarse monotonic clock),
//! and, in unit tests only, an allocator that counts what each thread holds. Everything
//! else in the crate is safe Rust (`unsafe_code` is denied workspace-wide).
#![allow(unsafe_code)]

use std::os::fd::RawFd;

/// Each socket is a descriptor: lift the soft limit to the hard one.
pub(crate) fn raise_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct we own, of the size they expect.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The soft descriptor limit (what this process may open), if known.
pub(crate) fn file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain libc call on a struct we own, of the size it expects.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Sets a zero linger on a TCP socket, so that closing it sends a RST and
/// discards unsent data. Only a connection's kill switch calls it, and only
/// from the connection's own dispatcher while that still owns the socket
/// (see `outbound::kill_switch`): `fd` is then that socket's descriptor.
pub(crate) fn set_zero_linger(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the arguments are a valid `linger` struct of the size we pass;
    // on a descriptor that is not a socket the call fails with ENOTSOCK.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Milliseconds on the kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`:
/// resolution a few ms, read without the TSC): cheap enough to stamp every
/// poll of every socket's stream, precise enough for a once-a-second sweep.
pub(crate) fn coarse_mono_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain libc call on a struct we own, of the type it expects.
    // CLOCK_MONOTONIC_COARSE exists on every Linux since 2.6.32; it cannot fail.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Unit tests only: the global allocator counts, per thread, the bytes held
/// as glibc chunks (request + 8-byte header, rounded to 16, at least 32), so
/// a test can measure what a data structure really costs.
#[cfg(test)]
pub(crate) mod counting_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static HELD: Cell<isize> = const { Cell::new(0) };
    }

    fn chunk(size: usize) -> isize {
        ((size + 8).div_ceil(16) * 16).max(32) as isize
    }

    fn add(n: isize) {
        // `try_with`: a thread being torn down counts nothing.
        let _ = HELD.try_with(|h| h.set(h.get() + n));
    }

    /// The bytes this thread holds from the allocator (net of frees).
    pub(crate) fn held() -> isize {
        HELD.with(Cell::get)
    }

    struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(chunk(layout.size()));
            // SAFETY: the caller's contract, forwarded.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            add(-chunk(layout.size()));
            // SAFETY: the caller's contract, forwarded.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(chunk(new_size) - chunk(layout.size()));
            // SAFETY: the caller's contract, forwarded.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;
}
