//! The crate's error type: what stops a load-test run before or after traffic, as opposed to
//! per-request failures, which are counted (see `stats::ErrorKind`) and never abort a run.

use std::path::PathBuf;

/// Why a run could not start or could not finish producing its report.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// A flag value makes no sense; fix the command line.
    #[error("invalid {flag}: {reason}")]
    InvalidArg { flag: &'static str, reason: String },
    /// The target's host name did not resolve to any address.
    #[error("cannot resolve target {target}: {reason}")]
    Resolve { target: String, reason: String },
    /// The preparation phase (registering the instances a scenario reads or beats) failed, so
    /// the measured phase would measure the wrong thing.
    #[error("setup against {target} failed: {detail}")]
    Setup { target: String, detail: String },
    /// `/proc/<pid>` could not be read: the process is gone or not ours to inspect.
    #[error("cannot sample process {pid} via /proc: {reason}")]
    Proc { pid: u32, reason: String },
    /// A report file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The UDP socket that receives pushes could not be bound.
    #[error("cannot bind the UDP push listener: {0}")]
    Udp(std::io::Error),
    /// The load generator's own runtime or thread could not be started.
    #[error("cannot start the load generator: {0}")]
    Runtime(String),
    /// The latency histogram rejected its bounds (a bug in this crate, not in the target).
    #[error("histogram: {0}")]
    Histogram(String),
    /// Serialising the JSON report failed.
    #[error("JSON report: {0}")]
    Json(#[from] serde_json::Error),
}
