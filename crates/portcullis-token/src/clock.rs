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
        let mut out = Vec::with_capacity(24);
        self.push_rfc3339(&mut out);
        // Only ASCII digits and separators were written.
        String::from_utf8(out).unwrap_or_default()
    }

    /// [`Timestamp::to_rfc3339`] appended to `out`: ASCII digits, `-`, `:`, `.`, `T` and `Z`
    /// only, so it needs no escaping inside a JSON string.
    pub fn push_rfc3339(self, out: &mut Vec<u8>) {
        let (secs, ms) = (self.0.div_euclid(1000), self.0.rem_euclid(1000));
        let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            // Outside the years RFC 3339 can write.
            return out.extend_from_slice(self.0.to_string().as_bytes());
        }
        // Written in place on the stack, then appended once.
        let digits = |n: i64| u32::try_from(n).unwrap_or(0);
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut buf[0..4], digits(year));
        put_digits(&mut buf[5..7], month);
        put_digits(&mut buf[8..10], day);
        put_digits(&mut buf[11..13], digits(second_of_day / 3600));
        put_digits(&mut buf[14..16], digits(second_of_day / 60 % 60));
        put_digits(&mut buf[17..19], digits(second_of_day % 60));
        let end = if ms == 0 {
            19
        } else {
            put_digits(&mut buf[20..23], digits(ms));
            // The fraction without its trailing zeros (it has a digit other than zero).
            buf[20..23].iter().rposition(|&d| d != b'0').map_or(19, |last| 21 + last)
        };
        buf[end] = b'Z';
        out.extend_from_slice(&buf[..=end]);
    }

    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(ms).ok().map(Self)
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01, after Howard Hinnant's
/// `civil_from_days` (eras of 400 years). For any `i64` day count a timestamp can give.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

/// `n` in exactly `width` decimal digits (`width` at most 4).
/// `n`'s last `dst.len()` decimal digits, zero-padded, into `dst`.
fn put_digits(dst: &mut [u8], mut n: u32) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
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
