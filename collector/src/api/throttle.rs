//! Failed authentication: throttled per source address, logged at a bounded rate.
//!
//! Each address (an IPv6 address by its /64, which one host usually holds whole) has a leaky
//! bucket: a failed authentication adds one, the level drains at [`RATE`] per second, and
//! while it is at [`BURST`] or more every request from that address that presents
//! credentials gets 429 with `Retry-After` before anything is checked. A node that mistypes
//! its secret a few times is not slowed; a guesser gets one try per second. The table holds at
//! most [`MAX_ADDRESSES`] addresses: when full, drained entries are dropped, and failures from
//! further addresses share one overflow bucket (so a spray from many addresses throttles
//! itself, at worst together with other newcomers, never the addresses already known).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Failures an address may make in a burst.
pub const BURST: f64 = 10.0;
/// Failures per second an address may make in the long run.
pub const RATE: f64 = 1.0;
/// Addresses tracked at once.
pub const MAX_ADDRESSES: usize = 10_000;
/// At most one log line per this period (with the count of failures not logged).
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    Overflow,
}

fn key_of(ip: IpAddr) -> Key {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Key::Addr(IpAddr::V6(std::net::Ipv6Addr::new(
                s[0], s[1], s[2], s[3], 0, 0, 0, 0,
            )))
        }
        v4 => Key::Addr(v4),
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn drained(&self, now: Instant) -> f64 {
        (self.level - now.duration_since(self.at).as_secs_f64() * RATE).max(0.0)
    }
}

#[derive(Default)]
struct LogState {
    last: Option<Instant>,
    unlogged: u64,
}

/// The per-address table of failed authentications.
#[derive(Default)]
pub struct AuthThrottle {
    table: Mutex<HashMap<Key, Bucket>>,
    /// Entries in the table: the check costs nothing while nobody failed.
    entries: AtomicUsize,
    log: Mutex<LogState>,
}

impl AuthThrottle {
    /// `Err(seconds to wait)` when `ip` is throttled.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), u64> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let Some(ip) = ip else { return Ok(()) };
        if self.entries.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let table = self.table.lock().expect("throttle");
        let bucket = table.get(&key_of(ip)).or_else(|| {
            table
                .get(&Key::Overflow)
                .filter(|_| table.len() >= MAX_ADDRESSES)
        });
        match bucket {
            Some(b) => {
                // Throttled when one more failure would overflow the bucket.
                let level = b.drained(now);
                if level > BURST - 1.0 {
                    Err(((level - (BURST - 1.0)) / RATE).ceil().max(1.0) as u64)
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// Records a failed authentication from `ip` (`what`: the reason, with any name the
    /// client gave) and logs it, at most once per ten seconds.
    pub fn failed(&self, ip: Option<IpAddr>, what: &str) {
        self.failed_at(ip, what, Instant::now())
    }

    fn failed_at(&self, ip: Option<IpAddr>, what: &str, now: Instant) {
        if let Some(ip) = ip {
            let mut table = self.table.lock().expect("throttle");
            let mut key = key_of(ip);
            if !table.contains_key(&key) && table.len() >= MAX_ADDRESSES {
                table.retain(|_, b| b.drained(now) > 0.0);
                if table.len() >= MAX_ADDRESSES {
                    key = Key::Overflow;
                }
            }
            let b = table.entry(key).or_insert(Bucket {
                level: 0.0,
                at: now,
            });
            b.level = b.drained(now) + 1.0;
            b.at = now;
            self.entries.store(table.len(), Ordering::Release);
        }
        let mut log = self.log.lock().expect("throttle log");
        if log.last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            let from = ip.map_or_else(|| "an unknown address".to_string(), |i| i.to_string());
            if log.unlogged > 0 {
                tracing::warn!(
                    "authentication failed from {from}: {what} ({} more failures not logged in the last {} s)",
                    log.unlogged,
                    LOG_EVERY.as_secs()
                );
            } else {
                tracing::warn!("authentication failed from {from}: {what}");
            }
            log.last = Some(now);
            log.unlogged = 0;
        } else {
            log.unlogged += 1;
        }
    }

    /// Addresses currently tracked (for `/metrics`).
    pub fn tracked(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }
}

/// Quotes a client-given name for a log line: escaped, at most 64 characters.
pub fn quoted(name: &str) -> String {
    let short: String = name.chars().take(64).collect();
    let more = if name.chars().count() > 64 { "…" } else { "" };
    format!("{short:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_is_throttled_after_its_burst_and_others_are_not() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        for _ in 0..BURST as usize - 1 {
            t.failed_at(ip("192.0.2.1"), "bad secret", now);
            assert_eq!(t.check_at(ip("192.0.2.1"), now), Ok(()));
        }
        t.failed_at(ip("192.0.2.1"), "bad secret", now);
        let wait = t.check_at(ip("192.0.2.1"), now).unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        assert_eq!(t.check_at(ip("192.0.2.2"), now), Ok(()));
        // One /64 is one address.
        for _ in 0..BURST as usize {
            t.failed_at(ip("2001:db8::1"), "bad token", now);
        }
        assert!(t.check_at(ip("2001:db8::ffff"), now).is_err());
        assert_eq!(t.check_at(ip("2001:db8:0:1::1"), now), Ok(()));
    }

    #[test]
    fn the_table_is_bounded_and_overflow_shares_a_bucket() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_ADDRESSES + 500) as u32 {
            t.failed_at(Some(IpAddr::V4((0x0a00_0000 + i).into())), "spray", now);
        }
        assert!(t.tracked() <= MAX_ADDRESSES + 1, "{}", t.tracked());
        // The overflow bucket took the last 500 failures: newcomers are throttled.
        assert!(t.check_at(ip("198.51.100.7"), now).is_err());
        // Known addresses keep their own bucket (one failure: not throttled).
        assert_eq!(
            t.check_at(Some(IpAddr::V4(0x0a00_0000u32.into())), now),
            Ok(())
        );
    }
}
