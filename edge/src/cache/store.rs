//! Storage: a byte-bounded in-memory tier (foyer, S3-FIFO) and an optional disk tier that
//! survives restarts (foyer's hybrid cache with the block engine).
//!
//! foyer cannot enumerate its keys, and purges match path prefixes, so the store keeps its own
//! index from purge path to the keys held in memory, maintained from foyer's leave events. Objects
//! that are only on disk (evicted from memory, or recovered after a restart) are not in the index;
//! purges are recorded as tombstones on disk and every object read from disk is checked against
//! the tombstones newer than it.
use std::{
    collections::{BTreeMap, HashSet},
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use foyer::{
    BlockEngineConfig, Cache, CacheBuilder, DeviceBuilder, Event, EventListener, FsDeviceBuilder,
    HybridCache, HybridCacheBuilder, HybridCachePolicy, PsyncIoEngineConfig, RecoverMode, S3FifoConfig,
    Source,
};
use parking_lot::Mutex;

use edgefleet_config::CacheConfig;

use super::{invalidation::PurgePattern, object::Entry};
use crate::{
    error::{Error, Result},
    metrics::CacheUsage,
};

/// Purges kept as tombstones; beyond this the disk tier is cleared instead (always correct).
const MAX_TOMBSTONES: usize = 10_000;
const TOMBSTONE_FILE: &str = "invalidations.log";

enum Tier {
    Memory(Cache<String, Entry>),
    Hybrid(HybridCache<String, Entry>),
}

/// The cache storage shared by every request.
pub(crate) struct Store {
    tier: Tier,
    index: Arc<PurgeIndex>,
    tombstones: Option<Tombstones>,
    capacity: u64,
}

/// Counts and cleans the index when foyer lets an entry go.
struct LeaveListener {
    index: Arc<PurgeIndex>,
}

impl EventListener for LeaveListener {
    type Key = String;
    type Value = Entry;

    fn on_leave(&self, reason: Event, key: &String, value: &Entry) {
        match reason {
            // The replacing insert re-indexes the key itself.
            Event::Replace => {}
            Event::Evict => {
                self.index.evictions.fetch_add(1, Ordering::Relaxed);
                self.index.remove(value.purge_path(), key);
            }
            Event::Remove | Event::Clear => self.index.remove(value.purge_path(), key),
        }
    }
}

/// Purge path → keys in the memory tier. It may briefly hold a key foyer has already dropped
/// (harmless: removing it is a no-op), never the reverse: keys are indexed after they are inserted.
#[derive(Default)]
struct PurgeIndex {
    paths: Mutex<BTreeMap<Box<str>, HashSet<String>>>,
    evictions: AtomicU64,
}

impl PurgeIndex {
    fn add(&self, purge_path: &str, key: &str) {
        let mut paths = self.paths.lock();
        match paths.get_mut(purge_path) {
            Some(keys) => {
                if !keys.contains(key) {
                    keys.insert(key.to_owned());
                }
            }
            None => {
                paths.insert(purge_path.into(), HashSet::from([key.to_owned()]));
            }
        }
    }

    fn remove(&self, purge_path: &str, key: &str) {
        let mut paths = self.paths.lock();
        if let Some(keys) = paths.get_mut(purge_path) {
            keys.remove(key);
            if keys.is_empty() {
                paths.remove(purge_path);
            }
        }
    }

    /// Keys whose purge path matches; taken out of the index.
    fn take_matching(&self, pattern: &PurgePattern) -> Vec<String> {
        let mut paths = self.paths.lock();
        let matching: Vec<Box<str>> = match pattern {
            PurgePattern::Exact(p) => paths
                .contains_key(p.as_str())
                .then(|| p.as_str().into())
                .into_iter()
                .collect(),
            PurgePattern::Prefix(p) => paths
                .range::<str, _>((std::ops::Bound::Included(p.as_str()), std::ops::Bound::Unbounded))
                .take_while(|(path, _)| path.starts_with(p.as_str()))
                .map(|(path, _)| path.clone())
                .collect(),
        };
        matching
            .iter()
            .filter_map(|path| paths.remove(path))
            .flatten()
            .collect()
    }
}

/// Purges remembered for objects read back from disk, persisted next to the disk tier.
struct Tombstones {
    file: PathBuf,
    entries: Mutex<Vec<(SystemTime, PurgePattern)>>,
}

impl Tombstones {
    fn open(dir: &Path) -> Result<Self> {
        let file = dir.join(TOMBSTONE_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(format!("reading {}", file.display()), e)),
        };
        // Lines are "<unix millis>\t<path>"; a damaged line is skipped, not fatal.
        let entries = text
            .lines()
            .filter_map(|line| {
                let (millis, path) = line.split_once('\t')?;
                let at = UNIX_EPOCH + Duration::from_millis(millis.parse().ok()?);
                Some((at, PurgePattern::parse(path).ok()?))
            })
            .collect();
        Ok(Self {
            file,
            entries: Mutex::new(entries),
        })
    }

    /// Records purges; returns false when the list is full and the tier must be cleared.
    fn record(&self, patterns: &[(PurgePattern, String)], at: SystemTime) -> Result<bool> {
        let mut entries = self.entries.lock();
        if entries.len() + patterns.len() > MAX_TOMBSTONES {
            entries.clear();
            std::fs::write(&self.file, b"")
                .map_err(|e| Error::io(format!("truncating {}", self.file.display()), e))?;
            return Ok(false);
        }
        let millis = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut lines = String::new();
        for (pattern, raw) in patterns {
            lines.push_str(&format!("{millis}\t{raw}\n"));
            entries.push((at, pattern.clone()));
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .map_err(|e| Error::io(format!("opening {}", self.file.display()), e))?;
        file.write_all(lines.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(format!("writing {}", self.file.display()), e))?;
        Ok(true)
    }

    fn buries(&self, entry: &Entry) -> bool {
        let stored_at = entry.stored_at();
        self.entries
            .lock()
            .iter()
            .any(|(at, pattern)| *at >= stored_at && pattern.matches(entry.purge_path()))
    }
}

impl Store {
    pub(crate) async fn open(config: &CacheConfig) -> Result<Self> {
        let index = Arc::new(PurgeIndex::default());
        let capacity = config.memory_bytes as usize;
        let max_object = config.max_object_bytes().max(1) as usize;
        // foyer bounds each shard by capacity / shards; an object must fit in one shard.
        let shards = (capacity / max_object).clamp(1, 8);
        let weigh = |k: &String, v: &Entry| k.len() + v.weight();
        let listener = Arc::new(LeaveListener { index: index.clone() });
        let (tier, tombstones) = match &config.disk {
            None => (
                Tier::Memory(
                    CacheBuilder::new(capacity)
                        .with_shards(shards)
                        .with_eviction_config(S3FifoConfig::default())
                        .with_weighter(weigh)
                        .with_event_listener(listener)
                        .build(),
                ),
                None,
            ),
            Some(disk) => {
                std::fs::create_dir_all(&disk.path)
                    .map_err(|e| Error::io(format!("creating {}", disk.path.display()), e))?;
                let tombstones = Tombstones::open(&disk.path)?;
                // A block is foyer's largest storable entry.
                let block = (max_object + (64 << 10))
                    .max(16 << 20)
                    .min(disk.bytes as usize / 2);
                let device = FsDeviceBuilder::new(disk.path.join("blocks"))
                    .with_capacity(disk.bytes as usize)
                    .build()
                    .map_err(|e| Error::DiskTier(e.to_string()))?;
                let hybrid = HybridCacheBuilder::new()
                    .with_name("edge")
                    .with_policy(HybridCachePolicy::WriteOnInsertion)
                    .with_flush_on_close(true)
                    .with_event_listener(listener)
                    .memory(capacity)
                    .with_shards(shards)
                    .with_eviction_config(S3FifoConfig::default())
                    .with_weighter(weigh)
                    .storage()
                    .with_io_engine_config(PsyncIoEngineConfig::new())
                    .with_engine_config(
                        BlockEngineConfig::new(device)
                            .with_block_size(block)
                            .with_tombstone_log(true),
                    )
                    .with_recover_mode(RecoverMode::Quiet)
                    .build()
                    .await
                    .map_err(|e| Error::DiskTier(e.to_string()))?;
                (Tier::Hybrid(hybrid), Some(tombstones))
            }
        };
        Ok(Self {
            tier,
            index,
            tombstones,
            capacity: config.memory_bytes,
        })
    }

    /// Looks in memory only; never waits.
    pub(crate) fn get_memory(&self, key: &str) -> Option<Entry> {
        match &self.tier {
            Tier::Memory(cache) => cache.get(key).map(|e| e.value().clone()),
            Tier::Hybrid(hybrid) => hybrid.memory().get(key).map(|e| e.value().clone()),
        }
    }

    /// Looks in memory, then on disk.
    pub(crate) async fn get(&self, key: &str) -> Option<Entry> {
        let Tier::Hybrid(hybrid) = &self.tier else {
            return self.get_memory(key);
        };
        if let Some(entry) = hybrid.memory().get(key) {
            return Some(entry.value().clone());
        }
        let entry = match hybrid.get(key).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "disk tier read failed; treating as a miss");
                return None;
            }
        };
        let value = entry.value().clone();
        if entry.source() != Source::Memory {
            if self.tombstones.as_ref().is_some_and(|t| t.buries(&value)) {
                hybrid.remove(key);
                return None;
            }
            // Loaded into memory by foyer: index it so purges reach it there.
            self.index.add(value.purge_path(), key);
        }
        Some(value)
    }

    pub(crate) fn insert(&self, key: String, entry: Entry) {
        let path: Box<str> = entry.purge_path().into();
        match &self.tier {
            Tier::Memory(cache) => {
                cache.insert(key.clone(), entry);
            }
            Tier::Hybrid(hybrid) => {
                hybrid.insert(key.clone(), entry);
            }
        }
        self.index.add(&path, &key);
    }

    pub(crate) fn remove(&self, key: &str) {
        match &self.tier {
            Tier::Memory(cache) => {
                cache.remove(key);
            }
            Tier::Hybrid(hybrid) => hybrid.remove(key),
        }
    }

    /// Removes every object matching the patterns; returns how many were in memory. Objects
    /// only on disk are buried by tombstones.
    pub(crate) async fn purge(&self, patterns: &[(PurgePattern, String)]) -> Result<usize> {
        let mut removed = 0;
        for (pattern, _) in patterns {
            for key in self.index.take_matching(pattern) {
                self.remove(&key);
                removed += 1;
            }
        }
        if let (Some(tombstones), Tier::Hybrid(hybrid)) = (&self.tombstones, &self.tier)
            && !tombstones.record(patterns, SystemTime::now())?
        {
            tracing::info!("too many purges remembered; clearing the disk tier");
            hybrid.clear().await.map_err(|e| Error::DiskTier(e.to_string()))?;
        }
        Ok(removed)
    }

    /// Bytes and objects in memory, and the evictions so far.
    pub(crate) fn usage(&self) -> CacheUsage {
        let (bytes, items) = match &self.tier {
            Tier::Memory(cache) => (cache.usage(), cache.entries()),
            Tier::Hybrid(hybrid) => (hybrid.memory().usage(), hybrid.memory().entries()),
        };
        CacheUsage {
            bytes: bytes as u64,
            items: items as u64,
            capacity: self.capacity,
            evictions: self.index.evictions.load(Ordering::Relaxed),
        }
    }

    /// Flushes the disk tier.
    pub(crate) async fn close(&self) {
        if let Tier::Hybrid(hybrid) = &self.tier
            && let Err(e) = hybrid.close().await
        {
            tracing::warn!(error = %e, "closing the disk tier");
        }
    }
}
