//! Steps that do what a container would: sleep, read and list files through a mount,
//! and run a reader process across faults.

use std::time::Duration;

use super::sorted;
use super::{Explained, StepKind};
use crate::runner::Run;
use crate::runner::outcome::StepError;
use crate::scenario::steps::*;

/// The `sleep` step (its doc: the format's `Step::Sleep`).
pub(crate) struct Sleep;

impl StepKind for Sleep {
    type Args = SleepStep;

    fn explain(s: &SleepStep) -> Explained {
        Explained::new("harness".into(), "harness".into(), format!("sleep {} ms", s.ms))
    }

    async fn run(_: &Run<'_>, s: &SleepStep) -> Result<(), StepError> {
        tokio::time::sleep(Duration::from_millis(s.ms)).await;
        Ok(())
    }
}

/// The `read_file` step (its doc: the format's `Step::ReadFile`).
pub(crate) struct ReadFile;

impl StepKind for ReadFile {
    type Args = ReadFileStep;

    fn explain(s: &ReadFileStep) -> Explained {
        Explained::new("harness".into(), "harness".into(), format!("read {} (contains {:?})", s.path.value, s.contains))
    }

    async fn run(run: &Run<'_>, s: &ReadFileStep) -> Result<(), StepError> {
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

/// The `list_dir` step (its doc: the format's `Step::ListDir`).
pub(crate) struct ListDir;

impl StepKind for ListDir {
    type Args = ListDirStep;

    fn explain(s: &ListDirStep) -> Explained {
        let absent = if s.absent.is_empty() { String::new() } else { format!(", lacks {:?}", s.absent) };
        Explained::new(
            "harness".into(),
            "harness".into(),
            format!("list {} (has {:?}{absent})", s.path.value, s.contains),
        )
    }

    async fn run(run: &Run<'_>, s: &ListDirStep) -> Result<(), StepError> {
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
        let present: Vec<&String> = s.absent.iter().filter(|n| names.contains(n)).collect();
        if missing.is_empty() && present.is_empty() {
            return Ok(());
        }
        let mut expected = Vec::new();
        if !s.contains.is_empty() {
            expected.push(format!("contains: {:?}", s.contains));
        }
        if !s.absent.is_empty() {
            expected.push(format!("absent: {:?}", s.absent));
        }
        let wrong = if present.is_empty() { format!("missing {missing:?}") } else { format!("present {present:?}") };
        Err(StepError::mismatch(
            format!("entries of {}: {wrong}", s.path.value),
            expected.join(", "),
            format!("{:?}", sorted(names)),
        ))
    }
}

/// What under a scenario's root is the harness's, not the snapshotter's: its ledger and
/// owner (the sweep after a SIGKILLed run reads them), the daemons' binary, the mock
/// scripts and control sockets, and its journals. A step that damaged them would blind
/// the clean-up or the report, so `remove_file` and `corrupt_file` refuse them.
const HARNESS_OWNED: &[&str] = &[
    crate::containment::OWNER_FILE,
    crate::containment::LEDGER_FILE,
    "bin",
    "scripts",
    "control",
    "logs/harness.jsonl",
    "logs/mock.jsonl",
    "logs/client.jsonl",
];

/// `path` (relative to the root) for a step that changes it; refused when it is (or is
/// under) one of the harness's own files.
fn damageable(run: &Run<'_>, path: &str) -> Result<std::path::PathBuf, StepError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    let owned = HARNESS_OWNED.iter().find(|owned| {
        let owned: Vec<&str> = owned.split('/').collect();
        parts.len() >= owned.len() && parts[..owned.len()] == owned[..]
    });
    match owned {
        Some(owned) => Err(StepError::new(format!(
            "{path} is the harness's own ({owned}), not the snapshotter's: a scenario may not change it"
        ))),
        None => Ok(run.path_in_root(path)),
    }
}

/// The `corrupt_file` step (its doc: the format's `Step::CorruptFile`).
pub(crate) struct CorruptFile;

impl StepKind for CorruptFile {
    type Args = CorruptFileStep;

    fn explain(s: &CorruptFileStep) -> Explained {
        let to = crate::scenario::spelled(&s.to);
        Explained::new("harness".into(), "harness".into(), format!("corrupt {} ({to})", s.path.value))
    }

    async fn run(run: &Run<'_>, s: &CorruptFileStep) -> Result<(), StepError> {
        let path = damageable(run, &s.path.value)?;
        let (damaging, to) = (path.clone(), s.to);
        let damaged = tokio::task::spawn_blocking(move || corrupt(&damaging, to)).await.map_err(|e| e.to_string())?;
        damaged.map_err(|e| StepError::failed(crate::runner::error::RunError::io("corrupt", &path)(e)))
    }
}

/// Rewrites `path` in place as `to` says. The file is opened without following a link
/// (a link there could lead out of the root) and must be a regular file.
fn corrupt(path: &std::path::Path, to: Corruption) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().read(true).write(true).custom_flags(nix::libc::O_NOFOLLOW).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    match to {
        Corruption::Torn => file.set_len(meta.len() / 2),
        Corruption::Empty => file.set_len(0),
        Corruption::Garbage => {
            file.rewind()?;
            // 0xff never starts UTF-8 and `\0` ends no JSON value: no parser takes it.
            // Written a chunk at a time: the file may be an image of any size.
            let chunk: Vec<u8> = (0..64 * 1024).map(|i| if i % 2 == 0 { 0xff } else { 0 }).collect();
            let mut left = meta.len();
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                file.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            file.sync_all()
        }
    }
}

/// The `remove_file` step (its doc: the format's `Step::RemoveFile`).
pub(crate) struct RemoveFile;

impl StepKind for RemoveFile {
    type Args = RemoveFileStep;

    fn explain(s: &RemoveFileStep) -> Explained {
        Explained::new("harness".into(), "harness".into(), format!("remove {}", s.path.value))
    }

    async fn run(run: &Run<'_>, s: &RemoveFileStep) -> Result<(), StepError> {
        let path = damageable(run, &s.path.value)?;
        // A link is removed, never what it points at. Off the async workers, as any file
        // operation of a step.
        let removing = path.clone();
        let removed =
            tokio::task::spawn_blocking(move || std::fs::remove_file(removing)).await.map_err(|e| e.to_string())?;
        removed.map_err(|e| StepError::failed(crate::runner::error::RunError::io("remove", &path)(e)))
    }
}

/// The `mount_erofs_image` step (its doc: the format's `Step::MountErofsImage`).
pub(crate) struct MountErofsImage;

impl StepKind for MountErofsImage {
    type Args = MountErofsImageStep;

    fn explain(s: &MountErofsImageStep) -> Explained {
        Explained::new(
            "harness".into(),
            "kernel".into(),
            format!("mount an erofs image of {} files at {}", s.tree.0.len(), s.path.value),
        )
    }

    async fn run(run: &Run<'_>, s: &MountErofsImageStep) -> Result<(), StepError> {
        let mountpoint = run.path_in_root(&s.path.value);
        let name: String = s.path.value.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let source = run.root.path().join("erofs").join(&name);
        let image = run.root.path().join("erofs").join(format!("{name}.erofs"));
        crate::runner::image::build_erofs(&s.tree, &source, &image).await?;
        std::fs::create_dir_all(&mountpoint).map_err(|e| format!("cannot create {}: {e}", mountpoint.display()))?;
        let backing = tokio::task::spawn_blocking({
            let (image, mountpoint) = (image.clone(), mountpoint.clone());
            move || daemon_core::mount::mount_erofs_image(&image, &mountpoint)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| StepError::new(e.to_string()))?;
        let kernel = host_facts::kernel::release();
        run.state().notes.push(match backing {
            daemon_core::mount::ImageBacking::File => {
                format!("erofs image at {}: mounted from its file (kernel {kernel})", s.path.value)
            }
            daemon_core::mount::ImageBacking::Loop(device) => format!(
                "erofs image at {}: mounted through {} (kernel {kernel} refused the image file itself: ENOTBLK)",
                s.path.value,
                device.display()
            ),
        });
        Ok(())
    }
}

/// The `start_reader` step (its doc: the format's `Step::StartReader`).
pub(crate) struct StartReader;

impl StepKind for StartReader {
    type Args = StartReaderStep;

    fn explain(s: &StartReaderStep) -> Explained {
        Explained::new("harness".into(), "harness".into(), format!("start reader {} on {}", s.name, s.path.value))
    }

    async fn run(run: &Run<'_>, s: &StartReaderStep) -> Result<(), StepError> {
        let path = run.path_in_root(&s.path.value);
        let stop = run.root.path().join(format!("reader-{}.stop", s.name));
        // The harness binary is the reader (on the mock target it is also `nydusd`).
        let exe = run.target().reader_program(&run.config.nydusd).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(exe)
            .env(crate::READER_ROLE, crate::reader::spec(&path, s.size, &stop))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start reader {}: {e}", s.name))?;
        run.root.ledger.started(child.id());
        run.state().readers.insert(s.name.clone(), (child, stop));
        Ok(())
    }
}

/// The `stop_reader` step (its doc: the format's `Step::StopReader`).
pub(crate) struct StopReader;

impl StepKind for StopReader {
    type Args = StopReaderStep;

    fn explain(s: &StopReaderStep) -> Explained {
        let base = Promise::of(s);
        let text = match &s.without_resend {
            None => format!("stop reader {} ({base})", s.name),
            Some(w) => format!(
                "stop reader {} ({base}; without resend after {}'s failover: {})",
                s.name,
                w.daemon.value,
                Promise::without_resend(w)
            ),
        };
        Explained::new("harness".into(), "harness".into(), text)
    }

    async fn run(run: &Run<'_>, s: &StopReaderStep) -> Result<(), StepError> {
        let (mut child, stop) =
            run.state().readers.remove(&s.name).ok_or_else(|| format!("no reader named {:?} is running", s.name))?;
        // The stop file tells the reader how long its read in progress may still take.
        std::fs::write(&stop, s.stuck_after_ms.to_string()).map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or_else(|| StepError::new("the reader's output is not piped"))?;
        // It reports within that time and its own polling; one that does not (it crashed
        // or hangs outside a read) is a failure of its own, never a wait without end.
        let bound = Duration::from_millis(s.stuck_after_ms) + Duration::from_secs(5);
        let line = tokio::time::timeout(
            bound,
            tokio::task::spawn_blocking(move || {
                use std::io::BufRead;
                let mut line = String::new();
                std::io::BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }),
        )
        .await;
        let line = match line {
            Ok(Ok(Ok(line))) => line,
            Ok(Ok(Err(e))) => return Err(format!("reader {} could not be read: {e}", s.name).into()),
            Ok(Err(e)) => return Err(e.to_string().into()),
            Err(_) => {
                let _ = child.kill();
                run.state().stuck_readers.push(child);
                return Err(
                    format!("reader {} did not report within {} ms of its stop", s.name, bound.as_millis()).into()
                );
            }
        };
        let stats: crate::reader::ReaderStats = serde_json::from_str(&line)
            .map_err(|e| format!("reader {} reported nothing readable ({e}): {line:?}", s.name))?;
        // A reader whose read is stuck cannot end; teardown reaps it once the connection is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if matches!(child.try_wait(), Ok(None)) {
            run.state().stuck_readers.push(child);
        }
        run.log.journal.record("reader", serde_json::to_value(&stats).unwrap_or_default());
        run.state().reader_stats.push(stats.clone());
        let promise = match &s.without_resend {
            None => Promise::of(s),
            Some(w) => {
                let case = run.failover_case(&w.daemon.value).await;
                let promise = if case.resent { Promise::of(s) } else { Promise::without_resend(w) };
                run.state().notes.push(format!(
                    "reader {}: {}; held to: {promise}; saw: {}",
                    s.name,
                    case.description,
                    seen(&stats)
                ));
                promise
            }
        };
        promise.check(&s.name, &stats)
    }
}

/// What a reader is held to.
struct Promise {
    max_failures: u64,
    min_failures: u64,
    min_reads: u64,
    max_stall_ms: Option<u64>,
    stuck: StuckReads,
}

impl Promise {
    fn of(s: &StopReaderStep) -> Self {
        Self {
            max_failures: s.max_failures,
            min_failures: s.min_failures,
            min_reads: s.min_reads,
            max_stall_ms: s.max_stall_ms,
            stuck: s.stuck,
        }
    }

    fn without_resend(w: &WithoutResend) -> Self {
        Self {
            max_failures: w.max_failures,
            min_failures: 0,
            min_reads: w.min_reads,
            max_stall_ms: w.max_stall_ms,
            stuck: w.stuck,
        }
    }

    fn check(&self, name: &str, stats: &crate::reader::ReaderStats) -> Result<(), StepError> {
        let stall_ms = stats.longest_stall_us / 1000;
        let stuck_ok = match self.stuck {
            StuckReads::Forbidden => stats.stuck.is_none(),
            StuckReads::Allowed => true,
            StuckReads::Expected => stats.stuck.is_some(),
        };
        // A stuck read's stall is how long it waited; under `allowed` or `expected` the
        // stall bound is for the reads that returned.
        let stall_ok = self.max_stall_ms.is_none_or(|m| stall_ms <= m) || stats.stuck.is_some() && stuck_ok;
        let failures_ok = (self.min_failures..=self.max_failures).contains(&stats.failures);
        if failures_ok && stats.reads >= self.min_reads && stall_ok && stuck_ok {
            Ok(())
        } else {
            Err(StepError::mismatch(format!("reader {name}"), self.to_string(), seen(stats)))
        }
    }
}

impl std::fmt::Display for Promise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min_failures > 0 {
            write!(f, "≥ {} failures, ", self.min_failures)?;
        }
        write!(f, "≤ {} failures, ≥ {} reads", self.max_failures, self.min_reads)?;
        if let Some(m) = self.max_stall_ms {
            write!(f, ", stall ≤ {m} ms")?;
        }
        match self.stuck {
            StuckReads::Forbidden => write!(f, ", no read stuck"),
            StuckReads::Allowed => write!(f, ", a read may be stuck"),
            StuckReads::Expected => write!(f, ", a read stuck in the kernel"),
        }
    }
}

/// What a reader saw, as reports show it.
fn seen(stats: &crate::reader::ReaderStats) -> String {
    let mut out = format!(
        "{} failures, {} reads, longest stall {} ms",
        stats.failures,
        stats.reads,
        stats.longest_stall_us / 1000
    );
    if let Some(e) = &stats.first_error {
        out.push_str(&format!(" (first error: {e})"));
    }
    if let Some(stuck) = &stats.stuck {
        out.push_str(&format!(", a read stuck {} ms in the kernel at {}", stuck.waiting_ms, stuck.wchan));
    }
    out
}

/// Whether the kernel took a failover's policy, and how the report says so.
pub(crate) struct FailoverCase {
    /// Requests the dead daemon had read were queued again (or there was no takeover).
    pub resent: bool,
    pub description: String,
}

impl Run<'_> {
    /// What `id`'s successor reported about its failover policy (a mock's control
    /// socket); for a real nydusd, what the kernel release promises (FUSE_NOTIFY_RESEND
    /// from 6.9).
    pub(crate) async fn failover_case(&self, id: &str) -> FailoverCase {
        let kernel = host_facts::kernel::release();
        if self.config.target == crate::scenario::model::Target::Mock {
            let control = self.root.control_socket(id);
            let status = super::daemon::control_request(&control, "GET", "/fuse", "")
                .await
                .ok()
                .and_then(|r| super::daemon::fuse_status(&r));
            if let Some(status) = status {
                let failover = &status["failover"];
                if failover.is_null() {
                    return FailoverCase {
                        resent: true,
                        description: format!("{id} was not taken over on kernel {kernel}"),
                    };
                }
                let applied = failover["applied"].as_bool().unwrap_or(false);
                let policy = failover["policy"].as_str().unwrap_or("?");
                let detail = failover["detail"].as_str().unwrap_or_default();
                return FailoverCase {
                    resent: applied,
                    description: if applied {
                        format!("kernel {kernel} took {id}'s failover policy {policy} ({detail})")
                    } else {
                        format!(
                            "kernel {kernel} did not take {id}'s failover policy {policy} ({detail}): what the dead daemon had read is lost"
                        )
                    },
                };
            }
        }
        let resends = kernel_at_least(&kernel, (6, 9));
        FailoverCase {
            resent: resends,
            description: if resends {
                format!("kernel {kernel} has FUSE_NOTIFY_RESEND (6.9 or later)")
            } else {
                format!(
                    "kernel {kernel} is older than 6.9, which brought FUSE_NOTIFY_RESEND: what the dead daemon had read is lost"
                )
            },
        }
    }
}

/// Whether a `uname -r` release is at least `major.minor`.
fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let got_major = parts.next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    let got_minor = parts.next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    (got_major, got_minor) >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::{ReaderStats, StuckRead};

    #[test]
    fn kernel_releases_compare_by_major_then_minor() {
        assert!(kernel_at_least("6.12.118+deb12-cloud-amd64", (6, 9)));
        assert!(kernel_at_least("6.9.0", (6, 9)));
        assert!(!kernel_at_least("6.1.0-57-cloud-amd64", (6, 9)));
        assert!(kernel_at_least("7.0.1", (6, 9)));
        assert!(!kernel_at_least("5.15.0", (6, 9)));
    }

    #[test]
    fn a_stuck_read_passes_only_where_it_is_allowed_or_expected() {
        let stuck = ReaderStats {
            reads: 3,
            longest_stall_us: 2_500_000,
            stuck: Some(StuckRead { waiting_ms: 2_500, wchan: "request_wait_answer".into() }),
            ..ReaderStats::default()
        };
        let fine = ReaderStats { reads: 3, longest_stall_us: 1_000, ..ReaderStats::default() };
        let promise =
            |stuck| Promise { max_failures: 0, min_failures: 0, min_reads: 1, max_stall_ms: Some(100), stuck };
        assert!(promise(StuckReads::Forbidden).check("r", &stuck).is_err());
        assert!(promise(StuckReads::Allowed).check("r", &stuck).is_ok());
        assert!(promise(StuckReads::Expected).check("r", &stuck).is_ok());
        assert!(promise(StuckReads::Expected).check("r", &fine).is_err());
        assert!(promise(StuckReads::Forbidden).check("r", &fine).is_ok());
        let err = promise(StuckReads::Forbidden).check("r", &stuck).unwrap_err();
        assert!(format!("{err:?}").contains("a read stuck 2500 ms in the kernel at request_wait_answer"), "{err:?}");
    }
}
