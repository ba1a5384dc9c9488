//! The store's durability: a writer process killed with SIGKILL at arbitrary moments
//! never loses a record it reported as committed, and the store always opens again.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use daemon_core::daemon::DaemonRecord;
use daemon_core::rafs::Rafs;
use daemon_core::store::Store;
use libtest_mimic::Trial;

use crate::support::{TestResult, ensure, trial};

/// Environment variable that turns this test binary into the store writer.
pub const WRITER_ROLE: &str = "LIFECYCLE_STORE_WRITER";

pub fn tests() -> Vec<Trial> {
    vec![trial("store::kill_9_mid_write_never_loses_a_committed_record", &[], kill_9_mid_write)]
}

/// The writer: adds instances and rewrites the daemon record forever, printing the number
/// of each instance once its transaction has committed.
pub fn writer(root: &Path) -> std::process::ExitCode {
    let store = match Store::open(root) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("writer: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut next = store.instances().map(|all| all.len()).unwrap_or(0);
    let mut out = std::io::stdout().lock();
    loop {
        let mut rafs = Rafs { snapshot_id: format!("snap-{next:06}"), image_id: "x".repeat(200), ..Rafs::default() };
        if let Err(e) = store.add_instance(&mut rafs) {
            eprintln!("writer: {e}");
            return std::process::ExitCode::FAILURE;
        }
        let state = DaemonRecord { id: "d1".into(), process_id: next as u32, ..DaemonRecord::default() };
        // A kill between the instance's commit and the first daemon record leaves instances
        // without the record, so "first round" is whether the record exists.
        let saved = match store.update_daemon(&state) {
            Err(daemon_core::store::StoreError::NotFound { .. }) => store.save_daemon(&state),
            other => other,
        };
        if let Err(e) = saved {
            eprintln!("writer: {e}");
            return std::process::ExitCode::FAILURE;
        }
        let _ = writeln!(out, "{next}");
        let _ = out.flush();
        next += 1;
    }
}

/// A small xorshift generator: the kill moments need variety, not quality.
struct Moments(u64);

impl Moments {
    fn next_below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

async fn kill_9_mid_write() -> TestResult {
    const ROUNDS: usize = 40;
    let dir = tempfile::tempdir()?;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64 | 1;
    eprintln!("kill moments seed {seed}");
    let mut moments = Moments(seed);
    let mut committed: Option<usize> = None;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe()?)
            .env(WRITER_ROLE, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).filter_map(|l| l.parse::<usize>().ok()).max()
        });
        // Anywhere from before the store is open to dozens of commits in.
        std::thread::sleep(Duration::from_micros(moments.next_below(30_000)));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL)?;
        child.wait()?;
        let reported = reader.join().map_err(|_| "reader panicked")?;
        if let Some(n) = reported {
            committed = Some(committed.map_or(n, |c| c.max(n)));
        }
        let store = Store::open(dir.path()).map_err(|e| format!("round {round}: store does not open: {e}"))?;
        let instances = store.instances().map_err(|e| format!("round {round}: {e}"))?;
        let daemons = store.daemons().map_err(|e| format!("round {round}: {e}"))?;
        if let Some(n) = committed {
            ensure(instances.len() > n, format!("round {round}: committed #{n} but only {} stored", instances.len()))?;
            ensure(
                daemons.len() == 1 && daemons[0].process_id as usize >= n,
                format!("round {round}: daemon record behind"),
            )?;
        }
        for (i, r) in instances.iter().enumerate() {
            ensure(
                r.snapshot_id == format!("snap-{i:06}"),
                format!("round {round}: gap or reorder at {i}: {}", r.snapshot_id),
            )?;
            ensure(r.seq == i as u64 + 1, format!("round {round}: seq {} at {i}", r.seq))?;
        }
    }
    eprintln!("{ROUNDS} kills, {} records committed", committed.map_or(0, |n| n + 1));
    ensure(committed.is_some_and(|n| n > ROUNDS), "the writer got far enough for the kills to land mid-write")
}
