//! Every bad spec under `tests/spec_errors/` gives exactly the errors in its `.out` file, as printed
//! by `aifn validate`. Adding a case is adding a `.yaml` file; `AIFN_BLESS=1` writes its `.out`.

use std::path::Path;
use std::process::Command;

#[test]
fn bad_specs_report_every_error_with_field_and_position() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/spec_errors");
    let bless = std::env::var_os("AIFN_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the table of bad specs in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let file = case.file_name().unwrap().to_str().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_aifn"))
            .args(["validate", file])
            .current_dir(&dir)
            .env("AIFN_LOG", "off")
            .output()
            .unwrap();
        let actual = String::from_utf8(output.stdout).unwrap();
        let expected_path = case.with_extension("out");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        assert!(
            !output.status.success(),
            "{file}: a bad spec must make `aifn validate` fail"
        );
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing (run with AIFN_BLESS=1)",
                expected_path.display()
            )
        });
        if actual != expected {
            failures.push(format!(
                "--- {file}\nexpected:\n{expected}\nactual:\n{actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_reference_example_and_bundled_functions_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for spec in [
        "examples/sentiment-analyzer.yaml",
        "functions/churn-predictor/function.yaml",
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_aifn"))
            .args(["validate", spec])
            .current_dir(&root)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{spec}: {stdout}");
        assert!(stdout.contains("valid"), "{stdout}");
    }
}
