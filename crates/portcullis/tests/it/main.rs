//! The `portcullis` binary's tests, one test binary: the binary itself run as a person would
//! (`cli`), the lab end to end (`lab`), and the rules the workspace's code must keep
//! (`architecture`).

mod architecture;
mod cli;
mod lab;
mod readme;
