//! JSON Web Tokens: keys and key sets ([`keys`]), access tokens ([`token`]), and strict JSON
//! ([`json`]).

pub mod json;
pub mod keys;
pub mod token;

pub use keys::{Algorithm, Jwk, Jwks, KeyError, KeySet, MIN_HMAC_SECRET, SigningKey, VerifyingKey};
pub use token::{
    AccessClaims, Audience, Expectations, FIRST_PARTY_CLIENT_ID, TokenError, check_claims, issue, verify, verify_jws,
};
