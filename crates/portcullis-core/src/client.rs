//! The client registry's records: the programs that talk to Portcullis on their own behalf.
//!
//! One registry for every kind (docs/OIDC.md): **service** clients read the revocation feed with
//! their id and secret (HTTP Basic); **confidential** and **public** clients are OpenID Connect
//! relying parties (a public one has no secret and proves itself with PKCE). A secret is 256
//! random bits shown once; the store keeps its SHA-256, compared in constant time. A rotated
//! secret keeps working until `previous_until`, so a service can be redeployed with the new one.

use std::fmt;

use serde::Serialize;

use crate::clock::Timestamp;
use crate::secret::{SecretHash, b64, fill_random};

/// What a client is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// A service that verifies access tokens and follows the revocation feed.
    Service,
    /// An OpenID Connect relying party that keeps a secret (a server-side web application).
    Confidential,
    /// An OpenID Connect relying party that cannot keep a secret (a browser or mobile app).
    Public,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Service => "service",
            ClientKind::Confidential => "confidential",
            ClientKind::Public => "public",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "service" => Some(ClientKind::Service),
            "confidential" => Some(ClientKind::Confidential),
            "public" => Some(ClientKind::Public),
            _ => None,
        }
    }

    /// Whether clients of this kind hold a secret.
    pub fn has_secret(self) -> bool {
        self != ClientKind::Public
    }
}

/// A client's public id: 128 random bits, base64url (22 characters).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        fill_random(&mut bytes);
        Self(b64(&bytes))
    }

    /// An id as a client presents it: 1 to 64 URL-safe characters (ids are generated, but a
    /// presented one is only compared, so any such string is a fine key to look up).
    pub fn parse(s: &str) -> Option<Self> {
        let ok =
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(s.to_owned()))
    }

    /// An id read back from a store.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({})", self.0)
    }
}

/// A client secret as issued: shown once, never stored.
pub struct ClientSecret(String);

impl ClientSecret {
    /// 256 random bits, base64url (43 characters).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes);
        Self(b64(&bytes))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps.
    pub fn hash(&self) -> SecretHash {
        Self::hash_of(&self.0)
    }

    /// The hash of a secret as a client presented it.
    pub fn hash_of(presented: &str) -> SecretHash {
        SecretHash::of(presented.as_bytes())
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// A registered client, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Client {
    pub id: ClientId,
    pub name: String,
    pub kind: ClientKind,
    /// The current secret's hash (`None` for public clients).
    #[serde(skip)]
    pub secret_hash: Option<SecretHash>,
    /// The secret it replaced, accepted until `previous_until`.
    #[serde(skip)]
    pub previous_secret_hash: Option<SecretHash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<Timestamp>,
    /// OpenID Connect: where authorization answers may be sent (exact match).
    pub redirect_uris: Vec<String>,
    /// OpenID Connect: where RP-initiated logout may send people back.
    pub post_logout_redirect_uris: Vec<String>,
    /// OpenID Connect: where back-channel logout tokens are posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backchannel_logout_uri: Option<String>,
    /// Portcullis' own applications: no consent asked.
    pub first_party: bool,
    pub created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Timestamp>,
}

impl Client {
    /// A new client of `kind` named `name`, with a fresh id and (unless public) a fresh secret.
    pub fn new(name: String, kind: ClientKind, now: Timestamp) -> (Self, Option<ClientSecret>) {
        let secret = kind.has_secret().then(ClientSecret::generate);
        let client = Self {
            id: ClientId::generate(),
            name,
            kind,
            secret_hash: secret.as_ref().map(ClientSecret::hash),
            previous_secret_hash: None,
            previous_until: None,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            backchannel_logout_uri: None,
            first_party: false,
            created_at: now,
            last_used_at: None,
        };
        (client, secret)
    }

    /// Whether `presented` is this client's secret at `now`: the current one, or the previous
    /// one within its overlap. Both are compared, in constant time.
    pub fn secret_matches(&self, presented: &str, now: Timestamp) -> bool {
        let hash = ClientSecret::hash_of(presented);
        let current = self.secret_hash.is_some_and(|h| h.matches(&hash));
        let previous = self.previous_secret_hash.is_some_and(|h| h.matches(&hash))
            && self.previous_until.is_some_and(|until| now < until);
        current | previous
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn secrets_match_only_themselves_and_a_previous_one_only_within_its_overlap() {
        let now = Timestamp::from_unix_millis(1_800_000_000_000);
        let (mut client, secret) = Client::new("billing".into(), ClientKind::Service, now);
        let secret = secret.expect("a service has a secret");
        assert_eq!(secret.expose().len(), 43);
        assert!(client.secret_matches(secret.expose(), now));
        assert!(!client.secret_matches("not-it", now));
        let next = ClientSecret::generate();
        client.previous_secret_hash = client.secret_hash;
        client.secret_hash = Some(next.hash());
        client.previous_until = Some(now.plus(Duration::from_secs(60)));
        assert!(client.secret_matches(next.expose(), now));
        assert!(client.secret_matches(secret.expose(), now.plus(Duration::from_secs(59))));
        assert!(!client.secret_matches(secret.expose(), now.plus(Duration::from_secs(60))));
        let (public, none) = Client::new("spa".into(), ClientKind::Public, now);
        assert!(none.is_none() && !public.secret_matches("", now));
        assert!(format!("{next:?}").contains("redacted") && !format!("{next:?}").contains(next.expose()));
    }

    #[test]
    fn presented_ids_are_url_safe_and_short() {
        assert!(ClientId::parse(ClientId::generate().as_str()).is_some());
        for bad in ["", "a b", "a:b", &"x".repeat(65), "é"] {
            assert!(ClientId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
