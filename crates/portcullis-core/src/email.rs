//! Email addresses in one canonical form.
//!
//! An address is trimmed, normalised (NFKC), case-folded and normalised again, so that
//! `Alice@Example.COM`, ` alice@example.com ` and the full-width `ａｌｉｃｅ@example.com` are one
//! account. Invisible characters (controls, format characters, default-ignorable code points such
//! as U+200B ZERO WIDTH SPACE) are refused outright rather than silently dropped. Separately,
//! [`Email::skeleton`] maps confusable characters to a common prototype (Unicode TS #39), so the
//! store can refuse `аlice@example.com` (Cyrillic `а`) once `alice@example.com` exists.

use std::fmt;

use serde::{Serialize, Serializer};
use smol_str::SmolStr;
use unicode_normalization::UnicodeNormalization;
use unicode_security::skeleton;

/// The longest address accepted, in bytes (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the email address is empty")]
    Empty,
    #[error("the email address is longer than {MAX_EMAIL_LEN} bytes")]
    TooLong,
    #[error("the email address contains an invisible or control character")]
    InvisibleCharacter,
    #[error("the email address must have the form local@domain")]
    Malformed,
}

/// A canonical email address.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(SmolStr);

impl Email {
    /// Canonicalises and validates an address typed by a person.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        // Cap before doing any Unicode work on hostile input.
        if raw.len() > MAX_EMAIL_LEN * 4 {
            return Err(EmailError::TooLong);
        }
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.chars().any(is_invisible) {
            return Err(EmailError::InvisibleCharacter);
        }
        let nfkc: String = trimmed.nfkc().collect();
        let folded = caseless::default_case_fold_str(&nfkc);
        let canonical: String = folded.nfkc().collect();
        // Normalisation can itself produce characters we refuse (it never should, but check).
        if canonical.chars().any(|c| is_invisible(c) || c.is_whitespace()) {
            return Err(EmailError::InvisibleCharacter);
        }
        if canonical.len() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = canonical.rsplit_once('@').ok_or(EmailError::Malformed)?;
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(EmailError::Malformed);
        }
        let domain_ok = !domain.is_empty()
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(EmailError::Malformed);
        }
        if local.chars().any(|c| matches!(c, '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '[' | '\\' | ']')) {
            return Err(EmailError::Malformed);
        }
        Ok(Self(canonical.into()))
    }

    /// Rebuilds an address that was canonicalised before (read back from a store).
    pub fn from_canonical(s: impl AsRef<str>) -> Self {
        Self(SmolStr::new(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The confusable skeleton (UTS #39) of the canonical form: two addresses a person could
    /// mistake for one another have the same skeleton. Stores keep it unique.
    pub fn skeleton(&self) -> String {
        let s: String = skeleton(&self.0).collect();
        caseless::default_case_fold_str(&s)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

impl Serialize for Email {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Controls, format characters and Unicode default-ignorable code points: characters that do
/// not show, or show as nothing, and so could make two addresses look the same.
fn is_invisible(c: char) -> bool {
    if c.is_control() {
        return true;
    }
    let cp = u32::from(c);
    matches!(
        cp,
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_width_and_whitespace_collapse_to_one_form() {
        let canonical = Email::parse("alice@example.com").expect("valid");
        for spelling in ["Alice@Example.COM", "  alice@example.com\t", "ａｌｉｃｅ@ｅｘａｍｐｌｅ.ｃｏｍ"]
        {
            assert_eq!(Email::parse(spelling).expect(spelling), canonical, "{spelling}");
        }
    }

    #[test]
    fn full_case_folding_is_applied() {
        assert_eq!(Email::parse("STRASSE@x.de").expect("valid").as_str(), "strasse@x.de");
        assert_eq!(Email::parse("straße@x.de").expect("valid").as_str(), "strasse@x.de");
    }

    #[test]
    fn invisible_characters_are_refused() {
        for bad in [
            "al\u{200B}ice@example.com",
            "alice\u{00AD}@example.com",
            "\u{FEFF}alice@example.com",
            "alice@exa\u{2060}mple.com",
            "ali\u{0007}ce@example.com",
            "alice@example.com\u{E0001}",
            "al\u{202E}ice@example.com",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::InvisibleCharacter), "{bad:?}");
        }
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in
            ["alice", "@example.com", "alice@", "alice@.com", "alice@ex..com", "a b@c.d", "a<b@c.d", "alice@-x.com"]
        {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Email::parse("   "), Err(EmailError::Empty));
        assert_eq!(Email::parse(&format!("{}@x.com", "a".repeat(300))), Err(EmailError::TooLong));
    }

    #[test]
    fn look_alikes_share_a_skeleton() {
        let latin = Email::parse("alice@example.com").expect("valid");
        let cyrillic_a = Email::parse("\u{0430}lice@example.com").expect("valid");
        assert_ne!(latin, cyrillic_a);
        assert_eq!(latin.skeleton(), cyrillic_a.skeleton());
        let other = Email::parse("bob@example.com").expect("valid");
        assert_ne!(latin.skeleton(), other.skeleton());
    }
}
