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
    /// The pages' second step of a sign-in: the ticket a correct password left (five minutes).
    Mfa,
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
            (CookieKind::Mfa, true) => "__Host-portcullis-mfa",
            (CookieKind::Mfa, false) => "portcullis-mfa",
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

    /// Every value of a cookie of this kind in the `Cookie` header(s): `name=value` pairs split
    /// at `;`, spaces around a pair and quotes around a value dropped, values that are not
    /// text skipped. Read as bytes, so a session check does not first validate the whole header
    /// (other sites' cookies included) as text.
    pub fn values<'h>(&self, headers: &'h HeaderMap, kind: CookieKind) -> impl Iterator<Item = &'h str> + 'h {
        let name = self.name(kind).as_bytes();
        headers.get_all(header::COOKIE).iter().flat_map(|v| v.as_bytes().split(|&b| b == b';')).filter_map(
            move |pair| {
                let mut value = pair.trim_ascii().strip_prefix(name)?.strip_prefix(b"=")?;
                while let [b'"', rest @ ..] = value {
                    value = rest;
                }
                while let [rest @ .., b'"'] = value {
                    value = rest;
                }
                std::str::from_utf8(value).ok()
            },
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `values` returned when it read the header as text: the reference for headers of
    /// cookie characters, which is all a browser sends.
    fn as_text<'h>(headers: &'h HeaderMap, name: &'static str) -> Vec<&'h str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.trim_matches('"'))
            .collect()
    }

    proptest! {
        #[test]
        fn cookie_values_are_read_as_the_text_reading_read_them(
            pairs in proptest::collection::vec(
                ("(portcullis|__Host-portcullis|portcullis-at|other|portcullis-rt|)", "\"?[!#-+\\--:<-\\[\\]-~]{0,20}\"?", " {0,2}"),
                0..6,
            ),
        ) {
            let header: String = pairs.iter().map(|(n, v, sp)| format!("{sp}{n}={v}")).collect::<Vec<_>>().join(";");
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_str(&header).expect("cookie characters"));
            for secure in [true, false] {
                let cookies = Cookies { secure };
                for kind in [CookieKind::Session, CookieKind::Access, CookieKind::Refresh] {
                    let read: Vec<&str> = cookies.values(&headers, kind).collect();
                    prop_assert_eq!(read, as_text(&headers, cookies.name(kind)));
                }
            }
        }
    }

    #[test]
    fn a_value_that_is_not_text_is_skipped_and_the_others_still_read() {
        let cookies = Cookies { secure: false };
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("portcullis=a b; portcullis=\"ok\""));
        headers.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"portcullis=\xff\xfe; portcullis=caf\xc3\xa9").expect("obs-text"),
        );
        assert_eq!(cookies.values(&headers, CookieKind::Session).collect::<Vec<_>>(), ["a b", "ok", "café"]);
    }
}
