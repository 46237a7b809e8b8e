//! The parts of the job semantics that need no SQL, so every backend applies them alike: backoff,
//! the Retry-After estimate, tokens.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{Claim, Job, Lease, StoreConfig};

impl Claim {
    /// The claim of `job` (just marked running with its new attempt) by `worker_id`.
    pub fn new(job: Job, worker_id: &str) -> Claim {
        Claim {
            lease: Lease {
                job_id: job.id.clone(),
                worker_id: worker_id.to_string(),
                attempt: job.attempt,
            },
            job,
        }
    }
}

/// A job's run time when none has completed yet to measure by.
const DEFAULT_JOB_SECS: f64 = 60.0;
/// The longest `Retry-After` handed out; an estimate past it says little.
const MAX_RETRY_AFTER_SECS: f64 = 3600.0;

impl StoreConfig {
    /// Wait before the retry of interrupted attempt `attempt` (1-based):
    /// `backoff_base_ms * 2^(attempt-1)`, capped at `backoff_max_ms`.
    pub fn backoff_ms(&self, attempt: u32) -> i64 {
        let doublings = attempt.saturating_sub(1).min(30);
        self.backoff_base_ms
            .saturating_mul(1i64 << doublings)
            .min(self.backoff_max_ms)
    }
}

/// When a queue slot should free, from the queue itself: `mean_run_secs` of the last 20
/// completed jobs (None: none yet), how long each running job has run, and (for one account)
/// how many queued jobs wait ahead of its oldest one. A slot of the whole queue frees when the
/// next running job ends; an account's, when its oldest queued job starts: after the jobs ahead
/// of it have run, as many at a time as are running now.
pub fn retry_after_secs(mean_run_secs: Option<f64>, running_secs: &[f64], jobs_ahead: u64) -> u32 {
    let mean = mean_run_secs
        .filter(|m| *m > 0.0)
        .unwrap_or(DEFAULT_JOB_SECS);
    let first_end = running_secs
        .iter()
        .map(|elapsed| (mean - elapsed).max(1.0))
        .fold(f64::INFINITY, f64::min);
    let first_end = if first_end.is_finite() {
        first_end
    } else {
        mean
    };
    let waves = (jobs_ahead as f64 / running_secs.len().max(1) as f64).floor();
    let secs = (first_end + waves * mean).clamp(1.0, MAX_RETRY_AFTER_SECS);
    secs.ceil() as u32
}

/// A new random API token (`gal_` + 64 hex digits). Stores keep only [`hash_token`] of it.
pub fn new_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    format!("gal_{}", hex::encode(raw))
}

/// What a store keeps of a token: its SHA-256, hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_up_to_the_cap() {
        let config = StoreConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 1000,
            ..StoreConfig::default()
        };
        let waits: Vec<i64> = (1..=6).map(|a| config.backoff_ms(a)).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(config.backoff_ms(u32::MAX), 1000, "no overflow");
    }

    #[test]
    fn retry_after_counts_waves_of_running_jobs() {
        // Nothing ran or runs: one default run.
        assert_eq!(retry_after_secs(None, &[], 0), 60);
        // Two ahead, one at a time: three runs.
        assert_eq!(retry_after_secs(None, &[], 2), 180);
        // Mean 10 s; running 4 s and 9 s: the second ends in 1 s; 4 ahead in waves of 2.
        assert_eq!(retry_after_secs(Some(10.0), &[4.0, 9.0], 4), 21);
        // Never under a second, never over an hour.
        assert_eq!(retry_after_secs(Some(10.0), &[50.0], 0), 1);
        assert_eq!(retry_after_secs(Some(600.0), &[], 100), 3600);
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
        assert!(!hash_token(&a).contains(&a[4..20]));
    }
}
