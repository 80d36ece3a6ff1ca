//! Operator tools built into the binary: `strata bench` (a load generator
//! with honest latency for any Redis-protocol server or strata's HTTP API)
//! `strata generate` (the seeds' traffic generator) and `strata cluster`
//! (forming and running clusters). They are clients:
//! they talk to a server over sockets like any other.

pub mod bench;
pub mod client;
pub mod cluster;
pub mod generate;
pub mod keys;
