//! strata: a tiered key-value store. Hot data lives in memory; colder data
//! moves to an on-disk LSM instead of being evicted.
//!
//! A request flows top to bottom through these modules, and each depends
//! only on the ones below it:
//!
//! - [`storage`]: one node's data: the memory tier, the disk tier (fjall),
//!   the write-ahead log, spilling, offloading, TTLs and snapshots.
//! - [`slot`]: key -> Redis Cluster slot -> ordering position, shared by all.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

pub mod slot;
pub mod storage;
