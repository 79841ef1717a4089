//! `kill -9` at any moment: a seeded random loop of control-plane commands (deploys at once and
//! as canaries, promotions, aborts, rollbacks, API keys created and revoked, `models push`), with
//! the host killed by SIGKILL while a command is in flight (at a random delay after it started),
//! between commands, and now and then while it starts up; it is restarted on the same state
//! directory each time. After every restart:
//!
//! - it comes up ready, with no function that failed to load;
//! - what serves is what was acknowledged, or what the command in flight would have made it:
//!   never half (a version saved without its deployment, or the reverse);
//! - nothing acknowledged is lost: every version (with its digest), key and model id a command
//!   acknowledged is there, a revoked key stays gone, the audit log only grows;
//! - what is there is whole: every listed version's blobs exist and hash to their names, the
//!   serving versions answer with the model's numbers, every key works (and a revoked one, and no
//!   key, get 401);
//! - nothing is left behind: `STATE/tmp` is empty, no `*.tmp*` file lies in the state directory,
//!   and every blob is named by a version or a model id (so their number cannot grow without
//!   bound). These are gathered over the run and asserted at its end, after the rest.
//!
//! At least 50 kills (it aims for 100, about 20 s on two cores; the loop stops at 150 s), at least
//! 10 of them with a command in flight and 5 between commands. The seed is printed;
//! `AIFN_CRASH_SEED=N` replays its random choices (what a cut-off command turns out to have done
//! depends on timing, so a replay may part ways after the first such kill).

use crate::support;

use aifn_host::api::{
    FunctionList, FunctionStatus, History, KeyList, ModelList, Route, VersionList, VersionRole,
};
use aifn_host::records::{AuditEvent, Digest, Phase};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::*;

const NAME: &str = "churn-predictor";
/// Kills the run must make; it aims for [`TARGET_KILLS`].
const MIN_KILLS: usize = 50;
const TARGET_KILLS: usize = 100;
/// Commands at most, and the time the loop may take (the checks after it take seconds).
const MAX_COMMANDS: usize = 400;
const TIME_BUDGET: Duration = Duration::from_secs(150);
/// Model ids `models push` registers, again and again with other files.
const MODEL_IDS: [&str; 3] = ["crash-model-a", "crash-model-b", "crash-model-c"];
/// Bytes of padding in the model files a deploy or a push uploads: enough for a kill to land
/// while one is on its way.
const DEPLOY_PADDING: usize = 512 << 10;
const PUSH_PADDING: usize = 2 << 20;
/// The canary's steps; each held for an hour and judged only past a million requests, so only
/// the commands move a rollout.
const STEPS: usize = 3;
const SPEC_ROLLOUT: &str = "  rollout:\n    strategy: immediate\n    steps: [20, 50, 100]\n    step_duration: 1h\n    watch: 1h\n    min_requests: 1000000\n    max_latency_ratio: 50\n  endpoints:";
/// No pruning: every version deployed stays, so "nothing acknowledged is lost" is exact.
const HOST_ARGS: [&str; 2] = ["--keep-versions", "100000"];
/// How long leftovers may take to go after a restart, the first time they are seen (once seen,
/// later restarts are looked at once, so a build without the cleanup does not wait every time).
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// SplitMix64: small, seeded, good enough to pick commands and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }

    /// A duration between zero and `max`.
    fn delay(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64 + 1))
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n.div_ceil(8))
            .flat_map(|_| self.next().to_le_bytes())
            .take(n)
            .collect()
    }
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The churn model with `padding` random bytes appended as a protobuf field ONNX does not define
/// (number 1000, length-delimited), which parsers skip: the same model in a file of another
/// digest. Writes it to `path` and returns its digest.
fn model_variant(rng: &mut Rng, path: &Path, padding: usize) -> String {
    let mut bytes =
        std::fs::read(repo().join("functions/churn-predictor/model/churn.onnx")).unwrap();
    varint(&mut bytes, (1000 << 3) | 2);
    varint(&mut bytes, padding as u64);
    bytes.extend(rng.bytes(padding));
    std::fs::write(path, &bytes).unwrap();
    Digest::of(&bytes).to_string()
}

/// The churn predictor with one instance, its endpoint behind API keys, a rollout block that
/// only commands move, a `tag` that makes each spec a new version, and optionally another model
/// file.
fn write_spec(dir: &Path, n: usize, model: Option<&Path>) -> PathBuf {
    let spec = churn_spec(
        dir,
        &format!("v{n}.yaml"),
        &[
            ("min_replicas: 2", "min_replicas: 1"),
            (
                "domain: retention",
                &format!("domain: retention\n    tag: crash-{n}"),
            ),
            ("  endpoints:", SPEC_ROLLOUT),
            ("auth: none", "auth: api_key"),
        ],
    );
    if let Some(model) = model {
        replace_line(
            &spec,
            "churn.onnx",
            &format!("    path: {}", model.display()),
        );
    }
    spec
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    Step(usize),
    Watch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rollout {
    candidate: u64,
    previous: u64,
    stage: Stage,
}

/// What serves the function: the stable version and any rollout in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Serving {
    stable: u64,
    rollout: Option<Rollout>,
}

impl Serving {
    fn of(st: &FunctionStatus) -> Serving {
        Serving {
            stable: st.version,
            rollout: st.rollout.as_ref().map(|r| Rollout {
                candidate: r.candidate,
                previous: r.previous,
                stage: match r.phase {
                    Phase::Step { index, .. } => Stage::Step(index),
                    Phase::Watch { .. } => Stage::Watch,
                    Phase::Shadow { .. } => panic!("no shadow was deployed: {}", pretty(st)),
                },
            }),
        }
    }

    /// The versions callers may get answers from.
    fn answering(&self) -> Vec<u64> {
        match &self.rollout {
            Some(r) if matches!(r.stage, Stage::Step(_)) => vec![self.stable, r.candidate],
            _ => vec![self.stable],
        }
    }

    /// The role `aifn versions` shows for `version`.
    fn role(&self, version: u64) -> VersionRole {
        match &self.rollout {
            Some(r) if r.candidate == version && self.stable != version => VersionRole::Candidate,
            Some(r) if r.previous == version && self.stable != version => VersionRole::Previous,
            _ if self.stable == version => VersionRole::Stable,
            _ => VersionRole::Kept,
        }
    }

    fn describe(&self) -> String {
        match &self.rollout {
            None => format!("v{}", self.stable),
            Some(r) => format!(
                "v{} (canary v{} from v{}, {:?})",
                self.stable, r.candidate, r.previous, r.stage
            ),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Deploy {
        canary: bool,
        spec: PathBuf,
    },
    /// A deploy during a rollout, which the host refuses.
    RefusedDeploy {
        spec: PathBuf,
    },
    Promote,
    Abort,
    Rollback {
        to: Option<u64>,
    },
    CreateKey,
    RevokeKey(String),
    PushModel {
        id: String,
        file: PathBuf,
        digest: String,
    },
}

impl Op {
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = match self {
            Op::Deploy { spec, .. } | Op::RefusedDeploy { spec } => {
                vec!["deploy".into(), spec.display().to_string()]
            }
            Op::Promote => vec!["promote".into(), NAME.into()],
            Op::Abort => vec!["abort".into(), NAME.into()],
            Op::Rollback { .. } => vec!["rollback".into(), NAME.into()],
            Op::CreateKey => vec![
                "keys".into(),
                "create".into(),
                "--function".into(),
                NAME.into(),
            ],
            Op::RevokeKey(id) => vec!["keys".into(), "revoke".into(), id.clone()],
            Op::PushModel { id, file, .. } => vec![
                "models".into(),
                "push".into(),
                id.clone(),
                file.display().to_string(),
            ],
        };
        match self {
            Op::Deploy { canary: true, .. } => args.push("--canary".into()),
            Op::Rollback { to: Some(v) } => args.extend(["--to".into(), v.to_string()]),
            _ => {}
        }
        args
    }

    fn kind(&self) -> &'static str {
        match self {
            Op::Deploy { canary: false, .. } => "deploy",
            Op::Deploy { canary: true, .. } => "deploy --canary",
            Op::RefusedDeploy { .. } => "deploy (refused)",
            Op::Promote => "promote",
            Op::Abort => "abort",
            Op::Rollback { .. } => "rollback",
            Op::CreateKey => "keys create",
            Op::RevokeKey(_) => "keys revoke",
            Op::PushModel { .. } => "models push",
        }
    }
}

/// What the test knows the host holds: what commands acknowledged, and what a restart showed of
/// a command cut off by a kill.
#[derive(Default)]
struct Known {
    /// version → its deployment digest.
    versions: BTreeMap<u64, String>,
    serving: Option<Serving>,
    /// key id → its secret, when the test saw it.
    keys: BTreeMap<String, Option<String>>,
    revoked: BTreeSet<String>,
    /// Secrets of the last few revoked keys, checked to be refused.
    revoked_secrets: Vec<String>,
    /// model id (of [`MODEL_IDS`]) → digest.
    models: BTreeMap<String, String>,
    /// The audit log as the last check saw it.
    history: Vec<(u64, AuditEvent)>,
    /// Events acknowledged commands wrote since.
    events_since: usize,
}

impl Known {
    fn next_version(&self) -> u64 {
        self.versions.keys().last().map_or(1, |v| v + 1)
    }

    fn serving(&self) -> &Serving {
        self.serving.as_ref().expect("deployed at the start")
    }

    /// What serves once `op` is done, if it changes that.
    fn serving_after(&self, op: &Op) -> Option<Serving> {
        let now = self.serving().clone();
        let rollout = now.rollout.clone();
        match (op, rollout) {
            (Op::Deploy { canary: false, .. }, None) => Some(Serving {
                stable: self.next_version(),
                rollout: None,
            }),
            (Op::Deploy { canary: true, .. }, None) => Some(Serving {
                stable: now.stable,
                rollout: Some(Rollout {
                    candidate: self.next_version(),
                    previous: now.stable,
                    stage: Stage::Step(0),
                }),
            }),
            (Op::Promote, Some(r)) => Some(match r.stage {
                Stage::Step(i) if i + 2 < STEPS => Serving {
                    stable: now.stable,
                    rollout: Some(Rollout {
                        stage: Stage::Step(i + 1),
                        ..r
                    }),
                },
                Stage::Step(_) => Serving {
                    stable: r.candidate,
                    rollout: Some(Rollout {
                        stage: Stage::Watch,
                        ..r
                    }),
                },
                Stage::Watch => Serving {
                    stable: r.candidate,
                    rollout: None,
                },
            }),
            (Op::Abort | Op::Rollback { to: None }, Some(r)) => Some(Serving {
                stable: r.previous,
                rollout: None,
            }),
            (Op::Rollback { to: Some(v) }, None) => Some(Serving {
                stable: *v,
                rollout: None,
            }),
            (Op::Rollback { to: None }, None) => Some(Serving {
                stable: *self.versions.range(..now.stable).next_back()?.0,
                rollout: None,
            }),
            (Op::CreateKey | Op::RevokeKey(_) | Op::PushModel { .. }, _) => None,
            (Op::RefusedDeploy { .. }, _) => None,
            (op, rollout) => panic!("the test chose {op:?} with rollout {rollout:?}"),
        }
    }

    /// Records what an acknowledged command did.
    fn acknowledge(&mut self, op: &Op, out: &Output) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(after) = self.serving_after(op) {
            if let Op::Deploy { .. } = op {
                let (version, digest) = deployed(&stdout);
                assert_eq!(version, self.next_version(), "{stdout}");
                self.versions.insert(version, digest);
            }
            if let Op::Rollback { .. } = op {
                assert!(
                    stdout.contains(&format!("rolled back to version {} ", after.stable)),
                    "expected {}: {stdout}",
                    after.describe()
                );
            }
            self.serving = Some(after);
            self.events_since += 1;
        }
        match op {
            Op::CreateKey => {
                // stderr: "key ID for NAME (shown once; ...)", stdout: the secret.
                let id = stderr
                    .lines()
                    .find_map(|l| l.strip_prefix("key "))
                    .and_then(|l| l.split_whitespace().next())
                    .unwrap_or_else(|| panic!("no key id in: {stderr}"));
                self.keys
                    .insert(id.to_string(), Some(stdout.trim().to_string()));
            }
            Op::RevokeKey(id) => self.forget_key(id),
            Op::PushModel { id, digest, .. } => {
                self.models.insert(id.clone(), digest.clone());
            }
            _ => {}
        }
    }

    fn forget_key(&mut self, id: &str) {
        if let Some(Some(secret)) = self.keys.remove(id) {
            self.revoked_secrets.push(secret);
            if self.revoked_secrets.len() > 4 {
                self.revoked_secrets.remove(0);
            }
        }
        self.revoked.insert(id.to_string());
    }

    fn live_secrets(&self) -> Vec<String> {
        self.keys.values().flatten().cloned().collect()
    }
}

/// The version and digest `aifn deploy` printed: "deployed NAME version N (sha256:...)".
fn deployed(stdout: &str) -> (u64, String) {
    let first = stdout.lines().next().unwrap_or_default();
    let words: Vec<&str> = first.split_whitespace().collect();
    assert!(
        words.len() == 5 && words[0] == "deployed" && words[2] == "version",
        "what `aifn deploy` printed: {stdout}"
    );
    let digest = words[4].trim_matches(|c| c == '(' || c == ')');
    (words[3].parse().unwrap(), digest.to_string())
}

/// Files the run writes: specs and model variants.
struct Files {
    dir: PathBuf,
    specs: usize,
    models: usize,
}

impl Files {
    fn spec(&mut self, rng: &mut Rng, new_model: bool) -> PathBuf {
        self.specs += 1;
        let model = new_model.then(|| {
            let path = self.dir.join(format!("deploy-model-{}.onnx", self.specs));
            model_variant(rng, &path, DEPLOY_PADDING);
            path
        });
        write_spec(&self.dir, self.specs, model.as_deref())
    }

    fn push(&mut self, rng: &mut Rng, id: &str) -> Op {
        self.models += 1;
        let file = self.dir.join(format!("pushed-model-{}.onnx", self.models));
        let digest = model_variant(rng, &file, PUSH_PADDING);
        Op::PushModel {
            id: id.to_string(),
            file,
            digest,
        }
    }
}

/// The next command, by what serves now.
fn choose(rng: &mut Rng, known: &Known, files: &mut Files) -> Op {
    let serving = known.serving();
    let roll = rng.below(100);
    if roll < 20 {
        let create = known.keys.len() < 2 || (known.keys.len() < 5 && rng.chance(0.5));
        return if create {
            Op::CreateKey
        } else {
            let ids: Vec<String> = known.keys.keys().cloned().collect();
            Op::RevokeKey(rng.pick(&ids))
        };
    }
    if roll < 38 {
        let id = rng.pick(&MODEL_IDS);
        return files.push(rng, id);
    }
    let new_model = rng.chance(0.4);
    if serving.rollout.is_some() {
        match rng.below(10) {
            0..=4 => Op::Promote,
            5..=6 => Op::Abort,
            7..=8 => Op::Rollback { to: None },
            _ => Op::RefusedDeploy {
                spec: files.spec(rng, new_model),
            },
        }
    } else {
        let others: Vec<u64> = known
            .versions
            .keys()
            .copied()
            .filter(|v| *v != serving.stable)
            .collect();
        let older = known.versions.range(..serving.stable).next().is_some();
        let roll = rng.below(10);
        if others.is_empty() || roll < 7 {
            Op::Deploy {
                canary: rng.chance(0.5),
                spec: files.spec(rng, new_model),
            }
        } else if roll == 7 && older {
            Op::Rollback { to: None }
        } else {
            Op::Rollback {
                to: Some(rng.pick(&others)),
            }
        }
    }
}

/// A CLI command on its way; a thread waits for it and notes when it ended.
struct Running {
    began: Instant,
    done: mpsc::Receiver<(Instant, Output)>,
    what: String,
}

fn start_cli(base: &str, args: &[String]) -> Running {
    let began = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_aifn"))
        .args(args)
        .env("AIFN_HOST", base)
        .env("AIFN_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("AIFN_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output().unwrap();
        let _ = tx.send((Instant::now(), out));
    });
    Running {
        began,
        done,
        what: args.join(" "),
    }
}

impl Running {
    /// Waits for the command to end (a minute at most); returns when it ended and its output.
    fn finish(self) -> (Instant, Output) {
        self.done
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("`aifn {}` did not end within a minute", self.what))
    }
}

/// `aifn serve` on the state directory, killed `after` its start: mid-startup (restoring,
/// resuming a rollout, cleaning up), or just after.
fn kill_during_startup(state: &Path, after: Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aifn"))
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state)
        .args(["--admin-token", ADMIN_TOKEN])
        // Not the default 8081, which another test's host may hold.
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--no-context")
        .args(HOST_ARGS)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// What a check found left behind.
#[derive(Debug, Default)]
struct Leftovers {
    /// Entries of `STATE/tmp`, and `*.tmp*` files elsewhere in the state directory.
    temporary: Vec<String>,
    /// Blobs no kept version and no model id names.
    unnamed: Vec<String>,
    blobs: usize,
}

impl Leftovers {
    fn none(&self) -> bool {
        self.temporary.is_empty() && self.unnamed.is_empty()
    }
}

fn leftovers(state: &Path, named: &BTreeSet<String>) -> Leftovers {
    fn walk(dir: &Path, root: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let in_tmp = relative.starts_with("tmp/");
            if path.is_dir() {
                if in_tmp {
                    found.push(relative.clone());
                }
                walk(&path, root, found);
            } else if in_tmp || entry.file_name().to_string_lossy().contains(".tmp") {
                found.push(relative);
            }
        }
    }
    let mut temporary = Vec::new();
    walk(state, state, &mut temporary);
    let on_disk: BTreeSet<String> = std::fs::read_dir(state.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    Leftovers {
        temporary,
        unnamed: on_disk.difference(named).cloned().collect(),
        blobs: on_disk.len(),
    }
}

/// Calls `probe` every 25 ms until it says done or `limit` passes; returns what it last saw. For
/// what the test gathers rather than asserts at once (see [`LEFTOVER_GRACE`]).
fn settle<T>(limit: Duration, mut probe: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let (done, seen) = probe();
        if done || Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A blob a record names: there, of its size, and (once per digest) hashing to its name.
fn check_blob(state: &Path, digest: &Digest, size: u64, verified: &mut HashSet<String>) {
    let path = state.join("blobs/sha256").join(digest.hex());
    let meta = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("blob {digest}, named by a record, is missing: {e}"));
    assert_eq!(meta.len(), size, "blob {digest} has the wrong size");
    if verified.insert(digest.hex().to_string()) {
        assert_eq!(
            &Digest::of(&std::fs::read(&path).unwrap()),
            digest,
            "blob {} does not hash to its name",
            path.display()
        );
    }
}

/// Everything checked after a restart, `pending` being the command a kill cut off (if any).
/// Updates `known` with what that command turned out to have done.
fn check(
    host: &TestHost,
    known: &mut Known,
    pending: Option<&Op>,
    verified: &mut HashSet<String>,
    grace: Duration,
) -> Leftovers {
    let cut_off = pending.map_or("nothing".to_string(), |op| format!("{op:?}"));
    wait_until_seen("ready", Duration::from_secs(30), || {
        let reply = request(&host.url("/readyz"), "GET", b"", &[]);
        if reply.status == 200 {
            Ok(())
        } else {
            Err(format!("{} {}", reply.status, reply.body))
        }
    });
    let functions: FunctionList = host.admin(Route::Functions);
    assert!(
        functions.failed.is_empty(),
        "functions failed to load after the restart (cut off: {cut_off}): {}",
        pretty(&functions)
    );

    // What serves: the acknowledged state, or the cut-off command's.
    let before = known.serving().clone();
    let after = pending.and_then(|op| known.serving_after(op));
    let status = host.status(NAME);
    let seen = Serving::of(&status);
    assert!(
        seen == before || Some(&seen) == after.as_ref(),
        "after the restart {NAME} serves {}; acknowledged: {}, or with the cut-off command ({cut_off}) done: {:?}\n{}",
        seen.describe(),
        before.describe(),
        after.as_ref().map(Serving::describe),
        pretty(&status)
    );

    // The versions: every acknowledged one, unchanged; at most the cut-off deploy's new one, and
    // then only with the deployment it made.
    let new_version = known.next_version();
    let list: VersionList = host.cli_json(&["versions", NAME, "--json"]);
    let listed: BTreeMap<u64, _> = list.versions.iter().map(|v| (v.version, v)).collect();
    for (version, digest) in &known.versions {
        let view = listed.get(version).unwrap_or_else(|| {
            panic!(
                "acknowledged version {version} is gone after the restart (cut off: {cut_off}); listed: {:?}",
                listed.keys().collect::<Vec<_>>()
            )
        });
        assert_eq!(
            &view.digest.to_string(),
            digest,
            "version {version} changed"
        );
    }
    let extra: Vec<u64> = listed
        .keys()
        .copied()
        .filter(|v| !known.versions.contains_key(v))
        .collect();
    let deploying = matches!(pending, Some(Op::Deploy { .. }));
    assert!(
        extra.is_empty() || (deploying && extra == [new_version]),
        "versions no command made: {extra:?} (cut off: {cut_off})"
    );
    if deploying {
        assert_eq!(
            !extra.is_empty(),
            seen != before,
            "half a deploy: version {new_version} {} but {NAME} serves {}",
            if extra.is_empty() {
                "is not saved"
            } else {
                "is saved"
            },
            seen.describe()
        );
    }
    for version in extra {
        known
            .versions
            .insert(version, listed[&version].digest.to_string());
    }
    assert_eq!(
        status.digest.to_string(),
        known.versions[&seen.stable],
        "the serving version's digest"
    );
    let mut named = BTreeSet::new();
    for view in &list.versions {
        assert_eq!(
            view.role,
            seen.role(view.version),
            "the role of version {} when {NAME} serves {}",
            view.version,
            seen.describe()
        );
        for artifact in [
            Some(&view.model),
            view.module.as_ref(),
            view.fallback_model.as_ref(),
            view.monitoring_reference.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            check_blob(&host.state, &artifact.digest, artifact.size, verified);
            named.insert(artifact.digest.hex().to_string());
        }
    }
    known.serving = Some(seen.clone());

    // Keys: every acknowledged one there, revoked ones gone; at most the cut-off create's new one.
    let keys: KeyList = host.admin(Route::Keys);
    let ids: BTreeSet<String> = keys.keys.iter().map(|k| k.id.clone()).collect();
    let revoking = match pending {
        Some(Op::RevokeKey(id)) => Some(id.as_str()),
        _ => None,
    };
    for id in known.keys.keys() {
        assert!(
            ids.contains(id) || revoking == Some(id.as_str()),
            "acknowledged key {id} is gone after the restart (cut off: {cut_off}); there: {ids:?}"
        );
    }
    for id in &known.revoked {
        assert!(!ids.contains(id), "revoked key {id} is back");
    }
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !known.keys.contains_key(*id))
        .cloned()
        .collect();
    assert!(
        unknown.is_empty() || (matches!(pending, Some(Op::CreateKey)) && unknown.len() == 1),
        "keys no command made: {unknown:?} (cut off: {cut_off})"
    );
    assert!(keys.keys.iter().all(|k| k.function == NAME), "{keys:?}");
    for id in unknown {
        known.keys.insert(id, None);
    }
    if let Some(id) = revoking.filter(|id| !ids.contains(*id)) {
        known.forget_key(id);
    }

    // Model ids: each as acknowledged, or as the cut-off push left it.
    let models: ModelList = host.admin(Route::Models);
    for id in MODEL_IDS {
        let there = models
            .models
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.model.digest.to_string());
        let acknowledged = known.models.get(id).cloned();
        let pushed = match pending {
            Some(Op::PushModel { id: p, digest, .. }) if p == id => Some(digest.clone()),
            _ => None,
        };
        assert!(
            there == acknowledged || (pushed.is_some() && there == pushed),
            "model id {id} is {there:?} after the restart; acknowledged: {acknowledged:?} (cut off: {cut_off})"
        );
        if let Some(digest) = there {
            known.models.insert(id.to_string(), digest);
        }
    }
    for entry in &models.models {
        check_blob(&host.state, &entry.model.digest, entry.model.size, verified);
        named.insert(entry.model.digest.hex().to_string());
    }

    // The audit log: what the last check saw, then at least the acknowledged commands' events.
    let history: History = host.admin(Route::History(NAME));
    let events: Vec<(u64, AuditEvent)> = history
        .events
        .into_iter()
        .map(|e| (e.seq, e.event))
        .collect();
    assert!(
        events.len() >= known.history.len() + known.events_since
            && events[..known.history.len()] == known.history[..],
        "the audit log lost events: {} seen before, {} acknowledged since, now {}",
        known.history.len(),
        known.events_since,
        events.len()
    );
    known.history = events;
    known.events_since = 0;

    // The data plane: the serving versions answer with the model's numbers, to every key.
    let (request_body, probability) = churn_expectations()[0].clone();
    let body = request_body.to_string();
    let answering = seen.answering();
    let answer_with = |key: &str| {
        let reply = host.post_with_key("/v1/churn", &body, key);
        let version = reply.header("x-aifn-version").and_then(|v| v.parse().ok());
        let ok = reply.status == 200
            && version.is_some_and(|v| answering.contains(&v))
            && reply.json()["churn_probability"]
                .as_f64()
                .is_some_and(|p| (p - probability).abs() < 1e-5);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} from version {version:?} (expected one of {answering:?}): {}",
                reply.status, reply.body
            ))
        }
    };
    for (i, secret) in known.live_secrets().iter().enumerate() {
        if i == 0 {
            wait_until_seen(
                "the serving version answering",
                Duration::from_secs(30),
                || answer_with(secret),
            );
        } else if let Err(e) = answer_with(secret) {
            panic!("a live key: {e}");
        }
    }
    for secret in &known.revoked_secrets {
        let reply = host.post_with_key("/v1/churn", &body, secret);
        assert_eq!(reply.status, 401, "a revoked key: {}", reply.body);
    }
    assert_eq!(host.post("/v1/churn", &body).status, 401, "no key");

    settle(grace, || {
        let found = leftovers(&host.state, &named);
        (found.none(), found)
    })
}

fn seed() -> u64 {
    match std::env::var("AIFN_CRASH_SEED") {
        Ok(text) => text.parse().expect("AIFN_CRASH_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

#[test]
fn kill_9_at_any_moment_leaves_the_old_state_or_the_new() {
    let seed = seed();
    println!("crash_consistency seed {seed} (AIFN_CRASH_SEED={seed} replays its commands)");
    let mut rng = Rng(seed);
    let dir = temp_dir("crash-consistency");
    let state = dir.join("state");
    let started = Instant::now();
    let mut files = Files {
        dir: dir.clone(),
        specs: 0,
        models: 0,
    };
    let mut known = Known::default();
    let mut verified = HashSet::new();

    // A first version, two keys and a model id, acknowledged and checked without a kill.
    let mut host = Some(TestHost::start_with(&state, &HOST_ARGS));
    let first = files.spec(&mut rng, false);
    let out = host
        .as_ref()
        .unwrap()
        .cli(&["deploy", first.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let (version, digest) = deployed(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(version, 1);
    known.versions.insert(1, digest);
    known.serving = Some(Serving {
        stable: 1,
        rollout: None,
    });
    known.events_since = 1;
    let setup = [
        Op::CreateKey,
        Op::CreateKey,
        files.push(&mut rng, MODEL_IDS[0]),
    ];
    for op in setup {
        let h = host.as_ref().unwrap();
        let (_, out) = start_cli(&h.admin_base, &op.args()).finish();
        assert!(out.status.success(), "{op:?}: {out:?}");
        known.acknowledge(&op, &out);
    }
    let found = check(
        host.as_ref().unwrap(),
        &mut known,
        None,
        &mut verified,
        Duration::ZERO,
    );
    assert!(found.none(), "before any kill: {found:?}");

    // Typical time of each kind of command, to aim kills inside it.
    let mut typical: BTreeMap<&'static str, Duration> = BTreeMap::new();
    let (mut commands, mut kills, mut in_flight, mut between, mut startup_kills) = (0, 0, 0, 0, 0);
    let mut cut_off: BTreeMap<&'static str, usize> = BTreeMap::new();
    // (restart, what was left) for every restart that left something; the blob counts seen.
    let mut leaks: Vec<(usize, Leftovers)> = Vec::new();
    let mut blob_counts = Vec::new();
    let mut restart_times = Vec::new();
    while kills < TARGET_KILLS && commands < MAX_COMMANDS && started.elapsed() < TIME_BUDGET {
        let op = choose(&mut rng, &known, &mut files);
        commands += 1;
        let kind = op.kind();
        let usual = *typical.get(kind).unwrap_or(&Duration::from_millis(30));
        // 65%: killed a random time into the command; else it runs to its end, and 30% of those
        // are followed by a kill before the next command.
        let kill_in_flight = rng.chance(0.65).then(|| rng.delay(usual.mul_f64(1.2)));
        let kill_after = (kill_in_flight.is_none() && rng.chance(0.3))
            .then(|| rng.delay(Duration::from_millis(20)));
        let running = start_cli(&host.as_ref().unwrap().admin_base, &op.args());
        let began = running.began;
        let killed_at = kill_in_flight.map(|delay| {
            std::thread::sleep(delay);
            let at = Instant::now();
            host.take().unwrap().kill();
            at
        });
        let (ended, out) = running.finish();
        if let Op::PushModel { file, .. } = &op {
            std::fs::remove_file(file).unwrap();
        }
        let was_running = killed_at.is_some_and(|at| ended > at);
        if !was_running {
            typical.insert(kind, (usual * 3 + (ended - began)) / 4);
        }
        let killed = kill_in_flight.is_some();
        let pending = match (out.status.success(), &op) {
            (true, Op::RefusedDeploy { .. }) => {
                panic!("a deploy during a rollout went through: {out:?}")
            }
            (true, _) => {
                known.acknowledge(&op, &out);
                None
            }
            (false, _) if killed => Some(op.clone()),
            (false, Op::RefusedDeploy { .. }) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    stderr.contains(&format!(
                        "`aifn promote {NAME}` or `aifn abort {NAME}` first"
                    )),
                    "{stderr}"
                );
                None
            }
            (false, _) => panic!(
                "`aifn {}` failed with no kill:\n{}{}",
                op.args().join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        };
        if let Some(delay) = kill_after {
            std::thread::sleep(delay);
            host.take().unwrap().kill();
        }
        if host.is_some() {
            continue;
        }
        kills += 1;
        if was_running {
            in_flight += 1;
            *cut_off.entry(kind).or_default() += 1;
        } else {
            between += 1;
        }
        if rng.chance(0.15) {
            startup_kills += 1;
            kill_during_startup(&state, rng.delay(Duration::from_millis(400)));
        }
        let restarted = Instant::now();
        let h = TestHost::start_with(&state, &HOST_ARGS);
        let grace = if leaks.is_empty() {
            LEFTOVER_GRACE
        } else {
            Duration::ZERO
        };
        let found = check(&h, &mut known, pending.as_ref(), &mut verified, grace);
        restart_times.push(restarted.elapsed());
        println!(
            "kill {kills}: {} {kind}{} -> serves {}, {} versions, {} keys, {} model ids; {} blobs, {} unnamed, {} temporary",
            if was_running { "during" } else { "after" },
            kill_in_flight.map_or(String::new(), |d| format!(" ({} ms in)", d.as_millis())),
            known.serving().describe(),
            known.versions.len(),
            known.keys.len(),
            known.models.len(),
            found.blobs,
            found.unnamed.len(),
            found.temporary.len()
        );
        blob_counts.push((found.blobs, found.unnamed.len()));
        if !found.none() {
            leaks.push((kills, found));
        }
        host = Some(h);
    }
    let slowest = restart_times.iter().max().copied().unwrap_or_default();
    println!(
        "{commands} commands, {kills} kills ({in_flight} with a command in flight: {cut_off:?}; {between} between commands), {startup_kills} more during startup; slowest restart and check {:.2} s; {:.1} s in all",
        slowest.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("typical command times: {typical:?}");
    assert!(
        kills >= MIN_KILLS,
        "only {kills} kills within {TIME_BUDGET:?} ({commands} commands)"
    );
    assert!(
        in_flight >= 10 && between >= 5,
        "kills with a command in flight: {in_flight}, between commands: {between}"
    );

    // Left behind: asserted last, so that the run above checks consistency whatever the cleanup.
    let temporary: Vec<&(usize, Leftovers)> = leaks
        .iter()
        .filter(|(_, f)| !f.temporary.is_empty())
        .collect();
    let unnamed: Vec<&(usize, Leftovers)> = leaks
        .iter()
        .filter(|(_, f)| !f.unnamed.is_empty())
        .collect();
    let (blobs_last, unnamed_last) = blob_counts.last().copied().unwrap_or_default();
    let most_unnamed = blob_counts.iter().map(|(_, u)| *u).max().unwrap_or(0);
    let mut left = Vec::new();
    if let (Some(first), Some(last)) = (temporary.first(), temporary.last()) {
        left.push(format!(
            "STATE/tmp (or a *.tmp* file) was not empty after {} of {kills} restarts, the first after kill {}: {:?}; after the last: {:?}",
            temporary.len(),
            first.0,
            first.1.temporary,
            last.1.temporary
        ));
    }
    if let Some(first) = unnamed.first() {
        left.push(format!(
            "blobs no version or model id names were left after {} of {kills} restarts, the first after kill {}: {:?}; up to {most_unnamed}, {unnamed_last} of {blobs_last} blobs at the end",
            unnamed.len(),
            first.0,
            first.1.unnamed
        ));
    }
    assert!(
        left.is_empty(),
        "restarts left files behind:\n{}",
        left.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
