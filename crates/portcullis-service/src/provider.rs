//! The OpenID Connect provider's operations (docs/OIDC.md), without HTTP: checking an
//! authorization request, deciding whether the person must sign in (again) or consent, issuing
//! a sealed code, redeeming it at the token endpoint, refresh and client credentials, ID
//! tokens and userinfo.
//!
//! An application's sign-in is one more session record (mode `jwt`) that hangs from the
//! browser session the person signed in with (its [`Grant`]): its refresh chain is the
//! record's, its access tokens carry its id as `sid`, and ending the browser session ends it.
//! The ID token's `sid` is the browser session's.

use std::borrow::Cow;
use std::time::Duration;

use portcullis_core::jwt::{self, Algorithm};
use portcullis_core::mfa::Amr;
use portcullis_core::oidc::{self, CodeGrant};
use portcullis_core::refresh::RefreshToken;
use portcullis_core::secret::SessionId;
use portcullis_core::{AuthMode, Client, ClientId, ClientInfo, ClientKind, Grant, SmolStr, Timestamp, User, UserId};
use serde::Serialize;

use crate::accounts::{AuthError, Authenticated};
use crate::backchannel::LogoutNotice;
use crate::clients::ClientAuthError;
use crate::service::Service;
use crate::token_flows::{IssuedAccess, RefreshError, random_jti};

/// How long an authorization code works (RFC 6749 §4.1.2 recommends at most ten minutes;
/// the issue asks for at most 60 s).
pub const CODE_TTL: Duration = Duration::from_secs(60);

/// How long after the authorization endpoint sent a person to sign in that sign-in counts as
/// the fresh one `prompt=login` or `max_age` asked for.
pub const FRESH_SIGN_IN_WINDOW: Duration = Duration::from_secs(600);

/// The longest `state` and `nonce` accepted.
pub const MAX_STATE_LEN: usize = 512;
pub const MAX_NONCE_LEN: usize = 256;

/// An OAuth error (RFC 6749 §4.1.2.1 and §5.2): the `error` code and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub error: &'static str,
    pub description: Cow<'static, str>,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        Self { error, description: description.into() }
    }

    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new("invalid_request", description)
    }

    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new("invalid_grant", description)
    }

    pub fn invalid_client() -> Self {
        Self::new("invalid_client", "client authentication failed")
    }

    /// A fault on our side or a store that cannot be reached.
    pub fn server_error(e: &AuthError) -> Self {
        match e {
            AuthError::Store(_) => Self::new("temporarily_unavailable", "the store cannot be reached; try again"),
            _ => Self::new("server_error", "the request could not be completed"),
        }
    }
}

impl From<AuthError> for OAuthError {
    fn from(e: AuthError) -> Self {
        Self::server_error(&e)
    }
}

impl From<portcullis_store::StoreError> for OAuthError {
    fn from(e: portcullis_store::StoreError) -> Self {
        Self::server_error(&AuthError::Store(e))
    }
}

/// The parameters of an authorization request, as they came (every one optional on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AuthorizeParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_uri: Option<String>,
    /// Ours: the sealed mark of a sign-in this request already sent the person to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_after: Option<String>,
}

/// Why an authorization request cannot even be answered at the client: there is no client, or
/// the redirect URI is not one of its own. Shown to the person as a page, never redirected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizePageError {
    #[error("the request names no client")]
    MissingClient,
    #[error("this application is not registered")]
    UnknownClient,
    #[error("the redirect URI is not registered for this application")]
    BadRedirectUri,
    #[error("the service is unavailable")]
    Unavailable,
}

/// An authorization request whose client and redirect URI checked out; where its errors go.
#[derive(Debug, Clone)]
pub struct AuthorizeTarget {
    pub client: Client,
    pub redirect_uri: String,
    pub state: Option<String>,
}

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub target: AuthorizeTarget,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt_none: bool,
    pub prompt_login: bool,
    pub prompt_consent: bool,
    pub max_age: Option<Duration>,
    pub login_hint: Option<String>,
    pub fresh_after: Option<Timestamp>,
}

/// What the authorization endpoint does next.
#[derive(Debug)]
pub enum Authorization {
    /// Send the code to the client.
    Code(String),
    /// The person must sign in (again): send them to the sign-in page, back here afterwards
    /// with this sealed mark.
    SignIn { fresh_after: String },
    /// Ask the person whether the (third-party) client may have this scope.
    Consent,
}

/// What the token endpoint answers.
#[derive(Debug)]
pub struct ProviderTokens {
    pub access: IssuedAccess,
    pub refresh: Option<RefreshToken>,
    pub id_token: Option<String>,
    pub scope: String,
}

/// The claims of an ID token (OpenID Connect Core §2), and of userinfo without the first six.
#[derive(Debug, Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    sid: &'a str,
    amr: Vec<&'static str>,
    azp: &'a str,
    at_hash: String,
    #[serde(flatten)]
    person: PersonClaims,
}

/// What a scope lets an application know about the person.
#[derive(Debug, Serialize)]
pub struct PersonClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

impl PersonClaims {
    fn of(user: &User, scope: &str) -> Self {
        let email = oidc::has_scope(scope, "email");
        Self {
            email: email.then(|| user.email.to_string()),
            email_verified: email.then_some(user.email_verified),
            preferred_username: oidc::has_scope(scope, "profile").then(|| user.email.to_string()),
            roles: oidc::has_scope(scope, "roles").then(|| user.roles.iter().map(|r| r.as_str().to_owned()).collect()),
        }
    }
}

/// What introspection (RFC 7662) says of an active token.
#[derive(Debug, Serialize)]
pub struct Introspection {
    pub active: bool,
    pub token_type: &'static str,
    pub client_id: String,
    pub sub: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub exp: i64,
    pub iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub iss: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    pub sid: String,
}

/// The claims of a back-channel `logout_token` (Back-Channel Logout 1.0 §2.4): no `nonce`.
#[derive(Debug, Serialize)]
struct LogoutClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
    sub: &'a str,
    sid: &'a str,
    events: serde_json::Value,
}

/// The event a `logout_token` carries.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How long a `logout_token` is valid: a couple of minutes, for the delivery and its retries.
pub const LOGOUT_TOKEN_TTL: Duration = Duration::from_secs(120);

/// What an `id_token_hint` says, once its signature and issuer checked out.
#[derive(Debug, Clone)]
pub struct IdTokenHint {
    pub client_id: String,
    pub sub: String,
    pub sid: String,
}

/// An application with access to a person's account: what `/account` lists.
#[derive(Debug, Clone, Serialize)]
pub struct Application {
    pub client_id: ClientId,
    pub name: String,
    /// Everything granted, across its sign-ins.
    pub scope: String,
    /// The first sign-in still live, and the last use.
    pub signed_in_at: Timestamp,
    pub last_used_at: Timestamp,
}

/// The userinfo answer.
#[derive(Debug, Serialize)]
pub struct UserInfo {
    pub sub: String,
    #[serde(flatten)]
    pub person: PersonClaims,
}

fn param(p: &Option<String>) -> Option<&str> {
    p.as_deref().filter(|s| !s.is_empty())
}

impl Service {
    /// The client and redirect URI of an authorization request. Exact, case-sensitive match
    /// against the registered URIs (RFC 9700 §4.1.3).
    pub async fn authorize_target(&self, p: &AuthorizeParams) -> Result<AuthorizeTarget, AuthorizePageError> {
        let id = param(&p.client_id).ok_or(AuthorizePageError::MissingClient)?;
        let id = ClientId::parse(id).ok_or(AuthorizePageError::UnknownClient)?;
        let client = match self.clients.client(&id).await {
            Ok(Some(c)) if c.kind != ClientKind::Service => c,
            Ok(_) => return Err(AuthorizePageError::UnknownClient),
            Err(_) => return Err(AuthorizePageError::Unavailable),
        };
        let redirect_uri = match param(&p.redirect_uri) {
            Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => uri.to_owned(),
            // OpenID Connect makes redirect_uri required; one registered URI is not a default.
            _ => return Err(AuthorizePageError::BadRedirectUri),
        };
        Ok(AuthorizeTarget { client, redirect_uri, state: p.state.clone() })
    }

    /// The rest of an authorization request's checks; errors go back to the client.
    pub fn check_authorize(
        &self,
        target: AuthorizeTarget,
        p: &AuthorizeParams,
    ) -> Result<AuthorizeRequest, OAuthError> {
        if p.state.as_ref().is_some_and(|s| s.len() > MAX_STATE_LEN) {
            return Err(OAuthError::invalid_request("state is too long"));
        }
        if p.request.is_some() {
            return Err(OAuthError::new("request_not_supported", "request objects are not supported"));
        }
        if p.request_uri.is_some() {
            return Err(OAuthError::new("request_uri_not_supported", "request_uri is not supported"));
        }
        match param(&p.response_type) {
            Some("code") => {}
            Some(_) => {
                return Err(OAuthError::new("unsupported_response_type", "only response_type=code is supported"));
            }
            None => return Err(OAuthError::invalid_request("response_type is required")),
        }
        if param(&p.response_mode).is_some_and(|m| m != "query") {
            return Err(OAuthError::invalid_request("only response_mode=query is supported"));
        }
        let scope = oidc::granted_scope(param(&p.scope).unwrap_or(""));
        if !oidc::has_scope(&scope, "openid") {
            return Err(OAuthError::new("invalid_scope", "the scope must include openid"));
        }
        let nonce = param(&p.nonce).map(str::to_owned);
        if nonce.as_ref().is_some_and(|n| n.len() > MAX_NONCE_LEN) {
            return Err(OAuthError::invalid_request("nonce is too long"));
        }
        let code_challenge = match (param(&p.code_challenge), param(&p.code_challenge_method)) {
            (None, None) if target.client.kind == ClientKind::Public => {
                return Err(OAuthError::invalid_request("a public client must use PKCE (S256)"));
            }
            (None, None) => None,
            (None, Some(_)) => return Err(OAuthError::invalid_request("code_challenge_method without code_challenge")),
            (Some(_), None | Some("plain")) => {
                return Err(OAuthError::invalid_request("code_challenge_method must be S256 (plain is refused)"));
            }
            (Some(c), Some("S256")) if oidc::is_code_challenge(c) => Some(c.to_owned()),
            (Some(_), Some("S256")) => {
                return Err(OAuthError::invalid_request("code_challenge is not an S256 challenge"));
            }
            (Some(_), Some(_)) => return Err(OAuthError::invalid_request("code_challenge_method must be S256")),
        };
        let mut prompt = (false, false, false);
        for value in param(&p.prompt).unwrap_or("").split(' ').filter(|v| !v.is_empty()) {
            match value {
                "none" => prompt.0 = true,
                "login" => prompt.1 = true,
                "consent" => prompt.2 = true,
                "select_account" => {}
                _ => return Err(OAuthError::invalid_request("prompt holds an unknown value")),
            }
        }
        if prompt.0 && (prompt.1 || prompt.2) {
            return Err(OAuthError::invalid_request("prompt=none cannot be combined with other values"));
        }
        let max_age = match param(&p.max_age) {
            None => None,
            Some(m) => Some(Duration::from_secs(
                m.parse::<u64>().map_err(|_| OAuthError::invalid_request("max_age is not a number of seconds"))?,
            )),
        };
        let fresh_after = param(&p.fresh_after).and_then(|m| oidc::open_fresh_after(m, &self.provider_key));
        Ok(AuthorizeRequest {
            target,
            scope,
            nonce,
            code_challenge,
            prompt_none: prompt.0,
            prompt_login: prompt.1,
            prompt_consent: prompt.2,
            max_age,
            login_hint: param(&p.login_hint).map(|h| h.chars().take(320).collect()),
            fresh_after,
        })
    }

    /// Decides an authorization request for the person signed in with the browser session
    /// `who` (if any): sign in (again), ask for consent, or issue a code. `consented`: the
    /// person just approved on the consent page.
    pub async fn authorize(
        &self,
        req: &AuthorizeRequest,
        who: Option<&Authenticated>,
        consented: bool,
    ) -> Result<Authorization, OAuthError> {
        let now = self.clock.now();
        // The browser session: the cookie's, with when the person signed in to it.
        let signed_in = who.filter(|w| w.mode == AuthMode::Session).and_then(|w| Some((w, w.signed_in_at?)));
        // A sign-in made after this request sent the person to sign in counts as fresh, for a
        // while: the mark is in a URL, and an old URL must not stand for a new sign-in.
        let fresh = |auth_time: Timestamp| {
            req.fresh_after.is_some_and(|after| auth_time >= after && now.since(after) < FRESH_SIGN_IN_WINDOW)
        };
        let must_sign_in = signed_in.is_none_or(|(_, auth_time)| {
            let too_old = req.max_age.is_some_and(|max| now.since(auth_time) > max);
            (req.prompt_login || too_old) && !fresh(auth_time)
        });
        let Some((who, auth_time)) = signed_in.filter(|_| !must_sign_in) else {
            if req.prompt_none {
                return Err(OAuthError::new("login_required", "the person must sign in"));
            }
            return Ok(Authorization::SignIn { fresh_after: oidc::seal_fresh_after(now, &self.provider_key) });
        };
        let client = &req.target.client;
        if (!client.first_party || req.prompt_consent) && !consented {
            if req.prompt_none {
                return Err(OAuthError::new("consent_required", "the person must approve this application"));
            }
            return Ok(Authorization::Consent);
        }
        let grant = CodeGrant {
            client_id: client.id.to_string(),
            redirect_uri: req.target.redirect_uri.clone(),
            parent: who.session_id.to_string(),
            user_id: who.user_id.to_string(),
            grant_id: SessionId::generate().to_string(),
            scope: req.scope.clone(),
            nonce: req.nonce.clone(),
            code_challenge: req.code_challenge.clone(),
            auth_time: auth_time.unix_millis(),
            expires_at: now.plus(CODE_TTL).unix_millis(),
        };
        tracing::info!(client = %client.id, user = %who.user_id, "authorization code issued");
        Ok(Authorization::Code(grant.seal(&self.provider_key)))
    }

    /// Authenticates a client at the token, introspection and revocation endpoints: a
    /// confidential (or service) client by its secret, a public one by its id alone (it proves
    /// itself with PKCE). A public client that sends a secret is refused.
    pub async fn authenticate_oauth_client(&self, id: &str, secret: Option<&str>) -> Result<Client, OAuthError> {
        match self.client_by_credentials(id, secret).await {
            Ok(client) => Ok(client),
            Err(ClientAuthError::Store(e)) => Err(e.into()),
            Err(ClientAuthError::Invalid | ClientAuthError::WrongKind) => Err(OAuthError::invalid_client()),
        }
    }

    /// The `authorization_code` grant: a code used once, by the client it was issued to, with
    /// the same redirect URI and the PKCE verifier of its challenge. A code presented a second
    /// time ends what its first use issued.
    pub async fn redeem_code(
        &self,
        client: &Client,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        from: ClientInfo,
    ) -> Result<ProviderTokens, OAuthError> {
        let now = self.clock.now();
        let invalid = || OAuthError::invalid_grant("the code is not valid");
        let grant = CodeGrant::open(code, &self.provider_key).ok_or_else(invalid)?;
        if grant.client_id != client.id.as_str() {
            return Err(invalid());
        }
        let grant_id = SessionId::parse(&grant.grant_id).ok_or_else(invalid)?;
        // Once only: the first redemption is counted and every later one refused, on every node.
        let rule = portcullis_store::ThrottleRule {
            free: 1,
            base_delay: CODE_TTL * 2,
            max_delay: CODE_TTL * 2,
            window: CODE_TTL * 2,
        };
        let key = format!("code:{grant_id}");
        if let portcullis_store::Attempt::Refused { .. } = self.limits.begin_attempt(&key, &rule, now).await? {
            tracing::warn!(client = %client.id, "authorization code used twice; what it issued is revoked");
            if let Some(record) = self.sessions.get(&grant_id).await? {
                self.end_record(&record).await?;
            }
            return Err(OAuthError::invalid_grant("the code was already used"));
        }
        if now >= grant.expires_at() {
            return Err(OAuthError::invalid_grant("the code has expired"));
        }
        if redirect_uri != Some(grant.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant("redirect_uri does not match the authorization request"));
        }
        match (&grant.code_challenge, verifier) {
            (Some(challenge), Some(v)) if oidc::pkce_matches(challenge, v) => {}
            (Some(_), _) => return Err(OAuthError::invalid_grant("the PKCE code_verifier does not match")),
            (None, Some(_)) => return Err(OAuthError::invalid_grant("no code_challenge was sent for this code")),
            (None, None) => {}
        }
        // The browser session must still be there, and the person still allowed in.
        let parent = SessionId::parse(&grant.parent).ok_or_else(invalid)?;
        let browser = self.sessions.get(&parent).await?.filter(|r| r.is_live(now)).ok_or_else(invalid)?;
        let user = self.active_user(&UserId::from_stored(&grant.user_id)).await?.ok_or_else(invalid)?;
        if browser.user_id != user.id {
            return Err(invalid());
        }
        let offline = oidc::has_scope(&grant.scope, "offline_access");
        let refresh = RefreshToken::first(grant_id.clone());
        let mut record =
            self.policy.new_record_with(grant_id, refresh.hash(), user.id.clone(), AuthMode::Jwt, now, from);
        if !offline {
            // Without offline access the grant lives as long as its access token.
            record.expires_at = now.plus(self.tokens.access_ttl);
            record.idle_expires_at = record.expires_at;
        }
        // The application's sign-in is the browser's: the same methods.
        record.amr = browser.amr;
        record.grant = Some(Box::new(Grant {
            client_id: client.id.clone(),
            parent: parent.clone(),
            auth_time: Timestamp::from_unix_millis(grant.auth_time),
            scope: SmolStr::new(&grant.scope),
        }));
        self.sessions.create(&record).await?;
        // A browser session ended while this was being made: end this too.
        if self.sessions.get(&parent).await?.is_none() {
            self.end_record(&record).await?;
            return Err(invalid());
        }
        tracing::info!(client = %client.id, user = %user.id, session = %record.id, "application signed in");
        let tokens = self.app_tokens(&user, &record, grant.nonce.as_deref(), offline.then_some(refresh)).await?;
        Ok(tokens)
    }

    /// The `refresh_token` grant for an application: rotation with reuse detection as for
    /// Portcullis' own refresh tokens, and only by the client the token was issued to.
    pub async fn refresh_for_client(
        &self,
        client: &Client,
        presented: &str,
        ip: Option<&str>,
    ) -> Result<ProviderTokens, OAuthError> {
        match self.rotate_refresh(presented, ip, Some(&client.id)).await {
            Ok((record, next, user)) => self.app_tokens(&user, &record, None, Some(next)).await,
            Err(RefreshError::Invalid) => Err(OAuthError::invalid_grant("the refresh token is not valid")),
            Err(RefreshError::Reused) => {
                Err(OAuthError::invalid_grant("the refresh token was already used; the session is revoked"))
            }
            Err(RefreshError::Auth(AuthError::Throttled { .. })) => {
                Err(OAuthError::invalid_request("too many refreshes; slow down"))
            }
            Err(RefreshError::Auth(e)) => Err(OAuthError::server_error(&e)),
        }
    }

    /// The `client_credentials` grant: an access token for the client itself (`sub` is its id),
    /// with no person, no refresh token and no ID token.
    pub fn client_credentials(&self, client: &Client, scope: Option<&str>) -> Result<ProviderTokens, OAuthError> {
        if client.kind == ClientKind::Public {
            return Err(OAuthError::new("unauthorized_client", "a public client cannot use client_credentials"));
        }
        if scope.is_some_and(|s| !oidc::granted_scope(s).is_empty()) {
            return Err(OAuthError::new("invalid_scope", "the person's scopes cannot be granted to a client"));
        }
        let now = self.clock.now();
        // No session record: a fresh id, so deny-listing by `sid` still works on it.
        let claims = jwt::AccessClaims {
            sub: client.id.to_string(),
            sid: SessionId::generate().to_string(),
            ..self.access_claims(now.unix_seconds(), now, client.id.as_str(), "")
        };
        tracing::info!(client = %client.id, "client credentials token issued");
        Ok(ProviderTokens { access: self.sign_access(claims)?, refresh: None, id_token: None, scope: String::new() })
    }

    /// The user behind a grant, unless deleted or disabled.
    async fn active_user(&self, id: &UserId) -> Result<Option<User>, AuthError> {
        Ok(self.users.user(id).await?.filter(|u| !u.disabled))
    }

    /// An application's access token, its ID token, and the refresh token it may keep.
    async fn app_tokens(
        &self,
        user: &User,
        record: &portcullis_core::SessionRecord,
        nonce: Option<&str>,
        refresh: Option<RefreshToken>,
    ) -> Result<ProviderTokens, OAuthError> {
        let grant = record.grant.as_ref().ok_or_else(|| OAuthError::invalid_grant("not an application's grant"))?;
        let access = self.issue_access_to(user, &record.id, grant.client_id.as_str(), &grant.scope, record.amr)?;
        let id_token = if oidc::has_scope(&grant.scope, "openid") {
            Some(self.id_token(user, grant, record.amr, nonce, &access.token).await?)
        } else {
            None
        };
        Ok(ProviderTokens { access, refresh, id_token, scope: grant.scope.to_string() })
    }

    /// Signs an ID token (RS256) for `user` in `grant`.
    async fn id_token(
        &self,
        user: &User,
        grant: &Grant,
        amr: Amr,
        nonce: Option<&str>,
        access: &str,
    ) -> Result<String, OAuthError> {
        let now = self.clock.now();
        let key = self.id_token_key().await?;
        debug_assert_eq!(key.alg(), Algorithm::RS256);
        let iat = now.unix_seconds();
        let ttl = i64::try_from(self.tokens.access_ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = IdClaims {
            iss: &self.tokens.expect.issuer,
            sub: user.id.as_str(),
            aud: grant.client_id.as_str(),
            exp: iat.saturating_add(ttl),
            iat,
            auth_time: grant.auth_time.unix_seconds(),
            nonce,
            sid: grant.parent.as_str(),
            amr: amr.names(),
            azp: grant.client_id.as_str(),
            at_hash: oidc::at_hash(access),
            person: PersonClaims::of(user, &grant.scope),
        };
        jwt::token::sign(&key, "JWT", &claims).map_err(|e| {
            tracing::error!(error = %e, "ID token signing failed");
            OAuthError::server_error(&AuthError::Internal("signing failed"))
        })
    }

    /// Makes sure the ID-token key exists (discovery asks first, so the JWKS a relying party
    /// fetches next holds it).
    pub async fn ensure_id_token_key(&self) -> Result<(), AuthError> {
        self.id_token_key().await.map(drop)
    }

    /// The key ID tokens and logout tokens are signed with (made on first use).
    async fn id_token_key(&self) -> Result<std::sync::Arc<jwt::SigningKey>, AuthError> {
        self.tokens.keys.id_token_key().await.map_err(|e| {
            tracing::error!(error = %e, "no ID-token key");
            AuthError::Internal("no ID-token key")
        })
    }

    /// RFC 7662: whether `token` is active now, and what it says; `None` for inactive. An
    /// access token is checked as strictly as Portcullis can: signature and claims, this
    /// node's replica of the revocations, and its session record (unless it is a client's own
    /// token). A refresh token is active for the client it was issued to only.
    pub async fn introspect(&self, client: &Client, token: &str) -> Result<Option<Introspection>, AuthError> {
        let now = self.clock.now();
        if let Some(rt) = RefreshToken::parse(token) {
            let Some(record) = self.sessions.get(rt.id()).await? else { return Ok(None) };
            let Some(grant) = record.grant.as_ref().filter(|g| g.client_id == client.id) else { return Ok(None) };
            let current = portcullis_core::refresh::check(&rt, &record, &self.tokens.refresh_key, now, Duration::ZERO);
            if !record.is_live(now) || !matches!(current, portcullis_core::refresh::RefreshCheck::Current) {
                return Ok(None);
            }
            if self.active_user(&record.user_id).await?.is_none() {
                return Ok(None);
            }
            return Ok(Some(Introspection {
                active: true,
                token_type: "refresh_token",
                client_id: grant.client_id.to_string(),
                sub: record.user_id.to_string(),
                scope: grant.scope.to_string(),
                username: None,
                exp: record.dies_at().unix_seconds(),
                iat: record.rotated_at.unwrap_or(record.created_at).unix_seconds(),
                nbf: None,
                iss: self.tokens.expect.issuer.clone(),
                aud: None,
                jti: None,
                sid: record.id.to_string(),
            }));
        }
        let Ok(verified) = self.tokens.verify_signature(token.as_bytes(), now) else { return Ok(None) };
        let claims = verified.claims;
        if self.replica.is_revoked(&claims, now) {
            return Ok(None);
        }
        if claims.sub != claims.client_id {
            let alive = self
                .sessions
                .get(&verified.session_id)
                .await?
                .is_some_and(|r| r.is_live(now) && r.mode == AuthMode::Jwt && r.user_id.as_str() == claims.sub);
            if !alive || self.active_user(&verified.user_id).await?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(Introspection {
            active: true,
            token_type: "Bearer",
            client_id: claims.client_id.clone(),
            sub: claims.sub.clone(),
            scope: claims.scope.clone(),
            username: (!claims.email.is_empty()).then(|| claims.email.clone()),
            exp: claims.exp,
            iat: claims.iat,
            nbf: claims.nbf,
            iss: claims.iss.clone(),
            aud: match &claims.aud {
                jwt::Audience::One(a) => Some(a.clone()),
                jwt::Audience::Many(v) => v.first().cloned(),
            },
            jti: Some(claims.jti.clone()),
            sid: claims.sid.clone(),
        }))
    }

    /// Queues a back-channel logout notice for every application among the `ended` records
    /// that registered a back-channel logout URI: one per application and browser session.
    /// Never fails the logout: what cannot be signed or queued is logged.
    pub(crate) async fn notify_applications(&self, ended: &[portcullis_core::SessionRecord]) {
        let mut sent: Vec<(&ClientId, &SessionId)> = Vec::new();
        for record in ended {
            let Some(grant) = &record.grant else { continue };
            if sent.contains(&(&grant.client_id, &grant.parent)) {
                continue;
            }
            sent.push((&grant.client_id, &grant.parent));
            let uri = match self.clients.client(&grant.client_id).await {
                Ok(Some(Client { backchannel_logout_uri: Some(uri), .. })) => uri,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(client = %grant.client_id, error = %e, "no back-channel logout: the client could not be read");
                    continue;
                }
            };
            match self.logout_token(&record.user_id, grant).await {
                Ok(logout_token) => {
                    self.backchannel.push(LogoutNotice { client_id: grant.client_id.clone(), uri, logout_token });
                }
                Err(e) => tracing::warn!(client = %grant.client_id, error = %e.description, "no back-channel logout"),
            }
        }
    }

    /// A signed `logout_token` (`typ: logout+jwt`, RS256) for the application of `grant`.
    async fn logout_token(&self, user: &UserId, grant: &Grant) -> Result<String, OAuthError> {
        let key = self.id_token_key().await?;
        let now = self.clock.now().unix_seconds();
        let claims = LogoutClaims {
            iss: &self.tokens.expect.issuer,
            aud: grant.client_id.as_str(),
            iat: now,
            exp: now.saturating_add(i64::try_from(LOGOUT_TOKEN_TTL.as_secs()).unwrap_or(120)),
            jti: random_jti(),
            sub: user.as_str(),
            sid: grant.parent.as_str(),
            events: serde_json::json!({ BACKCHANNEL_LOGOUT_EVENT: {} }),
        };
        jwt::token::sign(&key, "logout+jwt", &claims)
            .map_err(|_| OAuthError::server_error(&AuthError::Internal("signing failed")))
    }

    /// Checks an `id_token_hint` (RP-initiated logout): signed by one of our keys, issued by
    /// us, to one audience. It may have expired (a person may sign out long after signing in).
    pub fn check_id_token_hint(&self, hint: &str) -> Option<IdTokenHint> {
        let keys = self.tokens.keys.current();
        let claims = jwt::token::verify_signed(hint, &keys.id_token_keys, "JWT").ok()?;
        let text = |name: &str| claims.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
        if text("iss")? != self.tokens.expect.issuer {
            return None;
        }
        Some(IdTokenHint { client_id: text("aud")?, sub: text("sub")?, sid: text("sid")? })
    }

    /// The applications with live grants on `user`'s account, by name.
    pub async fn applications_of(&self, user: &UserId) -> Result<Vec<Application>, AuthError> {
        let mut apps: Vec<Application> = Vec::new();
        for record in self.sessions_of(user).await? {
            let Some(grant) = &record.grant else { continue };
            if let Some(app) = apps.iter_mut().find(|a| a.client_id == grant.client_id) {
                let scope = oidc::granted_scope(&format!("{} {}", app.scope, grant.scope));
                app.scope = scope;
                app.signed_in_at = app.signed_in_at.min(record.created_at);
                app.last_used_at = app.last_used_at.max(record.rotated_at.unwrap_or(record.created_at));
                continue;
            }
            let Some(client) = self.clients.client(&grant.client_id).await? else { continue };
            apps.push(Application {
                client_id: client.id,
                name: client.name,
                scope: grant.scope.to_string(),
                signed_in_at: record.created_at,
                last_used_at: record.rotated_at.unwrap_or(record.created_at),
            });
        }
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(apps)
    }

    /// Ends every grant of `client_id` on the person's account (the application is told by
    /// back-channel logout, if it registered for it). Audited.
    pub async fn revoke_application(
        &self,
        who: &Authenticated,
        client_id: &str,
        from: &ClientInfo,
    ) -> Result<(), AuthError> {
        let id = ClientId::parse(client_id).ok_or(AuthError::ClientNotFound)?;
        let mut ended = Vec::new();
        for record in self.sessions.list_for_user(&who.user_id).await? {
            if record.grant.as_ref().is_some_and(|g| g.client_id == id) {
                self.end_one(&record).await?;
                ended.push(record);
            }
        }
        if ended.is_empty() {
            return Err(AuthError::ClientNotFound);
        }
        self.notify_applications(&ended).await;
        let entry = crate::audit::Entry::new(crate::audit::kind::APPLICATION_REVOKED, crate::audit::outcome::SUCCESS)
            .user(&who.user_id)
            .ip(from.ip.as_deref())
            .detail(format!("client {id}"));
        self.audit.record(entry).await;
        Ok(())
    }

    /// OpenID Connect userinfo for an application's access token with the `openid` scope.
    pub async fn userinfo(&self, who: &Authenticated) -> Result<UserInfo, AuthError> {
        let claims = who.access.as_ref().ok_or(AuthError::InvalidToken)?;
        if !oidc::has_scope(&claims.scope, "openid") {
            return Err(AuthError::InvalidToken);
        }
        let user = self.active_user(&who.user_id).await?.ok_or(AuthError::InvalidToken)?;
        Ok(UserInfo { sub: user.id.to_string(), person: PersonClaims::of(&user, &claims.scope) })
    }
}
