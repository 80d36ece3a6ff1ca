//! The machine-readable description of the HTTP API, served at
//! `/openapi.json`. A test checks that every route the router serves is
//! described here.

/// The OpenAPI 3 document.
pub const DOCUMENT: &str = include_str!("openapi.json");
