//! The host's state directory: content-addressed artifacts, immutable numbered versions, the active
//! version of each function, and the model store that maps model ids to artifacts.
//!
//! Layout:
//! ```text
//! blobs/sha256/<hex>                  model files and WASM components, named by their sha256
//! functions/<name>/versions/<n>.json  one immutable record per deploy
//! functions/<name>/active             the number of the version serving traffic (absent: deleted)
//! models/<id>.json                    which blob a model id resolves to
//! compiled/                           compiled components, cached by digest
//! ```
//! Every write goes to a temporary file that is synced and then renamed into place, so a host killed
//! at any moment (even `kill -9`) restarts with either the old or the new state, never half of one.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
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

/// A sha256 digest, shown as `sha256:<64 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(hex::encode(Sha256::digest(bytes)))
    }

    /// Accepts `sha256:<hex>` or bare hex.
    pub fn parse(text: &str) -> Option<Digest> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Digest(hex.to_ascii_lowercase()))
    }

    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a sha256 digest")))
    }
}

/// An artifact a version uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub digest: Digest,
    pub size: u64,
}

/// One immutable deploy of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub name: String,
    pub version: u64,
    /// Digest of the spec text and the artifacts' digests: equal digests mean equal deployments.
    pub digest: Digest,
    /// The spec exactly as submitted.
    pub spec_yaml: String,
    pub model_id: String,
    pub model: Artifact,
    pub module: Option<Artifact>,
    /// The lighter model of `spec.fallback`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_model: Option<Artifact>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

impl VersionRecord {
    pub fn deployment_digest(
        spec_yaml: &str,
        model: &Artifact,
        module: Option<&Artifact>,
        fallback_model: Option<&Artifact>,
    ) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(spec_yaml.as_bytes());
        hasher.update(b"\0model\0");
        hasher.update(model.digest.hex());
        if let Some(module) = module {
            hasher.update(b"\0module\0");
            hasher.update(module.digest.hex());
        }
        if let Some(fallback) = fallback_model {
            hasher.update(b"\0fallback\0");
            hasher.update(fallback.digest.hex());
        }
        Digest(hex::encode(hasher.finalize()))
    }
}

/// Which artifact a model id resolves to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub id: String,
    pub model: Artifact,
    pub updated_at: u64,
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for dir in ["blobs/sha256", "functions", "models", "compiled", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn compiled_dir(&self) -> PathBuf {
        self.root.join("compiled")
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
        let actual = Digest(hex::encode(std::mem::take(&mut writer.hasher).finalize()));
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

    // ---- versions ----

    fn function_dir(&self, name: &str) -> PathBuf {
        self.root.join("functions").join(name)
    }

    pub fn next_version(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self.versions(name)?.last().map_or(1, |r| r.version + 1))
    }

    pub fn save_version(&self, record: &VersionRecord) -> Result<(), StoreError> {
        let dir = self.function_dir(&record.name).join("versions");
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let json = serde_json::to_vec_pretty(record).expect("records serialise");
        write_atomically(&dir.join(format!("{}.json", record.version)), &json)
    }

    pub fn version(&self, name: &str, version: u64) -> Result<VersionRecord, StoreError> {
        let path = self
            .function_dir(name)
            .join("versions")
            .join(format!("{version}.json"));
        read_json(&path)
    }

    /// Every version of a function, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionRecord>, StoreError> {
        let dir = self.function_dir(name).join("versions");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                records.push(read_json::<VersionRecord>(&path)?);
            }
        }
        records.sort_by_key(|r| r.version);
        Ok(records)
    }

    pub fn activate(&self, name: &str, version: u64) -> Result<(), StoreError> {
        write_atomically(
            &self.function_dir(name).join("active"),
            version.to_string().as_bytes(),
        )
    }

    pub fn deactivate(&self, name: &str) -> Result<(), StoreError> {
        let path = self.function_dir(name).join("active");
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.function_dir(name)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &path)(e)),
        }
    }

    /// The version serving traffic for every function that has one.
    pub fn active_versions(&self) -> Result<Vec<VersionRecord>, StoreError> {
        let dir = self.root.join("functions");
        let mut active = Vec::new();
        for entry in fs::read_dir(&dir)
            .map_err(io_err("listing", &dir))?
            .flatten()
        {
            let pointer = entry.path().join("active");
            let Ok(text) = fs::read_to_string(&pointer) else {
                continue;
            };
            let version = text
                .trim()
                .parse::<u64>()
                .map_err(|e| StoreError::Corrupt {
                    path: pointer.clone(),
                    message: e.to_string(),
                })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            active.push(self.version(&name, version)?);
        }
        active.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(active)
    }

    // ---- model store ----

    pub fn register_model(&self, entry: &ModelEntry) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(entry).expect("entries serialise");
        write_atomically(
            &self.root.join("models").join(format!("{}.json", entry.id)),
            &json,
        )
    }

    pub fn model(&self, id: &str) -> Result<Option<ModelEntry>, StoreError> {
        let path = self.root.join("models").join(format!("{id}.json"));
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    pub fn models(&self) -> Result<Vec<ModelEntry>, StoreError> {
        let dir = self.root.join("models");
        let mut models = Vec::new();
        for entry in fs::read_dir(&dir)
            .map_err(io_err("listing", &dir))?
            .flatten()
        {
            if entry.path().extension().is_some_and(|e| e == "json") {
                models.push(read_json::<ModelEntry>(&entry.path())?);
            }
        }
        models.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(models)
    }
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
    let dir = path.parent().expect("paths in the store have a parent");
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp{:08x}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        rand::random::<u32>()
    ));
    let mut file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    file.write_all(bytes).map_err(io_err("writing", &tmp))?;
    file.sync_all().map_err(io_err("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming", path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn versions_are_numbered_and_one_is_active() {
        let (store, dir) = temp_store();
        let artifact = Artifact {
            digest: Digest::of(b"m"),
            size: 1,
        };
        for version in 1..=2 {
            assert_eq!(store.next_version("f").unwrap(), version);
            let record = VersionRecord {
                name: "f".into(),
                version,
                digest: VersionRecord::deployment_digest("spec", &artifact, None, None),
                spec_yaml: "spec".into(),
                model_id: "m".into(),
                model: artifact.clone(),
                module: None,
                fallback_model: None,
                created_at: now_unix(),
            };
            store.save_version(&record).unwrap();
            store.activate("f", version).unwrap();
        }
        assert_eq!(store.active_versions().unwrap()[0].version, 2);
        store.deactivate("f").unwrap();
        assert!(store.active_versions().unwrap().is_empty());
        assert_eq!(
            store.versions("f").unwrap().len(),
            2,
            "versions outlive deletion"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
