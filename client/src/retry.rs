//! Running a transaction again after a temporary failure: a deadlock, an overload, or a data
//! node failure that aborted it (`NodeFailure` with a known outcome). The back-off doubles
//! from `first_backoff` up to `max_backoff`, each sleep drawn at random between half and all
//! of it, so clients that failed together do not retry together. An error whose outcome is
//! unknown (the coordinator died after the commit was asked for) is never retried here: the
//! transaction may have committed, and only the application knows whether running it twice
//! is harmless.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::session::Session;
use crate::Result;

/// How [`Session::retry`] retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (the first included).
    pub attempts: u32,
    /// The sleep before the second try.
    pub first_backoff: Duration,
    /// The longest sleep between two tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 20 tries, sleeping 1 ms, 2 ms, 4 ms, ... up to 200 ms between them (about 2.5 s in
    /// all: longer than a failover).
    fn default() -> RetryPolicy {
        RetryPolicy { attempts: 20, first_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(200) }
    }
}

impl RetryPolicy {
    /// The sleep after failed try `attempt` (from 1), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self.first_backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        doubled.min(self.max_backoff)
    }
}

impl<'c> Session<'c> {
    /// Runs `body` (a whole transaction: begin, operations, commit) until it succeeds, fails
    /// with an error that is not temporary ([`crate::Error::is_temporary`]), or has been
    /// tried `policy.attempts` times; returns the last result.
    pub fn retry<T>(&mut self, policy: &RetryPolicy, mut body: impl FnMut(&mut Session<'c>) -> Result<T>) -> Result<T> {
        let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match body(self) {
                Err(e) if e.is_temporary() && attempt < policy.attempts.max(1) => {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let full = policy.backoff(attempt);
                    let half = full / 2;
                    let jitter = Duration::from_nanos(seed % (half.as_nanos() as u64).max(1));
                    std::thread::sleep(half + jitter);
                }
                result => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_limit() {
        let p = RetryPolicy::default();
        let seen: Vec<u64> = (1..=10).map(|a| p.backoff(a).as_millis() as u64).collect();
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 32, 64, 128, 200, 200]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(200));
    }
}
