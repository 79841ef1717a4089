//! The typed control-plane client used by every `aifn` command but `serve`, `up` and `validate`:
//! one method per call of the host's API (`aifn_host::api`), taking and returning its types.

use crate::bundle::Bundle;
use aifn_host::api::{self, Route};
use aifn_host::records::{Digest, ModelEntry};
use aifn_spec::RolloutStrategy;
use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// How many times one artifact's upload is tried when its connection breaks.
const UPLOAD_ATTEMPTS: u32 = 3;

pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
    /// Where callers reach the functions, when a context says (else the host's own address).
    pub data_url: Option<String>,
}

impl Client {
    /// A client of the host at `base` (http:// or https://); `ca_file` holds the CA
    /// certificates an https host's certificate must chain to (else the public web roots).
    pub fn new(base: &str, token: String, ca_file: Option<&Path>) -> anyhow::Result<Client> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)));
        if let Some(ca_file) = ca_file {
            let pem = std::fs::read(ca_file)
                .with_context(|| format!("reading the CA file {}", ca_file.display()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("reading the CA file {}", ca_file.display()))?;
            if certs.is_empty() {
                bail!("{} holds no PEM certificate", ca_file.display());
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent: config.build().into(),
            data_url: None,
        })
    }

    fn url(&self, route: Route<'_>) -> String {
        format!("{}{}", self.base, route.path())
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Sends a request and decodes the answer, turning error bodies into readable errors.
    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        route: Route<'_>,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let url = self.url(route);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", self.auth())
            .header("x-aifn-actor", actor());
        let result = match body {
            Some(body) => self.agent.run(
                request
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(body)?)?,
            ),
            None => self.agent.run(request.body(())?),
        };
        let mut response = result.with_context(|| {
            format!(
                "cannot reach the aifn host at {} (is `aifn serve` running?)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or(text);
            bail!("{method} {} failed ({status}): {message}", route.path());
        }
        serde_json::from_str(&text)
            .with_context(|| format!("the host's answer to {method} {}", route.path()))
    }

    fn get<T: DeserializeOwned>(&self, route: Route<'_>) -> anyhow::Result<T> {
        self.call("GET", route, None::<&()>)
    }

    /// The dashboard's address, with the token in the fragment (which a browser never sends;
    /// the page keeps it in the tab).
    pub fn dashboard_url(&self) -> String {
        let token: String = self
            .token
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!(
            "{}/dashboard#token={token}",
            self.base.trim_end_matches('/')
        )
    }

    pub fn list(&self) -> anyhow::Result<api::FunctionList> {
        self.get(Route::Functions)
    }

    pub fn status(&self, name: &str) -> anyhow::Result<api::FunctionStatus> {
        self.get(Route::Function(name))
    }

    pub fn history(&self, name: &str) -> anyhow::Result<api::History> {
        self.get(Route::History(name))
    }

    /// The monitoring report (`GET /admin/v1/functions/NAME/monitor`).
    pub fn monitor(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        self.get(Route::Monitor(name))
    }

    /// Recent answers a label would help most with (`GET /admin/v1/functions/NAME/to-label`).
    pub fn to_label(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        self.get(Route::ToLabel(name))
    }

    pub fn versions(&self, name: &str) -> anyhow::Result<api::VersionList> {
        self.get(Route::Versions(name))
    }

    pub fn delete(&self, name: &str) -> anyhow::Result<api::Deleted> {
        self.call("DELETE", Route::Function(name), None::<&()>)
    }

    pub fn rollback(
        &self,
        name: &str,
        request: &api::RollbackRequest,
    ) -> anyhow::Result<api::DeployOutcome> {
        self.call("POST", Route::Rollback(name), Some(request))
    }

    pub fn promote(
        &self,
        name: &str,
        request: &api::PromoteRequest,
    ) -> anyhow::Result<api::Promoted> {
        self.call("POST", Route::Promote(name), Some(request))
    }

    pub fn abort(&self, name: &str, request: &api::AbortRequest) -> anyhow::Result<api::Aborted> {
        self.call("POST", Route::Abort(name), Some(request))
    }

    pub fn prune(
        &self,
        name: &str,
        request: &api::PruneRequest,
    ) -> anyhow::Result<api::PruneOutcome> {
        self.call("POST", Route::Prune(name), Some(request))
    }

    pub fn models(&self) -> anyhow::Result<api::ModelList> {
        self.get(Route::Models)
    }

    pub fn register_model(&self, id: &str, digest: &Digest) -> anyhow::Result<ModelEntry> {
        let request = api::RegisterModel {
            digest: digest.clone(),
        };
        self.call("PUT", Route::Model(id), Some(&request))
    }

    pub fn tracing(&self) -> anyhow::Result<api::Tracing> {
        self.get(Route::Tracing)
    }

    pub fn set_tracing(&self, change: &api::Tracing) -> anyhow::Result<api::Tracing> {
        self.call("PUT", Route::Tracing, Some(change))
    }

    pub fn keys(&self) -> anyhow::Result<api::KeyList> {
        self.get(Route::Keys)
    }

    pub fn create_key(&self, request: &api::CreateKey) -> anyhow::Result<api::CreatedKey> {
        self.call("POST", Route::Keys, Some(request))
    }

    pub fn revoke_key(&self, id: &str) -> anyhow::Result<api::Revoked> {
        self.call("DELETE", Route::Key(id), None::<&()>)
    }

    /// Uploads an artifact unless the host already has it.
    pub fn upload(&self, bytes: &[u8], digest: &Digest) -> anyhow::Result<()> {
        let text = digest.to_string();
        let url = self.url(Route::Blob(&text));
        let head = self
            .agent
            .head(&url)
            .header("authorization", self.auth())
            .call()
            .with_context(|| format!("cannot reach the aifn host at {}", self.base))?;
        if head.status() == 200 {
            return Ok(());
        }
        // An upload is idempotent (the host keys it by its digest), so a connection lost in the
        // middle of one is retried on a fresh connection before the command gives up.
        let mut attempt = 1;
        let mut response = loop {
            let sent = self
                .agent
                .put(&url)
                .header("authorization", self.auth())
                .header("content-type", "application/octet-stream")
                .send(bytes);
            match sent {
                Ok(response) => break response,
                Err(ureq::Error::Io(e)) if attempt < UPLOAD_ATTEMPTS => {
                    eprintln!("uploading {digest}: {e}; retrying ({attempt}/{UPLOAD_ATTEMPTS})");
                    std::thread::sleep(Duration::from_millis(250 * attempt as u64));
                    attempt += 1;
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("uploading an artifact (tried {attempt} times)"))
                }
            }
        };
        if !response.status().is_success() {
            bail!(
                "uploading {digest} failed ({}): {}",
                response.status(),
                response.body_mut().read_to_string().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Uploads the bundle's artifacts, then asks the host to deploy it (`strategy`: `None` as
    /// the spec says).
    pub fn deploy(
        &self,
        bundle: &Bundle,
        strategy: Option<RolloutStrategy>,
        reason: Option<&str>,
    ) -> anyhow::Result<api::DeployOutcome> {
        for artifact in bundle.artifacts() {
            self.upload(&artifact.bytes, &artifact.digest)
                .with_context(|| format!("uploading {}", artifact.path.display()))?;
        }
        let request = api::DeployRequest {
            spec: bundle.spec_yaml.clone(),
            model: bundle.model.as_ref().map(|a| a.digest.clone()),
            module: bundle.module.as_ref().map(|a| a.digest.clone()),
            fallback_model: bundle.fallback_model.as_ref().map(|a| a.digest.clone()),
            monitoring_reference: bundle
                .monitoring_reference
                .as_ref()
                .map(|a| a.digest.clone()),
            strategy,
            reason: reason.map(str::to_string),
        };
        self.call("POST", Route::Functions, Some(&request))
    }
}

/// Who runs this command, for the host's audit log: `user@machine`.
fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if machine.is_empty() {
        user
    } else {
        format!("{user}@{machine}")
    }
}
