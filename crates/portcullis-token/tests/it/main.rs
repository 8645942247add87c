//! The token crate's integration tests, in one test binary: the token rules of SECURITY.md
//! against hand-forged tokens (`tokens`), and the RFC and Wycheproof vectors in
//! `tests/vectors/` (`vectors`).

mod tokens;
mod vectors;
