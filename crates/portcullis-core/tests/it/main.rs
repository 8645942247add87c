//! The core's integration tests, in one test binary: the token rules of SECURITY.md against
//! hand-forged tokens (`tokens`), the RFC and Wycheproof vectors in `tests/vectors/`
//! (`vectors`), and property tests of every parser (`properties`).

mod properties;
mod tokens;
mod vectors;
