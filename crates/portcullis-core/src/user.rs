//! Users and roles.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use smol_str::SmolStr;

use crate::clock::Timestamp;
use crate::email::Email;

/// A user's stable identifier (a UUID, time-ordered).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(SmolStr);

impl UserId {
    pub fn generate() -> Self {
        Self(SmolStr::new(uuid::Uuid::now_v7().hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer())))
    }

    /// Accepts only a canonical hyphenated lowercase UUID.
    pub fn parse(s: &str) -> Option<Self> {
        let u = uuid::Uuid::try_parse(s).ok()?;
        let canonical = u.hyphenated().to_string();
        (canonical == s).then_some(Self(canonical.into()))
    }

    /// Rebuilds an id read back from a store.
    pub fn from_stored(s: impl AsRef<str>) -> Self {
        Self(SmolStr::new(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a role name is 1 to 64 characters of a-z, 0-9, '_', '-', '.' and ':', starting with a letter")]
pub struct RoleError;

/// A role name. Every user has [`Role::USER`]; [`Role::ADMIN`] opens the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Role(SmolStr);

impl Role {
    pub const USER: &'static str = "user";
    pub const ADMIN: &'static str = "admin";

    pub fn parse(s: &str) -> Result<Self, RoleError> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.' | ':'));
        if first_ok && rest_ok && s.len() <= 64 { Ok(Self(SmolStr::new(s))) } else { Err(RoleError) }
    }

    pub fn user() -> Self {
        Self(SmolStr::new_static(Self::USER))
    }

    pub fn admin() -> Self {
        Self(SmolStr::new_static(Self::ADMIN))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses role names into a sorted set that always contains `user`.
pub fn role_set<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<BTreeSet<Role>, RoleError> {
    let mut set = BTreeSet::from([Role::user()]);
    for n in names {
        set.insert(Role::parse(n)?);
    }
    Ok(set)
}

/// A user account, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    /// Shared: the per-request user cache hands out copies of the user.
    pub roles: Arc<BTreeSet<Role>>,
    pub disabled: bool,
    /// The person showed they receive mail at the address (they followed a verification or
    /// password-reset link sent to it), or an administrator made the account and vouched for
    /// it. With `registration.verify_email`, an account without it does not sign in.
    pub email_verified: bool,
    pub created_at: Timestamp,
}

/// Whether a role set holds the role called `name`.
pub fn has_role(roles: &BTreeSet<Role>, name: &str) -> bool {
    roles.iter().any(|r| r.as_str() == name)
}

/// A role set as one comma-separated string (the `X-Portcullis-Roles` and stored form).
pub fn join_roles(roles: &BTreeSet<Role>) -> String {
    let mut joined = String::with_capacity(roles.iter().map(|r| r.as_str().len() + 1).sum());
    for role in roles {
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(role.as_str());
    }
    joined
}

impl User {
    pub fn has_role(&self, name: &str) -> bool {
        has_role(&self.roles, name)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(Role::ADMIN)
    }

    pub fn roles_joined(&self) -> String {
        join_roles(&self.roles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_restricted() {
        for good in ["user", "admin", "billing:read", "team-a", "ops.v2", "a1"] {
            assert!(Role::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Admin", "1abc", "a b", "a,b", "ä", &"a".repeat(65)] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn role_sets_join_in_order_with_commas() {
        assert_eq!(join_roles(&role_set([]).expect("roles")), "user");
        assert_eq!(join_roles(&role_set(["ops:read", "admin"]).expect("roles")), "admin,ops:read,user");
        assert_eq!(join_roles(&BTreeSet::new()), "");
    }

    #[test]
    fn every_role_set_contains_user() {
        let set = role_set(["admin", "admin"]).expect("valid");
        assert_eq!(set.iter().map(Role::as_str).collect::<Vec<_>>(), ["admin", "user"]);
        assert!(role_set(["Bad"]).is_err());
    }

    #[test]
    fn user_ids_are_canonical_uuids() {
        let id = UserId::generate();
        assert_eq!(UserId::parse(id.as_str()), Some(id.clone()));
        assert!(UserId::parse(&id.as_str().to_uppercase()).is_none());
        assert!(UserId::parse("../etc/passwd").is_none());
    }
}
