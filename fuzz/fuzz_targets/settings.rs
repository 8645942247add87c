//! The settings file: any text is loaded or refused with a message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_server::settings::Settings;

fuzz_target!(|text: &str| {
    if let Ok(s) = Settings::from_toml_str(text) {
        // What loads is valid by the same rules the server starts with.
        assert!(s.validate().is_ok());
    }
});
