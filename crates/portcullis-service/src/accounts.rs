//! Accounts and sessions: register, log in, authenticate a session credential, list and end
//! sessions, change passwords, and the admin operations.
//!
//! The API, the pages and the CLI all call these, so they go through the same rules (canonical
//! emails, the password policy, the hashing pool, the per-user index, the audit entries).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::jwt::AccessClaims;
use portcullis_core::mfa::Amr;
use portcullis_core::revocation::{Denied, RevocationEvent};
use portcullis_core::{
    AuthMode, ClientInfo, Email, EmailError, Password, PasswordError, Role, RoleError, SessionId, SessionRecord,
    SessionToken, Timestamp, User, UserId, role_set,
};
use portcullis_store::{AuditEvent, AuditQuery, NewUser, StoreError, UserUpdate};

use crate::audit::{Entry, kind, outcome};
use crate::service::Service;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("not authenticated")]
    Unauthenticated,
    #[error("invalid access token")]
    InvalidToken,
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
    #[error("no such client")]
    ClientNotFound,
    #[error("a client name is 1 to 100 characters, without control characters")]
    InvalidClientName,
    #[error("a public client has no secret")]
    PublicClient,
    #[error("{0}")]
    InvalidClient(String),
    #[error("an administrator cannot disable or delete themselves or remove their own admin role")]
    SelfLockout,
    /// The password was right; a second factor is needed (`POST /v1/login/mfa`).
    #[error("a second factor is required")]
    MfaRequired(Box<MfaChallenge>),
    /// The password was right, but the person's role needs a second factor and they have
    /// none: they enrol one with the ticket, which then finishes the sign-in.
    #[error("a second factor must be set up to sign in")]
    MfaEnrolmentRequired(Box<MfaChallenge>),
    #[error("the mfa_token is not valid, has expired or was used")]
    InvalidMfaToken,
    #[error("the code is wrong or was already used")]
    WrongCode,
    #[error("sign in again to change your second factors")]
    ReauthenticationRequired,
    #[error("authenticator apps need mfa.encryption_key in the settings")]
    MfaUnavailable,
    #[error("an authenticator app is already enrolled; remove it first")]
    TotpExists,
    #[error("no authenticator app enrolment is waiting for its first code")]
    NoPendingTotp,
    #[error("no second factor is enrolled")]
    NoFactor,
    #[error("the reset link is not valid, has expired or was used")]
    InvalidResetToken,
    /// The password is right, but the account's email address awaits its verification link.
    #[error("confirm your email address first: open the link sent to it (or ask for a new one)")]
    EmailNotVerified,
    #[error("the verification link is not valid or has expired")]
    InvalidVerificationToken,
    #[error("passkeys need a public_url with a domain name (not an IP address)")]
    PasskeysUnavailable,
    #[error("the WebAuthn ceremony state is not valid, has expired or was used; start again")]
    InvalidCeremony,
    #[error("the passkey was not accepted")]
    PasskeyRefused,
    #[error("that passkey is already registered")]
    PasskeyExists,
    #[error("no such passkey")]
    PasskeyNotFound,
    #[error("a passkey's name is 1 to 64 characters, without control characters")]
    InvalidPasskeyName,
    /// Too many failed attempts: try again after `retry_after`.
    #[error("too many failed attempts; try again in {} s", retry_after.as_secs())]
    Throttled { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A fault on our side (logged where it happens); answered 500 without details.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// What a login with a second factor asks the client for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaChallenge {
    /// The sealed ticket (`mfa_token`).
    pub token: String,
    /// The methods the person can use (`totp`, `webauthn`, `recovery_code`), or, for an
    /// enrolment, can set up (`totp`, `webauthn`).
    pub methods: Vec<&'static str>,
}

/// A request's verified identity, from a session cookie or an access token.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user_id: UserId,
    pub email: Email,
    pub roles: Arc<BTreeSet<Role>>,
    pub mode: AuthMode,
    /// The session record the credential belongs to.
    pub session_id: SessionId,
    /// Session mode: the record's absolute expiry. JWT: the access token's `exp`.
    pub expires_at: Timestamp,
    /// Session mode: when the person signed in (the record's creation), which the provider
    /// reports as `auth_time`. JWT: not known from the token.
    pub signed_in_at: Option<Timestamp>,
    /// How the person signed in: the record's, or the access token's `amr`.
    pub amr: Amr,
    /// The access token's claims, when one authenticated the request.
    /// Shared with the verified-token cache: no copy per request.
    pub access: Option<Arc<AccessClaims>>,
}

impl Authenticated {
    pub fn from_session(user: User, session: SessionRecord) -> Self {
        Self {
            user_id: user.id,
            email: user.email,
            roles: user.roles,
            mode: session.mode,
            session_id: session.id,
            expires_at: session.expires_at,
            signed_in_at: Some(session.created_at),
            amr: session.amr,
            access: None,
        }
    }

    pub fn has_role(&self, name: &str) -> bool {
        portcullis_core::user::has_role(&self.roles, name)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(Role::ADMIN)
    }

    pub fn roles_joined(&self) -> String {
        portcullis_core::user::join_roles(&self.roles)
    }
}

/// A successful login.
#[derive(Debug)]
pub struct Login {
    pub user: User,
    pub session: SessionRecord,
    /// The credential for the client. Never logged.
    pub token: SessionToken,
}

/// Who creates an account, for the audit log.
#[derive(Debug, Clone, Copy)]
pub enum Creator<'a> {
    /// Self-service registration, through the API or the pages (the detail says which).
    Registration(&'static str),
    /// An administrator.
    Admin(&'a UserId),
    /// The command line.
    Cli,
}

/// Who acts on someone else's account: an administrator (through the API or the admin page),
/// or the operator on the command line.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    Admin(&'a UserId),
    Cli,
}

impl Actor<'_> {
    /// How the audit log names the actor.
    pub fn name(&self) -> &str {
        match self {
            Actor::Admin(id) => id.as_str(),
            Actor::Cli => "cli",
        }
    }

    /// Whether this is the administrator `id` acting on their own account.
    fn is(&self, id: &UserId) -> bool {
        matches!(self, Actor::Admin(admin) if *admin == id)
    }
}

/// An audit entry about the requesting user's own account.
fn own(kind: &'static str, outcome: &'static str, who: &Authenticated, client: &ClientInfo) -> Entry {
    Entry::new(kind, outcome).user(&who.user_id).ip(client.ip.as_deref()).detail(who.mode.as_str())
}

/// An audit entry about an administrator's (or the command line's) action on an account.
fn by_admin(kind: &'static str, user: &UserId, actor: Actor<'_>, client: &ClientInfo) -> Entry {
    Entry::new(kind, outcome::SUCCESS).user(user).actor(actor.name()).ip(client.ip.as_deref())
}

impl Service {
    /// Creates an account (see [`Auth::create_user`]) and records who did.
    pub async fn create_account(
        &self,
        email: &str,
        password: String,
        roles: &[String],
        by: Creator<'_>,
        client: &ClientInfo,
    ) -> Result<User, AuthError> {
        // A registration's address is verified by following the link sent to it; an
        // administrator (or the command line) vouches for the address they type.
        let verified = !matches!(by, Creator::Registration(_));
        let user = self.create_user(email, password, roles, verified).await?;
        let entry = Entry::new(kind::USER_CREATED, outcome::SUCCESS).user(&user.id).ip(client.ip.as_deref());
        let roles = || format!("roles={}", user.roles_joined());
        let entry = match by {
            Creator::Registration(via) => entry.detail(via),
            Creator::Admin(admin) => entry.actor(admin.as_str()).detail(roles()),
            Creator::Cli => entry.actor("cli").detail(roles()),
        };
        self.audit.record(entry).await;
        Ok(user)
    }

    /// Creates an account with a policy-checked password; `roles` is added to `user`.
    pub async fn create_user(
        &self,
        email: &str,
        password: String,
        roles: &[String],
        email_verified: bool,
    ) -> Result<User, AuthError> {
        let email = Email::parse(email)?;
        let password = Password::new(password)?;
        let roles = role_set(roles.iter().map(String::as_str))?;
        let password_hash = self.hasher.hash(password).await?;
        let new = NewUser { email, password_hash, roles, email_verified };
        let user = self.users.create_user(new, self.clock.now()).await?;
        tracing::info!(user = %user.id, "user created");
        Ok(user)
    }

    /// Checks an email and password for a login in `mode`, within the throttling limits, and
    /// records the outcome in the audit log. Unknown email, wrong password and a disabled
    /// account all take one Argon2 verification and give the same error.
    ///
    /// The check runs on its own task, to the end, even when the client goes away meanwhile:
    /// the attempt is counted before the password is checked, and only a check that finishes can
    /// give that count back after a success (a cancelled one would leave it counted).
    pub async fn check_credentials(
        &self,
        email: &str,
        password: String,
        client: &ClientInfo,
        mode: AuthMode,
    ) -> Result<User, AuthError> {
        let (auth, email, client) = (self.clone(), email.to_owned(), client.clone());
        tokio::spawn(async move { auth.settle_credentials(&email, password, &client, mode).await })
            .await
            .map_err(|_| AuthError::Internal("the credential check ended abnormally"))?
    }

    async fn settle_credentials(
        &self,
        email: &str,
        password: String,
        client: &ClientInfo,
        mode: AuthMode,
    ) -> Result<User, AuthError> {
        let ip = client.ip.as_deref();
        let entry = || Entry::new(kind::LOGIN, outcome::FAILURE).ip(ip).detail(mode.as_str());
        let parsed = Email::parse(email);
        let mut keys = self.throttle.as_ref().map(|t| {
            let account = match &parsed {
                Ok(e) => e.as_str().to_owned(),
                Err(_) => email.trim().to_lowercase(),
            };
            (t, t.keys(&account, ip))
        });
        if let Some((throttle, keys)) = &mut keys {
            let now = self.clock.now();
            if let Some(blocked) = throttle.begin(keys, now).await? {
                let mut e = Entry::new(kind::LOGIN, outcome::THROTTLED).ip(ip);
                e = e.detail(format!("{} {}", mode.as_str(), blocked.scope.as_str()));
                if throttle.first_refusal(&blocked) {
                    self.audit.record(e).await;
                } else {
                    self.audit.log_only(e);
                }
                self.observer.login(mode.as_str(), "throttled");
                self.observer.throttled(blocked.scope.as_str());
                return Err(AuthError::Throttled { retry_after: blocked.retry_after(now) });
            }
        }
        let password = Password::candidate(password);
        let unknown = if password.is_ok() { "unknown_account" } else { "password_length" };
        let found = match (&parsed, &password) {
            (Ok(email), Ok(_)) => self.users.user_by_email(email).await?,
            _ => None,
        };
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        let ok = match password {
            Ok(password) => self.hasher.verify_or_dummy(password, hash).await?,
            Err(_) => false,
        };
        let result = match user {
            Some(user) if ok && !user.disabled && self.verify_email && !user.email_verified => {
                let detail = format!("{} email_unverified", mode.as_str());
                self.audit.record(entry().user(&user.id).detail(detail)).await;
                Err(AuthError::EmailNotVerified)
            }
            Some(user) if ok && !user.disabled => Ok(user),
            Some(user) => {
                let why = if ok { "disabled" } else { "wrong_password" };
                self.audit.record(entry().user(&user.id).detail(format!("{} {why}", mode.as_str()))).await;
                Err(AuthError::InvalidCredentials)
            }
            None => {
                self.audit.record(entry().detail(format!("{} {unknown}", mode.as_str()))).await;
                Err(AuthError::InvalidCredentials)
            }
        };
        // A failure was counted before the check; a right password gives it back.
        let right = matches!(result, Ok(_) | Err(AuthError::EmailNotVerified));
        if let Some((throttle, keys)) = &keys
            && right
        {
            throttle.succeeded(keys, self.clock.now()).await?;
        }
        let outcome = match &result {
            Ok(_) => "success",
            Err(AuthError::EmailNotVerified) => "email_not_verified",
            Err(_) => "invalid_credentials",
        };
        self.observer.login(mode.as_str(), outcome);
        if let Ok(user) = &result {
            self.audit
                .record(Entry::new(kind::LOGIN, outcome::SUCCESS).user(&user.id).ip(ip).detail(mode.as_str()))
                .await;
        }
        result
    }

    /// Opens a session-mode record for `user`, signed in with `amr`.
    pub(crate) async fn open_session(
        &self,
        user: User,
        amr: Amr,
        client: ClientInfo,
        previous: Option<&SessionToken>,
    ) -> Result<Login, AuthError> {
        let token = SessionToken::generate();
        let mut session = self.policy.new_record(&token, user.id.clone(), AuthMode::Session, self.clock.now(), client);
        session.amr = amr;
        self.sessions.create(&session).await?;
        tracing::info!(user = %user.id, session = %session.id, mode = "session", "login");
        self.end_previous(previous).await?;
        Ok(Login { user, session, token })
    }

    /// Resolves a session credential. The record must exist, its secret must match, it must be
    /// live, and its user must exist and be enabled; a use is written back lazily.
    pub async fn authenticate(&self, token: &SessionToken) -> Result<Authenticated, AuthError> {
        let now = self.clock.now();
        let session = self.sessions.get(token.id()).await?.ok_or(AuthError::Unauthenticated)?;
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
        if session.mode != AuthMode::Session {
            return Err(AuthError::Unauthenticated);
        }
        if let Some((seen, idle)) = self.policy.touch(&session, now) {
            self.sessions.touch(&session.id, seen, idle).await?;
        }
        Ok(Authenticated::from_session(user, session))
    }

    /// Records a revocation and applies it to this node's replica before answering, so the
    /// very next request here already sees it.
    pub async fn revoke(&self, event: RevocationEvent) -> Result<(), AuthError> {
        self.observer.revocation(match &event {
            RevocationEvent::Deny { what: Denied::Token(_), .. } => "token",
            RevocationEvent::Deny { what: Denied::Session(_), .. } => "session",
            RevocationEvent::NotBefore { .. } => "user",
        });
        self.replica.apply(&event);
        self.revocations.revoke(&event).await?;
        Ok(())
    }

    /// Deletes one record; a JWT-mode record's access tokens are denied too.
    pub async fn end_record(&self, record: &SessionRecord) -> Result<(), AuthError> {
        self.end_one(record).await?;
        let mut ended = vec![record.clone()];
        // A browser session takes the applications that signed in through it along (they
        // hang only from session-mode records: the authorization endpoint reads the cookie).
        if record.grant.is_none() && record.mode == AuthMode::Session {
            for child in self.sessions.list_for_user(&record.user_id).await? {
                if child.grant.as_ref().is_some_and(|g| g.parent == record.id) {
                    self.end_one(&child).await?;
                    ended.push(child);
                }
            }
        }
        self.notify_applications(&ended).await;
        Ok(())
    }

    /// Ends one record and, in JWT mode, deny-lists its access tokens; nothing hanging from it.
    pub(crate) async fn end_one(&self, record: &SessionRecord) -> Result<(), AuthError> {
        self.sessions.delete(&record.id).await?;
        if record.mode == AuthMode::Jwt {
            let until = self.clock.now().plus(self.access_token_horizon);
            self.revoke(RevocationEvent::Deny { what: Denied::Session(record.id.to_string()), until }).await?;
        }
        Ok(())
    }

    /// Ends the session a client presented when it logged in again, if the credential names
    /// one: a browser that signs in again never keeps its old session alongside the new one.
    pub(crate) async fn end_previous(&self, previous: Option<&SessionToken>) -> Result<(), AuthError> {
        let Some(token) = previous else { return Ok(()) };
        if let Some(s) = self.sessions.get(token.id()).await?
            && s.secret_hash.matches(&token.secret_hash())
        {
            self.sessions.delete(&s.id).await?;
        }
        Ok(())
    }

    /// Ends the session that made this request, and the access token that made it.
    pub async fn logout(&self, who: &Authenticated, client: &ClientInfo) -> Result<(), AuthError> {
        if let Some(claims) = &who.access {
            let until = claims.expires_at().plus(Duration::from_secs(60));
            self.revoke(RevocationEvent::Deny { what: Denied::Token(claims.jti.clone()), until }).await?;
        }
        if let Some(record) = self.sessions.get(&who.session_id).await?
            && record.user_id == who.user_id
        {
            self.end_record(&record).await?;
        }
        self.audit.record(own(kind::LOGOUT, outcome::SUCCESS, who, client)).await;
        Ok(())
    }

    /// Ends every session and token of the requesting user ("sign out everywhere").
    pub async fn logout_all(&self, who: &Authenticated, client: &ClientInfo) -> Result<u64, AuthError> {
        let ended = self.end_sessions(&who.user_id, None).await?;
        let entry = own(kind::LOGOUT_ALL, outcome::SUCCESS, who, client).detail(format!("{ended} sessions ended"));
        self.audit.record(entry).await;
        Ok(ended)
    }

    /// Ends every session of the user except `keep`, and their access tokens: all of them
    /// at once by moving the user's not-before epoch when nothing is kept, one session at a
    /// time otherwise.
    pub async fn end_sessions(&self, user: &UserId, keep: Option<&SessionId>) -> Result<u64, AuthError> {
        let now = self.clock.now();
        let ending: Vec<SessionRecord> =
            self.sessions.list_for_user(user).await?.into_iter().filter(|s| Some(&s.id) != keep).collect();
        match keep {
            None => self.revoke(RevocationEvent::NotBefore { user: user.clone(), at: now }).await?,
            Some(_) => {
                let until = now.plus(self.access_token_horizon);
                for s in ending.iter().filter(|s| s.mode == AuthMode::Jwt) {
                    self.revoke(RevocationEvent::Deny { what: Denied::Session(s.id.to_string()), until }).await?;
                }
            }
        }
        let n = self.sessions.delete_for_user(user, keep).await?;
        tracing::info!(user = %user, ended = n, "sessions ended");
        self.notify_applications(&ending).await;
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

    /// Ends one of the requesting user's own sessions; another user's id is indistinguishable
    /// from none.
    pub async fn end_own_session(&self, who: &Authenticated, id: &str, client: &ClientInfo) -> Result<(), AuthError> {
        let id = SessionId::parse(id).ok_or(AuthError::SessionNotFound)?;
        match self.sessions.get(&id).await? {
            Some(s) if s.user_id == who.user_id => self.end_record(&s).await?,
            _ => return Err(AuthError::SessionNotFound),
        }
        self.audit.record(own(kind::SESSION_END, outcome::SUCCESS, who, client)).await;
        Ok(())
    }

    /// Changes the password after checking the current one, then ends every other session.
    /// A browser session (session mode, cookie) moves to a new id, returned for its cookie.
    pub async fn change_password(
        &self,
        who: &Authenticated,
        current: String,
        new: String,
        client: &ClientInfo,
    ) -> Result<Option<SessionToken>, AuthError> {
        let wrong = || async {
            let entry = own(kind::PASSWORD_CHANGE, outcome::FAILURE, who, client).detail("wrong current password");
            self.audit.record(entry).await;
            Err(AuthError::WrongPassword)
        };
        let Ok(current) = Password::candidate(current) else { return wrong().await };
        let new = Password::new(new)?;
        let hash = self.users.password_hash(&who.user_id).await?;
        if !self.hasher.verify_or_dummy(current, hash).await? {
            return wrong().await;
        }
        let new_hash = self.hasher.hash(new).await?;
        if !self.users.set_password_hash(&who.user_id, new_hash, self.clock.now()).await? {
            return Err(AuthError::UserNotFound);
        }
        self.end_sessions(&who.user_id, Some(&who.session_id)).await?;
        tracing::info!(user = %who.user_id, "password changed");
        self.audit.record(own(kind::PASSWORD_CHANGE, outcome::SUCCESS, who, client)).await;
        if who.mode == AuthMode::Session && who.access.is_none() {
            return self.renew_session_id(who).await.map(Some);
        }
        Ok(None)
    }

    /// Moves a live session-mode record to a new id and secret (after a privilege change such
    /// as a new password): the old credential stops working at once, the session's timeouts
    /// and device details stay. Returns the new credential.
    async fn renew_session_id(&self, who: &Authenticated) -> Result<SessionToken, AuthError> {
        let old = match self.sessions.get(&who.session_id).await? {
            Some(r) if r.user_id == who.user_id && r.mode == AuthMode::Session => r,
            _ => return Err(AuthError::Unauthenticated),
        };
        let token = SessionToken::generate();
        let renewed = SessionRecord { id: token.id().clone(), secret_hash: token.secret_hash(), ..old.clone() };
        self.sessions.create(&renewed).await?;
        self.sessions.delete(&old.id).await?;
        Ok(token)
    }

    /// Audit events, newest first, for the admin API and page.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, AuthError> {
        Ok(self.audit.store.audit_events(query).await?)
    }

    pub async fn list_users(&self) -> Result<Vec<User>, AuthError> {
        Ok(self.users.list_users().await?)
    }

    fn parse_user_id(id: &str) -> Result<UserId, AuthError> {
        UserId::parse(id).ok_or(AuthError::UserNotFound)
    }

    /// An administrator changes roles and/or the disabled flag. Disabling ends every session
    /// of the user.
    pub async fn update_user(
        &self,
        actor: Actor<'_>,
        id: &str,
        roles: Option<Vec<String>>,
        disabled: Option<bool>,
        client: &ClientInfo,
    ) -> Result<User, AuthError> {
        let id = Self::parse_user_id(id)?;
        let roles: Option<BTreeSet<Role>> = roles.map(|r| role_set(r.iter().map(String::as_str))).transpose()?;
        if actor.is(&id) {
            let drops_admin = roles.as_ref().is_some_and(|r| !r.contains(&Role::admin()));
            if drops_admin || disabled == Some(true) {
                return Err(AuthError::SelfLockout);
            }
        }
        let user = self
            .users
            .update_user(&id, UserUpdate { roles: roles.clone(), disabled, email_verified: None }, self.clock.now())
            .await?
            .ok_or(AuthError::UserNotFound)?;
        if disabled == Some(true) {
            self.end_sessions(&id, None).await?;
        } else if roles.is_some() {
            // Access tokens carry roles: the ones issued before the change die, and the client's
            // next refresh gets tokens with the new roles. Session mode reads roles live.
            self.revoke(RevocationEvent::NotBefore { user: id.clone(), at: self.clock.now() }).await?;
        }
        tracing::info!(actor = actor.name(), user = %id, "user updated");
        if roles.is_some() {
            let entry = by_admin(kind::ROLE_CHANGE, &user.id, actor, client);
            self.audit.record(entry.detail(format!("roles={}", user.roles_joined()))).await;
        }
        if let Some(disabled) = disabled {
            let k = if disabled { kind::USER_DISABLED } else { kind::USER_ENABLED };
            self.audit.record(by_admin(k, &user.id, actor, client)).await;
        }
        Ok(user)
    }

    pub async fn user(&self, id: &str) -> Result<User, AuthError> {
        let id = Self::parse_user_id(id)?;
        self.users.user(&id).await?.ok_or(AuthError::UserNotFound)
    }

    /// The account with this email (the command line names accounts by email).
    pub async fn user_by_email(&self, email: &str) -> Result<User, AuthError> {
        let email = Email::parse(email)?;
        Ok(self.users.user_by_email(&email).await?.ok_or(AuthError::UserNotFound)?.0)
    }

    /// An administrator ends every session of a user (force logout); how many ended.
    pub async fn force_logout(&self, actor: Actor<'_>, id: &str, client: &ClientInfo) -> Result<u64, AuthError> {
        let id = Self::parse_user_id(id)?;
        if self.users.user(&id).await?.is_none() {
            return Err(AuthError::UserNotFound);
        }
        let ended = self.end_sessions(&id, None).await?;
        self.audit
            .record(by_admin(kind::FORCE_LOGOUT, &id, actor, client).detail(format!("{ended} sessions ended")))
            .await;
        Ok(ended)
    }

    /// Someone else sets a user's password (an operator whose admin is locked out): checked
    /// against the policy like any password, and every session and token of the user ends.
    pub async fn set_password(
        &self,
        actor: Actor<'_>,
        id: &str,
        password: String,
        client: &ClientInfo,
    ) -> Result<u64, AuthError> {
        let id = Self::parse_user_id(id)?;
        let password = Password::new(password)?;
        let hash = self.hasher.hash(password).await?;
        if !self.users.set_password_hash(&id, hash, self.clock.now()).await? {
            return Err(AuthError::UserNotFound);
        }
        let ended = self.end_sessions(&id, None).await?;
        let entry = by_admin(kind::PASSWORD_SET, &id, actor, client).detail(format!("{ended} sessions ended"));
        self.audit.record(entry).await;
        Ok(ended)
    }

    /// Deletes an account: its sessions and tokens end first, then the account goes (its email
    /// is free again). An administrator cannot delete their own account. The audit log keeps
    /// the id, with the email in the entry's detail.
    pub async fn delete_user(&self, actor: Actor<'_>, id: &str, client: &ClientInfo) -> Result<User, AuthError> {
        let id = Self::parse_user_id(id)?;
        if actor.is(&id) {
            return Err(AuthError::SelfLockout);
        }
        let user = self.users.user(&id).await?.ok_or(AuthError::UserNotFound)?;
        let ended = self.end_sessions(&id, None).await?;
        if !self.users.delete_user(&id).await? {
            return Err(AuthError::UserNotFound);
        }
        tracing::info!(actor = actor.name(), user = %id, "user deleted");
        let detail = format!("{} ({ended} sessions ended)", user.email);
        self.audit.record(by_admin(kind::USER_DELETED, &id, actor, client).detail(detail)).await;
        Ok(user)
    }
}
