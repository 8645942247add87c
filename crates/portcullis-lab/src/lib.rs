//! # portcullis-lab
//!
//! Real backing services for tests and for the cluster lab: each starts its own instance of an
//! installed program (Redis, PostgreSQL, nginx, an SMTP server) on a free loopback port in a temporary
//! directory, and stops it when dropped. Nothing here talks to the network beyond 127.0.0.1.
//!
//! [`lab`] is `portcullis lab`: it starts N Portcullis nodes (as real processes), Redis,
//! PostgreSQL and nginx, and measures the claims people make about sessions and JWTs.
//!
//! A test asks with [`require`]: when the program is not installed it gets `None` and a loud
//! message on standard error — unless `PORTCULLIS_TEST_REQUIRE_ALL=1`, where a missing program
//! is a failure (CI sets it).
//!
//! This crate must not depend on any other Portcullis crate: it starts and measures programs
//! (the `portcullis` binary among them) from outside. The server library uses it in its tests
//! only; the `portcullis` binary composes it as `portcullis lab`.

pub mod lab;
mod procs;

pub use procs::{
    ChromeDriver, Nginx, Postgres, Proc, ProcError, ProcessInfo, Redis, RedisCluster, RedisSentinel, Smtp, free_port,
    processes, require,
};
