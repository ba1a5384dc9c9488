//! nydusd's command line (`nydusd-api.md` §5.1), plus `--mock-*` flags of the mock's own.
//! Global flags may come before or after the subcommand, as with clap in nydusd.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

/// The parsed command line.
/// The device a singleton opens unless told otherwise.
pub const DEFAULT_CACHEFILES: &str = "/dev/cachefiles";

#[derive(Debug, Parser)]
#[command(name = "nydusd", disable_version_flag = true, about = "mock-nydusd: a wire-compatible nydusd stand-in")]
pub struct Cli {
    /// Daemon kind.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Print version information in nydusd's format.
    #[arg(short = 'V', long, global = true, action = ArgAction::SetTrue)]
    pub version: bool,
    /// API socket path.
    #[arg(short = 'A', long, global = true)]
    pub apisock: Option<PathBuf>,
    /// FUSE mountpoint.
    #[arg(short = 'M', long, global = true)]
    pub mountpoint: Option<PathBuf>,
    /// RAFS bootstrap mounted at start-up.
    #[arg(short = 'B', long, global = true)]
    pub bootstrap: Option<PathBuf>,
    /// RAFS configuration file.
    #[arg(short = 'C', long, global = true)]
    pub config: Option<PathBuf>,
    /// Daemon id (requires --supervisor).
    #[arg(long, global = true, requires = "supervisor")]
    pub id: Option<String>,
    /// Supervisor socket (requires --id).
    #[arg(long, global = true, requires = "id")]
    pub supervisor: Option<PathBuf>,
    /// Start in INIT and wait for a takeover.
    #[arg(long, global = true)]
    pub upgrade: bool,
    /// FUSE worker threads.
    #[arg(long = "fuse-threads", alias = "thread-num", global = true, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub fuse_threads: Option<u32>,
    /// Log level.
    #[arg(short = 'l', long, global = true, default_value = "info", value_parser = ["trace", "debug", "info", "warn", "error"])]
    pub log_level: String,
    /// Log file.
    #[arg(short = 'L', long, global = true)]
    pub log_file: Option<PathBuf>,
    /// Log rotation size in MB.
    #[arg(long, global = true)]
    pub log_rotation_size: Option<u64>,
    /// Policy for pending FUSE requests at takeover.
    #[arg(long, global = true, value_parser = ["none", "resend", "flush"])]
    pub failover_policy: Option<String>,
    /// RLIMIT_NOFILE to set (0 leaves it).
    #[arg(long, global = true)]
    pub rlimit_nofile: Option<u64>,
    /// Mount FUSE read-write.
    #[arg(long, global = true)]
    pub writable: bool,
    /// Directory of local blobs.
    #[arg(short = 'D', long, global = true)]
    pub localfs_dir: Option<PathBuf>,
    /// Passthrough source directory.
    #[arg(short = 's', long, global = true)]
    pub shared_dir: Option<PathBuf>,
    /// File listing paths to prefetch.
    #[arg(long, global = true)]
    pub prefetch_files: Option<PathBuf>,
    /// In-FUSE path of the start-up instance.
    #[arg(short = 'm', long, global = true, default_value = "/")]
    pub virtual_mountpoint: String,
    /// Mock: append a JSON-lines journal of requests and events to this file.
    #[arg(long, global = true)]
    pub mock_journal: Option<PathBuf>,
    /// Mock: the journal file stops growing at this many bytes (what it held when opened
    /// counts), ending with a `journal_truncated` record.
    #[arg(long, global = true, default_value_t = crate::journal::DEFAULT_FILE_LIMIT,
          value_parser = clap::value_parser!(u64).range(crate::journal::MIN_FILE_LIMIT..))]
    pub mock_journal_limit: u64,
    /// Mock: report this git commit (stands for another nydusd build in upgrade tests).
    #[arg(long, global = true)]
    pub mock_git_commit: Option<String>,
    /// Mock: where fscache's device is probed (for singleton start-up decisions).
    #[arg(long, global = true, default_value = DEFAULT_CACHEFILES)]
    pub mock_cachefiles: PathBuf,
    /// Mock: answer with a 500 instead of aborting where nydusd aborts.
    #[arg(long, global = true)]
    pub mock_no_abort: bool,
    /// Mock: mount a real FUSE session at --mountpoint (needs root and /dev/fuse).
    #[arg(long, global = true)]
    pub mock_fuse: bool,
    /// Mock: script of rules and start-up directives (YAML or JSON, see `script.rs`).
    #[arg(long, global = true)]
    pub mock_script: Option<PathBuf>,
    /// Mock: control socket for replacing the script and reading the journal at run time.
    #[arg(long, global = true)]
    pub mock_control: Option<PathBuf>,
    /// Mock: open connections served before new ones get dbs-uhttp's 503 (nydusd: 256).
    #[arg(long, global = true, default_value_t = 256)]
    pub mock_max_connections: usize,
    /// Mock: wait for the rest of a request that arrives in pieces, instead of answering
    /// each read that ends mid-request with nydusd's spurious 500 (`EAGAIN`) first.
    #[arg(long, global = true)]
    pub mock_no_partial_read_500: bool,
    /// Mock: which process of its daemon this is, counted from 1 (a harness gives each
    /// spawn its number); script rules with `when.process` apply to that process only.
    /// 1 when neither this nor `MOCK_NYDUSD_DIR` says.
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub mock_process: Option<u32>,
    /// Mock: the nydusd release to behave as (see `version.rs`); the last one given counts.
    /// 2.4 when neither this nor `MOCK_NYDUSD_VERSION` says.
    #[arg(long, global = true, value_enum, overrides_with = "mock_nydusd_version")]
    pub mock_nydusd_version: Option<crate::version::NydusdVersion>,
    /// Mock: list `backend_collection` in a random order each time, as nydusd's hash map
    /// may; clients must not depend on the order.
    #[arg(long, global = true)]
    pub mock_shuffle_maps: bool,
}

/// nydusd's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// FUSE daemon.
    Fuse,
    /// fscache blob-cache host.
    Singleton {
        /// fscache work directory.
        #[arg(short = 'F', long)]
        fscache: Option<PathBuf>,
        /// fscache tag.
        #[arg(long)]
        fscache_tag: Option<String>,
        /// fscache worker threads.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        fscache_threads: Option<u32>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nydusd").chain(args.iter().copied()))
    }

    #[test]
    fn accepts_the_snapshotter_command_line_and_flags_after_the_subcommand() {
        let cli = parse(&[
            "fuse",
            "--thread-num",
            "4",
            "--id",
            "d1",
            "--mountpoint",
            "/m",
            "--apisock",
            "/a.sock",
            "--log-level",
            "info",
            "--supervisor",
            "/s.sock",
            "--log-file",
            "/l",
            "--failover-policy",
            "resend",
        ])
        .unwrap();
        assert_eq!(cli.fuse_threads, Some(4));
        assert_eq!(cli.id.as_deref(), Some("d1"));
    }

    #[test]
    fn rejects_unknown_flags_with_usage_exit_code_2() {
        let err = parse(&["fuse", "--backend-source", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn id_and_supervisor_require_each_other() {
        assert_eq!(parse(&["--id", "d1"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["--supervisor", "/s"]).unwrap_err().exit_code(), 2);
    }
}
