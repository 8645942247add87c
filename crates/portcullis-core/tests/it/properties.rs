//! Property tests for the parsers a client can reach: tokens, credentials, emails and the strict
//! JSON reader. The same parsers have fuzz targets (fuzz/, see README); these run in every test
//! run.

use std::sync::LazyLock;
use std::time::Duration;

use portcullis_core::jwt::{AccessClaims, Algorithm, Audience, Expectations, KeySet, SigningKey, issue, json, verify};
use portcullis_core::refresh::RefreshToken;
use portcullis_core::{Email, SessionId, SessionToken, Timestamp};
use proptest::prelude::*;

const NOW: i64 = 1_800_000_000;

fn expect() -> Expectations {
    Expectations {
        issuer: "https://auth.example".into(),
        audience: "https://auth.example".into(),
        leeway: Duration::from_secs(30),
    }
}

fn now() -> Timestamp {
    Timestamp::from_unix_millis(NOW * 1000)
}

/// One key per algorithm, and a valid token from each.
static SIGNED: LazyLock<(KeySet, Vec<String>)> = LazyLock::new(|| {
    let keys: Vec<SigningKey> = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256, Algorithm::HS256]
        .into_iter()
        .map(|alg| SigningKey::generate(alg).expect("key"))
        .collect();
    let claims = AccessClaims {
        iss: "https://auth.example".into(),
        sub: "user-1".into(),
        aud: Audience::One("https://auth.example".into()),
        exp: NOW + 900,
        iat: NOW,
        nbf: None,
        jti: "jti-1".into(),
        sid: "sid-1".into(),
        client_id: "portcullis".into(),
        roles: vec!["user".into()],
        email: "a@example.com".into(),
        scope: String::new(),
        amr: Vec::new(),
    };
    let tokens = keys.iter().map(|k| issue(k, &claims).expect("issue")).collect();
    (KeySet::new(keys.iter().map(|k| k.verifying_key().clone())), tokens)
});

/// Characters a token is made of, and a few it must not contain.
fn token_char() -> impl Strategy<Value = char> {
    prop_oneof![
        8 => proptest::char::ranges(vec!['A'..='Z', 'a'..='z', '0'..='9'].into()),
        2 => Just('-'), 2 => Just('_'), 1 => Just('.'), 1 => Just('='), 1 => Just('+'), 1 => Just('/'), 1 => Just(' '),
    ]
}

proptest! {
    #[test]
    fn the_valid_tokens_verify(i in 0usize..4) {
        let (keys, tokens) = &*SIGNED;
        prop_assert!(verify(&tokens[i], keys, &expect(), now()).is_ok());
    }

    /// Any one character changed anywhere in a valid token makes it invalid.
    #[test]
    fn one_changed_character_breaks_any_token(i in 0usize..4, at in any::<prop::sample::Index>(), c in token_char()) {
        let (keys, tokens) = &*SIGNED;
        let mut chars: Vec<char> = tokens[i].chars().collect();
        let at = at.index(chars.len());
        prop_assume!(chars[at] != c);
        // The last character of a segment can carry unused bits; changing only those is
        // refused by the strict base64url rule, so it still must not verify.
        chars[at] = c;
        let changed: String = chars.into_iter().collect();
        prop_assert!(verify(&changed, keys, &expect(), now()).is_err(), "{changed}");
    }

    #[test]
    fn any_text_is_refused_as_a_token_without_panicking(s in "\\PC{0,300}", dots in "[A-Za-z0-9_.-]{0,400}") {
        let (keys, _) = &*SIGNED;
        prop_assert!(verify(&s, keys, &expect(), now()).is_err());
        prop_assert!(verify(&dots, keys, &expect(), now()).is_err());
    }

    #[test]
    fn the_json_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), text in "\\PC{0,200}") {
        // It accepts only JSON objects, and reads them as any JSON reader would.
        for input in [bytes.as_slice(), text.as_bytes()] {
            if let Ok(map) = json::parse_object(input) {
                let plain: serde_json::Value = serde_json::from_slice(input).expect("what we accept is JSON");
                prop_assert_eq!(plain, serde_json::Value::Object(map));
            }
        }
    }

    /// Objects with a member named twice are refused, whatever else they hold.
    #[test]
    fn the_json_reader_refuses_duplicate_members(name in "[a-z]{1,8}", a in any::<i64>(), b in any::<i64>()) {
        let doc = format!(r#"{{"{name}":{a},"other":true,"{name}":{b}}}"#);
        prop_assert!(json::parse_object(doc.as_bytes()).is_err());
    }

    /// What parses as a credential prints back exactly as it came: one spelling per token.
    #[test]
    fn credentials_have_one_spelling(s in "[A-Za-z0-9_.=+/ -]{0,120}") {
        if let Some(t) = SessionToken::parse(&s) {
            prop_assert_eq!(t.expose(), s.clone());
        }
        if let Some(t) = RefreshToken::parse(&s) {
            prop_assert_eq!(t.expose(), s);
        }
    }

    #[test]
    fn generated_credentials_round_trip(_n in 0u8..8) {
        let t = SessionToken::generate();
        prop_assert_eq!(SessionToken::parse(&t.expose()).map(|p| p.expose()), Some(t.expose()));
        let r = RefreshToken::first(SessionId::generate());
        prop_assert_eq!(RefreshToken::parse(&r.expose()).map(|p| p.expose()), Some(r.expose()));
    }

    /// Canonical emails are fixed points, and case or width never makes a second account.
    #[test]
    fn canonical_emails_are_fixed_points(local in "[a-zA-Z0-9._%+-]{1,20}", domain in "[a-zA-Z0-9-]{1,20}\\.[a-zA-Z]{2,6}") {
        let raw = format!("{local}@{domain}");
        if let Ok(e) = Email::parse(&raw) {
            let again = Email::parse(e.as_str()).expect("a canonical email parses");
            prop_assert_eq!(again.as_str(), e.as_str());
            let upper = Email::parse(&raw.to_uppercase()).expect("upper case parses");
            prop_assert_eq!(upper.as_str(), e.as_str());
        }
    }

    #[test]
    fn any_text_as_an_email_is_answered(s in "\\PC{0,300}") {
        // Whatever is accepted is a canonical address: one `@`, no surrounding space, within
        // the length limit, and its own canonical form.
        if let Ok(e) = Email::parse(&s) {
            let c = e.as_str();
            prop_assert_eq!(c.matches('@').count(), 1, "{}", c);
            prop_assert_eq!(c.trim(), c);
            prop_assert!(c.len() <= portcullis_core::email::MAX_EMAIL_LEN);
            let again = Email::parse(c).map(|again| again.as_str().to_owned()).ok();
            prop_assert_eq!(again.as_deref(), Some(c));
        }
    }
}
