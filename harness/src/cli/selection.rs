//! Which scenarios a command works on: the files and directories given, narrowed by
//! `--filter` (repeatable: a scenario is selected when any filter matches its name, its
//! path or one of its tags; a substring, or the whole text with `--exact`) and by
//! `--expr` (filter expressions, [`super::filterset`]), then cut to one shard by
//! `--partition` ([`super::partition`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::exit_code;
use super::filterset;
use super::partition::Partition;
use crate::scenario::{self, Scenario, spelled};

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
    /// Only scenarios the filter expression selects; repeat it to select what any of them
    /// selects (with `--filter` too, a scenario must pass both). Functions `name()`,
    /// `path()`, `tag()`, `target()`, `requires()` take `text` (part of it), `=text` (all
    /// of it) or `/regex/`; combine with `and`/`&`, `or`/`|`, `not`/`!`, `-` and
    /// parentheses. Example: `-E 'not requires(root) and tag(failover)'`.
    #[arg(long = "expr", short = 'E', value_name = "EXPR", value_parser = parse_expr)]
    pub exprs: Vec<filterset::Expr>,
    /// Only this shard of the selection: `count:K/N` deals it out evenly in order,
    /// `hash:K/N` by a hash of each path (stable as scenarios come and go). The N shards
    /// of a selection together hold each scenario once.
    #[arg(long, value_name = "hash:K/N|count:K/N")]
    pub partition: Option<Partition>,
}

fn parse_expr(text: &str) -> Result<filterset::Expr, String> {
    filterset::parse(text).map_err(|e| e.to_string())
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

    /// Whether `scenario`, loaded from `file`, is selected: by a `--filter` (if any are
    /// given) and by an `--expr` (if any are given).
    pub fn selects(&self, file: &Path, scenario: &Scenario) -> bool {
        self.filtered(file, scenario) && self.by_expression(file, scenario)
    }

    fn by_expression(&self, file: &Path, scenario: &Scenario) -> bool {
        if self.exprs.is_empty() {
            return true;
        }
        let (full, shown) = (file.display().to_string(), self.shown(file));
        let facts = filterset::Facts {
            name: &scenario.name,
            paths: [&full, &shown],
            tags: &scenario.tags,
            targets: scenario.targets.iter().map(spelled).collect(),
            requires: scenario.requires.iter().map(spelled).collect(),
        };
        self.exprs.iter().any(|e| e.selects(&facts))
    }

    /// `file` as shown: relative to the one directory given.
    fn shown(&self, file: &Path) -> String {
        file.strip_prefix(self.base()).unwrap_or(file).display().to_string()
    }

    fn filtered(&self, file: &Path, scenario: &Scenario) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        let full = file.display().to_string();
        let shown = self.shown(file);
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
        // Broken files stay in the shard their path falls in: each is reported by one
        // shard of a CI matrix, not by all of them.
        let mut found: Vec<(PathBuf, Result<Scenario, scenario::LoadError>)> = Vec::new();
        for file in files {
            match scenario::load(&file) {
                Ok(s) if self.selects(&file, &s) => found.push((file, Ok(s))),
                Ok(_) => {}
                Err(e) => found.push((file, Err(e))),
            }
        }
        if let Some(partition) = &self.partition {
            found = partition.keep(found, |(file, _)| self.shown(file));
        }
        let mut loaded = Vec::new();
        let mut broken = Vec::new();
        for (file, result) in found {
            match result {
                Ok(s) => loaded.push((file, s)),
                Err(e) => broken.push(e),
            }
        }
        if loaded.is_empty() && broken.is_empty() {
            let mut filters = String::new();
            if !self.filters.is_empty() {
                let exact = if self.exact { " --exact" } else { "" };
                filters = format!(" by --filter {}{exact}", self.filters.join(", --filter "));
            }
            if !self.exprs.is_empty() {
                filters.push_str(if filters.is_empty() { " by --expr" } else { " and --expr" });
            }
            if let Some(partition) = &self.partition {
                filters.push_str(&format!(" in --partition {partition}"));
            }
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
        Selection {
            paths: vec![],
            filters: filters.iter().map(|f| (*f).to_owned()).collect(),
            exact,
            exprs: Vec::new(),
            partition: None,
        }
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
