//! Property tests for what the server parses itself: `Cookie`, `Authorization` and
//! `X-Forwarded-For` headers, and the settings file. The same parsers have fuzz targets
//! (fuzz/, see README); these run in every test run.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use portcullis_core::SessionToken;
use portcullis_server::settings::Settings;
use portcullis_server::{CookieKind, Cookies, TrustedProxies, bearer};
use proptest::prelude::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (name.parse::<header::HeaderName>(), HeaderValue::from_str(value)) {
            h.append(n, v);
        }
    }
    h
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        (0u8..4).prop_map(|last| IpAddr::from([10, 0, 0, last])),
        Just(IpAddr::from([127, 0, 0, 1])),
    ]
}

proptest! {
    /// Our cookie is found among any others, in any position, with any spacing.
    #[test]
    fn the_session_cookie_is_found_among_others(
        before in proptest::collection::vec(("[a-z_-]{1,12}", "[A-Za-z0-9%._-]{0,30}"), 0..5),
        after in proptest::collection::vec(("[a-z_-]{1,12}", "[A-Za-z0-9%._-]{0,30}"), 0..5),
        space in "[ ]{0,2}",
    ) {
        let cookies = Cookies { secure: true };
        let token = SessionToken::generate();
        let mut pairs: Vec<String> = before.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.push(format!("__Host-portcullis={}", token.expose()));
        pairs.extend(after.iter().map(|(n, v)| format!("{n}={v}")));
        let h = headers(&[("cookie", &pairs.join(&format!(";{space}")))]);
        prop_assert_eq!(cookies.session(&h).map(|t| t.expose()), Some(token.expose()));
        // The plain-HTTP name is a different cookie.
        let plain = Cookies { secure: false };
        prop_assert!(plain.session(&h).is_none());
    }

    #[test]
    fn any_cookie_or_authorization_header_is_answered(value in "[ -~]{0,300}") {
        let h = headers(&[("cookie", &value), ("authorization", &value)]);
        for secure in [true, false] {
            let c = Cookies { secure };
            let _ = c.session(&h);
            for kind in [CookieKind::Session, CookieKind::Access, CookieKind::Refresh] {
                let _ = c.values(&h, kind).count();
            }
        }
        if let Some(v) = h.get(header::AUTHORIZATION) {
            match bearer(v) {
                Ok(token) => {
                    prop_assert!(!token.is_empty() && token == &value.as_bytes()[7..]);
                    prop_assert!(value[..7].eq_ignore_ascii_case("bearer "));
                }
                Err(e) => prop_assert_eq!(e.code, "invalid_token"),
            }
        }
    }

    /// The client address is the peer, or one of the forwarded entries when the peer is a
    /// trusted proxy; an untrusted peer is never overridden.
    #[test]
    fn the_client_address_comes_only_from_the_peer_or_trusted_hops(
        peer in ip(),
        hops in proptest::collection::vec(ip(), 0..6),
        junk in proptest::option::of("[a-z]{1,8}"),
    ) {
        let trusted = TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/30".into()]).expect("valid");
        let mut entries: Vec<String> = hops.iter().map(ToString::to_string).collect();
        if let Some(j) = junk {
            entries.insert(entries.len() / 2, j);
        }
        let h = headers(&[("x-forwarded-for", &entries.join(", "))]);
        let client = trusted.client_ip(Some(peer), &h).expect("an address");
        if !trusted.contains(peer) {
            prop_assert_eq!(client, peer.to_canonical());
        } else {
            prop_assert!(client == peer.to_canonical() || hops.iter().any(|h| h.to_canonical() == client));
            // Nothing to the right of the answer is untrusted: no hop was skipped past.
            let pos = hops.iter().rposition(|h| h.to_canonical() == client);
            if let Some(pos) = pos {
                prop_assert!(hops[pos + 1..].iter().all(|h| trusted.contains(*h)));
            }
        }
    }

    #[test]
    fn any_settings_text_loads_or_is_refused(text in "[ -~\n]{0,300}") {
        if let Ok(s) = Settings::from_toml_str(&text) {
            prop_assert!(s.validate().is_ok());
        }
    }

    #[test]
    fn durations_are_read_as_written(secs in 1u64..10_000_000, unit in prop::sample::select(vec![("s", 1u64), ("m", 60), ("h", 3600)])) {
        // The absolute timeout may not be shorter than the idle one: the same value.
        let text = format!("[session]\nidle_timeout = \"{secs}{u}\"\nabsolute_timeout = \"{secs}{u}\"\n", u = unit.0);
        let s = Settings::from_toml_str(&text).expect("loads");
        prop_assert_eq!(s.session.idle_timeout, Duration::from_secs(secs * unit.1));
    }
}
