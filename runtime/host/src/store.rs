//! The host's state directory: content-addressed artifacts on disk, and an embedded database
//! (redb, `state.redb`) with every function's immutable versions, what serves its traffic (the
//! stable version and any rollout in progress), the audit log, and the model store.
//!
//! Layout:
//! ```text
//! blobs/sha256/<hex>   model files and WASM components, named by their sha256
//! state.redb           versions, deployments, rollouts, audit events, model ids, API keys
//! admin-token          the control plane's token (mode 0600)
//! compiled/            compiled components, cached by digest
//! tmp/                 uploads in progress (emptied at every start)
//! ```
//! The directory is the owner's only (mode 0700): specs hold `capabilities.env` values, and the
//! database the API keys' hashes.
//! The admin token stays a file of its own: `aifn` commands on the host's machine read it while
//! the host holds `state.redb` open, and redb lets only one process open a database. Older
//! layouts are imported on first start: per-version JSON files, and `keys.json`.
//! A change of what serves traffic is one database transaction (the new version, the deployment
//! and the audit event together), and blobs land (synced, renamed) before any record names them:
//! a host killed at any moment, even by `kill -9`, restarts with either the old or the new state,
//! never half of one.

use crate::keys::KeyRecord;
pub use crate::records::now_unix;
use crate::records::{Artifact, AuditEvent, Deployment, Digest, ModelEntry, VersionRecord};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("corrupt record {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("state database: {0}")]
    Db(#[source] redb::Error),
    #[error("`{0}` has no version {1}")]
    NoSuchVersion(String, u64),
    #[error("artifact {0} is not in the store; upload it first")]
    MissingBlob(Digest),
    #[error(
        "upload does not match its digest: expected {expected}, received data hashes to {actual}"
    )]
    DigestMismatch { expected: Digest, actual: Digest },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// (function, version) → [`VersionRecord`] as JSON.
const VERSIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("versions");
/// function → [`Deployment`] as JSON; absent for functions not deployed.
const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
/// (function, sequence number) → [`AuditEvent`] as JSON.
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// model id → [`ModelEntry`] as JSON.
const MODELS: TableDefinition<&str, &[u8]> = TableDefinition::new("models");
/// API key id → [`KeyRecord`] as JSON (the key's hash, never its secret).
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// (function, request id) → [`crate::records::PredictionRecord`] JSON: answers kept for their labels.
const PREDICTIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("predictions");

pub struct Store {
    root: PathBuf,
    db: Database,
}

impl Store {
    /// Opens (or creates) the state directory. Nothing is in flight while a host starts, so what
    /// a crash left behind goes: interrupted uploads, and blobs no record names (an upload whose
    /// deploy never committed, a model id's replaced file).
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(root).map_err(io_err("creating", root))?;
        owner_only(root)?;
        for dir in ["blobs/sha256", "compiled", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        }
        // Models optimized for sharing their weights are made again by each process.
        let optimized = root.join("optimized");
        let _ = fs::remove_dir_all(&optimized);
        fs::create_dir_all(&optimized).map_err(io_err("creating", &optimized))?;
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp)
            .map_err(io_err("listing", &tmp))?
            .flatten()
        {
            let _ = fs::remove_file(entry.path());
        }
        // A kill inside `write_atomically` leaves its temporary file beside the target.
        for entry in fs::read_dir(root)
            .map_err(io_err("listing", root))?
            .flatten()
        {
            if is_interrupted_write(&entry.file_name().to_string_lossy()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        let path = root.join("state.redb");
        let existed = path.exists();
        let store = Store {
            root: root.to_path_buf(),
            db: Database::create(&path).map_err(db)?,
        };
        // Every table exists from the start, so readers never meet a missing one.
        store.write(|txn| {
            txn.tx.open_table(VERSIONS).map_err(db)?;
            txn.tx.open_table(DEPLOYMENTS).map_err(db)?;
            txn.tx.open_table(EVENTS).map_err(db)?;
            txn.tx.open_table(MODELS).map_err(db)?;
            txn.tx.open_table(KEYS).map_err(db)?;
            txn.tx.open_table(PREDICTIONS).map_err(db)?;
            Ok(())
        })?;
        if !existed {
            store.import_files()?;
        }
        owner_only(&path)?;
        let (blobs, bytes) = store.collect_garbage(std::time::Duration::ZERO)?;
        if blobs > 0 {
            tracing::info!("removed {blobs} blobs ({bytes} bytes) that no record names");
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn compiled_dir(&self) -> PathBuf {
        self.root.join("compiled")
    }

    /// Where ONNX Runtime's optimized copies of the loaded models are kept (see `aifn_model`).
    pub fn optimized_dir(&self) -> PathBuf {
        self.root.join("optimized")
    }

    // ---- artifacts ----

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        if !path.exists() {
            return Err(StoreError::MissingBlob(digest.clone()));
        }
        fs::read(&path).map_err(io_err("reading", &path))
    }

    /// Starts an upload; the data is hashed as it is written and only lands under its digest.
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let path = self
            .root
            .join("tmp")
            .join(format!("upload-{:016x}", rand::random::<u64>()));
        let file = File::create(&path).map_err(io_err("creating", &path))?;
        Ok(BlobWriter {
            file,
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Lands an upload under its digest if the data matches it; the temporary file goes either way.
    pub fn finish_blob(
        &self,
        mut writer: BlobWriter,
        expected: &Digest,
    ) -> Result<Artifact, StoreError> {
        let actual = Digest::from_bytes(std::mem::take(&mut writer.hasher).finalize().into());
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let path = writer.path.clone();
        writer.file.sync_all().map_err(io_err("syncing", &path))?;
        let size = writer.size;
        let target = self.blob_path(expected);
        fs::rename(&path, &target).map_err(io_err("storing", &target))?;
        sync_dir(target.parent().expect("blob has a parent"))?;
        Ok(Artifact {
            digest: actual,
            size,
        })
    }

    // ---- versions, deployments, audit log, model ids: the database ----

    /// Reads within one consistent snapshot of the database.
    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        f(&tx)
    }

    /// Runs `change` in one write transaction: all of it lands, or (on an error, or a crash
    /// before the commit) none of it.
    pub fn write<T>(
        &self,
        change: impl FnOnce(&mut Txn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = Txn {
            tx: self.db.begin_write().map_err(db)?,
            store: self,
        };
        let value = change(&mut txn)?;
        txn.tx.commit().map_err(db)?;
        Ok(value)
    }

    pub fn next_version(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self.versions(name)?.last().map_or(1, |r| r.version + 1))
    }

    pub fn version(&self, name: &str, version: u64) -> Result<VersionRecord, StoreError> {
        self.read(|tx| {
            let table = tx.open_table(VERSIONS).map_err(db)?;
            let row = table.get((name, version)).map_err(db)?;
            match row {
                Some(bytes) => decode(bytes.value(), "version"),
                None => Err(StoreError::NoSuchVersion(name.to_string(), version)),
            }
        })
    }

    /// Every version of a function still kept, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionRecord>, StoreError> {
        self.read(|tx| {
            let table = tx.open_table(VERSIONS).map_err(db)?;
            let mut records = Vec::new();
            for row in table.range((name, 0)..=(name, u64::MAX)).map_err(db)? {
                let (_, bytes) = row.map_err(db)?;
                records.push(decode(bytes.value(), "version")?);
            }
            Ok(records)
        })
    }

    /// What serves a function's traffic; `None` when it is not deployed (or was deleted).
    pub fn deployment(&self, name: &str) -> Result<Option<Deployment>, StoreError> {
        self.read(|tx| {
            let table = tx.open_table(DEPLOYMENTS).map_err(db)?;
            let row = table.get(name).map_err(db)?;
            row.map(|bytes| decode(bytes.value(), "deployment"))
                .transpose()
        })
    }

    /// Every deployed function and what serves it, by name.
    pub fn deployments(&self) -> Result<Vec<(String, Deployment)>, StoreError> {
        self.read(|tx| {
            let table = tx.open_table(DEPLOYMENTS).map_err(db)?;
            let mut all = Vec::new();
            for row in table.iter().map_err(db)? {
                let (name, bytes) = row.map_err(db)?;
                all.push((
                    name.value().to_string(),
                    decode(bytes.value(), "deployment")?,
                ));
            }
            Ok(all)
        })
    }

    /// The predictions of one version of `function` kept for labels.
    pub fn predictions(
        &self,
        function: &str,
        version: u64,
    ) -> Result<Vec<(String, crate::records::PredictionRecord)>, StoreError> {
        self.read(|tx| {
            let table = tx.open_table(PREDICTIONS).map_err(db)?;
            let mut found = Vec::new();
            for row in table.range((function, "")..).map_err(db)? {
                let (key, value) = row.map_err(db)?;
                let (name, id) = key.value();
                if name != function {
                    break;
                }
                let record: crate::records::PredictionRecord = decode(value.value(), "prediction")?;
                if record.version == version {
                    found.push((id.to_string(), record));
                }
            }
            Ok(found)
        })
    }

    /// A function's audit log, oldest first (also after it was deleted).
    pub fn history(&self, name: &str) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(|tx| {
            let table = tx.open_table(EVENTS).map_err(db)?;
            let mut events = Vec::new();
            for row in table.range((name, 0)..=(name, u64::MAX)).map_err(db)? {
                let (key, bytes) = row.map_err(db)?;
                let mut event: AuditEvent = decode(bytes.value(), "audit event")?;
                event.seq = key.value().1;
                events.push(event);
            }
            Ok(events)
        })
    }

    pub fn model(&self, id: &str) -> Result<Option<ModelEntry>, StoreError> {
        self.read(|tx| {
            let table = tx.open_table(MODELS).map_err(db)?;
            let row = table.get(id).map_err(db)?;
            row.map(|bytes| decode(bytes.value(), "model")).transpose()
        })
    }

    pub fn models(&self) -> Result<Vec<ModelEntry>, StoreError> {
        self.read(|tx| {
            let table = tx.open_table(MODELS).map_err(db)?;
            let mut models = Vec::new();
            for row in table.iter().map_err(db)? {
                let (_, bytes) = row.map_err(db)?;
                models.push(decode(bytes.value(), "model")?);
            }
            Ok(models)
        })
    }

    pub fn register_model(&self, entry: &ModelEntry) -> Result<(), StoreError> {
        self.write(|txn| txn.register_model(entry))
    }

    /// Every API key's record.
    pub fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.read(|tx| {
            let table = tx.open_table(KEYS).map_err(db)?;
            let mut keys = Vec::new();
            for row in table.iter().map_err(db)? {
                let (_, bytes) = row.map_err(db)?;
                keys.push(decode(bytes.value(), "key")?);
            }
            Ok(keys)
        })
    }

    /// Deletes the blobs no kept version and no model id names, if older than `min_age` (so an
    /// upload for a deploy still on its way is never taken). Returns how many and their bytes.
    pub fn collect_garbage(
        &self,
        min_age: std::time::Duration,
    ) -> Result<(usize, u64), StoreError> {
        // Inside a write transaction: no record that names a blob commits while blobs are removed.
        self.write(|txn| {
            let mut used = std::collections::HashSet::new();
            let versions = txn.tx.open_table(VERSIONS).map_err(db)?;
            for row in versions.iter().map_err(db)? {
                let (_, bytes) = row.map_err(db)?;
                let record: VersionRecord = decode(bytes.value(), "version")?;
                used.extend(record.artifacts().map(|a| a.digest.hex().to_string()));
            }
            let models = txn.tx.open_table(MODELS).map_err(db)?;
            for row in models.iter().map_err(db)? {
                let (_, bytes) = row.map_err(db)?;
                let entry: ModelEntry = decode(bytes.value(), "model")?;
                used.insert(entry.model.digest.hex().to_string());
            }
            let dir = self.root.join("blobs/sha256");
            let (mut count, mut bytes) = (0, 0);
            for entry in fs::read_dir(&dir)
                .map_err(io_err("listing", &dir))?
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(meta) = entry.metadata() else { continue };
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age >= min_age);
                if !used.contains(&name) && old && fs::remove_file(entry.path()).is_ok() {
                    count += 1;
                    bytes += meta.len();
                }
            }
            Ok((count, bytes))
        })
    }

    /// Brings the records of a state directory written before the database (one JSON file per
    /// version, an `active` file per function, one JSON file per model id) into it, once.
    fn import_files(&self) -> Result<(), StoreError> {
        let functions = self.root.join("functions");
        let models = self.root.join("models");
        if !functions.is_dir() && !models.is_dir() {
            return Ok(());
        }
        self.write(|txn| {
            for entry in fs::read_dir(&functions).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let dir = entry.path().join("versions");
                for file in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if file.path().extension().is_some_and(|e| e == "json") {
                        txn.save_version(&read_json::<VersionRecord>(&file.path())?)?;
                    }
                }
                if let Ok(text) = fs::read_to_string(entry.path().join("active")) {
                    if let Ok(stable) = text.trim().parse::<u64>() {
                        txn.set_deployment(
                            &name,
                            Some(&Deployment {
                                stable,
                                rollout: None,
                            }),
                        )?;
                    }
                }
            }
            for file in fs::read_dir(&models).into_iter().flatten().flatten() {
                if file.path().extension().is_some_and(|e| e == "json") {
                    txn.register_model(&read_json::<ModelEntry>(&file.path())?)?;
                }
            }
            Ok(())
        })?;
        for (dir, to) in [
            (&functions, "functions.imported"),
            (&models, "models.imported"),
        ] {
            if dir.is_dir() {
                let target = self.root.join(to);
                fs::rename(dir, &target).map_err(io_err("renaming", &target))?;
            }
        }
        tracing::info!(state_dir = %self.root.display(), "imported versions and models into state.redb");
        Ok(())
    }
}

/// One write transaction on the state database (see [`Store::write`]). Write transactions run
/// one at a time, garbage collection included, so a record that names a blob checks here that the
/// blob exists, and a collection never removes a blob that a record is being committed for.
pub struct Txn<'s> {
    tx: redb::WriteTransaction,
    store: &'s Store,
}

impl Txn<'_> {
    fn require_blob(&self, artifact: &Artifact) -> Result<(), StoreError> {
        match self.store.blob_size(&artifact.digest) {
            Some(_) => Ok(()),
            None => Err(StoreError::MissingBlob(artifact.digest.clone())),
        }
    }

    pub fn save_version(&mut self, record: &VersionRecord) -> Result<(), StoreError> {
        for artifact in record.artifacts() {
            self.require_blob(artifact)?;
        }
        let mut table = self.tx.open_table(VERSIONS).map_err(db)?;
        let json = serde_json::to_vec(record).expect("records serialise");
        table
            .insert((record.name.as_str(), record.version), json.as_slice())
            .map_err(db)?;
        Ok(())
    }

    pub fn remove_version(&mut self, name: &str, version: u64) -> Result<(), StoreError> {
        let mut table = self.tx.open_table(VERSIONS).map_err(db)?;
        table.remove((name, version)).map_err(db)?;
        Ok(())
    }

    /// Sets (or, with `None`, removes) what serves a function's traffic.
    pub fn set_deployment(
        &mut self,
        name: &str,
        deployment: Option<&Deployment>,
    ) -> Result<(), StoreError> {
        let mut table = self.tx.open_table(DEPLOYMENTS).map_err(db)?;
        match deployment {
            Some(deployment) => {
                let json = serde_json::to_vec(deployment).expect("deployments serialise");
                table.insert(name, json.as_slice()).map_err(db)?;
            }
            None => {
                table.remove(name).map_err(db)?;
            }
        }
        Ok(())
    }

    /// Keeps `predictions` of `function` (new, or with their label now), and forgets `forget`.
    pub fn save_predictions(
        &mut self,
        function: &str,
        predictions: &[(String, crate::records::PredictionRecord)],
        forget: &[String],
    ) -> Result<(), StoreError> {
        let mut table = self.tx.open_table(PREDICTIONS).map_err(db)?;
        for (id, record) in predictions {
            let json = serde_json::to_vec(record).expect("predictions serialise");
            table
                .insert((function, id.as_str()), json.as_slice())
                .map_err(db)?;
        }
        for id in forget {
            table.remove((function, id.as_str())).map_err(db)?;
        }
        Ok(())
    }

    /// Appends an event to the function's audit log.
    pub fn log(&mut self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut table = self.tx.open_table(EVENTS).map_err(db)?;
        let name = event.function.as_str();
        let seq = table
            .range((name, 0)..=(name, u64::MAX))
            .map_err(db)?
            .next_back()
            .transpose()
            .map_err(db)?
            .map_or(1, |(key, _)| key.value().1 + 1);
        let json = serde_json::to_vec(event).expect("events serialise");
        table.insert((name, seq), json.as_slice()).map_err(db)?;
        Ok(())
    }

    pub fn save_key(&mut self, key: &KeyRecord) -> Result<(), StoreError> {
        let mut table = self.tx.open_table(KEYS).map_err(db)?;
        let json = serde_json::to_vec(key).expect("keys serialise");
        table.insert(key.id.as_str(), json.as_slice()).map_err(db)?;
        Ok(())
    }

    /// Removes a key; returns whether it existed.
    pub fn remove_key(&mut self, id: &str) -> Result<bool, StoreError> {
        let mut table = self.tx.open_table(KEYS).map_err(db)?;
        let removed = table.remove(id).map_err(db)?.is_some();
        Ok(removed)
    }

    pub fn register_model(&mut self, entry: &ModelEntry) -> Result<(), StoreError> {
        self.require_blob(&entry.model)?;
        let mut table = self.tx.open_table(MODELS).map_err(db)?;
        let json = serde_json::to_vec(entry).expect("entries serialise");
        table
            .insert(entry.id.as_str(), json.as_slice())
            .map_err(db)?;
        Ok(())
    }
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        path: PathBuf::from("state.redb"),
        message: format!("{what}: {e}"),
    })
}

fn db(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(error.into())
}

/// An artifact being uploaded.
pub struct BlobWriter {
    file: File,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.file
            .write_all(chunk)
            .map_err(io_err("writing", &self.path))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Harmless after `finish_blob` renamed it; cleans up abandoned uploads otherwise.
        let _ = fs::remove_file(&self.path);
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, StoreError> {
    let bytes = fs::read(path).map_err(io_err("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes `bytes` to `path` so that readers see the old content or the new, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_through_temporary(path, bytes, fs::OpenOptions::new())
}

/// [`write_atomically`], for a secret: the file is its owner's only (0600) from its first byte,
/// so no reader ever sees it open to others.
pub fn write_owner_only(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut options = fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    write_through_temporary(path, bytes, options)
}

fn write_through_temporary(
    path: &Path,
    bytes: &[u8],
    mut options: fs::OpenOptions,
) -> Result<(), StoreError> {
    let dir = path.parent().expect("paths in the store have a parent");
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp{:08x}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        rand::random::<u32>()
    ));
    let mut file = options
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err("creating", &tmp))?;
    file.write_all(bytes).map_err(io_err("writing", &tmp))?;
    file.sync_all().map_err(io_err("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming", path))?;
    sync_dir(dir)
}

/// Whether `name` is a temporary file of `write_atomically`: `.NAME.tmpXXXXXXXX`.
fn is_interrupted_write(name: &str) -> bool {
    let Some((head, suffix)) = name.rsplit_once(".tmp") else {
        return false;
    };
    head.starts_with('.') && suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Makes a file or directory readable and writable by its owner only.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if path.is_dir() { 0o700 } else { 0o600 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_err("restricting", path))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Actor, AuditAction};

    fn temp_store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("aifn-store-{:016x}", rand::random::<u64>()));
        (Store::open(&dir).unwrap(), dir)
    }

    #[test]
    fn blobs_land_only_under_their_digest() {
        let (store, dir) = temp_store();
        let data = b"model bytes";
        let digest = Digest::of(data);
        let mut w = store.blob_writer().unwrap();
        w.write(data).unwrap();
        let artifact = store.finish_blob(w, &digest).unwrap();
        assert_eq!(artifact.size, data.len() as u64);
        assert_eq!(store.read_blob(&digest).unwrap(), data);

        let mut w = store.blob_writer().unwrap();
        w.write(b"something else").unwrap();
        let wrong = Digest::of(b"other");
        assert!(matches!(
            store.finish_blob(w, &wrong),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(store.blob_size(&wrong).is_none());
        assert_eq!(
            fs::read_dir(dir.join("tmp")).unwrap().count(),
            0,
            "no upload left behind"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    fn record(name: &str, version: u64, artifact: &Artifact) -> VersionRecord {
        VersionRecord {
            name: name.into(),
            version,
            digest: VersionRecord::deployment_digest("spec", artifact, None, None, None),
            spec_yaml: "spec".into(),
            model_id: "m".into(),
            model: artifact.clone(),
            module: None,
            fallback_model: None,
            monitoring_reference: None,
            created_at: now_unix(),
            deployed_by: "test".into(),
        }
    }

    fn event(function: &str, action: AuditAction) -> AuditEvent {
        AuditEvent::new(function, &Actor("test".into()), action, None, "")
    }

    #[test]
    fn versions_deployments_and_history_change_together_and_survive_reopening() {
        let (store, dir) = temp_store();
        let mut w = store.blob_writer().unwrap();
        w.write(b"m").unwrap();
        let artifact = store.finish_blob(w, &Digest::of(b"m")).unwrap();
        for version in 1..=2 {
            assert_eq!(store.next_version("f").unwrap(), version);
            store
                .write(|txn| {
                    txn.save_version(&record("f", version, &artifact))?;
                    txn.set_deployment(
                        "f",
                        Some(&Deployment {
                            stable: version,
                            rollout: None,
                        }),
                    )?;
                    txn.log(&event("f", AuditAction::Deploy))
                })
                .unwrap();
        }
        // A change that fails half-way leaves nothing behind.
        let failed = store.write(|txn| {
            txn.save_version(&record("f", 3, &artifact))?;
            txn.log(&event("f", AuditAction::Deploy))?;
            Err::<(), _>(StoreError::NoSuchVersion("f".into(), 9))
        });
        assert!(failed.is_err());
        drop(store);

        let store = Store::open(&dir).unwrap();
        assert_eq!(store.deployment("f").unwrap().unwrap().stable, 2);
        assert_eq!(store.versions("f").unwrap().len(), 2);
        let history = store.history("f").unwrap();
        assert_eq!(history.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        store.write(|txn| txn.set_deployment("f", None)).unwrap();
        assert!(store.deployments().unwrap().is_empty());
        assert_eq!(
            store.versions("f").unwrap().len(),
            2,
            "versions outlive deletion"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_state_directory_of_json_files_is_imported() {
        let dir = std::env::temp_dir().join(format!("aifn-store-{:016x}", rand::random::<u64>()));
        let artifact = Artifact {
            digest: Digest::of(b"m"),
            size: 1,
        };
        let versions = dir.join("functions/f/versions");
        fs::create_dir_all(&versions).unwrap();
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("blobs/sha256").join(artifact.digest.hex()), b"m").unwrap();
        fs::write(
            versions.join("1.json"),
            serde_json::to_vec(&record("f", 1, &artifact)).unwrap(),
        )
        .unwrap();
        fs::write(dir.join("functions/f/active"), "1").unwrap();
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.deployment("f").unwrap().unwrap().stable, 1);
        assert_eq!(store.version("f", 1).unwrap().model, artifact);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn opening_clears_interrupted_uploads_and_unnamed_blobs_and_restricts_the_directory() {
        use std::os::unix::fs::PermissionsExt;
        let (store, dir) = temp_store();
        let mut w = store.blob_writer().unwrap();
        w.write(b"named").unwrap();
        let named = store.finish_blob(w, &Digest::of(b"named")).unwrap();
        store
            .write(|txn| {
                txn.register_model(&ModelEntry {
                    id: "m".into(),
                    model: named.clone(),
                    updated_at: 0,
                })
            })
            .unwrap();
        let mut w = store.blob_writer().unwrap();
        w.write(b"orphan").unwrap();
        let orphan = store.finish_blob(w, &Digest::of(b"orphan")).unwrap();
        let mut interrupted = store.blob_writer().unwrap();
        interrupted.write(b"half").unwrap();
        std::mem::forget(interrupted); // as if the process died mid-upload
        let half_written = dir.join(".admin-address.tmp50aa5fdc");
        fs::write(&half_written, b"127.0.0.1:").unwrap(); // a kill inside write_atomically
        let kept = dir.join("admin-address");
        fs::write(&kept, b"127.0.0.1:1").unwrap();
        drop(store);
        let store = Store::open(&dir).unwrap();
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        assert!(!half_written.exists());
        assert!(kept.exists());
        assert!(store.blob_size(&named.digest).is_some());
        assert!(store.blob_size(&orphan.digest).is_none());
        // A record never names a blob that is not there.
        let missing = store.write(|txn| {
            txn.register_model(&ModelEntry {
                id: "gone".into(),
                model: orphan.clone(),
                updated_at: 0,
            })
        });
        assert!(matches!(missing, Err(StoreError::MissingBlob(_))));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("state.redb")), 0o600);
        fs::remove_dir_all(dir).unwrap();
    }
}
