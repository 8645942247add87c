//! The WebAuthn relying party (`webauthn-rs` does the ceremonies' checks) and the ceremony
//! state that travels with the client, sealed.
//!
//! A ceremony (registering a passkey, signing in with one) has two halves: the server makes a
//! challenge, the browser's authenticator answers it. Between them the server needs the
//! challenge back. Instead of a store, the state goes to the client sealed (HMAC-SHA256 under a
//! stored server key, like the second-step ticket): it names its purpose, its user (and, for a
//! second step, its ticket) and expires after five minutes; the service uses each one up once,
//! on every node, so an answer cannot be replayed.

use std::time::Duration;

use portcullis_core::secret::{KeyedDigest, b64, fill_random};
use portcullis_core::{Timestamp, UserId};
use serde::{Deserialize, Serialize};
use url::Url;
use webauthn_rs::{Webauthn, WebauthnBuilder};

/// How long a ceremony may take.
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// The longest sealed state accepted (a real one is a few kilobytes).
const MAX_STATE_LEN: usize = 48 * 1024;
const CONTEXT: &[u8] = b"portcullis webauthn ceremony v1";

/// This server as a WebAuthn relying party: its RP ID (a domain) and the origins pages are
/// served from.
pub struct RelyingParty {
    pub(crate) webauthn: Webauthn,
    rp_id: String,
}

impl RelyingParty {
    /// `rp_id` must be a domain that each of `origins` is on (the domain or a subdomain).
    pub fn new(rp_id: &str, origins: &[Url], name: &str) -> Result<Self, String> {
        let (first, rest) = origins.split_first().ok_or("no origin for passkeys")?;
        let mut builder = WebauthnBuilder::new(rp_id, first)
            .map_err(|_| format!("{first} is not on the passkey domain {rp_id}"))?
            .rp_name(name)
            .timeout(CEREMONY_TTL);
        for origin in rest {
            builder = builder.append_allowed_origin(origin);
        }
        let webauthn = builder.build().map_err(|e| format!("passkeys cannot be set up: {e}"))?;
        Ok(Self { webauthn, rp_id: rp_id.to_owned() })
    }

    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty").field("rp_id", &self.rp_id).finish_non_exhaustive()
    }
}

/// What a ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A signed-in person adds a passkey.
    Register,
    /// Signing in with a passkey alone.
    Login,
    /// A passkey as the second step after the password.
    SecondStep,
}

/// A ceremony begun: the options for the browser (`navigator.credentials.create` or `.get`,
/// as WebAuthn's JSON: `{"publicKey": {...}}`) and the sealed state to send back with the
/// authenticator's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Ceremony {
    pub options: serde_json::Value,
    pub state: String,
}

/// The sealed state.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CeremonyState {
    #[serde(rename = "p")]
    pub purpose: Purpose,
    /// Used up under this id.
    #[serde(rename = "i")]
    pub id: String,
    #[serde(rename = "u", default)]
    pub user: Option<String>,
    /// The second-step ticket's id the ceremony belongs to.
    #[serde(rename = "t", default)]
    pub ticket: Option<String>,
    #[serde(rename = "e")]
    pub expires_at: i64,
    /// `webauthn-rs`'s own state.
    #[serde(rename = "s")]
    pub inner: serde_json::Value,
}

impl CeremonyState {
    pub fn new(
        purpose: Purpose,
        user: Option<&UserId>,
        ticket: Option<&str>,
        inner: serde_json::Value,
        now: Timestamp,
    ) -> Self {
        let mut id = [0u8; 16];
        fill_random(&mut id);
        Self {
            purpose,
            id: b64(&id),
            user: user.map(|u| u.as_str().to_owned()),
            ticket: ticket.map(str::to_owned),
            expires_at: now.plus(CEREMONY_TTL).unix_millis(),
            inner,
        }
    }

    pub fn seal(&self, key: &KeyedDigest) -> String {
        key.seal_json(CONTEXT, self)
    }

    /// The state, if `key` sealed it for `purpose` and it has not expired by `now`.
    pub fn open(sealed: &str, key: &KeyedDigest, purpose: Purpose, now: Timestamp) -> Option<Self> {
        let state: Self = key.open_json(CONTEXT, sealed, MAX_STATE_LEN)?;
        (state.purpose == purpose && now < Timestamp::from_unix_millis(state.expires_at)).then_some(state)
    }

    /// Whether the state is `user`'s.
    pub fn is_for(&self, user: &UserId) -> bool {
        self.user.as_deref() == Some(user.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_opens_only_for_its_purpose_until_it_expires_and_unchanged() {
        let key = KeyedDigest::new(&[7; 32]);
        let now = Timestamp::from_unix_millis(1_000_000);
        let user = UserId::from_stored("0190a0b0-0000-7000-8000-000000000001");
        let state = CeremonyState::new(Purpose::Register, Some(&user), None, serde_json::json!({"c": 1}), now);
        let sealed = state.seal(&key);
        let opened = CeremonyState::open(&sealed, &key, Purpose::Register, now).expect("opens");
        assert!(opened.is_for(&user));
        assert_eq!(opened.inner, serde_json::json!({"c": 1}));
        assert!(CeremonyState::open(&sealed, &key, Purpose::Login, now).is_none(), "another purpose");
        assert!(CeremonyState::open(&sealed, &key, Purpose::Register, now.plus(CEREMONY_TTL)).is_none(), "expired");
        assert!(CeremonyState::open(&sealed, &KeyedDigest::new(&[8; 32]), Purpose::Register, now).is_none());
        let mut changed = sealed.clone().into_bytes();
        changed[3] ^= 1;
        let changed = String::from_utf8(changed).expect("ascii");
        assert!(CeremonyState::open(&changed, &key, Purpose::Register, now).is_none(), "tampered");
        assert!(CeremonyState::open(&"a".repeat(MAX_STATE_LEN + 1), &key, Purpose::Register, now).is_none());
    }

    #[test]
    fn the_relying_party_must_be_on_its_origins_domain() {
        let url = |s: &str| Url::parse(s).expect("url");
        assert!(RelyingParty::new("localhost", &[url("http://localhost:8080")], "Portcullis").is_ok());
        assert!(RelyingParty::new("example.com", &[url("https://auth.example.com")], "Portcullis").is_ok());
        assert!(RelyingParty::new("example.com", &[url("https://auth.example.org")], "Portcullis").is_err());
        assert!(RelyingParty::new("localhost", &[], "Portcullis").is_err());
    }
}
