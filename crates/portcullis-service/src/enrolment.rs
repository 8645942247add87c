//! Second factors some roles must have (`mfa.required_for_roles`; `admin` by default).
//!
//! A password sign-in of someone in such a role who has no second factor opens no session: it
//! ends in [`AuthError::MfaEnrolmentRequired`] with an enrolment ticket, sealed like the second
//! step's but living fifteen minutes (time to install an app) and never accepted as a second
//! step, nor a second step's ticket here. With it the person sets up an authenticator app or a
//! passkey as on `/account`; the app's first code, or the new passkey's answer, finishes the
//! sign-in in the mode the password asked for, and the recovery codes come with it, shown once.
//! The ticket is then used up, on every node.
//!
//! Sessions open when the role was given are left alone: the rule applies at the next sign-in.
//! Whoever holds the password takes this step first, as with any enrolment at the next sign-in:
//! the account's owner should sign in soon after the role is given.

use portcullis_core::mfa::{Amr, MfaTicket};
use portcullis_core::{ClientInfo, SessionToken, User};

use crate::accounts::AuthError;
use crate::audit::{Entry, kind, outcome};
use crate::mfa::{LoginIntent, SignedIn, TotpEnrolment};
use crate::passkeys::PasskeyInfo;
use crate::service::Service;
use crate::webauthn::Ceremony;

/// An enrolment ticket that opened, with its holder and the login it asked for.
struct Enrolee {
    ticket: MfaTicket,
    user: User,
    intent: LoginIntent,
}

/// A sign-in finished by enrolling its first second factor.
#[derive(Debug)]
pub struct Enrolled {
    pub signed_in: SignedIn,
    pub intent: LoginIntent,
    /// The first factor's recovery codes, to be shown once.
    pub recovery_codes: Vec<String>,
}

impl Service {
    /// Whether `user` holds a role that must have a second factor.
    pub(crate) fn must_have_factor(&self, user: &User) -> bool {
        let required = &self.mfa.required_for_roles;
        user.roles.iter().any(|role| required.iter().any(|r| r == role.as_str()))
    }

    /// The factors an enrolment can set up on this server: `totp` when authenticator secrets
    /// can be sealed, `webauthn` when this server is a passkey relying party.
    pub fn enrolment_methods(&self) -> Vec<&'static str> {
        let mut methods = Vec::new();
        if self.mfa.secret_box.is_some() {
            methods.push("totp");
        }
        if self.passkeys_available() {
            methods.push("webauthn");
        }
        methods
    }

    /// The enrolment ticket `ticket` (unexpired, unused), its holder (still enabled and
    /// still without a factor) and the login it asked for.
    async fn enrolee(&self, ticket: &str) -> Result<Enrolee, AuthError> {
        let now = self.clock.now();
        let ticket = self.open_ticket(ticket, now, true)?;
        if self.ticket_spent(&ticket, now).await? {
            return Err(AuthError::InvalidMfaToken);
        }
        let (user, intent) = self.ticket_holder(&ticket).await?;
        if self.factor_summary(&user.id).await?.has_factor() {
            // Enrolled meanwhile (another tab, another ticket): sign in with it instead.
            return Err(AuthError::InvalidMfaToken);
        }
        Ok(Enrolee { ticket, user, intent })
    }

    /// Begins an authenticator app for the holder of an enrolment ticket: a fresh secret,
    /// pending until its first code finishes the sign-in.
    pub async fn begin_enrolment_totp(&self, ticket: &str) -> Result<TotpEnrolment, AuthError> {
        let Enrolee { user, .. } = self.enrolee(ticket).await?;
        self.start_totp(&user.id, user.email.as_str()).await
    }

    /// The pending authenticator's first code: the factor is on, and the sign-in finishes.
    pub async fn finish_enrolment_totp(
        &self,
        ticket: &str,
        code: &str,
        client: ClientInfo,
        previous: Option<&SessionToken>,
    ) -> Result<Enrolled, AuthError> {
        let enrolee = self.enrolee(ticket).await?;
        let user = &enrolee.user.id;
        let codes = match self.finish_totp(user, code, &client).await {
            Err(AuthError::WrongCode) => {
                let e = Entry::new(kind::MFA, outcome::FAILURE).user(user).ip(client.ip.as_deref());
                self.audit.record(e.detail("totp enrolment")).await;
                return Err(AuthError::WrongCode);
            }
            other => other?,
        };
        self.enrolled(enrolee, Amr::OTP, codes, client, previous).await
    }

    /// Begins a passkey for the holder of an enrolment ticket.
    pub async fn begin_enrolment_passkey(&self, ticket: &str) -> Result<Ceremony, AuthError> {
        let Enrolee { ticket, user, .. } = self.enrolee(ticket).await?;
        self.start_passkey_registration(&user.id, user.email.as_str(), Some(&ticket.id)).await
    }

    /// The new passkey's answer: it is registered, and the sign-in finishes.
    pub async fn finish_enrolment_passkey(
        &self,
        ticket: &str,
        state: &str,
        credential: &serde_json::Value,
        name: Option<&str>,
        client: ClientInfo,
        previous: Option<&SessionToken>,
    ) -> Result<(Enrolled, PasskeyInfo), AuthError> {
        let enrolee = self.enrolee(ticket).await?;
        let (user, ticket_id) = (&enrolee.user.id, Some(enrolee.ticket.id.as_str()));
        let (passkey, codes, key) =
            self.complete_passkey_registration(user, ticket_id, state, credential, name, &client).await?;
        Ok((self.enrolled(enrolee, key, codes, client, previous).await?, passkey))
    }

    /// Uses the ticket up and opens the sign-in it stands for, with the password and the new
    /// factor in `amr`.
    async fn enrolled(
        &self,
        Enrolee { ticket, user, intent }: Enrolee,
        factor: Amr,
        codes: Option<Vec<String>>,
        client: ClientInfo,
        previous: Option<&SessionToken>,
    ) -> Result<Enrolled, AuthError> {
        if !self.spend_ticket(&ticket, self.clock.now()).await? {
            return Err(AuthError::InvalidMfaToken);
        }
        let amr = Amr::from_bits(ticket.amr).union(factor);
        let entry = Entry::new(kind::MFA, outcome::SUCCESS).user(&user.id).ip(client.ip.as_deref());
        self.audit.record(entry.detail("enrolment")).await;
        let signed_in = self.open_login(user, intent, amr, client, previous).await?;
        Ok(Enrolled { signed_in, intent, recovery_codes: codes.unwrap_or_default() })
    }
}
