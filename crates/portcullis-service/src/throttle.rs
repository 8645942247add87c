//! Failed-login throttling.
//!
//! Three counters are kept per attempt, each with its own rule ([`ThrottleRules`], from the
//! `[throttle]` settings):
//!
//! - **account + address**: one attacker hammering one account from one place is slowed hard
//!   (after 5 failures, 1 s doubling up to 15 min).
//! - **address**: one place trying many accounts (credential stuffing) is slowed hard too.
//! - **account**, from anywhere: caps guesses against one account from many addresses at
//!   100 per hour (ASVS), while its delay never exceeds one minute, so someone else's guesses
//!   can keep the real owner waiting at most that long.
//!
//! An attempt is counted on all three *before* its password is checked, atomically with the test
//! that none of them is waiting, so a burst of parallel attempts is admitted exactly as far as the
//! same attempts one after another would be (and, on Redis, across every node). While a counter
//! waits, the attempt is refused (`429` with `Retry-After`) before any password hashing, and
//! what the other counters had counted for it is given back. A success clears the account's
//! counters and gives back its count on the address's (clearing that would let logging into
//! one's own account reset a stuffing run).
//! Counters are keyed by an HMAC of the canonical email and the address, so unknown and known
//! emails are throttled alike and the store never holds either in clear.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::Timestamp;
use portcullis_core::secret::KeyedDigest;
use portcullis_store::{Attempt, StoreResult, ThrottleRule, ThrottleStore};

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

/// The rule of each counter (the `[throttle]` settings).
#[derive(Debug, Clone)]
pub struct ThrottleRules {
    pub account: ThrottleRule,
    pub address: ThrottleRule,
    pub account_address: ThrottleRule,
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
    /// Which of them counted this attempt (and so must give it back or be cleared).
    counted: Vec<bool>,
}

impl Throttle {
    pub fn new(rules: ThrottleRules, store: Arc<dyn ThrottleStore>, secret: &[u8]) -> Self {
        Self {
            store,
            refused: quick_cache::sync::Cache::new(10_000),
            digest: KeyedDigest::new(secret),
            account: rules.account,
            address: rules.address,
            account_address: rules.account_address,
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
        Keys { counted: vec![false; keys.len()], keys }
    }

    fn rule(&self, scope: Scope) -> &ThrottleRule {
        match scope {
            Scope::Account => &self.account,
            Scope::Address => &self.address,
            Scope::AccountAddress => &self.account_address,
        }
    }

    /// Counts an attempt at `now` on every counter before it is checked. `Some` when a counter
    /// is waiting: the latest wait, and nothing stays counted for the attempt.
    pub async fn begin(&self, keys: &mut Keys, now: Timestamp) -> StoreResult<Option<Blocked>> {
        let attempts = keys.keys.iter().map(|(scope, k)| self.store.begin_attempt(k, self.rule(*scope), now));
        let attempts = futures_util::future::join_all(attempts).await;
        keys.counted = attempts.iter().map(|a| matches!(a, Ok(Attempt::Admitted(_)))).collect();
        let mut blocked: Option<Blocked> = None;
        let mut error = None;
        for ((scope, key), attempt) in keys.keys.iter().zip(attempts) {
            match attempt {
                Ok(Attempt::Admitted(_)) => {}
                Ok(Attempt::Refused { until }) => {
                    if blocked.as_ref().is_none_or(|b| b.until < until) {
                        blocked = Some(Blocked { until, scope: *scope, key: key.clone() });
                    }
                }
                Err(e) => error = Some(e),
            }
        }
        if blocked.is_some() || error.is_some() {
            self.give_back(keys, |_| true, now).await?;
        }
        match error {
            Some(e) => Err(e),
            None => Ok(blocked),
        }
    }

    /// Gives back the attempt on the counted counters that `which` names.
    async fn give_back(&self, keys: &Keys, which: impl Fn(Scope) -> bool, now: Timestamp) -> StoreResult<()> {
        let refunds = keys
            .keys
            .iter()
            .zip(&keys.counted)
            .filter(|((scope, _), counted)| **counted && which(*scope))
            .map(|((scope, k), _)| self.store.refund_attempt(k, self.rule(*scope), now));
        futures_util::future::try_join_all(refunds).await.map(drop)
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

    /// After a success: clears the account's counters and gives back the attempt on the
    /// address's.
    pub async fn succeeded(&self, keys: &Keys, now: Timestamp) -> StoreResult<()> {
        let clears = keys
            .keys
            .iter()
            .zip(&keys.counted)
            .filter(|((scope, _), counted)| **counted && *scope != Scope::Address)
            .map(|((_, k), _)| self.store.clear_failures(k));
        futures_util::future::try_join_all(clears).await?;
        self.give_back(keys, |scope| scope == Scope::Address, now).await
    }
}
