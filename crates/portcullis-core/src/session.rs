//! Session records and their timeouts.
//!
//! One record per login, whatever the mode. A record is live while `now` is before both its
//! absolute deadline (`expires_at`, fixed at login) and its idle deadline (`idle_expires_at`,
//! pushed forward when the session is used). To keep the per-request path free of writes, use is
//! recorded lazily: only when the last recorded use is older than [`SessionPolicy::touch_interval`],
//! so the idle deadline is exact to within that interval.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use smol_str::SmolStr;

use crate::client::ClientId;
use crate::clock::Timestamp;
use crate::mfa::Amr;
use crate::secret::{SecretHash, SessionId, SessionToken};
use crate::user::UserId;

/// How the client holds on to the session record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// An opaque session cookie; every request looks the record up.
    Session,
    /// A short-lived access token plus a refresh token bound to the record.
    Jwt,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Session => "session",
            AuthMode::Jwt => "jwt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "session" => Some(AuthMode::Session),
            "jwt" => Some(AuthMode::Jwt),
            _ => None,
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest user agent kept on a record; longer ones are cut at a character boundary.
pub const MAX_USER_AGENT_LEN: usize = 512;

/// One login: the single source of truth both modes hold on to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub secret_hash: SecretHash,
    pub user_id: UserId,
    pub mode: AuthMode,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// Dead once `now` reaches this, unless used (and touched) before.
    pub idle_expires_at: Timestamp,
    /// Dead once `now` reaches this, whatever happens.
    pub expires_at: Timestamp,
    pub ip: Option<SmolStr>,
    pub user_agent: Option<SmolStr>,
    /// JWT mode: the generation of the current refresh token (`secret_hash` is its hash).
    pub refresh_generation: u64,
    /// JWT mode: when the refresh token was last rotated.
    pub rotated_at: Option<Timestamp>,
    /// An application's sign-in through the OpenID Connect provider: which client holds this
    /// record, and the browser session it was granted from. `None` for Portcullis' own logins.
    /// Boxed: most records have none, and a record stays small in the stores and caches.
    pub grant: Option<Box<Grant>>,
    /// How the person proved who they are (RFC 8176): a password, and a second factor if one
    /// was asked. An application's record carries its browser session's.
    pub amr: Amr,
}

/// What makes a session record an application's: the client it was issued to, the browser
/// session (the record the person signed in with) it hangs from, when the person
/// authenticated, and the scope granted. Ending the browser session ends every record that
/// hangs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub client_id: ClientId,
    pub parent: SessionId,
    pub auth_time: Timestamp,
    /// Space-separated scope tokens, as granted.
    pub scope: SmolStr,
}

impl Grant {
    /// One line for a store: `client parent auth_time_ms scope…` (none of the first three holds
    /// a space; scope tokens are separated by single spaces).
    pub fn encode(&self) -> String {
        format!("{} {} {} {}", self.client_id, self.parent, self.auth_time.unix_millis(), self.scope)
    }

    /// [`Self::encode`]'s line read back; `None` when it is not one.
    pub fn decode(line: &str) -> Option<Self> {
        let mut parts = line.splitn(4, ' ');
        let client_id = ClientId::parse(parts.next()?)?;
        let parent = SessionId::parse(parts.next()?)?;
        let auth_time = Timestamp::from_unix_millis(parts.next()?.parse().ok()?);
        let scope = SmolStr::new(parts.next().unwrap_or(""));
        Some(Self { client_id, parent, auth_time, scope })
    }

    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

impl SessionRecord {
    /// Live at `now`: before both deadlines.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.expires_at && now < self.idle_expires_at
    }

    /// The earlier of the two deadlines: when a store may forget the record.
    pub fn dies_at(&self) -> Timestamp {
        self.expires_at.min(self.idle_expires_at)
    }
}

/// Where a login came from, as recorded on its session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The lifetime rules for session records.
///
/// Session mode: dead after `idle_timeout` without use, and `absolute_timeout` after login.
/// JWT mode: the login (and its refresh token) lives `refresh_ttl` from login; access tokens
/// carry their own, shorter, expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub refresh_ttl: Duration,
}

impl SessionPolicy {
    /// `(idle, absolute)` lifetimes for a mode.
    fn lifetimes(&self, mode: AuthMode) -> (Duration, Duration) {
        match mode {
            AuthMode::Session => (self.idle_timeout, self.absolute_timeout),
            AuthMode::Jwt => (self.refresh_ttl, self.refresh_ttl),
        }
    }

    /// A record for a fresh session-mode login at `now`, proven by `token`.
    pub fn new_record(
        &self,
        token: &SessionToken,
        user_id: UserId,
        mode: AuthMode,
        now: Timestamp,
        client: ClientInfo,
    ) -> SessionRecord {
        self.new_record_with(token.id().clone(), token.secret_hash(), user_id, mode, now, client)
    }

    /// A record for a fresh login at `now` whose credential hashes to `secret_hash`.
    pub fn new_record_with(
        &self,
        id: SessionId,
        secret_hash: SecretHash,
        user_id: UserId,
        mode: AuthMode,
        now: Timestamp,
        client: ClientInfo,
    ) -> SessionRecord {
        let (idle, absolute) = self.lifetimes(mode);
        let expires_at = now.plus(absolute);
        SessionRecord {
            id,
            secret_hash,
            user_id,
            mode,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now.plus(idle).min(expires_at),
            expires_at,
            ip: client.ip.map(SmolStr::from),
            user_agent: client.user_agent.as_deref().map(|ua| truncate_user_agent(ua).into()),
            refresh_generation: 0,
            rotated_at: None,
            grant: None,
            amr: Amr::PWD,
        }
    }

    /// How stale `last_seen_at` may get before a use is written back: a quarter of the idle
    /// timeout, at most one minute.
    pub fn touch_interval(&self) -> Duration {
        (self.idle_timeout / 4).min(Duration::from_secs(60))
    }

    /// If the record should be touched at `now`, the new `(last_seen_at, idle_expires_at)`.
    pub fn touch(&self, record: &SessionRecord, now: Timestamp) -> Option<(Timestamp, Timestamp)> {
        if now.since(record.last_seen_at) < self.touch_interval() {
            return None;
        }
        let (idle, _) = self.lifetimes(record.mode);
        Some((now, now.plus(idle).min(record.expires_at)))
    }
}

fn truncate_user_agent(ua: &str) -> String {
    if ua.len() <= MAX_USER_AGENT_LEN {
        return ua.to_owned();
    }
    let mut end = MAX_USER_AGENT_LEN;
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    ua[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SessionPolicy {
        SessionPolicy {
            idle_timeout: Duration::from_secs(2),
            absolute_timeout: Duration::from_secs(5),
            refresh_ttl: Duration::from_secs(60),
        }
    }

    fn record(now: Timestamp) -> SessionRecord {
        let client = ClientInfo { ip: None, user_agent: Some("ua".into()) };
        policy().new_record(&SessionToken::generate(), UserId::generate(), AuthMode::Session, now, client)
    }

    #[test]
    fn idle_and_absolute_deadlines() {
        let t0 = Timestamp::from_unix_millis(1_000_000);
        let mut r = record(t0);
        assert!(r.is_live(t0));
        assert!(r.is_live(t0.plus(Duration::from_millis(1999))));
        assert!(!r.is_live(t0.plus(Duration::from_secs(2))));
        // Used after 1.5 s: the idle deadline moves, the absolute one does not.
        let t1 = t0.plus(Duration::from_millis(1500));
        let (seen, idle) = policy().touch(&r, t1).expect("touch due");
        r.last_seen_at = seen;
        r.idle_expires_at = idle;
        assert!(r.is_live(t0.plus(Duration::from_millis(3400))));
        // Touching can never push the idle deadline past the absolute one.
        let t2 = t0.plus(Duration::from_millis(4500));
        let (_, idle) = policy().touch(&r, t2).expect("touch due");
        assert_eq!(idle, r.expires_at);
        assert_eq!(r.dies_at(), r.idle_expires_at.min(r.expires_at));
    }

    #[test]
    fn touches_are_lazy() {
        let t0 = Timestamp::from_unix_millis(1_000_000);
        let r = record(t0);
        assert_eq!(policy().touch_interval(), Duration::from_millis(500));
        assert!(policy().touch(&r, t0.plus(Duration::from_millis(499))).is_none());
        assert!(policy().touch(&r, t0.plus(Duration::from_millis(500))).is_some());
        let long = SessionPolicy {
            idle_timeout: Duration::from_secs(3600),
            absolute_timeout: Duration::from_secs(7200),
            refresh_ttl: Duration::from_secs(60),
        };
        assert_eq!(long.touch_interval(), Duration::from_secs(60));
    }

    #[test]
    fn a_grant_reads_back_as_it_was_written() {
        let grant = Grant {
            client_id: ClientId::generate(),
            parent: SessionId::generate(),
            auth_time: Timestamp::from_unix_millis(1_800_000_000_123),
            scope: "openid email offline_access".into(),
        };
        assert_eq!(Grant::decode(&grant.encode()), Some(grant.clone()));
        assert!(grant.has_scope("email") && !grant.has_scope("mail") && !grant.has_scope(""));
        let empty = Grant { scope: SmolStr::default(), ..grant };
        assert_eq!(Grant::decode(&empty.encode()), Some(empty));
        for bad in ["", "a", "a b", "a b c", "client not-a-session 1 openid", "cli\u{e9} x 1 openid"] {
            assert_eq!(Grant::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn long_user_agents_are_cut_on_a_char_boundary() {
        let ua = "é".repeat(400);
        let cut = truncate_user_agent(&ua);
        assert!(cut.len() <= MAX_USER_AGENT_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
