//! The PROXY protocol version 2 header (HAProxy's `send-proxy-v2`, AWS
//! NLB's "proxy protocol v2"): the binary prefix a proxy writes before the
//! client's bytes to say who the client is. A pure parser over bytes plus
//! the bounded read of one header from an accepted connection.
//!
//! Invariant: a header is read to its exact end and no further (16 bytes,
//! then the length those announce), so whatever follows is the client's
//! and stays in the stream; a header longer than [`MAX_BODY`], not v2, or
//! cut short is an error, never a guess. Only v2 is accepted (v1's text
//! form is not: the NLB and `send-proxy-v2` speak v2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every v2 header starts with.
pub(crate) const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part: signature, version/command, family/protocol, length.
pub(crate) const FIXED: usize = 16;

/// The longest address block plus TLVs accepted, in bytes. Addresses take
/// at most 216 (UNIX); the NLB's TLVs (VPC endpoint id) and HAProxy's
/// usual ones are far under this, and a bound keeps a half-open
/// connection from pinning 64 KiB.
pub(crate) const MAX_BODY: usize = 1024;

/// How long a new connection may take to send its whole header.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no PROXY v2 signature")]
    Signature,
    #[error("PROXY version {0} (only 2 is accepted)")]
    Version(u8),
    #[error("unknown PROXY command {0}")]
    Command(u8),
    #[error("PROXY header announces {0} bytes (at most {MAX_BODY})")]
    TooLong(usize),
    #[error("PROXY address block too short for its family")]
    ShortAddresses,
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY header")]
    Io(#[source] std::io::Error),
}

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proxied {
    /// `PROXY` over TCP/UDP and IPv4/IPv6: the client's (source) address.
    Client(SocketAddr),
    /// `LOCAL` (the proxy's own health check), or an address family other
    /// than IPv4/IPv6: the connection's own peer is the client.
    Local,
}

/// The length of the whole header once its fixed part is known, checking
/// what the fixed part holds.
pub(crate) fn header_len(fixed: &[u8; FIXED]) -> Result<usize, ProxyError> {
    if fixed[..12] != SIGNATURE {
        return Err(ProxyError::Signature);
    }
    let version = fixed[12] >> 4;
    if version != 2 {
        return Err(ProxyError::Version(version));
    }
    let command = fixed[12] & 0x0F;
    if command > 1 {
        return Err(ProxyError::Command(command));
    }
    let body = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if body > MAX_BODY {
        return Err(ProxyError::TooLong(body));
    }
    Ok(FIXED + body)
}

/// Parses one whole header (`header_len` bytes, no more).
pub(crate) fn parse(header: &[u8]) -> Result<Proxied, ProxyError> {
    let fixed: &[u8; FIXED] = header
        .get(..FIXED)
        .and_then(|f| f.try_into().ok())
        .ok_or(ProxyError::Signature)?;
    let len = header_len(fixed)?;
    let body = header.get(FIXED..len).ok_or(ProxyError::ShortAddresses)?;
    if fixed[12] & 0x0F == 0 {
        return Ok(Proxied::Local);
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match fixed[13] >> 4 {
        // AF_INET: src(4) dst(4) src_port(2) dst_port(2).
        1 => {
            let b = body.get(..12).ok_or(ProxyError::ShortAddresses)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Proxied::Client(SocketAddr::new(
                IpAddr::V4(ip),
                port(&b[8..]),
            )))
        }
        // AF_INET6: src(16) dst(16) src_port(2) dst_port(2).
        2 => {
            let b = body.get(..36).ok_or(ProxyError::ShortAddresses)?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&b[..16]);
            let ip = Ipv6Addr::from(src);
            Ok(Proxied::Client(SocketAddr::new(
                IpAddr::V6(ip),
                port(&b[32..]),
            )))
        }
        // AF_UNSPEC / AF_UNIX: no IP client to speak of.
        _ => Ok(Proxied::Local),
    }
}

/// Reads one header from `io` within `within` ([`READ_TIMEOUT`] on a
/// listener), leaving the bytes after it unread.
pub(crate) async fn read<R: AsyncRead + Unpin>(
    io: &mut R,
    within: Duration,
) -> Result<Proxied, ProxyError> {
    let read = async {
        let mut header = vec![0u8; FIXED];
        io.read_exact(&mut header).await.map_err(ProxyError::Io)?;
        let fixed: [u8; FIXED] = header[..].try_into().map_err(|_| ProxyError::Signature)?;
        let len = header_len(&fixed)?;
        header.resize(len, 0);
        io.read_exact(&mut header[FIXED..])
            .await
            .map_err(ProxyError::Io)?;
        parse(&header)
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| ProxyError::Timeout(within))?
}

/// A v2 `PROXY` header over TCP from `source` to `dest` (for tests and
/// the property tests' round trip).
#[cfg(test)]
pub(crate) fn encode(source: SocketAddr, dest: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.push(0x21);
    let mut body = Vec::new();
    match (source, dest) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            body.extend_from_slice(&s.port().to_be_bytes());
            body.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            h.push(0x21);
            body.extend_from_slice(&v6(s).octets());
            body.extend_from_slice(&v6(d).octets());
            body.extend_from_slice(&s.port().to_be_bytes());
            body.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    body.extend_from_slice(tlvs);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_ipv4_and_ipv6_clients() {
        let h = encode(addr("203.0.113.7:51000"), addr("10.0.0.1:8080"), &[]);
        assert_eq!(h.len(), 28);
        assert_eq!(
            parse(&h).unwrap(),
            Proxied::Client(addr("203.0.113.7:51000"))
        );
        let h = encode(addr("[2001:db8::7]:443"), addr("[2001:db8::1]:8080"), &[]);
        assert_eq!(h.len(), 52);
        assert_eq!(
            parse(&h).unwrap(),
            Proxied::Client(addr("[2001:db8::7]:443"))
        );
        // TLVs (here an AWS VPC endpoint id, type 0xEA) are skipped.
        let tlv = [&[0xEA, 0x00, 0x05, 0x01][..], b"vpce"].concat();
        let h = encode(addr("198.51.100.2:1"), addr("10.0.0.1:2"), &tlv);
        assert_eq!(parse(&h).unwrap(), Proxied::Client(addr("198.51.100.2:1")));
    }

    #[test]
    fn local_and_unspec_use_the_peer() {
        // LOCAL, AF_UNSPEC, no addresses: HAProxy's health checks.
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(parse(&h).unwrap(), Proxied::Local);
        // PROXY over AF_UNIX.
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x31, 0x00, 216]);
        h.extend_from_slice(&[0u8; 216]);
        assert_eq!(parse(&h).unwrap(), Proxied::Local);
    }

    #[test]
    fn refuses_what_is_not_a_v2_header() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(ProxyError::Signature)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            Err(ProxyError::Signature)
        ));
        let good = encode(addr("192.0.2.1:1"), addr("192.0.2.2:2"), &[]);
        let mut v1 = good.clone();
        v1[12] = 0x11;
        assert!(matches!(parse(&v1), Err(ProxyError::Version(1))));
        let mut cmd = good.clone();
        cmd[12] = 0x25;
        assert!(matches!(parse(&cmd), Err(ProxyError::Command(5))));
        let mut long = good.clone();
        long[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert!(matches!(parse(&long), Err(ProxyError::TooLong(2000))));
        // An IPv4 block shorter than 12 bytes.
        let mut short = good[..FIXED].to_vec();
        short[15] = 4;
        short.extend_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(parse(&short), Err(ProxyError::ShortAddresses)));
        // Cut short: fewer bytes than announced.
        assert!(matches!(
            parse(&good[..good.len() - 1]),
            Err(ProxyError::ShortAddresses)
        ));
    }

    #[tokio::test]
    async fn read_stops_at_the_header_end_and_times_out() {
        let h = encode(
            addr("192.0.2.9:4000"),
            addr("192.0.2.2:80"),
            b"\x04\x00\x01z",
        );
        let mut input = [&h[..], b"GET / HTTP/1.1\r\n"].concat();
        let mut io = &input[..];
        assert_eq!(
            read(&mut io, READ_TIMEOUT).await.unwrap(),
            Proxied::Client(addr("192.0.2.9:4000"))
        );
        assert_eq!(io, b"GET / HTTP/1.1\r\n");
        // A header cut short by EOF.
        input.truncate(20);
        let mut io = &input[..];
        assert!(matches!(
            read(&mut io, READ_TIMEOUT).await,
            Err(ProxyError::Io(_))
        ));
        // A peer that never finishes its header.
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, &h[..10])
            .await
            .unwrap();
        assert!(matches!(
            read(&mut server, Duration::from_millis(50)).await,
            Err(ProxyError::Timeout(_))
        ));
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
            let mut with_sig = SIGNATURE.to_vec();
            with_sig.extend_from_slice(&bytes);
            let _ = parse(&with_sig);
        }

        #[test]
        fn round_trips_tcp_addresses(
            v4 in any::<bool>(),
            a in any::<u32>(), b in any::<u128>(), sport in any::<u16>(), dport in any::<u16>(),
            tlvs in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let ip = if v4 { IpAddr::V4(Ipv4Addr::from(a)) } else { IpAddr::V6(Ipv6Addr::from(b)) };
            let source = SocketAddr::new(ip, sport);
            let dest = SocketAddr::new(ip, dport);
            let h = encode(source, dest, &tlvs);
            let fixed: [u8; FIXED] = h[..FIXED].try_into().unwrap();
            prop_assert_eq!(header_len(&fixed).unwrap(), h.len());
            prop_assert_eq!(parse(&h).unwrap(), Proxied::Client(source));
        }
    }
}
