//! valed as a memif client (`vale-ctl memif --client`), for servers such as VPP or
//! `dpdk-testpmd --vdev=net_memif0,role=server`: one thread per port dials the server's
//! socket, runs the client's side of the handshake with valed's own region ([`Own`]),
//! hands the connection to the port's forwarding thread, and dials again when the server
//! goes or is not there yet, every [`RETRY`] (VPP's client retries every 3 s; DPDK's
//! never does).
//!
//! The server is trusted no more than a client is: its messages are judged (version,
//! ring size, order), a refusal's reason is logged and shown in `vale-ctl list`, and a
//! handshake that does not finish within [`HANDSHAKE`] is given up.

use super::own::{Geometry, Offered, Own};
use super::server::{PeerInfo, Slot, SocketKey};
use rustix::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vale_wire::memif::{
    AddRegion, AddRing, FixedStr, Hello, Init, MODE_ETHERNET, MSG_LEN, Msg, RING_FLAG_C2S,
    SECRET_LEN, VERSION,
};

/// How long valed waits before dialing again.
pub const RETRY: Duration = Duration::from_secs(1);
/// How long a server may take to answer the whole handshake.
pub const HANDSHAKE: Duration = Duration::from_secs(5);
/// valed's ring size and buffer size when the server allows them: DPDK's defaults
/// (1024 slots of 2048 bytes).
pub const WANT: Geometry = Geometry {
    log2: 10,
    bsize: 2048,
};

/// The geometry valed uses with a server that said `hello`, or why it cannot talk to it.
pub fn plan(hello: &Hello, want: Geometry) -> Result<Geometry, String> {
    if !(hello.min_version..=hello.max_version).contains(&VERSION) {
        return Err(format!(
            "the server speaks memif {}.{} to {}.{}, valed 2.0",
            hello.min_version >> 8,
            hello.min_version & 0xff,
            hello.max_version >> 8,
            hello.max_version & 0xff
        ));
    }
    if hello.max_log2_ring_size == 0 {
        return Err("the server allows no ring of more than one slot".into());
    }
    Ok(Geometry {
        log2: want.log2.min(hello.max_log2_ring_size),
        ..want
    })
}

/// What valed sends after HELLO, in order: INIT, ADD_REGION (with the region's memfd),
/// ADD_RING C2S and S2C (each with its eventfd), CONNECT.
pub fn requests(id: u32, secret: &FixedStr<SECRET_LEN>, geo: Geometry) -> [Msg; 5] {
    let ring = |c2s: bool| {
        Msg::AddRing(AddRing {
            flags: if c2s { RING_FLAG_C2S } else { 0 },
            index: 0,
            region: 0,
            offset: geo.ring_offset(c2s) as u32,
            log2_size: geo.log2,
            private_hdr_size: 0,
        })
    };
    [
        Msg::Init(Init {
            version: VERSION,
            id,
            mode: MODE_ETHERNET,
            secret: secret.clone(),
            name: FixedStr::new(b"valed"),
        }),
        Msg::AddRegion(AddRegion {
            index: 0,
            size: geo.region_len() as u64,
        }),
        ring(true),
        ring(false),
        Msg::Connect {
            if_name: FixedStr::new(format!("vale{id}").as_bytes()),
        },
    ]
}

/// The thread dialing for one port; dropping it disconnects from the server and stops
/// the thread, at once even in a handshake (every wait of the thread also watches
/// `wake`).
pub struct Dialer {
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Dialer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts dialing `key` for interface `id`, as port `slot`.
pub fn start(key: SocketKey, id: u32, slot: Arc<Slot<Own>>) -> Result<Dialer, String> {
    let wake = Arc::new(
        rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|e| format!("eventfd: {e}"))?,
    );
    slot.set_wake(wake.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let (s, w) = (stop.clone(), wake.clone());
    let thread = std::thread::Builder::new()
        .name("vale-memif-c".into())
        .spawn(move || run(&key, id, &slot, &s, &w))
        .map_err(|e| format!("thread: {e}"))?;
    Ok(Dialer {
        stop,
        wake,
        thread: Some(thread),
    })
}

/// What stops a dialing thread: the flag [`Dialer`]'s drop sets, and the eventfd it
/// writes so that any wait of the thread ends at once (a port is removed on the control
/// thread, which must not wait out a handshake).
#[derive(Clone, Copy)]
struct Stop<'a> {
    flag: &'a AtomicBool,
    wake: &'a OwnedFd,
}

impl Stop<'_> {
    fn stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Waits up to `ms` for `fd` to become readable or for the thread to be woken (the
    /// wake-up is cleared: the caller looks at `stopped` and the slot after).
    fn wait(&self, fd: &OwnedFd, ms: i32) {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let ts = Timespec {
            tv_sec: (ms / 1000).into(),
            tv_nsec: ((ms % 1000) * 1_000_000).into(),
        };
        let mut p = [
            PollFd::new(fd, PollFlags::IN),
            PollFd::new(self.wake, PollFlags::IN),
        ];
        if rustix::event::poll(&mut p, Some(&ts)).is_ok() && !p[1].revents().is_empty() {
            let mut b = [0u8; 8];
            let _ = rustix::io::read(self.wake, &mut b);
        }
    }
}

/// Why a session ended when the port was removed in it (never shown).
const STOPPED: &str = "the port was removed";

fn run(key: &SocketKey, id: u32, slot: &Slot<Own>, stop: &AtomicBool, wake: &OwnedFd) {
    let stop = Stop { flag: stop, wake };
    let mut last: Option<String> = None;
    while !stop.stopped() {
        let r = dial(key).and_then(|fd| session(key, id, slot, fd, stop));
        match r {
            Ok(()) => last = None,
            Err(_) if stop.stopped() => break,
            Err(why) => {
                if last.as_deref() != Some(why.as_str()) {
                    tracing::warn!(port = %slot.port, socket = %key, "memif: {why}; trying again every {} s", RETRY.as_secs());
                }
                slot.set_note(Some(why.clone()));
                last = Some(why);
            }
        }
        if !stop.stopped() {
            wait(wake, RETRY);
        }
    }
}

/// Waits up to `d` for `wake`, and clears it.
fn wait(wake: &OwnedFd, d: Duration) {
    crate::sys::readable_within(wake.as_fd(), d.as_millis() as i32);
    let mut b = [0u8; 8];
    let _ = rustix::io::read(wake, &mut b);
}

fn dial(key: &SocketKey) -> Result<OwnedFd, String> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr = if key.abstract_name {
        SocketAddrUnix::new_abstract_name(key.path.as_bytes())
    } else {
        SocketAddrUnix::new(key.path.as_str())
    }
    .map_err(|e| format!("bad socket address: {e}"))?;
    rustix::net::connect(&fd, &addr).map_err(|e| format!("cannot connect to {key}: {e}"))?;
    Ok(fd)
}

/// What the server sent next, waiting until `until` (`None`: nothing by then), or
/// until the port is removed (`Err(STOPPED)`).
fn next(fd: &OwnedFd, until: Instant, stop: Stop<'_>) -> Result<Option<Msg>, String> {
    let mut buf = [0u8; 2 * MSG_LEN];
    let mut reset = false;
    loop {
        match vale::sock::recv(fd.as_fd(), &mut buf) {
            Ok((0, _)) => return Err("the server closed the connection".into()),
            // Descriptors a server sends are dropped with `_fds`.
            Ok((n, _fds)) => {
                return Msg::decode(&buf[..n])
                    .map(Some)
                    .map_err(|e| format!("from the server: {e}"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A server that closes with valed's messages unread makes the kernel report
            // a reset once, before the messages it sent last (its DISCONNECT): read on.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !reset => {
                reset = true;
                continue;
            }
            Err(e) => return Err(format!("from the server: {e}")),
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        if stop.stopped() {
            return Err(STOPPED.into());
        }
        stop.wait(fd, left.as_millis() as i32 + 1);
    }
}

/// The next message of the handshake.
fn reply(fd: &OwnedFd, until: Instant, stop: Stop<'_>) -> Result<Msg, String> {
    next(fd, until, stop)?.ok_or_else(|| {
        format!(
            "the server did not finish the handshake within {} s",
            HANDSHAKE.as_secs()
        )
    })
}

fn refused(reason: String) -> String {
    format!("the server refused: {reason}")
}

/// The reason of a DISCONNECT the server left queued before it closed, if it did (read
/// without waiting, past the ACKs it may have sent first).
fn refusal(fd: &OwnedFd, stop: Stop<'_>) -> Option<String> {
    for _ in 0..16 {
        match next(fd, Instant::now(), stop) {
            Ok(Some(Msg::Disconnect { reason, .. })) => {
                return Some(refused(reason.to_string_lossy()));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
    None
}

fn send(fd: &OwnedFd, m: &Msg, with: Option<&OwnedFd>) -> Result<(), String> {
    let fds: Vec<_> = with.iter().map(|f| f.as_fd()).collect();
    vale::sock::send(fd.as_fd(), &m.encode(), &fds)
        .map_err(|e| format!("sending to the server: {e}"))
}

/// One connection: the handshake, then watching it until it ends. `Ok` once it had been
/// connected (whatever ended it is logged here), `Err` with why it never was.
fn session(
    key: &SocketKey,
    id: u32,
    slot: &Slot<Own>,
    fd: OwnedFd,
    stop: Stop<'_>,
) -> Result<(), String> {
    let until = Instant::now() + HANDSHAKE;
    let hello = match reply(&fd, until, stop)? {
        Msg::Hello(h) => h,
        Msg::Disconnect { reason, .. } => return Err(refused(reason.to_string_lossy())),
        m => {
            return Err(format!(
                "the server sent message type {} before HELLO",
                m.kind()
            ));
        }
    };
    let geo = plan(&hello, WANT).inspect_err(|why| {
        let _ = send(&fd, &Msg::disconnect(why), None);
    })?;
    let (mut own, offered) =
        Own::create(geo, &slot.notifiers).map_err(|e| format!("memory: {e}"))?;
    let Offered {
        region,
        c2s_kick,
        s2c_kick,
    } = &offered;
    let with = [None, Some(region), Some(c2s_kick), Some(s2c_kick), None];
    for (m, f) in requests(id, slot.secret(), geo).iter().zip(with) {
        // A server that refuses (a wrong id or secret) says why and closes: sending
        // the rest fails (EPIPE), and what matters is what it said.
        send(&fd, m, f).map_err(|why| refusal(&fd, stop).unwrap_or(why))?;
    }
    let if_name = loop {
        match reply(&fd, until, stop)? {
            Msg::Ack => {}
            Msg::Connected { if_name } => break if_name.to_string_lossy(),
            Msg::Disconnect { reason, .. } => return Err(refused(reason.to_string_lossy())),
            m => {
                let why = format!(
                    "the server sent message type {} during the handshake",
                    m.kind()
                );
                let _ = send(&fd, &Msg::disconnect(&why), None);
                return Err(why);
            }
        }
    };
    drop(offered);
    own.start().map_err(|e| format!("valed's own ring: {e}"))?;
    let slots = u32::from(geo.slots());
    let peer = PeerInfo {
        app: hello.name.to_string_lossy(),
        if_name,
        c2s: (1, slots),
        s2c: (1, slots),
    };
    tracing::info!(port = %slot.port, socket = %key, server = %peer.app, interface = %peer.if_name, slots, "memif connected to a server");
    slot.set_note(None);
    slot.connect(own, peer);
    let end = watch(&fd, slot, stop);
    match &end {
        End::Deleted => {
            let _ = send(&fd, &Msg::disconnect("interface deleted"), None);
        }
        End::Broken(why) => {
            tracing::warn!(port = %slot.port, "memif: disconnecting from the server: {why}");
            let _ = send(&fd, &Msg::disconnect(why), None);
        }
        End::Gone(why) => {
            tracing::info!(port = %slot.port, socket = %key, "memif server gone: {why}")
        }
    }
    // valed removing the port is not the server going.
    slot.release(!matches!(end, End::Deleted));
    if let End::Gone(why) | End::Broken(why) = end {
        slot.set_note(Some(why));
    }
    Ok(())
}

enum End {
    /// The port is being removed.
    Deleted,
    /// The forwarding thread found the rings broken, or the server misbehaved.
    Broken(String),
    /// The server hung up or said DISCONNECT.
    Gone(String),
}

/// Waits while connected: for the server to go, the port to be removed, or its rings to
/// break.
fn watch(fd: &OwnedFd, slot: &Slot<Own>, stop: Stop<'_>) -> End {
    loop {
        if stop.stopped() {
            return End::Deleted;
        }
        if let Some(why) = slot.take_broken() {
            return End::Broken(why);
        }
        stop.wait(fd, 1000);
        match next(fd, Instant::now(), stop) {
            Ok(Some(Msg::Disconnect { reason, .. })) => {
                return End::Gone(format!("it disconnected: {}", reason.to_string_lossy()));
            }
            Ok(Some(m)) => {
                return End::Broken(format!(
                    "the server sent message type {} after CONNECTED",
                    m.kind()
                ));
            }
            Ok(None) => {}
            Err(e) => return End::Gone(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::PortCounters;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};

    /// A memif server's side of the handshake, run by the test on the next connection
    /// the dialer makes to `listener`: the connection, once valed is connected.
    fn serve(listener: &OwnedFd) -> OwnedFd {
        assert!(
            crate::sys::readable_within(listener.as_fd(), 5000),
            "dialed"
        );
        let fd = rustix::net::accept(listener).unwrap();
        let send = |m: &Msg| vale::sock::send(fd.as_fd(), &m.encode(), &[]).unwrap();
        send(&Msg::Hello(hello(VERSION, VERSION, 10)));
        let mut b = [0u8; 2 * MSG_LEN];
        for _ in 0..4 {
            vale::sock::recv(fd.as_fd(), &mut b).unwrap();
            send(&Msg::Ack);
        }
        let (n, _) = vale::sock::recv(fd.as_fd(), &mut b).unwrap();
        assert!(matches!(Msg::decode(&b[..n]), Ok(Msg::Connect { .. })));
        send(&Msg::Connected {
            if_name: FixedStr::new(b"memif0"),
        });
        fd
    }

    /// valed removing a client port is no peer disconnect; the server hanging up is.
    #[test]
    fn only_the_server_going_counts_as_a_peer_disconnect() {
        let dir = std::env::temp_dir().join(format!("valed-memif-c-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.sock").to_string_lossy().into_owned();
        let listener =
            rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        rustix::net::bind(&listener, &SocketAddrUnix::new(path.as_str()).unwrap()).unwrap();
        rustix::net::listen(&listener, 4).unwrap();
        let key = SocketKey {
            path: path.clone(),
            abstract_name: false,
        };
        let counters = Arc::new(PortCounters::default());
        let waker = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        let slot: Arc<Slot<Own>> = Slot::new(
            "vale0:m",
            "",
            false,
            counters.clone(),
            crate::port::Waker(Arc::new(waker)),
        );
        let disconnects = || counters.peer_disconnects.load(Ordering::Relaxed);
        let connected = |s: &Slot<Own>| {
            let t = Instant::now();
            while s.peer().is_none() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            s.peer().is_some()
        };
        let dialer = start(key.clone(), 1, slot.clone()).unwrap();
        let conn = serve(&listener);
        assert!(connected(&slot));
        drop(dialer);
        assert!(slot.peer().is_none());
        assert_eq!(disconnects(), 0, "removing the port");
        drop(conn);
        // Connected again, and the server goes.
        let dialer = start(key, 1, slot.clone()).unwrap();
        let conn = serve(&listener);
        assert!(connected(&slot));
        drop(conn);
        let t = Instant::now();
        while disconnects() == 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(disconnects(), 1, "the server hung up");
        drop(dialer);
        assert_eq!(disconnects(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn hello(min: u16, max: u16, log2: u8) -> Hello {
        Hello {
            name: FixedStr::new(b"DPDK 22.11.11"),
            min_version: min,
            max_version: max,
            max_region: 255,
            max_c2s_ring: 255,
            max_s2c_ring: 255,
            max_log2_ring_size: log2,
        }
    }

    #[test]
    fn valed_takes_the_smaller_ring_and_refuses_other_versions() {
        assert_eq!(plan(&hello(VERSION, VERSION, 14), WANT), Ok(WANT));
        assert_eq!(
            plan(&hello(VERSION, VERSION, 6), WANT).map(|g| g.log2),
            Ok(6)
        );
        let e = plan(&hello(0x0100, 0x0100, 14), WANT).unwrap_err();
        assert_eq!(e, "the server speaks memif 1.0 to 1.0, valed 2.0");
        assert!(plan(&hello(VERSION, VERSION, 0), WANT).is_err());
    }

    #[test]
    fn the_requests_name_the_id_the_secret_and_where_the_rings_are() {
        let geo = Geometry {
            log2: 4,
            bsize: 256,
        };
        let m = requests(7, &FixedStr::new(b"abc"), geo);
        let Msg::Init(i) = &m[0] else { panic!() };
        assert_eq!((i.id, i.version, i.mode), (7, VERSION, MODE_ETHERNET));
        assert_eq!(i.secret.as_bytes(), b"abc");
        assert_eq!(
            m[1],
            Msg::AddRegion(AddRegion {
                index: 0,
                size: geo.region_len() as u64
            })
        );
        let (Msg::AddRing(c), Msg::AddRing(s)) = (&m[2], &m[3]) else {
            panic!()
        };
        assert!(c.is_c2s() && !s.is_c2s());
        assert_eq!((c.offset, s.offset, s.log2_size), (0, 128 + 16 * 16, 4));
        assert!(matches!(m[4], Msg::Connect { .. }));
        // Each encodes to memif's 128 bytes and back.
        for x in &m {
            assert_eq!(&Msg::decode(&x.encode()).unwrap(), x);
        }
    }
}
