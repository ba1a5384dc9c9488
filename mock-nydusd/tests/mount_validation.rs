//! Mounts nydusd refuses, and the blob-cache counters of the ones it takes, byte for byte as
//! real nydusd 2.4 (v2.4.4-8-g34e6071e, built from upstream) and 2.2 (crates.io) answered
//! them on this project's machine. One sequence of requests runs against the mock as 2.4
//! and as 2.2 (`mock-2.4`, `mock-2.2`), and where the real releases are at hand against
//! them too (`nydusd-2.2`: `$NYDUSD`, `nydusd` on PATH or `~/.cargo/bin/nydusd`;
//! `nydusd-2.4`: `$NYDUSD_2_4`; root and /dev/fuse), so every expectation below is checked
//! against the daemon it was taken from; elsewhere those trials are listed as ignored with
//! the reason.
//!
//! The images are `tests/fixtures/rafs`: a RAFS v6 and a RAFS v5 bootstrap built by
//! nydus-image 2.2 from a one-file tree, with their blobs.

mod common;
#[path = "common/real_nydusd.rs"]
mod real_nydusd;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};
use testkit::MockProcess;

const BLOB_V6: &str = "26561311fb5dce4fd0b21784e7c302a0c070e3c710a9a6c89cdf244ecbd37a60";
const BLOB_V5: &str = "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    V2_2,
    V2_4,
}

/// The images and the files a sequence needs, in a directory of its own.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Result<Self, Failed> {
        let dir = tempfile::tempdir()?;
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rafs");
        std::fs::create_dir_all(dir.path().join("blobs"))?;
        std::fs::create_dir_all(dir.path().join("cache"))?;
        std::fs::create_dir_all(dir.path().join("mnt"))?;
        for name in ["v6.boot", "v5.boot"] {
            std::fs::copy(fixtures.join(name), dir.path().join(name))?;
        }
        // Both blobs under `blobs`; the v5 one also alone under `blobs5`, for a second backend.
        std::fs::create_dir_all(dir.path().join("blobs5"))?;
        for blob in [BLOB_V6, BLOB_V5] {
            std::fs::copy(fixtures.join("blobs").join(blob), dir.path().join("blobs").join(blob))?;
        }
        std::fs::copy(fixtures.join("blobs").join(BLOB_V5), dir.path().join("blobs5").join(BLOB_V5))?;
        // Bootstraps nydusd refuses past their magic: the v6 table's size (u32 at 1152+16)
        // not a whole number of 256-byte entries, or past the end; a blob id that is not
        // UTF-8; a v5 file with nothing but its magic and version.
        let v6 = std::fs::read(fixtures.join("v6.boot"))?;
        let patched = |name: &str, at: usize, bytes: &[u8]| -> std::io::Result<()> {
            let mut image = v6.clone();
            image[at..at + bytes.len()].copy_from_slice(bytes);
            std::fs::write(dir.path().join(name), image)
        };
        patched("table-of-7", 1168, &7u32.to_le_bytes())?;
        patched("table-past-the-end", 1168, &(256u32 * 200).to_le_bytes())?;
        patched("id-not-utf8", 4096, &[0xff; 64])?;
        let mut bare = std::fs::read(fixtures.join("v5.boot"))?[..8].to_vec();
        bare.resize(8192, 0);
        std::fs::write(dir.path().join("v5-bare"), bare)?;
        std::fs::create_dir_all(dir.path().join("empty"))?;
        std::fs::write(dir.path().join("short"), "hello, not a bootstrap\n")?;
        std::fs::write(dir.path().join("big"), vec![b'x'; 20_000])?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The legacy configuration the snapshotter writes: localfs blobs, a blob cache.
    fn v1(&self) -> String {
        json!({
            "device": {
                "backend": { "type": "localfs", "config": { "dir": self.path("blobs") } },
                "cache": { "type": "blobcache", "config": { "work_dir": self.path("cache") } }
            },
            "mode": "direct"
        })
        .to_string()
    }

    /// The legacy configuration without a cache, blobs from `blobs`.
    fn v1_uncached(&self, blobs: &str) -> String {
        json!({ "device": { "backend": { "type": "localfs", "config": { "dir": self.path(blobs) } } }, "mode": "direct" })
            .to_string()
    }

    fn v2(&self) -> Value {
        json!({
            "version": 2, "id": "x",
            "backend": { "type": "localfs", "localfs": { "dir": self.path("blobs") } },
            "cache": { "type": "blobcache", "filecache": { "work_dir": self.path("cache") } }
        })
    }

    fn v2_toml(&self) -> String {
        format!(
            "version = 2\nid = \"x\"\n[backend]\ntype = \"localfs\"\n[backend.localfs]\ndir = \"{}\"\n",
            self.path("blobs")
        )
    }
}

/// One request and the reply each release gave.
struct Step {
    name: &'static str,
    request: Vec<u8>,
    expect: Box<dyn Fn(Release) -> Expect>,
}

enum Expect {
    /// This status and no body.
    NoContent,
    /// 500 with `Mount(MountFilesystem(Other(<text>)))`.
    MountRefused(String),
    /// This status and exactly this error message.
    Error(u16, &'static str),
    /// 200 with these `underlying_files`.
    UnderlyingFiles(Vec<String>),
    /// 200 with a JSON body.
    Ok,
}

fn request(method: &str, target: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {target} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn mount(method: &str, mountpoint: &str, source: &str, config: &str) -> Vec<u8> {
    let body = json!({ "source": source, "fs_type": "rafs", "config": config }).to_string();
    request(method, &format!("/api/v1/mount?mountpoint={mountpoint}"), &body)
}

/// The words each release used; `{path}` stands for the bootstrap named.
fn refused(v2_4: &'static str, v2_2: &'static str) -> Box<dyn Fn(Release) -> Expect> {
    Box::new(move |release| {
        Expect::MountRefused(
            match release {
                Release::V2_4 => v2_4,
                Release::V2_2 => v2_2,
            }
            .to_owned(),
        )
    })
}

const EINVAL_2_2: &str =
    r#"RAFS failed to handle request, LoadConfig(Os { code: 22, kind: InvalidInput, message: "Invalid argument" })"#;
const EINVAL_SUPERBLOCK_2_4: &str =
    "RAFS failed to handle request, Failed to fill superBlock: Invalid argument (os error 22)`";
const EINVAL_SUPERBLOCK_2_2: &str = r#"RAFS failed to handle request, FillSuperblock(Os { code: 22, kind: InvalidInput, message: "Invalid argument" })"#;
const UNPARSABLE_2_4: &str =
    "RAFS failed to handle request, Failed to load config: failed to parse configuration information`";

/// `underlying_files` (in any order: nydusd keeps a hash set): 2.4 names a blob's cache file
/// `<blob>.blob.data`, 2.2 `<blob>`.
fn cache_files(blobs: &'static [&'static str]) -> Box<dyn Fn(Release) -> Expect> {
    Box::new(move |release| {
        let mut files: Vec<String> = blobs
            .iter()
            .map(|blob| match release {
                Release::V2_4 => format!("{blob}.blob.data"),
                Release::V2_2 => (*blob).to_owned(),
            })
            .collect();
        files.sort();
        Expect::UnderlyingFiles(files)
    })
}

fn always(expect: fn() -> Expect) -> Box<dyn Fn(Release) -> Expect> {
    Box::new(move |_| expect())
}

fn steps(f: &Fixture) -> Vec<Step> {
    let blobcache = || request("GET", "/api/v1/metrics/blobcache", "");
    let v1 = f.v1();
    let with = |patch: Value| {
        let mut v2 = f.v2();
        for (key, value) in patch.as_object().expect("an object") {
            v2[key] = value.clone();
        }
        v2.to_string()
    };
    let no_counter = |_| Expect::Error(404, "BlobcacheMetrics(Metrics(Stats(NoCounter)))");
    vec![
        Step {
            name: "mount_v6",
            request: mount("POST", "/a", &f.path("v6.boot"), &v1),
            expect: always(|| Expect::NoContent),
        },
        Step { name: "blobcache_after_v6", request: blobcache(), expect: cache_files(&[BLOB_V6]) },
        // The same configuration: one cache manager, holding both instances' blobs...
        Step {
            name: "mount_v5",
            request: mount("POST", "/b", &f.path("v5.boot"), &v1),
            expect: always(|| Expect::NoContent),
        },
        Step { name: "blobcache_after_v5", request: blobcache(), expect: cache_files(&[BLOB_V5, BLOB_V6]) },
        Step {
            name: "umount_v5",
            request: request("DELETE", "/api/v1/mount?mountpoint=/b", ""),
            expect: always(|| Expect::NoContent),
        },
        // ...and kept while /a uses it.
        Step { name: "blobcache_after_umount", request: blobcache(), expect: cache_files(&[BLOB_V5, BLOB_V6]) },
        // Another backend: a new manager takes the id's place; when it goes, the id answers
        // nothing, though /a's manager lives on.
        Step {
            name: "mount_other_backend",
            request: mount("POST", "/e", &f.path("v5.boot"), &v1.replace("/blobs", "/blobs5")),
            expect: always(|| Expect::NoContent),
        },
        Step { name: "blobcache_of_the_new_manager", request: blobcache(), expect: cache_files(&[BLOB_V5]) },
        Step {
            name: "umount_other_backend",
            request: request("DELETE", "/api/v1/mount?mountpoint=/e", ""),
            expect: always(|| Expect::NoContent),
        },
        Step { name: "blobcache_after_its_umount", request: blobcache(), expect: Box::new(no_counter) },
        Step {
            name: "config_not_json",
            request: mount("POST", "/x", &f.path("v6.boot"), "not json"),
            expect: refused(UNPARSABLE_2_4, EINVAL_2_2),
        },
        Step {
            name: "config_empty_object",
            request: mount("POST", "/x", &f.path("v6.boot"), "{}"),
            expect: refused(UNPARSABLE_2_4, EINVAL_2_2),
        },
        Step {
            name: "v1_unknown_backend",
            request: mount("POST", "/x", &f.path("v6.boot"), &v1.replace("localfs", "nope")),
            expect: refused(UNPARSABLE_2_4, EINVAL_2_2),
        },
        Step {
            name: "v1_without_mode",
            request: mount("POST", "/x", &f.path("v6.boot"), &v1.replace(r#","mode":"direct""#, "")),
            expect: refused(UNPARSABLE_2_4, EINVAL_2_2),
        },
        Step {
            name: "v1_unknown_cache",
            request: mount("POST", "/x", &f.path("v6.boot"), &v1.replace("blobcache", "weird")),
            expect: refused(UNPARSABLE_2_4, EINVAL_2_2),
        },
        Step {
            name: "v2_unknown_backend",
            request: mount(
                "POST",
                "/x",
                &f.path("v6.boot"),
                &with(json!({ "backend": { "type": "nope" }, "rafs": {} })),
            ),
            expect: refused("RAFS failed to handle request, Failed to load config: invalid configuration`", EINVAL_2_2),
        },
        Step {
            name: "v2_version_3",
            request: mount("POST", "/x", &f.path("v6.boot"), &with(json!({ "version": 3, "rafs": {} }))),
            expect: refused("RAFS failed to handle request, Failed to load config: invalid configuration`", EINVAL_2_2),
        },
        Step {
            name: "v2_without_rafs",
            request: mount("POST", "/x", &f.path("v6.boot"), &f.v2().to_string()),
            expect: refused(
                "RAFS failed to handle request, Failed to load config: no configuration information for rafs`",
                r#"RAFS failed to handle request, LoadConfig(Custom { kind: InvalidInput, error: "no configuration information for rafs" })"#,
            ),
        },
        Step {
            name: "v2_toml_without_cache",
            request: mount("POST", "/x", &f.path("v6.boot"), &f.v2_toml()),
            expect: refused(
                "RAFS failed to handle request, Failed to load config: no configuration information for cache`",
                EINVAL_2_2,
            ),
        },
        Step {
            name: "bootstrap_missing",
            request: mount("POST", "/x", &f.path("missing.boot"), &v1),
            expect: refused(
                "RAFS failed to handle request, Failed to fill superBlock: No such file or directory (os error 2)`",
                r#"RAFS failed to handle request, FillSuperblock(Os { code: 2, kind: NotFound, message: "No such file or directory" })"#,
            ),
        },
        Step {
            name: "bootstrap_short",
            request: mount("POST", "/x", &f.path("short"), &v1),
            expect: refused(
                "RAFS failed to handle request, Failed to fill superBlock: failed to fill whole buffer`",
                r#"RAFS failed to handle request, FillSuperblock(Error { kind: UnexpectedEof, message: "failed to fill whole buffer" })"#,
            ),
        },
        Step {
            name: "bootstrap_not_rafs",
            request: mount("POST", "/x", &f.path("big"), &v1),
            expect: refused(
                "RAFS failed to handle request, Failed to fill superBlock: invalid RAFS superblock`",
                r#"RAFS failed to handle request, FillSuperblock(Custom { kind: Other, error: "invalid RAFS superblock" })"#,
            ),
        },
        Step {
            name: "bootstrap_a_directory",
            request: mount("POST", "/x", &f.path("blobs"), &v1),
            expect: refused(
                "RAFS failed to handle request, Failed to fill superBlock: Is a directory (os error 21)`",
                r#"RAFS failed to handle request, FillSuperblock(Os { code: 21, kind: IsADirectory, message: "Is a directory" })"#,
            ),
        },
        Step {
            name: "superblock_v6_table_of_7_bytes",
            request: mount("POST", "/x", &f.path("table-of-7"), &v1),
            expect: refused(EINVAL_SUPERBLOCK_2_4, EINVAL_SUPERBLOCK_2_2),
        },
        Step {
            name: "superblock_v6_table_past_the_end",
            request: mount("POST", "/x", &f.path("table-past-the-end"), &v1),
            expect: refused(EINVAL_SUPERBLOCK_2_4, EINVAL_SUPERBLOCK_2_2),
        },
        Step {
            name: "superblock_blob_id_not_utf8",
            request: mount("POST", "/x", &f.path("id-not-utf8"), &v1),
            expect: refused(EINVAL_SUPERBLOCK_2_4, EINVAL_SUPERBLOCK_2_2),
        },
        Step {
            name: "superblock_v5_magic_only",
            request: mount("POST", "/x", &f.path("v5-bare"), &v1),
            expect: refused(EINVAL_SUPERBLOCK_2_4, EINVAL_SUPERBLOCK_2_2),
        },
        Step {
            name: "device_v6_without_blob_cache",
            request: mount("POST", "/x", &f.path("v6.boot"), &f.v1_uncached("blobs")),
            expect: refused(
                "RAFS failed to handle request, Failed to configure device: Rafs v6 must have local blobcache configured`",
                r#"RAFS failed to handle request, Configure("Rafs v6 must have local blobcache configured")"#,
            ),
        },
        Step {
            name: "device_blob_missing_uncached",
            request: mount("POST", "/x", &f.path("v5.boot"), &f.v1_uncached("empty")),
            expect: refused(
                "RAFS failed to handle request, Failed to create device: `",
                r#"RAFS failed to handle request, CreateDevice(Custom { kind: Other, error: "" })"#,
            ),
        },
        Step {
            name: "device_blob_missing_cached",
            request: mount("POST", "/x", &f.path("v6.boot"), &v1.replace(&f.path("blobs"), &f.path("empty"))),
            expect: refused(
                "RAFS failed to handle request, Failed to create device: Input/output error (os error 5)`",
                r#"RAFS failed to handle request, CreateDevice(Os { code: 5, kind: Uncategorized, message: "Input/output error" })"#,
            ),
        },
        Step {
            name: "device_without_backend",
            request: mount("POST", "/x", &f.path("v5.boot"), &json!({ "version": 2, "cache": f.v2()["cache"], "rafs": {} }).to_string()),
            expect: refused(
                "RAFS failed to handle request, Failed to create device: no configuration information for backend`",
                r#"RAFS failed to handle request, CreateDevice(Os { code: 22, kind: InvalidInput, message: "Invalid argument" })"#,
            ),
        },
        Step {
            name: "prefetch_list_relative",
            request: request(
                "POST",
                "/api/v1/mount?mountpoint=/x",
                &json!({ "source": f.path("v6.boot"), "fs_type": "rafs", "config": v1, "prefetch_files": ["etc"] })
                    .to_string(),
            ),
            expect: refused("invalid prefetch file list", "invalid prefetch file list"),
        },
        Step {
            name: "remount_bad_config",
            request: mount("PUT", "/a", &f.path("v6.boot"), "nope"),
            expect: refused(UNPARSABLE_2_4, EINVAL_2_2),
        },
        Step {
            name: "mount_v2_json",
            request: mount("POST", "/c", &f.path("v6.boot"), &with(json!({ "rafs": { "mode": "direct" } }))),
            expect: always(|| Expect::NoContent),
        },
        Step {
            name: "mount_v2_toml",
            request: mount(
                "POST",
                "/d",
                &f.path("v6.boot"),
                &format!(
                    "{}[cache]\ntype = \"blobcache\"\n[cache.filecache]\nwork_dir = \"{}\"\n[rafs]\nmode = \"direct\"\n",
                    f.v2_toml(),
                    f.path("cache")
                ),
            ),
            expect: always(|| Expect::NoContent),
        },
        Step {
            name: "metrics_of_an_instance",
            request: request("GET", "/api/v1/metrics?id=/a", ""),
            expect: always(|| Expect::Ok),
        },
        Step {
            name: "metrics_of_no_instance",
            request: request("GET", "/api/v1/metrics?id=/zz", ""),
            expect: always(|| Expect::Error(404, "GlobalMetrics(Metrics(Stats(NoCounter)))")),
        },
        Step {
            name: "metrics_without_id_of_three",
            request: request("GET", "/api/v1/metrics", ""),
            expect: always(|| Expect::Error(404, "GlobalMetrics(Metrics(Stats(NoCounter)))")),
        },
        Step {
            name: "blobcache_by_mountpoint",
            request: request("GET", "/api/v1/metrics/blobcache?id=/a", ""),
            expect: Box::new(no_counter),
        },
        // 2.2 knows no dummycache; 2.4 mounts with it.
        Step {
            name: "mount_with_dummycache",
            request: mount(
                "POST",
                "/z",
                &f.path("v5.boot"),
                &json!({ "device": { "backend": { "type": "localfs", "config": { "dir": f.path("blobs") } }, "cache": { "type": "dummycache" } }, "mode": "direct" }).to_string(),
            ),
            expect: Box::new(|release| match release {
                Release::V2_4 => Expect::NoContent,
                Release::V2_2 => Expect::MountRefused(EINVAL_2_2.to_owned()),
            }),
        },
    ]
}

/// One reply: status and body.
fn exchange(stream: &mut UnixStream, bytes: &[u8]) -> Result<(u16, String), Failed> {
    stream.write_all(bytes)?;
    let reply = testkit::try_read_response(stream)?;
    let (head, body) = reply.split_once("\r\n\r\n").ok_or_else(|| format!("no end of headers in {reply:?}"))?;
    let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

fn check(step: &Step, release: Release, status: u16, body: &str) -> Result<(), String> {
    let error_body = |message: &str| json!({ "code": "UNDEFINED", "message": message }).to_string();
    let ok = match (step.expect)(release) {
        Expect::NoContent => status == 204 && body.is_empty(),
        Expect::MountRefused(text) => {
            status == 500 && body == error_body(&format!("Mount(MountFilesystem(Other({text:?})))"))
        }
        Expect::Error(expected, message) => status == expected && body == error_body(message),
        Expect::UnderlyingFiles(files) => {
            let listed = serde_json::from_str::<Value>(body).ok().and_then(|v| {
                let mut listed: Vec<String> =
                    v["underlying_files"].as_array()?.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect();
                listed.sort();
                Some(listed)
            });
            status == 200 && listed == Some(files)
        }
        Expect::Ok => status == 200 && serde_json::from_str::<Value>(body).is_ok(),
    };
    if ok { Ok(()) } else { Err(format!("{}: got {status} {body}", step.name)) }
}

fn run_sequence(sock: &Path, fixture: &Fixture, release: Release) -> Result<(), Failed> {
    let mut stream = UnixStream::connect(sock)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mismatches: Vec<String> = steps(fixture)
        .iter()
        .filter_map(|step| match exchange(&mut stream, &step.request) {
            Ok((status, body)) => check(step, release, status, &body).err(),
            Err(e) => Some(format!("{}: {e:?}", step.name)),
        })
        .collect();
    if mismatches.is_empty() { Ok(()) } else { Err(mismatches.join("\n").into()) }
}

/// A real nydusd of `release` from `found`, with the privileges it needs here, or why not.
fn real(found: Result<PathBuf, String>, release: Release) -> Result<PathBuf, String> {
    let binary = real_nydusd::usable(found)?;
    let output = Command::new(&binary).arg("--version").output().map_err(|e| format!("{}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let is = match release {
        Release::V2_2 => text.contains("v2.2.") || text.contains("Version: \tunknown"),
        Release::V2_4 => text.contains("v2.4."),
    };
    if is {
        Ok(binary)
    } else {
        Err(format!("{} is not nydusd {release:?}: {}", binary.display(), text.lines().next().unwrap_or("")))
    }
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for (name, release, flag) in [("mock-2.4", Release::V2_4, "2.4"), ("mock-2.2", Release::V2_2, "2.2")] {
        trials.push(Trial::test(format!("{name}::refusals_and_cache_metrics"), move || {
            let fixture = Fixture::new()?;
            let mock = MockProcess::start(common::mock(), &["--mock-nydusd-version", flag]);
            run_sequence(&mock.sock, &fixture, release)
        }));
    }
    for (name, release, found) in [
        ("nydusd-2.2", Release::V2_2, host_facts::installed_nydusd()),
        ("nydusd-2.4", Release::V2_4, host_facts::nydusd_2_4()),
    ] {
        let real = real(found, release);
        if let Err(reason) = &real {
            eprintln!("{name}::… skipped: {reason}");
        }
        let ignored = real.is_err();
        let trial = Trial::test(format!("{name}::refusals_and_cache_metrics"), move || {
            let binary = real.map_err(|reason| format!("skipped: {reason}"))?;
            let fixture = Fixture::new()?;
            let daemon = real_nydusd::RealNydusd::start_in(&binary, fixture.dir.path())?;
            let result = run_sequence(&fixture.dir.path().join("api.sock"), &fixture, release);
            drop(daemon);
            result
        });
        trials.push(trial.with_ignored_flag(ignored));
    }
    libtest_mimic::run(&args, trials).exit();
}
