//! Access-token verification and the strict JSON parser it uses: any input is refused or
//! accepted, never a panic; and nothing the fuzzer makes up passes as a token signed by keys it
//! does not have.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use portcullis_core::Timestamp;
use portcullis_core::jwt::{Algorithm, Expectations, KeySet, SigningKey, json, verify};

static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    let keys = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256, Algorithm::HS256]
        .map(|alg| SigningKey::generate(alg).expect("key").verifying_key().clone());
    KeySet::new(keys)
});

fuzz_target!(|data: &[u8]| {
    let _ = json::parse_object(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let expect = Expectations {
            issuer: "https://auth.example".into(),
            audience: "https://auth.example".into(),
            leeway: Duration::from_secs(30),
        };
        let result = verify(text, &KEYS, &expect, Timestamp::from_unix_millis(1_800_000_000_000));
        assert!(result.is_err(), "a made-up token verified: {text:?}");
    }
});
