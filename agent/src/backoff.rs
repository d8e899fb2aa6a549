//! Cloud Foundry's crash backoff: the first three crashes restart at once, then the wait starts at
//! 30 s and doubles up to 16 min; the count resets once an instance has run healthy for 5 min.

use std::time::Duration;

const IMMEDIATE_RESTARTS: u32 = 3;
const FIRST_DELAY: Duration = Duration::from_secs(30);
const MAX_DELAY: Duration = Duration::from_secs(16 * 60);
/// Healthy running time after which earlier crashes are forgiven.
pub const RESET_AFTER: Duration = Duration::from_secs(5 * 60);

/// How long to wait before restarting after the `crash_count`-th consecutive crash (1-based).
pub fn restart_delay(crash_count: u32) -> Duration {
    if crash_count <= IMMEDIATE_RESTARTS {
        return Duration::ZERO;
    }
    let doublings = (crash_count - IMMEDIATE_RESTARTS - 1).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_foundry_schedule() {
        let secs: Vec<u64> = (1..=12).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 0, 0, 30, 60, 120, 240, 480, 960, 960, 960, 960]);
        assert_eq!(restart_delay(0), Duration::ZERO);
        assert_eq!(restart_delay(u32::MAX), MAX_DELAY);
    }
}
