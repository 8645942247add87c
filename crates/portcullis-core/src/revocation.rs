//! Revoking JWTs before they expire: a deny-list and per-user not-before epochs, kept in memory
//! on every node (the replica) and fed by the store.
//!
//! - A **deny-list** entry names one access token (`jti`) or every access token of one session
//!   (`sid`), and is kept only until the last token it can match has expired.
//! - A user's **not-before epoch** kills every token of that user issued before it. Epochs are
//!   kept in milliseconds while `iat` has whole seconds, so tokens are issued with
//!   `iat = max(now, ceil(epoch))` ([`Revocations::issue_time`]): a login just after a
//!   "sign out everywhere" is never caught by it, and a token issued just before always is.
//!
//! Changes arrive as [`RevocationEvent`]s; applying one twice is harmless. Revocations only
//! ever grow until they lapse (nothing is un-revoked), so whenever the feed may have missed
//! something the replica *merges* the store's snapshot into what it holds
//! ([`Revocations::merge`]) rather than replacing it: a store that restarted empty cannot bring
//! a revoked token back to life, and what it lacks is handed back to it.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::clock::Timestamp;
use crate::jwt::AccessClaims;
use crate::user::UserId;

/// What one deny-list entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Denied {
    /// One access token, by `jti`.
    Token(String),
    /// Every access token of one session record, by `sid`.
    Session(String),
}

impl Denied {
    /// The stored form: `jti:<id>` or `sid:<id>`.
    pub fn key(&self) -> String {
        match self {
            Denied::Token(j) => format!("jti:{j}"),
            Denied::Session(s) => format!("sid:{s}"),
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        if let Some(j) = key.strip_prefix("jti:") {
            Some(Denied::Token(j.to_owned()))
        } else {
            key.strip_prefix("sid:").map(|s| Denied::Session(s.to_owned()))
        }
    }
}

/// One change to the revocation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationEvent {
    Deny { what: Denied, until: Timestamp },
    NotBefore { user: UserId, at: Timestamp },
}

/// The whole revocation state at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSnapshot {
    pub denied: Vec<(Denied, Timestamp)>,
    pub not_before: Vec<(UserId, Timestamp)>,
}

impl RevocationSnapshot {
    pub fn is_empty(&self) -> bool {
        self.denied.is_empty() && self.not_before.is_empty()
    }
}

/// Keyed by plain strings so the per-request checks look up borrowed `&str`s without
/// allocating.
#[derive(Default)]
struct State {
    denied_tokens: HashMap<String, Timestamp>,
    denied_sessions: HashMap<String, Timestamp>,
    not_before: HashMap<String, Timestamp>,
}

impl State {
    fn deny(&mut self, what: &Denied, until: Timestamp) {
        let (map, id) = match what {
            Denied::Token(j) => (&mut self.denied_tokens, j),
            Denied::Session(s) => (&mut self.denied_sessions, s),
        };
        let e = map.entry(id.clone()).or_insert(until);
        *e = (*e).max(until);
    }
}

/// The in-memory replica every verification consults.
#[derive(Default)]
pub struct Revocations {
    state: RwLock<State>,
}

impl Revocations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&self, event: &RevocationEvent) {
        let Ok(mut s) = self.state.write() else { return };
        match event {
            RevocationEvent::Deny { what, until } => s.deny(what, *until),
            RevocationEvent::NotBefore { user, at } => {
                let e = s.not_before.entry(user.to_string()).or_insert(*at);
                *e = (*e).max(*at);
            }
        }
    }

    /// Replaces the whole state.
    pub fn replace(&self, snapshot: RevocationSnapshot) {
        if let Ok(mut s) = self.state.write() {
            *s = State::default();
            for (what, until) in &snapshot.denied {
                s.deny(what, *until);
            }
            s.not_before = snapshot.not_before.into_iter().map(|(u, t)| (u.to_string(), t)).collect();
        }
    }

    /// Adds `snapshot` to what is held, keeping everything already known, and returns what
    /// this replica holds in force at `now` that the snapshot lacked (or had with an earlier
    /// lapse or epoch): the entries a store that lost its data must be given back.
    pub fn merge(&self, snapshot: RevocationSnapshot, now: Timestamp) -> RevocationSnapshot {
        let Ok(mut s) = self.state.write() else { return RevocationSnapshot::default() };
        let mut tokens: HashMap<&str, Timestamp> = HashMap::new();
        let mut sessions: HashMap<&str, Timestamp> = HashMap::new();
        for (what, until) in &snapshot.denied {
            let (map, id) = match what {
                Denied::Token(j) => (&mut tokens, j.as_str()),
                Denied::Session(sid) => (&mut sessions, sid.as_str()),
            };
            let e = map.entry(id).or_insert(*until);
            *e = (*e).max(*until);
        }
        let epochs: HashMap<&str, Timestamp> = snapshot.not_before.iter().map(|(u, t)| (u.as_str(), *t)).collect();
        let mut missing = RevocationSnapshot::default();
        let lacking = |theirs: &HashMap<&str, Timestamp>, id: &str, ours: Timestamp| {
            now < ours && theirs.get(id).is_none_or(|t| *t < ours)
        };
        for (id, until) in &s.denied_tokens {
            if lacking(&tokens, id, *until) {
                missing.denied.push((Denied::Token(id.clone()), *until));
            }
        }
        for (id, until) in &s.denied_sessions {
            if lacking(&sessions, id, *until) {
                missing.denied.push((Denied::Session(id.clone()), *until));
            }
        }
        for (user, at) in &s.not_before {
            if epochs.get(user.as_str()).is_none_or(|t| t < at) {
                missing.not_before.push((UserId::from_stored(user.clone()), *at));
            }
        }
        for (what, until) in &snapshot.denied {
            s.deny(what, *until);
        }
        for (user, at) in &snapshot.not_before {
            let e = s.not_before.entry(user.to_string()).or_insert(*at);
            *e = (*e).max(*at);
        }
        missing
    }

    /// Whether a verified token has been revoked. Fails closed if the state is unreadable.
    pub fn is_revoked(&self, claims: &AccessClaims, now: Timestamp) -> bool {
        let Ok(s) = self.state.read() else { return true };
        let live = |until: &Timestamp| now < *until;
        if s.denied_tokens.get(claims.jti.as_str()).is_some_and(live)
            || s.denied_sessions.get(claims.sid.as_str()).is_some_and(live)
        {
            return true;
        }
        s.not_before.get(claims.sub.as_str()).is_some_and(|nb| claims.issued_at() < *nb)
    }

    /// The `iat` to give a token issued now for `user`: never before the user's epoch.
    pub fn issue_time(&self, user: &UserId, now: Timestamp) -> i64 {
        let now_s = now.unix_seconds();
        let epoch = self.state.read().ok().and_then(|s| s.not_before.get(user.as_str()).copied());
        match epoch {
            Some(nb) => now_s.max(nb.unix_millis().div_euclid(1000) + i64::from(nb.unix_millis() % 1000 != 0)),
            None => now_s,
        }
    }

    /// What this replica holds in force at `now`, for services that keep a replica of their
    /// own: deny-list entries that have not lapsed, and the epochs of the last `horizon` (the
    /// access-token lifetime with leeway: an older epoch can only catch tokens that have expired
    /// anyway).
    pub fn snapshot(&self, now: Timestamp, horizon: std::time::Duration) -> RevocationSnapshot {
        let Ok(s) = self.state.read() else { return RevocationSnapshot::default() };
        let oldest = now.unix_millis().saturating_sub(i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX));
        let mut denied: Vec<(Denied, Timestamp)> = s
            .denied_tokens
            .iter()
            .filter(|(_, until)| now < **until)
            .map(|(j, until)| (Denied::Token(j.clone()), *until))
            .chain(
                s.denied_sessions
                    .iter()
                    .filter(|(_, until)| now < **until)
                    .map(|(sid, until)| (Denied::Session(sid.clone()), *until)),
            )
            .collect();
        denied.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.key().cmp(&b.0.key())));
        let mut not_before: Vec<(UserId, Timestamp)> = s
            .not_before
            .iter()
            .filter(|(_, at)| at.unix_millis() >= oldest)
            .map(|(u, at)| (UserId::from_stored(u.clone()), *at))
            .collect();
        not_before.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
        RevocationSnapshot { denied, not_before }
    }

    /// Forgets deny-list entries that can no longer match anything.
    pub fn prune(&self, now: Timestamp) {
        if let Ok(mut s) = self.state.write() {
            s.denied_tokens.retain(|_, until| now < *until);
            s.denied_sessions.retain(|_, until| now < *until);
        }
    }

    /// How many deny-list entries and epochs are held.
    pub fn sizes(&self) -> (usize, usize) {
        self.state
            .read()
            .map(|s| (s.denied_tokens.len() + s.denied_sessions.len(), s.not_before.len()))
            .unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::Audience;

    fn claims(user: &UserId, iat_s: i64) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: user.to_string(),
            aud: Audience::One("a".into()),
            exp: iat_s + 900,
            iat: iat_s,
            nbf: Some(iat_s),
            jti: "j1".into(),
            sid: "s1".into(),
            client_id: "portcullis".into(),
            roles: vec![],
            email: String::new(),
            scope: String::new(),
            amr: Vec::new(),
        }
    }

    #[test]
    fn deny_entries_match_until_they_lapse() {
        let r = Revocations::new();
        let user = UserId::generate();
        let c = claims(&user, 1000);
        let t = Timestamp::from_unix_millis(1_000_000);
        assert!(!r.is_revoked(&c, t));
        r.apply(&RevocationEvent::Deny {
            what: Denied::Token("j1".into()),
            until: Timestamp::from_unix_millis(1_900_000),
        });
        assert!(r.is_revoked(&c, t));
        assert!(!r.is_revoked(&c, Timestamp::from_unix_millis(1_900_000)));
        r.prune(Timestamp::from_unix_millis(1_900_000));
        assert_eq!(r.sizes().0, 0);
        r.apply(&RevocationEvent::Deny {
            what: Denied::Session("s1".into()),
            until: Timestamp::from_unix_millis(2_000_000),
        });
        assert!(r.is_revoked(&c, t));
        let mut other = c.clone();
        other.sid = "s2".into();
        assert!(!r.is_revoked(&other, t));
    }

    #[test]
    fn epochs_and_issue_times_never_collide() {
        let r = Revocations::new();
        let user = UserId::generate();
        // Sign-out-everywhere at 100.5 s.
        let epoch = Timestamp::from_unix_millis(100_500);
        r.apply(&RevocationEvent::NotBefore { user: user.clone(), at: epoch });
        // A token issued at 100.3 s carried iat = 100: dead.
        assert!(r.is_revoked(&claims(&user, 100), Timestamp::from_unix_millis(100_600)));
        // A login at 100.7 s is issued with iat = 101: alive.
        let iat = r.issue_time(&user, Timestamp::from_unix_millis(100_700));
        assert_eq!(iat, 101);
        assert!(!r.is_revoked(&claims(&user, iat), Timestamp::from_unix_millis(100_700)));
        // Other users are unaffected; an exact-second epoch needs no bump.
        assert_eq!(r.issue_time(&UserId::generate(), Timestamp::from_unix_millis(100_700)), 100);
        r.apply(&RevocationEvent::NotBefore { user: user.clone(), at: Timestamp::from_unix_millis(200_000) });
        assert_eq!(r.issue_time(&user, Timestamp::from_unix_millis(200_000)), 200);
        // Epochs only move forward.
        r.apply(&RevocationEvent::NotBefore { user: user.clone(), at: epoch });
        assert!(r.is_revoked(&claims(&user, 150), Timestamp::from_unix_millis(200_100)));
    }

    #[test]
    fn a_merge_keeps_what_is_known_and_returns_what_the_store_lacks() {
        let r = Revocations::new();
        let (user, other) = (UserId::generate(), UserId::generate());
        let now = Timestamp::from_unix_millis(1_000);
        let far = Timestamp::from_unix_millis(900_000);
        r.apply(&RevocationEvent::Deny { what: Denied::Token("j1".into()), until: far });
        r.apply(&RevocationEvent::Deny { what: Denied::Session("lapsed".into()), until: now });
        r.apply(&RevocationEvent::NotBefore { user: user.clone(), at: Timestamp::from_unix_millis(500) });
        // The store restarted empty: nothing it says can undo a revocation, and it is told
        // what it lost (not what has lapsed).
        let missing = r.merge(RevocationSnapshot::default(), now);
        assert!(r.is_revoked(&claims(&user, 1_000), now), "the denied jti stays denied");
        assert!(r.is_revoked(&claims(&user, 0), now), "the epoch stays");
        assert_eq!(missing.denied, vec![(Denied::Token("j1".into()), far)]);
        assert_eq!(missing.not_before, vec![(user.clone(), Timestamp::from_unix_millis(500))]);
        // A store that has everything (and more) lacks nothing, and what it has is added.
        let full = RevocationSnapshot {
            denied: vec![(Denied::Token("j1".into()), far), (Denied::Session("s9".into()), far)],
            not_before: vec![(user.clone(), Timestamp::from_unix_millis(500)), (other.clone(), now)],
        };
        assert!(r.merge(full, now).is_empty());
        let mut c = claims(&other, 0);
        c.jti = "unrelated".into();
        assert!(r.is_revoked(&c, now), "the other user's epoch was added");
        // An older epoch in the store is lacking too.
        let stale =
            RevocationSnapshot { denied: vec![], not_before: vec![(user.clone(), Timestamp::from_unix_millis(1))] };
        let missing = r.merge(stale, now);
        assert!(missing.not_before.contains(&(user, Timestamp::from_unix_millis(500))));
    }

    #[test]
    fn a_snapshot_replaces_everything() {
        let r = Revocations::new();
        let user = UserId::generate();
        r.apply(&RevocationEvent::Deny {
            what: Denied::Token("old".into()),
            until: Timestamp::from_unix_millis(i64::MAX),
        });
        r.replace(RevocationSnapshot {
            denied: vec![(Denied::Token("j1".into()), Timestamp::from_unix_millis(i64::MAX))],
            not_before: vec![],
        });
        assert_eq!(r.sizes(), (1, 0));
        assert!(r.is_revoked(&claims(&user, 1), Timestamp::from_unix_millis(0)));
        assert_eq!(Denied::from_key(&Denied::Session("x".into()).key()), Some(Denied::Session("x".into())));
        assert_eq!(Denied::from_key("bogus"), None);
    }
}
