//! Properties of `aifn_spec::parse` (what `aifn validate` runs), over generated specs: it never
//! panics; every error has a 1-based position and names a field; a bad value is reported at its
//! own field, line and column; a valid spec survives its normal form (`to_yaml`); quantities and
//! durations print back to what they parse from. The fuzz target `fuzz/fuzz_targets/spec_parse.rs`
//! checks the same on arbitrary bytes.

use aifn_spec::quantity::{parse_cpu, parse_duration, parse_memory};
use aifn_spec::yaml::{plain_scalar_type, PlainType};
use aifn_spec::{parse, to_yaml, SpecErrors};
use proptest::prelude::*;

/// A line of the template spec: its text up to the value, the value's field path (empty for a
/// line without a value), and the value it has by default.
struct Line {
    prefix: &'static str,
    path: &'static str,
    default: &'static str,
}

const fn fixed(prefix: &'static str) -> Line {
    Line {
        prefix,
        path: "",
        default: "",
    }
}

const fn field(prefix: &'static str, path: &'static str, default: &'static str) -> Line {
    Line {
        prefix,
        path,
        default,
    }
}

const TEMPLATE: &[Line] = &[
    fixed("apiVersion: ai.function/v1"),
    fixed("kind: Function"),
    fixed("metadata:"),
    field("  name: ", "metadata.name", "sentiment-analyzer"),
    fixed("  labels:"),
    field("    domain: ", "metadata.labels.domain", "nlp"),
    fixed("spec:"),
    fixed("  model:"),
    field("    id: ", "spec.model.id", "sentiment_model_v3"),
    field("    runtime: ", "spec.model.runtime", "python:3.11-pytorch"),
    fixed("  resources:"),
    field("    memory: ", "spec.resources.memory", "2Gi"),
    field("    cpu: ", "spec.resources.cpu", "\"1\""),
    field("    gpu: ", "spec.resources.gpu", "\"1\""),
    fixed("  scaling:"),
    field("    min_replicas: ", "spec.scaling.min_replicas", "1"),
    field("    max_replicas: ", "spec.scaling.max_replicas", "200"),
    field(
        "    target_latency: ",
        "spec.scaling.target_latency",
        "50ms",
    ),
    field("    max_batch_size: ", "spec.scaling.max_batch_size", "8"),
    field(
        "    max_batch_delay: ",
        "spec.scaling.max_batch_delay",
        "2ms",
    ),
    field("    batch_padding: ", "spec.scaling.batch_padding", "zeros"),
    fixed("  endpoints:"),
    field("    - route: ", "spec.endpoints[0].route", "/v1/sentiment"),
    field("      method: ", "spec.endpoints[0].method", "POST"),
    field("      auth: ", "spec.endpoints[0].auth", "api_key"),
    field("      timeout: ", "spec.endpoints[0].timeout", "5s"),
    field("      max_body: ", "spec.endpoints[0].max_body", "1Mi"),
];

/// Indexes of the template lines that have a value.
fn field_lines() -> Vec<usize> {
    (0..TEMPLATE.len())
        .filter(|&i| !TEMPLATE[i].path.is_empty())
        .collect()
}

/// The template with the value of line `at` replaced by `value` (already written as YAML).
fn spec_with(at: usize, value: &str) -> String {
    let mut text = String::new();
    for (i, line) in TEMPLATE.iter().enumerate() {
        text.push_str(line.prefix);
        text.push_str(if i == at { value } else { line.default });
        text.push('\n');
    }
    text
}

/// A YAML double-quoted scalar for `text` (JSON's string escapes are YAML's).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// What holds of every error list: not empty, in source order, each error 1-based and within the
/// text (or just past its end), and each naming a field unless the YAML itself is broken, the
/// document is not a mapping, or the field is an empty key at the top.
fn check_errors(source: &str, errors: &SpecErrors) -> Result<(), TestCaseError> {
    prop_assert!(!errors.0.is_empty(), "an invalid spec with no error");
    let lines = source.lines().count().max(1) + 1;
    let mut last = (0, 0);
    for e in &errors.0 {
        prop_assert!(e.line >= 1 && e.column >= 1, "not 1-based: {e:?}");
        prop_assert!(e.line <= lines, "line {} of {lines}: {e:?}", e.line);
        prop_assert!((e.line, e.column) >= last, "out of order: {errors:?}");
        last = (e.line, e.column);
        prop_assert!(
            !e.path.is_empty()
                || e.message.starts_with("YAML syntax error")
                || e.message.starts_with("expected a mapping")
                // An empty key at the top: its path is the empty key.
                || e.message.starts_with("unknown field ``"),
            "names no field: {e:?}"
        );
        prop_assert!(!e.message.is_empty());
    }
    let _ = errors.to_string();
    Ok(())
}

/// Scalars written in a spec: printable ASCII, quantity-like text, and edge cases.
fn scalar_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,12}",
        "[0-9.]{1,8}[a-zA-Zµ]{0,3}",
        "[0-9]{1,3}(ns|us|ms|s|m|h)([0-9]{1,2}(ms|s|m))?",
        "-?[0-9]{1,25}",
        "/[a-z0-9./_~-]{0,12}",
        prop::sample::select(vec![
            "",
            " ",
            "~",
            "null",
            "true",
            "0",
            "0.0",
            "1e3",
            "NaN",
            "inf",
            ".",
            "..",
            "-0",
            "0.0000000001s",
            "9999999999999999999999h",
            "18446744073709551616",
            "1.5Pi",
            "100000000Pi",
            "0m",
            "0.0001",
            "1.0005",
            "/v2",
            "/v1//a",
            "/a/../b",
            "GET",
            "python:3.11-",
            "python:-onnx",
            ":",
            "a:b",
            "#",
            "\u{feff}",
            "\t",
            "\n",
        ])
        .prop_map(str::to_string),
    ]
}

/// Text that a plain (unquoted) scalar can hold on one line without changing the YAML structure.
fn plain_ok(text: &str) -> bool {
    let mut bytes = text.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() || b == b'/' || b == b'.' => {}
        Some(b'-') => return text.len() > 1 && text[1..].bytes().all(|b| b.is_ascii_digit()),
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
}

/// 256 cases a property, or `PROPTEST_CASES` for a longer search.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Any text: no panic, and any error list has the properties of `check_errors`.
    #[test]
    fn arbitrary_text_never_panics(source in prop_oneof![
        any::<String>(),
        "[a-z:\\-\\[\\]{}'\" \n#&*!|>%@`,.0-9~?\t]{0,200}",
    ]) {
        match parse(&source) {
            Ok(spec) => prop_assert_eq!(parse(&to_yaml(&spec)).ok(), Some(spec)),
            Err(errors) => check_errors(&source, &errors)?,
        }
    }

    /// The template with lines deleted, duplicated, re-indented or replaced: no panic, and errors
    /// as `check_errors` says.
    #[test]
    fn mutated_specs_never_panic(
        edits in prop::collection::vec((0..TEMPLATE.len(), 0..4u8, "[ -~]{0,20}"), 1..6),
    ) {
        let mut lines: Vec<String> = TEMPLATE
            .iter()
            .map(|l| format!("{}{}", l.prefix, l.default))
            .collect();
        for (at, kind, text) in edits {
            let at = at.min(lines.len().saturating_sub(1));
            if lines.is_empty() {
                break;
            }
            match kind {
                0 => {
                    lines.remove(at);
                }
                1 => {
                    let copy = lines[at].clone();
                    lines.insert(at, copy);
                }
                2 => lines[at] = format!(" {}", lines[at]),
                _ => lines[at] = text,
            }
        }
        let source = lines.join("\n");
        match parse(&source) {
            Ok(spec) => prop_assert_eq!(parse(&to_yaml(&spec)).ok(), Some(spec)),
            Err(errors) => check_errors(&source, &errors)?,
        }
    }

    /// One field given any value: the spec is valid, or every error is that field's, at the
    /// line and column of the value. For quantities, durations and the name, valid exactly when
    /// the field's own parser accepts the value.
    #[test]
    fn a_bad_value_is_reported_at_its_field(
        pick in prop::sample::select(field_lines()),
        value in scalar_text(),
        plain in any::<bool>(),
    ) {
        let plain = plain && plain_ok(&value);
        let written = if plain { value.clone() } else { quoted(&value) };
        let source = spec_with(pick, &written);
        let line = &TEMPLATE[pick];
        let result = parse(&source);
        match &result {
            Ok(_) => {}
            Err(errors) => {
                check_errors(&source, errors)?;
                // A plain `null` removes the field: a required one is then reported missing at
                // its mapping.
                let removed = plain && plain_scalar_type(&value) == PlainType::Null;
                for e in &errors.0 {
                    prop_assert_eq!(&e.path, line.path, "{}\n{}", source, errors);
                    if !removed {
                        prop_assert_eq!(
                            (e.line, e.column),
                            (pick + 1, line.prefix.len() + 1),
                            "{}\n{}", source, errors
                        );
                    }
                }
            }
        }
        // The field's parser decides, unless YAML made the value something else than text.
        let text = !plain || plain_scalar_type(&value) == PlainType::Str;
        let oracle: Option<bool> = match line.path {
            _ if !text => None,
            "spec.resources.memory" | "spec.endpoints[0].max_body" => {
                Some(parse_memory(&value).is_ok())
            }
            "spec.resources.cpu" => Some(parse_cpu(&value).is_ok()),
            "spec.scaling.target_latency" | "spec.endpoints[0].timeout" => {
                Some(parse_duration(&value).is_ok())
            }
            "spec.scaling.max_batch_delay" => Some(
                parse_duration(&value).is_ok_and(|d| d.0 <= std::time::Duration::from_secs(1)),
            ),
            "metadata.name" => Some(aifn_spec::validate::check_name(&value).is_ok()),
            _ => None,
        };
        if let Some(valid) = oracle {
            prop_assert_eq!(result.is_ok(), valid, "{}\n{:?}", source, result.err());
        }
        if let Ok(spec) = result {
            prop_assert_eq!(parse(&to_yaml(&spec)).ok(), Some(spec));
        }
    }

    /// A key a mapping does not know is reported as unknown, at the key.
    #[test]
    fn an_unknown_key_is_reported_at_the_key(
        at in prop::sample::select(vec![
            (3, "  ", "metadata"),
            (8, "    ", "spec.model"),
            (11, "    ", "spec.resources"),
            (15, "    ", "spec.scaling"),
            (23, "      ", "spec.endpoints[0]"),
            (7, "  ", "spec"),
            (0, "", ""),
        ]),
        key in "zz_[a-z_]{0,10}",
        value in "[a-z0-9]{1,8}",
    ) {
        let (before, indent, mapping) = at;
        let mut lines: Vec<String> = TEMPLATE
            .iter()
            .map(|l| format!("{}{}", l.prefix, l.default))
            .collect();
        lines.insert(before, format!("{indent}{key}: {value}"));
        let source = lines.join("\n");
        let errors = parse(&source).expect_err("an unknown key is an error");
        check_errors(&source, &errors)?;
        prop_assert_eq!(errors.0.len(), 1, "{}", errors);
        let e = &errors.0[0];
        let path = if mapping.is_empty() { key.clone() } else { format!("{mapping}.{key}") };
        prop_assert_eq!(&e.path, &path);
        prop_assert_eq!((e.line, e.column), (before + 1, indent.len() + 1));
        prop_assert!(e.message.starts_with(&format!("unknown field `{key}`")), "{}", e);
    }

    /// Specs made of valid values parse, and their normal form parses back to the same spec.
    #[test]
    fn valid_specs_round_trip_through_normal_form(
        name in "[a-z]([a-z0-9-]{0,20}[a-z0-9])?",
        label in "[ -~]{0,16}",
        id in "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,20}",
        runtime in prop::sample::select(vec![
            "onnx", "pytorch", "python:3.11-pytorch", "python:3-sklearn", "tensorflow",
            "keras", "xgboost", "lightgbm", "paddle", "python:3.10-jax", "mxnet", "catboost", "matlab",
        ]),
        memory in "[1-9][0-9]{0,3}(\\.[0-9]{1,3})?(Ki|Mi|Gi|Ti|k|M|G)",
        cpu in prop_oneof!["[1-9][0-9]{0,4}m", "[1-9]", "0\\.[1-9][0-9]{0,2}"],
        gpu in 0..16u32,
        replicas in (0..50u32, 1..50u32),
        latency in "[1-9][0-9]{0,2}(\\.[0-9]{1,9})?(ns|us|ms|s|m)",
        batch in 1..4096u32,
        delay in "[1-9][0-9]{0,2}(\\.[0-9]{1,6})?(ns|us|ms)",
        padding in prop::sample::select(vec!["none", "zeros"]),
        route in "(/[a-z0-9_~-]([a-z0-9._~-]{0,8}[a-z0-9_~-])?){1,3}",
        method in prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE"]),
        auth in prop::sample::select(vec!["none", "api_key"]),
        timeout in "[1-9][0-9]{0,2}(ns|us|ms|s|m|h)",
        max_body in "[1-9][0-9]{0,5}(Ki|Mi|k|M)?",
    ) {
        let (min, max) = (replicas.0.min(replicas.1), replicas.0.max(replicas.1));
        let values = [
            quoted(&name), quoted(&label), quoted(&id), runtime.to_string(), memory, quoted(&cpu),
            gpu.to_string(), min.to_string(), max.to_string(), latency, batch.to_string(), delay,
            padding.to_string(), route.clone(), method.to_string(), auth.to_string(), timeout,
            max_body,
        ];
        let mut values = values.iter();
        let mut source = String::new();
        for line in TEMPLATE {
            source.push_str(line.prefix);
            if !line.path.is_empty() {
                source.push_str(values.next().unwrap());
            }
            source.push('\n');
        }
        prop_assert!(values.next().is_none());
        // `/v2/...`, `/admin`... are the host's; a generated route may be one.
        prop_assume!(!["/v2", "/admin", "/healthz", "/readyz", "/metrics"]
            .iter()
            .any(|p| route == *p || route.starts_with(&format!("{p}/"))));
        let spec = match parse(&source) {
            Ok(spec) => spec,
            Err(e) => return Err(TestCaseError::fail(format!("{source}\n{e}"))),
        };
        prop_assert_eq!(&spec.metadata.name, &name);
        prop_assert_eq!(&spec.metadata.labels["domain"], &label);
        prop_assert_eq!(&spec.spec.endpoints[0].route, &route);
        let yaml = to_yaml(&spec);
        match parse(&yaml) {
            Ok(again) => prop_assert_eq!(again, spec, "{}", yaml),
            Err(e) => return Err(TestCaseError::fail(format!("{yaml}\n{e}"))),
        }
    }

    /// A module with capabilities (mappings of names to strings among them) survives the normal
    /// form too.
    #[test]
    fn modules_round_trip_through_normal_form(
        env in prop::collection::vec(("[A-Z_]{1,8}", "[ -~]{0,10}"), 0..3),
        wall_clock in any::<bool>(),
        dirs in prop::collection::vec(("/data/[a-z]{1,8}", "/[a-z]{1,8}"), 0..3),
        ports in prop::collection::vec(1..65535u16, 0..3),
        dns in any::<bool>(),
        isolation in prop::sample::select(vec!["request", "instance"]),
    ) {
        let mut source: String = TEMPLATE
            .iter()
            .map(|l| format!("{}{}\n", l.prefix, l.default))
            .collect();
        source.push_str("  module:\n    path: module.wasm\n    timeout: 100ms\n");
        source.push_str(&format!("    isolation: {isolation}\n    capabilities:\n"));
        source.push_str(&format!("      wall_clock: {wall_clock}\n      dns: {dns}\n"));
        if !env.is_empty() {
            source.push_str("      env:\n");
            for (k, v) in &env {
                source.push_str(&format!("        {k}: {}\n", quoted(v)));
            }
        }
        if !dirs.is_empty() {
            source.push_str("      read_dirs:\n");
            for (host, guest) in &dirs {
                source.push_str(&format!("        {host}: {guest}\n"));
            }
        }
        let network: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        source.push_str(&format!("      network: [{}]\n", network.join(", ")));
        let spec = match parse(&source) {
            Ok(spec) => spec,
            Err(e) => return Err(TestCaseError::fail(format!("{source}\n{e}"))),
        };
        let module = spec.spec.module.as_ref().unwrap();
        prop_assert_eq!(&module.capabilities.env, &env);
        prop_assert_eq!(module.capabilities.read_dirs.len(), dirs.len());
        let yaml = to_yaml(&spec);
        match parse(&yaml) {
            Ok(again) => prop_assert_eq!(again, spec, "{}", yaml),
            Err(e) => return Err(TestCaseError::fail(format!("{yaml}\n{e}"))),
        }
    }

    /// A sample request (`spec.check`, its headers a mapping) survives the normal form.
    #[test]
    fn checks_round_trip_through_normal_form(
        body in "[ -~]{0,20}",
        headers in prop::collection::vec(("[a-z][a-z-]{0,10}", "[ -~]{0,10}"), 0..3),
        with_route in any::<bool>(),
    ) {
        let mut source: String = TEMPLATE
            .iter()
            .map(|l| format!("{}{}\n", l.prefix, l.default))
            .collect();
        source.push_str(&format!("  check:\n    body: {}\n", quoted(&body)));
        if with_route {
            source.push_str("    route: /v1/sentiment\n");
        }
        if !headers.is_empty() {
            source.push_str("    headers:\n");
            for (k, v) in &headers {
                source.push_str(&format!("      {k}: {}\n", quoted(v)));
            }
        }
        let spec = match parse(&source) {
            Ok(spec) => spec,
            Err(e) => return Err(TestCaseError::fail(format!("{source}\n{e}"))),
        };
        let yaml = to_yaml(&spec);
        match parse(&yaml) {
            Ok(again) => prop_assert_eq!(again, spec, "{}", yaml),
            Err(e) => return Err(TestCaseError::fail(format!("{yaml}\n{e}"))),
        }
    }

    /// A rollout block survives the normal form (`sticky: header:NAME` included).
    #[test]
    fn rollouts_round_trip_through_normal_form(
        strategy in prop::sample::select(vec!["canary", "shadow", "immediate"]),
        steps in prop::collection::btree_set(1..100u32, 0..4),
        step_duration in "[1-9][0-9]{0,2}(s|m)",
        window in "[1-9](s|m)",
        rate in 0..=100u32,
        ratio in 1..1000u32,
        min_requests in 0..1000u32,
        sticky in prop_oneof![
            Just("none".to_string()),
            Just("caller".to_string()),
            "header:[A-Za-z][A-Za-z0-9_-]{0,12}",
        ],
    ) {
        let mut source: String = TEMPLATE
            .iter()
            .map(|l| format!("{}{}\n", l.prefix, l.default))
            .collect();
        let steps: Vec<String> = steps.iter().map(u32::to_string).chain(["100".into()]).collect();
        source.push_str(&format!(
            "  rollout:\n    strategy: {strategy}\n    steps: [{}]\n    step_duration: {step_duration}\n    watch: {step_duration}\n    window: {window}\n    max_error_rate_increase: {}\n    max_latency_ratio: {}.5\n    min_requests: {min_requests}\n    sticky: {}\n",
            steps.join(", "),
            f64::from(rate) / 100.0,
            ratio,
            quoted(&sticky),
        ));
        let spec = match parse(&source) {
            Ok(spec) => spec,
            Err(e) => return Err(TestCaseError::fail(format!("{source}\n{e}"))),
        };
        let yaml = to_yaml(&spec);
        match parse(&yaml) {
            Ok(again) => prop_assert_eq!(again, spec, "{}", yaml),
            Err(e) => return Err(TestCaseError::fail(format!("{yaml}\n{e}"))),
        }
    }

    /// A quantity or duration that parses is positive and prints as text that parses back to
    /// the same value (the normal form `aifn validate --print` writes).
    #[test]
    fn quantities_print_back_to_themselves(text in scalar_text()) {
        if let Ok(bytes) = parse_memory(&text) {
            prop_assert!(bytes.0 >= 1);
            prop_assert_eq!(parse_memory(&bytes.to_string()), Ok(bytes), "{}", bytes);
        }
        if let Ok(cpu) = parse_cpu(&text) {
            prop_assert!(cpu.0 >= 1);
            prop_assert_eq!(parse_cpu(&cpu.to_string()), Ok(cpu), "{}", cpu);
        }
        if let Ok(duration) = parse_duration(&text) {
            prop_assert!(!duration.0.is_zero(), "`{}` parsed to zero", text);
            prop_assert_eq!(parse_duration(&duration.to_string()), Ok(duration), "{}", duration);
        }
    }
}

/// Regressions found by these properties and the `spec_parse` fuzz target: the normal form of a
/// spec with a module (its capabilities' `env` and `read_dirs`, even empty), with `check.headers`
/// or with `sticky: header:NAME` did not parse back, and a positive duration under half a nanosecond
/// was accepted as zero.
#[test]
fn found_normal_form_and_duration_regressions() {
    let base: String = TEMPLATE
        .iter()
        .map(|l| format!("{}{}\n", l.prefix, l.default))
        .collect();
    for extra in [
        "  module:\n    path: m.wasm\n",
        "  module:\n    path: m.wasm\n    capabilities:\n      env: { A: \"1\" }\n      read_dirs: { /srv/data: /data }\n",
        "  check:\n    body: \"{}\"\n    headers: { content-type: application/json }\n",
        "  rollout:\n    sticky: header:X-User-Id\n",
    ] {
        let source = format!("{base}{extra}");
        let spec = parse(&source).unwrap_or_else(|e| panic!("{source}\n{e}"));
        let yaml = to_yaml(&spec);
        assert_eq!(parse(&yaml).as_ref().ok(), Some(&spec), "{yaml}");
    }
    let source = spec_with(17, "0.0000000001s");
    let errors = parse(&source).unwrap_err();
    assert_eq!(errors.0[0].path, "spec.scaling.target_latency");
}
