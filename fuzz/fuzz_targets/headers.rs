//! The request headers Portcullis reads itself: `Cookie` (session, access and refresh cookies),
//! `Authorization: Bearer`, and `X-Forwarded-For` behind trusted proxies. Never a panic; the
//! client address is always the peer or one of the forwarded entries.
#![no_main]

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use portcullis_server::{CookieKind, Cookies, TrustedProxies, bearer};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (cookie, auth, xff) = (parts.next().unwrap_or(b""), parts.next().unwrap_or(b""), parts.next().unwrap_or(b""));
    let mut headers = HeaderMap::new();
    for (name, value) in [(header::COOKIE, cookie), (header::AUTHORIZATION, auth)] {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
    }
    if let Ok(v) = HeaderValue::from_bytes(xff) {
        headers.insert("x-forwarded-for", v);
    }
    for secure in [true, false] {
        let cookies = Cookies { secure };
        let _ = cookies.session(&headers);
        for kind in [CookieKind::Session, CookieKind::Access, CookieKind::Refresh] {
            let _ = cookies.values(&headers, kind).count();
        }
    }
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let _ = bearer(v);
    }
    let trusted = TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).expect("valid");
    let peer: IpAddr = [127, 0, 0, 1].into();
    let client = trusted.client_ip(Some(peer), &headers).expect("an address");
    let listed = String::from_utf8_lossy(xff).split(',').any(|h| h.trim().parse::<IpAddr>().ok() == Some(client));
    assert!(client == peer || listed, "{client} came from nowhere");
});
