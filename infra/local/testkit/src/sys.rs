//! The test helpers' only `unsafe` code: raw libc calls on our own child
//! processes and sockets.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

/// Sends `sig` (e.g. `libc::SIGTERM`) to process `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers; a stale pid fails with ESRCH.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Shrinks a socket's kernel receive buffer (a slow reader in tests).
pub fn set_recv_buffer(fd: RawFd, bytes: i32) {
    // SAFETY: a valid `c_int` of the size we pass; on a bad descriptor the
    // call fails with EBADF.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
