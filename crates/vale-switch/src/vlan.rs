//! VLAN-aware switching (802.1Q, with 802.1ad tunnel ports), with Open vSwitch's
//! semantics: what a port admits, which VLAN a frame is in, which ports are members of
//! it, and how each destination wants the frame tagged.
//!
//! A switch with `vlan_filtering` off ignores all of this (tags are carried untouched).
//! With it on, every port has a [`PortVlan`] mode; a port never configured is a trunk of
//! every VLAN (OVS's default), where untagged frames are VLAN 0 and leave untagged.
//!
//! | mode | ingress | egress |
//! |---|---|---|
//! | `access V` | untagged or priority-tagged (VID 0): VLAN V; any other tag: dropped | untagged, VLAN V only |
//! | `trunk S` | tag with VID in S: that VLAN; other VIDs dropped; untagged/priority: VLAN 0 if 0 is in S, else dropped | tagged, VLANs of S; VLAN 0 untagged |
//! | `trunk S native N` | as trunk, untagged/priority: VLAN N | as trunk; VLAN N untagged (or tagged with `native-tagged`) |
//! | `tunnel S` | every frame, tagged or not: VLAN S (its tags are payload) | the outer tag popped, VLAN S only |
//!
//! A frame entering untagged on a tunnel port that leaves tagged gets an 802.1ad S-tag
//! (TPID 0x88a8); from other ports an 802.1Q tag (0x8100). A tagged frame keeps its own
//! TPID and priority bits; a priority tag leaving tagged gets the frame's VID.

use crate::stats::DropReason;
use std::fmt;
use std::str::FromStr;

/// 802.1Q C-tag TPID.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad S-tag TPID.
pub const TPID_8021AD: u16 = 0x88a8;
/// Highest VID that names a VLAN (0 is the priority tag, 4095 reserved).
pub const MAX_VID: u16 = 4094;
const VIDS: usize = 4096;

/// A set of VLAN ids, 0..=4095.
#[derive(Clone, PartialEq, Eq)]
pub struct VidSet {
    bits: Box<[u64; VIDS / 64]>,
}

impl VidSet {
    pub fn empty() -> VidSet {
        VidSet {
            bits: Box::new([0; VIDS / 64]),
        }
    }

    /// VIDs 0..=4094 (a trunk of everything).
    pub fn all() -> VidSet {
        let mut s = VidSet {
            bits: Box::new([u64::MAX; VIDS / 64]),
        };
        s.bits[VIDS / 64 - 1] &= !(1 << 63); // 4095 is reserved
        s
    }

    #[inline(always)]
    pub fn contains(&self, vid: u16) -> bool {
        let v = vid as usize & (VIDS - 1);
        self.bits[v / 64] >> (v % 64) & 1 != 0
    }

    pub fn insert(&mut self, vid: u16) {
        let v = vid as usize & (VIDS - 1);
        self.bits[v / 64] |= 1 << (v % 64);
    }

    pub fn is_all(&self) -> bool {
        *self == VidSet::all()
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..VIDS as u16).filter(|v| self.contains(*v))
    }
}

impl fmt::Debug for VidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VidSet({self})")
    }
}

/// Ranges, as `10,20-29`; `all` for 0..=4094.
impl fmt::Display for VidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("all");
        }
        let mut first = true;
        let mut it = self.iter().peekable();
        while let Some(a) = it.next() {
            let mut b = a;
            while it.peek() == Some(&(b + 1)) {
                b = it.next().unwrap_or(b);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

fn parse_vid(s: &str, min: u16, what: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(v) if (min..=MAX_VID).contains(&v) => Ok(v),
        _ => Err(format!(
            "{what} `{}` is not a VLAN id {min}..={MAX_VID}",
            crate::quote_input(s)
        )),
    }
}

/// `10,20,30-39` or `all`; VID 0 (untagged frames, on a trunk without a native VLAN) is
/// allowed.
impl FromStr for VidSet {
    type Err = String;
    fn from_str(s: &str) -> Result<VidSet, String> {
        if s.trim() == "all" {
            return Ok(VidSet::all());
        }
        let mut set = VidSet::empty();
        for part in s.split(',') {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (parse_vid(a, 0, "VLAN")?, parse_vid(b, 0, "VLAN")?),
                None => {
                    let v = parse_vid(part, 0, "VLAN")?;
                    (v, v)
                }
            };
            if a > b {
                return Err(format!(
                    "VLAN range `{}` runs backwards",
                    crate::quote_input(part)
                ));
            }
            (a..=b).for_each(|v| set.insert(v));
        }
        Ok(set)
    }
}

/// A trunk's native VLAN: the VLAN of its untagged frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Native {
    pub vid: u16,
    /// Frames of the native VLAN leave tagged (OVS `native-tagged`), else untagged.
    pub tagged: bool,
}

/// A port's VLAN mode on a switch with `vlan_filtering` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortVlan {
    /// Carries the VLANs of `vids` tagged (VLAN 0 untagged); untagged frames belong to
    /// the native VLAN if there is one.
    Trunk {
        vids: VidSet,
        native: Option<Native>,
    },
    /// One VLAN, untagged.
    Access(u16),
    /// 802.1ad customer port: every frame is in S-VLAN `0`, carried with an S-tag on
    /// trunks (QinQ).
    Tunnel(u16),
}

impl Default for PortVlan {
    /// OVS's default: a trunk of every VLAN.
    fn default() -> Self {
        PortVlan::Trunk {
            vids: VidSet::all(),
            native: None,
        }
    }
}

/// What the frame looked like as it came in, as far as egress tagging cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum VlanIn {
    /// No tag (or filtering off).
    #[default]
    Untagged,
    /// A tag with VID 0: priority bits only, the frame counts as untagged.
    Priority,
    /// An outer tag naming the frame's VLAN.
    Tagged,
    /// From a tunnel port: untagged as far as the switch knows; an S-tag is what it
    /// gets if it leaves tagged.
    Tunnel,
}

/// How a copy must be changed for its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    Keep,
    /// Take the outer tag out.
    Pop,
    /// Put a tag in front of the EtherType.
    Push {
        tpid: u16,
        tci: u16,
    },
    /// Give the outer (priority) tag this VID, keeping its priority bits.
    SetVid(u16),
}

impl PortVlan {
    /// Classifies a frame that enters through this port: its VLAN and how it came, or
    /// why it is dropped. `ethertype` and `tci` are bytes 12..14 and 14..16, `len` the
    /// frame's length.
    #[inline]
    pub fn ingress(&self, ethertype: u16, tci: u16, len: u32) -> Result<(u16, VlanIn), DropReason> {
        let tagged = ethertype == TPID_8021Q || ethertype == TPID_8021AD;
        if let PortVlan::Tunnel(s) = *self {
            return Ok((s, VlanIn::Tunnel));
        }
        if tagged && len < 18 {
            return Err(DropReason::Runt); // a TPID with no room for its tag
        }
        let vid = tci & 0xfff;
        match self {
            PortVlan::Access(v) => match (tagged, vid) {
                (false, _) => Ok((*v, VlanIn::Untagged)),
                (true, 0) => Ok((*v, VlanIn::Priority)),
                (true, _) => Err(DropReason::VlanIngressFilter),
            },
            PortVlan::Trunk { vids, native } => {
                if tagged && vid != 0 {
                    let ok = vid <= MAX_VID
                        && (vids.contains(vid) || native.is_some_and(|n| n.vid == vid));
                    return if ok {
                        Ok((vid, VlanIn::Tagged))
                    } else {
                        Err(DropReason::VlanIngressFilter)
                    };
                }
                let how = if tagged {
                    VlanIn::Priority
                } else {
                    VlanIn::Untagged
                };
                match native {
                    Some(n) => Ok((n.vid, how)),
                    None if vids.contains(0) => Ok((0, how)),
                    None => Err(DropReason::VlanIngressFilter),
                }
            }
            PortVlan::Tunnel(_) => unreachable!("handled above"),
        }
    }

    /// Whether frames of VLAN `vid` may leave through this port.
    #[inline(always)]
    pub fn member(&self, vid: u16) -> bool {
        match self {
            PortVlan::Access(v) | PortVlan::Tunnel(v) => *v == vid,
            PortVlan::Trunk { vids, native } => {
                vids.contains(vid) || native.is_some_and(|n| n.vid == vid)
            }
        }
    }

    /// Whether frames of VLAN `vid` leave this port with a tag.
    #[inline(always)]
    fn tags(&self, vid: u16) -> bool {
        match self {
            PortVlan::Access(_) | PortVlan::Tunnel(_) => false,
            PortVlan::Trunk { native, .. } => match native {
                Some(n) if n.vid == vid => n.tagged,
                _ => vid != 0,
            },
        }
    }

    /// How a frame of VLAN `vid` that came in as `how` (with outer TCI `tci`) must be
    /// changed to leave through this port; `None` if the port is not a member.
    #[inline]
    pub fn egress(&self, vid: u16, how: VlanIn, tci: u16) -> Option<Edit> {
        if !self.member(vid) {
            return None;
        }
        Some(match (self.tags(vid), how) {
            (false, VlanIn::Untagged | VlanIn::Tunnel) | (true, VlanIn::Tagged) => Edit::Keep,
            (false, VlanIn::Priority | VlanIn::Tagged) => Edit::Pop,
            (true, VlanIn::Priority) => Edit::SetVid((tci & 0xf000) | vid),
            (true, VlanIn::Untagged) => Edit::Push {
                tpid: TPID_8021Q,
                tci: vid,
            },
            (true, VlanIn::Tunnel) => Edit::Push {
                tpid: TPID_8021AD,
                tci: vid,
            },
        })
    }
}

/// As `vale-ctl vlan` and the config file write it: `access 10`, `tunnel 100`,
/// `trunk all`, `trunk 10,20 native 30`, `trunk 10,20 native 30 tagged`.
impl fmt::Display for PortVlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortVlan::Access(v) => write!(f, "access {v}"),
            PortVlan::Tunnel(v) => write!(f, "tunnel {v}"),
            PortVlan::Trunk { vids, native } => {
                write!(f, "trunk {vids}")?;
                if let Some(n) = native {
                    write!(f, " native {}", n.vid)?;
                    if n.tagged {
                        f.write_str(" tagged")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl FromStr for PortVlan {
    type Err = String;
    fn from_str(s: &str) -> Result<PortVlan, String> {
        let w: Vec<&str> = s.split_whitespace().collect();
        let bad = || {
            format!(
                "VLAN mode `{}` is not `access VID`, `tunnel S-VID` or \
                 `trunk VIDS|all [native VID [tagged]]`",
                crate::quote_input(s)
            )
        };
        match w.as_slice() {
            ["access", v] => Ok(PortVlan::Access(parse_vid(v, 1, "access VLAN")?)),
            ["tunnel", v] => Ok(PortVlan::Tunnel(parse_vid(v, 1, "tunnel S-VLAN")?)),
            ["trunk", vids, rest @ ..] => {
                let vids: VidSet = vids.parse()?;
                let native = match rest {
                    [] => None,
                    ["native", v] => Some(Native {
                        vid: parse_vid(v, 1, "native VLAN")?,
                        tagged: false,
                    }),
                    ["native", v, "tagged"] => Some(Native {
                        vid: parse_vid(v, 1, "native VLAN")?,
                        tagged: true,
                    }),
                    _ => return Err(bad()),
                };
                Ok(PortVlan::Trunk { vids, native })
            }
            _ => Err(bad()),
        }
    }
}

/// Copies `frame` into `out` changed by `edit`. The frame was checked to hold its tag
/// (18 bytes) when it has one.
pub fn apply(edit: Edit, frame: &[u8], out: &mut Vec<u8>) {
    out.clear();
    match edit {
        Edit::Keep => out.extend_from_slice(frame),
        Edit::Pop => {
            out.extend_from_slice(&frame[..12.min(frame.len())]);
            out.extend_from_slice(frame.get(16..).unwrap_or(&[]));
        }
        Edit::Push { tpid, tci } => {
            out.extend_from_slice(&frame[..12.min(frame.len())]);
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
            out.extend_from_slice(frame.get(12..).unwrap_or(&[]));
        }
        Edit::SetVid(tci) => {
            out.extend_from_slice(frame);
            if let Some(t) = out.get_mut(14..16) {
                t.copy_from_slice(&tci.to_be_bytes());
            }
        }
    }
}

/// The length change an edit makes.
pub fn delta(edit: Edit) -> i32 {
    match edit {
        Edit::Pop => -4,
        Edit::Push { .. } => 4,
        Edit::Keep | Edit::SetVid(_) => 0,
    }
}

/// A switch's VLAN state with filtering on: how many forwarding ports are members of
/// each VLAN (a flood's copy count).
#[derive(Clone)]
pub(crate) struct Members {
    count: Box<[u16; VIDS]>,
}

impl Members {
    pub(crate) fn new<'a>(ports: impl Iterator<Item = &'a PortVlan>) -> Members {
        let mut count = Box::new([0u16; VIDS]);
        for p in ports {
            match p {
                PortVlan::Access(v) | PortVlan::Tunnel(v) => count[*v as usize] += 1,
                PortVlan::Trunk { .. } => {
                    for (v, c) in count.iter_mut().enumerate() {
                        *c += u16::from(p.member(v as u16));
                    }
                }
            }
        }
        Members { count }
    }

    #[inline(always)]
    pub(crate) fn of(&self, vid: u16) -> u16 {
        self.count[vid as usize & (VIDS - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DropReason::VlanIngressFilter as Filtered;

    fn trunk(s: &str) -> PortVlan {
        format!("trunk {s}").parse().unwrap()
    }

    #[test]
    fn modes_parse_and_print_back() {
        for s in [
            "access 10",
            "tunnel 100",
            "trunk all",
            "trunk 10,20",
            "trunk 0,10-19,4094",
            "trunk 10,20 native 30",
            "trunk 10,20 native 30 tagged",
        ] {
            let m: PortVlan = s.parse().unwrap();
            assert_eq!(m.to_string(), s);
        }
        for bad in [
            "access 0",
            "access 4095",
            "access x",
            "tunnel",
            "trunk",
            "trunk 20-10",
            "trunk 10 native 0",
            "trunk 10 native 5 untagged",
            "hybrid 3",
        ] {
            let e = bad.parse::<PortVlan>().unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert_eq!(PortVlan::default().to_string(), "trunk all");
    }

    /// OVS's table (l2-peers 3.3): access 10 (pa), trunk 10,20 (pb), access 20 (pc).
    #[test]
    fn the_ovs_table() {
        let pa = PortVlan::Access(10);
        let pb = trunk("10,20");
        let pc = PortVlan::Access(20);
        // Untagged on access 10: leaves the trunk tagged 10, never reaches access 20.
        let (v, how) = pa.ingress(0x0800, 0, 60).unwrap();
        assert_eq!((v, how), (10, VlanIn::Untagged));
        assert_eq!(
            pb.egress(v, how, 0),
            Some(Edit::Push {
                tpid: 0x8100,
                tci: 10
            })
        );
        assert_eq!(pc.egress(v, how, 0), None);
        // VID 20 on the trunk: access 20 gets it untagged, access 10 nothing.
        let (v, how) = pb.ingress(0x8100, 20, 60).unwrap();
        assert_eq!((v, how), (20, VlanIn::Tagged));
        assert_eq!(pc.egress(v, how, 20), Some(Edit::Pop));
        assert_eq!(pa.egress(v, how, 20), None);
        // VID 10 on the trunk: access 10 gets it untagged.
        let (v, how) = pb.ingress(0x8100, 0xa00a, 60).unwrap();
        assert_eq!(pa.egress(v, how, 0xa00a), Some(Edit::Pop));
        // VID 30 on the trunk, and untagged on the trunk: dropped.
        assert_eq!(pb.ingress(0x8100, 30, 60), Err(Filtered));
        assert_eq!(pb.ingress(0x0800, 0, 60), Err(Filtered));
        // Tagged VID 10 on access 10: dropped, even its own VLAN.
        assert_eq!(pa.ingress(0x8100, 10, 60), Err(Filtered));
        assert_eq!(pa.ingress(0x88a8, 10, 60), Err(Filtered));
        // Priority tag on access 10: VLAN 10, leaves the trunk tagged 10 with its PCP.
        let (v, how) = pa.ingress(0x8100, 0xe000, 60).unwrap();
        assert_eq!((v, how), (10, VlanIn::Priority));
        assert_eq!(pb.egress(v, how, 0xe000), Some(Edit::SetVid(0xe00a)));
        // ...and untagged out of another access 10 port.
        assert_eq!(pa.egress(v, how, 0xe000), Some(Edit::Pop));
        // A tag without room for its TCI.
        assert_eq!(pb.ingress(0x8100, 10, 17), Err(DropReason::Runt));
    }

    #[test]
    fn native_vlans_untagged_and_tagged() {
        let untagged = trunk("10,20 native 30");
        let tagged = trunk("10,20 native 30 tagged");
        let pd = PortVlan::Access(30);
        for pb in [&untagged, &tagged] {
            // Untagged in: VLAN 30, out of access 30 untagged.
            let (v, how) = pb.ingress(0x0800, 0, 60).unwrap();
            assert_eq!((v, how), (30, VlanIn::Untagged));
            assert_eq!(pd.egress(v, how, 0), Some(Edit::Keep));
            // Priority-tagged in: VLAN 30 too.
            assert_eq!(pb.ingress(0x8100, 0x2000, 60).unwrap().0, 30);
            // Tagged 30 in is accepted (a native port always trunks its VLAN).
            assert_eq!(pb.ingress(0x8100, 30, 60), Ok((30, VlanIn::Tagged)));
        }
        // Back from access 30: untagged on native-untagged, tagged 30 on native-tagged.
        let (v, how) = pd.ingress(0x0800, 0, 60).unwrap();
        assert_eq!(untagged.egress(v, how, 0), Some(Edit::Keep));
        assert_eq!(
            tagged.egress(v, how, 0),
            Some(Edit::Push {
                tpid: 0x8100,
                tci: 30
            })
        );
        // A native VLAN tagged on the trunk leaves native-untagged without its tag.
        assert_eq!(untagged.egress(30, VlanIn::Tagged, 30), Some(Edit::Pop));
    }

    #[test]
    fn tunnel_ports_push_and_pop_the_s_tag() {
        let pa = PortVlan::Tunnel(100);
        let pb = trunk("100");
        // C-tagged VID 10 in: S-VLAN 100, the C-tag is payload; out of the trunk with
        // an S-tag 0x88a8 VID 100 outside.
        let (v, how) = pa.ingress(0x8100, 10, 60).unwrap();
        assert_eq!((v, how), (100, VlanIn::Tunnel));
        assert_eq!(
            pb.egress(v, how, 10),
            Some(Edit::Push {
                tpid: 0x88a8,
                tci: 100
            })
        );
        // Untagged in: just the S-tag. QinQ in: one more S-tag outside.
        assert_eq!(pa.ingress(0x0800, 0, 60), Ok((100, VlanIn::Tunnel)));
        assert_eq!(pa.ingress(0x88a8, 7, 60), Ok((100, VlanIn::Tunnel)));
        // Back: S-tagged 100 on the trunk, popped towards the tunnel port.
        let (v, how) = pb.ingress(0x88a8, 100, 64).unwrap();
        assert_eq!(pa.egress(v, how, 100), Some(Edit::Pop));
        assert_eq!(PortVlan::Tunnel(200).egress(v, how, 100), None);
    }

    #[test]
    fn default_trunks_carry_everything_as_it_came() {
        let d = PortVlan::default();
        assert_eq!(d.ingress(0x0800, 0, 60), Ok((0, VlanIn::Untagged)));
        assert_eq!(d.egress(0, VlanIn::Untagged, 0), Some(Edit::Keep));
        let (v, how) = d.ingress(0x8100, 0x6123, 60).unwrap();
        assert_eq!(d.egress(v, how, 0x6123), Some(Edit::Keep));
        // A priority tag is untagged traffic: it leaves without the tag (OVS's
        // `priority-tags` default, never).
        let (v, how) = d.ingress(0x8100, 0x6000, 60).unwrap();
        assert_eq!(d.egress(v, how, 0x6000), Some(Edit::Pop));
        assert_eq!(d.ingress(0x8100, 0xfff, 60), Err(Filtered), "VID 4095");
    }

    #[test]
    fn edits_change_the_frame_bytes() {
        let mut f = vec![0xa5u8; 60];
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        f[14..16].copy_from_slice(&[0xe0, 0x00]);
        f[16..18].copy_from_slice(&[0x08, 0x00]);
        let mut out = vec![0x5a; 3];
        apply(Edit::Pop, &f, &mut out);
        assert_eq!(out.len(), 56);
        assert_eq!(&out[..12], &f[..12]);
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        apply(Edit::SetVid(0xe00a), &f, &mut out);
        assert_eq!(&out[12..16], &[0x81, 0x00, 0xe0, 0x0a]);
        assert_eq!(out.len(), 60);
        apply(
            Edit::Push {
                tpid: 0x88a8,
                tci: 100,
            },
            &f,
            &mut out,
        );
        assert_eq!(out.len(), 64);
        assert_eq!(
            &out[12..20],
            &[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0xe0, 0x00]
        );
        assert_eq!(&out[20..], &f[16..]);
        apply(Edit::Keep, &f, &mut out);
        assert_eq!(out, f);
        assert_eq!(
            [Edit::Keep, Edit::Pop, Edit::SetVid(1)].map(delta),
            [0, -4, 0]
        );
    }

    #[test]
    fn members_are_counted_per_vlan() {
        let ports = [
            PortVlan::Access(10),
            trunk("10,20 native 30"),
            PortVlan::Tunnel(20),
        ];
        let m = Members::new(ports.iter());
        assert_eq!(
            [m.of(10), m.of(20), m.of(30), m.of(0), m.of(40)],
            [2, 2, 1, 0, 0]
        );
        let d = [PortVlan::default(), PortVlan::default()];
        let m = Members::new(d.iter());
        assert_eq!([m.of(0), m.of(4094), m.of(4095)], [2, 2, 0]);
    }

    #[test]
    fn vid_sets_print_as_ranges() {
        let s: VidSet = "1,3-5,7,4094".parse().unwrap();
        assert_eq!(s.to_string(), "1,3-5,7,4094");
        assert!(s.contains(4) && !s.contains(6) && !s.contains(0));
        assert!(VidSet::all().contains(0) && !VidSet::all().contains(4095));
        assert_eq!("all".parse::<VidSet>().unwrap(), VidSet::all());
    }
}
