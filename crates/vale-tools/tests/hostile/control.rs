//! Garbage on valed's control socket: random bytes, well-framed messages of the wrong
//! shape, truncated requests, an oversize request, descriptors nobody asked for, and
//! over-long names. Each is answered with a clear error (or the connection closed), and
//! valed keeps serving: `vale-ctl list` answers and a bystander pair keeps forwarding.

use super::*;
use rustix::fd::{AsFd, OwnedFd};
use std::mem::MaybeUninit;
use vale::proto::{ErrorKind, MAX_MSG, Request, Response};

const A: [u8; 6] = [2, 0, 0, 0, 0xc7, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0xc7, 0xb];
/// An error reply quoting user input stays this short, whatever the input's size.
const SHORT_REPLY: usize = 1024;

/// Sends `bytes` (with `fds`) as one message and reads the reply, if one comes within
/// five seconds (a loaded machine). `None`: valed closed the connection (or said nothing).
fn exchange(conn: &OwnedFd, bytes: &[u8], fds: &[rustix::fd::BorrowedFd<'_>]) -> Option<Vec<u8>> {
    send_with_fds(conn, bytes, fds).expect("send to valed");
    let mut p = [rustix::event::PollFd::new(
        conn,
        rustix::event::PollFlags::IN,
    )];
    let wait = rustix::event::Timespec {
        tv_sec: 5,
        tv_nsec: 0,
    };
    if rustix::event::poll(&mut p, Some(&wait)).unwrap_or(0) == 0 {
        return None;
    }
    let mut buf = vec![0u8; MAX_MSG];
    match vale::sock::recv(conn.as_fd(), &mut buf) {
        Ok((0, _)) | Err(_) => None,
        Ok((n, _)) => Some(buf[..n].to_vec()),
    }
}

/// `sendmsg` with any number of descriptors (vale::sock::send takes at most 8).
fn send_with_fds(
    conn: &OwnedFd,
    bytes: &[u8],
    fds: &[rustix::fd::BorrowedFd<'_>],
) -> std::io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(64))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(fds)));
    }
    rustix::net::sendmsg(
        conn,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        rustix::net::SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// The error a reply carries; panics on anything else.
fn error_of(reply: &[u8], what: &str) -> (ErrorKind, String) {
    match serde_json::from_slice::<Response>(reply) {
        Ok(Response::Error { kind, message }) => (kind, message),
        other => panic!("{what}: not an error reply: {other:?}"),
    }
}

/// valed answers `vale-ctl list` and forwards a frame from a to b.
fn still_serving(d: &mut Daemon, a: &vale::Port, b: &vale::Port, after: &str) {
    assert!(d.alive(), "valed died after {after}: {}", d.log());
    let o = d.ctl(&["list"]);
    assert!(o.status.success(), "vale-ctl list after {after}: {o:?}");
    send(a, &[frame(B, A, 7)]);
    let got = drain(b, 2.0);
    assert_eq!(got.len(), 1, "the bystanders forward after {after}");
}

fn connect(d: &Daemon) -> OwnedFd {
    vale::sock::connect(&d.socket).unwrap()
}

/// Random messages of random sizes, each answered as malformed.
fn random_bytes(d: &Daemon, rng: &mut Rng) -> usize {
    let conn = connect(d);
    let n = 200;
    for i in 0..n {
        let mut m = vec![0u8; 1 + rng.below(4096) as usize];
        rng.fill(&mut m);
        let r = exchange(&conn, &m, &[]).unwrap_or_else(|| panic!("no answer to garbage {i}"));
        let (kind, msg) = error_of(&r, "random bytes");
        assert_eq!(kind, ErrorKind::BadRequest, "{msg}");
        assert!(msg.contains("malformed request"), "{msg}");
    }
    n
}

/// Well-formed JSON of the wrong shape: unknown ops, wrong field types, missing fields.
fn wrong_types(d: &Daemon) -> usize {
    let conn = connect(d);
    let cases: &[&str] = &[
        r#"{"op":"nope"}"#,
        r#"{"op":123}"#,
        r#"{"op":"open","version":"three","name":5}"#,
        r#"{"op":"open","version":3}"#,
        r#"{"op":"stats","port":["vale0:a"]}"#,
        r#"{"op":"fdb"}"#,
        r#"{"op":"fdb","switch":{"x":1}}"#,
        r#"{"op":"list","page":{"after":7}}"#,
        r#"{"op":"list","page":"all"}"#,
        r#"[1,2,3]"#,
        r#""list""#,
        r#"null"#,
        r#"{"op":"open","version":3,"name":"vale0:q","geometry":{"tx_slots":-1}}"#,
        r#"{"op":"open","version":3,"name":"vale0:q","geometry":{"tx_rings":1e99}}"#,
    ];
    for c in cases {
        let r = exchange(&conn, c.as_bytes(), &[]).unwrap_or_else(|| panic!("no answer to {c}"));
        let (kind, msg) = error_of(&r, c);
        assert_eq!(kind, ErrorKind::BadRequest, "{c}: {msg}");
    }
    // A message of no bytes is a request too (not the end of the connection).
    let r = exchange(&conn, b"", &[]).expect("an answer to an empty message, not a hang-up");
    assert_eq!(error_of(&r, "an empty message").0, ErrorKind::BadRequest);
    // A long value of the wrong type: the error quotes its start and the parser's
    // verdict, not the whole value.
    let long = format!(r#"{{"op":"list","page":"{}"}}"#, "x".repeat(60_000));
    let r = exchange(&conn, long.as_bytes(), &[]).expect("an answer to a long wrong value");
    assert!(r.len() < SHORT_REPLY, "a {}-byte reply", r.len());
    let (kind, msg) = error_of(&r, "a long wrong value");
    assert_eq!(kind, ErrorKind::BadRequest, "{msg}");
    assert!(msg.contains("expected"), "the parser's verdict kept: {msg}");
    cases.len() + 2
}

/// Real requests cut short at every few bytes.
fn truncated(d: &Daemon) -> usize {
    let conn = connect(d);
    let whole = serde_json::to_vec(&Request::Open {
        version: vale::proto::VERSION,
        name: "vale0:t".into(),
        geometry: Default::default(),
        exclusive: false,
    })
    .unwrap();
    let mut n = 0;
    for cut in (0..whole.len()).step_by(3).skip(1) {
        let r = exchange(&conn, &whole[..cut], &[]).expect("an answer to a truncated request");
        let (kind, msg) = error_of(&r, "truncated");
        assert_eq!(kind, ErrorKind::BadRequest, "cut at {cut}: {msg}");
        n += 1;
    }
    n
}

/// A request longer than any valed reads: a clear bad request, not a silent hang-up.
fn oversize(d: &Daemon) -> usize {
    let conn = connect(d);
    // Root may raise its send buffer past the system's limit (SO_SNDBUFFORCE).
    if rustix::net::sockopt::set_socket_send_buffer_size_force(&conn, 4 * MAX_MSG).is_err() {
        skip("the oversize request needs SO_SNDBUFFORCE (root)");
        return 0;
    }
    let name = format!("vale0:{}", "o".repeat(MAX_MSG));
    let req = serde_json::to_vec(&Request::Stats {
        port: Some(name),
        page: None,
    })
    .unwrap();
    let r = exchange(&conn, &req, &[]).expect("an answer to an oversize request, not a hang-up");
    let (kind, msg) = error_of(&r, "oversize");
    assert_eq!(kind, ErrorKind::BadRequest, "{msg}");
    assert!(
        msg.contains("too long") && msg.contains(&MAX_MSG.to_string()),
        "the answer names the limit: {msg}"
    );
    // The connection still serves a sane request.
    let (r, _) = vale::sock::call(&conn, &Request::Settings).unwrap();
    assert!(matches!(r, Response::Settings { .. }), "{r:?}");
    1
}

/// Descriptors a client sends with its requests (valed takes none): closed, the request
/// still answered.
fn unexpected_fds(d: &Daemon) -> usize {
    let conn = connect(d);
    let files: Vec<std::fs::File> = (0..32)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    let req = serde_json::to_vec(&Request::List { page: None }).unwrap();
    // Linux 6.16 and later refuse them at the source (valed turns SO_PASSRIGHTS off):
    // the send fails with EPERM, and the connection goes on serving. A message sent
    // before valed accepted the connection may still carry them: valed closes those.
    let eperm = Some(rustix::io::Errno::PERM.raw_os_error());
    let mut refused = 0;
    let mut ask = |bytes: &[u8], k: usize| -> Option<Vec<u8>> {
        match send_with_fds(&conn, bytes, &fds[..k]) {
            Err(e) if e.raw_os_error() == eperm => {
                refused += 1;
                None
            }
            Err(e) => panic!("send with {k} fds: {e}"),
            Ok(()) => {
                let mut buf = vec![0u8; MAX_MSG];
                let (n, _) = vale::sock::recv(conn.as_fd(), &mut buf).expect("an answer");
                Some(buf[..n].to_vec())
            }
        }
    };
    for k in [1, 8, 9, 32] {
        if let Some(r) = ask(&req, k) {
            let resp: Response = serde_json::from_slice(&r).unwrap();
            assert!(matches!(resp, Response::List { .. }), "{k} fds: {resp:?}");
        }
    }
    // Garbage with descriptors, too.
    if let Some(r) = ask(b"\x00garbage", 5) {
        assert_eq!(error_of(&r, "garbage with fds").0, ErrorKind::BadRequest);
    }
    eprintln!("requests with descriptors refused at the source: {refused} of 5");
    let r = exchange(&conn, &req, &[]).expect("an answer after the descriptors");
    let resp: Response = serde_json::from_slice(&r).unwrap();
    assert!(matches!(resp, Response::List { .. }), "{resp:?}");
    6
}

/// Over-long names in every request that takes one: an error whose reply stays short,
/// quoting the start of the name only.
fn long_names(d: &Daemon) -> usize {
    let conn = connect(d);
    let long = format!("vale0:{}", "n".repeat(200_000));
    let reqs = [
        Request::Open {
            version: vale::proto::VERSION,
            name: long.clone(),
            geometry: Default::default(),
            exclusive: false,
        },
        Request::Stats {
            port: Some(long.clone()),
            page: None,
        },
        Request::Fdb {
            switch: long.clone(),
            page: None,
        },
    ];
    for req in &reqs {
        let bytes = serde_json::to_vec(req).unwrap();
        let r = exchange(&conn, &bytes, &[]).expect("an answer to an over-long name");
        let (kind, msg) = error_of(&r, "long name");
        assert!(
            r.len() < SHORT_REPLY,
            "the reply to a {}-character name is {} bytes: {}...",
            long.len(),
            r.len(),
            &msg[..200.min(msg.len())]
        );
        assert_ne!(kind, ErrorKind::Internal, "{msg}");
        assert!(msg.contains("..."), "the quoted name is cut short: {msg}");
    }
    reqs.len()
}

#[test]
fn garbage_on_the_control_socket_gets_clear_errors_and_valed_keeps_serving() {
    let _one = serialise();
    let mut d = Daemon::start("hostile-control", &[]);
    let (a, b) = (d.open("vale0:a"), d.open("vale0:b"));
    send(&b, &[frame([0xff; 6], B, 0)]);
    drain(&a, 0.5);
    still_serving(&mut d, &a, &b, "the start");
    let before = settled(&d);
    let mut rng = Rng::seeded();
    let seed = rng.seed();
    let mut tried = Vec::new();
    tried.push(("random messages", random_bytes(&d, &mut rng)));
    still_serving(&mut d, &a, &b, "random bytes");
    tried.push(("wrong-type requests", wrong_types(&d)));
    still_serving(&mut d, &a, &b, "wrong types");
    tried.push(("truncated requests", truncated(&d)));
    still_serving(&mut d, &a, &b, "truncated requests");
    tried.push(("oversize requests", oversize(&d)));
    still_serving(&mut d, &a, &b, "an oversize request");
    tried.push(("requests with fds", unexpected_fds(&d)));
    still_serving(&mut d, &a, &b, "unexpected descriptors");
    tried.push(("over-long names", long_names(&d)));
    still_serving(&mut d, &a, &b, "over-long names");
    let after = settled(&d);
    let inputs = tried
        .iter()
        .map(|(w, n)| format!("{n} {w}"))
        .collect::<Vec<_>>()
        .join(", ");
    figure(
        "control garbage",
        &format!("{inputs} (seed {seed:#x})"),
        "bystander frames 7 sent, 7 received",
        before,
        after,
    );
    assert_eq!(
        after.fds, before.fds,
        "every connection and passed descriptor closed"
    );
}

/// A client passes valed a descriptor whose last close blocks: a TCP connection on
/// loopback whose peer never reads (its window and send buffer full) with `SO_LINGER`
/// of 20 s, so closing it waits out the linger. valed refuses such descriptors at the
/// source (`SO_PASSRIGHTS` off, Linux 6.16 and later: the client's send fails with
/// EPERM) and closes any it gets anyway off its control thread, so another client is
/// answered at once (before, the control thread sat in that close for 20 s).
#[test]
fn a_passed_descriptor_whose_close_would_block_stalls_no_other_client() {
    use std::io::Write;
    use std::time::Instant;
    let _one = serialise();
    let d = Daemon::start("hostile-linger", &[]);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_never_read, _) = l.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 65536];
    let mut queued = 0usize;
    for _ in 0..10_000 {
        match s.write(&chunk) {
            Ok(n) => queued += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(queued > 0);
    rustix::net::sockopt::set_socket_linger(&s, Some(Duration::from_secs(20))).unwrap();
    let conn = connect(&d);
    let req = serde_json::to_vec(&Request::List { page: None }).unwrap();
    let refused_at_source = match send_with_fds(&conn, &req, &[s.as_fd()]) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => true,
        Err(e) => panic!("send: {e}"),
    };
    // valed's copy, if it got one, is now the last (if it got none, ours is: no linger).
    if refused_at_source {
        rustix::net::sockopt::set_socket_linger(&s, None).unwrap();
    }
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let o = d.ctl(&["list"]);
    let took = t.elapsed();
    assert!(o.status.success(), "{o:?}");
    assert!(
        took < Duration::from_secs(5),
        "another client waited {took:?} (refused at the source: {refused_at_source})"
    );
    eprintln!(
        "descriptor refused at the source (SO_PASSRIGHTS): {refused_at_source}; vale-ctl list answered in {took:?}"
    );
}
