//! Micro-benchmarks of the core: token verification and signing per algorithm, session
//! credentials, refresh-token rotation. Run with `cargo bench -p portcullis-core`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_core::jwt::{AccessClaims, Algorithm, Audience, Expectations, KeySet, SigningKey, issue, verify};
use portcullis_core::refresh::{RefreshKey, RefreshToken};
use portcullis_core::{SessionId, SessionToken, Timestamp};

fn claims() -> AccessClaims {
    AccessClaims {
        iss: "https://auth.example.com".into(),
        sub: "01a202d8-0132-7384-aa33-80652f09bd87".into(),
        aud: Audience::One("https://auth.example.com".into()),
        exp: 1_800_000_900,
        iat: 1_800_000_000,
        nbf: Some(1_800_000_000),
        jti: "Kwctw1pYAOYm1EUnUgazxw".into(),
        sid: "Xkt94BVaydO6dkymfVo7DQ".into(),
        client_id: "portcullis".into(),
        roles: vec!["user".into()],
        email: "alice@example.com".into(),
        scope: String::new(),
        amr: Vec::new(),
    }
}

fn tokens(c: &mut Criterion) {
    let expect = Expectations {
        issuer: "https://auth.example.com".into(),
        audience: "https://auth.example.com".into(),
        leeway: Duration::from_secs(30),
    };
    let now = Timestamp::from_unix_millis(1_800_000_100_000);
    for alg in Algorithm::ALL {
        let Ok(key) = SigningKey::generate(alg) else { continue };
        let set = KeySet::new([key.verifying_key().clone()]);
        let Ok(token) = issue(&key, &claims()) else { continue };
        c.bench_function(&format!("verify {alg}"), |b| b.iter(|| verify(black_box(&token), &set, &expect, now)));
        c.bench_function(&format!("issue {alg}"), |b| b.iter(|| issue(&key, black_box(&claims()))));
    }
}

fn credentials(c: &mut Criterion) {
    c.bench_function("session token: generate", |b| b.iter(SessionToken::generate));
    let token = SessionToken::generate().expose();
    c.bench_function("session token: parse and hash", |b| {
        b.iter(|| SessionToken::parse(black_box(&token)).map(|t| t.secret_hash()))
    });
    let key = RefreshKey::new(&[7u8; 32]);
    let rt = RefreshToken::first(SessionId::generate());
    c.bench_function("refresh token: next in chain", |b| b.iter(|| black_box(&rt).next(&key)));
}

criterion_group!(benches, tokens, credentials);
criterion_main!(benches);
