//! `aifn new --lang LANG NAME` writes a function that deploys as generated, in every SDK language:
//! `aifn deploy` builds its module from source first (and again only when a source changes), and the
//! function answers on a real host.

use crate::support;

use support::*;

/// What the template's model answers for a text: sigmoid(0.01 · bytes + 0.1 · words − 1), in f32.
fn expected_score(text: &str) -> f64 {
    let bytes = text.len() as f32;
    let words = text.split_whitespace().count() as f32;
    let logit = bytes * 0.01 + words * 0.1 - 1.0;
    (1.0 / (1.0 + (-logit).exp())) as f64
}

#[test]
fn every_language_template_builds_deploys_and_answers() {
    let dir = temp_dir("templates");
    let host = TestHost::start(&dir.join("state"));
    for language in ["rust", "c", "python", "zig", "assemblyscript"] {
        let name = format!("hello-{language}");
        let function = dir.join(&name);
        host.cli_ok(&[
            "new",
            "--lang",
            language,
            &name,
            "--dir",
            function.to_str().unwrap(),
        ]);
        let spec = function.join("function.yaml");

        // The first deploy builds the module from source.
        let out = host.cli(&["deploy", spec.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{language}: {stderr}");
        assert!(
            stderr.contains(&format!("building the module ({language})")),
            "{language}: {stderr}"
        );

        let route = format!("/v1/{name}");
        for text in ["hello world", "the quick brown fox jumps over the lazy dog"] {
            let reply = host.post(&route, text);
            assert_eq!(reply.status, 200, "{language}: {}", reply.body);
            let score = reply.json()["score"].as_f64().unwrap();
            assert!(
                (score - expected_score(text)).abs() < 1e-6,
                "{language}: {text:?} scored {score}, expected {}",
                expected_score(text)
            );
        }
        // The module's own bad-request error reaches the caller as a 400 with a JSON body.
        let reply = host.post(&route, "   ");
        assert_eq!(reply.status, 400, "{language}: {}", reply.body);
        assert!(
            reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("send some text"),
            "{language}: {}",
            reply.body
        );

        // Deploying again without a change does not rebuild; a changed source does.
        let out = host.cli(&["deploy", spec.to_str().unwrap()]);
        assert!(out.status.success());
        assert!(!String::from_utf8_lossy(&out.stderr).contains("building the module"));
        // `aifn build` in the function's directory reads ./function.yaml.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aifn"))
            .arg("build")
            .current_dir(&function)
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("is up to date"),
            "{language}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if language == "c" {
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
            let out = host.cli(&["deploy", spec.to_str().unwrap()]);
            assert!(String::from_utf8_lossy(&out.stderr).contains("building the module (c)"));
            let reply = host.post(&route, "");
            assert!(reply.body.contains("send some words"), "{}", reply.body);
        }
    }

    // A language without a template is refused by name, and so is a taken directory.
    let out = host.cli(&["new", "--lang", "cobol", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rust, c, python, zig, assemblyscript"));
    let out = host.cli(&[
        "new",
        "--lang",
        "c",
        "again",
        "--dir",
        dir.join("hello-c").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
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
