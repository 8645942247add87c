//! The open-redirect guard: where a sign-in may send someone afterwards, and the page
//! `Content-Security-Policy` whose `form-action` allows exactly those places.

use axum::http::HeaderValue;
use url::Url;

/// The page policy used if the configured origins cannot form a header (they are validated at
/// start-up), and for error pages.
pub const STRICT_CSP: &str =
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub struct ReturnTo {
    /// Origins a sign-in may send people back to (besides relative paths).
    origins: Vec<String>,
}

impl ReturnTo {
    /// Trusts `public_origin` and `extra_origins` (`cors.allowed_origins`,
    /// `pages.return_to_origins`).
    pub fn new(public_origin: &str, extra_origins: &[String]) -> Self {
        let mut origins = vec![public_origin.to_owned()];
        for origin in extra_origins {
            if !origins.contains(origin) {
                origins.push(origin.clone());
            }
        }
        Self { origins }
    }

    /// The pages' `Content-Security-Policy`: no scripts at all; styles only from here; forms
    /// post only here (and their redirects go only to the origins sign-in may return to).
    pub fn page_csp(&self) -> HeaderValue {
        let csp = format!(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {}; frame-ancestors 'none'; base-uri 'none'",
            self.origins.join(" ")
        );
        HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static(STRICT_CSP))
    }

    /// Where a sign-in may send someone: a path on this server (`/account`, not `//host` or
    /// `/\host`), or an absolute http(s) URL on a trusted origin. Anything else is refused, so
    /// the sign-in page is never an open redirect.
    pub fn check(&self, raw: &str) -> Option<String> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c == '\\') {
            return None;
        }
        if raw.starts_with('/') {
            return (!raw.starts_with("//")).then(|| raw.to_owned());
        }
        let url = Url::parse(raw).ok()?;
        let origin = url.origin().ascii_serialization();
        let trusted = matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none()
            && self.origins.contains(&origin);
        trusted.then(|| url.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_is_never_an_open_redirect() {
        let p = ReturnTo::new("https://auth.example.com", &["https://app.example.com".into()]);
        for ok in ["/account", "/app?x=1&y=2", "https://auth.example.com/account", "https://app.example.com/page?q=1"] {
            assert!(p.check(ok).is_some(), "{ok}");
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "https://app.example.com.evil.example/",
            "https://user@app.example.com/",
            "http://app.example.com/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "evil.example",
            "",
            "/ok\r\nSet-Cookie: x=y",
        ] {
            assert_eq!(p.check(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_page_policy_lets_forms_post_only_to_trusted_origins() {
        let p = ReturnTo::new("https://auth.example.com", &["https://app.example.com".into()]);
        let csp = p.page_csp();
        let csp = csp.to_str().expect("ascii");
        assert!(csp.contains("form-action 'self' https://auth.example.com https://app.example.com;"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
    }
}
