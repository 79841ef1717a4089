//! What operators' tools read from a host: JSON log lines and the access log (never a secret or
//! a body, at any level), OpenTelemetry's HTTP server metric, and the Grafana dashboard and
//! Prometheus rules under `deploy/`, which must parse and name only metrics a host exports.

use crate::support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use support::*;

/// Every metric name a host's `/metrics` offers, as PromQL sees them: a counter `x` as
/// `x_total`, a histogram `x` as `x_bucket`, `x_sum` and `x_count`. Families are listed (`# TYPE`)
/// whether or not they have samples yet.
fn exported_names(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("`# TYPE name kind`");
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The metric names a PromQL expression selects.
fn selected_names(expr: &str) -> Result<Vec<String>, String> {
    use promql_parser::parser::{self, Expr};
    fn walk(expr: &Expr, names: &mut Vec<String>) {
        match expr {
            Expr::VectorSelector(selector) => names.extend(selector.name.clone()),
            Expr::MatrixSelector(matrix) => names.extend(matrix.vs.name.clone()),
            Expr::Aggregate(aggregate) => {
                walk(&aggregate.expr, names);
                if let Some(param) = &aggregate.param {
                    walk(param, names);
                }
            }
            Expr::Unary(unary) => walk(&unary.expr, names),
            Expr::Binary(binary) => {
                walk(&binary.lhs, names);
                walk(&binary.rhs, names);
            }
            Expr::Paren(paren) => walk(&paren.expr, names),
            Expr::Subquery(subquery) => walk(&subquery.expr, names),
            Expr::Call(call) => {
                for arg in &call.args.args {
                    walk(arg, names);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    let parsed = parser::parse(expr)?;
    let mut names = Vec::new();
    walk(&parsed, &mut names);
    Ok(names)
}

/// A host with the churn predictor (monitored) and the sentiment analyzer (API keys), and some
/// traffic, so that labelled families have samples.
fn host_with_traffic(name: &str, args: &[&str], env: &[(&str, &str)]) -> (TestHost, String) {
    let state = temp_dir(name);
    let host = TestHost::start_with_env(&state, args, env);
    for function in ["churn-predictor", "sentiment-analyzer"] {
        host.deploy(&bundled_spec(
            function,
            &state,
            &format!("{function}.yaml"),
            &[],
        ));
    }
    let key = host.new_key("sentiment-analyzer");
    let customer = json!({ "avg_monthly_spend": 42.5, "days_since_last_purchase": 12,
        "support_tickets_last_30d": 1, "subscription_tier": "premium" });
    let reply = host.post("/v1/churn", &customer.to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    (host, key)
}

#[test]
fn grafana_dashboard_and_prometheus_rules_parse_and_name_only_exported_metrics() {
    let (host, _) = host_with_traffic("observability-assets", &[], &[]);
    let metrics = host.metrics();
    assert_eq!(metrics.status, 200);
    let exported = exported_names(&metrics.body);
    assert!(
        exported.contains("http_server_request_duration_seconds_bucket"),
        "{exported:?}"
    );
    let check = |expr: &str, where_: &str| {
        // Grafana's variables are not PromQL: give them values a query could have.
        let expr = expr.replace("$__rate_interval", "5m");
        let names = selected_names(&expr).unwrap_or_else(|e| panic!("{where_}: {e}\n{expr}"));
        assert!(!names.is_empty(), "{where_} selects no metric: {expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{where_} names `{name}`, which a host does not export"
            );
        }
    };

    let rules_path = repo().join("deploy/prometheus/aifn-alerts.yaml");
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&rules_path).unwrap()).unwrap();
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_array().expect("`groups`") {
        for rule in group["rules"].as_array().expect("a group's `rules`") {
            let alert = rule["alert"].as_str().expect("every rule is an alert");
            assert!(alerts.insert(alert.to_string()), "{alert} twice");
            check(rule["expr"].as_str().expect("`expr`"), alert);
            if let Some(wait) = rule.get("for") {
                let wait = wait.as_str().unwrap();
                assert!(
                    wait.ends_with('m') && wait[..wait.len() - 1].parse::<u32>().is_ok(),
                    "{alert}: `for: {wait}`"
                );
            }
            assert!(rule["annotations"]["summary"].is_string(), "{alert}");
        }
    }
    for expected in ["AifnHighErrorRate", "AifnLatencyOverTarget", "AifnDrift"] {
        assert!(alerts.contains(expected), "{expected} missing: {alerts:?}");
    }

    let dashboard_path = repo().join("deploy/grafana/aifn-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().expect("`panels`");
    assert!(panels.len() >= 8);
    for panel in panels {
        let title = panel["title"].as_str().expect("a panel's title");
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        let targets = panel["targets"].as_array().expect("a panel's targets");
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            check(target["expr"].as_str().expect("a target's expr"), title);
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let query = variable["definition"].as_str().unwrap();
        let metric = query
            .strip_prefix("label_values(")
            .and_then(|q| q.split(',').next())
            .expect("label_values(metric, label)");
        assert!(exported.contains(metric), "variable query names {metric}");
    }
}

#[test]
fn logs_are_json_lines_with_one_access_line_per_request_and_never_a_secret() {
    let body_marker = "a very private sentence about my bank account";
    // Every level of the host's own code and of the HTTP, TLS and gRPC stacks; only the module
    // compiler's internals (which see code, never a request) are left out, for their volume.
    let filter = "trace,cranelift_codegen=off,cranelift_frontend=off,wasmtime_cranelift=off,regalloc2=off,wasmtime_internal_cranelift=off";
    let (host, key) = host_with_traffic(
        "observability-logs",
        &["--access-log", "--log-format", "json"],
        &[("AIFN_LOG", filter)],
    );
    let jwt_like = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtZSJ9.c2VjcmV0LXNpZ25hdHVyZQ";
    let reply = request(
        &host.url("/v1/sentiment"),
        "POST",
        json!({ "inputs": body_marker }).to_string().as_bytes(),
        &[("x-api-key", &key), ("x-request-id", "observability-1")],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    for refused in [
        ("x-api-key", "aifn_not_a_key_at_all_0123456789"),
        ("authorization", jwt_like),
    ] {
        let reply = request(&host.url("/v1/sentiment"), "POST", b"{}", &[refused]);
        assert_eq!(reply.status, 401, "{}", reply.body);
    }

    let log_path = host.state.with_extension("log");
    let access = wait_until(
        "the access line of the request",
        Duration::from_secs(20),
        || {
            let log = std::fs::read_to_string(&log_path).unwrap();
            log.lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|line| {
                    line["target"] == "aifn::access" && line["request_id"] == "observability-1"
                })
        },
    );
    assert_eq!(access["status"], 200);
    assert_eq!(access["method"], "POST");
    assert_eq!(access["route"], "/v1/sentiment");
    assert_eq!(access["function"], "sentiment-analyzer");
    assert_eq!(access["version"], "1");
    assert_eq!(access["surface"], "data");
    assert!(access["latency_ms"].as_f64().unwrap() > 0.0, "{access}");
    let caller = access["caller"].as_str().unwrap();
    assert!(caller.starts_with("key:"), "{caller}");

    let log = std::fs::read_to_string(&log_path).unwrap();
    let mut levels = BTreeSet::new();
    for line in log.lines() {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        levels.insert(parsed["level"].as_str().unwrap().to_string());
    }
    assert!(
        levels.contains("TRACE") && levels.contains("DEBUG"),
        "{levels:?}"
    );
    // The 401 and the deploys' control-plane calls are logged too.
    assert!(log.contains("\"status\":401"));
    assert!(log.contains("\"surface\":\"control\""));
    for secret in [
        key.as_str(),
        ADMIN_TOKEN,
        body_marker,
        "c2VjcmV0LXNpZ25hdHVyZQ",
        "aifn_not_a_key_at_all_0123456789",
    ] {
        assert!(!log.contains(secret), "the log holds `{secret}`");
    }
}

#[test]
fn http_server_duration_has_bounded_routes() {
    let (host, _) = host_with_traffic("observability-semconv", &[], &[]);
    let infer = json!({ "inputs": [{ "name": "features", "shape": [1, 6], "datatype": "FP32",
        "data": [1, 2, 3, 0, 0, 1] }] });
    let reply = host.post("/v2/models/churn-predictor/infer", &infer.to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    for path in ["/no/such/route/1", "/no/such/route/2"] {
        assert_eq!(host.get(path).status, 404);
    }
    let metrics = host.metrics().body;
    let samples: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
        .collect();
    let has = |route: &str, status: u16| {
        samples.iter().any(|l| {
            l.contains(&format!("http_route=\"{route}\""))
                && l.contains(&format!("http_response_status_code=\"{status}\""))
        })
    };
    assert!(has("/v1/churn", 200), "{samples:#?}");
    assert!(has("/v2/models/{model}/infer", 200), "{samples:#?}");
    assert!(has("other", 404), "{samples:#?}");
    assert!(!metrics.contains("/no/such/route"), "{samples:#?}");
    // OpenTelemetry's advised buckets.
    assert!(metrics.lines().any(
        |l| l.starts_with("http_server_request_duration_seconds_bucket")
            && l.contains("le=\"0.005\"")
    ));
}
