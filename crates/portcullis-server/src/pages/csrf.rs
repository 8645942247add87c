//! CSRF tokens for the pages' forms: an HMAC of the session id with a server secret, so a
//! token is good for one session only and needs no storage.

use portcullis_core::SessionId;
use portcullis_core::secret::KeyedDigest;

/// The name of the server secret that keys CSRF tokens.
pub const CSRF_KEY_NAME: &str = "csrf-key";

pub struct Csrf(KeyedDigest);

impl Csrf {
    pub fn new(secret: &[u8]) -> Self {
        Self(KeyedDigest::new(secret))
    }

    /// The token the forms of `session` carry.
    pub fn token(&self, session: &SessionId) -> String {
        self.0.digest(&[b"csrf", session.as_str().as_bytes()])
    }

    /// Whether `token` is the one of `session` (compared in constant time).
    pub fn verify(&self, session: &SessionId, token: &str) -> bool {
        self.0.verify(&[b"csrf", session.as_str().as_bytes()], token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_per_session() {
        let csrf = Csrf::new(b"secret");
        let a = SessionId::parse("AAAAAAAAAAAAAAAAAAAAAA").expect("sid");
        let b = SessionId::parse("BBBBBBBBBBBBBBBBBBBBBA").expect("sid");
        let token = csrf.token(&a);
        assert!(csrf.verify(&a, &token));
        assert!(!csrf.verify(&b, &token));
        assert!(!csrf.verify(&a, ""));
        assert!(!Csrf::new(b"another secret").verify(&a, &token), "another key, another token");
    }
}
