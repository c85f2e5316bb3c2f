//! What the machine (not the server) can do: the open-file limit, error classes that
//! mean "the load generator's machine ran out", CPU saturation, and a process's RSS.
//! The load tester's only `unsafe` code (plain libc calls) lives here.
#![allow(unsafe_code)]

use std::io;

/// Result of raising the open-file limit.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
pub struct FileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises RLIMIT_NOFILE: soft to hard, and (if permitted, e.g. as root) both to `wanted`
/// when the hard limit is lower. Returns the limit in force afterwards.
pub fn raise_nofile(wanted: u64) -> io::Result<FileLimit> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if current.rlim_max < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: wanted,
        };
        // SAFETY: plain syscall with a valid struct; failure (EPERM) is handled below.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(FileLimit {
                soft: wanted,
                hard: wanted,
            });
        }
    }
    if current.rlim_cur < current.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: current.rlim_max,
            rlim_max: current.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        current.rlim_cur = current.rlim_max;
    }
    Ok(FileLimit {
        soft: current.rlim_cur,
        hard: current.rlim_max,
    })
}

/// Who ran out when a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blame {
    /// The load generator's machine (ports, file descriptors, buffers, memory).
    Machine,
    /// The server refused, reset, or answered with an error.
    Server,
    /// Not clear (timeouts, protocol errors).
    Unknown,
}

/// A connection failure class with a stable name for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    AddrNotAvailable,
    AddrInUse,
    TooManyOpenFiles,
    FileTableFull,
    NoBufferSpace,
    OutOfMemory,
    ConnectionRefused,
    ConnectionReset,
    TimedOut,
    HttpStatus(u16),
    /// The TLS handshake failed (unknown CA, wrong name, no common version...).
    Tls,
    Protocol,
    Other,
}

impl FailureKind {
    pub fn from_io(error: &io::Error) -> Self {
        match error.raw_os_error() {
            Some(libc::EADDRNOTAVAIL) => FailureKind::AddrNotAvailable,
            Some(libc::EADDRINUSE) => FailureKind::AddrInUse,
            Some(libc::EMFILE) => FailureKind::TooManyOpenFiles,
            Some(libc::ENFILE) => FailureKind::FileTableFull,
            Some(libc::ENOBUFS) => FailureKind::NoBufferSpace,
            Some(libc::ENOMEM) => FailureKind::OutOfMemory,
            Some(libc::ECONNREFUSED) => FailureKind::ConnectionRefused,
            Some(libc::ECONNRESET) | Some(libc::EPIPE) => FailureKind::ConnectionReset,
            Some(libc::ETIMEDOUT) => FailureKind::TimedOut,
            _ => match error.kind() {
                io::ErrorKind::ConnectionRefused => FailureKind::ConnectionRefused,
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                    FailureKind::ConnectionReset
                }
                io::ErrorKind::TimedOut => FailureKind::TimedOut,
                io::ErrorKind::UnexpectedEof => FailureKind::ConnectionReset,
                _ => FailureKind::Other,
            },
        }
    }

    pub fn blame(self) -> Blame {
        match self {
            FailureKind::AddrNotAvailable
            | FailureKind::AddrInUse
            | FailureKind::TooManyOpenFiles
            | FailureKind::FileTableFull
            | FailureKind::NoBufferSpace
            | FailureKind::OutOfMemory => Blame::Machine,
            FailureKind::ConnectionRefused
            | FailureKind::ConnectionReset
            | FailureKind::HttpStatus(_) => Blame::Server,
            FailureKind::TimedOut
            | FailureKind::Tls
            | FailureKind::Protocol
            | FailureKind::Other => Blame::Unknown,
        }
    }

    /// Stable report name.
    pub fn name(self) -> String {
        match self {
            FailureKind::AddrNotAvailable => "EADDRNOTAVAIL".into(),
            FailureKind::AddrInUse => "EADDRINUSE".into(),
            FailureKind::TooManyOpenFiles => "EMFILE".into(),
            FailureKind::FileTableFull => "ENFILE".into(),
            FailureKind::NoBufferSpace => "ENOBUFS".into(),
            FailureKind::OutOfMemory => "ENOMEM".into(),
            FailureKind::ConnectionRefused => "ECONNREFUSED".into(),
            FailureKind::ConnectionReset => "ECONNRESET".into(),
            FailureKind::TimedOut => "timeout".into(),
            FailureKind::HttpStatus(code) => format!("http_{code}"),
            FailureKind::Tls => "tls".into(),
            FailureKind::Protocol => "protocol".into(),
            FailureKind::Other => "other".into(),
        }
    }

    /// What an operator should do when this machine-side failure shows up.
    pub fn machine_hint(self) -> Option<&'static str> {
        match self {
            FailureKind::AddrNotAvailable | FailureKind::AddrInUse => {
                Some("out of ephemeral ports: spread over more source addresses (--source-ips)")
            }
            FailureKind::TooManyOpenFiles => Some(
                "open-file limit of the load tester reached: raise the hard limit (ulimit -Hn)",
            ),
            FailureKind::FileTableFull => Some("system file table full: raise fs.file-max"),
            FailureKind::NoBufferSpace | FailureKind::OutOfMemory => {
                Some("kernel memory for sockets exhausted on this machine")
            }
            _ => None,
        }
    }
}

/// CPU time counters of this process and of the whole machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTicks {
    /// utime + stime of this process, in clock ticks.
    pub own: u64,
    /// All non-idle ticks of the machine.
    pub busy: u64,
    /// All ticks of the machine.
    pub total: u64,
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line.
pub fn parse_proc_stat_cpu(stat: &str) -> Option<u64> {
    parse_proc_stat_user_sys(stat).map(|(user, sys)| user + sys)
}

/// (utime, stime) (fields 14 and 15) of a /proc/PID/stat line, in clock ticks.
pub fn parse_proc_stat_user_sys(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14 -> index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// (busy, total) ticks from the first line of /proc/stat.
pub fn parse_machine_stat(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if values.len() < 4 {
        return None;
    }
    let total: u64 = values.iter().take(8).sum();
    // idle (3) + iowait (4)
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// (utime, stime) of another process, in clock ticks (all its threads).
pub fn read_process_user_sys_ticks(pid: u32) -> Option<(u64, u64)> {
    parse_proc_stat_user_sys(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn read_cpu_ticks() -> Option<CpuTicks> {
    let own = parse_proc_stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let (busy, total) = parse_machine_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(CpuTicks { own, busy, total })
}

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// VmRSS in KiB from the text of /proc/PID/status.
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// VmRSS of process `pid` in KiB.
pub fn read_vmrss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vmrss_kib(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

/// Soft "Max open files" from the text of /proc/PID/limits.
pub fn parse_nofile_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// (open descriptors, soft open-file limit) of process `pid`.
pub fn read_fd_usage(pid: u32) -> io::Result<(u64, u64)> {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let limit = parse_nofile_limit(&limits)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Max open files line"))?;
    Ok((open, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_nofile_reaches_at_least_the_old_hard_limit() {
        let mut before = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) };
        let after = raise_nofile(1024).unwrap();
        assert!(after.soft >= before.rlim_max.min(1024));
        assert_eq!(after.soft, after.hard);
    }

    #[test]
    fn classifies_errno() {
        let e = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert_eq!(FailureKind::from_io(&e), FailureKind::AddrNotAvailable);
        assert_eq!(FailureKind::from_io(&e).blame(), Blame::Machine);
        assert!(FailureKind::from_io(&e).machine_hint().is_some());
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(FailureKind::from_io(&e).name(), "EMFILE");
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(FailureKind::from_io(&e).blame(), Blame::Server);
        assert_eq!(FailureKind::HttpStatus(401).name(), "http_401");
        assert_eq!(FailureKind::TimedOut.blame(), Blame::Unknown);
    }

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (sumu loadtest) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0";
        assert_eq!(parse_proc_stat_cpu(stat), Some(300));
        assert_eq!(parse_proc_stat_cpu("garbage"), None);
        assert_eq!(parse_proc_stat_user_sys(stat), Some((250, 50)));
        let machine = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_machine_stat(machine), Some((150, 1000)));
        let status = "Name:\tx\nVmRSS:\t   20480 kB\nThreads: 2\n";
        assert_eq!(parse_vmrss_kib(status), Some(20480));
        assert_eq!(parse_vmrss_kib("Name: x\n"), None);
    }

    #[test]
    fn parses_limits_and_reads_own_fds() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                40000                files\n";
        assert_eq!(parse_nofile_limit(limits), Some(20000));
        assert_eq!(parse_nofile_limit("nothing"), None);
        let (open, limit) = read_fd_usage(std::process::id()).unwrap();
        assert!(open >= 3 && limit >= open);
    }

    #[test]
    fn reads_own_rss_and_cpu() {
        assert!(read_vmrss_kib(std::process::id()).unwrap() > 0);
        assert!(read_cpu_ticks().is_some());
    }
}
