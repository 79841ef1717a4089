//! The operator's rules: from a `Function` resource, what it last recorded in its status, and what
//! the cluster holds now, the objects to apply, the ones to delete and the new status. Pure (the
//! clock, the pods' readiness and their figures are passed in), so every case is a unit test;
//! `aifn-operator` reads the cluster, calls [`reconcile`] and carries the plan out.
//!
//! A version is an image. A Function whose image changes gets a rollout across pods, judged by
//! the same rules as on one host ([`aifn_host::rollout::judge`]) on figures summed over each
//! version's pods: the candidate's Deployment starts beside the stable one; once one of its pods
//! is ready the HTTPRoute gives it `steps[0]`% of the traffic, then each next step; at 100% it is
//! watched against the stable version's figures from before, with the stable pods kept to take
//! the traffic back at once; then the stable version's objects go. A candidate that crosses a
//! threshold loses its traffic and its objects, and is remembered as failed so that it is not
//! tried again until the image changes.

use crate::render::{function_objects, version_objects, Placement, Split, Version};
use crate::Object;
use aifn_host::records::{Figures, Phase};
use aifn_host::rollout::{judge, Verdict};
use aifn_spec::RolloutStrategy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the operator keeps in a Function's `status` between reconciles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The version taking the traffic (or, while it is watched, the one it replaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    /// Percent of the traffic the candidate takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_weight: Option<u32>,
    /// The stable and candidate versions: image and normalised spec, so that a version's objects
    /// can be rendered after the resource's spec has moved on.
    #[serde(default)]
    pub versions: BTreeMap<String, VersionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutState>,
    /// Versions that failed their rollout, with why: not tried again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionRecord {
    pub image: String,
    pub spec: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// `None` until one of the candidate's pods is ready.
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_since_ms: Option<u64>,
    /// Why it is where it is, as `judge` said.
    pub note: String,
}

/// A status condition, as Kubernetes objects report them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// What the operator saw of the cluster for one Function.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub now_ms: u64,
    /// The function's objects there now (by its labels): (kind, name, version label).
    pub objects: Vec<ObjectRef>,
    /// Ready pods of each version.
    pub ready: BTreeMap<String, u32>,
    /// Each version's figures over its rollout window, summed over its pods.
    pub figures: BTreeMap<String, Figures>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: String,
    pub name: String,
    /// `ai.function/version`; none on the function-wide objects.
    pub version: Option<String>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Applied in order (server-side apply: the whole desired object each time).
    pub apply: Vec<Object>,
    pub delete: Vec<ObjectRef>,
    pub status: Status,
    /// When to look again.
    pub requeue_after: Duration,
}

/// During a rollout the operator looks every few seconds; otherwise it waits for changes.
pub const ROLLOUT_REQUEUE: Duration = Duration::from_secs(5);
pub const STEADY_REQUEUE: Duration = Duration::from_secs(60);

/// The plan for a Function whose spec (with its image) is `desired`, or could not be read
/// (`Err`: the validator's words).
pub fn reconcile(
    desired: Result<Version, String>,
    status: &Status,
    observed: &Observed,
    placement: &Placement,
) -> Plan {
    let mut status = status.clone();
    let desired = match desired {
        Ok(version) => version,
        Err(why) => {
            // Whatever serves keeps serving; the resource says why it is not applied.
            set_ready(&mut status, "False", "InvalidSpec", &why);
            return keep_serving(status, placement);
        }
    };
    let mut versions = recorded_versions(&status);
    let Some(stable) = status.stable.clone().and_then(|id| versions.remove(&id)) else {
        // First sight: the version serves all traffic as soon as its pods are ready.
        status.stable = Some(desired.id.clone());
        status.versions = BTreeMap::from([(desired.id.clone(), record(&desired))]);
        set_ready(
            &mut status,
            "True",
            "Serving",
            &format!("version {} serves all traffic", desired.id),
        );
        return steady(desired, status, observed, placement);
    };
    let candidate = status.candidate.clone().and_then(|id| versions.remove(&id));
    match candidate {
        None if desired.id == stable.id => {
            // The same image: objects follow the spec (scale bounds, resources) in place.
            status.versions = BTreeMap::from([(desired.id.clone(), record(&desired))]);
            set_ready(
                &mut status,
                "True",
                "Serving",
                &format!("version {} serves all traffic", desired.id),
            );
            steady(desired, status, observed, placement)
        }
        None => {
            if let Some(why) = status.failed.get(&desired.id) {
                let message = format!(
                    "version {} failed its rollout ({why}); version {} serves. Change the image to try again",
                    desired.id, stable.id
                );
                set_ready(&mut status, "True", "RolledBack", &message);
                return steady(stable, status, observed, placement);
            }
            let strategy = desired.spec.spec.rollout.clone().unwrap_or_default();
            if strategy.strategy == RolloutStrategy::Shadow {
                set_ready(
                    &mut status,
                    "False",
                    "UnsupportedStrategy",
                    "shadow rollouts run on one host only; on Kubernetes use canary or immediate",
                );
                return steady(stable, status, observed, placement);
            }
            status.candidate = Some(desired.id.clone());
            status.candidate_weight = Some(0);
            status.versions.insert(desired.id.clone(), record(&desired));
            status.rollout = Some(RolloutState {
                phase: None,
                slow_since_ms: None,
                note: "waiting for a ready pod of the new version".into(),
            });
            rolling(stable, desired, status, observed, placement)
        }
        Some(candidate) if desired.id == candidate.id => {
            rolling(stable, desired, status, observed, placement)
        }
        Some(candidate) => {
            // The spec moved on (to another image, or back to the stable one) mid-rollout: the
            // candidate is dropped, and a new rollout starts from the stable version.
            let dropped = candidate.id.clone();
            status.candidate = None;
            status.candidate_weight = None;
            status.rollout = None;
            status.versions.remove(&dropped);
            let mut plan = reconcile(Ok(desired), &status, observed, placement);
            plan.delete.extend(version_refs(observed, &dropped));
            plan.delete.sort();
            plan.delete.dedup();
            plan
        }
    }
}

/// A Function deleted: everything it had goes (owner references do the same on a real cluster;
/// this covers objects made before them, or by hand).
pub fn reconcile_deleted(observed: &Observed) -> Vec<ObjectRef> {
    observed.objects.clone()
}

/// One version takes all traffic; objects of any other version go.
fn steady(version: Version, status: Status, observed: &Observed, placement: &Placement) -> Plan {
    let mut apply = function_objects(
        &Split {
            stable: &version,
            candidate: None,
        },
        placement,
    );
    apply.extend(version_objects(&version, placement));
    let mut status = status;
    status.candidate = None;
    status.candidate_weight = None;
    status.rollout = None;
    Plan {
        apply,
        delete: others(observed, &[&version.id]),
        status,
        requeue_after: STEADY_REQUEUE,
    }
}

/// The spec could not be read: the recorded versions' objects stay as they are.
fn keep_serving(status: Status, placement: &Placement) -> Plan {
    let mut versions = recorded_versions(&status);
    let stable = status.stable.as_ref().and_then(|id| versions.remove(id));
    let candidate = status.candidate.as_ref().and_then(|id| versions.remove(id));
    let mut apply = Vec::new();
    if let Some(stable) = &stable {
        let weight = status.candidate_weight.unwrap_or(0);
        apply = function_objects(
            &Split {
                stable,
                candidate: candidate.as_ref().map(|c| (c, weight)),
            },
            placement,
        );
        apply.extend(version_objects(stable, placement));
        if let Some(candidate) = &candidate {
            apply.extend(version_objects(candidate, placement));
        }
    }
    Plan {
        apply,
        delete: Vec::new(),
        status,
        requeue_after: STEADY_REQUEUE,
    }
}

/// A rollout in progress: judge it, then render both versions at the weight it leads to.
fn rolling(
    stable: Version,
    candidate: Version,
    mut status: Status,
    observed: &Observed,
    placement: &Placement,
) -> Plan {
    let plan = candidate.spec.spec.rollout.clone().unwrap_or_default();
    let now = observed.now_ms;
    let mut state = status.rollout.clone().unwrap_or(RolloutState {
        phase: None,
        slow_since_ms: None,
        note: String::new(),
    });
    let ready = observed.ready.get(&candidate.id).copied().unwrap_or(0);
    let figures = |id: &str| observed.figures.get(id).cloned().unwrap_or_default();
    let outcome = match (&state.phase, plan.strategy) {
        (None, _) if ready == 0 => {
            state.note = format!("waiting for a ready pod of version {}", candidate.id);
            None
        }
        // Immediate: all traffic moves once the new pods are ready; nothing is judged.
        (None, RolloutStrategy::Immediate) => Some(Verdict::Complete),
        (None, _) => {
            state.phase = Some(Phase::Step {
                index: 0,
                since_ms: now,
            });
            state.note = format!("step 1 of {}", plan.steps.len());
            None
        }
        (Some(phase), _) => Some(judge(
            &plan,
            phase,
            now,
            &figures(&stable.id),
            &figures(&candidate.id),
            state.slow_since_ms,
        )),
    };
    if !matches!(outcome, Some(Verdict::Slow(_))) && outcome.is_some() {
        state.slow_since_ms = None;
    }
    match outcome {
        None => {}
        Some(Verdict::Hold(note)) => state.note = note,
        Some(Verdict::Slow(note)) => {
            state.slow_since_ms.get_or_insert(now);
            state.note = note;
        }
        Some(Verdict::Advance(index)) => {
            state.phase = Some(Phase::Step {
                index,
                since_ms: now,
            });
            state.note = format!("step {} of {}", index + 1, plan.steps.len());
        }
        Some(Verdict::Promote) => {
            state.phase = Some(Phase::Watch {
                until_ms: now + plan.watch.0.as_millis() as u64,
                baseline: figures(&stable.id),
            });
            state.note = "promoted: all traffic, watched".into();
        }
        Some(Verdict::Complete) => {
            let message = format!(
                "version {} serves all traffic (rolled out from {})",
                candidate.id, stable.id
            );
            status.stable = Some(candidate.id.clone());
            status.versions = BTreeMap::from([(candidate.id.clone(), record(&candidate))]);
            set_ready(&mut status, "True", "Serving", &message);
            return steady(candidate, status, observed, placement);
        }
        Some(Verdict::Fail(why)) => {
            let message = format!(
                "version {} rolled back to {}: {why}",
                candidate.id, stable.id
            );
            status.failed.insert(candidate.id.clone(), why);
            status.versions.remove(&candidate.id);
            set_ready(&mut status, "True", "RolledBack", &message);
            return steady(stable, status, observed, placement);
        }
    }
    let weight = match &state.phase {
        None => 0,
        Some(phase) => {
            (aifn_host::rollout::share_basis_points(&plan, phase) as f64 / 100.0).round() as u32
        }
    };
    let message = format!(
        "rolling out version {} over {}: {}% of traffic; {}",
        candidate.id, stable.id, weight, state.note
    );
    set_ready(&mut status, "True", "RollingOut", &message);
    status.candidate_weight = Some(weight);
    status.rollout = Some(state);
    let mut apply = function_objects(
        &Split {
            stable: &stable,
            candidate: Some((&candidate, weight)),
        },
        placement,
    );
    apply.extend(version_objects(&stable, placement));
    apply.extend(version_objects(&candidate, placement));
    Plan {
        apply,
        delete: others(observed, &[&stable.id, &candidate.id]),
        status,
        requeue_after: ROLLOUT_REQUEUE,
    }
}

fn record(version: &Version) -> VersionRecord {
    VersionRecord {
        image: version.image.clone(),
        spec: aifn_spec::to_yaml(&version.spec),
    }
}

/// The versions the status records, parsed back (a record that no longer parses is dropped).
fn recorded_versions(status: &Status) -> BTreeMap<String, Version> {
    status
        .versions
        .iter()
        .filter_map(|(id, record)| {
            let spec = aifn_spec::parse(&record.spec).ok()?;
            Some((
                id.clone(),
                Version {
                    spec,
                    image: record.image.clone(),
                    id: id.clone(),
                },
            ))
        })
        .collect()
}

/// Objects of versions other than `keep`.
fn others(observed: &Observed, keep: &[&str]) -> Vec<ObjectRef> {
    observed
        .objects
        .iter()
        .filter(|o| o.version.as_deref().is_some_and(|v| !keep.contains(&v)))
        .cloned()
        .collect()
}

fn version_refs(observed: &Observed, id: &str) -> Vec<ObjectRef> {
    observed
        .objects
        .iter()
        .filter(|o| o.version.as_deref() == Some(id))
        .cloned()
        .collect()
}

pub fn ready_condition(status: &Status) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.kind == "Ready")
}

fn set_ready(status: &mut Status, value: &str, reason: &str, message: &str) {
    let condition = Condition {
        kind: "Ready".into(),
        status: value.into(),
        reason: reason.into(),
        message: message.into(),
    };
    status.conditions.retain(|c| c.kind != "Ready");
    status.conditions.push(condition);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: &str = "apiVersion: ai.function/v1
kind: Function
metadata: { name: churn }
spec:
  model: { id: churn_v1, runtime: onnx }
  resources: { cpu: \"2\", memory: 1Gi }
  scaling: { min_replicas: 2, max_replicas: 8, target_latency: 20ms }
  rollout:
    strategy: canary
    steps: [10, 50, 100]
    step_duration: 30s
    watch: 60s
    min_requests: 20
  endpoints:
    - { route: /v1/churn, method: POST, auth: none }
";

    fn version(id: &str, text: &str) -> Version {
        let spec = aifn_spec::parse(text).unwrap();
        Version::new(spec, Some(format!("registry.local/churn:{id}")), None).unwrap()
    }

    fn placement() -> Placement {
        Placement {
            namespace: "shop".into(),
            gateway: Some("infra/web".into()),
        }
    }

    /// What the cluster holds after `plan` was carried out, with `ready` pods per version.
    fn cluster_after(plan: &Plan, now_ms: u64, ready: &[(&str, u32)]) -> Observed {
        let objects = plan
            .apply
            .iter()
            .map(|o| ObjectRef {
                kind: o["kind"].as_str().unwrap().into(),
                name: o["metadata"]["name"].as_str().unwrap().into(),
                version: o["metadata"]["labels"][crate::VERSION_LABEL]
                    .as_str()
                    .map(Into::into),
            })
            .collect();
        Observed {
            now_ms,
            objects,
            ready: ready.iter().map(|(v, n)| (v.to_string(), *n)).collect(),
            figures: BTreeMap::new(),
        }
    }

    fn kinds(plan: &Plan) -> Vec<String> {
        plan.apply
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn route_weights(plan: &Plan) -> Vec<(String, u64)> {
        let route = plan
            .apply
            .iter()
            .find(|o| o["kind"] == "HTTPRoute")
            .unwrap();
        route["spec"]["rules"][0]["backendRefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_string(),
                    b["weight"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn figures(requests: u64, errors: u64, p95_ms: f64) -> Figures {
        Figures {
            requests,
            errors,
            p95_ms: Some(p95_ms),
        }
    }

    fn reason(status: &Status) -> &str {
        &ready_condition(status).unwrap().reason
    }

    #[test]
    fn a_new_function_gets_every_object_and_serves_at_once() {
        let plan = reconcile(
            Ok(version("aaa", SPEC)),
            &Status::default(),
            &Observed::default(),
            &placement(),
        );
        assert_eq!(
            kinds(&plan),
            [
                "Service/churn",
                "TriggerAuthentication/churn-aifn-admin",
                "HTTPRoute/churn",
                "Deployment/churn-aaa",
                "Service/churn-aaa",
                "PodDisruptionBudget/churn-aaa",
                "ScaledObject/churn-aaa",
            ]
        );
        assert_eq!(route_weights(&plan), [("churn-aaa".to_string(), 100)]);
        assert_eq!(plan.status.stable.as_deref(), Some("aaa"));
        assert_eq!(reason(&plan.status), "Serving");
        assert!(plan.delete.is_empty());
        assert_eq!(plan.requeue_after, STEADY_REQUEUE);
    }

    #[test]
    fn changed_scale_bounds_update_the_scaler_in_place() {
        let first = reconcile(
            Ok(version("aaa", SPEC)),
            &Status::default(),
            &Observed::default(),
            &placement(),
        );
        let wider = SPEC.replace("max_replicas: 8", "max_replicas: 40");
        let plan = reconcile(
            Ok(version("aaa", &wider)),
            &first.status,
            &cluster_after(&first, 1, &[("aaa", 2)]),
            &placement(),
        );
        let scaler = plan
            .apply
            .iter()
            .find(|o| o["kind"] == "ScaledObject")
            .unwrap();
        assert_eq!(scaler["spec"]["maxReplicaCount"], json!(40));
        assert_eq!(scaler["spec"]["minReplicaCount"], json!(2));
        assert!(plan.delete.is_empty(), "{:?}", plan.delete);
        assert_eq!(plan.status.candidate, None);
        assert!(plan.status.versions["aaa"]
            .spec
            .contains("max_replicas: 40"));
    }

    /// Runs a canary from `aaa` to `bbb` up to the first judged step, returning the last plan.
    fn canary_started() -> (Plan, Observed) {
        let first = reconcile(
            Ok(version("aaa", SPEC)),
            &Status::default(),
            &Observed::default(),
            &placement(),
        );
        let observed = cluster_after(&first, 1_000, &[("aaa", 2)]);
        let plan = reconcile(
            Ok(version("bbb", SPEC)),
            &first.status,
            &observed,
            &placement(),
        );
        // Its pods are not ready yet: both versions' objects exist, the candidate has no traffic.
        assert!(kinds(&plan).contains(&"Deployment/churn-bbb".to_string()));
        assert!(kinds(&plan).contains(&"Deployment/churn-aaa".to_string()));
        assert_eq!(
            route_weights(&plan),
            [("churn-aaa".into(), 100), ("churn-bbb".into(), 0)]
        );
        assert_eq!(plan.status.candidate.as_deref(), Some("bbb"));
        assert_eq!(plan.requeue_after, ROLLOUT_REQUEUE);
        let observed = cluster_after(&plan, 2_000, &[("aaa", 2), ("bbb", 1)]);
        let plan = reconcile(
            Ok(version("bbb", SPEC)),
            &plan.status,
            &observed,
            &placement(),
        );
        assert_eq!(
            route_weights(&plan),
            [("churn-aaa".into(), 90), ("churn-bbb".into(), 10)]
        );
        assert_eq!(reason(&plan.status), "RollingOut");
        (plan, observed)
    }

    #[test]
    fn a_new_image_rolls_out_step_by_step_is_watched_and_replaces_the_old_version() {
        let (mut plan, _) = canary_started();
        let healthy = |o: &mut Observed| {
            o.figures.insert("aaa".into(), figures(500, 0, 10.0));
            o.figures.insert("bbb".into(), figures(100, 0, 11.0));
        };
        // Held for step_duration, then 50%, then promoted, watched, done.
        for (at_ms, expected) in [(20_000, 10), (33_000, 50), (64_000, 100), (100_000, 100)] {
            let mut observed = cluster_after(&plan, at_ms, &[("aaa", 2), ("bbb", 2)]);
            healthy(&mut observed);
            plan = reconcile(
                Ok(version("bbb", SPEC)),
                &plan.status,
                &observed,
                &placement(),
            );
            assert_eq!(
                route_weights(&plan)[1].1,
                expected,
                "at {at_ms} ms: {:?}",
                plan.status
            );
        }
        let mut observed = cluster_after(&plan, 125_000, &[("aaa", 2), ("bbb", 2)]);
        healthy(&mut observed);
        plan = reconcile(
            Ok(version("bbb", SPEC)),
            &plan.status,
            &observed,
            &placement(),
        );
        assert_eq!(route_weights(&plan), [("churn-bbb".to_string(), 100)]);
        assert_eq!(plan.status.stable.as_deref(), Some("bbb"));
        assert_eq!(plan.status.candidate, None);
        let deleted: Vec<String> = plan
            .delete
            .iter()
            .map(|o| format!("{}/{}", o.kind, o.name))
            .collect();
        assert_eq!(
            deleted,
            [
                "Deployment/churn-aaa",
                "Service/churn-aaa",
                "PodDisruptionBudget/churn-aaa",
                "ScaledObject/churn-aaa",
            ]
        );
    }

    #[test]
    fn a_failing_candidate_loses_its_traffic_and_is_not_tried_again() {
        let (plan, _) = canary_started();
        let mut observed = cluster_after(&plan, 5_000, &[("aaa", 2), ("bbb", 1)]);
        observed.figures.insert("aaa".into(), figures(500, 0, 10.0));
        observed.figures.insert("bbb".into(), figures(50, 10, 10.0));
        let plan = reconcile(
            Ok(version("bbb", SPEC)),
            &plan.status,
            &observed,
            &placement(),
        );
        assert_eq!(route_weights(&plan), [("churn-aaa".to_string(), 100)]);
        assert_eq!(plan.status.stable.as_deref(), Some("aaa"));
        assert!(
            plan.status.failed["bbb"].contains("error rate"),
            "{:?}",
            plan.status.failed
        );
        assert_eq!(reason(&plan.status), "RolledBack");
        assert!(plan
            .delete
            .iter()
            .all(|o| o.version.as_deref() == Some("bbb")));
        assert_eq!(plan.delete.len(), 4);
        // The resource still names bbb: it stays off until the image changes.
        let observed = cluster_after(&plan, 10_000, &[("aaa", 2)]);
        let again = reconcile(
            Ok(version("bbb", SPEC)),
            &plan.status,
            &observed,
            &placement(),
        );
        assert_eq!(again.status.candidate, None);
        assert_eq!(route_weights(&again), [("churn-aaa".to_string(), 100)]);
        assert!(ready_condition(&again.status)
            .unwrap()
            .message
            .contains("failed its rollout"));
        // A new image rolls out again.
        let next = reconcile(
            Ok(version("ccc", SPEC)),
            &again.status,
            &observed,
            &placement(),
        );
        assert_eq!(next.status.candidate.as_deref(), Some("ccc"));
    }

    #[test]
    fn a_slow_candidate_fails_only_once_it_stays_slow() {
        let (plan, _) = canary_started();
        let slow = |plan: &Plan, at_ms| {
            let mut observed = cluster_after(plan, at_ms, &[("aaa", 2), ("bbb", 1)]);
            observed.figures.insert("aaa".into(), figures(500, 0, 10.0));
            observed.figures.insert("bbb".into(), figures(50, 0, 40.0));
            reconcile(
                Ok(version("bbb", SPEC)),
                &plan.status,
                &observed,
                &placement(),
            )
        };
        let first = slow(&plan, 5_000);
        assert_eq!(first.status.candidate.as_deref(), Some("bbb"));
        assert_eq!(
            first.status.rollout.as_ref().unwrap().slow_since_ms,
            Some(5_000)
        );
        let later = slow(&first, 9_000);
        assert_eq!(later.status.candidate, None);
        assert!(later.status.failed["bbb"].contains("p95"));
    }

    #[test]
    fn an_immediate_rollout_switches_once_the_new_pods_are_ready() {
        let spec = SPEC.replace("strategy: canary", "strategy: immediate");
        let first = reconcile(
            Ok(version("aaa", &spec)),
            &Status::default(),
            &Observed::default(),
            &placement(),
        );
        let waiting = reconcile(
            Ok(version("bbb", &spec)),
            &first.status,
            &cluster_after(&first, 1, &[("aaa", 2)]),
            &placement(),
        );
        assert_eq!(route_weights(&waiting)[1], ("churn-bbb".into(), 0));
        let done = reconcile(
            Ok(version("bbb", &spec)),
            &waiting.status,
            &cluster_after(&waiting, 2, &[("aaa", 2), ("bbb", 2)]),
            &placement(),
        );
        assert_eq!(route_weights(&done), [("churn-bbb".to_string(), 100)]);
        assert_eq!(done.delete.len(), 4);
    }

    #[test]
    fn going_back_to_the_stable_image_mid_rollout_drops_the_candidate() {
        let (plan, _) = canary_started();
        let observed = cluster_after(&plan, 5_000, &[("aaa", 2), ("bbb", 1)]);
        let back = reconcile(
            Ok(version("aaa", SPEC)),
            &plan.status,
            &observed,
            &placement(),
        );
        assert_eq!(route_weights(&back), [("churn-aaa".to_string(), 100)]);
        assert_eq!(back.status.candidate, None);
        assert_eq!(back.delete.len(), 4);
        assert!(back
            .delete
            .iter()
            .all(|o| o.version.as_deref() == Some("bbb")));
    }

    #[test]
    fn an_invalid_spec_is_reported_and_what_serves_keeps_serving() {
        let first = reconcile(
            Ok(version("aaa", SPEC)),
            &Status::default(),
            &Observed::default(),
            &placement(),
        );
        let observed = cluster_after(&first, 1, &[("aaa", 2)]);
        let plan = reconcile(
            Err("2:3: spec.model.id: missing".into()),
            &first.status,
            &observed,
            &placement(),
        );
        assert_eq!(kinds(&plan), kinds(&first));
        assert!(plan.delete.is_empty());
        let ready = ready_condition(&plan.status).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert!(ready.message.contains("spec.model.id"));
    }

    #[test]
    fn a_shadow_rollout_is_refused_on_kubernetes() {
        let first = reconcile(
            Ok(version("aaa", SPEC)),
            &Status::default(),
            &Observed::default(),
            &placement(),
        );
        let shadow = SPEC.replace("strategy: canary", "strategy: shadow");
        let plan = reconcile(
            Ok(version("bbb", &shadow)),
            &first.status,
            &cluster_after(&first, 1, &[("aaa", 2)]),
            &placement(),
        );
        assert_eq!(reason(&plan.status), "UnsupportedStrategy");
        assert_eq!(route_weights(&plan), [("churn-aaa".to_string(), 100)]);
    }

    #[test]
    fn a_deleted_function_takes_its_objects_with_it() {
        let first = reconcile(
            Ok(version("aaa", SPEC)),
            &Status::default(),
            &Observed::default(),
            &placement(),
        );
        let observed = cluster_after(&first, 1, &[("aaa", 2)]);
        assert_eq!(reconcile_deleted(&observed).len(), first.apply.len());
    }

    #[test]
    fn the_status_survives_a_round_trip_through_the_api_server() {
        let (plan, _) = canary_started();
        let text = serde_json::to_string(&plan.status).unwrap();
        let back: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(back, plan.status);
    }
}
