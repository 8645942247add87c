//! Time as a parameter: every rule that depends on "now" takes a [`Timestamp`], and the server
//! reads it from one [`Clock`], so tests can move time instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, in whole milliseconds since the Unix epoch (UTC).
///
/// Serialised as an RFC 3339 string (`2026-11-22T10:24:45.123Z`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch, rounded down (the unit of JWT `exp`, `iat`, `nbf`).
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// `self + d`, saturating instead of overflowing.
    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// How long after `earlier` this is; zero when it is not later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let diff = self.0.saturating_sub(earlier.0);
        Duration::from_millis(u64::try_from(diff).unwrap_or(0))
    }

    /// RFC 3339 in UTC, as `time` writes it (`2026-11-22T10:24:45.123Z`; the fraction without
    /// trailing zeros, and none for a whole second), digit by digit: it is in every `/v1/me`
    /// answer, and `time`'s general formatter took five times the instructions.
    pub fn to_rfc3339(self) -> String {
        let (secs, ms) = (self.0.div_euclid(1000), self.0.rem_euclid(1000));
        let t = match OffsetDateTime::from_unix_timestamp(secs) {
            Ok(t) if (0..=9999).contains(&t.year()) => t,
            // Outside the years RFC 3339 can write.
            _ => return self.0.to_string(),
        };
        let mut out = String::with_capacity(24);
        push_digits(&mut out, u32::try_from(t.year()).unwrap_or(0), 4);
        out.push('-');
        push_digits(&mut out, u32::from(u8::from(t.month())), 2);
        out.push('-');
        push_digits(&mut out, u32::from(t.day()), 2);
        out.push('T');
        push_digits(&mut out, u32::from(t.hour()), 2);
        out.push(':');
        push_digits(&mut out, u32::from(t.minute()), 2);
        out.push(':');
        push_digits(&mut out, u32::from(t.second()), 2);
        let (mut fraction, mut width) = (u32::try_from(ms).unwrap_or(0), 3);
        if fraction != 0 {
            while fraction % 10 == 0 {
                fraction /= 10;
                width -= 1;
            }
            out.push('.');
            push_digits(&mut out, fraction, width);
        }
        out.push('Z');
        out
    }

    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(ms).ok().map(Self)
    }
}

/// `n` in exactly `width` decimal digits (`width` at most 4).
fn push_digits(out: &mut String, n: u32, width: usize) {
    let mut buf = [b'0'; 4];
    let mut n = n;
    for d in buf[..width].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend(buf[..width].iter().map(|&d| char::from(d)));
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))
    }
}

/// Where "now" comes from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place the system's wall clock is read (clippy.toml bans it everywhere else).
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    /// A manual clock starting at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::from_unix_millis(1_795_000_000_123);
        let s = t.to_rfc3339();
        assert_eq!(s, "2026-11-18T11:06:40.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&s), Some(t));
    }

    /// What `time`'s own formatter writes: the reference for [`Timestamp::to_rfc3339`].
    fn by_time(t: Timestamp) -> String {
        let nanos = i128::from(t.unix_millis()) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| t.unix_millis().to_string())
    }

    #[test]
    fn rfc3339_is_what_time_writes_at_the_edges() {
        for ms in [0, 1, 10, 100, 999, 1000, -1, -1000, 951_782_400_000, 1_795_000_000_120, 253_402_300_799_999] {
            let t = Timestamp::from_unix_millis(ms);
            assert_eq!(t.to_rfc3339(), by_time(t), "{ms}");
        }
        // Outside the years 0 to 9999 both write the number.
        for ms in [253_402_300_800_000, -62_167_219_200_001, i64::MIN, i64::MAX] {
            assert_eq!(Timestamp::from_unix_millis(ms).to_rfc3339(), ms.to_string());
        }
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_is_what_time_writes(ms in -62_167_219_200_000i64..253_402_300_800_000) {
            let t = Timestamp::from_unix_millis(ms);
            proptest::prop_assert_eq!(t.to_rfc3339(), by_time(t));
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_unix_millis(1000));
        assert_eq!(c.now().unix_millis(), 1000);
        c.advance(Duration::from_millis(2500));
        assert_eq!(c.clone().now().unix_millis(), 3500);
        assert_eq!(c.now().unix_seconds(), 3);
    }

    #[test]
    fn since_is_never_negative() {
        let a = Timestamp::from_unix_millis(10);
        let b = Timestamp::from_unix_millis(5);
        assert_eq!(a.since(b), Duration::from_millis(5));
        assert_eq!(b.since(a), Duration::ZERO);
    }
}
