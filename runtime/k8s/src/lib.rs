//! aifn on Kubernetes, with Kubernetes' own primitives: a function version runs as a Deployment of
//! pods that each run `aifn serve --bundle` from the version's image; a Service per version, a
//! PodDisruptionBudget, a KEDA ScaledObject that scales on the pods' own latency and in-flight
//! requests, and a Gateway API HTTPRoute whose weights carry a canary.
//!
//! - [`render`]: the objects of one function (`aifn k8s render`, and what the operator applies);
//! - [`crd`]: the `Function` CustomResourceDefinition, its schema generated from the spec types;
//! - [`reconcile`]: the operator's rules, a pure function from a `Function` and what the cluster
//!   holds to the actions that bring one to the other, judged like a rollout on one host;
//! - [`install`]: the manifest that installs the CRD and the operator.

pub mod crd;
pub mod install;
pub mod reconcile;
pub mod render;

/// Objects are plain JSON values: what the API server takes, and what golden files hold.
pub type Object = serde_json::Value;

/// The group and version of `kind: Function` (`apiVersion: ai.function/v1`).
pub const GROUP: &str = "ai.function";
pub const VERSION: &str = "v1";

/// The annotation naming the image that serves a function on a cluster (`aifn image` prints it).
pub const IMAGE_ANNOTATION: &str = "ai.function/image";

/// Labels every object of a function carries; the version label tells versions apart.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const VERSION_LABEL: &str = "ai.function/version";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "aifn";

/// Writes objects as one YAML stream (`---` between documents), as `kubectl apply -f` reads it.
pub fn to_yaml(objects: &[Object]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("JSON values serialise as YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}
