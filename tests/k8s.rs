//! Kubernetes, with what is real here (no API server can run on these machines): rendered
//! manifests against golden files and the official schemas, custom resources against their CRDs'
//! schemas, and a function's image built by buildah and served from its own root filesystem.
//! The operator's reconcile rules are unit tests of `aifn-k8s` (`runtime/k8s/src/reconcile.rs`).

use crate::support::{self, repo, temp_dir, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn aifn(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_aifn"))
        .args(args)
        .current_dir(repo())
        .env("AIFN_LOG", "off")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "aifn {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The specs whose manifests are kept as golden files: every bundled function and the example.
fn rendered_specs() -> Vec<(String, String)> {
    let mut specs: Vec<(String, String)> = std::fs::read_dir(repo().join("functions"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("function.yaml").exists())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.clone(), format!("functions/{name}/function.yaml"))
        })
        .collect();
    specs.sort();
    specs.push((
        "example-sentiment-analyzer".into(),
        "examples/sentiment-analyzer.yaml".into(),
    ));
    specs
}

/// Compares `text` with the golden file, or rewrites it with `AIFN_UPDATE_GOLDEN=1`.
fn check_golden(path: &Path, text: &str) {
    if std::env::var_os("AIFN_UPDATE_GOLDEN").is_some() {
        std::fs::write(path, text).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run with AIFN_UPDATE_GOLDEN=1 once",
            path.display()
        )
    });
    assert!(
        golden == text,
        "{} differs from what aifn renders now (rerun with AIFN_UPDATE_GOLDEN=1 if the change is meant):\n{}",
        path.display(),
        first_difference(&golden, text)
    );
}

fn first_difference(a: &str, b: &str) -> String {
    let line = a
        .lines()
        .zip(b.lines())
        .position(|(x, y)| x != y)
        .unwrap_or(a.lines().count().min(b.lines().count()));
    format!(
        "line {}: golden `{}`, now `{}`",
        line + 1,
        a.lines().nth(line).unwrap_or("<end>"),
        b.lines().nth(line).unwrap_or("<end>")
    )
}

/// Runs `tests/k8s/validate.py` with every CRD on `manifests`: one result per object.
fn validate(manifests: &[PathBuf]) -> Vec<Value> {
    let python = repo().join(".venv/bin/python");
    assert!(python.exists(), "no .venv: run ./scripts/setup.sh");
    let crds = repo().join("tests/k8s/crds");
    let mut command = Command::new(python);
    command.arg(repo().join("tests/k8s/validate.py"));
    for entry in std::fs::read_dir(&crds).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            command.arg("--crd").arg(path);
        }
    }
    command
        .arg("--crd")
        .arg(repo().join("deploy/kubernetes/install.yaml"));
    command.arg("--").args(manifests);
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.trim().is_empty(), "validate.py: {stderr}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| support::decode(l, "a validation result"))
        .collect()
}

#[test]
fn rendered_manifests_match_their_golden_files_and_validate_against_kubernetes_and_crd_schemas() {
    let golden = repo().join("tests/k8s/golden");
    let mut manifests = Vec::new();
    for (name, spec) in rendered_specs() {
        let image = format!("registry.example/aifn/{name}:v1");
        let text = aifn(&[
            "k8s",
            "render",
            &spec,
            "--image",
            &image,
            "--namespace",
            "ml",
            "--gateway",
            "infra/web",
        ]);
        let path = golden.join(format!("{name}.yaml"));
        check_golden(&path, &text);
        manifests.push(path);
        // The spec itself is the Function resource `kubectl apply -f` sends.
        manifests.push(repo().join(&spec));
    }
    let install = repo().join("deploy/kubernetes/install.yaml");
    check_golden(&install, &aifn(&["k8s", "install"]));
    manifests.push(install);

    let results = validate(&manifests);
    let invalid: Vec<&Value> = results.iter().filter(|r| r["valid"] != true).collect();
    assert!(invalid.is_empty(), "{}", support::pretty(&invalid));
    let kinds: std::collections::BTreeSet<&str> = results
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
        "HTTPRoute",
        "Function",
        "CustomResourceDefinition",
        "ClusterRole",
        "Namespace",
    ] {
        assert!(kinds.contains(kind), "no {kind} was validated: {kinds:?}");
    }
    // Functions are checked against aifn's CRD, the others' custom resources against theirs,
    // built-in kinds against Kubernetes' own schemas.
    let against = |kind: &str| {
        results
            .iter()
            .find(|r| r["kind"] == kind)
            .map(|r| r["against"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(against("Function"), "CRD ai.function/v1");
    assert_eq!(against("ScaledObject"), "CRD keda.sh/v1alpha1");
    assert_eq!(against("HTTPRoute"), "CRD gateway.networking.k8s.io/v1");
    assert!(against("Deployment").starts_with("Kubernetes 1.37"));
}

#[test]
fn the_schemas_refuse_what_an_api_server_would() {
    let dir = temp_dir("k8s-refused");
    let rendered = aifn(&[
        "k8s",
        "render",
        "functions/churn-predictor/function.yaml",
        "--image",
        "registry.example/churn:v1",
        "--gateway",
        "web",
    ]);
    let spec =
        std::fs::read_to_string(repo().join("functions/churn-predictor/function.yaml")).unwrap();
    let cases = [
        // A typo in a built-in kind.
        (
            "deployment",
            rendered.replace("revisionHistoryLimit", "revisionHistoryLimt"),
        ),
        // A weight over what Gateway API's schema allows.
        ("route", rendered.replace("weight: 100", "weight: 1000001")),
        // A Function with a count that is no number, and one with a field the spec lacks.
        (
            "function-type",
            spec.replace("max_replicas: 8", "max_replicas: many"),
        ),
        (
            "function-field",
            spec.replace("scaling:", "scaling:\n    max_replica: 3\n   "),
        ),
    ];
    let mut manifests = Vec::new();
    for (name, text) in &cases {
        assert!(!text.is_empty());
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        manifests.push(path);
    }
    let results = validate(&manifests);
    for (name, _) in &cases {
        let file = dir.join(format!("{name}.yaml"));
        let refused = results
            .iter()
            .filter(|r| r["file"] == file.to_str().unwrap() && r["valid"] == false)
            .count();
        assert_eq!(refused, 1, "{name}: {}", support::pretty(&results));
    }
}

#[test]
fn an_image_built_here_serves_from_its_own_root_filesystem() {
    let dir = temp_dir("k8s-image");
    let storage = dir.join("storage");
    let spec = repo().join("functions/churn-predictor/function.yaml");
    let out = aifn(&[
        "image",
        spec.to_str().unwrap(),
        "--storage",
        storage.to_str().unwrap(),
    ]);
    let reference = out
        .lines()
        .find_map(|l| l.strip_prefix("built "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no image name in {out}"))
        .to_string();
    assert!(
        reference.starts_with("localhost/aifn/churn-predictor:sha256-"),
        "{reference}"
    );
    let buildah = |args: &[&str]| {
        let output = Command::new("buildah")
            .arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let inspected: Value = support::decode(
        &buildah(&["inspect", "--type", "image", &reference]),
        "buildah inspect",
    );
    let config = &inspected["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(config["Entrypoint"][0], "/usr/bin/aifn");
    let container = buildah(&["from", &reference]);
    let root = PathBuf::from(buildah(&["mount", &container]));
    let du = Command::new("du").arg("-sb").arg(&root).output().unwrap();
    let size: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Nothing of the machine but the kernel: chroot into the image's files, as its user, with
    // only the image's environment, and start its entrypoint.
    let env: Vec<(String, String)> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            e.as_str()?
                .split_once('=')
                .map(|(k, v)| (k.into(), v.into()))
        })
        .collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join("pod.log")).unwrap();
    let started = Instant::now();
    let mut pod = Command::new("/usr/sbin/chroot")
        .arg("--userspec=65532:65532")
        .arg(&root)
        .arg("/usr/bin/aifn")
        .args([
            "serve",
            "--bundle",
            "/bundle",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "127.0.0.1:0",
            "--state-dir",
            "/var/lib/aifn/state",
        ])
        .env_clear()
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let ready = wait_until(
        "the pod in the image is ready",
        Duration::from_secs(60),
        || {
            if let Ok(Some(status)) = pod.try_wait() {
                panic!(
                    "the pod exited with {status}: {}",
                    std::fs::read_to_string(dir.join("pod.log")).unwrap_or_default()
                );
            }
            // The port opens only once the bundle is loaded.
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            let reply = support::request(&format!("{base}/readyz"), "GET", b"", &[]);
            (reply.status == 200).then(|| started.elapsed())
        },
    );
    let answers: Vec<bool> = support::churn_expectations()
        .iter()
        .map(|(body, expected)| {
            let reply = support::request(
                &format!("{base}/v1/churn"),
                "POST",
                body.to_string().as_bytes(),
                &[],
            );
            reply.status == 200
                && (reply.json()["churn_probability"].as_f64().unwrap_or(-1.0) - expected).abs()
                    < 1e-5
        })
        .collect();
    let _ = Command::new("kill").arg(pod.id().to_string()).status();
    let exited = pod.wait().unwrap();
    let _ = buildah(&["umount", &container]);
    let _ = buildah(&["rm", &container]);
    let _ = std::fs::remove_dir_all(&storage);
    assert!(answers.iter().all(|ok| *ok), "{answers:?}");
    assert!(exited.success(), "SIGTERM ends the pod cleanly: {exited}");
    println!(
        "image {reference}: {} MB; start to ready from its root filesystem: {} ms",
        size / 1_000_000,
        ready.as_millis()
    );
}
