//! Public test vectors (tests/vectors/README.md): the RFC examples for every algorithm we
//! support, and Project Wycheproof's signature-primitive vectors, run through our own verifier.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_token::clock::Timestamp;
use portcullis_token::jwt::{Algorithm, Expectations, Jwk, KeySet, SigningKey, VerifyingKey, verify, verify_jws};
use serde::Deserialize;

fn data(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn b64d(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

#[derive(Deserialize)]
struct RfcFile {
    vectors: Vec<RfcVector>,
}

#[derive(Deserialize)]
struct RfcVector {
    name: String,
    alg: String,
    jwk: Option<Jwk>,
    secret: Option<String>,
    jws: String,
}

fn key_for(alg: Algorithm, jwk: Option<&Jwk>, secret: Option<&str>) -> Result<VerifyingKey, String> {
    match (jwk, secret) {
        (Some(jwk), None) => VerifyingKey::from_jwk(jwk).map_err(|e| e.to_string()),
        (None, Some(secret)) => {
            SigningKey::from_private(alg, &b64d(secret)).map(|k| k.verifying_key().clone()).map_err(|e| e.to_string())
        }
        _ => Err("a vector needs a jwk or a secret".into()),
    }
}

#[test]
fn rfc_examples_verify_for_every_algorithm_and_any_change_breaks_them() {
    let file: RfcFile = serde_json::from_str(&data("rfc-jws.json")).expect("rfc-jws.json");
    let mut algs = Vec::new();
    for v in &file.vectors {
        let alg = Algorithm::parse(&v.alg).expect("supported alg");
        algs.push(alg);
        let key = key_for(alg, v.jwk.as_ref(), v.secret.as_deref()).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(key.alg(), alg);
        let (input, sig) = v.jws.rsplit_once('.').expect("three segments");
        let sig = b64d(sig);
        assert!(key.verify(input.as_bytes(), &sig), "{}: the RFC's signature must verify", v.name);
        // One flipped bit anywhere in the signature, or a changed message, fails.
        for i in [0, sig.len() / 2, sig.len() - 1] {
            let mut bad = sig.clone();
            bad[i] ^= 0x01;
            assert!(!key.verify(input.as_bytes(), &bad), "{}: bit {i} flipped", v.name);
        }
        let mut changed = input.as_bytes().to_vec();
        changed[input.len() - 1] ^= 0x01;
        assert!(!key.verify(&changed, &sig), "{}: payload changed", v.name);
        // A correct signature alone does not make an access token: these have no `typ:
        // at+jwt`, `exp`, or `kid` of ours.
        let set = KeySet::new([key.clone()]);
        let expect = Expectations { issuer: "joe".into(), audience: "joe".into(), leeway: Duration::from_secs(30) };
        assert!(verify(&v.jws, &set, &expect, Timestamp::from_unix_millis(1_300_000_000_000)).is_err(), "{}", v.name);
    }
    algs.sort_by_key(|a| a.as_str());
    assert_eq!(algs, [Algorithm::ES256, Algorithm::EdDSA, Algorithm::HS256, Algorithm::RS256], "one per algorithm");
}

#[derive(Deserialize)]
struct WycheproofFile {
    alg: String,
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    jwk: Option<Jwk>,
    secret: Option<String>,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: u32,
    comment: String,
    msg: String,
    sig: String,
    valid: bool,
}

/// Runs every case of a file; returns how many ran. A key our verifier refuses to load makes
/// every signature under it invalid, which is only right if none of them is valid.
fn run_wycheproof(name: &str) -> usize {
    let file: WycheproofFile = serde_json::from_str(&data(name)).expect(name);
    let alg = Algorithm::parse(&file.alg).expect("supported alg");
    let mut wrong = Vec::new();
    let mut ran = 0;
    for g in &file.groups {
        let key = key_for(alg, g.jwk.as_ref(), g.secret.as_deref());
        for t in &g.tests {
            ran += 1;
            let verified = match &key {
                Ok(k) => k.verify(&hex(&t.msg), &hex(&t.sig)),
                Err(_) => false,
            };
            if verified != t.valid {
                wrong.push(format!("#{} ({}): expected valid={}, got {verified}", t.id, t.comment, t.valid));
            }
        }
    }
    assert!(wrong.is_empty(), "{name}: {} of {ran} vectors disagree:\n{}", wrong.len(), wrong.join("\n"));
    ran
}

#[test]
fn wycheproof_ecdsa_p256_r_s_signatures() {
    assert!(run_wycheproof("wycheproof-es256-p1363.json") > 200);
}

#[test]
fn wycheproof_ed25519_signatures() {
    assert!(run_wycheproof("wycheproof-ed25519.json") > 100);
}

#[test]
fn wycheproof_rsa_pkcs1_sha256_signatures() {
    assert!(run_wycheproof("wycheproof-rs256.json") > 200);
}

#[test]
fn wycheproof_hmac_sha256_tags() {
    assert!(run_wycheproof("wycheproof-hs256.json") > 50);
}

#[derive(Deserialize)]
struct JwsFile {
    groups: Vec<JwsGroup>,
}

#[derive(Deserialize)]
struct JwsGroup {
    alg: String,
    jwk: Option<Jwk>,
    secret: Option<String>,
    tests: Vec<JwsCase>,
}

#[derive(Deserialize)]
struct JwsCase {
    id: u32,
    comment: String,
    jws: String,
    valid: bool,
}

/// Wycheproof's JSON Web Signature vectors: whole compact tokens (missing and extra segments,
/// modified parts, `alg: none`, symmetric-key confusion, an embedded `jwk`, JSON serialisation,
/// bad PKCS#1 padding) through the same structural and signature checks as access tokens.
#[test]
fn wycheproof_json_web_signatures() {
    let file: JwsFile = serde_json::from_str(&data("wycheproof-jws.json")).expect("wycheproof-jws.json");
    let mut wrong = Vec::new();
    let mut ran = 0;
    for g in &file.groups {
        let alg = Algorithm::parse(&g.alg).expect("supported alg");
        let key = key_for(alg, g.jwk.as_ref(), g.secret.as_deref()).unwrap_or_else(|e| panic!("{}: {e}", g.alg));
        for t in &g.tests {
            ran += 1;
            let result = verify_jws(&t.jws, &key);
            if result.is_ok() != t.valid {
                wrong.push(format!("#{} ({}): expected valid={}, got {result:?}", t.id, t.comment, t.valid));
            }
            if let Ok(payload) = result {
                assert_eq!(payload, b"foo", "#{}", t.id);
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {ran} vectors disagree:\n{}", wrong.len(), wrong.join("\n"));
    assert_eq!(ran, 47);
}
