//! Access tokens (RFC 9068 `at+jwt`): issuing, and the one verification both the server and
//! `portcullis-verify` use.
//!
//! Verification is written out here rather than delegated, so every rule of SECURITY.md is
//! visible in one place and in this order: a size cap before anything is decoded; exactly three
//! segments; strict base64url; a header with only the members we issue (`alg`, `typ`, `kid`) —
//! so `jku`, `x5u`, `x5c`, `jwk`, `crit` and `b64` are refused, never followed; `typ` must be
//! `at+jwt`; the key is looked up by `kid` in our own set only, and the header's `alg` must equal
//! the key's; the signature; then claims without duplicate members and with `exp` required and
//! `exp`, `nbf`, `iat`, `iss` and `aud` checked with at most 60 s of leeway.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json::parse_object;
use super::keys::{KeyError, KeySet, SigningKey, VerifyingKey};
use crate::clock::Timestamp;
use crate::encoding::b64;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The most clock skew ever tolerated.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

/// The `typ` of an access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Why a token was refused. Clients only ever see `invalid_token`; this is for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token too large")]
    TooLarge,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("header member {0:?} is not accepted")]
    ForbiddenHeader(String),
    #[error("not an access token (typ)")]
    WrongType,
    #[error("unknown key id")]
    UnknownKey,
    #[error("alg does not match the key")]
    AlgorithmMismatch,
    #[error("bad signature")]
    BadSignature,
    #[error("invalid claims: {0}")]
    Claims(String),
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
}

/// `aud`: one string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(v) => v.iter().any(|a| a == aud),
        }
    }
}

/// The `client_id` of access tokens issued by Portcullis' own login (`POST /v1/login`, the
/// sign-in page): the first-party client.
pub const FIRST_PARTY_CLIENT_ID: &str = "portcullis";

/// The claims of a Portcullis access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
    pub sid: String,
    /// The client the token was issued to (RFC 9068 §2.2): [`FIRST_PARTY_CLIENT_ID`] for a
    /// login through Portcullis' own API and pages. Empty in tokens from before it was added.
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub email: String,
    /// The scope granted to an application (RFC 9068 §2.2.3); absent in tokens of Portcullis'
    /// own logins.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// How the person signed in (RFC 8176: `pwd`, `otp`, `hwk`, `swk`, and `mfa` when more than
    /// one factor was used). Absent in a client's own token, where no person signed in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

impl AccessClaims {
    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.exp.saturating_mul(1000))
    }

    pub fn issued_at(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.iat.saturating_mul(1000))
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// What a verifier expects of every token.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub issuer: String,
    pub audience: String,
    /// Clamped to [`MAX_LEEWAY`].
    pub leeway: Duration,
}

/// Signs `claims` as an access token with `key`.
pub fn issue(key: &SigningKey, claims: &AccessClaims) -> Result<String, KeyError> {
    sign(key, ACCESS_TOKEN_TYP, claims)
}

/// Signs any claims as a compact JWS with the header `alg`, `typ` and `kid` (ID tokens are
/// `JWT`, back-channel logout tokens `logout+jwt`).
pub fn sign(key: &SigningKey, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
    let header = serde_json::json!({"alg": key.alg().as_str(), "typ": typ, "kid": key.kid()});
    let header = b64(header.to_string().as_bytes());
    let payload = b64(serde_json::to_string(claims).unwrap_or_default().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let sig = key.sign(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64(&sig)))
}

/// Verifies a token of type `typ` that one of `keys` signed (by the structural, header and
/// signature rules of [`verify`]) and returns its claims, unchecked: the caller applies the
/// rules of its kind (an `id_token_hint` may have expired, for instance).
pub fn verify_signed(token: &str, keys: &KeySet, typ: &str) -> Result<Map<String, Value>, TokenError> {
    let jws = parse_jws(token)?;
    let found = jws.header.get("typ").and_then(Value::as_str).ok_or(TokenError::WrongType)?;
    if !found.eq_ignore_ascii_case(typ) {
        return Err(TokenError::WrongType);
    }
    let kid = jws.header.get("kid").and_then(Value::as_str).ok_or(TokenError::UnknownKey)?;
    let key = keys.get(kid).ok_or(TokenError::UnknownKey)?;
    check_signature(&jws, key)?;
    parse_object(&strict_b64(jws.p64)?).map_err(TokenError::Claims)
}

fn strict_b64(segment: &str) -> Result<Vec<u8>, TokenError> {
    use base64::Engine as _;
    // The URL-safe alphabet without padding, refusing non-zero trailing bits: `=`, `+`, `/`,
    // whitespace and non-canonical encodings all fail here.
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment).map_err(|_| TokenError::Malformed("base64url"))
}

/// The `kid` a token names, checked only for shape. For key-set refresh decisions; never a
/// substitute for [`verify`].
pub fn peek_kid(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let header = token.split('.').next()?;
    let header = parse_object(&strict_b64(header).ok()?).ok()?;
    header.get("kid")?.as_str().filter(|k| k.len() <= 128).map(str::to_owned)
}

/// A compact JWS that passed the structural rules: size cap, exactly three non-empty segments,
/// strict base64url, a strict JSON header naming only `alg`, `typ` and `kid` (so `crit`, `jku`,
/// `x5u`, `x5c`, `jwk`, `b64` … all make a token invalid).
struct Jws<'t> {
    header: Map<String, Value>,
    alg: String,
    signing_input: &'t str,
    p64: &'t str,
    s64: &'t str,
}

fn parse_jws(token: &str) -> Result<Jws<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed("a JWS has exactly three segments"));
    };
    if h64.is_empty() || p64.is_empty() || s64.is_empty() {
        return Err(TokenError::Malformed("empty segment"));
    }
    let header = parse_object(&strict_b64(h64)?).map_err(|_| TokenError::Malformed("header"))?;
    for name in header.keys() {
        if !matches!(name.as_str(), "alg" | "typ" | "kid") {
            return Err(TokenError::ForbiddenHeader(name.clone()));
        }
    }
    let alg = header.get("alg").and_then(Value::as_str).ok_or(TokenError::Malformed("alg"))?.to_owned();
    let signing_input = &token[..h64.len() + 1 + p64.len()];
    Ok(Jws { header, alg, signing_input, p64, s64 })
}

/// The key fixes the algorithm: the header's `alg` must name the key's own.
fn check_signature(jws: &Jws<'_>, key: &VerifyingKey) -> Result<(), TokenError> {
    if jws.alg != key.alg().as_str() {
        return Err(TokenError::AlgorithmMismatch);
    }
    let signature = strict_b64(jws.s64)?;
    if !key.verify(jws.signing_input.as_bytes(), &signature) {
        return Err(TokenError::BadSignature);
    }
    Ok(())
}

/// The access-token header rules on top of the structural ones: `typ` is `at+jwt` and `kid`
/// names a key (looked up in our own key set only).
fn access_token_kid(header: &Map<String, Value>) -> Result<&str, TokenError> {
    let typ = header.get("typ").and_then(Value::as_str).ok_or(TokenError::WrongType)?;
    let typ = typ.strip_prefix("application/").unwrap_or(typ);
    if !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) {
        return Err(TokenError::WrongType);
    }
    let kid = header.get("kid").and_then(Value::as_str).ok_or(TokenError::UnknownKey)?;
    if kid.is_empty() || kid.len() > 128 {
        return Err(TokenError::UnknownKey);
    }
    Ok(kid)
}

/// Verifies a compact JWS with one given key, by the same structural and signature rules as
/// [`verify`] but without the access-token rules (`typ`, `kid`, claims); returns the payload.
/// For checking the verifier against published JWS test vectors.
pub fn verify_jws(token: &str, key: &VerifyingKey) -> Result<Vec<u8>, TokenError> {
    let jws = parse_jws(token)?;
    check_signature(&jws, key)?;
    strict_b64(jws.p64)
}

/// Verifies an access token against `keys` and `expect` at `now`.
pub fn verify(token: &str, keys: &KeySet, expect: &Expectations, now: Timestamp) -> Result<AccessClaims, TokenError> {
    let jws = parse_jws(token)?;
    let kid = access_token_kid(&jws.header)?;
    let key = keys.get(kid).ok_or(TokenError::UnknownKey)?;
    check_signature(&jws, key)?;
    let payload = parse_object(&strict_b64(jws.p64)?).map_err(TokenError::Claims)?;
    let claims: AccessClaims =
        serde_json::from_value(Value::Object(payload)).map_err(|e| TokenError::Claims(e.to_string()))?;
    check_claims(&claims, expect, now)?;
    Ok(claims)
}

/// The time and audience rules alone (also re-applied to cached tokens).
pub fn check_claims(claims: &AccessClaims, expect: &Expectations, now: Timestamp) -> Result<(), TokenError> {
    let leeway = i64::try_from(expect.leeway.min(MAX_LEEWAY).as_secs()).unwrap_or(60);
    let now = now.unix_seconds();
    if now >= claims.exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) || claims.iat > now.saturating_add(leeway) {
        return Err(TokenError::NotYetValid);
    }
    if claims.iss != expect.issuer {
        return Err(TokenError::WrongIssuer);
    }
    if !claims.aud.contains(&expect.audience) {
        return Err(TokenError::WrongAudience);
    }
    if claims.sub.is_empty() || claims.jti.is_empty() || claims.sid.is_empty() {
        return Err(TokenError::Claims("sub, jti and sid must not be empty".into()));
    }
    Ok(())
}
