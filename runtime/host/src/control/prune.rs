//! `aifn prune`: a function's old versions, then the artifacts nothing names any more.

use super::{ControlPlane, DeployError};
use crate::api::PruneOutcome;
use crate::records::{Actor, AuditAction, AuditEvent};
use crate::registry::FunctionGuard;
use std::time::Duration;

/// Blobs younger than this may belong to a deploy on its way, and are never collected.
const MIN_GARBAGE_AGE: Duration = Duration::from_secs(600);

impl ControlPlane {
    /// Drops the versions of `name` beyond the newest `keep` (never one serving or in a
    /// rollout), then the artifacts nothing names any more.
    pub async fn prune(
        &self,
        name: &str,
        keep: usize,
        actor: &Actor,
    ) -> Result<PruneOutcome, DeployError> {
        let guard = self.registry.lock(name).await;
        self.prune_versions(&guard, keep, actor)
    }

    pub(super) fn prune_versions(
        &self,
        guard: &FunctionGuard,
        keep: usize,
        actor: &Actor,
    ) -> Result<PruneOutcome, DeployError> {
        let name = guard.name();
        let versions = self.store.versions(name)?;
        if versions.is_empty() {
            return Err(DeployError::NotFound(name.to_string()));
        }
        let mut in_use = vec![];
        if let Some(deployment) = self.store.deployment(name)? {
            in_use.push(deployment.stable);
            if let Some(r) = deployment.rollout {
                in_use.extend([r.candidate, r.previous]);
            }
        }
        let cut = versions.len().saturating_sub(keep.max(1));
        let pruned: Vec<u64> = versions[..cut]
            .iter()
            .map(|r| r.version)
            .filter(|v| !in_use.contains(v))
            .collect();
        if !pruned.is_empty() {
            let event = AuditEvent::new(
                name,
                actor,
                AuditAction::Pruned,
                None,
                format!("kept the newest {keep}; removed versions {pruned:?}"),
            );
            self.store.write(|txn| {
                for version in &pruned {
                    txn.remove_version(name, *version)?;
                }
                txn.log(&event)
            })?;
        }
        // Blobs are shared between functions: one collection at a time, never while loading.
        let (blobs, bytes) = {
            let _gc = self.gc.lock().expect("gc lock");
            self.store.collect_garbage(MIN_GARBAGE_AGE)?
        };
        Ok(PruneOutcome {
            pruned,
            kept: versions.len() - cut,
            blobs_removed: blobs,
            bytes_freed: bytes,
        })
    }
}
