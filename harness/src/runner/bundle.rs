//! A failing run's repro bundle: the scenario, every journal and log, the scripts, the
//! store and the merged timeline, in a directory of its own.

use std::path::{Path, PathBuf};

use super::Run;

impl Run<'_> {
    /// Copies what a reader needs to reproduce a failure: the scenario, every journal and
    /// log, the scripts, and the store.
    pub(super) fn bundle(&self, dir: &Path, scenario: &Path) -> std::io::Result<PathBuf> {
        let name: String =
            self.scenario.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        // One bundle per failing run, never shared: repeats of one scenario and scenarios
        // whose names sanitise alike each get their own.
        std::fs::create_dir_all(dir)?;
        let target = loop {
            let n = BUNDLES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let target = dir.join(format!("{name}-{}-run{n}", std::process::id()));
            match std::fs::create_dir(&target) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                created => break created.map(|()| target)?,
            }
        };
        std::fs::copy(scenario, target.join(scenario.file_name().unwrap_or_default()))?;
        copy_tree(&self.root.layout.log_dir(), &target.join("logs"))?;
        copy_tree(&self.root.path().join("scripts"), &target.join("scripts"))?;
        let timeline: Vec<String> = self.timeline().iter().map(super::timeline::TimelineEntry::line).collect();
        std::fs::write(target.join("timeline.txt"), timeline.join("\n") + "\n")?;
        for db in ["nydus.db", "nydus.db-wal"] {
            let _ = std::fs::copy(self.root.path().join(db), target.join(db));
        }
        Ok(target)
    }
}

/// How many repro bundles this process has written.
static BUNDLES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if !from.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()))?;
        } else if path.is_file() {
            std::fs::copy(&path, to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
