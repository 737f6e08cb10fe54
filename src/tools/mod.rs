//! Tools beside the service, as subcommands of the same binary (leaves: nothing in the
//! service imports them, except the command line that names them):
//! - [`demo`]: `match-stats demo-feed`, simulated matches for `make run`;
//! - [`loadgen`]: `match-stats loadgen`, the load generator `make load-test` drives;
//! - [`sim`]: the simulated match both play;
//! - [`tail`]: `match-stats tail`, deltas or dead letters as they arrive;
//! - [`publish`]: `match-stats publish`, events typed or piped as JSON lines.

pub mod demo;
pub mod loadgen;
pub mod publish;
pub mod sim;
pub mod tail;
