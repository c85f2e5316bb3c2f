//! Spreading client sockets over several loopback source addresses.
//!
//! One source address gives at most ~28k ephemeral ports (see
//! /proc/sys/net/ipv4/ip_local_port_range) toward one server port. Every address of
//! 127.0.0.0/8 reaches the loopback server, so binding socket `i` to `base + (i mod K)`
//! before connecting multiplies that limit by K.

use std::net::{IpAddr, Ipv4Addr};

/// Sockets planned per source address when the count is chosen automatically.
pub const SOCKETS_PER_SOURCE: usize = 20_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceAddrError {
    #[error(
        "source address spreading needs an IPv4 loopback target (got {0}); use --source-ips 0"
    )]
    NotIpv4Loopback(IpAddr),
    #[error("--source-base {0} is not in 127.0.0.0/8")]
    BaseNotLoopback(Ipv4Addr),
    #[error("{count} source addresses from {base} leave 127.0.0.0/8")]
    OutOfRange { base: Ipv4Addr, count: usize },
}

/// The source addresses sockets are bound to; empty means the kernel chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAddrs {
    addrs: Vec<IpAddr>,
}

impl SourceAddrs {
    /// No explicit binding.
    pub fn kernel_chosen() -> Self {
        SourceAddrs { addrs: Vec::new() }
    }

    /// Plans the spread for `sockets` sockets toward `target`. `requested` = None picks
    /// one address per [`SOCKETS_PER_SOURCE`] sockets (and none at all when one suffices or
    /// the target is not IPv4 loopback).
    pub fn plan(
        target: IpAddr,
        sockets: usize,
        requested: Option<usize>,
        base: Ipv4Addr,
    ) -> Result<Self, SourceAddrError> {
        let ipv4_loopback = matches!(target, IpAddr::V4(v4) if v4.is_loopback());
        let count = match requested {
            Some(0) => return Ok(Self::kernel_chosen()),
            Some(n) => {
                if !ipv4_loopback {
                    return Err(SourceAddrError::NotIpv4Loopback(target));
                }
                n
            }
            None => {
                let needed = sockets.div_ceil(SOCKETS_PER_SOURCE);
                if needed <= 1 || !ipv4_loopback {
                    return Ok(Self::kernel_chosen());
                }
                needed
            }
        };
        if !base.is_loopback() {
            return Err(SourceAddrError::BaseNotLoopback(base));
        }
        let first = u32::from(base);
        let last = first as u64 + count as u64 - 1;
        if last > u32::from(Ipv4Addr::new(127, 255, 255, 254)) as u64 {
            return Err(SourceAddrError::OutOfRange { base, count });
        }
        let addrs = (0..count as u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(first + i)))
            .collect();
        Ok(SourceAddrs { addrs })
    }

    /// Source address of socket `index`, round-robin.
    pub fn for_socket(&self, index: usize) -> Option<IpAddr> {
        if self.addrs.is_empty() {
            None
        } else {
            Some(self.addrs[index % self.addrs.len()])
        }
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    #[test]
    fn auto_uses_kernel_for_small_runs() {
        let s = SourceAddrs::plan(lo(), 5_000, None, Ipv4Addr::LOCALHOST).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.for_socket(3), None);
    }

    #[test]
    fn auto_spreads_large_runs_round_robin() {
        let s = SourceAddrs::plan(lo(), 50_000, None, Ipv4Addr::new(127, 0, 0, 1)).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.for_socket(0), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s.for_socket(1), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(s.for_socket(2), Some("127.0.0.3".parse().unwrap()));
        assert_eq!(s.for_socket(3), Some("127.0.0.1".parse().unwrap()));
        // Each address gets an equal share (within one).
        let mut counts = [0usize; 3];
        for i in 0..50_000 {
            if let Some(IpAddr::V4(a)) = s.for_socket(i) {
                counts[(a.octets()[3] - 1) as usize] += 1;
            }
        }
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
    }

    #[test]
    fn crosses_octet_boundaries() {
        let s = SourceAddrs::plan(lo(), 10, Some(3), Ipv4Addr::new(127, 0, 0, 255)).unwrap();
        assert_eq!(s.for_socket(1), Some("127.0.1.0".parse().unwrap()));
    }

    #[test]
    fn refuses_bad_plans() {
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(
            SourceAddrs::plan(v6, 10, Some(4), Ipv4Addr::LOCALHOST),
            Err(SourceAddrError::NotIpv4Loopback(v6))
        );
        assert!(SourceAddrs::plan(v6, 100_000, None, Ipv4Addr::LOCALHOST)
            .unwrap()
            .is_empty());
        assert!(matches!(
            SourceAddrs::plan(lo(), 10, Some(2), Ipv4Addr::new(10, 0, 0, 1)),
            Err(SourceAddrError::BaseNotLoopback(_))
        ));
        assert!(matches!(
            SourceAddrs::plan(lo(), 10, Some(3), Ipv4Addr::new(127, 255, 255, 253)),
            Err(SourceAddrError::OutOfRange { .. })
        ));
        assert!(SourceAddrs::plan(lo(), 10, Some(0), Ipv4Addr::LOCALHOST)
            .unwrap()
            .is_empty());
    }
}
