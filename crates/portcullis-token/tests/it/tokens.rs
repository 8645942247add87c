//! The token rules of SECURITY.md, each with a token that breaks it.

use std::time::Duration;

use portcullis_token::clock::Timestamp;
use portcullis_token::encoding::b64;
use portcullis_token::jwt::{
    AccessClaims, Algorithm, Audience, Expectations, KeySet, SigningKey, TokenError, issue, verify,
};

const NOW: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_unix_millis(NOW * 1000)
}

fn expect() -> Expectations {
    Expectations {
        issuer: "https://auth.example".into(),
        audience: "https://auth.example".into(),
        leeway: Duration::from_secs(30),
    }
}

fn claims() -> AccessClaims {
    AccessClaims {
        iss: "https://auth.example".into(),
        sub: "user-1".into(),
        aud: Audience::One("https://auth.example".into()),
        exp: NOW + 900,
        iat: NOW,
        nbf: Some(NOW),
        jti: "jti-1".into(),
        sid: "sid-1".into(),
        client_id: "portcullis".into(),
        roles: vec!["user".into()],
        email: "a@example.com".into(),
        scope: String::new(),
        amr: Vec::new(),
    }
}

fn setup(alg: Algorithm) -> (SigningKey, KeySet) {
    let key = SigningKey::generate(alg).expect("generate");
    let set = KeySet::new([key.verifying_key().clone()]);
    (key, set)
}

/// A token with exactly this header and payload JSON, signed by `key`.
fn forge(key: &SigningKey, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = key.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(&sig))
}

fn header_for(key: &SigningKey) -> String {
    format!(r#"{{"alg":"{}","typ":"at+jwt","kid":"{}"}}"#, key.alg(), key.kid())
}

fn payload() -> String {
    serde_json::to_string(&claims()).expect("json")
}

#[test]
fn good_tokens_verify_for_every_algorithm() {
    for alg in Algorithm::ALL {
        let (key, set) = setup(alg);
        let token = issue(&key, &claims()).expect("issue");
        assert_eq!(verify(&token, &set, &expect(), now()), Ok(claims()), "{alg}");
        // The hand-built equivalent verifies too, so the forged variants below differ only in
        // what each test changes.
        assert!(verify(&forge(&key, &header_for(&key), &payload()), &set, &expect(), now()).is_ok());
    }
}

#[test]
fn alg_none_in_every_spelling_is_refused() {
    let (key, set) = setup(Algorithm::EdDSA);
    for none in ["none", "None", "NONE", "nOnE", ""] {
        let header = format!(r#"{{"alg":"{none}","typ":"at+jwt","kid":"{}"}}"#, key.kid());
        let unsigned = format!("{}.{}.", b64(header.as_bytes()), b64(payload().as_bytes()));
        assert!(verify(&unsigned, &set, &expect(), now()).is_err(), "{none}");
        let signed = forge(&key, &header, &payload());
        assert_eq!(verify(&signed, &set, &expect(), now()), Err(TokenError::AlgorithmMismatch), "{none}");
    }
}

#[test]
fn algorithm_swaps_are_refused() {
    // The classic: HS256 with the public key's bytes as the HMAC secret.
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let (key, set) = setup(alg);
        let jwk = serde_json::to_string(&key.verifying_key().public_jwk().expect("public")).expect("json");
        let mut secret = jwk.into_bytes();
        secret.resize(secret.len().max(32), b'x');
        let hmac = SigningKey::from_private(Algorithm::HS256, &secret).expect("hmac");
        let header = format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{}"}}"#, key.kid());
        let token = forge(&hmac, &header, &payload());
        assert_eq!(verify(&token, &set, &expect(), now()), Err(TokenError::AlgorithmMismatch), "{alg}");
        // Any other asymmetric alg named against this key.
        for other in ["EdDSA", "ES256", "RS256", "ES384", "PS256"] {
            if other == alg.as_str() {
                continue;
            }
            let header = format!(r#"{{"alg":"{other}","typ":"at+jwt","kid":"{}"}}"#, key.kid());
            let token = forge(&key, &header, &payload());
            assert_eq!(verify(&token, &set, &expect(), now()), Err(TokenError::AlgorithmMismatch), "{alg} as {other}");
        }
    }
}

#[test]
fn embedded_keys_and_key_urls_are_never_used() {
    let (key, set) = setup(Algorithm::EdDSA);
    let (attacker, _) = setup(Algorithm::EdDSA);
    let jwk = serde_json::to_string(&attacker.verifying_key().public_jwk().expect("public")).expect("json");
    let cases = [
        format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}","jwk":{jwk}}}"#, attacker.kid()),
        format!(
            r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}","jku":"https://evil.example/jwks.json"}}"#,
            attacker.kid()
        ),
        format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}","x5u":"https://evil.example/cert.pem"}}"#, attacker.kid()),
        format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}","x5c":["MIIB"]}}"#, attacker.kid()),
    ];
    for header in cases {
        let token = forge(&attacker, &header, &payload());
        assert!(matches!(verify(&token, &set, &expect(), now()), Err(TokenError::ForbiddenHeader(_))), "{header}");
    }
    // Even naming our own kid, the attacker's embedded key is not used.
    let header = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}","jwk":{jwk}}}"#, key.kid());
    assert!(verify(&forge(&attacker, &header, &payload()), &set, &expect(), now()).is_err());
}

#[test]
fn kid_is_only_a_lookup() {
    let (key, set) = setup(Algorithm::EdDSA);
    for kid in ["../../../../dev/null", "/etc/passwd", "' OR '1'='1", "", &"k".repeat(500), "http://evil.example/key"] {
        let header = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":{}}}"#, serde_json::Value::from(kid));
        assert_eq!(
            verify(&forge(&key, &header, &payload()), &set, &expect(), now()),
            Err(TokenError::UnknownKey),
            "{kid}"
        );
    }
    let no_kid = r#"{"alg":"EdDSA","typ":"at+jwt"}"#;
    assert_eq!(verify(&forge(&key, no_kid, &payload()), &set, &expect(), now()), Err(TokenError::UnknownKey));
    let numeric = r#"{"alg":"EdDSA","typ":"at+jwt","kid":5}"#;
    assert_eq!(verify(&forge(&key, numeric, &payload()), &set, &expect(), now()), Err(TokenError::UnknownKey));
}

#[test]
fn crit_and_b64_make_a_token_invalid() {
    let (key, set) = setup(Algorithm::EdDSA);
    for extra in
        [r#""crit":["exp"]"#, r#""crit":[]"#, r#""crit":["b64"],"b64":false"#, r#""b64":false"#, r#""zip":"DEF""#]
    {
        let header = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}",{extra}}}"#, key.kid());
        assert!(
            matches!(
                verify(&forge(&key, &header, &payload()), &set, &expect(), now()),
                Err(TokenError::ForbiddenHeader(_))
            ),
            "{extra}"
        );
    }
}

#[test]
fn only_access_tokens_pass() {
    let (key, set) = setup(Algorithm::EdDSA);
    for typ in [None, Some("JWT"), Some("jwt"), Some("rt+jwt"), Some("id_token"), Some("application/jwt")] {
        let header = match typ {
            Some(t) => format!(r#"{{"alg":"EdDSA","typ":"{t}","kid":"{}"}}"#, key.kid()),
            None => format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, key.kid()),
        };
        assert_eq!(
            verify(&forge(&key, &header, &payload()), &set, &expect(), now()),
            Err(TokenError::WrongType),
            "{typ:?}"
        );
    }
    for typ in ["AT+JWT", "application/at+jwt"] {
        let header = format!(r#"{{"alg":"EdDSA","typ":"{typ}","kid":"{}"}}"#, key.kid());
        assert!(verify(&forge(&key, &header, &payload()), &set, &expect(), now()).is_ok(), "{typ}");
    }
    // An opaque refresh token is not a JWS at all.
    let refresh = "AAAAAAAAAAAAAAAAAAAAAA.0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert!(verify(refresh, &set, &expect(), now()).is_err());
}

#[test]
fn strict_base64url_and_exactly_three_segments() {
    let (key, set) = setup(Algorithm::EdDSA);
    let good = issue(&key, &claims()).expect("issue");
    let (h, rest) = good.split_once('.').expect("dot");
    let (p, s) = rest.split_once('.').expect("dot");
    let cases = vec![
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}.{p}.{s}."),
        format!(".{p}.{s}"),
        format!("{h}..{s}"),
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}.{s}="),
        format!("{h}.{p}.{s}=="),
        format!("{h} .{p}.{s}"),
        format!("{h}.{p}\n.{s}"),
        format!("{h}.{}.{s}", p.replace('-', "+").replace('_', "/")),
        format!("{h}.{p}.{}", s.replace('-', "+").replace('_', "/")),
        good.replace('.', ". "),
    ];
    for c in cases {
        if c == good {
            continue;
        }
        assert!(verify(&c, &set, &expect(), now()).is_err(), "{c}");
    }
    // Non-zero trailing bits: the last character of a segment changed to one that decodes to
    // the same bytes in a lax decoder.
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = s.chars().last().expect("char");
    let idx = alphabet.find(last).expect("alphabet");
    if s.len() % 4 != 0 {
        let tweaked = alphabet.as_bytes()[idx | 1] as char;
        if tweaked != last {
            let bad = format!("{h}.{p}.{}{tweaked}", &s[..s.len() - 1]);
            assert!(verify(&bad, &set, &expect(), now()).is_err());
        }
    }
}

#[test]
fn size_is_capped_before_decoding() {
    let (key, set) = setup(Algorithm::EdDSA);
    let mut c = claims();
    c.roles = vec!["r".repeat(9000)];
    let big = issue(&key, &c).expect("issue");
    assert_eq!(verify(&big, &set, &expect(), now()), Err(TokenError::TooLarge));
    assert_eq!(verify(&"A".repeat(1_000_000), &set, &expect(), now()), Err(TokenError::TooLarge));
}

#[test]
fn duplicate_members_are_refused() {
    let (key, set) = setup(Algorithm::EdDSA);
    let dup_header = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{0}","kid":"{0}"}}"#, key.kid());
    assert!(matches!(
        verify(&forge(&key, &dup_header, &payload()), &set, &expect(), now()),
        Err(TokenError::Malformed(_))
    ));
    let alg_twice = format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{}","alg":"EdDSA"}}"#, key.kid());
    assert!(verify(&forge(&key, &alg_twice, &payload()), &set, &expect(), now()).is_err());
    let p = payload();
    let dup_claims = p.replacen("{", r#"{"sub":"admin","#, 1);
    assert!(matches!(
        verify(&forge(&key, &header_for(&key), &dup_claims), &set, &expect(), now()),
        Err(TokenError::Claims(_))
    ));
}

#[test]
fn deeply_nested_claims_are_refused() {
    let (key, set) = setup(Algorithm::EdDSA);
    let p = payload();
    let nested = p.replacen("{", &format!(r#"{{"x":{}1{},"#, "[".repeat(5000), "]".repeat(5000)), 1);
    let token = forge(&key, &header_for(&key), &nested);
    assert!(verify(&token, &set, &expect(), now()).is_err());
}

#[test]
fn time_issuer_and_audience_rules() {
    let (key, set) = setup(Algorithm::EdDSA);
    let check = |c: AccessClaims| verify(&issue(&key, &c).expect("issue"), &set, &expect(), now());
    let mut c = claims();
    c.exp = NOW - 31;
    assert_eq!(check(c), Err(TokenError::Expired));
    let mut c = claims();
    c.exp = NOW - 29;
    assert!(check(c).is_ok(), "within the 30 s leeway");
    let mut c = claims();
    c.nbf = Some(NOW + 31);
    assert_eq!(check(c), Err(TokenError::NotYetValid));
    let mut c = claims();
    c.iat = NOW + 3600;
    assert_eq!(check(c), Err(TokenError::NotYetValid));
    let mut c = claims();
    c.iss = "https://evil.example".into();
    assert_eq!(check(c), Err(TokenError::WrongIssuer));
    let mut c = claims();
    c.aud = Audience::Many(vec!["other".into()]);
    assert_eq!(check(c), Err(TokenError::WrongAudience));
    let mut c = claims();
    c.aud = Audience::Many(vec!["other".into(), "https://auth.example".into()]);
    assert!(check(c).is_ok());
    // Leeway is capped at 60 s whatever the caller asks for.
    let mut c = claims();
    c.exp = NOW - 61;
    let lax = Expectations { leeway: Duration::from_secs(3600), ..expect() };
    assert_eq!(verify(&issue(&key, &c).expect("issue"), &set, &lax, now()), Err(TokenError::Expired));
    // exp is required and must be a number.
    let no_exp = payload().replace(&format!(r#""exp":{},"#, NOW + 900), "");
    assert!(matches!(
        verify(&forge(&key, &header_for(&key), &no_exp), &set, &expect(), now()),
        Err(TokenError::Claims(_))
    ));
    let str_exp = payload().replace(&format!(r#""exp":{}"#, NOW + 900), &format!(r#""exp":"{}""#, NOW + 900));
    assert!(matches!(
        verify(&forge(&key, &header_for(&key), &str_exp), &set, &expect(), now()),
        Err(TokenError::Claims(_))
    ));
}

#[test]
fn tampering_and_foreign_keys_fail_the_signature() {
    for alg in Algorithm::ALL {
        let (key, set) = setup(alg);
        let token = issue(&key, &claims()).expect("issue");
        let mut c = claims();
        c.roles.push("admin".into());
        let (h, rest) = token.split_once('.').expect("dot");
        let s = rest.split_once('.').expect("dot").1;
        let tampered = format!("{h}.{}.{s}", b64(serde_json::to_string(&c).expect("json").as_bytes()));
        assert_eq!(verify(&tampered, &set, &expect(), now()), Err(TokenError::BadSignature), "{alg}");
        // A token from another key that claims this key's kid.
        let (other, _) = setup(alg);
        let forged = forge(&other, &header_for(&key), &payload());
        assert_eq!(verify(&forged, &set, &expect(), now()), Err(TokenError::BadSignature), "{alg}");
    }
}
