//! Session tokens, refresh tokens and emails as clients send them: parsing never panics, and
//! what parses prints back exactly as it came (one spelling per credential).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::refresh::RefreshToken;
use portcullis_core::{Email, SessionToken};

fuzz_target!(|text: &str| {
    if let Some(t) = SessionToken::parse(text) {
        assert_eq!(t.expose(), text);
    }
    if let Some(t) = RefreshToken::parse(text) {
        assert_eq!(t.expose(), text);
    }
    if let Ok(e) = Email::parse(text) {
        // Canonical forms are fixed points.
        assert_eq!(Email::parse(e.as_str()).map(|again| again.as_str().to_owned()).ok().as_deref(), Some(e.as_str()));
    }
});
