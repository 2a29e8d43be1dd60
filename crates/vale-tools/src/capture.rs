//! `vale-ctl capture`: watch a port through a monitor (netmap's `vale0:a/t`, `/r`,
//! `/rt`) and write what it sees as pcap, which `tcpdump -r` and `tshark -r` read, or as
//! one line per frame.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vale_wire::{EtherType, IpProtocol, ethernet, ipv4};

/// pcap's classic file format (microsecond timestamps), link type Ethernet.
pub struct PcapWriter<W: Write> {
    out: W,
}

/// Largest frame recorded whole; longer ones are cut (and say so in their header).
pub const SNAPLEN: u32 = 65535;

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> std::io::Result<PcapWriter<W>> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic, microseconds
        h.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&SNAPLEN.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    /// One record.
    pub fn write(&mut self, when: SystemTime, frame: &[u8]) -> std::io::Result<()> {
        let t = when.duration_since(UNIX_EPOCH).unwrap_or_default();
        let incl = frame.len().min(SNAPLEN as usize);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&(t.as_secs() as u32).to_le_bytes());
        h[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
        h[8..12].copy_from_slice(&(incl as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(&frame[..incl])
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Which traffic of the port to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What the port receives (netmap `/r`).
    Rx,
    /// What the port sends (netmap `/t`).
    Tx,
    Both,
}

impl Direction {
    pub fn parse(s: &str) -> Result<Direction, String> {
        match s {
            "rx" => Ok(Direction::Rx),
            "tx" => Ok(Direction::Tx),
            "both" => Ok(Direction::Both),
            _ => Err(format!("--dir {s}: use rx, tx or both")),
        }
    }

    /// netmap's monitor suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Direction::Rx => "/r",
            Direction::Tx => "/t",
            Direction::Both => "/rt",
        }
    }
}

pub struct Options {
    pub port: String,
    pub dir: Direction,
    /// `None`: a line per frame on stdout; `Some("-")`: pcap on stdout.
    pub file: Option<String>,
    /// Stop after this many frames (0 = no limit).
    pub count: u64,
    /// Stop after this long (`None` = no limit).
    pub duration: Option<Duration>,
    pub socket: Option<std::path::PathBuf>,
}

/// What a capture saw.
pub struct Summary {
    pub captured: u64,
    /// The monitor port, still open so its drop counters can be read.
    pub monitor: vale::Port,
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A tcpdump-like one-liner: time, addresses, ethertype, length.
pub fn describe(when: SystemTime, f: &[u8]) -> String {
    let t = when.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, us) = (t.as_secs() % 86400, t.subsec_micros());
    let ts = format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        us
    );
    let Ok(eth) = ethernet::Frame::new_checked(f) else {
        return format!("{ts} runt, length {}", f.len());
    };
    let what = match eth.ethertype() {
        EtherType::IPV4 if f.len() >= ethernet::HEADER_LEN + ipv4::HEADER_LEN => {
            let ip = ipv4::Packet::new_unchecked(eth.payload());
            let proto = match ip.protocol() {
                p @ (IpProtocol::ICMP | IpProtocol::TCP | IpProtocol::UDP) => p.to_string(),
                IpProtocol(p) => format!("proto {p}"),
            };
            format!("IPv4 {} > {}: {proto}", ip.src_addr(), ip.dst_addr())
        }
        EtherType::ARP => "ARP".to_string(),
        EtherType::IPV6 => "IPv6".to_string(),
        EtherType(e) => format!("ethertype 0x{e:04x}"),
    };
    format!(
        "{ts} {} > {}, {what}, length {}",
        mac(&eth.src_addr()),
        mac(&eth.dst_addr()),
        f.len()
    )
}

/// Captures until the count, the duration or `stop`.
pub fn run(o: &Options, stop: Arc<AtomicBool>) -> Result<Summary, String> {
    let name = format!("{}{}", o.port, o.dir.suffix());
    let port = vale::Port::open_with(
        &name,
        &vale::OpenOptions {
            socket: o.socket.clone(),
            ..Default::default()
        },
    )
    .map_err(|e| format!("cannot capture on {}: {e}", o.port))?;
    enum Sink {
        Text(std::io::Stdout),
        Pcap(PcapWriter<Box<dyn Write>>),
    }
    let mut sink = match o.file.as_deref() {
        None => Sink::Text(std::io::stdout()),
        Some(path) => {
            let out: Box<dyn Write> = if path == "-" {
                Box::new(std::io::BufWriter::new(std::io::stdout()))
            } else {
                Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?,
                ))
            };
            Sink::Pcap(PcapWriter::new(out).map_err(|e| format!("writing pcap: {e}"))?)
        }
    };
    let start = Instant::now();
    let mut captured = 0u64;
    let mut err: Option<std::io::Error> = None;
    let done = |captured: u64| {
        stop.load(Ordering::Relaxed)
            || (o.count > 0 && captured >= o.count)
            || o.duration.is_some_and(|d| start.elapsed() >= d)
    };
    while !done(captured) && err.is_none() {
        let ready = port
            .poll(vale::Interest::RX, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        if !ready {
            continue;
        }
        let now = SystemTime::now();
        let want = if o.count > 0 {
            (o.count - captured) as usize
        } else {
            0
        };
        captured += port.dispatch(want, |f| {
            if err.is_some() {
                return;
            }
            let r = match &mut sink {
                Sink::Text(out) => writeln!(out, "{}", describe(now, f)),
                Sink::Pcap(w) => w.write(now, f),
            };
            if let Err(e) = r {
                err = Some(e);
            }
        }) as u64;
        port.rxsync().map_err(|e| e.to_string())?;
        let r = match &mut sink {
            Sink::Text(out) => out.flush(),
            Sink::Pcap(w) => w.flush(),
        };
        if let Err(e) = r {
            err.get_or_insert(e);
        }
    }
    match err {
        // The reader went away (`| head`, tcpdump -c): a normal end.
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Some(e) => return Err(format!("writing the capture: {e}")),
        None => {}
    }
    Ok(Summary {
        captured,
        monitor: port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_header_and_record_have_libpcaps_layout() {
        let mut buf = Vec::new();
        let mut w = PcapWriter::new(&mut buf).unwrap();
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000);
        w.write(t, &[0xaa; 60]).unwrap();
        assert_eq!(&buf[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(buf[20..24].try_into().unwrap()), 1);
        let r = &buf[24..40];
        assert_eq!(
            u32::from_le_bytes(r[0..4].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()), 123_456);
        assert_eq!(u32::from_le_bytes(r[8..12].try_into().unwrap()), 60);
        assert_eq!(buf.len(), 24 + 16 + 60);
    }

    #[test]
    fn one_line_per_frame_names_what_it_is() {
        let mut f = vec![0u8; 42];
        f[12] = 0x08;
        f[13] = 0x06;
        assert!(describe(UNIX_EPOCH, &f).contains("ARP, length 42"));
        assert!(describe(UNIX_EPOCH, &f[..10]).contains("runt"));

        let mut ip = vec![0u8; 42];
        ip[..6].copy_from_slice(&[0xff; 6]);
        ip[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        ip[12] = 0x08;
        ip[23] = 17;
        ip[26..30].copy_from_slice(&[10, 0, 0, 1]);
        ip[30..34].copy_from_slice(&[10, 0, 0, 2]);
        let when = UNIX_EPOCH + Duration::from_micros(3_723_000_005);
        assert_eq!(
            describe(when, &ip),
            "01:02:03.000005 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff, \
             IPv4 10.0.0.1 > 10.0.0.2: UDP, length 42"
        );
        ip[23] = 58;
        assert!(describe(when, &ip).contains("IPv4 10.0.0.1 > 10.0.0.2: proto 58,"));
        assert!(describe(when, &ip[..33]).contains(", ethertype 0x0800, length 33"));
        ip[12..14].copy_from_slice(&[0x81, 0x00]);
        assert!(describe(when, &ip).contains(", ethertype 0x8100, length 42"));
    }
}
