//! The store: the only owner of persisted state. Function records live in sled; model
//! packages are copied into `state/packages/` (to a temporary name, fsynced, checksummed,
//! renamed) before a record points at them, so an acknowledged deploy survives a kill and a
//! half-written one is never visible.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Files of a package that are copied (anything else in the folder is ignored).
pub const PACKAGE_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Db(#[from] sled::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state store record {key:?} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// A function's SLO and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionSettings {
    /// Latency deadline in milliseconds.
    pub slo_ms: f64,
    /// The percentile the deadline applies to, in (0, 1).
    pub slo_percentile: f64,
    /// Most requests run together in one batch.
    pub max_batch: usize,
}

impl Default for FunctionSettings {
    fn default() -> Self {
        Self { slo_ms: 1000.0, slo_percentile: 0.98, max_batch: 8 }
    }
}

impl FunctionSettings {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.slo_ms.is_finite() && self.slo_ms > 0.0) {
            return Err(format!("slo_ms {} must be a positive number of milliseconds", self.slo_ms));
        }
        if !(self.slo_percentile > 0.0 && self.slo_percentile < 1.0) {
            return Err(format!("slo_percentile {} must be in (0, 1)", self.slo_percentile));
        }
        if !(1..=1024).contains(&self.max_batch) {
            return Err(format!("max_batch {} must be 1 to 1024", self.max_batch));
        }
        Ok(())
    }
}

/// A deployed function as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    /// The package it was deployed from (a model repository name or a folder).
    pub model: String,
    /// SHA-256 over the package's files (names and contents).
    pub digest: String,
    /// The package copy, relative to the state directory.
    pub package_dir: String,
    pub settings: FunctionSettings,
    pub created_unix_ms: u64,
    /// Set for a function deployed from a profile alone (no package: `package_dir` is empty).
    pub profile: Option<crate::policy::Profile>,
}

pub struct Store {
    root: PathBuf,
    db: sled::Db,
    functions: sled::Tree,
}

impl Store {
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir.join("packages")).map_err(io(state_dir))?;
        // Every write is flushed before it is acknowledged, so sled's background flusher is not
        // needed; without it no thread outlives the store and keeps its file lock, and a
        // restart in the same process (tests) or right after the old process exits opens it.
        let db = open_db(&state_dir.join("db"))?;
        let functions = db.open_tree("functions")?;
        Ok(Self { root: state_dir.to_path_buf(), db, functions })
    }

    pub fn package_path(&self, record: &FunctionRecord) -> PathBuf {
        self.root.join(&record.package_dir)
    }

    /// Copies a package folder into the state directory and returns (relative dir, digest).
    /// The copy appears under its final name only once complete and on disk.
    pub fn import_package(&self, src: &Path, name: &str) -> Result<(String, String), StoreError> {
        let packages = self.root.join("packages");
        let tmp = packages.join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        let mut digest = Sha256::new();
        for file in PACKAGE_FILES {
            let from = src.join(file);
            if !from.is_file() {
                continue;
            }
            let to = tmp.join(file);
            std::fs::create_dir_all(to.parent().expect("has a parent")).map_err(io(&to))?;
            digest.update(file.as_bytes());
            copy_hashing(&from, &to, &mut digest)?;
        }
        if tmp.join("1_Pooling").is_dir() {
            sync_dir(&tmp.join("1_Pooling"))?;
        }
        if tmp.is_dir() {
            sync_dir(&tmp)?;
        }
        let digest = hex::encode(digest.finalize());
        let rel = format!("packages/{name}-{}", &digest[..16]);
        let dst = self.root.join(&rel);
        if dst.exists() {
            // The same bytes are already there (a redeploy): keep that copy.
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        } else {
            std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
            sync_dir(&packages)?;
        }
        Ok((rel, digest))
    }

    /// Writes a record and flushes it to disk before returning.
    pub fn put(&self, record: &FunctionRecord) -> Result<(), StoreError> {
        let bytes = bincode::serialize(record)
            .map_err(|e| StoreError::Corrupt { key: record.name.clone(), reason: e.to_string() })?;
        self.functions.insert(record.name.as_bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        self.functions.get(name.as_bytes())?.map(|v| decode(name, &v)).transpose()
    }

    pub fn list(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        self.functions
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    /// Removes a record, flushed before returning. Its package copy stays until
    /// `remove_unused_packages`.
    pub fn delete_record(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        let Some(old) = self.functions.remove(name.as_bytes())? else {
            return Ok(None);
        };
        self.db.flush()?;
        decode(name, &old).map(Some)
    }

    /// Deletes package folders no record points at: copies left by a deploy that was killed
    /// before its record was written, and packages of deleted functions.
    pub fn remove_unused_packages(&self) -> Result<usize, StoreError> {
        let used: Vec<String> = self.list()?.into_iter().map(|r| r.package_dir).collect();
        let packages = self.root.join("packages");
        let mut removed = 0;
        for entry in std::fs::read_dir(&packages).map_err(io(&packages))? {
            let entry = entry.map_err(io(&packages))?;
            let rel = format!("packages/{}", entry.file_name().to_string_lossy());
            if !used.contains(&rel) {
                std::fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Opens sled, waiting up to 5 s for the file lock: a server that is restarting may still be
/// releasing it (an old process exiting, or the previous server in this process finishing its
/// shutdown on worker threads).
#[allow(clippy::disallowed_methods)] // start-up, before any request is served
fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new().path(path).flush_every_ms(None).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                tracing::debug!("state store locked, retrying: {e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<FunctionRecord, StoreError> {
    bincode::deserialize(bytes).map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
}

fn copy_hashing(from: &Path, to: &Path, digest: &mut Sha256) -> Result<(), StoreError> {
    let mut src = File::open(from).map_err(io(from))?;
    let mut dst = File::create(to).map_err(io(to))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).map_err(io(from))?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io(to))?;
    }
    dst.sync_all().map_err(io(to))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(dir: &Path) {
        std::fs::write(dir.join("config.json"), b"{}").unwrap();
        std::fs::write(dir.join("model.safetensors"), b"weights").unwrap();
        std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
    }

    #[test]
    fn records_survive_reopen_and_packages_are_copied_whole() {
        let state = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        package(src.path());
        let record = {
            let store = Store::open(state.path()).unwrap();
            let (dir, digest) = store.import_package(src.path(), "f1").unwrap();
            let record = FunctionRecord {
                name: "f1".into(),
                model: "m".into(),
                digest,
                package_dir: dir,
                settings: FunctionSettings::default(),
                created_unix_ms: 1,
                profile: None,
            };
            store.put(&record).unwrap();
            record
        };
        let store = Store::open(state.path()).unwrap();
        assert_eq!(store.get("f1").unwrap(), Some(record.clone()));
        let copy = store.package_path(&record);
        assert_eq!(std::fs::read(copy.join("model.safetensors")).unwrap(), b"weights");
        assert!(!copy.join("notes.txt").exists());
        assert_eq!(store.delete_record("f1").unwrap(), Some(record));
        assert_eq!(store.remove_unused_packages().unwrap(), 1);
        assert!(!copy.exists(), "the package copy goes with its last record");
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn orphaned_copies_are_removed_and_digests_follow_content() {
        let state = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        package(src.path());
        let store = Store::open(state.path()).unwrap();
        let (dir_a, digest_a) = store.import_package(src.path(), "a").unwrap();
        std::fs::write(src.path().join("model.safetensors"), b"other weights").unwrap();
        let (_, digest_b) = store.import_package(src.path(), "a").unwrap();
        assert_ne!(digest_a, digest_b);
        assert_eq!(store.remove_unused_packages().unwrap(), 2, "no record points at either copy");
        assert!(!state.path().join(dir_a).exists());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // holds the lock a while from another thread
    fn opening_waits_for_a_store_that_is_being_closed() {
        let state = tempfile::tempdir().unwrap();
        let first = Store::open(state.path()).unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(first);
        });
        let second = Store::open(state.path());
        closer.join().unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
    }

    #[test]
    fn settings_are_validated() {
        assert!(FunctionSettings::default().validate().is_ok());
        for bad in [
            FunctionSettings { slo_ms: 0.0, ..Default::default() },
            FunctionSettings { slo_percentile: 1.0, ..Default::default() },
            FunctionSettings { max_batch: 0, ..Default::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
