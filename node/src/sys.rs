//! The only module with `unsafe` code: the few raw libc calls sumu needs
//! (the descriptor limits, and aborting one accepted socket). Everything
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

/// Drops a TCP connection now, discarding unsent data: zero linger, then
/// `shutdown(2)` both ways. The descriptor stays open (its owner closes it),
/// so the caller must guarantee `fd` is still that connection's descriptor.
pub(crate) fn abort_socket(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the arguments are a valid `linger` struct of the size we pass;
    // on a descriptor that is not a socket both calls fail with ENOTSOCK.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}
