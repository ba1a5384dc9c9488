//! Profiles (`--profile NAME`) from `.config/harness.toml`: named sets of `harness run`
//! options, so that CI, a laptop and a VM run each say what differs once, in a file, and
//! the command line stays short. On the model of nextest's `.config/nextest.toml`: every
//! profile inherits from `default`, and an option given on the command line wins over
//! both.
//!
//! ```toml
//! [profile.default]
//! jobs = 2
//!
//! [profile.ci]
//! retries = 2
//! keep-going = true
//! expr = ["not requires(=root)"]
//! junit = "target/harness/ci/junit.xml"   # relative to the directory holding .config/
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::TargetArg;

/// Where the configuration is looked for, relative to the current directory.
pub(crate) const CONFIG_PATH: &str = ".config/harness.toml";

/// The largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// A profile's options; each one given overrides the `default` profile's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Profile {
    /// Scenarios run at once.
    pub jobs: Option<usize>,
    /// `--retries`.
    pub retries: Option<u64>,
    /// `--max-fail`.
    pub max_fail: Option<u32>,
    /// `--keep-going`.
    pub keep_going: Option<bool>,
    /// `--repeat`.
    pub repeat: Option<u32>,
    /// `--slow-after`, in seconds.
    pub slow_after: Option<f64>,
    /// `--filter`, each.
    pub filter: Option<Vec<String>>,
    /// `--expr`, each.
    pub expr: Option<Vec<String>>,
    /// `--junit`.
    pub junit: Option<PathBuf>,
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--bundles`.
    pub bundles: Option<PathBuf>,
    /// `--target`.
    pub target: Option<Target>,
    /// `--nydusd`.
    pub nydusd: Option<PathBuf>,
    /// `--daemon-arg`, each.
    pub daemon_args: Option<Vec<String>>,
}

/// `--target`, as the file spells it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Target {
    Mock,
    Real,
}

impl From<Target> for TargetArg {
    fn from(target: Target) -> Self {
        match target {
            Target::Mock => TargetArg::Mock,
            Target::Real => TargetArg::Real,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    profile: BTreeMap<String, Profile>,
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProfileError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, column: usize, message: String },
    #[error("no profile `{name}` in {} (profiles: {known})", path.display())]
    Unknown { name: String, path: PathBuf, known: String },
    #[error("--profile {name}: there is no {CONFIG_PATH} here (give --config FILE)")]
    NoConfig { name: String },
}

/// The profile `name` (`None`: `default`) from `config` (`None`: `.config/harness.toml`
/// if it exists), merged over `default`, with relative paths made relative to the
/// directory the `.config` directory is in (the file's own directory for another name).
pub(crate) fn resolve(config: Option<&Path>, name: Option<&str>) -> Result<Profile, ProfileError> {
    let path = match config {
        Some(path) => path.to_owned(),
        None if Path::new(CONFIG_PATH).is_file() => PathBuf::from(CONFIG_PATH),
        None => {
            return match name {
                None | Some("default") => Ok(Profile::default()),
                Some(name) => Err(ProfileError::NoConfig { name: name.to_owned() }),
            };
        }
    };
    let text = mock_nydusd::script::read_bounded(&path, MAX_CONFIG_BYTES)
        .map_err(|source| ProfileError::Read { path: path.clone(), source })?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| {
        let (line, column) = e.span().map(|span| line_column(&text, span.start)).unwrap_or((0, 0));
        ProfileError::Invalid { path: path.clone(), line, column, message: e.message().to_owned() }
    })?;
    let name = name.unwrap_or("default");
    let default = file.profile.get("default").cloned().unwrap_or_default();
    let chosen = match file.profile.get(name) {
        Some(profile) => profile.clone(),
        None if name == "default" => Profile::default(),
        None => {
            let mut known: Vec<&str> = file.profile.keys().map(String::as_str).collect();
            if !known.contains(&"default") {
                known.insert(0, "default");
            }
            return Err(ProfileError::Unknown { name: name.to_owned(), path, known: known.join(", ") });
        }
    };
    let mut merged = chosen.over(default);
    let base = base_dir(&path);
    for file in [&mut merged.junit, &mut merged.json, &mut merged.bundles] {
        if let Some(relative) = file.as_mut().filter(|p| p.is_relative()) {
            *relative = base.join(&*relative);
        }
    }
    Ok(merged)
}

impl Profile {
    /// `self`, with what it leaves unsaid taken from `under`.
    fn over(self, under: Profile) -> Profile {
        Profile {
            jobs: self.jobs.or(under.jobs),
            retries: self.retries.or(under.retries),
            max_fail: self.max_fail.or(under.max_fail),
            keep_going: self.keep_going.or(under.keep_going),
            repeat: self.repeat.or(under.repeat),
            slow_after: self.slow_after.or(under.slow_after),
            filter: self.filter.or(under.filter),
            expr: self.expr.or(under.expr),
            junit: self.junit.or(under.junit),
            json: self.json.or(under.json),
            bundles: self.bundles.or(under.bundles),
            target: self.target.or(under.target),
            nydusd: self.nydusd.or(under.nydusd),
            daemon_args: self.daemon_args.or(under.daemon_args),
        }
    }
}

/// The directory a configuration's relative paths start from: the one holding `.config/`
/// for `.config/harness.toml`, else the file's own.
fn base_dir(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match dir.file_name() {
        Some(name) if name == ".config" => dir.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")),
        _ => dir,
    }
    .to_owned()
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".config")).unwrap();
        let path = dir.path().join(CONFIG_PATH);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_profile_inherits_from_default_and_its_paths_start_beside_dot_config() {
        let (dir, path) = write(
            "[profile.default]\njobs = 3\nretries = 1\n\n[profile.ci]\nretries = 2\nkeep-going = true\nexpr = [\"not requires(=root)\"]\njunit = \"target/ci/junit.xml\"\n",
        );
        let ci = resolve(Some(&path), Some("ci")).unwrap();
        assert_eq!((ci.jobs, ci.retries, ci.keep_going), (Some(3), Some(2), Some(true)));
        assert_eq!(ci.expr, Some(vec!["not requires(=root)".to_owned()]));
        assert_eq!(ci.junit, Some(dir.path().join("target/ci/junit.xml")));
        let default = resolve(Some(&path), None).unwrap();
        assert_eq!((default.jobs, default.retries, default.keep_going), (Some(3), Some(1), None));
    }

    #[test]
    fn mistakes_are_named_with_their_place() {
        let (_dir, path) = write("[profile.ci]\nretries = 2\nretires = 3\n");
        let e = resolve(Some(&path), Some("ci")).unwrap_err().to_string();
        assert!(e.ends_with(":3:1: unknown field `retires`, expected one of `jobs`, `retries`, `max-fail`, `keep-going`, `repeat`, `slow-after`, `filter`, `expr`, `junit`, `json`, `bundles`, `target`, `nydusd`, `daemon-args`"), "{e}");
        let (_dir, path) = write("[profile.ci]\nretries = \"two\"\n");
        let e = resolve(Some(&path), Some("ci")).unwrap_err().to_string();
        assert!(e.contains(":2:11: invalid type: string \"two\", expected u64"), "{e}");
        let (_dir, path) = write("[profile.ci]\n");
        let e = resolve(Some(&path), Some("laptop")).unwrap_err().to_string();
        assert!(e.ends_with(&format!("no profile `laptop` in {} (profiles: default, ci)", path.display())), "{e}");
    }
}
