//! A port opened through the daemon: its region mapped here, netmap's ring API on top.

use crate::proto::{self, GeometryRequest, Request, Response};
use crate::{Error, sock};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fd::{AsFd, OwnedFd};
use std::cell::Cell;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vale_abi::layout::{NS_MOREFRAG, NetmapSlot};
use vale_abi::{AppRing, Dir, PortGeometry, Region};

/// How to open a port.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The daemon's socket; default [`sock::default_socket_path`].
    pub socket: Option<PathBuf>,
    /// Ring counts and sizes, honoured only if this open creates the port (as in
    /// netmap). Overridden by a `@conf:` suffix on the name.
    pub geometry: GeometryRequest,
}

/// What [`Port::poll`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// Packets to read on some RX ring.
    pub rx: bool,
    /// Room to write on some TX ring.
    pub tx: bool,
}

impl Interest {
    pub const RX: Interest = Interest {
        rx: true,
        tx: false,
    };
    pub const TX: Interest = Interest {
        rx: false,
        tx: true,
    };
}

/// An open port of a VALE switch.
///
/// The rings follow netmap(4): on a TX ring the application owns `[head, tail)`, writes
/// slots and advances `head`; on an RX ring it reads `[head, tail)` and advances `head`
/// to give slots back. [`Port::txsync`] and [`Port::rxsync`] exchange positions with
/// the switch (netmap's `NIOCTXSYNC`/`NIOCRXSYNC`) through shared memory only;
/// [`Port::poll`] sleeps until the switch has something.
///
/// ```no_run
/// # fn main() -> Result<(), vale::Error> {
/// // A sender on vale0:a ...
/// let tx = vale::Port::open("vale0:a")?;
/// let frame = [0xffu8; 60]; // broadcast, for the example
/// while !tx.inject(&frame) {
///     tx.poll(vale::Interest::TX, None)?;
/// }
/// tx.txsync()?;
/// // ... and a receiver on vale0:b.
/// let rx = vale::Port::open("vale0:b")?;
/// rx.poll(vale::Interest::RX, Some(std::time::Duration::from_secs(1)))?;
/// rx.dispatch(0, |pkt| println!("{} bytes", pkt.len()));
/// rx.rxsync()?;
/// # Ok(()) }
/// ```
pub struct Port {
    name: String,
    switch: String,
    index: u16,
    conn: OwnedFd,
    region: Region,
    tx: Vec<AppRing>,
    rx: Vec<AppRing>,
    kick: OwnedFd,
    notify: OwnedFd,
    next_tx: Cell<usize>,
    next_rx: Cell<usize>,
    /// `dispatch`'s packet buffer, kept between calls.
    scratch: Cell<Vec<u8>>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("geometry", &self.region.geometry())
            .finish()
    }
}

/// Splits netmap's `name@conf:rings=2,slots=512` syntax.
pub fn parse_conf(name: &str) -> Result<(&str, GeometryRequest), Error> {
    let Some((base, opts)) = name.split_once('@') else {
        return Ok((name, GeometryRequest::default()));
    };
    let bad = |why: String| Error::BadName(format!("`{name}`: {why}"));
    let Some(conf) = opts.strip_prefix("conf:") else {
        return Err(bad(format!(
            "unknown option `@{opts}`; only `@conf:rings=N,slots=N,tx-rings=,rx-rings=,tx-slots=,rx-slots=` is supported"
        )));
    };
    let mut g = GeometryRequest::default();
    for kv in conf.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad(format!("`{kv}` is not key=value")))?;
        let n: u32 = v
            .parse()
            .map_err(|_| bad(format!("`{v}` in `{kv}` is not a number")))?;
        let rings = || u16::try_from(n).map_err(|_| bad(format!("{n} rings is too many")));
        match k.replace('-', "_").as_str() {
            "rings" => {
                g.tx_rings = Some(rings()?);
                g.rx_rings = Some(rings()?);
            }
            "tx_rings" => g.tx_rings = Some(rings()?),
            "rx_rings" => g.rx_rings = Some(rings()?),
            "slots" => {
                g.tx_slots = Some(n);
                g.rx_slots = Some(n);
            }
            "tx_slots" => g.tx_slots = Some(n),
            "rx_slots" => g.rx_slots = Some(n),
            other => return Err(bad(format!("unknown @conf key `{other}`"))),
        }
    }
    Ok((base, g))
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as i64,
    }
}

impl Port {
    /// Opens `name` (e.g. `vale0:a`, or `vale0:a@conf:rings=2,slots=512`), creating its
    /// switch and port if needed.
    pub fn open(name: &str) -> Result<Port, Error> {
        Port::open_with(name, &OpenOptions::default())
    }

    pub fn open_with(name: &str, opts: &OpenOptions) -> Result<Port, Error> {
        let (base, conf) = parse_conf(name)?;
        let mut geometry = opts.geometry;
        for (dst, src) in [
            (&mut geometry.tx_slots, conf.tx_slots),
            (&mut geometry.rx_slots, conf.rx_slots),
        ] {
            if src.is_some() {
                *dst = src;
            }
        }
        if conf.tx_rings.is_some() {
            geometry.tx_rings = conf.tx_rings;
        }
        if conf.rx_rings.is_some() {
            geometry.rx_rings = conf.rx_rings;
        }
        let path = opts
            .socket
            .clone()
            .unwrap_or_else(sock::default_socket_path);
        let conn = sock::connect(&path)?;
        let req = Request::Open {
            version: proto::VERSION,
            name: base.to_string(),
            geometry,
            exclusive: false,
        };
        let (resp, fds) = sock::call(&conn, &req)?;
        let (switch, port, index, geometry) = match resp {
            Response::Opened { layout_version, .. }
                if layout_version != vale_abi::layout::LAYOUT_VERSION =>
            {
                return Err(Error::LayoutVersion {
                    daemon: layout_version,
                    library: vale_abi::layout::LAYOUT_VERSION,
                });
            }
            Response::Opened {
                switch,
                port,
                index,
                geometry,
                ..
            } => (switch, port, index, geometry),
            Response::Error { kind, message } => return Err(Error::Daemon { kind, message }),
            other => return Err(Error::Protocol(format!("unexpected answer {other:?}"))),
        };
        let [memfd, kick, notify]: [OwnedFd; proto::OPEN_FDS] =
            fds.try_into().map_err(|v: Vec<OwnedFd>| {
                Error::Protocol(format!(
                    "expected {} descriptors, got {}",
                    proto::OPEN_FDS,
                    v.len()
                ))
            })?;
        Port::from_parts(
            switch,
            port,
            index,
            geometry.into(),
            conn,
            memfd,
            kick,
            notify,
        )
    }

    /// A port from the pieces an open hands out (for a client that got them another
    /// way, e.g. handed over by a parent process). `conn`
    /// stands for the daemon: when it hangs up (or becomes readable), [`Port::poll`]
    /// returns [`Error::Disconnected`].
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        switch: String,
        port: String,
        index: u16,
        g: PortGeometry,
        conn: OwnedFd,
        memfd: OwnedFd,
        kick: OwnedFd,
        notify: OwnedFd,
    ) -> Result<Port, Error> {
        let region = Region::from_fd(memfd, g).map_err(Error::Region)?;
        let tx = (0..g.tx_rings)
            .filter_map(|i| region.ring(Dir::Tx, i))
            .map(AppRing::new)
            .collect();
        let rx = (0..g.rx_rings)
            .filter_map(|i| region.ring(Dir::Rx, i))
            .map(AppRing::new)
            .collect();
        Ok(Port {
            name: port,
            switch,
            index,
            conn,
            region,
            tx,
            rx,
            kick,
            notify,
            next_tx: Cell::new(0),
            next_rx: Cell::new(0),
            scratch: Cell::new(Vec::new()),
        })
    }

    /// The full port name, `vale0:a`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The switch, `vale0`.
    pub fn switch(&self) -> &str {
        &self.switch
    }
    /// The port's index on its switch.
    pub fn index(&self) -> u16 {
        self.index
    }
    pub fn geometry(&self) -> PortGeometry {
        self.region.geometry()
    }
    /// The mapped region (netmap layout: `netmap_if` at offset 0).
    pub fn region(&self) -> &Region {
        &self.region
    }
    pub fn tx_rings(&self) -> &[AppRing] {
        &self.tx
    }
    pub fn rx_rings(&self) -> &[AppRing] {
        &self.rx
    }

    fn kick(&self) -> Result<(), Error> {
        match rustix::io::write(&self.kick, &1u64.to_ne_bytes()) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(Error::Io("kick valed", e.into())),
        }
    }

    /// `NIOCTXSYNC`: hands every TX ring's `[old head, head)` to the switch and
    /// refreshes `tail`. Makes a syscall only if the switch is asleep.
    pub fn txsync(&self) -> Result<(), Error> {
        let mut kick = false;
        for r in &self.tx {
            kick |= r.txsync();
        }
        if kick { self.kick() } else { Ok(()) }
    }

    /// `NIOCRXSYNC`: gives back every RX ring's slots before `head` and refreshes `tail`.
    pub fn rxsync(&self) -> Result<(), Error> {
        for r in &self.rx {
            r.rxsync();
        }
        Ok(())
    }

    fn ready(&self, want: Interest) -> bool {
        (want.rx && self.rx.iter().any(|r| r.space() > 0))
            || (want.tx && self.tx.iter().any(|r| r.space() > 0))
    }

    /// netmap's `poll()`: syncs, and if nothing is ready sleeps until the switch
    /// delivers (RX) or frees slots (TX), or until `timeout`. Returns whether something
    /// is ready. An error says the daemon went away.
    pub fn poll(&self, want: Interest, timeout: Option<Duration>) -> Result<bool, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.txsync()?;
            self.rxsync()?;
            if self.ready(want) {
                return Ok(true);
            }
            // Ask for a kick, then look again (see vale_abi::sync).
            let rings = self
                .rx
                .iter()
                .filter(|_| want.rx)
                .chain(self.tx.iter().filter(|_| want.tx));
            for r in rings.clone() {
                r.view().csb().app_arm_kick();
            }
            self.txsync()?;
            self.rxsync()?;
            let ready = self.ready(want);
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !ready && left != Some(Duration::ZERO) {
                let mut fds = [
                    PollFd::new(&self.notify, PollFlags::IN),
                    PollFd::new(&self.conn, PollFlags::IN),
                ];
                let ts = left.map(timespec);
                match rustix::event::poll(&mut fds, ts.as_ref()) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(Error::Io("poll", e.into())),
                }
                let gone = fds[1]
                    .revents()
                    .intersects(PollFlags::HUP | PollFlags::IN | PollFlags::ERR);
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&self.notify, &mut b);
                if gone {
                    for r in rings {
                        r.view().csb().app_disarm_kick();
                    }
                    return Err(Error::Disconnected);
                }
            }
            for r in rings {
                r.view().csb().app_disarm_kick();
            }
            if ready {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.rxsync()?;
                return Ok(self.ready(want));
            }
        }
    }

    /// netmap's `nm_inject`: copies `frame` into the next free TX slot(s) (several, with
    /// `NS_MOREFRAG`, if it is larger than a buffer) and advances `head`. Does not sync.
    /// Returns false if no TX ring has room.
    pub fn inject(&self, frame: &[u8]) -> bool {
        let bs = self.region.geometry().buf_size as usize;
        let need = frame.len().div_ceil(bs).max(1) as u32;
        let n = self.tx.len();
        for k in 0..n {
            let i = (self.next_tx.get() + k) % n;
            let ring = &self.tx[i];
            if ring.space() < need {
                continue;
            }
            let v = ring.view();
            let mut h = ring.head();
            let chunks = (0..need as usize)
                .map(|c| &frame[(c * bs).min(frame.len())..((c + 1) * bs).min(frame.len())]);
            for (c, chunk) in chunks.enumerate() {
                let s = v.read_slot(h);
                v.bufs().write(s.buf_idx, chunk);
                let flags = if c + 1 < need as usize {
                    NS_MOREFRAG
                } else {
                    0
                };
                v.write_slot(
                    h,
                    NetmapSlot {
                        buf_idx: s.buf_idx,
                        len: chunk.len() as u16,
                        flags,
                        ptr: 0,
                    },
                );
                h = vale_abi::ring::next(h, ring.num_slots());
            }
            ring.advance(need);
            self.next_tx.set(i);
            return true;
        }
        false
    }

    /// netmap's `nm_dispatch`: hands up to `max` received packets (0 = all) to `f`, whole
    /// (fragments joined), and advances `head` past them. Does not sync. Returns how many.
    pub fn dispatch(&self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut buf = self.scratch.take();
        let mut got = 0;
        let n = self.rx.len();
        for k in 0..n {
            let i = (self.next_rx.get() + k) % n;
            let ring = &self.rx[i];
            let v = ring.view();
            while ring.space() > 0 && (max == 0 || got < max) {
                buf.clear();
                let mut used = 0;
                let mut h = ring.head();
                loop {
                    let s = v.read_slot(h);
                    let start = buf.len();
                    buf.resize(start + s.len as usize, 0);
                    v.bufs().read(s.buf_idx, &mut buf[start..]);
                    used += 1;
                    h = vale_abi::ring::next(h, ring.num_slots());
                    if s.flags & NS_MOREFRAG == 0 || used >= ring.space() {
                        break;
                    }
                }
                ring.advance(used);
                f(&buf);
                got += 1;
            }
            if max != 0 && got >= max {
                self.next_rx.set(i);
                break;
            }
        }
        self.scratch.set(buf);
        got
    }

    /// Closes the port (the daemon removes it with its last client).
    pub fn close(self) {}

    /// The eventfd the switch writes when it delivers to a client that asked to be
    /// woken (armed `appl_need_kick`), for callers that poll it themselves.
    pub fn notify_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.notify.as_fd()
    }

    /// The control connection, for callers that poll it themselves.
    pub fn connection(&self) -> rustix::fd::BorrowedFd<'_> {
        self.conn.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{EventfdFlags, eventfd};
    use rustix::fd::AsFd;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    use vale_abi::layout::LAYOUT_VERSION;

    /// A one-shot daemon on a fresh socket: answers the first `Open` with `Opened`
    /// naming `layout_version`, and the fds a real valed sends.
    fn fake_valed(
        tag: &str,
        layout_version: u32,
    ) -> (std::path::PathBuf, std::thread::JoinHandle<()>) {
        let path = std::env::temp_dir().join(format!("vale-{}-{tag}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::bind(&l, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        rustix::net::listen(&l, 1).unwrap();
        let h = std::thread::spawn(move || {
            let c = rustix::net::accept(&l).unwrap();
            let mut buf = vec![0u8; proto::MAX_MSG];
            let (n, _) = sock::recv(c.as_fd(), &mut buf).unwrap();
            let req: Request = serde_json::from_slice(&buf[..n]).unwrap();
            assert!(matches!(
                req,
                Request::Open {
                    version: proto::VERSION,
                    ..
                }
            ));
            let g = PortGeometry::default();
            let region = Region::create("vale0:a", g).unwrap();
            let kick = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
            let notify = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
            let resp = Response::Opened {
                switch: "vale0".into(),
                port: "vale0:a".into(),
                index: 0,
                geometry: g.into(),
                layout_version,
                extra: None,
                pipe: None,
            };
            let bytes = serde_json::to_vec(&resp).unwrap();
            sock::send(
                c.as_fd(),
                &bytes,
                &[region.fd(), kick.as_fd(), notify.as_fd()],
            )
            .unwrap();
            // Hold the connection until the client is done with it.
            let _ = sock::recv(c.as_fd(), &mut buf);
        });
        (path, h)
    }

    fn open_at(path: &std::path::Path) -> Result<Port, Error> {
        let opts = OpenOptions {
            socket: Some(path.to_path_buf()),
            ..Default::default()
        };
        Port::open_with("vale0:a", &opts)
    }

    #[test]
    fn a_region_in_another_layout_is_refused_with_a_clear_error() {
        let (path, h) = fake_valed("layout1", 1);
        let Err(e) = open_at(&path) else {
            panic!("a region of layout 1 was accepted");
        };
        assert!(
            matches!(
                e,
                Error::LayoutVersion {
                    daemon: 1,
                    library: LAYOUT_VERSION
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("version 1") && msg.contains("version 2"),
            "{msg}"
        );
        assert!(
            msg.contains("sem[]") && msg.contains("same release"),
            "{msg}"
        );
        h.join().unwrap();
        let _ = std::fs::remove_file(&path);

        // The same answer in this library's layout opens the port.
        let (path, h) = fake_valed("layout2", LAYOUT_VERSION);
        let p = open_at(&path).expect("layout 2 accepted");
        assert_eq!(p.name(), "vale0:a");
        drop(p);
        h.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
