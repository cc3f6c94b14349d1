//! Login attempt limits, per account and per client address, so passwords cannot be guessed
//! at line speed. In memory: a restart forgives, which is fine for a box on a LAN.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

pub struct LoginLimiter {
    accounts: DefaultKeyedRateLimiter<String>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

impl LoginLimiter {
    /// `per_account` and `per_address` attempts per minute, each also the burst allowed.
    pub fn new(per_account: u32, per_address: u32) -> LoginLimiter {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN));
        LoginLimiter {
            accounts: DefaultKeyedRateLimiter::keyed(quota(per_account)),
            addresses: DefaultKeyedRateLimiter::keyed(quota(per_address)),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one attempt; `Err(wait)` when the account or the address is over its limit.
    pub fn attempt(&self, account: &str, address: IpAddr) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(256) {
            self.accounts.retain_recent();
            self.addresses.retain_recent();
        }
        let now = DefaultClock::default().now();
        self.addresses.check_key(&address).map_err(|limit| limit.wait_time_from(now))?;
        self.accounts.check_key(&account.to_lowercase()).map_err(|limit| limit.wait_time_from(now))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_account_and_each_address() {
        let limiter = LoginLimiter::new(3, 5);
        let home: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(limiter.attempt("ann@x", home).is_ok());
        }
        assert!(limiter.attempt("ANN@x", home).is_err(), "the account is over its limit");
        assert!(limiter.attempt("bob@x", home).is_ok());
        assert!(limiter.attempt("cat@x", home).is_err(), "the address is over its limit");
        assert!(limiter.attempt("cat@x", [10, 0, 0, 2].into()).is_ok());
    }
}
