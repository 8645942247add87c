//! Refresh tokens: opaque, rotated on every use, and chained so that any token of a session's
//! past can be recognised without storing it.
//!
//! A refresh token is `<session id>.<generation>.<secret>`. The first secret (generation 0) comes
//! from the CSPRNG; each rotation derives the next one as
//! `HMAC-SHA256(K, "portcullis-refresh-v1" ‖ id ‖ generation ‖ previous secret)` with a server
//! key `K` that never leaves the server. The store keeps only the SHA-256 of the current secret
//! and its generation. That gives:
//!
//! - **Reuse detection for any old token**: walking the chain forward from a presented older
//!   token reaches the stored hash only if the token is genuine, so a replayed token is told
//!   apart from a guess (which must not log anyone out).
//! - **Racing tabs**: a retry of the immediately previous token within the grace window derives
//!   the very same next token, so both tabs end up on one branch and nobody is logged out.
//! - Without `K`, a stolen token does not reveal its successors.

use std::fmt;
use std::time::Duration;

use aws_lc_rs::hmac;

use crate::clock::Timestamp;
use crate::secret::{SecretHash, SessionId, b64, fill_random};
use crate::session::SessionRecord;

/// How far back a presented token is followed along the chain (bounds the work an invalid
/// token can cause).
pub const MAX_CHAIN_WALK: u64 = 10_000;

/// The server key the refresh chain is derived with (256 bits).
#[derive(Clone)]
pub struct RefreshKey(hmac::Key);

impl RefreshKey {
    pub fn new(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }
}

impl fmt::Debug for RefreshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshKey([redacted])")
    }
}

#[derive(Clone)]
pub struct RefreshToken {
    id: SessionId,
    generation: u64,
    secret: [u8; 32],
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefreshToken({}.{}.[redacted])", self.id, self.generation)
    }
}

impl RefreshToken {
    /// Generation 0 for a new session.
    pub fn first(id: SessionId) -> Self {
        let mut secret = [0u8; 32];
        fill_random(&mut secret);
        Self { id, generation: 0, secret }
    }

    /// Parses a presented token; anything but the exact shape is refused.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > 22 + 1 + 20 + 1 + 43 {
            return None;
        }
        let mut parts = s.split('.');
        let (Some(id), Some(generation), Some(secret), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let canonical_number = !generation.is_empty()
            && generation.bytes().all(|b| b.is_ascii_digit())
            && (generation == "0" || !generation.starts_with('0'));
        if !canonical_number {
            return None;
        }
        let secret = SecretHash::from_b64(secret)?.0;
        Some(Self { id: SessionId::parse(id)?, generation: generation.parse().ok()?, secret })
    }

    pub fn id(&self) -> &SessionId {
        &self.id
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.secret)
    }

    /// The string the client holds. It is the credential.
    pub fn expose(&self) -> String {
        format!("{}.{}.{}", self.id, self.generation, b64(&self.secret))
    }

    /// The token that replaces this one.
    pub fn next(&self, key: &RefreshKey) -> Self {
        let generation = self.generation.saturating_add(1);
        let mut ctx = hmac::Context::with_key(&key.0);
        ctx.update(b"portcullis-refresh-v1");
        ctx.update(self.id.as_str().as_bytes());
        ctx.update(&generation.to_be_bytes());
        ctx.update(&self.secret);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(ctx.sign().as_ref());
        Self { id: self.id.clone(), generation, secret }
    }
}

/// What a presented refresh token is, measured against its session record.
#[derive(Debug)]
pub enum RefreshCheck {
    /// The current token: rotate it.
    Current,
    /// The token just rotated away, retried within the grace window: answer with its successor
    /// (the current token) again.
    RetryInGrace(RefreshToken),
    /// A genuine token of this session that was already rotated: theft; revoke the session.
    Reused,
    /// Not a token of this session.
    Invalid,
}

/// Classifies `presented` against `record` (whose `secret_hash` is the current token's hash).
pub fn check(
    presented: &RefreshToken,
    record: &SessionRecord,
    key: &RefreshKey,
    now: Timestamp,
    grace: Duration,
) -> RefreshCheck {
    if presented.id != record.id {
        return RefreshCheck::Invalid;
    }
    let current = record.refresh_generation;
    if presented.generation == current {
        return if presented.hash().matches(&record.secret_hash) {
            RefreshCheck::Current
        } else {
            RefreshCheck::Invalid
        };
    }
    if presented.generation > current || current - presented.generation > MAX_CHAIN_WALK {
        return RefreshCheck::Invalid;
    }
    let mut t = presented.clone();
    while t.generation < current {
        t = t.next(key);
    }
    if !t.hash().matches(&record.secret_hash) {
        return RefreshCheck::Invalid;
    }
    let in_grace = record.rotated_at.is_some_and(|at| now.since(at) <= grace);
    if current - presented.generation == 1 && in_grace { RefreshCheck::RetryInGrace(t) } else { RefreshCheck::Reused }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{AuthMode, ClientInfo, SessionPolicy};
    use crate::user::UserId;

    fn setup() -> (RefreshKey, RefreshToken, SessionRecord) {
        let key = RefreshKey::new(&[9u8; 32]);
        let policy = SessionPolicy {
            idle_timeout: Duration::from_secs(60),
            absolute_timeout: Duration::from_secs(600),
            refresh_ttl: Duration::from_secs(600),
        };
        let t0 = RefreshToken::first(SessionId::generate());
        let mut r = policy.new_record_with(
            t0.id().clone(),
            t0.hash(),
            UserId::generate(),
            AuthMode::Jwt,
            Timestamp::from_unix_millis(0),
            ClientInfo::default(),
        );
        r.refresh_generation = 0;
        (key, t0, r)
    }

    fn rotate(r: &mut SessionRecord, to: &RefreshToken, at: Timestamp) {
        r.secret_hash = to.hash();
        r.refresh_generation = to.generation();
        r.rotated_at = Some(at);
    }

    #[test]
    fn parse_round_trip_and_shape() {
        let t = RefreshToken::first(SessionId::generate());
        let s = t.expose();
        let back = RefreshToken::parse(&s).expect("parses");
        assert!(back.hash().matches(&t.hash()));
        assert_eq!(back.generation(), 0);
        let (id, rest) = s.split_once('.').expect("dot");
        let secret = rest.split_once('.').expect("dot").1;
        for bad in [
            format!("{id}.00.{secret}"),
            format!("{id}.-1.{secret}"),
            format!("{id}.1e3.{secret}"),
            format!("{id}..{secret}"),
            format!("{id}.{secret}"),
            format!("{id}.0.{secret}.x"),
            format!("{id}.99999999999999999999.{secret}"),
        ] {
            assert!(RefreshToken::parse(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn chain_is_deterministic_keyed_and_forward_only() {
        let (key, t0, _) = setup();
        let t1 = t0.next(&key);
        assert_eq!(t1.expose(), t0.next(&key).expose());
        assert_ne!(t1.expose(), t0.next(&RefreshKey::new(&[8u8; 32])).expose());
        assert_eq!(t1.generation(), 1);
        assert_eq!(t1.id(), t0.id());
    }

    #[test]
    fn classification() {
        let (key, t0, mut r) = setup();
        let now = Timestamp::from_unix_millis(10_000);
        let grace = Duration::from_secs(5);
        assert!(matches!(check(&t0, &r, &key, now, grace), RefreshCheck::Current));
        let t1 = t0.next(&key);
        rotate(&mut r, &t1, now);
        assert!(matches!(check(&t1, &r, &key, now, grace), RefreshCheck::Current));
        match check(&t0, &r, &key, Timestamp::from_unix_millis(14_000), grace) {
            RefreshCheck::RetryInGrace(next) => assert_eq!(next.expose(), t1.expose()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(check(&t0, &r, &key, Timestamp::from_unix_millis(15_001), grace), RefreshCheck::Reused));
        let t2 = t1.next(&key);
        rotate(&mut r, &t2, now);
        // Two generations back is reuse even inside the window.
        assert!(matches!(check(&t0, &r, &key, now, grace), RefreshCheck::Reused));
        // A guess with the right id and an old generation is not a genuine token.
        let mut guess = t0.clone();
        guess.secret = [1u8; 32];
        assert!(matches!(check(&guess, &r, &key, now, grace), RefreshCheck::Invalid));
        guess.generation = 2;
        assert!(matches!(check(&guess, &r, &key, now, grace), RefreshCheck::Invalid));
        let future = t2.next(&key);
        assert!(matches!(check(&future, &r, &key, now, grace), RefreshCheck::Invalid));
        let other = RefreshToken::first(SessionId::generate());
        assert!(matches!(check(&other, &r, &key, now, grace), RefreshCheck::Invalid));
    }
}
