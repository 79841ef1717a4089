//! aifn as a user installs it (`scripts/install.sh`): from a fresh home, with the checkout moved
//! away and no aifn variables, `aifn new --lang LANG NAME` writes a function that deploys as
//! generated in every SDK language (`aifn deploy` builds its module from source first, and again
//! only when a source changes), `aifn new --model` starts one from a real model, and contexts take
//! commands to the right host.

use crate::support;

use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;

/// What the template's model answers for a text: sigmoid(0.01 · bytes + 0.1 · words − 1), in f32.
fn expected_score(text: &str) -> f64 {
    let bytes = text.len() as f32;
    let words = text.split_whitespace().count() as f32;
    let logit = bytes * 0.01 + words * 0.1 - 1.0;
    (1.0 / (1.0 + (-logit).exp())) as f64
}

/// A user's machine after `scripts/install.sh`: a fresh home, no aifn environment variables, and
/// the checkout it was installed from moved away. Only the Rust and C toolchains (cargo, rustup,
/// wit-bindgen, wasm-tools, in the machine's CARGO_HOME) and Debian's clang and node are shared with
/// this machine, as a user's would be.
struct UserMachine {
    home: PathBuf,
    path: String,
}

impl UserMachine {
    /// Copies what an install reads from a checkout (the built binary, the SDKs, the WIT world,
    /// the scripts) to a checkout of its own, installs from it into `home/.local`, and moves that
    /// checkout away.
    fn install(dir: &Path) -> UserMachine {
        let checkout = dir.join("checkout");
        std::fs::create_dir_all(checkout.join("target/release")).unwrap();
        std::fs::create_dir_all(checkout.join("spec")).unwrap();
        std::fs::copy(
            env!("CARGO_BIN_EXE_aifn"),
            checkout.join("target/release/aifn"),
        )
        .unwrap();
        for (from, to) in [
            ("sdk", "sdk"),
            ("spec/wit", "spec/wit"),
            ("scripts", "scripts"),
        ] {
            let copied = Command::new("cp")
                .arg("-a")
                .arg(repo().join(from))
                .arg(checkout.join(to))
                .status()
                .unwrap();
            assert!(copied.success());
        }
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let real_home = PathBuf::from(std::env::var("HOME").unwrap());
        let cargo_home = std::env::var("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| real_home.join(".cargo"));
        let machine = UserMachine {
            path: format!(
                "{}:{}:/usr/local/bin:/usr/bin:/bin",
                home.join(".local/bin").display(),
                cargo_home.join("bin").display()
            ),
            home,
        };
        let mut install = machine.command(&checkout.join("scripts/install.sh"));
        // pip's cache of the wheels setup fetched (not aifn's: nothing of aifn is shared).
        install.env("PIP_CACHE_DIR", real_home.join(".cache/pip"));
        let out = install.output().unwrap();
        assert!(
            out.status.success(),
            "install.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("installed aifn"));
        std::fs::rename(&checkout, dir.join("moved-away")).unwrap();
        machine
    }

    /// A command as the user would run it: their PATH and HOME, the shared toolchains, no aifn
    /// variables.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", &self.path)
            .current_dir(&self.home);
        for shared in ["CARGO_HOME", "RUSTUP_HOME"] {
            if let Some(value) = std::env::var_os(shared) {
                command.env(shared, value);
            }
        }
        if std::env::var_os("RUSTUP_HOME").is_none() {
            let real_home = PathBuf::from(std::env::var("HOME").unwrap());
            command
                .env("RUSTUP_HOME", real_home.join(".rustup"))
                .env("CARGO_HOME", real_home.join(".cargo"));
        }
        command
    }

    /// `aifn ARGS` from the installed binary, run in `dir`.
    fn aifn_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.command(&self.home.join(".local/bin/aifn"))
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap()
    }

    fn aifn(&self, args: &[&str]) -> Output {
        self.aifn_in(&self.home, args)
    }

    #[track_caller]
    fn aifn_ok(&self, args: &[&str]) -> String {
        let out = self.aifn(args);
        assert!(
            out.status.success(),
            "aifn {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `aifn serve` from the installed binary, on free ports and a state directory of its own,
    /// recorded as context `context`.
    fn serve(&self, state: &str, context: &str) -> InstalledHost {
        let log = self.home.join(format!("{state}.log"));
        let mut child = self
            .command(&self.home.join(".local/bin/aifn"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--state-dir")
            .arg(self.home.join(state))
            .args(["--context", context])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut admin, mut base) = (String::new(), String::new());
        while base.is_empty() {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!(
                    "the installed host did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            };
            if let Some(at) = line.strip_prefix("aifn control plane on ") {
                admin = at.to_string();
            }
            if let Some(at) = line.strip_prefix("aifn listening on ") {
                base = at.to_string();
            }
        }
        InstalledHost { child, base, admin }
    }
}

struct InstalledHost {
    child: std::process::Child,
    base: String,
    admin: String,
}

impl Drop for InstalledHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ONNX Runtime library a process has loaded, from its memory map.
fn loaded_onnxruntime(pid: u32) -> String {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|path| path.contains("libonnxruntime.so"))
        .unwrap_or("(none)")
        .to_string()
}

#[test]
fn an_installed_aifn_makes_builds_and_deploys_every_language_from_a_fresh_home() {
    let dir = temp_dir("installed");
    let user = UserMachine::install(&dir);
    let share = user.home.join(".local/share/aifn");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(share.join("install.json")).unwrap())
            .unwrap();
    assert!(
        record["onnxruntime"]
            .as_str()
            .unwrap()
            .starts_with(share.to_str().unwrap()),
        "{record}"
    );

    // A host of the user's own: other ports and state directory, recorded as context `dev`.
    let host = user.serve("dev-state", "dev");
    assert_eq!(user.aifn_ok(&["context", "current"]).trim(), "dev");

    let work = user.home.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let model = repo().join("tests/fixtures/models/two_inputs.onnx");
    for language in ["rust", "c", "python", "zig", "assemblyscript"] {
        let name = format!("hello-{language}");
        let out = user.aifn_in(&work, &["new", "--lang", language, &name]);
        assert!(
            out.status.success(),
            "{language}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let function = work.join(&name);
        if language == "rust" {
            // The SDK is the installed one, which stays where it is when checkouts move.
            let manifest = std::fs::read_to_string(function.join("module/Cargo.toml")).unwrap();
            assert!(
                manifest.contains(&format!("path = \"{}/sdk/rust\"", share.display())),
                "{manifest}"
            );
        }

        // The first deploy builds the module from source: no --host, no token, no variables.
        let out = user.aifn_in(&function, &["deploy", "function.yaml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{language}: {stderr}");
        assert!(
            stderr.contains(&format!("building the module ({language})")),
            "{language}: {stderr}"
        );
        // The endpoints printed are the context's data plane.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("POST {}/v1/{name}", host.base)),
            "{stdout}"
        );
        if language == "rust" {
            // Its ONNX Runtime is the one the install recorded, not one found in a checkout.
            assert!(
                loaded_onnxruntime(host.child.id()).starts_with(share.to_str().unwrap()),
                "{}",
                loaded_onnxruntime(host.child.id())
            );
        }

        let route = format!("{}/v1/{name}", host.base);
        for text in ["hello world", "the quick brown fox jumps over the lazy dog"] {
            let reply = request(&route, "POST", text.as_bytes(), &[]);
            assert_eq!(reply.status, 200, "{language}: {}", reply.body);
            let score = reply.json()["score"].as_f64().unwrap();
            assert!(
                (score - expected_score(text)).abs() < 1e-6,
                "{language}: {text:?} scored {score}, expected {}",
                expected_score(text)
            );
        }
        // The module's own bad-request error reaches the caller as a 400 with a JSON body.
        let reply = request(&route, "POST", b"   ", &[]);
        assert_eq!(reply.status, 400, "{language}: {}", reply.body);
        assert!(
            reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("send some text"),
            "{language}: {}",
            reply.body
        );

        // Deploying again without a change does not rebuild; `aifn build` in the function's
        // directory reads ./function.yaml and finds it up to date.
        let out = user.aifn_in(&function, &["deploy", "function.yaml"]);
        assert!(out.status.success());
        assert!(!String::from_utf8_lossy(&out.stderr).contains("building the module"));
        let out = user.aifn_in(&function, &["build"]);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("is up to date"),
            "{language}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if language == "c" {
            // A changed source is built again.
            let source = function.join("src/main.c");
            let text = std::fs::read_to_string(&source).unwrap();
            std::fs::write(&source, text.replace("send some text", "send some words")).unwrap();
            // Newer than the module just built, whatever the file system's timestamp granularity.
            std::fs::File::options()
                .write(true)
                .open(&source)
                .unwrap()
                .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(2))
                .unwrap();
            let out = user.aifn_in(&function, &["deploy", "function.yaml"]);
            assert!(String::from_utf8_lossy(&out.stderr).contains("building the module (c)"));
            let reply = request(&route, "POST", b"", &[]);
            assert!(reply.body.contains("send some words"), "{}", reply.body);
        }

        // From a real model: the skeleton names its inputs, and deploys and answers as written.
        let name = format!("model-{language}");
        let out = user.aifn_in(
            &work,
            &[
                "new",
                "--lang",
                language,
                "--model",
                model.to_str().unwrap(),
                &name,
            ],
        );
        assert!(
            out.status.success(),
            "{language}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let function = work.join(&name);
        let spec = std::fs::read_to_string(function.join("function.yaml")).unwrap();
        assert!(spec.contains("path: two_inputs.onnx"), "{spec}");
        let out = user.aifn_in(&function, &["deploy", "function.yaml"]);
        assert!(
            out.status.success(),
            "{language}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply = request(&format!("{}/v1/{name}", host.base), "POST", b"", &[]);
        assert_eq!(reply.status, 200, "{language}: {}", reply.body);
        let outputs = reply.json()["outputs"].clone();
        let output = |wanted: &str| {
            outputs
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == wanted)
                .unwrap_or_else(|| panic!("{language}: no output {wanted} in {outputs}"))
                .clone()
        };
        // Zeros in, so zero sums out, one row of each (a dimension of any size is 1).
        assert_eq!(
            output("score")["shape"],
            serde_json::json!([1, 1]),
            "{language}"
        );
        assert_eq!(
            output("score")["data"],
            serde_json::json!([0.0]),
            "{language}"
        );
        assert_eq!(
            output("total")["data"],
            serde_json::json!([0]),
            "{language}"
        );
    }

    // A language without a template is refused by name, and so is a taken directory.
    let out = user.aifn(&["new", "--lang", "cobol", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rust, c, python, zig, assemblyscript"));
    let out = user.aifn_in(&work, &["new", "--lang", "c", "hello-c"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[test]
fn contexts_switch_between_hosts_keep_tokens_private_and_refuse_a_wrong_one() {
    let dir = temp_dir("contexts");
    let user = UserMachine::install(&dir);
    let first = user.serve("first-state", "first");
    let second = user.serve("second-state", "second");
    // The host started last is current.
    assert_eq!(user.aifn_ok(&["context", "current"]).trim(), "second");
    let churn = churn_spec(&dir, "churn.yaml", &[]);
    user.aifn_ok(&["deploy", churn.to_str().unwrap()]);
    assert!(user.aifn_ok(&["ls"]).contains("churn-predictor"));
    // The other host has nothing deployed; `--context` picks it for one command.
    assert!(user
        .aifn_ok(&["ls", "--context", "first"])
        .contains("no functions deployed"));
    user.aifn_ok(&["context", "use", "first"]);
    assert!(user.aifn_ok(&["ls"]).contains("no functions deployed"));
    // The function went to the second host (an empty object lacks the fields it needs).
    let reply = request(&format!("{}/v1/churn", second.base), "POST", b"{}", &[]);
    assert_eq!(reply.status, 400, "{}", reply.body);

    // Listed by name and address; the tokens are in the file, owner-only, and never printed.
    let listed = user.aifn_ok(&["context", "ls"]);
    let config = user.home.join(".config/aifn/config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let token = std::fs::read_to_string(user.home.join("first-state/admin-token")).unwrap();
    assert!(text.contains(token.trim()));
    assert!(!listed.contains(token.trim()), "{listed}");
    assert!(
        listed.contains("* first") && listed.contains(&first.admin),
        "{listed}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(config.parent().unwrap()), 0o700);

    // A wrong token is refused when the context is added, and when it is used.
    let add = |name: &str, token: &str, check: bool| {
        let mut command = user.command(&user.home.join(".local/bin/aifn"));
        command.args([
            "context",
            "add",
            name,
            "--admin",
            &first.admin,
            "--token-stdin",
        ]);
        if !check {
            command.arg("--no-check");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), token.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let refused = add("wrong", "not-the-token\n", true);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("401"), "{said}");
    assert!(!user.aifn_ok(&["context", "ls"]).contains("wrong"));
    assert!(add("unchecked", "not-the-token\n", false).status.success());
    let out = user.aifn(&["ls", "--context", "unchecked"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // The right one is taken, and the new context becomes current.
    assert!(add("again", &token, true).status.success());
    assert_eq!(user.aifn_ok(&["context", "current"]).trim(), "again");
    user.aifn_ok(&["context", "rm", "unchecked"]);
    let out = user.aifn(&["ls", "--context", "unchecked"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no context `unchecked`"));
    assert_eq!(mode(&config), 0o600);
}

#[test]
fn a_missing_toolchain_is_named_with_how_to_install_it() {
    let dir = temp_dir("templates-missing");
    let function = dir.join("f");
    let aifn = env!("CARGO_BIN_EXE_aifn");
    let run = |args: &[&str], path: &str| {
        std::process::Command::new(aifn)
            .args(args)
            .env("PATH", path)
            .output()
            .unwrap()
    };
    let out = run(
        &[
            "new",
            "--lang",
            "zig",
            "f",
            "--dir",
            function.to_str().unwrap(),
        ],
        "/usr/bin:/bin",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No wasm-tools on this PATH (it lives in ~/.cargo/bin), so the build says so and how to get it.
    let out = run(
        &["build", function.join("function.yaml").to_str().unwrap()],
        "/usr/bin:/bin",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("missing:")
            && stderr.contains("wasm-tools (cargo install --locked wasm-tools)"),
        "{stderr}"
    );
}
