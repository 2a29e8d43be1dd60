//! `-R`: pacing that sleeps. The sender wakes at absolute deadlines on the monotonic
//! clock (`clock_nanosleep` with `TIMER_ABSTIME`, so a late wake-up does not push every
//! later one back) and sends one batch per wake, sized from the rate. It never spins: on
//! a small machine a spinning sender takes the CPU that the switch and a receiver
//! sleeping in poll() need to follow the rate, and the receiver's ring overflows.

use rustix::thread::{ClockId, clock_nanosleep_absolute};
use rustix::time::{Timespec, clock_gettime};

/// Time between wakes at rates high enough to need more than one frame per wake.
pub const TICK_NS: u64 = 250_000;
/// A sender this far behind its schedule (descheduled, or the receiver's ring was full)
/// forgets the debt instead of catching up in one long burst that no receiver could
/// follow (netmap's pacing does the same).
pub const MAX_DEBT_NS: u64 = 1_000_000;

#[derive(Debug)]
pub struct Pacer {
    rate: u64,
    /// Frames per wake.
    batch: u64,
    /// The schedule: frames owed by `origin + owed * 1e9 / rate` ns.
    origin: u64,
    owed: u64,
}

impl Pacer {
    /// A pacer for `rate` frames per second (> 0), at most `max_batch` per wake, starting
    /// at `now` (ns on the monotonic clock).
    pub fn new(rate: u64, max_batch: u64, now: u64) -> Pacer {
        let batch = (rate.saturating_mul(TICK_NS) / 1_000_000_000).clamp(1, max_batch.max(1));
        Pacer {
            rate,
            batch,
            origin: now,
            owed: 0,
        }
    }

    pub fn batch(&self) -> u64 {
        self.batch
    }

    /// When the next batch is due (ns on the monotonic clock).
    pub fn due(&self) -> u64 {
        self.origin + ((self.owed as u128 * 1_000_000_000) / self.rate as u128) as u64
    }

    /// How many frames may go at `now`: 0 before the next deadline, else up to a batch.
    /// A schedule more than [`MAX_DEBT_NS`] behind restarts at `now`.
    pub fn allowance(&mut self, now: u64) -> u64 {
        let due = self.due();
        if now < due {
            return 0;
        }
        if now - due > MAX_DEBT_NS {
            self.origin = now;
            self.owed = 0;
        }
        self.batch
    }

    /// `n` frames went out.
    pub fn sent(&mut self, n: u64) {
        self.owed += n;
    }
}

/// The monotonic clock in ns.
pub fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Sleeps until `deadline` (ns on the monotonic clock), or returns at once if it passed.
/// A signal ends the sleep early: the caller's loop checks its stop flag and sleeps again.
pub fn sleep_until(deadline: u64) {
    let ts = Timespec {
        tv_sec: (deadline / 1_000_000_000) as i64,
        tv_nsec: (deadline % 1_000_000_000) as i64,
    };
    let _ = clock_nanosleep_absolute(ClockId::Monotonic, &ts);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_the_rate() {
        assert_eq!(Pacer::new(500_000, 512, 0).batch(), 125);
        assert_eq!(Pacer::new(1_000_000, 512, 0).batch(), 250);
        assert_eq!(Pacer::new(100_000_000, 512, 0).batch(), 512, "capped by -b");
        assert_eq!(
            Pacer::new(1000, 512, 0).batch(),
            1,
            "slow rates: one frame per wake"
        );
    }

    #[test]
    fn deadlines_are_absolute() {
        let mut p = Pacer::new(500_000, 512, 1_000);
        assert_eq!(p.allowance(1_000), 125);
        p.sent(125);
        assert_eq!(p.due(), 1_000 + 250_000);
        assert_eq!(p.allowance(1_000 + 249_999), 0, "not yet");
        // A wake-up 100 us late: the next deadline does not move with it.
        assert_eq!(p.allowance(1_000 + 350_000), 125);
        p.sent(125);
        assert_eq!(p.due(), 1_000 + 500_000);
    }

    #[test]
    fn a_long_stall_forgets_its_debt() {
        let mut p = Pacer::new(1_000, 512, 0);
        p.sent(1);
        let late = p.due() + MAX_DEBT_NS + 1;
        assert_eq!(p.allowance(late), 1);
        p.sent(1);
        assert_eq!(
            p.due(),
            late + 1_000_000,
            "the schedule restarted at the stall's end"
        );
    }

    #[test]
    fn a_short_stall_is_caught_up_one_batch_per_wake() {
        let mut p = Pacer::new(1_000_000, 512, 0);
        let now = 999_999; // just under 1 ms late: 4 batches owed
        for _ in 0..4 {
            assert_eq!(p.allowance(now), 250);
            p.sent(250);
        }
        assert_eq!(p.allowance(now), 0, "caught up");
    }
}
