//! Random values and the session credential.
//!
//! A session is named by a public [`SessionId`] (128 random bits: shown in the device list, used
//! in `DELETE /v1/sessions/{id}` and as the JWT `sid`) and proven by a 256-bit secret. The client
//! holds both as one [`SessionToken`], `<id>.<secret>`; the store keeps only the SHA-256 of the
//! secret ([`SecretHash`]) and compares it in constant time, so a leaked store or a leaked device
//! list never yields a usable credential.

use std::fmt;

use smol_str::SmolStr;
use subtle::ConstantTimeEq;

pub use portcullis_token::encoding::{b64, fill_random, sha256};

/// Each byte's value as a base64url digit, or [`NOT_B64`].
const SEXTETS: [u8; 256] = {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut table = [NOT_B64; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_B64: u8 = 0xff;

/// Whether `s` is what [`b64_exact`] accepts for `n` bytes, without decoding it: the exact
/// length, only base64url characters, and the bits past the last byte zero. A session id is only
/// compared, never decoded, so a session check does not decode it.
fn is_b64_exact(s: &str, n: usize) -> bool {
    let unused = (n * 4).div_ceil(3) * 6 - n * 8;
    let bytes = s.as_bytes();
    bytes.len() == (n * 4).div_ceil(3)
        && bytes.iter().all(|&b| SEXTETS[usize::from(b)] != NOT_B64)
        && bytes.last().is_some_and(|&b| SEXTETS[usize::from(b)] & ((1 << unused) - 1) == 0)
}

/// Strict base64url without padding: exactly `N` bytes, canonical encoding only (no padding,
/// no `+` or `/`, no whitespace, the bits past the last byte zero), decoded on the stack. The
/// two credentials of every session check go through here; the base64 crate's general decoder,
/// which the tests hold this to, took several times the instructions for these few bytes.
fn b64_exact<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != (N * 4).div_ceil(3) {
        return None;
    }
    let sextet = |b: u8| u32::from(SEXTETS[usize::from(b)]);
    let mut out = [0u8; N];
    // Four characters make three bytes; a character outside the alphabet sets high bits.
    let mut bad = 0;
    for (chars, dest) in bytes.chunks_exact(4).zip(out.chunks_exact_mut(3)) {
        let (a, b, c, d) = (sextet(chars[0]), sextet(chars[1]), sextet(chars[2]), sextet(chars[3]));
        bad |= a | b | c | d;
        let n = a << 18 | b << 12 | c << 6 | d;
        dest.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    // The last one or two bytes come from the two or three characters left.
    let (chars, dest) = (&bytes[N / 3 * 4..], &mut out[N / 3 * 3..]);
    let mut acc = 0u32;
    for &ch in chars {
        let v = sextet(ch);
        bad |= v;
        acc = acc << 6 | v;
    }
    let (unused, last) = (chars.len() * 6 - dest.len() * 8, dest.len().saturating_sub(1));
    for (i, byte) in dest.iter_mut().enumerate() {
        *byte = (acc >> (unused + 8 * (last - i))) as u8;
    }
    (bad & u32::from(NOT_B64) & !0x3f == 0 && acc & ((1 << unused) - 1) == 0).then_some(out)
}

/// The SHA-256 of a secret: what stores keep instead of the secret itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    pub fn of(secret: &[u8]) -> Self {
        Self(sha256(secret))
    }

    /// Constant-time comparison (aws-lc's `CRYPTO_memcmp`, a word at a time; `subtle` went
    /// byte by byte through an optimisation barrier, ten times the instructions).
    pub fn matches(&self, other: &SecretHash) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }

    pub fn to_b64(&self) -> String {
        b64(&self.0)
    }

    pub fn from_b64(s: &str) -> Option<Self> {
        b64_exact::<32>(s).map(Self)
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash([redacted])")
    }
}

/// The public name of a session record: 128 random bits, base64url (22 characters).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(SmolStr);

impl SessionId {
    pub fn generate() -> Self {
        let mut b = [0u8; 16];
        fill_random(&mut b);
        Self(b64(&b).into())
    }

    /// Accepts only a well-formed id (22 base64url characters encoding 16 bytes).
    pub fn parse(s: &str) -> Option<Self> {
        is_b64_exact(s, 16).then(|| Self(SmolStr::new(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}

impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The credential a client holds: `<session id>.<256-bit secret>`.
#[derive(Clone)]
pub struct SessionToken {
    id: SessionId,
    secret: [u8; 32],
}

impl SessionToken {
    /// A new session id and secret from the CSPRNG.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        fill_random(&mut secret);
        Self { id: SessionId::generate(), secret }
    }

    /// Parses a credential presented by a client. Anything but the exact shape is refused;
    /// nothing is looked up yet, and an id alone never authenticates.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 22 + 1 + 43 {
            return None;
        }
        let (id, secret) = s.split_once('.')?;
        Some(Self { id: SessionId::parse(id)?, secret: b64_exact::<32>(secret)? })
    }

    pub fn id(&self) -> &SessionId {
        &self.id
    }

    pub fn secret_hash(&self) -> SecretHash {
        SecretHash::of(&self.secret)
    }

    /// The string the client stores. Handle with care: it is the credential.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, b64(&self.secret))
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionToken({}.[redacted])", self.id)
    }
}

/// Turns identifiers (an email, an address) into opaque, per-deployment keys, so stores that
/// count by them never hold them in clear and no one can precompute them.
pub struct KeyedDigest(aws_lc_rs::hmac::Key);

impl KeyedDigest {
    pub fn new(secret: &[u8]) -> Self {
        Self(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret))
    }

    /// HMAC-SHA256 over the parts (each length-prefixed), first 128 bits, base64url.
    pub fn digest(&self, parts: &[&[u8]]) -> String {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.0);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let tag = ctx.sign();
        b64(&tag.as_ref()[..16])
    }

    /// Whether `candidate` is the digest of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], candidate: &str) -> bool {
        self.digest(parts).as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl KeyedDigest {
    /// `value` as base64url JSON, a dot, and its seal in `context`: readable by anyone, made
    /// or changed by no one without the key.
    pub fn seal_json<T: serde::Serialize>(&self, context: &[u8], value: &T) -> String {
        let payload = b64(serde_json::to_string(value).unwrap_or_default().as_bytes());
        let tag = self.digest(&[context, payload.as_bytes()]);
        format!("{payload}.{tag}")
    }

    /// The value [`Self::seal_json`] sealed in `context` with this key; `None` for anything
    /// else, or anything longer than `max_len`.
    pub fn open_json<T: serde::de::DeserializeOwned>(&self, context: &[u8], sealed: &str, max_len: usize) -> Option<T> {
        if sealed.len() > max_len {
            return None;
        }
        let (payload, tag) = sealed.rsplit_once('.')?;
        if !self.verify(&[context, payload.as_bytes()], tag) {
            return None;
        }
        use base64::Engine as _;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

impl fmt::Debug for KeyedDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyedDigest(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use proptest::prelude::*;

    /// The reference: the base64 crate's strict decoder, asked for exactly `N` bytes.
    fn by_the_base64_crate<const N: usize>(s: &str) -> Option<[u8; N]> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        bytes.try_into().ok()
    }

    proptest! {
        /// Checking and decoding agree with the base64 crate, on good values and near misses.
        #[test]
        fn the_decoder_and_the_check_agree_with_the_base64_crate(s in "[A-Za-z0-9_+/=.-]{20,24}|[A-Za-z0-9_+/=.-]{41,45}") {
            prop_assert_eq!(b64_exact::<16>(&s), by_the_base64_crate::<16>(&s));
            prop_assert_eq!(b64_exact::<15>(&s), by_the_base64_crate::<15>(&s));
            prop_assert_eq!(b64_exact::<32>(&s), by_the_base64_crate::<32>(&s));
            prop_assert_eq!(is_b64_exact(&s, 16), b64_exact::<16>(&s).is_some());
            prop_assert_eq!(is_b64_exact(&s, 15), b64_exact::<15>(&s).is_some());
        }

        /// Values of the right length and alphabet: the trailing bits decide.
        #[test]
        fn the_decoder_and_the_check_agree_on_the_trailing_bits(id in "[A-Za-z0-9_-]{22}", secret in "[A-Za-z0-9_-]{43}") {
            prop_assert_eq!(b64_exact::<16>(&id), by_the_base64_crate::<16>(&id));
            prop_assert_eq!(is_b64_exact(&id, 16), b64_exact::<16>(&id).is_some());
            prop_assert_eq!(b64_exact::<32>(&secret), by_the_base64_crate::<32>(&secret));
        }

        #[test]
        fn what_is_encoded_decodes_to_itself(bytes in any::<[u8; 32]>()) {
            prop_assert_eq!(b64_exact::<32>(&b64(&bytes)), Some(bytes));
        }

        #[test]
        fn every_generated_id_passes_the_check(_n in 0..64u8) {
            let id = SessionId::generate();
            prop_assert!(SessionId::parse(id.as_str()).is_some());
        }
    }

    #[test]
    fn tokens_round_trip_and_are_unique() {
        let t = SessionToken::generate();
        let s = t.expose();
        assert_eq!(s.len(), 66);
        let back = SessionToken::parse(&s).expect("parses");
        assert_eq!(back.id(), t.id());
        assert!(back.secret_hash().matches(&t.secret_hash()));
        let other = SessionToken::generate();
        assert_ne!(other.id(), t.id());
        assert!(!other.secret_hash().matches(&t.secret_hash()));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = SessionToken::generate().expose();
        let (id, secret) = good.split_once('.').expect("dot");
        let cases = [
            String::new(),
            id.to_owned(),
            format!("{id}.{secret}="),
            format!("{id}={secret}"),
            format!("{id}.{}", &secret[..42]),
            format!("{id}. {}", &secret[1..]),
            format!("{}+.{secret}", &id[..21]),
            format!("{}/.{secret}", &id[..21]),
            good.replace('.', ".."),
        ];
        for c in cases {
            assert!(SessionToken::parse(&c).is_none(), "{c:?} accepted");
        }
    }

    #[test]
    fn non_canonical_trailing_bits_are_refused() {
        // 16 bytes encode to 22 characters whose last one carries 4 unused bits.
        let id = SessionId::generate();
        let s = id.as_str();
        let last = s.as_bytes()[21];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let idx = alphabet.iter().position(|&c| c == last).expect("in alphabet");
        let tweaked = alphabet[idx | 1] as char;
        let bad = format!("{}{}", &s[..21], tweaked);
        assert!(SessionId::parse(&bad).is_none(), "{bad} accepted");
        assert!(SessionId::parse(s).is_some());
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = SessionToken::generate();
        let secret = t.expose().split_once('.').map(|(_, s)| s.to_owned()).expect("dot");
        assert!(!format!("{t:?}").contains(&secret));
    }

    #[test]
    fn keyed_digests_depend_on_key_and_part_boundaries() {
        let a = KeyedDigest::new(b"key one");
        let b = KeyedDigest::new(b"key two");
        assert_eq!(a.digest(&[b"x", b"y"]), a.digest(&[b"x", b"y"]));
        assert_ne!(a.digest(&[b"x", b"y"]), b.digest(&[b"x", b"y"]));
        assert_ne!(a.digest(&[b"xy", b""]), a.digest(&[b"x", b"y"]), "parts are length-prefixed");
        assert_eq!(a.digest(&[b"x"]).len(), 22, "128 bits in base64url");
        assert!(a.verify(&[b"x"], &a.digest(&[b"x"])));
        assert!(!a.verify(&[b"x"], &b.digest(&[b"x"])));
        assert!(!a.verify(&[b"x"], ""));
    }
}
