//! Integration tests: the service against real `nats-server` processes (one binary, many
//! modules; each test starts its own servers, so streams and keys never collide).

mod audit;
mod cluster;
mod command_side;
mod config;
mod conservation;
mod contract_data;
mod event_schema;
mod exact_counts;
mod http_edge;
mod lifecycle;
mod limits;
mod operations;
mod permissions;
mod query_side;
mod security;
mod shutdown;
mod subjects;
mod support;
