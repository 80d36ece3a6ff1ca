//! Front ends: the RESP listener and the HTTP API. Both turn requests into
//! command executions (see [`crate::commands`]).

pub mod connection;
pub mod http;
mod openapi;
pub mod resp;
