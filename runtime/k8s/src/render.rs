//! The Kubernetes objects of a function: per version a Deployment, a Service, a
//! PodDisruptionBudget and a KEDA ScaledObject; per function a Service over every version, the
//! KEDA TriggerAuthentication the scalers read the pods with, and (with a Gateway) an HTTPRoute
//! whose backend weights split traffic between the stable version and a candidate.
//!
//! Every pod runs `aifn serve --bundle /bundle` from its version's image: it listens only once its
//! models are loaded (so it is never in a Service's endpoints before it can answer), says "not
//! ready" at once on SIGTERM, keeps answering for the shutdown delay while endpoints update, then
//! drains its connections; the grace period covers both.

use crate::{Object, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL, VERSION_LABEL};
use aifn_spec::FunctionSpec;
use serde_json::json;

/// The data plane's port in a pod, and the control plane's (status, metrics: what scalers read).
pub const HTTP_PORT: u16 = 8080;
pub const ADMIN_PORT: u16 = 8081;
/// Where the image holds the bundle, and where a pod keeps its state: a directory the host makes
/// (and so owns, to keep it owner-only) in an emptyDir.
pub const BUNDLE_DIR: &str = "/bundle";
pub const STATE_VOLUME: &str = "/var/lib/aifn";
pub const STATE_DIR: &str = "/var/lib/aifn/state";
/// The Secret (key `token`) holding the admin token the pods and the scalers share.
pub const ADMIN_SECRET: &str = "aifn-admin";
/// Requests are still taken this long after SIGTERM, while Services and Gateways drop the pod.
pub const SHUTDOWN_DELAY_MS: u64 = 5_000;
/// Open connections get this long to finish after the delay.
pub const DRAIN_TIMEOUT_SECS: u64 = 25;
/// The user the image's files belong to (not root).
pub const POD_USER: u64 = 65_532;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RenderError {
    #[error(
        "no image for {0}: give --image, or set metadata.annotations.\"ai.function/image\" \
         (`aifn image` builds one and prints its name)"
    )]
    NoImage(String),
    #[error("`{0}` is not a valid version name: 1 to 20 lowercase letters, digits or `-`")]
    BadVersion(String),
    #[error("`{0}` is longer than the 63 characters Kubernetes allows in a name")]
    NameTooLong(String),
}

/// Where and as what a version runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub namespace: String,
    /// A Gateway API Gateway (`NAME` or `NAMESPACE/NAME`) for the HTTPRoute; none: no route.
    pub gateway: Option<String>,
}

/// One version of a function: its spec, the image that serves it and the name of its objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub spec: FunctionSpec,
    pub image: String,
    /// Short and stable: `NAME-VERSION` names the version's objects.
    pub id: String,
}

impl Version {
    /// The version of `spec` served by `image` (by default the spec's `ai.function/image`
    /// annotation), called `id` (by default the image's tag).
    pub fn new(
        spec: FunctionSpec,
        image: Option<String>,
        id: Option<String>,
    ) -> Result<Version, RenderError> {
        let image = image
            .or_else(|| {
                spec.metadata
                    .annotations
                    .get(crate::IMAGE_ANNOTATION)
                    .cloned()
            })
            .ok_or_else(|| RenderError::NoImage(spec.metadata.name.clone()))?;
        let id = id.unwrap_or_else(|| version_of_image(&image));
        let valid = !id.is_empty()
            && id.len() <= 20
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !id.starts_with('-')
            && !id.ends_with('-');
        if !valid {
            return Err(RenderError::BadVersion(id));
        }
        let version = Version { spec, image, id };
        let name = version.object_name();
        if name.len() > 63 {
            return Err(RenderError::NameTooLong(name));
        }
        Ok(version)
    }

    pub fn function(&self) -> &str {
        &self.spec.metadata.name
    }

    /// `NAME-VERSION`: the Deployment, Service, PodDisruptionBudget and ScaledObject.
    pub fn object_name(&self) -> String {
        format!("{}-{}", self.function(), self.id)
    }
}

/// A version's id from its image: the first 12 characters of the tag (`aifn image` tags by the
/// bundle's digest) or of the digest after `@sha256:`, lowercased.
pub fn version_of_image(image: &str) -> String {
    let tag = match image.rsplit_once('@') {
        Some((_, digest)) => digest.trim_start_matches("sha256:"),
        None => match image.rsplit_once(':') {
            Some((_, tag)) if !tag.contains('/') => tag.trim_start_matches("sha256-"),
            _ => "latest",
        },
    };
    tag.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// How the HTTPRoute splits traffic: all to `stable`, or `candidate_percent` to the candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Split<'a> {
    pub stable: &'a Version,
    pub candidate: Option<(&'a Version, u32)>,
}

/// Everything `aifn k8s render` prints for one version serving all traffic.
pub fn render(version: &Version, placement: &Placement) -> Vec<Object> {
    let mut objects = function_objects(
        &Split {
            stable: version,
            candidate: None,
        },
        placement,
    );
    objects.extend(version_objects(version, placement));
    objects
}

/// The objects of the function as a whole: its Service over every version, the scalers'
/// TriggerAuthentication and, with a Gateway, the HTTPRoute carrying the split.
pub fn function_objects(split: &Split, placement: &Placement) -> Vec<Object> {
    let name = split.stable.function();
    let mut objects = vec![
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(name, &placement.namespace, function_labels(name)),
            "spec": {
                "selector": { NAME_LABEL: name },
                "ports": service_ports(),
            },
        }),
        json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": metadata(&trigger_auth_name(name), &placement.namespace, function_labels(name)),
            "spec": {
                "secretTargetRef": [
                    { "parameter": "token", "name": ADMIN_SECRET, "key": "token" },
                ],
            },
        }),
    ];
    if let Some(gateway) = &placement.gateway {
        objects.push(http_route(split, placement, gateway));
    }
    objects
}

/// The objects of one version: Deployment, Service, PodDisruptionBudget, ScaledObject.
pub fn version_objects(version: &Version, placement: &Placement) -> Vec<Object> {
    vec![
        deployment(version, placement),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(&version.object_name(), &placement.namespace, version_labels(version)),
            "spec": {
                "selector": selector(version),
                "ports": service_ports(),
            },
        }),
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(&version.object_name(), &placement.namespace, version_labels(version)),
            "spec": {
                // One pod at a time may be evicted (a node drain), never more.
                "maxUnavailable": 1,
                "selector": { "matchLabels": selector(version) },
            },
        }),
        scaled_object(version, placement),
    ]
}

fn deployment(version: &Version, placement: &Placement) -> Object {
    let spec = &version.spec.spec;
    let args: Vec<String> = [
        "serve",
        "--bundle",
        BUNDLE_DIR,
        "--listen",
        &format!("0.0.0.0:{HTTP_PORT}"),
        "--admin-listen",
        &format!("0.0.0.0:{ADMIN_PORT}"),
        "--state-dir",
        STATE_DIR,
        "--shutdown-delay-ms",
        &SHUTDOWN_DELAY_MS.to_string(),
        "--drain-timeout-secs",
        &DRAIN_TIMEOUT_SECS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": { "path": path, "port": "http" },
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        })
    };
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(&version.object_name(), &placement.namespace, version_labels(version)),
        "spec": {
            "replicas": spec.scaling.min_replicas.max(1),
            "revisionHistoryLimit": 2,
            "selector": { "matchLabels": selector(version) },
            // A replaced pod goes only once its successor is ready: capacity never drops.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 },
            },
            "template": {
                "metadata": { "labels": version_labels(version) },
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": SHUTDOWN_DELAY_MS / 1000 + DRAIN_TIMEOUT_SECS + 5,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": POD_USER,
                        "runAsGroup": POD_USER,
                        "fsGroup": POD_USER,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "aifn",
                        "image": version.image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": args,
                        "env": [
                            {
                                "name": "AIFN_ADMIN_TOKEN",
                                "valueFrom": { "secretKeyRef": { "name": ADMIN_SECRET, "key": "token" } },
                            },
                            { "name": "AIFN_LOG_FORMAT", "value": "json" },
                        ],
                        "ports": [
                            { "name": "http", "containerPort": HTTP_PORT, "protocol": "TCP" },
                            { "name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP" },
                        ],
                        // The port opens only once the models are loaded and warm: until then the
                        // startup probe waits (up to 10 minutes for a large model).
                        "startupProbe": probe("/readyz", 1, 600),
                        "readinessProbe": probe("/readyz", 1, 1),
                        "livenessProbe": probe("/healthz", 10, 3),
                        "resources": resources(&version.spec),
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": [
                            { "name": "state", "mountPath": STATE_VOLUME },
                            { "name": "tmp", "mountPath": "/tmp" },
                        ],
                    }],
                    // A pod's monitoring windows, labels and audit log live as long as the pod.
                    "volumes": [
                        { "name": "state", "emptyDir": { "sizeLimit": "1Gi" } },
                        { "name": "tmp", "emptyDir": { "medium": "Memory", "sizeLimit": "64Mi" } },
                    ],
                },
            },
        },
    })
}

/// Requests and limits from `spec.resources`: memory and GPUs are limited to what is requested;
/// CPU too, so that a pod's latency does not depend on its neighbours.
fn resources(spec: &FunctionSpec) -> Object {
    let wanted = &spec.spec.resources;
    let mut amounts = serde_json::Map::new();
    if let Some(cpu) = wanted.cpu {
        amounts.insert("cpu".into(), json!(cpu.to_string()));
    }
    if let Some(memory) = wanted.memory {
        amounts.insert("memory".into(), json!(memory.to_string()));
    }
    if wanted.gpu > 0 {
        amounts.insert("nvidia.com/gpu".into(), json!(wanted.gpu.to_string()));
    }
    json!({ "requests": amounts.clone(), "limits": amounts })
}

/// Scales the version's Deployment between `min_replicas` and `max_replicas` on its pods' own
/// figures, read by KEDA's metrics-api scaler from a pod's status (through the version's
/// Service): the p95 against `target_latency`, and requests in flight against what a pod runs.
fn scaled_object(version: &Version, placement: &Placement) -> Object {
    let scaling = &version.spec.spec.scaling;
    let status_url = format!(
        "http://{}.{}.svc:{ADMIN_PORT}/admin/v1/functions/{}",
        version.object_name(),
        placement.namespace,
        version.function()
    );
    let trigger = |location: &str, target: String| {
        json!({
            "type": "metrics-api",
            "metricType": "Value",
            "metadata": {
                "url": status_url,
                "valueLocation": location,
                "targetValue": target,
                "authMode": "bearer",
            },
            "authenticationRef": { "name": trigger_auth_name(version.function()) },
        })
    };
    let mut triggers = Vec::new();
    if let Some(latency) = &scaling.target_latency {
        triggers.push(trigger(
            "signals.p95_ms",
            format_number(latency.0.as_secs_f64() * 1e3),
        ));
    }
    triggers.push(trigger(
        "signals.in_flight",
        in_flight_per_pod(&version.spec).to_string(),
    ));
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(&version.object_name(), &placement.namespace, version_labels(version)),
        "spec": {
            "scaleTargetRef": { "name": version.object_name() },
            "minReplicaCount": scaling.min_replicas.max(1),
            "maxReplicaCount": scaling.max_replicas.max(scaling.min_replicas).max(1),
            "pollingInterval": 5,
            "cooldownPeriod": 60,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": 60,
                            "policies": [{ "type": "Pods", "value": 1, "periodSeconds": 30 }],
                        },
                    },
                },
            },
            "triggers": triggers,
        },
    })
}

/// Requests a pod takes at once before another is wanted: one per CPU it has (at least one),
/// times the batch it merges.
pub fn in_flight_per_pod(spec: &FunctionSpec) -> u32 {
    let cpus = spec
        .spec
        .resources
        .cpu
        .map_or(1, |c| c.0.div_ceil(1000).max(1) as u32);
    cpus * spec.spec.scaling.max_batch_size.max(1)
}

fn http_route(split: &Split, placement: &Placement, gateway: &str) -> Object {
    let spec = &split.stable.spec;
    let name = split.stable.function();
    let (gateway_namespace, gateway_name) = match gateway.split_once('/') {
        Some((namespace, name)) => (Some(namespace), name),
        None => (None, gateway),
    };
    let mut parent = json!({ "name": gateway_name });
    if let Some(namespace) = gateway_namespace {
        parent["namespace"] = json!(namespace);
    }
    let mut matches: Vec<Object> = spec
        .spec
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "path": { "type": "Exact", "value": e.route },
                "method": e.method.as_str(),
            })
        })
        .collect();
    if spec.spec.v2.exposed(spec.spec.module.is_some()) {
        matches.push(json!({
            "path": { "type": "PathPrefix", "value": format!("/v2/models/{name}") },
        }));
    }
    let backend = |version: &Version, weight: u32| json!({ "name": version.object_name(), "port": 80, "weight": weight });
    let backends = match split.candidate {
        None => vec![backend(split.stable, 100)],
        Some((candidate, percent)) => {
            let percent = percent.min(100);
            vec![
                backend(split.stable, 100 - percent),
                backend(candidate, percent),
            ]
        }
    };
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(name, &placement.namespace, function_labels(name)),
        "spec": {
            "parentRefs": [parent],
            "rules": [{ "matches": matches, "backendRefs": backends }],
        },
    })
}

fn service_ports() -> Object {
    json!([
        { "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP" },
        { "name": "admin", "port": ADMIN_PORT, "targetPort": "admin", "protocol": "TCP" },
    ])
}

pub fn trigger_auth_name(function: &str) -> String {
    format!("{function}-aifn-admin")
}

fn metadata(name: &str, namespace: &str, labels: Object) -> Object {
    json!({ "name": name, "namespace": namespace, "labels": labels })
}

fn function_labels(name: &str) -> Object {
    json!({ NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY })
}

fn version_labels(version: &Version) -> Object {
    let mut labels = function_labels(version.function());
    labels[VERSION_LABEL] = json!(version.id);
    labels
}

fn selector(version: &Version) -> Object {
    json!({ NAME_LABEL: version.function(), VERSION_LABEL: version.id })
}

/// `50` rather than `50.0`; fractions as they are.
fn format_number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_image_tags_and_digests() {
        assert_eq!(
            version_of_image("registry.local/aifn/churn:sha256-0123456789abcdef"),
            "0123456789ab"
        );
        assert_eq!(
            version_of_image("r.io/x@sha256:ABCDEF0123456789ff"),
            "abcdef012345"
        );
        assert_eq!(version_of_image("localhost:5000/churn"), "latest");
        assert_eq!(version_of_image("churn:v2"), "v2");
    }
}
