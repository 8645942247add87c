//! Password logins and second factors (docs/SECURITY.md, "Second factors"): the login entry points, enrolling an
//! authenticator app, recovery codes, and the second step of a sign-in.
//!
//! A password login of a person with a second factor does not open a session: it ends in
//! [`AuthError::MfaRequired`] with a sealed, five-minute ticket ([`MfaTicket`]) naming the user,
//! the login's mode and the methods used so far. [`Service::complete_mfa`] takes the ticket and
//! a code, checks the code within the login throttle's limits, uses the ticket up (once, on
//! every node: a counter in the session backend, as for authorization codes) and opens the
//! session exactly as a login without a second factor would, with `amr` saying both methods.
//!
//! Changing factors needs a sign-in within [`MfaPolicy::reauth_within`]; each change is audited,
//! and removing a factor ends the person's other sessions.

use std::time::Duration;

use portcullis_core::mfa::{
    Amr, ENROL_TICKET_SECONDS, MFA_TICKET_SECONDS, MfaTicket, TotpSecret, generate_recovery_codes, recovery_code_hash,
};
use portcullis_core::{AuthMode, ClientInfo, SessionToken, Timestamp, User, UserId};
use portcullis_store::{Attempt, Factors, ThrottleRule};

use crate::accounts::{Actor, AuthError, Authenticated, Login, MfaChallenge};
use crate::audit::{Entry, kind, outcome};
use crate::service::Service;
use crate::token_flows::TokenPair;

/// The second step's proof.
#[derive(Debug, Clone)]
pub enum Proof {
    Totp(String),
    RecoveryCode(String),
    /// A passkey's answer to [`Service::begin_passkey_second_step`]'s challenge: its sealed
    /// state and the credential (`navigator.credentials.get`'s, as JSON).
    Passkey {
        state: String,
        credential: serde_json::Value,
    },
}

impl Proof {
    /// The method's name, as `methods` and the audit log say it.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Totp(_) => "totp",
            Self::RecoveryCode(_) => "recovery_code",
            Self::Passkey { .. } => "webauthn",
        }
    }
}

/// A login as its mode gives it.
#[derive(Debug)]
pub enum SignedIn {
    Session(Login),
    Jwt(TokenPair),
}

/// What a login asked for: the mode, and for JWT whether the tokens go in cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginIntent {
    pub mode: AuthMode,
    pub cookies: bool,
}

/// An authenticator enrolment, shown once.
#[derive(Debug, Clone)]
pub struct TotpEnrolment {
    pub secret: TotpSecret,
    pub otpauth_uri: String,
}

/// What a person's factors are, for the account page and `GET /v1/mfa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FactorSummary {
    pub totp: bool,
    pub totp_pending: bool,
    pub recovery_codes_left: u32,
    pub passkeys: u32,
}

impl FactorSummary {
    fn of(f: &Factors) -> Self {
        Self {
            totp: f.totp.as_ref().is_some_and(|t| t.confirmed),
            totp_pending: f.totp.as_ref().is_some_and(|t| !t.confirmed),
            recovery_codes_left: f.recovery_codes,
            passkeys: f.passkeys,
        }
    }

    /// Whether the person has a second factor (an authenticator app or a passkey).
    pub fn has_factor(&self) -> bool {
        self.totp || self.passkeys > 0
    }

    /// Whether a sign-in must give a second factor.
    pub fn required(&self) -> bool {
        self.has_factor() || self.recovery_codes_left > 0
    }

    /// The methods a sign-in can use.
    pub fn methods(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.totp {
            m.push("totp");
        }
        if self.passkeys > 0 {
            m.push("webauthn");
        }
        if self.recovery_codes_left > 0 {
            m.push("recovery_code");
        }
        m
    }
}

impl Service {
    /// A person's factors.
    pub async fn factor_summary(&self, user: &UserId) -> Result<FactorSummary, AuthError> {
        Ok(FactorSummary::of(&self.factors.factors(user).await?))
    }

    /// A session-mode login: checks credentials and opens a new session record. The session
    /// the client presented (`previous`, a browser signing in again) is ended once the login
    /// succeeded, so a session planted on it earlier cannot survive into the new login.
    pub async fn login(
        &self,
        email: &str,
        password: String,
        client: ClientInfo,
        previous: Option<&SessionToken>,
    ) -> Result<Login, AuthError> {
        let user = self.check_credentials(email, password, &client, AuthMode::Session).await?;
        let intent = LoginIntent { mode: AuthMode::Session, cookies: false };
        match self.after_password(user, intent, client, previous).await? {
            SignedIn::Session(login) => Ok(login),
            SignedIn::Jwt(_) => Err(AuthError::Internal("a session login gave tokens")),
        }
    }

    /// A JWT-mode login: one session record, an access token and the first refresh token.
    /// A browser's cookie session it held before (`previous`) is ended, as on a session login.
    /// `cookies`: the client asked for its tokens in cookies (kept for a second step).
    pub async fn login_jwt(
        &self,
        email: &str,
        password: String,
        client: ClientInfo,
        previous: Option<&SessionToken>,
        cookies: bool,
    ) -> Result<TokenPair, AuthError> {
        let user = self.check_credentials(email, password, &client, AuthMode::Jwt).await?;
        match self.after_password(user, LoginIntent { mode: AuthMode::Jwt, cookies }, client, previous).await? {
            SignedIn::Jwt(pair) => Ok(pair),
            SignedIn::Session(_) => Err(AuthError::Internal("a JWT login gave a session")),
        }
    }

    /// After a correct password: a session for someone without a second factor, the
    /// [`AuthError::MfaRequired`] challenge for someone with one, and the
    /// [`AuthError::MfaEnrolmentRequired`] one for someone whose role needs a factor they lack.
    async fn after_password(
        &self,
        user: User,
        intent: LoginIntent,
        client: ClientInfo,
        previous: Option<&SessionToken>,
    ) -> Result<SignedIn, AuthError> {
        let summary = self.factor_summary(&user.id).await?;
        let enrol = !summary.required() && self.must_have_factor(&user);
        if !summary.required() && !enrol {
            return self.open_login(user, intent, Amr::PWD, client, previous).await;
        }
        let lifetime = if enrol { ENROL_TICKET_SECONDS } else { MFA_TICKET_SECONDS };
        let ticket = MfaTicket {
            id: MfaTicket::new_id(),
            user_id: user.id.to_string(),
            mode: intent.mode.as_str().to_owned(),
            cookies: intent.cookies,
            amr: Amr::PWD.bits(),
            enrol,
            expires_at: self.clock.now().plus(Duration::from_secs(lifetime.unsigned_abs())).unix_millis(),
        };
        let token = ticket.seal(&self.mfa_key);
        if enrol {
            tracing::info!(user = %user.id, "password accepted; the role needs a second factor, which is to be set up");
            let methods = self.enrolment_methods();
            return Err(AuthError::MfaEnrolmentRequired(Box::new(MfaChallenge { token, methods })));
        }
        tracing::info!(user = %user.id, "password accepted; second factor asked");
        Err(AuthError::MfaRequired(Box::new(MfaChallenge { token, methods: summary.methods() })))
    }

    /// The methods the sign-in `ticket` stands for can finish with; none for a ticket that
    /// does not open or has expired.
    pub async fn second_step_methods(&self, ticket: &str) -> Result<Vec<&'static str>, AuthError> {
        let Ok(ticket) = self.open_ticket(ticket, self.clock.now(), false) else { return Ok(Vec::new()) };
        Ok(self.factor_summary(&UserId::from_stored(&ticket.user_id)).await?.methods())
    }

    /// A ticket this server sealed, unexpired by `now`, of the kind asked for: a second step's
    /// (`enrol` false) or an enrolment's. Neither passes for the other.
    pub(crate) fn open_ticket(&self, ticket: &str, now: Timestamp, enrol: bool) -> Result<MfaTicket, AuthError> {
        let ticket = MfaTicket::open(ticket, &self.mfa_key).ok_or(AuthError::InvalidMfaToken)?;
        if now >= ticket.expires_at() || ticket.enrol != enrol {
            return Err(AuthError::InvalidMfaToken);
        }
        Ok(ticket)
    }

    /// Where a ticket's single use is recorded, and for how long.
    fn ticket_use(ticket: &MfaTicket) -> (String, Duration) {
        let lifetime = if ticket.enrol { ENROL_TICKET_SECONDS } else { MFA_TICKET_SECONDS };
        (format!("mfa:{}", ticket.id), Duration::from_secs(lifetime.unsigned_abs()))
    }

    /// Whether `ticket` was used already (on any node).
    pub(crate) async fn ticket_spent(&self, ticket: &MfaTicket, now: Timestamp) -> Result<bool, AuthError> {
        Ok(self.limits.throttle_state(&Self::ticket_use(ticket).0, now).await?.is_some())
    }

    /// Uses `ticket` up, on every node: `false` when it was used before.
    pub(crate) async fn spend_ticket(&self, ticket: &MfaTicket, now: Timestamp) -> Result<bool, AuthError> {
        let (once, lifetime) = Self::ticket_use(ticket);
        self.use_once(&once, lifetime, now).await
    }

    /// Whom `ticket` is for, while their account is enabled, and the login it asked for.
    pub(crate) async fn ticket_holder(&self, ticket: &MfaTicket) -> Result<(User, LoginIntent), AuthError> {
        let mode = AuthMode::parse(&ticket.mode).ok_or(AuthError::InvalidMfaToken)?;
        let user = self.users.user(&UserId::from_stored(&ticket.user_id)).await?;
        let user = user.filter(|u| !u.disabled).ok_or(AuthError::InvalidMfaToken)?;
        Ok((user, LoginIntent { mode, cookies: ticket.cookies }))
    }

    /// Opens the login `intent` asks for, for `user` signed in with `amr`.
    pub(crate) async fn open_login(
        &self,
        user: User,
        intent: LoginIntent,
        amr: Amr,
        client: ClientInfo,
        previous: Option<&SessionToken>,
    ) -> Result<SignedIn, AuthError> {
        match intent.mode {
            AuthMode::Session => self.open_session(user, amr, client, previous).await.map(SignedIn::Session),
            AuthMode::Jwt => self.open_jwt(user, amr, client, previous).await.map(SignedIn::Jwt),
        }
    }

    /// The second step of a sign-in: the ticket from the first and a code. The session opened
    /// is the one the first step asked for. A wrong code counts as a failed login attempt; the
    /// ticket works until it is used or expires.
    pub async fn complete_mfa(
        &self,
        ticket: &str,
        proof: Proof,
        client: ClientInfo,
        previous: Option<&SessionToken>,
    ) -> Result<(SignedIn, LoginIntent), AuthError> {
        let now = self.clock.now();
        let ticket = self.open_ticket(ticket, now, false)?;
        let (user, intent) = self.ticket_holder(&ticket).await?;
        let ip = client.ip.as_deref();
        let mut keys = self.throttle.as_ref().map(|t| (t, t.keys(&format!("mfa:{}", user.id), ip)));
        if let Some((throttle, keys)) = &mut keys
            && let Some(blocked) = throttle.begin(keys, now).await?
        {
            let e = Entry::new(kind::MFA, outcome::THROTTLED).user(&user.id).ip(ip);
            self.audit.record(e).await;
            return Err(AuthError::Throttled { retry_after: blocked.retry_after(now) });
        }
        // A ticket already used is refused before its code is looked at.
        if self.ticket_spent(&ticket, now).await? {
            return Err(AuthError::InvalidMfaToken);
        }
        let Some(proved) = self.check_proof(&user.id, &ticket.id, &proof, now).await? else {
            let e = Entry::new(kind::MFA, outcome::FAILURE).user(&user.id).ip(ip).detail(proof.method());
            self.audit.record(e).await;
            return Err(AuthError::WrongCode);
        };
        if let Some((throttle, keys)) = &keys {
            throttle.succeeded(keys, now).await?;
        }
        if !self.spend_ticket(&ticket, now).await? {
            return Err(AuthError::InvalidMfaToken);
        }
        let amr = Amr::from_bits(ticket.amr).union(proved);
        let entry = Entry::new(kind::MFA, outcome::SUCCESS).user(&user.id).ip(ip).detail(proof.method());
        self.audit.record(entry).await;
        let signed_in = self.open_login(user, intent, amr, client, previous).await?;
        Ok((signed_in, intent))
    }

    /// Uses up `key` once, on every node (a counter in the session backend that admits one
    /// attempt and is remembered for twice `lifetime`): `false` when it was used before.
    pub(crate) async fn use_once(&self, key: &str, lifetime: Duration, now: Timestamp) -> Result<bool, AuthError> {
        let hold = lifetime * 2;
        let rule = ThrottleRule { free: 1, base_delay: hold, max_delay: hold, window: hold };
        Ok(matches!(self.limits.begin_attempt(key, &rule, now).await?, Attempt::Admitted(_)))
    }

    /// The methods `proof` proved (`None`: it did not pass) for the sign-in of ticket
    /// `ticket_id`. A TOTP code's step and a recovery code are used up here.
    async fn check_proof(
        &self,
        user: &UserId,
        ticket_id: &str,
        proof: &Proof,
        now: Timestamp,
    ) -> Result<Option<Amr>, AuthError> {
        match proof {
            Proof::Totp(code) => {
                let Some(totp) = self.factors.factors(user).await?.totp.filter(|t| t.confirmed) else {
                    return Ok(None);
                };
                let Some(secret) = self.open_totp_secret(user, &totp.sealed_secret) else { return Ok(None) };
                let Some(step) = secret.accepts(code, now, totp.last_step) else { return Ok(None) };
                Ok(self.factors.accept_totp_step(user, step, false).await?.then_some(Amr::OTP))
            }
            Proof::RecoveryCode(code) => {
                let Some(hash) = recovery_code_hash(code) else { return Ok(None) };
                Ok(self.factors.use_recovery_code(user, hash).await?.then_some(Amr::OTP))
            }
            Proof::Passkey { state, credential } => self.check_passkey_proof(user, ticket_id, state, credential).await,
        }
    }

    fn open_totp_secret(&self, user: &UserId, sealed: &[u8]) -> Option<TotpSecret> {
        let sealer = self.mfa.secret_box.as_ref()?;
        match sealer.open(sealed, user.as_str()) {
            Some(bytes) => Some(TotpSecret::from_bytes(bytes)),
            None => {
                tracing::error!(user = %user, "a stored authenticator secret does not open with the configured key");
                None
            }
        }
    }

    /// Whether `who` signed in recently enough to change factors.
    pub(crate) async fn require_recent_sign_in(&self, who: &Authenticated) -> Result<(), AuthError> {
        let signed_in_at = match who.signed_in_at {
            Some(at) => Some(at),
            None => self.sessions.get(&who.session_id).await?.map(|r| r.created_at),
        };
        let now = self.clock.now();
        match signed_in_at {
            Some(at) if now.since(at) <= self.mfa.reauth_within => Ok(()),
            _ => Err(AuthError::ReauthenticationRequired),
        }
    }

    /// Begins an authenticator enrolment: a fresh secret, pending until a first code confirms it.
    pub async fn begin_totp(&self, who: &Authenticated) -> Result<TotpEnrolment, AuthError> {
        self.require_recent_sign_in(who).await?;
        self.start_totp(&who.user_id, who.email.as_str()).await
    }

    /// A fresh authenticator secret for `user`, pending until a first code confirms it.
    pub(crate) async fn start_totp(&self, user: &UserId, email: &str) -> Result<TotpEnrolment, AuthError> {
        let sealer = self.mfa.secret_box.as_ref().ok_or(AuthError::MfaUnavailable)?;
        let secret = TotpSecret::generate();
        let sealed = sealer.seal(secret.as_bytes(), user.as_str());
        if !self.factors.begin_totp(user, sealed, self.clock.now()).await? {
            return Err(AuthError::TotpExists);
        }
        let otpauth_uri = secret.otpauth_uri(&self.mfa.issuer, email);
        Ok(TotpEnrolment { secret, otpauth_uri })
    }

    /// Confirms the pending enrolment with its first code. The first factor comes with a set
    /// of recovery codes, returned here to be shown once.
    pub async fn confirm_totp(
        &self,
        who: &Authenticated,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Option<Vec<String>>, AuthError> {
        self.require_recent_sign_in(who).await?;
        self.finish_totp(&who.user_id, code, client).await
    }

    /// Confirms `user`'s pending authenticator with its first code: the recovery codes when it
    /// is the first factor.
    pub(crate) async fn finish_totp(
        &self,
        user: &UserId,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Option<Vec<String>>, AuthError> {
        let factors = self.factors.factors(user).await?;
        let pending = factors.totp.as_ref().filter(|t| !t.confirmed).ok_or(AuthError::NoPendingTotp)?;
        let secret = self.open_totp_secret(user, &pending.sealed_secret).ok_or(AuthError::NoPendingTotp)?;
        let step = secret.accepts(code, self.clock.now(), None).ok_or(AuthError::WrongCode)?;
        if !self.factors.accept_totp_step(user, step, true).await? {
            return Err(AuthError::NoPendingTotp);
        }
        let first = factors.recovery_codes == 0;
        let codes = if first { Some(self.new_recovery_codes(user).await?) } else { None };
        let entry = Entry::new(kind::MFA_ENROLLED, outcome::SUCCESS).user(user).ip(client.ip.as_deref());
        self.audit.record(entry.detail("totp")).await;
        tracing::info!(user = %user, "authenticator app enrolled");
        Ok(codes)
    }

    pub(crate) async fn new_recovery_codes(&self, user: &UserId) -> Result<Vec<String>, AuthError> {
        let codes = generate_recovery_codes();
        let hashes = codes.iter().filter_map(|c| recovery_code_hash(c)).collect();
        self.factors.set_recovery_codes(user, hashes, self.clock.now()).await?;
        Ok(codes)
    }

    /// A new set of recovery codes, which voids the old one. Only for someone with a factor.
    pub async fn regenerate_recovery_codes(
        &self,
        who: &Authenticated,
        client: &ClientInfo,
    ) -> Result<Vec<String>, AuthError> {
        self.require_recent_sign_in(who).await?;
        if !self.factor_summary(&who.user_id).await?.has_factor() {
            return Err(AuthError::NoFactor);
        }
        let codes = self.new_recovery_codes(&who.user_id).await?;
        let entry = Entry::new(kind::RECOVERY_CODES, outcome::SUCCESS).user(&who.user_id).ip(client.ip.as_deref());
        self.audit.record(entry).await;
        Ok(codes)
    }

    /// Removes the authenticator app (and, with no factor left, the recovery codes); the
    /// person's other sessions end.
    pub async fn remove_totp(&self, who: &Authenticated, client: &ClientInfo) -> Result<(), AuthError> {
        self.require_recent_sign_in(who).await?;
        if !self.factors.delete_totp(&who.user_id).await? {
            return Err(AuthError::NoFactor);
        }
        self.drop_recovery_codes_if_alone(&who.user_id).await?;
        let entry = Entry::new(kind::MFA_REMOVED, outcome::SUCCESS).user(&who.user_id).ip(client.ip.as_deref());
        self.audit.record(entry.detail("totp")).await;
        self.end_sessions(&who.user_id, Some(&who.session_id)).await?;
        Ok(())
    }

    /// Recovery codes stand in for a factor: with no factor left they would be one on their
    /// own, so they go.
    pub(crate) async fn drop_recovery_codes_if_alone(&self, user: &UserId) -> Result<(), AuthError> {
        if !self.factor_summary(user).await?.has_factor() {
            self.factors.set_recovery_codes(user, Vec::new(), self.clock.now()).await?;
        }
        Ok(())
    }

    /// An administrator (or the command line) removes every second factor of a user who lost
    /// them; their sessions end.
    pub async fn reset_mfa(&self, actor: Actor<'_>, id: &str, client: &ClientInfo) -> Result<bool, AuthError> {
        let user = self.user(id).await?;
        let had = self.factors.delete_factors(&user.id).await?;
        let entry = Entry::new(kind::MFA_RESET, outcome::SUCCESS).user(&user.id).actor(actor.name());
        self.audit.record(entry.ip(client.ip.as_deref())).await;
        self.end_sessions(&user.id, None).await?;
        tracing::info!(user = %user.id, actor = actor.name(), "second factors reset");
        Ok(had)
    }
}
