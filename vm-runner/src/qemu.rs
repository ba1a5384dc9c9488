//! qemu: which accelerator works here, and one boot of a kernel with an initramfs whose
//! console is streamed back and whose second serial port carries the results.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::VmError;

/// The qemu binary for x86-64 guests.
pub const QEMU: &str = "qemu-system-x86_64";

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when `/dev/kvm` opens and a probe boot finishes in time, TCG otherwise.
    Auto,
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation: slower, works everywhere (nested virtualisation included).
    Tcg,
}

impl Accel {
    /// As qemu's `-accel` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// How long the probe boot may take under KVM. A kernel that panics for want of a root
/// file system does so in about a second under KVM; where KVM guests hang (nested
/// virtualisation without support), nothing comes at all.
const KVM_PROBE: Duration = Duration::from_secs(5);

/// Resolves `Auto` to what works here: KVM only when `/dev/kvm` opens and a guest under
/// it really runs (boots `vmlinuz` to its panic, with no initramfs, within [`KVM_PROBE`]).
pub async fn choose(accel: Accel, vmlinuz: &Path) -> Accel {
    match accel {
        Accel::Auto => {
            let opens = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
            if opens && kvm_boots(vmlinuz).await { Accel::Kvm } else { Accel::Tcg }
        }
        chosen => chosen,
    }
}

async fn kvm_boots(vmlinuz: &Path) -> bool {
    let mut command = tokio::process::Command::new(QEMU);
    command
        .args(["-accel", "kvm", "-m", "256", "-display", "none", "-nodefaults", "-no-reboot", "-serial", "null"])
        .arg("-kernel")
        .arg(vmlinuz)
        .args(["-append", "console=ttyS0 panic=-1"]);
    let Ok(mut child) = guarded(&mut command).stdout(Stdio::null()).stderr(Stdio::null()).spawn() else {
        return false;
    };
    match tokio::time::timeout(KVM_PROBE, child.wait()).await {
        Ok(status) => status.is_ok_and(|s| s.success()),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            false
        }
    }
}

/// `command` killed when dropped, and by the kernel when the harness dies without
/// unwinding (SIGKILL): a VM never outlives the command that started it.
fn guarded(command: &mut tokio::process::Command) -> &mut tokio::process::Command {
    command.kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    command
}

/// One boot.
#[derive(Debug)]
pub struct Boot<'a> {
    /// The qemu binary ([`QEMU`] on PATH).
    pub qemu: &'a Path,
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub accel: Accel,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Everything the console printed is appended here.
    pub console_log: PathBuf,
    /// The guest's second serial port (`/dev/ttyS1`) is written here.
    pub results_port: PathBuf,
    /// How long the console may print nothing at all ([`FIRST_LINE_WITHIN`]).
    pub first_line_within: Duration,
}

/// What a boot ended with.
#[derive(Debug)]
pub enum Ended {
    /// qemu exited (the guest powered off, or the kernel panicked and did not reboot).
    Exited(std::process::ExitStatus),
    /// The deadline came first; qemu was killed.
    TimedOut,
    /// The console stayed silent for `first_line_within`; qemu was killed.
    Silent,
}

/// How long a boot may print nothing at all. Under TCG here the first kernel line comes
/// within a second and the command starts within 4-6 s (15 s with two VMs at once); once,
/// a guest printed nothing for two minutes, and booting again is what helps.
pub const FIRST_LINE_WITHIN: Duration = Duration::from_secs(60);

/// The longest console line kept: a guest printing without newlines must not grow the
/// harness (200 MB on one line once took it to 583 MB); the rest of such a line is read
/// and dropped, and the line ends with a note.
pub const MAX_LINE: usize = 64 * 1024;

/// Reads the next line into `line` (cleared first), keeping at most `max` bytes of it and
/// reading the rest to its newline; returns how many bytes were read (0: the end).
pub async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    line.clear();
    let (mut read, mut cut) = (0, false);
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            break;
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&available[..take.min(room)]);
        cut |= take > room;
        reader.consume(take);
        read += take;
        if done {
            break;
        }
    }
    if cut {
        line.extend_from_slice(format!(" … (line cut at {max} bytes)\n").as_bytes());
    }
    Ok(read)
}

/// How much of what qemu says on stderr is kept for an error message.
const STDERR_KEPT: usize = 4096;

/// The console line the guest prints when the command starts; from then on, console
/// lines are the command's output and are passed to `on_line`.
pub const START: &str = "@@HARNESS-VM start";

impl Boot<'_> {
    /// Boots and waits for qemu to end, at most `deadline`. Each console line after
    /// [`START`] goes to `on_line`; qemu is killed on the deadline and if this future is
    /// dropped (a signal to the harness).
    pub async fn run(&self, deadline: Duration, mut on_line: impl FnMut(&str)) -> Result<Ended, VmError> {
        let mut child = self.spawn()?;
        let mut log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.console_log)
            .await
            .map_err(VmError::io("cannot open", &self.console_log))?;
        // Both pipes are drained as qemu writes them: a full pipe would stop qemu, and the
        // guest with it, until the deadline. A console line need not be UTF-8.
        let mut console = BufReader::new(child.stdout.take().expect("piped"));
        let said = tokio::spawn(stderr_tail(child.stderr.take().expect("piped")));
        let mut started = false;
        let heard = std::sync::atomic::AtomicBool::new(false);
        let read_console = async {
            let mut raw = Vec::new();
            while read_line_bounded(&mut console, &mut raw, MAX_LINE).await.is_ok_and(|n| n > 0) {
                heard.store(true, std::sync::atomic::Ordering::Relaxed);
                let text = String::from_utf8_lossy(&raw).into_owned();
                raw.clear();
                let line = text.trim_end_matches(['\n', '\r']);
                let _ = log.write_all(format!("{line}\n").as_bytes()).await;
                if started {
                    on_line(line);
                } else if line == START {
                    started = true;
                }
            }
            let _ = log.flush().await;
        };
        let silence = async {
            tokio::time::sleep(self.first_line_within).await;
            if heard.load(std::sync::atomic::Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        let ended = tokio::time::timeout(deadline, async {
            tokio::select! {
                status = async {
                    read_console.await;
                    child.wait().await
                } => Some(status),
                () = silence => None,
            }
        })
        .await;
        let status = match ended {
            Ok(Some(status)) => status,
            Ok(None) | Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Ok(if ended.is_ok() { Ended::Silent } else { Ended::TimedOut });
            }
        };
        let status = status.map_err(|e| VmError::Tool { tool: QEMU, detail: format!("cannot wait for it: {e}") })?;
        if !status.success() {
            let said = said.await.unwrap_or_default();
            if !said.trim().is_empty() {
                return Err(VmError::Tool { tool: QEMU, detail: format!("failed ({status}): {}", said.trim()) });
            }
        }
        Ok(Ended::Exited(status))
    }

    /// Starts qemu with the console on its standard output and the results port on a file.
    fn spawn(&self) -> Result<tokio::process::Child, VmError> {
        let mut command = tokio::process::Command::new(self.qemu);
        let accel = if self.accel == Accel::Kvm { "kvm" } else { "tcg" };
        command
            .args(["-machine", "q35", "-accel", accel, "-cpu", "max"])
            .args(["-m", &self.memory_mb.to_string(), "-smp", &self.cpus.to_string()])
            .args(["-display", "none", "-nodefaults", "-no-reboot", "-monitor", "none"])
            .arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-initrd")
            .arg(self.initramfs)
            // The boot's kernel messages go to the console log (the guest turns them down
            // before the command starts, so they stay out of its output).
            .args(["-append", "console=ttyS0 panic=-1 rdinit=/init"])
            .args(["-serial", "stdio", "-serial"])
            .arg(format!("file:{}", self.results_port.display()));
        guarded(&mut command).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
            VmError::Tool { tool: QEMU, detail: format!("cannot start: {e} (Debian: apt-get install qemu-system-x86)") }
        })
    }
}

/// The last [`STDERR_KEPT`] bytes qemu wrote to its standard error, drained as it writes
/// (a full pipe would stop qemu, and the guest with it).
async fn stderr_tail(stderr: tokio::process::ChildStderr) -> String {
    let mut tail = Vec::new();
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    while read_line_bounded(&mut reader, &mut line, MAX_LINE).await.is_ok_and(|n| n > 0) {
        tail.extend_from_slice(&line);
        line.clear();
        if tail.len() > STDERR_KEPT {
            tail.drain(..tail.len() - STDERR_KEPT);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "qemu" that runs `script` (sh) in `dir`, and a boot of it.
    fn fake_boot<'a>(dir: &Path, fake: &'a Path, script: &str, first_line_within: Duration) -> Boot<'a> {
        std::fs::write(fake, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        Boot {
            qemu: fake,
            vmlinuz: Path::new("/nonexistent"),
            initramfs: Path::new("/nonexistent"),
            accel: Accel::Tcg,
            memory_mb: 64,
            cpus: 1,
            console_log: dir.join("console.log"),
            results_port: dir.join("results"),
            first_line_within,
        }
    }

    /// A console that says something not UTF-8 (a serial line at boot can) is still read
    /// to its end, and a qemu that writes much to stderr is not stopped by a full pipe.
    #[tokio::test]
    async fn every_console_line_after_the_start_is_passed_on_whatever_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("qemu");
        let script = format!(
            "head -c 200000 /dev/zero >&2\nprintf 'boot \\377\\376 noise\\r\\n{START}\\r\\nfirst\\r\\nbad \\377 byte\\r\\nlast\\r\\n'"
        );
        let boot = fake_boot(dir.path(), &fake, &script, Duration::from_secs(10));
        let mut lines = Vec::new();
        let ended = boot.run(Duration::from_secs(10), |l| lines.push(l.to_owned())).await.unwrap();
        assert!(matches!(ended, Ended::Exited(s) if s.success()), "{ended:?}");
        assert_eq!(lines, ["first", "bad \u{fffd} byte", "last"]);
        let log = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
        assert!(log.starts_with("boot \u{fffd}\u{fffd} noise\n"), "{log:?}");
    }

    /// A guest that prints nothing is given up on after `first_line_within`, and its qemu
    /// does not run on.
    #[tokio::test]
    async fn a_console_that_stays_silent_ends_the_boot_and_its_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, pid_file) = (dir.path().join("qemu"), dir.path().join("pid"));
        let script = format!("echo $$ > {}\nexec sleep 600", pid_file.display());
        let boot = fake_boot(dir.path(), &fake, &script, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let ended = boot.run(Duration::from_secs(30), |_| {}).await.unwrap();
        assert!(matches!(ended, Ended::Silent), "{ended:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
            "the silent qemu (pid {pid}) runs on"
        );
    }

    /// A guest printing without newlines cannot grow the harness (issue 26): before, a
    /// 200 MB line was read whole (583 MB RSS).
    #[tokio::test]
    async fn a_line_without_end_is_cut_at_the_bound_and_read_to_its_end() {
        let mut text = vec![b'x'; 5 * MAX_LINE];
        text.extend_from_slice(b"\nnext\n");
        let mut reader = tokio::io::BufReader::new(&text[..]);
        let mut line = Vec::new();
        assert_eq!(read_line_bounded(&mut reader, &mut line, MAX_LINE).await.unwrap(), 5 * MAX_LINE + 1);
        assert!(line.len() < MAX_LINE + 64, "{} bytes kept", line.len());
        assert!(String::from_utf8_lossy(&line).ends_with(&format!("(line cut at {MAX_LINE} bytes)\n")));
        assert_eq!(read_line_bounded(&mut reader, &mut line, MAX_LINE).await.unwrap(), 5);
        assert_eq!(line, b"next\n");
        assert_eq!(read_line_bounded(&mut reader, &mut line, MAX_LINE).await.unwrap(), 0);
    }
}
