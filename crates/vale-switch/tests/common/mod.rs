//! A netmap client for tests: maps a port's region through its memfd, as a real client
//! process does, and speaks the ring protocol through `AppRing`.
#![allow(dead_code)]

use vale_abi::layout::{NS_MOREFRAG, NetmapSlot};
use vale_abi::{AppRing, Dir, Region};
use vale_switch::{Forwarder, Lookup, MacAddr, NoEgress, Notify, PortId, Switch, Timestamp};

pub struct Client {
    pub region: Region,
    pub tx: Vec<AppRing>,
    pub rx: Vec<AppRing>,
}

impl Client {
    pub fn attach<L: Lookup>(sw: &Switch<L>, id: PortId) -> Client {
        let port = sw.port(id).expect("port exists");
        let fd = port.region().fd().try_clone_to_owned().unwrap();
        let region = Region::from_fd(fd, port.geometry()).unwrap();
        let g = region.geometry();
        let tx = (0..g.tx_rings)
            .map(|i| AppRing::new(region.ring(Dir::Tx, i).unwrap()))
            .collect();
        let rx = (0..g.rx_rings)
            .map(|i| AppRing::new(region.ring(Dir::Rx, i).unwrap()))
            .collect();
        Client { region, tx, rx }
    }

    /// Writes one slot at `head` of TX ring `r`; false if the ring has no room.
    pub fn put_slot(&self, r: usize, data: &[u8], flags: u16) -> bool {
        let ring = &self.tx[r];
        if ring.space() == 0 {
            return false;
        }
        let h = ring.head();
        let v = ring.view();
        let s = v.read_slot(h);
        assert!(v.bufs().write(s.buf_idx, data));
        v.write_slot(
            h,
            NetmapSlot {
                buf_idx: s.buf_idx,
                len: data.len() as u16,
                flags,
                ptr: 0,
            },
        );
        ring.advance(1);
        true
    }

    /// Queues one frame (split into `frags` fragments if > 1) without syncing.
    pub fn queue(&self, frame: &[u8], frags: usize) -> bool {
        self.queue_on(0, frame, frags)
    }

    pub fn queue_on(&self, r: usize, frame: &[u8], frags: usize) -> bool {
        if (self.tx[r].space() as usize) < frags {
            self.tx[r].txsync(); // refresh tail, as a client polls for room
            if (self.tx[r].space() as usize) < frags {
                return false;
            }
        }
        let chunk = frame.len().div_ceil(frags).max(1);
        let pieces: Vec<&[u8]> = frame.chunks(chunk).collect();
        for (i, p) in pieces.iter().enumerate() {
            let more = if i + 1 < pieces.len() { NS_MOREFRAG } else { 0 };
            assert!(self.put_slot(r, p, more));
        }
        true
    }

    pub fn txsync(&self) {
        for r in &self.tx {
            r.txsync();
        }
    }

    /// Sends frames and syncs.
    pub fn send(&self, frames: &[Vec<u8>]) -> usize {
        let n = frames.iter().take_while(|f| self.queue(f, 1)).count();
        self.txsync();
        n
    }

    /// Receives every complete packet on every RX ring: (bytes, flags of each slot).
    pub fn recv(&self) -> Vec<(Vec<u8>, Vec<u16>)> {
        let mut out = Vec::new();
        for ring in &self.rx {
            ring.rxsync();
            let v = ring.view();
            let mut cur: (Vec<u8>, Vec<u16>) = (Vec::new(), Vec::new());
            while ring.space() > 0 {
                let s = v.read_slot(ring.head());
                let mut buf = vec![0u8; s.len as usize];
                assert!(v.bufs().read(s.buf_idx, &mut buf));
                cur.0.extend_from_slice(&buf);
                cur.1.push(s.flags);
                ring.advance(1);
                if s.flags & NS_MOREFRAG == 0 {
                    out.push(std::mem::take(&mut cur));
                }
            }
            assert!(cur.1.is_empty(), "switch published half a packet");
            ring.rxsync();
        }
        out
    }

    /// Just the frame bytes of `recv`.
    pub fn recv_frames(&self) -> Vec<Vec<u8>> {
        self.recv().into_iter().map(|(f, _)| f).collect()
    }

    pub fn arm_rx_kick(&self) {
        for r in &self.rx {
            r.view().csb().app_arm_kick();
        }
    }
}

/// Locally administered unicast address 02:00:00:00:hi:lo.
pub fn mac(i: u16) -> MacAddr {
    MacAddr::new([2, 0, 0, 0, (i >> 8) as u8, i as u8])
}

/// An Ethernet frame of `len` bytes (at least 14) carrying `tag` after the header.
pub fn frame(dst: MacAddr, src: MacAddr, tag: u64, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(22)];
    f[..6].copy_from_slice(&dst.octets());
    f[6..12].copy_from_slice(&src.octets());
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental ethertype
    f[14..22].copy_from_slice(&tag.to_le_bytes());
    for (i, b) in f.iter_mut().enumerate().skip(22) {
        *b = (tag as usize).wrapping_add(i) as u8;
    }
    f.truncate(len.max(14));
    f
}

pub fn tag_of(f: &[u8]) -> u64 {
    u64::from_le_bytes(f[14..22].try_into().unwrap())
}

/// Runs the switch until it moves nothing (with a fresh forwarder: tests also show that
/// a switch keeps no per-batch state of its own), then checks that every frame sent is
/// delivered or counted (the switch's conservation laws).
pub fn drain<L: Lookup>(sw: &mut Switch<L>, now: Timestamp) -> Vec<Notify> {
    let mut ev = Vec::new();
    let mut fw = Forwarder::new();
    while fw.forward(sw, now, &mut ev, &mut NoEgress) > 0 {}
    assert_laws(sw);
    ev
}

/// Fails with the figures if the switch's counters break a conservation law.
#[track_caller]
pub fn assert_laws<L: Lookup>(sw: &Switch<L>) {
    if let Some(law) = sw.broken_law() {
        panic!("conservation law broken: {law}");
    }
}

pub fn t(s: u64) -> Timestamp {
    Timestamp::from_secs(s)
}
