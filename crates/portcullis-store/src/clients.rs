//! The client registry's rows, as the SQL backends store them: one column list and one
//! conversion each way, shared by SQLite and PostgreSQL.

use portcullis_core::{Client, ClientId, ClientKind, SecretHash, Timestamp};

use crate::{StoreError, StoreResult};

/// The columns of the `clients` table, in the order [`ClientRow`] reads and writes them.
pub(crate) const CLIENT_COLUMNS: &str = "id, name, kind, secret_hash, previous_secret_hash, previous_until, \
     redirect_uris, post_logout_redirect_uris, backchannel_logout_uri, first_party, created_at, last_used_at";

/// A client as plain column values. URI lists are stored one per line (a URI holds no line
/// break).
pub(crate) struct ClientRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub secret_hash: Option<Vec<u8>>,
    pub previous_secret_hash: Option<Vec<u8>>,
    pub previous_until: Option<i64>,
    pub redirect_uris: String,
    pub post_logout_redirect_uris: String,
    pub backchannel_logout_uri: Option<String>,
    pub first_party: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

fn hash(bytes: Option<Vec<u8>>) -> StoreResult<Option<SecretHash>> {
    bytes
        .map(|b| b.try_into().map(SecretHash).map_err(|_| StoreError::Corrupt("client secret hash".into())))
        .transpose()
}

fn lines(s: &str) -> Vec<String> {
    s.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

impl ClientRow {
    pub fn of(c: &Client) -> Self {
        Self {
            id: c.id.to_string(),
            name: c.name.clone(),
            kind: c.kind.as_str().to_owned(),
            secret_hash: c.secret_hash.map(|h| h.0.to_vec()),
            previous_secret_hash: c.previous_secret_hash.map(|h| h.0.to_vec()),
            previous_until: c.previous_until.map(Timestamp::unix_millis),
            redirect_uris: c.redirect_uris.join("\n"),
            post_logout_redirect_uris: c.post_logout_redirect_uris.join("\n"),
            backchannel_logout_uri: c.backchannel_logout_uri.clone(),
            first_party: c.first_party,
            created_at: c.created_at.unix_millis(),
            last_used_at: c.last_used_at.map(Timestamp::unix_millis),
        }
    }

    pub fn into_client(self) -> StoreResult<Client> {
        let kind =
            ClientKind::parse(&self.kind).ok_or_else(|| StoreError::Corrupt(format!("client kind {:?}", self.kind)))?;
        Ok(Client {
            id: ClientId::from_stored(self.id),
            name: self.name,
            kind,
            secret_hash: hash(self.secret_hash)?,
            previous_secret_hash: hash(self.previous_secret_hash)?,
            previous_until: self.previous_until.map(Timestamp::from_unix_millis),
            redirect_uris: lines(&self.redirect_uris),
            post_logout_redirect_uris: lines(&self.post_logout_redirect_uris),
            backchannel_logout_uri: self.backchannel_logout_uri,
            first_party: self.first_party,
            created_at: Timestamp::from_unix_millis(self.created_at),
            last_used_at: self.last_used_at.map(Timestamp::from_unix_millis),
        })
    }
}
