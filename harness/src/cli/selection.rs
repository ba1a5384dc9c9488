//! Which scenarios a command works on: the files and directories given, narrowed by
//! `--filter` (repeatable: a scenario is selected when any filter matches its name, its
//! path or one of its tags; a substring, or the whole text with `--exact`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::exit_code;
use crate::scenario::{self, Scenario};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Selection {
    /// Scenario files or directories (default: scenarios).
    pub paths: Vec<PathBuf>,
    /// Only scenarios whose name, path or a tag contains TEXT; repeat it to select what any
    /// of them matches.
    #[arg(long = "filter", value_name = "TEXT")]
    pub filters: Vec<String>,
    /// `--filter` must equal a whole name, path or tag instead of being part of one.
    #[arg(long, requires = "filters")]
    pub exact: bool,
}

impl Selection {
    /// The paths given, or `scenarios`.
    pub fn paths(&self) -> Vec<PathBuf> {
        if self.paths.is_empty() { vec![PathBuf::from("scenarios")] } else { self.paths.clone() }
    }

    /// The directory paths are shown relative to: the one directory given, if that is all.
    pub fn base(&self) -> PathBuf {
        match self.paths().as_slice() {
            [single] if single.is_dir() => single.clone(),
            _ => PathBuf::new(),
        }
    }

    /// Whether `scenario`, loaded from `file`, is selected.
    pub fn selects(&self, file: &Path, scenario: &Scenario) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        let full = file.display().to_string();
        let shown = file.strip_prefix(self.base()).unwrap_or(file).display().to_string();
        let texts = [full.as_str(), shown.as_str(), scenario.name.as_str()];
        let candidates = texts.into_iter().chain(scenario.tags.iter().map(String::as_str));
        let candidates: Vec<&str> = candidates.collect();
        self.filters
            .iter()
            .any(|filter| candidates.iter().any(|c| if self.exact { c == filter } else { c.contains(filter.as_str()) }))
    }

    /// Loads every scenario under the paths (an invalid one stops everything) and keeps
    /// the selected ones; the error is the exit code, after the reason was printed.
    pub fn load(&self) -> Result<Vec<(PathBuf, Scenario)>, SelectionError> {
        let loaded = self.load_all()?;
        match loaded.broken.into_iter().next() {
            Some(first) => Err(SelectionError::Invalid(first)),
            None => Ok(loaded.selected),
        }
    }

    /// Loads every scenario under the paths and keeps the selected ones, and the files that
    /// are not valid scenarios apart (a broken file never hides the others). Nothing
    /// selected and nothing broken is an error.
    pub fn load_all(&self) -> Result<Loaded, SelectionError> {
        let files = scenario::discover(&self.paths()).map_err(SelectionError::Discover)?;
        let mut loaded = Vec::new();
        let mut broken = Vec::new();
        for file in files {
            match scenario::load(&file) {
                Ok(s) if self.selects(&file, &s) => loaded.push((file, s)),
                Ok(_) => {}
                Err(e) => broken.push(e),
            }
        }
        if loaded.is_empty() && broken.is_empty() {
            let filters = if self.filters.is_empty() {
                String::new()
            } else {
                format!(" by --filter {}{}", self.filters.join(", --filter "), if self.exact { " --exact" } else { "" })
            };
            return Err(SelectionError::NoneSelected { filters });
        }
        Ok(Loaded { selected: loaded, broken })
    }
}

/// What a selection found: the scenarios selected, and the files that are not valid
/// scenarios (each error names its file, line and column).
pub(crate) struct Loaded {
    pub selected: Vec<(PathBuf, Scenario)>,
    pub broken: Vec<scenario::LoadError>,
}

/// Why a selection selects nothing to run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SelectionError {
    /// A path given cannot be read.
    #[error("{0}")]
    Discover(#[source] std::io::Error),
    /// A selected file is not a valid scenario (the error says where).
    #[error("{0}")]
    Invalid(#[source] scenario::LoadError),
    /// The paths and filters select no scenario.
    #[error("no scenario selected{filters}")]
    NoneSelected { filters: String },
}

impl SelectionError {
    /// The command's exit code for it.
    pub fn code(&self) -> u8 {
        match self {
            Self::Discover(_) => exit_code::USAGE,
            Self::Invalid(_) => exit_code::INVALID_SCENARIO,
            Self::NoneSelected { .. } => exit_code::NONE_RAN,
        }
    }

    /// The command's exit code for it.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str, tags: &[&str]) -> Scenario {
        let tags = tags.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
        let text = format!("version: 1\nname: {name}\ntags: [{tags}]\ndaemons: []\nsteps: []\n");
        scenario::load::parse(Path::new("x.yaml"), &text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn selection(filters: &[&str], exact: bool) -> Selection {
        Selection { paths: vec![], filters: filters.iter().map(|f| (*f).to_owned()).collect(), exact }
    }

    #[test]
    fn filters_match_parts_of_names_paths_and_tags_and_any_of_them_selects() {
        let s = scenario("failover-twice", &["recovery", "fuse-failover"]);
        let file = Path::new("scenarios/recovery/failover-twice.yaml");
        assert!(selection(&[], false).selects(file, &s));
        // Before, a tag had to be given whole though the help said "contain".
        assert!(selection(&["failover"], false).selects(file, &s));
        assert!(selection(&["fuse-fail"], false).selects(file, &s));
        assert!(selection(&["nothing", "twice"], false).selects(file, &s));
        assert!(!selection(&["nothing", "else"], false).selects(file, &s));
        assert!(!selection(&["fuse-fail"], true).selects(file, &s));
        assert!(selection(&["fuse-failover"], true).selects(file, &s));
        assert!(selection(&["failover-twice"], true).selects(file, &s));
        assert!(selection(&["scenarios/recovery/failover-twice.yaml"], true).selects(file, &s));
    }
}
