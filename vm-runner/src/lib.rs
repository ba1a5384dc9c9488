//! `harness vm`: runs a harness command inside a virtual machine with another kernel, as
//! root, and brings back what it printed, its exit code and its reports.
//!
//! * [`kernel`]: the kernel from Debian's package, with the modules scenarios need.
//! * [`initramfs`]: the guest's root file system, built from the host's files.
//! * [`qemu`]: the accelerator probe and one boot.
//!
//! The guest has no disk and no network. Its root is an initramfs holding busybox, this
//! harness binary with the shared libraries `ldd` names (no other toolchain can be
//! fetched for a guest), `mkfs.erofs` and `mke2fs` when the host has them, the programs
//! given with `--binary` (a real nydusd) in `/bin`, the kernel's FUSE, erofs, cachefiles
//! and loop modules (or those given with `--module` in their place), and the files given
//! with `--copy` (the scenario library by default) under `/work`, where the command runs.
//! `/tmp` is ext4 on a loop device when the host has `mke2fs`: the cachefiles kernel
//! module refuses a cache directory on tmpfs. Its console is the first serial port, streamed
//! to standard output; `/results` is sent back as a base64 tar over the second serial
//! port when the command ends, and unpacked into `OUT/results`. Reports written there
//! (`--junit /results/junit.xml`) come back with it; their `kernel` is the guest's.
//!
//! qemu is killed on the deadline, on SIGINT/SIGTERM/SIGHUP to the harness (the future
//! is dropped), on a panic (dropped while unwinding) and, through `PR_SET_PDEATHSIG`,
//! when the harness itself is killed. The work directory (kernel, initramfs) is the
//! caller's: it owns, claims and removes it (the harness sweeps one a SIGKILL left).

mod error;
pub mod initramfs;
pub mod kernel;
pub mod qemu;

pub use error::VmError;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use qemu::Accel;

/// The longest a VM run may be given: longer `--timeout`s are taken as this.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where the guest's command runs, with the copied files.
const GUEST_WORK: &str = "/work";

/// The guest directory brought back.
pub const GUEST_RESULTS: &str = "/results";

/// What the console prints when the command ended: `@@HARNESS-VM exit <code>`.
const EXIT: &str = "@@HARNESS-VM exit ";

/// What follows the results on the second serial port.
const RESULTS_END: &str = "@@HARNESS-VM results-end";

/// What to run where.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// A Debian `linux-image-*` package, or a kernel image with what it needs built in.
    pub kernel: PathBuf,
    /// The harness binary to run inside (normally this one).
    pub harness: PathBuf,
    /// Host files or directories copied to `/work/<name>` in the guest.
    pub copy: Vec<PathBuf>,
    /// Host programs put in the guest's `/bin` under their names, with their libraries.
    pub binaries: Vec<PathBuf>,
    /// Kernel modules (`NAME.ko`, built for the package's kernel) loaded in place of the
    /// package's modules of the same names.
    pub modules: Vec<PathBuf>,
    /// The harness command line inside (`run scenarios --filter privileged`), or the
    /// arguments of `program`.
    pub command: Vec<String>,
    /// Runs `/bin/<program>`, one of `binaries`, instead of the harness: a test binary
    /// (`daemon-core`'s, for its kernel tests).
    pub program: Option<String>,
    /// Console log, results and `vm.json` go here (created).
    pub out: PathBuf,
    /// An empty directory for the unpacked kernel and the initramfs, owned and removed by
    /// the caller.
    pub work: PathBuf,
    pub accel: Accel,
    pub memory_mb: u32,
    pub cpus: u32,
    /// The whole run, boot included, ends by then.
    pub timeout: Duration,
}

/// How a VM run went; also written to `OUT/vm.json`.
#[derive(Debug, Clone, Serialize)]
pub struct VmOutcome {
    /// The kernel the guest booted (`uname -r` in the guest; the package's release
    /// before the command started).
    pub kernel: String,
    pub accel: Accel,
    /// The command's exit code; `None` when it did not end (deadline, panic, power off).
    pub exit_code: Option<i32>,
    /// Why the command did not end, when it did not.
    pub failure: Option<String>,
    /// From qemu's start to the command's start, in ms.
    pub boot_ms: Option<u64>,
    /// The whole run, in ms: preparation, boot, command, results.
    pub wall_ms: u64,
    /// Wanted kernel modules neither in the package nor built in.
    pub modules_missing: Vec<String>,
    /// Modules loaded from `--module` files instead of the package.
    pub modules_replaced: Vec<String>,
}

/// Runs `options.command` in a VM; `on_line` gets each line the command prints.
pub async fn run(options: &VmOptions, on_line: impl FnMut(&str)) -> Result<VmOutcome, VmError> {
    let began = Instant::now();
    // Saturating: `--timeout 18446744073709551615` once overflowed the clock and panicked.
    let deadline = began.checked_add(options.timeout).unwrap_or_else(|| began + MAX_TIMEOUT);
    std::fs::create_dir_all(&options.out).map_err(VmError::io("cannot create", &options.out))?;
    for (what, path) in [("--kernel", &options.kernel), ("the harness", &options.harness)] {
        let meta = std::fs::metadata(path).map_err(VmError::io(what, path))?;
        // A FIFO or a device would block the preparation, or never end it.
        if !meta.is_file() {
            return Err(VmError::Input(format!("{what} {} is not a regular file", path.display())));
        }
    }
    let (kernel, root) = prepare(options, deadline).await?;
    let accel = qemu::choose(options.accel, &kernel.vmlinuz).await;
    let console_log = options.out.join("console.log");
    let results_port = options.work.join("results.b64");
    let _ = std::fs::remove_file(&console_log);
    let boot = qemu::Boot {
        qemu: Path::new(qemu::QEMU),
        vmlinuz: &kernel.vmlinuz,
        initramfs: &root,
        accel,
        memory_mb: options.memory_mb,
        cpus: options.cpus,
        console_log: console_log.clone(),
        results_port: results_port.clone(),
        first_line_within: qemu::FIRST_LINE_WITHIN,
    };
    let heard = boot_until_done(&boot, deadline, on_line).await?;
    let failure = match (&heard.ended, heard.exit_code) {
        (_, Some(_)) => None,
        (qemu::Ended::TimedOut, None) => Some(format!(
            "the VM did not finish within {} s; qemu was killed; its console last said: {}",
            options.timeout.as_secs(),
            last_lines(&console_log, 5)
        )),
        (qemu::Ended::Silent, None) => Some(format!(
            "the guest printed nothing within {} s, twice; qemu was killed",
            qemu::FIRST_LINE_WITHIN.as_secs()
        )),
        (qemu::Ended::Exited(status), None) => {
            Some(format!("the VM stopped ({status}) before the command ended: {}", last_lines(&console_log, 5)))
        }
    };
    if heard.exit_code.is_some() {
        bring_back(&results_port, &options.out.join("results"))?;
    }
    let outcome = VmOutcome {
        kernel: heard.guest_kernel.or(kernel.release).unwrap_or_else(|| "unknown".into()),
        accel,
        exit_code: heard.exit_code,
        failure,
        boot_ms: heard.started_after.map(|d| d.as_millis() as u64),
        wall_ms: began.elapsed().as_millis() as u64,
        modules_missing: kernel.missing,
        modules_replaced: kernel.replaced,
    };
    let json = serde_json::to_string_pretty(&outcome).expect("a VmOutcome is plain data");
    let summary = options.out.join("vm.json");
    std::fs::write(&summary, json).map_err(VmError::io("cannot write", &summary))?;
    Ok(outcome)
}

/// Unpacks the kernel and builds the guest's root, off the runtime and under the deadline:
/// unpacking a kernel and copying a large `--copy` can take long, and a signal or the
/// deadline must still end the run.
async fn prepare(options: &VmOptions, deadline: Instant) -> Result<(kernel::Kernel, PathBuf), VmError> {
    let prepared = options.clone();
    let task = tokio::task::spawn_blocking(move || {
        let kernel = kernel::Kernel::prepare(&prepared.kernel, &prepared.work, &prepared.modules)?;
        let root = prepared.work.join("initramfs.cpio");
        build_root(&prepared, &kernel, &root)?;
        Ok((kernel, root))
    });
    match tokio::time::timeout_at(deadline.into(), task).await {
        Ok(prepared) => prepared.map_err(VmError::Preparation)?,
        Err(_) => Err(VmError::NotReady { secs: options.timeout.as_secs() }),
    }
}

/// What the console said over one or two boots.
struct Heard {
    ended: qemu::Ended,
    exit_code: Option<i32>,
    guest_kernel: Option<String>,
    started_after: Option<Duration>,
}

/// Boots until qemu ends; a guest that says nothing at all is booted once more (see
/// [`qemu::FIRST_LINE_WITHIN`]).
async fn boot_until_done(
    boot: &qemu::Boot<'_>,
    deadline: Instant,
    mut on_line: impl FnMut(&str),
) -> Result<Heard, VmError> {
    let booted = Instant::now();
    let mut heard = Heard { ended: qemu::Ended::Silent, exit_code: None, guest_kernel: None, started_after: None };
    for attempt in 1..=2 {
        let left = deadline.saturating_duration_since(Instant::now());
        heard.ended = boot
            .run(left, |line| {
                heard.started_after.get_or_insert_with(|| booted.elapsed());
                if let Some(code) = line.strip_prefix(EXIT) {
                    heard.exit_code = code.trim().parse().ok();
                } else if let Some(release) = line.strip_prefix("@@HARNESS-VM kernel ") {
                    heard.guest_kernel = Some(release.trim().to_owned());
                } else if heard.exit_code.is_none() {
                    on_line(line);
                }
            })
            .await?;
        if !matches!(heard.ended, qemu::Ended::Silent) {
            break;
        }
        eprintln!(
            "vm: the guest printed nothing within {} s (boot {attempt}); qemu was killed",
            qemu::FIRST_LINE_WITHIN.as_secs()
        );
    }
    Ok(heard)
}

/// The guest's root: busybox, the harness and its libraries, mkfs.erofs, the modules,
/// the copied files and `/init`.
fn build_root(options: &VmOptions, kernel: &kernel::Kernel, out: &Path) -> Result<(), VmError> {
    let written = VmError::io("cannot build the guest's root", out);
    let mut root = initramfs::Initramfs::create(out).map_err(VmError::io("cannot create", out))?;
    let busybox = host_facts::find_on_path("busybox").ok_or_else(|| {
        VmError::Input("busybox is not on PATH: the guest's shell and tools (Debian: busybox-static)".into())
    })?;
    add_binary(&mut root, &busybox, Path::new("/bin/busybox"))?;
    add_binary(&mut root, &options.harness, Path::new("/bin/harness"))?;
    if let Some(mkfs) = host_facts::find_on_path("mkfs.erofs") {
        add_binary(&mut root, &mkfs, Path::new("/bin/mkfs.erofs"))?;
    }
    let ext4_tmp = match host_facts::find_on_path("mke2fs") {
        Some(mke2fs) => {
            // Not in /sbin, where busybox installs its own mke2fs (no ext4).
            add_binary(&mut root, &mke2fs, Path::new(GUEST_MKE2FS))?;
            let conf = Path::new("/etc/mke2fs.conf");
            if conf.is_file() {
                root.file(conf, conf, 0o644).map_err(VmError::io("cannot add", conf))?;
            }
            true
        }
        None => false,
    };
    for binary in &options.binaries {
        let name = binary
            .file_name()
            .ok_or_else(|| VmError::Input(format!("--binary {}: names no file", binary.display())))?;
        if !std::fs::metadata(binary).map_err(VmError::io("--binary", binary))?.is_file() {
            return Err(VmError::Input(format!("--binary {}: not a regular file", binary.display())));
        }
        let guest = Path::new("/bin").join(name);
        // The archive keeps the first entry of a path: a second one would be dropped
        // silently, and `--exec` would run another program than the one given.
        if root.contains(&guest) {
            return Err(VmError::Input(format!(
                "--binary {}: the guest already has {} (the harness, busybox, mkfs.erofs or an earlier --binary)",
                binary.display(),
                guest.display()
            )));
        }
        add_binary(&mut root, binary, &guest)?;
    }
    let mut modules = Vec::new();
    for (file, name) in &kernel.modules {
        let guest = PathBuf::from(format!("/lib/modules/{name}.ko"));
        root.file(file, &guest, 0o644).map_err(VmError::io("cannot add the module", file))?;
        modules.push(GuestModule { path: guest, given: kernel.replaced.contains(name) });
    }
    for path in &options.copy {
        let name = path
            .file_name()
            .ok_or_else(|| VmError::Input(format!("--copy {}: names no file or directory", path.display())))?;
        let guest = Path::new(GUEST_WORK).join(name);
        let kind = std::fs::metadata(path).map_err(VmError::io("--copy", path))?;
        if !kind.is_dir() && !kind.is_file() {
            // A device or a FIFO would be read for ever, or fail without its name.
            return Err(VmError::Input(format!("--copy {}: not a regular file or a directory", path.display())));
        }
        let copied = if kind.is_dir() { root.tree(path, &guest) } else { root.file(path, &guest, 0o644) };
        copied.map_err(VmError::io("--copy", path))?;
    }
    let program = match &options.program {
        None => "harness".to_owned(),
        Some(name) => {
            let given = options.binaries.iter().any(|b| b.file_name().is_some_and(|n| n.to_string_lossy() == *name));
            if !given || name.contains('/') {
                return Err(VmError::Input(format!("--exec {name}: not the name of a --binary")));
            }
            name.clone()
        }
    };
    let init = init_script(&modules, ext4_tmp, &program, &options.command);
    let finished = (|| {
        root.dir(Path::new(GUEST_WORK))?;
        root.dir(Path::new(GUEST_RESULTS))?;
        root.bytes(Path::new("/init"), init.as_bytes(), 0o755)?;
        root.finish()
    })();
    finished.map_err(written)
}

/// `binary` at `guest`, with its shared libraries at the paths it loads them from.
fn add_binary(root: &mut initramfs::Initramfs, binary: &Path, guest: &Path) -> Result<(), VmError> {
    for library in initramfs::shared_libraries(binary)? {
        root.file(&library, &library, 0o755).map_err(VmError::io("cannot add the library", &library))?;
    }
    root.file(binary, guest, 0o755).map_err(VmError::io("cannot add", binary))
}

/// A module in the guest's root, and whether it was given with `--module`.
struct GuestModule {
    path: PathBuf,
    given: bool,
}

/// Where the host's mke2fs goes in the guest.
const GUEST_MKE2FS: &str = "/usr/lib/harness-vm/mke2fs";

/// How big the guest's ext4 `/tmp` may grow (a sparse file in the guest's memory).
const TMP_MB: u32 = 1536;

/// The guest's `/init`: mounts, modules, `/tmp`, the command, the results, power off.
fn init_script(modules: &[GuestModule], ext4_tmp: bool, program: &str, command: &[String]) -> String {
    let quoted: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
    // A package's module that fails to load is reported, and its scenarios skip; one given
    // with --module must load: the command would otherwise pass on what it was not given.
    let insmod: String = modules
        .iter()
        .map(|m| {
            let path = m.path.display();
            if m.given {
                format!(
                    "insmod {path} || {{ echo \"vm: the --module {path} did not load; the command was not run\"; poweroff -f; }}\n"
                )
            } else {
                format!("insmod {path} || echo \"insmod {path} failed\"\n")
            }
        })
        .collect();
    // ext4 and loop are built into Debian's cloud kernels, or loaded above; if either
    // fails, /tmp stays tmpfs and says so (fscache then fails with EOPNOTSUPP).
    let tmp = if ext4_tmp {
        format!(
            r#"mount -t tmpfs -o size={TMP_MB}m tmpfs /run/tmpfs-for-tmp 2>/dev/null || mkdir -p /run/tmpfs-for-tmp
dd if=/dev/zero of=/run/tmpfs-for-tmp/tmp.ext4 bs=1M count=0 seek={TMP_MB} 2>/dev/null
# discard: blocks freed in /tmp are punched out of the file, so the guest gets its memory back.
if {GUEST_MKE2FS} -q -F -t ext4 /run/tmpfs-for-tmp/tmp.ext4 && mount -o loop,discard /run/tmpfs-for-tmp/tmp.ext4 /tmp; then
  chmod 1777 /tmp
else
  echo "vm: /tmp stays tmpfs: no ext4 on a loop device"
  mount -t tmpfs tmpfs /tmp
fi
"#
        )
    } else {
        "mount -t tmpfs tmpfs /tmp
"
        .to_owned()
    };
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mkdir -p /run/tmpfs-for-tmp
exec 0</dev/console 1>/dev/console 2>&1
# From here on only kernel emergencies reach the console, which is the command's output.
dmesg -n 1
echo "{start}"
echo "@@HARNESS-VM kernel $(uname -r)"
{insmod}{tmp}stty -F /dev/ttyS1 raw -echo
cd {GUEST_WORK}
# Through a pipe, so the harness writes its plain report, not a terminal's progress lines.
(/bin/{program} {args}; echo $? > /run/.harness-vm-exit) 2>&1 | cat
echo "{EXIT}$(cat /run/.harness-vm-exit)"
(cd {GUEST_RESULTS} && tar -c .) | base64 > /dev/ttyS1
echo "{RESULTS_END}" > /dev/ttyS1
sync
poweroff -f
"#,
        start = qemu::START,
        args = quoted.join(" "),
    )
}

/// `arg` in single quotes for sh.
fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Unpacks what the guest sent over its second serial port into `into`.
fn bring_back(port: &Path, into: &Path) -> Result<(), VmError> {
    use base64::Engine;
    let text = std::fs::read_to_string(port).map_err(VmError::io("cannot read", port))?;
    let (encoded, _) =
        text.split_once(RESULTS_END).ok_or_else(|| VmError::Results(format!("were cut short (no `{RESULTS_END}`)")))?;
    let encoded: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
    let tar = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| VmError::Results(format!("are not base64: {e}")))?;
    if into.exists() {
        std::fs::remove_dir_all(into).map_err(VmError::io("cannot remove", into))?;
    }
    std::fs::create_dir_all(into).map_err(VmError::io("cannot create", into))?;
    let archive = into.with_extension("tar");
    std::fs::write(&archive, tar).map_err(VmError::io("cannot write", &archive))?;
    let unpacked = std::process::Command::new("tar")
        .arg("-x")
        .arg("-f")
        .arg(&archive)
        .arg("-C")
        .arg(into)
        .output()
        .map_err(|e| VmError::Tool { tool: "tar", detail: format!("cannot run: {e}") });
    let _ = std::fs::remove_file(&archive);
    let unpacked = unpacked?;
    if !unpacked.status.success() {
        let said = String::from_utf8_lossy(&unpacked.stderr).trim().to_owned();
        return Err(VmError::Tool { tool: "tar", detail: format!("-x: {said}") });
    }
    Ok(())
}

/// The last `n` lines of `path`, joined with ` | `.
fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_reaches_the_guest_shell_word_for_word() {
        let script = init_script(
            &[
                GuestModule { path: "/lib/modules/fuse.ko".into(), given: false },
                GuestModule { path: "/lib/modules/erofs.ko".into(), given: true },
            ],
            true,
            "harness",
            &["run".into(), "it's a $name".into()],
        );
        assert!(script.contains("(/bin/harness 'run' 'it'\\''s a $name'; echo"), "{script}");
        assert!(script.contains("insmod /lib/modules/fuse.ko || echo"), "{script}");
        let must_load = "insmod /lib/modules/erofs.ko || { echo \"vm: the --module /lib/modules/erofs.ko did not load; \
                         the command was not run\"; poweroff -f; }";
        assert!(script.contains(must_load), "{script}");
        let start = script.find(qemu::START).unwrap();
        assert!(start < script.find("insmod").unwrap(), "a module that fails to load is in the output");
        let loop_mount = script.find("mount -o loop").unwrap();
        assert!(script.find("insmod").unwrap() < loop_mount, "loop is loaded before /tmp goes on it");
        assert!(loop_mount < script.find("/bin/harness").unwrap(), "/tmp is ext4 before the command runs");
        let plain = init_script(&[], false, "lifecycle", &["run".into()]);
        assert!(plain.contains("(/bin/lifecycle 'run'; echo"), "{plain}");
        assert!(plain.contains("mount -t tmpfs tmpfs /tmp") && !plain.contains("mke2fs"), "{plain}");
    }
}
