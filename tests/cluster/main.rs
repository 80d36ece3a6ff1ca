//! Multi-node tests: real `strata` processes on loopback (and, where the
//! machine allows, in network namespaces), killed, paused and partitioned.
//!
//! One test binary for all of them, so a release build links it once.

#[path = "../shared/alert_kit.rs"]
mod alert_kit;
#[path = "../shared/metric_model.rs"]
mod metric_model;
mod procs;

mod backup;
mod elastic;
mod failover;
mod hotkeys;
mod operations;
mod partition;
mod pipeline;
mod snapshot;
mod transactions;
mod transport;
