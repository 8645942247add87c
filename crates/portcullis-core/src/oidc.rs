//! The OpenID Connect provider's rules that need no store: the scopes Portcullis grants, PKCE
//! (RFC 7636, `S256` only), the sealed authorization code, the sign-in freshness mark, and
//! `at_hash`.
//!
//! An authorization code carries what the token endpoint needs (the client, the redirect URI,
//! the browser session and user, the scope, the nonce, the PKCE challenge, the time the person
//! authenticated and the code's own deadline) and is sealed with a server key (HMAC-SHA256,
//! 128-bit tag), so it cannot be made or changed without the key. It holds nothing secret: the
//! subject and session id are in the ID token anyway. That it is used once is enforced where it
//! is redeemed, by an atomic counter in the session store.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::secret::{KeyedDigest, b64, sha256};

/// The scopes Portcullis grants, in the order discovery lists them.
pub const SCOPES: [&str; 5] = ["openid", "profile", "email", "offline_access", "roles"];

/// The longest authorization code accepted (a sealed one is a few hundred bytes).
pub const MAX_CODE_LEN: usize = 4096;

/// The scopes of `requested` that Portcullis grants, in [`SCOPES`] order, space-separated.
/// Unknown scopes are left out (RFC 6749 §3.3 lets the server grant less than was asked; the
/// token answer says what was granted).
pub fn granted_scope(requested: &str) -> String {
    let asked: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
    SCOPES.iter().copied().filter(|s| asked.contains(s)).collect::<Vec<_>>().join(" ")
}

/// Whether `scope` (space-separated) holds `one`.
pub fn has_scope(scope: &str, one: &str) -> bool {
    scope.split(' ').any(|s| s == one)
}

/// Whether `s` is a PKCE code verifier: 43 to 128 characters of `A-Z a-z 0-9 - . _ ~`.
pub fn is_code_verifier(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `s` is an `S256` code challenge: the base64url SHA-256 of a verifier (43 characters).
pub fn is_code_challenge(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// The `S256` challenge of `verifier`.
pub fn code_challenge(verifier: &str) -> String {
    b64(&sha256(verifier.as_bytes()))
}

/// Whether `verifier` answers `challenge` (`S256`), compared in constant time.
pub fn pkce_matches(challenge: &str, verifier: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    is_code_verifier(verifier) && code_challenge(verifier).as_bytes().ct_eq(challenge.as_bytes()).into()
}

/// `at_hash` (OpenID Connect Core §3.1.3.6) for an access token in an ID token signed with a
/// SHA-256 algorithm: the left half of its SHA-256, base64url.
pub fn at_hash(access_token: &str) -> String {
    b64(&sha256(access_token.as_bytes())[..16])
}

/// What an authorization code stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    #[serde(rename = "c")]
    pub client_id: String,
    #[serde(rename = "r")]
    pub redirect_uri: String,
    /// The browser session the person signed in with.
    #[serde(rename = "p")]
    pub parent: String,
    #[serde(rename = "u")]
    pub user_id: String,
    /// The id the application's session record gets: known in advance, so a code used twice
    /// can end what its first use made.
    #[serde(rename = "g")]
    pub grant_id: String,
    #[serde(rename = "s")]
    pub scope: String,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    /// When the person authenticated (Unix milliseconds).
    #[serde(rename = "t")]
    pub auth_time: i64,
    /// When the code stops working (Unix milliseconds).
    #[serde(rename = "e")]
    pub expires_at: i64,
}

const CODE_CONTEXT: &[u8] = b"portcullis authorization code v1";
const FRESH_CONTEXT: &[u8] = b"portcullis sign-in after v1";

impl CodeGrant {
    /// The code: the grant as base64url JSON, a dot, and its seal.
    pub fn seal(&self, key: &KeyedDigest) -> String {
        key.seal_json(CODE_CONTEXT, self)
    }

    /// The grant a code stands for, if `key` sealed it; `None` for anything else.
    pub fn open(code: &str, key: &KeyedDigest) -> Option<Self> {
        key.open_json(CODE_CONTEXT, code, MAX_CODE_LEN)
    }

    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.expires_at)
    }
}

/// A mark that the person was sent to sign in at `at`, sealed so that it cannot be moved: the
/// authorization endpoint accepts a sign-in made after it as fresh (`prompt=login`, `max_age`).
pub fn seal_fresh_after(at: Timestamp, key: &KeyedDigest) -> String {
    let ms = at.unix_millis().to_string();
    let tag = key.digest(&[FRESH_CONTEXT, ms.as_bytes()]);
    format!("{ms}.{tag}")
}

/// The time a [`seal_fresh_after`] mark holds, if `key` sealed it.
pub fn open_fresh_after(mark: &str, key: &KeyedDigest) -> Option<Timestamp> {
    let (ms, tag) = mark.split_once('.')?;
    if ms.len() > 20 || !key.verify(&[FRESH_CONTEXT, ms.as_bytes()], tag) {
        return None;
    }
    ms.parse().ok().map(Timestamp::from_unix_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> CodeGrant {
        CodeGrant {
            client_id: "client".into(),
            redirect_uri: "https://app.example/cb".into(),
            parent: "p".into(),
            user_id: "u".into(),
            grant_id: "g".into(),
            scope: "openid email".into(),
            nonce: Some("n-0S6_WzA2Mj".into()),
            code_challenge: Some(code_challenge(&"v".repeat(43))),
            auth_time: 1_800_000_000_000,
            expires_at: 1_800_000_060_000,
        }
    }

    #[test]
    fn a_code_opens_only_with_its_key_and_unchanged() {
        let key = KeyedDigest::new(&[7; 32]);
        let code = grant().seal(&key);
        assert_eq!(CodeGrant::open(&code, &key), Some(grant()));
        assert_eq!(CodeGrant::open(&code, &KeyedDigest::new(&[8; 32])), None);
        let (payload, tag) = code.rsplit_once('.').expect("sealed");
        let other = CodeGrant { user_id: "someone else".into(), ..grant() }.seal(&key);
        let (other_payload, _) = other.rsplit_once('.').expect("sealed");
        assert_eq!(CodeGrant::open(&format!("{other_payload}.{tag}"), &key), None);
        assert_eq!(CodeGrant::open(payload, &key), None);
        assert_eq!(CodeGrant::open(&format!("{code}x"), &key), None);
        assert_eq!(CodeGrant::open(&"a".repeat(MAX_CODE_LEN + 1), &key), None);
        // The fresh-sign-in mark is sealed in its own context: a code's tag does not fit it.
        let mark = seal_fresh_after(Timestamp::from_unix_millis(5), &key);
        assert_eq!(open_fresh_after(&mark, &key), Some(Timestamp::from_unix_millis(5)));
        assert_eq!(open_fresh_after(&mark.replacen('5', "6", 1), &key), None);
        assert_eq!(open_fresh_after(&format!("{payload}.{tag}"), &key), None);
    }

    #[test]
    fn pkce_follows_rfc_7636() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(code_challenge(verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(pkce_matches("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", verifier));
        assert!(!pkce_matches("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN", verifier));
        assert!(is_code_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        for bad in ["", "short", &"a".repeat(129), &format!("{}+", "a".repeat(43))] {
            assert!(!is_code_verifier(bad), "{bad:?}");
        }
        // A verifier too short to be one never matches, even its own challenge.
        assert!(!pkce_matches(&code_challenge("abc"), "abc"));
    }

    #[test]
    fn scopes_granted_are_the_known_ones_in_order() {
        assert_eq!(granted_scope("email  openid groups offline_access"), "openid email offline_access");
        assert_eq!(granted_scope(""), "");
        assert!(has_scope("openid email", "email") && !has_scope("openid email", "mail"));
    }

    #[test]
    fn at_hash_matches_the_spec_example() {
        // OpenID Connect Core, Appendix A.3 (an RS256 ID token's at_hash of its access token).
        assert_eq!(at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
    }
}
