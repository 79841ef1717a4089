//! API keys for `auth: api_key` endpoints.
//!
//! A key is shown once, when it is created; the host keeps only its sha256. A presented key is
//! found by the hash of what was presented (so lookup time says nothing about any stored secret) and
//! confirmed with a constant-time comparison. A key belongs to one function, and optionally to one
//! endpoint of it.

use crate::records::now_unix;
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub function: String,
    /// The route the key is limited to; `None`: every endpoint of the function.
    pub endpoint: Option<String>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    /// sha256 of the secret; never sent over the API.
    hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    /// No key, an unknown key or an expired one: 401.
    Unauthenticated,
    /// A valid key for another function or endpoint: 403.
    Forbidden,
}

/// The keys, kept in the state database and indexed in memory by hash.
pub struct KeyStore {
    store: Arc<Store>,
    keys: RwLock<Keys>,
}

/// The records, and where each hash is among them.
#[derive(Default)]
struct Keys {
    records: Vec<KeyRecord>,
    by_hash: HashMap<[u8; 32], usize>,
}

impl Keys {
    fn new(records: Vec<KeyRecord>) -> Keys {
        let by_hash = records
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((<[u8; 32]>::try_from(hex::decode(&k.hash).ok()?).ok()?, i)))
            .collect();
        Keys { records, by_hash }
    }
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl KeyStore {
    /// The keys in `store`, after importing a `keys.json` from before the database (renamed
    /// `keys.json.imported` once its keys are in).
    pub fn open(store: Arc<Store>) -> Result<KeyStore, StoreError> {
        let file = store.root().join("keys.json");
        match std::fs::read(&file) {
            Ok(bytes) => {
                let old: Vec<KeyRecord> =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: file.clone(),
                        message: e.to_string(),
                    })?;
                store.write(|txn| old.iter().try_for_each(|key| txn.save_key(key)))?;
                let target = file.with_extension("json.imported");
                std::fs::rename(&file, &target).map_err(|source| StoreError::Io {
                    action: "renaming",
                    path: target,
                    source,
                })?;
                tracing::info!("imported {} API key(s) from keys.json", old.len());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    action: "reading",
                    path: file,
                    source,
                })
            }
        }
        let mut records = store.keys()?;
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let keys = Keys::new(records);
        Ok(KeyStore {
            store,
            keys: RwLock::new(keys),
        })
    }

    /// Creates a key and returns its record and the secret, which is never stored.
    pub fn create(
        &self,
        function: &str,
        endpoint: Option<&str>,
        ttl_seconds: Option<u64>,
    ) -> Result<(KeyRecord, String), StoreError> {
        let secret = format!("aifn_{}", hex::encode(rand::random::<[u8; 24]>()));
        let now = now_unix();
        let record = KeyRecord {
            id: hex::encode(rand::random::<[u8; 6]>()),
            function: function.to_string(),
            endpoint: endpoint.map(str::to_string),
            created_at: now,
            expires_at: ttl_seconds.map(|ttl| now + ttl),
            hash: hash(&secret),
        };
        let mut keys = self.keys.write().expect("key lock");
        self.store.write(|txn| txn.save_key(&record))?;
        let mut records = keys.records.clone();
        records.push(record.clone());
        *keys = Keys::new(records);
        Ok((record, secret))
    }

    pub fn list(&self) -> Vec<KeyRecord> {
        self.keys.read().expect("key lock").records.clone()
    }

    /// Removes a key; it stops working at once. Returns whether it existed.
    pub fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let mut keys = self.keys.write().expect("key lock");
        if !keys.records.iter().any(|k| k.id == id) {
            return Ok(false);
        }
        self.store.write(|txn| txn.remove_key(id))?;
        let records: Vec<KeyRecord> = keys
            .records
            .iter()
            .filter(|k| k.id != id)
            .cloned()
            .collect();
        *keys = Keys::new(records);
        Ok(true)
    }

    /// The id of the key presented, if it opens `route` of `function`.
    pub fn check(
        &self,
        presented: Option<&str>,
        function: &str,
        route: &str,
    ) -> Result<String, KeyRejection> {
        let presented = presented.ok_or(KeyRejection::Unauthenticated)?;
        let presented_hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let keys = self.keys.read().expect("key lock");
        let key = keys
            .by_hash
            .get_key_value(&presented_hash)
            .filter(|(stored, _)| bool::from(stored.ct_eq(&presented_hash)))
            .map(|(_, &i)| &keys.records[i])
            .ok_or(KeyRejection::Unauthenticated)?;
        if key.expires_at.is_some_and(|t| t <= now_unix()) {
            return Err(KeyRejection::Unauthenticated);
        }
        let endpoint_ok = key.endpoint.as_deref().is_none_or(|e| e == route);
        if key.function != function || !endpoint_ok {
            return Err(KeyRejection::Forbidden);
        }
        Ok(key.id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_a_restart_and_a_keys_json_is_imported_once() {
        let dir = std::env::temp_dir().join(format!("aifn-keys-{:016x}", rand::random::<u64>()));
        let (old, old_secret) = {
            let store = Arc::new(Store::open(&dir).unwrap());
            let keys = KeyStore::open(store).unwrap();
            keys.create("f", None, None).unwrap()
        };
        // A keys.json from before the database, beside it.
        let imported = KeyRecord {
            id: "0ld".into(),
            hash: hash("aifn_from_the_file"),
            ..old.clone()
        };
        std::fs::write(
            dir.join("keys.json"),
            serde_json::to_vec(&[&imported]).unwrap(),
        )
        .unwrap();
        for _ in 0..2 {
            let keys = KeyStore::open(Arc::new(Store::open(&dir).unwrap())).unwrap();
            assert_eq!(keys.list().len(), 2);
            assert_eq!(keys.check(Some(&old_secret), "f", "/r"), Ok(old.id.clone()));
            assert_eq!(
                keys.check(Some("aifn_from_the_file"), "f", "/r"),
                Ok("0ld".to_string())
            );
        }
        assert!(!dir.join("keys.json").exists());
        assert!(dir.join("keys.json.imported").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
