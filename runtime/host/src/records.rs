//! The records of the platform: what the state database keeps and the control plane shows —
//! versions, what serves each function (deployments and rollouts), the audit log and model ids.
//! Plain data: [`crate::store`] persists them, the control plane changes them.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

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

    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(hex::encode(bytes))
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
    /// The reference sample of `spec.monitoring.reference`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring_reference: Option<Artifact>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Who deployed it (see [`AuditEvent::actor`]).
    #[serde(default)]
    pub deployed_by: String,
}

impl VersionRecord {
    /// The blobs this version needs.
    pub fn artifacts(&self) -> impl Iterator<Item = &Artifact> {
        std::iter::once(&self.model)
            .chain(self.module.as_ref())
            .chain(self.fallback_model.as_ref())
            .chain(self.monitoring_reference.as_ref())
    }

    pub fn deployment_digest(
        spec_yaml: &str,
        model: &Artifact,
        module: Option<&Artifact>,
        fallback_model: Option<&Artifact>,
        monitoring_reference: Option<&Artifact>,
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
        if let Some(reference) = monitoring_reference {
            hasher.update(b"\0reference\0");
            hasher.update(reference.digest.hex());
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

/// What serves a function's traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The version callers get (during a canary, all but the candidate's share).
    pub stable: u64,
    /// A new version on its way in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutRecord>,
}

/// A rollout in progress, as it must survive a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The new version.
    pub candidate: u64,
    /// The version it replaces: the last known good one, which takes the traffic back if the
    /// candidate fails.
    pub previous: u64,
    pub strategy: aifn_spec::RolloutStrategy,
    pub phase: Phase,
    pub started_at_ms: u64,
}

/// Where a rollout is. In `Step` and `Shadow` the stable version is `previous`; in `Watch` it is
/// the candidate, and `previous` stays loaded to take the traffic back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// The candidate takes `rollout.steps[index]` percent of traffic, since `since_ms`.
    Step { index: usize, since_ms: u64 },
    /// The candidate gets a copy of live traffic.
    Shadow { since_ms: u64 },
    /// The candidate takes all traffic and is watched until `until_ms`, against the stable
    /// version's figures from before its promotion.
    Watch { until_ms: u64, baseline: Figures },
}

/// An answer kept until its label arrives (`spec.monitoring.labels`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    pub version: u64,
    /// The monitored prediction: a classifier's score for the positive class, or a value.
    pub prediction: f64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled_at_ms: Option<u64>,
}

/// One entry of a function's audit log: who did what, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the function's log (assigned when written).
    #[serde(default, skip_serializing)]
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub function: String,
    /// Who: the caller of the control plane (`X-Aifn-Actor`, and its address), or `aifn` for
    /// the platform's own actions.
    pub actor: String,
    pub action: AuditAction,
    /// The version acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The version serving (most) traffic afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<u64>,
    pub reason: String,
    /// The figures that led to an automatic action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<serde_json::Value>,
}

/// What one version did over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub requests: u64,
    /// Answers with a 5xx status (the function's fault; 4xx are the caller's).
    pub errors: u64,
    pub p95_ms: Option<f64>,
}

impl Figures {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// Who acts on a deployment: a control-plane caller, or the platform itself.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl Actor {
    pub fn platform() -> Actor {
        Actor("aifn".into())
    }
}

/// What an audit event records. Stored as its snake_case name (the strings of earlier
/// releases), and sent as the `event` of webhook notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Deploy,
    Step,
    Promoted,
    RolloutComplete,
    AutoRollback,
    Aborted,
    Rollback,
    Resumed,
    Deleted,
    Pruned,
    /// A monitoring alert fired (`spec.monitoring`).
    Alert,
    /// A monitoring alert cleared.
    AlertCleared,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Deploy => "deploy",
            AuditAction::Step => "step",
            AuditAction::Promoted => "promoted",
            AuditAction::RolloutComplete => "rollout_complete",
            AuditAction::AutoRollback => "auto_rollback",
            AuditAction::Aborted => "aborted",
            AuditAction::Rollback => "rollback",
            AuditAction::Resumed => "resumed",
            AuditAction::Deleted => "deleted",
            AuditAction::Pruned => "pruned",
            AuditAction::Alert => "alert",
            AuditAction::AlertCleared => "alert_cleared",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The versions an audit event is about: the one acted on, and the one serving (most) traffic
/// afterwards.
#[derive(Debug, Clone, Copy)]
pub struct Versions {
    pub acted_on: u64,
    pub serving: u64,
}

impl AuditEvent {
    /// An event about a change of what serves `function`, stamped now.
    pub fn new(
        function: &str,
        actor: &Actor,
        action: AuditAction,
        versions: Option<Versions>,
        reason: impl Into<String>,
    ) -> AuditEvent {
        AuditEvent {
            seq: 0,
            at_ms: now_ms(),
            function: function.to_string(),
            actor: actor.0.clone(),
            action,
            version: versions.map(|v| v.acted_on),
            serving: versions.map(|v| v.serving),
            reason: reason.into(),
            figures: None,
        }
    }

    /// The figures that led to an automatic action.
    pub fn with_figures(mut self, figures: Option<serde_json::Value>) -> AuditEvent {
        self.figures = figures;
        self
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
