//! Kernel-path traffic for the Linux bridge row of the harness:
//! - `afpkt tx IFNAME DST_MAC SRC_IP DST_IP PORT LEN SECS`: IPv4/UDP frames of LEN bytes
//!   (no CRC) sent with an AF_PACKET raw socket (qdisc bypass, sendmmsg batches of 64);
//! - `afpkt rx PORT SECS`: a UDP socket that counts datagrams until SECS have passed since
//!   the first one (or 0.5 s without any after it).
//!
//! Both print one line with the packet rate.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};
use vale_wire::{EtherType, IpProtocol, ethernet, ipv4, udp};

/// Where the UDP header starts: after Ethernet and an IPv4 header without options.
const UDP_AT: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;

fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(s.split(':')) {
        *o = u8::from_str_radix(p, 16).unwrap_or_else(|_| panic!("bad MAC {s}"));
    }
    m
}

/// The frame `tx` sends: IPv4/UDP from port 9999, `len` bytes (at least 42), payload
/// and UDP checksum left zero.
fn frame(
    dst: [u8; 6],
    src: [u8; 6],
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    port: u16,
    len: usize,
) -> Vec<u8> {
    let mut f = vec![0u8; len.max(UDP_AT + udp::HEADER_LEN)];
    let mut eth = ethernet::Frame::new_unchecked(&mut f[..]);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    eth.set_ethertype(EtherType::IPV4);
    let ip_len = eth.payload().len() as u16;
    let mut ip = ipv4::Packet::new_unchecked(eth.payload_mut());
    ip.set_version_and_header_len(ipv4::HEADER_LEN);
    ip.set_total_len(ip_len);
    ip.set_ttl(64);
    ip.set_protocol(IpProtocol::UDP);
    ip.set_src_addr(sip);
    ip.set_dst_addr(dip);
    ip.fill_checksum();
    let mut u = udp::Packet::new_unchecked(ip.payload_mut());
    u.set_src_port(9999);
    u.set_dst_port(port);
    u.set_len(ip_len - ipv4::HEADER_LEN as u16);
    f
}

fn if_mac(ifname: &str) -> [u8; 6] {
    let s = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
        .expect("interface address");
    mac(s.trim())
}

fn tx(args: &[String]) {
    let (ifname, dst, src_ip, dst_ip) = (&args[0], mac(&args[1]), &args[2], &args[3]);
    let port: u16 = args[4].parse().expect("port");
    let len: usize = args[5].parse().expect("len");
    let secs: f64 = args[6].parse().expect("secs");
    let sip: Ipv4Addr = src_ip.parse().expect("src ip");
    let dip: Ipv4Addr = dst_ip.parse().expect("dst ip");
    let mut f = frame(dst, if_mac(ifname), sip, dip, port, len);
    let ifindex = {
        let c = std::ffi::CString::new(ifname.as_str()).expect("ifname");
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    };
    assert!(ifindex != 0, "no interface {ifname}");
    let proto = (libc::ETH_P_IP as u16).to_be() as i32;
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call and its size is passed; failure is harmless.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            4,
        )
    };
    // SAFETY: sockaddr_ll is plain data; zero is a valid initial value.
    let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = proto as u16;
    ll.sll_ifindex = ifindex as i32;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&dst);
    // SAFETY: `ll` is a valid sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd,
            (&ll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert!(r == 0, "bind: {}", std::io::Error::last_os_error());
    const B: usize = 64;
    let mut iov: Vec<libc::iovec> = (0..B)
        .map(|_| libc::iovec {
            iov_base: f.as_mut_ptr().cast(),
            iov_len: f.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zero is valid; the pointers set below stay alive.
    let mut msgs: Vec<libc::mmsghdr> = (0..B).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let (mut n, t0) = (0u64, Instant::now());
    let end = t0 + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        for _ in 0..16 {
            // SAFETY: `msgs` holds B valid headers pointing at `iov` and `f`, all alive.
            let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), B as u32, 0) };
            if r > 0 {
                n += r as u64;
            }
        }
    }
    let el = t0.elapsed().as_secs_f64();
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(fd) };
    println!(
        "afpkt tx: {:.3} Mpps ({n} frames of {} B in {el:.2}s)",
        n as f64 / el / 1e6,
        f.len()
    );
}

fn rx(args: &[String]) {
    let port: u16 = args[0].parse().expect("port");
    let secs: f64 = args[1].parse().expect("secs");
    let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = [0u8; 65536];
    let (mut n, mut first, mut last) = (0u64, None::<Instant>, Instant::now());
    let deadline = Instant::now() + Duration::from_secs_f64(secs + 30.0);
    while Instant::now() < deadline {
        match s.recv(&mut buf) {
            Ok(_) => {
                let now = Instant::now();
                first.get_or_insert(now);
                n += 1;
                last = now;
            }
            Err(_) => {
                if first.is_some() && last.elapsed() > Duration::from_millis(500) {
                    break;
                }
            }
        }
        if first.is_some_and(|f| f.elapsed().as_secs_f64() > secs) {
            break;
        }
    }
    let el = first.map_or(0.0, |f| (last - f).as_secs_f64());
    println!(
        "afpkt rx: {:.3} Mpps ({n} datagrams in {el:.2}s)",
        if el > 0.0 { n as f64 / el / 1e6 } else { 0.0 }
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("tx") if args.len() >= 9 => tx(&args[2..]),
        Some("rx") if args.len() >= 4 => rx(&args[2..]),
        _ => {
            eprintln!(
                "usage: afpkt tx IFNAME DST_MAC SRC_IP DST_IP PORT LEN SECS | afpkt rx PORT SECS"
            );
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame as `tx` built it before vale-wire, offsets and checksum by hand.
    fn by_hand(
        dst: [u8; 6],
        src: [u8; 6],
        sip: Ipv4Addr,
        dip: Ipv4Addr,
        port: u16,
        len: usize,
    ) -> Vec<u8> {
        fn csum(d: &[u8]) -> u16 {
            let mut s: u32 = d
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
                .sum();
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            !(s as u16)
        }
        let mut f = vec![0u8; len.max(42)];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip_len = (f.len() - 14) as u16;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&sip.octets());
        f[30..34].copy_from_slice(&dip.octets());
        let c = csum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..36].copy_from_slice(&9999u16.to_be_bytes());
        f[36..38].copy_from_slice(&port.to_be_bytes());
        f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
        f
    }

    #[test]
    fn frames_are_the_same_bytes_as_before_vale_wire() {
        let (dst, src) = ([0x52, 0x54, 0, 0x12, 0x34, 0x56], [2, 0, 0, 0, 0, 0xfe]);
        for (sip, dip, port) in [
            (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 5001),
            (
                Ipv4Addr::new(192, 168, 255, 254),
                Ipv4Addr::BROADCAST,
                65535,
            ),
        ] {
            for len in (0..=80).chain([1514, 9000, 65535]) {
                assert_eq!(
                    frame(dst, src, sip, dip, port, len),
                    by_hand(dst, src, sip, dip, port, len),
                    "{len}-byte frame"
                );
            }
        }
    }
}
