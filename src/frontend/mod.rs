//! Front ends: the RESP listener and the HTTP API. Both turn requests into
//! command executions (see [`crate::commands`]).

pub mod connection;
pub mod http;
mod openapi;
mod pipeline_api;
pub mod resp;

use crate::storage::{Lsn, StorageError, Store};

/// Makes a request batch's writes (up to `lsn`) as durable as `appendfsync`
/// promises, before any front end acknowledges them. Under `always` the
/// fsync runs on the blocking pool, so the I/O thread keeps serving.
pub(crate) async fn make_durable(store: &Store, lsn: Lsn) -> Result<(), StorageError> {
    if !store.sync_blocks() {
        return store.sync(lsn);
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.sync(lsn))
        .await
        .unwrap_or_else(|e| Err(StorageError::Io(std::io::Error::other(e))))
}
