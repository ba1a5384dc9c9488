//! Steps that do what a container would: sleep, read and list files through a mount,
//! and run a reader process across faults.

use std::time::Duration;

use super::sorted;
use super::{Explained, StepKind};
use crate::runner::Run;
use crate::runner::outcome::StepError;
use crate::scenario::model::*;

/// Pause.
pub(crate) struct Sleep;

impl StepKind for Sleep {
    type Args = SleepStep;
    const KEYWORD: &'static str = "sleep";

    fn explain(s: &SleepStep) -> Explained {
        Explained::new("harness".into(), "harness".into(), format!("sleep {} ms", s.ms))
    }

    async fn run(_: &mut Run<'_>, s: &SleepStep) -> Result<(), StepError> {
        tokio::time::sleep(Duration::from_millis(s.ms)).await;
        Ok(())
    }
}

/// A file's content (through a mountpoint, for example).
pub(crate) struct ReadFile;

impl StepKind for ReadFile {
    type Args = ReadFileStep;
    const KEYWORD: &'static str = "read_file";

    fn explain(s: &ReadFileStep) -> Explained {
        Explained::new("harness".into(), "harness".into(), format!("read {} (contains {:?})", s.path.value, s.contains))
    }

    async fn run(run: &mut Run<'_>, s: &ReadFileStep) -> Result<(), StepError> {
        let path = run.path_in_root(&s.path.value);
        let text = tokio::task::spawn_blocking({
            let path = path.clone();
            move || std::fs::read_to_string(path)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            StepError::mismatch(
                format!("cannot read {}", path.display()),
                format!("text containing {:?}", s.contains),
                e.to_string(),
            )
        })?;
        if text.contains(&s.contains) {
            Ok(())
        } else {
            Err(StepError::mismatch(
                format!("content of {}", path.display()),
                format!("text containing {:?}", s.contains),
                text,
            ))
        }
    }
}

/// A directory's entries.
pub(crate) struct ListDir;

impl StepKind for ListDir {
    type Args = ListDirStep;
    const KEYWORD: &'static str = "list_dir";

    fn explain(s: &ListDirStep) -> Explained {
        Explained::new("harness".into(), "harness".into(), format!("list {} (has {:?})", s.path.value, s.contains))
    }

    async fn run(run: &mut Run<'_>, s: &ListDirStep) -> Result<(), StepError> {
        let path = run.path_in_root(&s.path.value);
        let names = tokio::task::spawn_blocking({
            let path = path.clone();
            move || -> std::io::Result<Vec<String>> {
                std::fs::read_dir(path)?.map(|e| Ok(e?.file_name().to_string_lossy().into_owned())).collect()
            }
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| StepError::new(format!("cannot list {}: {e}", path.display())))?;
        let missing: Vec<&String> = s.contains.iter().filter(|n| !names.contains(n)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StepError::mismatch(
                format!("entries of {}", path.display()),
                format!("{:?}", s.contains),
                format!("{:?}", sorted(names)),
            ))
        }
    }
}

/// Start a process that reads a file over and over (a workload during faults).
pub(crate) struct StartReader;

impl StepKind for StartReader {
    type Args = StartReaderStep;
    const KEYWORD: &'static str = "start_reader";

    fn explain(s: &StartReaderStep) -> Explained {
        Explained::new("harness".into(), "harness".into(), format!("start reader {} on {}", s.name, s.path.value))
    }

    async fn run(run: &mut Run<'_>, s: &StartReaderStep) -> Result<(), StepError> {
        let path = run.path_in_root(&s.path.value);
        let stop = run.root.root().join(format!("reader-{}.stop", s.name));
        // The harness binary is the reader (on the mock target it is also `nydusd`).
        let exe = run.target().reader_program(&run.config.nydusd).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(exe)
            .env(crate::READER_ROLE, crate::reader::spec(&path, s.size, &stop))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start reader {}: {e}", s.name))?;
        run.readers.insert(s.name.clone(), (child, stop));
        Ok(())
    }
}

/// Stop a reader and check what it saw.
pub(crate) struct StopReader;

impl StepKind for StopReader {
    type Args = StopReaderStep;
    const KEYWORD: &'static str = "stop_reader";

    fn explain(s: &StopReaderStep) -> Explained {
        Explained::new(
            "harness".into(),
            "harness".into(),
            format!("stop reader {} (≤ {} failures, ≥ {} reads)", s.name, s.max_failures, s.min_reads),
        )
    }

    async fn run(run: &mut Run<'_>, s: &StopReaderStep) -> Result<(), StepError> {
        let (child, stop) =
            run.readers.remove(&s.name).ok_or_else(|| format!("no reader named {:?} is running", s.name))?;
        std::fs::write(&stop, b"").map_err(|e| e.to_string())?;
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let stats: crate::reader::ReaderStats = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("reader {} reported nothing readable: {e}", s.name))?;
        run.journal.record("reader", serde_json::to_value(&stats).unwrap_or_default());
        run.reader_stats.push(stats.clone());
        let stall_ms = stats.longest_stall_us / 1000;
        let ok = stats.failures <= s.max_failures
            && stats.reads >= s.min_reads
            && s.max_stall_ms.is_none_or(|m| stall_ms <= m);
        if ok {
            Ok(())
        } else {
            Err(StepError::mismatch(
                format!("reader {}", s.name),
                format!(
                    "≤ {} failures, ≥ {} reads{}",
                    s.max_failures,
                    s.min_reads,
                    s.max_stall_ms.map(|m| format!(", stall ≤ {m} ms")).unwrap_or_default()
                ),
                format!(
                    "{} failures, {} reads, longest stall {stall_ms} ms{}",
                    stats.failures,
                    stats.reads,
                    stats.first_error.map(|e| format!(" (first error: {e})")).unwrap_or_default()
                ),
            ))
        }
    }
}
