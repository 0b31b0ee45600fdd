//! When the relay's periodic work is due: session expiry every cleanup interval, pings
//! and heartbeat timeouts every ping interval, and, after the relay itself stood still,
//! a ping interval's wait before anyone is judged silent. Time is passed in.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::Millis;

/// What a tick found due.
pub(crate) struct Due {
    pub cleanup: bool,
    pub heartbeat: bool,
}

#[derive(Default)]
pub(crate) struct Timers {
    next_cleanup: AtomicU64,
    next_heartbeat: AtomicU64,
    /// When `tick` last ran; 0 before it first did.
    last_tick: AtomicU64,
    /// No connection is judged silent before this: after the relay itself stood still,
    /// what its clients sent meanwhile must be read first.
    judge_silence_after: AtomicU64,
}

/// How often each piece of periodic work runs, and when ticks further apart than
/// `stall_ms` mean the relay stood still.
pub(crate) struct Intervals {
    pub cleanup_ms: u64,
    pub ping_ms: u64,
    pub stall_ms: u64,
}

impl Timers {
    /// Notes a tick at `now`, and says what is due then.
    pub fn tick(&self, now: Millis, intervals: &Intervals) -> Due {
        let previous = self.last_tick.swap(now, Ordering::Relaxed);
        if previous != 0 && now.saturating_sub(previous) > intervals.stall_ms {
            // The relay was not running (the process was stopped, or starved of CPU):
            // every client looks silent, though its pongs may wait unread in a socket.
            // Give the transports a ping interval to read them before judging anyone.
            self.judge_silence_after.store(now.saturating_add(intervals.ping_ms), Ordering::Relaxed);
        }
        Due { cleanup: Self::due(&self.next_cleanup, now, intervals.cleanup_ms), heartbeat: Self::due(&self.next_heartbeat, now, intervals.ping_ms) }
    }

    fn due(next: &AtomicU64, now: Millis, every: u64) -> bool {
        if now < next.load(Ordering::Relaxed) {
            return false;
        }
        next.store(now + every, Ordering::Relaxed);
        true
    }

    /// Whether a silent connection may be judged at `now`.
    pub fn judging_silence(&self, now: Millis) -> bool {
        now >= self.judge_silence_after.load(Ordering::Relaxed)
    }
}
