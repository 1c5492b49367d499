//! When a failed device is checked again: the first health check soon, then doubling, so a
//! device that stays down costs little while one that recovers returns quickly.

/// The first health check after a failure, ms.
pub const FIRST_CHECK_MS: u64 = 100;
/// The longest wait between checks, ms.
pub const MAX_CHECK_MS: u64 = 5_000;

/// The wait before health check number `attempt` (0 after the failure itself), ms.
pub fn check_delay_ms(attempt: u32) -> u64 {
    FIRST_CHECK_MS.saturating_mul(1 << attempt.min(16)).min(MAX_CHECK_MS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn checks_back_off_to_a_cap() {
        let delays: Vec<u64> = (0..8).map(super::check_delay_ms).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(super::check_delay_ms(u32::MAX), 5000);
    }
}
