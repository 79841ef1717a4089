//! The registry: what serves traffic now, the one thing the data plane reads.
//!
//! A [`Snapshot`] holds every function's serving version, its rollout (if any) and the route
//! table; it never changes. A change builds the next snapshot and swaps it in atomically, so a
//! request sees one consistent state from route lookup to the version that answers, and
//! readers never wait for writers.
//!
//! Writers must hold the function's [`FunctionGuard`] (one change per function at a time, for as
//! long as the change takes, model loading included); the swap itself is a short step shared by
//! all functions, because route ownership spans them.

use crate::function::LoadedFunction;
use crate::outcomes::Disagreement;
use crate::policy::Caller;
use crate::records::{Phase, RolloutRecord};
use crate::rollout;
use aifn_spec::{Method, Sticky};
use arc_swap::ArcSwap;
use dashmap::DashMap;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Most callers remembered per rollout for `sticky`; past it, callers keep to their hash bucket.
const MAX_PINS: usize = 100_000;

#[derive(Default)]
pub struct Registry {
    current: ArcSwap<Snapshot>,
    /// Serialises building and swapping in the next snapshot (never held while loading).
    swap: Mutex<()>,
    /// One lock per function name, taken for the whole of a change.
    locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Whether the stored deployments have been loaded after a start.
    ready: AtomicBool,
    /// The process is stopping (SIGTERM): readiness says no, so load balancers take it out.
    draining: AtomicBool,
}

/// What serves traffic at one moment.
#[derive(Clone, Default)]
pub struct Snapshot {
    functions: BTreeMap<String, Serving>,
    /// Derived from `functions` whenever they change.
    routes: RouteTable,
    /// Functions whose stored version failed to load at start, and why.
    failed: BTreeMap<String, String>,
}

/// A function's serving version, and the rollout bringing in another, if any.
#[derive(Clone)]
pub struct Serving {
    pub stable: Arc<LoadedFunction>,
    pub rollout: Option<Arc<LiveRollout>>,
}

/// The route table's answer for a path.
pub enum RouteMatch {
    Found(Serving),
    /// The path exists, but not for this method; the methods that do exist.
    WrongMethod(Vec<Method>),
    NotFound,
}

/// Held for the whole of a change to one function; every change goes through it.
pub struct FunctionGuard {
    name: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl FunctionGuard {
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Debug, thiserror::Error)]
#[error("route {method} {route} is already served by function `{owner}`")]
pub struct RouteConflict {
    pub method: Method,
    pub route: String,
    pub owner: String,
}

impl Registry {
    /// What serves traffic now.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn route(&self, method: &str, path: &str) -> RouteMatch {
        self.current.load().route(method, path)
    }

    pub fn serving(&self, name: &str) -> Option<Serving> {
        self.current.load().functions.get(name).cloned()
    }

    pub fn function(&self, name: &str) -> Option<Arc<LoadedFunction>> {
        self.serving(name).map(|s| s.stable)
    }

    /// Loaded, and not stopping.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// From now on readiness says no; requests are still served until the listener stops.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Waits until no other change of `name` is under way, and holds it off until dropped.
    pub async fn lock(&self, name: &str) -> FunctionGuard {
        let lock = self.locks.entry(name.to_string()).or_default().clone();
        FunctionGuard {
            name: name.to_string(),
            _held: lock.lock_owned().await,
        }
    }

    /// The function's guard if no change of it is under way now.
    pub fn try_lock(&self, name: &str) -> Option<FunctionGuard> {
        let lock = self.locks.entry(name.to_string()).or_default().clone();
        Some(FunctionGuard {
            name: name.to_string(),
            _held: lock.try_lock_owned().ok()?,
        })
    }

    /// Changes the guarded function's entry: `change` gets it in the next snapshot, which is
    /// swapped in if `change` succeeds. Other functions' changes wait only for this step.
    pub fn change<T, E>(
        &self,
        guard: &FunctionGuard,
        change: impl FnOnce(&mut Entry<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let _swap = self.swap.lock().expect("registry swap lock");
        let mut next = Snapshot::clone(&self.current.load());
        let value = change(&mut Entry {
            name: &guard.name,
            snapshot: &mut next,
        })?;
        next.rebuild_routes();
        self.current.store(Arc::new(next));
        Ok(value)
    }
}

impl Snapshot {
    pub fn route(&self, method: &str, path: &str) -> RouteMatch {
        match self.routes.owner(method, path) {
            Owner::Function(name) => match self.functions.get(name) {
                Some(serving) => RouteMatch::Found(serving.clone()),
                None => RouteMatch::NotFound,
            },
            Owner::OtherMethods(methods) => RouteMatch::WrongMethod(methods),
            Owner::None => RouteMatch::NotFound,
        }
    }

    /// Every serving function, by name.
    pub fn functions(&self) -> impl Iterator<Item = (&str, &Serving)> {
        self.functions.iter().map(|(name, s)| (name.as_str(), s))
    }

    pub fn names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }

    pub fn failed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.failed.iter().map(|(n, e)| (n.as_str(), e.as_str()))
    }

    /// Every loaded version: the serving ones, and the other version of each rollout.
    pub fn loaded(&self) -> Vec<Arc<LoadedFunction>> {
        self.functions
            .values()
            .flat_map(|s| {
                std::iter::once(s.stable.clone()).chain(s.rollout.as_ref().map(|r| r.other.clone()))
            })
            .collect()
    }

    /// Refuses `endpoints` of `name` that another function serves.
    pub fn check_routes_free(
        &self,
        name: &str,
        endpoints: &[aifn_spec::Endpoint],
    ) -> Result<(), RouteConflict> {
        self.routes.check_free(name, endpoints)
    }

    fn rebuild_routes(&mut self) {
        self.routes = RouteTable::build(
            self.functions
                .iter()
                .map(|(name, s)| (name.as_str(), s.stable.spec.spec.endpoints.as_slice())),
        );
    }
}

/// Route → the functions serving it, by method.
#[derive(Clone, Default)]
struct RouteTable(HashMap<String, Vec<(Method, Arc<str>)>>);

/// Who serves a method on a path.
#[derive(Debug, PartialEq)]
enum Owner<'t> {
    Function(&'t str),
    /// The path is served, but not for this method: the methods that are.
    OtherMethods(Vec<Method>),
    None,
}

impl RouteTable {
    fn build<'a>(
        functions: impl IntoIterator<Item = (&'a str, &'a [aifn_spec::Endpoint])>,
    ) -> Self {
        let mut routes: HashMap<String, Vec<(Method, Arc<str>)>> = HashMap::new();
        for (name, endpoints) in functions {
            let name: Arc<str> = Arc::from(name);
            for endpoint in endpoints {
                routes
                    .entry(endpoint.route.clone())
                    .or_default()
                    .push((endpoint.method, name.clone()));
            }
        }
        RouteTable(routes)
    }

    fn owner(&self, method: &str, path: &str) -> Owner<'_> {
        let Some(owners) = self.0.get(path) else {
            return Owner::None;
        };
        match owners.iter().find(|(m, _)| m.as_str() == method) {
            Some((_, name)) => Owner::Function(name),
            None => Owner::OtherMethods(owners.iter().map(|(m, _)| *m).collect()),
        }
    }

    fn check_free(
        &self,
        name: &str,
        endpoints: &[aifn_spec::Endpoint],
    ) -> Result<(), RouteConflict> {
        for endpoint in endpoints {
            let owner = self.0.get(&endpoint.route).and_then(|owners| {
                owners
                    .iter()
                    .find(|(m, owner)| *m == endpoint.method && &**owner != name)
            });
            if let Some((_, owner)) = owner {
                return Err(RouteConflict {
                    method: endpoint.method,
                    route: endpoint.route.clone(),
                    owner: owner.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// One function's entry in the snapshot being built (see [`Registry::change`]).
pub struct Entry<'s> {
    name: &'s str,
    snapshot: &'s mut Snapshot,
}

impl Entry<'_> {
    /// Serves `serving` from the next snapshot on, if its routes are free.
    pub fn set(&mut self, serving: Serving) -> Result<(), RouteConflict> {
        self.snapshot
            .check_routes_free(self.name, &serving.stable.spec.spec.endpoints)?;
        self.snapshot.failed.remove(self.name);
        self.snapshot
            .functions
            .insert(self.name.to_string(), serving);
        Ok(())
    }

    /// Changes only the rollout (the serving version stays).
    pub fn set_rollout(&mut self, rollout: Option<Arc<LiveRollout>>) {
        if let Some(serving) = self.snapshot.functions.get_mut(self.name) {
            serving.rollout = rollout;
        }
    }

    pub fn remove(&mut self) {
        self.snapshot.functions.remove(self.name);
        self.snapshot.failed.remove(self.name);
    }

    pub fn set_failed(&mut self, error: String) {
        self.snapshot.failed.insert(self.name.to_string(), error);
    }
}

/// A rollout in progress: its record (as stored), its plan, the other version it involves (the
/// candidate during a canary or a shadow, the previous version during the watch) and the traffic
/// split. Immutable: a step publishes a new one that shares the rollout's [`Progress`].
pub struct LiveRollout {
    pub record: RolloutRecord,
    pub plan: aifn_spec::Rollout,
    pub other: Arc<LoadedFunction>,
    split: Split,
    pub progress: Arc<Progress>,
}

/// How a rollout's phase divides requests between the stable version and the other one.
struct Split {
    phase: PhaseKind,
    sticky: Sticky,
    /// The candidate's share of traffic in basis points (canary steps).
    share: u32,
    /// Sticky callers' first assignment (key hash → on the candidate), kept across steps.
    pins: Arc<DashMap<u64, bool>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PhaseKind {
    Step,
    Shadow,
    Watch,
}

/// Which version answers a request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Stable,
    Candidate,
    /// The stable version answers; the candidate gets a copy.
    StableAndShadow,
}

/// What a rollout accumulates across its steps.
#[derive(Default)]
pub struct Progress {
    pub disagreement: Mutex<Disagreement>,
    /// The last verdict's words, for `aifn status`.
    pub note: Mutex<String>,
    /// Since when the candidate's p95 has been over the threshold (milliseconds since the epoch).
    pub slow_since_ms: Mutex<Option<u64>>,
    /// Held at its step by a monitoring alert with `action: freeze_rollout`.
    pub frozen: std::sync::atomic::AtomicBool,
}

/// Where a request goes.
pub struct Choice {
    pub serve: Arc<LoadedFunction>,
    /// A shadow that gets a copy of the request.
    pub shadow: Option<(Arc<LoadedFunction>, Arc<LiveRollout>)>,
}

impl LiveRollout {
    pub fn new(
        record: RolloutRecord,
        plan: aifn_spec::Rollout,
        other: Arc<LoadedFunction>,
    ) -> LiveRollout {
        LiveRollout {
            split: Split::new(&plan, &record.phase, Default::default()),
            record,
            plan,
            other,
            progress: Default::default(),
        }
    }

    /// The same rollout in a new phase: sticky callers, disagreement and notes carry over.
    pub fn advanced(&self, record: RolloutRecord) -> LiveRollout {
        LiveRollout {
            split: Split::new(&self.plan, &record.phase, self.split.pins.clone()),
            record,
            plan: self.plan.clone(),
            other: self.other.clone(),
            progress: self.progress.clone(),
        }
    }

    /// Percent of traffic the candidate takes now.
    pub fn candidate_share(&self) -> f64 {
        f64::from(self.split.share) / 100.0
    }
}

impl Split {
    fn new(plan: &aifn_spec::Rollout, phase: &Phase, pins: Arc<DashMap<u64, bool>>) -> Split {
        Split {
            phase: match phase {
                Phase::Step { .. } => PhaseKind::Step,
                Phase::Shadow { .. } => PhaseKind::Shadow,
                Phase::Watch { .. } => PhaseKind::Watch,
            },
            sticky: plan.sticky.clone(),
            share: rollout::share_basis_points(plan, phase),
            pins,
        }
    }

    /// Where a request goes. The caller's key is only made for sticky canaries.
    fn target(&self, caller: &Caller, headers: &hyper::HeaderMap) -> Target {
        match self.phase {
            PhaseKind::Watch => Target::Stable,
            PhaseKind::Shadow => Target::StableAndShadow,
            PhaseKind::Step => {
                let caller_key;
                let key = match &self.sticky {
                    Sticky::None => None,
                    Sticky::Caller => {
                        caller_key = caller.key();
                        Some(caller_key.as_str())
                    }
                    Sticky::Header(name) => headers.get(name).and_then(|v| v.to_str().ok()),
                };
                if self.to_candidate(key) {
                    Target::Candidate
                } else {
                    Target::Stable
                }
            }
        }
    }

    /// Whether a request goes to the candidate: by its caller's pinned or hashed bucket when the
    /// rollout is sticky, else at random.
    fn to_candidate(&self, sticky_key: Option<&str>) -> bool {
        let Some(key) = sticky_key else {
            return rollout::in_share(rand::random_range(0..10_000), self.share);
        };
        let hash = stable_hash(key);
        let hashed = rollout::in_share((hash % 10_000) as u32, self.share);
        if self.pins.len() >= MAX_PINS {
            return self.pins.get(&hash).map_or(hashed, |p| *p);
        }
        *self.pins.entry(hash).or_insert(hashed)
    }
}

/// FNV-1a: the same key gives the same bucket in every process (pins survive in spirit a restart).
fn stable_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Serving {
    /// Where a request goes: the candidate for its share of a canary, and a copy to a shadow.
    pub fn choose(&self, caller: &Caller, headers: &hyper::HeaderMap) -> Choice {
        let Some(live) = &self.rollout else {
            return Choice {
                serve: self.stable.clone(),
                shadow: None,
            };
        };
        match live.split.target(caller, headers) {
            Target::Stable => Choice {
                serve: self.stable.clone(),
                shadow: None,
            },
            Target::Candidate => Choice {
                serve: live.other.clone(),
                shadow: None,
            },
            Target::StableAndShadow => Choice {
                serve: self.stable.clone(),
                shadow: Some((live.other.clone(), live.clone())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Figures;

    fn endpoints(yaml_endpoints: &str) -> Vec<aifn_spec::Endpoint> {
        let spec = format!(
            "apiVersion: ai.function/v1\nkind: Function\nmetadata: {{ name: f }}\nspec:\n  model: {{ id: m, runtime: onnx }}\n  endpoints:\n{yaml_endpoints}"
        );
        aifn_spec::parse(&spec).expect("test spec").spec.endpoints
    }

    #[test]
    fn the_route_table_finds_owners_other_methods_and_conflicts() {
        let a = endpoints(
            "    - { route: /v1/a, method: POST }\n    - { route: /v1/shared, method: GET }\n",
        );
        let b = endpoints("    - { route: /v1/shared, method: POST }\n");
        let table = RouteTable::build([("a", a.as_slice()), ("b", b.as_slice())]);
        assert_eq!(table.owner("POST", "/v1/a"), Owner::Function("a"));
        assert_eq!(table.owner("POST", "/v1/shared"), Owner::Function("b"));
        assert_eq!(table.owner("GET", "/v1/shared"), Owner::Function("a"));
        assert_eq!(
            table.owner("DELETE", "/v1/a"),
            Owner::OtherMethods(vec![Method::Post])
        );
        assert_eq!(table.owner("POST", "/v1/none"), Owner::None);
        // A function may keep its own routes; another may not take them.
        assert!(table.check_free("a", &a).is_ok());
        let conflict = table.check_free("c", &b).unwrap_err();
        assert_eq!(
            (
                conflict.method,
                conflict.route.as_str(),
                conflict.owner.as_str()
            ),
            (Method::Post, "/v1/shared", "b")
        );
    }

    fn plan(sticky: Sticky) -> aifn_spec::Rollout {
        aifn_spec::Rollout {
            sticky,
            steps: vec![10.0, 50.0, 100.0],
            ..Default::default()
        }
    }

    fn split(plan: &aifn_spec::Rollout, phase: Phase, pins: Arc<DashMap<u64, bool>>) -> Split {
        Split::new(plan, &phase, pins)
    }

    fn step(index: usize) -> Phase {
        Phase::Step { index, since_ms: 0 }
    }

    fn headers(user: &str) -> hyper::HeaderMap {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-user", user.parse().unwrap());
        headers
    }

    #[test]
    fn a_canary_takes_its_share_and_watches_and_shadows_keep_callers_on_stable() {
        let anyone = Caller::Address([127, 0, 0, 1].into());
        let none = hyper::HeaderMap::new();
        let plan = plan(Sticky::None);
        let step0 = split(&plan, step(0), Default::default());
        let to_candidate = (0..10_000)
            .filter(|_| step0.target(&anyone, &none) == Target::Candidate)
            .count();
        assert!(
            (700..1300).contains(&to_candidate),
            "{to_candidate} of 10000 at 10%"
        );
        let watch = Phase::Watch {
            until_ms: 0,
            baseline: Figures::default(),
        };
        assert_eq!(
            split(&plan, watch, Default::default()).target(&anyone, &none),
            Target::Stable
        );
        assert_eq!(
            split(&plan, Phase::Shadow { since_ms: 0 }, Default::default()).target(&anyone, &none),
            Target::StableAndShadow
        );
    }

    #[test]
    fn sticky_callers_keep_their_version_as_the_share_grows() {
        let plan = plan(Sticky::Header("x-user".into()));
        let anyone = Caller::Address([127, 0, 0, 1].into());
        let pins: Arc<DashMap<u64, bool>> = Default::default();
        let first = split(&plan, step(0), pins.clone());
        let users: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
        let before: Vec<Target> = users
            .iter()
            .map(|u| first.target(&anyone, &headers(u)))
            .collect();
        assert!(before.contains(&Target::Candidate) && before.contains(&Target::Stable));
        // The next step shares the pins: everyone stays where they were, every time.
        let next = split(&plan, step(1), pins);
        for _ in 0..3 {
            let after: Vec<Target> = users
                .iter()
                .map(|u| next.target(&anyone, &headers(u)))
                .collect();
            assert_eq!(before, after);
        }
    }
}
