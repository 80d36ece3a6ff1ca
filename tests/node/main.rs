//! Single-node tests: the storage engine through its library API (crash
//! recovery runs a child copy of this binary and kills it), and one
//! `strata` server process driven by real clients over real sockets.
//!
//! One test binary for all of them, so a release build links it once.

#[path = "../shared/alert_kit.rs"]
mod alert_kit;
mod common;
#[path = "../shared/metric_model.rs"]
mod metric_model;
mod storage_common;

mod acl;
mod hotkeys;
mod http_api;
mod introspection;
mod keyspace_events;
mod load_tools;
mod monitoring;
mod pipeline;
mod poisoned_log;
mod pubsub;
mod recover_after_kill;
mod recover_apply_batches;
mod resp_bad_input;
mod resp_commands;
mod schemas;
mod scripting;
mod server_process;
mod snapshot_restore;
mod storage_chunks;
mod storage_hot_set;
mod storage_memory_cap;
mod storage_model;
mod storage_ttl_tiers;
mod swapdb;
mod tenants;
mod tracking;
mod transactions_blocking;
mod types_bits_geo;
mod types_memory_cap;
mod types_sets;
mod types_streams;
