//! Login and setup attempt limits, so passwords cannot be guessed at line speed and a
//! stranger cannot lock a real user out. In memory: a restart forgives, which is fine for a
//! box on a LAN.
//!
//! A login attempt counts against its address, against the pair (account, address) and
//! against the account as a whole, whose ceiling is [`ACCOUNT_CEILING_FACTOR`] times the
//! pair's: one address guessing one account is stopped at the pair's limit while the owner,
//! from their own address, still logs in; only many addresses together reach the account's
//! ceiling. Accounts are keyed exactly as the store looks them up (trimmed, lower-cased);
//! addresses by their network as the real-time layer counts them (an IPv6 /64).
//! Setup attempts have buckets of their own, so logins named "setup" touch nothing of it.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::engineio::client_network;
use crate::store::normalize_email;

/// The account-wide ceiling, in multiples of the per (account, address) limit.
pub const ACCOUNT_CEILING_FACTOR: u32 = 10;

pub struct LoginLimiter {
    addresses: DefaultKeyedRateLimiter<IpAddr>,
    pairs: DefaultKeyedRateLimiter<(String, IpAddr)>,
    accounts: DefaultKeyedRateLimiter<String>,
    setup: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl LoginLimiter {
    /// `per_account` attempts per minute on one account from one address, `per_address`
    /// from one address in all; each also the burst allowed.
    pub fn new(per_account: u32, per_address: u32) -> LoginLimiter {
        LoginLimiter {
            addresses: DefaultKeyedRateLimiter::keyed(per_minute(per_address)),
            pairs: DefaultKeyedRateLimiter::keyed(per_minute(per_account)),
            accounts: DefaultKeyedRateLimiter::keyed(per_minute(per_account.saturating_mul(ACCOUNT_CEILING_FACTOR))),
            setup: DefaultKeyedRateLimiter::keyed(per_minute(per_account)),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one login attempt on `email`; `Err(wait)` when over a limit.
    pub fn login(&self, email: &str, address: IpAddr) -> Result<(), Duration> {
        self.forget_now_and_then();
        let (account, address) = (normalize_email(email), client_network(address));
        let now = DefaultClock::default().now();
        let wait = |limit: governor::NotUntil<_>| limit.wait_time_from(now);
        self.addresses.check_key(&address).map_err(wait)?;
        self.pairs.check_key(&(account.clone(), address)).map_err(wait)?;
        self.accounts.check_key(&account).map_err(wait)?;
        Ok(())
    }

    /// Counts one attempt at the first-run setup from `address`.
    pub fn setup(&self, address: IpAddr) -> Result<(), Duration> {
        self.forget_now_and_then();
        let now = DefaultClock::default().now();
        self.setup.check_key(&client_network(address)).map_err(|limit| limit.wait_time_from(now))
    }

    /// Full buckets of keys gone quiet are dropped now and then, so memory stays bounded.
    fn forget_now_and_then(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(256) {
            self.addresses.retain_recent();
            self.pairs.retain_recent();
            self.accounts.retain_recent();
            self.setup.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_pair_and_each_address() {
        let limiter = LoginLimiter::new(3, 5);
        let home: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(limiter.login("ann@x", home).is_ok());
        }
        assert!(limiter.login(" ANN@x\t", home).is_err(), "the account is over its limit from here, however spelt");
        assert!(limiter.login("ann@x", [10, 0, 0, 9].into()).is_ok(), "the owner's own address still gets in");
        assert!(limiter.login("bob@x", home).is_ok());
        assert!(limiter.login("cat@x", home).is_err(), "the address is over its limit");
        assert!(limiter.login("cat@x", [10, 0, 0, 2].into()).is_ok());
    }

    #[test]
    fn many_addresses_reach_the_account_ceiling() {
        let limiter = LoginLimiter::new(2, 100);
        let mut allowed = 0;
        for host in 0..30u8 {
            for _ in 0..2 {
                allowed += u32::from(limiter.login("ann@x", [10, 0, 1, host].into()).is_ok());
            }
        }
        assert_eq!(allowed, 2 * ACCOUNT_CEILING_FACTOR);
    }

    #[test]
    fn an_ipv6_host_is_one_address_however_many_it_takes() {
        let limiter = LoginLimiter::new(2, 100);
        let first: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(limiter.login("ann@x", first).is_ok());
        assert!(limiter.login("ann@x", other).is_ok());
        assert!(limiter.login("ann@x", "2001:db8:1:2::3".parse().unwrap()).is_err(), "the same /64");
        assert!(limiter.login("ann@x", "2001:db8:1:3::1".parse().unwrap()).is_ok(), "another network");
    }

    #[test]
    fn setup_has_its_own_buckets() {
        let limiter = LoginLimiter::new(2, 100);
        let home: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..5 {
            let _ = limiter.login("SETUP", home);
        }
        assert!(limiter.setup(home).is_ok());
        assert!(limiter.setup(home).is_ok());
        assert!(limiter.setup(home).is_err());
    }
}
