//! The cookies Portcullis sets and reads: names, attributes, and the session credential.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use portcullis_core::SessionToken;

/// The cookies Portcullis sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieKind {
    /// Session mode: `<session id>.<secret>`.
    Session,
    /// JWT mode with `"transport":"cookie"`: the access token.
    Access,
    /// JWT mode with `"transport":"cookie"`: the refresh token.
    Refresh,
}

/// Cookie names and attributes. All are `HttpOnly; SameSite=Lax; Path=/` with no `Domain`; with
/// `session.cookie_secure` (the default) they are also `Secure` and `__Host-` prefixed.
#[derive(Debug, Clone)]
pub struct Cookies {
    pub secure: bool,
}

impl Cookies {
    pub const SESSION: &'static str = "__Host-portcullis";
    pub const PLAIN_SESSION: &'static str = "portcullis";

    pub fn name(&self, kind: CookieKind) -> &'static str {
        match (kind, self.secure) {
            (CookieKind::Session, true) => Self::SESSION,
            (CookieKind::Session, false) => Self::PLAIN_SESSION,
            (CookieKind::Access, true) => "__Host-portcullis-at",
            (CookieKind::Access, false) => "portcullis-at",
            (CookieKind::Refresh, true) => "__Host-portcullis-rt",
            (CookieKind::Refresh, false) => "portcullis-rt",
        }
    }

    fn header(&self, kind: CookieKind, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let s = format!("{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}", self.name(kind));
        // Values are base64url and dots, the rest is fixed text, so this cannot fail.
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// `Set-Cookie` carrying a credential.
    pub fn set(&self, kind: CookieKind, value: &str, max_age: Duration) -> HeaderValue {
        self.header(kind, value, max_age.as_secs())
    }

    /// `Set-Cookie` that makes the browser forget a cookie.
    pub fn clear(&self, kind: CookieKind) -> HeaderValue {
        self.header(kind, "", 0)
    }

    /// Every value of a cookie of this kind in the `Cookie` header(s).
    pub fn values<'h>(&self, headers: &'h HeaderMap, kind: CookieKind) -> impl Iterator<Item = &'h str> + 'h {
        let name = self.name(kind);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.trim_matches('"'))
    }

    /// `Set-Cookie` carrying a session credential.
    pub fn set_session(&self, token: &SessionToken, max_age: Duration) -> HeaderValue {
        self.set(CookieKind::Session, &token.expose(), max_age)
    }

    /// The session credential, if a cookie of our name holds a well-formed one.
    pub fn session(&self, headers: &HeaderMap) -> Option<SessionToken> {
        self.values(headers, CookieKind::Session).find_map(SessionToken::parse)
    }
}
