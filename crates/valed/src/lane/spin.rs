//! How long the forwarding thread polls an idle switch before it sleeps: adaptive, as
//! KVM's halt polling is. Polling pays when the next packet comes within the budget
//! (no kick, no wake-up); when packets come in sparse batches further apart than the
//! budget, every poll is wasted CPU that a sleeping client on the same machine needed
//! (on 2 vCPUs a paced sender, the switch and a receiver sleeping in poll() share two
//! cores, and the receiver's ring overflowed while the switch spun). So the budget
//! shrinks after each sleep that outlasted the configured maximum and grows back after
//! each one that a longer poll would have avoided.

use std::time::{Duration, Instant};

/// The smallest budget a grow starts from (below it, halving goes straight to 0).
const MIN: Duration = Duration::from_micros(10);

#[derive(Debug, Clone, Copy)]
pub struct Spin {
    max: Duration,
    budget: Duration,
}

impl Spin {
    /// Starts at the configured maximum (`--busy-poll-us`).
    pub fn new(max: Duration) -> Spin {
        Spin { max, budget: max }
    }

    /// How long to poll after the last packet before sleeping.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The thread slept and woke `idle` after its last packet (poll and sleep together).
    pub fn slept(&mut self, idle: Duration) {
        if idle > self.max {
            // Nothing within the longest allowed poll: polling would have been wasted.
            self.budget /= 2;
            if self.budget < MIN {
                self.budget = Duration::ZERO;
            }
        } else {
            // A poll of at most `max` would have caught it.
            self.budget = (self.budget * 2).max(MIN).min(self.max);
        }
    }
}

/// Empty passes since the last packet, as both kinds of forwarding thread count them:
/// the clock is read only every 64th empty pass (a pass over idle rings costs tens of
/// nanoseconds, a precise clock read about as much), and at each such read the thread
/// yields, so that a client woken on its CPU (by a notify just sent) runs now rather
/// than at the scheduler's next preemption.
#[derive(Debug, Default)]
pub struct Idle {
    since: Option<Instant>,
    passes: u32,
}

impl Idle {
    /// A pass moved packets, or the thread woke from a sleep: counting starts again.
    pub fn reset(&mut self) {
        self.since = None;
        self.passes = 0;
    }

    /// After an empty pass: `Some(since)` (the first empty pass's time) once the thread
    /// has polled for `budget` without a packet and should go to sleep; `None` to poll on.
    pub fn empty_pass(&mut self, budget: Duration) -> Option<Instant> {
        self.passes = self.passes.wrapping_add(1);
        if self.passes % 64 != 0 {
            std::hint::spin_loop();
            return None;
        }
        std::thread::yield_now();
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() < budget {
            std::hint::spin_loop();
            return None;
        }
        Some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(200);

    #[test]
    fn idle_sleeps_only_after_the_budget() {
        let mut idle = Idle::default();
        // 63 empty passes never read the clock; with no budget the 64th says sleep.
        for _ in 0..63 {
            assert!(idle.empty_pass(Duration::ZERO).is_none());
        }
        let since = idle
            .empty_pass(Duration::ZERO)
            .expect("the 64th pass sleeps");
        // A long budget keeps it polling, counted from the same first idle instant.
        idle.passes = 0;
        for _ in 0..640 {
            assert!(idle.empty_pass(Duration::from_secs(60)).is_none());
        }
        assert_eq!(idle.since, Some(since));
        idle.reset();
        assert!(idle.since.is_none() && idle.passes == 0);
    }

    #[test]
    fn sparse_batches_stop_the_polling() {
        let mut s = Spin::new(MAX);
        assert_eq!(s.budget(), MAX);
        // A paced sender: a batch every 250 us, longer than the 200 us maximum.
        for _ in 0..5 {
            s.slept(Duration::from_micros(250));
        }
        assert_eq!(s.budget(), Duration::ZERO);
    }

    #[test]
    fn close_gaps_bring_it_back() {
        let mut s = Spin::new(MAX);
        for _ in 0..10 {
            s.slept(Duration::from_millis(5));
        }
        assert_eq!(s.budget(), Duration::ZERO);
        let mut steps = 0;
        while s.budget() < MAX {
            s.slept(Duration::from_micros(30));
            steps += 1;
        }
        assert_eq!(s.budget(), MAX, "never above the maximum");
        assert!(steps <= 6, "{steps} sleeps to grow back");
    }

    #[test]
    fn zero_means_never_poll() {
        let mut s = Spin::new(Duration::ZERO);
        s.slept(Duration::ZERO);
        assert_eq!(s.budget(), Duration::ZERO);
        s.slept(Duration::from_micros(1));
        assert_eq!(s.budget(), Duration::ZERO);
    }
}
