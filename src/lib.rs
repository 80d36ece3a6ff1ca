//! strata: a tiered key-value store. Hot data lives in memory; colder data
//! moves to an on-disk LSM instead of being evicted.
//!
//! A request flows top to bottom through these modules, and each depends
//! only on the ones below it:
//!
//! - [`frontend`]: RESP connections ([`frontend::resp`] parses frames and
//!   encodes replies) and the HTTP API ([`frontend::http`]).
//! - [`commands`]: one table of commands; each request is checked and
//!   executed to a reply value, whichever front end it came from.
//! - [`cluster`]: routing, replication and cluster metadata; the
//!   node-to-node transport.
//! - [`node`]: what a node shares: the store, live config, metrics, clients,
//!   the gate that keeps transactions and scripts whole, the thread
//!   scripts run on, and the clients blocked on keys; [`pubsub`]:
//!   subscriptions and each subscriber's queue; [`tracking`]: which
//!   client may cache which key (CLIENT TRACKING); [`scripting`]: the Lua VM
//!   scripts run in, whose `redis.call` reaches back to the command table
//!   through a callback the commands supply; [`acl`]: users, their
//!   permissions over the commands the command layer catalogues, the ACL
//!   log and file.
//! - [`storage`]: one node's data: the memory tier, the disk tier (fjall),
//!   the write-ahead log, spilling, offloading, TTLs and snapshots.
//! - [`slot`]: key -> Redis Cluster slot -> ordering position, shared by all.
//!
//! [`server`] assembles a node from a [`config::Config`]; [`ops`] watches
//! it: the health score, alert rules, hot keys, the machine's figures and
//! the monitor behind seed 001's monitoring API and the dashboard;
//! [`pipeline`] is the metric pipeline, a client of the command layer;
//! [`metrics`] exports Prometheus series; [`tools`] are the load generator and traffic
//! generator, which are clients of a node like any other.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

/// mimalloc: measured against glibc malloc it cuts resident memory per key
/// (no per-allocation header on small objects) and speeds up the many
/// small allocations of the request path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod acl;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod frontend;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod pipeline;
pub mod pubsub;
pub mod scripting;
pub mod server;
pub mod slot;
pub mod storage;
pub mod tools;
pub mod tracking;
