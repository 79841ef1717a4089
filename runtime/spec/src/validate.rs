//! Turns a positioned YAML tree into a [`FunctionSpec`], collecting every error on the way.

use crate::quantity::{parse_cpu, parse_duration, parse_memory, Bytes, HumanDuration, MilliCpu};
use crate::types::*;
use crate::yaml::{plain_scalar_type, Key, Node, NodeKind, PlainType, Pos};
use crate::{SpecError, SpecErrors};
use std::collections::{BTreeMap, HashSet};

/// Routes the host serves itself; a function may not claim them.
pub const RESERVED_ROUTE_PREFIXES: [&str; 6] =
    ["/v2", "/admin", "/aifn", "/healthz", "/readyz", "/metrics"];

pub fn function_spec(root: &Node) -> Result<FunctionSpec, SpecErrors> {
    let mut checker = Checker::default();
    let spec = checker.function(root);
    match spec {
        Some(spec) if checker.errors.is_empty() => Ok(spec),
        _ => {
            checker.errors.sort_by_key(|e| (e.line, e.column));
            Err(SpecErrors(checker.errors))
        }
    }
}

#[derive(Default)]
struct Checker {
    errors: Vec<SpecError>,
}

/// The fields of one mapping, after unknown and duplicate keys were reported.
struct Fields<'a> {
    path: String,
    pos: Pos,
    entries: &'a [(Key, Node)],
}

impl<'a> Fields<'a> {
    /// The value of `name`, treating `name: ~` like an absent key.
    fn get(&self, name: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(key, value)| key.name == name && !value.is_null())
            .map(|(_, value)| value)
    }

    fn child(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }
}

impl Checker {
    fn error(&mut self, path: &str, pos: Pos, message: impl Into<String>) {
        self.errors.push(SpecError {
            path: path.to_string(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        });
    }

    /// The entries of a mapping, or an error naming what `node` is instead.
    fn mapping<'a>(&mut self, node: &'a Node, path: &str) -> Option<&'a [(Key, Node)]> {
        match &node.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => {
                self.error(
                    path,
                    node.pos,
                    format!("expected a mapping, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// Checks that `node` is a mapping whose keys are all in `allowed`, each at most once.
    fn fields<'a>(&mut self, node: &'a Node, path: &str, allowed: &[&str]) -> Option<Fields<'a>> {
        let entries = self.mapping(node, path)?;
        let mut seen = HashSet::new();
        for (key, _) in entries {
            let key_path = if path.is_empty() {
                key.name.clone()
            } else {
                format!("{path}.{}", key.name)
            };
            if !allowed.contains(&key.name.as_str()) {
                let hint = match closest(&key.name, allowed) {
                    Some(near) => format!(" (did you mean `{near}`?)"),
                    None => String::new(),
                };
                self.error(
                    &key_path,
                    key.pos,
                    format!(
                        "unknown field `{}`{hint}; expected one of: {}",
                        key.name,
                        allowed.join(", ")
                    ),
                );
            } else if !seen.insert(key.name.as_str()) {
                self.error(
                    &key_path,
                    key.pos,
                    format!("field `{}` is given twice", key.name),
                );
            }
        }
        Some(Fields {
            path: path.to_string(),
            pos: node.pos,
            entries,
        })
    }

    fn required<'a>(&mut self, fields: &Fields<'a>, name: &str) -> Option<&'a Node> {
        let node = fields.get(name);
        if node.is_none() {
            self.error(
                &fields.child(name),
                fields.pos,
                format!("missing required field `{name}`"),
            );
        }
        node
    }

    /// A scalar's text, if it is a string (quoted, or plain and not a number/bool/null).
    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar { text, quoted: true } => Some(text.clone()),
            NodeKind::Scalar {
                text,
                quoted: false,
            } if plain_scalar_type(text) == PlainType::Str => Some(text.clone()),
            _ => {
                self.error(
                    path,
                    node.pos,
                    format!("expected a string, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// Any scalar's text (strings and numbers): used for quantities such as `cpu: 1` or `cpu: "1"`.
    fn scalar_text(&mut self, node: &Node, path: &str, what: &str) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar { text, quoted }
                if *quoted || plain_scalar_type(text) != PlainType::Bool =>
            {
                Some(text.clone())
            }
            _ => {
                self.error(
                    path,
                    node.pos,
                    format!("expected {what}, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn non_empty(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = self.string(node, path)?;
        if text.trim().is_empty() {
            self.error(path, node.pos, "must not be empty");
            return None;
        }
        Some(text)
    }

    /// A path to a file, relative to the spec file or absolute.
    fn file_path(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = self.string(node, path)?;
        if text.trim().is_empty() {
            self.error(path, node.pos, "must name a file");
            return None;
        }
        Some(text)
    }

    fn uint(&mut self, node: &Node, path: &str, max: u32) -> Option<u32> {
        match &node.kind {
            NodeKind::Scalar {
                text,
                quoted: false,
            } if plain_scalar_type(text) == PlainType::Int => match text.parse::<u32>() {
                Ok(n) if n <= max => Some(n),
                _ => {
                    self.error(
                        path,
                        node.pos,
                        format!("must be a whole number from 0 to {max}, found {text}"),
                    );
                    None
                }
            },
            _ => {
                self.error(
                    path,
                    node.pos,
                    format!("expected an integer, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn parsed<T>(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.scalar_text(node, path, what)?;
        parse(&text)
            .map_err(|message| self.error(path, node.pos, message))
            .ok()
    }

    fn function(&mut self, root: &Node) -> Option<FunctionSpec> {
        let top = self.fields(root, "", &["apiVersion", "kind", "metadata", "spec"])?;
        let api_version = self
            .required(&top, "apiVersion")
            .and_then(|n| self.string(n, "apiVersion"));
        if let (Some(v), Some(node)) = (&api_version, top.get("apiVersion")) {
            if v != API_VERSION {
                self.error(
                    "apiVersion",
                    node.pos,
                    format!("unsupported apiVersion `{v}`; this host reads `{API_VERSION}`"),
                );
            }
        }
        let kind = self
            .required(&top, "kind")
            .and_then(|n| self.string(n, "kind"));
        if let (Some(k), Some(node)) = (&kind, top.get("kind")) {
            if k != KIND {
                self.error(
                    "kind",
                    node.pos,
                    format!("unsupported kind `{k}`; expected `{KIND}`"),
                );
            }
        }
        let metadata = self
            .required(&top, "metadata")
            .and_then(|n| self.metadata(n));
        let spec = self.required(&top, "spec").and_then(|n| self.body(n));
        Some(FunctionSpec {
            api_version: api_version?,
            kind: kind?,
            metadata: metadata?,
            spec: spec?,
        })
    }

    fn metadata(&mut self, node: &Node) -> Option<Metadata> {
        let f = self.fields(node, "metadata", &["name", "labels", "annotations"])?;
        let name = self.required(&f, "name").and_then(|n| {
            let name = self.string(n, "metadata.name")?;
            check_name(&name)
                .map_err(|m| self.error("metadata.name", n.pos, m))
                .ok()?;
            Some(name)
        });
        let labels = f
            .get("labels")
            .map(|n| self.keyed_strings(n, "metadata.labels", "label", check_label))
            .unwrap_or_default();
        let annotations = f
            .get("annotations")
            .map(|n| self.keyed_strings(n, "metadata.annotations", "annotation", check_annotation))
            .unwrap_or_default();
        Some(Metadata {
            name: name?,
            labels,
            annotations,
        })
    }

    /// A mapping of strings to strings (labels, annotations), each key checked by `check_key`.
    fn keyed_strings(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        check_key: fn(&str) -> Result<(), String>,
    ) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        let NodeKind::Map(entries) = &node.kind else {
            self.error(
                path,
                node.pos,
                format!("expected a mapping, found {}", node.describe()),
            );
            return map;
        };
        for (key, value) in entries {
            let key_path = format!("{path}.{}", key.name);
            if let Err(m) = check_key(&key.name) {
                self.error(&key_path, key.pos, format!("{what} key {m}"));
            } else if map.contains_key(&key.name) {
                self.error(
                    &key_path,
                    key.pos,
                    format!("{what} `{}` is given twice", key.name),
                );
            } else if value.is_null() {
                self.error(&key_path, value.pos, "expected a string, found null");
            } else if let Some(v) = self.scalar_text(value, &key_path, "a string") {
                map.insert(key.name.clone(), v);
            }
        }
        map
    }

    fn body(&mut self, node: &Node) -> Option<FunctionBody> {
        let f = self.fields(
            node,
            "spec",
            &[
                "model",
                "resources",
                "scaling",
                "endpoints",
                "module",
                "fallback",
                "rollout",
                "v2",
                "check",
                "monitoring",
            ],
        )?;
        let model = self
            .required(&f, "model")
            .and_then(|n| self.model(n, "spec.model"));
        let resources = match f.get("resources") {
            Some(n) => self.resources(n),
            None => Some(Resources::default()),
        };
        let scaling = match f.get("scaling") {
            Some(n) => self.scaling(n),
            None => Some(Scaling::default()),
        };
        let endpoints = self
            .required(&f, "endpoints")
            .and_then(|n| self.endpoints(n));
        let module = match f.get("module") {
            Some(n) => self.module(n).map(Some),
            None => Some(None),
        };
        let fallback = self.optional(&f, "fallback", |c, n, p| {
            let f = c.fields(n, p, &["model"])?;
            let model = c
                .required(&f, "model")
                .and_then(|n| c.model(n, "spec.fallback.model"))?;
            Some(Fallback { model })
        });
        let rollout = self.optional(&f, "rollout", |c, n, p| c.rollout(n, p));
        let v2 = self.optional(&f, "v2", |c, n, p| c.v2_access(n, p));
        let check = self.optional(&f, "check", |c, n, p| c.sample_request(n, p));
        let monitoring = self.optional(&f, "monitoring", |c, n, p| c.monitoring(n, p));
        if let (Some(Some(monitoring)), Some(None)) = (&monitoring, &fallback) {
            if monitoring
                .alerts
                .iter()
                .any(|a| a.action == AlertAction::Fallback)
            {
                let at = f.get("monitoring").map_or(f.pos, |n| n.pos);
                self.error(
                    "spec.monitoring.alerts",
                    at,
                    "`action: fallback` needs a `spec.fallback` model to send the traffic to",
                );
            }
        }
        if let (Some(Some(check)), Some(endpoints)) = (&check, &endpoints) {
            if let Some(route) = &check.route {
                if !endpoints.iter().any(|e| &e.route == route) {
                    let at = f.get("check").map_or(f.pos, |n| n.pos);
                    self.error(
                        "spec.check.route",
                        at,
                        format!("`{route}` is not one of the function's endpoints"),
                    );
                }
            }
        }
        Some(FunctionBody {
            model: model?,
            resources: resources?,
            scaling: scaling?,
            endpoints: endpoints?,
            module: module?,
            fallback: fallback?,
            rollout: rollout?,
            v2: v2?.unwrap_or_default(),
            check: check?,
            monitoring: monitoring?,
        })
    }

    fn monitoring(&mut self, node: &Node, path: &str) -> Option<Monitoring> {
        // `monitoring: {}` and a bare `monitoring:` both mean every default.
        if matches!(&node.kind, NodeKind::Scalar { text, quoted: false } if matches!(text.as_str(), "" | "~" | "null"))
        {
            return Some(Monitoring::default());
        }
        let f = self.fields(
            node,
            path,
            &[
                "reference",
                "features",
                "window",
                "interval",
                "bins",
                "drift",
                "consecutive",
                "min_samples",
                "baseline",
                "labels",
                "alerts",
            ],
        )?;
        let defaults = Monitoring::default();
        let reference = self.optional(&f, "reference", |c, n, p| c.non_empty(n, p));
        let features = self.optional(&f, "features", |c, n, p| {
            let NodeKind::Seq(items) = &n.kind else {
                c.error(
                    p,
                    n.pos,
                    format!("expected a list of request fields, found {}", n.describe()),
                );
                return None;
            };
            let mut features = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{p}[{i}]");
                let name = c.non_empty(item, &item_path)?;
                if features.contains(&name) {
                    c.error(&item_path, item.pos, format!("`{name}` is listed twice"));
                    return None;
                }
                features.push(name);
            }
            Some(features)
        });
        let duration = |c: &mut Self, name: &str, min_ms: u64, max_secs: u64| {
            c.optional(&f, name, |c, n, p| {
                let d = c.parsed(n, p, "a duration like `10m`", parse_duration)?;
                if d.0 < std::time::Duration::from_millis(min_ms)
                    || d.0 > std::time::Duration::from_secs(max_secs)
                {
                    c.error(
                        p,
                        n.pos,
                        format!("must be between {min_ms}ms and {max_secs}s"),
                    );
                    return None;
                }
                Some(d)
            })
        };
        let window = duration(self, "window", 1000, 7 * 86_400);
        let interval = duration(self, "interval", 100, 86_400);
        let count = |c: &mut Self, name: &str, min: u32, max: u32| {
            c.optional(&f, name, |c, n, p| {
                let value = c.uint(n, p, max)?;
                if value < min {
                    c.error(p, n.pos, format!("must be at least {min}"));
                    return None;
                }
                Some(value)
            })
        };
        let bins = count(self, "bins", 2, 100);
        let consecutive = count(self, "consecutive", 1, 1000);
        let min_samples = count(self, "min_samples", 1, 10_000_000);
        let baseline = count(self, "baseline", 10, 1_000_000);
        let drift = self.optional(&f, "drift", |c, n, p| {
            let d = c.fields(n, p, &["psi", "kl"])?;
            let threshold = |c: &mut Self, name: &str, default: f64| {
                c.optional(&d, name, |c, n, p| c.fraction(n, p, 10.0))
                    .map(|v| v.unwrap_or(default))
            };
            let psi = threshold(c, "psi", defaults.drift.psi);
            let kl = threshold(c, "kl", defaults.drift.kl);
            Some(DriftThresholds { psi: psi?, kl: kl? })
        });
        let labels = self.optional(&f, "labels", |c, n, p| {
            let l = c.fields(n, p, &["ttl", "max_predictions"])?;
            let ttl = c.optional(&l, "ttl", |c, n, p| {
                let d = c.parsed(n, p, "a duration like `30d`", parse_duration)?;
                if d.0 > std::time::Duration::from_secs(365 * 86_400) {
                    c.error(p, n.pos, "must be at most 365d");
                    return None;
                }
                Some(d)
            });
            let max = c.optional(&l, "max_predictions", |c, n, p| c.uint(n, p, 10_000_000));
            Some(LabelPolicy {
                ttl: ttl?.unwrap_or(LabelPolicy::default().ttl),
                max_predictions: max?.unwrap_or(LabelPolicy::default().max_predictions),
            })
        });
        let alerts = self.optional(&f, "alerts", |c, n, p| {
            let NodeKind::Seq(items) = &n.kind else {
                c.error(
                    p,
                    n.pos,
                    format!("expected a list of alerts, found {}", n.describe()),
                );
                return None;
            };
            let rules: Vec<Option<AlertRule>> = items
                .iter()
                .enumerate()
                .map(|(i, item)| c.alert_rule(item, &format!("{p}[{i}]")))
                .collect();
            rules.into_iter().collect()
        });
        Some(Monitoring {
            reference: reference?,
            features: features?.unwrap_or_default(),
            window: window?.unwrap_or(defaults.window),
            interval: interval?,
            bins: bins?.unwrap_or(defaults.bins),
            drift: drift?.unwrap_or(defaults.drift),
            consecutive: consecutive?.unwrap_or(defaults.consecutive),
            min_samples: min_samples?.unwrap_or(defaults.min_samples),
            baseline: baseline?.unwrap_or(defaults.baseline),
            labels: labels?,
            alerts: alerts?.unwrap_or(defaults.alerts),
        })
    }

    fn alert_rule(&mut self, node: &Node, path: &str) -> Option<AlertRule> {
        let f = self.fields(node, path, &["on", "action", "threshold", "url"])?;
        let on = self.required(&f, "on").and_then(|n| {
            let p = f.child("on");
            let text = self.string(n, &p)?;
            let on = match text.as_str() {
                "drift" => AlertOn::Drift,
                "accuracy" => AlertOn::Accuracy,
                "latency" => AlertOn::Latency,
                "errors" => AlertOn::Errors,
                other => {
                    self.error(
                        &p,
                        n.pos,
                        format!(
                            "unknown alert `{other}`; expected one of: drift, accuracy, latency, errors"
                        ),
                    );
                    return None;
                }
            };
            Some(on)
        });
        let action = self.optional(&f, "action", |c, n, p| {
            let text = c.string(n, p)?;
            let action = match text.as_str() {
                "alert" => AlertAction::Alert,
                "fallback" => AlertAction::Fallback,
                "webhook" => AlertAction::Webhook,
                "freeze_rollout" => AlertAction::FreezeRollout,
                "rollback" => AlertAction::Rollback,
                other => {
                    c.error(
                        p,
                        n.pos,
                        format!(
                            "unknown action `{other}`; expected one of: alert, fallback, webhook, freeze_rollout, rollback"
                        ),
                    );
                    return None;
                }
            };
            Some(action)
        });
        let threshold = self.optional(&f, "threshold", |c, n, p| match on {
            Some(AlertOn::Latency) => c
                .parsed(n, p, "a duration like `100ms`", parse_duration)
                .map(|d| d.0.as_secs_f64()),
            _ => c.fraction(n, p, 1.0),
        });
        let url = self.optional(&f, "url", |c, n, p| {
            let text = c.non_empty(n, p)?;
            if !text.starts_with("http://") {
                c.error(p, n.pos, format!("`{text}` must be an http:// URL"));
                return None;
            }
            Some(text)
        });
        let (on, action, threshold, url) =
            (on?, action?.unwrap_or(AlertAction::Alert), threshold?, url?);
        if threshold.is_none() && matches!(on, AlertOn::Accuracy | AlertOn::Errors) {
            self.error(
                path,
                node.pos,
                "needs a `threshold`: the lowest accuracy, or the highest error rate, from 0 to 1",
            );
            return None;
        }
        if threshold.is_some() && on == AlertOn::Drift {
            self.error(
                &f.child("threshold"),
                f.get("threshold").map_or(node.pos, |n| n.pos),
                "a drift alert uses `spec.monitoring.drift`'s thresholds",
            );
            return None;
        }
        Some(AlertRule {
            on,
            action,
            threshold,
            url,
        })
    }

    /// A number above 0 and at most `max`.
    fn fraction(&mut self, node: &Node, path: &str, max: f64) -> Option<f64> {
        let text = self.scalar_text(node, path, "a number")?;
        match text.parse::<f64>() {
            Ok(v) if v > 0.0 && v <= max => Some(v),
            _ => {
                self.error(
                    path,
                    node.pos,
                    format!("`{text}` must be a number above 0 and at most {max}"),
                );
                None
            }
        }
    }

    fn sample_request(&mut self, node: &Node, path: &str) -> Option<SampleRequest> {
        let f = self.fields(node, path, &["route", "body", "headers"])?;
        let route = self.optional(&f, "route", |c, n, p| c.string(n, p));
        let body = self
            .required(&f, "body")
            .and_then(|n| self.string(n, &f.child("body")));
        let headers = self.optional(&f, "headers", |c, n, p| c.string_map(n, p));
        Some(SampleRequest {
            route: route?,
            body: body?,
            headers: headers?.unwrap_or_default(),
        })
    }

    fn v2_access(&mut self, node: &Node, path: &str) -> Option<V2Access> {
        let f = self.fields(node, path, &["enabled", "max_shape"])?;
        let enabled = self.optional(&f, "enabled", |c, n, p| c.boolean(n, p));
        let max_shape = self.optional(&f, "max_shape", |c, n, p| {
            let NodeKind::Seq(items) = &n.kind else {
                c.error(
                    p,
                    n.pos,
                    format!(
                        "expected a list of dimensions like [32, 256], found {}",
                        n.describe()
                    ),
                );
                return None;
            };
            let mut dims = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{p}[{i}]");
                let dim = c.uint(item, &item_path, u32::MAX)?;
                if dim == 0 {
                    c.error(&item_path, item.pos, "must be at least 1");
                    return None;
                }
                dims.push(u64::from(dim));
            }
            Some(dims)
        });
        Some(V2Access {
            enabled: enabled?,
            max_shape: max_shape?.unwrap_or_default(),
        })
    }

    fn rollout(&mut self, node: &Node, path: &str) -> Option<Rollout> {
        let f = self.fields(
            node,
            path,
            &[
                "strategy",
                "steps",
                "step_duration",
                "watch",
                "window",
                "max_error_rate_increase",
                "max_latency_ratio",
                "min_requests",
                "sticky",
            ],
        )?;
        let defaults = Rollout::default();
        let strategy = self.optional(&f, "strategy", |c, n, p| {
            let text = c.string(n, p)?;
            RolloutStrategy::parse(&text)
                .ok_or_else(|| {
                    c.error(
                        p,
                        n.pos,
                        format!(
                            "unknown strategy `{text}`; expected one of: canary, shadow, immediate"
                        ),
                    )
                })
                .ok()
        });
        let steps = self.optional(&f, "steps", |c, n, p| c.rollout_steps(n, p));
        let duration = |c: &mut Self, name: &str, max_secs: u64| {
            c.optional(&f, name, |c, n, p| {
                let d = c.parsed(n, p, "a duration like `5m`", parse_duration)?;
                if d.0 > std::time::Duration::from_secs(max_secs) {
                    c.error(p, n.pos, format!("must be at most {max_secs}s"));
                    return None;
                }
                Some(d)
            })
        };
        let step_duration = duration(self, "step_duration", 7 * 86_400);
        let watch = duration(self, "watch", 7 * 86_400);
        let window = self.optional(&f, "window", |c, n, p| {
            let d = c.parsed(n, p, "a duration like `1m`", parse_duration)?;
            if d.0 < std::time::Duration::from_secs(1) || d.0 > std::time::Duration::from_secs(600)
            {
                c.error(p, n.pos, "must be from 1s to 10m");
                return None;
            }
            Some(d)
        });
        let number = |c: &mut Self, name: &str, low: f64, high: f64| {
            c.optional(&f, name, |c, n, p| {
                let v = c.parsed(n, p, "a number", |t| {
                    t.parse::<f64>()
                        .map_err(|_| format!("`{t}` is not a number"))
                })?;
                if !(low..=high).contains(&v) {
                    c.error(p, n.pos, format!("must be a number from {low} to {high}"));
                    return None;
                }
                Some(v)
            })
        };
        let max_error_rate_increase = number(self, "max_error_rate_increase", 0.0, 1.0);
        let max_latency_ratio = number(self, "max_latency_ratio", 1.0, 1000.0);
        let min_requests = self.optional(&f, "min_requests", |c, n, p| c.uint(n, p, 1_000_000));
        let sticky = self.optional(&f, "sticky", |c, n, p| {
            let text = c.string(n, p)?;
            match text.as_str() {
                "none" => Some(Sticky::None),
                "caller" => Some(Sticky::Caller),
                other => match other.strip_prefix("header:").map(str::trim) {
                    Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {
                        Some(Sticky::Header(h.to_ascii_lowercase()))
                    }
                    _ => {
                        c.error(
                            p,
                            n.pos,
                            format!("unknown sticky `{other}`; expected none, caller, or header:NAME (like `header:X-User-Id`)"),
                        );
                        None
                    }
                },
            }
        });
        Some(Rollout {
            strategy: strategy?.unwrap_or(defaults.strategy),
            steps: steps?.unwrap_or(defaults.steps),
            step_duration: step_duration?.unwrap_or(defaults.step_duration),
            watch: watch?.unwrap_or(defaults.watch),
            window: window?.unwrap_or(defaults.window),
            max_error_rate_increase: max_error_rate_increase?
                .unwrap_or(defaults.max_error_rate_increase),
            max_latency_ratio: max_latency_ratio?.unwrap_or(defaults.max_latency_ratio),
            min_requests: min_requests?.unwrap_or(defaults.min_requests),
            sticky: sticky?.unwrap_or(defaults.sticky),
        })
    }

    /// `rollout.steps`: increasing percentages above 0, ending at 100.
    fn rollout_steps(&mut self, node: &Node, path: &str) -> Option<Vec<f64>> {
        let NodeKind::Seq(items) = &node.kind else {
            self.error(
                path,
                node.pos,
                format!(
                    "expected a list of percentages like [1, 10, 100], found {}",
                    node.describe()
                ),
            );
            return None;
        };
        let mut steps = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let step = self.parsed(item, &p, "a percentage", |t| match t.parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 100.0 => Ok(v),
                _ => Err(format!(
                    "`{t}` must be a percentage above 0 and at most 100"
                )),
            })?;
            if steps.last().is_some_and(|&last| step <= last) {
                self.error(&p, item.pos, "steps must increase");
                return None;
            }
            steps.push(step);
        }
        if steps.last() != Some(&100.0) {
            self.error(
                path,
                node.pos,
                "the last step must be 100 (the new version takes all traffic)",
            );
            return None;
        }
        Some(steps)
    }

    /// A model block at `at` (`spec.model` or `spec.fallback.model`).
    fn model(&mut self, node: &Node, at: &str) -> Option<ModelSpec> {
        let f = self.fields(node, at, &["id", "runtime", "path", "sha256"])?;
        let id = self.required(&f, "id").and_then(|n| {
            let id = self.string(n, &format!("{at}.id"))?;
            check_model_id(&id)
                .map_err(|m| self.error(&format!("{at}.id"), n.pos, m))
                .ok()?;
            Some(id)
        });
        let runtime = self.required(&f, "runtime").and_then(|n| {
            let text = self.string(n, &format!("{at}.runtime"))?;
            ModelRuntime::parse(&text)
                .map_err(|m| self.error(&format!("{at}.runtime"), n.pos, m))
                .ok()
        });
        let path = match f.get("path") {
            Some(n) => self.file_path(n, &format!("{at}.path")).map(Some),
            None => Some(None),
        };
        let sha256 = match f.get("sha256") {
            Some(n) => {
                let digest = self.string(n, &format!("{at}.sha256"));
                match digest {
                    Some(d) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        Some(Some(d.to_ascii_lowercase()))
                    }
                    Some(_) => {
                        self.error(
                            &format!("{at}.sha256"),
                            n.pos,
                            "must be 64 hexadecimal characters",
                        );
                        None
                    }
                    None => None,
                }
            }
            None => Some(None),
        };
        Some(ModelSpec {
            id: id?,
            runtime: runtime?,
            path: path?,
            sha256: sha256?,
        })
    }

    fn resources(&mut self, node: &Node) -> Option<Resources> {
        let f = self.fields(node, "spec.resources", &["memory", "cpu", "gpu"])?;
        let memory: Option<Option<Bytes>> = match f.get("memory") {
            Some(n) => self
                .parsed(
                    n,
                    "spec.resources.memory",
                    "a memory quantity like `2Gi`",
                    parse_memory,
                )
                .map(Some),
            None => Some(None),
        };
        let cpu: Option<Option<MilliCpu>> = match f.get("cpu") {
            Some(n) => self
                .parsed(
                    n,
                    "spec.resources.cpu",
                    "a CPU quantity like `1` or `500m`",
                    parse_cpu,
                )
                .map(Some),
            None => Some(None),
        };
        let gpu = match f.get("gpu") {
            Some(n) => self.parsed(n, "spec.resources.gpu", "a whole number of GPUs", |t| {
                t.parse::<u32>()
                    .map_err(|_| format!("`{t}` is not a whole number of GPUs"))
            }),
            None => Some(0),
        };
        Some(Resources {
            memory: memory?,
            cpu: cpu?,
            gpu: gpu?,
        })
    }

    fn scaling(&mut self, node: &Node) -> Option<Scaling> {
        const MAX_REPLICAS: u32 = 10_000;
        const MAX_BATCH_SIZE: u32 = 4096;
        let f = self.fields(
            node,
            "spec.scaling",
            &[
                "min_replicas",
                "max_replicas",
                "target_latency",
                "max_concurrency",
                "max_batch_size",
                "max_batch_delay",
                "batch_padding",
            ],
        )?;
        let min = match f.get("min_replicas") {
            Some(n) => self.uint(n, "spec.scaling.min_replicas", MAX_REPLICAS),
            None => Some(1),
        };
        let max = match f.get("max_replicas") {
            Some(n) => self.uint(n, "spec.scaling.max_replicas", MAX_REPLICAS),
            None => min.map(|m| m.max(1)),
        };
        let target_latency: Option<Option<HumanDuration>> = match f.get("target_latency") {
            Some(n) => self
                .parsed(
                    n,
                    "spec.scaling.target_latency",
                    "a duration like `50ms`",
                    parse_duration,
                )
                .map(Some),
            None => Some(None),
        };
        if let (Some(min), Some(max)) = (min, max) {
            let at = f
                .get("max_replicas")
                .or(f.get("min_replicas"))
                .map_or(f.pos, |n| n.pos);
            if max == 0 {
                self.error("spec.scaling.max_replicas", at, "must be at least 1");
            } else if min > max {
                self.error(
                    "spec.scaling.min_replicas",
                    f.get("min_replicas").map_or(at, |n| n.pos),
                    format!("min_replicas ({min}) is greater than max_replicas ({max})"),
                );
            }
        }
        let max_concurrency = self.optional(&f, "max_concurrency", |c, n, p| {
            let value = c.uint(n, p, 1_000_000)?;
            if value == 0 {
                c.error(p, n.pos, "must be at least 1");
                return None;
            }
            Some(value)
        });
        let max_batch_size = self.optional(&f, "max_batch_size", |c, n, p| {
            let value = c.uint(n, p, MAX_BATCH_SIZE)?;
            if value == 0 {
                c.error(p, n.pos, "must be at least 1 (1 turns batching off)");
                return None;
            }
            Some(value)
        });
        let max_batch_delay = self.optional(&f, "max_batch_delay", |c, n, p| {
            let delay = c.parsed(n, p, "a duration like `2ms`", parse_duration)?;
            if delay.0 > std::time::Duration::from_secs(1) {
                c.error(
                    p,
                    n.pos,
                    "must be at most 1s (it is added to a request's latency)",
                );
                return None;
            }
            Some(delay)
        });
        let batch_padding = self.optional(&f, "batch_padding", |c, n, p| {
            c.string(n, p).and_then(|text| match text.as_str() {
                "none" => Some(BatchPadding::None),
                "zeros" => Some(BatchPadding::Zeros),
                other => {
                    c.error(
                        p,
                        n.pos,
                        format!("unknown batch_padding `{other}`; expected one of: none, zeros"),
                    );
                    None
                }
            })
        });
        Some(Scaling {
            min_replicas: min?,
            max_replicas: max?,
            target_latency: target_latency?,
            max_concurrency: max_concurrency?,
            max_batch_size: max_batch_size?.unwrap_or(1),
            max_batch_delay: max_batch_delay?,
            batch_padding: batch_padding?.unwrap_or_default(),
        })
    }

    fn endpoints(&mut self, node: &Node) -> Option<Vec<Endpoint>> {
        let NodeKind::Seq(items) = &node.kind else {
            self.error(
                "spec.endpoints",
                node.pos,
                format!("expected a list, found {}", node.describe()),
            );
            return None;
        };
        if items.is_empty() {
            self.error("spec.endpoints", node.pos, "needs at least one endpoint");
            return None;
        }
        let mut endpoints = Vec::new();
        let mut seen: Vec<(String, Method, usize)> = Vec::new();
        let mut all_valid = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("spec.endpoints[{i}]");
            match self.endpoint(item, &path) {
                Some(ep) => {
                    if let Some((_, _, first)) = seen
                        .iter()
                        .find(|(r, m, _)| *r == ep.route && *m == ep.method)
                    {
                        let route_pos = route_position(item).unwrap_or(item.pos);
                        self.error(
                            &format!("{path}.route"),
                            route_pos,
                            format!("duplicate route: {} {} is already declared by spec.endpoints[{first}]", ep.method, ep.route),
                        );
                    }
                    seen.push((ep.route.clone(), ep.method, i));
                    endpoints.push(ep);
                }
                None => all_valid = false,
            }
        }
        all_valid.then_some(endpoints)
    }

    fn endpoint(&mut self, node: &Node, path: &str) -> Option<Endpoint> {
        let f = self.fields(
            node,
            path,
            &[
                "route",
                "method",
                "auth",
                "jwt",
                "allow_ips",
                "rate_limit",
                "cache",
                "timeout",
                "max_body",
            ],
        )?;
        let route = self.required(&f, "route").and_then(|n| {
            let p = f.child("route");
            let route = self.string(n, &p)?;
            check_route(&route)
                .map_err(|m| self.error(&p, n.pos, m))
                .ok()?;
            Some(route)
        });
        let method = match f.get("method") {
            Some(n) => {
                let p = f.child("method");
                self.string(n, &p).and_then(|text| {
                    let method = Method::parse(&text);
                    if method.is_none() {
                        let all: Vec<_> = Method::ALL.iter().map(|m| m.as_str()).collect();
                        let hint = if Method::parse(&text.to_ascii_uppercase()).is_some() {
                            format!(" (write it in capitals: `{}`)", text.to_ascii_uppercase())
                        } else {
                            String::new()
                        };
                        self.error(
                            &p,
                            n.pos,
                            format!(
                                "unknown method `{text}`{hint}; expected one of: {}",
                                all.join(", ")
                            ),
                        );
                    }
                    method
                })
            }
            None => Some(Method::Post),
        };
        let auth = match f.get("auth") {
            Some(n) => {
                let p = f.child("auth");
                self.string(n, &p).and_then(|text| match text.as_str() {
                    "none" => Some(Auth::None),
                    "api_key" => Some(Auth::ApiKey),
                    "jwt" => Some(Auth::Jwt),
                    other => {
                        self.error(
                            &p,
                            n.pos,
                            format!("unknown auth `{other}`; expected one of: none, api_key, jwt"),
                        );
                        None
                    }
                })
            }
            None => Some(Auth::None),
        };
        let jwt = self.optional(&f, "jwt", Self::jwt_rule);
        match (auth, &jwt) {
            (Some(Auth::Jwt), Some(None)) => {
                self.error(
                    &f.child("jwt"),
                    f.pos,
                    "`auth: jwt` needs a `jwt: {issuer, audience}` block",
                );
            }
            (Some(Auth::None | Auth::ApiKey), Some(Some(_))) => {
                let at = f.get("jwt").map_or(f.pos, |n| n.pos);
                self.error(
                    &f.child("jwt"),
                    at,
                    "`jwt` only applies to an endpoint with `auth: jwt`",
                );
            }
            _ => {}
        }
        let allow_ips = match f.get("allow_ips") {
            Some(n) => self.networks(n, &f.child("allow_ips")),
            None => Some(Vec::new()),
        };
        let rate_limit = self.optional(&f, "rate_limit", Self::rate_limit);
        let cache = self.optional(&f, "cache", Self::cache_policy);
        let timeout = self.optional(&f, "timeout", |c, n, p| {
            c.parsed(n, p, "a duration like `5s`", parse_duration)
        });
        let max_body = self.optional(&f, "max_body", |c, n, p| {
            c.parsed(n, p, "a size like `1Mi`", parse_memory)
        });
        Some(Endpoint {
            route: route?,
            method: method?,
            auth: auth?,
            jwt: jwt?,
            allow_ips: allow_ips?,
            rate_limit: rate_limit?,
            cache: cache?,
            timeout: timeout?,
            max_body: max_body?,
        })
    }

    /// Reads an optional field: `Some(None)` when absent, `None` when present but invalid.
    fn optional<'a, T>(
        &mut self,
        f: &Fields<'a>,
        name: &str,
        read: impl FnOnce(&mut Self, &'a Node, &str) -> Option<T>,
    ) -> Option<Option<T>> {
        match f.get(name) {
            Some(node) => read(self, node, &f.child(name)).map(Some),
            None => Some(None),
        }
    }

    fn jwt_rule(&mut self, node: &Node, path: &str) -> Option<JwtRule> {
        let f = self.fields(node, path, &["issuer", "audience", "keys", "introspection"])?;
        let issuer = self
            .required(&f, "issuer")
            .and_then(|n| self.non_empty(n, &f.child("issuer")));
        let audience = self
            .required(&f, "audience")
            .and_then(|n| self.non_empty(n, &f.child("audience")));
        let keys = match f.get("keys") {
            None => Some(JwtKeys::Host),
            Some(n) => {
                let path = f.child("keys");
                match self.non_empty(n, &path)?.as_str() {
                    "host" => Some(JwtKeys::Host),
                    "discovery" => Some(JwtKeys::Discovery),
                    url if url.starts_with("https://") || url.starts_with("http://") => {
                        Some(JwtKeys::Url(url.to_string()))
                    }
                    other => {
                        self.error(
                            &path,
                            n.pos,
                            format!(
                                "`{other}` is not `host`, `discovery` or a JWKS URL (https://...)"
                            ),
                        );
                        None
                    }
                }
            }
        };
        let introspection = match f.get("introspection") {
            None => Some(None),
            Some(n) => {
                let path = f.child("introspection");
                let url = self.non_empty(n, &path)?;
                if url.starts_with("https://") || url.starts_with("http://") {
                    Some(Some(url))
                } else {
                    self.error(
                        &path,
                        n.pos,
                        format!("`{url}` is not an introspection URL (https://...)"),
                    );
                    None
                }
            }
        };
        Some(JwtRule {
            issuer: issuer?,
            audience: audience?,
            keys: keys?,
            introspection: introspection?,
        })
    }

    fn networks(&mut self, node: &Node, path: &str) -> Option<Vec<ipnet::IpNet>> {
        let NodeKind::Seq(items) = &node.kind else {
            self.error(
                path,
                node.pos,
                format!("expected a list of networks, found {}", node.describe()),
            );
            return None;
        };
        let mut networks = Vec::new();
        let mut valid = true;
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(text) = self.string(item, &p) else {
                valid = false;
                continue;
            };
            // A bare address means that one address.
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => networks.push(net.trunc()),
                Err(_) => {
                    valid = false;
                    self.error(
                        &p,
                        item.pos,
                        format!(
                            "`{text}` is not an IP address or CIDR network (like `10.0.0.0/8`)"
                        ),
                    );
                }
            }
        }
        valid.then_some(networks)
    }

    fn rate_limit(&mut self, node: &Node, path: &str) -> Option<RateLimit> {
        let f = self.fields(node, path, &["requests_per_second", "burst"])?;
        let rps = self.required(&f, "requests_per_second").and_then(|n| {
            let p = f.child("requests_per_second");
            self.parsed(n, &p, "a number of requests per second", |t| {
                match t.parse::<f64>() {
                    Ok(v) if v > 0.0 && v <= 1e6 => Ok(v),
                    _ => Err(format!(
                        "`{t}` must be a number above 0 and at most 1000000"
                    )),
                }
            })
        });
        let burst = match f.get("burst") {
            Some(n) => self.uint(n, &f.child("burst"), 1_000_000).and_then(|b| {
                if b == 0 {
                    self.error(&f.child("burst"), n.pos, "must be at least 1");
                    None
                } else {
                    Some(b)
                }
            }),
            // By default a caller may spend one second's worth at once.
            None => rps.map(|r| (r.ceil() as u32).max(1)),
        };
        Some(RateLimit {
            requests_per_second: rps?,
            burst: burst?,
        })
    }

    fn cache_policy(&mut self, node: &Node, path: &str) -> Option<CachePolicy> {
        let f = self.fields(
            node,
            path,
            &["ttl", "max_entries", "max_bytes", "per_caller"],
        )?;
        let ttl = self
            .required(&f, "ttl")
            .and_then(|n| self.parsed(n, &f.child("ttl"), "a duration like `60s`", parse_duration));
        let max_entries = match f.get("max_entries") {
            Some(n) => self
                .uint(n, &f.child("max_entries"), 10_000_000)
                .and_then(|v| {
                    if v == 0 {
                        self.error(&f.child("max_entries"), n.pos, "must be at least 1");
                        None
                    } else {
                        Some(u64::from(v))
                    }
                }),
            None => Some(10_000),
        };
        let max_bytes = match f.get("max_bytes") {
            Some(n) => self.parsed(n, &f.child("max_bytes"), "a size like `64Mi`", parse_memory),
            None => Some(Bytes(64 << 20)),
        };
        let per_caller = match f.get("per_caller") {
            Some(n) => self.boolean(n, &f.child("per_caller")),
            None => Some(false),
        };
        Some(CachePolicy {
            ttl: ttl?,
            max_entries: max_entries?,
            max_bytes: max_bytes?,
            per_caller: per_caller?,
        })
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.kind {
            NodeKind::Scalar {
                text,
                quoted: false,
            } if plain_scalar_type(text) == PlainType::Bool => {
                Some(text.eq_ignore_ascii_case("true"))
            }
            _ => {
                self.error(
                    path,
                    node.pos,
                    format!("expected true or false, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn module(&mut self, node: &Node) -> Option<ModuleSpec> {
        let f = self.fields(
            node,
            "spec.module",
            &["path", "timeout", "build", "capabilities", "isolation"],
        )?;
        let path = self
            .required(&f, "path")
            .and_then(|n| self.file_path(n, "spec.module.path"));
        let timeout = self.optional(&f, "timeout", |c, n, p| {
            c.parsed(n, p, "a duration like `100ms`", parse_duration)
        });
        let build = self.optional(&f, "build", |c, n, p| c.module_build(n, p));
        let capabilities = self.optional(&f, "capabilities", |c, n, p| c.capabilities(n, p));
        let isolation = self.optional(&f, "isolation", |c, n, p| {
            let text = c.string(n, p)?;
            match text.as_str() {
                "request" => Some(Isolation::Request),
                "instance" => Some(Isolation::Instance),
                _ => {
                    c.error(
                        p,
                        n.pos,
                        format!("unknown isolation `{text}`; expected request or instance"),
                    );
                    None
                }
            }
        });
        Some(ModuleSpec {
            path: path?,
            timeout: timeout?,
            build: build?,
            capabilities: capabilities?.unwrap_or_default(),
            isolation: isolation?.unwrap_or_default(),
        })
    }

    fn module_build(&mut self, node: &Node, path: &str) -> Option<ModuleBuild> {
        let f = self.fields(node, path, &["language", "source"])?;
        let language = self.required(&f, "language").and_then(|n| {
            let p = f.child("language");
            let text = self.string(n, &p)?;
            Language::parse(&text)
                .ok_or_else(|| {
                    let known: Vec<&str> = Language::ALL.iter().map(|l| l.name()).collect();
                    self.error(
                        &p,
                        n.pos,
                        format!(
                            "unknown language `{text}`; expected one of: {}",
                            known.join(", ")
                        ),
                    )
                })
                .ok()
        });
        let source = self
            .required(&f, "source")
            .and_then(|n| self.file_path(n, &f.child("source")));
        Some(ModuleBuild {
            language: language?,
            source: source?,
        })
    }

    fn capabilities(&mut self, node: &Node, path: &str) -> Option<Capabilities> {
        let f = self.fields(
            node,
            path,
            &["env", "wall_clock", "read_dirs", "network", "dns"],
        )?;
        let env = self.optional(&f, "env", |c, n, p| c.string_map(n, p));
        let wall_clock = self.optional(&f, "wall_clock", |c, n, p| c.boolean(n, p));
        let read_dirs = self.optional(&f, "read_dirs", |c, n, p| {
            let dirs = c.string_map(n, p)?;
            let mut ok = true;
            for (host, guest) in &dirs {
                if !host.starts_with('/') || !guest.starts_with('/') {
                    c.error(
                        &format!("{p}.{host}"),
                        n.pos,
                        "maps an absolute host directory to an absolute path the module sees",
                    );
                    ok = false;
                } else if let Err(why) = check_read_dir(host) {
                    c.error(&format!("{p}.{host}"), n.pos, why);
                    ok = false;
                }
            }
            ok.then_some(dirs)
        });
        let dns = self.optional(&f, "dns", |c, n, p| c.boolean(n, p));
        let network = self.optional(&f, "network", |c, n, p| {
            let NodeKind::Seq(items) = &n.kind else {
                c.error(
                    p,
                    n.pos,
                    format!("expected a list of `ip:port`, found {}", n.describe()),
                );
                return None;
            };
            let mut addresses = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{p}[{i}]");
                let text = c.string(item, &item_path)?;
                match text.parse::<std::net::SocketAddr>() {
                    Ok(address) => addresses.push(address),
                    Err(_) => {
                        c.error(
                            &item_path,
                            item.pos,
                            format!("`{text}` is not an address like `127.0.0.1:9000`"),
                        );
                        return None;
                    }
                }
            }
            Some(addresses)
        });
        Some(Capabilities {
            env: env?.unwrap_or_default(),
            wall_clock: wall_clock?.unwrap_or(false),
            read_dirs: read_dirs?.unwrap_or_default(),
            network: network?.unwrap_or_default(),
            dns: dns?.unwrap_or(false),
        })
    }

    /// A mapping of string keys to string values, in the order written.
    fn string_map(&mut self, node: &Node, path: &str) -> Option<Vec<(String, String)>> {
        let entries = self.mapping(node, path)?;
        let mut pairs = Vec::new();
        for (key, value) in entries {
            let value = self.string(value, &format!("{path}.{}", key.name))?;
            pairs.push((key.name.clone(), value));
        }
        Some(pairs)
    }
}

/// Host directories no module may read: the whole file system, and the kernel's and devices'
/// interfaces. (The host also refuses its own state directory, which only it knows.)
const REFUSED_READ_DIRS: [&str; 4] = ["/", "/proc", "/sys", "/dev"];

fn check_read_dir(host: &str) -> Result<(), String> {
    let normal = std::path::Path::new(host);
    if normal
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("`{host}` must not contain `..`"));
    }
    let trimmed = host.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    for refused in REFUSED_READ_DIRS {
        let inside = refused == "/" && trimmed == "/"
            || refused != "/"
                && (trimmed == refused || trimmed.starts_with(&format!("{refused}/")));
        if inside {
            return Err(format!(
                "`{host}` may not be granted: no module reads {refused}; grant the directory that holds its data"
            ));
        }
    }
    Ok(())
}

fn route_position(endpoint: &Node) -> Option<Pos> {
    match &endpoint.kind {
        NodeKind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.name == "route")
            .map(|(_, v)| v.pos),
        _ => None,
    }
}

/// Function names are DNS labels so they can appear in URLs, metrics and file names unescaped.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let valid_ends = name.starts_with(|c: char| c.is_ascii_lowercase()) && !name.ends_with('-');
    if name.is_empty() || name.len() > 63 || !valid_chars || !valid_ends {
        return Err(format!(
            "`{name}` is not a valid name: use 1 to 63 lowercase letters, digits and `-`, starting with a letter and not ending with `-`"
        ));
    }
    Ok(())
}

fn check_label(key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{key}` must be 1 to 63 letters, digits, `-`, `_`, `.` or `/`"
        ))
    }
}

/// A Kubernetes annotation key: an optional DNS prefix and `/`, then a name of at most 63
/// characters.
fn check_annotation(key: &str) -> Result<(), String> {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let prefix_ok = prefix.len() <= 253
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!(
            "`{key}` must be NAME or PREFIX/NAME: a name of 1 to 63 letters, digits, `-`, `_` or \
             `.`, after a DNS prefix"
        ))
    }
}

fn check_model_id(id: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !id.starts_with('.');
    if valid {
        Ok(())
    } else {
        Err(format!("`{id}` is not a valid model id: use 1 to 128 letters, digits, `-`, `_` and `.`, not starting with `.`"))
    }
}

fn check_route(route: &str) -> Result<(), String> {
    if !route.starts_with('/') {
        return Err(format!("`{route}` must start with `/`"));
    }
    if route.len() > 1 && route.ends_with('/') {
        return Err(format!("`{route}` must not end with `/`"));
    }
    if route.contains("//") {
        return Err(format!("`{route}` has an empty segment (`//`)"));
    }
    if let Some(bad) = route
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/-._~".contains(*c)))
    {
        return Err(format!(
            "`{route}` contains `{bad}`; routes are literal paths of letters, digits, `-`, `.`, `_`, `~` and `/`"
        ));
    }
    if route
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(format!("`{route}` must not contain `.` or `..` segments"));
    }
    for prefix in RESERVED_ROUTE_PREFIXES {
        if route == prefix || route.starts_with(&format!("{prefix}/")) {
            return Err(format!("`{route}` is reserved by the host (`{prefix}`)"));
        }
    }
    Ok(())
}

/// The allowed name closest to a misspelt one, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_hints() {
        assert_eq!(
            closest("min_replica", &["min_replicas", "max_replicas"]),
            Some("min_replicas")
        );
        assert_eq!(closest("colour", &["route", "method"]), None);
    }

    #[test]
    fn routes() {
        assert!(check_route("/v1/sentiment").is_ok());
        assert!(check_route("v1").is_err());
        assert!(check_route("/v1/").is_err());
        assert!(check_route("/v2/models/x").is_err());
        assert!(check_route("/a b").is_err());
        assert!(check_route("/a/../b").is_err());
    }
}
