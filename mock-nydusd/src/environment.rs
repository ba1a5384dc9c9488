//! The mock set up from its environment, for a program that starts it with nydusd's own
//! command line (containerd's nydus-snapshotter, with the mock as its `nydusd_path`): the
//! mock's flags cannot be given there, so each has an environment variable, and a
//! directory gives every daemon a script, journal and control socket of its own.
//!
//! | variable | the flag it stands for |
//! |---|---|
//! | `MOCK_NYDUSD_SCRIPT` | `--mock-script` (every daemon) |
//! | `MOCK_NYDUSD_JOURNAL` | `--mock-journal` (every daemon, one file) |
//! | `MOCK_NYDUSD_CONTROL` | `--mock-control` (every daemon: the last one started wins) |
//! | `MOCK_NYDUSD_VERSION` | `--mock-nydusd-version` |
//! | `MOCK_NYDUSD_FUSE=1` | `--mock-fuse` |
//! | `MOCK_NYDUSD_CACHEFILES` | `--mock-cachefiles` (when the flag is not given) |
//! | `MOCK_NYDUSD_DIR` | per daemon, see below |
//!
//! With `MOCK_NYDUSD_DIR=D`, a daemon named N (its `--id`, else the name of the directory
//! holding its `--apisock`, which is the daemon id in the snapshotter's layout
//! `<root>/socket/<id>/api.sock`) takes its script from `D/N.script.yaml` (or
//! `D/default.script.yaml`), appends its journal to `D/N.journal.jsonl`, serves its control
//! socket at `D/N.control.sock`, and numbers its process (`when.process`) by counting the
//! starts recorded in `D/N.starts`: the first process is 1, the one a failover or upgrade
//! starts is 2, and so on. A flag on the command line wins over its variable, and a variable
//! over the directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::cli::Cli;

/// The directory variable.
pub const DIR: &str = "MOCK_NYDUSD_DIR";

/// Every variable the mock reads; a harness that starts the mock with flags of its own
/// removes them, so that a setting meant for a snapshotter does not reach its daemons.
pub const VARIABLES: [&str; 7] = [
    "MOCK_NYDUSD_SCRIPT",
    "MOCK_NYDUSD_JOURNAL",
    "MOCK_NYDUSD_CONTROL",
    "MOCK_NYDUSD_VERSION",
    "MOCK_NYDUSD_FUSE",
    "MOCK_NYDUSD_CACHEFILES",
    DIR,
];

/// Why the environment could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    /// A per-daemon file in the directory is a symbolic link: the mock writes only files of
    /// its own there.
    #[error("{DIR}: {} is a symbolic link; the mock writes only its own files", path.display())]
    Link {
        /// The link.
        path: PathBuf,
    },
    /// A variable's value is not one the flag takes.
    #[error("{name}={value:?}: {reason}")]
    Value {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What the flag takes.
        reason: &'static str,
    },
    /// The directory's start count could not be kept.
    #[error("{DIR}: cannot count the starts of {name} in {}", path.display())]
    Starts {
        /// The daemon's name.
        name: String,
        /// The count file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Fills the mock's options the command line left out from `lookup` (the process
/// environment in `run`), and the per-daemon directory.
pub fn apply(cli: &mut Cli, lookup: impl Fn(&str) -> Option<OsString>) -> Result<(), EnvironmentError> {
    let path = |name: &str| lookup(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if cli.mock_script.is_none() {
        cli.mock_script = path("MOCK_NYDUSD_SCRIPT");
    }
    if cli.mock_journal.is_none() {
        cli.mock_journal = path("MOCK_NYDUSD_JOURNAL");
    }
    if cli.mock_control.is_none() {
        cli.mock_control = path("MOCK_NYDUSD_CONTROL");
    }
    // An empty variable is an unset one, for every variable alike.
    if cli.mock_nydusd_version.is_none()
        && let Some(value) = lookup("MOCK_NYDUSD_VERSION").filter(|v| !v.is_empty())
    {
        let value = value.to_string_lossy().into_owned();
        cli.mock_nydusd_version = Some(match value.as_str() {
            "2.2" => crate::version::NydusdVersion::V2_2,
            "2.4" => crate::version::NydusdVersion::V2_4,
            _ => return Err(EnvironmentError::Value { name: "MOCK_NYDUSD_VERSION", value, reason: "2.2 or 2.4" }),
        });
    }
    if !cli.mock_fuse
        && let Some(value) = lookup("MOCK_NYDUSD_FUSE").filter(|v| !v.is_empty())
    {
        cli.mock_fuse = match value.to_string_lossy().as_ref() {
            "1" | "true" => true,
            "0" | "false" => false,
            other => {
                return Err(EnvironmentError::Value {
                    name: "MOCK_NYDUSD_FUSE",
                    value: other.to_owned(),
                    reason: "1 or 0",
                });
            }
        };
    }
    if cli.mock_cachefiles == Path::new(crate::cli::DEFAULT_CACHEFILES)
        && let Some(device) = path("MOCK_NYDUSD_CACHEFILES")
    {
        cli.mock_cachefiles = device;
    }
    let Some(dir) = path(DIR) else { return Ok(()) };
    // `--version` starts no daemon: nothing to name or count.
    if cli.version {
        return Ok(());
    }
    let name = daemon_name(cli);
    if cli.mock_script.is_none() {
        cli.mock_script =
            [format!("{name}.script.yaml"), "default.script.yaml".to_owned()].iter().map(|f| dir.join(f)).find(|p| p.is_file());
    }
    if cli.mock_journal.is_none() {
        let journal = dir.join(format!("{name}.journal.jsonl"));
        if journal.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(EnvironmentError::Link { path: journal });
        }
        cli.mock_journal = Some(journal);
    }
    if cli.mock_control.is_none() {
        cli.mock_control = Some(dir.join(format!("{name}.control.sock")));
    }
    if cli.mock_process.is_none() {
        let starts = dir.join(format!("{name}.starts"));
        cli.mock_process =
            Some(count_start(&starts).map_err(|source| EnvironmentError::Starts { name, path: starts, source })?);
    }
    Ok(())
}

/// `--id`, else the directory holding the API socket, else `nydusd`; only characters safe
/// in a file name are kept.
fn daemon_name(cli: &Cli) -> String {
    let from_socket = || {
        cli.apisock.as_deref().and_then(Path::parent).and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned())
    };
    let name = cli.id.clone().or_else(from_socket).unwrap_or_else(|| "nydusd".to_owned());
    // At most 200 characters, so that the longest file made of it stays under NAME_MAX.
    let safe: String = name
        .chars()
        .take(200)
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    if safe.is_empty() || safe.starts_with('.') { format!("_{safe}") } else { safe }
}

/// Appends one line to `path` under an exclusive lock and returns how many lines it holds:
/// this start's number. Concurrent starts of one daemon each get their own.
fn count_start(path: &Path) -> std::io::Result<u32> {
    use std::io::{Read, Seek, Write};
    // Not through a symbolic link: the count is the mock's own file, never another's.
    let mut file = std::os::unix::fs::OpenOptionsExt::custom_flags(
        std::fs::OpenOptions::new().create(true).read(true).append(true),
        nix::libc::O_NOFOLLOW,
    )
    .open(path)?;
    nix::fcntl::Flock::lock(file.try_clone()?, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| std::io::Error::from(errno))
        .and_then(|lock| {
            let mut text = String::new();
            file.rewind()?;
            // A start is one short line; a count file past a megabyte is not ours.
            (&mut file).take(1 << 20).read_to_string(&mut text)?;
            let count = u32::try_from(text.lines().count() + 1).unwrap_or(u32::MAX);
            writeln!(file, "{}", std::process::id())?;
            drop(lock);
            Ok(count)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("nydusd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_directory_names_each_daemon_by_id_or_socket_and_counts_its_starts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d2.script.yaml"), "rules: []\n").unwrap();
        let env = |name: &str| (name == DIR).then(|| dir.path().as_os_str().to_owned());
        let mut by_socket = cli(&["fuse", "--mountpoint", "/m", "--apisock", "/run/socket/d2/api.sock"]);
        apply(&mut by_socket, env).unwrap();
        assert_eq!(by_socket.mock_script, Some(dir.path().join("d2.script.yaml")));
        assert_eq!(by_socket.mock_journal, Some(dir.path().join("d2.journal.jsonl")));
        assert_eq!(by_socket.mock_control, Some(dir.path().join("d2.control.sock")));
        assert_eq!(by_socket.mock_process, Some(1));
        let mut again = cli(&["fuse", "--mountpoint", "/m", "--id", "d2", "--supervisor", "/s", "--upgrade"]);
        apply(&mut again, env).unwrap();
        assert_eq!(again.mock_process, Some(2), "the second start of d2");
        let mut other = cli(&["singleton", "--fscache", "/c", "--id", "../x y", "--supervisor", "/s"]);
        apply(&mut other, env).unwrap();
        assert_eq!(other.mock_script, None, "no script for it, and no default");
        assert_eq!(other.mock_journal, Some(dir.path().join("_.._x_y.journal.jsonl")), "a name safe as a file name");
    }

    #[test]
    fn a_start_count_behind_a_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("d1.starts")).unwrap();
        let mut daemon = cli(&["fuse", "--mountpoint", "/m", "--id", "d1", "--supervisor", "/s"]);
        let err = apply(&mut daemon, |name: &str| (name == DIR).then(|| dir.path().as_os_str().to_owned())).unwrap_err();
        assert!(matches!(&err, EnvironmentError::Starts { name, .. } if name == "d1"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
        std::fs::remove_file(dir.path().join("d1.starts")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("d1.journal.jsonl")).unwrap();
        let mut journaled = cli(&["fuse", "--mountpoint", "/m", "--id", "d1", "--supervisor", "/s"]);
        let err =
            apply(&mut journaled, |name: &str| (name == DIR).then(|| dir.path().as_os_str().to_owned())).unwrap_err();
        assert!(matches!(&err, EnvironmentError::Link { path } if path.ends_with("d1.journal.jsonl")), "{err}");
        let long = "x".repeat(5000);
        let mut long_id = cli(&["fuse", "--mountpoint", "/m", "--id", &long, "--supervisor", "/s"]);
        apply(&mut long_id, |name: &str| (name == DIR).then(|| dir.path().as_os_str().to_owned())).unwrap();
        assert_eq!(long_id.mock_process, Some(1), "a long id is cut to a usable file name");
    }

    #[test]
    fn flags_win_over_variables_and_bad_values_are_named() {
        let mut given = cli(&["--mock-script", "/given.yaml", "--mock-nydusd-version", "2.2"]);
        let env = |name: &str| match name {
            "MOCK_NYDUSD_SCRIPT" => Some("/env.yaml".into()),
            "MOCK_NYDUSD_VERSION" => Some("2.4".into()),
            _ => None,
        };
        apply(&mut given, env).unwrap();
        assert_eq!(given.mock_script, Some(PathBuf::from("/given.yaml")));
        assert_eq!(given.mock_nydusd_version, Some(crate::version::NydusdVersion::V2_2));
        let mut bad = cli(&[]);
        let err = apply(&mut bad, |name: &str| (name == "MOCK_NYDUSD_VERSION").then(|| "3.0".into())).unwrap_err();
        assert_eq!(err.to_string(), r#"MOCK_NYDUSD_VERSION="3.0": 2.2 or 2.4"#);
    }
}
