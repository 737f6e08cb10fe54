//! Integration tests: the service against real `nats-server` processes (one binary, many
//! modules; each test starts its own servers, so streams and keys never collide). Tests
//! that kill processes, load a core or run a cluster are in the `serial` binary, which
//! cargo runs after this one, never beside it.

mod audit;
mod browser_edge;
mod command_side;
mod config;
mod contract_data;
mod event_schema;
mod history;
mod http_edge;
mod lifecycle;
mod limits;
mod message_headers;
mod monitoring;
mod operations;
mod permissions;
mod projector_gaps;
mod query_side;
mod security;
mod shutdown;
mod streams;
mod subjects;
mod tools;
// Shared with the `serial` binary; not every helper is used here.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;
