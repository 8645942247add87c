//! The server's integration tests, in one test binary: one link instead of a dozen, and one
//! process for the suite's servers. Each module is one area; `common` is the test server
//! (a real server on port 0 with a manual clock).
//!
//! `tests/timing.rs` stays a binary of its own: it compares how long logins take and must not
//! share the process with the other tests.

mod admin;
mod bad_input;
mod browser;
mod cluster;
mod common;
mod enrolment;
mod feed;
mod hardening;
mod jwt;
mod mfa;
mod nginx;
mod oidc;
mod pages;
mod parsers;
mod passkeys;
mod recovery;
mod sessions;
mod verification;
