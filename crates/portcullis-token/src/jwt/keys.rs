//! Signing and verifying keys, JWKs and RFC 7638 thumbprints.
//!
//! The algorithm is a property of the key, fixed when the key is made or loaded: a token's `alg`
//! header can only be checked against it, never choose it. The signature primitives come from
//! aws-lc-rs; the encoding checks SECURITY.md asks for (exact ECDSA `R‖S` length and range,
//! Ed25519 `S < L`, RSA ≥ 2048 bits) are made here before the primitive is called.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
    ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents,
    UnparsedPublicKey,
};
use aws_lc_rs::{constant_time, hmac};
use serde::{Deserialize, Serialize};

use crate::encoding::{b64, fill_random, sha256};

/// The signature algorithms Portcullis signs with (JWA names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    EdDSA,
    ES256,
    RS256,
    HS256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256, Algorithm::HS256];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            Algorithm::HS256 => "HS256",
        }
    }

    /// Exact, case-sensitive match of a JWA name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn is_symmetric(self) -> bool {
        self == Algorithm::HS256
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The smallest HS256 secret accepted, in bytes (256 bits).
pub const MIN_HMAC_SECRET: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("could not generate a {0} key")]
    Generate(Algorithm),
    #[error("the stored {0} key is not valid")]
    Invalid(Algorithm),
    #[error("an HS256 secret must be at least {MIN_HMAC_SECRET} bytes")]
    ShortSecret,
    #[error("the JWK is not a usable public key: {0}")]
    Jwk(&'static str),
}

/// A public JSON Web Key as published in the JWKS. Never holds private members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Present only so a JWK carrying private material can be recognised and refused.
    #[serde(default, skip_serializing)]
    pub d: Option<String>,
}

/// A JWK Set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// RFC 7638 thumbprint over the required members, in lexicographic order.
fn thumbprint(members: &[(&str, &str)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{}", serde_json::Value::from(*k), serde_json::Value::from(*v)))
        .collect();
    b64(&sha256(format!("{{{}}}", body.join(",")).as_bytes()))
}

fn b64d(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

enum Signer {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Hmac(Box<hmac::Key>),
}

/// A private key that signs tokens, with its algorithm fixed.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    signer: Signer,
    private: Vec<u8>,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key from the OS CSPRNG: Ed25519, P-256, RSA-2048 or a 256-bit HMAC secret.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let private = match alg {
            Algorithm::EdDSA => Ed25519KeyPair::generate().and_then(|k| k.to_pkcs8()).map(|d| d.as_ref().to_vec()),
            Algorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map(|d| d.as_ref().to_vec()),
            Algorithm::RS256 => {
                RsaKeyPair::generate(KeySize::Rsa2048).and_then(|k| k.as_der()).map(|d| d.as_ref().to_vec())
            }
            Algorithm::HS256 => {
                let mut secret = vec![0u8; MIN_HMAC_SECRET];
                fill_random(&mut secret);
                Ok(secret)
            }
        }
        .map_err(|_| KeyError::Generate(alg))?;
        Self::from_private(alg, &private)
    }

    /// Loads a key from its stored private form: PKCS#8 DER, or the raw secret for HS256.
    pub fn from_private(alg: Algorithm, private: &[u8]) -> Result<Self, KeyError> {
        let bad = |_| KeyError::Invalid(alg);
        let (signer, public) = match alg {
            Algorithm::EdDSA => {
                let k = Ed25519KeyPair::from_pkcs8(private).map_err(bad)?;
                let x: [u8; 32] = k.public_key().as_ref().try_into().map_err(|_| KeyError::Invalid(alg))?;
                (Signer::Ed(k), Verifier::Ed(x))
            }
            Algorithm::ES256 => {
                let k = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, private).map_err(bad)?;
                let verifier = Verifier::ec(k.public_key().as_ref()).ok_or(KeyError::Invalid(alg))?;
                (Signer::Ec(k), verifier)
            }
            Algorithm::RS256 => {
                let k = RsaKeyPair::from_pkcs8(private).map_err(bad)?;
                if k.public_modulus_len() < 256 {
                    return Err(KeyError::Invalid(alg));
                }
                let pk = k.public_key();
                let n = pk.modulus().big_endian_without_leading_zero().to_vec();
                let e = pk.exponent().big_endian_without_leading_zero().to_vec();
                (Signer::Rsa(k), Verifier::rsa(n, e).ok_or(KeyError::Invalid(alg))?)
            }
            Algorithm::HS256 => {
                if private.len() < MIN_HMAC_SECRET {
                    return Err(KeyError::ShortSecret);
                }
                let key = hmac::Key::new(hmac::HMAC_SHA256, private);
                (Signer::Hmac(Box::new(key.clone())), Verifier::Hmac(Box::new(key)))
            }
        };
        let kid = match &public {
            Verifier::Ed(x) => thumbprint(&[("crv", "Ed25519"), ("kty", "OKP"), ("x", &b64(x))]),
            Verifier::Ec(key) => {
                let p = key.as_ref();
                thumbprint(&[("crv", "P-256"), ("kty", "EC"), ("x", &b64(&p[1..33])), ("y", &b64(&p[33..65]))])
            }
            Verifier::Rsa { n, e, .. } => thumbprint(&[("e", &b64(e)), ("kty", "RSA"), ("n", &b64(n))]),
            Verifier::Hmac(_) => thumbprint(&[("k", &b64(private)), ("kty", "oct")]),
        };
        let public = VerifyingKey { kid: kid.clone(), alg, verifier: public };
        Ok(Self { kid, alg, signer, private: private.to_vec(), public })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The stored private form. It is the key: keep it out of logs and world-readable files.
    pub fn private_bytes(&self) -> &[u8] {
        &self.private
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let fail = |_| KeyError::Invalid(self.alg);
        match &self.signer {
            Signer::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
            Signer::Ec(k) => k.sign(&SystemRandom::new(), message).map(|s| s.as_ref().to_vec()).map_err(fail),
            Signer::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig).map_err(fail)?;
                Ok(sig)
            }
            Signer::Hmac(k) => Ok(hmac::sign(k, message).as_ref().to_vec()),
        }
    }
}

/// The public half of a key. ECDSA and RSA keys are parsed once, when the key is made or
/// loaded, not on every verification (the parsed forms save 2–12 % of a verification); the raw
/// members stay for JWKs and thumbprints. Ed25519 keys are used raw: parsing them saves nothing.
#[derive(Clone)]
enum Verifier {
    Ed([u8; 32]),
    /// Parsed from an uncompressed SEC1 point (65 bytes), which `as_ref` gives back.
    Ec(ParsedPublicKey),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        parsed: ParsedPublicKey,
    },
    Hmac(Box<hmac::Key>),
}

impl Verifier {
    /// A P-256 key from its uncompressed point; `None` when it is not one, or not on the curve.
    fn ec(point: &[u8]) -> Option<Self> {
        if point.len() != 65 || point[0] != 4 {
            return None;
        }
        ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).ok().map(Self::Ec)
    }

    /// An RSA key from its minimally encoded modulus and exponent.
    fn rsa(n: Vec<u8>, e: Vec<u8>) -> Option<Self> {
        let parsed = RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
            .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
            .ok()?;
        Some(Self::Rsa { n, e, parsed })
    }
}

/// A key that verifies signatures of exactly one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    alg: Algorithm,
    verifier: Verifier,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// The order n of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The order L of the Ed25519 group, little-endian.
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// 1 ≤ v < n for a big-endian scalar.
fn ecdsa_scalar_in_range(v: &[u8]) -> bool {
    v.iter().any(|&b| b != 0) && v < &P256_ORDER[..]
}

/// S < L for a little-endian Ed25519 scalar.
fn ed25519_scalar_canonical(s: &[u8]) -> bool {
    for i in (0..32).rev() {
        if s[i] != ED25519_L[i] {
            return s[i] < ED25519_L[i];
        }
    }
    false
}

impl VerifyingKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Checks `signature` over `message` with this key's algorithm, and nothing else.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.verifier {
            Verifier::Ed(x) => {
                signature.len() == 64
                    && ed25519_scalar_canonical(&signature[32..])
                    && UnparsedPublicKey::new(&signature::ED25519, x).verify(message, signature).is_ok()
            }
            Verifier::Ec(parsed) => {
                signature.len() == 64
                    && ecdsa_scalar_in_range(&signature[..32])
                    && ecdsa_scalar_in_range(&signature[32..])
                    && parsed.verify_sig(message, signature).is_ok()
            }
            Verifier::Rsa { n, parsed, .. } => {
                signature.len() == n.len() && parsed.verify_sig(message, signature).is_ok()
            }
            Verifier::Hmac(key) => {
                let expected = hmac::sign(key, message);
                constant_time::verify_slices_are_equal(expected.as_ref(), signature).is_ok()
            }
        }
    }

    /// The public JWK; `None` for HS256, whose key is secret and never published.
    pub fn public_jwk(&self) -> Option<Jwk> {
        let base = Jwk {
            kty: String::new(),
            kid: Some(self.kid.clone()),
            alg: Some(self.alg.as_str().into()),
            use_: Some("sig".into()),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            d: None,
        };
        match &self.verifier {
            Verifier::Ed(x) => Some(Jwk { kty: "OKP".into(), crv: Some("Ed25519".into()), x: Some(b64(x)), ..base }),
            Verifier::Ec(key) => Some(Jwk {
                kty: "EC".into(),
                crv: Some("P-256".into()),
                x: Some(b64(&key.as_ref()[1..33])),
                y: Some(b64(&key.as_ref()[33..65])),
                ..base
            }),
            Verifier::Rsa { n, e, .. } => Some(Jwk { kty: "RSA".into(), n: Some(b64(n)), e: Some(b64(e)), ..base }),
            Verifier::Hmac(_) => None,
        }
    }

    /// A verifying key from a published JWK. The JWK must name its algorithm, which must fit
    /// its key type; private members are refused; the `kid` is recomputed from the key material
    /// (RFC 7638), so a JWKS cannot pair a key with another key's id.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        if jwk.d.is_some() {
            return Err(KeyError::Jwk("private members are not accepted"));
        }
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(KeyError::Jwk("not a signing key"));
        }
        let alg = jwk.alg.as_deref().and_then(Algorithm::parse).ok_or(KeyError::Jwk("unknown or missing alg"))?;
        let member = |v: &Option<String>, name: &'static str| -> Result<Vec<u8>, KeyError> {
            v.as_deref().and_then(b64d).ok_or(KeyError::Jwk(name))
        };
        let (verifier, kid) = match (alg, jwk.kty.as_str(), jwk.crv.as_deref()) {
            (Algorithm::EdDSA, "OKP", Some("Ed25519")) => {
                let x: [u8; 32] = member(&jwk.x, "x")?.try_into().map_err(|_| KeyError::Jwk("x"))?;
                let kid = thumbprint(&[("crv", "Ed25519"), ("kty", "OKP"), ("x", &b64(&x))]);
                (Verifier::Ed(x), kid)
            }
            (Algorithm::ES256, "EC", Some("P-256")) => {
                let (x, y) = (member(&jwk.x, "x")?, member(&jwk.y, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(KeyError::Jwk("P-256 coordinates are 32 bytes"));
                }
                let kid = thumbprint(&[("crv", "P-256"), ("kty", "EC"), ("x", &b64(&x)), ("y", &b64(&y))]);
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (Verifier::ec(&point).ok_or(KeyError::Jwk("not a point on P-256"))?, kid)
            }
            (Algorithm::RS256, "RSA", None) => {
                let (n, e) = (member(&jwk.n, "n")?, member(&jwk.e, "e")?);
                if n.len() < 256 || n[0] == 0 || e.is_empty() || e[0] == 0 {
                    return Err(KeyError::Jwk("RSA keys must be at least 2048 bits, minimally encoded"));
                }
                let kid = thumbprint(&[("e", &b64(&e)), ("kty", "RSA"), ("n", &b64(&n))]);
                (Verifier::rsa(n, e).ok_or(KeyError::Jwk("not an RSA public key"))?, kid)
            }
            _ => return Err(KeyError::Jwk("kty, crv and alg do not fit together")),
        };
        if jwk.kid.as_deref().is_some_and(|k| k != kid) {
            return Err(KeyError::Jwk("kid is not the key's RFC 7638 thumbprint"));
        }
        Ok(Self { kid, alg, verifier })
    }
}

/// The keys tokens may be verified with, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

impl KeySet {
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        Self { keys: keys.into_iter().map(|k| (k.kid.clone(), k)).collect() }
    }

    /// Verifying keys for every usable member of a JWKS; unusable members are skipped.
    pub fn from_jwks(jwks: &Jwks) -> Self {
        Self::new(jwks.keys.iter().filter_map(|j| VerifyingKey::from_jwk(j).ok()))
    }

    /// A lookup in this set and nowhere else.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The public JWKS (symmetric keys are left out).
    pub fn jwks(&self) -> Jwks {
        let mut keys: Vec<Jwk> = self.keys.values().filter_map(VerifyingKey::public_jwk).collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        Jwks { keys }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_signs_and_verifies_and_round_trips() {
        for alg in Algorithm::ALL {
            let key = SigningKey::generate(alg).expect("generate");
            assert_eq!(key.alg(), alg);
            let sig = key.sign(b"message").expect("sign");
            assert!(key.verifying_key().verify(b"message", &sig), "{alg}");
            assert!(!key.verifying_key().verify(b"messagE", &sig), "{alg}");
            let again = SigningKey::from_private(alg, key.private_bytes()).expect("reload");
            assert_eq!(again.kid(), key.kid());
            assert!(again.verifying_key().verify(b"message", &sig));
            match key.verifying_key().public_jwk() {
                Some(jwk) => {
                    let json = serde_json::to_string(&jwk).expect("json");
                    for private in ["\"d\"", "\"p\"", "\"q\"", "\"k\""] {
                        assert!(!json.contains(private), "{json}");
                    }
                    let back = VerifyingKey::from_jwk(&jwk).expect("from jwk");
                    assert_eq!(back.kid(), key.kid());
                    assert!(back.verify(b"message", &sig));
                }
                None => assert_eq!(alg, Algorithm::HS256),
            }
        }
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let tp = thumbprint(&[("e", "AQAB"), ("kty", "RSA"), ("n", n)]);
        assert_eq!(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn hmac_secrets_must_be_long_enough() {
        assert_eq!(SigningKey::from_private(Algorithm::HS256, &[7u8; 31]).err(), Some(KeyError::ShortSecret));
        assert!(SigningKey::from_private(Algorithm::HS256, &[7u8; 32]).is_ok());
    }

    #[test]
    fn jwk_checks() {
        let key = SigningKey::generate(Algorithm::EdDSA).expect("generate");
        let jwk = key.verifying_key().public_jwk().expect("public");
        let mut wrong_alg = jwk.clone();
        wrong_alg.alg = Some("ES256".into());
        assert!(VerifyingKey::from_jwk(&wrong_alg).is_err());
        let mut no_alg = jwk.clone();
        no_alg.alg = None;
        assert!(VerifyingKey::from_jwk(&no_alg).is_err());
        let mut other_kid = jwk.clone();
        other_kid.kid = Some("../../etc/passwd".into());
        assert!(VerifyingKey::from_jwk(&other_kid).is_err());
        let mut private = jwk.clone();
        private.d = Some("AAAA".into());
        assert!(VerifyingKey::from_jwk(&private).is_err());
        let mut enc = jwk;
        enc.use_ = Some("enc".into());
        assert!(VerifyingKey::from_jwk(&enc).is_err());
    }

    #[test]
    fn a_p256_jwk_off_the_curve_is_refused_when_loaded() {
        let key = SigningKey::generate(Algorithm::ES256).expect("generate");
        let jwk = key.verifying_key().public_jwk().expect("public");
        let mut as_published = jwk.clone();
        as_published.kid = None;
        let loaded = VerifyingKey::from_jwk(&as_published).expect("the published key loads");
        let signature = key.sign(b"message").expect("sign");
        assert!(loaded.verify(b"message", &signature));
        let mut off_curve = as_published;
        let mut y = b64d(off_curve.y.as_deref().expect("y")).expect("base64url");
        y[31] ^= 1;
        off_curve.y = Some(b64(&y));
        assert!(matches!(VerifyingKey::from_jwk(&off_curve), Err(KeyError::Jwk(_))));
    }

    #[test]
    fn scalar_range_checks() {
        assert!(!ecdsa_scalar_in_range(&[0u8; 32]));
        assert!(ecdsa_scalar_in_range(&{
            let mut one = [0u8; 32];
            one[31] = 1;
            one
        }));
        assert!(!ecdsa_scalar_in_range(&P256_ORDER));
        assert!(!ecdsa_scalar_in_range(&[0xffu8; 32]));
        assert!(!ed25519_scalar_canonical(&ED25519_L));
        assert!(ed25519_scalar_canonical(&[0u8; 32]));
        let mut below = ED25519_L;
        below[0] -= 1;
        assert!(ed25519_scalar_canonical(&below));
    }

    #[test]
    fn malleable_and_out_of_range_signatures_are_refused() {
        // Ed25519: S + L verifies mathematically in lax implementations; it must not here.
        let ed = SigningKey::generate(Algorithm::EdDSA).expect("generate");
        let mut sig = ed.sign(b"m").expect("sign");
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(sig[32 + i]) + u16::from(ED25519_L[i]) + carry;
            sig[32 + i] = (v & 0xff) as u8;
            carry = v >> 8;
        }
        assert!(!ed.verifying_key().verify(b"m", &sig));
        // ECDSA: zeroes (CVE-2022-21449), wrong lengths, and DER instead of R‖S.
        let ec = SigningKey::generate(Algorithm::ES256).expect("generate");
        let good = ec.sign(b"m").expect("sign");
        assert!(ec.verifying_key().verify(b"m", &good));
        assert!(!ec.verifying_key().verify(b"m", &[0u8; 64]));
        assert!(!ec.verifying_key().verify(b"m", &good[..63]));
        let mut long = good.clone();
        long.push(0);
        assert!(!ec.verifying_key().verify(b"m", &long));
        let mut s_is_n = good[..32].to_vec();
        s_is_n.extend_from_slice(&P256_ORDER);
        assert!(!ec.verifying_key().verify(b"m", &s_is_n));
    }
}
