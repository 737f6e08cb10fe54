//! Tools beside the service, as subcommands of the same binary (leaves: nothing in the
//! service imports them, except the command line that names them):
//! - [`demo`]: `match-stats demo-feed`, simulated matches for `make run`;
//! - [`loadgen`]: `match-stats loadgen`, the load generator `make load-test` drives;
//! - [`sim`]: the simulated match both play.

pub mod demo;
pub mod loadgen;
pub mod sim;
