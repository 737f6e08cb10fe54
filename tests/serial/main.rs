//! Integration tests that are timing-sensitive or load the machine: a three-node cluster
//! losing a node, kill -9 cycles, a busy core. They run one at a time
//! ([`support::one_heavy_test_at_a_time`]), in their own binary so that cargo runs them
//! after the `it` binary's parallel tests and never beside them.

mod browser;
mod cluster;
mod connection_cuts;
mod conservation;
mod exact_counts;
mod history_faults;
// Shared with the `it` binary; not every helper is used here.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;
