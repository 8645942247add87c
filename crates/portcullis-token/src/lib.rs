//! # portcullis-token
//!
//! Portcullis access tokens and the time they are checked against: signing keys and key sets
//! (EdDSA, ES256, RS256, HS256), the one token verification every Portcullis node and every
//! service using `portcullis-verify` runs, and the [`Clock`](clock::Clock).
//!
//! This crate is what a service that only verifies tokens links. It must not depend on password
//! hashing, Unicode tables, storage or HTTP; `portcullis-core` re-exports it for the rest of
//! Portcullis.
//!
//! ## Layout
//!
//! - [`clock`]: [`Timestamp`](clock::Timestamp) and the [`Clock`](clock::Clock) every
//!   time-dependent rule takes as a parameter (the only module that reads the system's clock).
//! - [`jwt`]: keys (`jwt/keys.rs`), the strict JSON reader (`jwt/json.rs`), and issuing and
//!   verifying tokens (`jwt/token.rs`) with the rules of SECURITY.md.
//! - [`encoding`]: CSPRNG bytes, base64url and SHA-256.

pub mod clock;
pub mod encoding;
pub mod jwt;
