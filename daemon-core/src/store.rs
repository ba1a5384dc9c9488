//! The durable store of daemons and RAFS instances (`snapshotter-lifecycle.md` §8.2), in
//! SQLite under `<root>/nydus.db`: WAL journal and `synchronous=FULL`, so a record is on
//! disk when its call returns and a `kill -9` at any moment leaves a store that opens and
//! holds every committed record. Records are JSON with the Go field names, as upstream's.
//!
//! Like upstream's bbolt file lock, one process owns a root at a time: a second opener
//! gets [`StoreError::InUse`] instead of two managers restarting the same daemons.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, OptionalExtension, params};

use crate::daemon::DaemonRecord;
use crate::rafs::Rafs;

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Daemons whose records were deleted while their process was being stopped: besides
/// daemons with a record, the only ids whose unrecorded processes recovery may kill.
const INTENTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS intents (daemon_id TEXT PRIMARY KEY, what TEXT NOT NULL);";

/// What a manager was doing to a daemon when it wrote an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Its records are gone and its process is being stopped.
    Destroy,
}

impl Intent {
    fn as_str(self) -> &'static str {
        match self {
            Self::Destroy => "destroy",
        }
    }
}
/// A record as the JSON the store keeps.
fn encode(kind: &'static str, key: &str, record: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|source| StoreError::Encode { kind, key: key.to_owned(), source })
}

/// The database file under the root.
pub const DB_FILE: &str = "nydus.db";

/// Why a store operation failed. Nothing is written when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store.
    #[error("store {} is in use by another process", path.display())]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// The file is from a newer build.
    #[error("store {} has schema version {found}; this build reads version {SCHEMA_VERSION}", path.display())]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// The file names a schema version this build does not know (not a positive integer,
    /// or an older one without a migration).
    #[error("store {} has schema version {found:?}; this build reads version {SCHEMA_VERSION} only", path.display())]
    UnknownSchema {
        /// The database file.
        path: PathBuf,
        /// The stored text.
        found: String,
    },
    /// The file exists and holds data, but not this store's tables: it was truncated,
    /// damaged or is another database. Nothing in it is trusted or overwritten.
    #[error("store {} is damaged: {what}", path.display())]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The store cannot be written (a read-only or immutable file or directory), found
    /// at open, before any daemon is touched.
    #[error("store {} is not writable: {reason}", path.display())]
    ReadOnly {
        /// The database file.
        path: PathBuf,
        /// What refused the write.
        reason: String,
    },
    /// Something other than a regular file is where the database should be. SQLite would
    /// block for ever reading a FIFO, and a device is not ours to write.
    #[error("store {} is {what}, not a regular file", path.display())]
    NotAFile {
        /// The database path.
        path: PathBuf,
        /// What is there instead ("a FIFO", "a directory", ...).
        what: &'static str,
    },
    /// A record with that key exists.
    #[error("{kind} {key} already exists in the store")]
    AlreadyExists {
        /// `daemon` or `instance`.
        kind: &'static str,
        /// Its key.
        key: String,
    },
    /// No record with that key.
    #[error("{kind} {key} is not in the store")]
    NotFound {
        /// `daemon` or `instance`.
        kind: &'static str,
        /// Its key.
        key: String,
    },
    /// A record cannot be written as JSON: a path in it is not UTF-8 (JSON, and the Go
    /// snapshotter's records, hold text only). Nothing is written.
    #[error("{kind} {key} cannot be stored: {source} (paths under the root must be UTF-8)")]
    Encode {
        /// `daemon` or `instance`.
        kind: &'static str,
        /// Its key.
        key: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored record does not decode.
    #[error("stored {kind} {key} is unreadable: {message}")]
    BadRecord {
        /// `daemon` or `instance`.
        kind: &'static str,
        /// Its key.
        key: String,
        /// The decoder's message.
        message: String,
    },
    /// SQLite failed.
    #[error("store {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// The lock file could not be opened.
    #[error("store {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The open store.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    connection: Mutex<Connection>,
    /// Held for the life of the store: the single-owner lock.
    _lock: Flock<File>,
}

impl Store {
    /// Opens (creating if needed) `<root>/nydus.db`. A file that exists with content must
    /// be this store at [`SCHEMA_VERSION`] with all its tables: anything else is an error
    /// and the file is left as it is (re-creating its tables would read as "no daemons",
    /// and a manager would then kill every running one as a stray). A store that cannot be
    /// written is refused here, not at its first write.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let path = root.join(DB_FILE);
        let lock_path = root.join(format!("{DB_FILE}.lock"));
        let io = |source| StoreError::Io { path: lock_path.clone(), source };
        std::fs::create_dir_all(root).map_err(io)?;
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io)?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::Error::EWOULDBLOCK)) => return Err(StoreError::InUse { path }),
            Err((_, e)) => return Err(io(e.into())),
        };
        if let Some(what) = not_a_regular_file(&path) {
            return Err(StoreError::NotAFile { path, what });
        }
        let sqlite = |source| StoreError::Sqlite { path: path.clone(), source };
        let connection = Connection::open(&path).map_err(sqlite)?;
        // No table at all: a new file, or one whose creation was interrupted (a kill
        // after SQLite wrote the header): it holds no record either way.
        let fresh = table_names(&connection).map_err(sqlite)?.is_empty();
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = 4000;",
            )
            .map_err(sqlite)?;
        if connection.is_readonly(rusqlite::MAIN_DB).map_err(sqlite)? {
            return Err(StoreError::ReadOnly { path, reason: "SQLite opened it read-only".into() });
        }
        if fresh {
            // 0600: records hold configuration paths and pids; SQLite gives its WAL and
            // shm files the database file's mode.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|source| StoreError::Io { path: path.clone(), source })?;
            connection
                .execute_batch(&format!(
                    "BEGIN IMMEDIATE;
                     CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                     CREATE TABLE IF NOT EXISTS daemons (id TEXT PRIMARY KEY, record TEXT NOT NULL);
                     CREATE TABLE IF NOT EXISTS instances (
                         snapshot_id TEXT PRIMARY KEY,
                         seq INTEGER NOT NULL UNIQUE,
                         record TEXT NOT NULL
                     );
                     INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
                     {INTENTS_TABLE}
                     COMMIT;"
                ))
                .map_err(|source| write_refused(&path, source))?;
        } else {
            check_schema(&connection, &path)?;
            // Added to version 1 without changing it (older builds ignore the table). A
            // write either way, so that an immutable file is found now.
            connection
                .execute_batch(&format!("BEGIN IMMEDIATE; {INTENTS_TABLE} COMMIT;"))
                .map_err(|source| write_refused(&path, source))?;
        }
        Ok(Self { path, connection: Mutex::new(connection), _lock: lock })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a daemon record; [`StoreError::AlreadyExists`] if the id is taken.
    pub fn save_daemon(&self, state: &DaemonRecord) -> Result<(), StoreError> {
        let record = encode("daemon", &state.id, state)?;
        let conn = self.lock();
        match conn.execute("INSERT INTO daemons (id, record) VALUES (?1, ?2)", params![state.id, record]) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(StoreError::AlreadyExists { kind: "daemon", key: state.id.clone() })
            }
            Err(e) => Err(self.sqlite(e)),
        }
    }

    /// Replaces a daemon record; [`StoreError::NotFound`] if there is none.
    pub fn update_daemon(&self, state: &DaemonRecord) -> Result<(), StoreError> {
        let record = encode("daemon", &state.id, state)?;
        let changed = self
            .lock()
            .execute("UPDATE daemons SET record = ?2 WHERE id = ?1", params![state.id, record])
            .map_err(|e| self.sqlite(e))?;
        if changed == 0 { Err(StoreError::NotFound { kind: "daemon", key: state.id.clone() }) } else { Ok(()) }
    }

    /// Deletes a daemon record (absent is fine).
    pub fn delete_daemon(&self, id: &str) -> Result<(), StoreError> {
        self.lock().execute("DELETE FROM daemons WHERE id = ?1", params![id]).map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    /// Deletes a daemon record and the given instance records in one transaction, so that
    /// no crash leaves instances whose daemon record is gone (absent rows are fine).
    pub fn delete_daemon_and_instances<'a>(
        &self,
        id: &str,
        snapshot_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sqlite(e))?;
        tx.execute("DELETE FROM daemons WHERE id = ?1", params![id]).map_err(|e| self.sqlite(e))?;
        for snapshot_id in snapshot_ids {
            tx.execute("DELETE FROM instances WHERE snapshot_id = ?1", params![snapshot_id])
                .map_err(|e| self.sqlite(e))?;
        }
        // In the same transaction: a crash before the process is gone leaves it licensed
        // for the next recovery's sweep, though no record names it any more.
        tx.execute(
            "INSERT OR REPLACE INTO intents (daemon_id, what) VALUES (?1, ?2)",
            params![id, Intent::Destroy.as_str()],
        )
        .map_err(|e| self.sqlite(e))?;
        tx.commit().map_err(|e| self.sqlite(e))
    }

    /// Clears the intent recorded for `id`, if any.
    pub fn clear_intent(&self, id: &str) -> Result<(), StoreError> {
        self.lock()
            .execute("DELETE FROM intents WHERE daemon_id = ?1", params![id])
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    /// The ids with an intent, sorted.
    pub fn intents(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut statement =
            conn.prepare("SELECT daemon_id FROM intents ORDER BY daemon_id").map_err(|e| self.sqlite(e))?;
        let ids = statement.query_map([], |row| row.get::<_, String>(0)).map_err(|e| self.sqlite(e))?;
        ids.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// Every daemon record, by id. A record that does not decode is an error naming it.
    pub fn daemons(&self) -> Result<Vec<DaemonRecord>, StoreError> {
        self.records("daemon", "SELECT id, record FROM daemons ORDER BY id")
    }

    /// Every daemon record that decodes, by id, and a [`StoreError::BadRecord`] for each
    /// one that does not (recovery settles the others and reports these).
    pub fn daemons_and_unreadable(&self) -> Result<(Vec<DaemonRecord>, Vec<StoreError>), StoreError> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (key, record) in self.rows("SELECT id, record FROM daemons ORDER BY id")? {
            match serde_json::from_str(&record) {
                Ok(state) => good.push(state),
                Err(e) => bad.push(StoreError::BadRecord { kind: "daemon", key, message: e.to_string() }),
            }
        }
        Ok((good, bad))
    }

    /// Adds an instance, giving it the next sequence number (returned and set in `rafs`).
    pub fn add_instance(&self, rafs: &mut Rafs) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sqlite(e))?;
        let exists: bool = tx
            .query_row("SELECT 1 FROM instances WHERE snapshot_id = ?1", params![rafs.snapshot_id], |_| Ok(true))
            .optional()
            .map_err(|e| self.sqlite(e))?
            .unwrap_or(false);
        if exists {
            return Err(StoreError::AlreadyExists { kind: "instance", key: rafs.snapshot_id.clone() });
        }
        let next: u64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |row| row.get::<_, String>(0))
            .optional()
            .map_err(|e| self.sqlite(e))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let mut stored = rafs.clone();
        stored.seq = next;
        let record = encode("instance", &stored.snapshot_id, &stored)?;
        tx.execute(
            "INSERT INTO instances (snapshot_id, seq, record) VALUES (?1, ?2, ?3)",
            params![stored.snapshot_id, next as i64, record],
        )
        .map_err(|e| self.sqlite(e))?;
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?1)", params![(next + 1).to_string()])
            .map_err(|e| self.sqlite(e))?;
        tx.commit().map_err(|e| self.sqlite(e))?;
        rafs.seq = next;
        Ok(next)
    }

    /// Inserts or replaces an instance under its existing sequence number.
    pub fn update_instance(&self, rafs: &Rafs) -> Result<(), StoreError> {
        let record = encode("instance", &rafs.snapshot_id, rafs)?;
        self.lock()
            .execute(
                "INSERT INTO instances (snapshot_id, seq, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT(snapshot_id) DO UPDATE SET record = excluded.record",
                params![rafs.snapshot_id, rafs.seq as i64, record],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    /// Deletes an instance (absent is fine).
    pub fn delete_instance(&self, snapshot_id: &str) -> Result<(), StoreError> {
        self.lock()
            .execute("DELETE FROM instances WHERE snapshot_id = ?1", params![snapshot_id])
            .map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    /// Every instance, in sequence order.
    pub fn instances(&self) -> Result<Vec<Rafs>, StoreError> {
        self.records("instance", "SELECT snapshot_id, record FROM instances ORDER BY seq")
    }

    /// Decodes the `(key, record)` rows of `sql`; a bad record is an error naming it.
    fn records<T: serde::de::DeserializeOwned>(&self, kind: &'static str, sql: &str) -> Result<Vec<T>, StoreError> {
        self.rows(sql)?
            .into_iter()
            .map(|(key, record)| {
                serde_json::from_str(&record).map_err(|e| StoreError::BadRecord { kind, key, message: e.to_string() })
            })
            .collect()
    }

    fn rows(&self, sql: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(sql).map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sqlite(e))
    }
}

/// Whether the store file exists with at least one byte, in itself or in its WAL.
pub fn has_content(db: &Path) -> bool {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    len(db) > 0 || len(Path::new(&wal)) > 0
}

/// What is at `path` when it exists and (following symbolic links) is not a regular file.
fn not_a_regular_file(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path).ok()?.file_type();
    Some(match () {
        () if kind.is_file() => return None,
        () if kind.is_dir() => "a directory",
        () if kind.is_fifo() => "a FIFO",
        () if kind.is_socket() => "a socket",
        () if kind.is_block_device() || kind.is_char_device() => "a device",
        () => "not a regular file",
    })
}

/// Whether `db` holds a store's tables, or something that is not known to be empty (a
/// file SQLite cannot read is reported by [`Store::open`], not taken for no store). Read
/// only: nothing is created.
pub fn holds_a_store(db: &Path) -> bool {
    if !has_content(db) {
        return false;
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    match Connection::open_with_flags(db, flags).and_then(|c| table_names(&c)) {
        Ok(tables) => !tables.is_empty(),
        Err(_) => true,
    }
}

fn table_names(connection: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = connection.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let names = statement.query_map([], |row| row.get::<_, String>(0))?;
    names.collect()
}

fn write_refused(path: &Path, source: rusqlite::Error) -> StoreError {
    match &source {
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(e.code, rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen) =>
        {
            StoreError::ReadOnly { path: path.to_owned(), reason: source.to_string() }
        }
        _ => StoreError::Sqlite { path: path.to_owned(), source },
    }
}

/// The existing file must carry this schema's version and tables.
fn check_schema(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite { path: path.to_owned(), source };
    let tables = table_names(connection).map_err(sqlite)?;
    let missing: Vec<&str> =
        ["meta", "daemons", "instances"].into_iter().filter(|t| !tables.iter().any(|n| n == t)).collect();
    if !missing.is_empty() {
        return Err(StoreError::Damaged { path: path.to_owned(), what: format!("no table {}", missing.join(", ")) });
    }
    let version: Option<String> = connection
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0))
        .optional()
        .map_err(sqlite)?;
    let Some(version) = version else {
        return Err(StoreError::Damaged { path: path.to_owned(), what: "no schema_version in table meta".into() });
    };
    match version.parse::<u32>() {
        Ok(found) if found == SCHEMA_VERSION => Ok(()),
        Ok(found) if found > SCHEMA_VERSION => Err(StoreError::NewerSchema { path: path.to_owned(), found }),
        _ => Err(StoreError::UnknownSchema { path: path.to_owned(), found: version }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Before, SQLite opened the FIFO and blocked for ever reading its header, and with it
    /// the manager's start-up (and a harness run, past its deadline and Ctrl-C).
    #[test]
    fn a_fifo_where_the_database_should_be_is_refused_at_once_and_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join(DB_FILE);
        nix::unistd::mkfifo(&db, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = root.path().to_owned();
        std::thread::spawn(move || tx.send(Store::open(&path).map(|_| ())));
        let result = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("Store::open returned");
        match result {
            Err(StoreError::NotAFile { path, what }) => assert_eq!((path, what), (db.clone(), "a FIFO")),
            other => panic!("{other:?}"),
        }
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&db).unwrap().file_type().is_fifo());
        assert!(!holds_a_store(&db));
    }

    fn daemon(id: &str, pid: u32) -> DaemonRecord {
        DaemonRecord { id: id.into(), process_id: pid, ..DaemonRecord::default() }
    }

    #[test]
    fn daemon_records_follow_upstreams_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save_daemon(&daemon("d1", 1)).unwrap();
        assert!(matches!(store.save_daemon(&daemon("d1", 2)), Err(StoreError::AlreadyExists { .. })));
        assert!(matches!(store.update_daemon(&daemon("d2", 1)), Err(StoreError::NotFound { .. })));
        store.update_daemon(&daemon("d1", 9)).unwrap();
        store.save_daemon(&daemon("d0", 3)).unwrap();
        let all = store.daemons().unwrap();
        assert_eq!(all.iter().map(|d| (d.id.as_str(), d.process_id)).collect::<Vec<_>>(), [("d0", 3), ("d1", 9)]);
        store.delete_daemon("d1").unwrap();
        store.delete_daemon("d1").unwrap();
        assert_eq!(store.daemons().unwrap().len(), 1);
    }

    #[test]
    fn instances_get_increasing_sequence_numbers_that_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for id in ["b", "a"] {
                let mut r = Rafs { snapshot_id: id.into(), ..Rafs::default() };
                store.add_instance(&mut r).unwrap();
            }
            let mut dup = Rafs { snapshot_id: "a".into(), ..Rafs::default() };
            assert!(matches!(store.add_instance(&mut dup), Err(StoreError::AlreadyExists { .. })));
            store.delete_instance("b").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let mut c = Rafs { snapshot_id: "c".into(), ..Rafs::default() };
        assert_eq!(store.add_instance(&mut c).unwrap(), 3, "sequence numbers are never reused");
        let mut a = store.instances().unwrap().remove(0);
        assert_eq!((a.snapshot_id.as_str(), a.seq), ("a", 2));
        a.mountpoint = "/m".into();
        store.update_instance(&a).unwrap();
        let order: Vec<(String, u64)> =
            store.instances().unwrap().into_iter().map(|r| (r.snapshot_id, r.seq)).collect();
        assert_eq!(order, [("a".to_owned(), 2), ("c".to_owned(), 3)]);
        assert_eq!(store.instances().unwrap()[0].mountpoint, PathBuf::from("/m"));
    }

    #[test]
    fn the_store_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save_daemon(&daemon("d1", 1)).unwrap();
        for name in [DB_FILE.to_owned(), format!("{DB_FILE}-wal")] {
            let mode = std::fs::metadata(dir.path().join(&name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    }

    #[test]
    fn one_owner_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        assert!(matches!(Store::open(dir.path()), Err(StoreError::InUse { .. })));
        drop(first);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn a_bad_record_is_named_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.save_daemon(&daemon("good", 1)).unwrap();
            store.lock().execute("INSERT INTO daemons (id, record) VALUES ('bad', '{\"ID\":')", []).unwrap();
            let err = store.daemons().unwrap_err();
            assert!(err.to_string().starts_with("stored daemon bad is unreadable"), "{err}");
            store.lock().execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", []).unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NewerSchema { found: 99, .. }), "{err}");
    }

    fn set_version(dir: &Path, version: &str) {
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", params![version]).unwrap();
    }

    #[test]
    fn schema_versions_that_are_not_this_one_are_refused_and_left_alone() {
        for version in ["abc", "0", "-1", "1.0", ""] {
            let dir = tempfile::tempdir().unwrap();
            Store::open(dir.path()).unwrap().save_daemon(&daemon("d1", 1)).unwrap();
            set_version(dir.path(), version);
            let err = Store::open(dir.path()).unwrap_err();
            assert!(matches!(&err, StoreError::UnknownSchema { found, .. } if found == version), "{version:?}: {err}");
            // Before the fix "abc" was overwritten with 1 and the store read as valid.
            set_version(dir.path(), "1");
            assert_eq!(Store::open(dir.path()).unwrap().daemons().unwrap().len(), 1, "{version:?}: record kept");
        }
    }

    #[test]
    fn a_store_without_its_tables_is_damaged_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap().save_daemon(&daemon("d1", 1)).unwrap();
        Connection::open(dir.path().join(DB_FILE)).unwrap().execute_batch("DROP TABLE daemons").unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(&err, StoreError::Damaged { what, .. } if what == "no table daemons"), "{err}");
        // Nothing was re-created behind the caller's back.
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let n: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'daemons'", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), vec![0x42u8; 5000]).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite { .. } | StoreError::Damaged { .. }), "{err}");
        assert_eq!(std::fs::read(dir.path().join(DB_FILE)).unwrap(), vec![0x42u8; 5000], "left as it was");
    }

    #[test]
    fn unreadable_records_are_reported_beside_the_readable_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save_daemon(&daemon("a", 1)).unwrap();
        store.lock().execute("INSERT INTO daemons (id, record) VALUES ('b', '{\"ID\":')", []).unwrap();
        store.save_daemon(&daemon("c", 3)).unwrap();
        let (good, bad) = store.daemons_and_unreadable().unwrap();
        assert_eq!(good.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(bad.len(), 1);
        assert!(matches!(&bad[0], StoreError::BadRecord { key, .. } if key == "b"), "{}", bad[0]);
    }

    /// A root whose path is not UTF-8 is a typed error, not a panic of the library.
    #[test]
    fn a_path_that_is_not_utf8_is_an_error_and_nothing_is_written() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut record = daemon("d1", 1);
        record.api_socket = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/r/\xff/api.sock"));
        let err = store.save_daemon(&record).unwrap_err();
        assert!(matches!(&err, StoreError::Encode { kind: "daemon", key, .. } if key == "d1"), "{err}");
        assert!(err.to_string().contains("must be UTF-8"), "{err}");
        assert!(store.daemons().unwrap().is_empty());
    }
}
