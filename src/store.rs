//! The store: the only owner of persisted state. Function records live in sled; model
//! packages are copied into `state/packages/` (to a temporary name, fsynced, checksummed,
//! renamed) before a record points at them, so an acknowledged deploy survives a kill and a
//! half-written one is never visible.
//!
//! Records are versioned (`record`): a tag and a version, then self-describing JSON; records
//! of format 1 (plain bincode, written up to release `96ca636`) are read through frozen copies
//! of their types and rewritten in the current format. One record that cannot be read does not
//! hide the others: `load` returns it beside them. Each package copy holds a copy of its record
//! once the deploy is acknowledged (`MARKER`), so a copy whose record the store has lost is
//! told apart from one a killed deploy left behind, and kept.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Files of a package that are copied (anything else in the folder is ignored), besides the
/// shards a sharded checkpoint's index names.
pub const PACKAGE_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    crate::engine::SHARD_INDEX,
];

/// The files of the package in `src` that are copied, in a fixed order: `PACKAGE_FILES`, then
/// the shards its index names (when it has one and no `model.safetensors`).
pub fn package_files(src: &Path) -> Vec<String> {
    let mut files: Vec<String> = PACKAGE_FILES.iter().map(|f| f.to_string()).collect();
    if !src.join("model.safetensors").exists() {
        // An unreadable index is copied as it is; loading the copy reports it.
        files.extend(crate::engine::shard_names(src).unwrap_or_default());
    }
    files
}

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
    /// How the model's matrices are held in host memory, in device pools and on the link:
    /// `f32`, `f16` or `bf16` (absent: as the package stores them). Chosen at deploy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "bf16")]
    pub dtype: Option<crate::engine::Dtype>,
    /// How products over half weights are computed: `f32` (the default: F32 arithmetic on the
    /// widened weights) or `native` (half activations times half weights, F32 accumulation).
    /// Chosen at deploy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "f32")]
    pub compute: Option<crate::engine::Compute>,
}

impl Default for FunctionSettings {
    fn default() -> Self {
        Self { slo_ms: 1000.0, slo_percentile: 0.98, max_batch: 8, dtype: None, compute: None }
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

/// Inside a package copy once its deploy is acknowledged: the record as written to the store.
pub const MARKER: &str = ".faaswap-record.json";

/// What the store holds: every record it can read, and the keys of those it cannot.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<FunctionRecord>,
    /// Records read in an older format, already rewritten in the current one.
    pub migrated: usize,
    /// (name, why) of each record that cannot be read.
    pub unreadable: Vec<(String, String)>,
}

/// What `remove_unused_packages` found.
#[derive(Debug, Default, PartialEq)]
pub struct Cleanup {
    pub removed: usize,
    /// Copies of acknowledged deploys whose record is missing: (function name, copy), kept.
    pub orphaned: Vec<(String, String)>,
}

pub struct Store {
    root: PathBuf,
    db: sled::Db,
    functions: sled::Tree,
}

/// The on-disk form of a record.
mod record {
    use super::FunctionRecord;
    use serde::Deserialize;

    /// Leads every record of format 2 and later. A format-1 record starts with the length of
    /// its name as a little-endian u64 (at most 64), so its first byte is never 0xFA.
    const TAG: &[u8; 4] = b"\xfaFSW";
    pub const VERSION: u8 = 2;

    pub fn encode(r: &FunctionRecord) -> Vec<u8> {
        let mut out = TAG.to_vec();
        out.push(VERSION);
        out.extend(serde_json::to_vec(r).expect("records serialize"));
        out
    }

    /// The record and the format it was in.
    pub fn decode(bytes: &[u8]) -> Result<(FunctionRecord, u8), String> {
        match bytes.strip_prefix(TAG.as_slice()) {
            Some([VERSION, json @ ..]) => {
                serde_json::from_slice(json).map(|r| (r, VERSION)).map_err(|e| format!("format {VERSION}: {e}"))
            }
            Some([v, ..]) => Err(format!("format {v} is newer than this release reads (up to {VERSION})")),
            Some([]) => Err("empty record".into()),
            None => v1::decode(bytes).map(|r| (r, 1)),
        }
    }

    /// Format 1: `bincode` of the record as release 96ca636 defined it. These types are frozen
    /// copies; never change them.
    mod v1 {
        use super::super::{FunctionRecord, FunctionSettings};
        use super::Deserialize;
        use crate::policy::{ModelClass, Profile};

        #[derive(Deserialize)]
        struct Record {
            name: String,
            model: String,
            digest: String,
            package_dir: String,
            settings: Settings,
            created_unix_ms: u64,
            profile: Option<Prof>,
        }

        #[derive(Deserialize)]
        struct Settings {
            slo_ms: f64,
            slo_percentile: f64,
            max_batch: u64,
        }

        #[derive(Deserialize)]
        struct Prof {
            weight_bytes: u64,
            exec_ms: f64,
            class: Option<Class>,
        }

        #[derive(Deserialize)]
        enum Class {
            Light,
            Medium,
            Heavy,
        }

        pub fn decode(bytes: &[u8]) -> Result<FunctionRecord, String> {
            let r: Record = bincode::deserialize(bytes).map_err(|e| format!("format 1: {e}"))?;
            Ok(FunctionRecord {
                name: r.name,
                model: r.model,
                digest: r.digest,
                package_dir: r.package_dir,
                settings: FunctionSettings {
                    slo_ms: r.settings.slo_ms,
                    slo_percentile: r.settings.slo_percentile,
                    max_batch: usize::try_from(r.settings.max_batch).map_err(|e| e.to_string())?,
                    dtype: None,
                    compute: None,
                },
                created_unix_ms: r.created_unix_ms,
                profile: r.profile.map(|p| Profile {
                    weight_bytes: p.weight_bytes,
                    exec_ms: p.exec_ms,
                    class: p.class.map(|c| match c {
                        Class::Light => ModelClass::Light,
                        Class::Medium => ModelClass::Medium,
                        Class::Heavy => ModelClass::Heavy,
                    }),
                }),
            })
        }
    }
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
        let (tmp, digest) = self.copy_to_tmp(src, name)?;
        let rel = format!("packages/{name}-{}", &digest[..16]);
        let dst = self.root.join(&rel);
        if dst.exists() {
            // The same bytes are already there (a redeploy): keep that copy.
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        } else {
            std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
            sync_dir(&self.root.join("packages"))?;
        }
        Ok((rel, digest))
    }

    /// Copies a package's files into a temporary folder of `packages/` (every file and folder
    /// fsynced); returns it and the package's digest.
    fn copy_to_tmp(&self, src: &Path, name: &str) -> Result<(PathBuf, String), StoreError> {
        let tmp = self.root.join("packages").join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        let digest = hash_package(src, Some(&tmp))?;
        if tmp.join("1_Pooling").is_dir() {
            sync_dir(&tmp.join("1_Pooling"))?;
        }
        if tmp.is_dir() {
            sync_dir(&tmp)?;
        }
        Ok((tmp, digest))
    }

    /// Writes a record and flushes it to disk before returning.
    pub fn put(&self, record: &FunctionRecord) -> Result<(), StoreError> {
        self.functions.insert(record.name.as_bytes(), record::encode(record))?;
        self.db.flush()?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        self.functions.get(name.as_bytes())?.map(|v| decode(name, &v)).transpose()
    }

    /// Every record, each read on its own: the unreadable ones are listed by key, never in the
    /// way of the others. Records of an older format are rewritten in the current one.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        for kv in self.functions.iter() {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            match record::decode(&v) {
                Ok((r, _)) if r.name != key => {
                    loaded.unreadable.push((key, format!("it names another function ({:?})", r.name)))
                }
                Ok((r, version)) => {
                    if version != record::VERSION {
                        self.functions.insert(k, record::encode(&r))?;
                        loaded.migrated += 1;
                    }
                    loaded.records.push(r);
                }
                Err(reason) => loaded.unreadable.push((key, reason)),
            }
        }
        if loaded.migrated > 0 {
            self.db.flush()?;
        }
        Ok(loaded)
    }

    /// Removes a record, flushed before returning. Its package copy's marker goes first, so a
    /// copy without a record is never mistaken for one whose record was lost; the copy itself
    /// stays until `remove_unused_packages`.
    pub fn delete_record(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        let Some(bytes) = self.functions.get(name.as_bytes())? else {
            return Ok(None);
        };
        let old = decode(name, &bytes).ok();
        for dir in self.copies_of(name, old.as_ref())? {
            remove_marker(&self.root.join(&dir))?;
        }
        self.functions.remove(name.as_bytes())?;
        self.db.flush()?;
        Ok(old)
    }

    /// Marks a package copy as acknowledged (fsynced): it holds its record from now on.
    pub fn mark_acknowledged(&self, record: &FunctionRecord) -> Result<(), StoreError> {
        if record.package_dir.is_empty() {
            return Ok(());
        }
        let dir = self.package_path(record);
        let tmp = dir.join(format!("{MARKER}.tmp"));
        let to = dir.join(MARKER);
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&serde_json::to_vec(record).expect("records serialize")).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &to).map_err(io(&to))?;
        sync_dir(&dir)
    }

    /// The package copies that belong to function `name`: its record's, and (for a record that
    /// cannot be read) every copy named after it.
    fn copies_of(&self, name: &str, record: Option<&FunctionRecord>) -> Result<Vec<String>, StoreError> {
        if let Some(r) = record {
            return Ok((!r.package_dir.is_empty()).then(|| r.package_dir.clone()).into_iter().collect());
        }
        let packages = self.root.join("packages");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&packages).map_err(io(&packages))? {
            let file = entry.map_err(io(&packages))?.file_name().to_string_lossy().into_owned();
            if copy_owner(&file) == Some(name) {
                out.push(format!("packages/{file}"));
            }
        }
        Ok(out)
    }

    /// An operator's removal of a function that is persisted but not served (its record
    /// unreadable or lost, its copy changed): the record if any, and its package copies.
    pub fn forget(&self, name: &str) -> Result<(), StoreError> {
        let record = match self.functions.get(name.as_bytes())? {
            Some(bytes) => decode(name, &bytes).ok(),
            None => None,
        };
        let mut dirs = self.copies_of(name, None)?;
        dirs.extend(self.copies_of(name, record.as_ref())?);
        for dir in &dirs {
            remove_marker(&self.root.join(dir))?;
        }
        self.functions.remove(name.as_bytes())?;
        self.db.flush()?;
        for dir in dirs {
            let path = self.root.join(dir);
            if path.exists() {
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }

    /// SHA-256 over a package folder's files (names and contents), as `import_package`
    /// computes it.
    pub fn digest_of(dir: &Path) -> Result<String, StoreError> {
        hash_package(dir, None)
    }

    /// Replaces a record's package copy with a fresh copy of `src`, which must have the
    /// record's digest (a copy that changed on disk, restored from its repository). The copy
    /// is made and checked first; a killed replacement leaves the record pointing at a missing
    /// copy, which the next start replaces again.
    pub fn reimport(&self, record: &FunctionRecord, src: &Path) -> Result<(), StoreError> {
        let (tmp, digest) = self.copy_to_tmp(src, &record.name)?;
        if digest != record.digest {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
            return Err(StoreError::Corrupt {
                key: record.name.clone(),
                reason: format!("the package has digest {digest}, not the recorded {}", record.digest),
            });
        }
        let dst = self.package_path(record);
        if dst.exists() {
            std::fs::remove_dir_all(&dst).map_err(io(&dst))?;
        }
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        sync_dir(&self.root.join("packages"))
    }

    /// Deletes package folders no record points at: copies left by a deploy that was killed
    /// before it was acknowledged (no marker), and packages of deleted functions. Copies of
    /// acknowledged deploys whose record is missing (a damaged store), and every copy named
    /// after a function in `keep` (records that cannot be read), stay.
    pub fn remove_unused_packages(&self, keep: &[String]) -> Result<Cleanup, StoreError> {
        let used: Vec<String> = self.load()?.records.into_iter().map(|r| r.package_dir).collect();
        let packages = self.root.join("packages");
        let mut cleanup = Cleanup::default();
        for entry in std::fs::read_dir(&packages).map_err(io(&packages))? {
            let entry = entry.map_err(io(&packages))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("packages/{file}");
            if used.contains(&rel) {
                continue;
            }
            let owner = copy_owner(&file).filter(|_| !file.starts_with(".tmp-"));
            if owner.is_some_and(|o| keep.iter().any(|k| k == o)) {
                continue;
            }
            if let (Some(owner), true) = (owner, entry.path().join(MARKER).is_file()) {
                cleanup.orphaned.push((owner.to_string(), rel));
                continue;
            }
            std::fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
            cleanup.removed += 1;
        }
        Ok(cleanup)
    }
}

/// The function a package copy `{name}-{digest prefix}` belongs to.
fn copy_owner(dir_name: &str) -> Option<&str> {
    let (name, digest) = dir_name.rsplit_once('-')?;
    (digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

fn remove_marker(dir: &Path) -> Result<(), StoreError> {
    let marker = dir.join(MARKER);
    match std::fs::remove_file(&marker) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io { path: marker, source }),
    }
}

/// Opens sled, waiting up to 5 s for the file lock: a server that is restarting may still be
/// releasing it (an old process exiting, or the previous server in this process finishing its
/// shutdown on worker threads).
#[allow(clippy::disallowed_methods)] // the store is sled's one user; start-up, before any request
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
    record::decode(bytes).map(|(r, _)| r).map_err(|reason| StoreError::Corrupt { key: key.to_string(), reason })
}

/// SHA-256 over the package files in `src` (each file's name, then its contents), copying
/// each into `to` (fsynced) when given.
fn hash_package(src: &Path, to: Option<&Path>) -> Result<String, StoreError> {
    let mut digest = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for file in package_files(src) {
        let file = file.as_str();
        let from = src.join(file);
        if !from.is_file() {
            continue;
        }
        digest.update(file.as_bytes());
        let mut reader = File::open(&from).map_err(io(&from))?;
        let mut writer = match to {
            Some(dir) => {
                let path = dir.join(file);
                std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io(&path))?;
                Some((File::create(&path).map_err(io(&path))?, path))
            }
            None => None,
        };
        loop {
            let n = reader.read(&mut buf).map_err(io(&from))?;
            if n == 0 {
                break;
            }
            digest.update(&buf[..n]);
            if let Some((w, path)) = &mut writer {
                w.write_all(&buf[..n]).map_err(io(path))?;
            }
        }
        if let Some((w, path)) = writer {
            w.sync_all().map_err(io(&path))?;
        }
    }
    Ok(hex::encode(digest.finalize()))
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
        assert_eq!(store.remove_unused_packages(&[]).unwrap(), Cleanup { removed: 1, orphaned: vec![] });
        assert!(!copy.exists(), "the package copy goes with its last record");
        assert!(store.load().unwrap().records.is_empty());
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
        assert_eq!(store.remove_unused_packages(&[]).unwrap().removed, 2, "no record points at either copy");
        assert!(!state.path().join(dir_a).exists());
    }

    fn record(store: &Store, src: &Path, name: &str) -> FunctionRecord {
        let (package_dir, digest) = store.import_package(src, name).unwrap();
        FunctionRecord {
            name: name.into(),
            model: "m".into(),
            digest,
            package_dir,
            settings: FunctionSettings { slo_ms: 250.0, ..Default::default() },
            created_unix_ms: 7,
            profile: None,
        }
    }

    /// The state directory written by release 96ca636 (records in format 1), committed under
    /// `tests/state/`: every record reads, and is rewritten in the current format.
    #[test]
    fn records_of_format_1_are_read_and_migrated() {
        let state = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/state/v1-cpu/db");
        std::fs::create_dir_all(state.path().join("db")).unwrap();
        for f in ["conf", "db"] {
            std::fs::copy(src.join(f), state.path().join("db").join(f)).unwrap();
        }
        let store = Store::open(state.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!((loaded.migrated, loaded.unreadable.len()), (2, 0));
        let encoder = loaded.records.iter().find(|r| r.name == "encoder").unwrap();
        assert_eq!(
            (encoder.model.as_str(), encoder.settings.max_batch, encoder.settings.slo_ms),
            ("bert-nano", 4, 250.0)
        );
        assert_eq!(encoder.package_dir, "packages/encoder-b0054e28f8eab47c");
        let raw = store.functions.get("encoder").unwrap().unwrap();
        assert!(raw.starts_with(b"\xfaFSW\x02{"), "rewritten in format 2");
        let again = store.load().unwrap();
        assert_eq!((again.migrated, again.records), (0, loaded.records));
    }

    #[test]
    fn an_unreadable_record_hides_none_of_the_others() {
        let state = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        package(src.path());
        let store = Store::open(state.path()).unwrap();
        let good = record(&store, src.path(), "good");
        store.put(&good).unwrap();
        for (key, bytes) in [
            ("garbage", b"\x01\x02\x03".to_vec()),
            ("future", b"\xfaFSW\x09{}".to_vec()),
            ("bad-json", b"\xfaFSW\x02{\"name\": 1}".to_vec()),
        ] {
            store.functions.insert(key, bytes).unwrap();
        }
        let mut moved = good.clone();
        moved.name = "other".into();
        store.functions.insert("renamed", record::encode(&moved)).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.records, vec![good]);
        let keys: Vec<&str> = loaded.unreadable.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["bad-json", "future", "garbage", "renamed"]);
        assert!(loaded.unreadable[1].1.contains("newer"), "{:?}", loaded.unreadable[1]);
        assert!(store.get("garbage").is_err());
    }

    #[test]
    fn copies_of_lost_records_and_of_unreadable_ones_stay() {
        let state = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        package(src.path());
        let store = Store::open(state.path()).unwrap();
        // Acknowledged, then its record lost (as a damaged store would).
        let lost = record(&store, src.path(), "lost");
        store.put(&lost).unwrap();
        store.mark_acknowledged(&lost).unwrap();
        store.functions.remove("lost").unwrap();
        // A deploy killed before it was acknowledged.
        let (killed, _) = store.import_package(src.path(), "killed").unwrap();
        // A copy whose record cannot be read (written before markers existed).
        let (unreadable, _) = store.import_package(src.path(), "unreadable").unwrap();
        let cleanup = store.remove_unused_packages(&["unreadable".to_string()]).unwrap();
        assert_eq!(cleanup, Cleanup { removed: 1, orphaned: vec![("lost".into(), lost.package_dir.clone())] });
        assert!(!state.path().join(killed).exists());
        assert!(state.path().join(&unreadable).exists() && store.package_path(&lost).exists());
        let marked: FunctionRecord =
            serde_json::from_slice(&std::fs::read(store.package_path(&lost).join(MARKER)).unwrap()).unwrap();
        assert_eq!(marked, lost, "the copy holds its record");
        // An undeploy removes the marker before the record: its copy is then an ordinary leftover.
        let gone = record(&store, src.path(), "gone");
        store.put(&gone).unwrap();
        store.mark_acknowledged(&gone).unwrap();
        store.delete_record("gone").unwrap();
        assert_eq!(store.remove_unused_packages(&["unreadable".to_string()]).unwrap().removed, 1);
        // An operator's delete forgets the rest.
        store.forget("unreadable").unwrap();
        store.forget("lost").unwrap();
        assert!(!state.path().join(&unreadable).exists() && !store.package_path(&lost).exists());
    }

    #[test]
    fn a_changed_copy_is_told_by_its_digest_and_reimported_from_the_same_package() {
        let state = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        package(src.path());
        let store = Store::open(state.path()).unwrap();
        let r = record(&store, src.path(), "f");
        let copy = store.package_path(&r);
        assert_eq!(Store::digest_of(&copy).unwrap(), r.digest);
        std::fs::write(copy.join("model.safetensors"), b"weightz").unwrap();
        assert_ne!(Store::digest_of(&copy).unwrap(), r.digest);
        store.reimport(&r, src.path()).unwrap();
        assert_eq!(Store::digest_of(&copy).unwrap(), r.digest);
        std::fs::write(src.path().join("model.safetensors"), b"other").unwrap();
        assert!(store.reimport(&r, src.path()).is_err(), "not the recorded package");
        assert_eq!(Store::digest_of(&copy).unwrap(), r.digest, "and the copy is left as it was");
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
