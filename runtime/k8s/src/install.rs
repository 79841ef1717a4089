//! The manifest that installs aifn on a cluster: the `Function` CRD, a namespace for the operator,
//! its service account with only the rights it uses, and its Deployment. Written out as
//! `deploy/kubernetes/install.yaml` (with a kustomization beside it) by `aifn k8s install`.

use crate::{Object, MANAGED_BY, MANAGED_BY_LABEL};
use serde_json::json;

pub const NAMESPACE: &str = "aifn-system";
pub const OPERATOR: &str = "aifn-operator";

/// The objects, in the order they must be applied.
pub fn install_manifest(operator_image: &str) -> Vec<Object> {
    let labels = json!({ "app.kubernetes.io/name": OPERATOR, MANAGED_BY_LABEL: MANAGED_BY });
    let meta = |name: &str| json!({ "name": name, "namespace": NAMESPACE, "labels": labels });
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| json!({ "apiGroups": groups, "resources": resources, "verbs": verbs });
    let manage = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": NAMESPACE, "labels": labels },
        }),
        crate::crd::function_crd(),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(OPERATOR),
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": OPERATOR, "labels": labels },
            "rules": [
                rule(&[crate::GROUP], &["functions"], &["get", "list", "watch", "patch", "update"]),
                rule(&[crate::GROUP], &["functions/status"], &["get", "patch", "update"]),
                rule(&["apps"], &["deployments"], &manage),
                rule(&[""], &["services"], &manage),
                rule(&[""], &["pods"], &["get", "list", "watch"]),
                // The admin token (Secret `aifn-admin`) the pods' status is read with.
                rule(&[""], &["secrets"], &["get"]),
                rule(&[""], &["events"], &["create", "patch"]),
                rule(&["policy"], &["poddisruptionbudgets"], &manage),
                rule(&["keda.sh"], &["scaledobjects", "triggerauthentications"], &manage),
                rule(&["gateway.networking.k8s.io"], &["httproutes"], &manage),
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": OPERATOR, "labels": labels },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": OPERATOR,
            },
            "subjects": [{ "kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE }],
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(OPERATOR),
            "spec": {
                // One reconciler at a time: a second replica would race it.
                "replicas": 1,
                "strategy": { "type": "Recreate" },
                "selector": { "matchLabels": { "app.kubernetes.io/name": OPERATOR } },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "serviceAccountName": OPERATOR,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": crate::render::POD_USER,
                            "seccompProfile": { "type": "RuntimeDefault" },
                        },
                        "containers": [{
                            "name": "operator",
                            "image": operator_image,
                            "imagePullPolicy": "IfNotPresent",
                            // The Gateway (NAMESPACE/NAME) HTTPRoutes attach to; empty: no routes.
                            "env": [
                                { "name": "AIFN_GATEWAY", "value": "" },
                                { "name": "AIFN_LOG", "value": "info" },
                            ],
                            "resources": {
                                "requests": { "cpu": "50m", "memory": "64Mi" },
                                "limits": { "memory": "256Mi" },
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": { "drop": ["ALL"] },
                            },
                        }],
                    },
                },
            },
        }),
    ]
}
