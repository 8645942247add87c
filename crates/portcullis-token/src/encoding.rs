//! The byte helpers tokens are made of: CSPRNG bytes, base64url and SHA-256.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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
    // aws-lc's assembly (SHA extensions, AVX2): a third of RustCrypto's portable code's
    // instructions where the CPU offers no SHA extensions, and this runs on every session check.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
