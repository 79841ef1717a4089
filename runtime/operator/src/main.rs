//! `aifn-operator`: keeps every `Function` resource of a cluster served. Every few seconds it
//! reads each Function, what the cluster holds for it (its objects, ready pods, and the pods' own
//! figures from their status endpoints) and hands them to [`aifn_k8s::reconcile::reconcile`],
//! whose plan it carries out: server-side apply of each object (owned by the Function, so that
//! deleting it deletes them), deletion of objects of versions that are gone, and the new status.
//!
//! Polling rather than watching: the rules need the clock and the pods' figures anyway, a missed
//! event costs one interval, and there is no cache to go stale.

use aifn_host::records::Figures;
use aifn_k8s::reconcile::{reconcile, ObjectRef, Observed, Status};
use aifn_k8s::render::{Placement, Version, ADMIN_PORT, ADMIN_SECRET};
use aifn_k8s::{GROUP, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL, VERSION, VERSION_LABEL};
use anyhow::Context;
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const FIELD_MANAGER: &str = "aifn-operator";

#[derive(Parser)]
#[command(version, about = "Reconciles aifn Function resources")]
struct Args {
    /// The Gateway API Gateway (`NAMESPACE/NAME` or `NAME`) HTTPRoutes attach to; empty: none.
    #[arg(long, env = "AIFN_GATEWAY", default_value = "")]
    gateway: String,
    /// Seconds between looks at every Function.
    #[arg(long, default_value_t = 5)]
    interval_secs: u64,
    /// Look once, then exit.
    #[arg(long)]
    once: bool,
}

/// The kinds a Function becomes: (group, version, kind, plural).
const OWNED_KINDS: [(&str, &str, &str, &str); 6] = [
    ("apps", "v1", "Deployment", "deployments"),
    ("", "v1", "Service", "services"),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    ),
    ("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
    (
        "keda.sh",
        "v1alpha1",
        "TriggerAuthentication",
        "triggerauthentications",
    ),
    ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
];

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn functions_resource() -> ApiResource {
    resource(GROUP, VERSION, "Function", "functions")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIFN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .json()
        .init();
    let args = Args::parse();
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster, or ~/.kube/config)")?;
    let gateway = (!args.gateway.is_empty()).then(|| args.gateway.clone());
    loop {
        if let Err(e) = reconcile_all(&client, &gateway).await {
            tracing::warn!("listing Functions: {e:#}");
        }
        if args.once {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(args.interval_secs)).await;
    }
}

async fn reconcile_all(client: &Client, gateway: &Option<String>) -> anyhow::Result<()> {
    let functions: Api<DynamicObject> = Api::all_with(client.clone(), &functions_resource());
    for function in functions.list(&ListParams::default()).await? {
        let name = function.metadata.name.clone().unwrap_or_default();
        // One Function's failure (an API error, a pod that does not answer) is logged and
        // retried on the next round; the others go on.
        if let Err(e) = reconcile_one(client, &function, gateway).await {
            tracing::warn!(function = %name, "reconcile: {e:#}");
        }
    }
    Ok(())
}

async fn reconcile_one(
    client: &Client,
    function: &DynamicObject,
    gateway: &Option<String>,
) -> anyhow::Result<()> {
    let name = function
        .metadata
        .name
        .clone()
        .context("a Function without a name")?;
    let namespace = function
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let placement = Placement {
        namespace: namespace.clone(),
        gateway: gateway.clone(),
    };
    let status: Status = function
        .data
        .get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    let observed = observe(client, &namespace, &name).await?;
    let plan = reconcile(desired(function), &status, &observed, &placement);

    let owner = json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "Function",
        "name": name,
        "uid": function.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    });
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for mut object in plan.apply {
        object["metadata"]["ownerReferences"] = json!([owner]);
        let api = api_for(client, &namespace, &object)?;
        let object_name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        api.patch(&object_name, &apply, &Patch::Apply(&object))
            .await
            .with_context(|| format!("applying {} {object_name}", object["kind"]))?;
    }
    for gone in &plan.delete {
        let api = api_for_kind(client, &namespace, &gone.kind)?;
        api.delete(&gone.name, &DeleteParams::background())
            .await
            .with_context(|| format!("deleting {} {}", gone.kind, gone.name))?;
    }
    let functions: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &functions_resource());
    let status = json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "Function",
        "status": plan.status,
    });
    functions
        .patch_status(&name, &apply, &Patch::Apply(&status))
        .await
        .context("writing the status")?;
    Ok(())
}

/// The resource as the spec the validator reads (the file `kubectl apply -f` sent), then the
/// version its image annotation names. `Err`: what the validator or the renderer said.
fn desired(function: &DynamicObject) -> Result<Version, String> {
    let mut metadata = json!({ "name": function.metadata.name });
    if let Some(labels) = &function.metadata.labels {
        metadata["labels"] = json!(labels);
    }
    if let Some(image) = function
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(aifn_k8s::IMAGE_ANNOTATION))
    {
        metadata["annotations"] = json!({ aifn_k8s::IMAGE_ANNOTATION: image });
    }
    let document = json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "Function",
        "metadata": metadata,
        "spec": function.data.get("spec").cloned().unwrap_or(Value::Null),
    });
    let text = serde_yaml::to_string(&document).map_err(|e| e.to_string())?;
    let spec = aifn_spec::parse(&text).map_err(|errors| errors.to_string())?;
    Version::new(spec, None, None).map_err(|e| e.to_string())
}

/// The function's objects, its versions' ready pods, and their figures summed over pods.
async fn observe(client: &Client, namespace: &str, name: &str) -> anyhow::Result<Observed> {
    let selector = format!("{NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}");
    let mut objects = Vec::new();
    for (group, version, kind, plural) in OWNED_KINDS {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            namespace,
            &resource(group, version, kind, plural),
        );
        // A cluster without KEDA or Gateway API has none of those kinds: nothing to observe.
        let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
            continue;
        };
        objects.extend(list.into_iter().map(|o| {
            ObjectRef {
                kind: kind.to_string(),
                name: o.metadata.name.clone().unwrap_or_default(),
                version: o
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(VERSION_LABEL).cloned()),
            }
        }));
    }
    objects.sort();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let mut ready = BTreeMap::new();
    for deployment in deployments
        .list(&ListParams::default().labels(&selector))
        .await?
    {
        let version = deployment
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(VERSION_LABEL).cloned());
        if let Some(version) = version {
            let count = deployment
                .status
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            ready.insert(version, count.max(0) as u32);
        }
    }

    let figures = pod_figures(client, namespace, name, &selector).await?;
    Ok(Observed {
        now_ms: aifn_host::records::now_ms(),
        objects,
        ready,
        figures,
    })
}

/// Each version's figures over its rollout window, read from every pod's status and summed:
/// requests and 5xx add up; the p95 is the worst pod's (a bound, not the exact pooled p95).
async fn pod_figures(
    client: &Client,
    namespace: &str,
    name: &str,
    selector: &str,
) -> anyhow::Result<BTreeMap<String, Figures>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let token = secrets
        .get_opt(ADMIN_SECRET)
        .await?
        .and_then(|s| s.data)
        .and_then(|d| d.get("token").cloned())
        .map(|t| String::from_utf8_lossy(&t.0).trim().to_string());
    let Some(token) = token else {
        // Without the token no pod can be read: rollouts hold (no figures, no verdict).
        tracing::warn!(
            namespace,
            "no Secret {ADMIN_SECRET} with a `token`: pods are not judged"
        );
        return Ok(BTreeMap::new());
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut targets = Vec::new();
    for pod in pods.list(&ListParams::default().labels(selector)).await? {
        let version = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(VERSION_LABEL).cloned());
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        if let (Some(version), Some(ip)) = (version, ip) {
            targets.push((
                version,
                format!("http://{ip}:{ADMIN_PORT}/admin/v1/functions/{name}"),
            ));
        }
    }
    let signals = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        targets
            .into_iter()
            .filter_map(|(version, url)| {
                let mut reply = agent
                    .get(&url)
                    .header("authorization", &format!("Bearer {token}"))
                    .call()
                    .ok()?;
                let status: Value = reply.body_mut().read_json().ok()?;
                Some((version, status["signals"].clone()))
            })
            .collect::<Vec<_>>()
    })
    .await?;
    let mut figures: BTreeMap<String, Figures> = BTreeMap::new();
    for (version, signal) in signals {
        let entry = figures.entry(version).or_default();
        entry.requests += signal["requests"].as_u64().unwrap_or(0);
        entry.errors += signal["errors"].as_u64().unwrap_or(0);
        let p95 = signal["window_p95_ms"].as_f64().unwrap_or(0.0);
        if p95 > 0.0 {
            entry.p95_ms = Some(entry.p95_ms.map_or(p95, |worst: f64| worst.max(p95)));
        }
    }
    Ok(figures)
}

fn api_for(client: &Client, namespace: &str, object: &Value) -> anyhow::Result<Api<DynamicObject>> {
    api_for_kind(
        client,
        namespace,
        object["kind"].as_str().unwrap_or_default(),
    )
}

fn api_for_kind(
    client: &Client,
    namespace: &str,
    kind: &str,
) -> anyhow::Result<Api<DynamicObject>> {
    let (group, version, kind, plural) = OWNED_KINDS
        .iter()
        .find(|(_, _, k, _)| *k == kind)
        .with_context(|| format!("the operator does not manage {kind}"))?;
    Ok(Api::namespaced_with(
        client.clone(),
        namespace,
        &resource(group, version, kind, plural),
    ))
}
