//! Second factors without a store: authentication methods (`amr`, RFC 8176), authenticator
//! codes (TOTP, RFC 6238), recovery codes, the sealed box that keeps TOTP secrets unreadable
//! from a database leak, and the sealed ticket between a password and its second factor.
//!
//! - A TOTP secret is 160 random bits (RFC 4226 §4's recommendation), shown once as base32 and in
//!   an `otpauth://` URI. Codes are six digits, HMAC-SHA1, 30-second steps; a code is accepted for
//!   the step before, the current one and the step after, and only for a step later than the last
//!   one accepted (RFC 6238 §5.2), so each code works once.
//! - The secret is stored sealed ([`SecretBox`], AES-256-GCM under a key kept outside the
//!   database), bound to its user so a sealed secret cannot be moved to another account.
//! - Recovery codes are 80 random bits each, shown once, stored as their SHA-256.
//! - After a correct password, a person who has a second factor gets an [`MfaTicket`]: sealed
//!   (HMAC-SHA256 with a server key), short-lived, and used once where it is redeemed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::secret::{KeyedDigest, b64, fill_random, sha256};

/// The authentication methods of a sign-in (RFC 8176), as a small set.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Amr(u8);

impl Amr {
    /// A password.
    pub const PWD: Amr = Amr(1);
    /// A one-time code: TOTP or a recovery code.
    pub const OTP: Amr = Amr(2);
    /// A proof of possession of a hardware-bound key (a passkey on a security key).
    pub const HWK: Amr = Amr(4);
    /// A proof of possession of a software-bound key (a synced passkey).
    pub const SWK: Amr = Amr(8);
    /// The authenticator verified the person (a PIN or biometric): every passkey sign-in.
    pub const USER: Amr = Amr(16);

    const NAMES: [(Amr, &'static str); 5] =
        [(Self::PWD, "pwd"), (Self::OTP, "otp"), (Self::HWK, "hwk"), (Self::SWK, "swk"), (Self::USER, "user")];

    pub const fn union(self, other: Amr) -> Amr {
        Amr(self.0 | other.0)
    }

    pub const fn contains(self, other: Amr) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether more than one factor was used (`mfa` in the list).
    pub const fn is_multi_factor(self) -> bool {
        self.0.count_ones() > 1
    }

    /// The stored form.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The stored form read back; unknown bits are dropped. A record from before `amr` was
    /// kept (0) reads as a password sign-in, the only kind there was.
    pub const fn from_bits(bits: u8) -> Amr {
        let known = bits & 0x1f;
        if known == 0 { Self::PWD } else { Amr(known) }
    }

    /// The names as tokens and ID tokens carry them, `mfa` last when more than one factor was used.
    pub fn names(self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> =
            Self::NAMES.iter().filter(|(m, _)| self.contains(*m)).map(|(_, n)| *n).collect();
        if self.is_multi_factor() {
            names.push("mfa");
        }
        names
    }

    /// Read back from names (a token's `amr`); unknown names are ignored.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Amr {
        names
            .into_iter()
            .fold(Amr(0), |acc, name| Self::NAMES.iter().find(|(_, n)| *n == name).map_or(acc, |(m, _)| acc.union(*m)))
    }
}

impl fmt::Debug for Amr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amr({:?})", self.names())
    }
}

/// Seconds per TOTP step.
pub const TOTP_STEP_SECONDS: i64 = 30;
/// Digits per TOTP code.
pub const TOTP_DIGITS: u32 = 6;
/// The bytes of a TOTP secret: 160 bits.
pub const TOTP_SECRET_LEN: usize = 20;

/// A TOTP shared secret. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

impl TotpSecret {
    pub fn generate() -> Self {
        let mut b = vec![0u8; TOTP_SECRET_LEN];
        fill_random(&mut b);
        Self(b)
    }

    /// A secret from its bytes (a store's, once opened, or a test vector's).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Base32 without padding, as authenticator apps take it typed in.
    pub fn to_base32(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(&self.0)
    }

    /// The `otpauth://totp/` URI (the Key Uri Format authenticator apps read from a QR code).
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECONDS}",
            enc(issuer),
            enc(account),
            self.to_base32(),
            enc(issuer)
        )
    }

    /// The code for time step `step` with `digits` digits (RFC 4226 §5.3's dynamic truncation).
    pub fn code_with_digits(&self, step: u64, digits: u32) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.0);
        let mac = aws_lc_rs::hmac::sign(&key, &step.to_be_bytes());
        let mac = mac.as_ref();
        let offset = usize::from(mac[mac.len() - 1] & 0x0f);
        let bin = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
        let code = u64::from(bin) % 10u64.pow(digits);
        format!("{code:0width$}", width = digits as usize)
    }

    /// The six-digit code for step `step`.
    pub fn code(&self, step: u64) -> String {
        self.code_with_digits(step, TOTP_DIGITS)
    }

    /// The step a correct `code` was made for: the one before `now`'s, `now`'s or the one
    /// after, and later than `last_used` (the last step accepted); `None` otherwise. Codes are
    /// compared in constant time.
    pub fn accepts(&self, code: &str, now: Timestamp, last_used: Option<u64>) -> Option<u64> {
        let code = code.trim();
        if code.len() != TOTP_DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = totp_step(now);
        let mut found = None;
        for step in [current.saturating_sub(1), current, current + 1] {
            let matches =
                aws_lc_rs::constant_time::verify_slices_are_equal(self.code(step).as_bytes(), code.as_bytes()).is_ok();
            if matches && last_used.is_none_or(|last| step > last) && found.is_none() {
                found = Some(step);
            }
        }
        found
    }
}

/// The TOTP step of `now` (Unix seconds over 30, from T0 = 0).
pub fn totp_step(now: Timestamp) -> u64 {
    u64::try_from(now.unix_seconds().max(0) / TOTP_STEP_SECONDS).unwrap_or(0)
}

/// How many recovery codes a set holds.
pub const RECOVERY_CODES: usize = 10;

/// A fresh set of recovery codes, as shown once: 80 random bits each, as four groups of four
/// base32 characters (`abcd-efgh-ijkl-mnop`).
pub fn generate_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut b = [0u8; 10];
            fill_random(&mut b);
            let s = data_encoding::BASE32_NOPAD.encode(&b).to_lowercase();
            format!("{}-{}-{}-{}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
        })
        .collect()
}

/// What a store keeps of a recovery code: the SHA-256 of its canonical form (lower case, no
/// separators or spaces), so it may be typed with or without dashes and in either case.
/// `None` for what cannot be one.
pub fn recovery_code_hash(code: &str) -> Option<[u8; 32]> {
    if code.len() > 64 {
        return None;
    }
    let canonical: String = code.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_lowercase()).collect();
    let ok = canonical.len() == 16 && canonical.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'));
    ok.then(|| sha256(canonical.as_bytes()))
}

/// AES-256-GCM under a key kept outside the database: what TOTP secrets are stored in. The
/// user's id is the associated data, so a sealed secret opens only for its own account.
pub struct SecretBox(aws_lc_rs::aead::RandomizedNonceKey);

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

/// The sealed box's key is not 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the factor encryption key must be 32 bytes")]
pub struct BadKey;

impl SecretBox {
    pub fn new(key: &[u8]) -> Result<Self, BadKey> {
        if key.len() != 32 {
            return Err(BadKey);
        }
        aws_lc_rs::aead::RandomizedNonceKey::new(&aws_lc_rs::aead::AES_256_GCM, key).map(Self).map_err(|_| BadKey)
    }

    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8], bound_to: &str) -> Vec<u8> {
        let mut buf = plaintext.to_vec();
        let aad = aws_lc_rs::aead::Aad::from(bound_to.as_bytes());
        match self.0.seal_in_place_append_tag(aad, &mut buf) {
            Ok(nonce) => {
                let mut out = nonce.as_ref().to_vec();
                out.extend_from_slice(&buf);
                out
            }
            // Sealing fails only for inputs of gigabytes.
            Err(_) => Vec::new(),
        }
    }

    /// The plaintext, if this key sealed `sealed` for `bound_to` and nothing changed it.
    pub fn open(&self, sealed: &[u8], bound_to: &str) -> Option<Vec<u8>> {
        let nonce_len = aws_lc_rs::aead::NONCE_LEN;
        if sealed.len() < nonce_len {
            return None;
        }
        let (nonce, body) = sealed.split_at(nonce_len);
        let nonce = aws_lc_rs::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = body.to_vec();
        let aad = aws_lc_rs::aead::Aad::from(bound_to.as_bytes());
        let plain = self.0.open_in_place(nonce, aad, &mut buf).ok()?;
        Some(plain.to_vec())
    }
}

/// How long an [`MfaTicket`] lives: the time to find a phone and type a code.
pub const MFA_TICKET_SECONDS: i64 = 300;

/// How long an enrolment ticket lives (`mfa.required_for_roles`): the time to install an
/// authenticator app, scan its code and type the first one.
pub const ENROL_TICKET_SECONDS: i64 = 900;

/// What a correct password leaves for the second step of a sign-in: sealed, so only this
/// server can make one; it holds nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaTicket {
    /// The ticket's own id: its single use is recorded under it.
    #[serde(rename = "i")]
    pub id: String,
    #[serde(rename = "u")]
    pub user_id: String,
    /// The login's mode (`session` or `jwt`).
    #[serde(rename = "m")]
    pub mode: String,
    /// The JWT login asked for its tokens in cookies.
    #[serde(rename = "c", default)]
    pub cookies: bool,
    /// The methods used so far ([`Amr::bits`]).
    #[serde(rename = "a")]
    pub amr: u8,
    /// The person has no second factor and must enrol one before the sign-in finishes
    /// (their role is in `mfa.required_for_roles`); such a ticket never passes as a second step.
    #[serde(rename = "n", default)]
    pub enrol: bool,
    /// When the ticket stops working (Unix milliseconds).
    #[serde(rename = "e")]
    pub expires_at: i64,
}

const TICKET_CONTEXT: &[u8] = b"portcullis mfa ticket v1";

/// The longest ticket accepted (a sealed one is about two hundred bytes).
pub const MAX_TICKET_LEN: usize = 1024;

impl MfaTicket {
    /// A fresh id for a ticket.
    pub fn new_id() -> String {
        let mut b = [0u8; 16];
        fill_random(&mut b);
        b64(&b)
    }

    pub fn seal(&self, key: &KeyedDigest) -> String {
        key.seal_json(TICKET_CONTEXT, self)
    }

    /// The ticket, if `key` sealed it; expiry is the caller's to check.
    pub fn open(ticket: &str, key: &KeyedDigest) -> Option<Self> {
        key.open_json(TICKET_CONTEXT, ticket, MAX_TICKET_LEN)
    }

    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1: the secret is the ASCII "12345678901234567890" and codes
    /// have eight digits.
    #[test]
    fn codes_match_rfc_6238s_test_vectors() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        for (time, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            let step = totp_step(Timestamp::from_unix_millis(time * 1000));
            assert_eq!(secret.code_with_digits(step, 8), code, "T = {time}");
        }
        // Six digits are the last six of the same truncation (RFC 4226 Appendix D's first value).
        let hotp = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        assert_eq!(hotp.code(0), "755224");
        assert_eq!(hotp.code(1), "287082");
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_only_after_the_last_used() {
        // A fixed secret whose codes for steps 998 to 1002 all differ: the test is deterministic.
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let codes: std::collections::BTreeSet<String> = (998..=1002).map(|s| secret.code(s)).collect();
        assert_eq!(codes.len(), 5);
        let at = |s: i64| Timestamp::from_unix_millis(s * 1000);
        // The start of step 1000, and its last second.
        let (start, end) = (at(30_000), at(30_029));
        for now in [start, end] {
            assert_eq!(secret.accepts(&secret.code(999), now, None), Some(999));
            assert_eq!(secret.accepts(&secret.code(1000), now, None), Some(1000));
            assert_eq!(secret.accepts(&secret.code(1001), now, None), Some(1001));
            assert_eq!(secret.accepts(&secret.code(998), now, None), None, "two steps back");
            assert_eq!(secret.accepts(&secret.code(1002), now, None), None, "two steps ahead");
        }
        // Replay: a step once accepted, or one before it, is not accepted again.
        assert_eq!(secret.accepts(&secret.code(1000), start, Some(1000)), None);
        assert_eq!(secret.accepts(&secret.code(999), start, Some(1000)), None);
        assert_eq!(secret.accepts(&secret.code(1001), start, Some(1000)), Some(1001));
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６"] {
            assert_eq!(secret.accepts(bad, start, None), None, "{bad:?}");
        }
        // Spaces around a code are forgiven.
        assert_eq!(secret.accepts(&format!(" {} ", secret.code(1000)), start, None), Some(1000));
    }

    #[test]
    fn the_otpauth_uri_names_issuer_account_and_secret() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        assert_eq!(secret.to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            secret.otpauth_uri("Portcullis", "ada+x@example.com"),
            "otpauth://totp/Portcullis:ada%2Bx%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Portcullis&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(TotpSecret::generate().as_bytes().len() * 8, 160);
    }

    #[test]
    fn recovery_codes_are_distinct_and_read_in_any_case_with_or_without_dashes() {
        let codes = generate_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let hashes: std::collections::BTreeSet<_> = codes.iter().map(|c| recovery_code_hash(c)).collect();
        assert_eq!(hashes.len(), RECOVERY_CODES);
        let code = &codes[0];
        assert_eq!(code.len(), 19);
        let hash = recovery_code_hash(code).expect("a code");
        assert_eq!(recovery_code_hash(&code.replace('-', "").to_uppercase()), Some(hash));
        assert_eq!(recovery_code_hash(&code.replace('-', " ")), Some(hash));
        for bad in ["", "abcd-efgh-ijkl-mno", "abcd-efgh-ijkl-mno1", &"a".repeat(65)] {
            assert_eq!(recovery_code_hash(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_for_its_user() {
        let sealer = SecretBox::new(&[3; 32]).expect("key");
        let sealed = sealer.seal(b"secret bytes", "user-1");
        assert!(!sealed.windows(12).any(|w| w == b"secret bytes"), "the secret is not readable");
        assert_eq!(sealer.open(&sealed, "user-1").as_deref(), Some(&b"secret bytes"[..]));
        assert_eq!(sealer.open(&sealed, "user-2"), None, "bound to its user");
        assert_eq!(SecretBox::new(&[4; 32]).expect("key").open(&sealed, "user-1"), None);
        let mut changed = sealed.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert_eq!(sealer.open(&changed, "user-1"), None);
        assert_eq!(sealer.open(&sealed[..5], "user-1"), None);
        assert_eq!(SecretBox::new(&[0; 16]).err(), Some(BadKey));
    }

    #[test]
    fn amr_names_follow_rfc_8176() {
        assert_eq!(Amr::PWD.names(), ["pwd"]);
        assert_eq!(Amr::PWD.union(Amr::OTP).names(), ["pwd", "otp", "mfa"]);
        assert_eq!(Amr::from_names(["pwd", "otp", "mfa", "x"]), Amr::PWD.union(Amr::OTP));
        assert_eq!(Amr::from_bits(Amr::HWK.union(Amr::PWD).bits()), Amr::HWK.union(Amr::PWD));
        assert_eq!(Amr::from_bits(0), Amr::PWD, "records from before amr were password sign-ins");
        assert!(!Amr::SWK.is_multi_factor());
        let passkey = Amr::SWK.union(Amr::USER);
        assert_eq!(passkey.names(), ["swk", "user", "mfa"], "a verified passkey is two factors");
        assert_eq!(Amr::from_bits(passkey.bits()), passkey);
        assert_eq!(Amr::from_names(passkey.names()), passkey);
    }

    #[test]
    fn a_ticket_opens_only_with_its_key_and_unchanged() {
        let key = KeyedDigest::new(&[1; 32]);
        let ticket = MfaTicket {
            id: MfaTicket::new_id(),
            user_id: "u".into(),
            mode: "session".into(),
            cookies: false,
            amr: Amr::PWD.bits(),
            enrol: false,
            expires_at: 1_000,
        };
        let sealed = ticket.seal(&key);
        assert_eq!(MfaTicket::open(&sealed, &key), Some(ticket.clone()));
        assert_eq!(MfaTicket::open(&sealed, &KeyedDigest::new(&[2; 32])), None);
        let other = MfaTicket { user_id: "v".into(), ..ticket }.seal(&key);
        let (payload, _) = other.rsplit_once('.').expect("sealed");
        let (_, tag) = sealed.rsplit_once('.').expect("sealed");
        assert_eq!(MfaTicket::open(&format!("{payload}.{tag}"), &key), None);
        assert_eq!(MfaTicket::open(&"a".repeat(MAX_TICKET_LEN + 1), &key), None);
    }
}
