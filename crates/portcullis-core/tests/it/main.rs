//! The core's integration tests, in one test binary: property tests of every parser
//! (`properties`). The token rules and the public vectors are tested in `portcullis-token`.

mod properties;
