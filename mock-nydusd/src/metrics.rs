//! nydusd's counter sets and the lookup rule every metrics endpoint shares (`nydusd-api.md`
//! §2.2, shapes in §6). The mock serves no file data, so every counter stays zero; what is
//! modelled is which sets exist, under which id, and for how long.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::instance::InstanceConfig;
use crate::routes::MetricsKind;

/// FUSE operations nydusd counts (`fop_*` arrays have one slot each).
const FUSE_OPS: usize = 15;
/// Buckets of the size and latency histograms.
const BUCKETS: usize = 8;

#[derive(Debug, Clone)]
struct FsSet {
    files_account: bool,
    access_pattern: bool,
    latest_read_files: bool,
}

#[derive(Debug, Clone)]
struct BackendSet {
    backend_type: String,
    section: Value,
}

/// What a blob-cache id answers with.
#[derive(Debug, Clone)]
enum BlobcacheSet {
    /// The counters of a FUSE instance's cache manager, by manager key.
    Manager(String),
    /// A bound fscache blob's counters.
    Fscache { store_path: String },
}

/// One cache manager: nydusd shares one among instances whose configurations match (same
/// id, backend and cache) and drops it with its last instance.
#[derive(Debug, Clone)]
struct CacheManager {
    id: String,
    store_path: String,
    /// `underlying_files`: the cache files of every blob its instances' bootstraps name.
    files: std::collections::BTreeSet<String>,
    /// Mountpoints of the instances using it.
    users: std::collections::BTreeSet<String>,
}

/// The registered counter sets, by id.
#[derive(Debug, Default)]
pub struct CounterSets {
    /// By in-FUSE mount path. Never removed: nydusd keeps stale sets after umount.
    fs: BTreeMap<String, FsSet>,
    /// By the mount path of the instance that created the backend.
    backends: BTreeMap<String, BackendSet>,
    /// By the storage configuration's `id`: the set registered last under it (a new cache
    /// manager registers itself, replacing whatever was there).
    blobcaches: BTreeMap<String, BlobcacheSet>,
    /// Cache managers by key (id, backend section, cache directory).
    managers: BTreeMap<String, CacheManager>,
}

/// `Metrics(Stats(NoCounter))`: no set under that id, or no id and not exactly one set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoCounter;

fn select<'a, T>(sets: &'a BTreeMap<String, T>, id: Option<&str>) -> Result<&'a T, NoCounter> {
    match id {
        Some(id) => sets.get(id).ok_or(NoCounter),
        None if sets.len() == 1 => Ok(sets.values().next().expect("one set")),
        None => Err(NoCounter),
    }
}

impl CounterSets {
    /// Registers the sets a RAFS instance mounted at `mountpoint` creates.
    /// `blob_ids` are the blobs its bootstrap names: 2.4 names their cache files
    /// `<id>.blob.data`, 2.2 plain `<id>`.
    pub fn register_instance(
        &mut self,
        mountpoint: &str,
        config: &InstanceConfig,
        blob_ids: &[String],
        version: crate::version::NydusdVersion,
    ) {
        self.fs.insert(
            mountpoint.to_owned(),
            FsSet {
                files_account: config.files_account,
                access_pattern: config.access_pattern,
                latest_read_files: config.latest_read_files,
            },
        );
        self.register_backend(mountpoint, config);
        if let (Some(id), Some(work_dir)) = (&config.storage_id, &config.cache_work_dir) {
            let suffix = if version == crate::version::NydusdVersion::V2_4 { ".blob.data" } else { "" };
            let key = format!("{id}\0{}\0{work_dir}", config.backend);
            let manager = self.managers.entry(key.clone()).or_insert_with(|| CacheManager {
                id: id.clone(),
                store_path: work_dir.clone(),
                files: Default::default(),
                users: Default::default(),
            });
            if manager.users.is_empty() {
                self.blobcaches.insert(id.clone(), BlobcacheSet::Manager(key));
            }
            manager.users.insert(mountpoint.to_owned());
            manager.files.extend(blob_ids.iter().map(|blob| format!("{blob}{suffix}")));
        }
    }

    /// An instance went: a cache manager left without instances goes, and its release
    /// removes whatever set is registered under its id.
    pub fn release_instance(&mut self, mountpoint: &str) {
        let mut released = Vec::new();
        self.managers.retain(|_, manager| {
            manager.users.remove(mountpoint);
            let idle = manager.users.is_empty();
            if idle {
                released.push(manager.id.clone());
            }
            !idle
        });
        for id in released {
            self.blobcaches.remove(&id);
        }
    }

    /// Registers a backend unless an identical one exists (instances share backends).
    pub fn register_backend(&mut self, id: &str, config: &InstanceConfig) {
        if self.backends.values().any(|b| b.section == config.backend) {
            return;
        }
        self.backends
            .entry(id.to_owned())
            .or_insert(BackendSet { backend_type: config.backend_type.clone(), section: config.backend.clone() });
    }

    /// Registers a blob-cache set (fscache blobs in singleton mode).
    pub fn register_blobcache(&mut self, id: &str, store_path: &str) {
        self.blobcaches.entry(id.to_owned()).or_insert(BlobcacheSet::Fscache { store_path: store_path.to_owned() });
    }

    /// The body of one metrics endpoint.
    pub fn export(&self, kind: MetricsKind, id: Option<&str>, latest: bool) -> Result<Value, NoCounter> {
        match kind {
            MetricsKind::Global => {
                let set = select(&self.fs, id)?;
                let set_id =
                    id.map(str::to_owned).unwrap_or_else(|| self.fs.keys().next().cloned().unwrap_or_default());
                Ok(json!({
                    "files_account_enabled": set.files_account,
                    "access_pattern_enabled": set.access_pattern,
                    "record_latest_read_files_enabled": set.latest_read_files,
                    "measure_latency": true,
                    "id": set_id,
                    "nr_opens": 0,
                    "data_read": 0,
                    "block_count_read": ([0u64; BUCKETS]),
                    "fop_hits": ([0u64; FUSE_OPS]),
                    "fop_errors": ([0u64; FUSE_OPS]),
                    "fop_cumulative_latency_total": ([0u64; FUSE_OPS]),
                    "read_latency_dist": ([0u64; BUCKETS]),
                }))
            }
            // Nothing is ever read through the mock, so the per-file views are empty; with
            // `latest=true` nydusd returns (and clears) the ranges read since the last call.
            MetricsKind::Files => select(&self.fs, id).map(|_| if latest { json!([]) } else { json!({}) }),
            MetricsKind::Pattern => select(&self.fs, id).map(|_| json!([])),
            MetricsKind::Backend => {
                let set = select(&self.backends, id)?;
                Ok(json!({
                    "backend_type": set.backend_type,
                    "read_count": 0,
                    "read_errors": 0,
                    "read_amount_total": 0,
                    "read_cumulative_latency_millis_total": 0,
                    "read_cumulative_latency_millis_dist": ([0u64; BUCKETS]),
                    "read_count_block_size_dist": ([0u64; BUCKETS]),
                    "read_latency_sizes_dist": ([[0u64; BUCKETS]; BUCKETS]),
                }))
            }
            MetricsKind::Blobcache => {
                let (files, store_path) = match select(&self.blobcaches, id)? {
                    BlobcacheSet::Manager(key) => {
                        let manager = self.managers.get(key).ok_or(NoCounter)?;
                        (manager.files.iter().cloned().collect(), manager.store_path.clone())
                    }
                    BlobcacheSet::Fscache { store_path } => (Vec::new(), store_path.clone()),
                };
                Ok(json!({
                    "underlying_files": files,
                    "store_path": store_path,
                    "partial_hits": 0,
                    "whole_hits": 0,
                    "total": 0,
                    "entries_count": 0,
                    "prefetch_data_amount": 0,
                    "prefetch_requests_count": 0,
                    "prefetch_workers": 0,
                    "prefetch_unmerged_chunks": 0,
                    "prefetch_cumulative_time_millis": 0,
                    "prefetch_begin_time_secs": 0,
                    "prefetch_begin_time_millis": 0,
                    "prefetch_end_time_secs": 0,
                    "prefetch_end_time_millis": 0,
                    "buffered_backend_size": 0,
                    "data_all_ready": false,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::NydusdVersion::{V2_2, V2_4};

    fn registry(auth: &str) -> InstanceConfig {
        InstanceConfig::parse(&format!(
            r#"{{"device":{{"id":"/a","backend":{{"type":"registry","config":{{"auth":"{auth}"}}}},"cache":{{"type":"blobcache","config":{{"work_dir":"/w"}}}}}}}}"#
        ))
    }

    #[test]
    fn without_id_only_a_single_set_answers() {
        let mut sets = CounterSets::default();
        assert_eq!(sets.export(MetricsKind::Global, None, false), Err(NoCounter));
        sets.register_instance("/a", &registry("x"), &[], V2_4);
        assert_eq!(sets.export(MetricsKind::Global, None, false).unwrap()["id"], "/a");
        sets.register_instance("/b", &registry("y"), &[], V2_4);
        assert_eq!(sets.export(MetricsKind::Global, None, false), Err(NoCounter));
        assert_eq!(sets.export(MetricsKind::Global, Some("/b"), false).unwrap()["id"], "/b");
        assert_eq!(sets.export(MetricsKind::Pattern, Some("/c"), false), Err(NoCounter));
    }

    #[test]
    fn identical_backends_are_shared_under_the_first_mount() {
        let mut sets = CounterSets::default();
        sets.register_instance("/a", &registry("x"), &[], V2_4);
        sets.register_instance("/b", &registry("x"), &[], V2_4);
        assert!(sets.export(MetricsKind::Backend, None, false).is_ok());
        assert_eq!(sets.export(MetricsKind::Backend, Some("/b"), false), Err(NoCounter));
        assert_eq!(sets.export(MetricsKind::Blobcache, Some("/a"), false).unwrap()["store_path"], "/w");
    }

    #[test]
    fn a_cache_manager_is_shared_by_like_configurations_and_registered_when_created() {
        let mut sets = CounterSets::default();
        let blob = |c: char| c.to_string().repeat(64);
        let files = |sets: &CounterSets| sets.export(MetricsKind::Blobcache, None, false).map(|v| v["underlying_files"].clone());
        sets.register_instance("/a", &registry("x"), &[blob('a')], V2_4);
        assert_eq!(files(&sets), Ok(json!([format!("{}.blob.data", blob('a'))])));
        // The same configuration: the same manager, which gathers both blobs.
        sets.register_instance("/b", &registry("x"), &[blob('b')], V2_4);
        sets.release_instance("/b");
        assert_eq!(files(&sets).unwrap().as_array().map(Vec::len), Some(2), "kept while /a uses it");
        // Another backend: a new manager, which takes the id's place; when it goes, the id
        // answers nothing, though /a's manager lives on.
        sets.register_instance("/c", &registry("y"), &[blob('c')], V2_2);
        assert_eq!(files(&sets), Ok(json!([blob('c')])));
        sets.release_instance("/c");
        assert_eq!(files(&sets), Err(NoCounter));
    }
}
