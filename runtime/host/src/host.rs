//! The host: builds the registry, the loader, the control plane and the data plane from its
//! configuration, and starts the loops that run beside them.

use crate::autoscale::scaler::{Scaler, ScalerWake, Timing};
use crate::config::HostConfig;
use crate::control::ControlPlane;
use crate::http::data::{DataPlane, RequestLimits};
use crate::keys::KeyStore;
use crate::loader::{LoadLimits, Loader};
use crate::metrics::Metrics;
use crate::policy::access::JwtVerifier;
use crate::policy::rate_limit::{HostLimiter, RateLimiters};
use crate::registry::Registry;
use crate::store::Store;
use aifn_guest::GuestEngine;
use aifn_model::OnnxRuntime;
use anyhow::Context as _;
use std::sync::Arc;

pub struct Host {
    pub config: HostConfig,
    pub store: Arc<Store>,
    pub keys: Arc<KeyStore>,
    pub metrics: Arc<Metrics>,
    /// What serves traffic now: the data plane reads it, the control plane changes it.
    pub registry: Arc<Registry>,
    pub control: Arc<ControlPlane>,
    pub data: Arc<DataPlane>,
    limiters: Arc<RateLimiters>,
    scaler_wake: ScalerWake,
    admin_token: String,
    metrics_token: String,
    /// The data plane's URL once it listens (for answers that show callers where to go).
    pub data_url: std::sync::OnceLock<String>,
    /// TLS on both listeners, when the host has a certificate.
    pub tls: Option<Arc<crate::http::tls::Tls>>,
    /// The OTLP trace exporter, when the host exports traces.
    pub tracer: Option<Arc<crate::traces::Tracer>>,
}

impl Host {
    /// Finds and loads ONNX Runtime, opens the state directory and the wasmtime engine.
    pub fn new(config: HostConfig) -> anyhow::Result<Host> {
        let library = match &config.onnxruntime {
            Some(path) => path.clone(),
            None => aifn_model::locate_onnxruntime()?,
        };
        let store = Arc::new(Store::open(&config.state_dir).with_context(|| {
            format!("opening the state directory {}", config.state_dir.display())
        })?);
        let ort = OnnxRuntime::init(&library, Some(store.optimized_dir()))?;
        tracing::info!(library = %library.display(), "ONNX Runtime loaded");
        let keys = Arc::new(KeyStore::open(store.clone())?);
        let guest = GuestEngine::new(Some(store.compiled_dir()))?;
        let mut jwt = JwtVerifier::new(config.jwt_secret.as_deref(), config.jwt_jwks.as_deref())?;
        jwt.introspection_credentials = config.introspection_client.clone();
        let notifier = crate::webhook::Notifier::new(config.webhook_url.as_deref())?;
        let tls = config
            .tls
            .as_ref()
            .map(crate::http::tls::Tls::load)
            .transpose()
            .context("loading the TLS certificate")?;
        let tracer = config
            .traces
            .as_ref()
            .map(crate::traces::Tracer::new)
            .transpose()
            .context("starting the trace exporter")?
            .map(Arc::new);
        let admin_token = match &config.admin_token {
            Some(token) => token.clone(),
            None => token_file(&store, "admin-token")?,
        };
        let metrics_token = match &config.metrics_token {
            Some(token) => token.clone(),
            None => token_file(&store, "metrics-token")?,
        };
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::default());
        let limiters = Arc::new(RateLimiters::default());
        let scaler_wake = ScalerWake::default();
        let loader = Arc::new(Loader {
            ort,
            guest,
            store: store.clone(),
            limits: LoadLimits {
                module_timeout: config.module_timeout,
                module_memory_bytes: config.module_memory_bytes,
                max_module_output_bytes: config.max_module_output_bytes,
                max_instances_per_function: config.max_instances_per_function,
                queue_per_instance: config.queue_per_instance,
                max_tensor_elements: config.max_tensor_elements,
                max_batch_bytes: config.max_batch_bytes,
                idle_spin: config.idle_spin,
                max_module_log_bytes: config.max_module_log_bytes,
            },
            jwt_configured: jwt.is_configured(),
            limiters: limiters.clone(),
            metrics: metrics.clone(),
            scaler: scaler_wake.clone(),
        });
        let control = Arc::new(ControlPlane::new(
            store.clone(),
            registry.clone(),
            loader,
            notifier,
            config.keep_versions,
        ));
        let data = Arc::new(DataPlane {
            registry: registry.clone(),
            keys: keys.clone(),
            jwt,
            host_limit: config.max_requests_per_second.map(HostLimiter::new),
            metrics: metrics.clone(),
            limits: RequestLimits {
                request_timeout: config.request_timeout,
                max_body_bytes: config.max_body_bytes,
            },
        });
        Ok(Host {
            config,
            store,
            keys,
            metrics,
            registry,
            control,
            data,
            limiters,
            scaler_wake,
            admin_token,
            metrics_token,
            data_url: Default::default(),
            tls,
            tracer,
        })
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The read-only token that may scrape `/metrics` (and nothing else).
    pub fn metrics_token(&self) -> &str {
        &self.metrics_token
    }

    /// Brings back every function's stable version and any rollout in progress after a
    /// (re)start, then starts the loops: housekeeping, the autoscaler, the rollout judge.
    pub async fn restore(self: &Arc<Self>) -> anyhow::Result<()> {
        self.control
            .restore()
            .await
            .context("restoring deployments")?;
        self.start_housekeeping();
        Scaler {
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            timing: Timing {
                tick: self.config.autoscale_tick,
                stable_window: self.config.autoscale_stable_window,
                scale_down_delay: self.config.autoscale_scale_down_delay,
            },
        }
        .start(&self.scaler_wake);
        self.control.start_rollout_loop(self.config.rollout_tick);
        self.control.start_monitor_loop(self.config.rollout_tick);
        Ok(())
    }

    /// Periodic upkeep while the host lives: forget rate-limit state of callers gone idle.
    fn start_housekeeping(self: &Arc<Self>) {
        let limiters = Arc::downgrade(&self.limiters);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                match limiters.upgrade() {
                    Some(limiters) => limiters.forget_idle_callers(),
                    None => return,
                }
            }
        });
    }
}

/// A token kept in the state directory as `name` (mode 0600), created on first start.
fn token_file(store: &Store, name: &str) -> anyhow::Result<String> {
    let path = store.root().join(name);
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    crate::store::write_owner_only(&path, token.as_bytes())?;
    tracing::info!(path = %path.display(), "created a token");
    Ok(token)
}
