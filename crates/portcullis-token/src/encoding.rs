//! The byte helpers tokens are made of: CSPRNG bytes, base64url and SHA-256.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// If the operating system has no randomness to give. Continuing without it would issue
/// guessable credentials, so this is the one failure that must stop the process.
#[allow(clippy::expect_used)]
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system CSPRNG is unavailable");
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}
