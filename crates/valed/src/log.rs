//! Logs fit for journald: one line per event, and no timestamps of our own when
//! stderr is the journal (it stamps every line itself). The binary wires these into
//! its tracing subscriber.

use std::io::Write;

/// A writer that keeps each event on one line: a newline inside what it is given (a
/// message quoting multi-line text) is written as `\n`; only the last one ends the
/// line. The tracing formatter hands it one whole event per write.
pub struct OneLine<W: Write>(pub W);

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.contains(&b'\n') {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(buf.len() + 8);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                b => line.push(b),
            }
        }
        line.push(b'\n');
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM` to the
/// `DEVICE:INODE` of the stream it gives the service (systemd.exec(5)); a stderr
/// redirected elsewhere since has another.
pub fn stderr_is_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM")
        .is_some_and(|v| is_stream(&v.to_string_lossy(), std::io::stderr()))
}

/// Whether `fd` is the stream `DEVICE:INODE` names.
fn is_stream(var: &str, fd: impl std::os::fd::AsFd) -> bool {
    let Some((dev, ino)) = var.split_once(':') else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(fd) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_with_newlines_stays_one_line() {
        let mut w = OneLine(Vec::new());
        w.write_all(b"INFO plain\n").unwrap();
        w.write_all(b"WARN two\nlines\r\n").unwrap();
        assert_eq!(w.0, b"INFO plain\nWARN two\\nlines\\r\n");
    }

    #[test]
    fn the_journal_is_recognised_by_device_and_inode() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let st = rustix::fs::fstat(&a).unwrap();
        let var = format!("{}:{}", st.st_dev, st.st_ino);
        assert!(is_stream(&var, &a));
        assert!(
            !is_stream(&var, &b),
            "another stream (stderr redirected since)"
        );
        assert!(!is_stream("", &a) && !is_stream("8:x", &a));
    }
}
