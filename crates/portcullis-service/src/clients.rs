//! The client registry's operations: registering, listing, removing a client and rotating its
//! secret (each audited, the same for the CLI, the admin API and the admin page), and checking
//! a client's credentials.

use std::time::Duration;

use portcullis_core::{Client, ClientId, ClientInfo, ClientKind, ClientSecret};

use crate::accounts::{Actor, AuthError};
use crate::audit::{Entry, kind, outcome};
use crate::service::Service;

/// The longest client name.
pub const MAX_CLIENT_NAME: usize = 100;

/// The most redirect URIs (and post-logout redirect URIs) one client may register.
pub const MAX_REDIRECT_URIS: usize = 10;

/// An OpenID Connect client to register.
#[derive(Debug, Clone, Default)]
pub struct OidcClientSpec {
    pub name: String,
    /// A public client (a browser or mobile app): no secret, PKCE required.
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    /// Consent is not asked (the default: the deployment's own applications).
    pub first_party: bool,
}

/// Whether `uri` may be registered as a redirect URI: absolute, without a fragment or user
/// information, and `https`, or `http` on a loopback host (RFC 8252 §7.3), or a private-use
/// scheme with a dot in it (RFC 8252 §7.1, `com.example.app:/callback`).
pub fn redirect_uri_problem(uri: &str) -> Option<&'static str> {
    if uri.len() > 2000 || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some("a redirect URI is at most 2000 characters, without spaces");
    }
    let Ok(url) = url::Url::parse(uri) else { return Some("a redirect URI must be an absolute URL") };
    if url.fragment().is_some() {
        return Some("a redirect URI must not have a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("a redirect URI must not hold user information");
    }
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => None,
        "http" if loopback => None,
        "http" => Some("a redirect URI must use https (http only on localhost, 127.0.0.1 or [::1])"),
        scheme if scheme.contains('.') => None,
        _ => {
            Some("a redirect URI must use https, http on a loopback host, or a private-use scheme like com.example.app")
        }
    }
}

/// A client just registered, with its secret: the only time the secret is seen.
#[derive(Debug)]
pub struct Registered {
    pub client: Client,
    pub secret: Option<ClientSecret>,
}

/// Why a client's credentials were refused. One answer for all of them on the wire.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("unknown client or wrong secret")]
    Invalid,
    #[error("this client may not do that")]
    WrongKind,
    #[error(transparent)]
    Store(#[from] portcullis_store::StoreError),
}

/// A client's name, trimmed: 1 to [`MAX_CLIENT_NAME`] characters, no control characters.
fn checked_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_CLIENT_NAME || name.chars().any(char::is_control) {
        return Err(AuthError::InvalidClientName);
    }
    Ok(name.to_owned())
}

fn audited(kind: &'static str, actor: Actor<'_>, client: &Client, from: &ClientInfo) -> Entry {
    Entry::new(kind, outcome::SUCCESS).actor(actor.name()).ip(from.ip.as_deref()).detail(format!(
        "{} {} ({})",
        client.kind.as_str(),
        client.id,
        client.name
    ))
}

impl Service {
    /// Records a refused client credential in the audit log, at most once a minute for one
    /// address and reason; every refusal is logged.
    pub async fn audit_client_refusal(&self, entry: Entry, ip: Option<&str>, reason: &'static str) {
        tracing::info!(ip, reason, "client credentials refused");
        if self.client_refusals.first_this_minute(ip, reason, self.clock.now()) {
            self.audit.record(entry).await;
        }
    }

    /// Registers a client of `kind` named `name`; its secret is returned once.
    pub async fn register_client(
        &self,
        actor: Actor<'_>,
        name: &str,
        kind: ClientKind,
        from: &ClientInfo,
    ) -> Result<Registered, AuthError> {
        let (client, secret) = Client::new(checked_name(name)?, kind, self.clock.now());
        self.store_client(actor, client, secret, from).await
    }

    async fn store_client(
        &self,
        actor: Actor<'_>,
        client: Client,
        secret: Option<ClientSecret>,
        from: &ClientInfo,
    ) -> Result<Registered, AuthError> {
        self.clients.create_client(&client).await?;
        tracing::info!(client = %client.id, kind = client.kind.as_str(), "client registered");
        self.audit.record(audited(kind::CLIENT_CREATED, actor, &client, from)).await;
        Ok(Registered { client, secret })
    }

    /// Registers an OpenID Connect client; its secret (unless public) is returned once.
    pub async fn register_oidc_client(
        &self,
        actor: Actor<'_>,
        spec: OidcClientSpec,
        from: &ClientInfo,
    ) -> Result<Registered, AuthError> {
        let name = checked_name(&spec.name)?;
        if spec.redirect_uris.is_empty() {
            return Err(AuthError::InvalidClient("an OpenID Connect client needs at least one redirect URI".into()));
        }
        if spec.redirect_uris.len() > MAX_REDIRECT_URIS || spec.post_logout_redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(AuthError::InvalidClient(format!("at most {MAX_REDIRECT_URIS} redirect URIs of each kind")));
        }
        for uri in spec.redirect_uris.iter().chain(&spec.post_logout_redirect_uris) {
            if let Some(problem) = redirect_uri_problem(uri) {
                return Err(AuthError::InvalidClient(format!("{problem}: {uri:?}")));
            }
        }
        if let Some(uri) = &spec.backchannel_logout_uri {
            let ok =
                url::Url::parse(uri).is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.fragment().is_none());
            if !ok || uri.len() > 2000 {
                return Err(AuthError::InvalidClient(format!(
                    "the back-channel logout URI must be an absolute http(s) URL without a fragment: {uri:?}"
                )));
            }
        }
        let kind = if spec.public { ClientKind::Public } else { ClientKind::Confidential };
        let (mut client, secret) = Client::new(name, kind, self.clock.now());
        client.redirect_uris = spec.redirect_uris;
        client.post_logout_redirect_uris = spec.post_logout_redirect_uris;
        client.backchannel_logout_uri = spec.backchannel_logout_uri;
        client.first_party = spec.first_party;
        self.store_client(actor, client, secret, from).await
    }

    /// Every client, oldest first.
    pub async fn clients(&self) -> Result<Vec<Client>, AuthError> {
        Ok(self.clients.list_clients().await?)
    }

    fn parse_client_id(id: &str) -> Result<ClientId, AuthError> {
        ClientId::parse(id).ok_or(AuthError::ClientNotFound)
    }

    /// Removes a client: its credentials stop working at once.
    pub async fn remove_client(&self, actor: Actor<'_>, id: &str, from: &ClientInfo) -> Result<Client, AuthError> {
        let id = Self::parse_client_id(id)?;
        let client = self.clients.client(&id).await?.ok_or(AuthError::ClientNotFound)?;
        if !self.clients.delete_client(&id).await? {
            return Err(AuthError::ClientNotFound);
        }
        tracing::info!(client = %id, "client removed");
        self.audit.record(audited(kind::CLIENT_REMOVED, actor, &client, from)).await;
        Ok(client)
    }

    /// Gives a client a new secret; the old one keeps working for `overlap`, so the service
    /// can be redeployed with the new one meanwhile. A public client has no secret to rotate.
    pub async fn rotate_client_secret(
        &self,
        actor: Actor<'_>,
        id: &str,
        overlap: Duration,
        from: &ClientInfo,
    ) -> Result<(Client, ClientSecret), AuthError> {
        let id = Self::parse_client_id(id)?;
        let current = self.clients.client(&id).await?.ok_or(AuthError::ClientNotFound)?;
        if !current.kind.has_secret() {
            return Err(AuthError::PublicClient);
        }
        let secret = ClientSecret::generate();
        let until = self.clock.now().plus(overlap);
        let client =
            self.clients.rotate_client_secret(&id, secret.hash(), until).await?.ok_or(AuthError::ClientNotFound)?;
        let entry = audited(kind::CLIENT_SECRET_ROTATED, actor, &client, from);
        self.audit
            .record(entry.detail(format!("{} {}: the old secret works until {until}", client.kind.as_str(), client.id)))
            .await;
        Ok((client, secret))
    }

    /// Checks a client's id and secret, and that it is of `kind`. A use is written back at most
    /// once a minute.
    pub async fn authenticate_client(
        &self,
        id: &str,
        secret: &str,
        kind: ClientKind,
    ) -> Result<Client, ClientAuthError> {
        let client = self.client_by_credentials(id, Some(secret)).await?;
        if client.kind != kind {
            return Err(ClientAuthError::WrongKind);
        }
        Ok(client)
    }

    /// The client `id` names, if `secret` proves it: its secret (the current one or the previous
    /// one within its overlap) for a client that has one, no secret at all for a public client.
    /// A use is written back at most once a minute.
    pub(crate) async fn client_by_credentials(
        &self,
        id: &str,
        secret: Option<&str>,
    ) -> Result<Client, ClientAuthError> {
        let id = ClientId::parse(id).ok_or(ClientAuthError::Invalid)?;
        let client = self.clients.client(&id).await?.ok_or(ClientAuthError::Invalid)?;
        let now = self.clock.now();
        let proven = match (client.kind.has_secret(), secret) {
            (true, Some(secret)) => client.secret_matches(secret, now),
            (false, None) => true,
            _ => false,
        };
        if !proven {
            return Err(ClientAuthError::Invalid);
        }
        if client.last_used_at.is_none_or(|at| now.since(at) >= Duration::from_secs(60)) {
            self.clients.touch_client(&id, now).await?;
        }
        Ok(client)
    }
}
