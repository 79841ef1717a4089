//! Deployment lifecycle on a real host: canary rollouts that promote themselves, a faulty version
//! rolled back automatically (with a webhook to a receiver on 127.0.0.1), shadow traffic that
//! never changes what callers see, and a host killed mid-rollout that comes back consistent.

use crate::support;

use aifn_host::api::{FunctionStatus, HistoryEntry, VersionList, VersionRole, VersionView};
use aifn_host::records::{AuditAction, Phase};
use aifn_spec::RolloutStrategy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;

const NAME: &str = "churn-predictor";

/// The churn predictor with one instance, a `rollout` block, and a `tag` that makes its digest
/// differ from other versions. Rollouts here are judged on errors: their `max_latency_ratio` is
/// loose, so tests running side by side on two cores do not fail a version on scheduling noise
/// (the latency rule is tested on a simulated clock in `runtime/host/src/rollout.rs`).
fn spec(dir: &Path, file: &str, rollout: &str, tag: &str) -> PathBuf {
    churn_spec(
        dir,
        file,
        &[
            ("min_replicas: 2", "min_replicas: 1"),
            (
                "domain: retention",
                &format!("domain: retention\n    tag: {tag}"),
            ),
            (
                "  endpoints:",
                &format!("  rollout:\n{rollout}\n  endpoints:"),
            ),
        ],
    )
}

/// The same, with the hostile test module in place of the churn module: it answers valid
/// requests, and fails (500) on the body `trap`, where the churn module says 400.
fn faulty_spec(dir: &Path, file: &str, rollout: &str) -> PathBuf {
    let path = spec(dir, file, rollout, "faulty");
    let module = built("tests/guests/hostile/target/wasm32-wasip2/release/hostile_guest.wasm");
    replace_line(
        &path,
        "churn_preprocess.wasm",
        &format!("    path: {}", module.display()),
    );
    path
}

fn valid_body() -> String {
    churn_expectations()[0].0.to_string()
}

fn status(host: &TestHost) -> FunctionStatus {
    host.status(NAME)
}

/// The audit log as `aifn history --json` prints it, oldest first.
fn history(host: &TestHost) -> Vec<HistoryEntry> {
    host.cli_json(&["history", NAME, "--json"])
}

/// One field of every version `aifn versions --json` lists, oldest first.
fn versions_field<T>(host: &TestHost, field: impl Fn(&VersionView) -> T) -> Vec<T> {
    let list: VersionList = host.cli_json(&["versions", NAME, "--json"]);
    list.versions.iter().map(field).collect()
}

fn actions(events: &[HistoryEntry]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.event.action.as_str().to_string())
        .collect()
}

/// The phase of the rollout in progress, if any.
fn phase(st: &FunctionStatus) -> Option<&Phase> {
    st.rollout.as_ref().map(|r| &r.phase)
}

/// Waits (at most `limit`) until `done` holds for the function's status, and returns it.
#[track_caller]
fn wait_for(
    host: &TestHost,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&FunctionStatus) -> bool,
) -> FunctionStatus {
    wait_until_seen(what, limit, || {
        let now = status(host);
        if done(&now) {
            Ok(now)
        } else {
            Err(pretty(&now))
        }
    })
}

/// Clients that call the function until stopped; what each answer was, by version and status.
struct Load<'a> {
    stop: &'a AtomicBool,
    /// Answers so far, of all the clients.
    answered: AtomicUsize,
}

type Seen = BTreeMap<(String, u16), u64>;

impl Load<'_> {
    fn run(&self, host: &TestHost, body: impl Fn(u64) -> String) -> Seen {
        let mut seen = Seen::new();
        let mut i = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let reply = host.post("/v1/churn", &body(i));
            let version = reply.header("x-aifn-version").unwrap_or("?").to_string();
            *seen.entry((version, reply.status)).or_default() += 1;
            self.answered.fetch_add(1, Ordering::Relaxed);
            i += 1;
        }
        seen
    }
}

fn merge(all: &mut Seen, more: Seen) {
    for (key, n) in more {
        *all.entry(key).or_default() += n;
    }
}

#[test]
fn a_canary_promotes_itself_step_by_step_without_a_failed_request() {
    let dir = temp_dir("canary");
    let host = TestHost::start_with(
        &dir.join("state"),
        &["--rollout-tick-ms", "100", "--keep-versions", "2"],
    );
    host.deploy(&spec(&dir, "v1.yaml", "    strategy: immediate", "v1"));
    let rollout = "    steps: [20, 50, 100]\n    step_duration: 1s\n    watch: 2s\n    window: 10s\n    min_requests: 5\n    max_latency_ratio: 50";
    let v2 = spec(&dir, "v2.yaml", rollout, "v2");

    let stop = AtomicBool::new(false);
    let load = Load {
        stop: &stop,
        answered: AtomicUsize::new(0),
    };
    let (seen, shares) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let clients: Vec<_> = (0..3)
            .map(|_| s.spawn(|| load.run(&host, |_| valid_body())))
            .collect();
        // The canary starts while the clients are being answered.
        wait_until("answering the clients", Duration::from_secs(10), || {
            (load.answered.load(Ordering::Relaxed) >= 10).then_some(())
        });
        let out = host.cli_ok(&[
            "deploy",
            v2.to_str().unwrap(),
            "--canary",
            "--reason",
            "new weights",
        ]);
        assert!(out.contains("rolling out"), "{out}");
        // A deploy during the rollout is refused with what to do.
        let again = host.cli(&["deploy", v2.to_str().unwrap()]);
        assert!(
            String::from_utf8_lossy(&again.stderr)
                .contains("`aifn promote churn-predictor` or `aifn abort churn-predictor` first"),
            "{again:?}"
        );
        let mut shares = std::collections::BTreeSet::new();
        let done = wait_for(
            &host,
            Duration::from_secs(60),
            "promoted and watched",
            |st| {
                if let Some(rollout) = &st.rollout {
                    shares.insert(rollout.candidate_share as u64);
                }
                st.version == 2 && st.rollout.is_none()
            },
        );
        stop.store(true, Ordering::Relaxed);
        let mut seen = Seen::new();
        for client in clients {
            merge(&mut seen, client.join().unwrap());
        }
        (seen, (shares, done))
    });
    let (shares, _) = shares;
    assert!(
        seen.keys().all(|(_, status)| *status == 200),
        "every request answered: {seen:?}"
    );
    assert!(
        seen.contains_key(&("1".into(), 200)) && seen.contains_key(&("2".into(), 200)),
        "{seen:?}"
    );
    assert!(shares.contains(&20) && shares.contains(&50), "{shares:?}");

    let events = history(&host);
    let actions = actions(&events);
    assert_eq!(
        actions,
        ["deploy", "deploy", "step", "promoted", "rollout_complete"],
        "{events:#?}"
    );
    let deploy = &events[1].event;
    assert!(deploy.actor.contains("from 127.0.0.1"), "{deploy:#?}");
    assert!(
        deploy
            .reason
            .contains("canary against version 1: 20% of traffic first; new weights"),
        "{deploy:#?}"
    );
    assert!(
        events[2..].iter().all(|e| e.event.actor == "aifn"),
        "{events:#?}"
    );
    let text = host.cli_ok(&["history", NAME]);
    assert!(
        text.contains("rollout_complete") && text.contains("new weights"),
        "{text}"
    );
    let versions = host.cli_ok(&["versions", NAME]);
    assert!(
        versions.lines().nth(2).unwrap().contains("stable"),
        "{versions}"
    );

    // The host keeps two versions (`--keep-versions 2`): a third deploy prunes the first.
    host.cli_ok(&[
        "deploy",
        spec(&dir, "v3.yaml", "    strategy: immediate", "v3")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(versions_field(&host, |v| v.version), [2, 3]);
    let last = history(&host).pop().unwrap().event;
    assert_eq!(
        (last.action, last.actor.as_str()),
        (AuditAction::Pruned, "aifn")
    );
}

#[test]
fn a_faulty_version_is_rolled_back_automatically_with_a_webhook() {
    let dir = temp_dir("auto-rollback");
    let (hook, received) = webhook_receiver();
    let host = TestHost::start_with(
        &dir.join("state"),
        &["--rollout-tick-ms", "100", "--webhook-url", &hook],
    );
    host.deploy(&spec(&dir, "v1.yaml", "    strategy: immediate", "v1"));
    let rollout = "    steps: [50, 100]\n    step_duration: 1s\n    watch: 60s\n    window: 10s\n    min_requests: 10\n    max_error_rate_increase: 0.05\n    max_latency_ratio: 50";
    let faulty = faulty_spec(&dir, "v2.yaml", rollout);

    // 1. In the watch: the faulty version passes its canary step on valid requests, takes all
    // traffic, and only then meets the inputs it fails on (one request in five).
    let stop = AtomicBool::new(false);
    let fault_began = std::sync::Mutex::new(None::<Instant>);
    let load = Load {
        stop: &stop,
        answered: AtomicUsize::new(0),
    };
    let faulting = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let clients: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    load.run(&host, |i| {
                        if faulting.load(Ordering::Relaxed) && i % 5 == 0 {
                            "trap".into()
                        } else {
                            valid_body()
                        }
                    })
                })
            })
            .collect();
        host.cli_ok(&["deploy", faulty.to_str().unwrap()]);
        wait_for(&host, Duration::from_secs(60), "promoted", |st| {
            matches!(phase(st), Some(Phase::Watch { .. }))
        });
        *fault_began.lock().unwrap() = Some(Instant::now());
        faulting.store(true, Ordering::Relaxed);
        wait_for(&host, Duration::from_secs(30), "rolled back", |st| {
            st.version == 1 && st.rollout.is_none()
        });
        stop.store(true, Ordering::Relaxed);
        let mut seen = Seen::new();
        for client in clients {
            merge(&mut seen, client.join().unwrap());
        }
        seen
    });
    let began = fault_began.lock().unwrap().unwrap();
    let (arrived, notice) = auto_rollback_notice(&received);
    let took = arrived.duration_since(began);
    let faulty_errors = seen.get(&("2".into(), 500)).copied().unwrap_or(0);
    println!(
        "watch: rolled back {:.0} ms after the fault began; version 2 answered {faulty_errors} requests with 500 before; answers: {seen:?}",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(notice["function"], NAME);
    assert_eq!(
        (
            notice["candidate_version"].clone(),
            notice["serving_version"].clone()
        ),
        (2.into(), 1.into())
    );
    assert!(
        notice["reason"].as_str().unwrap().contains("error rate"),
        "{notice}"
    );
    assert!(
        notice["figures"]["candidate"]["errors"].as_u64().unwrap() >= 1,
        "{notice}"
    );
    assert!(notice["at"].as_str().unwrap().ends_with('Z'), "{notice}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(faulty_errors >= 1, "{seen:?}");
    // After the rollback every answer comes from version 1 again.
    for _ in 0..20 {
        let reply = host.post("/v1/churn", &valid_body());
        assert_eq!(
            (reply.status, reply.header("x-aifn-version")),
            (200, Some("1"))
        );
    }

    // 2. In a canary step: failing inputs from the start; the candidate never gets promoted.
    let stop = AtomicBool::new(false);
    let began = Instant::now();
    let load = Load {
        stop: &stop,
        answered: AtomicUsize::new(0),
    };
    let seen = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let clients: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    load.run(&host, |i| {
                        if i % 5 == 0 {
                            "trap".into()
                        } else {
                            valid_body()
                        }
                    })
                })
            })
            .collect();
        let out = host.cli_ok(&["deploy", faulty.to_str().unwrap()]);
        assert!(out.contains("version 3"), "{out}");
        wait_for(&host, Duration::from_secs(30), "rolled back", |st| {
            st.rollout.is_none()
        });
        stop.store(true, Ordering::Relaxed);
        let mut seen = Seen::new();
        for client in clients {
            merge(&mut seen, client.join().unwrap());
        }
        seen
    });
    let (_, notice) = auto_rollback_notice(&received);
    assert_eq!(notice["candidate_version"], 3, "{notice}");
    println!(
        "canary step: rolled back within {:.0} ms of the deploy; version 3 answered {} requests with 500 before",
        began.elapsed().as_secs_f64() * 1e3,
        seen.get(&("3".into(), 500)).copied().unwrap_or(0)
    );
    assert_eq!(status(&host).version, 1);
    let events = history(&host);
    let rollbacks: Vec<&HistoryEntry> = events
        .iter()
        .filter(|e| e.event.action == AuditAction::AutoRollback)
        .collect();
    assert_eq!(rollbacks.len(), 2, "{events:#?}");
    assert!(rollbacks.iter().all(|e| e.event.actor == "aifn"
        && e.event
            .figures
            .as_ref()
            .is_some_and(|f| f["thresholds"]["min_requests"] == 10)));
}

#[test]
fn shadow_traffic_never_changes_what_callers_see() {
    let dir = temp_dir("shadow");
    let host = TestHost::start_with(&dir.join("state"), &["--rollout-tick-ms", "100"]);
    host.deploy(&spec(&dir, "v1.yaml", "    strategy: immediate", "v1"));
    // The hostile module answers every valid request with the same fixed features and no
    // postprocessing: its answers differ from the churn module's.
    let shadow = faulty_spec(
        &dir,
        "v2.yaml",
        "    strategy: shadow\n    max_error_rate_increase: 1\n    max_latency_ratio: 1000",
    );
    let out = host.cli_ok(&["deploy", shadow.to_str().unwrap()]);
    assert!(out.contains("rolling out"), "{out}");
    assert_eq!(
        status(&host).rollout.map(|r| r.strategy),
        Some(RolloutStrategy::Shadow)
    );

    let cases = churn_expectations();
    let sent = 60;
    for i in 0..sent {
        let (request, probability) = &cases[i % cases.len()];
        let reply = host.post("/v1/churn", &request.to_string());
        assert_eq!(
            (reply.status, reply.header("x-aifn-version")),
            (200, Some("1"))
        );
        let got = reply.json()["churn_probability"].as_f64().unwrap();
        assert!(
            (got - probability).abs() < 1e-5,
            "the caller got version 1's answer"
        );
    }
    // Garbage gets version 1's 400, whatever the shadow does with it.
    let reply = host.post("/v1/churn", "trap");
    assert_eq!(
        (reply.status, reply.header("x-aifn-version")),
        (400, Some("1"))
    );

    let st = wait_for(
        &host,
        Duration::from_secs(10),
        "all copies compared",
        |st| {
            st.rollout
                .as_ref()
                .and_then(|r| r.shadow.as_ref())
                .map(|shadow| shadow.disagreement.compared)
                == Some(sent as u64 + 1)
        },
    );
    let rollout = st.rollout.as_ref().unwrap();
    let shadow = rollout.shadow.as_ref().unwrap();
    assert_eq!(shadow.disagreement.differing, sent as u64 + 1, "{shadow:?}");
    assert_eq!(shadow.differing_share, 1.0);
    let candidate = &rollout.candidate_figures;
    assert_eq!(candidate.requests, sent as u64 + 1, "{candidate:?}");
    assert_eq!(
        candidate.errors, 1,
        "the trap is the shadow's own 500: {candidate:?}"
    );

    // Promoted by hand, it serves; aborted, version 1 takes everything back.
    let out = host.cli_ok(&["promote", NAME]);
    assert!(out.contains("takes all traffic, watched"), "{out}");
    assert_eq!(
        host.post("/v1/churn", &valid_body())
            .header("x-aifn-version"),
        Some("2")
    );
    let out = host.cli_ok(&["abort", NAME, "--reason", "answers differ"]);
    assert!(out.contains("version 1 serves all traffic"), "{out}");
    assert_eq!(
        host.post("/v1/churn", &valid_body())
            .header("x-aifn-version"),
        Some("1")
    );
    let events = history(&host);
    assert_eq!(actions(&events)[1..], ["deploy", "promoted", "aborted"]);
    assert_eq!(events[3].event.reason, "answers differ");
}

#[test]
fn a_host_killed_mid_rollout_comes_back_consistent() {
    let dir = temp_dir("kill-mid-rollout");
    let state = dir.join("state");
    let host = TestHost::start_with(&state, &["--rollout-tick-ms", "100"]);
    host.deploy(&spec(&dir, "v1.yaml", "    strategy: immediate", "v1"));
    let rollout = "    steps: [50, 100]\n    step_duration: 1h\n    watch: 1h\n    min_requests: 1\n    sticky: header:X-User\n    max_latency_ratio: 50";
    host.cli_ok(&[
        "deploy",
        spec(&dir, "v2.yaml", rollout, "v2").to_str().unwrap(),
    ]);

    // Sticky callers: each user gets one version, the same one every time.
    let versions_of = |host: &TestHost| {
        let mut by_user = BTreeMap::new();
        for round in 0..3 {
            for user in 0..20 {
                let reply = request(
                    &host.url("/v1/churn"),
                    "POST",
                    valid_body().as_bytes(),
                    &[("x-user", &format!("user-{user}"))],
                );
                assert_eq!(reply.status, 200);
                let version = reply.header("x-aifn-version").unwrap().to_string();
                let first = by_user.entry(user).or_insert_with(|| version.clone());
                assert_eq!(*first, version, "user-{user} moved in round {round}");
            }
        }
        by_user
            .into_values()
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(versions_of(&host).len(), 2, "both versions take a share");

    host.kill();
    let host = TestHost::start_with(&state, &["--rollout-tick-ms", "100"]);
    let st = status(&host);
    assert_eq!(
        (st.version, st.rollout.as_ref().map(|r| r.candidate)),
        (1, Some(2)),
        "{}",
        pretty(&st)
    );
    assert!(
        matches!(phase(&st), Some(Phase::Step { index: 0, .. })),
        "{:?}",
        phase(&st)
    );
    assert_eq!(
        versions_of(&host).len(),
        2,
        "the split goes on after the restart"
    );

    // Promoted by hand, then killed during the watch: version 2 serves, version 1 on standby.
    host.cli_ok(&["promote", NAME, "--full"]);
    host.kill();
    let host = TestHost::start_with(&state, &["--rollout-tick-ms", "100"]);
    let st = status(&host);
    assert!(
        st.version == 2 && matches!(phase(&st), Some(Phase::Watch { .. })),
        "{}",
        pretty(&st)
    );
    assert_eq!(versions_of(&host).into_iter().collect::<Vec<_>>(), ["2"]);
    assert_eq!(
        versions_field(&host, |v| v.role),
        [VersionRole::Previous, VersionRole::Stable]
    );

    // A rollback during the watch returns to version 1 at once, and that too survives a kill.
    host.cli_ok(&["rollback", NAME, "--reason", "pager went off"]);
    host.kill();
    let host = TestHost::start_with(&state, &["--rollout-tick-ms", "100"]);
    let st = status(&host);
    assert!(st.rollout.is_none(), "{}", pretty(&st));
    assert_eq!(versions_of(&host).into_iter().collect::<Vec<_>>(), ["1"]);
    let events = history(&host);
    assert_eq!(
        actions(&events),
        ["deploy", "deploy", "resumed", "promoted", "resumed", "rollback"],
        "{events:#?}"
    );

    // Pruning keeps the newest versions and what serves; artifacts still in use stay.
    host.cli_ok(&[
        "deploy",
        spec(&dir, "v3.yaml", "    strategy: immediate", "v3")
            .to_str()
            .unwrap(),
    ]);
    let out = host.cli_ok(&["prune", NAME, "--keep", "1"]);
    assert!(out.contains("removed versions [1,2], kept 1"), "{out}");
    let versions = host.cli_ok(&["versions", NAME]);
    assert_eq!(versions.lines().count(), 2, "{versions}");
    let reply = host.post("/v1/churn", &valid_body());
    assert_eq!(
        (reply.status, reply.header("x-aifn-version")),
        (200, Some("3"))
    );
    assert_eq!(actions(&history(&host)).last().unwrap(), "pruned");
}

/// Waits for the webhook receiver to get an `auto_rollback` notice; returns when it arrived and
/// the notice.
fn auto_rollback_notice(
    received: &std::sync::mpsc::Receiver<(Instant, serde_json::Value)>,
) -> (Instant, serde_json::Value) {
    wait_until(
        "sent the auto_rollback webhook",
        Duration::from_secs(10),
        || {
            received
                .try_iter()
                .find(|(_, notice)| notice["event"] == "auto_rollback")
        },
    )
}
