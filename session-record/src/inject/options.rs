//! The injector's own flags, taken out of the command line the manager built, so that
//! nydusd gets exactly the rest. They are the mock's names where the meaning is the mock's
//! (`--mock-script`, `--mock-journal`, `--mock-process`, `--mock-control`), so one set of
//! per-daemon flags serves both targets.

use std::ffi::OsString;
use std::path::PathBuf;

use super::InjectError;

/// The flag whose presence makes the harness binary, started as `nydusd`, the injector.
pub const NYDUSD_FLAG: &str = "--inject-nydusd";

/// What the injector was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectOptions {
    /// The real nydusd.
    pub nydusd: PathBuf,
    /// A private directory for the moved sockets (made 0700 when missing); required when
    /// the command line names an API socket to stand on.
    pub dir: Option<PathBuf>,
    /// The script (the mock's format), when given.
    pub script: Option<PathBuf>,
    /// The journal (the mock's format, `source: inject`), when given.
    pub journal: Option<PathBuf>,
    /// Which process of its daemon this is, from 1.
    pub process: u32,
    /// The control socket (the mock's `/script`, `/journal`, `/state`), when given.
    pub control: Option<PathBuf>,
    /// The command line as the manager built it, the injector's flags included: what the
    /// journal's `start` entry names (the harness finds a daemon's processes by it).
    pub argv: Vec<OsString>,
    /// nydusd's own arguments (without the program).
    pub daemon_args: Vec<OsString>,
}

/// Whether `argv` asks for the injector.
pub fn requested(argv: &[OsString]) -> bool {
    argv.iter().skip(1).any(|a| a == NYDUSD_FLAG || a.to_string_lossy().starts_with(&format!("{NYDUSD_FLAG}=")))
}

impl InjectOptions {
    /// Splits `argv` (program first) into the injector's flags and nydusd's arguments.
    pub fn parse(argv: &[OsString]) -> Result<Self, InjectError> {
        let mut nydusd = None;
        let mut dir = None;
        let mut script = None;
        let mut journal = None;
        let mut process = None;
        let mut control = None;
        let mut daemon_args = Vec::new();
        let mut args = argv.iter().skip(1);
        while let Some(arg) = args.next() {
            let text = arg.to_string_lossy();
            let (name, inline) = match text.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(OsString::from(value))),
                _ => (text.clone().into_owned(), None),
            };
            let slot = match name.as_str() {
                NYDUSD_FLAG => &mut nydusd,
                "--inject-dir" => &mut dir,
                "--mock-script" => &mut script,
                "--mock-journal" => &mut journal,
                "--mock-process" => &mut process,
                "--mock-control" => &mut control,
                _ => {
                    daemon_args.push(arg.clone());
                    continue;
                }
            };
            let value = match inline {
                Some(value) => value,
                None => args.next().cloned().ok_or_else(|| InjectError::Usage(format!("{name} needs a value")))?,
            };
            *slot = Some(value);
        }
        let nydusd = nydusd.ok_or_else(|| InjectError::Usage(format!("{NYDUSD_FLAG} names no nydusd")))?;
        let process = match process {
            None => 1,
            Some(value) => value
                .to_str()
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| InjectError::Usage(format!("--mock-process {value:?}: a count from 1")))?,
        };
        Ok(Self {
            nydusd: nydusd.into(),
            dir: dir.map(Into::into),
            script: script.map(Into::into),
            journal: journal.map(Into::into),
            process,
            control: control.map(Into::into),
            argv: argv.to_vec(),
            daemon_args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(Into::into).collect()
    }

    #[test]
    fn the_injectors_flags_are_taken_out_in_both_spellings_and_the_rest_kept_in_order() {
        let line = argv(&[
            "/r/bin/nydusd",
            "--apisock",
            "/r/api.sock",
            "--inject-nydusd=/usr/bin/nydusd",
            "--id",
            "d1",
            "--inject-dir",
            "/r/inject",
            "--mock-process",
            "2",
            "--mock-script=/r/s.json",
        ]);
        assert!(requested(&line));
        let options = InjectOptions::parse(&line).unwrap();
        assert_eq!(options.nydusd, PathBuf::from("/usr/bin/nydusd"));
        assert_eq!(options.dir, Some(PathBuf::from("/r/inject")));
        assert_eq!(options.process, 2);
        assert_eq!(options.script, Some(PathBuf::from("/r/s.json")));
        assert_eq!(options.daemon_args, argv(&["--apisock", "/r/api.sock", "--id", "d1"]));
    }

    #[test]
    fn a_missing_value_or_a_process_of_zero_is_a_usage_error() {
        assert!(!requested(&argv(&["nydusd", "--apisock", "/a"])));
        let error = InjectOptions::parse(&argv(&["n", "--inject-nydusd"])).unwrap_err();
        assert_eq!(error.to_string(), "usage: --inject-nydusd needs a value");
        let error =
            InjectOptions::parse(&argv(&["n", "--inject-nydusd", "/n", "--inject-dir", "/d", "--mock-process", "0"]))
                .unwrap_err();
        assert_eq!(error.to_string(), "usage: --mock-process \"0\": a count from 1");
    }
}
