//! Failed-login throttling.
//!
//! Three counters are kept per attempt, each with its own rule (`[throttle]` settings):
//!
//! - **account + address**: one attacker hammering one account from one place is slowed hard
//!   (after 5 failures, 1 s doubling up to 15 min).
//! - **address**: one place trying many accounts (credential stuffing) is slowed hard too.
//! - **account**, from anywhere: caps guesses against one account from many addresses at
//!   100 per hour (ASVS), while its delay never exceeds one minute, so someone else's guesses
//!   can keep the real owner waiting at most that long.
//!
//! An attempt is refused (`429` with `Retry-After`) before any password hashing while one of its
//! counters is blocked; a failure counts on all three; a success clears the account's counters
//! (but not the address's, or logging into one's own account would reset a stuffing run).
//! Counters are keyed by an HMAC of the canonical email and the address, so unknown and known
//! emails are throttled alike and the store never holds either in clear.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::Timestamp;
use portcullis_core::secret::KeyedDigest;
use portcullis_store::{StoreResult, ThrottleRule, ThrottleState, ThrottleStore};

use crate::settings::Settings;

/// The name of the server secret that keys throttle counters.
pub const THROTTLE_KEY_NAME: &str = "throttle-key";

/// Which counter refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Account,
    Address,
    AccountAddress,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Address => "address",
            Scope::AccountAddress => "account_address",
        }
    }
}

/// An attempt that must wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub until: Timestamp,
    pub scope: Scope,
    /// The counter that refused.
    key: String,
}

impl Blocked {
    /// Whole seconds to wait (at least one), for `Retry-After`.
    pub fn retry_after(&self, now: Timestamp) -> Duration {
        Duration::from_secs(self.until.since(now).as_millis().div_ceil(1000).max(1) as u64)
    }
}

pub struct Throttle {
    store: Arc<dyn ThrottleStore>,
    /// Waits already refused once on this node (counter key, end of the wait): refusals are
    /// cheap for a client to provoke, so only the first of each wait is stored in the audit log.
    refused: quick_cache::sync::Cache<(String, i64), ()>,
    digest: KeyedDigest,
    account: ThrottleRule,
    address: ThrottleRule,
    account_address: ThrottleRule,
}

/// The counters one attempt touches.
pub struct Keys {
    keys: Vec<(Scope, String)>,
    /// Which of them had failures on record when checked: only those need clearing.
    on_record: Vec<bool>,
}

impl Throttle {
    pub fn new(settings: &Settings, store: Arc<dyn ThrottleStore>, secret: &[u8]) -> Self {
        let t = &settings.throttle;
        Self {
            store,
            refused: quick_cache::sync::Cache::new(10_000),
            digest: KeyedDigest::new(secret),
            account: settings.throttle_rule(t.account),
            address: settings.throttle_rule(t.address),
            account_address: settings.throttle_rule(t.account_address),
        }
    }

    /// The counters for an attempt on `account` (the canonical email, or what was typed,
    /// trimmed and lower-cased, when it is not an email) from `ip`.
    pub fn keys(&self, account: &str, ip: Option<&str>) -> Keys {
        let mut keys = vec![(Scope::Account, format!("a:{}", self.digest.digest(&[b"account", account.as_bytes()])))];
        if let Some(ip) = ip {
            keys.push((Scope::Address, format!("i:{}", self.digest.digest(&[b"address", ip.as_bytes()]))));
            let pair = self.digest.digest(&[b"pair", account.as_bytes(), ip.as_bytes()]);
            keys.push((Scope::AccountAddress, format!("p:{pair}")));
        }
        Keys { on_record: vec![true; keys.len()], keys }
    }

    fn rule(&self, scope: Scope) -> &ThrottleRule {
        match scope {
            Scope::Account => &self.account,
            Scope::Address => &self.address,
            Scope::AccountAddress => &self.account_address,
        }
    }

    /// The latest wait any of the counters imposes at `now`, if one does.
    pub async fn check(&self, keys: &mut Keys, now: Timestamp) -> StoreResult<Option<Blocked>> {
        let states =
            futures_util::future::try_join_all(keys.keys.iter().map(|(_, k)| self.store.throttle_state(k, now)));
        let states: Vec<Option<ThrottleState>> = states.await?;
        keys.on_record = states.iter().map(Option::is_some).collect();
        Ok(keys
            .keys
            .iter()
            .zip(states)
            .filter_map(|((scope, key), st)| {
                Some(Blocked { until: st?.blocked_at(now)?, scope: *scope, key: key.clone() })
            })
            .max_by_key(|b| b.until))
    }

    /// Whether this is the first refusal of this wait on this node.
    pub fn first_refusal(&self, blocked: &Blocked) -> bool {
        let id = (blocked.key.clone(), blocked.until.unix_millis());
        if self.refused.get(&id).is_some() {
            return false;
        }
        self.refused.insert(id, ());
        true
    }

    /// Counts a failure on every counter.
    pub async fn failed(&self, keys: &Keys, now: Timestamp) -> StoreResult<()> {
        let writes = keys.keys.iter().map(|(scope, k)| self.store.record_failure(k, self.rule(*scope), now));
        futures_util::future::try_join_all(writes).await.map(drop)
    }

    /// Forgets expired counters.
    pub async fn purge(&self, now: Timestamp) -> StoreResult<u64> {
        self.store.purge_throttles(now).await
    }

    /// Clears the account's counters after a success (those with failures on record: most
    /// logins have none, and cost no write here).
    pub async fn succeeded(&self, keys: &Keys) -> StoreResult<()> {
        let clears = keys
            .keys
            .iter()
            .zip(&keys.on_record)
            .filter(|((scope, _), on_record)| **on_record && *scope != Scope::Address)
            .map(|((_, k), _)| self.store.clear_failures(k));
        futures_util::future::try_join_all(clears).await.map(drop)
    }
}
