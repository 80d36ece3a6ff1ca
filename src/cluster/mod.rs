//! The cluster layer, between commands and storage: routing a key to its
//! shard, replicating the shard's writes through its Raft group, and the
//! cluster's metadata. Storage knows nothing of it; commands reach peers
//! only through it.
//!
//! - [`transport`]: authenticated, multiplexed connections between nodes.

pub mod transport;
