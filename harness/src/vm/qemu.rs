//! qemu: which accelerator works here, and one boot of a kernel with an initramfs whose
//! console is streamed back and whose second serial port carries the results.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The qemu binary for x86-64 guests.
pub const QEMU: &str = "qemu-system-x86_64";

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
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
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub accel: Accel,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Everything the console printed is appended here.
    pub console_log: PathBuf,
    /// The guest's second serial port (`/dev/ttyS1`) is written here.
    pub results_port: PathBuf,
}

/// What a boot ended with.
#[derive(Debug)]
pub enum Ended {
    /// qemu exited (the guest powered off, or the kernel panicked and did not reboot).
    Exited(std::process::ExitStatus),
    /// The deadline came first; qemu was killed.
    TimedOut,
}

/// The console line the guest prints when the command starts; from then on, console
/// lines are the command's output and are passed to `on_line`.
pub const START: &str = "@@HARNESS-VM start";

impl Boot<'_> {
    /// Boots and waits for qemu to end, at most `deadline`. Each console line after
    /// [`START`] goes to `on_line`; qemu is killed on the deadline and if this future is
    /// dropped (a signal to the harness).
    pub async fn run(&self, deadline: Duration, mut on_line: impl FnMut(&str)) -> anyhow::Result<Ended> {
        let mut command = tokio::process::Command::new(QEMU);
        let accel = if self.accel == Accel::Kvm { "kvm" } else { "tcg" };
        command
            .args(["-machine", "q35", "-accel", accel, "-cpu", "max"])
            .args(["-m", &self.memory_mb.to_string(), "-smp", &self.cpus.to_string()])
            .args(["-display", "none", "-nodefaults", "-no-reboot", "-monitor", "none"])
            .arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-initrd")
            .arg(self.initramfs)
            // Kernel messages stay out of the command's output unless something goes wrong.
            .args(["-append", "console=ttyS0 panic=-1 loglevel=3 rdinit=/init"])
            .args(["-serial", "stdio", "-serial"])
            .arg(format!("file:{}", self.results_port.display()));
        let mut child = guarded(&mut command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {QEMU}: {e} (Debian: apt-get install qemu-system-x86)"))?;
        let mut log = tokio::fs::OpenOptions::new().create(true).append(true).open(&self.console_log).await?;
        let mut console = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut stderr = child.stderr.take().expect("piped");
        let mut started = false;
        let read_console = async {
            while let Ok(Some(line)) = console.next_line().await {
                let line = line.trim_end_matches('\r');
                let _ = log.write_all(format!("{line}\n").as_bytes()).await;
                if started {
                    on_line(line);
                } else if line == START {
                    started = true;
                }
            }
            let _ = log.flush().await;
        };
        let ended = tokio::time::timeout(deadline, async {
            read_console.await;
            child.wait().await
        })
        .await;
        match ended {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    use tokio::io::AsyncReadExt;
                    let mut said = String::new();
                    let _ = stderr.read_to_string(&mut said).await;
                    anyhow::ensure!(said.trim().is_empty(), "{QEMU} failed ({status}): {}", said.trim());
                }
                Ok(Ended::Exited(status))
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Ok(Ended::TimedOut)
            }
        }
    }
}
