//! # reelfarm CLI
//!
//! The `reelfarm` command: a client of the coordinator (submit, get, list, watch, cancel,
//! workers, drain), the embedded `demo` farm, and the benchmarks. One file per subcommand
//! under [`cmd`]. The same crate builds the `reelfarm-coordinator` and `reelfarm-worker`
//! binaries (src/bin/), thin wrappers over the coordinator and worker crates.

pub mod client;
pub mod cmd;
pub mod local_etcd;
pub mod output;
pub mod signals;
