//! Passkeys (WebAuthn; docs/API.md, "Passkeys"): registering them, signing in with one alone (a
//! discoverable credential: no email typed), and one as the second step after a password.
//!
//! `webauthn-rs` checks each ceremony (challenge, origin, RP ID, signature, user verification,
//! counter); the policy is here: who may register, the recent sign-in that takes, the state
//! sealed and used once ([`crate::webauthn`]), the stored credential looked up again at the
//! end (a passkey removed meanwhile is refused), `amr`, audit, and ending sessions when one
//! is removed.
//!
//! Every passkey is asked for user verification (a PIN or biometric), so a passkey sign-in is
//! two factors: `amr` holds `hwk` (a device-bound key) or `swk` (a synced one, "backup
//! eligible"), `user`, and `mfa`.

use portcullis_core::mfa::Amr;
use portcullis_core::secret::b64;
use portcullis_core::{ClientInfo, SessionToken, Timestamp, UserId};
use portcullis_store::{StoreError, StoredPasskey};
use serde::Serialize;
use webauthn_rs::prelude::{
    AuthenticationResult, CredentialID, DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Uuid,
};

use crate::accounts::{AuthError, Authenticated};
use crate::audit::{Entry, kind, outcome};
use crate::mfa::{LoginIntent, SignedIn};
use crate::service::Service;
use crate::webauthn::{Ceremony, CeremonyState, Purpose, RelyingParty};

/// The longest passkey name.
const MAX_NAME_CHARS: usize = 64;

/// A passkey as the account page and `GET /v1/mfa/webauthn` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasskeyInfo {
    pub id: String,
    pub name: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

impl From<StoredPasskey> for PasskeyInfo {
    fn from(p: StoredPasskey) -> Self {
        Self { id: p.id, name: p.name, created_at: p.created_at, last_used_at: p.last_used_at }
    }
}

fn refused<E>(_: E) -> AuthError {
    AuthError::PasskeyRefused
}

/// The kind of key a sign-in proved, by the authenticator's own flag: a synced passkey
/// (backup eligible) is software-bound, any other hardware-bound.
fn key_amr(result: &AuthenticationResult) -> Amr {
    let key = if result.backup_eligible() { Amr::SWK } else { Amr::HWK };
    key.union(Amr::USER)
}

/// A trimmed name of 1 to 64 characters without control characters; "Passkey" when empty.
fn passkey_name(name: Option<&str>) -> Result<String, AuthError> {
    let name = name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or("Passkey");
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AuthError::InvalidPasskeyName);
    }
    Ok(name.to_owned())
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, AuthError> {
    serde_json::to_value(value).map_err(|_| AuthError::Internal("a WebAuthn value did not serialise"))
}

impl Service {
    fn relying_party(&self) -> Result<&RelyingParty, AuthError> {
        self.mfa.passkeys.as_deref().ok_or(AuthError::PasskeysUnavailable)
    }

    /// Whether this server can use passkeys.
    pub fn passkeys_available(&self) -> bool {
        self.mfa.passkeys.is_some()
    }

    /// The relying party's id (the domain passkeys are made for), when there is one.
    pub fn passkey_rp_id(&self) -> Option<&str> {
        self.mfa.passkeys.as_deref().map(RelyingParty::rp_id)
    }

    /// The person's passkeys, oldest first.
    pub async fn passkeys(&self, user: &UserId) -> Result<Vec<PasskeyInfo>, AuthError> {
        Ok(self.factors.passkeys(user).await?.into_iter().map(PasskeyInfo::from).collect())
    }

    /// The person's passkeys as the WebAuthn library reads them.
    async fn stored_passkeys(&self, user: &UserId) -> Result<Vec<Passkey>, AuthError> {
        let stored = self.factors.passkeys(user).await?;
        Ok(stored.iter().filter_map(|p| serde_json::from_str(&p.credential).ok()).collect())
    }

    /// Opens a sealed ceremony state for `purpose` and uses it up: `None` when it is not one,
    /// has expired or was used.
    async fn spend_ceremony(&self, sealed: &str, purpose: Purpose) -> Result<CeremonyState, AuthError> {
        let now = self.clock.now();
        let state = CeremonyState::open(sealed, &self.mfa_key, purpose, now).ok_or(AuthError::InvalidCeremony)?;
        if !self.use_once(&format!("webauthn:{}", state.id), crate::webauthn::CEREMONY_TTL, now).await? {
            return Err(AuthError::InvalidCeremony);
        }
        Ok(state)
    }

    /// Begins registering a passkey for the signed-in person (a sign-in within
    /// `mfa.reauth_within`).
    pub async fn begin_passkey_registration(&self, who: &Authenticated) -> Result<Ceremony, AuthError> {
        self.relying_party()?;
        self.require_recent_sign_in(who).await?;
        self.start_passkey_registration(&who.user_id, who.email.as_str(), None).await
    }

    /// Begins registering a passkey for `user`; `ticket`: the enrolment ticket it is for. The
    /// browser is asked for a discoverable credential with user verification, and not one of
    /// the person's existing passkeys again.
    pub(crate) async fn start_passkey_registration(
        &self,
        user: &UserId,
        email: &str,
        ticket: Option<&str>,
    ) -> Result<Ceremony, AuthError> {
        let rp = self.relying_party()?;
        let handle = Uuid::parse_str(user.as_str()).map_err(|_| AuthError::Internal("a user id is a UUID"))?;
        let existing: Vec<CredentialID> =
            self.stored_passkeys(user).await?.iter().map(|p| p.cred_id().clone()).collect();
        let (options, registration) =
            rp.webauthn.start_passkey_registration(handle, email, email, Some(existing)).map_err(refused)?;
        let mut options = to_json(&options)?;
        // A passkey that signs in with no email typed is kept on the authenticator
        // (a discoverable credential); the browser is told so.
        if let Some(selection) =
            options.pointer_mut("/publicKey/authenticatorSelection").and_then(|s| s.as_object_mut())
        {
            selection.insert("residentKey".into(), "required".into());
            selection.insert("requireResidentKey".into(), true.into());
        }
        let state =
            CeremonyState::new(Purpose::Register, Some(user), ticket, to_json(&registration)?, self.clock.now());
        Ok(Ceremony { options, state: state.seal(&self.mfa_key) })
    }

    /// Finishes a registration with the authenticator's answer (`navigator.credentials.create`'s
    /// credential as JSON). The first second factor comes with recovery codes, returned here to
    /// be shown once.
    pub async fn finish_passkey_registration(
        &self,
        who: &Authenticated,
        state: &str,
        credential: &serde_json::Value,
        name: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(PasskeyInfo, Option<Vec<String>>), AuthError> {
        self.relying_party()?;
        self.require_recent_sign_in(who).await?;
        let (passkey, codes, _) =
            self.complete_passkey_registration(&who.user_id, None, state, credential, name, client).await?;
        Ok((passkey, codes))
    }

    /// Finishes registering a passkey for `user` (for the enrolment ticket `ticket`, if any):
    /// the passkey, the recovery codes when it is the first factor, and the kind of key it is
    /// (`hwk` or `swk`, with `user`).
    pub(crate) async fn complete_passkey_registration(
        &self,
        user: &UserId,
        ticket: Option<&str>,
        state: &str,
        credential: &serde_json::Value,
        name: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(PasskeyInfo, Option<Vec<String>>, Amr), AuthError> {
        let rp = self.relying_party()?;
        let name = passkey_name(name)?;
        let state = self.spend_ceremony(state, Purpose::Register).await?;
        if !state.is_for(user) || state.ticket.as_deref() != ticket {
            return Err(AuthError::InvalidCeremony);
        }
        let registration: PasskeyRegistration =
            serde_json::from_value(state.inner).map_err(|_| AuthError::InvalidCeremony)?;
        let answer: RegisterPublicKeyCredential = serde_json::from_value(credential.clone()).map_err(refused)?;
        let passkey = rp.webauthn.finish_passkey_registration(&answer, &registration).map_err(|e| {
            tracing::info!(user = %user, error = %e, "a passkey registration was refused");
            AuthError::PasskeyRefused
        })?;
        let first = !self.factor_summary(user).await?.required();
        let now = self.clock.now();
        let credential = to_json(&passkey)?;
        // The authenticator's own flag, as a sign-in with the key would report it.
        let synced = credential.pointer("/cred/backup_eligible").and_then(serde_json::Value::as_bool) == Some(true);
        let stored = StoredPasskey {
            id: b64(passkey.cred_id().as_ref()),
            user_id: user.clone(),
            name,
            credential: credential.to_string(),
            created_at: now,
            last_used_at: None,
        };
        match self.factors.add_passkey(&stored).await {
            Err(StoreError::Duplicate) => return Err(AuthError::PasskeyExists),
            other => other?,
        }
        let codes = if first { Some(self.new_recovery_codes(user).await?) } else { None };
        let entry = Entry::new(kind::MFA_ENROLLED, outcome::SUCCESS).user(user).ip(client.ip.as_deref());
        self.audit.record(entry.detail("passkey")).await;
        tracing::info!(user = %user, "passkey registered");
        let key = if synced { Amr::SWK } else { Amr::HWK };
        Ok((stored.into(), codes, key.union(Amr::USER)))
    }

    /// Removes one of the person's passkeys (a sign-in within `mfa.reauth_within`); with no
    /// second factor left the recovery codes go too. The person's other sessions end.
    pub async fn remove_passkey(&self, who: &Authenticated, id: &str, client: &ClientInfo) -> Result<(), AuthError> {
        self.require_recent_sign_in(who).await?;
        if !self.factors.delete_passkey(&who.user_id, id).await? {
            return Err(AuthError::PasskeyNotFound);
        }
        self.drop_recovery_codes_if_alone(&who.user_id).await?;
        let entry = Entry::new(kind::MFA_REMOVED, outcome::SUCCESS).user(&who.user_id).ip(client.ip.as_deref());
        self.audit.record(entry.detail("passkey")).await;
        self.end_sessions(&who.user_id, Some(&who.session_id)).await?;
        Ok(())
    }

    /// Begins a sign-in with a passkey alone: the browser offers the passkeys it holds for
    /// this server, and the one chosen names its account.
    pub fn begin_passkey_login(&self) -> Result<Ceremony, AuthError> {
        let rp = self.relying_party()?;
        let (mut options, authentication) = rp.webauthn.start_discoverable_authentication().map_err(refused)?;
        // A sign-in the person starts with a button, not the browser's autofill.
        options.mediation = None;
        let state = CeremonyState::new(Purpose::Login, None, None, to_json(&authentication)?, self.clock.now());
        Ok(Ceremony { options: to_json(&options)?, state: state.seal(&self.mfa_key) })
    }

    /// Signs in with a passkey's answer to [`Service::begin_passkey_login`], in the mode
    /// `intent` asks for. A refusal is audited; a passkey cannot be guessed, so it is not
    /// throttled.
    pub async fn passkey_login(
        &self,
        state: &str,
        credential: &serde_json::Value,
        intent: LoginIntent,
        client: ClientInfo,
        previous: Option<&SessionToken>,
    ) -> Result<SignedIn, AuthError> {
        let rp = self.relying_party()?;
        let state = self.spend_ceremony(state, Purpose::Login).await?;
        let authentication: DiscoverableAuthentication =
            serde_json::from_value(state.inner).map_err(|_| AuthError::InvalidCeremony)?;
        let answer: PublicKeyCredential = serde_json::from_value(credential.clone()).map_err(refused)?;
        let ip = client.ip.clone();
        let fail = |user: Option<&UserId>, why: &'static str| {
            let mut entry =
                Entry::new(kind::LOGIN, outcome::FAILURE).ip(ip.as_deref()).detail(format!("passkey: {why}"));
            if let Some(user) = user {
                entry = entry.user(user);
            }
            entry
        };
        let Ok((handle, id)) = rp.webauthn.identify_discoverable_authentication(&answer) else {
            self.audit.record(fail(None, "no user handle")).await;
            return Err(AuthError::PasskeyRefused);
        };
        let handle = handle.hyphenated().to_string();
        let Some(stored) = self.factors.passkey(&b64(id)).await?.filter(|p| p.user_id.as_str() == handle) else {
            self.audit.record(fail(None, "unknown passkey")).await;
            return Err(AuthError::PasskeyRefused);
        };
        let user = match self.users.user(&stored.user_id).await? {
            Some(user) if !user.disabled => user,
            _ => {
                self.audit.record(fail(Some(&stored.user_id), "disabled")).await;
                return Err(AuthError::PasskeyRefused);
            }
        };
        let mut passkey: Passkey = serde_json::from_str(&stored.credential).map_err(refused)?;
        let key = DiscoverableKey::from(&passkey);
        let result = match rp.webauthn.finish_discoverable_authentication(&answer, authentication, &[key]) {
            Ok(result) => result,
            Err(e) => {
                tracing::info!(user = %user.id, error = %e, "a passkey sign-in was refused");
                self.audit.record(fail(Some(&user.id), "assertion refused")).await;
                return Err(AuthError::PasskeyRefused);
            }
        };
        if !self.passkey_used(&stored.id, &mut passkey, &result).await? {
            self.audit.record(fail(Some(&user.id), "removed")).await;
            return Err(AuthError::PasskeyRefused);
        }
        let entry = Entry::new(kind::LOGIN, outcome::SUCCESS).user(&user.id).ip(client.ip.as_deref());
        self.audit.record(entry.detail(format!("{} passkey", intent.mode.as_str()))).await;
        self.open_login(user, intent, key_amr(&result), client, previous).await
    }

    /// Records a sign-in with `passkey` (its counter and flags as `result` reports them);
    /// `false` when it was removed meanwhile.
    async fn passkey_used(
        &self,
        id: &str,
        passkey: &mut Passkey,
        result: &AuthenticationResult,
    ) -> Result<bool, AuthError> {
        passkey.update_credential(result);
        let credential = serde_json::to_string(&*passkey).map_err(|_| AuthError::Internal("a passkey serialises"))?;
        Ok(self.factors.passkey_used(id, credential, self.clock.now()).await?)
    }

    /// Begins a passkey as the second step of the sign-in `ticket` stands for: the challenge
    /// for that person's passkeys.
    pub async fn begin_passkey_second_step(&self, ticket: &str) -> Result<Ceremony, AuthError> {
        let rp = self.relying_party()?;
        let now = self.clock.now();
        let ticket = self.open_ticket(ticket, now, false)?;
        let user = UserId::from_stored(&ticket.user_id);
        let passkeys = self.stored_passkeys(&user).await?;
        if passkeys.is_empty() {
            return Err(AuthError::NoFactor);
        }
        let (options, authentication) = rp.webauthn.start_passkey_authentication(&passkeys).map_err(refused)?;
        let state =
            CeremonyState::new(Purpose::SecondStep, Some(&user), Some(&ticket.id), to_json(&authentication)?, now);
        Ok(Ceremony { options: to_json(&options)?, state: state.seal(&self.mfa_key) })
    }

    /// Checks a passkey's answer as the second step of ticket `ticket_id`'s sign-in by `user`:
    /// the methods it proved, `None` when it did not pass. The ticket's single use stands for
    /// the state's.
    pub(crate) async fn check_passkey_proof(
        &self,
        user: &UserId,
        ticket_id: &str,
        state: &str,
        credential: &serde_json::Value,
    ) -> Result<Option<Amr>, AuthError> {
        let rp = self.relying_party()?;
        let now = self.clock.now();
        let Some(state) = CeremonyState::open(state, &self.mfa_key, Purpose::SecondStep, now) else { return Ok(None) };
        if !state.is_for(user) || state.ticket.as_deref() != Some(ticket_id) {
            return Ok(None);
        }
        let Ok(authentication) = serde_json::from_value::<PasskeyAuthentication>(state.inner) else { return Ok(None) };
        let Ok(answer) = serde_json::from_value::<PublicKeyCredential>(credential.clone()) else { return Ok(None) };
        let Some(stored) = self.factors.passkey(&b64(answer.get_credential_id())).await?.filter(|p| &p.user_id == user)
        else {
            return Ok(None);
        };
        let Ok(mut passkey) = serde_json::from_str::<Passkey>(&stored.credential) else { return Ok(None) };
        let result = match rp.webauthn.finish_passkey_authentication(&answer, &authentication) {
            Ok(result) => result,
            Err(e) => {
                tracing::info!(user = %user, error = %e, "a passkey second step was refused");
                return Ok(None);
            }
        };
        Ok(self.passkey_used(&stored.id, &mut passkey, &result).await?.then(|| key_amr(&result)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passkey_names_are_short_printable_and_default_to_passkey() {
        assert_eq!(passkey_name(None).expect("default"), "Passkey");
        assert_eq!(passkey_name(Some("   ")).expect("default"), "Passkey");
        assert_eq!(passkey_name(Some(" Laptop ")).expect("trimmed"), "Laptop");
        assert_eq!(passkey_name(Some(&"é".repeat(64))).expect("64 characters").chars().count(), 64);
        assert!(passkey_name(Some(&"x".repeat(65))).is_err());
        assert!(passkey_name(Some("a\u{0}b")).is_err());
        assert!(passkey_name(Some("line\nbreak")).is_err());
    }
}
