//! Why recording stopped, or could not start.

use std::path::PathBuf;

/// Why recording stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the command line names no --apisock for the proxy to take the place of")]
    NoApisock,
    #[error("--supervisor: the command line names no --supervisor socket to record")]
    NoSupervisorFlag,
    #[error("no command to start")]
    NoCommand,
    #[error("cannot start {program}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} exited ({status}) before its API socket appeared")]
    ExitedEarly { program: String, status: std::process::ExitStatus },
    #[error("the daemon's API socket did not appear within 10 s")]
    NoSocket,
    #[error(
        "the recording in {} reached --max-bytes ({max_bytes} bytes) and the recorder stopped; what it kept ends with a `limit_reached` line",
        out.display()
    )]
    LimitReached { out: PathBuf, max_bytes: u64 },
    #[error(
        "{} is open to other users (mode {mode:o}); a recording keeps what a daemon said: give a new directory, or `chmod 700` this one",
        path.display()
    )]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error("{} exists and is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("accepting a connection on {} failed", path.display())]
    Accept {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for the daemon failed")]
    Wait(#[source] std::io::Error),
}
