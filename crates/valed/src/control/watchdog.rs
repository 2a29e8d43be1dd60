//! systemd's watchdog (`WatchdogSec=` in the unit): `WATCHDOG=1` sent at half the
//! interval the manager asked for, and only while valed works. The control thread sends
//! it from its loop, so a control thread that hangs stops it. And it is sent only while
//! every forwarding thread (each lane's and its helpers) goes round its loop: each does
//! so at least once a second however idle, so one whose loop count has not moved for
//! longer than [`Watchdog::stall`] is held up somewhere (a blocking call, a lock, a
//! bug), and its switches with it. It is named in the log and in the unit's status
//! (`systemctl status valed`), and the manager, fed no more, restarts valed once the
//! interval runs out (`Restart=on-failure`). A thread that goes round again is logged
//! too, and feeding resumes.

use crate::lane::Lane;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct Watchdog {
    /// How often it is fed: half the manager's interval.
    every: Duration,
    /// How long a forwarding thread may go without a loop before it counts as stuck:
    /// half the interval, and at least 2 s (over the idle loop's 1 s).
    stall: Duration,
    next: Instant,
    /// Each forwarding thread's loop count, and when it last moved.
    seen: HashMap<String, (u64, Instant)>,
    /// The threads reported stuck, to log each change once.
    stuck: Vec<String>,
}

impl Watchdog {
    /// The watchdog the service manager asked for, if any.
    pub(super) fn from_env() -> Option<Watchdog> {
        let interval = crate::notify::watchdog_interval()?;
        tracing::info!(
            "systemd's watchdog: fed every {:?} while every forwarding thread runs",
            interval / 2
        );
        Some(Watchdog::new(interval))
    }

    fn new(interval: Duration) -> Watchdog {
        Watchdog {
            every: interval / 2,
            stall: (interval / 2).max(Duration::from_secs(2)),
            next: Instant::now(),
            seen: HashMap::new(),
            stuck: Vec::new(),
        }
    }

    /// From the control thread's loop: when due, looks at the forwarding threads and
    /// feeds the manager if none is stuck.
    pub(super) fn tick(&mut self, lanes: &[Arc<Lane>]) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + self.every;
        let beats: Vec<(String, u64)> = lanes
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.beats(i))
            .collect();
        let stuck = self.look(&beats, now);
        if stuck != self.stuck {
            if stuck.is_empty() {
                tracing::warn!(
                    "systemd's watchdog: every forwarding thread runs again ({} had been held up); fed again",
                    self.stuck.join(", ")
                );
                crate::notify::notify_nowait("STATUS=forwarding");
            } else {
                let what = format!(
                    "forwarding thread {} has not gone round its loop for over {} s: its switches are stuck; systemd's watchdog is no longer fed",
                    stuck.join(", "),
                    self.stall.as_secs()
                );
                tracing::error!("{what}");
                crate::notify::notify_nowait(&format!("STATUS={what}"));
            }
            self.stuck = stuck;
        }
        if self.stuck.is_empty() {
            crate::notify::notify_nowait("WATCHDOG=1");
        }
    }

    /// The threads of `beats` (name, loop count) whose count has not moved for longer
    /// than `stall` as of `now`; threads no longer running are forgotten.
    fn look(&mut self, beats: &[(String, u64)], now: Instant) -> Vec<String> {
        self.seen
            .retain(|name, _| beats.iter().any(|(n, _)| n == name));
        let mut stuck = Vec::new();
        for (name, n) in beats {
            let e = self.seen.entry(name.clone()).or_insert((*n, now));
            if e.0 != *n {
                *e = (*n, now);
            } else if now.duration_since(e.1) > self.stall {
                stuck.push(name.clone());
            }
        }
        stuck.sort();
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_whose_loop_count_stays_put_past_the_stall_limit_is_stuck() {
        let mut w = Watchdog::new(Duration::from_secs(1));
        assert_eq!(w.stall, Duration::from_secs(2), "at least 2 s");
        assert_eq!(
            Watchdog::new(Duration::from_secs(30)).stall,
            Duration::from_secs(15)
        );
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let b = |a: u64, h: u64| vec![("vale-fwd0".to_string(), a), ("vale-fwd0.1".to_string(), h)];
        assert!(w.look(&b(5, 7), at(0.0)).is_empty());
        assert!(w.look(&b(5, 7), at(1.9)).is_empty(), "within the limit");
        assert!(
            w.look(&b(6, 7), at(2.1)) == ["vale-fwd0.1"],
            "only the one that stayed put"
        );
        assert_eq!(w.look(&b(6, 7), at(4.2)), ["vale-fwd0", "vale-fwd0.1"]);
        assert!(w.look(&b(7, 8), at(4.3)).is_empty(), "both moved again");
        // A helper that went away is not waited for.
        assert!(w.look(&b(7, 8)[..1], at(9.0)).len() == 1);
        assert_eq!(w.seen.len(), 1);
    }
}
