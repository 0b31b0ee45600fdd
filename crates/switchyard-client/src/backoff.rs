//! When to try to reconnect: exponential backoff with jitter, and which close codes are
//! worth retrying at all.

use serde::Deserialize;

/// Reconnection settings, as `{ reconnect: { ... } }` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Backoff {
    /// Delay before the first attempt.
    pub initial_delay_ms: f64,
    /// No delay is longer.
    pub max_delay_ms: f64,
    /// Attempts in a row before giving up; `Infinity` never gives up.
    pub max_attempts: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial_delay_ms: 1000.0, max_delay_ms: 30_000.0, max_attempts: 10.0 }
    }
}

impl Backoff {
    /// What is wrong with these settings, if anything.
    pub fn check(&self) -> Result<(), String> {
        let positive = |v: f64| v.is_finite() && v >= 0.0;
        if !positive(self.initial_delay_ms) || !positive(self.max_delay_ms) {
            return Err("reconnect delays must be finite numbers of milliseconds, 0 or more".into());
        }
        if self.max_delay_ms < self.initial_delay_ms {
            return Err("reconnect.maxDelayMs must be at least reconnect.initialDelayMs".into());
        }
        if self.max_attempts.is_nan() || self.max_attempts < 0.0 {
            return Err("reconnect.maxAttempts must be 0 or more (Infinity for no limit)".into());
        }
        Ok(())
    }

    /// The delay before attempt `attempt` (0 for the first after a disconnect), or `None`
    /// when attempts are exhausted. `jitter` in [0, 1) picks the delay within the upper
    /// half of the exponential step ("equal jitter"), so clients that lost the same
    /// server do not all come back at once.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Option<f64> {
        if f64::from(attempt) >= self.max_attempts {
            return None;
        }
        let step = (self.initial_delay_ms * 2f64.powi(attempt.min(52) as i32)).min(self.max_delay_ms);
        Some(step / 2.0 + step / 2.0 * jitter.clamp(0.0, 1.0))
    }
}

/// The reason the server gives when it closes (1008) a connection whose token expired
/// unrefreshed.
pub const TOKEN_EXPIRED: &str = "Token expired";

/// Whether a connection closed with `code` and `reason` should be retried. 1000 (the
/// session was deleted or expired, or the client closed) and 1008 (session not found or
/// full, unauthorized, a limit) cannot be helped by trying again, except 1008 "Token
/// expired" when the client can get a fresh token (`fresh_tokens`). 1001 is retried:
/// servers send it when they shut down, most often to restart; and a heartbeat timeout
/// (also 1001) or a dropped connection (1006) are network trouble.
pub fn reconnects_after(code: u16, reason: &str, fresh_tokens: bool) -> bool {
    match code {
        1000 => false,
        1008 => fresh_tokens && reason == TOKEN_EXPIRED,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_within_the_upper_half() {
        let backoff = Backoff { initial_delay_ms: 100.0, max_delay_ms: 1000.0, max_attempts: 10.0 };
        let lowest: Vec<f64> = (0..6).map(|a| backoff.delay(a, 0.0).unwrap()).collect();
        let highest: Vec<f64> = (0..6).map(|a| backoff.delay(a, 0.999_999).unwrap().round()).collect();
        assert_eq!(lowest, [50.0, 100.0, 200.0, 400.0, 500.0, 500.0]);
        assert_eq!(highest, [100.0, 200.0, 400.0, 800.0, 1000.0, 1000.0]);
        assert_eq!(backoff.delay(3, 0.5), Some(600.0));
    }

    #[test]
    fn gives_up_after_max_attempts_unless_infinite() {
        let backoff = Backoff { max_attempts: 3.0, ..Backoff::default() };
        assert!(backoff.delay(2, 0.5).is_some());
        assert_eq!(backoff.delay(3, 0.5), None);
        let forever = Backoff { max_attempts: f64::INFINITY, ..Backoff::default() };
        assert_eq!(forever.delay(10_000, 0.0), Some(15_000.0));
    }

    #[test]
    fn refuses_bad_settings() {
        assert!(Backoff::default().check().is_ok());
        assert!(Backoff { initial_delay_ms: -1.0, ..Backoff::default() }.check().is_err());
        assert!(Backoff { max_delay_ms: 10.0, ..Backoff::default() }.check().is_err());
        assert!(Backoff { max_attempts: f64::NAN, ..Backoff::default() }.check().is_err());
    }

    #[test]
    fn retries_what_retrying_can_fix() {
        for code in [1001, 1005, 1006, 1011, 1012, 1013, 4000] {
            assert!(reconnects_after(code, "", false), "{code}");
        }
        for code in [1000, 1008] {
            assert!(!reconnects_after(code, "", true), "{code}");
        }
    }

    #[test]
    fn retries_an_expired_token_only_with_a_fresh_one_to_give() {
        assert!(reconnects_after(1008, TOKEN_EXPIRED, true));
        assert!(!reconnects_after(1008, TOKEN_EXPIRED, false), "the same token would be refused");
        assert!(!reconnects_after(1008, "Unauthorized", true));
    }
}
