//! What Portcullis does, without HTTP: register, log in, authenticate a session credential,
//! list and end sessions, change passwords, and the admin operations.
//!
//! Routes parse requests and call these; the CLI calls them too, so both go through the same
//! rules (canonical emails, the password policy, the hashing pool, the per-user index).

use std::collections::BTreeSet;
use std::sync::Arc;

use portcullis_core::{
    AuthMode, ClientInfo, Clock, Email, EmailError, Password, PasswordError, PasswordHasher, Role,
    RoleError, SessionId, SessionPolicy, SessionRecord, SessionToken, User, UserId, role_set,
};
use portcullis_store::{NewUser, SessionStore, StoreError, UserStore, UserUpdate};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("not authenticated")]
    Unauthenticated,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error(transparent)]
    Email(#[from] EmailError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error("no such session")]
    SessionNotFound,
    #[error("no such user")]
    UserNotFound,
    #[error("an administrator cannot disable themselves or remove their own admin role")]
    SelfLockout,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request's verified identity: the live session record and its (enabled) user.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: User,
    pub session: SessionRecord,
}

/// A successful login.
#[derive(Debug)]
pub struct Login {
    pub user: User,
    pub session: SessionRecord,
    /// The credential for the client. Never logged.
    pub token: SessionToken,
}

#[derive(Clone)]
pub struct Auth {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub hasher: PasswordHasher,
    pub clock: Arc<dyn Clock>,
    pub policy: SessionPolicy,
}

impl Auth {
    /// Creates an account with a policy-checked password; `roles` is added to `user`.
    pub async fn create_user(
        &self,
        email: &str,
        password: String,
        roles: &[String],
    ) -> Result<User, AuthError> {
        let email = Email::parse(email)?;
        let password = Password::new(password)?;
        let roles = role_set(roles.iter().map(String::as_str))?;
        let password_hash = self.hasher.hash(password).await?;
        let user = self
            .users
            .create_user(
                NewUser {
                    email,
                    password_hash,
                    roles,
                },
                self.clock.now(),
            )
            .await?;
        tracing::info!(user = %user.id, "user created");
        Ok(user)
    }

    /// Checks credentials and opens a new session record. Unknown email, wrong password and a
    /// disabled account all take one Argon2 verification and give the same error.
    pub async fn login(
        &self,
        email: &str,
        password: String,
        mode: AuthMode,
        client: ClientInfo,
    ) -> Result<Login, AuthError> {
        let password = Password::candidate(password).map_err(|_| AuthError::InvalidCredentials)?;
        let found = match Email::parse(email) {
            Ok(email) => self.users.user_by_email(&email).await?,
            Err(_) => None,
        };
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        let ok = self.hasher.verify_or_dummy(password, hash).await?;
        let user = match user {
            Some(user) if ok && !user.disabled => user,
            _ => return Err(AuthError::InvalidCredentials),
        };
        let token = SessionToken::generate();
        let session =
            self.policy
                .new_record(&token, user.id.clone(), mode, self.clock.now(), client);
        self.sessions.create(&session).await?;
        tracing::info!(user = %user.id, session = %session.id, mode = %mode, "login");
        Ok(Login {
            user,
            session,
            token,
        })
    }

    /// Resolves a session credential. The record must exist, its secret must match, it must be
    /// live, and its user must exist and be enabled; a use is written back lazily.
    pub async fn authenticate(&self, token: &SessionToken) -> Result<Authenticated, AuthError> {
        let now = self.clock.now();
        let session = self
            .sessions
            .get(token.id())
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        if !session.secret_hash.matches(&token.secret_hash()) {
            return Err(AuthError::Unauthenticated);
        }
        if !session.is_live(now) {
            self.sessions.delete(&session.id).await?;
            return Err(AuthError::Unauthenticated);
        }
        let user = match self.users.user(&session.user_id).await? {
            Some(u) if !u.disabled => u,
            _ => return Err(AuthError::Unauthenticated),
        };
        let mut session = session;
        if let Some((seen, idle)) = self.policy.touch(&session, now) {
            self.sessions.touch(&session.id, seen, idle).await?;
            session.last_seen_at = seen;
            session.idle_expires_at = idle;
        }
        Ok(Authenticated { user, session })
    }

    /// Ends one session if the credential names a live one (used on login, so a browser that
    /// signs in again never keeps its old session alongside the new one).
    pub async fn end_presented(&self, token: &SessionToken) -> Result<(), AuthError> {
        if let Some(s) = self.sessions.get(token.id()).await?
            && s.secret_hash.matches(&token.secret_hash())
        {
            self.sessions.delete(&s.id).await?;
        }
        Ok(())
    }

    pub async fn logout(&self, session: &SessionId) -> Result<(), AuthError> {
        self.sessions.delete(session).await?;
        Ok(())
    }

    /// Ends every session of the user except `keep`.
    pub async fn end_sessions(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<u64, AuthError> {
        let n = self.sessions.delete_for_user(user, keep).await?;
        tracing::info!(user = %user, ended = n, "sessions ended");
        Ok(n)
    }

    /// The user's live sessions, oldest first; dead ones met on the way are deleted.
    pub async fn sessions_of(&self, user: &UserId) -> Result<Vec<SessionRecord>, AuthError> {
        let now = self.clock.now();
        let mut live = Vec::new();
        for s in self.sessions.list_for_user(user).await? {
            if s.is_live(now) {
                live.push(s);
            } else {
                self.sessions.delete(&s.id).await?;
            }
        }
        Ok(live)
    }

    /// Ends one of the user's own sessions; another user's id is indistinguishable from none.
    pub async fn end_own_session(&self, user: &UserId, id: &str) -> Result<(), AuthError> {
        let id = SessionId::parse(id).ok_or(AuthError::SessionNotFound)?;
        match self.sessions.get(&id).await? {
            Some(s) if &s.user_id == user => {
                self.sessions.delete(&id).await?;
                Ok(())
            }
            _ => Err(AuthError::SessionNotFound),
        }
    }

    /// Changes the password after checking the current one, then ends every other session.
    pub async fn change_password(
        &self,
        who: &Authenticated,
        current: String,
        new: String,
    ) -> Result<(), AuthError> {
        let current = Password::candidate(current).map_err(|_| AuthError::WrongPassword)?;
        let new = Password::new(new)?;
        let hash = self.users.password_hash(&who.user.id).await?;
        if !self.hasher.verify_or_dummy(current, hash).await? {
            return Err(AuthError::WrongPassword);
        }
        let new_hash = self.hasher.hash(new).await?;
        if !self
            .users
            .set_password_hash(&who.user.id, new_hash, self.clock.now())
            .await?
        {
            return Err(AuthError::UserNotFound);
        }
        self.end_sessions(&who.user.id, Some(&who.session.id))
            .await?;
        tracing::info!(user = %who.user.id, "password changed");
        Ok(())
    }

    pub async fn list_users(&self) -> Result<Vec<User>, AuthError> {
        Ok(self.users.list_users().await?)
    }

    fn parse_user_id(id: &str) -> Result<UserId, AuthError> {
        UserId::parse(id).ok_or(AuthError::UserNotFound)
    }

    /// Changes roles and/or the disabled flag. Disabling ends every session of the user.
    pub async fn update_user(
        &self,
        actor: &User,
        id: &str,
        roles: Option<Vec<String>>,
        disabled: Option<bool>,
    ) -> Result<User, AuthError> {
        let id = Self::parse_user_id(id)?;
        let roles: Option<BTreeSet<Role>> = roles
            .map(|r| role_set(r.iter().map(String::as_str)))
            .transpose()?;
        if id == actor.id {
            let drops_admin = roles.as_ref().is_some_and(|r| !r.contains(&Role::admin()));
            if drops_admin || disabled == Some(true) {
                return Err(AuthError::SelfLockout);
            }
        }
        let user = self
            .users
            .update_user(&id, UserUpdate { roles, disabled }, self.clock.now())
            .await?
            .ok_or(AuthError::UserNotFound)?;
        if disabled == Some(true) {
            self.end_sessions(&id, None).await?;
        }
        tracing::info!(actor = %actor.id, user = %id, "user updated");
        Ok(user)
    }

    pub async fn user(&self, id: &str) -> Result<User, AuthError> {
        let id = Self::parse_user_id(id)?;
        self.users.user(&id).await?.ok_or(AuthError::UserNotFound)
    }

    /// Ends every session of a user (admin force logout).
    pub async fn force_logout(&self, id: &str) -> Result<(), AuthError> {
        let id = Self::parse_user_id(id)?;
        if self.users.user(&id).await?.is_none() {
            return Err(AuthError::UserNotFound);
        }
        self.end_sessions(&id, None).await?;
        Ok(())
    }
}
