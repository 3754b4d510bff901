//! The CLI's subcommands, one file each.
//!
//! - [`submit`], [`get`], [`list`], [`watch`], [`cancel`]: jobs.
//! - [`workers`]: list and drain workers.
//! - [`keys`]: create, list and revoke API keys.
//! - [`words`]: the prompt words the scene parser understands.
//! - [`demo`]: a whole farm in this process (in-memory state, local workers) running one job.
//! - [`bench`]: benchmarks printing JSON.
//! - [`spec_args`]: the job-spec flags shared by `submit` and `demo`.

pub mod bench;
pub mod cancel;
pub mod demo;
pub mod get;
pub mod keys;
pub mod list;
pub mod spec_args;
pub mod status;
pub mod submit;
pub mod watch;
pub mod words;
pub mod workers;
