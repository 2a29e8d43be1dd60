//! vale-wire's views over bytes a peer sent: Ethernet, 802.1Q/ad tags, IPv4, IPv6, TCP,
//! UDP, VXLAN, the virtio-net header. The crate's panic contract: once `new_checked`
//! accepts the bytes, no accessor panics; this walks a frame down its layers and calls
//! every accessor on the way, and checks that tag insert/strip round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vale_wire::{
    EtherType, IpProtocol, checksum, ethernet, ipv4, ipv6, tcp, udp, virtio_net, vlan, vxlan,
};

fuzz_target!(|data: &[u8]| {
    let _ = virtio_net::VnetHdr::parse(data).is_plain();
    walk_frame(data, 0);
    tags_round_trip(data);
    // A VXLAN header anywhere (as the UDP payload it is).
    if let Ok(v) = vxlan::Packet::new_checked(data) {
        let _ = (v.flags(), v.vni(), v.reserved1(), v.reserved2(), v.check());
        walk_frame(v.payload(), 1);
    }
    let _ = checksum::fold(checksum::sum(0, data));
});

/// An Ethernet frame, its tags, its IP header and its transport; `depth` bounds VXLAN
/// encapsulation.
fn walk_frame(f: &[u8], depth: u32) {
    let Ok(eth) = ethernet::Frame::new_checked(f) else {
        return;
    };
    let _ = (eth.dst_addr(), eth.src_addr());
    let mut et = eth.ethertype();
    let mut rest = eth.payload();
    while et.is_vlan() {
        let Ok(t) = vlan::Tag::new_checked(rest) else {
            return;
        };
        let tci = t.tci();
        let _ = (tci.pcp(), tci.dei(), tci.vid());
        et = t.ethertype();
        rest = within(rest, t.payload());
    }
    let (proto, l4, pseudo) = match et {
        EtherType::IPV4 => {
            let Ok(ip) = ipv4::Packet::new_checked(rest) else {
                return;
            };
            let _ = (
                ip.version(),
                ip.dscp_ecn(),
                ip.total_len(),
                ip.ident(),
                ip.dont_frag(),
            );
            let _ = (
                ip.more_frags(),
                ip.frag_offset(),
                ip.ttl(),
                ip.checksum(),
                ip.verify_checksum(),
            );
            let _ = (ip.src_addr(), ip.dst_addr());
            let p = within(rest, ip.payload());
            (ip.protocol(), p, ip.pseudo_sum(p.len() as u32))
        }
        EtherType::IPV6 => {
            let Ok(ip) = ipv6::Packet::new_checked(rest) else {
                return;
            };
            let _ = (
                ip.version(),
                ip.traffic_class(),
                ip.flow_label(),
                ip.payload_len(),
            );
            let _ = (ip.hop_limit(), ip.src_addr(), ip.dst_addr());
            let p = within(rest, ip.payload());
            (ip.next_header(), p, ip.pseudo_sum(p.len() as u32))
        }
        _ => return,
    };
    match proto {
        IpProtocol::TCP => {
            let Ok(t) = tcp::Packet::new_checked(l4) else {
                return;
            };
            let _ = (
                t.src_port(),
                t.dst_port(),
                t.seq_number(),
                t.ack_number(),
                t.flags(),
            );
            let _ = (
                t.window(),
                t.checksum(),
                t.urgent(),
                t.verify_checksum(pseudo),
            );
            assert!(t.header_len() + t.payload().len() <= l4.len());
        }
        IpProtocol::UDP => {
            let Ok(u) = udp::Packet::new_checked(l4) else {
                return;
            };
            let _ = (
                u.src_port(),
                u.dst_port(),
                u.len(),
                u.is_empty(),
                u.checksum(),
            );
            let _ = u.verify_checksum(pseudo);
            if depth == 0
                && u.dst_port() == 4789
                && let Ok(v) = vxlan::Packet::new_checked(u.payload())
            {
                let _ = v.check();
                walk_frame(v.payload(), depth + 1);
            }
        }
        _ => {}
    }
}

/// Stripping the outer tag of a tagged frame and inserting it again gives the frame back.
fn tags_round_trip(f: &[u8]) {
    let mut v = f.to_vec();
    if let Some(tag) = vlan::strip(&mut v) {
        assert_eq!(v.len() + 4, f.len());
        vlan::insert(&mut v, tag).expect("a stripped frame keeps its addresses");
        assert_eq!(v, f, "strip then insert must give the frame back");
        assert_eq!(vlan::outer(f), Some(tag));
    }
}

/// `inner`, a view into `outer`, with `outer`'s lifetime (a header view borrows its
/// buffer only as long as the view lives).
fn within<'a>(outer: &'a [u8], inner: &[u8]) -> &'a [u8] {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    &outer[start..start + inner.len()]
}
