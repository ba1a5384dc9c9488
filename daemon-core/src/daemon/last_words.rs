//! What a daemon's process printed before it failed: the tail of its output (stdout and
//! stderr, where nydusd prints an error it hits before its logger runs, such as `Error:
//! Os { code: 24, … Too many open files }`) and of its own log file, from where each
//! stood when the process was spawned, so an earlier process's lines are not quoted.
//! A start failure quotes them: before, they sat in a log on the runner's disk and the
//! report said only "not ready after 5s; the process exited first (exit status: 1)".

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How much of each file's end is read.
const TAIL_BYTES: u64 = 4096;
/// How many lines are quoted at most.
const TAIL_LINES: usize = 6;

/// Where a process's output and log files stood at its spawn.
#[derive(Debug, Clone, Default)]
pub(super) struct OutputMarks {
    files: Vec<(PathBuf, u64)>,
}

impl OutputMarks {
    /// Marks the current end of each file that exists (a missing one starts at 0).
    pub(super) fn at_spawn(files: impl IntoIterator<Item = PathBuf>) -> Self {
        let files = files.into_iter().map(|path| {
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            (path, len)
        });
        Self { files: files.collect() }
    }

    /// The last lines written since the marks, oldest first, one per line; `None` when
    /// nothing was written.
    pub(super) fn last_words(&self) -> Option<String> {
        let lines: Vec<String> = self.files.iter().flat_map(|(path, from)| tail_since(path, *from)).collect();
        let lines = &lines[lines.len().saturating_sub(TAIL_LINES)..];
        (!lines.is_empty()).then(|| lines.join(" | "))
    }
}

/// The non-empty lines of at most the last [`TAIL_BYTES`] written to `path` after offset
/// `from` (a partial first line dropped), lossily decoded; none on any error.
fn tail_since(path: &Path, from: u64) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let Ok(len) = file.metadata().map(|m| m.len()) else { return Vec::new() };
    // A file truncated since the mark is read from its start.
    let from = if len < from { 0 } else { from };
    let start = from.max(len.saturating_sub(TAIL_BYTES));
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.take(TAIL_BYTES).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > from && !lines.is_empty() {
        lines.remove(0);
    }
    lines.into_iter().map(str::trim_end).filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_what_was_written_after_the_mark_is_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let (out, log) = (dir.path().join("out"), dir.path().join("log"));
        std::fs::write(&out, "an earlier process said this\n").unwrap();
        let marks = OutputMarks::at_spawn([out.clone(), log.clone()]);
        assert_eq!(marks.last_words(), None, "nothing new yet");
        std::fs::OpenOptions::new().append(true).open(&out).unwrap().write_all(b"Error: Os { code: 24 }\n\n").unwrap();
        std::fs::write(&log, "INFO starting\nERROR path must be shorter than SUN_LEN\n").unwrap();
        let words = marks.last_words().unwrap();
        assert_eq!(words, "Error: Os { code: 24 } | INFO starting | ERROR path must be shorter than SUN_LEN");
    }

    #[test]
    fn a_flood_is_read_from_its_end_only() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let marks = OutputMarks::at_spawn([out.clone()]);
        let flood: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        let mut bytes = flood.into_bytes();
        bytes.extend_from_slice(b"\xfflast\n");
        std::fs::write(&out, bytes).unwrap();
        let words = marks.last_words().unwrap();
        assert!(words.ends_with("line 9999 | \u{fffd}last"), "a byte that is not UTF-8 is replaced: {words}");
        assert_eq!(words.split(" | ").count(), TAIL_LINES);
    }
}
