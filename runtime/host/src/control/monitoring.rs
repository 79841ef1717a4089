//! What the control plane does with monitoring: it collects the alerts each version's monitor
//! raised, records them in the audit log, sends them to the webhook, acts as the spec's
//! `monitoring.alerts` say, and answers the monitoring report.

use super::ControlPlane;
use crate::function::LoadedFunction;
use crate::monitor::AlertEvent;
use crate::records::{Actor, AuditAction, AuditEvent, Versions};
use aifn_monitor::alarm::Transition;
use aifn_spec::AlertAction;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The answers the report's throughput, error rate and p95 are taken over.
const REPORT_WINDOW: Duration = Duration::from_secs(60);

impl ControlPlane {
    /// Every `tick`, hands each loaded version's new alerts to [`ControlPlane::handle_alert`].
    pub fn start_monitor_loop(self: &Arc<Self>, tick: Duration) {
        self.every(tick, |control| async move {
            let versions: Vec<Arc<LoadedFunction>> = control
                .registry
                .snapshot()
                .functions()
                .flat_map(|(_, serving)| {
                    std::iter::once(serving.stable.clone())
                        .chain(serving.rollout.as_ref().map(|l| l.other.clone()))
                })
                .collect();
            for function in versions {
                let Some(monitor) = &function.monitor else {
                    continue;
                };
                control
                    .metrics
                    .observe_monitor(function.name(), function.version(), monitor);
                monitor.evaluate_service(|| function.outcomes.figures(monitor.spec.window.0));
                for alert in monitor.take_pending() {
                    control.handle_alert(&function, &alert).await;
                }
            }
        });
    }

    /// Records an alert that fired or cleared, notifies, and applies the spec's actions.
    async fn handle_alert(&self, function: &Arc<LoadedFunction>, alert: &AlertEvent) {
        let monitor = function
            .monitor
            .as_ref()
            .expect("alerts come from monitors");
        let name = function.name();
        let fired = alert.state == Transition::Fired;
        let rules: Vec<&aifn_spec::AlertRule> = monitor
            .spec
            .alerts
            .iter()
            .filter(|r| r.on == alert.on)
            .collect();
        let mut done = Vec::new();
        for rule in &rules {
            match rule.action {
                AlertAction::Alert => {}
                AlertAction::Fallback if function.fallback.is_some() => {
                    monitor.drift_fallback.store(fired, Ordering::Relaxed);
                    done.push(if fired {
                        "traffic goes to the fallback model"
                    } else {
                        "traffic goes back to the primary model"
                    });
                }
                AlertAction::Fallback => {}
                AlertAction::Webhook if fired => {
                    let body = json!({
                        "event": "retrain",
                        "function": name,
                        "version": function.version(),
                        "model_id": function.record.model_id,
                        "alert": alert,
                        "features": alert.features,
                        "recent_inputs": monitor.recent_inputs(),
                    });
                    match rule.url.as_deref().map(str::parse::<hyper::Uri>) {
                        Some(Ok(url)) => self.notifier.send_to(url, body),
                        Some(Err(e)) => tracing::warn!(function = %name, "alert webhook URL: {e}"),
                        None => self.notifier.send(body),
                    }
                    done.push("the retraining webhook was called");
                }
                AlertAction::Webhook => {}
                AlertAction::FreezeRollout => {
                    if let Some(live) = self.registry.serving(name).and_then(|s| s.rollout) {
                        live.progress.frozen.store(fired, Ordering::Relaxed);
                        done.push(if fired {
                            "the rollout is held at its step"
                        } else {
                            "the rollout goes on"
                        });
                    }
                }
                AlertAction::Rollback if fired => {
                    let reason = format!(
                        "monitoring: {} on {}",
                        alert.kind,
                        alert.features.join(", ")
                    );
                    match self
                        .rollback(name, None, &Actor::platform(), Some(&reason))
                        .await
                    {
                        Ok(_) => done.push("rolled back"),
                        Err(e) => tracing::warn!(function = %name, "alert rollback: {e}"),
                    }
                }
                AlertAction::Rollback => {}
            }
        }
        let reason = format!(
            "{} {}{}{}",
            alert.kind,
            if fired {
                "alert fired"
            } else {
                "alert cleared"
            },
            if alert.features.is_empty() {
                String::new()
            } else {
                format!(" on {}", alert.features.join(", "))
            },
            if done.is_empty() {
                String::new()
            } else {
                format!(": {}", done.join("; "))
            }
        );
        tracing::warn!(function = %name, version = function.version(), "{reason}");
        let action = if fired {
            AuditAction::Alert
        } else {
            AuditAction::AlertCleared
        };
        let mut event = AuditEvent::new(
            name,
            &Actor::platform(),
            action,
            Some(Versions {
                acted_on: function.version(),
                serving: self
                    .registry
                    .function(name)
                    .map_or(function.version(), |f| f.version()),
            }),
            &reason,
        );
        event.figures = Some(json!(alert));
        if let Err(e) = self.store.write(|txn| txn.log(&event)) {
            tracing::error!(function = %name, "recording an alert: {e}");
        }
        self.metrics
            .count_alert(name, alert.kind, if fired { "fired" } else { "cleared" });
        self.notifier.send(json!({
            "event": action,
            "function": name,
            "version": function.version(),
            "reason": reason,
            "alert": alert,
        }));
    }

    /// `GET /admin/v1/functions/NAME/to-label`: recent answers a label would help most with, from
    /// every loaded version, for a labelling process to answer through the feedback route.
    pub fn to_label(&self, name: &str) -> Option<serde_json::Value> {
        let serving = self.registry.serving(name)?;
        let requests: Vec<serde_json::Value> = std::iter::once(serving.stable.clone())
            .chain(serving.rollout.as_ref().map(|l| l.other.clone()))
            .filter_map(|f| f.monitor.as_ref().map(|m| (f.version(), m.to_label())))
            .flat_map(|(version, asked)| {
                asked
                    .into_iter()
                    .map(move |a| json!({ "version": version, "request": a }))
            })
            .collect();
        Some(
            json!({ "name": name, "feedback": format!("POST /aifn/v1/feedback/{name} {{\"request_id\": ..., \"label\": ...}}"), "to_label": requests }),
        )
    }

    /// `GET /admin/v1/functions/NAME/monitor`: per loaded version, the figures users know from
    /// model-monitoring dashboards, then the per-feature table and the alerts.
    pub fn monitor_report(&self, name: &str) -> Option<serde_json::Value> {
        let serving = self.registry.serving(name)?;
        let versions: Vec<serde_json::Value> = std::iter::once(serving.stable.clone())
            .chain(serving.rollout.as_ref().map(|l| l.other.clone()))
            .map(|function| {
                let figures = function.outcomes.figures(REPORT_WINDOW);
                let seconds = REPORT_WINDOW.as_secs_f64();
                let monitoring = function.monitor.as_ref().map(|m| m.report());
                let drift_score = monitoring.as_ref().and_then(|m| m["drift_score"].as_f64());
                let alerts = monitoring
                    .as_ref()
                    .map_or(json!([]), |m| m["alerts"].clone());
                json!({
                    "version": function.version(),
                    "model_id": function.record.model_id,
                    "monitored": function.monitor.is_some(),
                    "metrics": {
                        "accuracy": function.monitor.as_ref().and_then(|m| m.accuracy()),
                        "latency_p95": figures.p95_ms.map(|ms| format!("{ms:.1}ms")),
                        "drift_score": drift_score,
                        "throughput_rps": figures.requests as f64 / seconds,
                        "error_rate": if figures.requests == 0 { 0.0 } else { figures.errors as f64 / figures.requests as f64 },
                    },
                    "alerts": alerts,
                    "drift": monitoring,
                })
            })
            .collect();
        Some(json!({ "name": name, "versions": versions }))
    }
}
