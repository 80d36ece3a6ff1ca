//! Front ends: the RESP listener and the HTTP API. Both turn requests into
//! command executions (see [`crate::commands`]).

pub mod connection;
mod dashboard;
pub mod http;
mod monitoring;
mod openapi;
mod pipeline_api;
pub mod resp;

pub(crate) use crate::commands::make_durable;
