//! Test support for match-stats: real servers and the shared contract's test data.
//!
//! - [`NatsServer`] and [`RedisServer`] start real `nats-server` (with JetStream) and
//!   `redis-server` processes on free loopback ports with temporary directories, and
//!   kill them on drop. A missing binary panics with the command that installs it.
//!   [`NatsCluster`] runs three clustered nodes from `nats/cluster/node.conf`.
//! - [`PostgresServer`] runs a real PostgreSQL (`initdb` in a temp dir, as the
//!   `postgres` user when root).
//! - [`browser::Chromedriver`] runs headless Chromium behind `chromedriver`.
//! - [`contract`] reads the contract's test data (vectors, scenarios, expected results)
//!   from the repository's copy in `tests/data/contract/`.
//! - [`json`] compares JSON documents with the contract's float tolerance.

pub mod browser;
pub mod contract;
pub mod json;
mod postgres;
mod servers;

pub use postgres::PostgresServer;
pub use servers::{CLUSTER_USERS, NatsCluster, NatsServer, RedisServer, free_port};
